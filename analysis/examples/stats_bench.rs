//! Statistics over a 10M-event synthetic trace, beside plain decode passes of the same
//! file, with the peak memory of each: `cargo run --release -p analysis --example stats_bench
//! [-- EVENTS [TRACE]]`.
//!
//! The trace (`traces::synth`, about three records per ioctl) is written once to
//! `target/bench-<events>.dxtrace` (or TRACE) and reused. Peak RSS is the process's
//! `VmHWM`, reset before each measured step (`/proc/self/clear_refs`), so each figure is
//! that step's own peak (the process's baseline of a few MiB included).

use std::path::PathBuf;
use std::time::Instant;

use analysis::{StatsOptions, columns, stats};
use traces::synth::{SynthOptions, write_file};
use traces::{Reader, WriterOptions};

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0); false if not possible.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak RSS (`VmHWM`) in MiB.
fn peak_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `f`, returning its result, seconds and peak RSS (MiB).
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let reset = reset_peak();
    let t = Instant::now();
    let v = f();
    let s = t.elapsed().as_secs_f64();
    (v, s, if reset { peak_mib() } else { f64::NAN })
}

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
            "cargo run --release -p analysis --example stats_bench",
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
        let (s, total, stats_rss) = measure(|| stats(&path, &StatsOptions::default()).unwrap());
        let (n, decode, decode_rss) = measure(|| {
            let r = Reader::open(&path).unwrap();
            r.map_frames(threads, |_, recs| recs.map(|v| v.len()).unwrap_or(0))
                .into_iter()
                .sum::<usize>()
        });
        let (n2, borrowed, _) = measure(|| {
            let r = Reader::open(&path).unwrap();
            r.map_blocks(threads, |_, b| {
                let mut k = 0usize;
                b.and_then(|b| b.for_each(|_| k += 1))
                    .map(|()| k)
                    .unwrap_or(0)
            })
            .into_iter()
            .sum::<usize>()
        });
        assert_eq!(n, n2);
        let (c, load, cols_rss) = measure(|| columns::load(&path, threads, None).unwrap());
        assert_eq!(c.ioctls.len() as u64, s.totals.ioctls);
        drop(c);
        println!(
            "round {round}: {n} records ({} ioctls, {} VMBus messages); stats {total:.3} s, \
             peak RSS {stats_rss:.0} MiB | plain decode to owned records {decode:.3} s \
             (peak {decode_rss:.0} MiB) | borrowed decode {borrowed:.3} s | decode to all \
             columns (the Parquet export's pass) {load:.3} s, peak {cols_rss:.0} MiB",
            s.totals.ioctls, s.totals.vmbus_messages
        );
    }
}
