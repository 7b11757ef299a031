//! Records shared by the kernel side (`probe-ebpf`) and the user side (`probe`) of the
//! dxtrace probe.
//!
//! Every type is `#[repr(C)]` with fixed-width fields, explicit padding and a size
//! assertion, because the same bytes are produced by BPF code and parsed by x86_64 code.
//!
//! # Ring buffer protocol
//! Every ring-buffer record starts with an [`EventHeader`]; `kind` says which struct
//! follows. An ioctl produces, in this order on its thread: [`EnterEvent`] (with the
//! argument struct's bytes right behind it when they fit in [`INLINE_MAX`]), zero or more
//! [`BufEvent`] chunks (role `ROLE_STRUCT_IN` for a larger struct, `ROLE_PTR_IN`), zero or
//! more chunks read at exit (`ROLE_STRUCT_OUT` / `ROLE_PTR_OUT`), then [`ExitEvent`] (again
//! with the struct inline when it fits). Chunks carry the call id and their offset in the
//! buffer, so the loader can reassemble buffers up to [`MAX_BUF_LEN`] bytes from
//! [`CHUNK_LEN`]-byte pieces.
//!
//! A call that carries no bytes at all (no argument struct, no pointer descriptors, no
//! descriptor returned) produces a single [`CallEvent`] at exit instead: its entry is
//! kept in the thread's [`Inflight`] slot until then. A call still in flight when the
//! capture stops is read from that slot by the loader; one whose thread dies without
//! returning is written as a [`CallEvent`] with `ts_exit` 0 when the thread exits.
//!
//! Those [`CallEvent`]s are gathered per CPU into a [`CallBatch`] and reach the ring
//! [`BATCH_LEN`] at a time ([`EV_CALLS`]): when the batch is full, when its first call is
//! 100 ms old at the next call, before any other record of that CPU (one CPU's records
//! keep the order they were made in), when the loader's process closes [`FLUSH_FD`] on
//! that CPU (it does so on every CPU every 50 ms), or, at the stop, the loader reads what
//! is left in the map. A batch therefore reaches the ring after records other CPUs made
//! later; the loader puts them back in time order. Batching is off where calls are not
//! combined.
#![no_std]

/// Largest number of data bytes in one [`BufEvent`].
pub const CHUNK_LEN: usize = 4096;
/// Largest buffer captured whole (the dxg driver's own limit); longer ones are cut and
/// flagged [`FLAG_TRUNCATED`].
pub const MAX_BUF_LEN: u32 = 128 * 1024;
/// Chunks per buffer: `MAX_BUF_LEN / CHUNK_LEN`.
pub const MAX_CHUNKS: u32 = MAX_BUF_LEN / CHUNK_LEN as u32;
/// Pointer descriptors per request code.
pub const MAX_DESCS: usize = 8;
/// Elements of a parent array whose nested pointers are followed.
pub const MAX_NESTED_ELEMS: u32 = 16;
/// Largest argument struct carried inside the [`EnterEvent`] / [`ExitEvent`] record itself
/// (one ring-buffer record per call side instead of two); larger ones go as chunks.
pub const INLINE_MAX: usize = 2048;
/// Bytes of a path captured at `openat`.
pub const PATH_LEN: usize = 256;

/// [`EventHeader::kind`]: an [`EnterEvent`] follows.
pub const EV_ENTER: u32 = 1;
/// [`EventHeader::kind`]: an [`ExitEvent`] follows.
pub const EV_EXIT: u32 = 2;
/// [`EventHeader::kind`]: a [`BufEvent`] and its data follow.
pub const EV_BUF: u32 = 3;
/// [`EventHeader::kind`]: an [`FdEventRaw`] follows.
pub const EV_FD: u32 = 4;
/// [`EventHeader::kind`]: a [`VmbusEvent`] follows (its bytes come as [`BufEvent`]s
/// *before* it, keyed by the same id).
pub const EV_VMBUS: u32 = 5;

/// [`EventHeader::kind`]: a [`CallEvent`] follows (a whole call, entry and exit).
pub const EV_CALL: u32 = 6;
/// [`EventHeader::kind`]: a [`CallBatch`] follows, cut to its `count` calls.
pub const EV_CALLS: u32 = 7;

/// Buffer role: the ioctl argument struct read at entry.
pub const ROLE_STRUCT_IN: u8 = 0;
/// Buffer role: the ioctl argument struct read at exit.
pub const ROLE_STRUCT_OUT: u8 = 1;
/// Buffer role: a pointer buffer read at entry.
pub const ROLE_PTR_IN: u8 = 2;
/// Buffer role: a pointer buffer read at exit.
pub const ROLE_PTR_OUT: u8 = 3;
/// Buffer role: VMBus request bytes.
pub const ROLE_VMBUS_REQ: u8 = 4;
/// Buffer role: VMBus reply bytes.
pub const ROLE_VMBUS_REPLY: u8 = 5;

