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
    assert_eq!(s.files.len(), 8);
    use polars::prelude::*;
    let f = std::fs::File::open(out.join("ioctls.parquet")).unwrap();
    let df = ParquetReader::new(f).finish().unwrap();
    assert_eq!(df.height(), 500);
    let f = std::fs::File::open(out.join("vmbus.parquet")).unwrap();
    assert_eq!(
        ParquetReader::new(f).finish().unwrap().height(),
        c.vmbus.len()
    );

    let rows = |name: &str| {
        let f = std::fs::File::open(out.join(name)).unwrap();
        ParquetReader::new(f).finish().unwrap()
    };
    assert_eq!(rows("fds.parquet").height(), c.fds.len());
    assert!(
        !c.fds.is_empty(),
        "synthetic traces open /dev/dxg per process"
    );
    let drops = rows("dropped.parquet");
    assert_eq!(drops.height(), c.drops.len());
    let sum: u64 = drops
        .column("count")
        .unwrap()
        .u64()
        .unwrap()
        .sum()
        .unwrap_or(0);
    assert_eq!(sum, c.dropped_events);
    for empty in [
        "signals.parquet",
        "annotations.parquet",
        "capture_stats.parquet",
    ] {
        assert_eq!(rows(empty).height(), 0, "{empty}");
    }

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

