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
    uploads: PathBuf,
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
        let uploads = dir.path().join("uploads");
        Fixture {
            root,
            uploads,
            _dir: dir,
        }
    })
}

fn state() -> AppState {
    let f = fixture();
    let mut o = ServeOptions::new(vec![f.root.clone()]);
    o.upload_dir = Some(f.uploads.clone());
    o.upload_limit = 64 << 10;
    o.threads = 2;
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
        .collect();
    assert_eq!(keys, ["served/a.dxtrace", "served/sub/b.dxtrace"]);
}

#[tokio::test]
async fn library_shows_facts_once_indexed() {
    let st = state();
    st.load("served/a.dxtrace").await.expect("load");
    let j = get_json(&st, "/api/traces").await;
    let a = &j[0]["facts"];
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
    let total: u64 = j["ioctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3000);
    let first = &j["ioctls"][0];
    assert!(first["p50_ns"].as_u64().unwrap() <= first["p99_ns"].as_u64().unwrap());
    assert!(first["p99_ns"].as_u64().unwrap() <= first["max_ns"].as_u64().unwrap());
    assert!(
        first["name"].as_str().unwrap().starts_with("LX_DX"),
        "driver-core names the synthetic codes: {first}"
    );
    let vm: u64 = j["vmbus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(vm, 3000, "one round trip per synthetic ioctl");
    assert_eq!(j["processes"].as_array().unwrap().len(), 2);
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

#[tokio::test]
async fn replay_says_plainly_it_is_not_available_and_compare_works() {
    let st = state();
    let (s, html) = get(&st, &format!("/traces/{A}/replay")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("not available yet"));
    let (s, body) = send(
        &st,
        Request::post(format!("/api/traces/{A}/replay"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    assert!(body.contains("not available yet"));
    let c = get_json(
        &st,
        "/api/compare?a=served/a.dxtrace&b=served/sub/b.dxtrace",
    )
    .await;
    assert_eq!(c["a_ioctls"], 3000);
    assert_eq!(c["b_ioctls"], 500);
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
async fn uploads_are_checked_limited_and_listed() {
    let st = state();
    let post = |name: &str, body: Vec<u8>| {
        Request::post(format!("/api/upload?name={name}"))
            .body(Body::from(body))
            .unwrap()
    };
    let (s, b) = send(&st, post("big.dxtrace", vec![0u8; 65 << 10])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(!b.is_empty());
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
