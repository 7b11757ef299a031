//! Kernel side of the dxtrace probe: filter, copy, stamp, submit, count.
//!
//! Every program is `fn x(ctx) -> u32 { match try_x(ctx) { … } }`; a failure bumps a
//! counter, never panics. Kernel struct offsets come from the loader (read from BTF) as
//! globals, because Rust cannot emit CO-RE relocations.
#![no_std]
#![no_main]
// `atomic_xadd`: core's atomic types have no read-modify-write on the BPF target, but the
// instruction set has an atomic add (the pinned nightly builds this crate anyway).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated,
    },
    macros::{fentry, kprobe, kretprobe, map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        FEntryContext, ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext,
    },
};
use probe_common::*;

// ---- configuration written by the loader (globals live in .rodata) ----

#[unsafe(no_mangle)]
static OFF_TASK_FILES: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FILES_FDT: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FDT_FD: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FDT_MAX_FDS: u32 = 0;
#[unsafe(no_mangle)]
static OFF_FILE_INODE: u32 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_RDEV: u32 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_SB: u32 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_INO: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SB_DEV: u32 = 0;
/// Offset of `child_pid` in the sched_process_fork tracepoint record (from its format file).
#[unsafe(no_mangle)]
static OFF_FORK_CHILD_PID: u32 = 20;
/// Non-zero: only processes in `PIDS` are traced.
#[unsafe(no_mangle)]
static FILTER_PIDS: u32 = 0;
/// Non-zero: the VMBus uprobes are attached in one process (the FUSE emulator daemon),
/// whose messages are captured whatever `FILTER_PIDS` says.
#[unsafe(no_mangle)]
static UPROBE_ANY_PID: u32 = 0;
/// Non-zero: the channel layout is known; `adapter_luid` (u64, 0 = global channel) and
/// `packet_request_id` (u64, incremented before each sync send) are at these offsets.
#[unsafe(no_mangle)]
static VMB_CH_KNOWN: u32 = 0;
#[unsafe(no_mangle)]
static VMB_CH_LUID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static VMB_CH_REQID_OFF: u32 = 0;
/// Non-zero: `vmbus_sendpacket` is hooked too. A sync send's request id is then taken from
/// its `requestid` argument (the id the packet goes out with), and the request's record
/// is written there; otherwise it is read from the channel's counter at the send's entry,
/// plus one, which another thread's send on the same channel can overtake.
#[unsafe(no_mangle)]
static VMB_SENDPACKET: u32 = 0;
/// Syscall numbers the raw `sys_enter` / `sys_exit` programs dispatch on (from the
/// loader's libc; `u32::MAX` never matches).
#[unsafe(no_mangle)]
static NR_IOCTL: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_CLOSE: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_OPENAT: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_DUP: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_DUP2: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_DUP3: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_FCNTL: u32 = u32::MAX;
#[unsafe(no_mangle)]
static NR_CLOSE_RANGE: u32 = u32::MAX;
/// Offset of `group_dead` in the sched_process_exit tracepoint record (from its format
/// file); `u32::MAX` where the kernel has no such field (then the group leader's exit
/// stands for the group's).
#[unsafe(no_mangle)]
static OFF_EXIT_GROUP_DEAD: u32 = u32::MAX;
/// Offset in `struct pt_regs` of the syscall's arguments 2, 1, 0 (three contiguous
/// words: `dx`, `si`, `di` on x86_64), and of the syscall number (`orig_ax`).
#[unsafe(no_mangle)]
static OFF_REGS_ARGS: u32 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ORIG_AX: u32 = 0;
/// Non-zero: calls that carry no bytes are written as one [`CallEvent`] at exit (see
/// probe-common). Zero where the kernel's VMBus functions are hooked: messages sent inside
/// a call are linked to it by the thread's open entry, which must then be in the ring.
#[unsafe(no_mangle)]
static COMBINE: u32 = 0;
/// Bit `cmd & 0xffff` set: the request may have a descriptor-table entry that matters
/// (see [`CMD_BITMAP_WORDS`]); all set until the loader writes the real table.
#[unsafe(no_mangle)]
static CMD_FULL: [u64; CMD_BITMAP_WORDS] = [u64::MAX; CMD_BITMAP_WORDS];
/// The loader's process: its `close(FLUSH_FD)` flushes the CPU's batch of calls.
#[unsafe(no_mangle)]
static LOADER_TGID: u32 = 0;
/// Entries of [`THREADS`] (set by the loader with the map's size).
#[unsafe(no_mangle)]
static THREAD_SLOTS: u32 = 0;
/// Size of `EVENTS` in bytes (the reader is woken when an eighth of it is used).
#[unsafe(no_mangle)]
static RING_SIZE: u32 = 1 << 20;

#[inline(always)]
fn cfg(v: &'static u32) -> u32 {
    // SAFETY: reading a static; volatile so the compiler does not fold the default value.
    unsafe { core::ptr::read_volatile(v) }
}

// ---- maps ----

/// Events to user space; its size is set by the loader.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);
/// Watched files: character devices by `i_rdev`, FUSE files by (`s_dev`, `i_ino`).
#[map]
static WATCH: HashMap<WatchKey, u8> = HashMap::with_max_entries(64, 0);
/// Descriptors returned by watched ioctls (anonymous inodes), by (tgid, fd).
#[map]
static DERIVED: LruHashMap<PidFd, u8> = LruHashMap::with_max_entries(16384, 0);
/// What each (tgid, fd) that made a captured-or-not ioctl, open, close or copy is: a
/// cache of the derived-set lookup and the fd → file → inode walk, so that they run
/// once per descriptor instead of once per call. Entries go when the descriptor stops
/// naming its file: close, dup2/dup3 over it, close_range, exec, the process's death;
/// a descriptor a watched call, an open or a copy hands out is written afresh. Only
/// processes marked in [`FD_CACHED`] have entries (see there).
#[map]
static FDCACHE: LruHashMap<PidFd, FdVerdict> = LruHashMap::with_max_entries(8192, 0);
/// Processes that may have [`FDCACHE`] entries, with one more than the highest
/// descriptor number ever cached for them: exec, exit and close_range visit the numbers
/// below it (an iteration over the whole cache costs ~0.2–0.5 ms; this costs ~0.1 µs per
/// number). A plain hash, not an LRU: a mark is never evicted while its process lives;
/// when the table is full the process is simply not cached (every call walks, as
/// without the cache).
#[map]
static FD_CACHED: HashMap<u32, u32> = HashMap::with_max_entries(8192, 0);
/// `close_range` calls between entry and exit, by thread id: (first, last, flags).
#[map]
static CLOSE_RANGES: LruHashMap<u32, [u32; 3]> = LruHashMap::with_max_entries(1024, 0);
/// Traced processes when `FILTER_PIDS` is set.
#[map]
static PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);
/// Pointer descriptors by request code.
#[map]
static DESCS: HashMap<u32, CmdDesc> = HashMap::with_max_entries(1024, 0);
/// Calls between entry and exit, by thread id. A preallocated hash, not an LRU: a full
/// table refuses the new call (counted as `DROP_INFLIGHT`) instead of silently evicting
/// another thread's call. A thread keeps its slot from call to call (`active` says
/// whether a call is in flight): entry and exit rewrite it in place, which costs a
/// lookup instead of an insert and a delete (each takes the bucket's lock). The slot
/// goes when the thread exits.
#[map]
static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(16384, 0);
/// The in-flight slots of threads whose id is below [`THREAD_SLOTS`], indexed by thread
/// id: the verifier turns an array lookup into a few inline instructions, where a hash
/// lookup is a helper call that hashes the key (~50 ns here). Others use [`INFLIGHT`].
/// A slot is reset when its thread exits (the id can be reused).
#[map]
static THREADS: Array<Inflight> = Array::with_max_entries(1, 0);
/// Descriptor generation (slot 0), see [`Inflight::vgen`]; starts at 1 (0: no verdict).
#[map]
static FD_GEN: Array<u64> = Array::with_max_entries(1, 0);
/// `dup*` / `fcntl(F_DUPFD*)` calls on watched descriptors between entry and exit.
#[map]
static DUPS: LruHashMap<u32, DupArgs> = LruHashMap::with_max_entries(1024, 0);
/// Staging of an [`EnterEvent`] and its inline struct bytes.
#[map]
static ENTER_SCRATCH: PerCpuArray<[u8; ENTER_SLOT]> = PerCpuArray::with_max_entries(1, 0);
/// Staging of an [`ExitEvent`] and its inline struct bytes.
#[map]
static EXIT_SCRATCH: PerCpuArray<[u8; EXIT_SLOT]> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU: records submitted (slot 0) and whether the ring was above the wake-up mark at
/// the last look (slot 1); see `wake_flags`.
#[map]
static WAKE_TICK: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
/// This CPU's batch of calls that carry no bytes (see [`batch_call`]).
#[map]
static BATCH: PerCpuArray<CallBatch> = PerCpuArray::with_max_entries(1, 0);
/// Thread of this CPU's previous captured call (see `comm_needed`).
#[map]
static LAST_TID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

const ENTER_SLOT: usize = core::mem::size_of::<EnterEvent>() + INLINE_MAX * 2;
const EXIT_SLOT: usize = core::mem::size_of::<ExitEvent>() + INLINE_MAX * 2;
/// `openat` arguments between entry and exit, by thread id.
#[map]
static OPENS: LruHashMap<u32, OpenArgs> = LruHashMap::with_max_entries(4096, 0);
/// VMBus sync sends between entry and return, by thread id.
#[map]
static VMB_INFLIGHT: LruHashMap<u32, VmbInflight> = LruHashMap::with_max_entries(4096, 0);
/// Threads inside the VMBus receive callback, with the channel it was called for.
#[map]
static RECEIVING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);
/// Staging area for buffer chunks (too big for the 512-byte stack).
#[map]
static SCRATCH: PerCpuArray<BufRecord> = PerCpuArray::with_max_entries(1, 0);
/// Lost events per cause (`DROP_*`), per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);
/// Activity counters (`CNT_*`), per CPU.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_SLOTS, 0);
/// Per-CPU sequence for call and message ids.
#[map]
static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What a descriptor is, in [`FDCACHE`].
#[repr(C)]
#[derive(Clone, Copy)]
struct FdVerdict {
    ino: u64,
    dev: u32,
    /// `FDV_*`.
    state: u8,
    _pad: [u8; 3],
}

/// Not a watched file (an ioctl on it is not captured).
const FDV_NO: u8 = 0;
/// A watched device or FUSE file (`dev`, `ino`).
const FDV_DEVICE: u8 = 1;
/// In the derived set (an anonymous inode a watched call returned).
const FDV_DERIVED: u8 = 2;

