//! The web UI in a real browser: `dxtrace serve` on an ephemeral loopback port, driven
//! by `tests/browser/ui.spec.mjs` (playwright-core + Debian's headless Chromium).
//! Screenshots land in `test-output/` at the repository root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dxtrace_tests::{dxtrace, repo_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Kills the server we started when the test ends, pass or fail.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn npm_install(dir: &Path) {
    // idempotent: only when playwright-core is not installed yet
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let st = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm is not installed: run scripts/setup.sh (it installs node and npm)");
    assert!(st.success(), "npm ci in {} failed", dir.display());
}

#[test]
fn browser_opens_library_timeline_zooms_and_shows_a_decoded_span() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/setup.sh (installs Debian's chromium); \
         this test is never skipped"
    );
    let root = repo_root();
    let browser_dir = root.join("tests/browser");
    npm_install(&browser_dir);

    let dir = tempfile::tempdir().unwrap();
    traces::synth::write_file(
        &dir.path().join("browser.dxtrace"),
        &traces::synth::SynthOptions {
            ioctls: 20_000,
            ..Default::default()
        },
        "tests/tests/e2e/web.rs",
        traces::WriterOptions::default(),
    )
    .unwrap();

    let mut c = dxtrace();
    c.args(["serve", "--addr", "127.0.0.1:0", "--no-upload"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn dxtrace serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    // `serve` prints its URL once bound; wait for that line
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            if let Some(rest) = line.split("http://").nth(1) {
                let _ = tx.send(format!(
                    "http://{}",
                    rest.split_whitespace().next().unwrap()
                ));
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dxtrace serve did not print its URL within 60 s");

    let out = root.join("test-output");
    std::fs::create_dir_all(&out).unwrap();
    let t = Instant::now();
    let o = Command::new("node")
        .arg("ui.spec.mjs")
        .current_dir(&browser_dir)
        .env("DXTRACE_URL", &url)
        .env("OUT_DIR", &out)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .expect("node is not installed: run scripts/setup.sh");
    drop(server);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{text}");
    assert!(
        o.status.success(),
        "browser test failed after {:?} (screenshots in {}):\n{text}",
        t.elapsed(),
        out.display()
    );
    assert!(out.join("web-5-detail.png").exists());
}
