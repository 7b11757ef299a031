//! Replay benchmark: `cargo run --release -p replayer --example replay_bench [-- REPEAT]`.
//!
//! 1. Emulator: the dxg `frame-loop` scenario is recorded REPEAT times (default 200) through
//!    `RecordingBackend` over the in-process emulator, then replayed against a fresh
//!    emulator; prints calls/s of the replay loop (records already decoded in memory),
//!    (a) from a `ReplayPlan` compiled before the timed loop, (b) streaming through
//!    `Replayer::run` (records borrowed), each call compiled as it comes. `REPLAY_BENCH_ONLY=1` skips the
//!    baseline and the KVM part (for profiling the replay).
//!    Baseline in the same run: the scenario run REPEAT times straight against a fresh
//!    emulator (the emulator's own in-process call rate on the same calls, no replay).
//! 2. KVM (when /dev/kvm exists): the kvm-smoke VM is recorded on the real device, then
//!    replayed on it in the same run; prints the workload's ioctl time (sum of recorded
//!    exit − entry) against the replay's (time inside `Backend::ioctl`) and wall time.

use std::path::Path;
use std::time::Instant;

use driver_core::RealDevice;
use driver_core::emulator::{Emulator, EmulatorBackend, EmulatorConfig, NullSink};
use replayer::capture::RecordingBackend;
use replayer::{ReplayOptions, ReplayPlan, Replayer, Target};

fn emulator() -> EmulatorBackend {
    let cfg = EmulatorConfig {
        deterministic: true,
        ..EmulatorConfig::default()
    };
    EmulatorBackend::new(Emulator::new(cfg, Box::new(NullSink)))
}

