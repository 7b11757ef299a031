//! `dxtrace demo`: record the emulator scenarios and serve the UI over the result.
//!
//! Glue only: every step is another dxtrace subcommand, run as a child process of this
//! binary, so what the demo shows is exactly what those commands do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Record the emulator scenarios and serve the UI over them (no WSL2 needed).
///
/// 1. Runs every dxg scenario in the in-process emulator (its instrumented driver logic
///    writes the ioctls and the VMBus traffic) and once more with injected faults.
/// 2. When the machine allows it (root, eBPF, FUSE): mounts the emulated /dev/dxg over
///    FUSE, and records a client scenario through it with the eBPF probe (ioctls via the
///    syscall tracepoints, VMBus via uprobes on the emulator's send functions), plus a
///    kvm-smoke run on the real /dev/kvm. Otherwise it says which step was skipped and
///    why.
/// 3. Serves the web UI over the traces it wrote and traces/samples, printing the URL.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address for the web UI.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,

    /// Directory for the demo's traces (default: dxtrace-demo in the temp directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Only record; do not serve.
    #[arg(long)]
    pub no_serve: bool,
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let out = a
        .out
        .unwrap_or_else(|| std::env::temp_dir().join("dxtrace-demo"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let me = std::env::current_exe().context("cannot find the dxtrace binary")?;
    let say = |s: &str| eprintln!("dxtrace demo: {s}");

    say("running every dxg scenario in the in-process emulator");
    let all = out.join("emulator-all.dxtrace");
    step(&me, &["emulate", "--scenario", "all", "-o"], Some(&all))?;
    let faults = out.join("emulator-faults.dxtrace");
    say("running the canonical session with injected faults (a failing allocation, a lost signal)");
    // A fault run is expected to report failures; only a crash or unwritten trace fails.
    let _ = Command::new(&me)
        .args(["emulate", "--scenario", "canonical", "--fault"])
        .arg("CREATEALLOCATION:status=0xC0000017@2")
        .args(["--fault", "lose-signal@1", "-o"])
        .arg(&faults)
        .stdout(Stdio::null())
        .status();
    if !faults.exists() {
        bail!("the fault-injection run wrote no trace");
    }

    match capture_support() {
        Ok(()) => {
            if let Err(e) = capture_through_fuse(&me, &out) {
                say(&format!(
                    "capture through FUSE + eBPF failed: {e:#}; showing the in-process traces"
                ));
            }
            if let Err(e) = capture_kvm(&me, &out) {
                say(&format!("kvm capture failed: {e:#}"));
            }
        }
        Err(why) => say(&format!(
            "skipping the FUSE + eBPF capture ({why}); the in-process emulator traces are shown"
        )),
    }

    if a.no_serve {
        say(&format!("traces are in {}", out.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let mut paths = vec![out.clone()];
    let samples = Path::new("traces/samples");
    if samples.is_dir() {
        paths.push(samples.to_path_buf());
    }
    say(&format!("open http://{}/ in a browser", a.addr));
    let opts = web::ServeOptions::new(paths);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(web::serve(opts, a.addr))?;
    Ok(ExitCode::SUCCESS)
}

fn step(me: &Path, args: &[&str], out: Option<&Path>) -> anyhow::Result<()> {
    let mut c = Command::new(me);
    c.args(args);
    if let Some(o) = out {
        c.arg(o);
    }
    let st = c
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run dxtrace {}", args.join(" ")))?;
    if !st.success() {
        bail!("`dxtrace {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

/// Why capture cannot run here, if it cannot.
fn capture_support() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: loading eBPF programs needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    Ok(())
}

struct Mount {
    child: Child,
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SIGTERM lets the daemon unmount cleanly; fusermount is the fallback.
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status();
    }
}

fn capture_through_fuse(me: &Path, out: &Path) -> anyhow::Result<()> {
    let mnt = out.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let child = Command::new(me)
        .args(["emulate", "--mount"])
        .arg(&mnt)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the FUSE emulator")?;
    let mount = Mount {
        child,
        dir: mnt.clone(),
    };
    let dev = mnt.join("dxg");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dev.exists() {
        if Instant::now() > deadline {
            bail!("the FUSE device {} did not appear", dev.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "dxtrace demo: recording the canonical session through {} with the eBPF probe",
        dev.display()
    );
    let trace = out.join("captured-fuse-canonical.dxtrace");
    let st = Command::new(me)
        .args(["record", "--device"])
        .arg(&dev)
        .arg("--uprobe-binary")
        .arg(me)
        .arg("--uprobe-pid")
        .arg(mount.child.id().to_string())
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(me)
        .args(["workload", "canonical", "--device"])
        .arg(&dev)
        .stdout(Stdio::null())
        .status()?;
    drop(mount);
    if !st.success() {
        bail!("`dxtrace record` exited with {st}");
    }
    Ok(())
}

fn capture_kvm(me: &Path, out: &Path) -> anyhow::Result<()> {
    if !Path::new("/dev/kvm").exists() {
        bail!("/dev/kvm is missing");
    }
    eprintln!("dxtrace demo: recording kvm-smoke on the real /dev/kvm with the eBPF probe");
    let trace = out.join("captured-kvm-smoke.dxtrace");
    let st = Command::new(me)
        .args(["record", "--device", "/dev/kvm", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(me)
        .args(["workload", "kvm-smoke", "--device", "/dev/kvm"])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("`dxtrace record` exited with {st}");
    }
    Ok(())
}
