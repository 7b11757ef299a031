//! Cost of the probe per ioctl, each loop run bare, under the probe and under strace:
//! - `kvm`: a tight KVM_CHECK_EXTENSION loop on /dev/kvm (no payload);
//! - `dxg64` / `dxg4k`: LX_DXQUERYADAPTERINFO (DRIVER_DESCRIPTION) with a 64-byte and a
//!   4-KiB private-data buffer through the emulator's FUSE /dev/dxg (`dxtrace emulate
//!   --mount`), the probe following the embedded pointer and the VMBus uprobes attached
//!   in the daemon.
//!
//! `bench_probe loop WHAT N [DEV]` runs one loop and prints ns/call (the child of every
//! run). `bench_probe all N [DXTRACE]` does the runs itself (root, strace; the dxg rows
//! need the `dxtrace` binary for the daemon) and prints a table. `bench_probe profile
//! record|kernel N` runs only the kvm loop under the probe, recording or with nobody
//! reading the ring, once: a window to sample with `perf record -a -g`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use driver_core::dxg::types::{AdapterInfo, EnumAdapters3, QueryAdapterInfo};
use driver_core::layout::Pod;

const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;
const KVM_CREATE_VM: libc::c_ulong = 0xae01;
const KVM_CAP_USER_MEMORY: libc::c_ulong = 3;
/// KMTQAITYPE_DRIVER_DESCRIPTION: the driver name, UTF-16, into any buffer size.
const QAI_DRIVER_DESCRIPTION: i32 = 65;

fn code(name: &str) -> libc::c_ulong {
    driver_core::lookup_name(name)
        .unwrap_or_else(|| panic!("{name} not in the table"))
        .code as libc::c_ulong
}

fn kvm_loop(n: u64, on_vm: bool) -> f64 {
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    let mut fd = kvm.as_raw_fd();
    if on_vm {
        // SAFETY: KVM_CREATE_VM takes a machine type (0).
        fd = unsafe { libc::ioctl(fd, KVM_CREATE_VM, 0) };
        assert!(fd >= 0, "KVM_CREATE_VM failed");
    }
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: KVM_CHECK_EXTENSION takes an integer argument.
        let r = unsafe { libc::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) };
        assert!(r >= 0, "KVM_CHECK_EXTENSION failed");
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn dxg_loop(dev: &Path, n: u64, size: usize) -> f64 {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {}: {e}", dev.display()));
    let fd = f.as_raw_fd();
    let mut infos = [AdapterInfo::zeroed(); 4];
    let mut e = EnumAdapters3::zeroed();
    e.adapter_count = infos.len() as u32;
    e.adapters = infos.as_mut_ptr() as u64;
    // SAFETY: `e` and the array it points to are live and sized as the struct says.
    let r = unsafe { libc::ioctl(fd, code("LX_DXENUMADAPTERS3"), &mut e) };
    assert!(r == 0 && e.adapter_count > 0, "ENUMADAPTERS3 returned {r}");
    let mut buf = vec![0u8; size];
    let mut q = QueryAdapterInfo::zeroed();
    q.adapter = infos[0].adapter_handle;
    q.type_ = QAI_DRIVER_DESCRIPTION;
    q.private_data = buf.as_mut_ptr() as u64;
    q.private_data_size = size as u32;
    let qai = code("LX_DXQUERYADAPTERINFO");
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: `q` points to `buf`, `size` bytes, both live.
        let r = unsafe { libc::ioctl(fd, qai, &mut q) };
        assert_eq!(r, 0, "QUERYADAPTERINFO({size}) failed");
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Runs of each loop: the figure kept is the fastest, since on a shared machine other
/// work only ever adds time (`BENCH_PROBE_REPS` overrides).
fn reps() -> usize {
    std::env::var("BENCH_PROBE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Ring buffer of the recording runs: 64 MiB unless `BENCH_PROBE_RING` (bytes) says
/// otherwise (`dxtrace record` defaults to 4 MiB).
fn ring_bytes() -> u32 {
    std::env::var("BENCH_PROBE_RING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20)
}

/// The fastest of [`reps`] runs of `cmd`.
fn best_ns(cmd: &mut Command) -> f64 {
    (0..reps())
        .map(|_| child_ns(cmd))
        .fold(f64::INFINITY, f64::min)
}

fn child_ns(cmd: &mut Command) -> f64 {
    let out = cmd.output().expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ns/call on stdout")
}

/// One loop: bare, under the probe, under strace. Prints a row group.
struct Row<'a> {
    label: &'a str,
    args: Vec<String>,
    device: PathBuf,
    schema: &'a str,
    uprobe: Option<(PathBuf, u32)>,
    /// Also measure the hooks' floor and the probe on the `syscalls:*` tracepoints.
    floors: bool,
    /// Also measure under strace.
    strace: bool,
    /// Also measure the kernel side alone (nobody reading), with per-program statistics.
    kernel_only: bool,
}

/// CPU time (user + system) this process has used so far, in ns.
fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(u.ru_utime) + ns(u.ru_stime)
}

/// Runs the loop under the probe (`dxtrace record` of the loop's process, in this
/// process); returns ns/call, the capture summary and the CPU time this process (the
/// ring reader, the trace writer and its compression thread) spent, in ns.
fn probed(
    exe: &Path,
    row: &Row<'_>,
    loop_args: &[String],
) -> anyhow::Result<(f64, probe::RecordSummary, u64)> {
    let id = std::process::id();
    let tmp = std::env::temp_dir().join(format!("bench-probe-{id}.dxtrace"));
    let out_file = std::env::temp_dir().join(format!("bench-probe-{id}.out"));
    let quoted: Vec<String> = loop_args.iter().map(|a| format!("'{a}'")).collect();
    let opts = probe::RecordOptions {
        devices: vec![row.device.clone()],
        schemas: vec![row.schema.into()],
        descriptors: probe::desc::for_schemas(&[row.schema.to_string()]),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "'{}' {} > '{}'",
                exe.display(),
                quoted.join(" "),
                out_file.display()
            ),
        ],
        output: tmp.clone(),
        ringbuf_size: Some(ring_bytes()),
        uprobe_binary: row.uprobe.as_ref().map(|u| u.0.clone()),
        uprobe_pid: row.uprobe.as_ref().map(|u| u.1),
        ..Default::default()
    };
    let stop = AtomicBool::new(false);
    let cpu0 = self_cpu_ns();
    let summary = probe::record_blocking(opts, &stop, |_| {})?;
    let cpu = self_cpu_ns() - cpu0;
    let ns: f64 = std::fs::read_to_string(&out_file)?.trim().parse()?;
    let _ = std::fs::remove_file(&out_file);
    let _ = std::fs::remove_file(&tmp);
    Ok((ns, summary, cpu))
}