fn main() {
    let repeat: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut rb = RecordingBackend::new(emulator());
    for _ in 0..repeat {
        driver_core::workload::run("frame-loop", &mut rb, Path::new("/dev/dxg"), None)
            .expect("frame-loop runs on the emulator");
    }
    let records: Vec<_> = rb.into_records();
    // REPLAY_BENCH_ONLY=K: only the compiled replay, K times (for profiling it).
    let replay_only = std::env::var("REPLAY_BENCH_ONLY").ok();
    let rounds: usize = replay_only
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let replay_only = replay_only.is_some();

    // Baseline: the same calls made by the workload itself, straight to the emulator.
    let mut direct = emulator();
    let t = Instant::now();
    let repeat_direct = if replay_only { 0 } else { repeat };
    let mut direct_calls = 0usize;
    for _ in 0..repeat_direct {
        let (calls, _) =
            driver_core::workload::run("frame-loop", &mut direct, Path::new("/dev/dxg"), None)
                .expect("frame-loop runs on the emulator");
        direct_calls += calls.len();
    }
    let dwall = t.elapsed().as_secs_f64();
    drop(direct);
    println!(
        "emulator baseline (workload straight to the emulator): {direct_calls} calls in {dwall:.3} s = {:.0} calls/s",
        direct_calls as f64 / dwall
    );

    // REPLAY_BENCH_ONLY=K REPLAY_BENCH_PATH=stream: only the streaming replay, K times.
    if replay_only && std::env::var("REPLAY_BENCH_PATH").as_deref() == Ok("stream") {
        for _ in 0..rounds {
            let mut r = Replayer::new(emulator(), ReplayOptions::new(Target::InProcess));
            let t = Instant::now();
            r.run(records.iter().map(Ok), &mut |_| {}).expect("replay");
            let wall = t.elapsed().as_secs_f64();
            let rep = r.finish();
            assert!(rep.divergences.is_empty(), "{:?}", rep.divergences);
            println!("streaming: {:.0} calls/s", rep.calls as f64 / wall);
        }
        return;
    }

    // 1a. Compiled: the per-call plans are built before the timed loop.
    let t = Instant::now();
    let plan = ReplayPlan::new(&records);
    let compile = t.elapsed().as_secs_f64();
    for _ in 1..rounds {
        let mut r = Replayer::new(emulator(), ReplayOptions::new(Target::InProcess));
        r.run_plan(&plan, &mut |_| {}).expect("replay");
    }
    let mut r = Replayer::new(emulator(), ReplayOptions::new(Target::InProcess));
    let t = Instant::now();
    r.run_plan(&plan, &mut |_| {}).expect("replay");
    let wall = t.elapsed();
    let compiled_wall = wall.as_secs_f64();
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:?}", rep.divergences);
    println!(
        "emulator (compiled plan): {} calls replayed in {:.3} s = {:.0} calls/s ({} divergences); time inside the emulator backend {:.3} s ({:.0} calls/s); plan built before, in {:.3} s",
        rep.calls,
        wall.as_secs_f64(),
        rep.calls as f64 / wall.as_secs_f64(),
        rep.divergences.len(),
        rep.replayed_ioctl_ns as f64 / 1e9,
        rep.calls as f64 / (rep.replayed_ioctl_ns as f64 / 1e9),
        compile
    );
    drop(plan);
    if replay_only {
        return;
    }

    // 1b. Streaming (what `dxtrace replay` does): each call compiled as it comes, through
    // the reordering window; records borrowed (no clone), as a reader's owned records
    // would be moved in.
    let mut r = Replayer::new(emulator(), ReplayOptions::new(Target::InProcess));
    let t = Instant::now();
    r.run(records.iter().map(Ok), &mut |_| {}).expect("replay");
    let wall = t.elapsed();
    let rep = r.finish();
    assert!(rep.divergences.is_empty(), "{:?}", rep.divergences);
    println!(
        "emulator (streaming, records borrowed): {} calls replayed in {:.3} s = {:.0} calls/s ({} divergences); compiled path incl. its plan build: {:.0} calls/s",
        rep.calls,
        wall.as_secs_f64(),
        rep.calls as f64 / wall.as_secs_f64(),
        rep.divergences.len(),
        rep.calls as f64 / (compiled_wall + compile),
    );

    // 1c. From a trace file, what `dxtrace replay FILE --target emulator` runs
    // (`replay_file_on_emulator`: read + decode + replay). Baseline in the same run: a
    // plain decode pass over the same file (read, CRC, zstd, MessagePack to records).
    let dir = std::env::temp_dir().join(format!("replay_bench.{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("frame-loop.dxtrace");
    replayer::capture::write_trace(
        &file,
        &RecordingBackend::<EmulatorBackend>::header("/dev/dxg", "dxg"),
        &records,
    )
    .expect("write trace");
    let t = Instant::now();
    let reader = traces::Reader::open(&file).expect("open");
    let mut decoded = 0u64;
    for r in reader.records() {
        r.expect("decodes");
        decoded += 1;
    }
    let decode = t.elapsed().as_secs_f64();
    drop(reader);
    let t = Instant::now();
    let rep = replayer::replay_file_on_emulator(
        &file,
        ReplayOptions::new(Target::InProcess),
        &mut |_| {},
    )
    .expect("replay");
    let wall = t.elapsed().as_secs_f64();
    assert!(rep.divergences.is_empty(), "{:?}", rep.divergences);
    println!(
        "emulator (from the trace file, `dxtrace replay`'s path): {} calls in {:.3} s = {:.0} calls/s ({} divergences); plain decode pass of the same file: {decoded} records in {:.3} s = {:.0} records/s",
        rep.calls,
        wall,
        rep.calls as f64 / wall,
        rep.divergences.len(),
        decode,
        decoded as f64 / decode,
    );
    let _ = std::fs::remove_dir_all(&dir);

    if !Path::new("/dev/kvm").exists() {
        println!("kvm: skipped (/dev/kvm not present)");
        return;
    }
    let mut best = (u64::MAX, u64::MAX, f64::MAX);
    for _ in 0..20 {
        let mut rb = RecordingBackend::new(RealDevice::new());
        replayer::kvm_smoke::run(&mut rb, Path::new("/dev/kvm")).expect("kvm smoke");
        let orig = rb.ioctl_ns();
        let records = rb.into_records();
        let mut r = Replayer::new(
            RealDevice::new(),
            ReplayOptions::new(Target::Device("/dev/kvm".into())),
        );
        let t = Instant::now();
        r.run(records.iter().map(Ok), &mut |_| {}).expect("replay");
        let wall = t.elapsed().as_secs_f64();
        let rep = r.finish();
        assert!(rep.divergences.is_empty(), "{:?}", rep.divergences);
        if orig + rep.replayed_ioctl_ns < best.0 + best.1 {
            best = (orig, rep.replayed_ioctl_ns, wall);
        }
    }
    println!(
        "kvm-smoke (best of 20): workload ioctl time {:.1} µs, replay ioctl time {:.1} µs ({:.2}x), replay wall {:.1} µs",
        best.0 as f64 / 1e3,
        best.1 as f64 / 1e3,
        best.1 as f64 / best.0 as f64,
        best.2 * 1e6
    );
}
