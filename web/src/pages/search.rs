//! Filter / search: ioctl name, pid/tid, handle value, status, time window.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, Query, State};

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::query::{self, SearchQuery, SearchResult};
use crate::state::AppState;

async fn run(
    state: &AppState,
    key: &str,
    q: SearchQuery,
) -> Result<(std::sync::Arc<crate::state::Loaded>, SearchResult), AppError> {
    let l = super::load(state, key).await?;
    let l2 = l.clone();
    let r = tokio::task::spawn_blocking(move || query::search(&l2.index, &l2.reader, &q))
        .await
        .map_err(|e| AppError::Internal(format!("search task: {e}")))??;
    Ok((l, r))
}

/// `GET /api/traces/{key}/search?name=&pid=&tid=&status=&handle=&t0=&t1=&limit=`.
pub async fn api(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<SearchResult>, AppError> {
    Ok(Json(run(&state, &key, q).await?.1))
}

/// A formatted hit.
pub struct HitRow {
    /// Link to the detail page.
    pub href: String,
    /// Link to the timeline around it.
    pub timeline: String,
    /// Start.
    pub t: String,
    /// Duration.
    pub d: String,
    /// Name.
    pub name: String,
    /// pid/tid.
    pub who: String,
    /// Return value.
    pub ret: i64,
    /// Failed.
    pub error: bool,
}

/// `GET /traces/{key}/search`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/search.html")]
pub struct SearchPage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// The filters as given (for the form).
    pub name: String,
    /// pid filter.
    pub pid: String,
    /// tid filter.
    pub tid: String,
    /// status filter.
    pub status: String,
    /// handle filter.
    pub handle: String,
    /// t0 filter.
    pub t0: String,
    /// t1 filter.
    pub t1: String,
    /// Total matches.
    pub total: u64,
    /// Hits.
    pub hits: Vec<HitRow>,
    /// Handle search stopped early.
    pub truncated: bool,
}

/// The search page.
pub async fn page(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Result<SearchPage, HtmlError> {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let n = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let form = (
        s(&q.name),
        q.pid.map(|x| x.to_string()).unwrap_or_default(),
        q.tid.map(|x| x.to_string()).unwrap_or_default(),
        s(&q.status),
        s(&q.handle),
        n(q.t0),
        n(q.t1),
    );
    let (l, r) = run(&state, &key, q).await?;
    let href = fmt::enc(&l.key);
    let hits = r
        .hits
        .iter()
        .map(|h| {
            let w = (h.d as u64).max(1000) * 20;
            let t0 = h.t.saturating_sub(w / 2);
            HitRow {
                href: format!("/traces/{href}/events/{}/{}", h.lane, h.i),
                timeline: format!(
                    "/traces/{href}/timeline?t0={t0}&t1={}&ev={}:{}",
                    t0 + w,
                    h.lane,
                    h.i
                ),
                t: fmt::ns(h.t),
                d: fmt::ns(h.d as u64),
                name: h.name.clone(),
                who: format!("{}/{}", h.pid, h.tid),
                ret: h.ret,
                error: h.error,
            }
        })
        .collect();
    Ok(SearchPage {
        key: l.key.clone(),
        href,
        name: form.0,
        pid: form.1,
        tid: form.2,
        status: form.3,
        handle: form.4,
        t0: form.5,
        t1: form.6,
        total: r.total,
        hits,
        truncated: r.truncated,
    })
}
