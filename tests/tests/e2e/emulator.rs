//! The dxg emulator end to end: `dxtrace emulate` traces, fault injection, sample traces,
//! the FUSE device against the in-process emulator, and `kvm-smoke` on the real /dev/kvm.

use std::path::{Path, PathBuf};
use std::process::Command;

use driver_core::emulator::{Emulator, EmulatorBackend, EmulatorConfig, NullSink};
use driver_core::workload::{self, SCENARIOS, arena};
use dxtrace_tests::{Daemon, dxtrace, dxtrace_bin, repo_root, run, skip_fuse, stderr, stdout};
use serde_json::Value;

pub(crate) fn dxg_scenarios() -> Vec<&'static str> {
    SCENARIOS
        .iter()
        .filter(|s| s.device == "dxg")
        .map(|s| s.name)
        .collect()
}

pub(crate) fn records(path: &Path) -> Vec<traces::Record> {
    let r = traces::Reader::open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e:#}", path.display()));
    r.records()
        .map(|x| x.unwrap_or_else(|e| panic!("bad record in {}: {e:#}", path.display())))
        .collect()
}

/// A call log line with addresses in the workload arena made relative to the arena's
/// base, so runs in different processes (different arena slots) compare equal.
fn normalise(line: &Value, base: u64) -> Value {
    let mut v = line.clone();
    let hex = v["out"].as_str().unwrap_or("").to_string();
    let mut bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    for chunk in bytes.chunks_exact_mut(8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8"));
        if x >= base && x < base + arena::ARENA_SIZE as u64 {
            chunk.copy_from_slice(&(x - base).to_le_bytes());
        }
    }
    v["out"] = Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect());
    v
}

pub(crate) fn parse_log(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l}: {e}")))
        .collect()
}

#[test]
fn emulate_all_writes_a_trace_info_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("all.dxtrace");
    let o = run({
        let mut c = dxtrace();
        c.args(["emulate", "--scenario", "all", "-o"]).arg(&out);
        c
    });
    assert!(o.status.success(), "emulate failed: {}", stderr(&o));
    for s in dxg_scenarios() {
        assert!(stdout(&o).contains(&format!("{s}: ")), "no line for {s}");
    }
    let o = run({
        let mut c = dxtrace();
        c.args(["info", "--json"]).arg(&out);
        c
    });
    assert!(o.status.success(), "info failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("info --json is JSON");
    let recs = records(&out);
    let ioctls = recs
        .iter()
        .filter(|r| matches!(r, traces::Record::Ioctl(_)))
        .count();
    let vmbus = recs
        .iter()
        .filter(|r| matches!(r, traces::Record::Vmbus(_)))
        .count();
    assert!(
        ioctls > 200,
        "all dxg scenarios make well over 200 ioctls, got {ioctls}"
    );
    assert!(
        vmbus > ioctls,
        "each ioctl sends a message and gets a reply"
    );
    let text = v.to_string();
    assert!(
        text.contains(&format!("\"ioctl\":{ioctls}")),
        "info --json counts {ioctls} ioctl records: {text}"
    );
    assert!(
        text.contains(&format!("\"vmbus\":{vmbus}")),
        "vmbus count: {text}"
    );
    assert_eq!(v["header"]["source"], "emulator");
}

