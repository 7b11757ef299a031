//! Router tests without a socket (`app(state).oneshot(request)`) and index unit tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::index::{LaneData, TraceIndex};
use crate::state::{AppState, ServeOptions};
use crate::{app, query};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    samples: PathBuf,
    uploads: PathBuf,
    cache: PathBuf,
}

/// One directory for every test: `served/` holds two synthetic traces (different seeds)
/// and a symlink pointing outside; `outside/` holds a trace that must never be served.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("served");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let synth = |p: &Path, seed: u64, n: u64| {
            traces::synth::write_file(
                p,
                &traces::synth::SynthOptions {
                    ioctls: n,
                    seed,
                    ..Default::default()
                },
                "web tests",
                traces::WriterOptions::default(),
            )
            .expect("synth trace");
        };
        synth(&root.join("a.dxtrace"), 1, 3000);
        synth(&root.join("sub/b.dxtrace"), 2, 500);
        synth(&outside.join("secret.dxtrace"), 3, 10);
        std::os::unix::fs::symlink(outside.join("secret.dxtrace"), root.join("escape.dxtrace"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, root.join("outdir")).unwrap();
        // emulator recordings that replay: one cleanly, one with a divergence (a copy
        // whose last recorded return value was altered)
        let samples = dir.path().join("samples");
        std::fs::create_dir_all(&samples).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/samples");
        for f in ["emu-canonical.dxtrace", "emu-faults.dxtrace"] {
            std::fs::copy(src.join(f), samples.join(f)).unwrap();
        }
        write_altered(
            &src.join("emu-canonical.dxtrace"),
            &samples.join("emu-altered.dxtrace"),
        );
        let uploads = dir.path().join("uploads");
        let cache = dir.path().join("cache");
        Fixture {
            root,
            samples,
            uploads,
            cache,
            _dir: dir,
        }
    })
}

/// A copy of the emulator recording `src` whose last ioctl's return value is changed:
/// a replay of it diverges on exactly that call's return value.
fn write_altered(src: &Path, dst: &Path) {
    replayer::capture::write_altered_copy(src, dst).expect("write the altered copy");
}

fn state() -> AppState {
    let f = fixture();
    let mut o = ServeOptions::new(vec![f.root.clone(), f.samples.clone()]);
    o.upload_dir = Some(f.uploads.clone());
    o.upload_limit = 64 << 10;
    o.threads = 2;
    o.cache_dir = Some(f.cache.clone());
    AppState::new(&o).expect("state")
}

