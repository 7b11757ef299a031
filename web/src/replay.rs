//! Replays started from the web UI: the trace re-executed against the in-process
//! emulator through the replayer library ([`replayer::replay_file_on_emulator`]), as a background job.
//!
//! Bounds: a trace has at most one replay at a time (starting it again while it runs
//! joins the running one), and at most [`crate::ServeOptions::max_replays`] run at once
//! across traces; the others wait queued. Each runs on a blocking thread, so requests are
//! never held up by a replay. The last result per trace stays in memory until the trace
//! changes or is replayed again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::error::AppError;
use crate::index::LaneData;
use crate::state::{AppState, Loaded};

/// Divergences kept in a result (a trace replayed against the wrong emulator can
/// diverge on every call; the total is still reported).
pub const MAX_DIVERGENCES_SHOWN: usize = 500;

/// Where a replay job is.
#[derive(Debug, Clone)]
pub enum JobState {
    /// Waiting for a free replay slot.
    Queued,
    /// Running.
    Running,
    /// Finished (with or without divergences).
    Done(Arc<ReplayResult>),
    /// Could not run to the end (an unreadable trace, a handle no earlier call created…).
    Failed(String),
}

/// One replay of one trace version.
#[derive(Debug)]
pub struct ReplayJob {
    size: u64,
    mtime: Option<SystemTime>,
    calls_done: AtomicU64,
    calls_total: u64,
    state: Mutex<JobState>,
}

impl ReplayJob {
    fn state(&self) -> JobState {
        self.state.lock().expect("job lock").clone()
    }
    fn set(&self, s: JobState) {
        *self.state.lock().expect("job lock") = s;
    }
    fn finished(&self) -> bool {
        matches!(self.state(), JobState::Done(_) | JobState::Failed(_))
    }
}

/// A divergence with a link to the call in the timeline.
#[derive(Debug, Serialize)]
pub struct DivergenceOut {
    /// What differs.
    #[serde(flatten)]
    pub divergence: replayer::Divergence,
    /// `[lane, index]` of the recorded call in this trace's timeline, when found.
    pub event: Option<(usize, u32)>,
}

/// The outcome of a finished replay.
#[derive(Debug, Serialize)]
pub struct ReplayResult {
    /// What the trace was replayed against.
    pub target: &'static str,
    /// Ioctls issued.
    pub calls: u64,
    /// Ioctls whose results were compared.
    pub compared: u64,
    /// fd opens / closes replayed.
    pub fd_events: u64,
    /// Divergences found in all.
    pub divergences_total: u64,
    /// The first [`MAX_DIVERGENCES_SHOWN`] of them, in call order.
    pub divergences: Vec<DivergenceOut>,
    /// Wall time of the replay, s.
    pub elapsed_s: f64,
    /// Sum of the recorded ioctl durations, ns.
    pub recorded_ioctl_ns: u64,
    /// Sum of the replayed ioctl durations, ns.
    pub replayed_ioctl_ns: u64,
    /// Remarks of the replayer.
    pub notes: Vec<String>,
}

/// `GET /api/traces/{key}/replay` (and the answer to starting one).
#[derive(Debug, Serialize)]
pub struct ReplayStatus {
    /// Trace key.
    pub key: String,
    /// `idle` (never replayed), `queued`, `running`, `done` or `failed`.
    pub state: &'static str,
    /// Ioctls replayed so far.
    pub calls_done: u64,
    /// Ioctls in the trace.
    pub calls_total: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The result, once done.
    pub result: Option<Arc<ReplayResult>>,
}

fn status_of(key: &str, job: Option<&ReplayJob>) -> ReplayStatus {
    let Some(job) = job else {
        return ReplayStatus {
            key: key.to_string(),
            state: "idle",
            calls_done: 0,
            calls_total: 0,
            error: None,
            result: None,
        };
    };
    let (state, error, result) = match job.state() {
        JobState::Queued => ("queued", None, None),
        JobState::Running => ("running", None, None),
        JobState::Done(r) => ("done", None, Some(r)),
        JobState::Failed(e) => ("failed", Some(e), None),
    };
    ReplayStatus {
        key: key.to_string(),
        state,
        calls_done: job.calls_done.load(Ordering::Relaxed),
        calls_total: job.calls_total,
        error,
        result,
    }
}

