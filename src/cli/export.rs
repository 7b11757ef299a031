//! `dxtrace export`: Parquet tables, Perfetto JSON or JSON lines.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use analysis::text::parse_duration;
use analysis::{ExportFormat, ExportOptions, export};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

/// Shown after the options: the output layouts.
const ABOUT_OUTPUT: &str = r#"Export a trace as Parquet tables, Perfetto / Chrome trace-event JSON or JSON lines.

parquet: OUT is a directory with one table per record kind: ioctls, vmbus, processes,
  fds, dropped, signals, annotations, capture_stats (.parquet; typed columns; read with
  DuckDB `SELECT * FROM 'OUT/ioctls.parquet'` or pyarrow).
perfetto: OUT is a JSON file for ui.perfetto.dev: ioctls as slices per thread, VMBus
  round trips as async slices per channel, flows ioctl → VMBus, throughput counters.
jsonl: OUT has one decoded record per line ({"kind": …, fields…}), in file order
  (frames are encoded in parallel; the output is the same for any --threads).

Column and key lists are in the `analysis` crate's documentation (cargo doc -p analysis)."#;

/// `dxtrace export` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = ABOUT_OUTPUT)]
pub struct ExportArgs {
    /// The .dxtrace file.
    pub file: PathBuf,

    /// Output format.
    #[arg(long, value_parser = ["parquet", "perfetto", "jsonl"])]
    pub format: String,

    /// Output: a directory for parquet, a file otherwise.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,

    /// Counter bucket of the Perfetto throughput tracks (e.g. 10ms).
    #[arg(long, value_name = "DURATION", default_value = "10ms")]
    pub bucket: String,

    /// Threads used to decode frames (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = ExportFormat::from_name(&a.format).context("unknown format")?;
    let mut opts = ExportOptions::new(format);
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    opts.bucket_ns = parse_duration(&a.bucket)
        .with_context(|| format!("--bucket {:?}: expected a duration such as 10ms", a.bucket))?;
    let bar = Bar::new(&a.file, "exporting");
    let s = export(&a.file, &a.output, &opts, Some(&|d, t| bar.set(d, t))).with_context(|| {
        format!(
            "cannot export {} to {}",
            a.file.display(),
            a.output.display()
        )
    })?;
    bar.finish();
    for f in &s.files {
        eprintln!("wrote {}", f.display());
    }
    for e in &s.decode_errors {
        eprintln!("warning: unreadable frame, its records are missing from the export: {e}");
    }
    Ok(if s.decode_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A progress bar on stderr (stats: frames aggregated; exports: frames decoded, then rows
/// written), for traces large enough to make the user wait; hidden otherwise and when
/// stderr is not a terminal (indicatif checks), so `--json` output stays clean.
pub(super) struct Bar(ProgressBar);

impl Bar {
    /// Shown for files of 64 MiB and more (a few seconds of decoding).
    pub(super) fn new(file: &Path, what: &str) -> Bar {
        let big = std::fs::metadata(file).is_ok_and(|m| m.len() >= 64 << 20);
        let pb = if big {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}% ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(pb)
    }

    /// Steps done of total (called from decode threads).
    pub(super) fn set(&self, done: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }

    pub(super) fn finish(&self) {
        self.0.finish_and_clear();
    }
}
