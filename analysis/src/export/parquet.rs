//! Parquet export: one table per record kind in a directory (layout in the module
//! above).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::columns::{self, Columns, Progress, vmbus_key_label};
use crate::error::{Result, io_err, polars_err};
use crate::export::ExportSummary;
use crate::names;

/// Decodes `input` and writes one table per record kind (`ioctls.parquet`,
/// `vmbus.parquet`, `processes.parquet`, `fds.parquet`, `dropped.parquet`,
/// `signals.parquet`, `annotations.parquet`, `capture_stats.parquet`) into the directory
/// `out` (created if missing). Every table is written, empty ones included, so that a
/// query over many traces finds the same files in each.
pub fn export_parquet(
    input: &Path,
    out: &Path,
    threads: usize,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary> {
    let reader = super::open(input)?;
    let phases = super::Phases::new(&reader, progress);
    let c = columns::load_reader(&reader, threads, Some(&|d, t| phases.decoded(d, t)));
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut summary = ExportSummary {
        decode_errors: c.decode_errors.clone(),
        ..ExportSummary::default()
    };
    let tables = [
        ("ioctls.parquet", ioctl_table(&c)?),
        ("vmbus.parquet", vmbus_table(&c)?),
        ("processes.parquet", process_table(&c)?),
        ("fds.parquet", fd_table(&c)?),
        ("dropped.parquet", dropped_table(&c)?),
        ("signals.parquet", signal_table(&c)?),
        ("annotations.parquet", annotation_table(&c)?),
        ("capture_stats.parquet", capture_stats_table(&c)?),
    ];
    let all: u64 = tables.iter().map(|(_, df)| df.height() as u64).sum();
    for (name, mut df) in tables {
        let path = out.join(name);
        let f = File::create(&path).map_err(io_err(&path))?;
        // Uncompressed pages: the workspace builds polars without its codec features (build
        // time); Parquet's dictionary and RLE encodings still shrink the repetitive columns.
        ParquetWriter::new(f)
            .with_compression(ParquetCompression::Uncompressed)
            .finish(&mut df)
            .map_err(polars_err(format!("writing {}", path.display())))?;
        summary.rows += df.height() as u64;
        summary.files.push(path);
        phases.written(summary.rows, all);
    }
    Ok(summary)
}

/// The ioctl table (also what the web UI could page through).
pub fn ioctl_table(c: &Columns) -> Result<DataFrame> {
    let io = &c.ioctls;
    let name_of = columns::ioctl_name_cache(&io.cmd);
    let mut status_of: HashMap<(u32, i64), String> = HashMap::new();
    for (cmd, ret) in io.cmd.iter().zip(&io.ret) {
        status_of
            .entry((*cmd, *ret))
            .or_insert_with(|| names::status_label(*cmd, *ret));
    }
    let names: Vec<&str> = io.cmd.iter().map(|c| name_of[c].as_str()).collect();
    let status: Vec<&str> = io
        .cmd
        .iter()
        .zip(&io.ret)
        .map(|(c, r)| status_of[&(*c, *r)].as_str())
        .collect();
    let dur: Vec<u64> = io
        .ts_exit
        .iter()
        .zip(&io.ts_enter)
        .map(|(x, e)| x.saturating_sub(*e))
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new("id".into(), io.id.clone()),
        Column::new("ts_enter_ns".into(), io.ts_enter.clone()),
        Column::new("ts_exit_ns".into(), io.ts_exit.clone()),
        Column::new("dur_ns".into(), dur),
        Column::new("pid".into(), io.pid.clone()),
        Column::new("tid".into(), io.tid.clone()),
        Column::new("fd".into(), io.fd.clone()),
        Column::new("dev".into(), io.dev.clone()),
        Column::new("cmd".into(), io.cmd.clone()),
        Column::new("name".into(), names),
        Column::new("ret".into(), io.ret.clone()),
        Column::new("status".into(), status),
        Column::new("is_error".into(), io.is_error.clone()),
        Column::new("bytes_in".into(), io.bytes_in.clone()),
        Column::new("bytes_out".into(), io.bytes_out.clone()),
        Column::new("buffers".into(), io.buffers.clone()),
        Column::new("host_ns".into(), io.host_ns.clone()),
        Column::new("round_trips".into(), io.round_trips.clone()),
    ])
    .map_err(polars_err("building the ioctl table"))
}

/// The VMBus message table.
pub fn vmbus_table(c: &Columns) -> Result<DataFrame> {
    let v = &c.vmbus;
    let mut label: HashMap<u64, String> = HashMap::new();
    for k in &v.cmd {
        label.entry(*k).or_insert_with(|| vmbus_key_label(*k));
    }
    let dir: Vec<&str> = v
        .dir
        .iter()
        .map(|d| match d {
            0 => "guest_to_host",
            1 => "host_reply",
            _ => "host_to_guest",
        })
        .collect();
    let command: Vec<&str> = v.cmd.iter().map(|k| label[k].as_str()).collect();
    DataFrame::new_infer_height(vec![
        Column::new("ts_ns".into(), v.ts.clone()),
        Column::new("dir".into(), dir),
        Column::new("channel".into(), v.channel.clone()),
        Column::new("request_id".into(), v.request_id.clone()),
        Column::new("is_async".into(), v.is_async.clone()),
        Column::new("status".into(), v.status.clone()),
        Column::new("ioctl_id".into(), v.ioctl_id.clone()),
        Column::new("pid".into(), v.pid.clone()),
        Column::new("tid".into(), v.tid.clone()),
        Column::new("len".into(), v.len.clone()),
        Column::new("captured_bytes".into(), v.captured.clone()),
        Column::new("command".into(), command),
        Column::new("rtt_ns".into(), v.rtt_ns.clone()),
    ])
    .map_err(polars_err("building the VMBus table"))
}

