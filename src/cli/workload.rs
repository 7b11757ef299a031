//! `dxtrace workload`: run a client scenario against a device path.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use driver_core::RealDevice;
use driver_core::workload;

/// Run a client scenario against a device path (the real /dev/dxg on WSL2, /dev/kvm for
/// kvm-smoke).
#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Scenario name.
    name: Option<String>,
    /// List the scenarios, one a line, name first.
    #[arg(long)]
    list: bool,
    /// Device path.
    #[arg(long)]
    device: Option<PathBuf>,
    /// Write one JSON line per ioctl (`ioctl`, `code`, `ret`, `out`).
    #[arg(long)]
    log: Option<PathBuf>,
}

pub fn run(a: WorkloadArgs) -> anyhow::Result<ExitCode> {
    if a.list {
        for s in workload::SCENARIOS {
            writeln!(std::io::stdout(), "{}\t{}\t{}", s.name, s.device, s.about)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = a.name else {
        bail!("a scenario name is required (see --list)")
    };
    let s = workload::scenario(&name)
        .with_context(|| format!("unknown scenario {name:?} (see --list)"))?;
    let device = a.device.unwrap_or_else(|| {
        PathBuf::from(if s.device == "kvm" {
            "/dev/kvm"
        } else {
            "/dev/dxg"
        })
    });
    let mut file = match &a.log {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };
    let mut backend = RealDevice::new();
    let log = file.as_mut().map(|f| f as &mut dyn std::io::Write);
    let (calls, notes) = workload::run(&name, &mut backend, &device, log)?;
    writeln!(
        std::io::stdout(),
        "{name}: {} ioctls on {}",
        calls.len(),
        device.display()
    )?;
    for n in notes {
        writeln!(std::io::stdout(), "  {n}")?;
    }
    Ok(ExitCode::SUCCESS)
}
