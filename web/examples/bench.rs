//! Benchmark of the web index on a big synthetic trace (figures for BENCHMARKS.md):
//! index build time, writing and loading the on-disk index cache, first timeline view,
//! tile query p50/p95, event detail, RSS.
//!
//! `cargo run --release -p web --example bench -- [IOCTLS] [PATH]`
//! (default 10,000,000 ioctls — 30M records — in /tmp/dxtrace-bench-<N>.dxtrace,
//! generated once and reused).

use std::time::Instant;

use web::index::TraceIndex;
use web::query;

fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|s| s.replace('_', "").parse().expect("IOCTLS is a number"))
        .unwrap_or(10_000_000);
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("dxtrace-bench-{n}.dxtrace")));
    if !path.exists() {
        let t = Instant::now();
        traces::synth::write_file(
            &path,
            &traces::synth::SynthOptions {
                ioctls: n,
                processes: 4,
                threads: 4,
                ..Default::default()
            },
            &format!("cargo run --release -p web --example bench -- {n}"),
            traces::WriterOptions::default(),
        )
        .expect("generate");
        println!(
            "generated {} in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let reader = traces::Reader::open(&path).expect("open");
    println!(
        "trace: {} ioctls requested, {:.0} MiB, {} frames; {threads} threads",
        n,
        reader.file_len() as f64 / 1048576.0,
        reader.frames().len()
    );
    let t = Instant::now();
    let ix = TraceIndex::build(&reader, threads);
    let build = t.elapsed().as_secs_f64();
    println!(
        "index build: {build:.2} s ({} records, {} ioctls, {} VMBus round trips, {} lanes); \
         index heap {:.0} MiB",
        ix.total_records,
        ix.ioctl_count(),
        ix.vmbus_count(),
        ix.lanes.len(),
        ix.heap_bytes() as f64 / 1048576.0
    );
    println!(
        "RSS after build: {:.0} MiB (peak {:.0} MiB)",
        rss_kib("VmRSS:") as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
    // the on-disk cache: what a restarted server does instead of the build above
    let cache_dir = std::env::temp_dir().join("dxtrace-bench-cache");
    let canon = path.canonicalize().expect("canonical path");
    let key = web::cache::SourceKey::of(&canon).expect("source key");
    let file = web::cache::file_for(&cache_dir, "index", &canon);
    let t = Instant::now();
    web::cache::write(&file, &key, &ix).expect("write cache");
    let write_s = t.elapsed().as_secs_f64();
    let cache_mib = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    drop(ix);
    let mut loads = Vec::new();
    let mut ix = None;
    for _ in 0..3 {
        drop(ix.take()); // a restarted server holds one index, not the previous load's too
        let t = Instant::now();
        let loaded: TraceIndex = web::cache::read(&file, &key).expect("load cache");
        loads.push(t.elapsed().as_secs_f64());
        ix = Some(loaded);
    }
    let ix = ix.expect("loaded");
    println!(
        "index cache: {cache_mib:.0} MiB written in {write_s:.2} s; load from cache \
         (read + CRC + decode) {:.2} / {:.2} / {:.2} s vs build {build:.2} s",
        loads[0], loads[1], loads[2]
    );
    println!(
        "RSS after the cache loads: {:.0} MiB (peak {:.0} MiB)",
        rss_kib("VmRSS:") as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
    let span = ix.end - ix.start;
    let t = Instant::now();
    let tl = query::timeline(&ix, 0, span, 1500).expect("first view");
    let json = serde_json::to_vec(&tl).unwrap();
    println!(
        "first view (whole trace, 1500 buckets, JSON {} KiB): {:.1} ms",
        json.len() / 1024,
        t.elapsed().as_secs_f64() * 1e3
    );
    // random windows, log-uniform widths from 10 µs to the whole trace
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut times = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..500 {
        let lw = (10_000f64).ln()
            + (next() % 10_000) as f64 / 10_000.0 * ((span as f64).ln() - (10_000f64).ln());
        let w = lw.exp() as u64;
        let t0 = next() % (span - w.min(span) + 1);
        let t = Instant::now();
        let tl = query::timeline(&ix, t0, t0 + w.max(1), 1500).expect("tile");
        let j = serde_json::to_vec(&tl).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes += j.len();
    }
    let (p50, p95, max) = (
        pct(&mut times, 0.5),
        pct(&mut times, 0.95),
        pct(&mut times, 1.0),
    );
    println!(
        "tile queries (500 random windows, 1500 buckets, incl. JSON; avg {} KiB): \
         p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms",
        bytes / 500 / 1024
    );
    let mut dt = Vec::new();
    for _ in 0..20 {
        let li = (next() % ix.lanes.len() as u64) as usize;
        let i = (next() % ix.lanes[li].len() as u64) as u32;
        let t = Instant::now();
        query::event_detail(&ix, &reader, li, i).expect("detail");
        dt.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "event detail (20 random): p50 {:.1} ms, max {:.1} ms",
        pct(&mut dt, 0.5),
        pct(&mut dt, 1.0)
    );
    println!(
        "RSS at end: {:.0} MiB (peak {:.0} MiB)",
        rss_kib("VmRSS:") as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
}
