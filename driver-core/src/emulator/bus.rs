//! The emulated VMBus: channels, the exported send functions, the clock and the inbound
//! (host→guest) queue.
//!
//! `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg` carry the driver's names and C
//! signatures and every message goes through them, so an eBPF uprobe on those symbols in
//! the `dxtrace` binary sees the same arguments a kprobe sees on a WSL2 kernel.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::host::{Host, HostOutcome};
use super::sink::{AnnotationEvent, Event, EventSink, VmbusDirection, VmbusEvent};
use crate::dxg::vmbus::MAX_PACKET_SIZE;

/// The emulator's clock: virtual nanoseconds, advanced by the latency model.
///
/// In deterministic mode it starts at a fixed value and only moves when the model says
/// so, so the same inputs give the same timestamps. Otherwise it follows CLOCK_MONOTONIC
/// and never goes backwards.
#[derive(Debug)]
pub struct Clock {
    deterministic: bool,
    cur: AtomicU64,
}

/// Start of the deterministic clock (1 s, so timestamps are never 0).
pub const DETERMINISTIC_BASE_NS: u64 = 1_000_000_000;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Clock {
    /// New clock.
    pub fn new(deterministic: bool) -> Clock {
        let start = if deterministic {
            DETERMINISTIC_BASE_NS
        } else {
            monotonic_ns()
        };
        Clock {
            deterministic,
            cur: AtomicU64::new(start),
        }
    }
    /// Now.
    pub fn now(&self) -> u64 {
        if self.deterministic {
            self.cur.load(Ordering::SeqCst)
        } else {
            let real = monotonic_ns();
            self.cur.fetch_max(real, Ordering::SeqCst).max(real)
        }
    }
    /// Moves the clock `ns` forward; returns the new time.
    pub fn advance(&self, ns: u64) -> u64 {
        let t = self.now() + ns;
        self.cur.fetch_max(t, Ordering::SeqCst);
        t
    }
    /// Moves the clock to at least `t`.
    pub fn advance_to(&self, t: u64) {
        self.cur.fetch_max(t, Ordering::SeqCst);
    }
}

/// Who is calling (stamped on every event).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallCtx {
    /// tgid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// Current ioctl id.
    pub ioctl_id: Option<u64>,
}

/// Everything the exported send functions reach through a channel pointer.
pub struct Bus {
    /// The host: the fake host GPU, or a replay's recorded replies.
    pub host: Mutex<Box<dyn Host>>,
    /// Instrumentation.
    pub sink: Mutex<Box<dyn EventSink>>,
    /// Clock.
    pub clock: Clock,
    /// Host→guest packets not yet processed by the guest.
    pub inbound: Mutex<VecDeque<Vec<u8>>>,
    /// Caller.
    pub ctx: Mutex<CallCtx>,
    /// The sink wants events ([`EventSink::enabled`]); when not, none are built.
    pub recording: bool,
}

