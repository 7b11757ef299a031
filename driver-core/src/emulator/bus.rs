//! The emulated VMBus: channels, the exported send functions, the clock and the inbound
//! (host→guest) queue.
//!
//! `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg` carry the driver's names and C
//! signatures and every message goes through them, so an eBPF uprobe on those symbols in
//! the `dxtrace` binary sees the same arguments a kprobe sees on a WSL2 kernel.

use std::cell::{RefCell, RefMut};
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
///
/// Its users are serialised: every caller runs inside a driver call, under the emulator's
/// driver lock (the same reasoning as [`Serial`]), so updates are a plain load and store
/// (a `SeqCst` `fetch_max` is a locked compare-and-swap loop, several per ioctl). Callers
/// racing without that lock would not corrupt it, but one of two concurrent advances
/// could be lost.
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
        let cur = self.cur.load(Ordering::Relaxed);
        if self.deterministic {
            cur
        } else {
            let real = monotonic_ns();
            if real > cur {
                self.cur.store(real, Ordering::Relaxed);
            }
            cur.max(real)
        }
    }
    /// Moves the clock `ns` forward; returns the new time.
    pub fn advance(&self, ns: u64) -> u64 {
        let t = self.now() + ns;
        self.advance_to(t);
        t
    }
    /// Moves the clock to at least `t`.
    pub fn advance_to(&self, t: u64) {
        if t > self.cur.load(Ordering::Relaxed) {
            self.cur.store(t, Ordering::Relaxed);
        }
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

/// Bus state reached through the exported functions' raw channel pointers, without a
/// lock of its own.
///
/// A bus belongs to one driver and every path to it runs inside a call into that driver,
/// with the emulator's driver lock held: [`super::Emulator`] keeps the driver behind a
/// `Mutex`, and a bus (hence a channel) can only be built in this crate. Accesses are
/// thereby serialised, so each piece of bus state is a `RefCell` (a plain borrow flag,
/// which also turns an overlapping borrow into a panic) instead of a mutex: the replay
/// profile showed ~10 uncontended lock/unlock pairs per ioctl on the bus, each a pair of
/// atomic read-modify-writes taken while the driver lock was already held.
pub struct Serial<T>(RefCell<T>);

// SAFETY: see the type's documentation: every access to a `Serial` is made by the thread
// holding the driver lock of the driver that owns it, so no two threads touch it at once,
// and the lock's acquire/release orders the accesses of successive holders.
unsafe impl<T: Send> Sync for Serial<T> {}

impl<T> Serial<T> {
    /// Wraps `v` (crate-only: only the emulator builds buses).
    pub(crate) fn new(v: T) -> Serial<T> {
        Serial(RefCell::new(v))
    }
    /// Borrows the state (crate-only, see the type's documentation). Panics if it is
    /// already borrowed (a re-entrant path).
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, T> {
        self.0.borrow_mut()
    }
}

/// Everything the exported send functions reach through a channel pointer.
pub struct Bus {
    /// The host: the fake host GPU, or a replay's recorded replies.
    pub host: Serial<Box<dyn Host>>,
    /// Instrumentation.
    pub sink: Mutex<Box<dyn EventSink>>,
    /// Clock.
    pub clock: Clock,
    /// Host→guest packets not yet processed by the guest.
    pub inbound: Serial<VecDeque<Vec<u8>>>,
    /// The host's completion of the message being sent ([`Host::process`] fills it), reused
    /// from message to message.
    pub reply: Serial<Vec<u8>>,
    /// Caller.
    pub ctx: Serial<CallCtx>,
    /// The sink wants events ([`EventSink::enabled`]); when not, none are built.
    pub recording: bool,
}

impl Bus {
    /// Hands guest→host message `req` to the host, with the reused reply buffer emptied
    /// for its completion; returns the host's outcome and that buffer (held until the
    /// caller is done with the reply). Inlined: it is on every message's path, and out
    /// of line it cost ~18 instructions per replayed call.
    #[inline]
    fn to_host(&self, req: &[u8], is_async: bool) -> (HostOutcome, RefMut<'_, Vec<u8>>) {
        let mut reply = self.reply.borrow_mut();
        reply.clear();
        let outcome = self.host.borrow_mut().process(
            req,
            is_async,
            &self.clock,
            &mut self.inbound.borrow_mut(),
            &mut reply,
        );
        (outcome, reply)
    }
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
    /// Current caller, for stamping events: the default when no events are recorded
    /// (they would be dropped by [`Bus::emit`]), without taking the lock.
    pub fn ctx(&self) -> CallCtx {
        if !self.recording {
            return CallCtx::default();
        }
        *self.ctx.borrow_mut()
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
    /// The packet the iterator returned last (`struct vmpacket_descriptor` + payload,
    /// padded to 8 bytes); valid until the next iterator call, like the kernel's copy.
    rx: Serial<Vec<u64>>,
    /// The payload of the packet in `rx` (padded like it), for [`dxgvmbuschannel_receive`]
    /// to take instead of copying it out of `rx` again.
    rx_payload: Serial<Vec<u8>>,
    /// Host→guest payloads [`dxgvmbuschannel_receive`] took, for the driver to process.
    pub received: Serial<VecDeque<Vec<u8>>>,
}

impl DxgVmbusChannel {
    /// A channel of `bus`; `adapter_luid` 0 is the global channel. Offsets of the first
    /// three fields are fixed (`repr(C)`): the probe's uprobes read `adapter_luid` at 8
    /// and `request_id` at 16.
    pub fn new(bus: *const Bus, adapter_luid: u64) -> DxgVmbusChannel {
        DxgVmbusChannel {
            bus,
            adapter_luid,
            request_id: AtomicU64::new(0),
            rx: Serial::new(Vec::new()),
            rx_payload: Serial::new(Vec::new()),
            received: Serial::new(VecDeque::new()),
        }
    }
}

// SAFETY: the raw bus pointer targets an `Arc<Bus>` kept alive by the emulator that owns
// the channel; the state behind it is in atomics, a mutex (the sink) and `Serial` cells,
// which are only accessed under the owning driver's lock (see `Serial`).
unsafe impl Send for DxgVmbusChannel {}
// SAFETY: as above.
unsafe impl Sync for DxgVmbusChannel {}

/// What a send returned that is not a plain errno: the host never answered.
/// Copies `n` bytes from `src` to `dst` (not overlapping). The copies of up to 32 bytes
/// of a message's statuses, handles and small structs are done inline: a call to `memcpy`
/// for each cost more than the copy.
///
/// # Safety
/// As [`std::ptr::copy_nonoverlapping`]: `src` readable and `dst` writable for `n`
/// bytes, the two not overlapping.
#[inline(always)]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY (all branches): every access is within the first `n` bytes of `src` and
    // `dst` (guaranteed by the caller); overlapping stores write the same bytes.
    unsafe {
        if n > 32 {
            std::ptr::copy_nonoverlapping(src, dst, n);
        } else if n > 16 {
            let a = src.cast::<[u8; 16]>().read_unaligned();
            let b = src.add(n - 16).cast::<[u8; 16]>().read_unaligned();
            dst.cast::<[u8; 16]>().write_unaligned(a);
            dst.add(n - 16).cast::<[u8; 16]>().write_unaligned(b);
        } else if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
    }
}

pub const SEND_HANG: i32 = -libc::ETIMEDOUT;

/// `int dxgvmb_send_sync_msg(struct dxgvmbuschannel *channel, void *command, u32 cmd_size,
/// void *result, u32 result_size)` — the driver's sync send: the request goes to the
/// host, the reply's first `result_size` bytes land in `result`.
///
/// Returns 0, -EINVAL (size above 131072), -EOVERFLOW (reply shorter than expected), or
/// -ETIMEDOUT when an injected hang bounds what would be an endless wait.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]); `command` to `cmd_size` readable
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
    // The channel is used under its driver's lock (the contract above): a load and a
    // store, not a locked read-modify-write per message.
    let request_id = ch.request_id.load(Ordering::Relaxed) + 1;
    ch.request_id.store(request_id, Ordering::Relaxed);
    // SAFETY: `command` holds `cmd_size` readable bytes (guaranteed by the caller).
    unsafe {
        vmbus_sendpacket(
            channel,
            command,
            cmd_size,
            request_id,
            VM_PKT_DATA_INBAND as u32,
            VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED,
        )
    };
    let c = bus.ctx();
    // Only events and the hang note name the channel: worked out where they are built.
    let channel_id = || (ch.adapter_luid != 0).then_some(ch.adapter_luid);
    if bus.recording {
        bus.emit(Event::Vmbus(VmbusEvent {
            ts: bus.clock.now(),
            dir: VmbusDirection::GuestToHost,
            channel: channel_id(),
            request_id,
            is_async: false,
            status: None,
            ioctl_id: c.ioctl_id,
            pid: c.pid,
            tid: c.tid,
            bytes: req.to_vec(),
        }));
    }
    let (outcome, mut reply) = bus.to_host(req, false);
    match outcome {
        HostOutcome::Reply => {
            let ret = if reply.len() < result_size as usize {
                -libc::EOVERFLOW
            } else {
                // SAFETY: guaranteed by the caller; the length is checked above.
                unsafe { copy_bytes(reply.as_ptr(), result as *mut u8, result_size as usize) };
                0
            };
            if reply.capacity() > MAX_KEPT_REPLY {
                // A rare large reply is not kept for the next message.
                let r = std::mem::take(&mut *reply);
                drop(reply);
                if bus.recording {
                    emit_reply(bus, channel_id(), request_id, ret, c, r);
                }
                return ret;
            }
            if !bus.recording {
                return ret;
            }
            let bytes = super::pool::copy(&reply);
            drop(reply);
            emit_reply(bus, channel_id(), request_id, ret, c, bytes);
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
                    if channel_id().is_some() {
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

/// A reply buffer with more capacity than this is not kept for the next message.
const MAX_KEPT_REPLY: usize = 64 << 10;

/// The host reply event of a sync send.
fn emit_reply(
    bus: &Bus,
    channel: Option<u64>,
    request_id: u64,
    ret: i32,
    c: CallCtx,
    bytes: Vec<u8>,
) {
    bus.emit(Event::Vmbus(VmbusEvent {
        ts: bus.clock.now(),
        dir: VmbusDirection::HostReply,
        channel,
        request_id,
        is_async: false,
        status: Some(ret as i64),
        ioctl_id: c.ioctl_id,
        pid: c.pid,
        tid: c.tid,
        bytes,
    }));
}

/// `int dxgvmb_send_async_msg(struct dxgvmbuschannel *channel, void *command, u32
/// cmd_size)` — fire-and-forget send (request id 0, no completion). Like the driver it
/// refuses adapter channels with -EINVAL.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]) and `command` to `cmd_size`
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
    // SAFETY: as above.
    unsafe { vmbus_sendpacket(channel, command, cmd_size, 0, VM_PKT_DATA_INBAND as u32, 0) };
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
    // An async message has no completion: whatever the host wrote is dropped.
    bus.to_host(req, true).1.clear();
    0
}

/// `VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED`: set on sync sends.
pub const VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED: u32 = 1;

/// `int vmbus_sendpacket(struct vmbus_channel *channel, void *buffer, u32 bufferlen, u64
/// requestid, enum vmbus_packet_type type, u32 flags)` (drivers/hv/channel.c): where a
/// packet leaves the guest, with the request id the sync send assigned it (0 for async
/// sends). The emulator's host is called by the send functions themselves right after, so
/// this only marks the point; it is exported under the kernel's name and signature because
/// it is where a probe reads a send's request id once it is final (kprobe in the kernel,
/// uprobe on the emulator): the channel counter it comes from can be advanced by another
/// thread's send at any moment.
///
/// # Safety
/// `buffer` must point to `bufferlen` readable bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn vmbus_sendpacket(
    channel: *mut c_void,
    buffer: *const c_void,
    bufferlen: u32,
    requestid: u64,
    type_: u32,
    flags: u32,
) -> i32 {
    // Keep every argument live in its register at the call, as the probe reads them.
    std::hint::black_box((channel, buffer, bufferlen, requestid, type_, flags));
    0
}

#[used]
static KEEP_SENDPACKET_SYMBOL: [unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    u32,
    u64,
    u32,
    u32,
) -> i32; 1] = [vmbus_sendpacket];

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

/// `struct vmpacket_descriptor` (include/linux/hyperv.h): the header of every VMBus
/// packet, as the ring-buffer packet iterator returns it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VmpacketDescriptor {
    /// `VM_PKT_*`.
    pub type_: u16,
    /// Offset of the payload from the descriptor, in 8-byte units.
    pub offset8: u16,
    /// Length of descriptor + payload, in 8-byte units.
    pub len8: u16,
    /// `VMBUS_DATA_PACKET_FLAG_*`.
    pub flags: u16,
    /// Request id (completions) or 0.
    pub trans_id: u64,
}

