//! Loading, attaching and draining the eBPF object.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{KProbe, RawTracePoint, TracePoint, UProbe, uprobe::UProbeScope};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use driver_core::emulator::DxgVmbusChannel;
use probe_common::*;

use crate::ProbeError;
use crate::btf::Btf;
use crate::desc::CmdDescriptor;

/// The eBPF object built by build.rs from `probe/ebpf`.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

const DEFAULT_RINGBUF: u32 = 4 << 20;
/// Most thread ids given an array slot (see [`ProbeBuilder::thread_slots`]).
const DEFAULT_THREAD_SLOTS: u32 = 1 << 16;

/// A watched file as resolved at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDevice {
    /// Path given.
    pub path: PathBuf,
    /// User-space encoded `st_rdev` (char device) or `st_dev` (regular file).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Character device (`true`) or regular file such as a FUSE node (`false`).
    pub is_char: bool,
}

impl WatchedDevice {
    /// Stats `path`.
    pub fn resolve(path: &Path) -> Result<WatchedDevice, ProbeError> {
        let md = std::fs::metadata(path).map_err(|source| ProbeError::Device {
            path: path.display().to_string(),
            source,
        })?;
        let is_char = md.file_type().is_char_device();
        Ok(WatchedDevice {
            path: path.to_path_buf(),
            dev: if is_char { md.rdev() } else { md.dev() },
            ino: md.ino(),
            is_char,
        })
    }

    fn key(&self) -> WatchKey {
        WatchKey {
            dev: user_dev_to_kernel(self.dev),
            _pad: 0,
            ino: if self.is_char { 0 } else { self.ino },
        }
    }
}

/// Options of a [`Probe`].
#[derive(Debug, Clone, Default)]
pub struct ProbeBuilder {
    devices: Vec<PathBuf>,
    pids: Vec<u32>,
    filter_pids: bool,
    ringbuf_size: Option<u32>,
    uprobe_binary: Option<PathBuf>,
    uprobe_pid: Option<u32>,
    descriptors: Vec<CmdDescriptor>,
    inflight_slots: Option<u32>,
    thread_slots: Option<u32>,
}

impl ProbeBuilder {
    /// Watches a device node or (FUSE) file.
    pub fn device(mut self, path: impl Into<PathBuf>) -> Self {
        self.devices.push(path.into());
        self
    }
    /// Traces only this process and its descendants (may be called several times).
    pub fn pid(mut self, pid: u32) -> Self {
        self.pids.push(pid);
        self.filter_pids = true;
        self
    }
    /// Turns on the process filter with an empty set; add pids later with
    /// [`Probe::add_pid`] (used to start a command after the probe is attached).
    pub fn filter_pids(mut self) -> Self {
        self.filter_pids = true;
        self
    }
    /// Ring buffer size in bytes (rounded up to a power of two ≥ one page).
    pub fn ringbuf_size(mut self, bytes: u32) -> Self {
        self.ringbuf_size = Some(bytes);
        self
    }
    /// Threads that can be traced at once (default 16384): each live thread that made a
    /// captured call keeps a slot until it exits; a call that finds the table full is
    /// counted as dropped.
    pub fn inflight_slots(mut self, n: u32) -> Self {
        self.inflight_slots = Some(n.max(1));
        self
    }
    /// Threads whose id is below `n` keep their in-flight slot in an array indexed by
    /// thread id (found without hashing); the others in the hash table sized by
    /// [`ProbeBuilder::inflight_slots`]. Default: `kernel.pid_max`, at most 65,536
    /// (64 bytes each).
    pub fn thread_slots(mut self, n: u32) -> Self {
        self.thread_slots = Some(n.max(1));
        self
    }
    /// Attaches the VMBus uprobes to `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg`
    /// exported by this binary (the emulator, or a test program).
    pub fn uprobe_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.uprobe_binary = Some(path.into());
        self
    }
    /// Attaches the VMBus uprobes in this process only (the FUSE emulator daemon serving
    /// the watched device), and captures its messages whatever the pid filter says: the
    /// daemon works on behalf of the traced processes.
    pub fn uprobe_pid(mut self, pid: u32) -> Self {
        self.uprobe_pid = Some(pid);
        self
    }
    /// Pointer descriptors to follow (from the device tables).
    pub fn descriptors(mut self, d: impl IntoIterator<Item = CmdDescriptor>) -> Self {
        self.descriptors.extend(d);
        self
    }

    /// Loads and attaches everything.
    pub fn build(self) -> Result<Probe, ProbeError> {
        Probe::start(self)
    }
}

