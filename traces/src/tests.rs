//! Round-trip, corruption and salvage tests of the whole file format.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::*;

fn ioctl(i: u64, payload: usize) -> Record {
    Record::Ioctl(IoctlRecord {
        id: i,
        ts_enter: 1000 + i * 10,
        ts_exit: 1005 + i * 10,
        pid: 100 + (i % 3) as u32,
        tid: 200 + (i % 5) as u32,
        fd: 3,
        dev: 0x0a7d,
        cmd: 0xC0184709,
        arg: 0x7fff_0000 + i,
        ret: if i.is_multiple_of(7) { -22 } else { 0 },
        buffers: vec![Buffer {
            addr: 0x7fff_0000 + i,
            role: BufferRole::StructIn,
            path: String::new(),
            len: payload as u64,
            flags: 0,
            data: (0..payload).map(|j| (i as usize + j) as u8).collect(),
        }],
    })
}

fn sample_records(n: u64) -> Vec<Record> {
    let mut v = vec![Record::Process(ProcessInfo {
        ts: 900,
        pid: 100,
        ppid: 1,
        comm: "client".into(),
        exe: "/usr/bin/client".into(),
        start_ns: 10,
        cmdline: vec![],
    })];
    for i in 0..n {
        v.push(ioctl(i, 24 + (i % 50) as usize));
        if i % 100 == 50 {
            v.push(Record::Dropped(Dropped {
                ts: 1000 + i * 10,
                count: 3,
                reason: "ringbuf_full".into(),
                cpu: Some(0),
            }));
        }
    }
    v
}

/// Small frames so corruption tests have many frames to damage.
fn small_frames() -> WriterOptions {
    WriterOptions {
        frame_target_bytes: 4096,
        threads: 2,
        queue_depth: 2,
        ..WriterOptions::default()
    }
}

fn header() -> Header {
    let mut h = Header::for_this_machine(CaptureSource::Generated);
    h.generated = Some("traces crate unit test".into());
    h
}

fn write(path: &Path, recs: &[Record], opts: WriterOptions) -> WriteSummary {
    let mut w = Writer::create(path, &header(), opts).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap()
}

fn read_all(path: &Path) -> (Vec<Record>, Vec<TraceError>) {
    let r = Reader::open(path).unwrap();
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for x in r.records() {
        match x {
            Ok(rec) => ok.push(rec),
            Err(e) => errs.push(e),
        }
    }
    (ok, errs)
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn round_trip_with_footer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "a.dxtrace");
    let recs = sample_records(3000);
    let s = write(&p, &recs, small_frames());
    assert_eq!(s.records, recs.len() as u64);
    assert!(s.frames > 10, "expected many frames, got {}", s.frames);
    let r = Reader::open(&p).unwrap();
    assert!(r.has_footer());
    assert_eq!(
        r.header().generated.as_deref(),
        Some("traces crate unit test")
    );
    assert_eq!(r.version(), (frame::FORMAT_MAJOR, frame::FORMAT_MINOR));
    let back: Vec<Record> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(back, recs);
    // parallel decode gives the same records in frame order
    let par: Vec<Record> = r
        .map_frames(2, |_, x| x.unwrap())
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(par, recs);
}

#[test]
fn empty_trace_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "empty.dxtrace");
    write(&p, &[], WriterOptions::default());
    let r = Reader::open(&p).unwrap();
    assert!(r.has_footer());
    assert_eq!(r.records().count(), 0);
    let s = summarize(&r, 1);
    assert_eq!(s.total_records, 0);
    assert!(s.intact());
}

#[test]
fn time_range_reads_only_overlapping_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "t.dxtrace");
    let recs = sample_records(2000);
    write(&p, &recs, small_frames());
    let r = Reader::open(&p).unwrap();
    let (a, b) = (5_000u64, 9_000u64);
    let got: Vec<Record> = r.records_between(a, b).map(|x| x.unwrap()).collect();
    let want: Vec<Record> = recs
        .iter()
        .filter(|x| x.ts().is_some_and(|t| t >= a && t <= b))
        .cloned()
        .collect();
    assert_eq!(got, want);
    assert!(!got.is_empty());
}

