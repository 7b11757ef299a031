//! Overview of one trace: header facts, ioctls by name, processes, VMBus commands,
//! drops and integrity.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::index::{Gap, LaneKind, TraceIndex};
use crate::state::{AppState, IndexOrigin};

/// A lane as listed by the API.
#[derive(Debug, Serialize)]
pub struct LaneInfo {
    /// Lane index.
    pub lane: usize,
    /// Label.
    pub label: String,
    /// Kind.
    pub kind: LaneKind,
    /// Events.
    pub events: usize,
}

/// `GET /api/traces/{key}`.
#[derive(Debug, Serialize)]
pub struct OverviewJson {
    /// Key.
    pub key: String,
    /// File header.
    pub header: traces::Header,
    /// Format version.
    pub format_version: String,
    /// File size.
    pub file_bytes: u64,
    /// Frames.
    pub frames: u64,
    /// Footer present.
    pub footer: bool,
    /// First timestamp, monotonic ns.
    pub start_ns: u64,
    /// Last timestamp.
    pub end_ns: u64,
    /// Records per kind.
    pub records: BTreeMap<String, u64>,
    /// The `analysis` statistics (`dxtrace stats --json`, schema `dxtrace.stats.v1`):
    /// totals, `by_ioctl`, `by_process`, `by_thread`, `by_vmbus`, throughput.
    pub stats: analysis::Stats,
    /// Events lost.
    pub dropped_events: u64,
    /// Lost events per reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Damaged regions.
    pub gaps: Vec<Gap>,
    /// ioctls with truncated or unreadable buffers.
    pub incomplete_buffers: u64,
    /// Lanes of the timeline.
    pub lanes: Vec<LaneInfo>,
    /// Index build time, ms (when it was built, possibly by an earlier run).
    pub index_ms: u64,
    /// Where this server got the index: `built` now or loaded from the `cache`.
    pub index_origin: IndexOrigin,
    /// Time this server took to build or load it, ms.
    pub index_load_ms: u64,
}

fn drops_by_reason(ix: &TraceIndex) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for d in &ix.drops {
        *m.entry(d.reason.clone()).or_default() += d.count;
    }
    m
}

/// The overview as JSON.
pub async fn api(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<OverviewJson>, AppError> {
    let l = super::load(&state, &key).await?;
    let stats = state.stats(&l).await?;
    let ix = &l.index;
    Ok(Json(OverviewJson {
        key: l.key.clone(),
        header: ix.header.clone(),
        format_version: ix.version.clone(),
        file_bytes: ix.file_bytes,
        frames: ix.frames,
        footer: ix.footer,
        start_ns: ix.start,
        end_ns: ix.end,
        records: ix.records.clone(),
        stats: (*stats).clone(),
        dropped_events: ix.dropped_events,
        dropped_by_reason: drops_by_reason(ix),
        gaps: ix.gaps.clone(),
        incomplete_buffers: ix.incomplete_buffers,
        lanes: ix
            .lanes
            .iter()
            .enumerate()
            .map(|(i, x)| LaneInfo {
                lane: i,
                label: x.label.clone(),
                kind: x.kind,
                events: x.len(),
            })
            .collect(),
        index_ms: ix.build_ms,
        index_origin: l.origin,
        index_load_ms: l.load_ms,
    }))
}

/// A formatted statistics row.
pub struct StatRow {
    /// Name.
    pub name: String,
    /// Count.
    pub count: u64,
    /// Errors.
    pub errors: u64,
    /// p50.
    pub p50: String,
    /// p99.
    pub p99: String,
    /// max.
    pub max: String,
    /// bytes.
    pub bytes: String,
}

fn ioctl_rows(s: &analysis::Stats) -> Vec<StatRow> {
    s.by_ioctl
        .iter()
        .flatten()
        .map(|c| StatRow {
            name: c.name.clone(),
            count: c.calls.count,
            errors: c.calls.errors,
            p50: fmt::ns(c.calls.latency.p50_ns),
            p99: fmt::ns(c.calls.latency.p99_ns),
            max: fmt::ns(c.calls.latency.max_ns),
            bytes: fmt::bytes(c.calls.bytes_in + c.calls.bytes_out),
        })
        .collect()
}

/// VMBus rows: `count` is messages of every direction, `errors` the sync requests that
/// saw no reply, latencies are round trips.
fn vmbus_rows(s: &analysis::Stats) -> Vec<StatRow> {
    let dash = || "—".to_string();
    s.by_vmbus
        .iter()
        .flatten()
        .map(|c| StatRow {
            name: c.command.clone(),
            count: c.messages,
            errors: c.unanswered,
            p50: c.rtt.as_ref().map_or_else(dash, |l| fmt::ns(l.p50_ns)),
            p99: c.rtt.as_ref().map_or_else(dash, |l| fmt::ns(l.p99_ns)),
            max: c.rtt.as_ref().map_or_else(dash, |l| fmt::ns(l.max_ns)),
            bytes: fmt::bytes(c.request_bytes + c.reply_bytes),
        })
        .collect()
}

fn process_rows(s: &analysis::Stats) -> Vec<ProcRow> {
    let threads = s.by_thread.as_deref().unwrap_or_default();
    s.by_process
        .iter()
        .flatten()
        .map(|p| ProcRow {
            pid: p.pid,
            comm: p.comm.clone().unwrap_or_default(),
            threads: threads
                .iter()
                .filter(|t| t.pid == p.pid)
                .map(|t| format!("{} ({})", t.tid.unwrap_or(0), t.calls.count))
                .collect::<Vec<_>>()
                .join(", "),
            ioctls: p.calls.count,
            errors: p.calls.errors,
            p99: fmt::ns(p.calls.latency.p99_ns),
        })
        .collect()
}

/// A formatted process row.
pub struct ProcRow {
    /// pid.
    pub pid: u32,
    /// comm.
    pub comm: String,
    /// `tid (calls)` list.
    pub threads: String,
    /// ioctls.
    pub ioctls: u64,
    /// Failed ioctls.
    pub errors: u64,
    /// ioctl latency p99.
    pub p99: String,
}

/// `GET /traces/{key}`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/overview.html")]
pub struct OverviewPage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// Header facts as (name, value).
    pub facts: Vec<(String, String)>,
    /// ioctls.
    pub ioctls: Vec<StatRow>,
    /// VMBus.
    pub vmbus: Vec<StatRow>,
    /// Processes.
    pub processes: Vec<ProcRow>,
    /// Drops as (reason, count).
    pub drops: Vec<(String, u64)>,
    /// Integrity warnings.
    pub warnings: Vec<String>,
}