impl FdVerdict {
    const fn new(state: u8, dev: u32, ino: u64) -> Self {
        FdVerdict {
            ino,
            dev,
            state,
            _pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DupArgs {
    old_fd: i32,
    /// dup2/dup3 target (-1 for dup and fcntl).
    target: i32,
    dev: u32,
    /// `O_CLOEXEC` when the copy is close-on-exec.
    flags: u32,
    ino: u64,
    watched: u8,
    derived: u8,
    target_watched: u8,
    _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    filename: u64,
    flags: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VmbInflight {
    msg_id: u64,
    result: u64,
    result_size: u64,
    channel: u64,
    channel_id: u64,
    request_id: u64,
    has_channel_id: u64,
    /// Request length.
    len: u64,
    /// The request's record waits for `vmbus_sendpacket`, which names its request id.
    req_pending: u64,
}

/// A field of the channel struct (user memory for uprobes, kernel memory for kprobes).
#[inline(always)]
fn channel_field(channel: u64, off: u32, kernel: bool) -> Option<u64> {
    let at = (channel + off as u64) as *const u64;
    // SAFETY: reads through the helpers, which tolerate any address.
    unsafe {
        if kernel {
            bpf_probe_read_kernel(at).ok()
        } else {
            bpf_probe_read_user(at).ok()
        }
    }
}

/// (adapter LUID, request id this sync send gets) where the channel layout is known.
#[inline(always)]
fn channel_ids(channel: u64, is_async: bool, kernel: bool) -> Option<(u64, u64)> {
    if cfg(&VMB_CH_KNOWN) == 0 {
        return None;
    }
    let luid = channel_field(channel, cfg(&VMB_CH_LUID_OFF), kernel)?;
    let req = if is_async {
        0
    } else {
        // The send takes `atomic64_inc_return(&packet_request_id)`; read before it.
        channel_field(channel, cfg(&VMB_CH_REQID_OFF), kernel)? + 1
    };
    Some((luid, req))
}

// ---- helpers ----

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, idx: u32, by: u64) {
    if let Some(p) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += by }
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Waking the reader costs more than the capture itself (an irq_work and a context
/// switch): records are submitted silently, and the reader is woken when the ring goes
/// past an eighth full: once as a record crosses that mark, then every
/// [`WAKE_EVERY`]th record per CPU while it stays above (a reader slower than the
/// producers, or a crossing two CPUs raced past). It also polls on a timer, so a quiet
/// ring never waits long. Waking on every record above the mark, as this did before, cost
/// ~10 µs per call whenever the reader fell behind.
///
/// The fill level is queried on every [`QUERY_EVERY`]th record per CPU only (a helper
/// call saved on the others), so the crossing is seen up to that many records late;
/// per CPU, `WAKE_TICK[1]` remembers whether the last query found the ring above the mark.
#[inline(always)]
fn wake_flags(len: u64) -> u64 {
    let (Some(tick), Some(above)) = (WAKE_TICK.get_ptr_mut(0), WAKE_TICK.get_ptr_mut(1)) else {
        return BPF_RB_FORCE_WAKEUP;
    };
    // SAFETY: per-CPU slots, no concurrent writer on this CPU while we run.
    unsafe {
        *tick += 1;
        if *tick % QUERY_EVERY != 0 {
            return BPF_RB_NO_WAKEUP;
        }
        let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
        let mark = (cfg(&RING_SIZE) / 8) as u64;
        if avail + len < mark {
            *above = 0;
            BPF_RB_NO_WAKEUP
        } else if *above == 0 {
            *above = 1;
            BPF_RB_FORCE_WAKEUP
        } else if *tick % WAKE_EVERY == 0 {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        }
    }
}

/// See [`wake_flags`] (a multiple of [`QUERY_EVERY`]).
const WAKE_EVERY: u64 = 512;
/// See [`wake_flags`].
const QUERY_EVERY: u64 = 8;

#[inline(always)]
fn next_id() -> u64 {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let mut seq = 0;
    if let Some(p) = SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            *p += 1;
            seq = *p;
        }
    }
    (cpu << 56) | (seq & ((1 << 56) - 1))
}

#[inline(always)]
fn cpu() -> u32 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_smp_processor_id() }
}

#[inline(always)]
fn ktime() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn pid_ok(tgid: u32) -> bool {
    if cfg(&FILTER_PIDS) == 0 {
        return true;
    }
    // SAFETY: value is only tested for presence.
    unsafe { PIDS.get(&tgid).is_some() }
}

#[inline(always)]
unsafe fn kread<T: Copy>(base: u64, off: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).map_err(|e| e as i64) }
}

/// fd → `struct file *` of the current task (0: no such descriptor).
#[inline(always)]
fn fd_file(fd: i32) -> Result<u64, i64> {
    if fd < 0 {
        return Ok(0);
    }
    // SAFETY: every dereference goes through bpf_probe_read_kernel.
    unsafe {
        let task = bpf_get_current_task();
        let files: u64 = kread(task, cfg(&OFF_TASK_FILES))?;
        let fdt: u64 = kread(files, cfg(&OFF_FILES_FDT))?;
        let max_fds: u32 = kread(fdt, cfg(&OFF_FDT_MAX_FDS))?;
        if fd as u32 >= max_fds {
            return Ok(0);
        }
        let fdarr: u64 = kread(fdt, cfg(&OFF_FDT_FD))?;
        kread(fdarr, (fd as u32) * 8)
    }
}

/// fd → file → inode of the current task. Returns `(dev, ino)` if the file is watched.
#[inline(always)]
fn watched_file(fd: i32) -> Result<Option<(u32, u64)>, i64> {
    let file = fd_file(fd)?;
    if file == 0 {
        return Ok(None);
    }
    // SAFETY: every dereference goes through bpf_probe_read_kernel.
    unsafe {
        let inode: u64 = kread(file, cfg(&OFF_FILE_INODE))?;
        let rdev: u32 = kread(inode, cfg(&OFF_INODE_RDEV))?;
        if rdev != 0 {
            let key = WatchKey {
                dev: rdev,
                _pad: 0,
                ino: 0,
            };
            if WATCH.get(&key).is_some() {
                let ino: u64 = kread(inode, cfg(&OFF_INODE_INO))?;
                return Ok(Some((rdev, ino)));
            }
            return Ok(None);
        }
        let sb: u64 = kread(inode, cfg(&OFF_INODE_SB))?;
        let sdev: u32 = kread(sb, cfg(&OFF_SB_DEV))?;
        let ino: u64 = kread(inode, cfg(&OFF_INODE_INO))?;
        let key = WatchKey {
            dev: sdev,
            _pad: 0,
            ino,
        };
        if WATCH.get(&key).is_some() {
            return Ok(Some((sdev, ino)));
        }
        Ok(None)
    }
}

/// What `fd` of process `tgid` (the current one) is: from [`FDCACHE`], or found (the
/// derived set, then the fd walk) and cached. The caller has checked the pid filter or
/// found the process's entry.
#[inline(always)]
fn fd_verdict(tgid: u32, fd: i32) -> Result<FdVerdict, i64> {
    // SAFETY: value copied out.
    if let Some(v) = unsafe { FDCACHE.get(&PidFd { pid: tgid, fd }) } {
        return Ok(*v);
    }
    fd_verdict_miss(tgid, fd)
}

/// [`fd_verdict`] for a descriptor not in the cache.
#[inline(always)]
fn fd_verdict_miss(tgid: u32, fd: i32) -> Result<FdVerdict, i64> {
    let key = PidFd { pid: tgid, fd };
    // SAFETY: presence test only.
    let v = if unsafe { DERIVED.get(&key) }.is_some() {
        FdVerdict::new(FDV_DERIVED, 0, 0)
    } else {
        match watched_file(fd)? {
            Some((dev, ino)) => FdVerdict::new(FDV_DEVICE, dev, ino),
            None => FdVerdict::new(FDV_NO, 0, 0),
        }
    };
    cache_put(tgid, fd, &v);
    Ok(v)
}

/// The descriptor generation (0 if unreadable: never matches a stored verdict).
#[inline(always)]
fn fd_gen() -> u64 {
    match FD_GEN.get_ptr(0) {
        // SAFETY: map value; a plain read (a torn or stale value only voids a verdict).
        Some(p) => unsafe { core::ptr::read_volatile(p) }.wrapping_add(1),
        None => 0,
    }
}

/// Something a descriptor number names changed in a traced process: every thread's copy
/// of a verdict ([`Inflight::vgen`]) is void from now on.
#[inline(always)]
fn fd_gen_bump() {
    if let Some(p) = FD_GEN.get_ptr_mut(0) {
        // SAFETY: map value, updated with an atomic add (concurrent bumps all count).
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                p, 1,
            )
        };
    }
}

/// Records what `fd` of `tgid` now is, if the process can be marked in [`FD_CACHED`].
#[inline(always)]
fn cache_put(tgid: u32, fd: i32, v: &FdVerdict) {
    fd_gen_bump();
    if fd < 0 {
        return;
    }
    let end = fd as u32 + 1;
    match FD_CACHED.get_ptr_mut(&tgid) {
        // SAFETY: map value. Two threads of one process raising it at once can leave the
        // lower value (no atomic max in BPF): a window of a few instructions.
        Some(p) => unsafe {
            if *p < end {
                *p = end;
            }
        },
        None => {
            if FD_CACHED.insert(&tgid, &end, 0).is_err() {
                return;
            }
        }
    }
    let _ = FDCACHE.insert(&PidFd { pid: tgid, fd }, v, 0);
}

/// `fd` of `tgid` no longer names what it did.
#[inline(always)]
fn cache_forget(tgid: u32, fd: i32) {
    fd_gen_bump();
    let _ = FDCACHE.remove(&PidFd { pid: tgid, fd });
}

/// Context of [`forget_range_cb`]: entries of process `tgid` with `lo ≤ fd ≤ hi`.
#[repr(C)]
struct ForgetCtx {
    tgid: u32,
    lo: u32,
    hi: u32,
    /// Non-zero: derived-set entries are dropped only if the descriptor is closed now
    /// (exec keeps the ones without close-on-exec), and reported closed.
    check_open: u32,
    tid: u32,
    /// Non-zero while iterating [`DERIVED`] (its drops are reported).
    derived: u32,
}

/// One [`FDCACHE`] or [`DERIVED`] entry (keys are both [`PidFd`]): dropped if it is in
/// the context's range; a derived one is reported closed.
#[inline(never)]
extern "C" fn forget_range_cb(
    map: *mut c_void,
    key: *mut c_void,
    _value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: `key` is a PidFd of the map being iterated; `ctx` is the caller's ForgetCtx.
    unsafe {
        let k = *(key as *const PidFd);
        let c = &*(ctx as *const ForgetCtx);
        if k.pid != c.tgid || (k.fd as u32) < c.lo || (k.fd as u32) > c.hi {
            return 0;
        }
        if c.check_open != 0 && fd_file(k.fd).unwrap_or(0) != 0 {
            return 0;
        }
        generated::bpf_map_delete_elem(map, key);
        if c.derived != 0 {
            emit_fd(&FdArgs {
                tgid: c.tgid,
                tid: c.tid,
                fd: k.fd,
                op: FD_OP_CLOSE,
                ..FdArgs::default()
            });
        }
    }
    0
}

