//! `dxtrace serve`: the web UI over a set of traces (glue around `web::serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Serve the web UI over a set of traces.
///
/// Lists every .dxtrace file under the given files and directories, indexes each once in
/// the background, and serves the library, overview, timeline, event detail, search and
/// compare pages plus a JSON API (see the README). Only files under the given paths are
/// ever read. Binds loopback unless --addr says otherwise.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Trace files or directories to serve.
    #[arg(value_name = "FILES|DIRS", default_value = "traces/samples")]
    pub paths: Vec<PathBuf>,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddr,

    /// Directory that uploaded traces are written to (served as `uploads/`).
    /// Default: dxtrace-uploads in the system temporary directory.
    #[arg(long, value_name = "DIR")]
    pub upload_dir: Option<PathBuf>,

    /// Turn uploads off.
    #[arg(long, conflicts_with = "upload_dir")]
    pub no_upload: bool,

    /// Largest accepted upload, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub upload_limit_mib: usize,

    /// Threads used to index traces (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Runs the server until Ctrl-C.
pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut opts = web::ServeOptions::new(a.paths);
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    opts.upload_limit = a.upload_limit_mib.saturating_mul(1 << 20);
    opts.upload_dir = if a.no_upload {
        None
    } else {
        Some(
            a.upload_dir
                .unwrap_or_else(|| std::env::temp_dir().join("dxtrace-uploads")),
        )
    };
    if !a.addr.ip().is_loopback() {
        tracing::warn!(addr = %a.addr, "serving on a non-loopback address: anyone who can reach it can read the traces");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(web::serve(opts, a.addr))
        .context("dxtrace serve failed")?;
    Ok(ExitCode::SUCCESS)
}
