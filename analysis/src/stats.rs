//! Statistics over a trace: per ioctl, process, thread and VMBus command, the
//! ioctl → VMBus correlation and throughput over time.
//!
//! Computed in one streaming pass ([`crate::aggregate`]): frames are decoded in
//! parallel straight into per-group partial aggregates (exact integer sums, counts,
//! maxima) that are merged in file order; quantiles are selected (not sorted) from the
//! per-group durations kept for them. Memory is per group plus ~16 bytes per ioctl, not
//! per column per row: a 10M-event trace stays far under the web UI's 1 GiB.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use traces::Reader;

use crate::aggregate::{Agg, Hist, MAX_BUCKETS, Triple, aggregate, quantiles};
use crate::columns::{Columns, Progress, vmbus_key_label};
use crate::error::{AnalysisError, Result};
use crate::names;

/// Schema tag of [`Stats`] JSON; bumped when a key changes meaning or disappears.
pub const STATS_SCHEMA: &str = "dxtrace.stats.v1";

/// Which grouping to compute (all when [`StatsOptions::by`] is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// Per ioctl name.
    Ioctl,
    /// Per process.
    Process,
    /// Per thread.
    Thread,
    /// Per VMBus command.
    Vmbus,
}

/// What [`stats`] computes.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// Only this grouping (the others come out as `null`); `None` = all of them.
    pub by: Option<By>,
    /// Width of a throughput bucket, ns (> 0).
    pub bucket_ns: u64,
    /// Decode threads.
    pub threads: usize,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            by: None,
            bucket_ns: 10_000_000,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Latency distribution, ns. Quantiles are "nearest rank" (an observed value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Maximum.
    pub max_ns: u64,
}

/// Whole-trace totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Ioctl records.
    pub ioctls: u64,
    /// Ioctls whose return value is a failure.
    pub errors: u64,
    /// Captured bytes read at ioctl entry (struct_in + ptr_in).
    pub bytes_in: u64,
    /// Captured bytes read at ioctl exit (struct_out + ptr_out).
    pub bytes_out: u64,
    /// Sum of ioctl durations (exit − entry), ns.
    pub ioctl_ns: u64,
    /// Sum of the VMBus round trips charged to ioctls, ns.
    pub host_ns: u64,
    /// VMBus messages of every direction.
    pub vmbus_messages: u64,
    /// Guest → host requests.
    pub vmbus_requests: u64,
    /// Host replies.
    pub vmbus_replies: u64,
    /// Host-initiated messages.
    pub vmbus_host_to_guest: u64,
    /// Replies paired with their request.
    pub round_trips: u64,
    /// Sum of request lengths (bytes).
    pub vmbus_request_bytes: u64,
    /// Sum of reply lengths (bytes).
    pub vmbus_reply_bytes: u64,
    /// Process records.
    pub processes: u64,
}

/// One return value seen on failing calls of an ioctl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCount {
    /// Full 64-bit return value.
    pub ret: i64,
    /// Its rendering (`-22 (EINVAL)`, `… = raw NTSTATUS STATUS_INVALID_PARAMETER (…)`).
    pub status: String,
    /// Calls that returned it.
    pub count: u64,
}

/// Figures shared by every ioctl grouping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    /// Calls.
    pub count: u64,
    /// Failed calls.
    pub errors: u64,
    /// Duration distribution.
    pub latency: Latency,
    /// Sum of durations, ns.
    pub total_ns: u64,
    /// Captured bytes in.
    pub bytes_in: u64,
    /// Captured bytes out.
    pub bytes_out: u64,
    /// Time spent waiting on the host: sum of the calls' VMBus round trips, ns.
    pub host_ns: u64,
    /// VMBus round trips the calls caused.
    pub round_trips: u64,
    /// `host_ns / total_ns` (0 when `total_ns` is 0).
    pub host_share: f64,
}

