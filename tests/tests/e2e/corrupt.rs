//! Corrupt input (issue 9): every sample trace cut at every class of truncation point,
//! with thousands of random bit flips, and with records damaged *behind valid checksums*
//! (the block re-framed with a fresh CRC, so the damage reaches the decoders instead of
//! stopping at the frame check). `dxtrace info`, `stats`, `replay --target emulator` and
//! the web server must each succeed or fail with a clear error: never a panic, a hang or
//! unbounded memory, and whatever is intact stays readable.
//!
//! Two layers:
//! - in process, every variant (thousands): the trace reader, `summarize` (what `info`
//!   prints), `analysis::stats` and the web index build, each under `catch_unwind` and a
//!   deadline;
//! - through the real binary, a subset (every truncation class, some flips, every kind of
//!   checksum-valid damage): exit status, stderr message, peak RSS from `wait4`, and the
//!   record count `info --json` recovers; then one `dxtrace serve` over all of them,
//!   answering every page and API request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dxtrace_tests::{dxtrace_bin, repo_root};
use serde_json::Value;
use traces::frame::{CODEC_NONE, FRAME_HEADER_LEN, FRAME_RECORDS, FrameHeader};

/// Deterministic xorshift64*: the variants are the same on every run, so a failure
/// names a variant that can be regenerated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One damaged copy of a sample.
struct Variant {
    name: String,
    bytes: Vec<u8>,
    /// For truncations: the records `info` must still recover (those of the frames that
    /// end at or before the cut); `None` when the header itself is gone or the damage is
    /// elsewhere.
    expect_records: Option<u64>,
    /// Whether the binary-level layer runs this variant too.
    cli: bool,
}

/// The layout of an intact sample, from the reader.
struct Layout {
    bytes: Vec<u8>,
    /// (offset, total length, records) of each records frame.
    frames: Vec<(usize, usize, u64)>,
    /// Where the footer index frame starts (= end of the last records frame).
    footer: usize,
}

fn layout(path: &Path) -> Layout {
    let bytes = std::fs::read(path).unwrap();
    let r = traces::Reader::open(path).unwrap();
    assert!(
        r.has_footer(),
        "{} should be a finished trace",
        path.display()
    );
    let frames: Vec<(usize, usize, u64)> = r
        .frames()
        .iter()
        .map(|f| {
            (
                f.offset as usize,
                FRAME_HEADER_LEN + f.payload_len as usize,
                u64::from(f.record_count),
            )
        })
        .collect();
    let footer = frames.last().map_or(bytes.len(), |&(o, l, _)| o + l);
    Layout {
        bytes,
        frames,
        footer,
    }
}

/// Cut points covering every class: inside the prefix, inside the header metadata, at
/// and inside each part of each frame (header, payload), inside the footer and trailer.
fn truncations(l: &Layout) -> Vec<(String, usize)> {
    let first = l.frames.first().map_or(l.footer, |f| f.0);
    let mut cuts = vec![
        ("empty".to_string(), 0),
        ("in-magic".into(), 5),
        ("in-prefix".into(), 20),
        ("in-header".into(), (24 + first) / 2),
        ("header-only".into(), first),
    ];
    for (i, &(o, len, _)) in l.frames.iter().enumerate() {
        cuts.push((format!("frame{i}-magic"), o + 2));
        cuts.push((format!("frame{i}-header"), o + FRAME_HEADER_LEN / 2));
        cuts.push((format!("frame{i}-no-payload"), o + FRAME_HEADER_LEN));
        cuts.push((
            format!("frame{i}-mid-payload"),
            o + FRAME_HEADER_LEN + (len - FRAME_HEADER_LEN) / 2,
        ));
        cuts.push((format!("frame{i}-last-byte-missing"), o + len - 1));
        cuts.push((format!("frame{i}-end"), o + len));
    }
    let n = l.bytes.len();
    cuts.push(("footer-header".into(), l.footer + FRAME_HEADER_LEN / 2));
    cuts.push((
        "footer-payload".into(),
        (l.footer + FRAME_HEADER_LEN + n - 16) / 2,
    ));
    cuts.push(("before-trailer".into(), n - 16));
    cuts.push(("in-trailer".into(), n - 8));
    cuts.push(("last-byte-missing".into(), n - 1));
    cuts.retain(|&(_, c)| c < n);
    cuts.sort_by_key(|&(_, c)| c);
    cuts.dedup_by_key(|c| c.1);
    cuts
}