/// `VM_PKT_DATA_INBAND`: a packet whose payload follows its descriptor.
pub const VM_PKT_DATA_INBAND: u16 = 6;

/// Takes the next host→guest packet off the inbound queue into the channel's receive
/// copy and returns its descriptor, or null when the ring is empty.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]).
unsafe fn next_packet(channel: *mut c_void) -> *const VmpacketDescriptor {
    // SAFETY: guaranteed by the caller.
    let ch = unsafe { &*(channel as *const DxgVmbusChannel) };
    // SAFETY: the bus outlives its channels.
    let bus = unsafe { &*ch.bus };
    let Some(mut p) = bus.inbound.borrow_mut().pop_front() else {
        return std::ptr::null();
    };
    let hdr = size_of::<VmpacketDescriptor>();
    let words = (hdr + p.len()).div_ceil(8);
    let desc = VmpacketDescriptor {
        type_: VM_PKT_DATA_INBAND,
        offset8: (hdr / 8) as u16,
        len8: words as u16,
        flags: 0,
        trans_id: 0,
    };
    let mut rx = ch.rx.borrow_mut();
    rx.clear();
    rx.resize(words, 0);
    let base = rx.as_mut_ptr() as *mut u8;
    // SAFETY: `rx` holds `words * 8 >= hdr + p.len()` bytes, 8-aligned.
    unsafe {
        std::ptr::write(base as *mut VmpacketDescriptor, desc);
        std::ptr::copy_nonoverlapping(p.as_ptr(), base.add(hdr), p.len());
    }
    // The payload as the copy holds it: padded with zeros to the descriptor's length.
    p.resize(words * 8 - hdr, 0);
    let old = std::mem::replace(&mut *ch.rx_payload.borrow_mut(), p);
    // The receive loop takes each payload, so the one replaced is empty (no capacity) but
    // for a packet nobody received: only that one goes back to the pool (a call otherwise).
    if old.capacity() != 0 {
        super::pool::give(old);
    }
    base as *const VmpacketDescriptor
}