/// A trace of VMBus traffic with colliding keys, replaced and unanswered requests,
/// replies without request and async sends, cut into frames of a few records so that
/// many pairs cross a frame boundary; and ioctls the requests name.
fn tangled_vmbus_trace(dir: &Path, seed: u64) -> PathBuf {
    use traces::{IoctlRecord, VmbusMessage, Writer};
    let p = dir.join(format!("tangled-{seed}.dxtrace"));
    let mut h = traces::synth::header(&SynthOptions::default(), "analysis unit test");
    h.generated = Some("analysis unit test: tangled VMBus pairs".into());
    let mut w = Writer::create(
        &p,
        &h,
        WriterOptions {
            frame_target_bytes: 400,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let mut x = seed;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut t = 1_000u64;
    for i in 0..3000u64 {
        t += 1 + next(100);
        if next(4) == 0 {
            w.push(&Record::Ioctl(IoctlRecord {
                id: i,
                ts_enter: t,
                ts_exit: t + next(1000),
                pid: 7,
                tid: 7 + next(2) as u32,
                cmd: 0xC0184709,
                ..IoctlRecord::default()
            }))
            .unwrap();
            continue;
        }
        let dir = match next(10) {
            0..=4 => VmbusDir::GuestToHost,
            5..=8 => VmbusDir::HostReply,
            _ => VmbusDir::HostToGuest,
        };
        let bytes = match dir {
            VmbusDir::GuestToHost => g2h(next(2) == 0, next(2) as u32, next(40) as u32),
            _ => vec![0u8; 4 + next(30) as usize],
        };
        w.push(&Record::Vmbus(VmbusMessage {
            ts: t,
            dir,
            channel: if next(3) == 0 { Some(next(2)) } else { None },
            request_id: next(5),
            is_async: dir == VmbusDir::GuestToHost && next(6) == 0,
            status: (dir == VmbusDir::HostReply).then(|| -(next(2) as i64)),
            ioctl_id: if next(3) == 0 {
                None
            } else {
                Some(i.saturating_sub(next(8)))
            },
            pid: 7,
            tid: 7,
            len: bytes.len() as u64,
            flags: 0,
            bytes,
        }))
        .unwrap();
    }
    w.finish().unwrap();
    p
}

#[test]
fn parallel_jsonl_is_byte_identical_to_sequential() {
    let dir = tempfile::tempdir().unwrap();
    for (i, p) in [
        tangled_vmbus_trace(dir.path(), 3),
        tangled_vmbus_trace(dir.path(), 11),
        synth(dir.path(), 2000),
    ]
    .iter()
    .enumerate()
    {
        assert!(Reader::open(p).unwrap().frames().len() > 20);
        let run = |threads: usize| {
            let out = dir.path().join(format!("{i}-{threads}.jsonl"));
            let opts = ExportOptions {
                threads,
                ..ExportOptions::new(ExportFormat::Jsonl)
            };
            let s = export(p, &out, &opts, None).unwrap();
            assert!(s.decode_errors.is_empty());
            std::fs::read(&out).unwrap()
        };
        let one = run(1);
        let text = String::from_utf8_lossy(&one);
        let paired = text.matches("\"rtt_ns\":").count() - text.matches("\"rtt_ns\":null").count();
        assert!(paired > 100, "trace {i}: only {paired} paired replies");
        for threads in [2, 3, 8] {
            assert!(
                run(threads) == one,
                "trace {i}: {threads} threads differ from 1"
            );
        }
    }
}

/// The columns' frame-parallel pairing against the sequential JSONL encoder's, reply by
/// reply, and the host time charged to each ioctl against a plain sequential count, on
/// traces where pairs cross frames and keys collide.
#[test]
fn column_pairing_agrees_with_sequential_pairing() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 5] {
        let p = tangled_vmbus_trace(dir.path(), seed);
        let c = columns::load(&p, 3, None).unwrap();
        let r = Reader::open(&p).unwrap();
        let mut enc = crate::export::jsonl::JsonlEncoder::default();
        let mut row = 0;
        let mut open: HashMap<(Option<u64>, u64), (u64, Option<u64>)> = HashMap::new();
        let mut host: HashMap<u64, (u64, u32)> = HashMap::new();
        let mut pairs = 0;
        for rec in r.records() {
            let rec = rec.unwrap();
            let v = enc.encode(&rec);
            let Record::Vmbus(m) = &rec else { continue };
            assert_eq!(
                c.vmbus.rtt_ns[row],
                v["rtt_ns"].as_u64(),
                "seed {seed} row {row}"
            );
            assert_eq!(
                vmbus_key_label(c.vmbus.cmd[row]),
                v["command"].as_str().unwrap(),
                "seed {seed} row {row}"
            );
            row += 1;
            match m.dir {
                VmbusDir::GuestToHost if !m.is_async => {
                    open.insert((m.channel, m.request_id), (m.ts, m.ioctl_id));
                }
                VmbusDir::HostReply => {
                    if let Some((ts, id)) = open.remove(&(m.channel, m.request_id)) {
                        pairs += 1;
                        if let Some(id) = id.or(m.ioctl_id) {
                            let e = host.entry(id).or_default();
                            e.0 += m.ts - ts;
                            e.1 += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(row, c.vmbus.len());
        assert!(pairs > 100, "seed {seed}: only {pairs} pairs");
        let mut charged = 0;
        for (i, id) in c.ioctls.id.iter().enumerate() {
            let want = host.get(id).copied().unwrap_or_default();
            assert_eq!(
                (c.ioctls.host_ns[i], c.ioctls.round_trips[i]),
                want,
                "ioctl {id}"
            );
            charged += want.1;
        }
        assert!(
            charged > 50,
            "seed {seed}: only {charged} round trips charged"
        );
    }
}

/// Nearest-rank quantiles of `v`, spelled out with a sort (what polars' `Nearest` does).
fn nearest_rank(mut v: Vec<u64>) -> [u64; 3] {
    v.sort_unstable();
    let at = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize];
    [at(0.5), at(0.9), at(0.99)]
}

/// The streamed statistics (frame partials merged in file order) against the columns
/// of the same trace (every row, paired and charged by the columns' own tested pass):
/// per ioctl code, per thread and per VMBus command, quantiles included, on traces
/// where pairs cross frames and keys collide.
#[test]
fn streamed_stats_agree_with_the_columns_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = [1, 2, 5]
        .iter()
        .map(|s| tangled_vmbus_trace(dir.path(), *s))
        .collect();
    paths.push(synth(dir.path(), 2000));
    for p in &paths {
        for threads in [1, 3] {
            let opts = StatsOptions {
                threads,
                ..StatsOptions::default()
            };
            let s = stats(p, &opts).unwrap();
            let c = columns::load(p, 2, None).unwrap();
            let io = &c.ioctls;
            let mut want: HashMap<u32, (u64, u64, u64, u64, Vec<u64>)> = HashMap::new();
            let mut threads_want: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
            for i in 0..io.len() {
                let d = io.ts_exit[i].saturating_sub(io.ts_enter[i]);
                let e = want.entry(io.cmd[i]).or_default();
                e.0 += 1;
                e.1 += io.host_ns[i];
                e.2 += io.round_trips[i] as u64;
                e.3 += io.is_error[i] as u64;
                e.4.push(d);
                let t = threads_want.entry((io.pid[i], io.tid[i])).or_default();
                t.0 += 1;
                t.1 += io.host_ns[i];
            }
            let by_ioctl = s.by_ioctl.as_ref().unwrap();
            assert_eq!(by_ioctl.len(), want.len(), "{}", p.display());
            for row in by_ioctl {
                let (n, host, rts, errs, durs) = want.remove(&row.cmd).unwrap();
                let c = &row.calls;
                assert_eq!(
                    (c.count, c.host_ns, c.round_trips, c.errors),
                    (n, host, rts, errs),
                    "{} {}",
                    p.display(),
                    row.name
                );
                let [p50, p90, p99] = nearest_rank(durs);
                let l = &c.latency;
                assert_eq!((l.p50_ns, l.p90_ns, l.p99_ns), (p50, p90, p99));
            }
            for g in s.by_thread.as_ref().unwrap() {
                let t = threads_want[&(g.pid, g.tid.unwrap())];
                assert_eq!((g.calls.count, g.calls.host_ns), t, "{}", p.display());
            }
            assert_eq!(
                s.totals.host_ns,
                io.host_ns.iter().sum::<u64>(),
                "{}",
                p.display()
            );
            let v = &c.vmbus;
            let mut vm: HashMap<String, (u64, u64, u64, Vec<u64>)> = HashMap::new();
            for i in 0..v.len() {
                let e = vm.entry(vmbus_key_label(v.cmd[i])).or_default();
                e.0 += 1;
                e.1 += (v.dir[i] == 1) as u64 * v.len[i];
                if let Some(r) = v.rtt_ns[i] {
                    e.2 += 1;
                    e.3.push(r);
                }
            }
            let by_vmbus = s.by_vmbus.as_ref().unwrap();
            assert_eq!(by_vmbus.len(), vm.len(), "{}", p.display());
            for row in by_vmbus {
                let (n, reply_bytes, rts, rtts) = vm.remove(&row.command).unwrap();
                assert_eq!(
                    (row.messages, row.reply_bytes, row.round_trips),
                    (n, reply_bytes, rts),
                    "{} {}",
                    p.display(),
                    row.command
                );
                match &row.rtt {
                    Some(l) => {
                        assert_eq!([l.p50_ns, l.p90_ns, l.p99_ns], nearest_rank(rtts.clone()));
                        assert_eq!(l.max_ns, rtts.iter().copied().max().unwrap());
                    }
                    None => assert!(rtts.is_empty()),
                }
            }
            assert_eq!(
                s.throughput,
                crate::stats::throughput(&c, opts.bucket_ns).unwrap()
            );
        }
    }
}

/// A damaged first frame: its records are missing from both the statistics and the
/// columns, the trace's first timestamp is then later than the frame headers announce,
/// and the throughput series must still start at the first readable record (the
/// streamed histogram is rebuilt from the right origin).
#[test]
fn throughput_is_exact_when_the_first_frame_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let p = synth(dir.path(), 3000);
    let r = Reader::open(&p).unwrap();
    let first = r.frames()[0].clone();
    drop(r);
    let mut bytes = std::fs::read(&p).unwrap();
    // A payload byte: the frame's checksum fails, the footer index still holds.
    bytes[first.offset as usize + traces::frame::FRAME_HEADER_LEN + 5] ^= 0x55;
    std::fs::write(&p, &bytes).unwrap();
    let opts = StatsOptions {
        bucket_ns: 100_000,
        ..StatsOptions::default()
    };
    let s = stats(&p, &opts).unwrap();
    assert_eq!(s.decode_errors.len(), 1, "{:?}", s.decode_errors);
    let c = columns::load(&p, 2, None).unwrap();
    assert!(c.ts_min > first.ts_min);
    assert_eq!(s.ts_min_ns, c.ts_min);
    assert_eq!(s.totals.ioctls, c.ioctls.len() as u64);
    let tp = crate::stats::throughput(&c, opts.bucket_ns).unwrap();
    assert_eq!(s.throughput, tp);
    assert_eq!(
        tp.buckets.iter().map(|b| b.ioctls).sum::<u64>(),
        c.ioctls.len() as u64
    );
    assert!(tp.buckets[0].ioctls + tp.buckets[0].vmbus_messages > 0);
}