/// One descriptor number `lo + index` of [`forget_range`]'s loop.
#[inline(never)]
extern "C" fn forget_fd_cb(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is forget_range()'s ForgetCtx.
    unsafe {
        let c = &*(ctx as *const ForgetCtx);
        let fd = (c.lo as u64 + index) as i32;
        let key = PidFd { pid: c.tgid, fd };
        let _ = FDCACHE.remove(&key);
        if DERIVED.get(&key).is_none() || (c.check_open != 0 && fd_file(fd).unwrap_or(0) != 0) {
            return 0;
        }
        let _ = DERIVED.remove(&key);
        emit_fd(&FdArgs {
            tgid: c.tgid,
            tid: c.tid,
            fd,
            op: FD_OP_CLOSE,
            ..FdArgs::default()
        });
    }
    0
}

/// Above this many descriptor numbers, [`forget_range`] iterates over the maps instead.
const FORGET_LOOP_MAX: u64 = 4096;

/// Drops process `tgid`'s cache entries for descriptors `lo..=hi` (all of them for
/// exec and exit), and its derived ones (reported closed; with `check_open`, only those
/// that are closed now). Only numbers below the process's highest cached one are looked
/// at (see [`FD_CACHED`]).
#[inline(always)]
fn forget_range(tgid: u32, tid: u32, lo: u32, hi: u32, check_open: bool) {
    fd_gen_bump();
    // SAFETY: value copied out.
    let Some(end) = (unsafe { FD_CACHED.get(&tgid) }).copied() else {
        return;
    };
    let stop = if (hi as u64) < end as u64 {
        hi as u64 + 1
    } else {
        end as u64
    };
    if lo as u64 >= stop {
        return;
    }
    let mut c = ForgetCtx {
        tgid,
        lo,
        hi,
        check_open: check_open as u32,
        tid,
        derived: 0,
    };
    if stop - lo as u64 <= FORGET_LOOP_MAX {
        // SAFETY: callback and context outlive the call; bpf_loop is bounded.
        unsafe {
            generated::bpf_loop(
                (stop - lo as u64) as u32,
                forget_fd_cb as *const () as *mut c_void,
                &mut c as *mut ForgetCtx as *mut c_void,
                0,
            );
        }
        return;
    }
    c.check_open = 0;
    // SAFETY: callback and context outlive the calls; the maps are this object's.
    unsafe {
        generated::bpf_for_each_map_elem(
            &FDCACHE as *const _ as *mut c_void,
            forget_range_cb as *const () as *mut c_void,
            &mut c as *mut ForgetCtx as *mut c_void,
            0,
        );
        c.check_open = check_open as u32;
        c.derived = 1;
        generated::bpf_for_each_map_elem(
            &DERIVED as *const _ as *mut c_void,
            forget_range_cb as *const () as *mut c_void,
            &mut c as *mut ForgetCtx as *mut c_void,
            0,
        );
    }
}

/// State shared with [`chunk_cb`] across `bpf_loop` iterations. Nothing that the size
/// of a read depends on changes between iterations (the offset is derived from the
/// index), so the verifier checks the callback once instead of once per chunk.
#[repr(C)]
struct CopyCtx {
    id: u64,
    addr: u64,
    len: u64,
    cap: u64,
    lost: u32,
    cpu: u32,
    flags: u8,
    role: u8,
    desc: u8,
    elem: u8,
    kernel: u8,
    _pad: [u8; 3],
}

/// One chunk: read `CHUNK_LEN` bytes (less for the last) and submit them.
#[inline(never)]
extern "C" fn chunk_cb(index: u64, ctx: *mut c_void) -> i64 {
    let c = ctx as *mut CopyCtx;
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: `c` is the caller's CopyCtx (bpf_loop passes it through); `rec` is this
    // CPU's scratch slot.
    unsafe {
        let i = index & 0xff;
        let off = i * CHUNK_LEN as u64;
        let cap = (*c).cap;
        if i > 0 && off >= cap {
            return 1;
        }
        let mut n = cap.wrapping_sub(off);
        if n > CHUNK_LEN as u64 {
            n = CHUNK_LEN as u64;
        }
        (*rec).ev = BufEvent {
            hdr: EventHeader {
                kind: EV_BUF,
                cpu: (*c).cpu,
            },
            id: (*c).id,
            addr: (*c).addr,
            total_len: (*c).len,
            offset: off as u32,
            len: n as u32,
            role: (*c).role,
            flags: if i == 0 { (*c).flags } else { 0 },
            desc: (*c).desc,
            elem: (*c).elem,
            _pad: 0,
        };
        let dst = (*rec).data.as_mut_ptr() as *mut c_void;
        let src = ((*c).addr + off) as *const c_void;
        let r = if n == 0 {
            0
        } else if (*c).kernel != 0 {
            generated::bpf_probe_read_kernel(dst, n as u32, src)
        } else {
            generated::bpf_probe_read_user(dst, n as u32, src)
        };
        if r != 0 {
            // Not resident (never touched, or swapped out): this program cannot fault
            // pages in. Report the chunk with its intended length and no bytes, and go
            // on with the next chunk: later pages of the buffer may be readable.
            bump(&COUNTERS, CNT_READ_FAIL, 1);
            (*rec).ev.flags |= FLAG_UNREADABLE;
            n = 0;
        }
        let total = (core::mem::size_of::<BufEvent>() as u64 + n) as usize;
        let bytes = core::slice::from_raw_parts(rec as *const u8, total);
        if EVENTS.output::<[u8]>(bytes, BPF_RB_NO_WAKEUP).is_err() {
            (*c).lost += 1;
            bump(&DROPS, DROP_CHUNK, 1);
        } else {
            bump(&COUNTERS, CNT_BYTES, n);
        }
        0
    }
}

/// Copies `len` bytes at user (or kernel) address `addr` into the ring buffer as chunks.
/// Returns the number of chunks that could not be submitted.
/// `meta` packs what BPF's five argument registers cannot hold separately; see [`meta`].
///
/// A global function (external linkage, so BTF marks it global): the verifier checks it
/// once on its own, instead of once per call site and loop iteration.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dxt_copy_buf(id: u64, addr: u64, len: u64, meta: u64) -> u32 {
    flush_pending();
    let max_len = (meta >> 32) as u32;
    let limit = if max_len == 0 || max_len > MAX_BUF_LEN {
        MAX_BUF_LEN
    } else {
        max_len
    } as u64;
    let mut cap = len;
    let mut flags = 0u8;
    if cap > limit {
        cap = limit;
        flags |= FLAG_TRUNCATED;
    }
    let mut ctx = CopyCtx {
        id,
        addr,
        len,
        cap,
        lost: 0,
        cpu: cpu(),
        flags,
        role: (meta >> 24) as u8,
        desc: (meta >> 16) as u8,
        elem: (meta >> 8) as u8,
        kernel: (meta & 1) as u8,
        _pad: [0; 3],
    };
    let mut chunks = cap.div_ceil(CHUNK_LEN as u64);
    if chunks == 0 {
        chunks = 1;
    }
    if chunks > MAX_CHUNKS as u64 {
        chunks = MAX_CHUNKS as u64;
    }
    // SAFETY: the callback and its context outlive the call; bpf_loop is bounded.
    let r = unsafe {
        generated::bpf_loop(
            chunks as u32,
            chunk_cb as *const () as *mut c_void,
            &mut ctx as *mut CopyCtx as *mut c_void,
            0,
        )
    };
    if r < 0 {
        return chunks as u32;
    }
    ctx.lost
}

/// Packs the per-buffer arguments of [`copy_buf`].
#[inline(always)]
fn meta(max_len: u32, role: u8, desc: u8, elem: u8, kernel: bool) -> u64 {
    ((max_len as u64) << 32)
        | ((role as u64) << 24)
        | ((desc as u64) << 16)
        | ((elem as u64) << 8)
        | kernel as u64
}

/// Bytes of `units` elements, without 128-bit arithmetic (BPF has none).
#[inline(always)]
fn byte_len(units: u64, elem_size: u32) -> u64 {
    let units = if units > 0xffff_ffff {
        0xffff_ffff
    } else {
        units
    };
    units * elem_size as u64
}

/// Reads the pointer and the length (in units) a descriptor names, relative to `base`.
#[inline(always)]
fn resolve(d: &PtrDesc, base: u64) -> Option<(u64, u64)> {
    // SAFETY: user reads through the helper.
    unsafe {
        let ptr: u64 = if d.flags & PTR_TRAILING != 0 {
            base + d.ptr_off as u64
        } else {
            bpf_probe_read_user((base + d.ptr_off as u64) as *const u64).ok()?
        };
        let units: u64 = match d.len_size {
            0 => d.fixed_len as u64,
            1 => bpf_probe_read_user((base + d.len_off as u64) as *const u8).ok()? as u64,
            2 => bpf_probe_read_user((base + d.len_off as u64) as *const u16).ok()? as u64,
            4 => bpf_probe_read_user((base + d.len_off as u64) as *const u32).ok()? as u64,
            _ => bpf_probe_read_user((base + d.len_off as u64) as *const u64).ok()?,
        };
        Some((ptr, units))
    }
}

/// Context of [`desc_cb`]: one iteration per pointer descriptor.
#[repr(C)]
struct WalkCtx {
    cd: *const CmdDesc,
    call_id: u64,
    arg: u64,
    lost: u32,
    dir: u8,
    _pad: [u8; 3],
}

/// Context of [`elem_cb`]: one iteration per element of the parent array.
#[repr(C)]
struct ElemCtx {
    d: *const PtrDesc,
    pptr: u64,
    stride: u64,
    call_id: u64,
    lost: u32,
    role: u8,
    desc: u8,
    _pad: [u8; 2],
}

/// Follows every descriptor whose direction matches `dir`. Loops go through `bpf_loop`
/// so that the verifier checks each body once (open-coded loops over 8 descriptors ×
/// 16 elements × 32 chunks exceed its one-million-instruction budget).
/// Global for the same reason as [`dxt_copy_buf`]; takes the request code (a scalar)
/// because global functions cannot take map-value pointers.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dxt_walk(cmd: u64, call_id: u64, arg: u64, dir: u64) -> u32 {
    let Some(cd) = DESCS.get_ptr(&(cmd as u32)) else {
        return 0;
    };
    let dir = dir as u8;
    let mut ctx = WalkCtx {
        cd,
        call_id,
        arg,
        lost: 0,
        dir,
        _pad: [0; 3],
    };
    // SAFETY: callback and context outlive the call.
    unsafe {
        generated::bpf_loop(
            MAX_DESCS as u32,
            desc_cb as *const () as *mut c_void,
            &mut ctx as *mut WalkCtx as *mut c_void,
            0,
        );
    }
    ctx.lost
}

