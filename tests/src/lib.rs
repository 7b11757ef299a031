//! Helpers shared by the end-to-end tests in `tests/e2e.rs` (one test binary).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