/// `struct vmpacket_descriptor *hv_pkt_iter_first(struct vmbus_channel *channel)`: the
/// first pending packet of the channel's inbound ring, or null.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn hv_pkt_iter_first(channel: *mut c_void) -> *const VmpacketDescriptor {
    // SAFETY: guaranteed by the caller.
    unsafe { next_packet(channel) }
}

/// `struct vmpacket_descriptor *__hv_pkt_iter_next(struct vmbus_channel *channel, const
/// struct vmpacket_descriptor *pkt)`: the packet after `pkt`, or null.
///
/// # Safety
/// `channel` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn __hv_pkt_iter_next(
    channel: *mut c_void,
    _pkt: *const VmpacketDescriptor,
) -> *const VmpacketDescriptor {
    // SAFETY: guaranteed by the caller.
    unsafe { next_packet(channel) }
}

/// `void dxgvmbuschannel_receive(void *ctx)` — the channel callback: walks the pending
/// host→guest packets with the packet iterator (`foreach_vmbus_pkt`) and queues each
/// payload on [`DxgVmbusChannel::received`] for the driver. A uprobe here and
/// uretprobes on the iterator see what kernel hooks on the same functions see.
///
/// # Safety
/// `ctx` must point to a live [`DxgVmbusChannel`], used under its
/// driver's lock ([`Serial`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn dxgvmbuschannel_receive(ctx: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    let ch = unsafe { &*(ctx as *const DxgVmbusChannel) };
    // SAFETY: as above.
    let mut desc = unsafe { hv_pkt_iter_first(ctx) };
    while !desc.is_null() {
        // SAFETY: `desc` is the channel's receive copy, `len8 * 8` bytes long.
        let payload = unsafe {
            let d = &*desc;
            let off = d.offset8 as usize * 8;
            let len = d.len8 as usize * 8 - off;
            std::slice::from_raw_parts((desc as *const u8).add(off), len)
        };
        // The iterator kept the payload it copied to `desc` (the same bytes): taken rather
        // than copied a second time.
        let taken = std::mem::take(&mut *ch.rx_payload.borrow_mut());
        debug_assert_eq!(&taken[..], payload);
        ch.received
            .borrow_mut()
            .push_back(if taken[..] == *payload {
                taken
            } else {
                super::pool::copy(payload)
            });
        // SAFETY: as above.
        desc = unsafe { __hv_pkt_iter_next(ctx, desc) };
    }
}