/// [`BufEvent::flags`]: the buffer was longer than captured (same bit as
/// `traces::BUF_TRUNCATED`).
pub const FLAG_TRUNCATED: u8 = 1;
/// [`BufEvent::flags`]: the memory could not be read (same bit as
/// `traces::BUF_UNREADABLE`).
pub const FLAG_UNREADABLE: u8 = 2;

/// [`BufEvent::desc`] for the argument struct itself.
pub const DESC_STRUCT: u8 = 0xff;

/// [`PtrDesc::dir`] bit: read at entry.
pub const DIR_IN: u8 = 1;
/// [`PtrDesc::dir`] bit: read at exit.
pub const DIR_OUT: u8 = 2;
/// [`PtrDesc::flags`]: the buffer is a trailing array at `base + ptr_off` (e.g.
/// `kvm_cpuid2.entries`), not a pointer stored there.
pub const PTR_TRAILING: u8 = 1;
/// [`PtrDesc::parent`] for a pointer in the ioctl struct itself.
pub const NO_PARENT: u8 = 0xff;

/// [`CmdDesc::fd_kind`]: the ioctl returns no descriptor.
pub const FD_NONE: u8 = 0;
/// [`CmdDesc::fd_kind`]: the return value is a new descriptor (KVM_CREATE_VM…).
pub const FD_RET: u8 = 1;
/// [`CmdDesc::fd_kind`]: a struct field at `fd_off` holds a new descriptor (dxg
/// SHAREOBJECTS, CREATESYNCFILE…), valid when the call returns 0.
pub const FD_FIELD: u8 = 2;

/// [`FdEventRaw::op`]: the watched device was opened.
pub const FD_OP_OPEN: u32 = 0;
/// [`FdEventRaw::op`]: a watched descriptor was closed.
pub const FD_OP_CLOSE: u32 = 1;
/// [`FdEventRaw::op`]: a watched ioctl returned a new descriptor.
pub const FD_OP_DERIVED: u32 = 2;
/// [`FdEventRaw::op`]: `dup`, `dup2`, `dup3` or `fcntl(F_DUPFD[_CLOEXEC])` copied the
/// watched descriptor [`FdEventRaw::old_fd`] to `fd`.
pub const FD_OP_DUP: u32 = 3;

/// VMBus direction: request sent by the guest.
pub const VMBUS_GUEST_TO_HOST: u8 = 0;
/// VMBus direction: the host's reply to a sync request.
pub const VMBUS_HOST_REPLY: u8 = 1;
/// VMBus direction: a host-initiated packet seen by the receive path.
pub const VMBUS_HOST_TO_GUEST: u8 = 2;

/// Index in the `DROPS` per-CPU array: whole ioctl calls lost (enter record not reserved).
pub const DROP_CALL: u32 = 0;
/// Index in `DROPS`: buffer chunks lost (the call is kept, its buffer marked truncated).
pub const DROP_CHUNK: u32 = 1;
/// Index in `DROPS`: exit records lost (the call is kept with `ts_exit` 0).
pub const DROP_EXIT: u32 = 2;
/// Index in `DROPS`: fd open/close/derived records lost.
pub const DROP_FD: u32 = 3;
/// Index in `DROPS`: VMBus records lost.
pub const DROP_VMBUS: u32 = 4;
/// Index in `DROPS`: in-flight table full (the call was not captured).
pub const DROP_INFLIGHT: u32 = 5;
/// Number of `DROPS` slots.
pub const DROP_SLOTS: u32 = 6;

/// Index in the `COUNTERS` per-CPU array: ioctls seen on watched files.
pub const CNT_CALLS: u32 = 0;
/// Index in `COUNTERS`: bytes of buffer data submitted.
pub const CNT_BYTES: u32 = 1;
/// Index in `COUNTERS`: user memory reads that failed.
pub const CNT_READ_FAIL: u32 = 2;
/// Index in `COUNTERS`: kernel-struct walks (fd → file) that failed.
pub const CNT_WALK_FAIL: u32 = 3;
/// Index in `COUNTERS`: VMBus messages seen.
pub const CNT_VMBUS: u32 = 4;
/// Index in `COUNTERS`: flush requests of the loader ([`FLUSH_FD`]) served.
pub const CNT_FLUSHES: u32 = 5;
/// Number of `COUNTERS` slots.
pub const CNT_SLOTS: u32 = 6;