#[inline(never)]
extern "C" fn desc_cb(index: u64, ctx: *mut c_void) -> i64 {
    let w = ctx as *mut WalkCtx;
    // SAFETY: `w` is walk()'s context; `cd` points into the DESCS map value.
    unsafe {
        let cd = (*w).cd;
        let i = (index as usize) & (MAX_DESCS - 1);
        if i as u32 >= (*cd).n {
            return 1;
        }
        let d = &(*cd).descs[i];
        let dir = (*w).dir;
        if d.dir & dir == 0 {
            return 0;
        }
        let role = if dir == DIR_IN {
            ROLE_PTR_IN
        } else {
            ROLE_PTR_OUT
        };
        if d.parent == NO_PARENT {
            if let Some((ptr, units)) = resolve(d, (*w).arg)
                && ptr != 0
            {
                let bytes = byte_len(units, d.elem_size);
                (*w).lost += dxt_copy_buf(
                    (*w).call_id,
                    ptr,
                    bytes,
                    meta(d.max_len, role, i as u8, 0, false),
                );
            }
            return 0;
        }
        let pd = &(*cd).descs[(d.parent as usize) & (MAX_DESCS - 1)];
        let Some((pptr, count)) = resolve(pd, (*w).arg) else {
            return 0;
        };
        if pptr == 0 {
            return 0;
        }
        // A pointer nested in a byte buffer (a private-data blob holding one struct)
        // has exactly one "element": the buffer itself.
        let count = if pd.elem_size <= 1 { 1 } else { count };
        let n = if count > MAX_NESTED_ELEMS as u64 {
            MAX_NESTED_ELEMS
        } else {
            count as u32
        };
        let mut e = ElemCtx {
            d: d as *const PtrDesc,
            pptr,
            stride: pd.elem_size as u64,
            call_id: (*w).call_id,
            lost: 0,
            role,
            desc: i as u8,
            _pad: [0; 2],
        };
        generated::bpf_loop(
            n,
            elem_cb as *const () as *mut c_void,
            &mut e as *mut ElemCtx as *mut c_void,
            0,
        );
        (*w).lost += e.lost;
    }
    0
}

#[inline(never)]
extern "C" fn elem_cb(index: u64, ctx: *mut c_void) -> i64 {
    let e = ctx as *mut ElemCtx;
    // SAFETY: `e` is desc_cb()'s context; `d` points into the DESCS map value.
    unsafe {
        let j = index & 0xff;
        let base = (*e).pptr + j * (*e).stride;
        let d = &*(*e).d;
        if let Some((ptr, units)) = resolve(d, base)
            && ptr != 0
        {
            let bytes = byte_len(units, d.elem_size);
            (*e).lost += dxt_copy_buf(
                (*e).call_id,
                ptr,
                bytes,
                meta(d.max_len, (*e).role, (*e).desc, j as u8, false),
            );
        }
    }
    0
}

// ---- hooks ----
//
// Two ways in: the raw `sys_enter` / `sys_exit` tracepoints (the default: the program
// gets the `pt_regs` and the syscall number and is called straight from the tracepoint,
// without the perf record the `syscalls:*` events build for every call), and the
// `syscalls:sys_{enter,exit}_*` tracepoints as a fallback where the raw ones do not
// attach. Both call the same handlers below with the syscall's arguments.

/// `pt_regs` words the syscall arguments are read from: arg2 (`dx`), arg1 (`si`), arg0
/// (`di`), contiguous on x86_64 so one read fetches all three.
#[inline(always)]
fn regs_args(regs: u64) -> Result<[u64; 3], i64> {
    // SAFETY: kernel read through the helper.
    unsafe {
        bpf_probe_read_kernel((regs + cfg(&OFF_REGS_ARGS) as u64) as *const [u64; 3])
            .map_err(|e| e as i64)
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> u32 {
    let id: u64 = ctx.arg(1);
    let nr = id as u32;
    if id > u32::MAX as u64
        || (nr != cfg(&NR_IOCTL)
            && nr != cfg(&NR_CLOSE)
            && nr != cfg(&NR_OPENAT)
            && nr != cfg(&NR_DUP)
            && nr != cfg(&NR_DUP2)
            && nr != cfg(&NR_DUP3)
            && nr != cfg(&NR_FCNTL)
            && nr != cfg(&NR_CLOSE_RANGE))
    {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let Ok([a2, a1, a0]) = regs_args(regs) else {
        bump(&COUNTERS, CNT_WALK_FAIL, 1);
        return 0;
    };
    let r = if nr == cfg(&NR_IOCTL) {
        on_enter_ioctl(a0 as i32, a1 as u32, a2)
    } else if nr == cfg(&NR_CLOSE) {
        on_enter_close(a0 as i32)
    } else if nr == cfg(&NR_OPENAT) {
        on_enter_openat(a1, a2 as u32)
    } else if nr == cfg(&NR_CLOSE_RANGE) {
        on_enter_close_range(a0, a1, a2)
    } else {
        on_enter_dup(nr, a0, a1, a2)
    };
    if r.is_err() {
        bump(&COUNTERS, CNT_WALK_FAIL, 1);
    }
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> u32 {
    let ret: i64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // A thread is in one syscall at a time: a slot with a captured call in flight means
    // this is that ioctl's exit, and the syscall number need not be read.
    if tid < cfg(&THREAD_SLOTS)
        && let Some(p) = THREADS.get_ptr_mut(tid)
        // SAFETY: this thread's slot.
        && unsafe { (*p).active } != CALL_IDLE
    {
        if exit_ioctl(p, pid_tgid, ret).is_err() {
            bump(&COUNTERS, CNT_WALK_FAIL, 1);
        }
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    // SAFETY: kernel read through the helper.
    let Ok(nr) =
        (unsafe { bpf_probe_read_kernel((regs + cfg(&OFF_REGS_ORIG_AX) as u64) as *const u64) })
    else {
        return 0;
    };
    let nr = nr as u32;
    let r = if nr == cfg(&NR_IOCTL) {
        // An array slot was looked at above (idle: not a captured call); only threads
        // beyond the array have a hashed slot to look up.
        if tid < cfg(&THREAD_SLOTS) {
            return 0;
        }
        match INFLIGHT.get_ptr_mut(&tid) {
            Some(p) => exit_ioctl(p, pid_tgid, ret),
            None => return 0,
        }
    } else if nr == cfg(&NR_OPENAT) {
        on_exit_openat(ret)
    } else if nr == cfg(&NR_DUP)
        || nr == cfg(&NR_DUP2)
        || nr == cfg(&NR_DUP3)
        || nr == cfg(&NR_FCNTL)
    {
        on_exit_dup(ret)
    } else if nr == cfg(&NR_CLOSE_RANGE) {
        on_exit_close_range(ret)
    } else {
        return 0;
    };
    if r.is_err() {
        bump(&COUNTERS, CNT_WALK_FAIL, 1);
    }
    0
}

/// Field `i` (0-based) of a `syscalls:sys_enter_*` record: the arguments start at 16.
#[inline(always)]
fn tp_arg(ctx: &TracePointContext, i: usize) -> Result<u64, i64> {
    // SAFETY: offsets from the sys_enter_* formats (8-byte fields from offset 16).
    unsafe { ctx.read_at::<u64>(16 + 8 * i).map_err(|e| e as i64) }
}

/// `ret` of a `syscalls:sys_exit_*` record.
#[inline(always)]
fn tp_ret(ctx: &TracePointContext) -> Result<i64, i64> {
    // SAFETY: sys_exit_* format: ret@16.
    unsafe { ctx.read_at::<i64>(16).map_err(|e| e as i64) }
}

#[inline(always)]
fn counted(r: Result<u32, i64>) -> u32 {
    match r {
        Ok(v) => v,
        Err(_) => {
            bump(&COUNTERS, CNT_WALK_FAIL, 1);
            0
        }
    }
}

#[tracepoint]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    counted((|| {
        on_enter_ioctl(
            tp_arg(&ctx, 0)? as i32,
            tp_arg(&ctx, 1)? as u32,
            tp_arg(&ctx, 2)?,
        )
    })())
}

#[tracepoint]
pub fn sys_exit_ioctl(ctx: TracePointContext) -> u32 {
    counted(tp_ret(&ctx).and_then(on_exit_ioctl))
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    counted((|| {
        on_enter_openat(tp_arg(&ctx, 1)?, tp_arg(&ctx, 2)? as u32)
    })())
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    counted(tp_ret(&ctx).and_then(on_exit_openat))
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    counted(tp_arg(&ctx, 0).and_then(|fd| on_enter_close(fd as i32)))
}

/// `syscalls:sys_enter_{dup,dup2,dup3,fcntl}`: which one comes from the loader's
/// attachment (one program per tracepoint, the syscall number as a constant).
#[inline(always)]
fn tp_enter_dup(ctx: &TracePointContext, nr: u32) -> u32 {
    counted((|| {
        on_enter_dup(nr, tp_arg(ctx, 0)?, tp_arg(ctx, 1)?, tp_arg(ctx, 2)?)
    })())
}

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    tp_enter_dup(&ctx, cfg(&NR_DUP))
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    tp_enter_dup(&ctx, cfg(&NR_DUP2))
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    tp_enter_dup(&ctx, cfg(&NR_DUP3))
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    tp_enter_dup(&ctx, cfg(&NR_FCNTL))
}

#[tracepoint]
pub fn sys_enter_close_range(ctx: TracePointContext) -> u32 {
    counted((|| {
        on_enter_close_range(tp_arg(&ctx, 0)?, tp_arg(&ctx, 1)?, tp_arg(&ctx, 2)?)
    })())
}

#[tracepoint]
pub fn sys_exit_close_range(ctx: TracePointContext) -> u32 {
    counted(tp_ret(&ctx).and_then(on_exit_close_range))
}

/// Exit of any of the four copying calls (the entry left what it needs by thread).
#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    counted(tp_ret(&ctx).and_then(on_exit_dup))
}

/// Does nothing: attached alone by `Probe::floor` to measure what the hook itself costs.
#[tracepoint]
pub fn noop_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

/// Does nothing, as [`noop_tracepoint`], for the raw hooks.
#[raw_tracepoint]
pub fn noop_raw_tracepoint(_ctx: RawTracePointContext) -> u32 {
    0
}

// ---- ioctl ----

/// This CPU's previous captured thread: `comm` is sent only when it changes.
#[inline(always)]
fn comm_needed(tid: u32) -> bool {
    match LAST_TID.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(p) => unsafe {
            if *p == tid {
                false
            } else {
                *p = tid;
                true
            }
        },
        None => true,
    }
}

