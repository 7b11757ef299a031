//! Helpers shared by the end-to-end tests in `tests/e2e.rs` (one test binary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root. `cargo test` sets CARGO_MANIFEST_DIR for the test process: that
/// is preferred over the compile-time value, which names wherever this library was built
/// (a build cache shared between checkouts can hold a copy built in another one).
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the `dxtrace` binary, built (once per test run) into the same target directory
/// and profile as this test binary, so the tests always run the current code. (Cargo only
/// builds a package's binaries for that package's own integration tests, and the
/// end-to-end tests live in their own package.)
pub fn dxtrace_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut c = Command::new(cargo);
        c.current_dir(repo_root())
            .args(["build", "--quiet", "-p", "dxtrace", "--bin", "dxtrace"])
            .env("CARGO_TARGET_DIR", &target_dir);
        // Cargo sets these for the test process; a nested cargo must not see them, or
        // build scripts that watch them (ring watches CARGO_MANIFEST_DIR) rerun and every
        // crate above them — polars included — is rebuilt on each switch between
        // `cargo test` and this build.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    &*k,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                c.env_remove(&*k);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let st = c
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build dxtrace: {e}"));
        assert!(st.success(), "building the dxtrace binary failed");
        let bin = profile_dir.join("dxtrace");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
    .clone()
}

/// A `dxtrace` command with its working directory at the repo root.
pub fn dxtrace() -> Command {
    let mut c = Command::new(dxtrace_bin());
    c.current_dir(repo_root());
    c
}

/// Runs a command and returns its output, panicking with stderr if it could not start.
pub fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// stdout as UTF-8.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as UTF-8.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether we can mount FUSE and read other processes' memory; the reason if not.
pub fn fuse_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!("not root (euid {uid}): mounting FUSE needs root"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

/// CI runs as root with /dev/fuse: a FUSE test never skips there.
pub fn skip_fuse(test: &str) -> bool {
    match fuse_unavailable() {
        Some(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
        Some(why) => panic!("{test}: FUSE must work in CI, but {why}"),
        None => false,
    }
}

/// A `dxtrace emulate --mount` daemon; SIGTERM and wait on drop, so a failing test never
/// leaves a mount behind.
pub struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Daemon {
    /// `dxtrace emulate --deterministic --mount DIR EXTRA...`, once DIR/dxg exists.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with(dir, &["--deterministic"], extra)
    }

    /// `dxtrace emulate BEFORE... --mount DIR EXTRA...`, once DIR/dxg exists.
    pub fn start_with(dir: &Path, before: &[&str], extra: &[&str]) -> Daemon {
        let child = Command::new(dxtrace_bin())
            .arg("emulate")
            .args(before)
            .arg("--mount")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dxtrace emulate --mount");
        let mut d = Daemon {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let t0 = Instant::now();
        while !d.dir.join("dxg").exists() {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let out = d
                    .child
                    .take()
                    .expect("child")
                    .wait_with_output()
                    .expect("output");
                panic!("daemon exited with {st}: {}", stderr(&out));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "DIR/dxg never appeared"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Process id of the daemon (where the probe's VMBus uprobes attach).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL (a crash: nothing is flushed or unmounted by the daemon), wait, then
    /// detach the dead mount lazily so nothing is left behind.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }

    /// SIGTERM, wait, and return (success, stdout, stderr).
    pub fn stop(&mut self) -> (bool, String, String) {
        let Some(child) = self.child.take() else {
            return (true, String::new(), String::new());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let out = child.wait_with_output().expect("daemon output");
        (out.status.success(), stdout(&out), stderr(&out))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
