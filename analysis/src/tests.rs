//! Unit tests: statistics against counts computed directly from the raw records, the
//! VMBus command key against driver-core's full decoder, and the exports' shape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use traces::synth::{SynthOptions, write_file};
use traces::{Reader, Record, VmbusDir, WriterOptions};

use crate::columns::{self, is_error_return, vmbus_key, vmbus_key_label};
use crate::export::{ExportFormat, ExportOptions, export};
use crate::stats::{By, StatsOptions, stats};
use crate::text::parse_duration;

fn synth(dir: &Path, ioctls: u64) -> PathBuf {
    let p = dir.join("t.dxtrace");
    let wopts = WriterOptions {
        // several frames, so the frame-parallel decode and cross-frame pairing are exercised
        frame_target_bytes: 16 << 10,
        ..WriterOptions::default()
    };
    write_file(
        &p,
        &SynthOptions {
            ioctls,
            ..SynthOptions::default()
        },
        "analysis unit test",
        wopts,
    )
    .expect("write synthetic trace");
    p
}

/// Figures per request code, counted the plain way from the records.
#[derive(Default, Debug)]
struct Raw {
    count: u64,
    errors: u64,
    max: u64,
    total: u64,
    bytes_in: u64,
    bytes_out: u64,
    host: u64,
}

#[test]
fn stats_agree_with_raw_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = synth(dir.path(), 3000);
    let s = stats(&p, &StatsOptions::default()).expect("stats");

    let r = Reader::open(&p).unwrap();
    let recs: Vec<Record> = r.records().map(|r| r.unwrap()).collect();
    let mut per_cmd: HashMap<u32, Raw> = HashMap::new();
    let mut per_pid: HashMap<u32, u64> = HashMap::new();
    let mut per_thread: HashMap<(u32, u32), u64> = HashMap::new();
    let mut req_ts: HashMap<(Option<u64>, u64), (u64, Option<u64>)> = HashMap::new();
    let mut host_by_ioctl: HashMap<u64, u64> = HashMap::new();
    let (mut vm, mut replies, mut req_bytes, mut reply_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut cmd_of_id: HashMap<u64, u32> = HashMap::new();
    for rec in &recs {
        match rec {
            Record::Ioctl(i) => {
                let e = per_cmd.entry(i.cmd).or_default();
                e.count += 1;
                // The definition spelled out: -errno / negative NTSTATUS, or a failure
                // NTSTATUS (0x8000_0000..=0xFFFF_FFFF) returned as a positive value.
                if i.ret < 0 || (0x8000_0000..=0xFFFF_FFFF).contains(&i.ret) {
                    e.errors += 1;
                }
                let d = i.ts_exit - i.ts_enter;
                e.max = e.max.max(d);
                e.total += d;
                for b in &i.buffers {
                    match b.role {
                        traces::BufferRole::StructIn | traces::BufferRole::PtrIn => {
                            e.bytes_in += b.data.len() as u64
                        }
                        _ => e.bytes_out += b.data.len() as u64,
                    }
                }
                *per_pid.entry(i.pid).or_default() += 1;
                *per_thread.entry((i.pid, i.tid)).or_default() += 1;
                cmd_of_id.insert(i.id, i.cmd);
            }
            Record::Vmbus(m) => {
                vm += 1;
                match m.dir {
                    VmbusDir::GuestToHost => {
                        req_bytes += m.len;
                        req_ts.insert((m.channel, m.request_id), (m.ts, m.ioctl_id));
                    }
                    VmbusDir::HostReply => {
                        replies += 1;
                        reply_bytes += m.len;
                        let (t, id) = req_ts.remove(&(m.channel, m.request_id)).unwrap();
                        *host_by_ioctl.entry(id.unwrap()).or_default() += m.ts - t;
                    }
                    VmbusDir::HostToGuest => {}
                }
            }
            _ => {}
        }
    }
    for (id, h) in &host_by_ioctl {
        per_cmd.get_mut(&cmd_of_id[id]).unwrap().host += h;
    }

    assert_eq!(s.records, recs.len() as u64);
    assert_eq!(s.totals.ioctls, 3000);
    assert_eq!(s.totals.vmbus_messages, vm);
    assert_eq!(s.totals.round_trips, replies);
    assert_eq!(s.totals.vmbus_request_bytes, req_bytes);
    assert_eq!(s.totals.vmbus_reply_bytes, reply_bytes);
    let by_ioctl = s.by_ioctl.as_ref().unwrap();
    assert_eq!(by_ioctl.len(), per_cmd.len());
    for row in by_ioctl {
        let raw = &per_cmd[&row.cmd];
        let c = &row.calls;
        assert_eq!(c.count, raw.count, "{}", row.name);
        assert_eq!(c.errors, raw.errors, "{}", row.name);
        assert_eq!(c.latency.max_ns, raw.max, "{}", row.name);
        assert_eq!(c.total_ns, raw.total, "{}", row.name);
        assert_eq!(c.bytes_in, raw.bytes_in, "{}", row.name);
        assert_eq!(c.bytes_out, raw.bytes_out, "{}", row.name);
        assert_eq!(c.host_ns, raw.host, "{}", row.name);
        assert_eq!(
            row.errors_by_status.iter().map(|e| e.count).sum::<u64>(),
            raw.errors
        );
        let l = &c.latency;
        assert!(l.p50_ns <= l.p90_ns && l.p90_ns <= l.p99_ns && l.p99_ns <= l.max_ns);
        assert!(
            !row.name.starts_with("0x"),
            "synthetic codes are in the dxg table"
        );
    }
    let bp = s.by_process.as_ref().unwrap();
    assert_eq!(bp.len(), per_pid.len());
    for g in bp {
        assert_eq!(g.calls.count, per_pid[&g.pid]);
        assert!(g.comm.is_some());
    }
    let bt = s.by_thread.as_ref().unwrap();
    assert_eq!(bt.len(), per_thread.len());
    for g in bt {
        assert_eq!(g.calls.count, per_thread[&(g.pid, g.tid.unwrap())]);
    }
    let vmb = s.by_vmbus.as_ref().unwrap();
    assert_eq!(vmb.iter().map(|v| v.messages).sum::<u64>(), vm);
    assert_eq!(vmb.iter().map(|v| v.round_trips).sum::<u64>(), replies);
    assert_eq!(vmb.iter().map(|v| v.unanswered).sum::<u64>(), 0);
    let tp = &s.throughput;
    assert_eq!(tp.buckets.iter().map(|b| b.ioctls).sum::<u64>(), 3000);
    assert_eq!(tp.buckets.iter().map(|b| b.vmbus_messages).sum::<u64>(), vm);
}

