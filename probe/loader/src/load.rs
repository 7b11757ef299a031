//! Loading, attaching and draining the eBPF object.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{KProbe, TracePoint, UProbe, uprobe::UProbeScope};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use driver_core::emulator::DxgVmbusChannel;
use probe_common::*;

use crate::ProbeError;
use crate::btf::Btf;
use crate::desc::CmdDescriptor;

/// The eBPF object built by build.rs from `probe/ebpf`.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));

const DEFAULT_RINGBUF: u32 = 4 << 20;

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

/// A raw event from the ring buffer.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// Ioctl entry.
    Enter(EnterEvent),
    /// Ioctl exit.
    Exit(ExitEvent),
    /// Buffer chunk and its data.
    Buf(BufEvent, Vec<u8>),
    /// Descriptor opened / closed / derived.
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

impl RawEvent {
    /// Parses one ring-buffer record.
    pub fn parse(b: &[u8]) -> Option<RawEvent> {
        let hdr: EventHeader = read_pod(b)?;
        Some(match hdr.kind {
            EV_ENTER => RawEvent::Enter(read_pod(b)?),
            EV_EXIT => RawEvent::Exit(read_pod(b)?),
            EV_BUF => {
                let ev: BufEvent = read_pod(b)?;
                let start = size_of::<BufEvent>();
                let end = (start + ev.len as usize).min(b.len());
                RawEvent::Buf(ev, b[start..end].to_vec())
            }
            EV_FD => RawEvent::Fd(Box::new(read_pod(b)?)),
            EV_VMBUS => RawEvent::Vmbus(read_pod(b)?),
            _ => return None,
        })
    }
}

/// A loaded, attached probe. Dropping it detaches every program and closes every map.
pub struct Probe {
    // Field order matters for drop: the ring buffer and maps before the object.
    ring: RingBuf<MapData>,
    pids: BpfHashMap<MapData, u32, u8>,
    drops: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    ebpf: Ebpf,
    devices: Vec<WatchedDevice>,
    vmbus: (bool, String),
    dropped_descs: usize,
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
    std::fs::read_to_string("/proc/kallsyms")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().nth(2).is_some_and(|s| s == sym))
        })
        .unwrap_or(false)
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
    /// A uprobe or uretprobe on `symbol` of a binary.
    Uprobe(&'a str, &'a Path, UProbeScope),
    /// A kprobe or kretprobe on a kernel symbol.
    Kprobe(&'a str),
}

/// Loads program `prog` of the object and attaches it at `hook`.
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
            p.load().map_err(err("load"))?;
            p.attach(cat, name).map_err(err("attach"))?;
        }
        Hook::Uprobe(sym, target, scope) => {
            let p: &mut UProbe = p.try_into().map_err(err("load"))?;
            p.load().map_err(err("load"))?;
            p.attach(sym, target, scope).map_err(err("attach"))?;
        }
        Hook::Kprobe(sym) => {
            let p: &mut KProbe = p.try_into().map_err(err("load"))?;
            p.load().map_err(err("load"))?;
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
        let offs = Btf::from_sys_fs()?.kernel_offsets()?;
        let fork_child =
            tracepoint_field_offset("sched", "sched_process_fork", "child_pid").unwrap_or(20);
        let filter = b.filter_pids as u32;
        let uprobe_any_pid = b.uprobe_pid.is_some() as u32;
        // The uprobe binary is the emulator: its channel struct is `repr(C)`, so the
        // adapter LUID and the request counter sit at fixed offsets.
        let ch_known = b.uprobe_binary.is_some() as u32;
        let luid_off = std::mem::offset_of!(DxgVmbusChannel, adapter_luid) as u32;
        let reqid_off = std::mem::offset_of!(DxgVmbusChannel, request_id) as u32;
        let rb = ringbuf_bytes(b.ringbuf_size);

        let mut loader = EbpfLoader::new();
        loader
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
        attach(
            &mut ebpf,
            "sys_enter_openat",
            Hook::Tracepoint("syscalls", "sys_enter_openat"),
        )?;
        attach(
            &mut ebpf,
            "sys_exit_openat",
            Hook::Tracepoint("syscalls", "sys_exit_openat"),
        )?;
        attach(
            &mut ebpf,
            "sys_enter_close",
            Hook::Tracepoint("syscalls", "sys_enter_close"),
        )?;
        // Exit before entry: an entry seen without its exit program would leak INFLIGHT.
        attach(
            &mut ebpf,
            "sys_exit_ioctl",
            Hook::Tracepoint("syscalls", "sys_exit_ioctl"),
        )?;
        attach(
            &mut ebpf,
            "sys_enter_ioctl",
            Hook::Tracepoint("syscalls", "sys_enter_ioctl"),
        )?;

        let vmbus = Self::attach_vmbus(&mut ebpf, b.uprobe_binary.as_deref(), b.uprobe_pid);

        let ring: RingBuf<MapData> = take(&mut ebpf, "EVENTS")?;
        let drops = take(&mut ebpf, "DROPS")?;
        let counters = take(&mut ebpf, "COUNTERS")?;
        Ok(Probe {
            ring,
            pids,
            drops,
            counters,
            ebpf,
            devices,
            vmbus,
            dropped_descs,
        })
    }

    /// Kernel hooks where dxgkrnl exists, else uprobes on a given binary (in one process
    /// when `pid` is given); returns (active, how-or-why-not) for the trace header.
    fn attach_vmbus(ebpf: &mut Ebpf, uprobe: Option<&Path>, pid: Option<u32>) -> (bool, String) {
        let mut why = Vec::new();
        if kallsyms_has("dxgvmb_send_sync_msg") {
            let r = attach(
                ebpf,
                "kprobe_send_sync",
                Hook::Kprobe("dxgvmb_send_sync_msg"),
            )
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
            let hooks = [
                ("uprobe_send_sync", "dxgvmb_send_sync_msg"),
                ("uretprobe_send_sync", "dxgvmb_send_sync_msg"),
                ("uprobe_send_async", "dxgvmb_send_async_msg"),
            ];
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
        mut f: impl FnMut(RawEvent),
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

    /// Hands every pending event to `f` without waiting.
    pub fn drain(&mut self, f: &mut impl FnMut(RawEvent)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(ev) = RawEvent::parse(&item) {
                f(ev);
            }
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