#[test]
fn fault_injection_is_visible_in_the_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fault.dxtrace");
    let o = run({
        let mut c = dxtrace();
        c.args([
            "emulate",
            "--deterministic",
            "--scenario",
            "canonical",
            "--fault",
            "CREATEALLOCATION:status=0xC0000017@1",
            "-o",
        ])
        .arg(&out);
        c
    });
    assert!(o.status.success(), "emulate failed: {}", stderr(&o));
    assert!(
        stdout(&o).contains("canonical: stopped"),
        "the scenario stops at the failed allocation: {}",
        stdout(&o)
    );
    let recs = records(&out);
    let create_alloc = driver_core::lookup_name("LX_DXCREATEALLOCATION")
        .expect("in table")
        .code;
    let failed = recs.iter().find_map(|r| match r {
        traces::Record::Ioctl(i) if i.cmd == create_alloc => Some(i.ret),
        _ => None,
    });
    let ret = failed.expect("a CREATEALLOCATION ioctl is in the trace");
    assert!(
        ret < 0,
        "CREATEALLOCATION must fail under the fault, ret {ret}"
    );
    let notes: Vec<&traces::Annotation> = recs
        .iter()
        .filter_map(|r| match r {
            traces::Record::Annotation(a) if a.key == "fault" => Some(a),
            _ => None,
        })
        .collect();
    assert!(
        notes.iter().any(|a| a.text.contains("CREATEALLOCATION")),
        "a `fault` annotation names the command: {notes:?}"
    );
}

#[test]
fn deterministic_traces_are_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for n in ["a", "b"] {
        let out = dir.path().join(format!("{n}.dxtrace"));
        let o = run({
            let mut c = dxtrace();
            c.args(["emulate", "--deterministic", "--scenario", "all", "-o"])
                .arg(&out);
            c
        });
        assert!(o.status.success(), "emulate failed: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("not reproducible"),
            "arena fell back: {}",
            stderr(&o)
        );
        files.push(std::fs::read(&out).expect("trace"));
    }
    assert!(files[0] == files[1], "two --deterministic runs differ");
}

#[test]
fn samples_are_up_to_date() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run({
        let mut c = Command::new(repo_root().join("scripts/gen-samples.sh"));
        c.arg(dir.path()).env("DXTRACE", dxtrace_bin());
        c
    });
    assert!(o.status.success(), "gen-samples.sh failed: {}", stderr(&o));
    let mut n = 0;
    for e in std::fs::read_dir(dir.path()).expect("readdir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_owned();
        let committed = repo_root().join("traces/samples").join(&name);
        let want = std::fs::read(&committed).unwrap_or_default();
        let got = std::fs::read(&p).expect("generated");
        assert!(
            got.len() < 1 << 20,
            "{} is {} bytes; samples stay well under 1 MB",
            name.display(),
            got.len()
        );
        assert!(
            want == got,
            "traces/samples/{} is stale or missing: run scripts/gen-samples.sh",
            name.display()
        );
        n += 1;
    }
    assert!(
        n > dxg_scenarios().len(),
        "one sample per scenario plus faults"
    );
}

#[test]
fn kvm_smoke_runs_on_dev_kvm() {
    if !Path::new("/dev/kvm").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must have /dev/kvm");
        eprintln!("SKIPPED kvm_smoke_runs_on_dev_kvm: /dev/kvm is missing");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("kvm.jsonl");
    let o = run({
        let mut c = dxtrace();
        c.args(["workload", "kvm-smoke", "--device", "/dev/kvm", "--log"])
            .arg(&log);
        c
    });
    assert!(
        o.status.success(),
        "kvm-smoke failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("rax = 42"), "{}", stdout(&o));
    let lines = parse_log(&std::fs::read_to_string(&log).expect("log"));
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["ioctl"].as_str().expect("ioctl"))
        .collect();
    for want in [
        "KVM_GET_API_VERSION",
        "KVM_CREATE_VM",
        "KVM_SET_USER_MEMORY_REGION",
        "KVM_CREATE_VCPU",
        "KVM_GET_VCPU_MMAP_SIZE",
        "KVM_SET_SREGS",
        "KVM_SET_REGS",
        "KVM_RUN",
        "KVM_GET_REGS",
    ] {
        assert!(names.contains(&want), "{want} not logged: {names:?}");
    }
    assert_eq!(lines[0]["ret"], 12, "KVM API version");
    assert_eq!(lines[0]["code"], "0x0000ae00");
    for l in &lines {
        assert!(l["ret"].as_i64().expect("ret") >= 0, "failed call {l}");
    }
}

