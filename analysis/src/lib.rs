//! `analysis`: statistics and exports over `.dxtrace` files.
//!
//! The statistics ([`stats()`]) stream the trace: frames are decoded in parallel straight
//! into per-group partial aggregates merged in file order, so memory holds per-group
//! figures and the durations the quantiles need, never the rows. The exports
//! ([`export`]) decode the trace into columns ([`columns::load`], frame-parallel) and
//! write Parquet tables (polars), a Perfetto / Chrome trace-event JSON file or JSON
//! lines. Names come from `driver-core` (ioctl names, NTSTATUS / errno renderings,
//! VMBus command names); nothing here keeps its own table.
//!
//! ```no_run
//! let s = analysis::stats(std::path::Path::new("t.dxtrace"), &analysis::StatsOptions::default())?;
//! println!("{}", serde_json::to_string_pretty(&s).unwrap());
//! # Ok::<(), analysis::AnalysisError>(())
//! ```
//!
//! # Stats JSON (`dxtrace stats --json`, schema `dxtrace.stats.v1`)
//!
//! Top-level keys: `schema`, `file`, `records`, `dropped_events`, `decode_errors`,
//! `ts_min_ns`, `ts_max_ns`, `totals`, `by_ioctl`, `by_process`, `by_thread`, `by_vmbus`
//! (each `null` when `--by` selected another grouping), `throughput`. Every duration is
//! integer nanoseconds (`*_ns`) except the `mean_ns` floats; see [`Stats`] and the
//! structs it holds for each key. Errors are calls whose full return value is negative
//! or a raw failure NTSTATUS ([`columns::is_error_return`]). Quantiles are nearest-rank.

#![warn(missing_docs)]

mod aggregate;
pub mod columns;
pub mod decode;
pub mod error;
pub mod export;
pub mod names;
mod pairing;
pub mod stats;
pub mod text;

pub use columns::{Columns, Progress};
pub use error::{AnalysisError, Result};
pub use export::{ExportFormat, ExportOptions, ExportSummary, export};
pub use stats::{
    Bucket, By, CallStats, GroupStats, IoctlStats, Latency, STATS_SCHEMA, Stats, StatsOptions,
    StatusCount, Throughput, Totals, VmbusStats, stats, stats_reader, stats_with_progress,
};

#[cfg(test)]
mod tests;