/// Per ioctl name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoctlStats {
    /// Name from driver-core's table, or the code as `0x…`.
    pub name: String,
    /// Request code.
    pub cmd: u32,
    /// The figures.
    #[serde(flatten)]
    pub calls: CallStats,
    /// Failures by return value, most frequent first.
    pub errors_by_status: Vec<StatusCount>,
}

/// Per process (`tid` is `null`) or per thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Process id.
    pub pid: u32,
    /// Thread id (per-thread grouping only).
    pub tid: Option<u32>,
    /// `comm` of the process, if the trace has its process record.
    pub comm: Option<String>,
    /// The figures.
    #[serde(flatten)]
    pub calls: CallStats,
}

/// Per VMBus command. Replies count under their request's command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmbusStats {
    /// Command label (`CREATEALLOCATION`, `G:…` global, `H:…` host→guest, `REPLY ?` for
    /// replies without their request, `UNKNOWN`).
    pub command: String,
    /// Messages of every direction.
    pub messages: u64,
    /// Guest → host requests.
    pub requests: u64,
    /// Host replies.
    pub replies: u64,
    /// Host-initiated messages.
    pub host_to_guest: u64,
    /// Sync requests with no reply in the trace.
    pub unanswered: u64,
    /// Sum of request lengths.
    pub request_bytes: u64,
    /// Sum of reply lengths.
    pub reply_bytes: u64,
    /// Round trips (paired replies).
    pub round_trips: u64,
    /// Round-trip distribution (`null` when there is none).
    pub rtt: Option<Latency>,
}

/// Throughput over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bucket width, ns.
    pub bucket_ns: u64,
    /// Every bucket from the first event to the last (empty ones included).
    pub buckets: Vec<Bucket>,
}

/// One throughput bucket. Rates are per second of trace time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start, ns after the trace's first timestamp.
    pub start_ns: u64,
    /// Ioctls entered in the bucket.
    pub ioctls: u64,
    /// Their captured bytes (in + out).
    pub bytes: u64,
    /// VMBus messages in the bucket.
    pub vmbus_messages: u64,
    /// Their lengths.
    pub vmbus_bytes: u64,
    /// `ioctls` per second.
    pub ioctls_per_s: f64,
    /// `bytes` per second.
    pub bytes_per_s: f64,
    /// `vmbus_messages` per second.
    pub vmbus_messages_per_s: f64,
}

/// Statistics of one trace; `dxtrace stats --json` prints this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// [`STATS_SCHEMA`].
    pub schema: String,
    /// The trace.
    pub file: String,
    /// Records read.
    pub records: u64,
    /// Events the capture lost (sum of the trace's drop records).
    pub dropped_events: u64,
    /// Frames that could not be read (their records are not counted).
    pub decode_errors: Vec<String>,
    /// First timestamp, ns.
    pub ts_min_ns: u64,
    /// Last timestamp, ns.
    pub ts_max_ns: u64,
    /// Whole-trace totals.
    pub totals: Totals,
    /// Per ioctl name, most called first.
    pub by_ioctl: Option<Vec<IoctlStats>>,
    /// Per process, most calls first.
    pub by_process: Option<Vec<GroupStats>>,
    /// Per thread, most calls first.
    pub by_thread: Option<Vec<GroupStats>>,
    /// Per VMBus command, most messages first.
    pub by_vmbus: Option<Vec<VmbusStats>>,
    /// Throughput per bucket (always computed: it is cheap and the UI charts it).
    pub throughput: Throughput,
}

/// Decodes `path` and computes its statistics.
pub fn stats(path: &Path, opts: &StatsOptions) -> Result<Stats> {
    stats_with_progress(path, opts, None)
}

/// [`stats`] with a progress callback over the frames (decode and aggregation run
/// together, frame by frame).
pub fn stats_with_progress(
    path: &Path,
    opts: &StatsOptions,
    progress: Option<Progress<'_>>,
) -> Result<Stats> {
    let reader = Reader::open(path).map_err(|source| AnalysisError::Trace {
        path: path.to_path_buf(),
        source,
    })?;
    stats_reader(&reader, &path.display().to_string(), opts, progress)
}