/// Reads `len` (≤ [`INLINE_MAX`]) user bytes at `addr` right behind a record of `hdr`
/// bytes staged in `rec`; returns (bytes read, flags).
#[inline(always)]
fn read_inline(rec: *mut u8, hdr: usize, addr: u64, len: u32) -> (u32, u8) {
    let n = len & (INLINE_MAX as u32 * 2 - 1);
    if n == 0 || n as usize > INLINE_MAX {
        return (0, 0);
    }
    // SAFETY: `rec` is a staging slot of `hdr + INLINE_MAX` bytes; `n` ≤ INLINE_MAX.
    let r = unsafe {
        generated::bpf_probe_read_user(rec.add(hdr) as *mut c_void, n, addr as *const c_void)
    };
    if r != 0 {
        bump(&COUNTERS, CNT_READ_FAIL, 1);
        (0, FLAG_UNREADABLE)
    } else {
        bump(&COUNTERS, CNT_BYTES, n as u64);
        (n, 0)
    }
}

/// Volatile store: keeps LLVM from merging runs of field stores into `memset` /
/// `memcpy` calls, which the BPF target turns into byte-by-byte loops in a subprogram.
#[inline(always)]
fn put<T>(dst: *mut T, v: T) {
    // SAFETY: callers pass pointers into map values or reserved ring-buffer records.
    unsafe { core::ptr::write_volatile(dst, v) }
}

/// Fills a record's `comm` with the thread's name when the reader needs it (see
/// [`comm_needed`]), zeroes it otherwise; true if filled (the record's `has_comm`).
#[inline(always)]
fn put_comm(comm: *mut [u8; 16], tid: u32) -> bool {
    let words = comm as *mut u64;
    put(words, 0);
    // SAFETY: `comm` is 16 bytes of a reserved or staged record.
    put(unsafe { words.add(1) }, 0);
    // SAFETY: the helper writes at most 16 bytes there.
    comm_needed(tid) && unsafe { generated::bpf_get_current_comm(comm as *mut c_void, 16) } == 0
}

/// Whether calls with request code `cmd` need the descriptor table (see [`CMD_FULL`]).
#[inline(always)]
fn cmd_full(cmd: u32) -> bool {
    let bit = cmd & 0xffff;
    let word = ((bit >> 6) as usize) & (CMD_BITMAP_WORDS - 1);
    // SAFETY: reading a static; volatile so the compiler does not fold the default value.
    let w = unsafe { core::ptr::read_volatile(&CMD_FULL[word]) };
    (w >> (bit & 63)) & 1 != 0
}

/// The thread's in-flight slot, created on its first captured call.
#[inline(always)]
fn inflight_slot(tid: u32) -> Option<*mut Inflight> {
    if tid < cfg(&THREAD_SLOTS) {
        return THREADS.get_ptr_mut(tid);
    }
    if let Some(p) = INFLIGHT.get_ptr_mut(&tid) {
        return Some(p);
    }
    let fresh = Inflight::default();
    if INFLIGHT.insert(&tid, &fresh, 0).is_err() {
        bump(&DROPS, DROP_INFLIGHT, 1);
        return None;
    }
    INFLIGHT.get_ptr_mut(&tid)
}

/// The thread's in-flight slot if it has one.
#[inline(always)]
fn existing_slot(tid: u32) -> Option<*mut Inflight> {
    if tid < cfg(&THREAD_SLOTS) {
        THREADS.get_ptr_mut(tid)
    } else {
        INFLIGHT.get_ptr_mut(&tid)
    }
}

#[inline(always)]
fn on_enter_ioctl(fd: i32, cmd: u32, arg: u64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // The thread's own copy of its last verdict, if nothing changed since (an array slot
    // read instead of a hash lookup; threads with hashed slots go to the cache).
    let generation = fd_gen();
    let mine = if tid < cfg(&THREAD_SLOTS) {
        THREADS.get_ptr_mut(tid)
    } else {
        None
    };
    let (state, dev, ino) = match mine {
        // SAFETY: this thread's slot.
        Some(s) if unsafe { (*s).vgen == generation && (*s).vfd == fd && (*s).vtgid == tgid } => unsafe {
            ((*s).vstate as u8, (*s).vdev, (*s).vino)
        },
        _ => {
            // The cache: a process has entries only if it passed the pid filter.
            // SAFETY: value copied out.
            let v = match unsafe { FDCACHE.get(&PidFd { pid: tgid, fd }) } {
                Some(v) => *v,
                None => {
                    if !pid_ok(tgid) {
                        return Ok(0);
                    }
                    fd_verdict_miss(tgid, fd)?
                }
            };
            if let Some(s) = mine {
                // SAFETY: this thread's slot.
                unsafe {
                    put(&raw mut (*s).vfd, fd);
                    put(&raw mut (*s).vtgid, tgid);
                    put(&raw mut (*s).vstate, v.state as u32);
                    put(&raw mut (*s).vdev, v.dev);
                    put(&raw mut (*s).vino, v.ino);
                    put(&raw mut (*s).vgen, generation);
                }
            }
            (v.state, v.dev, v.ino)
        }
    };
    if state == FDV_NO {
        return Ok(0);
    }
    bump(&COUNTERS, CNT_CALLS, 1);
    let call_id = next_id();
    let ts = ktime();
    let size = (cmd >> 16) & 0x3fff;
    let (mut fd_kind, mut fd_size, mut fd_off, mut dirs) = (FD_NONE, 0u8, 0u32, 0u8);
    let full = cmd_full(cmd);
    if full && let Some(cdp) = DESCS.get_ptr(&cmd) {
        // SAFETY: map value pointer, read-only.
        let cd = unsafe { &*cdp };
        fd_kind = cd.fd_kind;
        fd_size = cd.fd_size;
        fd_off = cd.fd_off;
        let mut i = 0;
        while i < MAX_DESCS {
            if (i as u32) < cd.n {
                dirs |= cd.descs[i].dir;
            }
            i += 1;
        }
    }
    // Threads with an array slot already have it in `mine`.
    let Some(slot) = mine.or_else(|| inflight_slot(tid)) else {
        return Ok(0);
    };
    // SAFETY: this thread's slot; only this thread writes it while it is in a call.
    unsafe {
        put(&raw mut (*slot).call_id, call_id);
        put(&raw mut (*slot).arg, arg);
        put(&raw mut (*slot).cmd, cmd);
        put(&raw mut (*slot).fd, fd);
        put(&raw mut (*slot).lost, 0);
    }
    let no_bytes = !full && (size == 0 || arg == 0);
    if no_bytes && cfg(&COMBINE) != 0 {
        // Nothing to read at entry or exit: the whole call goes out at exit as one record.
        // SAFETY: as above.
        unsafe {
            put(&raw mut (*slot).ts, ts);
            put(&raw mut (*slot).ino, ino);
            put(&raw mut (*slot).dev, dev);
            put(&raw mut (*slot).pid, tgid);
            put(&raw mut (*slot).active, CALL_WHOLE);
        }
        return Ok(0);
    }
    // SAFETY: as above.
    unsafe {
        put(&raw mut (*slot).fd_off, fd_off);
        put(&raw mut (*slot).dirs, dirs);
        put(&raw mut (*slot).fd_kind, fd_kind);
        put(&raw mut (*slot).fd_size, fd_size);
        put(&raw mut (*slot).active, CALL_SPLIT);
    }
    flush_pending();
    let Some(rec) = ENTER_SCRATCH.get_ptr_mut(0) else {
        // SAFETY: this thread's slot.
        unsafe { put(&raw mut (*slot).active, CALL_IDLE) };
        return Ok(0);
    };
    let inline = size as usize <= INLINE_MAX && size > 0 && arg != 0;
    // SAFETY: this CPU's staging slot, large enough for the record and INLINE_MAX bytes.
    let total = unsafe {
        let e = rec as *mut EnterEvent;
        put(&raw mut (*e).hdr.kind, EV_ENTER);
        put(&raw mut (*e).hdr.cpu, cpu());
        put(&raw mut (*e).call_id, call_id);
        put(&raw mut (*e).ts, ts);
        put(&raw mut (*e).pid, tgid);
        put(&raw mut (*e).tid, tid);
        put(&raw mut (*e).fd, fd);
        put(&raw mut (*e).cmd, cmd);
        put(&raw mut (*e).arg, arg);
        put(&raw mut (*e).dev, dev as u64);
        put(&raw mut (*e).ino, ino);
        // struct_len, struct_flags, has_comm, inline and the pad: one word.
        put((&raw mut (*e).struct_len) as *mut u64, 0);
        put(&raw mut (*e).inline, inline as u8);
        if put_comm(&raw mut (*e).comm, tid) {
            put(&raw mut (*e).has_comm, 1);
        }
        let hdr = core::mem::size_of::<EnterEvent>();
        let mut n = 0;
        if inline {
            let (got, flags) = read_inline(rec as *mut u8, hdr, arg, size);
            put(&raw mut (*e).struct_len, size as u16);
            put(&raw mut (*e).struct_flags, flags);
            n = got;
        }
        hdr + (n as usize & (INLINE_MAX * 2 - 1))
    };
    // SAFETY: `total` ≤ the slot's size (checked above).
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const u8, total) };
    if total > core::mem::size_of::<EnterEvent>() + INLINE_MAX
        || EVENTS.output::<[u8]>(bytes, BPF_RB_NO_WAKEUP).is_err()
    {
        // The whole call is lost: forget it so that no orphan chunks or exit follow.
        // SAFETY: this thread's slot.
        unsafe { put(&raw mut (*slot).active, CALL_IDLE) };
        bump(&DROPS, DROP_CALL, 1);
        return Ok(0);
    }

    let mut lost = 0;
    if size > 0 && arg != 0 && !inline {
        lost += dxt_copy_buf(
            call_id,
            arg,
            size as u64,
            meta(0, ROLE_STRUCT_IN, DESC_STRUCT, 0, false),
        );
    }
    if dirs & DIR_IN != 0 {
        lost += dxt_walk(cmd as u64, call_id, arg, DIR_IN as u64);
    }
    if lost > 0 {
        // SAFETY: only this thread touches its slot.
        unsafe { (*slot).lost += lost }
    }
    Ok(0)
}

