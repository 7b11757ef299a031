//! The emulator's FUSE `/dev/dxg` as a small release-buildable daemon for the probe's
//! benchmark: `emu_mount emulate --mount DIR` (the same arguments as `dxtrace emulate
//! --mount DIR` without `-o`) serves DIR/dxg until SIGTERM or SIGINT. It links
//! driver-core's emulator, so it exports the VMBus functions the probe's uprobes attach
//! to, like `dxtrace` does, without building the whole CLI (and polars) in release.

use std::path::PathBuf;

use driver_core::emulator::{Emulator, EmulatorConfig, FnSink, FuseMount};

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .next_back()
            .filter(|a| a != "--mount")
            .ok_or_else(|| anyhow::anyhow!("usage: emu_mount emulate --mount DIR"))?,
    );
    // SAFETY: plain signal-mask calls on a local set; done before any thread starts, so
    // every thread (the FUSE workers included) inherits the blocked mask and sigwait below
    // is the only taker.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let emu = Emulator::new(EmulatorConfig::default(), Box::new(FnSink(|_| {})));
    let mount = FuseMount::mount(emu, &dir)?;
    println!(
        "serving {} (SIGINT or SIGTERM unmounts)",
        mount.device().display()
    );
    let mut sig = 0;
    // SAFETY: `set` is initialised above.
    unsafe { libc::sigwait(&set, &mut sig) };
    mount.unmount()?;
    Ok(())
}
