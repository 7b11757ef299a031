//! The records of a `.dxtrace` body. Raw and schema-agnostic: what was seen, never what
//! it means (meaning comes from `driver-core`).
//!
//! Every record is written as a two-element MessagePack array `[kind, body]`; `kind` is a
//! positive integer ([`RecordKind`]) and `body` is the record's fields as a MessagePack
//! array, in the order documented on each struct. See the crate docs for the wire rules
//! (unknown kinds, extra and missing trailing fields).

use serde::{Deserialize, Serialize};

/// Numeric record kinds on disk. Values are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum RecordKind {
    /// [`ProcessInfo`]
    Process = 1,
    /// [`FdEvent`]
    Fd = 2,
    /// [`IoctlRecord`]
    Ioctl = 3,
    /// [`VmbusMessage`]
    Vmbus = 4,
    /// [`HostSignal`]
    Signal = 5,
    /// [`Dropped`]
    Dropped = 6,
    /// [`CaptureStats`]
    Stats = 7,
    /// [`Annotation`]
    Annotation = 8,
}

impl RecordKind {
    /// All kinds this version knows, in numeric order.
    pub const ALL: [RecordKind; 8] = [
        RecordKind::Process,
        RecordKind::Fd,
        RecordKind::Ioctl,
        RecordKind::Vmbus,
        RecordKind::Signal,
        RecordKind::Dropped,
        RecordKind::Stats,
        RecordKind::Annotation,
    ];

    /// The kind for a numeric value, if this version knows it.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| *k as u16 == v)
    }

    /// Stable lower-case name, used by `dxtrace info --json` and exports.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Process => "process",
            RecordKind::Fd => "fd",
            RecordKind::Ioctl => "ioctl",
            RecordKind::Vmbus => "vmbus",
            RecordKind::Signal => "signal",
            RecordKind::Dropped => "dropped",
            RecordKind::Stats => "stats",
            RecordKind::Annotation => "annotation",
        }
    }

    /// Number of body fields this version writes for the kind (the body array length).
    pub(crate) fn field_count(self) -> usize {
        match self {
            RecordKind::Process => 7,
            RecordKind::Fd => 10,
            RecordKind::Ioctl => 11,
            RecordKind::Vmbus => 12,
            RecordKind::Signal => 6,
            RecordKind::Dropped => 4,
            RecordKind::Stats => 2,
            RecordKind::Annotation => 5,
        }
    }
}

/// A process seen by the capture. Body: `[ts, pid, ppid, comm, exe, start_ns, cmdline]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProcessInfo {
    /// When the capture learned of the process (monotonic ns, same clock as ioctls).
    pub ts: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Parent's thread-group id (0 if unknown).
    pub ppid: u32,
    /// `comm` (at most 16 bytes in the kernel).
    pub comm: String,
    /// Executable path, empty if unknown.
    pub exe: String,
    /// Process start time (monotonic ns; 0 if unknown).
    pub start_ns: u64,
    /// Command line arguments, if captured.
    pub cmdline: Vec<String>,
}

/// What happened to a file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(into = "u8", try_from = "u8")]
pub enum FdOp {
    /// The device was opened (`open`/`openat`), `fd` is the new descriptor.
    #[default]
    Open,
    /// The descriptor was closed.
    Close,
    /// An ioctl on a watched device returned a new descriptor (KVM_CREATE_VM, dxg sync
    /// files…); it is watched from now on.
    Derived,
}

impl From<FdOp> for u8 {
    fn from(v: FdOp) -> u8 {
        v as u8
    }
}

impl TryFrom<u8> for FdOp {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => FdOp::Open,
            1 => FdOp::Close,
            2 => FdOp::Derived,
            other => return Err(format!("unknown fd op {other}")),
        })
    }
}

/// Open/close of a file descriptor on a watched device.
/// Body: `[ts, pid, tid, fd, op, path, dev, ino, flags, ret]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FdEvent {
    /// Monotonic ns.
    pub ts: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The descriptor.
    pub fd: i32,
    /// Open, close or derived.
    pub op: FdOp,
    /// Path as opened (empty for derived descriptors and when unknown).
    pub path: String,
    /// `st_rdev` of the device (or `st_dev` for a FUSE file); 0 for anonymous inodes.
    pub dev: u64,
    /// Inode number (0 if unknown).
    pub ino: u64,
    /// Open flags.
    pub flags: u32,
    /// Full return value of the syscall (the new fd for open, 0 for close, -errno).
    pub ret: i64,
}

/// Role of a captured buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(into = "u8", try_from = "u8")]
pub enum BufferRole {
    /// The ioctl argument struct as read at entry.
    #[default]
    StructIn,
    /// The ioctl argument struct as read at exit.
    StructOut,
    /// A buffer an embedded pointer refers to, read at entry.
    PtrIn,
    /// A buffer an embedded pointer refers to, read at exit.
    PtrOut,
}

