//! The library: every trace under the served paths, and the upload.

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, HtmlError};
use crate::fmt;
use crate::state::{AppState, TraceEntry};

/// One library row, formatted.
pub struct Row {
    /// Key.
    pub key: String,
    /// URL-encoded key.
    pub href: String,
    /// Size.
    pub size: String,
    /// Span, processes, ioctls, VMBus, drops, source, or "indexing…".
    pub span: String,
    /// Processes.
    pub processes: String,
    /// ioctls.
    pub ioctls: String,
    /// VMBus round trips.
    pub vmbus: String,
    /// Dropped events.
    pub drops: String,
    /// Source.
    pub source: String,
    /// Error, if unreadable.
    pub error: String,
}

/// `GET /`.
#[derive(Template, WebTemplate)]
#[template(path = "library/index.html")]
pub struct LibraryPage {
    /// Rows.
    pub rows: Vec<Row>,
    /// Upload limit, formatted; empty when uploads are off.
    pub upload_limit: String,
}

fn row(e: &TraceEntry) -> Row {
    let dash = || "…".to_string();
    Row {
        key: e.key.clone(),
        href: fmt::enc(&e.key),
        size: fmt::bytes(e.size),
        span: e.facts.as_ref().map_or_else(dash, |f| fmt::ns(f.span_ns)),
        processes: e
            .facts
            .as_ref()
            .map_or_else(dash, |f| f.processes.to_string()),
        ioctls: e.facts.as_ref().map_or_else(dash, |f| f.ioctls.to_string()),
        vmbus: e.facts.as_ref().map_or_else(dash, |f| f.vmbus.to_string()),
        drops: e
            .facts
            .as_ref()
            .map_or_else(dash, |f| f.dropped.to_string()),
        source: e.facts.as_ref().map_or_else(dash, |f| f.source.clone()),
        error: e.error.clone().unwrap_or_default(),
    }
}

/// The library page.
pub async fn page(State(state): State<AppState>) -> Result<LibraryPage, HtmlError> {
    let rows = state.library().iter().map(row).collect();
    Ok(LibraryPage {
        rows,
        upload_limit: state
            .upload_root()
            .map(|_| fmt::bytes(state.upload_limit() as u64))
            .unwrap_or_default(),
    })
}

/// `GET /api/traces`.
pub async fn api(State(state): State<AppState>) -> Json<Vec<TraceEntry>> {
    Json(state.library())
}

/// Query of an upload.
#[derive(Debug, Deserialize)]
pub struct UploadQuery {
    /// File name for the new trace (`[A-Za-z0-9._-]+\.dxtrace`).
    pub name: String,
}

/// Answer to an upload.
#[derive(Debug, Serialize)]
pub struct Uploaded {
    /// Key of the new trace.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
}

/// `POST /api/upload?name=NAME.dxtrace` with the file as the body.
pub async fn upload(
    State(state): State<AppState>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Result<Json<Uploaded>, AppError> {
    let root = state.upload_root().ok_or_else(|| {
        AppError::NotAvailable("uploads are off (start the server with an upload dir)".into())
    })?;
    let name = q.name.trim();
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_chars || name.starts_with('.') || !name.ends_with(".dxtrace") || name.len() > 128 {
        return Err(AppError::BadRequest(format!(
            "upload name {name:?} must be letters, digits, '.', '_' or '-', ending in .dxtrace"
        )));
    }
    if body.is_empty() {
        return Err(AppError::BadRequest("empty upload".into()));
    }
    let dest = root.path.join(name);
    if dest.exists() {
        return Err(AppError::Conflict(format!("{name} already exists")));
    }
    let tmp = root.path.join(format!(".{name}.part"));
    let size = body.len() as u64;
    let (tmp2, dest2) = (tmp.clone(), dest.clone());
    // Write beside the destination and check it opens as a trace before it appears in
    // the library, so a broken upload never becomes a listed trace.
    tokio::task::spawn_blocking(move || -> Result<(), AppError> {
        std::fs::write(&tmp2, &body).map_err(|e| AppError::Internal(format!("upload: {e}")))?;
        if let Err(e) = traces::Reader::open(&tmp2) {
            let _ = std::fs::remove_file(&tmp2);
            return Err(AppError::BadRequest(format!(
                "not a readable .dxtrace file: {e}"
            )));
        }
        std::fs::rename(&tmp2, &dest2).map_err(|e| AppError::Internal(format!("upload: {e}")))
    })
    .await
    .map_err(|e| AppError::Internal(format!("upload task: {e}")))??;
    Ok(Json(Uploaded {
        key: format!("{}/{name}", root.label),
        size,
    }))
}
