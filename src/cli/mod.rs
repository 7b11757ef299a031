//! Subcommands. Each module holds one subcommand's clap arguments and its glue.

mod demo;
mod doctor;
mod emulate;
mod export;
mod info;
mod record;
mod replay;
mod schema;
mod serve;
mod stats;
mod trim;
mod util;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Record, replay and browse ioctl traces of the Linux dxgkrnl driver (/dev/dxg).
///
/// dxtrace captures every ioctl a program makes on /dev/dxg (the device through which
/// WSL2 programs reach a GPU on the Windows host over VMBus) and every VMBus message the
/// driver exchanges with the host, stores them in a .dxtrace file, replays them against
/// the real driver or an emulator, and shows them in a browser. /dev/kvm is supported as
/// a second device. Capturing /dev/dxg needs a WSL2 kernel; everything else (the emulator,
/// replay, analysis, the web UI) runs on any Linux machine.
#[derive(Debug, Parser)]
#[command(name = "dxtrace", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a trace's header, record counts, time span, processes, drops and integrity.
    Info(info::InfoArgs),
    /// Capture ioctls (and VMBus messages where possible) with the eBPF probe.
    Record(record::RecordArgs),
    /// Re-execute a trace against the emulator or a real device and report divergences.
    Replay(replay::ReplayArgs),
    /// Cut a trace down to what one call needs to replay.
    Trim(trim::TrimArgs),
    /// Run the dxg emulator: in-process scenarios to a trace, or a FUSE /dev/dxg.
    Emulate(emulate::EmulateArgs),
    /// Run a client scenario against a device path.
    Workload(workload::WorkloadArgs),
    /// Serve the web UI over a set of traces.
    Serve(serve::ServeArgs),
    /// Statistics per ioctl, process, thread and VMBus command.
    Stats(stats::StatsArgs),
    /// Export a trace as Parquet, Perfetto JSON or JSON lines.
    Export(export::ExportArgs),
    /// Print a device's ioctl table (dxg or kvm).
    Schema(schema::SchemaArgs),
    /// Check what capture can do on this machine and how to fix what is missing.
    Doctor(doctor::DoctorArgs),
    /// Record the emulator scenarios and serve the UI over them (the main demo).
    Demo(demo::DemoArgs),
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Record(a) => record::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Trim(a) => trim::run(a),
        Command::Emulate(a) => emulate::run(a),
        Command::Workload(a) => workload::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Export(a) => export::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Demo(a) => demo::run(a),
    }
}
