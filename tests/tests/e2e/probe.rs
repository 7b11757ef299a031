//! The eBPF probe end to end: `dxtrace record` around `dxtrace workload` on the FUSE
//! emulator device captures exactly the calls the workload logged, the embedded pointer
//! buffers the emulator saw, and the emulator's VMBus traffic through the uprobes on the
//! daemon — with nothing dropped. Root, FUSE and eBPF: runs (never skips) in CI.

use std::path::Path;

use dxtrace_tests::{Daemon, dxtrace, dxtrace_bin, run, skip_fuse, stderr, stdout};
use traces::{BufferRole, IoctlRecord, Record, VmbusDir, VmbusMessage};

use super::emulator::{dxg_scenarios, parse_log, records};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn ioctls(recs: &[Record]) -> Vec<IoctlRecord> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Ioctl(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

fn vmbus(recs: &[Record]) -> Vec<VmbusMessage> {
    recs.iter()
        .filter_map(|r| match r {
            Record::Vmbus(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// What both sides of a VMBus message comparison must agree on (not the timestamps:
/// the daemon runs with a virtual clock; not the pids: the emulator stamps the client,
/// the uprobe sees the daemon).
fn vmbus_key(v: &VmbusMessage) -> (VmbusDir, bool, Option<i64>, Option<u64>, u64, Vec<u8>) {
    (
        v.dir,
        v.is_async,
        v.status,
        v.channel,
        v.request_id,
        v.bytes.clone(),
    )
}

fn record_scenario(name: &str, dev: &Path, daemon_pid: u32, dir: &Path) -> (Vec<Record>, String) {
    let log = dir.join(format!("{name}.jsonl"));
    let trace = dir.join(format!("{name}.dxtrace"));
    let o = run({
        let mut c = dxtrace();
        c.args(["record", "--quiet", "--device"])
            .arg(dev)
            .arg("--uprobe-binary")
            .arg(dxtrace_bin())
            .args(["--uprobe-pid", &daemon_pid.to_string()])
            .arg("-o")
            .arg(&trace)
            .arg("--")
            .arg(dxtrace_bin())
            .args(["workload", name, "--device"])
            .arg(dev)
            .arg("--log")
            .arg(&log);
        c
    });
    assert!(
        o.status.success(),
        "{name}: dxtrace record failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("command exited with 0"),
        "{name}: the workload failed under the probe: {}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&log).expect("workload log");
    (records(&trace), text)
}

#[test]
fn record_captures_every_emulator_scenario_through_fuse() {
    if skip_fuse("record_captures_every_emulator_scenario_through_fuse") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let emu_trace = dir.path().join("daemon.dxtrace");
    let mut daemon = Daemon::start(&mnt, &["-o", emu_trace.to_str().expect("utf-8")]);
    let dev = mnt.join("dxg");

    let mut captured_ioctls = Vec::new();
    let mut captured_vmbus = Vec::new();
    for name in dxg_scenarios() {
        let (recs, log) = record_scenario(name, &dev, daemon.pid(), dir.path());
        let trace = dir.path().join(format!("{name}.dxtrace"));
        let header = traces::Reader::open(&trace)
            .expect("trace")
            .header()
            .clone();
        assert!(
            header.vmbus.active && header.vmbus.detail.starts_with("uprobe:"),
            "{name}: VMBus capture by uprobe on the daemon: {:?}",
            header.vmbus
        );
        let dropped: Vec<&traces::Dropped> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Dropped(d) => Some(d),
                _ => None,
            })
            .collect();
        assert!(dropped.is_empty(), "{name}: events dropped: {dropped:?}");

        let logged = parse_log(&log);
        let calls = ioctls(&recs);
        let got: Vec<String> = calls.iter().map(|c| format!("{:#010x}", c.cmd)).collect();
        let want: Vec<String> = logged
            .iter()
            .map(|l| l["code"].as_str().expect("code").to_string())
            .collect();
        assert_eq!(
            got, want,
            "{name}: captured request codes differ from the log"
        );
        for (i, (c, l)) in calls.iter().zip(&logged).enumerate() {
            let what = format!("{name}: call {i} ({})", l["ioctl"]);
            assert_eq!(
                c.ret,
                l["ret"].as_i64().expect("ret"),
                "{what}: return value"
            );
            assert!(
                c.ts_exit >= c.ts_enter && c.ts_enter > 0,
                "{what}: timestamps"
            );
            let size = ((c.cmd >> 16) & 0x3fff) as usize;
            let out = unhex(l["out"].as_str().expect("out"));
            if size > 0 && !out.is_empty() {
                let sin = c
                    .buffer(BufferRole::StructIn, "")
                    .unwrap_or_else(|| panic!("{what}: no struct read at entry"));
                assert_eq!(sin.data.len(), size, "{what}: struct in length");
                let sout = c
                    .buffer(BufferRole::StructOut, "")
                    .unwrap_or_else(|| panic!("{what}: no struct read at exit"));
                assert_eq!(sout.data, out, "{what}: struct after the call");
            }
            for b in &c.buffers {
                // Pointer buffers may be unreadable on purpose (error-paths): the
                // comparison with the daemon's view below checks those flags.
                if matches!(b.role, BufferRole::StructIn | BufferRole::StructOut) {
                    assert_eq!(b.flags, 0, "{what}: struct {:?} is cut", b.role);
                }
            }
        }
        captured_ioctls.extend(calls);
        captured_vmbus.extend(vmbus(&recs));
    }
    let (ok, out, err) = daemon.stop();
    assert!(ok, "daemon did not exit cleanly: {out}{err}");

    // The daemon's own trace is the reference for what the driver saw: every embedded
    // pointer buffer it read or wrote, and every VMBus message it exchanged.
    let emu = records(&emu_trace);
    let served = ioctls(&emu);
    assert_eq!(
        captured_ioctls.len(),
        served.len(),
        "the probe saw as many ioctls as the daemon served"
    );
    let mut pointer_buffers = 0;
    for (i, (c, e)) in captured_ioctls.iter().zip(&served).enumerate() {
        assert_eq!(c.cmd, e.cmd, "ioctl {i}: request code");
        assert_eq!(c.ret, e.ret, "ioctl {i} ({:#x}): return value", c.cmd);
        assert_eq!(c.arg, e.arg, "ioctl {i} ({:#x}): argument", c.cmd);
        for eb in &e.buffers {
            if !matches!(eb.role, BufferRole::PtrIn | BufferRole::PtrOut) {
                continue;
            }
            let cb = c.buffer(eb.role, &eb.path).unwrap_or_else(|| {
                panic!(
                    "ioctl {i} ({:#x}): the probe did not capture {:?} {}; it has {:?}",
                    c.cmd,
                    eb.role,
                    eb.path,
                    c.buffers
                        .iter()
                        .map(|b| (b.role, b.path.as_str()))
                        .collect::<Vec<_>>()
                )
            });
            assert_eq!(
                (cb.addr, cb.len, cb.flags, &cb.data),
                (eb.addr, eb.len, eb.flags, &eb.data),
                "ioctl {i} ({:#x}): {:?} {}",
                c.cmd,
                eb.role,
                eb.path
            );
            pointer_buffers += 1;
        }
    }
    assert!(
        pointer_buffers > 50,
        "the scenarios pass many embedded pointers; only {pointer_buffers} compared"
    );

    let sent = vmbus(&emu);
    // (The daemon runs without --async-msg, so adapter channels are used; async sends
    // are covered by the probe crate's vmbus_uprobes test.)
    assert!(
        captured_vmbus.iter().any(|v| v.channel.is_some())
            && captured_vmbus.iter().any(|v| v.channel.is_none()),
        "messages on the global and on adapter channels, told apart by LUID"
    );
    for (what, dir, is_async) in [
        ("sync requests", VmbusDir::GuestToHost, false),
        ("replies", VmbusDir::HostReply, false),
        ("host-initiated packets", VmbusDir::HostToGuest, false),
    ] {
        assert!(
            captured_vmbus
                .iter()
                .any(|v| v.dir == dir && v.is_async == is_async),
            "the probe captured no VMBus {what}"
        );
    }
    // The probe's messages, scenario after scenario, are the daemon's in the same order.
    // The daemon also talks to the host outside the recordings (at mount, and possibly
    // when a closed file's release arrives after a recording stopped); those carry no
    // ioctl id. Every message an ioctl caused must be captured.
    let mut it = captured_vmbus.iter().peekable();
    let mut matched = 0;
    for (i, d) in sent.iter().enumerate() {
        if it.peek().is_some_and(|c| vmbus_key(c) == vmbus_key(d)) {
            it.next();
            matched += 1;
            continue;
        }
        assert!(
            d.ioctl_id.is_none(),
            "daemon VMBus message {i} (ioctl {:?}, {:?}, request id {}) is not in the capture \
             (next captured: {:?})",
            d.ioctl_id,
            d.dir,
            d.request_id,
            it.peek().map(|c| (c.dir, c.request_id, c.bytes.len()))
        );
    }
    assert!(
        it.next().is_none(),
        "the probe captured VMBus messages the daemon did not exchange (matched {matched} of {})",
        captured_vmbus.len()
    );
}

// ------------------------------------------------- copies of watched descriptors

const KVM_CREATE_VM: libc::c_ulong = 0xae01;
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;

/// `dup-out=PATH` when this test binary runs as the workload of
/// [`dup_dup2_dup3_and_fcntl_copies_of_watched_fds_are_captured`].
fn dup_child_out() -> Option<std::path::PathBuf> {
    std::env::args().find_map(|a| a.strip_prefix("dup-out=").map(Into::into))
}

/// The workload (a no-op unless started by the test below): copies a `/dev/kvm` fd and a
/// VM fd (an anonymous inode the probe only knows from KVM_CREATE_VM's return) with
/// dup, dup2, dup3, F_DUPFD and F_DUPFD_CLOEXEC, closes the originals, and calls
/// KVM_CHECK_EXTENSION on every copy with a distinct argument. Then it reuses copies for
/// other files (dup2 of /dev/null over one, close of another) and calls again: those
/// calls are not on the device and must not be captured. Logs `captured|ignored fd arg
/// ret` per call.
#[test]
fn child_dup_workload() {
    let Some(out) = dup_child_out() else { return };
    let mut log = String::new();
    let check = |fd: i32, arg: u64| -> i64 {
        // SAFETY: KVM_CHECK_EXTENSION takes an integer argument.
        let r = unsafe { libc::ioctl(fd, KVM_CHECK_EXTENSION, arg) } as i64;
        if r < 0 {
            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
        } else {
            r
        }
    };
    // SAFETY: plain descriptor syscalls on descriptors this function owns.
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        assert!(kvm >= 0, "open /dev/kvm");
        let vm = libc::ioctl(kvm, KVM_CREATE_VM, 0);
        assert!(vm >= 0, "KVM_CREATE_VM");
        let mut copies = Vec::new();
        for (base, orig) in [(100, kvm), (150, vm)] {
            copies.push(libc::dup(orig));
            copies.push(libc::dup2(orig, base));
            copies.push(libc::dup3(orig, base + 1, libc::O_CLOEXEC));
            copies.push(libc::fcntl(orig, libc::F_DUPFD, base + 10));
            copies.push(libc::fcntl(orig, libc::F_DUPFD_CLOEXEC, base + 20));
        }
        assert!(copies.iter().all(|&fd| fd >= 0), "dups failed: {copies:?}");
        libc::close(vm);
        libc::close(kvm);
        for (i, &fd) in copies.iter().enumerate() {
            let arg = 1000 + i as u64;
            log.push_str(&format!("captured {fd} {arg} {}\n", check(fd, arg)));
        }
        // A copy of the VM fd replaced by /dev/null, another closed: no longer watched.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        assert!(null >= 0);
        let (reused, closed) = (copies[6], copies[7]);
        assert_eq!(libc::dup2(null, reused), reused);
        libc::close(closed);
        for (fd, arg) in [(reused, 2000u64), (closed, 2001)] {
            log.push_str(&format!("ignored {fd} {arg} {}\n", check(fd, arg)));
        }
        // The kvm copies still work after all that.
        let arg = 3000;
        log.push_str(&format!(
            "captured {} {arg} {}\n",
            copies[0],
            check(copies[0], arg)
        ));
    }
    std::fs::write(out, log).expect("write log");
}

#[test]
fn dup_dup2_dup3_and_fcntl_copies_of_watched_fds_are_captured() {
    if dup_child_out().is_some() {
        return;
    }
    // root, tracepoints and /dev/kvm: present in CI, where this must not skip
    if skip_fuse("dup_dup2_dup3_and_fcntl_copies_of_watched_fds_are_captured") {
        return;
    }
    assert!(
        Path::new("/dev/kvm").exists() || std::env::var_os("CI").is_none(),
        "/dev/kvm is missing in CI"
    );
    if !Path::new("/dev/kvm").exists() {
        eprintln!("SKIPPED: no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("dup.log");
    let trace = dir.path().join("dup.dxtrace");
    let o = run({
        let mut c = dxtrace();
        c.args(["record", "--quiet", "--device", "/dev/kvm", "-o"])
            .arg(&trace)
            .arg("--")
            .arg(std::env::current_exe().expect("current_exe"))
            .args([
                "e2e::probe::child_dup_workload",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .arg(format!("dup-out={}", log.display()));
        c
    });
    assert!(
        o.status.success() && stderr(&o).contains("command exited with 0"),
        "dxtrace record of the dup workload failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let text = std::fs::read_to_string(&log).expect("workload log");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let recs = records(&trace);
    let calls: Vec<IoctlRecord> = ioctls(&recs)
        .into_iter()
        .filter(|c| c.cmd as libc::c_ulong == KVM_CHECK_EXTENSION)
        .collect();
    let got: Vec<(i32, u64, i64)> = calls.iter().map(|c| (c.fd, c.arg, c.ret)).collect();
    let want: Vec<(i32, u64, i64)> = lines
        .iter()
        .filter(|l| l[0] == "captured")
        .map(|l| {
            (
                l[1].parse().expect("fd"),
                l[2].parse().expect("arg"),
                l[3].parse().expect("ret"),
            )
        })
        .collect();
    assert_eq!(
        want.len(),
        11,
        "the workload made its 11 calls on copies: {text}"
    );
    assert_eq!(
        got, want,
        "calls on dup/dup2/dup3/F_DUPFD/F_DUPFD_CLOEXEC copies (fd, arg, ret) must be \
         captured, and calls on a copy reused for another file or closed must not; log:\n{text}"
    );
    let kvm_dev = traces::Reader::open(&trace)
        .expect("trace")
        .header()
        .devices[0]
        .dev;
    assert!(
        calls.iter().all(|c| c.dev == kvm_dev),
        "every copy carries the device of /dev/kvm: {:?}",
        calls.iter().map(|c| (c.fd, c.dev)).collect::<Vec<_>>()
    );
    // Each copy is announced as a descriptor derived from a watched one.
    let derived: Vec<i32> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Fd(f) if f.op == traces::FdOp::Derived && f.path.starts_with("dup:") => {
                Some(f.fd)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        derived.len(),
        10,
        "ten copies announced as derived fds: {derived:?}"
    );
}
