//! Cost of the probe per ioctl: a tight KVM_CHECK_EXTENSION loop on /dev/kvm.
//!
//! `bench_probe loop N` runs the loop and prints ns/call (used bare, under strace, and
//! under the probe by scripts/bench-probe.sh). `bench_probe all N` does the three runs
//! itself (needs root and strace) and prints a table.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;
const KVM_CAP_USER_MEMORY: libc::c_ulong = 3;

fn tight_loop(n: u64) -> f64 {
    let kvm = std::fs::File::open("/dev/kvm").expect("open /dev/kvm");
    let fd = kvm.as_raw_fd();
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: KVM_CHECK_EXTENSION takes an integer argument.
        let r = unsafe { libc::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) };
        assert!(r >= 0, "KVM_CHECK_EXTENSION failed");
    }
    t.elapsed().as_nanos() as f64 / n as f64
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

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("all");
    let n: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let exe = std::env::current_exe()?;
    match mode {
        "loop" => {
            println!("{:.1}", tight_loop(n));
        }
        "all" => {
            let bare = child_ns(Command::new(&exe).args(["loop", &n.to_string()]));
            let strace_n = (n / 10).max(1000);
            let strace = child_ns(
                Command::new("strace")
                    .args(["-f", "-o", "/dev/null", "-e", "trace=ioctl"])
                    .arg(&exe)
                    .args(["loop", &strace_n.to_string()]),
            );
            let tmp =
                std::env::temp_dir().join(format!("bench-probe-{}.dxtrace", std::process::id()));
            let opts = probe::RecordOptions {
                devices: vec!["/dev/kvm".into()],
                schemas: vec!["kvm".into()],
                command: vec![exe.display().to_string(), "loop".into(), n.to_string()],
                output: tmp.clone(),
                ringbuf_size: Some(64 << 20),
                ..Default::default()
            };
            // The probe's ns/call comes from the child's stdout; capture it via a pipe file.
            let out_file =
                std::env::temp_dir().join(format!("bench-probe-{}.out", std::process::id()));
            let mut opts2 = opts.clone();
            opts2.command = vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{} loop {} > {}", exe.display(), n, out_file.display()),
            ];
            let stop = AtomicBool::new(false);
            let summary = probe::record_blocking(opts2, &stop, |_| {})?;
            let probed: f64 = std::fs::read_to_string(&out_file)?.trim().parse()?;
            let _ = std::fs::remove_file(&out_file);
            let _ = std::fs::remove_file(&tmp);
            let added = probed - bare;
            let strace_added = strace - bare;
            println!("calls/run          {n} (strace: {strace_n})");
            println!("bare               {bare:.1} ns/call");
            println!("probe              {probed:.1} ns/call  (+{added:.1} ns)");
            println!("strace -f -e ioctl {strace:.1} ns/call  (+{strace_added:.1} ns)");
            println!("probe/strace added {:.3}", added / strace_added);
            println!(
                "captured           {} ioctls, {} dropped, {} bytes",
                summary.ioctls, summary.dropped, summary.bytes
            );
        }
        other => anyhow::bail!("unknown mode {other}: use `loop N` or `all N`"),
    }
    Ok(())
}