#[test]
fn by_selects_one_grouping() {
    let dir = tempfile::tempdir().unwrap();
    let p = synth(dir.path(), 200);
    let s = stats(
        &p,
        &StatsOptions {
            by: Some(By::Vmbus),
            ..StatsOptions::default()
        },
    )
    .unwrap();
    assert!(s.by_ioctl.is_none() && s.by_process.is_none() && s.by_thread.is_none());
    assert!(s.by_vmbus.is_some());
    let j = serde_json::to_value(&s).unwrap();
    for k in [
        "by_ioctl",
        "by_process",
        "by_thread",
        "by_vmbus",
        "totals",
        "throughput",
    ] {
        assert!(j.get(k).is_some(), "stable key {k} present even when null");
    }
}

#[test]
fn error_classification_uses_the_full_return_value() {
    assert!(!is_error_return(0));
    assert!(!is_error_return(0x103), "STATUS_PENDING is a success code");
    assert!(is_error_return(-22));
    assert!(
        is_error_return(0xC000_000D),
        "raw NTSTATUS as a positive value"
    );
    assert!(
        is_error_return(0xC000_000Du32 as i32 as i64),
        "raw NTSTATUS as a negative i32"
    );
}

/// A guest→host message with the 24-byte header (optionally after the 16-byte ext header).
fn g2h(ext: bool, channel_type: u32, command: u32) -> Vec<u8> {
    let mut b = Vec::new();
    if ext {
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
    }
    b.extend_from_slice(&7u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&channel_type.to_le_bytes());
    b.extend_from_slice(&command.to_le_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&[0u8; 64]);
    b
}

#[test]
fn vmbus_key_agrees_with_driver_core_decoder() {
    use driver_core::decode::{VmbusDirection, decode_vmbus};
    for (ext, ch, cmd) in [
        (false, 0, 0),
        (true, 0, 3),
        (true, 1, 1000),
        (false, 1, 1002),
        (true, 0, 30),
    ] {
        let b = g2h(ext, ch, cmd);
        let ours = vmbus_key_label(vmbus_key(VmbusDir::GuestToHost, &b));
        let theirs = decode_vmbus(VmbusDirection::GuestToHost, &b).name;
        assert_eq!(ours, theirs, "ext={ext} channel={ch} cmd={cmd}");
    }
    assert_eq!(
        vmbus_key_label(vmbus_key(VmbusDir::GuestToHost, &[1, 2])),
        "UNKNOWN"
    );
}

#[test]
fn exports_write_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = synth(dir.path(), 500);
    let c = columns::load(&p, 2, None).unwrap();

    let out = dir.path().join("pq");
    let s = export(&p, &out, &ExportOptions::new(ExportFormat::Parquet), None).unwrap();
    assert_eq!(s.files.len(), 3);
    use polars::prelude::*;
    let f = std::fs::File::open(out.join("ioctls.parquet")).unwrap();
    let df = ParquetReader::new(f).finish().unwrap();
    assert_eq!(df.height(), 500);
    let f = std::fs::File::open(out.join("vmbus.parquet")).unwrap();
    assert_eq!(
        ParquetReader::new(f).finish().unwrap().height(),
        c.vmbus.len()
    );

    let jl = dir.path().join("t.jsonl");
    export(&p, &jl, &ExportOptions::new(ExportFormat::Jsonl), None).unwrap();
    let text = std::fs::read_to_string(&jl).unwrap();
    assert_eq!(text.lines().count() as u64, c.records);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["kind"].is_string());
    }

    let pf = dir.path().join("t.json");
    export(&p, &pf, &ExportOptions::new(ExportFormat::Perfetto), None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&pf).unwrap()).unwrap();
    let xs = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    assert_eq!(xs, 500);
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("10ms"), Some(10_000_000));
    assert_eq!(parse_duration("250µs"), Some(250_000));
    assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
    assert_eq!(parse_duration("42"), Some(42));
    assert_eq!(parse_duration("0ms"), None);
    assert_eq!(parse_duration("10 parsecs"), None);
}
