//! The dxg and kvm ioctl decoders and the pointer walker: arbitrary request codes
//! (biased towards the tables' codes) and arbitrary captured buffers.
#![no_main]

use driver_core::decode::{BufferRole, BufferView, decode_ioctl};
use driver_core::schema::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let pick = u16::from_le_bytes([data[0], data[1]]) as usize;
    let raw = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
    let dxg = Device::Dxg.table();
    let kvm = Device::Kvm.table();
    // Half the time a real code, so the per-ioctl decoders get exercised.
    let code = match pick % 4 {
        0 => dxg[pick / 4 % dxg.len()].code,
        1 => kvm[pick / 4 % kvm.len()].code,
        _ => raw,
    };
    let body = &data[6..];
    let split = body.len() / 2;
    let paths = ["", "allocation_info", "allocation_info[0].priv_drv_data", "priv_drv_data", "x[99999]"];
    let bufs = [
        BufferView { role: BufferRole::StructIn, path: "", addr: 0x1000, data: &body[..split], truncated: false, unreadable: false },
        BufferView { role: BufferRole::StructOut, path: "", addr: 0x1000, data: &body[split..], truncated: pick % 3 == 0, unreadable: false },
        BufferView { role: BufferRole::PtrIn, path: paths[pick % paths.len()], addr: 0x2000, data: body, truncated: false, unreadable: pick % 5 == 0 },
    ];
    let call = decode_ioctl(code, 0x1000, &bufs);
    let _ = call.to_text();
    let _ = driver_core::ntstatus::render_return(code as i32 as i64, pick % 2 == 0);
});