impl BufferRole {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BufferRole::StructIn => "struct_in",
            BufferRole::StructOut => "struct_out",
            BufferRole::PtrIn => "ptr_in",
            BufferRole::PtrOut => "ptr_out",
        }
    }
}

impl From<BufferRole> for u8 {
    fn from(v: BufferRole) -> u8 {
        v as u8
    }
}

impl TryFrom<u8> for BufferRole {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => BufferRole::StructIn,
            1 => BufferRole::StructOut,
            2 => BufferRole::PtrIn,
            3 => BufferRole::PtrOut,
            other => return Err(format!("unknown buffer role {other}")),
        })
    }
}

/// `Buffer::flags` bit: fewer bytes than `len` were stored (cut to a capture limit).
pub const BUF_TRUNCATED: u8 = 1;
/// `Buffer::flags` bit: the memory could not be read at all (`data` is empty).
pub const BUF_UNREADABLE: u8 = 2;
/// `Buffer::flags` bit: some pages of pinned memory were not resident when captured
/// (never touched, or swapped out) and are stored as zeros.
pub const BUF_ZERO_FILLED: u8 = 4;

/// One captured memory buffer. Body: `[addr, role, path, len, flags, data]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Buffer {
    /// User-space address the bytes were read from.
    pub addr: u64,
    /// Which buffer this is.
    pub role: BufferRole,
    /// Field path it came from, e.g. `""` for the struct, `"allocation_info"`,
    /// `"allocation_info[2].priv_drv_data"`.
    pub path: String,
    /// Length the program asked for (may exceed `data.len()` when truncated).
    pub len: u64,
    /// [`BUF_TRUNCATED`] | [`BUF_UNREADABLE`] | [`BUF_ZERO_FILLED`].
    pub flags: u8,
    /// The bytes (MessagePack `bin`).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl Buffer {
    /// True if fewer than `len` bytes were stored.
    pub fn truncated(&self) -> bool {
        self.flags & BUF_TRUNCATED != 0
    }
    /// True if the memory could not be read.
    pub fn unreadable(&self) -> bool {
        self.flags & BUF_UNREADABLE != 0
    }
}

/// One ioctl call. Body: `[id, ts_enter, ts_exit, pid, tid, fd, dev, cmd, arg, ret, buffers]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct IoctlRecord {
    /// Capture-assigned id, unique within the trace; VMBus records point at it.
    pub id: u64,
    /// Monotonic ns at syscall entry.
    pub ts_enter: u64,
    /// Monotonic ns at syscall exit (0 if the call never returned before the capture ended).
    pub ts_exit: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// File descriptor.
    pub fd: i32,
    /// Device number of the file (index into nothing: compare with the header's devices).
    pub dev: u64,
    /// The full 32-bit request code.
    pub cmd: u32,
    /// The argument (an address for every device this project knows).
    pub arg: u64,
    /// Full 64-bit return value of the syscall (not errno: positive NTSTATUS values and
    /// raw NTSTATUS values pass through ioctl() on dxg).
    pub ret: i64,
    /// Captured buffers (struct in/out and pointer buffers).
    pub buffers: Vec<Buffer>,
}

impl IoctlRecord {
    /// The first buffer with this role and path.
    pub fn buffer(&self, role: BufferRole, path: &str) -> Option<&Buffer> {
        self.buffers
            .iter()
            .find(|b| b.role == role && b.path == path)
    }
    /// Total bytes of captured buffer data.
    pub fn payload_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.data.len() as u64).sum()
    }
}

/// Direction of a VMBus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(into = "u8", try_from = "u8")]
pub enum VmbusDir {
    /// A request the guest sent (`dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg`).
    #[default]
    GuestToHost,
    /// The host's completion for a sync request.
    HostReply,
    /// A host-initiated packet (SIGNALGUESTEVENT, SETGUESTDATA…).
    HostToGuest,
}

impl VmbusDir {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            VmbusDir::GuestToHost => "guest_to_host",
            VmbusDir::HostReply => "host_reply",
            VmbusDir::HostToGuest => "host_to_guest",
        }
    }
}

impl From<VmbusDir> for u8 {
    fn from(v: VmbusDir) -> u8 {
        v as u8
    }
}

impl TryFrom<u8> for VmbusDir {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => VmbusDir::GuestToHost,
            1 => VmbusDir::HostReply,
            2 => VmbusDir::HostToGuest,
            other => return Err(format!("unknown vmbus direction {other}")),
        })
    }
}