/// (name, run count, run time in ns) of each program id, from `bpftool prog show` (the
/// kernel counts them while `kernel.bpf_stats_enabled` is 1). Empty without bpftool.
fn prog_stats(ids: &[u32]) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for id in ids {
        let Ok(o) = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |k: &str| {
            words
                .iter()
                .position(|w| *w == k)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string())
        };
        let (Some(name), Some(t), Some(c)) =
            (after("name"), after("run_time_ns"), after("run_cnt"))
        else {
            continue;
        };
        out.push((name, c.parse().unwrap_or(0), t.parse().unwrap_or(0)));
    }
    out
}

/// Sets `DXTRACE_PROBE_HOOKS` for the next probe started in this process.
fn force_hooks(value: Option<&str>) {
    // SAFETY: the bench is single-threaded between runs (every capture's threads have
    // been joined when record_blocking returns); nothing reads the environment meanwhile.
    unsafe {
        match value {
            Some(v) => std::env::set_var("DXTRACE_PROBE_HOOKS", v),
            None => std::env::remove_var("DXTRACE_PROBE_HOOKS"),
        }
    }
}

fn measure(exe: &Path, n: u64, row: &Row<'_>) -> anyhow::Result<()> {
    let loop_args = |n: u64| {
        let mut a = vec!["loop".to_string(), row.args[0].clone(), n.to_string()];
        a.extend(row.args[1..].iter().cloned());
        a
    };
    let l = row.label;
    let bare = best_ns(Command::new(exe).args(loop_args(n)));
    println!("{l}: calls/run        {n}");
    println!("{l}: bare             {bare:.1} ns/call");
    if row.floors {
        // The hooks alone: a program that does nothing on the same tracepoints.
        for (name, hooks) in [
            ("floor raw_tp", probe::SyscallHooks::Raw),
            ("floor syscalls:", probe::SyscallHooks::Tracepoint),
        ] {
            let floor = probe::Probe::floor(hooks)?;
            let ns = best_ns(Command::new(exe).args(loop_args(n)));
            drop(floor);
            println!("{l}: {name:<16} {ns:.1} ns/call  (+{:.1} ns)", ns - bare);
        }
    }
    if row.kernel_only {
        // The kernel side alone: the probe attached (no pid filter: only the loop uses the
        // device), nobody reading the ring until the loop is done (64 MiB holds it all).
        let mut p = probe::Probe::builder()
            .device(&row.device)
            .ringbuf_size(64 << 20)
            .descriptors(probe::desc::for_schemas(&[row.schema.to_string()]))
            .build()?;
        // First without the kernel's BPF statistics (which add two clock reads per program
        // run), then with them on, each program's own run time counted. The ring is
        // drained between runs.
        let mut events = 0u64;
        let mut plain = f64::INFINITY;
        for _ in 0..reps() {
            plain = plain.min(child_ns(Command::new(exe).args(loop_args(n))));
            p.flush_batches();
            p.drain(&mut |_| events += 1);
        }
        println!(
            "{l}: probe, no reader {plain:.1} ns/call  (+{:.1} ns; BPF statistics off)",
            plain - bare
        );
        let stats = "/proc/sys/kernel/bpf_stats_enabled";
        let was = std::fs::read_to_string(stats).unwrap_or_default();
        let _ = std::fs::write(stats, "1");
        let ns = child_ns(Command::new(exe).args(loop_args(n)));
        let per_prog = prog_stats(&p.kernel_ids().0);
        let _ = std::fs::write(stats, was.trim());
        p.flush_batches();
        p.drain(&mut |_| events += 1);
        let dropped: u64 = p.drop_counts().iter().flatten().sum();
        drop(p);
        println!(
            "{l}: probe, no reader {ns:.1} ns/call  (+{:.1} ns; BPF statistics on; {events} events, \
             {dropped} dropped over all the no-reader runs)",
            ns - bare
        );
        for (name, cnt, t) in per_prog {
            if cnt > 0 {
                println!(
                    "{l}:   {name:<20} {cnt} runs, {:.1} ns/run (kernel bpf_stats)",
                    t as f64 / cnt as f64
                );
            }
        }
    }
    let mut best: Option<(f64, probe::RecordSummary, u64)> = None;
    for _ in 0..reps() {
        let (ns, summary, cpu) = probed(exe, row, &loop_args(n))?;
        if best.as_ref().is_none_or(|b| ns < b.0) {
            best = Some((ns, summary, cpu));
        }
    }
    let (ns, summary, cpu) = best.expect("at least one run");
    let added = ns - bare;
    println!(
        "{l}: probe            {ns:.1} ns/call  (+{added:.1} ns; {} MiB ring)",
        ring_bytes() >> 20
    );
    println!(
        "{l}: captured         {} ioctls, {} VMBus, {} dropped, {} bytes; {:.0} calls/s sustained",
        summary.ioctls,
        summary.vmbus,
        summary.dropped,
        summary.bytes,
        1e9 / ns
    );
    println!(
        "{l}: reader CPU       {:.1} ns/call (the recorder's threads: ring reader, assembler, \
         trace writer, compression; load and attach included)",
        cpu as f64 / n as f64
    );
    if row.floors {
        force_hooks(Some("tracepoint"));
        let r = probed(exe, row, &loop_args(n));
        force_hooks(None);
        let (tns, ts, _) = r?;
        println!(
            "{l}: probe syscalls:  {tns:.1} ns/call  (+{:.1} ns; {} ioctls, {} dropped)",
            tns - bare,
            ts.ioctls,
            ts.dropped
        );
    }
    if row.strace {
        let strace_n = (n / 10).max(1000);
        let strace = child_ns(
            Command::new("strace")
                .args(["-f", "-o", "/dev/null", "-e", "trace=ioctl"])
                .arg(exe)
                .args(loop_args(strace_n)),
        );
        let strace_added = strace - bare;
        println!(
            "{l}: strace -f -e ioctl {strace:.1} ns/call  (+{strace_added:.1} ns; {strace_n} calls)"
        );
        println!("{l}: probe/strace added {:.3}", added / strace_added);
    }
    Ok(())
}

