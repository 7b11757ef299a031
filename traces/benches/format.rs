//! Encode/decode throughput of the `.dxtrace` format for ioctl records with 64-byte and
//! 4-KiB payloads: records/s, MB/s, bytes per record. Run: `cargo bench -p traces`.
//!
//! Besides criterion's per-iteration timing, `main` prints a one-core summary table
//! (encode = MessagePack + zstd level 1 + CRC32C into frames; decode = CRC + zstd +
//! MessagePack, either back to owned `Record`s or visited borrowed from the block as
//! `RecordRef`s, the path statistics and indexes take) and, as the same-run baseline, the
//! raw read of the file bytes.

use std::time::Instant;

use criterion::{Criterion, Throughput};
use traces::*;

fn record(i: u64, payload: usize) -> Record {
    let mut data = vec![0u8; payload];
    // Realistic-ish content: small integers and handles, mostly zeros, some noise.
    for (j, b) in data.iter_mut().enumerate() {
        *b = match j % 16 {
            0..=3 => (i as u8).wrapping_mul(7),
            4 => 0x40,
            8..=9 => (j as u8) ^ (i as u8),
            _ => 0,
        };
    }
    Record::Ioctl(IoctlRecord {
        id: i,
        ts_enter: 1_000_000 + i * 1500,
        ts_exit: 1_000_000 + i * 1500 + 800 + (i % 13) * 40,
        pid: 4242,
        tid: 4242 + (i % 4) as u32,
        fd: 3,
        dev: (10 << 8) | 125,
        cmd: 0xC0384734,
        arg: 0x7ffd_1234_0000 + (i % 64) * 64,
        ret: 0,
        buffers: vec![Buffer {
            addr: 0x7ffd_1234_0000,
            role: BufferRole::StructIn,
            path: String::new(),
            len: payload as u64,
            flags: 0,
            data,
        }],
    })
}

fn encode_file(path: &std::path::Path, recs: &[Record], threads: usize) -> WriteSummary {
    let opts = WriterOptions {
        threads,
        ..WriterOptions::default()
    };
    let mut w = Writer::create(path, &Header::default(), opts).unwrap();
    for r in recs {
        w.push(r).unwrap();
    }
    w.finish().unwrap()
}

fn decode_file(path: &std::path::Path, threads: usize) -> u64 {
    let r = Reader::open(path).unwrap();
    r.map_frames(threads, |_, res| res.unwrap().len() as u64)
        .into_iter()
        .sum()
}

/// The borrowed path: every record visited as a [`RecordRef`] (scalars decoded, buffers
/// located and checked) straight from the decompressed block, nothing allocated.
fn decode_file_borrowed(path: &std::path::Path, threads: usize) -> u64 {
    let r = Reader::open(path).unwrap();
    r.map_blocks(threads, |_, b| {
        let mut n = 0u64;
        b.unwrap()
            .for_each(|rec| {
                std::hint::black_box(&rec);
                n += 1;
            })
            .unwrap();
        n
    })
    .into_iter()
    .sum()
}

fn summary_table() {
    let dir = tempfile::tempdir().unwrap();
    println!();
    println!(
        "| payload | records | MessagePack-only encode rec/s | MessagePack-only decode rec/s owned / borrowed | encode rec/s (1 core) | encode MB/s | decode rec/s (1 core) owned / borrowed | decode MB/s owned / borrowed | decode rec/s (2 threads) owned / borrowed | bytes/record on disk | raw read MB/s (baseline) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (payload, n) in [(64usize, 2_000_000u64), (4096, 100_000)] {
        let recs: Vec<Record> = (0..n).map(|i| record(i, payload)).collect();
        let path = dir.path().join(format!("bench-{payload}.dxtrace"));
        // MessagePack alone (no zstd, no I/O): the codec's own per-core rate.
        // Encoding reuses one frame-sized buffer, as the writer does; decoding reads one
        // block holding every record (built untimed).
        let mut frame = Vec::with_capacity(512 << 10);
        let t = Instant::now();
        for r in &recs {
            encode_record(&mut frame, r).unwrap();
            if frame.len() >= 256 << 10 {
                std::hint::black_box(&frame);
                frame.clear();
            }
        }
        let mp_enc = t.elapsed().as_secs_f64();
        let mut block = Vec::with_capacity(recs.len() * (payload + 96));
        for r in &recs {
            encode_record(&mut block, r).unwrap();
        }
        let t = Instant::now();
        let mut pos = 0;
        for _ in 0..n {
            std::hint::black_box(decode_record(&block, &mut pos).unwrap());
        }
        let mp_dec = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut k = 0u64;
        Block::new(0, n as u32, &block)
            .for_each(|rec| {
                std::hint::black_box(&rec);
                k += 1;
            })
            .unwrap();
        let mp_dec_b = t.elapsed().as_secs_f64();
        assert_eq!(k, n);
        drop(block);
        let t = Instant::now();
        let s = encode_file(&path, &recs, 1);
        let enc = t.elapsed().as_secs_f64();
        drop(recs);
        let t = Instant::now();
        let got = decode_file(&path, 1);
        let dec = t.elapsed().as_secs_f64();
        assert_eq!(got, n);
        let t = Instant::now();
        let got2 = decode_file(&path, 2);
        let dec2 = t.elapsed().as_secs_f64();
        assert_eq!(got2, n);
        let t = Instant::now();
        assert_eq!(decode_file_borrowed(&path, 1), n);
        let dec_b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        assert_eq!(decode_file_borrowed(&path, 2), n);
        let dec2_b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let bytes = std::fs::read(&path).unwrap();
        let raw = t.elapsed().as_secs_f64();
        let mb = s.raw_bytes as f64 / 1e6;
        println!(
            "| {payload} B | {n} | {:.2}M | {:.2}M / {:.2}M | {:.2}M | {:.0} | {:.2}M / {:.2}M | {:.0} / {:.0} | {:.2}M / {:.2}M | {:.1} | {:.0} |",
            n as f64 / mp_enc / 1e6,
            n as f64 / mp_dec / 1e6,
            n as f64 / mp_dec_b / 1e6,
            n as f64 / enc / 1e6,
            mb / enc,
            n as f64 / dec / 1e6,
            n as f64 / dec_b / 1e6,
            mb / dec,
            mb / dec_b,
            n as f64 / dec2 / 1e6,
            n as f64 / dec2_b / 1e6,
            s.file_bytes as f64 / n as f64,
            bytes.len() as f64 / 1e6 / raw,
        );
    }
    println!("(MB/s are of uncompressed MessagePack block bytes)");
}

fn criterion_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("ioctl-64B");
    let recs: Vec<Record> = (0..100_000).map(|i| record(i, 64)).collect();
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.sample_size(10);
    let path = dir.path().join("c.dxtrace");
    g.bench_function("encode", |b| b.iter(|| encode_file(&path, &recs, 1)));
    encode_file(&path, &recs, 1);
    g.bench_function("decode", |b| b.iter(|| decode_file(&path, 1)));
    g.bench_function("decode-borrowed", |b| {
        b.iter(|| decode_file_borrowed(&path, 1))
    });
    g.finish();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick-table");
    summary_table();
    if !quick {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
}