/// A VMBus message. Body:
/// `[ts, dir, channel, request_id, is_async, status, ioctl_id, pid, tid, len, flags, bytes]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VmbusMessage {
    /// Monotonic ns (send time for requests, completion time for replies).
    pub ts: u64,
    /// Direction.
    pub dir: VmbusDir,
    /// `None` (nil) for the global channel, else the adapter LUID as a u64 (`b << 32 | a`).
    pub channel: Option<u64>,
    /// Per-channel request id (starts at 1); 0 for async sends and host-initiated packets.
    pub request_id: u64,
    /// Sent with `dxgvmb_send_async_msg` (no reply expected).
    pub is_async: bool,
    /// Return value of the send function (replies) or `None` when not applicable.
    pub status: Option<i64>,
    /// [`IoctlRecord::id`] of the ioctl that caused it, when known.
    pub ioctl_id: Option<u64>,
    /// Thread-group id of the sender (0 for host-initiated).
    pub pid: u32,
    /// Thread id of the sender (0 for host-initiated).
    pub tid: u32,
    /// Full message length (may exceed `bytes.len()` when truncated).
    pub len: u64,
    /// [`BUF_TRUNCATED`] | [`BUF_UNREADABLE`].
    pub flags: u8,
    /// Raw message bytes, including the 16-byte extended header when present.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A host-to-guest signal delivered to user space (an eventfd or sync-file fence signalled
/// because the host sent SIGNALGUESTEVENT). Body: `[ts, event_id, pid, fd, source, detail]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HostSignal {
    /// Monotonic ns.
    pub ts: u64,
    /// Guest-chosen host-event id.
    pub event_id: u64,
    /// Process that owns the event (0 if unknown).
    pub pid: u32,
    /// eventfd / sync file descriptor in that process, -1 if unknown.
    pub fd: i32,
    /// What was signalled: `"cpu_event"`, `"dma_fence"`, `"completion"`.
    pub source: String,
    /// Free-form detail.
    pub detail: String,
}

/// Events the capture lost. Body: `[ts, count, reason, cpu]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Dropped {
    /// Monotonic ns when the loss was noticed.
    pub ts: u64,
    /// How many events were lost.
    pub count: u64,
    /// Why, e.g. `"ringbuf_full"`, `"queue_full"`, `"buffer_unreadable"`.
    pub reason: String,
    /// CPU the loss happened on, if per-CPU.
    pub cpu: Option<u32>,
}

/// Capture statistics, written periodically and at the end. Body: `[ts, counters]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CaptureStats {
    /// Monotonic ns.
    pub ts: u64,
    /// Named counters (events, bytes, drops per cause…), as `[[name, value], …]`.
    pub counters: Vec<(String, u64)>,
}

/// Free-form note attached to a point in time. Body: `[ts, pid, tid, key, text]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Annotation {
    /// Monotonic ns.
    pub ts: u64,
    /// Process (0 = the capture itself).
    pub pid: u32,
    /// Thread (0 = the capture itself).
    pub tid: u32,
    /// Machine-readable key, e.g. `"fault"`, `"workload"`, `"emulator.hang"`.
    pub key: String,
    /// Human-readable text.
    pub text: String,
}

/// One record of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// See [`ProcessInfo`].
    Process(ProcessInfo),
    /// See [`FdEvent`].
    Fd(FdEvent),
    /// See [`IoctlRecord`].
    Ioctl(IoctlRecord),
    /// See [`VmbusMessage`].
    Vmbus(VmbusMessage),
    /// See [`HostSignal`].
    Signal(HostSignal),
    /// See [`Dropped`].
    Dropped(Dropped),
    /// See [`CaptureStats`].
    Stats(CaptureStats),
    /// See [`Annotation`].
    Annotation(Annotation),
    /// A kind this version does not know (written by a newer writer); its body was skipped.
    Unknown {
        /// The numeric kind.
        kind: u16,
    },
}

impl Record {
    /// The record's kind, or `None` for [`Record::Unknown`].
    pub fn kind(&self) -> Option<RecordKind> {
        Some(match self {
            Record::Process(_) => RecordKind::Process,
            Record::Fd(_) => RecordKind::Fd,
            Record::Ioctl(_) => RecordKind::Ioctl,
            Record::Vmbus(_) => RecordKind::Vmbus,
            Record::Signal(_) => RecordKind::Signal,
            Record::Dropped(_) => RecordKind::Dropped,
            Record::Stats(_) => RecordKind::Stats,
            Record::Annotation(_) => RecordKind::Annotation,
            Record::Unknown { .. } => return None,
        })
    }

    /// Stable name of the kind (`"unknown"` for unknown kinds).
    pub fn kind_name(&self) -> &'static str {
        self.kind().map(RecordKind::name).unwrap_or("unknown")
    }

    /// The record's timestamp (monotonic ns; ioctls use the entry time).
    pub fn ts(&self) -> Option<u64> {
        Some(match self {
            Record::Process(r) => r.ts,
            Record::Fd(r) => r.ts,
            Record::Ioctl(r) => r.ts_enter,
            Record::Vmbus(r) => r.ts,
            Record::Signal(r) => r.ts,
            Record::Dropped(r) => r.ts,
            Record::Stats(r) => r.ts,
            Record::Annotation(r) => r.ts,
            Record::Unknown { .. } => return None,
        })
    }

    /// The latest timestamp the record covers (ioctl exit time when present).
    pub fn ts_end(&self) -> Option<u64> {
        match self {
            Record::Ioctl(r) => Some(r.ts_exit.max(r.ts_enter)),
            other => other.ts(),
        }
    }
}