impl Bus {
    /// Emits one event.
    pub fn emit(&self, ev: Event) {
        if !self.recording {
            return;
        }
        self.sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .event(ev);
    }
    /// Current caller.
    pub fn ctx(&self) -> CallCtx {
        *self.ctx.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Adds an annotation at the current time.
    pub fn annotate(&self, key: &str, text: String) {
        let c = self.ctx();
        self.emit(Event::Annotation(AnnotationEvent {
            ts: self.clock.now(),
            pid: c.pid,
            tid: c.tid,
            key: key.into(),
            text,
        }));
    }
}

/// A VMBus channel as the driver sees it (`struct dxgvmbuschannel`). `adapter_luid` is
/// 0 for the global channel.
#[repr(C)]
pub struct DxgVmbusChannel {
    /// The bus (never null while the emulator lives).
    pub bus: *const Bus,
    /// LUID of the adapter this channel belongs to; 0 = global channel.
    pub adapter_luid: u64,
    /// `packet_request_id`: per channel, the first request gets 1.
    pub request_id: AtomicU64,
}

// SAFETY: the raw bus pointer targets an `Arc<Bus>` kept alive by the emulator that owns
// the channel; all shared state behind it is in mutexes / atomics.
unsafe impl Send for DxgVmbusChannel {}
// SAFETY: as above.
unsafe impl Sync for DxgVmbusChannel {}

/// What a send returned that is not a plain errno: the host never answered.
pub const SEND_HANG: i32 = -libc::ETIMEDOUT;

/// `int dxgvmb_send_sync_msg(struct dxgvmbuschannel *channel, void *command, u32 cmd_size,
/// void *result, u32 result_size)` — the driver's sync send: the request goes to the
/// host, the reply's first `result_size` bytes land in `result`.
///
/// Returns 0, -EINVAL (size above 131072), -EOVERFLOW (reply shorter than expected), or
/// -ETIMEDOUT when an injected hang bounds what would be an endless wait.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`]; `command` to `cmd_size` readable
/// bytes; `result` to `result_size` writable bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn dxgvmb_send_sync_msg(
    channel: *mut c_void,
    command: *const c_void,
    cmd_size: u32,
    result: *mut c_void,
    result_size: u32,
) -> i32 {
    if cmd_size > MAX_PACKET_SIZE || result_size > MAX_PACKET_SIZE {
        return -libc::EINVAL;
    }
    // SAFETY: guaranteed by the caller.
    let ch = unsafe { &*(channel as *const DxgVmbusChannel) };
    // SAFETY: the bus outlives its channels.
    let bus = unsafe { &*ch.bus };
    // SAFETY: guaranteed by the caller.
    let req = unsafe { std::slice::from_raw_parts(command as *const u8, cmd_size as usize) };
    let request_id = ch.request_id.fetch_add(1, Ordering::SeqCst) + 1;
    let c = bus.ctx();
    let channel_id = (ch.adapter_luid != 0).then_some(ch.adapter_luid);
    if bus.recording {
        bus.emit(Event::Vmbus(VmbusEvent {
            ts: bus.clock.now(),
            dir: VmbusDirection::GuestToHost,
            channel: channel_id,
            request_id,
            is_async: false,
            status: None,
            ioctl_id: c.ioctl_id,
            pid: c.pid,
            tid: c.tid,
            bytes: req.to_vec(),
        }));
    }
    let outcome = bus.host.lock().unwrap_or_else(|e| e.into_inner()).process(
        req,
        false,
        &bus.clock,
        &bus.inbound,
    );
    match outcome {
        HostOutcome::Reply(reply) => {
            let ret = if reply.len() < result_size as usize {
                -libc::EOVERFLOW
            } else {
                // SAFETY: guaranteed by the caller; the length is checked above.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        reply.as_ptr(),
                        result as *mut u8,
                        result_size as usize,
                    )
                };
                0
            };
            if !bus.recording {
                return ret;
            }
            bus.emit(Event::Vmbus(VmbusEvent {
                ts: bus.clock.now(),
                dir: VmbusDirection::HostReply,
                channel: channel_id,
                request_id,
                is_async: false,
                status: Some(ret as i64),
                ioctl_id: c.ioctl_id,
                pid: c.pid,
                tid: c.tid,
                bytes: reply,
            }));
            ret
        }
        HostOutcome::NoReply { waited_ns } => {
            bus.clock.advance(waited_ns);
            bus.annotate(
                "hang",
                format!(
                    "no completion for request id {request_id} on the {} channel after {} ms; \
                     the real driver waits forever (wait_for_completion_killable), the emulator \
                     fails the ioctl with -ETIMEDOUT",
                    if channel_id.is_some() {
                        "adapter"
                    } else {
                        "global"
                    },
                    waited_ns / 1_000_000
                ),
            );
            SEND_HANG
        }
        HostOutcome::Accepted => -libc::EPROTO,
    }
}

/// `int dxgvmb_send_async_msg(struct dxgvmbuschannel *channel, void *command, u32
/// cmd_size)` — fire-and-forget send (request id 0, no completion). Like the driver it
/// refuses adapter channels with -EINVAL.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`] and `command` to `cmd_size`
/// readable bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn dxgvmb_send_async_msg(
    channel: *mut c_void,
    command: *const c_void,
    cmd_size: u32,
) -> i32 {
    if cmd_size > MAX_PACKET_SIZE {
        return -libc::EINVAL;
    }
    // SAFETY: guaranteed by the caller.
    let ch = unsafe { &*(channel as *const DxgVmbusChannel) };
    if ch.adapter_luid != 0 {
        return -libc::EINVAL;
    }
    // SAFETY: the bus outlives its channels.
    let bus = unsafe { &*ch.bus };
    // SAFETY: guaranteed by the caller.
    let req = unsafe { std::slice::from_raw_parts(command as *const u8, cmd_size as usize) };
    let c = bus.ctx();
    if bus.recording {
        bus.emit(Event::Vmbus(VmbusEvent {
            ts: bus.clock.now(),
            dir: VmbusDirection::GuestToHost,
            channel: None,
            request_id: 0,
            is_async: true,
            status: None,
            ioctl_id: c.ioctl_id,
            pid: c.pid,
            tid: c.tid,
            bytes: req.to_vec(),
        }));
    }
    let _ = bus.host.lock().unwrap_or_else(|e| e.into_inner()).process(
        req,
        true,
        &bus.clock,
        &bus.inbound,
    );
    0
}

/// Keeps the exported symbols referenced so the linker never drops them from the binary
/// (the uprobe needs them even in a build whose only caller is inlined elsewhere).
#[used]
static KEEP_SEND_SYMBOLS: [unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    u32,
    *mut c_void,
    u32,
) -> i32; 1] = [dxgvmb_send_sync_msg];
#[used]
static KEEP_ASYNC_SYMBOL: [unsafe extern "C" fn(*mut c_void, *const c_void, u32) -> i32; 1] =
    [dxgvmb_send_async_msg];
