//! Statistics over a decoded trace: per ioctl, process, thread and VMBus command, the
//! ioctl → VMBus correlation and throughput over time. Group-bys and quantiles run on
//! polars lazy frames built from [`Columns`].

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::columns::{self, Columns, Progress, vmbus_key_label};
use crate::error::{AnalysisError, Result, polars_err};
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

/// [`stats`] with a progress callback over the decode.
pub fn stats_with_progress(
    path: &Path,
    opts: &StatsOptions,
    progress: Option<Progress<'_>>,
) -> Result<Stats> {
    if opts.bucket_ns == 0 {
        return Err(AnalysisError::InvalidOption("bucket must be > 0".into()));
    }
    let cols = columns::load(path, opts.threads, progress)?;
    stats_of(&cols, &path.display().to_string(), opts)
}

/// Statistics of already decoded columns.
pub fn stats_of(c: &Columns, file: &str, opts: &StatsOptions) -> Result<Stats> {
    if opts.bucket_ns == 0 {
        return Err(AnalysisError::InvalidOption("bucket must be > 0".into()));
    }
    let want = |b: By| opts.by.is_none() || opts.by == Some(b);
    let io = ioctl_frame(c)?;
    let comm: HashMap<u32, String> = c
        .processes
        .iter()
        .map(|p| (p.pid, p.comm.clone()))
        .collect();
    let by_ioctl = if want(By::Ioctl) {
        Some(by_ioctl(io.clone())?)
    } else {
        None
    };
    let group = |thread: bool| -> Result<Vec<GroupStats>> {
        let keys: Vec<Expr> = if thread {
            vec![col("pid"), col("tid")]
        } else {
            vec![col("pid")]
        };
        let df = io
            .clone()
            .group_by(keys)
            .agg(call_aggs())
            .collect()
            .map_err(polars_err("grouping ioctls by process/thread"))?;
        let pids = u64s(&df, "pid")?;
        let tids = if thread {
            Some(u64s(&df, "tid")?)
        } else {
            None
        };
        let calls = call_stats(&df)?;
        let mut out: Vec<GroupStats> = calls
            .into_iter()
            .enumerate()
            .map(|(i, calls)| GroupStats {
                pid: pids[i] as u32,
                tid: tids.as_ref().map(|t| t[i] as u32),
                comm: comm.get(&(pids[i] as u32)).cloned(),
                calls,
            })
            .collect();
        out.sort_by(|a, b| {
            b.calls
                .count
                .cmp(&a.calls.count)
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
        });
        Ok(out)
    };
    let by_process = if want(By::Process) {
        Some(group(false)?)
    } else {
        None
    };
    let by_thread = if want(By::Thread) {
        Some(group(true)?)
    } else {
        None
    };
    let by_vmbus = if want(By::Vmbus) {
        Some(by_vmbus(c)?)
    } else {
        None
    };
    Ok(Stats {
        schema: STATS_SCHEMA.into(),
        file: file.into(),
        records: c.records,
        dropped_events: c.dropped_events,
        decode_errors: c.decode_errors.clone(),
        ts_min_ns: c.ts_min,
        ts_max_ns: c.ts_max,
        totals: totals(c),
        by_ioctl,
        by_process,
        by_thread,
        by_vmbus,
        throughput: throughput(c, opts.bucket_ns)?,
    })
}

fn totals(c: &Columns) -> Totals {
    let io = &c.ioctls;
    let v = &c.vmbus;
    let sum = |x: &[u64]| x.iter().sum::<u64>();
    let count_dir = |d: u8| v.dir.iter().filter(|x| **x == d).count() as u64;
    let bytes_dir = |d: u8| {
        v.dir
            .iter()
            .zip(&v.len)
            .filter(|(x, _)| **x == d)
            .map(|(_, l)| *l)
            .sum::<u64>()
    };
    Totals {
        ioctls: io.len() as u64,
        errors: io.is_error.iter().filter(|e| **e).count() as u64,
        bytes_in: sum(&io.bytes_in),
        bytes_out: sum(&io.bytes_out),
        ioctl_ns: io
            .ts_exit
            .iter()
            .zip(&io.ts_enter)
            .map(|(x, e)| x.saturating_sub(*e))
            .sum(),
        host_ns: sum(&io.host_ns),
        vmbus_messages: v.len() as u64,
        vmbus_requests: count_dir(0),
        vmbus_replies: count_dir(1),
        vmbus_host_to_guest: count_dir(2),
        round_trips: v.rtt_ns.iter().filter(|r| r.is_some()).count() as u64,
        vmbus_request_bytes: bytes_dir(0),
        vmbus_reply_bytes: bytes_dir(1),
        processes: c.processes.len() as u64,
    }
}