/// `close(FLUSH_FD)` by the loader's process asks the kernel side to submit the batch of
/// calls of the CPU it runs on (an invalid descriptor: the close itself fails, EBADF).
pub const FLUSH_FD: i32 = -0x7e57;

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `EV_*`.
    pub kind: u32,
    /// CPU that produced it.
    pub cpu: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);

/// An ioctl on a watched file began.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnterEvent {
    /// `EV_ENTER`.
    pub hdr: EventHeader,
    /// Kernel-assigned id (`cpu << 56 | per-CPU sequence`), shared by the call's chunks.
    pub call_id: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Descriptor.
    pub fd: i32,
    /// Request code.
    pub cmd: u32,
    /// Argument.
    pub arg: u64,
    /// Kernel-encoded device number (`i_rdev`, or `s_dev` of a regular file; 0 for a
    /// derived anonymous-inode descriptor).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// `comm` of the thread, valid when `has_comm` (sent when the CPU's previous call came
    /// from another thread, so at least on a thread's first call).
    pub comm: [u8; 16],
    /// Bytes of the argument struct that follow this record (`ROLE_STRUCT_IN`).
    pub struct_len: u16,
    /// `FLAG_*` of those bytes (`FLAG_UNREADABLE`: `struct_len` bytes were asked for, none
    /// follow).
    pub struct_flags: u8,
    /// `comm` is filled in.
    pub has_comm: u8,
    /// Non-zero: the struct is inline (possibly unreadable); zero: it comes as chunks, or
    /// the request has no struct.
    pub inline: u8,
    /// Pad.
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<EnterEvent>() == 88);

/// An ioctl on a watched file returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    /// `EV_EXIT`.
    pub hdr: EventHeader,
    /// Same as the [`EnterEvent`].
    pub call_id: u64,
    /// `bpf_ktime_get_ns`.
    pub ts: u64,
    /// Full return value.
    pub ret: i64,
    /// Chunks of this call that could not be submitted (ring buffer full).
    pub lost_chunks: u32,
    /// Bytes of the argument struct read at exit that follow this record
    /// (`ROLE_STRUCT_OUT`), as in [`EnterEvent::struct_len`].
    pub struct_len: u16,
    /// `FLAG_*` of those bytes.
    pub struct_flags: u8,
    /// Non-zero: the struct is inline.
    pub inline: u8,
}
const _: () = assert!(core::mem::size_of::<ExitEvent>() == 40);

/// A whole ioctl in one record, for calls that carry no bytes (see the module docs).
/// Fields as in [`EnterEvent`] and [`ExitEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallEvent {
    /// `EV_CALL`.
    pub hdr: EventHeader,
    /// Kernel-assigned id.
    pub call_id: u64,
    /// Entry time.
    pub ts_enter: u64,
    /// Exit time; 0 if the call never returned (its thread died inside it, or the capture
    /// stopped first).
    pub ts_exit: u64,
    /// Full return value (0 when `ts_exit` is 0).
    pub ret: i64,
    /// Argument.
    pub arg: u64,
    /// Kernel-encoded device number (0 for a derived descriptor).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// `comm` of the thread, valid when `has_comm` (as in [`EnterEvent`]).
    pub comm: [u8; 16],
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Descriptor.
    pub fd: i32,
    /// Request code.
    pub cmd: u32,
    /// `comm` is filled in.
    pub has_comm: u32,
    /// Pad.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CallEvent>() == 104);

/// Calls a [`CallBatch`] holds.
pub const BATCH_LEN: usize = 16;

/// Several [`CallEvent`]s in one ring record (see the module docs): a CPU gathers the
/// calls that carry no bytes here and submits them together, `count` of them, each with
/// its own header (`kind` [`EV_CALL`]; the CPU is the batch's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallBatch {
    /// `EV_CALLS`; the CPU whose batch this is.
    pub hdr: EventHeader,
    /// Calls in `calls`.
    pub count: u32,
    /// Calls the batch takes before it is submitted: 0 (every call is submitted at once)
    /// until the loader's first flush request on this CPU, then [`BATCH_LEN`].
    pub cap: u8,
    /// Pad.
    pub _pad: [u8; 3],
    /// The calls, in the order they returned on this CPU.
    pub calls: [CallEvent; BATCH_LEN],
}
const _: () = assert!(core::mem::size_of::<CallBatch>() == 16 + 104 * BATCH_LEN);