/// The process table.
pub fn process_table(c: &Columns) -> Result<DataFrame> {
    let p = &c.processes;
    DataFrame::new_infer_height(vec![
        Column::new("ts_ns".into(), p.iter().map(|p| p.ts).collect::<Vec<u64>>()),
        Column::new("pid".into(), p.iter().map(|p| p.pid).collect::<Vec<u32>>()),
        Column::new(
            "ppid".into(),
            p.iter().map(|p| p.ppid).collect::<Vec<u32>>(),
        ),
        Column::new(
            "comm".into(),
            p.iter().map(|p| p.comm.as_str()).collect::<Vec<&str>>(),
        ),
        Column::new(
            "exe".into(),
            p.iter().map(|p| p.exe.as_str()).collect::<Vec<&str>>(),
        ),
        Column::new(
            "start_ns".into(),
            p.iter().map(|p| p.start_ns).collect::<Vec<u64>>(),
        ),
        Column::new(
            "cmdline".into(),
            p.iter()
                .map(|p| serde_json::to_string(&p.cmdline).unwrap_or_default())
                .collect::<Vec<String>>(),
        ),
    ])
    .map_err(polars_err("building the process table"))
}

/// A typed column from one field of each record.
fn col_of<'a, T, V>(name: &str, rows: &'a [T], f: impl Fn(&'a T) -> V) -> Column
where
    Series: NamedFrom<Vec<V>, [V]>,
{
    Column::new(name.into(), rows.iter().map(f).collect::<Vec<V>>())
}

/// The fd open / close / derived table.
pub fn fd_table(c: &Columns) -> Result<DataFrame> {
    let f = &c.fds;
    DataFrame::new_infer_height(vec![
        col_of("ts_ns", f, |r| r.ts),
        col_of("pid", f, |r| r.pid),
        col_of("tid", f, |r| r.tid),
        col_of("fd", f, |r| r.fd),
        col_of("op", f, |r| match r.op {
            traces::FdOp::Open => "open",
            traces::FdOp::Close => "close",
            traces::FdOp::Derived => "derived",
        }),
        col_of("path", f, |r| r.path.as_str()),
        col_of("dev", f, |r| r.dev),
        col_of("ino", f, |r| r.ino),
        col_of("flags", f, |r| r.flags),
        col_of("ret", f, |r| r.ret),
    ])
    .map_err(polars_err("building the fd table"))
}

/// The dropped-events table.
pub fn dropped_table(c: &Columns) -> Result<DataFrame> {
    let d = &c.drops;
    DataFrame::new_infer_height(vec![
        col_of("ts_ns", d, |r| r.ts),
        col_of("count", d, |r| r.count),
        col_of("reason", d, |r| r.reason.as_str()),
        col_of("cpu", d, |r| r.cpu),
    ])
    .map_err(polars_err("building the dropped-events table"))
}

/// The host-to-guest signal table.
pub fn signal_table(c: &Columns) -> Result<DataFrame> {
    let s = &c.signals;
    DataFrame::new_infer_height(vec![
        col_of("ts_ns", s, |r| r.ts),
        col_of("event_id", s, |r| r.event_id),
        col_of("pid", s, |r| r.pid),
        col_of("fd", s, |r| r.fd),
        col_of("source", s, |r| r.source.as_str()),
        col_of("detail", s, |r| r.detail.as_str()),
    ])
    .map_err(polars_err("building the signal table"))
}

/// The annotation table.
pub fn annotation_table(c: &Columns) -> Result<DataFrame> {
    let a = &c.annotations;
    DataFrame::new_infer_height(vec![
        col_of("ts_ns", a, |r| r.ts),
        col_of("pid", a, |r| r.pid),
        col_of("tid", a, |r| r.tid),
        col_of("key", a, |r| r.key.as_str()),
        col_of("text", a, |r| r.text.as_str()),
    ])
    .map_err(polars_err("building the annotation table"))
}

/// The capture statistics, one row per counter of each record (long form: the counter
/// names vary between captures).
pub fn capture_stats_table(c: &Columns) -> Result<DataFrame> {
    let rows: Vec<(u64, &str, u64)> = c
        .capture_stats
        .iter()
        .flat_map(|s| s.counters.iter().map(|(n, v)| (s.ts, n.as_str(), *v)))
        .collect();
    DataFrame::new_infer_height(vec![
        col_of("ts_ns", &rows, |r| r.0),
        col_of("name", &rows, |r| r.1),
        col_of("value", &rows, |r| r.2),
    ])
    .map_err(polars_err("building the capture statistics table"))
}