/// The ioctl rows as a lazy frame (only the columns statistics need).
fn ioctl_frame(c: &Columns) -> Result<LazyFrame> {
    let io = &c.ioctls;
    let dur: Vec<u64> = io
        .ts_exit
        .iter()
        .zip(&io.ts_enter)
        .map(|(x, e)| x.saturating_sub(*e))
        .collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new("cmd".into(), io.cmd.clone()),
        Column::new("pid".into(), io.pid.clone()),
        Column::new("tid".into(), io.tid.clone()),
        Column::new("ret".into(), io.ret.clone()),
        Column::new("is_error".into(), io.is_error.clone()),
        Column::new("dur".into(), dur),
        Column::new("bytes_in".into(), io.bytes_in.clone()),
        Column::new("bytes_out".into(), io.bytes_out.clone()),
        Column::new("host_ns".into(), io.host_ns.clone()),
        Column::new("round_trips".into(), io.round_trips.clone()),
    ])
    .map_err(polars_err("building the ioctl frame"))?;
    Ok(df.lazy())
}

fn latency_aggs(c: &str) -> Vec<Expr> {
    let q = |p: f64, name: &str| col(c).quantile(lit(p), QuantileMethod::Nearest).alias(name);
    vec![
        col(c).mean().alias("mean"),
        q(0.5, "p50"),
        q(0.9, "p90"),
        q(0.99, "p99"),
        col(c).max().alias("max"),
    ]
}

fn call_aggs() -> Vec<Expr> {
    let mut v = vec![
        len().alias("count"),
        col("is_error").cast(DataType::UInt64).sum().alias("errors"),
        col("dur").sum().alias("total_ns"),
        col("bytes_in").sum().alias("bytes_in"),
        col("bytes_out").sum().alias("bytes_out"),
        col("host_ns").sum().alias("host_ns"),
        col("round_trips")
            .cast(DataType::UInt64)
            .sum()
            .alias("round_trips"),
    ];
    v.extend(latency_aggs("dur"));
    v
}

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.column(name)
        .map_err(polars_err(format!("reading column {name}")))
}

/// A result column as u64 (nulls as 0).
fn u64s(df: &DataFrame, name: &str) -> Result<Vec<u64>> {
    let c = column(df, name)?
        .cast(&DataType::UInt64)
        .map_err(polars_err(format!("casting {name}")))?;
    let ca = c.u64().map_err(polars_err(format!("reading {name}")))?;
    Ok(ca.iter().map(|v| v.unwrap_or(0)).collect())
}

fn i64s(df: &DataFrame, name: &str) -> Result<Vec<i64>> {
    let c = column(df, name)?
        .cast(&DataType::Int64)
        .map_err(polars_err(format!("casting {name}")))?;
    let ca = c.i64().map_err(polars_err(format!("reading {name}")))?;
    Ok(ca.iter().map(|v| v.unwrap_or(0)).collect())
}

fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let c = column(df, name)?
        .cast(&DataType::Float64)
        .map_err(polars_err(format!("casting {name}")))?;
    let ca = c.f64().map_err(polars_err(format!("reading {name}")))?;
    Ok(ca.iter().collect())
}

