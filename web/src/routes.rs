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
//! | `GET /traces/{key}/replay` | replay against the emulator: run button, progress, divergence report; compare form |
//! | `POST /traces/{key}/replay` | starts a replay (the page's button), redirects to the page |
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
//! | `GET /api/traces/{key}` | overview: `header`, `records`, `stats` (the `analysis` statistics, schema `dxtrace.stats.v1`: `totals`, `by_ioctl`, `by_process`, `by_thread`, `by_vmbus`, `throughput`), `dropped_events`, `dropped_by_reason`, `gaps`, `lanes`, `index_origin` (`built` \| `cache`), `index_load_ms` |
//! | `GET /api/traces/{key}/timeline?t0=&t1=&buckets=` | tiles: per lane either `spans` `[{i, t, d, c, e}]` or `buckets` `[{b, n, e, i, d, c}]`; `throughput` `{ioctls, bytes, vmbus, errors}` per bucket; `drops`, `gaps`; `io_names`/`vm_names` index `c` |
//! | `GET /api/traces/{key}/events/{lane}/{i}` | `{kind, name, t, d, pid, tid, ioctl: {id, code, fd, ret, ret_rendered, decoded, buffers}, messages: [{dir, t, decoded, hex, span}], caused_by}` |
//! | `GET /api/traces/{key}/search?name=&pid=&tid=&status=&handle=&t0=&t1=&limit=` | `{total, hits: [{lane, i, t, d, name, pid, tid, ret, error}], truncated}` |
//! | `POST /api/traces/{key}/replay` | 202, starts a replay against the in-process emulator (or joins the running one): the status below |
//! | `GET /api/traces/{key}/replay` | `{key, state: idle\|queued\|running\|done\|failed, calls_done, calls_total, error, result: {target, calls, compared, fd_events, divergences_total, divergences: [{call, id, ioctl, field, recorded, replayed, event: [lane, i] \| null}], elapsed_s, recorded_ioctl_ns, replayed_ioctl_ns, notes} \| null}` |
//! | `GET /api/compare?a=KEY&b=KEY` | `{a_ioctls, b_ioctls, rows, first_divergence: {index, a, b} \| null}` |
//!
//! Static assets are embedded: `GET /static/timeline.js`, `GET /static/style.css`.
//!
//! # Limits
//!
//! Request bodies are limited to [`crate::ServeOptions::body_limit`] (uploads to
//! [`crate::ServeOptions::upload_limit`]) and answered 413 past it; a request taking
//! longer than [`crate::ServeOptions::request_timeout`] is answered 408 (index builds and
//! replays go on in the background). Both come back as the usual JSON error with a
//! message. A connection silent for [`crate::ServeOptions::idle_timeout`] is closed
//! ([`crate::serve`]).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::AppError;
use crate::fmt;
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

/// The limit layers answer 413 and 408 with a bare body; say what the limit is, in the
/// server's usual JSON error.
async fn explain_limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let upload = req.uri().path() == "/api/upload";
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    match resp.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            let (what, limit) = if upload {
                ("upload", state.upload_limit())
            } else {
                ("request body", state.body_limit())
            };
            AppError::TooLarge(format!(
                "the {what} is larger than the server's limit of {}",
                fmt::bytes(limit as u64)
            ))
            .into_response()
        }
        StatusCode::REQUEST_TIMEOUT => AppError::Timeout(format!(
            "the request took longer than {} s; an index build or replay it started goes on, retry later",
            state.request_timeout().as_secs_f64()
        ))
        .into_response(),
        _ => resp,
    }
}

/// The router over `state`. Tests call `app(state).oneshot(request)` without a socket.
pub fn app(state: AppState) -> Router {
    let upload_limit = state.upload_limit();
    let pages_and_api = Router::new()
        .route("/", get(library::page))
        .route("/traces/{key}", get(overview::page))
        .route("/traces/{key}/timeline", get(timeline::page))
        .route("/traces/{key}/events/{lane}/{i}", get(event::page))
        .route("/traces/{key}/search", get(search::page))
        .route(
            "/traces/{key}/replay",
            get(replay::page).post(replay::form_start),
        )
        .route("/compare", get(replay::compare_page))
        .route("/api/traces", get(library::api))
        .route("/api/traces/{key}", get(overview::api))
        .route("/api/traces/{key}/timeline", get(timeline::api))
        .route("/api/traces/{key}/events/{lane}/{i}", get(event::api))
        .route("/api/traces/{key}/search", get(search::api))
        .route(
            "/api/traces/{key}/replay",
            get(replay::api_status).post(replay::api_start),
        )
        .route("/api/compare", get(replay::api_compare))
        .route("/static/timeline.js", get(timeline_js))
        .route("/static/style.css", get(style_css))
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(state.body_limit()));
    let upload = Router::new()
        .route("/api/upload", post(library::upload))
        .layer(DefaultBodyLimit::max(upload_limit))
        .layer(RequestBodyLimitLayer::new(upload_limit));
    pages_and_api
        .merge(upload)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.request_timeout(),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            explain_limits,
        ))
        .with_state(state)
}
