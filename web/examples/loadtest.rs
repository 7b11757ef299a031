//! Load test of the web server from a second process on loopback (figures for
//! BENCHMARKS.md): REQUESTS tile / API requests with CONCURRENCY of them in flight at
//! once, each on its own connection, against a big synthetic trace; prints errors and
//! latency percentiles. Bounded: at most 120 s of requests, then whatever is left counts
//! as errors.
//!
//! `cargo run --release -p web --example loadtest -- [IOCTLS] [CONCURRENCY] [REQUESTS]`
//! (defaults 10,000,000 / 1000 / 10000; the trace is /tmp/dxtrace-bench-<IOCTLS>.dxtrace,
//! shared with the `bench` example, its index cached in /tmp/dxtrace-loadtest-cache).
//!
//! The server is this same binary re-run as `--server PATH`: it loads the index (from
//! the cache after the first run), prints its address and serves until its stdin closes.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn raise_fd_limit() {
    // 1000 concurrent connections need more than the usual 1024 soft limit
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn server(path: PathBuf) {
    raise_fd_limit();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut opts = web::ServeOptions::new(vec![path.clone()]);
        opts.cache_dir = Some(std::env::temp_dir().join("dxtrace-loadtest-cache"));
        let b = web::bind(&opts, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        let key = b.state().catalogue()[0].0.clone();
        let t = Instant::now();
        let l = b.state().load(&key).await.expect("load");
        eprintln!(
            "server: index of {key} {:?} in {:.2} s",
            l.origin,
            t.elapsed().as_secs_f64()
        );
        println!("LISTENING {} {}", b.local_addr(), web::fmt::enc(&key));
        std::io::stdout().flush().unwrap();
        b.run(async {
            // stop when the parent closes our stdin
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            })
            .await;
        })
        .await
        .expect("serve");
    });
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn get(addr: &str, path: &str) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status: {}", head.lines().next().unwrap_or("")));
    }
    Ok(())
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--server") {
        return server(PathBuf::from(&args[1]));
    }
    let num = |i: usize, d: u64| -> u64 {
        args.get(i)
            .map(|s| s.replace('_', "").parse().expect("a number"))
            .unwrap_or(d)
    };
    let (n, conc, total) = (num(0, 10_000_000), num(1, 1000), num(2, 10_000));
    let path = std::env::temp_dir().join(format!("dxtrace-bench-{n}.dxtrace"));
    if !path.exists() {
        generate(&path, n);
    }
    raise_fd_limit();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--server")
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("server address");
    let mut it = line.split_whitespace().skip(1);
    let addr: Arc<str> = it.next().expect("LISTENING ADDR KEY").into();
    let key = it.next().expect("key").to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let t_all = Instant::now();
    let (lat, errors) = rt.block_on(async {
        let span = span_of(&addr, &key).await;
        let sem = Arc::new(tokio::sync::Semaphore::new(conc as usize));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut tasks = Vec::with_capacity(total as usize);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for k in 0..total {
            // a mix: mostly tiles at random zoom, some overview-free API calls
            let path = match k % 10 {
                0 => format!("/api/traces/{key}/events/0/{}", rnd() % 1000),
                1 => format!("/api/traces/{key}/search?name=LOCK2&limit=50"),
                2 => "/api/traces".to_string(),
                _ => {
                    let w = (10_000f64
                        * (span as f64 / 10_000f64).powf((rnd() % 1000) as f64 / 1000.0))
                        as u64;
                    let t0 = rnd() % span.saturating_sub(w).max(1);
                    format!(
                        "/api/traces/{key}/timeline?t0={t0}&t1={}&buckets=1500",
                        t0 + w.max(1)
                    )
                }
            };
            let permit = sem.clone().acquire_owned().await.unwrap();
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let _p = permit;
                if Instant::now() > deadline {
                    return Err("deadline passed before the request was sent".to_string());
                }
                let t = Instant::now();
                match tokio::time::timeout_at(deadline.into(), get(&addr, &path)).await {
                    Ok(Ok(())) => Ok(t.elapsed().as_secs_f64() * 1e3),
                    Ok(Err(e)) => Err(format!("{path}: {e}")),
                    Err(_) => Err(format!("{path}: no answer before the deadline")),
                }
            }));
        }
        let mut lat = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(ms) => lat.push(ms),
                Err(e) => errors.push(e),
            }
        }
        (lat, errors)
    });
    let wall = t_all.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib(child.id());
    drop(child.stdin.take());
    let _ = child.wait();
    let mut lat = lat;
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{} requests, {} in flight at once, on {}: {} ok, {} errors",
        total,
        conc,
        path.display(),
        lat.len(),
        errors.len()
    );
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    println!(
        "latency ms (connect + request + full response): p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1}",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "{:.1} s in all, {:.0} requests/s; server peak RSS {:.0} MiB",
        wall,
        total as f64 / wall,
        hwm as f64 / 1024.0
    );
    if !errors.is_empty() {
        std::process::exit(1);
    }
}

async fn span_of(addr: &str, key: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /api/traces/{key}/timeline?buckets=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).expect("timeline JSON");
    v["span_ns"].as_u64().expect("span_ns")
}

fn generate(path: &Path, n: u64) {
    let t = Instant::now();
    traces::synth::write_file(
        path,
        &traces::synth::SynthOptions {
            ioctls: n,
            processes: 4,
            threads: 4,
            ..Default::default()
        },
        &format!("cargo run --release -p web --example loadtest -- {n}"),
        traces::WriterOptions::default(),
    )
    .expect("generate");
    eprintln!(
        "generated {} in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
}