/// [`Inflight::active`]: no call in flight.
pub const CALL_IDLE: u8 = 0;
/// [`Inflight::active`]: a call whose [`EnterEvent`] is in the ring; an [`ExitEvent`]
/// follows.
pub const CALL_SPLIT: u8 = 1;
/// [`Inflight::active`]: a call kept here until its exit writes a [`CallEvent`].
pub const CALL_WHOLE: u8 = 2;

/// A thread's in-flight slot (the `INFLIGHT` map, keyed by thread id), kept from call to
/// call and rewritten in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// Call id.
    pub call_id: u64,
    /// Argument.
    pub arg: u64,
    /// Entry time ([`CALL_WHOLE`] calls).
    pub ts: u64,
    /// Inode number ([`CALL_WHOLE`] calls).
    pub ino: u64,
    /// Kernel-encoded device number ([`CALL_WHOLE`] calls).
    pub dev: u32,
    /// Thread-group id.
    pub pid: u32,
    /// Request code.
    pub cmd: u32,
    /// Descriptor.
    pub fd: i32,
    /// Chunks lost so far.
    pub lost: u32,
    /// Copied from the request's [`CmdDesc`] at entry, so that the exit needs no lookup.
    pub fd_off: u32,
    /// `DIR_IN | DIR_OUT` of its pointer descriptors.
    pub dirs: u8,
    /// `FD_*`.
    pub fd_kind: u8,
    /// Width of the fd field.
    pub fd_size: u8,
    /// `CALL_*`.
    pub active: u8,
    /// Descriptor whose verdict this thread found last (`vgen` 0: none).
    pub vfd: i32,
    /// Its process.
    pub vtgid: u32,
    /// Its verdict: state (the kernel side's `FDV_*`), device, inode.
    pub vstate: u32,
    /// Device of the verdict.
    pub vdev: u32,
    /// Inode of the verdict.
    pub vino: u64,
    /// The descriptor generation the verdict was found in: any open, close, copy, exec or
    /// exit in a traced process moves the generation on, which voids every thread's copy.
    pub vgen: u64,
}
const _: () = assert!(core::mem::size_of::<Inflight>() == 96);

/// Request codes whose calls need the descriptor table at all (pointer descriptors or a
/// returned descriptor): bit `cmd & 0xffff` (`_IOC_TYPE << 8 | _IOC_NR`) of this many
/// `u64` words. A set bit sends the call down the full path; a clear one means no table
/// entry can apply, so its lookup is skipped.
pub const CMD_BITMAP_WORDS: usize = 1024;

/// One chunk of a captured buffer; `len` data bytes follow the struct in the record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufEvent {
    /// `EV_BUF`.
    pub hdr: EventHeader,
    /// Call id (ioctls) or message id (VMBus).
    pub id: u64,
    /// User address of the buffer (not of the chunk).
    pub addr: u64,
    /// Length the program asked for (before any cut).
    pub total_len: u64,
    /// Offset of this chunk in the buffer.
    pub offset: u32,
    /// Data bytes in this chunk.
    pub len: u32,
    /// `ROLE_*`.
    pub role: u8,
    /// `FLAG_*` (set on the first chunk; `FLAG_UNREADABLE` chunks carry no data).
    pub flags: u8,
    /// Descriptor index, or [`DESC_STRUCT`].
    pub desc: u8,
    /// Element of the parent array for a nested pointer (0 otherwise).
    pub elem: u8,
    /// Pad.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BufEvent>() == 48);

/// A [`BufEvent`] with room for its data, as staged in a per-CPU scratch map.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BufRecord {
    /// Header.
    pub ev: BufEvent,
    /// Data (only `ev.len` bytes are submitted).
    pub data: [u8; CHUNK_LEN],
}
const _: () = assert!(core::mem::size_of::<BufRecord>() == 48 + CHUNK_LEN);

/// Open, close or derivation of a watched descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdEventRaw {
    /// `EV_FD`.
    pub hdr: EventHeader,
    /// `bpf_ktime_get_ns`.
    pub ts: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Descriptor.
    pub fd: i32,
    /// `FD_OP_*`.
    pub op: u32,
    /// Kernel-encoded device number (0 for derived).
    pub dev: u64,
    /// Inode number (0 for derived).
    pub ino: u64,
    /// Open flags (`O_CLOEXEC` for a copy made close-on-exec).
    pub flags: u32,
    /// For [`FD_OP_DUP`]: the descriptor that was copied.
    pub old_fd: i32,
    /// Return value of the syscall.
    pub ret: i64,
    /// For derived descriptors: the call that returned it.
    pub call_id: u64,
    /// NUL-terminated path for opens.
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<FdEventRaw>() == 72 + PATH_LEN);