/// Statistics of an open trace, streamed: frames are aggregated as they are decoded,
/// so memory holds per-group figures and one duration per ioctl and per round trip
/// (the quantiles need them), never the rows. `file` names the trace in the result.
pub fn stats_reader(
    reader: &Reader,
    file: &str,
    opts: &StatsOptions,
    progress: Option<Progress<'_>>,
) -> Result<Stats> {
    if opts.bucket_ns == 0 {
        return Err(AnalysisError::InvalidOption("bucket must be > 0".into()));
    }
    let want = |b: By| opts.by.is_none() || opts.by == Some(b);
    let keep_durs = want(By::Ioctl) || want(By::Process) || want(By::Thread);
    let mut a = aggregate(reader, opts.threads, opts.bucket_ns, keep_durs, progress);
    let throughput = a.throughput(reader, opts.threads, opts.bucket_ns)?;
    let mut scratch = Vec::new();
    let by_ioctl = want(By::Ioctl).then(|| by_ioctl(&mut a, &mut scratch));
    let by_process = want(By::Process).then(|| by_group(&mut a, false, &mut scratch));
    let by_thread = want(By::Thread).then(|| by_group(&mut a, true, &mut scratch));
    let by_vmbus = want(By::Vmbus).then(|| by_vmbus(&mut a));
    let (ts_min_ns, ts_max_ns) = a.ts.unwrap_or((0, 0));
    Ok(Stats {
        schema: STATS_SCHEMA.into(),
        file: file.into(),
        records: a.records,
        dropped_events: a.dropped,
        decode_errors: a.decode_errors,
        ts_min_ns,
        ts_max_ns,
        totals: a.totals,
        by_ioctl,
        by_process,
        by_thread,
        by_vmbus,
        throughput,
    })
}

/// The figures of a union of ioctl groups. Their durations are gathered into `scratch`
/// for the quantiles (or selected in place when there is one group).
fn call_stats(a: &mut Agg, groups: &[usize], scratch: &mut Vec<u64>) -> CallStats {
    let mut s = CallStats::default();
    let mut max = 0;
    for &g in groups {
        let c = &a.calls.vals[g];
        s.count += c.count;
        s.errors += c.errors;
        s.total_ns += c.total_ns;
        s.bytes_in += c.bytes_in;
        s.bytes_out += c.bytes_out;
        s.host_ns += c.host_ns;
        s.round_trips += c.round_trips;
        max = max.max(c.max_ns);
    }
    let q = if let [g] = groups {
        quantiles(&mut a.calls.vals[*g].durs)
    } else {
        scratch.clear();
        for &g in groups {
            scratch.extend_from_slice(&a.calls.vals[g].durs);
        }
        quantiles(scratch)
    };
    s.latency = latency(s.count, s.total_ns, q, max);
    s.host_share = if s.total_ns == 0 {
        0.0
    } else {
        s.host_ns as f64 / s.total_ns as f64
    };
    s
}

fn latency(n: u64, sum: u64, [p50, p90, p99]: [u64; 3], max: u64) -> Latency {
    Latency {
        mean_ns: if n == 0 { 0.0 } else { sum as f64 / n as f64 },
        p50_ns: p50,
        p90_ns: p90,
        p99_ns: p99,
        max_ns: max,
    }
}

/// Ioctl groups by a coarser key, in first-seen order.
fn union_by<K: std::hash::Hash + Eq>(a: &Agg, key: impl Fn(&Triple) -> K) -> Vec<(K, Vec<usize>)> {
    let mut ix: HashMap<K, usize> = HashMap::new();
    let mut out: Vec<(K, Vec<usize>)> = Vec::new();
    for (g, t) in a.calls.keys.iter().enumerate() {
        let k = key(t);
        match ix.get(&k) {
            Some(i) => out[*i].1.push(g),
            None => {
                ix.insert(key(t), out.len());
                out.push((k, vec![g]));
            }
        }
    }
    out
}

