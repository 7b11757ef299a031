//! Handlers, each page's struct beside the handler that renders it, and the JSON
//! handler that answers the same question for scripts.

pub mod event;
pub mod library;
pub mod overview;
pub mod replay;
pub mod search;
pub mod timeline;

use std::sync::Arc;

use crate::error::AppError;
use crate::state::{AppState, Loaded};

/// Loads the trace named by a path parameter.
pub(crate) async fn load(state: &AppState, key: &str) -> Result<Arc<Loaded>, AppError> {
    state.load(key).await
}