// ---- batches of calls ----
//
// A call that carries no bytes is written into its CPU's `BATCH` at exit instead of a ring
// record of its own: one reserve/commit (a spinlock taken with interrupts off, two helper
// calls, the ring's producer position bounced between the CPUs) per batch instead of per
// call. A batch goes to the ring when it is full, when its first call is older than
// `BATCH_AGE_NS` at the next call, before any other record of the CPU (so that one CPU's
// records stay in the order they were made), when the loader asks (`close(FLUSH_FD)` from
// the loader's process on that CPU, every few tens of ms: a quiet CPU's batch does not
// wait), and at the stop the loader reads what is left.
//
// Who writes a CPU's batch: the syscall programs (raw `sys_enter` / `sys_exit`, or the
// `syscalls:*` tracepoints) and `sched_process_exit` (and, flushing only, the VMBus
// uprobes and kprobes). The syscall and sched programs run in the context of the task
// that makes the syscall or exits, with preemption off (the syscall tracepoints are
// faultable since 6.13, but `__BPF_DECLARE_TRACE_SYSCALL` still disables preemption
// around the BPF programs on them), and nothing they do makes a syscall or exits a task,
// so they never run inside one another on a CPU: no two of them touch a batch at once,
// and the per-program recursion guard is not what ensures it (it only stops a program
// nesting in itself). A kernel that ran these programs preemptibly (migration off only)
// would let another task's program on the same CPU interleave: the batches, like the
// per-CPU staging maps (`ENTER_SCRATCH`, `EXIT_SCRATCH`, `SCRATCH`), would then need a
// per-CPU guard. The uprobes run in
// process context at a user instruction, never inside those. The kernel VMBus kprobes
// could fire in interrupt context inside a syscall program, but where they are attached
// (dxgkrnl present) calls are not combined (`COMBINE` 0): no call is batched, every batch
// stays empty and their flush finds nothing to do. NMI-context programs of other tools do
// not see our maps.

/// Submits this CPU's batch `b` (if it holds any call) as one record; a batch the ring
/// has no room for counts every call in it as lost.
#[inline(always)]
fn submit_batch(b: *mut CallBatch) {
    // SAFETY: this CPU's batch (see the section comment on who writes it).
    unsafe {
        let n = (*b).count as usize & (BATCH_LEN * 2 - 1);
        if n == 0 || n > BATCH_LEN {
            put(&raw mut (*b).count, 0);
            return;
        }
        put(&raw mut (*b).hdr.kind, EV_CALLS);
        put(&raw mut (*b).hdr.cpu, cpu());
        let len =
            core::mem::size_of::<CallBatch>() - (BATCH_LEN - n) * core::mem::size_of::<CallEvent>();
        let bytes = core::slice::from_raw_parts(b as *const u8, len);
        if EVENTS
            .output::<[u8]>(bytes, wake_flags(len as u64))
            .is_err()
        {
            bump(&DROPS, DROP_CALL, n as u64);
        }
        put(&raw mut (*b).count, 0);
    }
}

/// Submits this CPU's batch before another record, so that the records of one CPU stay in
/// the order they were made.
#[inline(always)]
fn flush_pending() {
    if let Some(b) = BATCH.get_ptr_mut(0)
        // SAFETY: this CPU's batch.
        && unsafe { (*b).count } != 0
    {
        submit_batch(b);
    }
}

/// Oldest a batched call may get before its batch is submitted, in ns (checked when the
/// CPU batches another call; the loader's flushes bound it otherwise).
const BATCH_AGE_NS: u64 = 100_000_000;

/// Writes the [`CallEvent`] of the [`CALL_WHOLE`] call in `slot` (`ts_exit` 0: it never
/// returned, and the batch goes at once) into this CPU's batch. Calls the ring has no
/// room for are counted as lost.
#[inline(always)]
fn batch_call(slot: *const Inflight, tid: u32, ts_exit: u64, ret: i64) {
    let Some(b) = BATCH.get_ptr_mut(0) else {
        bump(&DROPS, DROP_CALL, 1);
        return;
    };
    // SAFETY: this CPU's batch; `slot` is this thread's slot.
    unsafe {
        let mut n = (*b).count as usize & (BATCH_LEN * 2 - 1);
        if n >= BATCH_LEN {
            submit_batch(b);
            n = 0;
        }
        let e = (&raw mut (*b).calls as *mut CallEvent).add(n);
        put(&raw mut (*e).hdr.kind, EV_CALL);
        put(&raw mut (*e).call_id, (*slot).call_id);
        put(&raw mut (*e).ts_enter, (*slot).ts);
        put(&raw mut (*e).ts_exit, ts_exit);
        put(&raw mut (*e).ret, ret);
        put(&raw mut (*e).arg, (*slot).arg);
        put(&raw mut (*e).dev, (*slot).dev as u64);
        put(&raw mut (*e).ino, (*slot).ino);
        put(&raw mut (*e).pid, (*slot).pid);
        put(&raw mut (*e).tid, tid);
        put(&raw mut (*e).fd, (*slot).fd);
        put(&raw mut (*e).cmd, (*slot).cmd);
        put(&raw mut (*e).has_comm, 0);
        if put_comm(&raw mut (*e).comm, tid) {
            put(&raw mut (*e).has_comm, 1);
        }
        put(&raw mut (*b).count, n as u32 + 1);
        let first = (*b).calls[0].ts_exit;
        if ts_exit == 0 || n + 1 >= (*b).cap as usize || ts_exit.wrapping_sub(first) > BATCH_AGE_NS
        {
            submit_batch(b);
        }
    }
}

/// `close(FLUSH_FD)` from the loader's process ([`LOADER_TGID`]): this CPU's batch to the
/// ring, and from then on this CPU batches (`cap`); counted in `CNT_FLUSHES`.
#[inline(always)]
fn flush_request() {
    if let Some(b) = BATCH.get_ptr_mut(0) {
        submit_batch(b);
        if cfg(&COMBINE) != 0 {
            // SAFETY: this CPU's batch.
            put(unsafe { &raw mut (*b).cap }, BATCH_LEN as u8);
        }
    }
    bump(&COUNTERS, CNT_FLUSHES, 1);
}

#[inline(always)]
fn on_exit_ioctl(ret: i64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = existing_slot(pid_tgid as u32) else {
        return Ok(0);
    };
    exit_ioctl(p, pid_tgid, ret)
}

/// The exit of the ioctl whose slot is `p` (if one is in flight there).
#[inline(always)]
fn exit_ioctl(p: *mut Inflight, pid_tgid: u64, ret: i64) -> Result<u32, i64> {
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // SAFETY: this thread's slot, marked free; its fields are read below before the
    // thread can start another call.
    let active = unsafe { (*p).active };
    if active == CALL_IDLE {
        return Ok(0);
    }
    put(unsafe { &raw mut (*p).active }, CALL_IDLE);
    let ts = ktime();
    if active == CALL_WHOLE {
        batch_call(p, tid, ts, ret);
        return Ok(0);
    }
    flush_pending();
    // SAFETY: as above.
    let (call_id, arg, cmd, mut lost, fd_off, dirs, fd_kind, fd_size) = unsafe {
        (
            (*p).call_id,
            (*p).arg,
            (*p).cmd,
            (*p).lost,
            (*p).fd_off,
            (*p).dirs,
            (*p).fd_kind,
            (*p).fd_size,
        )
    };
    let size = (cmd >> 16) & 0x3fff;
    let inline = size as usize <= INLINE_MAX && size > 0 && arg != 0;
    if size > 0 && arg != 0 && !inline {
        lost += dxt_copy_buf(
            call_id,
            arg,
            size as u64,
            meta(0, ROLE_STRUCT_OUT, DESC_STRUCT, 0, false),
        );
    }
    if dirs & DIR_OUT != 0 {
        lost += dxt_walk(cmd as u64, call_id, arg, DIR_OUT as u64);
    }
    let newfd: i64 = match fd_kind {
        FD_RET if ret >= 0 => ret,
        FD_FIELD if ret == 0 => {
            let at = arg + fd_off as u64;
            // SAFETY: user read through the helper.
            unsafe {
                if fd_size == 8 {
                    bpf_probe_read_user(at as *const i64).unwrap_or(-1)
                } else {
                    bpf_probe_read_user(at as *const i32).unwrap_or(-1) as i64
                }
            }
        }
        _ => -1,
    };
    if newfd >= 0 && newfd <= i32::MAX as i64 {
        let key = PidFd {
            pid: tgid,
            fd: newfd as i32,
        };
        let _ = DERIVED.insert(&key, &1, 0);
        cache_put(tgid, newfd as i32, &FdVerdict::new(FDV_DERIVED, 0, 0));
        emit_fd(&FdArgs {
            tgid,
            tid,
            fd: newfd as i32,
            op: FD_OP_DERIVED,
            ret,
            call_id,
            ..FdArgs::default()
        });
    }
    let Some(rec) = EXIT_SCRATCH.get_ptr_mut(0) else {
        return Ok(0);
    };
    // SAFETY: this CPU's staging slot, large enough for the record and INLINE_MAX bytes.
    let total = unsafe {
        let x = rec as *mut ExitEvent;
        put(&raw mut (*x).hdr.kind, EV_EXIT);
        put(&raw mut (*x).hdr.cpu, cpu());
        put(&raw mut (*x).call_id, call_id);
        put(&raw mut (*x).ts, ts);
        put(&raw mut (*x).ret, ret);
        put(&raw mut (*x).lost_chunks, lost);
        put(&raw mut (*x).struct_len, 0);
        put(&raw mut (*x).struct_flags, 0);
        put(&raw mut (*x).inline, inline as u8);
        let hdr = core::mem::size_of::<ExitEvent>();
        let mut n = 0;
        if inline {
            let (got, flags) = read_inline(rec as *mut u8, hdr, arg, size);
            put(&raw mut (*x).struct_len, size as u16);
            put(&raw mut (*x).struct_flags, flags);
            n = got;
        }
        hdr + (n as usize & (INLINE_MAX * 2 - 1))
    };
    // SAFETY: `total` ≤ the slot's size (checked).
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const u8, total) };
    if total > core::mem::size_of::<ExitEvent>() + INLINE_MAX
        || EVENTS
            .output::<[u8]>(bytes, wake_flags(total as u64))
            .is_err()
    {
        bump(&DROPS, DROP_EXIT, 1);
    }
    Ok(0)
}

// ---- descriptors: open / close / copies / fork ----

/// Fields of an [`FdEventRaw`] (the rest are stamped by [`emit_fd`]).
#[derive(Default)]
struct FdArgs {
    tgid: u32,
    tid: u32,
    fd: i32,
    op: u32,
    dev: u32,
    ino: u64,
    flags: u32,
    old_fd: i32,
    ret: i64,
    call_id: u64,
    path: u64,
}

