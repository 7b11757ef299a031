//! Where decode time goes (zstd vs MessagePack), for tuning:
//! `cargo run --release -p traces --example decode_split`.
use std::time::Instant;
use traces::synth::{SynthOptions, write_file};
use traces::*;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.dxtrace");
    write_file(
        &p,
        &SynthOptions {
            ioctls: 500_000,
            ..Default::default()
        },
        "-",
        WriterOptions::default(),
    )
    .unwrap();
    let r = Reader::open(&p).unwrap();
    let frames = r.frames().to_vec();
    let bytes = std::fs::read(&p).unwrap();
    let mut raws = Vec::new();
    let t = Instant::now();
    for f in &frames {
        let s = f.offset as usize + 48;
        let payload = &bytes[s..s + f.payload_len as usize];
        raws.push(zstd::bulk::decompress(payload, 256 << 20).unwrap());
    }
    let z = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut n = 0u64;
    for (raw, f) in raws.iter().zip(&frames) {
        let mut pos = 0;
        for _ in 0..f.record_count {
            let _r = decode_record(raw, &mut pos).unwrap();
            n += 1;
        }
    }
    let d = t.elapsed().as_secs_f64();
    let rawmb: usize = raws.iter().map(|r| r.len()).sum();
    println!(
        "records {n}, raw {} MB: zstd {:.2}M rec/s ({:.0} MB/s), msgpack decode {:.2}M rec/s",
        rawmb / 1_000_000,
        n as f64 / z / 1e6,
        rawmb as f64 / z / 1e6,
        n as f64 / d / 1e6
    );
}
