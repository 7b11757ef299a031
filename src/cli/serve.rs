//! `dxtrace serve`: the web UI over a set of traces (glue around `web::serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Serve the web UI over a set of traces.
///
/// Lists every .dxtrace file under the given files and directories, indexes each once in
/// the background (or loads the index from the cache), and serves the library, overview,
/// timeline, event detail, search, replay and compare pages plus a JSON API (see the
/// README). Only files under the given paths are ever read. Binds loopback unless --addr
/// says otherwise.
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

    /// Directory where trace indexes and statistics are cached across restarts, keyed
    /// by each trace's path, size, mtime and inode (a changed trace is re-indexed, a
    /// damaged cache file rebuilt). Default: $XDG_CACHE_HOME/dxtrace or ~/.cache/dxtrace.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Keep indexes in memory only.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// Runs the server until Ctrl-C.
pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut opts = web::ServeOptions::new(a.paths);
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    opts.upload_limit = a.upload_limit_mib.saturating_mul(1 << 20);
    if a.no_cache {
        opts.cache_dir = None;
    } else if let Some(d) = a.cache_dir {
        opts.cache_dir = Some(d);
    }
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