fn latencies(df: &DataFrame) -> Result<Vec<Option<Latency>>> {
    let mean = f64s(df, "mean")?;
    let p50 = f64s(df, "p50")?;
    let p90 = f64s(df, "p90")?;
    let p99 = f64s(df, "p99")?;
    let max = f64s(df, "max")?;
    let r = |v: Option<f64>| v.unwrap_or(0.0).round() as u64;
    Ok((0..df.height())
        .map(|i| {
            mean[i].map(|m| Latency {
                mean_ns: m,
                p50_ns: r(p50[i]),
                p90_ns: r(p90[i]),
                p99_ns: r(p99[i]),
                max_ns: r(max[i]),
            })
        })
        .collect())
}

fn call_stats(df: &DataFrame) -> Result<Vec<CallStats>> {
    let count = u64s(df, "count")?;
    let errors = u64s(df, "errors")?;
    let total = u64s(df, "total_ns")?;
    let bin = u64s(df, "bytes_in")?;
    let bout = u64s(df, "bytes_out")?;
    let host = u64s(df, "host_ns")?;
    let rt = u64s(df, "round_trips")?;
    let lat = latencies(df)?;
    Ok((0..df.height())
        .map(|i| CallStats {
            count: count[i],
            errors: errors[i],
            latency: lat[i].clone().unwrap_or_default(),
            total_ns: total[i],
            bytes_in: bin[i],
            bytes_out: bout[i],
            host_ns: host[i],
            round_trips: rt[i],
            host_share: if total[i] == 0 {
                0.0
            } else {
                host[i] as f64 / total[i] as f64
            },
        })
        .collect())
}

fn by_ioctl(io: LazyFrame) -> Result<Vec<IoctlStats>> {
    let df = io
        .clone()
        .group_by([col("cmd")])
        .agg(call_aggs())
        .collect()
        .map_err(polars_err("grouping ioctls by request code"))?;
    let errs = io
        .filter(col("is_error"))
        .group_by([col("cmd"), col("ret")])
        .agg([len().alias("count")])
        .collect()
        .map_err(polars_err("grouping failed ioctls by status"))?;
    let mut by_status: HashMap<u32, Vec<StatusCount>> = HashMap::new();
    let (ecmd, eret, ecount) = (
        u64s(&errs, "cmd")?,
        i64s(&errs, "ret")?,
        u64s(&errs, "count")?,
    );
    for i in 0..errs.height() {
        let cmd = ecmd[i] as u32;
        by_status.entry(cmd).or_default().push(StatusCount {
            ret: eret[i],
            status: names::status_label(cmd, eret[i]),
            count: ecount[i],
        });
    }
    let cmds = u64s(&df, "cmd")?;
    let calls = call_stats(&df)?;
    let mut out: Vec<IoctlStats> = calls
        .into_iter()
        .enumerate()
        .map(|(i, calls)| {
            let cmd = cmds[i] as u32;
            let mut errors_by_status = by_status.remove(&cmd).unwrap_or_default();
            errors_by_status.sort_by(|a, b| b.count.cmp(&a.count).then(a.ret.cmp(&b.ret)));
            IoctlStats {
                name: names::ioctl_name(cmd),
                cmd,
                calls,
                errors_by_status,
            }
        })
        .collect();
    out.sort_by(|a, b| b.calls.count.cmp(&a.calls.count).then(a.name.cmp(&b.name)));
    Ok(out)
}

