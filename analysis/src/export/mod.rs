//! Exports: Parquet tables, Perfetto / Chrome trace-event JSON, JSON lines.
//!
//! # Parquet (`OUT` is a directory)
//!
//! A Parquet file holds one table, so `OUT` is a directory with one file per record kind
//! (uncompressed pages with Parquet's own dictionary / RLE encodings; every column typed,
//! nulls where a value is absent):
//!
//! * `ioctls.parquet` — `id` u64, `ts_enter_ns` u64, `ts_exit_ns` u64, `dur_ns` u64,
//!   `pid` u32, `tid` u32, `fd` i32, `dev` u64, `cmd` u32, `name` str, `ret` i64,
//!   `status` str, `is_error` bool, `bytes_in` u64, `bytes_out` u64, `buffers` u32,
//!   `host_ns` u64 (sum of the VMBus round trips it caused), `round_trips` u32.
//! * `vmbus.parquet` — `ts_ns` u64, `dir` str (`guest_to_host` / `host_reply` /
//!   `host_to_guest`), `channel` u64?, `request_id` u64, `is_async` bool, `status` i64?,
//!   `ioctl_id` u64?, `pid` u32, `tid` u32, `len` u64, `captured_bytes` u64, `command` str
//!   (replies carry their request's command), `rtt_ns` u64? (on paired replies).
//! * `processes.parquet` — `ts_ns` u64, `pid` u32, `ppid` u32, `comm` str, `exe` str,
//!   `start_ns` u64, `cmdline` str (a JSON array of the arguments).
//! * `fds.parquet` — `ts_ns` u64, `pid` u32, `tid` u32, `fd` i32, `op` str (`open` /
//!   `close` / `derived`), `path` str, `dev` u64, `ino` u64, `flags` u32, `ret` i64.
//! * `dropped.parquet` — `ts_ns` u64, `count` u64, `reason` str, `cpu` u32?.
//! * `signals.parquet` — `ts_ns` u64, `event_id` u64, `pid` u32, `fd` i32, `source` str,
//!   `detail` str.
//! * `annotations.parquet` — `ts_ns` u64, `pid` u32, `tid` u32, `key` str, `text` str.
//! * `capture_stats.parquet` — `ts_ns` u64, `name` str, `value` u64: one row per counter
//!   of each capture-statistics record.
//!
//! Every table is written, empty or not. Records of kinds this version does not know
//! are counted (`unknown_records` in the statistics) but not exported.
//!
//! # Perfetto / Chrome trace-event JSON
//!
//! See [`perfetto`].
//!
//! # JSON lines
//!
//! See [`jsonl`].

use std::path::{Path, PathBuf};

use crate::columns::Progress;
use crate::error::{AnalysisError, Result};

pub mod jsonl;
pub mod parquet;
pub mod perfetto;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A directory of Parquet tables.
    Parquet,
    /// One Chrome trace-event JSON file (opens in ui.perfetto.dev).
    Perfetto,
    /// One JSON object per record per line.
    Jsonl,
}

impl ExportFormat {
    /// Format by its CLI name (`parquet`, `perfetto`, `jsonl`).
    pub fn from_name(s: &str) -> Option<ExportFormat> {
        Some(match s {
            "parquet" => ExportFormat::Parquet,
            "perfetto" => ExportFormat::Perfetto,
            "jsonl" => ExportFormat::Jsonl,
            _ => return None,
        })
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Format.
    pub format: ExportFormat,
    /// Decode threads.
    pub threads: usize,
    /// Counter bucket of the Perfetto throughput tracks, ns.
    pub bucket_ns: u64,
}

impl ExportOptions {
    /// Defaults for a format: all cores, 10 ms counter buckets.
    pub fn new(format: ExportFormat) -> ExportOptions {
        ExportOptions {
            format,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            bucket_ns: 10_000_000,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Rows / events / lines written, in all.
    pub rows: u64,
    /// Frames that could not be read (their records are missing from the output).
    pub decode_errors: Vec<String>,
}

/// Exports `input` to `out` (a directory for Parquet, a file otherwise).
pub fn export(
    input: &Path,
    out: &Path,
    opts: &ExportOptions,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary> {
    match opts.format {
        ExportFormat::Parquet => parquet::export_parquet(input, out, opts.threads, progress),
        ExportFormat::Perfetto => perfetto::export_perfetto(input, out, opts, progress),
        ExportFormat::Jsonl => jsonl::export_jsonl(input, out, opts.threads, progress),
    }
}

/// Progress of a two-phase export (decode the frames, then write what they gave), as
/// one series for a single bar: the decode fills the first half, the write the second.
pub(crate) struct Phases<'a> {
    progress: Option<Progress<'a>>,
    frames: usize,
}

impl<'a> Phases<'a> {
    pub(crate) fn new(reader: &traces::Reader, progress: Option<Progress<'a>>) -> Phases<'a> {
        Phases {
            progress,
            frames: reader.frames().len().max(1),
        }
    }

    /// `done` of the trace's frames decoded.
    pub(crate) fn decoded(&self, done: usize, _frames: usize) {
        if let Some(p) = self.progress {
            p(done, 2 * self.frames);
        }
    }

    /// `done` of `all` output rows written.
    pub(crate) fn written(&self, done: u64, all: u64) {
        if let Some(p) = self.progress {
            let f = self.frames as u128;
            let w = (done as u128 * f / all.max(1) as u128).min(f) as usize;
            p(self.frames + w, 2 * self.frames);
        }
    }
}

pub(crate) fn open(input: &Path) -> Result<traces::Reader> {
    traces::Reader::open(input).map_err(|source| AnalysisError::Trace {
        path: input.to_path_buf(),
        source,
    })
}