/// A raw event from the ring buffer, borrowing its bytes from the ring (no copy, no
/// allocation per event).
#[derive(Debug, Clone)]
pub enum RawEvent<'a> {
    /// Ioctl entry, and the argument struct's bytes when they came inline.
    Enter(EnterEvent, &'a [u8]),
    /// Ioctl exit, and the argument struct's bytes when they came inline.
    Exit(ExitEvent, &'a [u8]),
    /// A whole ioctl that carried no bytes (`ts_exit` 0: it never returned).
    Call(CallEvent),
    /// Buffer chunk and its data.
    Buf(BufEvent, &'a [u8]),
    /// Descriptor opened / closed / derived / copied.
    Fd(Box<FdEventRaw>),
    /// VMBus message.
    Vmbus(VmbusEvent),
}

fn read_pod<T: Copy>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a plain #[repr(C)] record; unaligned read.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// The `len` bytes after a `T` header, cut to what the record holds.
fn tail<T>(b: &[u8], len: usize) -> &[u8] {
    let start = size_of::<T>().min(b.len());
    &b[start..(start + len).min(b.len())]
}

impl<'a> RawEvent<'a> {
    /// Hands `f` the events of one ring-buffer record (a batch of calls holds several;
    /// any other record one); returns how many.
    pub fn each(b: &'a [u8], f: &mut impl FnMut(RawEvent<'a>)) -> usize {
        let Some(hdr) = read_pod::<EventHeader>(b) else {
            return 0;
        };
        if hdr.kind != EV_CALLS {
            return RawEvent::parse(b).map(f).map_or(0, |()| 1);
        }
        let Some(count) = read_pod::<u32>(&b[size_of::<EventHeader>()..]) else {
            return 0;
        };
        let first = std::mem::offset_of!(CallBatch, calls);
        let mut n = 0;
        for i in 0..(count as usize).min(BATCH_LEN) {
            let at = first + i * size_of::<CallEvent>();
            let Some(mut c) = b.get(at..).and_then(read_pod::<CallEvent>) else {
                break;
            };
            c.hdr = EventHeader {
                kind: EV_CALL,
                cpu: hdr.cpu,
            };
            f(RawEvent::Call(c));
            n += 1;
        }
        n
    }

    /// Parses one ring-buffer record (not a batch: see [`RawEvent::each`]).
    pub fn parse(b: &'a [u8]) -> Option<RawEvent<'a>> {
        let hdr: EventHeader = read_pod(b)?;
        Some(match hdr.kind {
            EV_ENTER => {
                let e: EnterEvent = read_pod(b)?;
                let n = if e.struct_flags & FLAG_UNREADABLE != 0 {
                    0
                } else {
                    e.struct_len as usize
                };
                RawEvent::Enter(e, tail::<EnterEvent>(b, n))
            }
            EV_EXIT => {
                let x: ExitEvent = read_pod(b)?;
                let n = if x.struct_flags & FLAG_UNREADABLE != 0 {
                    0
                } else {
                    x.struct_len as usize
                };
                RawEvent::Exit(x, tail::<ExitEvent>(b, n))
            }
            EV_CALL => RawEvent::Call(read_pod(b)?),
            EV_BUF => {
                let ev: BufEvent = read_pod(b)?;
                RawEvent::Buf(ev, tail::<BufEvent>(b, ev.len as usize))
            }
            // Rare (opens, closes, copies): boxed to keep the enum small.
            EV_FD => RawEvent::Fd(Box::new(read_pod(b)?)),
            EV_VMBUS => RawEvent::Vmbus(read_pod(b)?),
            _ => return None,
        })
    }
}

/// Which syscall hooks a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallHooks {
    /// `raw_tracepoint` on `sys_enter` / `sys_exit` (the default).
    Raw,
    /// The `syscalls:sys_{enter,exit}_*` tracepoints (where the raw ones do not attach,
    /// or forced with `DXTRACE_PROBE_HOOKS=tracepoint`).
    Tracepoint,
}

impl SyscallHooks {
    /// Name as written in the trace header.
    pub fn name(self) -> &'static str {
        match self {
            SyscallHooks::Raw => "raw_tracepoint:sys_enter,sys_exit",
            SyscallHooks::Tracepoint => "tracepoint:syscalls",
        }
    }
}

/// Programs that do nothing, attached to the syscall hooks alone: what the hook costs
/// before any work (see [`Probe::floor`]). Detached on drop.
pub struct Floor {
    _ebpf: Ebpf,
}

/// A loaded, attached probe. Dropping it detaches every program and closes every map.
pub struct Probe {
    // Field order matters for drop: the ring buffer and maps before the object.
    ring: RingBuf<MapData>,
    inflight: BpfHashMap<MapData, u32, Inflight>,
    threads: aya::maps::Array<MapData, Inflight>,
    batch: PerCpuArray<MapData, CallBatch>,
    pids: BpfHashMap<MapData, u32, u8>,
    drops: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    ebpf: Ebpf,
    devices: Vec<WatchedDevice>,
    vmbus: (bool, String),
    dropped_descs: usize,
    hooks: SyscallHooks,
    /// Calls that carry no bytes are written as one record at exit (see probe-common).
    combine: bool,
    /// They are also batched per CPU (see [`Probe::flush_batches`]).
    batching: bool,
    /// Online CPUs (those `flush_batches` runs on).
    cpus: Vec<u32>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("devices", &self.devices)
            .field("vmbus", &self.vmbus)
            .finish_non_exhaustive()
    }
}