#[test]
fn file_without_footer_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "nofooter.dxtrace");
    let recs = sample_records(1500);
    write(&p, &recs, small_frames());
    // Cut off the index frame and trailer, as a crashed recorder would leave it.
    let full = Reader::open(&p).unwrap();
    let last = full.frames().last().unwrap().clone();
    let end = last.offset + frame::FRAME_HEADER_LEN as u64 + last.payload_len as u64;
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..end as usize]).unwrap();
    let r = Reader::open(&p).unwrap();
    assert!(!r.has_footer());
    assert!(r.scan_problem().is_none());
    let back: Vec<Record> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(back, recs);
}

#[test]
fn truncation_at_every_frame_boundary_class_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "full.dxtrace");
    let recs = sample_records(600);
    write(&p, &recs, small_frames());
    let bytes = std::fs::read(&p).unwrap();
    let full = Reader::open(&p).unwrap();
    let frames = full.frames().to_vec();
    let data_start = frames[0].offset as usize;
    // Per frame: records of all frames before it.
    let mut before = vec![0usize];
    for f in &frames {
        before.push(before.last().unwrap() + f.record_count as usize);
    }
    let q = tmp(&dir, "cut.dxtrace");
    let mut cuts: Vec<usize> = (0..data_start).step_by(7).collect();
    for f in &frames {
        let o = f.offset as usize;
        let len = frame::FRAME_HEADER_LEN + f.payload_len as usize;
        cuts.extend([
            o + 1,
            o + 20,
            o + 47,
            o + 48,
            o + 49,
            o + len / 2,
            o + len - 1,
        ]);
    }
    cuts.extend(bytes.len() - 20..bytes.len());
    for cut in cuts {
        std::fs::write(&q, &bytes[..cut]).unwrap();
        match Reader::open(&q) {
            Err(e) => {
                // Only a damaged file header may fail the open, and it names an offset.
                assert!(cut < data_start, "cut {cut}: open failed: {e}");
                assert!(e.offset().is_some(), "cut {cut}: {e}");
            }
            Ok(r) => {
                assert!(cut >= data_start, "cut {cut} inside the header opened");
                let mut ok = 0usize;
                let mut errs = Vec::new();
                for x in r.records() {
                    match x {
                        Ok(_) => ok += 1,
                        Err(e) => errs.push(e),
                    }
                }
                // every frame wholly before the cut is read
                let whole = frames
                    .iter()
                    .take_while(|f| (f.offset as usize + 48 + f.payload_len as usize) <= cut)
                    .count();
                assert_eq!(ok, before[whole], "cut {cut}");
                let cut_inside_frame = frames.get(whole).is_some_and(|f| (f.offset as usize) < cut);
                if cut_inside_frame {
                    assert_eq!(errs.len(), 1, "cut {cut}: {errs:?}");
                    let e = &errs[0];
                    assert_eq!(e.offset(), Some(frames[whole].offset), "cut {cut}: {e}");
                    assert!(matches!(e, TraceError::Truncated { .. }), "cut {cut}: {e}");
                    assert!(e.to_string().contains("truncated frame at byte"), "{e}");
                }
            }
        }
    }
}

#[test]
fn flipped_bytes_are_detected_and_other_frames_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "flip.dxtrace");
    let recs = sample_records(800);
    write(&p, &recs, small_frames());
    let bytes = std::fs::read(&p).unwrap();
    let full = Reader::open(&p).unwrap();
    let frames = full.frames().to_vec();
    let total: usize = frames.iter().map(|f| f.record_count as usize).sum();
    let data_start = frames[0].offset as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let q = tmp(&dir, "flipped.dxtrace");
    for _ in 0..400 {
        let mut b = bytes.clone();
        let at = rng.random_range(0..b.len());
        b[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(&q, &b).unwrap();
        let r = match Reader::open(&q) {
            Ok(r) => r,
            Err(e) => {
                assert!(at < data_start, "flip at {at} failed open: {e}");
                continue;
            }
        };
        let mut ok = 0;
        let mut errs = Vec::new();
        for x in r.records() {
            match x {
                Ok(_) => ok += 1,
                Err(e) => errs.push(e),
            }
        }
        // The damaged frame (if the flip hit one) is reported with its offset; with the
        // footer intact every other frame still reads.
        let hit = frames.iter().find(|f| {
            at >= f.offset as usize && at < f.offset as usize + 48 + f.payload_len as usize
        });
        match hit {
            Some(f) if r.has_footer() => {
                assert_eq!(errs.len(), 1, "flip at {at}: {errs:?}");
                assert_eq!(errs[0].offset(), Some(f.offset), "flip at {at}");
                assert_eq!(ok, total - f.record_count as usize, "flip at {at}");
            }
            Some(_) => panic!("flip at {at} inside a frame broke the footer"),
            None => {
                // header/metadata flips fail open (handled above); footer flips fall back
                // to scanning, which reads everything.
                assert!(errs.is_empty(), "flip at {at}: {errs:?}");
                assert_eq!(ok, total, "flip at {at}");
            }
        }
    }
}