/// `dxtrace emulate --mount DIR`, stopped with SIGTERM on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("all");
    let exe = std::env::current_exe()?;
    match mode {
        "loop" => {
            let what = args.get(2).map(String::as_str).unwrap_or("kvm");
            let n: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
            let ns = match what {
                "kvm" => kvm_loop(n, false),
                "kvmvm" => kvm_loop(n, true),
                "dxg" => {
                    let dev = PathBuf::from(args.get(4).expect("loop dxg N DEV SIZE"));
                    let size: usize = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(64);
                    dxg_loop(&dev, n, size)
                }
                other => anyhow::bail!("unknown loop {other}: kvm, kvmvm or dxg"),
            };
            println!("{ns:.1}");
        }
        "profile" => {
            let what = args.get(2).map(String::as_str).unwrap_or("record");
            let n: u64 = args
                .get(3)
                .and_then(|a| a.parse().ok())
                .unwrap_or(3_000_000);
            let row = Row {
                label: "kvm",
                args: vec!["kvm".into()],
                device: "/dev/kvm".into(),
                schema: "kvm",
                uprobe: None,
                floors: false,
                strace: false,
                kernel_only: false,
            };
            let loop_args = vec!["loop".to_string(), "kvm".into(), n.to_string()];
            match what {
                "record" => {
                    let (ns, summary, cpu) = probed(&exe, &row, &loop_args)?;
                    println!(
                        "kvm: probe {ns:.1} ns/call; {} ioctls, {} dropped; reader CPU {:.1} ns/call",
                        summary.ioctls,
                        summary.dropped,
                        cpu as f64 / n as f64
                    );
                }
                "kernel" => {
                    let mut p = probe::Probe::builder()
                        .device(&row.device)
                        .ringbuf_size(1 << 30)
                        .descriptors(probe::desc::for_schemas(&[row.schema.to_string()]))
                        .build()?;
                    let ns = child_ns(Command::new(&exe).args(&loop_args));
                    let mut events = 0u64;
                    p.flush_batches();
                    p.drain(&mut |_| events += 1);
                    let dropped: u64 = p.drop_counts().iter().flatten().sum();
                    println!(
                        "kvm: probe, no reader {ns:.1} ns/call; {events} events, {dropped} dropped"
                    );
                }
                other => anyhow::bail!("unknown profile mode {other}: record or kernel"),
            }
        }
        "all" => {
            let n: u64 = args
                .get(2)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            measure(
                &exe,
                n,
                &Row {
                    label: "kvm",
                    args: vec!["kvm".into()],
                    device: "/dev/kvm".into(),
                    schema: "kvm",
                    uprobe: None,
                    floors: true,
                    strace: true,
                    kernel_only: true,
                },
            )?;
            // The same call on a VM fd: found in the derived-descriptor set, no fd walk.
            measure(
                &exe,
                n,
                &Row {
                    label: "kvm-vm",
                    args: vec!["kvmvm".into()],
                    device: "/dev/kvm".into(),
                    schema: "kvm",
                    uprobe: None,
                    floors: false,
                    strace: false,
                    kernel_only: true,
                },
            )?;
            let Some(dxtrace) = args.get(3).map(PathBuf::from) else {
                eprintln!("no dxtrace binary given: skipping the FUSE dxg loops");
                return Ok(());
            };
            let dir = std::env::temp_dir().join(format!("bench-probe-mnt-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let daemon = Daemon(
                Command::new(&dxtrace)
                    .args(["emulate", "--mount"])
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .spawn()?,
            );
            let dev = dir.join("dxg");
            let t0 = Instant::now();
            while !dev.exists() {
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(20),
                    "{} never appeared",
                    dev.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            // FUSE round trips are slower: fewer calls.
            let dn = (n / 20).max(1000);
            for (label, size) in [("dxg64", 64usize), ("dxg4k", 4096)] {
                measure(
                    &exe,
                    dn,
                    &Row {
                        label,
                        args: vec!["dxg".into(), dev.display().to_string(), size.to_string()],
                        device: dev.clone(),
                        schema: "dxg",
                        uprobe: Some((dxtrace.clone(), daemon.0.id())),
                        floors: false,
                        strace: true,
                        kernel_only: false,
                    },
                )?;
            }
            drop(daemon);
            let _ = std::fs::remove_dir(&dir);
        }
        other => anyhow::bail!(
            "unknown mode {other}: use `loop WHAT N ...`, `all N [DXTRACE]` or `profile record|kernel N`"
        ),
    }
    Ok(())
}