/// Makes sure tracefs is mounted (tracepoint attach needs it). Some containers start
/// without it; root can mount it.
pub(crate) fn ensure_tracefs() -> Result<(), ProbeError> {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let src = c"tracefs";
    let dst = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs {
            what: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// Offset of `field` in a tracepoint's format file.
pub(crate) fn tracepoint_field_offset(category: &str, name: &str, field: &str) -> Option<u32> {
    let path = format!("/sys/kernel/tracing/events/{category}/{name}/format");
    let text = std::fs::read_to_string(path).ok()?;
    for line in text.lines() {
        let line = line.trim();
        let Some(decl) = line.strip_prefix("field:") else {
            continue;
        };
        let (decl, rest) = decl.split_once(';')?;
        if decl.split_whitespace().last() == Some(field) {
            let off = rest.trim().strip_prefix("offset:")?.split(';').next()?;
            return off.trim().parse().ok();
        }
    }
    None
}

/// Tries to raise RLIMIT_MEMLOCK. Kernels ≥ 5.11 charge BPF memory to the cgroup and
/// ignore the limit, and without CAP_SYS_RESOURCE it cannot be raised: not fatal.
fn bump_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}; relying on memcg accounting",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether `sym` is in /proc/kallsyms.
pub(crate) fn kallsyms_has(sym: &str) -> bool {
    kallsyms_have(&[sym])[0]
}

/// Whether each of `syms` is in /proc/kallsyms, in one pass: the kernel formats the whole
/// table for every read (~120k lines here, tens of ms of CPU each time).
pub(crate) fn kallsyms_have<const N: usize>(syms: &[&str; N]) -> [bool; N] {
    let mut found = [false; N];
    if let Ok(t) = std::fs::read_to_string("/proc/kallsyms") {
        for name in t.lines().filter_map(|l| l.split_whitespace().nth(2)) {
            if let Some(i) = syms.iter().position(|s| *s == name) {
                found[i] = true;
            }
        }
    }
    found
}

fn ringbuf_bytes(req: Option<u32>) -> u32 {
    let page = 4096u32;
    req.unwrap_or(DEFAULT_RINGBUF)
        .max(page)
        .checked_next_power_of_two()
        .unwrap_or(1 << 30)
}

/// Where a program is attached.
enum Hook<'a> {
    /// A tracepoint `category:name`.
    Tracepoint(&'a str, &'a str),
    /// A raw tracepoint.
    Raw(&'a str),
    /// A uprobe or uretprobe on `symbol` of a binary.
    Uprobe(&'a str, &'a Path, UProbeScope),
    /// A kprobe or kretprobe on a kernel symbol.
    Kprobe(&'a str),
}

/// The raw `sys_enter` / `sys_exit` programs (ioctl, openat, close and the dup family in
/// one pair). False, with nothing left attached, if either does not load or attach.
fn attach_raw(ebpf: &mut Ebpf) -> bool {
    // Exit before entry: an entry seen without its exit program would leak INFLIGHT.
    let r = attach(ebpf, "raw_sys_exit", Hook::Raw("sys_exit"))
        .and_then(|_| attach(ebpf, "raw_sys_enter", Hook::Raw("sys_enter")));
    if let Err(e) = &r {
        tracing::info!(
            "raw syscall tracepoints unavailable ({}); using syscalls:* tracepoints",
            chain(e)
        );
        for prog in ["raw_sys_exit", "raw_sys_enter"] {
            if let Some(p) = ebpf.program_mut(prog)
                && let Ok(p) = <&mut RawTracePoint>::try_from(p)
            {
                let _ = p.unload();
            }
        }
    }
    r.is_ok()
}

/// The `syscalls:sys_{enter,exit}_*` programs, one per syscall.
fn attach_classic(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let tps = [
        ("sys_enter_openat", "sys_enter_openat"),
        ("sys_exit_openat", "sys_exit_openat"),
        ("sys_enter_close", "sys_enter_close"),
        ("sys_exit_dup", "sys_exit_dup"),
        ("sys_exit_dup", "sys_exit_dup2"),
        ("sys_exit_dup", "sys_exit_dup3"),
        ("sys_exit_dup", "sys_exit_fcntl"),
        ("sys_enter_dup", "sys_enter_dup"),
        ("sys_enter_dup2", "sys_enter_dup2"),
        ("sys_enter_dup3", "sys_enter_dup3"),
        ("sys_enter_fcntl", "sys_enter_fcntl"),
        ("sys_exit_close_range", "sys_exit_close_range"),
        ("sys_enter_close_range", "sys_enter_close_range"),
        // Exit before entry: an entry seen without its exit program would leak INFLIGHT.
        ("sys_exit_ioctl", "sys_exit_ioctl"),
        ("sys_enter_ioctl", "sys_enter_ioctl"),
    ];
    for (prog, tp) in tps {
        attach(ebpf, prog, Hook::Tracepoint("syscalls", tp))?;
    }
    Ok(())
}

/// Whether `vmbus_sendpacket` can be hooked next to the sends: in the kernel (kallsyms)
/// or exported by the uprobe binary (the emulator defines it with the kernel's signature).
/// `dxgkrnl`: the kernel has `dxgvmb_send_sync_msg`; `kernel_sendpacket`: and
/// `vmbus_sendpacket`.
fn sendpacket_hookable(uprobe: Option<&Path>, dxgkrnl: bool, kernel_sendpacket: bool) -> bool {
    if dxgkrnl {
        return kernel_sendpacket;
    }
    uprobe.is_some_and(|bin| {
        std::fs::read(bin).is_ok_and(|b| {
            let pat = b"\0vmbus_sendpacket\0";
            b.windows(pat.len()).any(|w| w == pat)
        })
    })
}

/// Loads program `prog` of the object (once: a program already loaded, such as one
/// program on several tracepoints, is only attached again) and attaches it at `hook`.
fn attach(ebpf: &mut Ebpf, prog: &str, hook: Hook<'_>) -> Result<(), ProbeError> {
    let err = |action: &'static str| {
        move |source| ProbeError::Program {
            action,
            program: prog.into(),
            source,
        }
    };
    let p = ebpf.program_mut(prog).ok_or_else(|| ProbeError::Map {
        map: "programs",
        what: format!("{prog} missing from the object"),
    })?;
    match hook {
        Hook::Tracepoint(cat, name) => {
            let p: &mut TracePoint = p.try_into().map_err(err("load"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load"))?;
            }
            p.attach(cat, name).map_err(err("attach"))?;
        }
        Hook::Raw(name) => {
            let p: &mut RawTracePoint = p.try_into().map_err(err("load"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load"))?;
            }
            p.attach(name).map_err(err("attach"))?;
        }
        Hook::Uprobe(sym, target, scope) => {
            let p: &mut UProbe = p.try_into().map_err(err("load"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load"))?;
            }
            p.attach(sym, target, scope).map_err(err("attach"))?;
        }
        Hook::Kprobe(sym) => {
            let p: &mut KProbe = p.try_into().map_err(err("load"))?;
            if p.fd().is_err() {
                p.load().map_err(err("load"))?;
            }
            p.attach(sym, 0).map_err(err("attach"))?;
        }
    }
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or_else(|| ProbeError::Map {
        map: name,
        what: "missing from the object".into(),
    })?;
    T::try_from(m).map_err(|e| ProbeError::Map {
        map: name,
        what: e.to_string(),
    })
}

/// [`CMD_FULL`](probe_common::CMD_BITMAP_WORDS) for the kernel side: the bit of every
/// request code whose table entry has pointer descriptors or returns a descriptor.
fn cmd_bitmap(descs: &[CmdDescriptor]) -> Vec<u64> {
    let mut bits = vec![0u64; CMD_BITMAP_WORDS];
    for d in descs {
        if d.pointers.is_empty() && d.fd == crate::desc::FdReturn::None {
            continue;
        }
        let bit = (d.cmd & 0xffff) as usize;
        bits[bit / 64] |= 1 << (bit % 64);
    }
    bits
}

impl Probe {
    /// Options with defaults: no device, no pid filter, 4 MiB ring buffer.
    pub fn builder() -> ProbeBuilder {
        ProbeBuilder::default()
    }

    fn start(b: ProbeBuilder) -> Result<Probe, ProbeError> {
        bump_memlock();
        ensure_tracefs()?;
        let devices = b
            .devices
            .iter()
            .map(|p| WatchedDevice::resolve(p))
            .collect::<Result<Vec<_>, _>>()?;
        // Parsed once (~1.5 % of a 300k-call recording's CPU profile when it was twice).
        let btf = Btf::from_sys_fs()?;
        let offs = btf.kernel_offsets()?;
        let fork_child =
            tracepoint_field_offset("sched", "sched_process_fork", "child_pid").unwrap_or(20);
        let exit_group_dead = tracepoint_field_offset("sched", "sched_process_exit", "group_dead")
            .unwrap_or(u32::MAX);
        let filter = b.filter_pids as u32;
        let uprobe_any_pid = b.uprobe_pid.is_some() as u32;
        // The uprobe binary is the emulator: its channel struct is `repr(C)`, so the
        // adapter LUID and the request counter sit at fixed offsets.
        let ch_known = b.uprobe_binary.is_some() as u32;
        let luid_off = std::mem::offset_of!(DxgVmbusChannel, adapter_luid) as u32;
        let reqid_off = std::mem::offset_of!(DxgVmbusChannel, request_id) as u32;
        let rb = ringbuf_bytes(b.ringbuf_size);
        let regs = btf.syscall_regs();
        let (regs_args, regs_orig_ax) = regs.unwrap_or((0, 0));
        let [dxgkrnl, kernel_sendpacket] =
            kallsyms_have(&["dxgvmb_send_sync_msg", "vmbus_sendpacket"]);
        let sendpacket =
            sendpacket_hookable(b.uprobe_binary.as_deref(), dxgkrnl, kernel_sendpacket) as u32;
        // Where dxgkrnl's VMBus functions can be hooked, messages sent inside a call are
        // linked to it through its entry record: every call keeps one.
        let combine = (!dxgkrnl) as u32;
        let cmd_full = cmd_bitmap(&b.descriptors);
        let thread_slots = b.thread_slots.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_THREAD_SLOTS)
                .clamp(1, DEFAULT_THREAD_SLOTS)
        });
        let nr = [
            libc::SYS_ioctl,
            libc::SYS_close,
            libc::SYS_openat,
            libc::SYS_dup,
            libc::SYS_dup2,
            libc::SYS_dup3,
            libc::SYS_fcntl,
            libc::SYS_close_range,
        ]
        .map(|n| n as u32);

        let loader_tgid = std::process::id();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("NR_IOCTL", &nr[0], true)
            .override_global("NR_CLOSE", &nr[1], true)
            .override_global("NR_OPENAT", &nr[2], true)
            .override_global("NR_DUP", &nr[3], true)
            .override_global("NR_DUP2", &nr[4], true)
            .override_global("NR_DUP3", &nr[5], true)
            .override_global("NR_FCNTL", &nr[6], true)
            .override_global("NR_CLOSE_RANGE", &nr[7], true)
            .override_global("OFF_EXIT_GROUP_DEAD", &exit_group_dead, true)
            .override_global("OFF_REGS_ARGS", &regs_args, true)
            .override_global("OFF_REGS_ORIG_AX", &regs_orig_ax, true)
            .override_global("RING_SIZE", &rb, true)
            .override_global("LOADER_TGID", &loader_tgid, true)
            .override_global("COMBINE", &combine, true)
            .override_global("THREAD_SLOTS", &thread_slots, true)
            .override_global("CMD_FULL", &cmd_full[..], true)
            .override_global("VMB_SENDPACKET", &sendpacket, true)
            .override_global("OFF_TASK_FILES", &offs.task_files, true)
            .override_global("OFF_FILES_FDT", &offs.files_fdt, true)
            .override_global("OFF_FDT_FD", &offs.fdt_fd, true)
            .override_global("OFF_FDT_MAX_FDS", &offs.fdt_max_fds, true)
            .override_global("OFF_FILE_INODE", &offs.file_inode, true)
            .override_global("OFF_INODE_RDEV", &offs.inode_rdev, true)
            .override_global("OFF_INODE_SB", &offs.inode_sb, true)
            .override_global("OFF_INODE_INO", &offs.inode_ino, true)
            .override_global("OFF_SB_DEV", &offs.sb_dev, true)
            .override_global("OFF_FORK_CHILD_PID", &fork_child, true)
            .override_global("FILTER_PIDS", &filter, true)
            .override_global("UPROBE_ANY_PID", &uprobe_any_pid, true)
            .override_global("VMB_CH_KNOWN", &ch_known, true)
            .override_global("VMB_CH_LUID_OFF", &luid_off, true)
            .override_global("VMB_CH_REQID_OFF", &reqid_off, true)
            .map_max_entries("EVENTS", rb);
        loader.map_max_entries("THREADS", thread_slots);
        if let Some(n) = b.inflight_slots {
            loader.map_max_entries("INFLIGHT", n);
        }
        let mut ebpf = loader.load(OBJECT).map_err(ProbeError::Load)?;

        // Maps are filled before anything is attached so that no event is missed.
        {
            let mut watch: BpfHashMap<_, WatchKey, u8> =
                BpfHashMap::try_from(ebpf.map_mut("WATCH").ok_or_else(|| ProbeError::Map {
                    map: "WATCH",
                    what: "missing".into(),
                })?)
                .map_err(|e| ProbeError::Map {
                    map: "WATCH",
                    what: e.to_string(),
                })?;
            for d in &devices {
                watch.insert(d.key(), 1, 0).map_err(|e| ProbeError::Map {
                    map: "WATCH",
                    what: e.to_string(),
                })?;
            }
        }
        let mut dropped_descs = 0;
        {
            let mut descs: BpfHashMap<_, u32, CmdDesc> =
                BpfHashMap::try_from(ebpf.map_mut("DESCS").ok_or_else(|| ProbeError::Map {
                    map: "DESCS",
                    what: "missing".into(),
                })?)
                .map_err(|e| ProbeError::Map {
                    map: "DESCS",
                    what: e.to_string(),
                })?;
            for d in &b.descriptors {
                let (k, cut) = d.to_kernel();
                dropped_descs += cut;
                descs.insert(d.cmd, k, 0).map_err(|e| ProbeError::Map {
                    map: "DESCS",
                    what: e.to_string(),
                })?;
            }
        }
        let mut pids: BpfHashMap<MapData, u32, u8> = take(&mut ebpf, "PIDS")?;
        for p in &b.pids {
            pids.insert(p, 1, 0).map_err(|e| ProbeError::Map {
                map: "PIDS",
                what: e.to_string(),
            })?;
        }

        attach(
            &mut ebpf,
            "sched_process_fork",
            Hook::Tracepoint("sched", "sched_process_fork"),
        )?;
        // Exec and exit clean the descriptor cache and the derived set of the process.
        for tp in ["sched_process_exec", "sched_process_exit"] {
            attach(&mut ebpf, tp, Hook::Tracepoint("sched", tp))?;
        }
        let forced = std::env::var("DXTRACE_PROBE_HOOKS").is_ok_and(|v| v == "tracepoint");
        let hooks = if regs.is_some() && !forced && attach_raw(&mut ebpf) {
            SyscallHooks::Raw
        } else {
            attach_classic(&mut ebpf)?;
            SyscallHooks::Tracepoint
        };

        let mut vmbus = Self::attach_vmbus(
            &mut ebpf,
            b.uprobe_binary.as_deref(),
            b.uprobe_pid,
            sendpacket != 0,
            dxgkrnl,
        );
        if vmbus.0 {
            vmbus.1.push_str(if sendpacket != 0 {
                "; request ids from vmbus_sendpacket"
            } else {
                "; request ids read from the channel counter at the send (another thread's \
                 send on the same channel can overtake it)"
            });
        }

        let ring: RingBuf<MapData> = take(&mut ebpf, "EVENTS")?;
        let inflight = take(&mut ebpf, "INFLIGHT")?;
        let threads = take(&mut ebpf, "THREADS")?;
        let batch = take(&mut ebpf, "BATCH")?;
        let drops = take(&mut ebpf, "DROPS")?;
        let counters = take(&mut ebpf, "COUNTERS")?;
        let cpus = aya::util::online_cpus().unwrap_or_default();
        let mut p = Probe {
            ring,
            inflight,
            threads,
            batch,
            pids,
            drops,
            counters,
            ebpf,
            devices,
            vmbus,
            dropped_descs,
            hooks,
            combine: combine != 0,
            batching: false,
            cpus,
        };
        // The first flush lets every CPU batch; it worked where the kernel side counted
        // it (the programs see this process's pid).
        if p.combine && p.flush_batches().is_some() {
            let served = &per_cpu(&p.counters, CNT_SLOTS)[CNT_FLUSHES as usize];
            p.batching = served.iter().any(|&n| n > 0);
        }
        if p.combine && !p.batching {
            tracing::info!("no CPU's batch could be flushed: one ring record per call");
        }
        Ok(p)
    }

    /// Has every online CPU submit the calls it has batched (see the kernel side's
    /// batches). Returns the `CLOCK_MONOTONIC` time taken before: every batched call that
    /// returned before it is in the ring buffer now. The first call also lets each CPU
    /// batch (those this thread can run on: the others never do). `None` if this thread's
    /// CPU mask could not be read or restored.
    pub fn flush_batches(&mut self) -> Option<u64> {
        let t0 = traces::header::monotonic_ns();
        if !self.combine {
            return Some(t0);
        }
        flush_on_each_cpu(&self.cpus).then_some(t0)
    }

    /// Whether calls are batched per CPU.
    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Loads the object and attaches only a program that does nothing to the syscall
    /// hooks `hooks` would use (for ioctl: both entry and exit): the cost of the hook
    /// itself, the floor under the probe's overhead. For benchmarks.
    pub fn floor(hooks: SyscallHooks) -> Result<Floor, ProbeError> {
        bump_memlock();
        ensure_tracefs()?;
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(ProbeError::Load)?;
        match hooks {
            SyscallHooks::Raw => {
                for tp in ["sys_enter", "sys_exit"] {
                    attach(&mut ebpf, "noop_raw_tracepoint", Hook::Raw(tp))?;
                }
            }
            SyscallHooks::Tracepoint => {
                for tp in ["sys_enter_ioctl", "sys_exit_ioctl"] {
                    attach(
                        &mut ebpf,
                        "noop_tracepoint",
                        Hook::Tracepoint("syscalls", tp),
                    )?;
                }
            }
        }
        Ok(Floor { _ebpf: ebpf })
    }

    /// The syscall hooks in use.
    pub fn hooks(&self) -> SyscallHooks {
        self.hooks
    }

    /// Kernel hooks where dxgkrnl exists, else uprobes on a given binary (in one process
    /// when `pid` is given); returns (active, how-or-why-not) for the trace header.
    fn attach_vmbus(
        ebpf: &mut Ebpf,
        uprobe: Option<&Path>,
        pid: Option<u32>,
        sendpacket: bool,
        dxgkrnl: bool,
    ) -> (bool, String) {
        let mut why = Vec::new();
        if dxgkrnl {
            // The request id's hook first: the sends' records wait for it (VMB_SENDPACKET).
            let r = if sendpacket {
                attach(ebpf, "kprobe_sendpacket", Hook::Kprobe("vmbus_sendpacket"))
            } else {
                Ok(())
            };
            let r = r
                .and_then(|_| {
                    attach(
                        ebpf,
                        "kprobe_send_sync",
                        Hook::Kprobe("dxgvmb_send_sync_msg"),
                    )
                })
                .and_then(|_| {
                    attach(
                        ebpf,
                        "kretprobe_send_sync",
                        Hook::Kprobe("dxgvmb_send_sync_msg"),
                    )
                })
                .and_then(|_| {
                    attach(
                        ebpf,
                        "kprobe_send_async",
                        Hook::Kprobe("dxgvmb_send_async_msg"),
                    )
                });
            match r {
                Ok(()) => {
                    return (
                        true,
                        "kprobe:dxgvmb_send_sync_msg,dxgvmb_send_async_msg".into(),
                    );
                }
                Err(e) => why.push(format!(
                    "kprobe on dxgvmb_send_sync_msg failed: {}",
                    chain(&e)
                )),
            }
        } else {
            why.push(
                "dxgvmb_send_sync_msg not in /proc/kallsyms (no dxgkrnl in this kernel)".into(),
            );
        }
        if let Some(bin) = uprobe {
            let scope = match pid.and_then(NonZeroU32::new) {
                Some(p) => UProbeScope::OneProcess(p),
                None => UProbeScope::AllProcesses,
            };
            let mut hooks = vec![
                ("uprobe_send_sync", "dxgvmb_send_sync_msg"),
                ("uretprobe_send_sync", "dxgvmb_send_sync_msg"),
                ("uprobe_send_async", "dxgvmb_send_async_msg"),
            ];
            if sendpacket {
                // First: the sends' records wait for it (VMB_SENDPACKET).
                hooks.insert(0, ("uprobe_sendpacket", "vmbus_sendpacket"));
            }
            let r = hooks
                .iter()
                .try_for_each(|(prog, sym)| attach(ebpf, prog, Hook::Uprobe(sym, bin, scope)));
            match r {
                Ok(()) => {
                    let whose = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    let receive = [
                        ("uprobe_receive", "dxgvmbuschannel_receive"),
                        ("uretprobe_receive", "dxgvmbuschannel_receive"),
                        ("uretprobe_pkt_first", "hv_pkt_iter_first"),
                        ("uretprobe_pkt_next", "__hv_pkt_iter_next"),
                    ];
                    let rx = receive.iter().try_for_each(|(prog, sym)| {
                        attach(ebpf, prog, Hook::Uprobe(sym, bin, scope))
                    });
                    let rx = match rx {
                        Ok(()) => "receive: dxgvmbuschannel_receive, hv_pkt_iter_first, \
                                   __hv_pkt_iter_next"
                            .to_string(),
                        Err(e) => format!("receive path not hooked: {}", chain(&e)),
                    };
                    return (true, format!("uprobe:{}{whose}; {rx}", bin.display()));
                }
                Err(e) => why.push(format!("uprobe on {} failed: {}", bin.display(), chain(&e))),
            }
        } else {
            why.push("no --uprobe-binary given for an emulator".into());
        }
        (false, why.join("; "))
    }

    /// Adds a process to the pid filter (its future children follow automatically).
    pub fn add_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.pids.insert(pid, 1, 0).map_err(|e| ProbeError::Map {
            map: "PIDS",
            what: e.to_string(),
        })
    }

    /// The watched files.
    pub fn devices(&self) -> &[WatchedDevice] {
        &self.devices
    }

    /// Whether VMBus capture is active, and how (or why not).
    pub fn vmbus(&self) -> (bool, &str) {
        (self.vmbus.0, &self.vmbus.1)
    }

    /// Pointer descriptors not followed because a request code had more than
    /// [`MAX_DESCS`] of them.
    pub fn dropped_descriptors(&self) -> usize {
        self.dropped_descs
    }

    /// Waits up to `timeout` for events and hands each to `f`. Returns how many.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(RawEvent<'_>),
    ) -> Result<usize, ProbeError> {
        let mut n = self.drain(&mut f);
        if n > 0 {
            return Ok(n);
        }
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe {
            libc::poll(
                &mut pfd,
                1,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(ProbeError::Syscall {
                    call: "poll",
                    source: e,
                });
            }
        }
        n += self.drain(&mut f);
        Ok(n)
    }

    /// Hands every pending event to `f` without waiting. Calls that carry no bytes wait in
    /// their CPU's batch until it fills or [`Probe::flush_batches`] runs.
    pub fn drain(&mut self, f: &mut impl FnMut(RawEvent<'_>)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            n += RawEvent::each(&item, f);
        }
        n
    }

    /// Ends the capture: detaches and unloads every program, so that nothing more enters
    /// the ring buffer or the in-flight slots, then hands `f` every event still in the
    /// ring and, last, every call that is still in flight (entered, not returned), those
    /// kept in their thread's slot as a [`RawEvent::Call`] with `ts_exit` 0 (the others'
    /// entry records are in the ring). Returns how many events. The maps stay readable
    /// until the probe is dropped.
    pub fn stop(&mut self, f: &mut impl FnMut(RawEvent<'_>)) -> usize {
        let names: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            if let Some(p) = self.ebpf.program_mut(&name) {
                unload(p);
            }
        }
        let mut n = self.drain(f);
        // The calls each CPU had batched and not yet submitted, oldest first.
        let mut batched: Vec<CallEvent> = Vec::new();
        if let Ok(per_cpu) = self.batch.get(&0, 0) {
            for (cpu, b) in per_cpu.iter().enumerate() {
                for c in &b.calls[..(b.count as usize).min(BATCH_LEN)] {
                    let mut c = *c;
                    c.hdr = EventHeader {
                        kind: EV_CALL,
                        cpu: cpu as u32,
                    };
                    batched.push(c);
                }
            }
        }
        batched.sort_by_key(|c| c.ts_exit);
        for c in batched {
            f(RawEvent::Call(c));
            n += 1;
        }
        let mut open: Vec<(u32, Inflight)> = self
            .inflight
            .iter()
            .filter_map(Result::ok)
            .chain(
                (0..self.threads.len())
                    .filter_map(|tid| Some((tid, self.threads.get(&tid, 0).ok()?))),
            )
            .filter(|(_, s)| s.active == CALL_WHOLE)
            .collect();
        open.sort_by_key(|(_, s)| s.ts);
        for (tid, s) in open {
            f(RawEvent::Call(CallEvent {
                hdr: EventHeader {
                    kind: EV_CALL,
                    cpu: (s.call_id >> 56) as u32,
                },
                call_id: s.call_id,
                ts_enter: s.ts,
                ts_exit: 0,
                ret: 0,
                arg: s.arg,
                dev: s.dev as u64,
                ino: s.ino,
                comm: [0; 16],
                pid: s.pid,
                tid,
                fd: s.fd,
                cmd: s.cmd,
                has_comm: 0,
                _pad: 0,
            }));
            n += 1;
        }
        n
    }

    /// Per-CPU drop counters: `out[slot][cpu]` for each `DROP_*` slot.
    pub fn drop_counts(&self) -> Vec<Vec<u64>> {
        per_cpu(&self.drops, DROP_SLOTS)
    }

    /// Activity counters summed over CPUs, by `CNT_*` slot.
    pub fn counters(&self) -> Vec<u64> {
        per_cpu(&self.counters, CNT_SLOTS)
            .into_iter()
            .map(|v| v.iter().sum())
            .collect()
    }

    /// Kernel ids of the loaded programs and of the maps they use, to check with bpftool
    /// or the kernel's id lists that nothing outlives the probe.
    pub fn kernel_ids(&self) -> (Vec<u32>, Vec<u32>) {
        let mut progs = Vec::new();
        let mut maps = std::collections::BTreeSet::new();
        for (_, p) in self.ebpf.programs() {
            let Ok(info) = p.info() else { continue };
            progs.push(info.id());
            if let Ok(Some(ids)) = info.map_ids() {
                maps.extend(ids);
            }
        }
        (progs, maps.into_iter().collect())
    }
}

