//! A whole-file summary: what `dxtrace info` prints. Frames are decoded in parallel.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::reader::Reader;
use crate::record::{BUF_TRUNCATED, BUF_UNREADABLE, Record, RecordKind};
use crate::view::RecordRef;

/// A process as seen in the trace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Thread-group id.
    pub pid: u32,
    /// `comm`, if a process record named it.
    pub comm: String,
    /// Executable, if known.
    pub exe: String,
    /// Distinct thread ids that made ioctls.
    pub threads: usize,
    /// ioctls made.
    pub ioctls: u64,
}

/// A frame that could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FrameProblem {
    /// Byte offset.
    pub offset: u64,
    /// What is wrong.
    pub error: String,
}

/// Facts about a trace file; the JSON form of `dxtrace info --json`.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// `"major.minor"`.
    pub format_version: String,
    /// File size.
    pub file_bytes: u64,
    /// Record counts by kind name (`ioctl`, `vmbus`, `process`, `fd`, `dropped`, …).
    pub records: BTreeMap<String, u64>,
    /// Total records read.
    pub total_records: u64,
    /// Total events the capture reported lost (sum of dropped records).
    pub dropped_events: u64,
    /// Dropped-event totals by reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// Earliest timestamp (ns), if any record.
    pub start_ns: Option<u64>,
    /// Latest timestamp (ns).
    pub end_ns: Option<u64>,
    /// Processes.
    pub processes: Vec<ProcessSummary>,
    /// Footer index present and valid.
    pub footer: bool,
    /// Why the footer could not be used, if damaged.
    pub footer_problem: Option<String>,
    /// Record frames found.
    pub frames: u64,
    /// Frames that could not be read (count).
    pub corrupt_frames: u64,
    /// Details of unreadable frames and of where scanning stopped.
    pub problems: Vec<FrameProblem>,
    /// ioctls that carry at least one truncated or unreadable buffer.
    pub ioctls_with_incomplete_buffers: u64,
}

impl TraceSummary {
    /// True when every frame read and the footer was present.
    pub fn intact(&self) -> bool {
        self.footer && self.corrupt_frames == 0 && self.problems.is_empty()
    }
}

#[derive(Default)]
struct Acc {
    kinds: BTreeMap<&'static str, u64>,
    total: u64,
    dropped: u64,
    dropped_by: BTreeMap<String, u64>,
    start: Option<u64>,
    end: Option<u64>,
    procs: BTreeMap<u32, (String, String, std::collections::BTreeSet<u32>, u64)>,
    incomplete: u64,
}

impl Acc {
    fn add(&mut self, r: RecordRef<'_>) {
        let kind = r.kind().map(RecordKind::name).unwrap_or("unknown");
        *self.kinds.entry(kind).or_default() += 1;
        self.total += 1;
        if let (Some(a), Some(b)) = (r.ts(), r.ts_end()) {
            self.start = Some(self.start.map_or(a, |s| s.min(a)));
            self.end = Some(self.end.map_or(b, |e| e.max(b)));
        }
        match r {
            RecordRef::Other(Record::Dropped(d)) => {
                self.dropped += d.count;
                *self.dropped_by.entry(d.reason.clone()).or_default() += d.count;
            }
            RecordRef::Other(Record::Process(p)) => {
                let e = self.procs.entry(p.pid).or_default();
                e.0 = p.comm.clone();
                e.1 = p.exe.clone();
            }
            RecordRef::Ioctl(i) => {
                let e = self.procs.entry(i.pid).or_default();
                e.2.insert(i.tid);
                e.3 += 1;
                if i.buffers
                    .iter()
                    .any(|b| b.flags & (BUF_TRUNCATED | BUF_UNREADABLE) != 0)
                {
                    self.incomplete += 1;
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, o: Acc) {
        for (k, v) in o.kinds {
            *self.kinds.entry(k).or_default() += v;
        }
        self.total += o.total;
        self.dropped += o.dropped;
        for (k, v) in o.dropped_by {
            *self.dropped_by.entry(k).or_default() += v;
        }
        self.start = match (self.start, o.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.end = match (self.end, o.end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (pid, (comm, exe, tids, n)) in o.procs {
            let e = self.procs.entry(pid).or_default();
            if !comm.is_empty() {
                e.0 = comm;
            }
            if !exe.is_empty() {
                e.1 = exe;
            }
            e.2.extend(tids);
            e.3 += n;
        }
        self.incomplete += o.incomplete;
    }
}

/// Reads every frame (on `threads` threads) and summarises the trace. Damaged frames are
/// counted and described, never fatal.
pub fn summarize(reader: &Reader, threads: usize) -> TraceSummary {
    // Visited without copying; a frame that fails part-way counts as unreadable whole.
    let parts = reader.map_blocks(threads, |_, block| {
        let mut a = Acc::default();
        block?.for_each(|r| a.add(r))?;
        Ok::<Acc, crate::TraceError>(a)
    });
    let mut acc = Acc::default();
    let mut problems = Vec::new();
    let mut corrupt = 0;
    for (i, p) in parts.into_iter().enumerate() {
        match p {
            Ok(a) => acc.merge(a),
            Err(e) => {
                corrupt += 1;
                problems.push(FrameProblem {
                    offset: reader.frames()[i].offset,
                    error: e.to_string(),
                });
            }
        }
    }
    if let Some(e) = reader.scan_problem() {
        problems.push(FrameProblem {
            offset: e.offset().unwrap_or(0),
            error: e.to_string(),
        });
    }
    for l in reader.lost() {
        problems.push(FrameProblem {
            offset: l.offset,
            error: format!("{} bytes skipped: {}", l.len, l.reason),
        });
    }
    let (maj, min) = reader.version();
    TraceSummary {
        format_version: format!("{maj}.{min}"),
        file_bytes: reader.file_len(),
        records: acc
            .kinds
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        total_records: acc.total,
        dropped_events: acc.dropped,
        dropped_by_reason: acc.dropped_by,
        start_ns: acc.start,
        end_ns: acc.end,
        processes: acc
            .procs
            .into_iter()
            .map(|(pid, (comm, exe, tids, n))| ProcessSummary {
                pid,
                comm,
                exe,
                threads: tids.len(),
                ioctls: n,
            })
            .collect(),
        footer: reader.has_footer(),
        footer_problem: reader.footer_problem().map(|e| e.to_string()),
        frames: reader.frames().len() as u64,
        corrupt_frames: corrupt,
        problems,
        ioctls_with_incomplete_buffers: acc.incomplete,
    }
}