fn by_ioctl(a: &mut Agg, scratch: &mut Vec<u64>) -> Vec<IoctlStats> {
    let mut by_status: HashMap<u32, Vec<StatusCount>> = HashMap::new();
    for (&(cmd, ret), &count) in &a.errs {
        by_status.entry(cmd).or_default().push(StatusCount {
            ret,
            status: names::status_label(cmd, ret),
            count,
        });
    }
    let mut out: Vec<IoctlStats> = union_by(a, |t| t.0)
        .into_iter()
        .map(|(cmd, groups)| {
            let mut errors_by_status = by_status.remove(&cmd).unwrap_or_default();
            errors_by_status.sort_by(|a, b| b.count.cmp(&a.count).then(a.ret.cmp(&b.ret)));
            IoctlStats {
                name: names::ioctl_name(cmd),
                cmd,
                calls: call_stats(a, &groups, scratch),
                errors_by_status,
            }
        })
        .collect();
    out.sort_by(|a, b| b.calls.count.cmp(&a.calls.count).then(a.name.cmp(&b.name)));
    out
}

fn by_group(a: &mut Agg, thread: bool, scratch: &mut Vec<u64>) -> Vec<GroupStats> {
    let mut out: Vec<GroupStats> = union_by(a, |t| (t.1, if thread { Some(t.2) } else { None }))
        .into_iter()
        .map(|((pid, tid), groups)| GroupStats {
            pid,
            tid,
            comm: a.comm.get(&pid).cloned(),
            calls: call_stats(a, &groups, scratch),
        })
        .collect();
    out.sort_by(|a, b| {
        b.calls
            .count
            .cmp(&a.calls.count)
            .then(a.pid.cmp(&b.pid))
            .then(a.tid.cmp(&b.tid))
    });
    out
}

fn by_vmbus(a: &mut Agg) -> Vec<VmbusStats> {
    let mut out: Vec<VmbusStats> =
        a.vm.keys
            .iter()
            .zip(a.vm.vals.iter_mut())
            .map(|(key, v)| VmbusStats {
                command: vmbus_key_label(*key),
                messages: v.messages,
                requests: v.requests,
                replies: v.replies,
                host_to_guest: v.host_to_guest,
                unanswered: v.sync_requests.saturating_sub(v.round_trips),
                request_bytes: v.request_bytes,
                reply_bytes: v.reply_bytes,
                round_trips: v.round_trips,
                rtt: (v.round_trips > 0)
                    .then(|| latency(v.round_trips, v.rtt_sum, quantiles(&mut v.rtts), v.rtt_max)),
            })
            .collect();
    out.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.command.cmp(&b.command)));
    out
}

/// Throughput of already decoded columns (the Perfetto export's counters), bucketed
/// exactly as [`stats`] does.
pub(crate) fn throughput(c: &Columns, bucket_ns: u64) -> Result<Throughput> {
    if bucket_ns == 0 {
        return Err(AnalysisError::InvalidOption("bucket must be > 0".into()));
    }
    if c.records > 0 && c.ts_max.saturating_sub(c.ts_min) / bucket_ns >= MAX_BUCKETS {
        return Hist::new(c.ts_min, bucket_ns).finish(true, c.ts_max);
    }
    let mut h = Hist::new(c.ts_min, bucket_ns);
    let io = &c.ioctls;
    for i in 0..io.len() {
        h.ioctl(io.ts_enter[i], io.bytes_in[i] + io.bytes_out[i]);
    }
    let v = &c.vmbus;
    for i in 0..v.len() {
        h.vmbus(v.ts[i], v.len[i]);
    }
    h.finish(c.records > 0, c.ts_max)
}