#[used]
static KEEP_RECEIVE_SYMBOLS: [unsafe extern "C" fn(*mut c_void); 1] = [dxgvmbuschannel_receive];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::sink::NullSink;

    /// A host that is never sent anything (the test only queues host→guest packets).
    struct Silent;

    impl Host for Silent {
        fn process(
            &mut self,
            _: &[u8],
            _: bool,
            _: &Clock,
            _: &mut VecDeque<Vec<u8>>,
            _: &mut Vec<u8>,
        ) -> HostOutcome {
            HostOutcome::Accepted
        }
        fn map_io(&mut self, _: u64) -> Option<u64> {
            None
        }
        fn remove_device(&mut self, _: &mut VecDeque<Vec<u8>>) {}
        fn advance(&mut self, _: u64, _: &mut VecDeque<Vec<u8>>) {}
        fn next_completion(&self) -> Option<u64> {
            None
        }
    }

    /// The receive callback queues each packet's payload as the iterator's copy holds it
    /// (padded with zeros to 8 bytes), in order.
    /// Every length, through each of copy_bytes' branches (inline small copies, memcpy
    /// past 32 bytes), copies exactly `n` bytes: the bytes before and after the
    /// destination range are untouched.
    #[test]
    fn copy_bytes_copies_exactly_n_bytes() {
        let src: Vec<u8> = (1..=80).collect();
        for n in 0..=70 {
            let mut dst = [0xeeu8; 80];
            // SAFETY: `src` has 80 readable bytes, `dst[5..]` 75 writable ones, n <= 70.
            unsafe { copy_bytes(src.as_ptr(), dst.as_mut_ptr().add(5), n) };
            assert!(dst[..5].iter().all(|&b| b == 0xee), "n = {n}");
            assert_eq!(&dst[5..5 + n], &src[..n], "n = {n}");
            assert!(dst[5 + n..].iter().all(|&b| b == 0xee), "n = {n}");
        }
    }

    #[test]
    fn receive_queues_the_padded_payloads_in_order() {
        let bus = Bus {
            host: Serial::new(Box::new(Silent)),
            sink: Mutex::new(Box::new(NullSink)),
            clock: Clock::new(true),
            inbound: Serial::new(VecDeque::new()),
            reply: Serial::new(Vec::new()),
            ctx: Serial::new(CallCtx::default()),
            recording: false,
        };
        let ch = DxgVmbusChannel::new(&bus, 0);
        let a: Vec<u8> = (1..=45).collect();
        let b: Vec<u8> = (100..148).collect();
        bus.inbound.borrow_mut().push_back(a.clone());
        bus.inbound.borrow_mut().push_back(b.clone());
        let chp = &ch as *const DxgVmbusChannel as *mut c_void;
        // SAFETY: a live channel of a live bus, used by this thread only.
        unsafe { dxgvmbuschannel_receive(chp) };
        let got: Vec<Vec<u8>> = ch.received.borrow_mut().drain(..).collect();
        let mut a48 = a;
        a48.resize(48, 0);
        assert_eq!(got, vec![a48, b]);
        assert!(bus.inbound.borrow_mut().is_empty());
        // Nothing left: the next receive queues nothing.
        // SAFETY: as above.
        unsafe { dxgvmbuschannel_receive(chp) };
        assert!(ch.received.borrow_mut().is_empty());
    }
}
