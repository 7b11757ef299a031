//! Instrumentation events of the emulated driver, in driver-core's own plain types.
//!
//! `driver-core` does not depend on `traces` (DESIGN: the leaves join them), so the
//! emulator reports what it does through an [`EventSink`]; the CLI converts each
//! [`Event`] into the matching `traces` record. The events carry the same information
//! the probe records on a real kernel: every ioctl with its buffers, every VMBus message
//! sent, every reply and host→guest packet, every host signal delivered.

use std::sync::{Arc, Mutex};

/// Role of a captured ioctl buffer (mirrors the trace format's buffer roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufRole {
    /// The argument struct at syscall entry.
    StructIn,
    /// The argument struct at syscall exit.
    StructOut,
    /// A pointed-to buffer read by the driver.
    PtrIn,
    /// A pointed-to buffer written by the driver.
    PtrOut,
}

/// One buffer of an ioctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufEvent {
    /// User address.
    pub addr: u64,
    /// Role.
    pub role: BufRole,
    /// Field path (`allocation_info[0].priv_drv_data`, empty for the struct).
    pub path: String,
    /// Length the driver used.
    pub len: u64,
    /// Contents (empty if unreadable).
    pub data: Vec<u8>,
    /// The buffer could not be read.
    pub unreadable: bool,
}

/// One ioctl handled by the emulated driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoctlEvent {
    /// Sequence number (1-based), also stamped on the VMBus messages it caused.
    pub id: u64,
    /// Entry time (emulator clock, ns).
    pub ts_enter: u64,
    /// Exit time.
    pub ts_exit: u64,
    /// Caller tgid.
    pub pid: u32,
    /// Caller tid.
    pub tid: u32,
    /// fd.
    pub fd: i32,
    /// Request code.
    pub cmd: u32,
    /// Argument address.
    pub arg: u64,
    /// Full return value.
    pub ret: i64,
    /// Buffers.
    pub buffers: Vec<BufEvent>,
}

/// Direction of a VMBus event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmbusDirection {
    /// Sent by the guest (`dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg`).
    GuestToHost,
    /// The host's completion of a sync request.
    HostReply,
    /// A host-initiated packet (SIGNALGUESTEVENT, SETGUESTDATA).
    HostToGuest,
}

/// One VMBus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmbusEvent {
    /// Time (send time for requests, completion time for replies).
    pub ts: u64,
    /// Direction.
    pub dir: VmbusDirection,
    /// `None` = global channel, else the adapter LUID (u64) of the adapter channel.
    pub channel: Option<u64>,
    /// Per-channel request id (0 for async and host→guest packets).
    pub request_id: u64,
    /// Sent with `dxgvmb_send_async_msg`.
    pub is_async: bool,
    /// For replies: the value `dxgvmb_send_sync_msg` returned.
    pub status: Option<i64>,
    /// The ioctl that caused it (None during adapter bring-up / teardown outside ioctls).
    pub ioctl_id: Option<u64>,
    /// tgid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// Message bytes (requests include the ext header when present).
    pub bytes: Vec<u8>,
}

/// A host event id the guest driver signalled (what `dxgglobal_signal_host_event` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalEvent {
    /// Time.
    pub ts: u64,
    /// Guest-chosen host event id.
    pub event_id: u64,
    /// Process that registered it (0 if unknown).
    pub pid: u32,
    /// What was signalled (`cpu_event`, `unknown`).
    pub source: String,
    /// Free text.
    pub detail: String,
}

/// A remark the emulator adds to the timeline (faults injected, bounded hangs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationEvent {
    /// Time.
    pub ts: u64,
    /// tgid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// Key (`fault`, `hang`, `lost-signal`, `duplicate-signal`, `not-emulated`).
    pub key: String,
    /// Text.
    pub text: String,
}

/// open / close of the emulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdOpEvent {
    /// Time.
    pub ts: u64,
    /// tgid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// fd.
    pub fd: i32,
    /// true = open, false = close.
    pub open: bool,
    /// Device path.
    pub path: String,
    /// Return value (fd or -errno).
    pub ret: i64,
}

/// Any instrumentation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// See [`IoctlEvent`].
    Ioctl(IoctlEvent),
    /// See [`VmbusEvent`].
    Vmbus(VmbusEvent),
    /// See [`SignalEvent`].
    Signal(SignalEvent),
    /// See [`AnnotationEvent`].
    Annotation(AnnotationEvent),
    /// See [`FdOpEvent`].
    Fd(FdOpEvent),
}

/// Receives the emulator's instrumentation, in order.
pub trait EventSink: Send {
    /// One event.
    fn event(&mut self, ev: Event);
    /// Whether events are wanted at all; `false` lets the emulator skip building them
    /// (buffer captures, message copies), which is most of its per-call cost.
    fn enabled(&self) -> bool {
        true
    }
}

/// Drops everything.
#[derive(Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn event(&mut self, _ev: Event) {}
    fn enabled(&self) -> bool {
        false
    }
}

/// Collects events in a shared vector (tests, the CLI).
#[derive(Debug, Default, Clone)]
pub struct VecSink(pub Arc<Mutex<Vec<Event>>>);

impl VecSink {
    /// New empty sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Takes the events collected so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl EventSink for VecSink {
    fn event(&mut self, ev: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ev);
    }
}

/// Forwards each event to a closure (streaming into a trace writer).
pub struct FnSink<F: FnMut(Event) + Send>(pub F);

impl<F: FnMut(Event) + Send> EventSink for FnSink<F> {
    fn event(&mut self, ev: Event) {
        (self.0)(ev)
    }
}