fn by_vmbus(c: &Columns) -> Result<Vec<VmbusStats>> {
    let v = &c.vmbus;
    let df = DataFrame::new_infer_height(vec![
        Column::new("cmd".into(), v.cmd.clone()),
        Column::new(
            "dir".into(),
            v.dir.iter().map(|d| *d as u32).collect::<Vec<u32>>(),
        ),
        Column::new(
            "sync_request".into(),
            v.dir
                .iter()
                .zip(&v.is_async)
                .map(|(d, a)| *d == 0 && !*a)
                .collect::<Vec<bool>>(),
        ),
        Column::new("len".into(), v.len.clone()),
        Column::new("rtt".into(), v.rtt_ns.clone()),
    ])
    .map_err(polars_err("building the VMBus frame"))?;
    let is_dir = |d: u32| col("dir").eq(lit(d));
    let mut aggs = vec![
        len().alias("messages"),
        is_dir(0).cast(DataType::UInt64).sum().alias("requests"),
        is_dir(1).cast(DataType::UInt64).sum().alias("replies"),
        is_dir(2)
            .cast(DataType::UInt64)
            .sum()
            .alias("host_to_guest"),
        col("sync_request")
            .cast(DataType::UInt64)
            .sum()
            .alias("sync_requests"),
        col("len").filter(is_dir(0)).sum().alias("request_bytes"),
        col("len").filter(is_dir(1)).sum().alias("reply_bytes"),
        col("rtt").count().alias("round_trips"),
    ];
    aggs.extend(latency_aggs("rtt"));
    let df = df
        .lazy()
        .group_by([col("cmd")])
        .agg(aggs)
        .collect()
        .map_err(polars_err("grouping VMBus messages by command"))?;
    let keys = u64s(&df, "cmd")?;
    let get = |n: &str| u64s(&df, n);
    let (messages, requests, replies, h2g, sync, rqb, rpb, rts) = (
        get("messages")?,
        get("requests")?,
        get("replies")?,
        get("host_to_guest")?,
        get("sync_requests")?,
        get("request_bytes")?,
        get("reply_bytes")?,
        get("round_trips")?,
    );
    let lat = latencies(&df)?;
    let mut out: Vec<VmbusStats> = (0..df.height())
        .map(|i| VmbusStats {
            command: vmbus_key_label(keys[i]),
            messages: messages[i],
            requests: requests[i],
            replies: replies[i],
            host_to_guest: h2g[i],
            unanswered: sync[i].saturating_sub(rts[i]),
            request_bytes: rqb[i],
            reply_bytes: rpb[i],
            round_trips: rts[i],
            rtt: lat[i].clone(),
        })
        .collect();
    out.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.command.cmp(&b.command)));
    Ok(out)
}

/// Most buckets a throughput series may have (a 1 ns bucket over an hour-long trace
/// would otherwise allocate terabytes).
const MAX_BUCKETS: u64 = 10_000_000;

/// A dense series (empty buckets included, which a group-by would drop), counted
/// directly: one pass over two columns.
pub(crate) fn throughput(c: &Columns, bucket_ns: u64) -> Result<Throughput> {
    if bucket_ns == 0 {
        return Err(AnalysisError::InvalidOption("bucket must be > 0".into()));
    }
    let t0 = c.ts_min;
    let n = if c.records == 0 {
        0
    } else {
        (c.ts_max.saturating_sub(t0)) / bucket_ns + 1
    };
    if n > MAX_BUCKETS {
        return Err(AnalysisError::InvalidOption(format!(
            "a {bucket_ns} ns bucket makes {n} buckets over this trace (at most {MAX_BUCKETS}); \
             use a wider bucket"
        )));
    }
    let mut b: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start_ns: i * bucket_ns,
            ioctls: 0,
            bytes: 0,
            vmbus_messages: 0,
            vmbus_bytes: 0,
            ioctls_per_s: 0.0,
            bytes_per_s: 0.0,
            vmbus_messages_per_s: 0.0,
        })
        .collect();
    let last = b.len().saturating_sub(1);
    let idx = |ts: u64| ((ts.saturating_sub(t0) / bucket_ns) as usize).min(last);
    let io = &c.ioctls;
    for i in 0..io.len() {
        let k = idx(io.ts_enter[i]);
        b[k].ioctls += 1;
        b[k].bytes += io.bytes_in[i] + io.bytes_out[i];
    }
    let v = &c.vmbus;
    for i in 0..v.len() {
        let k = idx(v.ts[i]);
        b[k].vmbus_messages += 1;
        b[k].vmbus_bytes += v.len[i];
    }
    let per_s = 1e9 / bucket_ns as f64;
    for x in &mut b {
        x.ioctls_per_s = x.ioctls as f64 * per_s;
        x.bytes_per_s = x.bytes as f64 * per_s;
        x.vmbus_messages_per_s = x.vmbus_messages as f64 * per_s;
    }
    Ok(Throughput {
        bucket_ns,
        buckets: b,
    })
}
