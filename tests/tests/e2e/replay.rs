//! Replay across crates: emulator workloads recorded in-process and replayed against a
//! fresh emulator; the kvm-smoke workload recorded and replayed on the real /dev/kvm; the
//! `dxtrace replay` / `dxtrace trim` commands on those traces.

use dxtrace_tests::dxtrace;
use std::path::{Path, PathBuf};

use driver_core::RealDevice;
use driver_core::emulator::{Emulator, EmulatorBackend, EmulatorConfig, NullSink};
use replayer::capture::{RecordingBackend, write_trace};
use replayer::{ReplayOptions, Replayer, Target};
use traces::Record;

fn emulator() -> EmulatorBackend {
    let cfg = EmulatorConfig {
        deterministic: true,
        ..EmulatorConfig::default()
    };
    EmulatorBackend::new(Emulator::new(cfg, Box::new(NullSink)))
}

/// Records a workload scenario through the in-process recorder (labelled in the header).
fn record(scenario: &str, backend: impl driver_core::Backend, device: &str) -> Vec<Record> {
    let mut rb = RecordingBackend::new(backend);
    driver_core::workload::run(scenario, &mut rb, Path::new(device), None)
        .unwrap_or_else(|e| panic!("{scenario} runs: {e}"));
    rb.into_records()
}

#[test]
fn every_dxg_workload_replays_on_the_emulator_with_zero_divergences() {
    for s in driver_core::workload::SCENARIOS
        .iter()
        .filter(|s| s.device == "dxg")
    {
        let recs = record(s.name, emulator(), "/dev/dxg");
        let mut r = Replayer::new(emulator(), ReplayOptions::new(Target::InProcess));
        r.run(recs.iter().cloned().map(Ok), &mut |_| {})
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let rep = r.finish();
        assert!(rep.calls > 0, "{}", s.name);
        assert!(
            rep.divergences.is_empty(),
            "{}: {:#?}",
            s.name,
            rep.divergences
        );
    }
}

#[test]
fn kvm_smoke_workload_replays_on_real_kvm_with_zero_divergences() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is not present");
        return;
    }
    let recs = record("kvm-smoke", RealDevice::new(), "/dev/kvm");
    let _hold: Vec<_> = (0..3)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let mut r = Replayer::new(
        RealDevice::new(),
        ReplayOptions::new(Target::Device("/dev/kvm".into())),
    );
    r.run(recs.iter().cloned().map(Ok), &mut |_| {})
        .expect("replay");
    let rep = r.finish();
    assert!(rep.calls >= 5);
    assert!(rep.divergences.is_empty(), "{:#?}", rep.divergences);
}

fn write(dir: &Path, name: &str, recs: &[Record]) -> PathBuf {
    let p = dir.join(name);
    write_trace(
        &p,
        &RecordingBackend::<RealDevice>::header("/dev/dxg", "dxg"),
        recs,
    )
    .expect("write");
    p
}

#[test]
fn cli_replay_and_trim_on_an_emulator_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs = record("canonical", emulator(), "/dev/dxg");
    let p = write(dir.path(), "canonical.dxtrace", &recs);
    let out = dxtrace()
        .args([
            "replay",
            p.to_str().expect("utf8"),
            "--target",
            "emulator",
            "--json",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["divergences"].as_array().map(Vec::len), Some(0), "{v}");
    let calls = v["calls"].as_u64().expect("calls");
    assert!(calls > 3);
    // Trim the last call and replay the result.
    let t = dir.path().join("trimmed.dxtrace");
    let out = dxtrace()
        .args([
            "trim",
            p.to_str().expect("utf8"),
            "--keep",
            &(calls - 1).to_string(),
            "-o",
            t.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = dxtrace()
        .args([
            "replay",
            t.to_str().expect("utf8"),
            "--target",
            "emulator",
            "--json",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        v["calls"].as_u64().expect("calls") < calls,
        "trim removed calls: {v}"
    );
}
