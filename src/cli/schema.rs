//! `dxtrace schema`: print a device's ioctl table.

use std::io::Write;
use std::process::ExitCode;

use driver_core::schema::Device;

/// Print a device's ioctl table: every ioctl's name, number, request code, struct and
/// size, class (flat / pointer-following / unsupported), embedded pointers, handle
/// effects and the VMBus commands it causes.
///
/// This is the one table the probe, the decoders, the emulator and the replayer all read.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Which device: `dxg` (/dev/dxg, dxgkrnl) or `kvm` (/dev/kvm).
    #[arg(value_parser = ["dxg", "kvm"])]
    pub device: String,

    /// Print one JSON object: {"device", "ioctls": [{"name", "nr", "code", "struct",
    /// "size", "class", "fields", "pointers", "handles", …}], "vmbus": {"global",
    /// "adapter", "host_to_guest"}, "structs": [{"name", "size", "fields"}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SchemaArgs) -> anyhow::Result<ExitCode> {
    let device = match a.device.as_str() {
        "dxg" => Device::Dxg,
        _ => Device::Kvm,
    };
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &driver_core::render::schema_json(device))?;
        writeln!(out)?;
    } else {
        out.write_all(driver_core::render::schema_text(device).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