/// The overview page.
pub async fn page(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<OverviewPage, HtmlError> {
    let l = super::load(&state, &key).await?;
    let stats = state.stats(&l).await?;
    let ix = &l.index;
    let h = &ix.header;
    let mut facts = vec![
        ("source".to_string(), h.source.name().to_string()),
        ("format".into(), ix.version.clone()),
        ("file size".into(), fmt::bytes(ix.file_bytes)),
        ("span".into(), fmt::ns(ix.end.saturating_sub(ix.start))),
        ("records".into(), ix.total_records.to_string()),
        ("ioctls".into(), ix.ioctl_count().to_string()),
        ("VMBus round trips".into(), ix.vmbus_count().to_string()),
        ("frames".into(), ix.frames.to_string()),
        ("tool".into(), format!("{} {}", h.tool, h.tool_version)),
        ("host".into(), h.hostname.clone()),
        ("kernel".into(), h.kernel_release.clone()),
        (
            "devices".into(),
            h.devices
                .iter()
                .map(|d| format!("{} ({})", d.path, d.schema))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "VMBus capture".into(),
            format!(
                "{} {}",
                if h.vmbus.active { "active" } else { "off" },
                h.vmbus.detail
            ),
        ),
        (
            "index".into(),
            match l.origin {
                IndexOrigin::Built => format!("built in {} ms", l.load_ms),
                IndexOrigin::Cache => format!(
                    "loaded from the cache in {} ms (built in {} ms)",
                    l.load_ms, ix.build_ms
                ),
            },
        ),
    ];
    if let Some(g) = &h.generated {
        facts.push(("generated".into(), g.clone()));
    }
    if !h.command.is_empty() {
        facts.push(("command".into(), h.command.join(" ")));
    }
    let mut warnings = Vec::new();
    if !ix.footer {
        warnings.push(
            "the file has no footer index: the recorder did not finish (the last second may be missing)"
                .to_string(),
        );
    }
    for g in &ix.gaps {
        warnings.push(format!(
            "damaged region at byte {}: {}",
            g.offset, g.problem
        ));
    }
    if ix.incomplete_buffers > 0 {
        warnings.push(format!(
            "{} ioctls have truncated or unreadable buffers",
            ix.incomplete_buffers
        ));
    }
    if ix.dropped_events > 0 {
        warnings.push(format!(
            "the capture lost {} events (drawn as red marks on the timeline)",
            ix.dropped_events
        ));
    }
    Ok(OverviewPage {
        href: fmt::enc(&l.key),
        key: l.key.clone(),
        facts,
        ioctls: ioctl_rows(&stats),
        vmbus: vmbus_rows(&stats),
        processes: process_rows(&stats),
        drops: drops_by_reason(ix).into_iter().collect(),
        warnings,
    })
}
