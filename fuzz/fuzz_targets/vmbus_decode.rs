//! VMBus message decoders in every direction, with and without the extended header.
#![no_main]

use driver_core::decode::{VmbusDirection, decode_vmbus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_vmbus(VmbusDirection::GuestToHost, data);
    let _ = decode_vmbus(VmbusDirection::HostToGuest, data);
    let _ = decode_vmbus(VmbusDirection::Reply { request: None }, data);
    // Replies to each command the request bytes name, if any.
    let req = decode_vmbus(VmbusDirection::GuestToHost, data);
    let _ = decode_vmbus(VmbusDirection::Reply { request: req.cmd }, data);
});