/// A VMBus message seen by the uprobes / kernel hooks. Its bytes were sent before it as
/// [`BufEvent`]s with the same `msg_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmbusEvent {
    /// `EV_VMBUS`.
    pub hdr: EventHeader,
    /// Id shared by request and reply (`cpu << 56 | sequence`).
    pub msg_id: u64,
    /// `bpf_ktime_get_ns`.
    pub ts: u64,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Channel pointer as seen by the hook (opaque).
    pub channel: u64,
    /// Adapter LUID of the channel (0: global channel), valid when `has_channel_id`.
    pub channel_id: u64,
    /// Per-channel request id (0 for async sends and host-initiated packets).
    pub request_id: u64,
    /// Return value of the send (replies only).
    pub status: i64,
    /// Message length.
    pub len: u64,
    /// `VMBUS_*`.
    pub dir: u8,
    /// Sent with the async function.
    pub is_async: u8,
    /// `status` is meaningful.
    pub has_status: u8,
    /// `channel_id` is known (the loader knows the channel layout).
    pub has_channel_id: u8,
    /// Pad.
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<VmbusEvent>() == 80);

/// One embedded pointer to follow, in the flat form the kernel side reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtrDesc {
    /// Offset of the pointer field (in the struct, or in the parent's element).
    pub ptr_off: u32,
    /// Offset of the length field (same base as `ptr_off`).
    pub len_off: u32,
    /// Bytes per length unit.
    pub elem_size: u32,
    /// Length in units when `len_size` is 0.
    pub fixed_len: u32,
    /// Width of the length field: 0 (fixed), 1, 2, 4 or 8.
    pub len_size: u8,
    /// `DIR_IN` | `DIR_OUT`.
    pub dir: u8,
    /// Index of the array descriptor this pointer lives in, or [`NO_PARENT`].
    pub parent: u8,
    /// `PTR_*` flags.
    pub flags: u8,
    /// Cap in bytes (≤ [`MAX_BUF_LEN`]); longer buffers are cut and flagged.
    pub max_len: u32,
}
const _: () = assert!(core::mem::size_of::<PtrDesc>() == 24);

/// Everything the kernel side needs to know about one request code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdDesc {
    /// Used entries of `descs`.
    pub n: u32,
    /// `FD_*`.
    pub fd_kind: u8,
    /// Width of the fd field for `FD_FIELD` (4 or 8).
    pub fd_size: u8,
    /// Pad.
    pub _pad: u16,
    /// Offset of the fd field for `FD_FIELD`.
    pub fd_off: u32,
    /// Pad.
    pub _pad2: u32,
    /// Pointer descriptors; parents come before their children.
    pub descs: [PtrDesc; MAX_DESCS],
}
const _: () = assert!(core::mem::size_of::<CmdDesc>() == 16 + 24 * MAX_DESCS);

/// Key of the watch map: a character device (`ino` 0) or a regular file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// Kernel-encoded device number (`MKDEV`: major << 20 | minor).
    pub dev: u32,
    /// Pad.
    pub _pad: u32,
    /// Inode number, 0 for character devices.
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<WatchKey>() == 16);

/// Key of the derived-descriptor map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PidFd {
    /// Thread-group id.
    pub pid: u32,
    /// Descriptor.
    pub fd: i32,
}
const _: () = assert!(core::mem::size_of::<PidFd>() == 8);

/// Kernel struct offsets the loader reads from BTF (Rust cannot emit CO-RE relocations).
/// The kernel side receives them as globals of the same names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.fd`.
    pub fdt_fd: u32,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_rdev`.
    pub inode_rdev: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
}

/// Converts a user-space `st_rdev` / `st_dev` (glibc encoding) to the kernel's internal
/// `dev_t` (`major << 20 | minor`), the value `inode.i_rdev` holds.
pub const fn user_dev_to_kernel(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((major as u32) << 20) | (minor as u32 & 0xfffff)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these are #[repr(C)], fixed-width, with explicit padding only.
    unsafe impl aya::Pod for super::CmdDesc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PidFd {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Inflight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CallBatch {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_kernel() {
        // /dev/kvm is 10:232: glibc makedev gives 0xae8, the kernel MKDEV 10 << 20 | 232.
        assert_eq!(user_dev_to_kernel(0x0ae8), (10 << 20) | 232);
        // A large minor uses the high glibc bits.
        let user = (0x1234u64 & 0xff) | ((0x1234u64 & !0xff) << 12) | (5 << 8);
        assert_eq!(user_dev_to_kernel(user), (5 << 20) | 0x1234);
    }
}