fn current(state: &AppState, path: &PathBuf) -> Option<Arc<ReplayJob>> {
    let meta = std::fs::metadata(path).ok()?;
    let (jobs, _) = state.replays();
    let jobs = jobs.lock().expect("jobs lock");
    jobs.get(path)
        .filter(|j| j.size == meta.len() && j.mtime == meta.modified().ok())
        .cloned()
}

/// The replay status of a trace.
pub fn status(state: &AppState, key: &str) -> Result<ReplayStatus, AppError> {
    let path = state.resolve(key)?;
    Ok(status_of(key, current(state, &path).as_deref()))
}

/// Starts a replay of `key` against the emulator, or joins the one running.
pub async fn start(state: &AppState, key: &str) -> Result<ReplayStatus, AppError> {
    let loaded = state.load(key).await?;
    let meta =
        std::fs::metadata(&loaded.path).map_err(|e| AppError::NotFound(format!("{key:?}: {e}")))?;
    let (jobs, slots) = state.replays();
    let job = {
        let mut jobs = jobs.lock().expect("jobs lock");
        if let Some(j) = jobs.get(&loaded.path)
            && j.size == meta.len()
            && j.mtime == meta.modified().ok()
            && !j.finished()
        {
            return Ok(status_of(key, Some(j)));
        }
        let j = Arc::new(ReplayJob {
            size: meta.len(),
            mtime: meta.modified().ok(),
            calls_done: AtomicU64::new(0),
            calls_total: loaded.index.ioctl_count(),
            state: Mutex::new(JobState::Queued),
        });
        jobs.insert(loaded.path.clone(), j.clone());
        j
    };
    let slots = slots.clone();
    let j = job.clone();
    tokio::spawn(async move {
        let Ok(_permit) = slots.acquire_owned().await else {
            j.set(JobState::Failed("the server is shutting down".into()));
            return;
        };
        j.set(JobState::Running);
        let j2 = j.clone();
        let outcome = tokio::task::spawn_blocking(move || run(&loaded, &j2))
            .await
            .unwrap_or_else(|e| Err(format!("the replay panicked: {e}")));
        j.set(match outcome {
            Ok(r) => JobState::Done(Arc::new(r)),
            Err(e) => JobState::Failed(e),
        });
    });
    Ok(status_of(key, Some(&job)))
}

fn run(l: &Loaded, job: &ReplayJob) -> Result<ReplayResult, String> {
    // the emulator set up as the trace's header says (seed, faults, latency), exactly as
    // `dxtrace replay --target emulator` does
    let opts = replayer::ReplayOptions::new(replayer::Target::InProcess);
    let report = replayer::replay_file_on_emulator(&l.path, opts, &mut |n| {
        job.calls_done.store(n, Ordering::Relaxed)
    })
    .map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(": ");
            s.push_str(&c.to_string());
            src = c.source();
        }
        format!("the replay stopped: {s}")
    })?;
    job.calls_done.store(report.calls, Ordering::Relaxed);
    let total = report.divergences_total;
    let shown: Vec<replayer::Divergence> = report
        .divergences
        .into_iter()
        .take(MAX_DIVERGENCES_SHOWN)
        .collect();
    // one pass over the ioctl lanes finds every shown call by its capture id
    let want: std::collections::HashMap<u64, usize> =
        shown.iter().enumerate().map(|(k, d)| (d.id, k)).collect();
    let mut events: Vec<Option<(usize, u32)>> = vec![None; shown.len()];
    for (li, lane) in l.index.lanes.iter().enumerate() {
        if let LaneData::Io(c) = &lane.data {
            for (i, id) in c.id.iter().enumerate() {
                if let Some(&k) = want.get(id) {
                    events[k].get_or_insert((li, i as u32));
                }
            }
        }
    }
    // several divergences of one call share its id: link them all
    let by_id: std::collections::HashMap<u64, (usize, u32)> = shown
        .iter()
        .zip(&events)
        .filter_map(|(d, e)| e.map(|e| (d.id, e)))
        .collect();
    Ok(ReplayResult {
        target: "emulator",
        calls: report.calls,
        compared: report.compared,
        fd_events: report.fd_events,
        divergences_total: total,
        divergences: shown
            .into_iter()
            .map(|d| DivergenceOut {
                event: by_id.get(&d.id).copied(),
                divergence: d,
            })
            .collect(),
        elapsed_s: report.elapsed.as_secs_f64(),
        recorded_ioctl_ns: report.recorded_ioctl_ns,
        replayed_ioctl_ns: report.replayed_ioctl_ns,
        notes: report.notes,
    })
}
