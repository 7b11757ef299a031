//! `dxtrace`: record, replay and browse ioctl traces of `/dev/dxg` (and other devices).
//!
//! This binary is glue: argument parsing and printing. The logic lives in the workspace
//! libraries (`traces`, `driver-core`, `probe`, `replayer`, `web`).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `dxtrace info x | head` is not an error.
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "dxtrace: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        let kind = match c.downcast_ref::<std::io::Error>() {
            Some(e) => Some(e.kind()),
            // `--json` output goes through serde_json, which wraps the write error.
            None => c
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