async fn send(st: &AppState, req: Request<Body>) -> (StatusCode, String) {
    let resp = app(st.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(st: &AppState, uri: &str) -> (StatusCode, String) {
    send(st, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_json(st: &AppState, uri: &str) -> serde_json::Value {
    let (s, b) = get(st, uri).await;
    assert_eq!(s, StatusCode::OK, "GET {uri}: {b}");
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("GET {uri}: not JSON ({e}): {b}"))
}

const A: &str = "served%2Fa.dxtrace";

#[tokio::test]
async fn library_lists_served_traces_and_never_the_symlink_escape() {
    let st = state();
    let (s, html) = get(&st, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("served/a.dxtrace"), "{html}");
    assert!(html.contains("served/sub/b.dxtrace"));
    assert!(
        !html.contains("escape") && !html.contains("secret"),
        "{html}"
    );
    let j = get_json(&st, "/api/traces").await;
    let keys: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .filter(|k| !k.starts_with("uploads/"))
        .collect();
    assert_eq!(
        keys,
        [
            "samples/emu-altered.dxtrace",
            "samples/emu-canonical.dxtrace",
            "samples/emu-faults.dxtrace",
            "served/a.dxtrace",
            "served/sub/b.dxtrace"
        ]
    );
}

#[tokio::test]
async fn library_shows_facts_once_indexed() {
    let st = state();
    st.load("served/a.dxtrace").await.expect("load");
    let j = get_json(&st, "/api/traces").await;
    let a = &j
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "served/a.dxtrace")
        .unwrap()["facts"];
    assert_eq!(a["ioctls"], 3000);
    assert_eq!(a["processes"], 2);
    assert_eq!(a["source"], "generated");
}

#[tokio::test]
async fn overview_page_and_api() {
    let st = state();
    let (s, html) = get(&st, &format!("/traces/{A}")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("ioctls by name") && html.contains("VMBus commands"));
    let j = get_json(&st, &format!("/api/traces/{A}")).await;
    // the tables are the analysis crate's statistics
    let stats = &j["stats"];
    assert_eq!(stats["schema"], "dxtrace.stats.v1");
    let total: u64 = stats["by_ioctl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3000);
    let first = &stats["by_ioctl"][0];
    let lat = &first["latency"];
    assert!(lat["p50_ns"].as_u64().unwrap() <= lat["p99_ns"].as_u64().unwrap());
    assert!(lat["p99_ns"].as_u64().unwrap() <= lat["max_ns"].as_u64().unwrap());
    assert!(
        first["name"].as_str().unwrap().starts_with("LX_DX"),
        "driver-core names the synthetic codes: {first}"
    );
    let rt: u64 = stats["by_vmbus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["round_trips"].as_u64().unwrap())
        .sum();
    assert_eq!(rt, 3000, "one round trip per synthetic ioctl");
    assert_eq!(stats["by_process"].as_array().unwrap().len(), 2);
    // the page shows the same figures
    let by_ioctl = stats["by_ioctl"].as_array().unwrap();
    let name = by_ioctl[0]["name"].as_str().unwrap();
    let count = by_ioctl[0]["count"].as_u64().unwrap();
    assert!(
        html.contains(&format!("{name}</a></td><td class=\"num\">{count}</td>")),
        "{html}"
    );
    let vm = stats["by_vmbus"][0]["command"].as_str().unwrap();
    assert!(html.contains(&format!("<td>{vm}</td>")), "{html}");
}

#[tokio::test]
async fn timeline_page_and_tiles_at_two_zoom_levels() {
    let st = state();
    let (s, html) = get(&st, &format!("/traces/{A}/timeline?t0=0&t1=1000000&ev=0:1")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("<canvas id=\"timeline\"") && html.contains("data-ev=\"0:1\""));
    // whole trace in 50 buckets: ioctl lanes are dense, so they come as summaries
    let j = get_json(&st, &format!("/api/traces/{A}/timeline?buckets=50")).await;
    let lanes = j["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 5, "4 threads + the global VMBus channel");
    let mut n = 0;
    for l in lanes.iter().filter(|l| l["kind"]["kind"] == "ioctl") {
        assert_eq!(l["mode"], "buckets");
        n += l["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["n"].as_u64().unwrap())
            .sum::<u64>();
    }
    assert_eq!(n, 3000, "every ioctl is in exactly one bucket");
    let io: u64 = j["throughput"]["ioctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(io, 3000);
    // a narrow window: spans
    let j = get_json(
        &st,
        &format!("/api/traces/{A}/timeline?t0=0&t1=100000&buckets=1000"),
    )
    .await;
    assert!(
        j["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mode"] == "spans")
    );
    assert!(
        j["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| !l["spans"].as_array().unwrap().is_empty())
    );
}

#[tokio::test]
async fn event_detail_decodes_the_ioctl_and_links_vmbus() {
    let st = state();
    let j = get_json(&st, &format!("/api/traces/{A}/events/0/3")).await;
    assert_eq!(j["kind"], "ioctl");
    assert!(j["name"].as_str().unwrap().starts_with("LX_DX"), "{j}");
    assert_eq!(j["ioctl"]["decoded"]["known"], true);
    assert!(!j["ioctl"]["buffers"].as_array().unwrap().is_empty());
    let msgs = j["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "request and reply: {j}");
    let (vl, vi) = (
        msgs[0]["span"][0].as_u64().unwrap(),
        msgs[0]["span"][1].as_u64().unwrap(),
    );
    let v = get_json(&st, &format!("/api/traces/{A}/events/{vl}/{vi}")).await;
    assert_eq!(v["kind"], "vmbus");
    assert_eq!(v["caused_by"][0], 0);
    assert_eq!(v["caused_by"][1], 3);
    let (s, html) = get(&st, &format!("/traces/{A}/events/0/3")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("LX_DX") && html.contains("VMBus messages"));
}

#[tokio::test]
async fn search_filters() {
    let st = state();
    let all = get_json(&st, &format!("/api/traces/{A}/search?limit=5000")).await;
    assert_eq!(all["total"], 3000);
    // a limit keeps the earliest hits across every lane and still counts them all
    let few = get_json(&st, &format!("/api/traces/{A}/search?limit=7")).await;
    assert_eq!(few["total"], 3000);
    let key = |h: &serde_json::Value| (h["t"].as_u64().unwrap(), h["lane"].as_u64().unwrap());
    let mut earliest: Vec<_> = all["hits"].as_array().unwrap().iter().map(key).collect();
    earliest.sort();
    let got: Vec<_> = few["hits"].as_array().unwrap().iter().map(key).collect();
    assert_eq!(got, earliest[..7]);
    let by_name = get_json(&st, &format!("/api/traces/{A}/search?name=queryadapter")).await;
    let n = by_name["total"].as_u64().unwrap();
    assert!(n > 0 && n < 3000);
    assert!(
        by_name["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["name"].as_str().unwrap().contains("QUERYADAPTER"))
    );
    let errs = get_json(&st, &format!("/api/traces/{A}/search?status=error")).await;
    let e = errs["total"].as_u64().unwrap();
    assert!(e > 0, "the synthetic trace fails one call in 50");
    let eq = get_json(&st, &format!("/api/traces/{A}/search?status=-22")).await;
    assert_eq!(eq["total"].as_u64().unwrap(), e);
    let pid = get_json(&st, &format!("/api/traces/{A}/search?pid=4000&tid=4001")).await;
    assert!(
        pid["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["pid"] == 4000 && h["tid"] == 4001)
    );
    // the synthetic generator writes 0x40000000 + id into the last word of struct_out
    let h = get_json(&st, &format!("/api/traces/{A}/search?handle=0x40000007")).await;
    assert_eq!(h["total"], 1, "{h}");
    let (s, html) = get(&st, &format!("/traces/{A}/search?name=LOCK2")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("matching calls"));
}

/// Polls the replay status of `key` until it has ended (bounded, so a hung replay fails
/// the test instead of hanging it).
async fn replay_until_done(st: &AppState, key: &str) -> serde_json::Value {
    let href = crate::fmt::enc(key);
    let (s, b) = send(
        st,
        Request::post(format!("/api/traces/{href}/replay"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let started: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(
        ["queued", "running", "done"].contains(&started["state"].as_str().unwrap()),
        "{started}"
    );
    for _ in 0..1200 {
        let j = get_json(st, &format!("/api/traces/{href}/replay")).await;
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the replay of {key} did not end within a minute");
}

#[tokio::test]
async fn replay_from_the_api_clean_divergent_and_failed() {
    let st = state();
    let never = get_json(&st, "/api/traces/samples%2Femu-canonical.dxtrace/replay").await;
    assert_eq!(never["state"], "idle");

    let clean = replay_until_done(&st, "samples/emu-canonical.dxtrace").await;
    assert_eq!(clean["state"], "done", "{clean}");
    let r = &clean["result"];
    assert_eq!(r["target"], "emulator");
    assert!(r["calls"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["compared"], r["calls"]);
    assert_eq!(r["divergences_total"], 0, "{r}");
    assert_eq!(clean["calls_done"], r["calls"]);

    // the fault sample replays cleanly too: the emulator takes its fault plan from the header
    let faults = replay_until_done(&st, "samples/emu-faults.dxtrace").await;
    assert_eq!(faults["result"]["divergences_total"], 0, "{faults}");

    let div = replay_until_done(&st, "samples/emu-altered.dxtrace").await;
    let r = &div["result"];
    assert_eq!(r["divergences_total"], 1, "{div}");
    let d = &r["divergences"][0];
    assert_eq!(d["field"], "return");
    // the divergent call links to its event in this trace
    let (lane, i) = (
        d["event"][0].as_u64().unwrap(),
        d["event"][1].as_u64().unwrap(),
    );
    let ev = get_json(
        &st,
        &format!("/api/traces/samples%2Femu-altered.dxtrace/events/{lane}/{i}"),
    )
    .await;
    assert_eq!(ev["name"], d["ioctl"]);
    let (s, html) = get(&st, "/traces/samples%2Femu-altered.dxtrace/replay").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains("1 divergence.") && html.contains("id=\"divergences\""),
        "{html}"
    );
    assert!(html.contains(&format!(
        "/traces/samples%2Femu-altered.dxtrace/events/{lane}/{i}"
    )));

    // a synthetic trace was never made on a driver: the replay refuses it, said plainly
    let bad = replay_until_done(&st, "served/a.dxtrace").await;
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("synthetic"),
        "{bad}"
    );
    let (_, html) = get(&st, &format!("/traces/{A}/replay")).await;
    assert!(html.contains("id=\"replay-error\""), "{html}");

    // the page's button: POST, then back to the page
    let (s, _) = send(
        &st,
        Request::post("/traces/samples%2Femu-canonical.dxtrace/replay")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    expect_err(
        &st,
        "/api/traces/served%2F..%2Fx/replay",
        StatusCode::BAD_REQUEST,
        "'..'",
    )
    .await;
}

#[tokio::test]
async fn compare_two_traces_side_by_side() {
    let st = state();
    let c = get_json(
        &st,
        "/api/compare?a=served/a.dxtrace&b=served/sub/b.dxtrace",
    )
    .await;
    assert_eq!(c["a_ioctls"], 3000);
    assert_eq!(c["b_ioctls"], 500);
    let rows = c["rows"].as_array().unwrap();
    let a_sum: u64 = rows.iter().map(|r| r["a_count"].as_u64().unwrap()).sum();
    let b_sum: u64 = rows.iter().map(|r| r["b_count"].as_u64().unwrap()).sum();
    assert_eq!((a_sum, b_sum), (3000, 500));
    assert!(
        rows.iter()
            .all(|r| r["a_p50_ns"].as_u64() <= r["a_p99_ns"].as_u64())
    );
    assert!(c["first_divergence"].is_object(), "different seeds diverge");
    let same = get_json(&st, "/api/compare?a=served/a.dxtrace&b=served/a.dxtrace").await;
    assert!(same["first_divergence"].is_null());
    let (s, html) = get(&st, "/compare?a=served/a.dxtrace&b=served/sub/b.dxtrace").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("First divergence"));
}

#[tokio::test]
async fn static_assets() {
    let st = state();
    let (s, js) = get(&st, "/static/timeline.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(js.contains("dxtrace"));
    let (s, _) = get(&st, "/static/style.css").await;
    assert_eq!(s, StatusCode::OK);
}

async fn expect_err(st: &AppState, uri: &str, want: StatusCode, msg: &str) {
    let (s, b) = get(st, uri).await;
    assert_eq!(s, want, "GET {uri}: {b}");
    assert!(b.contains(msg), "GET {uri}: {b:?} lacks {msg:?}");
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_message() {
    let st = state();
    use StatusCode as S;
    expect_err(
        &st,
        "/api/traces/served%2Fnope.dxtrace",
        S::NOT_FOUND,
        "no trace",
    )
    .await;
    expect_err(&st, "/api/traces/nope", S::NOT_FOUND, "no trace").await;
    expect_err(
        &st,
        "/api/traces/served%2F..%2F..%2Fetc%2Fpasswd",
        S::BAD_REQUEST,
        "'..'",
    )
    .await;
    expect_err(
        &st,
        "/traces/..%2Fserved%2Fa.dxtrace",
        S::BAD_REQUEST,
        "'..'",
    )
    .await;
    expect_err(
        &st,
        "/api/traces/%2Fetc%2Fpasswd",
        S::BAD_REQUEST,
        "absolute",
    )
    .await;
    expect_err(
        &st,
        "/api/traces/served%2Fescape.dxtrace",
        S::FORBIDDEN,
        "outside",
    )
    .await;
    expect_err(
        &st,
        "/api/traces/served%2Foutdir%2Fsecret.dxtrace",
        S::FORBIDDEN,
        "outside",
    )
    .await;
    expect_err(
        &st,
        "/traces/served%2Fescape.dxtrace/timeline",
        S::FORBIDDEN,
        "outside",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/timeline?t0=500&t1=100"),
        S::BAD_REQUEST,
        "empty time window",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/timeline?t0=999999999999"),
        S::BAD_REQUEST,
        "after the end",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/timeline?buckets=0"),
        S::BAD_REQUEST,
        "buckets",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/timeline?t0=abc"),
        S::BAD_REQUEST,
        "t0",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/events/0/99999999"),
        S::NOT_FOUND,
        "no event",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/events/99/0"),
        S::NOT_FOUND,
        "no lane",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/events/x/0"),
        S::BAD_REQUEST,
        "",
    )
    .await;
    expect_err(
        &st,
        &format!("/api/traces/{A}/search?status=bogus"),
        S::BAD_REQUEST,
        "not a number",
    )
    .await;
    expect_err(
        &st,
        &format!("/traces/{A}/timeline?ev=zz"),
        S::BAD_REQUEST,
        "LANE:INDEX",
    )
    .await;
    expect_err(
        &st,
        "/api/compare?a=served/a.dxtrace&b=../x",
        S::BAD_REQUEST,
        "'..'",
    )
    .await;
    expect_err(&st, "/no/such/page", S::NOT_FOUND, "no such page").await;
}

#[tokio::test]
async fn nothing_outside_the_served_paths_is_readable() {
    let st = state();
    // every way of spelling a way out: refused with 4xx, and never the file's bytes
    let secret = std::fs::read(fixture().root.join("../outside/secret.dxtrace")).unwrap();
    let marker = String::from_utf8_lossy(&secret[..16]).into_owned();
    for uri in [
        "/api/traces/served%2F..%2F..%2Fetc%2Fpasswd",
        "/api/traces/served%2F..%2Foutside%2Fsecret.dxtrace",
        "/api/traces/%2E%2E%2Foutside%2Fsecret.dxtrace",
        "/api/traces/served%252F..%252Foutside%252Fsecret.dxtrace",
        "/api/traces/served%2F.%2Fa.dxtrace",
        "/api/traces/served%2F%2Fa.dxtrace",
        "/api/traces/served%5C..%5Coutside%5Csecret.dxtrace",
        "/api/traces/served%2Fa.dxtrace%00",
        "/api/traces/%2Fproc%2Fself%2Fenviron",
        "/api/traces/served%2Fescape.dxtrace",
        "/api/traces/served%2Foutdir%2Fsecret.dxtrace",
        "/api/traces/served%2Foutdir/timeline",
        "/api/traces/served%2Fescape.dxtrace/events/0/0",
        "/api/traces/served%2Fescape.dxtrace/search",
        "/api/traces/served%2Fescape.dxtrace/replay",
        "/api/compare?a=served/a.dxtrace&b=served/escape.dxtrace",
        "/api/compare?a=served/outdir/secret.dxtrace&b=served/a.dxtrace",
        "/traces/served%2Fescape.dxtrace",
        "/traces/served%2Foutdir%2Fsecret.dxtrace/search",
        "/static/..%2F..%2FCargo.toml",
        "/static/../../Cargo.toml",
        "/../../etc/passwd",
        "/served/a.dxtrace",
    ] {
        let (s, b) = get(&st, uri).await;
        assert!(s.is_client_error(), "GET {uri}: {s} {b}");
        assert!(!b.is_empty(), "GET {uri}: 4xx without a message");
        assert!(!b.contains(&marker), "GET {uri} leaked the file");
    }
    // a symlink added inside the root after start that points outside: still refused
    let late = fixture().root.join("late-link.dxtrace");
    let _ = std::fs::remove_file(&late);
    std::os::unix::fs::symlink(fixture().root.join("../outside/secret.dxtrace"), &late).unwrap();
    expect_err(
        &st,
        "/api/traces/served%2Flate-link.dxtrace",
        StatusCode::FORBIDDEN,
        "outside",
    )
    .await;
    std::fs::remove_file(&late).unwrap();
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413_with_a_message() {
    let st = state();
    // the API takes no body but uploads: 64 KiB is the limit
    let (s, b) = send(
        &st,
        Request::post(format!("/api/traces/{A}/replay"))
            .header("content-length", "200000")
            .body(Body::from(vec![b'x'; 200_000]))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(
        b.contains("request body is larger than the server's limit"),
        "{b}"
    );
}

/// A request body that never arrives.
struct Stalled;

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_request_over_the_time_limit_gets_408_with_a_message() {
    let f = fixture();
    let mut o = ServeOptions::new(vec![f.root.clone()]);
    o.upload_dir = Some(f.uploads.clone());
    o.cache_dir = None;
    o.request_timeout = std::time::Duration::from_millis(300);
    let st = AppState::new(&o).unwrap();
    let (s, b) = send(
        &st,
        Request::post("/api/upload?name=slow.dxtrace")
            .header("content-length", "1000")
            .body(Body::new(Stalled))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT, "{b}");
    assert!(b.contains("took longer than 0.3 s"), "{b}");
    assert!(!f.uploads.join("slow.dxtrace").exists());
}

#[tokio::test]
async fn slow_clients_do_not_block_others_and_silent_ones_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    let mut o = ServeOptions::new(vec![f.root.clone()]);
    o.cache_dir = None;
    o.idle_timeout = std::time::Duration::from_secs(1);
    let b = crate::bind(&o, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = b.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(b.run(async {
        let _ = stop_rx.await;
    }));
    // 16 clients stuck mid-request-line, 16 mid-headers, 8 that never send a byte
    let mut slow = Vec::new();
    for k in 0..40 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        match k % 5 {
            0 | 1 => c.write_all(b"GET /api/tra").await.unwrap(),
            2 | 3 => c
                .write_all(b"GET /api/traces HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
                .await
                .unwrap(),
            _ => {}
        }
        slow.push(c);
    }
    // a normal client is served meanwhile, several times over
    for _ in 0..5 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /api/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).await.unwrap();
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("served/a.dxtrace"));
    }
    // and the stalled connections are closed by the server once idle for 1 s
    for (k, mut c) in slow.into_iter().enumerate() {
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("slow connection {k} still open after 30 s"));
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "slow connection {k} got an answer instead of being closed: {:?}",
            r.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        );
    }
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

fn copy_trace(dir: &Path, seed: u64, n: u64) -> PathBuf {
    let p = dir.join("t.dxtrace");
    traces::synth::write_file(
        &p,
        &traces::synth::SynthOptions {
            ioctls: n,
            seed,
            ..Default::default()
        },
        "web cache test",
        traces::WriterOptions::default(),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn index_cache_is_used_on_restart_and_rebuilt_when_stale_or_corrupt() {
    use crate::state::IndexOrigin;
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let cache_dir = dir.path().join("cache");
    let trace = copy_trace(&served, 7, 2000);
    let start = || {
        let mut o = ServeOptions::new(vec![served.clone()]);
        o.cache_dir = Some(cache_dir.clone());
        o.threads = 2;
        AppState::new(&o).unwrap()
    };
    const K: &str = "served/t.dxtrace";
    const KE: &str = "served%2Ft.dxtrace";
    let answers = |st: AppState| async move {
        let mut out = Vec::new();
        for q in [
            "",
            "/timeline?buckets=100",
            "/timeline?t0=1000&t1=200000&buckets=700",
            "/search?status=error&limit=5000",
            "/events/1/17",
        ] {
            out.push(get_json(&st, &format!("/api/traces/{KE}{q}")).await);
        }
        out
    };
    let origin = |st: &AppState| {
        let st = st.clone();
        async move { st.load(K).await.unwrap().origin }
    };

    let first = start();
    assert_eq!(origin(&first).await, IndexOrigin::Built);
    let built = answers(first.clone()).await;
    assert_eq!(built[0]["index_origin"], "built");
    let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "an index and a statistics file: {files:?}");

    // a restart loads from the cache, and answers exactly as the built index did
    let second = start();
    assert_eq!(origin(&second).await, IndexOrigin::Cache);
    let cached = answers(second).await;
    assert_eq!(cached[0]["index_origin"], "cache");
    for (a, b) in built.iter().zip(&cached) {
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("index_origin");
                o.remove("index_load_ms");
            }
            v
        };
        assert_eq!(strip(a), strip(b));
    }

    // a damaged cache file is rebuilt (and rewritten), never trusted
    let index_file = crate::cache::file_for(&cache_dir, "index", &trace.canonicalize().unwrap());
    let mut bytes = std::fs::read(&index_file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&index_file, &bytes).unwrap();
    assert_eq!(origin(&start()).await, IndexOrigin::Built);
    assert_eq!(origin(&start()).await, IndexOrigin::Cache);
    std::fs::write(&index_file, &bytes[..bytes.len() / 3]).unwrap();
    assert_eq!(origin(&start()).await, IndexOrigin::Built);
    std::fs::write(&index_file, b"garbage").unwrap();
    assert_eq!(origin(&start()).await, IndexOrigin::Built);

    // a changed trace invalidates it
    std::thread::sleep(std::time::Duration::from_millis(20));
    copy_trace(&served, 8, 1200);
    let third = start();
    assert_eq!(origin(&third).await, IndexOrigin::Built);
    let j = get_json(&third, &format!("/api/traces/{KE}")).await;
    assert_eq!(
        j["stats"]["totals"]["ioctls"], 1200,
        "statistics follow the new trace"
    );
    assert_eq!(origin(&start()).await, IndexOrigin::Cache);
}

#[tokio::test]
async fn uploads_are_checked_limited_and_listed() {
    let st = state();
    let post = |name: &str, body: Vec<u8>| {
        Request::post(format!("/api/upload?name={name}"))
            .body(Body::from(body))
            .unwrap()
    };
    let (s, b) = send(&st, post("big.dxtrace", vec![0u8; 65 << 10])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(
        b.contains("upload is larger than the server's limit of 64.0 KiB"),
        "{b}"
    );
    let (s, b) = send(&st, post("..%2Fx.dxtrace", vec![1])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = send(&st, post("junk.dxtrace", b"not a trace".to_vec())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("not a readable .dxtrace"));
    let bytes = std::fs::read(fixture().root.join("sub/b.dxtrace")).unwrap();
    assert!(bytes.len() < 64 << 10, "fixture fits the test limit");
    let name = format!("up-{}.dxtrace", std::process::id());
    let (s, b) = send(&st, post(&name, bytes.clone())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let key = format!("uploads/{name}");
    assert!(b.contains(&key));
    let (s, _) = send(&st, post(&name, bytes)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let j = get_json(&st, "/api/traces").await;
    assert!(
        j.as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == key.as_str())
    );
    let _ = get_json(&st, &format!("/api/traces/{}", crate::fmt::enc(&key))).await;
}

fn index_of(p: &Path) -> (traces::Reader, TraceIndex) {
    let r = traces::Reader::open(p).unwrap();
    let ix = TraceIndex::build(&r, 2);
    (r, ix)
}

#[test]
fn pyramid_answers_match_raw_aggregation() {
    let (_r, ix) = index_of(&fixture().root.join("a.dxtrace"));
    let span = ix.end - ix.start;
    for buckets in [1u32, 7, 64, 1000] {
        for (t0, t1) in [
            (0, span),
            (span / 3, span / 2),
            (span / 10, span / 10 + 50_000),
        ] {
            let tl = query::timeline(&ix, t0, t1, buckets).unwrap();
            for (lt, lane) in tl.lanes.iter().zip(&ix.lanes) {
                let a0 = ix.start + tl.t0;
                let a1 = ix.start + tl.t1;
                let want = lane.ts().iter().filter(|&&t| t >= a0 && t < a1).count() as u64;
                if lt.mode == "buckets" {
                    let got: u64 = lt.buckets.iter().map(|b| b.n as u64).sum();
                    // pyramid buckets straddling the window edges may add a few events
                    let slack = want / 10 + 64;
                    assert!(
                        got.abs_diff(want) <= slack,
                        "{buckets} {t0}-{t1}: {got} vs {want}"
                    );
                } else {
                    assert!(lt.spans.len() as u64 >= want);
                }
            }
        }
    }
    assert!(ix.heap_bytes() > 0);
}

#[test]
fn every_event_is_reachable_through_the_lanes() {
    let (_r, ix) = index_of(&fixture().root.join("a.dxtrace"));
    let io: usize = ix
        .lanes
        .iter()
        .filter(|l| matches!(l.data, LaneData::Io(_)))
        .map(|l| l.len())
        .sum();
    assert_eq!(io, 3000);
    for l in &ix.lanes {
        assert!(l.ts().is_sorted(), "lane {} sorted", l.label);
    }
    assert!(ix.dropped_events > 0 || ix.drops.is_empty());
}

/// The index's columns, counts and damage list, checked against the same trace read back
/// as owned records (`Reader::records`, a separate decode path from the index build's
/// borrowed one): every ioctl with its timing, return value and buffer bytes in its
/// thread's lane, every VMBus request or host packet in its channel's lane, the record
/// kinds, truncated buffers, processes and drops. Then one frame is damaged: it becomes
/// one gap and the other frames' events are all still there.
#[test]
fn index_columns_match_the_records_read_back_owned() {
    use std::collections::BTreeMap;
    use traces::{BUF_TRUNCATED, BUF_UNREADABLE, Record, VmbusDir};

    type Io = BTreeMap<(u32, u32), Vec<(u64, u32, i64, u32, u64)>>;
    /// (ts, duration to the reply, bytes of request and reply) of each request or packet.
    type Vm = Vec<(u64, u32, u32)>;
    /// What the index should hold, from owned records of the frames not in `skip`.
    fn expected(r: &traces::Reader, skip: Option<usize>) -> (Io, BTreeMap<String, u64>, u64, Vm) {
        let (mut io, mut kinds, mut incomplete) = (Io::new(), BTreeMap::new(), 0);
        let (mut requests, mut replies) = (Vec::new(), BTreeMap::new());
        for (i, f) in r.frames().iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            for rec in r.read_frame(f).unwrap() {
                *kinds.entry(rec.kind_name().to_string()).or_insert(0) += 1;
                match rec {
                    Record::Ioctl(x) => {
                        if x.buffers
                            .iter()
                            .any(|b| b.flags & (BUF_TRUNCATED | BUF_UNREADABLE) != 0)
                        {
                            incomplete += 1;
                        }
                        io.entry((x.pid, x.tid)).or_default().push((
                            x.ts_enter,
                            x.ts_exit.saturating_sub(x.ts_enter) as u32,
                            x.ret,
                            x.payload_bytes() as u32,
                            x.id,
                        ));
                    }
                    Record::Vmbus(m) if m.dir == VmbusDir::HostReply => {
                        replies.insert((m.channel, m.request_id), (m.ts, m.len));
                    }
                    Record::Vmbus(m) => requests.push(m),
                    _ => {}
                }
            }
        }
        for v in io.values_mut() {
            v.sort();
        }
        let mut vm: Vm = requests
            .iter()
            .map(|m| {
                let sync = m.dir == VmbusDir::GuestToHost && !m.is_async;
                match replies.get(&(m.channel, m.request_id)) {
                    Some(&(ts, len)) if sync => ((ts - m.ts) as u32, (m.len + len) as u32),
                    _ => (0, m.len as u32),
                }
            })
            .zip(&requests)
            .map(|((dur, bytes), m)| (m.ts, dur, bytes))
            .collect();
        vm.sort();
        (io, kinds, incomplete, vm)
    }
    fn got(ix: &TraceIndex) -> (Io, Vm) {
        let (mut io, mut vm) = (Io::new(), Vm::new());
        for l in &ix.lanes {
            match (&l.kind, &l.data) {
                (crate::index::LaneKind::Ioctl { pid, tid }, LaneData::Io(c)) => {
                    let v = io.entry((*pid, *tid)).or_default();
                    for i in 0..c.ts.len() {
                        v.push((c.ts[i], c.dur[i], c.ret[i], c.bytes[i], c.id[i]));
                    }
                    v.sort();
                }
                (_, LaneData::Vm(c)) => {
                    vm.extend((0..c.ts.len()).map(|i| (c.ts[i], c.dur[i], c.bytes[i])))
                }
                _ => panic!("lane {} holds the wrong kind of data", l.label),
            }
        }
        vm.sort();
        (io, vm)
    }

    let dir = tempfile::tempdir().unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/samples");
    let mut checked_vm = 0;
    for name in [
        "emu-canonical.dxtrace",
        "emu-faults.dxtrace",
        "synthetic-dxg.dxtrace",
    ] {
        // rewritten in small frames, so VMBus replies also cross frame boundaries and
        // one frame can be damaged
        let src = traces::Reader::open(samples.join(name)).unwrap();
        let path = dir.path().join(format!("small-{name}"));
        let mut w = traces::Writer::create(
            &path,
            src.header(),
            traces::WriterOptions {
                frame_target_bytes: 2048,
                ..Default::default()
            },
        )
        .unwrap();
        for rec in src.records() {
            w.push(&rec.unwrap()).unwrap();
        }
        w.finish().unwrap();
        let (r, ix) = index_of(&path);
        let (io, kinds, incomplete, vm) = expected(&r, None);
        let (gio, gvm) = got(&ix);
        assert_eq!(gio, io, "{name}: ioctl lanes");
        assert_eq!(gvm, vm, "{name}: VMBus lane events");
        assert_eq!(ix.records, kinds, "{name}: record kinds");
        assert_eq!(
            ix.incomplete_buffers, incomplete,
            "{name}: incomplete buffers"
        );
        assert!(ix.gaps.is_empty(), "{name}: {:?}", ix.gaps);
        checked_vm += vm.len();

        // damage the middle of the second frame's compressed payload
        let frames = r.frames().to_vec();
        assert!(frames.len() >= 3, "{name}: {} frames", frames.len());
        let f = &frames[1];
        let mut bytes = std::fs::read(&path).unwrap();
        let at = f.offset as usize + traces::frame::FRAME_HEADER_LEN + f.payload_len as usize / 2;
        bytes[at] ^= 0x5a;
        let damaged = dir.path().join(name);
        std::fs::write(&damaged, &bytes).unwrap();
        let (r2, ix2) = index_of(&damaged);
        assert_eq!(ix2.gaps.len(), 1, "{name}: {:?}", ix2.gaps);
        assert_eq!(ix2.gaps[0].offset, f.offset, "{name}");
        let (io, kinds, _, vm) = expected(&r2, Some(1));
        let (gio, gvm) = got(&ix2);
        assert_eq!(gio, io, "{name} damaged: ioctl lanes");
        assert_eq!(gvm, vm, "{name} damaged: VMBus lane events");
        assert_eq!(ix2.records, kinds, "{name} damaged: record kinds");
    }
    assert!(checked_vm > 0, "no sample had VMBus messages");
}