/// Damage inside a frame's record block, re-framed uncompressed with a correct CRC and
/// with the footer dropped (its offsets no longer hold), so the reader scans and the
/// record decoders see the damage.
fn deep_damage(l: &Layout, path: &Path, rng: &mut Rng, kind: usize) -> (String, Vec<u8>) {
    let r = traces::Reader::open(path).unwrap();
    let fi = rng.below(l.frames.len());
    let recs = r.read_frame(&r.frames()[fi]).unwrap();
    let mut block = Vec::new();
    for rec in &recs {
        traces::encode_record(&mut block, rec).unwrap();
    }
    let at = rng.below(block.len());
    let what = match kind % 5 {
        0 => {
            block[at] ^= 1 << rng.below(8);
            "bit"
        }
        1 => {
            block[at] = rng.next() as u8;
            "byte"
        }
        2 => {
            // a length or count field gone huge
            for b in block.iter_mut().skip(at).take(4) {
                *b = 0xff;
            }
            "ff4"
        }
        3 => {
            block.truncate(at);
            "short-block"
        }
        _ => {
            // MessagePack markers that claim big containers: array32 / bin32 / map32
            let marker = [0xdd, 0xc6, 0xdf][rng.below(3)];
            block[at] = marker;
            "marker"
        }
    };
    let (o, len, _) = l.frames[fi];
    let old = FrameHeader::decode(l.bytes[o..o + FRAME_HEADER_LEN].try_into().unwrap()).unwrap();
    let h = FrameHeader {
        frame_type: FRAME_RECORDS,
        codec: CODEC_NONE,
        payload_len: block.len() as u32,
        raw_len: block.len() as u32,
        record_count: old.record_count,
        payload_crc: crc32c::crc32c(&block),
        ts_min: old.ts_min,
        ts_max: old.ts_max,
    };
    let mut out = l.bytes[..o].to_vec();
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(&block);
    out.extend_from_slice(&l.bytes[o + len..l.footer]);
    (format!("deep-{what}-frame{fi}-at{at}"), out)
}

fn variants(path: &Path, seed: u64, flips: usize, deep: usize) -> Vec<Variant> {
    let l = layout(path);
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for (name, cut) in truncations(&l) {
        let whole: u64 = l
            .frames
            .iter()
            .filter(|&&(o, len, _)| o + len <= cut)
            .map(|f| f.2)
            .sum();
        let first = l.frames.first().map_or(l.footer, |f| f.0);
        out.push(Variant {
            name: format!("cut-{name}-at{cut}"),
            bytes: l.bytes[..cut].to_vec(),
            expect_records: (cut >= first).then_some(whole),
            cli: true,
        });
    }
    for i in 0..flips {
        let mut b = l.bytes.clone();
        let at = rng.below(b.len());
        let bit = rng.below(8);
        b[at] ^= 1 << bit;
        out.push(Variant {
            name: format!("flip-byte{at}-bit{bit}"),
            bytes: b,
            expect_records: None,
            cli: i % 60 == 0,
        });
    }
    for k in 0..deep {
        let (name, bytes) = deep_damage(&l, path, &mut rng, k);
        out.push(Variant {
            name,
            bytes,
            expect_records: None,
            cli: k % 4 == 0,
        });
    }
    out
}

fn samples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("traces/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dxtrace"))
        .collect();
    v.sort();
    assert!(v.len() >= 8, "expected the sample traces, found {v:?}");
    v
}

/// Runs `f` on a thread with a deadline; a panic or an overrun is a failure naming `what`.
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what}: panicked: {msg}")
        }
        Err(_) => panic!("{what}: still running after {limit:?} (hang?)"),
    }
}

