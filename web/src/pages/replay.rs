//! Replay against the emulator (not available until the replayer has a library entry
//! point) and side-by-side comparison of two traces.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::query::{self, Comparison};
use crate::state::AppState;

/// Why the replay button does nothing yet; said on the page and by the API.
pub const REPLAY_UNAVAILABLE: &str = "replay from the web UI is not available yet: the \
    replayer crate has no library entry point to call in this build";

/// `POST /api/traces/{key}/replay`: answers 501 until the replayer lands.
pub async fn api_replay(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<()>, AppError> {
    state.resolve(&key)?;
    Err(AppError::NotAvailable(REPLAY_UNAVAILABLE.into()))
}

/// `GET /traces/{key}/replay`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/replay.html")]
pub struct ReplayPage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// The plain statement that replay is not available.
    pub unavailable: String,
    /// Other traces to compare with.
    pub others: Vec<String>,
}

/// The replay page.
pub async fn page(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<ReplayPage, HtmlError> {
    state.resolve(&key)?;
    let others = state
        .catalogue()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| *k != key)
        .collect();
    Ok(ReplayPage {
        href: fmt::enc(&key),
        key,
        unavailable: REPLAY_UNAVAILABLE.into(),
        others,
    })
}

/// Query of the comparison.
#[derive(Debug, Deserialize)]
pub struct CompareQuery {
    /// Key of trace A.
    pub a: String,
    /// Key of trace B.
    pub b: String,
}

async fn run(state: &AppState, q: &CompareQuery) -> Result<Comparison, AppError> {
    let a = state.load(&q.a).await?;
    let b = state.load(&q.b).await?;
    tokio::task::spawn_blocking(move || query::compare(&a.index, &b.index))
        .await
        .map_err(|e| AppError::Internal(format!("compare task: {e}")))
}

/// `GET /api/compare?a=KEY&b=KEY`.
pub async fn api_compare(
    State(state): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> Result<Json<Comparison>, AppError> {
    Ok(Json(run(&state, &q).await?))
}

/// A formatted comparison row.
pub struct Row {
    /// Name.
    pub name: String,
    /// Counts `a / b`.
    pub counts: String,
    /// p50 `a / b`.
    pub p50: String,
    /// p99 `a / b`.
    pub p99: String,
    /// errors `a / b`.
    pub errors: String,
    /// The counts differ.
    pub differs: bool,
}

/// `GET /compare?a=&b=`.
#[derive(Template, WebTemplate)]
#[template(path = "compare.html")]
pub struct ComparePage {
    /// A.
    pub a: String,
    /// B.
    pub b: String,
    /// URL-encoded A.
    pub a_href: String,
    /// URL-encoded B.
    pub b_href: String,
    /// Rows.
    pub rows: Vec<Row>,
    /// First divergence, described.
    pub divergence: String,
    /// Link to A's divergent call.
    pub a_link: String,
    /// Link to B's divergent call.
    pub b_link: String,
}

/// The comparison page.
pub async fn compare_page(
    State(state): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> Result<ComparePage, HtmlError> {
    let c = run(&state, &q).await?;
    let (a_href, b_href) = (fmt::enc(&q.a), fmt::enc(&q.b));
    let (divergence, a_link, b_link) = match &c.first_divergence {
        None => (
            "the ioctl sequences are identical (names and return values)".to_string(),
            String::new(),
            String::new(),
        ),
        Some(d) => {
            let side = |x: &Option<query::CallRef>| match x {
                Some(x) => format!("{} → {}", x.name, x.ret),
                None => "(trace ended)".into(),
            };
            let link = |x: &Option<query::CallRef>, h: &str| {
                x.as_ref()
                    .map(|x| format!("/traces/{h}/events/{}/{}", x.lane, x.i))
                    .unwrap_or_default()
            };
            (
                format!("call #{}: A {} · B {}", d.index, side(&d.a), side(&d.b)),
                link(&d.a, &a_href),
                link(&d.b, &b_href),
            )
        }
    };
    let rows = c
        .rows
        .iter()
        .map(|r| Row {
            name: r.name.clone(),
            counts: format!("{} / {}", r.a_count, r.b_count),
            p50: format!("{} / {}", fmt::ns(r.a_p50_ns), fmt::ns(r.b_p50_ns)),
            p99: format!("{} / {}", fmt::ns(r.a_p99_ns), fmt::ns(r.b_p99_ns)),
            errors: format!("{} / {}", r.a_errors, r.b_errors),
            differs: r.a_count != r.b_count || r.a_errors != r.b_errors,
        })
        .collect();
    Ok(ComparePage {
        a: q.a.clone(),
        b: q.b.clone(),
        a_href,
        b_href,
        rows,
        divergence,
        a_link,
        b_link,
    })
}
