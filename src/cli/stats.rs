//! `dxtrace stats`: statistics per ioctl, process, thread and VMBus command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use analysis::text::{parse_by, parse_duration};
use analysis::{StatsOptions, stats_with_progress};
use anyhow::Context;

use super::export::Bar;

/// Shown after the options: what the numbers mean and the JSON keys.
const ABOUT_OUTPUT: &str = r#"Statistics per ioctl, process, thread and VMBus command, the time ioctls spent waiting
on the host, and throughput over time.

Errors are calls whose full 64-bit return value is negative (-errno, negative
NTSTATUS) or a raw failure NTSTATUS. Latency quantiles are nearest-rank. VMBus replies
are paired with their request by (channel, request_id); an ioctl's host time is the
sum of the round trips of the requests that name it.

JSON output (--json, schema "dxtrace.stats.v1"), stable keys:
  schema, file, records, dropped_events, decode_errors[], ts_min_ns, ts_max_ns,
  totals {ioctls, errors, bytes_in, bytes_out, ioctl_ns, host_ns, vmbus_messages,
          vmbus_requests, vmbus_replies, vmbus_host_to_guest, round_trips,
          vmbus_request_bytes, vmbus_reply_bytes, processes},
  by_ioctl[] {name, cmd, count, errors, latency, total_ns, bytes_in, bytes_out,
              host_ns, round_trips, host_share, errors_by_status[] {ret, status, count}},
  by_process[] / by_thread[] {pid, tid, comm, count, errors, latency, total_ns,
              bytes_in, bytes_out, host_ns, round_trips, host_share},
  by_vmbus[] {command, messages, requests, replies, host_to_guest, unanswered,
              request_bytes, reply_bytes, round_trips, rtt},
  throughput {bucket_ns, buckets[] {start_ns, ioctls, bytes, vmbus_messages,
              vmbus_bytes, ioctls_per_s, bytes_per_s, vmbus_messages_per_s}};
  latency / rtt = {mean_ns, p50_ns, p90_ns, p99_ns, max_ns}; groupings not selected
  with --by are null. Durations are integer ns except mean_ns."#;

/// `dxtrace stats` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = ABOUT_OUTPUT)]
pub struct StatsArgs {
    /// The .dxtrace file.
    pub file: PathBuf,

    /// Print one JSON object (keys above) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Only this grouping: ioctl, process, thread or vmbus (default: all).
    #[arg(long, value_name = "GROUP", value_parser = ["ioctl", "process", "thread", "vmbus"])]
    pub by: Option<String>,

    /// Throughput bucket width (e.g. 10ms, 500us, 1s); lists every bucket in the tables.
    #[arg(long, value_name = "DURATION")]
    pub bucket: Option<String>,

    /// Threads used to decode frames (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let mut opts = StatsOptions {
        by: a.by.as_deref().and_then(parse_by),
        ..StatsOptions::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    if let Some(b) = &a.bucket {
        opts.bucket_ns = parse_duration(b)
            .with_context(|| format!("--bucket {b:?}: expected a duration such as 10ms"))?;
    }
    let bar = Bar::new(&a.file, "aggregating");
    let s = stats_with_progress(&a.file, &opts, Some(&|d, t| bar.set(d, t)))
        .with_context(|| format!("cannot compute statistics of {}", a.file.display()))?;
    bar.finish();
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        out.write_all(s.to_text(a.bucket.is_some()).as_bytes())?;
    }
    // Like `dxtrace info`: 1 when frames were unreadable (the figures miss their records).
    Ok(if s.decode_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
