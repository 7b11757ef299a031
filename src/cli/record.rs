//! `dxtrace record`: capture ioctls on a device with the eBPF probe.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::util::bytes;

/// Capture every ioctl on a device (and VMBus messages where possible) into a trace.
///
/// Filtering happens in the kernel: by device number (or FUSE file), optionally by
/// process tree. Descriptors that watched ioctls return (KVM_CREATE_VM, dxg sync files…)
/// are followed too. Stops on Ctrl-C / SIGTERM (or when CMD exits), flushes, detaches
/// and exits 0. Needs root (CAP_BPF + CAP_PERFMON); run `dxtrace doctor` first.
///
/// If the recorder is killed (kill -9, crash), the trace keeps every frame sealed before
/// (a frame is sealed at least every second): it loses about the last second of events,
/// and also, per CPU, up to 16 calls that carry no bytes that the kernel side was still
/// gathering into one ring record (it submits them within 50 ms when the recorder runs).
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Device node or FUSE file to watch (repeatable). Default: /dev/dxg.
    #[arg(long = "device", value_name = "PATH")]
    pub devices: Vec<PathBuf>,

    /// Trace only this process and the children it starts from now on.
    #[arg(long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Output trace file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Ring buffer size in bytes (rounded up to a power of two). Larger rings drop less
    /// under bursts.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub ringbuf_size: u32,

    /// Binary exporting dxgvmb_send_sync_msg / dxgvmb_send_async_msg (the emulator) to
    /// capture VMBus messages with uprobes where the kernel has no dxgkrnl.
    #[arg(long, value_name = "PATH")]
    pub uprobe_binary: Option<PathBuf>,

    /// With --uprobe-binary: attach the uprobes in this process only (the `dxtrace emulate
    /// --mount` daemon serving the watched FUSE device). Its messages are captured even
    /// though it is not the recorded command, and other processes running the same binary
    /// are not seen.
    #[arg(long, value_name = "PID", requires = "uprobe_binary")]
    pub uprobe_pid: Option<u32>,

    /// No live status line on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Command to start and record (with its children); recording stops when it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Schema name for a watched path: the device tables are keyed by name.
fn schema_of(path: &std::path::Path) -> String {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("kvm") => "kvm".into(),
        Some("dxg") => "dxg".into(),
        _ => String::new(),
    }
}

pub fn run(a: RecordArgs) -> anyhow::Result<ExitCode> {
    let devices = if a.devices.is_empty() {
        vec![PathBuf::from("/dev/dxg")]
    } else {
        a.devices.clone()
    };
    let schemas: Vec<String> = devices.iter().map(|d| schema_of(d)).collect();
    let descriptors = probe::desc::for_schemas(&schemas);
    let opts = probe::RecordOptions {
        devices,
        schemas,
        pid: a.pid,
        command: a.command.clone(),
        output: a.output.clone(),
        ringbuf_size: Some(a.ringbuf_size),
        uprobe_binary: a.uprobe_binary.clone(),
        uprobe_pid: a.uprobe_pid,
        descriptors,
    };
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .expect("static template"),
        );
        b.enable_steady_tick(Duration::from_millis(250));
        b
    };
    let bar2 = bar.clone();
    let mut last = probe::Progress::default();
    let progress = move |p: &probe::Progress| {
        let dt = (p.elapsed - last.elapsed).max(1e-3);
        bar2.set_message(format!(
            "{} ioctls ({:.0}/s), {} ({}/s), {} dropped",
            p.ioctls,
            (p.ioctls - last.ioctls) as f64 / dt,
            bytes(p.bytes),
            bytes(((p.bytes - last.bytes) as f64 / dt) as u64),
            p.dropped
        ));
        last = *p;
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let summary = rt.block_on(async move {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        probe::record(opts, stop, progress).await
    });
    bar.finish_and_clear();
    let s = summary.with_context(|| format!("recording into {} failed", a.output.display()))?;
    eprintln!(
        "dxtrace: {} ioctls, {} VMBus messages, {} payload, {} dropped → {}",
        s.ioctls,
        s.vmbus,
        bytes(s.bytes),
        s.dropped,
        a.output.display()
    );
    eprintln!("dxtrace: VMBus: {}", s.vmbus_detail);
    if let Some(code) = s.exit_code {
        eprintln!("dxtrace: command exited with {code}");
    }
    Ok(ExitCode::SUCCESS)
}
