//! `dxtrace doctor`: what capture can do on this machine.

use std::io::Write as _;
use std::process::ExitCode;

/// Check what capture can do on this machine and how to fix what is missing.
///
/// Tries each thing for real: loads a tracepoint, fentry, kprobe and uprobe program,
/// reads BTF, looks for /dev/dxg and the dxgkrnl functions. Exit status 0 if `dxtrace
/// record` can work here (possibly without VMBus capture), 1 otherwise.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn run(_a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = probe::doctor::run();
    let mut failed = false;
    for c in &checks {
        writeln!(
            std::io::stdout(),
            "[{:>4}] {:<22} {}",
            c.status.label(),
            c.name,
            c.detail
        )?;
        if !c.fix.is_empty() {
            writeln!(std::io::stdout(), "       {:<22} fix: {}", "", c.fix)?;
        }
        failed |= c.status == probe::doctor::Status::Fail;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