#[test]
fn salvage_recovers_every_intact_frame_and_reports_losses() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "s.dxtrace");
    let recs = sample_records(1500);
    write(&p, &recs, small_frames());
    let mut bytes = std::fs::read(&p).unwrap();
    let full = Reader::open(&p).unwrap();
    let frames = full.frames().to_vec();
    assert!(frames.len() > 8);
    // Damage the header of frame 2 (breaks scanning) and the payload of frame 5, and
    // cut the file in the middle of the last frame (no footer).
    let f2 = &frames[2];
    bytes[f2.offset as usize + 9] ^= 0xff;
    let f5 = &frames[5];
    bytes[f5.offset as usize + 60] ^= 0x01;
    let last = frames.last().unwrap();
    bytes.truncate(last.offset as usize + 30);
    let q = tmp(&dir, "damaged.dxtrace");
    std::fs::write(&q, &bytes).unwrap();

    // Without salvage: scanning stops at frame 2, naming the offset.
    let r = Reader::open(&q).unwrap();
    assert!(!r.has_footer());
    let err = r.scan_problem().expect("scan stops at the damaged frame");
    assert_eq!(err.offset(), Some(f2.offset));
    assert!(err.to_string().contains("checksum"), "{err}");

    // Salvage: every intact frame is kept.
    let r = Reader::open_with(
        &q,
        ReadOptions {
            salvage: true,
            ..Default::default()
        },
    )
    .unwrap();
    let out = tmp(&dir, "salvaged.dxtrace");
    let rep = r.salvage_to(&out).unwrap();
    let intact: Vec<&FrameInfo> = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 5 && *i != frames.len() - 1)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(rep.frames_recovered as usize, intact.len());
    assert_eq!(
        rep.records_recovered,
        intact.iter().map(|f| f.record_count as u64).sum::<u64>()
    );
    let lost_offsets: Vec<u64> = rep.lost.iter().map(|l| l.offset).collect();
    assert_eq!(lost_offsets, vec![f2.offset, f5.offset, last.offset]);
    // The salvaged file is a finished trace with exactly those records.
    let (ok, errs) = read_all(&out);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ok.len() as u64, rep.records_recovered);
    assert!(Reader::open(&out).unwrap().has_footer());
}

#[test]
fn version_mismatch_says_found_expected_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "v.dxtrace");
    write(&p, &sample_records(5), WriterOptions::default());
    let mut b = std::fs::read(&p).unwrap();
    b[8] = 2; // major 2
    std::fs::write(&p, &b).unwrap();
    let e = Reader::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("2.0") && e.contains("1.x") && e.contains("upgrade"),
        "{e}"
    );
    std::fs::write(&p, b"hello world, not a trace at all").unwrap();
    let e = Reader::open(&p).unwrap_err().to_string();
    assert!(e.contains("not a .dxtrace file"), "{e}");
}

#[test]
fn newer_minor_with_unknown_kind_is_read() {
    // A frame holding an unknown kind between two known records, minor version 9.
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "minor.dxtrace");
    let mut w = Writer::create(&p, &header(), WriterOptions::default()).unwrap();
    w.push(&ioctl(1, 8)).unwrap();
    w.finish().unwrap();
    // Rebuild the only frame with an extra unknown record appended.
    let r = Reader::open(&p).unwrap();
    let f = r.frames()[0].clone();
    let mut block = Vec::new();
    encode_record(&mut block, &ioctl(1, 8)).unwrap();
    rmp_serde::encode::write(&mut block, &(4000u16, ("new", 1u8))).unwrap();
    encode_record(&mut block, &ioctl(2, 8)).unwrap();
    let payload = zstd::bulk::compress(&block, 1).unwrap();
    let h = frame::FrameHeader {
        frame_type: frame::FRAME_RECORDS,
        codec: frame::CODEC_ZSTD,
        payload_len: payload.len() as u32,
        raw_len: block.len() as u32,
        record_count: 3,
        payload_crc: crc32c::crc32c(&payload),
        ts_min: 0,
        ts_max: 100,
    };
    let bytes = std::fs::read(&p).unwrap();
    let mut out = bytes[..f.offset as usize].to_vec();
    out[10] = 9; // minor 9
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(&payload);
    std::fs::write(&p, &out).unwrap();
    let r = Reader::open(&p).unwrap();
    assert_eq!(r.version(), (1, 9));
    let recs: Vec<Record> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1], Record::Unknown { kind: 4000 });
    let s = summarize(&r, 1);
    assert_eq!(s.records.get("unknown"), Some(&1));
}

