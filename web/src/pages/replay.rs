//! Replay against the emulator from the page (a background job, [`crate::replay`]) and
//! side-by-side comparison of two traces.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::query::{self, Comparison};
use crate::replay::{self, ReplayStatus};
use crate::state::AppState;

/// `POST /api/traces/{key}/replay`: starts a replay against the emulator (or joins the
/// one running) and answers 202 with its status; poll `GET` for the result.
pub async fn api_start(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<(StatusCode, Json<ReplayStatus>), AppError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(replay::start(&state, &key).await?),
    ))
}

/// `GET /api/traces/{key}/replay`: the replay's status, and its report once done.
pub async fn api_status(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ReplayStatus>, AppError> {
    Ok(Json(replay::status(&state, &key)?))
}

/// `POST /traces/{key}/replay` (the page's button): starts it, back to the page.
pub async fn form_start(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, HtmlError> {
    replay::start(&state, &key).await?;
    Ok(Redirect::to(&format!("/traces/{}/replay", fmt::enc(&key))))
}

/// A divergence, formatted.
pub struct DivRow {
    /// Call index.
    pub call: u64,
    /// ioctl.
    pub ioctl: String,
    /// Field.
    pub field: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
    /// Link to the call in the timeline, or empty.
    pub link: String,
}

/// `GET /traces/{key}/replay`.
#[derive(Template, WebTemplate)]
#[template(path = "trace/replay.html")]
pub struct ReplayPage {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// `idle`, `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// Progress or outcome in one line.
    pub summary: String,
    /// Why it failed.
    pub error: String,
    /// Divergences shown.
    pub divergences: Vec<DivRow>,
    /// Divergences not shown.
    pub hidden: u64,
    /// Replayer notes.
    pub notes: Vec<String>,
    /// Other traces to compare with.
    pub others: Vec<String>,
}

/// The replay page.
pub async fn page(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<ReplayPage, HtmlError> {
    let st = replay::status(&state, &key)?;
    let href = fmt::enc(&key);
    let others = state
        .catalogue()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| *k != key)
        .collect();
    let mut page = ReplayPage {
        key,
        href,
        state: st.state.to_string(),
        summary: String::new(),
        error: st.error.clone().unwrap_or_default(),
        divergences: Vec::new(),
        hidden: 0,
        notes: Vec::new(),
        others,
    };
    page.summary = match (st.state, &st.result) {
        ("idle", _) => "This trace has not been replayed yet.".into(),
        ("queued", _) => "Queued: waiting for another replay to finish…".into(),
        ("running", _) => format!(
            "Running: {} of {} calls replayed…",
            st.calls_done, st.calls_total
        ),
        ("failed", _) => format!("The replay stopped after {} calls.", st.calls_done),
        (_, Some(r)) => {
            page.divergences = r
                .divergences
                .iter()
                .map(|d| DivRow {
                    call: d.divergence.call,
                    ioctl: d.divergence.ioctl.clone(),
                    field: d.divergence.field.clone(),
                    recorded: d.divergence.recorded.clone(),
                    replayed: d.divergence.replayed.clone(),
                    link: d
                        .event
                        .map(|(l, i)| format!("/traces/{}/events/{l}/{i}", page.href))
                        .unwrap_or_default(),
                })
                .collect();
            page.hidden = r.divergences_total - r.divergences.len() as u64;
            page.notes = r.notes.clone();
            format!(
                "{} calls replayed against the emulator ({} compared, {} fd events) in {:.3} s: \
                 {} divergence{}.",
                r.calls,
                r.compared,
                r.fd_events,
                r.elapsed_s,
                r.divergences_total,
                if r.divergences_total == 1 { "" } else { "s" }
            )
        }
        _ => String::new(),
    };
    Ok(page)
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
    let sa = state.stats(&a).await?;
    let sb = state.stats(&b).await?;
    tokio::task::spawn_blocking(move || query::compare(&a.index, &sa, &b.index, &sb))
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
