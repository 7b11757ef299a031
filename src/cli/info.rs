//! `dxtrace info`: what a trace holds and whether it is intact.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use traces::{ReadOptions, Reader, TraceSummary, summarize};

use super::util::{bytes, duration_ns, utc};

/// Show a trace's header, record counts, time span, processes, drops and integrity.
///
/// Damaged traces are read as far as possible: every intact frame is counted and each
/// damaged one is named with its byte offset. Exit status: 0 if the trace is intact,
/// 1 if it was read but is damaged or lacks its footer (the recorder did not finish),
/// 2 if it could not be read at all.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The .dxtrace file.
    pub file: PathBuf,

    /// Print one JSON object instead of text (keys: format_version, records,
    /// dropped_events, start_ns, end_ns, footer, frames, corrupt_frames, header, …).
    #[arg(long)]
    pub json: bool,

    /// Write every intact frame of FILE into a new, finished trace OUT, skipping damaged
    /// regions, and report what was lost.
    #[arg(long, value_name = "OUT")]
    pub salvage: Option<PathBuf>,

    /// Threads used to decode frames (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: InfoArgs) -> anyhow::Result<ExitCode> {
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let opts = ReadOptions {
        salvage: a.salvage.is_some(),
        ..ReadOptions::default()
    };
    let reader = Reader::open_with(&a.file, opts)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let summary = summarize(&reader, threads);
    let salvage = match &a.salvage {
        Some(out) => Some(
            reader
                .salvage_to(out)
                .with_context(|| format!("cannot write salvaged trace {}", out.display()))?,
        ),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        v["file"] = serde_json::json!(a.file.display().to_string());
        v["header"] = header_json(reader.header());
        if let (Some(rep), Some(path)) = (&salvage, &a.salvage) {
            v["salvage"] = serde_json::json!({
                "output": path.display().to_string(),
                "frames_recovered": rep.frames_recovered,
                "records_recovered": rep.records_recovered,
                "bytes_lost": rep.bytes_lost,
                "lost": rep.lost.iter().map(|l| serde_json::json!({
                    "offset": l.offset, "len": l.len, "reason": l.reason,
                })).collect::<Vec<_>>(),
            });
        }
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &a.file, &reader, &summary)?;
        if let (Some(rep), Some(path)) = (&salvage, &a.salvage) {
            writeln!(
                out,
                "salvage    wrote {}: {} frames, {} records recovered; {} lost in {} region(s)",
                path.display(),
                rep.frames_recovered,
                rep.records_recovered,
                bytes(rep.bytes_lost),
                rep.lost.len()
            )?;
            for l in &rep.lost {
                writeln!(
                    out,
                    "           lost {} at byte {}: {}",
                    bytes(l.len),
                    l.offset,
                    l.reason
                )?;
            }
        }
    }
    Ok(if summary.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn header_json(h: &traces::Header) -> serde_json::Value {
    serde_json::json!({
        "tool": h.tool,
        "tool_version": h.tool_version,
        "kernel_release": h.kernel_release,
        "hostname": h.hostname,
        "wall_clock_start_ns": h.wall_clock_start_ns,
        "monotonic_base_ns": h.monotonic_base_ns,
        "source": h.source.name(),
        "devices": h.devices.iter().map(|d| serde_json::json!({
            "path": d.path, "schema": d.schema, "dev": d.dev, "major": d.major,
            "minor": d.minor, "ino": d.ino, "kind": d.kind,
        })).collect::<Vec<_>>(),
        "dxg_abi": h.dxg_abi,
        "vmbus": {"active": h.vmbus.active, "detail": h.vmbus.detail},
        "generated": h.generated,
        "command": h.command,
        "extra": h.extra.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn print_text(
    out: &mut impl Write,
    file: &std::path::Path,
    reader: &Reader,
    s: &TraceSummary,
) -> std::io::Result<()> {
    let h = reader.header();
    writeln!(
        out,
        "file       {} ({})",
        file.display(),
        bytes(s.file_bytes)
    )?;
    writeln!(out, "format     .dxtrace {}", s.format_version)?;
    writeln!(
        out,
        "written by {} {} on {} (kernel {})",
        or_unknown(&h.tool),
        h.tool_version,
        or_unknown(&h.hostname),
        or_unknown(&h.kernel_release)
    )?;
    writeln!(out, "source     {}", h.source.name())?;
    if let Some(g) = &h.generated {
        writeln!(out, "generated  {g}")?;
    }
    if h.wall_clock_start_ns != 0 {
        writeln!(out, "started    {}", utc(h.wall_clock_start_ns))?;
    }
    if !h.command.is_empty() {
        writeln!(out, "command    {}", h.command.join(" "))?;
    }
    for (i, d) in h.devices.iter().enumerate() {
        writeln!(
            out,
            "{} {} ({}, {} {}:{}{})",
            if i == 0 { "devices   " } else { "          " },
            d.path,
            if d.schema.is_empty() {
                "no schema"
            } else {
                &d.schema
            },
            if d.kind.is_empty() { "device" } else { &d.kind },
            d.major,
            d.minor,
            if d.ino != 0 {
                format!(", inode {}", d.ino)
            } else {
                String::new()
            }
        )?;
    }
    if let Some(abi) = &h.dxg_abi {
        writeln!(out, "dxg abi    {abi}")?;
    }
    writeln!(
        out,
        "vmbus      {}{}",
        if h.vmbus.active {
            "captured"
        } else {
            "not captured"
        },
        if h.vmbus.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", h.vmbus.detail)
        }
    )?;
    for (k, v) in &h.extra {
        writeln!(out, "{:<10} {v}", k)?;
    }
    match (s.start_ns, s.end_ns) {
        (Some(a), Some(b)) => {
            let wall = if h.wall_clock_start_ns != 0 && a >= h.monotonic_base_ns {
                format!(
                    ", from {}",
                    utc(h.wall_clock_start_ns + (a - h.monotonic_base_ns))
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "span       {} ({a} .. {b} ns{wall})",
                duration_ns(b - a)
            )?
        }
        _ => writeln!(out, "span       (no timestamped records)")?,
    }
    let kinds: Vec<String> = s.records.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(
        out,
        "records    {} total: {}",
        s.total_records,
        kinds.join(", ")
    )?;
    if s.processes.is_empty() {
        writeln!(out, "processes  none")?;
    }
    for (i, p) in s.processes.iter().enumerate() {
        writeln!(
            out,
            "{} pid {} {}{}: {} thread(s), {} ioctl(s)",
            if i == 0 { "processes " } else { "          " },
            p.pid,
            if p.comm.is_empty() { "?" } else { &p.comm },
            if p.exe.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.exe)
            },
            p.threads,
            p.ioctls
        )?;
    }
    if s.dropped_events == 0 {
        writeln!(out, "drops      none recorded")?;
    } else {
        let by: Vec<String> = s
            .dropped_by_reason
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        writeln!(
            out,
            "drops      {} event(s) lost ({})",
            s.dropped_events,
            by.join(", ")
        )?;
    }
    if s.ioctls_with_incomplete_buffers > 0 {
        writeln!(
            out,
            "buffers    {} ioctl(s) have truncated or unreadable buffers",
            s.ioctls_with_incomplete_buffers
        )?;
    }
    let footer = if s.footer {
        "footer index present".to_string()
    } else if let Some(p) = &s.footer_problem {
        format!("footer index damaged ({p}); frames were scanned")
    } else {
        "NO footer index (the recorder did not finish); frames were scanned".to_string()
    };
    writeln!(
        out,
        "integrity  {footer}; {} frame(s), {}",
        s.frames,
        if s.corrupt_frames == 0 && s.problems.is_empty() {
            "all intact".to_string()
        } else {
            format!("{} damaged", s.corrupt_frames)
        }
    )?;
    for p in &s.problems {
        writeln!(out, "           {}", p.error)?;
    }
    Ok(())
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "?" } else { s }
}