#[test]
fn aged_frames_are_sealed_so_a_crash_loses_little() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "age.dxtrace");
    let opts = WriterOptions {
        max_frame_age: Duration::from_millis(50),
        ..WriterOptions::default()
    };
    let mut w = Writer::create(&p, &header(), opts).unwrap();
    // Waits (without flushing the writer) until the file holds `n` records.
    let readable = |n: usize| {
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(r) = Reader::open(&p)
                && r.records().count() == n
            {
                assert!(!r.has_footer());
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{n} records never became readable"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // a push into a frame older than the age seals it
    w.push(&ioctl(1, 8)).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    w.push(&ioctl(2, 8)).unwrap();
    readable(2);
    // so does a tick once the frame has aged, with no further record
    w.push(&ioctl(3, 8)).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    w.tick().unwrap();
    // As if killed now: the records are already readable.
    readable(3);
    std::mem::forget(w); // simulate a crash: no footer is written
}

#[test]
fn summary_counts_match_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "sum.dxtrace");
    let recs = sample_records(1234);
    write(&p, &recs, small_frames());
    let r = Reader::open(&p).unwrap();
    let s = summarize(&r, 2);
    let ioctls = recs
        .iter()
        .filter(|r| matches!(r, Record::Ioctl(_)))
        .count() as u64;
    let drops: u64 = recs
        .iter()
        .filter_map(|r| match r {
            Record::Dropped(d) => Some(d.count),
            _ => None,
        })
        .sum();
    assert_eq!(s.records["ioctl"], ioctls);
    assert_eq!(s.records["process"], 1);
    assert_eq!(s.dropped_events, drops);
    assert_eq!(s.total_records, recs.len() as u64);
    assert_eq!(s.start_ns, Some(900));
    assert_eq!(s.end_ns, Some(1005 + 1233 * 10));
    assert_eq!(s.processes.len(), 3);
    assert_eq!(s.processes[0].comm, "client");
    assert!(s.intact());
}

#[test]
fn committed_synthetic_sample_is_up_to_date() {
    // The sample is generated; regenerate with the example named in its header.
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/synthetic-dxg.dxtrace");
    let dir = tempfile::tempdir().unwrap();
    let fresh = tmp(&dir, "fresh.dxtrace");
    synth::write_file(
        &fresh,
        &synth::SynthOptions::default(),
        "cargo run -p traces --example synthetic_sample",
        synth::sample_writer_options(),
    )
    .unwrap();
    let a = std::fs::read(&committed).expect("traces/samples/synthetic-dxg.dxtrace is committed");
    let b = std::fs::read(&fresh).unwrap();
    assert!(
        a == b,
        "traces/samples/synthetic-dxg.dxtrace is stale: run \
         `cargo run -p traces --example synthetic_sample`"
    );
    let r = Reader::open(&committed).unwrap();
    assert_eq!(r.header().source, CaptureSource::Generated);
    assert!(
        r.header()
            .generated
            .as_deref()
            .unwrap()
            .starts_with("SYNTHETIC")
    );
}

#[test]
fn blocks_visit_the_same_records_as_read_frame() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "blocks.dxtrace");
    let recs = sample_records(3000);
    write(&p, &recs, small_frames());
    let r = Reader::open(&p).unwrap();
    assert!(r.frames().len() > 10);
    let per_frame = r.map_blocks(2, |_, b| {
        let b = b.unwrap();
        let mut v = Vec::new();
        b.for_each(|x| v.push(x.to_owned())).unwrap();
        assert_eq!(v.len(), b.record_count() as usize);
        v
    });
    let visited: Vec<Record> = per_frame.into_iter().flatten().collect();
    assert_eq!(visited, recs);
    // The thread's reused buffers do not leak one frame into the next.
    let again: Vec<Record> = r
        .frames()
        .iter()
        .rev()
        .flat_map(|f| r.read_frame(f).unwrap().into_iter().rev())
        .collect();
    assert_eq!(again.into_iter().rev().collect::<Vec<_>>(), recs);
}