/// Makes the kernel side flush the batch of each of `cpus`: the calling thread moves to
/// each CPU in turn and closes [`FLUSH_FD`] there (the `close` entry program, which sees
/// our process's pid, flushes that CPU's batch), then gets its CPU mask back. False if
/// the thread's mask could not be read or restored. (A program run by `BPF_PROG_TEST_RUN` on each CPU would need
/// no migration, but this machine's 6.18 kernel returns from that command without
/// running the program.)
fn flush_on_each_cpu(cpus: &[u32]) -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid (empty) set; the calls fill or read it.
    let mut orig: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: as above; 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, size, &mut orig) } != 0 {
        return false;
    }
    for &cpu in cpus {
        // SAFETY: as above; CPU_SET ignores numbers beyond the set.
        let moved = unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            libc::sched_setaffinity(0, size, &one) == 0
        };
        // A CPU this thread may not run on (a cpuset) never got a flush request from us,
        // so it never batches: nothing to flush there.
        if moved {
            // SAFETY: closing a descriptor number that is never open (negative): EBADF.
            unsafe { libc::close(FLUSH_FD) };
        }
    }
    // SAFETY: restoring the mask read above.
    unsafe { libc::sched_setaffinity(0, size, &orig) == 0 }
}

/// Detaches and unloads `p` whatever its type (not loaded: nothing to do).
fn unload(p: &mut aya::programs::Program) {
    use aya::programs::Program;
    let _ = match p {
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::UProbe(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        _ => Ok(()),
    };
}

fn per_cpu(m: &PerCpuArray<MapData, u64>, slots: u32) -> Vec<Vec<u64>> {
    (0..slots)
        .map(|i| {
            m.get(&i, 0)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default()
        })
        .collect()
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
