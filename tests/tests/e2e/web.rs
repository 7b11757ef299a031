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

/// Starts `dxtrace serve` over `paths` on an ephemeral loopback port; returns it and its
/// URL once it has printed it.
fn serve(paths: &[&Path], cache: &Path) -> (Server, String) {
    let mut c = dxtrace();
    c.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--no-upload",
        "--cache-dir",
    ])
    .arg(cache)
    .args(paths)
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
    (server, url)
}

/// One GET on its own connection; the status code and body.
fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((code, body.to_string()))
}

#[test]
fn load_from_a_second_process_many_concurrent_api_requests_zero_errors() {
    // a smaller, bounded version of `cargo run --release -p web --example loadtest`
    let dir = tempfile::tempdir().unwrap();
    traces::synth::write_file(
        &dir.path().join("load.dxtrace"),
        &traces::synth::SynthOptions {
            ioctls: 200_000,
            ..Default::default()
        },
        "tests/tests/e2e/web.rs",
        traces::WriterOptions::default(),
    )
    .unwrap();
    let (_server, url) = serve(&[dir.path()], &dir.path().join("cache"));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let list = http_get(&addr, "/api/traces").expect("library");
    let lib: serde_json::Value = serde_json::from_str(&list.1).unwrap();
    let key = lib[0]["key"].as_str().unwrap().replace('/', "%2F");
    // the first request builds the index; the load starts once it is there
    let (code, body) = http_get(&addr, &format!("/api/traces/{key}/timeline?buckets=10")).unwrap();
    assert_eq!(code, 200, "{body}");
    let span = serde_json::from_str::<serde_json::Value>(&body).unwrap()["span_ns"]
        .as_u64()
        .unwrap();
    const CLIENTS: u64 = 200;
    let go = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS as usize));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (addr, key, go) = (addr.clone(), key.clone(), go.clone());
            std::thread::spawn(move || {
                let path = match k % 5 {
                    0 => format!("/api/traces/{key}/events/0/{k}"),
                    1 => format!("/api/traces/{key}/search?name=LOCK2&limit=20"),
                    _ => {
                        let w = span >> (k % 20);
                        let t0 = (span - w) / CLIENTS * k;
                        format!(
                            "/api/traces/{key}/timeline?t0={t0}&t1={}&buckets=1500",
                            t0 + w.max(1)
                        )
                    }
                };
                go.wait();
                match http_get(&addr, &path) {
                    Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                        .map(|_| ())
                        .map_err(|e| format!("{path}: not JSON: {e}")),
                    Ok((code, body)) => Err(format!("{path}: {code} {body}")),
                    Err(e) => Err(format!("{path}: {e}")),
                }
            })
        })
        .collect();
    let errors: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {CLIENTS} requests failed: {errors:#?}",
        errors.len()
    );
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

    // and an emulator recording to replay from the page: a copy of a sample whose last
    // recorded return value was altered, so exactly that call diverges
    let emu = dir.path().join("emu-altered.dxtrace");
    replayer::capture::write_altered_copy(root.join("traces/samples/emu-canonical.dxtrace"), &emu)
        .unwrap();
    let (server, url) = serve(&[dir.path()], &dir.path().join("cache"));

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
    assert!(out.join("web-6-replay.png").exists());
}