/// Every dxg scenario gives the same calls, codes, results and output structs in-process
/// and through the FUSE device (real syscalls by another process).
#[test]
fn scenarios_agree_in_process_and_through_fuse() {
    if skip_fuse("scenarios_agree_in_process_and_through_fuse") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let trace = dir.path().join("fuse.dxtrace");
    let mut daemon = Daemon::start(&mnt, &["-o", trace.to_str().expect("utf-8")]);

    // The in-process twin: one emulator for all scenarios, like the daemon.
    let emu = Emulator::new(
        EmulatorConfig {
            deterministic: true,
            comm: Some("dxtrace".into()),
            ..EmulatorConfig::default()
        },
        Box::new(NullSink),
    );
    let dev = mnt.join("dxg");
    let mut total = 0;
    for name in dxg_scenarios() {
        let log = dir.path().join(format!("{name}.jsonl"));
        let o = run({
            let mut c = dxtrace();
            c.args(["workload", name, "--device"])
                .arg(&dev)
                .arg("--log")
                .arg(&log);
            c
        });
        assert!(
            o.status.success(),
            "{name} through FUSE failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let fuse = parse_log(&std::fs::read_to_string(&log).expect("log"));

        let mut buf = Vec::new();
        let mut b = EmulatorBackend::new(emu.clone());
        workload::run(name, &mut b, Path::new("/dev/dxg"), Some(&mut buf))
            .unwrap_or_else(|e| panic!("{name} in-process failed: {e}"));
        drop(b);
        let base = arena::base().expect("this thread has an arena");
        let inproc = parse_log(&String::from_utf8(buf).expect("utf-8"));

        assert_eq!(fuse.len(), inproc.len(), "{name}: number of calls");
        for (i, (f, p)) in fuse.iter().zip(&inproc).enumerate() {
            assert_eq!(
                normalise(f, arena::ARENA_BASE),
                normalise(p, base),
                "{name}: call {i} differs (FUSE left, in-process right)"
            );
        }
        total += fuse.len();
    }
    let (ok, out, err) = daemon.stop();
    assert!(ok, "daemon did not exit cleanly on SIGTERM: {out}{err}");
    assert!(out.contains("unmounted"), "{out}");
    assert!(!mnt.join("dxg").exists(), "the mount is gone after SIGTERM");
    let served = records(&trace)
        .iter()
        .filter(|r| matches!(r, traces::Record::Ioctl(_)))
        .count();
    assert_eq!(
        served, total,
        "the daemon's trace holds every ioctl it served"
    );
}

/// The FUSE device passes the positive-NTSTATUS and raw-NTSTATUS return values unchanged
/// (the FUSE ioctl result is an i32).
#[test]
fn fuse_device_keeps_exact_return_values() {
    if skip_fuse("fuse_device_keeps_exact_return_values") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), &[]);
    let out = tempfile::tempdir().expect("tempdir");
    let logs: Vec<PathBuf> = ["canonical", "error-paths"]
        .iter()
        .map(|n| {
            let l = out.path().join(format!("{n}.jsonl"));
            let o = run({
                let mut c = dxtrace();
                c.args(["workload", n, "--device"])
                    .arg(dir.path().join("dxg"))
                    .arg("--log")
                    .arg(&l);
                c
            });
            assert!(o.status.success(), "{n}: {}{}", stdout(&o), stderr(&o));
            l
        })
        .collect();
    let rets: Vec<i64> = logs
        .iter()
        .flat_map(|l| parse_log(&std::fs::read_to_string(l).expect("log")))
        .map(|l| l["ret"].as_i64().expect("ret"))
        .collect();
    assert!(
        rets.contains(&0x103),
        "MAKERESIDENT's STATUS_PENDING (0x103) passes"
    );
    assert!(
        rets.contains(&(0xC000_000Du32 as i32 as i64)),
        "the raw STATUS_INVALID_PARAMETER quirk passes as the negative int"
    );
    assert!(rets.contains(&-(75)), "-EOVERFLOW passes");
    let (ok, _, err) = daemon.stop();
    assert!(ok, "{err}");
}