#[test]
fn map_blocks_in_order_delivers_in_frame_order_and_stops_on_sink_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "ordered.dxtrace");
    write(&p, &sample_records(5000), small_frames());
    let r = Reader::open(&p).unwrap();
    let n = r.frames().len();
    assert!(n > 20);
    for threads in [1, 2, 3, 8] {
        let mut seen = Vec::new();
        let res: std::result::Result<(), ()> = r.map_blocks_in_order(
            threads,
            |i, b| (i, b.unwrap().record_count()),
            |i, (j, count)| {
                assert_eq!(i, j);
                seen.push((i, count));
                Ok(())
            },
        );
        res.unwrap();
        let want: Vec<(usize, u32)> = r
            .frames()
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.record_count))
            .collect();
        assert_eq!(seen, want, "threads={threads}");
        let mut calls = 0;
        let res = r.map_blocks_in_order(
            threads,
            |i, _| i,
            |i, _| {
                calls += 1;
                if i == 5 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(res, Err("stop"));
        assert_eq!(calls, 6, "the sink is not called after its error");
    }
}

/// The frame-parallel maps return only once their worker threads are gone, thread-local
/// destructors included, not merely once the workers' closures have returned (which is
/// all `std::thread::scope` waits for): nothing of theirs may still run, or free memory,
/// after the call. A worker's thread-local whose destructor is slow shows the difference.
#[test]
fn frame_parallel_maps_return_after_their_threads_have_exited() {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct SlowExit(Arc<AtomicUsize>);
    impl Drop for SlowExit {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(100));
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local!(static GUARD: RefCell<Option<SlowExit>> = const { RefCell::new(None) });

    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "exit.dxtrace");
    write(&p, &sample_records(3000), small_frames());
    let r = Reader::open(&p).unwrap();
    assert!(r.frames().len() > 10);
    let main = std::thread::current().id();
    for in_order in [false, true] {
        let (armed, exited) = (AtomicUsize::new(0), Arc::new(AtomicUsize::new(0)));
        let work = |_: usize, _: Result<Block<'_>>| {
            // Only on worker threads: the calling thread's guard would outlive the test.
            if std::thread::current().id() != main {
                GUARD.with(|g| {
                    g.borrow_mut().get_or_insert_with(|| {
                        armed.fetch_add(1, Ordering::SeqCst);
                        SlowExit(exited.clone())
                    });
                });
            }
        };
        if in_order {
            r.map_blocks_in_order(2, work, |_, ()| Ok::<(), ()>(()))
                .unwrap();
        } else {
            r.map_blocks(2, work);
        }
        let armed = armed.load(Ordering::SeqCst);
        assert!(armed >= 1, "a worker thread ran (in_order={in_order})");
        assert_eq!(
            exited.load(Ordering::SeqCst),
            armed,
            "every worker has finished exiting when the call returns (in_order={in_order})"
        );
    }
}

#[test]
fn block_with_bytes_after_its_records_is_an_error_naming_the_frame() {
    let mut raw = Vec::new();
    encode_record(&mut raw, &ioctl(1, 8)).unwrap();
    raw.push(0xc0);
    let e = Block::new(4242, 1, &raw).for_each(|_| {}).unwrap_err();
    assert!(
        e.to_string().contains("4242") && e.to_string().contains("1 bytes left"),
        "{e}"
    );
    let e = Block::new(4242, 2, &raw).to_records().unwrap_err();
    assert!(
        matches!(
            e,
            TraceError::Record {
                frame_offset: 4242,
                index: 1,
                ..
            }
        ),
        "{e}"
    );
}

/// `clone_into` gives exactly `to_owned`'s record whatever the target held before: more
/// buffers, fewer, longer paths and data (the replayer decodes into recycled records).
#[test]
fn clone_into_a_used_record_equals_to_owned() {
    let mut big = match ioctl(9, 300) {
        Record::Ioctl(r) => r,
        _ => unreachable!(),
    };
    for k in 0..3 {
        let mut b = big.buffers[0].clone();
        b.path = format!("a.long.path[{k}]");
        big.buffers.push(b);
    }
    let small = match ioctl(4, 5) {
        Record::Ioctl(r) => r,
        _ => unreachable!(),
    };
    for (src, spare) in [
        (&small, big.clone()),
        (&big, small.clone()),
        (&big, big.clone()),
    ] {
        let view = IoctlRef::from(src);
        let mut out = spare;
        view.clone_into(&mut out);
        assert_eq!(&out, src);
        assert_eq!(out, view.to_owned());
    }
}
