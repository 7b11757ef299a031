//! Serves the web UI without building the whole `dxtrace` binary:
//! `cargo run -p web --example serve -- [PATHS]... ` (port from `DXTRACE_ADDR`,
//! default 127.0.0.1:7878).

fn main() {
    let paths: Vec<std::path::PathBuf> = std::env::args_os().skip(1).map(Into::into).collect();
    let paths = if paths.is_empty() {
        vec!["traces/samples".into()]
    } else {
        paths
    };
    let addr = std::env::var("DXTRACE_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:7878".into())
        .parse()
        .expect("DXTRACE_ADDR is host:port");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(web::serve(web::ServeOptions::new(paths), addr)) {
        eprintln!("serve: {e}");
        std::process::exit(2);
    }
}