/// The library layer on one damaged file: whatever the reader accepts, the tools built
/// on it take without panicking; whatever it refuses comes with a message.
fn in_process(file: &Path, label: &str) {
    let p = file.to_path_buf();
    let limit = Duration::from_secs(60);
    let opened =
        bounded(
            &format!("{label}: open+summarize"),
            limit,
            move || match traces::Reader::open(&p) {
                Ok(r) => {
                    let s = traces::summarize(&r, 1);
                    let mut n = 0u64;
                    for rec in r.records() {
                        match rec {
                            Ok(_) => n += 1,
                            Err(e) => assert!(!e.to_string().is_empty(), "empty error"),
                        }
                    }
                    assert!(
                        n <= s.total_records + 1,
                        "records() yielded {n}, summary counted {}",
                        s.total_records
                    );
                    true
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.len() > 10, "unclear open error: {msg:?}");
                    false
                }
            },
        );
    if !opened {
        return;
    }
    let p = file.to_path_buf();
    bounded(&format!("{label}: analysis::stats"), limit, move || {
        let opts = analysis::StatsOptions {
            threads: 1,
            ..Default::default()
        };
        if let Err(e) = analysis::stats(&p, &opts) {
            assert!(!e.to_string().is_empty(), "empty stats error");
        }
    });
    let p = file.to_path_buf();
    bounded(&format!("{label}: web index"), limit, move || {
        let r = traces::Reader::open(&p).expect("opened a moment ago");
        let ix = web::index::TraceIndex::build(&r, 1);
        let _ = (ix.ioctl_count(), ix.vmbus_count());
    });
}

#[test]
fn damaged_samples_never_panic_in_the_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for (si, sample) in samples().into_iter().enumerate() {
        let stem = sample.file_stem().unwrap().to_string_lossy().into_owned();
        for v in variants(&sample, 0x9e37_79b9 + si as u64, 400, 60) {
            let f = dir.path().join(format!("{stem}.dxtrace"));
            std::fs::write(&f, &v.bytes).unwrap();
            in_process(&f, &format!("{stem} {}", v.name));
            total += 1;
        }
    }
    eprintln!("corrupt input: {total} damaged variants through reader, stats and web index");
    assert!(total > 3000, "only {total} variants");
}

/// A finished child process: exit code or signal, output, and peak RSS from `wait4`.
struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
}

/// Runs `cmd` to completion within `limit` (killing it past that), collecting its peak RSS.
// The child is reaped by `wait4` below (std's `wait` cannot return the rusage).
#[allow(clippy::zombie_processes)]
fn run_bounded(mut cmd: Command, limit: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let t0 = Instant::now();
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting on our own child's pid with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if t0.elapsed() > limit {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; blocking wait after the kill.
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            panic!("{cmd:?} still running after {limit:?} (hang?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ran {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        max_rss_kib: ru.ru_maxrss,
    }
}

/// Peak RSS any one command may reach on these small samples: far above what a working
/// run needs, far below what trusting a damaged length field would allocate.
const RSS_LIMIT_KIB: i64 = 512 * 1024;

fn check_ran(r: &Ran, what: &str) {
    assert!(
        r.signal.is_none(),
        "{what}: killed by signal {:?}\n{}",
        r.signal,
        r.stderr
    );
    assert!(
        !r.stderr.contains("panicked") && r.code != Some(101),
        "{what}: panicked\n{}",
        r.stderr
    );
    assert!(
        r.max_rss_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {} KiB",
        r.max_rss_kib
    );
    // The CLI's contract (every --help says it): 0 = clean; 1 = the command ran and its
    // report (JSON here: every run uses --json) says what is wrong — a damaged trace,
    // divergences; 2 = it could not run, with the cause on stderr.
    match r.code {
        Some(0) => {}
        Some(1) => assert!(
            serde_json::from_str::<Value>(&r.stdout).is_ok(),
            "{what}: exit 1 without a JSON report:\n{}{}",
            r.stdout,
            r.stderr
        ),
        Some(2) => assert!(
            r.stderr.contains("error:") && r.stderr.trim().len() > 20,
            "{what}: exit 2 without a clear message:\n{}",
            r.stderr
        ),
        c => panic!("{what}: unexpected exit {c:?}:\n{}{}", r.stdout, r.stderr),
    }
}

