//! The web server's request parsing: path parameters (trace keys, lane/index), query
//! strings (time windows, bucket counts, search filters, deep-link selections) and the
//! range checks behind them, driven through the real router (`web::app(..).oneshot`)
//! over a small synthetic trace. Any input may be refused with a 4xx; none may panic or
//! get a 5xx.
//!
//! Input: the first byte picks a route template, the rest (UTF-8) fills it in.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    state: web::AppState,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir");
        let served = dir.path().join("t");
        std::fs::create_dir_all(&served).unwrap();
        traces::synth::write_file(
            &served.join("a.dxtrace"),
            &traces::synth::SynthOptions {
                ioctls: 2000,
                ..Default::default()
            },
            "fuzz web_request",
            traces::WriterOptions::default(),
        )
        .expect("synthetic trace");
        let mut o = web::ServeOptions::new(vec![served]);
        o.cache_dir = None;
        o.threads = 1;
        let state = web::AppState::new(&o).expect("state");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(state.load("t/a.dxtrace")).expect("index");
        Fixture {
            rt,
            state,
            _dir: dir,
        }
    })
}

const K: &str = "t%2Fa.dxtrace";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let uri = match sel % 10 {
        0 => format!("/api/traces/{K}/timeline?{rest}"),
        1 => format!("/api/traces/{K}/search?{rest}"),
        2 => format!("/api/traces/{K}/events/{rest}"),
        3 => format!("/traces/{K}/timeline?{rest}"),
        4 => format!("/api/traces/{rest}"),
        5 => format!("/api/compare?{rest}"),
        6 => format!("/traces/{K}/search?{rest}"),
        7 => format!("/traces/{K}/events/{rest}"),
        8 => format!("/traces/{rest}"),
        _ => format!("/{rest}"),
    };
    // hyper refuses a request line that is not a valid URI before any router sees it
    let Ok(req) = Request::get(uri.as_str()).body(Body::empty()) else {
        return;
    };
    let f = fixture();
    let resp = f
        .rt
        .block_on(web::app(f.state.clone()).oneshot(req))
        .expect("the router is infallible");
    assert!(
        !resp.status().is_server_error(),
        "GET {uri} answered {}",
        resp.status()
    );
});
