//! The FUSE device's ioctl request path (`emulator::fuse::serve_ioctl`, what the daemon
//! runs for every FUSE_IOCTL): sequences of up to 32 calls with arbitrary request codes
//! (mostly dxg's own, so the driver logic behind each one runs) and struct bytes, with
//! embedded pointers resolving into a 64 KiB region filled from the input. The emulator
//! keeps its state across the calls of one input, so handles created early are used by
//! later calls.
#![no_main]

use driver_core::backend::RegionMemory;
use driver_core::emulator::fuse::serve_ioctl;
use driver_core::emulator::{Emulator, EmulatorConfig, NullSink};
use driver_core::schema::Device;
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x10000;
const REGION: usize = 0x10000;

fuzz_target!(|data: &[u8]| {
    let emu = Emulator::new(
        EmulatorConfig {
            deterministic: true,
            comm: Some("fuzz".into()),
            ..EmulatorConfig::default()
        },
        Box::new(NullSink),
    );
    let Ok(file) = emu.open(100, 100) else { return };
    let mut region = vec![0u8; REGION];
    let n = data.len().min(REGION);
    region[..n].copy_from_slice(&data[..n]);
    let mut mem = RegionMemory::new();
    mem.map(BASE, region);
    let table = Device::Dxg.table();
    let mut rest = data;
    for _ in 0..32 {
        if rest.len() < 6 {
            break;
        }
        let pick = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let off = u64::from(u16::from_le_bytes([rest[2], rest[3]]) & 0xfff8);
        let len = (rest[4] as usize * 4).min(rest.len() - 5);
        let cmd = if pick % 16 != 15 {
            table[pick % table.len()].code
        } else {
            // now and then an arbitrary code, size and direction bits included
            u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]])
        };
        let in_data = &rest[5..5 + len];
        rest = &rest[5 + len..];
        let size = (cmd >> 16) & 0x3fff;
        // the address is unknown when /proc/TID/syscall could not be read
        let arg = (pick & 0x4000 == 0).then_some(BASE + off);
        let _ = serve_ioctl(&emu, file, 100, 100, cmd, in_data, size, arg, Some(&mut mem));
    }
    emu.close(file, 100);
});
