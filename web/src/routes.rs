//! Every route of the server, in one place.
//!
//! # Pages (HTML)
//!
//! | route | page |
//! |---|---|
//! | `GET /` | library: traces with size, span, processes, events, drops; upload form |
//! | `GET /traces/{key}` | overview: header facts, ioctls by name, processes, VMBus, drops, integrity |
//! | `GET /traces/{key}/timeline?t0=&t1=&ev=LANE:I` | timeline canvas (deep link: window and selection) |
//! | `GET /traces/{key}/events/{lane}/{i}` | event detail: decoded tree, buffers, hex, VMBus request/reply |
//! | `GET /traces/{key}/search?…` | filter/search form and results |
//! | `GET /traces/{key}/replay` | replay (not available yet, said plainly) and compare form |
//! | `GET /compare?a=KEY&b=KEY` | two traces side by side |
//!
//! # JSON API
//!
//! `{key}` is a trace key from `GET /api/traces`, percent-encoded as one path segment
//! (`samples%2Fsynthetic-dxg.dxtrace`). Times are nanoseconds from the trace's first
//! timestamp unless a field says `_ns` of the monotonic clock. Errors are
//! `{"error": "…", "status": N}` with a 4xx/5xx status.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/traces` | `[{key, size, facts: {span_ns, processes, ioctls, vmbus, records, dropped, source, damaged} \| null, error}]` (facts null until indexed) |
//! | `POST /api/upload?name=NAME.dxtrace` (body: the file) | `{key, size}`; 413 over the limit, 409 if it exists, 400 if not a trace |
//! | `GET /api/traces/{key}` | overview: `header`, `records`, `ioctls`/`vmbus` (`[{name, count, errors, p50_ns, p99_ns, max_ns, bytes}]`), `processes`, `dropped_events`, `dropped_by_reason`, `gaps`, `lanes` |
//! | `GET /api/traces/{key}/timeline?t0=&t1=&buckets=` | tiles: per lane either `spans` `[{i, t, d, c, e}]` or `buckets` `[{b, n, e, i, d, c}]`; `throughput` `{ioctls, bytes, vmbus, errors}` per bucket; `drops`, `gaps`; `io_names`/`vm_names` index `c` |
//! | `GET /api/traces/{key}/events/{lane}/{i}` | `{kind, name, t, d, pid, tid, ioctl: {id, code, fd, ret, ret_rendered, decoded, buffers}, messages: [{dir, t, decoded, hex, span}], caused_by}` |
//! | `GET /api/traces/{key}/search?name=&pid=&tid=&status=&handle=&t0=&t1=&limit=` | `{total, hits: [{lane, i, t, d, name, pid, tid, ret, error}], truncated}` |
//! | `POST /api/traces/{key}/replay` | 501 with the reason until the replayer has a library call |
//! | `GET /api/compare?a=KEY&b=KEY` | `{a_ioctls, b_ioctls, rows, first_divergence: {index, a, b} \| null}` |
//!
//! Static assets are embedded: `GET /static/timeline.js`, `GET /static/style.css`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::error::AppError;
use crate::pages::{event, library, overview, replay, search, timeline};
use crate::state::AppState;

const TIMELINE_JS: &str = include_str!("../static/timeline.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

async fn timeline_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        TIMELINE_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn not_found() -> AppError {
    AppError::NotFound("no such page or API route".into())
}

/// The router over `state`. Tests call `app(state).oneshot(request)` without a socket.
pub fn app(state: AppState) -> Router {
    let upload_limit = state.upload_limit();
    Router::new()
        .route("/", get(library::page))
        .route("/traces/{key}", get(overview::page))
        .route("/traces/{key}/timeline", get(timeline::page))
        .route("/traces/{key}/events/{lane}/{i}", get(event::page))
        .route("/traces/{key}/search", get(search::page))
        .route("/traces/{key}/replay", get(replay::page))
        .route("/compare", get(replay::compare_page))
        .route("/api/traces", get(library::api))
        .route(
            "/api/upload",
            post(library::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/traces/{key}", get(overview::api))
        .route("/api/traces/{key}/timeline", get(timeline::api))
        .route("/api/traces/{key}/events/{lane}/{i}", get(event::api))
        .route("/api/traces/{key}/search", get(search::api))
        .route("/api/traces/{key}/replay", post(replay::api_replay))
        .route("/api/compare", get(replay::api_compare))
        .route("/static/timeline.js", get(timeline_js))
        .route("/static/style.css", get(style_css))
        .fallback(not_found)
        .with_state(state)
}
