//! Statistics over a 10M-event synthetic trace, beside a plain decode pass of the same
//! file: `cargo run --release -p analysis --example bench [-- EVENTS [TRACE]]`.
//!
//! The trace (`traces::synth`, about three records per ioctl) is written once to
//! `target/bench-<events>.dxtrace` (or TRACE) and reused.

use std::path::PathBuf;
use std::time::Instant;

use analysis::{StatsOptions, columns, stats, stats_of};
use traces::synth::{SynthOptions, write_file};
use traces::{Reader, WriterOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map_or(10_000_000, |s| s.parse().expect("EVENTS"));
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("bench-{events}.dxtrace"))
    });
    if !path.exists() {
        let t = Instant::now();
        let s = write_file(
            &path,
            &SynthOptions {
                ioctls: events / 3,
                ..SynthOptions::default()
            },
            "cargo run --release -p analysis --example bench",
            WriterOptions::default(),
        )
        .expect("write trace");
        eprintln!(
            "wrote {} in {:.1} s: {s:?}",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "trace {} ({:.1} MiB), {threads} threads",
        path.display(),
        size as f64 / (1 << 20) as f64
    );
    for round in 1..=3 {
        let t = Instant::now();
        let r = Reader::open(&path).unwrap();
        let n: usize = r
            .map_frames(threads, |_, recs| recs.map(|v| v.len()).unwrap_or(0))
            .into_iter()
            .sum();
        let decode = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let c = columns::load(&path, threads, None).unwrap();
        let load = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let s = stats_of(&c, "bench", &StatsOptions::default()).unwrap();
        let agg = t.elapsed().as_secs_f64();
        drop(c);

        let t = Instant::now();
        let s2 = stats(&path, &StatsOptions::default()).unwrap();
        let total = t.elapsed().as_secs_f64();
        assert_eq!(s.totals, s2.totals);
        println!(
            "round {round}: {n} records; plain decode {decode:.3} s; stats {total:.3} s \
             (decode to columns {load:.3} s + polars/aggregation {agg:.3} s); \
             {} ioctls, {} VMBus messages",
            s.totals.ioctls, s.totals.vmbus_messages
        );
    }
}
