//! The library's error type.

use std::path::PathBuf;

/// What can go wrong while analysing or exporting a trace.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The trace could not be opened or a frame could not be read.
    #[error("cannot read trace {path}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What the reader said.
        #[source]
        source: traces::TraceError,
    },
    /// A polars operation failed (building a frame, aggregating, writing Parquet).
    #[error("{what}")]
    Polars {
        /// What was being done.
        what: String,
        /// polars' error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}")]
    Io {
        /// The output path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An option was out of range (e.g. a zero-length time bucket).
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

/// `Result` with [`AnalysisError`].
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;

pub(crate) fn polars_err(
    what: impl Into<String>,
) -> impl FnOnce(polars::error::PolarsError) -> AnalysisError {
    let what = what.into();
    move |source| AnalysisError::Polars { what, source }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AnalysisError + '_ {
    move |source| AnalysisError::Io {
        path: path.to_path_buf(),
        source,
    }
}
