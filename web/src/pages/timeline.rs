//! The timeline: a canvas page driven by `static/timeline.js`, fed by the tile API.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::query::{self, Timeline};
use crate::state::AppState;

/// Query of `GET /api/traces/{key}/timeline`.
#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    /// Window start, ns from the trace start (default 0).
    pub t0: Option<u64>,
    /// Window end (default: the end of the trace).
    pub t1: Option<u64>,
    /// Columns (default 1000, at most 8192).
    pub buckets: Option<u32>,
}

/// Timeline tiles as JSON.
pub async fn api(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Timeline>, AppError> {
    let l = super::load(&state, &key).await?;
    let ix = &l.index;
    let span = ix.end.saturating_sub(ix.start).max(1);
    let t0 = q.t0.unwrap_or(0);
    let t1 = q.t1.unwrap_or(span);
    Ok(Json(query::timeline(
        ix,
        t0,
        t1,
        q.buckets.unwrap_or(1000),
    )?))
}

/// Query of the timeline page (deep links).
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    /// Window start.
    pub t0: Option<u64>,
    /// Window end.
    pub t1: Option<u64>,
    /// Selected event `LANE:INDEX`.
    pub ev: Option<String>,
}

/// `GET /traces/{key}/timeline?t0=&t1=&ev=`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/timeline.html")]
pub struct TimelinePage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// Trace length, ns.
    pub span_ns: u64,
    /// Initial window start.
    pub t0: u64,
    /// Initial window end.
    pub t1: u64,
    /// Initial selection, or empty.
    pub ev: String,
    /// Span formatted.
    pub span: String,
}

/// The timeline page.
pub async fn page(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<TimelinePage, HtmlError> {
    let l = super::load(&state, &key).await?;
    let span = l.index.end.saturating_sub(l.index.start).max(1);
    let t0 = q.t0.unwrap_or(0).min(span);
    let t1 = q.t1.unwrap_or(span).clamp(t0 + 1, span.max(t0 + 1));
    let ev = q.ev.unwrap_or_default();
    if !ev.is_empty()
        && !ev
            .split_once(':')
            .is_some_and(|(a, b)| a.parse::<usize>().is_ok() && b.parse::<u32>().is_ok())
    {
        return Err(AppError::BadRequest(format!("ev must be LANE:INDEX, got {ev:?}")).into());
    }
    Ok(TimelinePage {
        href: fmt::enc(&l.key),
        key: l.key.clone(),
        span_ns: span,
        t0,
        t1,
        ev,
        span: fmt::ns(span),
    })
}
