//! The one error type of the web crate. Every handler returns `Result<_, AppError>`;
//! [`IntoResponse`] picks the status and the public message, logs internals, and answers
//! JSON for API paths and a small HTML page for the others.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is malformed (bad range, bad number, forbidden name).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A path parameter tried to leave the served directories.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such trace or event.
    #[error("not found: {0}")]
    NotFound(String),
    /// The upload already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Asked for something this build cannot do yet.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// The request body is over its limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The request took longer than the server allows.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The trace file could not be read.
    #[error("cannot read trace {path}")]
    Trace {
        /// Key of the trace.
        path: String,
        /// What the reader said.
        #[source]
        source: traces::TraceError,
    },
    /// Anything else (I/O on the upload dir, a panicked index build).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::NotAvailable(_) => StatusCode::NOT_IMPLEMENTED,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::Trace { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client: the full chain for client errors, a generic
    /// line for internal ones (whose detail goes to the log).
    pub fn public_message(&self) -> String {
        match self {
            AppError::Internal(_) => "internal error; see the server log".into(),
            AppError::Trace { path, source } => format!("cannot read trace {path}: {source}"),
            other => other.to_string(),
        }
    }

    /// This error as an HTML page instead of JSON.
    pub fn html(self) -> HtmlError {
        HtmlError(self)
    }
}

#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
    status: u16,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.public_message(),
            status: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}

/// An [`AppError`] rendered as an HTML page (for the page routes).
#[derive(Debug)]
pub struct HtmlError(pub AppError);

impl From<AppError> for HtmlError {
    fn from(e: AppError) -> Self {
        HtmlError(e)
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "page failed");
        }
        let msg = escape(&self.0.public_message());
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{code} · dxtrace</title>\
             <link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\
             <header><a href=\"/\">dxtrace</a></header><main><h1>{code}</h1>\
             <p class=\"error\">{msg}</p><p><a href=\"/\">Back to the library</a></p></main></body></html>",
            code = status.as_u16()
        );
        (status, Html(page)).into_response()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
