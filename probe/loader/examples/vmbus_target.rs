//! A stand-in for the emulator's VMBus send functions, for trying the uprobes by hand:
//!
//! ```text
//! cargo build -p probe --example vmbus_target
//! dxtrace record --device /dev/kvm --uprobe-binary target/debug/examples/vmbus_target \
//!     -o /tmp/v.dxtrace -- target/debug/examples/vmbus_target 3
//! ```
//!
//! It exports `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg` / `vmbus_sendpacket` with
//! the driver's C signatures and calls each N times with recognisable bytes.

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// The head of the emulator's channel (`driver_core::emulator::DxgVmbusChannel`, whose
/// layout the probe is told): bus pointer, adapter LUID, request counter.
#[repr(C)]
struct Channel {
    bus: usize,
    adapter_luid: u64,
    request_id: AtomicU64,
}

/// Marks where the packet leaves, with its request id (the kernel's signature).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn vmbus_sendpacket(
    channel: *mut c_void,
    buffer: *const c_void,
    bufferlen: u32,
    requestid: u64,
    type_: u32,
    flags: u32,
) -> i32 {
    black_box((channel, buffer, bufferlen, requestid, type_, flags));
    0
}

/// Fills the reply with `!request` bytes and returns the command size (a recognisable
/// status). With a channel, first takes the next request id from its counter as the
/// driver does (after a short sleep, so that concurrent sends overtake each other between
/// the call and the id), and puts the id in the reply's first 8 bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dxgvmb_send_sync_msg(
    channel: *mut c_void,
    command: *const c_void,
    cmd_size: u32,
    result: *mut c_void,
    result_size: u32,
) -> i32 {
    let mut id = 0;
    if !channel.is_null() {
        std::thread::sleep(std::time::Duration::from_micros(50));
        // SAFETY: a non-null channel is a live `Channel` (see `race`).
        id = unsafe { &*channel.cast::<Channel>() }
            .request_id
            .fetch_add(1, Ordering::SeqCst)
            + 1;
    }
    vmbus_sendpacket(channel, command, cmd_size, id, 6, 1);
    // SAFETY: the caller passes valid buffers of the given sizes.
    unsafe {
        let cmd = std::slice::from_raw_parts(command.cast::<u8>(), cmd_size as usize);
        let res = std::slice::from_raw_parts_mut(result.cast::<u8>(), result_size as usize);
        for (i, r) in res.iter_mut().enumerate() {
            *r = !cmd.get(i).copied().unwrap_or(0);
        }
        if !channel.is_null() && res.len() >= 8 {
            res[..8].copy_from_slice(&id.to_le_bytes());
        }
    }
    cmd_size as i32
}

/// `vmbus_target --race THREADS N`: THREADS threads each make N sync sends on one shared
/// channel; every reply starts with the request id the send took.
fn race(threads: usize, n: usize) {
    let ch = Channel {
        bus: 0,
        adapter_luid: 0x1234,
        request_id: AtomicU64::new(0),
    };
    let addr = &ch as *const Channel as usize;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..n {
                    let cmd = [(t * 31 + i) as u8; 24];
                    let mut reply = [0u8; 16];
                    let rc = dxgvmb_send_sync_msg(
                        addr as *mut c_void,
                        black_box(cmd.as_ptr().cast()),
                        cmd.len() as u32,
                        reply.as_mut_ptr().cast(),
                        reply.len() as u32,
                    );
                    black_box((rc, reply));
                }
            });
        }
    });
    assert_eq!(
        ch.request_id.load(Ordering::SeqCst),
        (threads * n) as u64,
        "one id per send"
    );
}

/// Does nothing but look at its arguments.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dxgvmb_send_async_msg(
    channel: *mut c_void,
    command: *const c_void,
    cmd_size: u32,
) -> i32 {
    black_box((channel, command, cmd_size));
    0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `vmbus_target N`: N rounds of 64-byte sends. `vmbus_target --race THREADS N`: see
/// [`race`]. `vmbus_target --log FILE`: the probe
/// test's sequence (3 sync sends of 64, 64 and 10,000 bytes with 32-byte replies, each
/// followed by a 16-byte async send), logged as `sync RC REQ_HEX REPLY_HEX` /
/// `async RC REQ_HEX` lines for the test to compare with the capture.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--race") {
        let threads = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
        let n = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(500);
        race(threads, n);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--log") {
        let out = args.get(2).expect("--log FILE");
        let mut log = String::new();
        for i in 0..3usize {
            let size = if i == 2 { 10_000 } else { 64 };
            let cmd: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            let mut reply = vec![0u8; 32];
            let rc = dxgvmb_send_sync_msg(
                std::ptr::null_mut(),
                black_box(cmd.as_ptr().cast()),
                cmd.len() as u32,
                reply.as_mut_ptr().cast(),
                reply.len() as u32,
            );
            log.push_str(&format!("sync {rc} {} {}\n", hex(&cmd), hex(&reply)));
            let rc =
                dxgvmb_send_async_msg(std::ptr::null_mut(), black_box(cmd.as_ptr().cast()), 16);
            log.push_str(&format!("async {rc} {}\n", hex(&cmd[..16])));
        }
        std::fs::write(out, log).expect("write log");
        return;
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    for i in 0..n {
        let cmd: Vec<u8> = (0..64).map(|b| (b + i) as u8).collect();
        let mut reply = vec![0u8; 32];
        let rc = dxgvmb_send_sync_msg(
            std::ptr::null_mut(),
            cmd.as_ptr().cast(),
            cmd.len() as u32,
            reply.as_mut_ptr().cast(),
            reply.len() as u32,
        );
        black_box(rc);
        dxgvmb_send_async_msg(std::ptr::null_mut(), cmd.as_ptr().cast(), 16);
    }
}