fn cli(args: &[&str], file: &Path) -> Command {
    let mut c = Command::new(dxtrace_bin());
    c.current_dir(repo_root()).args(args).arg(file);
    c
}

#[test]
fn damaged_samples_get_clear_errors_from_the_binary_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(60);
    let mut files = Vec::new();
    for (si, sample) in samples().into_iter().enumerate() {
        let stem = sample.file_stem().unwrap().to_string_lossy().into_owned();
        for v in variants(&sample, 0x9e37_79b9 + si as u64, 400, 60) {
            if !v.cli {
                continue;
            }
            let f = dir.path().join(format!("{stem}--{}.dxtrace", v.name));
            std::fs::write(&f, &v.bytes).unwrap();
            let what = format!("{stem} {}", v.name);

            let info = run_bounded(cli(&["info", "--json"], &f), limit);
            check_ran(&info, &format!("info {what}"));
            if let Some(want) = v.expect_records {
                // everything intact before the cut is still read
                let j: Value = serde_json::from_str(&info.stdout)
                    .unwrap_or_else(|e| panic!("info --json {what}: {e}: {}", info.stdout));
                assert_eq!(j["total_records"], want, "info {what}: records recovered");
                assert_eq!(j["footer"], false, "info {what}: the footer is gone");
            }
            check_ran(
                &run_bounded(cli(&["stats", "--json"], &f), limit),
                &format!("stats {what}"),
            );
            let replay = run_bounded(
                cli(&["replay", "--target", "emulator", "--json"], &f),
                limit,
            );
            check_ran(&replay, &format!("replay {what}"));
            files.push(f);
        }
    }
    eprintln!("corrupt input: {} variants through the binary", files.len());
    assert!(files.len() > 150, "only {} variants", files.len());
    serve_all(dir.path(), &files);
}

/// One `dxtrace serve` over every damaged file: the library, each trace's overview,
/// timeline API and first events are answered (2xx, or 4xx/5xx with a message), and the
/// server is still up at the end.
fn serve_all(dir: &Path, files: &[PathBuf]) {
    let mut child = Command::new(dxtrace_bin())
        .current_dir(repo_root())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--no-upload",
            "--threads",
            "1",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dxtrace serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let err = child.stderr.take().unwrap();
    let mut server = Kill(child);
    let (tx, rx) = mpsc::channel();
    let log = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dxtrace serve printed no URL");
    let addr = addr.trim_end_matches('/').to_string();

    let (st, body) = http_get(&addr, "/api/traces");
    assert_eq!(st, 200, "library API: {body}");
    let lib: Value = serde_json::from_str(&body).expect("library JSON");
    let keys: Vec<String> = lib
        .as_array()
        .or_else(|| lib["traces"].as_array())
        .expect("library lists traces")
        .iter()
        .filter_map(|t| t["key"].as_str().map(|k| k.replace('/', "%2F")))
        .collect();
    assert_eq!(keys.len(), files.len(), "every damaged file is listed");
    for key in &keys {
        for path in [
            format!("/traces/{key}"),
            format!("/api/traces/{key}"),
            format!("/api/traces/{key}/timeline"),
            format!("/traces/{key}/timeline"),
            format!("/api/traces/{key}/events/0/0"),
            format!("/api/traces/{key}/search?q=CREATE"),
        ] {
            let (st, body) = http_get(&addr, &path);
            assert!(
                (200..300).contains(&st) || ((400..600).contains(&st) && body.len() > 10),
                "GET {path}: {st} {body}"
            );
            assert!(!body.contains("panicked"), "GET {path}: {body}");
        }
    }
    let (st, _) = http_get(&addr, "/");
    assert_eq!(
        st, 200,
        "the server still answers after every damaged trace"
    );
    let _ = server.0.kill();
    let _ = server.0.wait();
    drop(server);
    let log = log.join().unwrap();
    assert!(!log.contains("panicked"), "server log:\n{log}");
}

/// A minimal HTTP/1.1 GET (Connection: close): status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}
