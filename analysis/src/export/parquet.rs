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

/// Decodes `input` and writes `ioctls.parquet`, `vmbus.parquet` and
/// `processes.parquet` into the directory `out` (created if missing).
pub fn export_parquet(
    input: &Path,
    out: &Path,
    threads: usize,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary> {
    let reader = super::open(input)?;
    let c = columns::load_reader(&reader, threads, progress);
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut summary = ExportSummary {
        decode_errors: c.decode_errors.clone(),
        ..ExportSummary::default()
    };
    for (name, mut df) in [
        ("ioctls.parquet", ioctl_table(&c)?),
        ("vmbus.parquet", vmbus_table(&c)?),
        ("processes.parquet", process_table(&c)?),
    ] {
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