#[inline(always)]
fn emit_fd(a: &FdArgs) {
    flush_pending();
    let Some(mut entry) = EVENTS.reserve::<FdEventRaw>(0) else {
        bump(&DROPS, DROP_FD, 1);
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` is a reserved, writable FdEventRaw in the ring buffer.
    unsafe {
        (*p).hdr = EventHeader {
            kind: EV_FD,
            cpu: cpu(),
        };
        (*p).ts = ktime();
        (*p).pid = a.tgid;
        (*p).tid = a.tid;
        (*p).fd = a.fd;
        (*p).op = a.op;
        (*p).dev = a.dev as u64;
        (*p).ino = a.ino;
        (*p).flags = a.flags;
        (*p).old_fd = a.old_fd;
        (*p).ret = a.ret;
        (*p).call_id = a.call_id;
        (*p).path[0] = 0;
        if a.path != 0 {
            let _ = bpf_probe_read_user_str_bytes(a.path as *const u8, &mut (*p).path);
        }
    }
    entry.submit(wake_flags(core::mem::size_of::<FdEventRaw>() as u64));
}

#[inline(always)]
fn on_enter_openat(filename: u64, flags: u32) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pid_ok((pid_tgid >> 32) as u32) {
        return Ok(0);
    }
    let args = OpenArgs {
        filename,
        flags,
        _pad: 0,
    };
    let _ = OPENS.insert(&(pid_tgid as u32), &args, 0);
    Ok(0)
}

#[inline(always)]
fn on_exit_openat(ret: i64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: copied before removal.
    let Some(args) = (unsafe { OPENS.get(&tid) }).copied() else {
        return Ok(0);
    };
    let _ = OPENS.remove(&tid);
    if ret < 0 {
        return Ok(0);
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some((dev, ino)) = watched_file(ret as i32)? else {
        // A new descriptor: whatever the cache says of its number is stale.
        cache_forget(tgid, ret as i32);
        return Ok(0);
    };
    cache_put(tgid, ret as i32, &FdVerdict::new(FDV_DEVICE, dev, ino));
    emit_fd(&FdArgs {
        tgid,
        tid,
        fd: ret as i32,
        op: FD_OP_OPEN,
        dev,
        ino,
        flags: args.flags,
        ret,
        path: args.filename,
        ..FdArgs::default()
    });
    Ok(0)
}

/// `fd` of this process stops referring to what it did (close, or dup2/dup3 over it):
/// drops it from the derived set, and reports the close if it was watched.
#[inline(always)]
fn forget_fd(tgid: u32, tid: u32, fd: i32, ret: i64) -> Result<(), i64> {
    let key = PidFd { pid: tgid, fd };
    // SAFETY: value copied out.
    let cached = unsafe { FDCACHE.get(&key) }.copied();
    if cached.is_some() {
        cache_forget(tgid, fd);
    }
    let derived = match cached {
        Some(v) => v.state == FDV_DERIVED,
        // SAFETY: presence test only.
        None => unsafe { DERIVED.get(&key) }.is_some(),
    };
    if derived {
        let _ = DERIVED.remove(&key);
        emit_fd(&FdArgs {
            tgid,
            tid,
            fd,
            op: FD_OP_CLOSE,
            ret,
            ..FdArgs::default()
        });
        return Ok(());
    }
    let watched = match cached {
        Some(v) if v.state == FDV_DEVICE => Some((v.dev, v.ino)),
        Some(_) => None,
        None => watched_file(fd)?,
    };
    if let Some((dev, ino)) = watched {
        emit_fd(&FdArgs {
            tgid,
            tid,
            fd,
            op: FD_OP_CLOSE,
            dev,
            ino,
            ret,
            ..FdArgs::default()
        });
    }
    Ok(())
}

#[inline(always)]
fn on_enter_close(fd: i32) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if fd == FLUSH_FD && tgid == cfg(&LOADER_TGID) {
        flush_request();
        return Ok(0);
    }
    if !pid_ok(tgid) {
        return Ok(0);
    }
    // Whether or not the cache knows this number, a thread's verdict for it goes.
    fd_gen_bump();
    forget_fd(tgid, pid_tgid as u32, fd, 0)?;
    Ok(0)
}

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;
const O_CLOEXEC: u32 = 0o2000000;

/// Entry of dup / dup2 / dup3 / fcntl: remembers (by thread) the descriptor being copied
/// when it is watched, and a dup2/dup3 target that is about to be replaced.
#[inline(always)]
fn on_enter_dup(nr: u32, a0: u64, a1: u64, a2: u64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let old_fd = a0 as i32;
    let (target, flags) = if nr == cfg(&NR_FCNTL) {
        match a1 {
            F_DUPFD => (-1, 0),
            F_DUPFD_CLOEXEC => (-1, O_CLOEXEC),
            _ => return Ok(0),
        }
    } else if nr == cfg(&NR_DUP) {
        (-1, 0)
    } else if nr == cfg(&NR_DUP2) {
        (a1 as i32, 0)
    } else {
        (a1 as i32, a2 as u32 & O_CLOEXEC)
    };
    if !pid_ok(tgid) {
        return Ok(0);
    }
    let v = fd_verdict(tgid, old_fd)?;
    let derived = v.state == FDV_DERIVED;
    let (dev, ino) = (v.dev, v.ino);
    let watched = v.state != FDV_NO;
    // A dup2/dup3 target that is watched now is closed by the call (unless it is the
    // copied descriptor itself).
    let target_watched =
        target >= 0 && target != old_fd && fd_verdict(tgid, target)?.state != FDV_NO;
    if !watched && !target_watched {
        return Ok(0);
    }
    let d = DupArgs {
        old_fd,
        target,
        dev,
        flags,
        ino,
        watched: watched as u8,
        derived: derived as u8,
        target_watched: target_watched as u8,
        _pad: 0,
    };
    let _ = DUPS.insert(&(pid_tgid as u32), &d, 0);
    Ok(0)
}

/// Exit of dup / dup2 / dup3 / fcntl(F_DUPFD*): the new descriptor joins the watch set
/// when the copied one was watched; a replaced dup2/dup3 target leaves it.
#[inline(always)]
fn on_exit_dup(ret: i64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // SAFETY: copied before removal.
    let Some(d) = (unsafe { DUPS.get(&tid) }).copied() else {
        return Ok(0);
    };
    let _ = DUPS.remove(&tid);
    if ret < 0 || ret > i32::MAX as i64 {
        return Ok(0);
    }
    let new_fd = ret as i32;
    if d.target_watched != 0 {
        let key = PidFd {
            pid: tgid,
            fd: d.target,
        };
        let _ = DERIVED.remove(&key);
        cache_forget(tgid, d.target);
        emit_fd(&FdArgs {
            tgid,
            tid,
            fd: d.target,
            op: FD_OP_CLOSE,
            ..FdArgs::default()
        });
    }
    let key = PidFd {
        pid: tgid,
        fd: new_fd,
    };
    if d.watched == 0 {
        return Ok(0);
    }
    if d.derived != 0 {
        // An anonymous inode (VM, vCPU, sync file…): only the set knows it.
        let _ = DERIVED.insert(&key, &1, 0);
        cache_put(tgid, new_fd, &FdVerdict::new(FDV_DERIVED, 0, 0));
    } else {
        cache_put(tgid, new_fd, &FdVerdict::new(FDV_DEVICE, d.dev, d.ino));
    }
    emit_fd(&FdArgs {
        tgid,
        tid,
        fd: new_fd,
        op: FD_OP_DUP,
        dev: d.dev,
        ino: d.ino,
        flags: d.flags,
        old_fd: d.old_fd,
        ret,
        ..FdArgs::default()
    });
    Ok(0)
}

const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;

/// Entry of `close_range(first, last, flags)`: remembered by thread for the exit.
#[inline(always)]
fn on_enter_close_range(first: u64, last: u64, flags: u64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pid_ok((pid_tgid >> 32) as u32) || flags as u32 & CLOSE_RANGE_CLOEXEC != 0 {
        return Ok(0);
    }
    let _ = CLOSE_RANGES.insert(
        &(pid_tgid as u32),
        &[first as u32, last as u32, flags as u32],
        0,
    );
    Ok(0)
}

/// Exit of `close_range`: the descriptors of the range are closed; drop them from the
/// cache and the derived set (the derived ones reported closed).
#[inline(always)]
fn on_exit_close_range(ret: i64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: copied before removal.
    let Some(a) = (unsafe { CLOSE_RANGES.get(&tid) }).copied() else {
        return Ok(0);
    };
    let _ = CLOSE_RANGES.remove(&tid);
    if ret == 0 {
        forget_range((pid_tgid >> 32) as u32, tid, a[0], a[1], false);
    }
    Ok(0)
}

/// After an exec the close-on-exec descriptors are closed: the process's cache entries
/// go (all of them: the cache refills), and its derived descriptors that are closed now
/// leave the set, reported closed. Those without close-on-exec stay watched.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    forget_range(tgid, pid_tgid as u32, 0, u32::MAX, true);
    0
}

/// Every exiting thread frees its [`INFLIGHT`] slot. When a process's last thread exits,
/// its entries go (the pid can be reused), its derived descriptors reported closed.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // The thread's in-flight slot (kept from call to call). A whole call still open here
    // never returned (the thread died inside it): it is written now, without an exit.
    if let Some(p) = existing_slot(tid) {
        // SAFETY: this thread's slot.
        if unsafe { (*p).active } == CALL_WHOLE {
            batch_call(p, tid, 0, 0);
        }
        put(unsafe { &raw mut (*p).active }, CALL_IDLE);
    }
    if tid >= cfg(&THREAD_SLOTS) {
        let _ = INFLIGHT.remove(&tid);
    }
    let tgid = (pid_tgid >> 32) as u32;
    let off = cfg(&OFF_EXIT_GROUP_DEAD);
    let group_dead = if off == u32::MAX {
        pid_tgid as u32 == tgid
    } else {
        // SAFETY: offset from the tracepoint's format file.
        unsafe { ctx.read_at::<u8>(off as usize) }.unwrap_or(0) != 0
    };
    if group_dead {
        forget_range(tgid, pid_tgid as u32, 0, u32::MAX, false);
        let _ = FD_CACHED.remove(&tgid);
    }
    0
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_fork(&ctx) {
        Ok(v) => v,
        Err(_) => 0,
    }
}

#[inline(always)]
fn try_fork(ctx: &TracePointContext) -> Result<u32, i64> {
    if cfg(&FILTER_PIDS) == 0 {
        return Ok(0);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { PIDS.get(&tgid) }.is_none() {
        return Ok(0);
    }
    // SAFETY: offset from the tracepoint's format file.
    let child = unsafe {
        ctx.read_at::<u32>(cfg(&OFF_FORK_CHILD_PID) as usize)
            .map_err(|e| e as i64)?
    };
    // A new thread inserts its tid too; harmless (never a tgid of another process).
    let _ = PIDS.insert(&child, &1, 0);
    Ok(0)
}

// ---- VMBus: dxgvmb_send_sync_msg / dxgvmb_send_async_msg ----

#[inline(always)]
fn vmb_send(ctx: &ProbeContext, is_async: bool, kernel: bool) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !kernel && cfg(&UPROBE_ANY_PID) == 0 && !pid_ok(tgid) {
        return Ok(0);
    }
    let channel: u64 = ctx.arg(0).ok_or(1i64)?;
    let command: u64 = ctx.arg(1).ok_or(1i64)?;
    let cmd_size: u32 = ctx.arg(2).ok_or(1i64)?;
    let msg_id = next_id();
    bump(&COUNTERS, CNT_VMBUS, 1);
    let lost = dxt_copy_buf(
        msg_id,
        command,
        cmd_size as u64,
        meta(0, ROLE_VMBUS_REQ, DESC_STRUCT, 0, kernel),
    );
    if lost > 0 {
        bump(&DROPS, DROP_VMBUS, 1);
    }
    let ids = channel_ids(channel, is_async, kernel);
    let (channel_id, request_id) = ids.unwrap_or((0, 0));
    let deferred = !is_async && cfg(&VMB_SENDPACKET) != 0;
    let req = VmbusEvent {
        hdr: EventHeader::default(),
        msg_id,
        ts: 0,
        pid: tgid,
        tid: pid_tgid as u32,
        channel,
        channel_id,
        request_id: if deferred { 0 } else { request_id },
        status: 0,
        len: cmd_size as u64,
        dir: VMBUS_GUEST_TO_HOST,
        is_async: is_async as u8,
        has_status: 0,
        has_channel_id: ids.is_some() as u8,
        _pad: [0; 4],
    };
    if !deferred {
        emit_vmbus(&req);
    }
    if !is_async {
        let result: u64 = ctx.arg(3).ok_or(1i64)?;
        let result_size: u32 = ctx.arg(4).ok_or(1i64)?;
        let v = VmbInflight {
            msg_id,
            result,
            result_size: result_size as u64,
            channel,
            channel_id,
            request_id: req.request_id,
            has_channel_id: ids.is_some() as u64,
            len: cmd_size as u64,
            req_pending: deferred as u64,
        };
        let _ = VMB_INFLIGHT.insert(&(pid_tgid as u32), &v, 0);
    }
    Ok(0)
}

/// `vmbus_sendpacket(channel, buffer, bufferlen, requestid, type, flags)` called inside a
/// sync send on this thread: the packet's request id, assigned by the send
/// (`atomic64_inc_return(&channel->packet_request_id)`) and final here. The request's
/// record is written now, with it. Later calls of the same send (the -EAGAIN retries) carry
/// the same id and are ignored.
#[inline(always)]
fn vmb_sendpacket(ctx: &ProbeContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = VMB_INFLIGHT.get_ptr_mut(&tid) else {
        return Ok(0);
    };
    let request_id: u64 = ctx.arg(3).ok_or(1i64)?;
    // SAFETY: only this thread touches its entry.
    let v = unsafe {
        if (*p).req_pending == 0 {
            return Ok(0);
        }
        (*p).req_pending = 0;
        (*p).request_id = request_id;
        *p
    };
    emit_vmbus(&VmbusEvent {
        hdr: EventHeader::default(),
        msg_id: v.msg_id,
        ts: 0,
        pid: (pid_tgid >> 32) as u32,
        tid,
        channel: v.channel,
        channel_id: v.channel_id,
        request_id,
        status: 0,
        len: v.len,
        dir: VMBUS_GUEST_TO_HOST,
        is_async: 0,
        has_status: 0,
        has_channel_id: v.has_channel_id as u8,
        _pad: [0; 4],
    });
    Ok(0)
}

#[inline(always)]
fn vmb_reply(ctx: &RetProbeContext, kernel: bool) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: copied before removal.
    let Some(v) = (unsafe { VMB_INFLIGHT.get(&tid) }).copied() else {
        return Ok(0);
    };
    let _ = VMB_INFLIGHT.remove(&tid);
    let status: i32 = ctx.ret();
    if v.req_pending != 0 {
        // The send failed before anything went out (no packet, no request id).
        emit_vmbus(&VmbusEvent {
            hdr: EventHeader::default(),
            msg_id: v.msg_id,
            ts: 0,
            pid: (pid_tgid >> 32) as u32,
            tid,
            channel: v.channel,
            channel_id: v.channel_id,
            request_id: 0,
            status: 0,
            len: v.len,
            dir: VMBUS_GUEST_TO_HOST,
            is_async: 0,
            has_status: 0,
            has_channel_id: v.has_channel_id as u8,
            _pad: [0; 4],
        });
    }
    let lost = dxt_copy_buf(
        v.msg_id,
        v.result,
        v.result_size,
        meta(0, ROLE_VMBUS_REPLY, DESC_STRUCT, 0, kernel),
    );
    if lost > 0 {
        bump(&DROPS, DROP_VMBUS, 1);
    }
    emit_vmbus(&VmbusEvent {
        hdr: EventHeader::default(),
        msg_id: v.msg_id,
        ts: 0,
        pid: (pid_tgid >> 32) as u32,
        tid,
        channel: v.channel,
        channel_id: v.channel_id,
        request_id: v.request_id,
        status: status as i64,
        len: v.result_size,
        dir: VMBUS_HOST_REPLY,
        is_async: 0,
        has_status: 1,
        has_channel_id: v.has_channel_id as u8,
        _pad: [0; 4],
    });
    Ok(0)
}

/// Entry of the receive callback (`dxgvmbuschannel_receive(ctx)`): the packets the
/// iterator returns on this thread until it returns are the channel's.
#[inline(always)]
fn vmb_receive_enter(ctx: &ProbeContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if cfg(&UPROBE_ANY_PID) == 0 && !pid_ok((pid_tgid >> 32) as u32) {
        return Ok(0);
    }
    let channel: u64 = ctx.arg(0).ok_or(1i64)?;
    let _ = RECEIVING.insert(&(pid_tgid as u32), &channel, 0);
    Ok(0)
}

#[inline(always)]
fn vmb_receive_exit() -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = RECEIVING.remove(&tid);
    0
}

/// Return of the packet iterator (`hv_pkt_iter_first` / `__hv_pkt_iter_next`) inside the
/// receive callback: one host→guest packet (`struct vmpacket_descriptor` + payload).
/// Completions (`VM_PKT_COMP`) are skipped: the sync send's return already has them.
#[inline(always)]
fn vmb_packet(ctx: &RetProbeContext, kernel: bool) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: value copied out.
    let Some(channel) = (unsafe { RECEIVING.get(&tid) }).copied() else {
        return Ok(0);
    };
    let desc: u64 = ctx.ret();
    if desc == 0 {
        return Ok(0);
    }
    // type u16, offset8 u16, len8 u16, flags u16, trans_id u64.
    let head = channel_field(desc, 0, kernel).ok_or(1i64)?;
    let trans_id = channel_field(desc, 8, kernel).ok_or(1i64)?;
    const VM_PKT_DATA_INBAND: u64 = 6;
    if head & 0xffff != VM_PKT_DATA_INBAND {
        return Ok(0);
    }
    let off8 = (head >> 16) & 0xffff;
    let len8 = (head >> 32) & 0xffff;
    if len8 < off8 {
        return Ok(0);
    }
    let len = (len8 - off8) * 8;
    let msg_id = next_id();
    bump(&COUNTERS, CNT_VMBUS, 1);
    let lost = dxt_copy_buf(
        msg_id,
        desc + off8 * 8,
        len,
        meta(0, ROLE_VMBUS_REQ, DESC_STRUCT, 0, kernel),
    );
    if lost > 0 {
        bump(&DROPS, DROP_VMBUS, 1);
    }
    let ids = channel_ids(channel, true, kernel);
    emit_vmbus(&VmbusEvent {
        hdr: EventHeader::default(),
        msg_id,
        ts: 0,
        pid: (pid_tgid >> 32) as u32,
        tid,
        channel,
        channel_id: ids.map(|i| i.0).unwrap_or(0),
        request_id: trans_id,
        status: 0,
        len,
        dir: VMBUS_HOST_TO_GUEST,
        is_async: 0,
        has_status: 0,
        has_channel_id: ids.is_some() as u8,
        _pad: [0; 4],
    });
    Ok(0)
}

/// Submits `v` with its header, id-independent fields stamped here.
#[inline(always)]
fn emit_vmbus(v: &VmbusEvent) {
    flush_pending();
    let Some(mut entry) = EVENTS.reserve::<VmbusEvent>(0) else {
        bump(&DROPS, DROP_VMBUS, 1);
        return;
    };
    let mut e = *v;
    e.hdr = EventHeader {
        kind: EV_VMBUS,
        cpu: cpu(),
    };
    e.ts = ktime();
    entry.write(e);
    entry.submit(wake_flags(core::mem::size_of::<VmbusEvent>() as u64));
}

#[uprobe]
pub fn uprobe_send_sync(ctx: ProbeContext) -> u32 {
    vmb_send(&ctx, false, false).unwrap_or(0)
}

#[uretprobe]
pub fn uretprobe_send_sync(ctx: RetProbeContext) -> u32 {
    vmb_reply(&ctx, false).unwrap_or(0)
}

#[uprobe]
pub fn uprobe_sendpacket(ctx: ProbeContext) -> u32 {
    vmb_sendpacket(&ctx).unwrap_or(0)
}

#[uprobe]
pub fn uprobe_send_async(ctx: ProbeContext) -> u32 {
    vmb_send(&ctx, true, false).unwrap_or(0)
}

#[uprobe]
pub fn uprobe_receive(ctx: ProbeContext) -> u32 {
    vmb_receive_enter(&ctx).unwrap_or(0)
}

#[uretprobe]
pub fn uretprobe_receive(_ctx: RetProbeContext) -> u32 {
    vmb_receive_exit()
}

#[uretprobe]
pub fn uretprobe_pkt_first(ctx: RetProbeContext) -> u32 {
    vmb_packet(&ctx, false).unwrap_or(0)
}

#[uretprobe]
pub fn uretprobe_pkt_next(ctx: RetProbeContext) -> u32 {
    vmb_packet(&ctx, false).unwrap_or(0)
}

/// Same as the uprobes, for a kernel that has dxgkrnl (WSL2); attached only where the
/// symbols are in kallsyms and kprobes are available.
#[kprobe]
pub fn kprobe_send_sync(ctx: ProbeContext) -> u32 {
    vmb_send(&ctx, false, true).unwrap_or(0)
}

#[kretprobe]
pub fn kretprobe_send_sync(ctx: RetProbeContext) -> u32 {
    vmb_reply(&ctx, true).unwrap_or(0)
}

#[kprobe]
pub fn kprobe_sendpacket(ctx: ProbeContext) -> u32 {
    vmb_sendpacket(&ctx).unwrap_or(0)
}

#[kprobe]
pub fn kprobe_send_async(ctx: ProbeContext) -> u32 {
    vmb_send(&ctx, true, true).unwrap_or(0)
}

/// Used by `dxtrace doctor` only: tells whether this kernel lets fentry programs load
/// (the loader picks the target function at load time).
#[fentry(function = "do_sys_openat2")]
pub fn doctor_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any reachable path here, so it is never taken at run time.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
