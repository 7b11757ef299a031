//! `dxtrace trim`: cut a trace down to what one call needs.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use replayer::TrimOptions;

/// Cut a trace down to what one call needs to replay.
///
/// Keeps call N (0-based ioctl index, as `dxtrace replay` numbers them), the calls that
/// created every handle and fd it uses (transitively) and the device opens, in their
/// original order. Verify the result with `dxtrace replay OUT`.
#[derive(Debug, clap::Args)]
pub struct TrimArgs {
    /// The .dxtrace file.
    pub file: PathBuf,

    /// Index of the call to keep.
    #[arg(long, value_name = "N")]
    pub keep: u64,

    /// Output trace.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,

    /// Also keep earlier calls that only use objects on the lineage and create or destroy
    /// nothing (state setters such as KVM_SET_REGS), so call N sees the recorded state.
    #[arg(long)]
    pub with_state: bool,
}

pub fn run(a: TrimArgs) -> anyhow::Result<ExitCode> {
    let r = replayer::trim_file(
        &a.file,
        a.keep,
        TrimOptions {
            with_state: a.with_state,
        },
        &a.output,
    )
    .with_context(|| format!("cannot trim {}", a.file.display()))?;
    writeln!(
        std::io::stdout(),
        "kept {} of {} calls (call {} is call {} in {}): {:?}",
        r.kept_calls.len(),
        r.total_calls,
        a.keep,
        r.new_index,
        a.output.display(),
        r.kept_calls
    )?;
    Ok(ExitCode::SUCCESS)
}
