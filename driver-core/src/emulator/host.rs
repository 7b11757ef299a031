//! The fake host GPU: answers the guest's VMBus messages the way the Windows host's
//! dxgkrnl would (as far as the guest driver's expectations reveal it, reference §3.6),
//! and sends host→guest packets (SIGNALGUESTEVENT, SETGUESTDATA).
//!
//! Deterministic: handles, addresses and latencies derive from counters and the seed
//! only. Monitored fences live in host-owned "IO space" pages that the emulated driver
//! maps (in-process: the CPU address is a real address in this process).

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::handles::HandleMap;
use crate::inthash::IntMap;

use super::bus::Clock;
use super::fault::Fault;
use super::pool::Pooled;
use crate::dxg::types::*;
use crate::dxg::vmbus::*;
use crate::layout::Pod;
use crate::schema::{VmbusChannel, VmbusCmd};

/// NTSTATUS values the host uses.
pub mod st {
    /// Success.
    pub const SUCCESS: u32 = 0;
    /// Success, work pending (paging fence).
    pub const PENDING: u32 = 0x103;
    /// Bad handle.
    pub const INVALID_HANDLE: u32 = 0xC000_0008;
    /// Bad parameter.
    pub const INVALID_PARAMETER: u32 = 0xC000_000D;
    /// Out of memory.
    pub const NO_MEMORY: u32 = 0xC000_0017;
    /// Not supported.
    pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
    /// Device removed.
    pub const DEVICE_REMOVED: u32 = 0xC000_02B6;
    /// Buffer too small.
    pub const BUFFER_TOO_SMALL: u32 = 0xC000_0023;
}

/// One emulated GPU adapter.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    /// The LUID user space sees (first 8 bytes of the vGPU channel instance GUID).
    pub luid: u64,
    /// The host's own adapter LUID.
    pub host_adapter_luid: u64,
    /// The vGPU LUID (ext header).
    pub vgpu_luid: u64,
    /// Description (DRIVER_DESCRIPTION).
    pub description: String,
    /// Dedicated video memory, bytes.
    pub dedicated_bytes: u64,
    /// Shared system memory, bytes.
    pub shared_bytes: u64,
    /// A compute-only accelerator (PCI device 0x008A): hidden from ENUMADAPTERS2.
    pub compute_only: bool,
}

impl AdapterSpec {
    /// The default pair: one render GPU and one compute-only accelerator.
    pub fn defaults() -> Vec<AdapterSpec> {
        vec![
            AdapterSpec {
                luid: 0x0000_0000_0001_d3a1,
                host_adapter_luid: 0x0000_0000_0000_c4f2,
                vgpu_luid: 0x0000_0000_0000_b001,
                description: "dxtrace Emulated Render GPU".into(),
                dedicated_bytes: 8 << 30,
                shared_bytes: 16 << 30,
                compute_only: false,
            },
            AdapterSpec {
                luid: 0x0000_0000_0001_d3a2,
                host_adapter_luid: 0x0000_0000_0000_c4f3,
                vgpu_luid: 0x0000_0000_0000_b002,
                description: "dxtrace Emulated Compute Accelerator".into(),
                dedicated_bytes: 4 << 30,
                shared_bytes: 8 << 30,
                compute_only: true,
            },
        ]
    }
}

/// Per-command latency, ns (before seeded ±20 % jitter).
#[derive(Debug, Clone, Default)]
pub struct LatencyModel {
    /// Overrides by command name (`CREATEALLOCATION` → ns).
    pub overrides: HashMap<String, u64>,
    /// How long "GPU work" of one submit takes.
    pub gpu_work_ns: Option<u64>,
}

impl LatencyModel {
    fn base(&self, name: &str) -> u64 {
        if !self.overrides.is_empty()
            && let Some(v) = self.overrides.get(name)
        {
            return *v;
        }
        match name {
            "CREATEPROCESS" | "OPENADAPTER" | "GETINTERNALADAPTERINFO" => 120_000,
            "CREATEDEVICE" | "CREATECONTEXTVIRTUAL" | "CREATEHWQUEUE" => 90_000,
            "CREATEALLOCATION" => 150_000,
            "DESTROYALLOCATION" | "DESTROYDEVICE" | "FLUSHDEVICE" => 60_000,
            "SUBMITCOMMAND" | "SUBMITCOMMANDTOHWQUEUE" | "SIGNALSYNCOBJECT" => 12_000,
            "WAITFORSYNCOBJECTFROMGPU" => 10_000,
            "MAKERESIDENT" | "MAPGPUVIRTUALADDRESS" | "UPDATEGPUVIRTUALADDRESS" => 45_000,
            "QUERYADAPTERINFO" | "ISFEATUREENABLED" => 25_000,
            "ESCAPE" => 35_000,
            "LOCK2" => 40_000,
            _ => 20_000,
        }
    }
    fn gpu_work(&self) -> u64 {
        self.gpu_work_ns.unwrap_or(400_000)
    }
}

/// The other end of the emulated VMBus: what the driver logic's messages reach.
///
/// [`FakeHost`] answers like a Windows host would; a replay can plug in a host that
/// answers with a trace's recorded replies instead (offline driver-in-the-loop).
/// Host→guest packets go to `inbound`, which the driver drains after every send.
pub trait Host: Send {
    /// Handles one guest→host message (with or without the ext header). The completion
    /// of a sync message ([`HostOutcome::Reply`]) goes to `reply`, which the caller passes
    /// empty and reuses from message to message (no vector per message).
    fn process(
        &mut self,
        msg: &[u8],
        is_async: bool,
        clock: &Clock,
        inbound: &mut VecDeque<Vec<u8>>,
        reply: &mut Vec<u8>,
    ) -> HostOutcome;
    /// Annotations for the timeline (faults the host applied), drained after each send.
    fn take_notes(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether this host can ever have notes outside [`Host::remove_device`]: asked once,
    /// when the emulator boots. When not, notes are taken only after a device removal;
    /// when so, after every send (a host that never notes saves that call each time).
    fn may_note(&self) -> bool {
        true
    }
    /// CPU address of IO-space address `phys` (fence pages, LOCK2 data), if mapped.
    fn map_io(&mut self, phys: u64) -> Option<u64>;
    /// The device-removed fault fired after the configured ioctl count (TDR).
    fn remove_device(&mut self, inbound: &mut VecDeque<Vec<u8>>);
    /// Virtual time reached `now`: complete what is due (GPU work, signals).
    fn advance(&mut self, now: u64, inbound: &mut VecDeque<Vec<u8>>);
    /// When the next pending completion is due, if any (a CPU wait jumps there).
    fn next_completion(&self) -> Option<u64>;
}

impl Host for FakeHost {
    fn process(
        &mut self,
        msg: &[u8],
        is_async: bool,
        clock: &Clock,
        inbound: &mut VecDeque<Vec<u8>>,
        reply: &mut Vec<u8>,
    ) -> HostOutcome {
        FakeHost::process(self, msg, is_async, clock, inbound, reply)
    }
    fn take_notes(&mut self) -> Vec<(String, String)> {
        FakeHost::take_notes(self)
    }
    fn may_note(&self) -> bool {
        // Only the configured faults note (besides device removal); they are fixed when
        // the host is built.
        !self.faults.is_empty()
    }
    fn map_io(&mut self, phys: u64) -> Option<u64> {
        FakeHost::map_io(self, phys)
    }
    fn remove_device(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        FakeHost::remove_device(self, inbound)
    }
    fn advance(&mut self, now: u64, inbound: &mut VecDeque<Vec<u8>>) {
        FakeHost::advance(self, now, inbound)
    }
    fn next_completion(&self) -> Option<u64> {
        FakeHost::next_completion(self)
    }
}

/// What the host did with a message.
#[derive(Debug)]
pub enum HostOutcome {
    /// Completed a sync message: the completion bytes are in the `reply` buffer passed to
    /// [`Host::process`].
    Reply,
    /// Accepted an async message (no completion).
    Accepted,
    /// Never completes (injected hang); `waited_ns` is the bound the emulator applies.
    NoReply {
        /// Bounded wait the caller should account.
        waited_ns: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Device,
    Context,
    Resource,
    Allocation,
    PagingQueue,
    SyncObject,
    HwQueue,
}

#[derive(Debug, Clone)]
struct Obj {
    kind: Kind,
    process: u32,
    size: u64,
    resident: bool,
    priority: u32,
}

/// Objects a CPU waiter holds inline (more go to the waiter's vector).
const WAIT_INLINE: usize = 4;

#[derive(Debug, Clone)]
struct Waiter {
    event: u64,
    /// The (fence, value) pairs: the first `n` of `inline`, or all of `spill` when there
    /// are more than [`WAIT_INLINE`] (a wait on a few fences allocates nothing).
    n: usize,
    inline: [(u32, u64); WAIT_INLINE],
    spill: Vec<(u32, u64)>,
    process_id: u64,
}

impl Waiter {
    fn objs(&self) -> &[(u32, u64)] {
        if self.n > WAIT_INLINE {
            &self.spill
        } else {
            &self.inline[..self.n]
        }
    }
}

/// IO space one monitored fence takes (its value is the page's first 8 bytes).
const FENCE_PAGE: u64 = 4096;

/// Start of the emulated IO space (guest physical).
pub const IO_SPACE_BASE: u64 = 0x0000_0010_0000_0000;
/// Size of the emulated IO space.
pub const IO_SPACE_SIZE: u64 = 256 << 20;

/// Where the CPU view of the first emulator's IO space is mapped (later emulators in the
/// same process take the following slots).
pub const IO_WINDOW_BASE: u64 = 0x0000_3e00_0000_0000;

static NEXT_IO_SLOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The CPU mapping of the whole IO space (fence pages, LOCK2 data), at a fixed address
/// when possible: the driver hands these CPU addresses to user space in ioctl outputs and
/// they end up in traces, which must be reproducible. Anonymous and `MAP_NORESERVE`, so
/// only touched pages cost memory.
struct IoWindow {
    ptr: *mut u8,
}

// SAFETY: the window is plain memory owned by the host; all access goes through the
// host's `&mut self` (the host is borrowed exclusively for each call).
unsafe impl Send for IoWindow {}

impl IoWindow {
    fn map() -> IoWindow {
        let slot = NEXT_IO_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let want = IO_WINDOW_BASE + slot * IO_SPACE_SIZE;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let len = IO_SPACE_SIZE as usize;
        // SAFETY: new anonymous mappings; NOREPLACE never clobbers an existing one.
        let mut p = unsafe {
            libc::mmap(
                want as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // Taken: anywhere (addresses in traces then vary between runs).
            // SAFETY: as above.
            p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        }
        assert!(p != libc::MAP_FAILED, "cannot map the emulated IO space");
        IoWindow { ptr: p.cast() }
    }
    fn page(&mut self, phys: u64, len: u64) -> &mut [u8] {
        let off = (phys - IO_SPACE_BASE) as usize;
        assert!(off as u64 + len <= IO_SPACE_SIZE, "IO space overflow");
        // SAFETY: inside the mapping (checked above); `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len as usize) }
    }
}

impl Drop for IoWindow {
    fn drop(&mut self) {
        // SAFETY: our own mapping. A client still holding a fence CPU address would fault,
        // as it would after the real device is gone.
        unsafe { libc::munmap(self.ptr.cast(), IO_SPACE_SIZE as usize) };
    }
}

/// The fake host.
pub struct FakeHost {
    adapters: Vec<AdapterSpec>,
    host_adapter_handles: Vec<u32>,
    interface_version: u32,
    async_msg: bool,
    seed: u64,
    latency: LatencyModel,
    faults: Vec<Fault>,
    counts: IntMap<(bool, u32), u64>,
    /// Base latency by command ([`LatencyModel::base`] of its name), adapter commands
    /// at their value, global ones at 256 + value − 1000.
    base_latency: Vec<Option<u64>>,
    signals_sent: u64,
    next_index: u32,
    objs: HandleMap<Obj>,
    fences: HandleMap<(u64, u64)>,
    /// IO-space allocations: base → size (bytes live in `window`).
    io: BTreeMap<u64, u64>,
    window: IoWindow,
    next_io: u64,
    /// Pages of destroyed fences, reused last-freed first by [`FakeHost::new_fence`].
    free_fence_pages: Vec<u64>,
    pending: Vec<(u64, u32, u64)>,
    /// The earliest due time in `pending` (`u64::MAX` when empty): [`FakeHost::advance`]
    /// with nothing due is one compare.
    next_due: u64,
    /// Scratch for [`FakeHost::advance`] (kept to reuse its capacity).
    due: Vec<(u64, u32, u64)>,
    busy: HandleMap<u64>,
    waiters: Vec<Waiter>,
    /// A fence value changed or a waiter was added since the waiters were last checked
    /// (only then can one be done).
    waiters_dirty: bool,
    va: IntMap<u32, BTreeMap<u64, (u64, Option<u32>)>>,
    next_va: u64,
    paging_fence: IntMap<u32, u32>,
    device_error_ptr: IntMap<u32, u64>,
    removed: bool,
    hang_bound_ns: u64,
    jitter_ctr: u64,
    notes: Vec<(String, String)>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .unwrap_or(0)
}
/// The `N` bytes at `off`, bytes past the end of `b` read as 0 (as in the zero-filled
/// struct `Pod::from_bytes` makes of a short message).
#[inline(always)]
fn bytes_z<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    match b.get(off..off + N) {
        Some(s) => s.try_into().expect("N bytes"),
        None => {
            let mut a = [0u8; N];
            let tail = b.get(off..).unwrap_or(&[]);
            let n = tail.len().min(N);
            a[..n].copy_from_slice(&tail[..n]);
            a
        }
    }
}
/// The little-endian u32 at `off`, bytes past the end of `b` read as 0 ([`bytes_z`]).
fn u32_z(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(bytes_z(b, off))
}
/// The little-endian u64 at `off`, bytes past the end of `b` read as 0 ([`bytes_z`]).
fn u64_z(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(bytes_z(b, off))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .unwrap_or(0)
}
/// Appends an NTSTATUS reply (a fixed-size append: a 4-byte store, not a memcpy call).
#[inline(always)]
fn put_status(out: &mut Vec<u8>, s: u32) {
    s.to_le_bytes().put(out)
}

/// Appends reply bytes to the host's reply buffer.
trait Put {
    fn put(&self, out: &mut Vec<u8>);
}

impl Put for [u8] {
    /// An append inlined where the reply is built (`extend_from_slice` was a call per
    /// reply, and a `memcpy` call for a 4-byte status).
    #[inline(always)]
    fn put(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        let n = out.len();
        // SAFETY: `out` has room for `self.len()` more bytes (reserved above), all
        // written before the length grows; `self` is not part of `out`'s buffer (it is
        // borrowed while `out` is mutably borrowed).
        unsafe {
            super::bus::copy_bytes(self.as_ptr(), out.as_mut_ptr().add(n), self.len());
            out.set_len(n + self.len());
        }
    }
}
fn cmd_name(cmd: VmbusCmd) -> &'static str {
    command_name(cmd).unwrap_or("UNKNOWN")
}

/// Host configuration.
pub struct HostConfig {
    /// Adapters.
    pub adapters: Vec<AdapterSpec>,
    /// Negotiated VMBus interface version.
    pub interface_version: u32,
    /// Advertise `async_msg_enabled`.
    pub async_msg: bool,
    /// Seed.
    pub seed: u64,
    /// Latencies.
    pub latency: LatencyModel,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Bound on an injected hang.
    pub hang_bound_ns: u64,
}

impl HostConfig {
    /// The host settings of an emulator configuration.
    pub fn of(cfg: &super::EmulatorConfig) -> HostConfig {
        HostConfig {
            adapters: cfg.adapters.clone(),
            interface_version: cfg.interface_version,
            async_msg: cfg.async_msg,
            seed: cfg.seed,
            latency: cfg.latency.clone(),
            faults: cfg.faults.clone(),
            hang_bound_ns: cfg.hang_bound_ns,
        }
    }
}

impl FakeHost {
    /// New host.
    pub fn new(cfg: HostConfig) -> FakeHost {
        FakeHost {
            host_adapter_handles: vec![0; cfg.adapters.len()],
            adapters: cfg.adapters,
            interface_version: cfg.interface_version,
            async_msg: cfg.async_msg,
            seed: cfg.seed,
            latency: cfg.latency,
            faults: cfg.faults,
            counts: IntMap::default(),
            base_latency: vec![None; 512],
            signals_sent: 0,
            next_index: 0x100,
            objs: HandleMap::default(),
            fences: HandleMap::default(),
            io: BTreeMap::new(),
            window: IoWindow::map(),
            next_io: IO_SPACE_BASE,
            free_fence_pages: Vec::new(),
            pending: Vec::new(),
            next_due: u64::MAX,
            due: Vec::new(),
            busy: HandleMap::default(),
            waiters: Vec::new(),
            waiters_dirty: false,
            va: IntMap::default(),
            next_va: 0x0000_0001_0000_0000 + (splitmix(cfg.seed) & 0xff) * 0x1000_0000,
            paging_fence: IntMap::default(),
            device_error_ptr: IntMap::default(),
            removed: false,
            hang_bound_ns: cfg.hang_bound_ns,
            jitter_ctr: 0,
            notes: Vec::new(),
        }
    }

    /// Annotations the host wants on the timeline (faults it applied), drained by the
    /// driver after each send.
    pub fn take_notes(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.notes)
    }

    fn handle(&mut self) -> u32 {
        let h = 0x4000_0000 | ((self.next_index & 0x00FF_FFFF) << 6);
        self.next_index += 1;
        h
    }

    fn io_alloc(&mut self, size: u64) -> u64 {
        let size = size.max(4096).div_ceil(4096) * 4096;
        let a = self.next_io;
        self.next_io += size;
        self.io.insert(a, size);
        a
    }

    /// CPU address of IO-space address `phys` (what `io_remap_pfn_range` gives the
    /// process). The page stays valid as long as the host lives.
    pub fn map_io(&mut self, phys: u64) -> Option<u64> {
        let (base, size) = self.io.range(..=phys).next_back()?;
        let off = phys - base;
        // Past the window (a very long session) there is no CPU view: 0, as for an
        // unmapped page.
        let inside = phys - IO_SPACE_BASE + 8 <= IO_SPACE_SIZE;
        (off < *size && inside).then(|| self.window.ptr as u64 + (phys - IO_SPACE_BASE))
    }

    fn write_fence(&mut self, h: u32, v: u64) {
        self.waiters_dirty = true;
        if let Some(f) = self.fences.get_mut(h) {
            f.0 = f.0.max(v);
            let (val, phys) = *f;
            // A fence's page is mapped for as long as the fence lives (`new_fence` maps
            // it, `free_fence` unmaps it with the fence): only the window's end bounds it.
            debug_assert!(
                self.io
                    .range(..=phys)
                    .next_back()
                    .is_some_and(|(base, size)| phys - base + 8 <= *size)
            );
            if phys - IO_SPACE_BASE + 8 <= IO_SPACE_SIZE {
                self.window
                    .page(phys, 8)
                    .copy_from_slice(&val.to_le_bytes());
            }
        }
    }

    fn fence_value(&self, h: u32) -> Option<u64> {
        self.fences.get(h).map(|f| f.0)
    }

    fn latency(&mut self, cmd: VmbusCmd) -> u64 {
        // The base latency of a command never changes: looked up by name once.
        let slot = match cmd.channel {
            VmbusChannel::Adapter => cmd.value as usize,
            VmbusChannel::Global => 256 + cmd.value.wrapping_sub(1000) as usize,
            VmbusChannel::HostToGuest => usize::MAX,
        };
        let base = match self.base_latency.get(slot).copied().flatten() {
            Some(b) => b,
            None => {
                let b = self.latency.base(cmd_name(cmd));
                if slot < self.base_latency.len() {
                    self.base_latency[slot] = Some(b);
                }
                b
            }
        };
        self.jitter_ctr += 1;
        let r = splitmix(self.seed ^ self.jitter_ctr.wrapping_mul(0x1000_0001));
        // ±20 %
        let span = base / 5;
        if span == 0 {
            base
        } else {
            base - span + r % (2 * span + 1)
        }
    }

    /// Queues a fence update due at `p.0`.
    fn add_pending(&mut self, p: (u64, u32, u64)) {
        self.next_due = self.next_due.min(p.0);
        self.pending.push(p);
    }

    /// Applies fence updates whose GPU work has completed by `now` and signals waiters.
    #[inline]
    pub fn advance(&mut self, now: u64, inbound: &mut VecDeque<Vec<u8>>) {
        if now >= self.next_due {
            self.apply_due(now);
        }
        self.check_waiters(inbound);
    }

    #[inline(never)]
    fn apply_due(&mut self, now: u64) {
        // The common case, one pending update and it is due (a frame's GPU signal): no
        // partition, sort or rescan.
        if let [p] = self.pending[..]
            && p.0 <= now
        {
            self.pending.clear();
            self.next_due = u64::MAX;
            self.write_fence(p.1, p.2);
            return;
        }
        {
            let mut due = std::mem::take(&mut self.due);
            self.pending.retain(|p| {
                if p.0 <= now {
                    due.push(*p);
                    false
                } else {
                    true
                }
            });
            due.sort();
            for &(_, h, v) in &due {
                self.write_fence(h, v);
            }
            due.clear();
            self.due = due;
        }
        self.next_due = self.pending.iter().map(|p| p.0).min().unwrap_or(u64::MAX);
    }

    #[inline]
    fn check_waiters(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        if self.waiters_dirty {
            self.waiters_dirty = false;
            if !self.waiters.is_empty() {
                self.signal_done_waiters(inbound);
            }
        }
    }

    #[inline(never)]
    fn signal_done_waiters(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        // Waiters whose fences all reached their values are signalled in registration
        // order (signalling never changes `waiters`).
        let mut i = 0;
        while i < self.waiters.len() {
            let fences = &self.fences;
            let done = self.waiters[i]
                .objs()
                .iter()
                .all(|(h, v)| fences.get(*h).is_some_and(|f| f.0 >= *v));
            if done {
                // The last one (the only one, mostly) is popped: no shift of the rest.
                let w = if i + 1 == self.waiters.len() {
                    self.waiters.pop().expect("waiter i")
                } else {
                    self.waiters.remove(i)
                };
                self.send_signal(w.event, w.process_id, inbound);
            } else {
                i += 1;
            }
        }
    }

    /// Earliest completion time that would satisfy a waiter, if any GPU work is pending.
    pub fn next_completion(&self) -> Option<u64> {
        (self.next_due != u64::MAX).then_some(self.next_due)
    }

    /// Whether any CPU waiter is registered.
    pub fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    fn send_signal(&mut self, event: u64, process_id: u64, inbound: &mut VecDeque<Vec<u8>>) {
        self.signals_sent += 1;
        let n = self.signals_sent;
        let lose = self
            .faults
            .iter()
            .any(|f| matches!(f, Fault::LoseSignal { at } if at.hits(n)));
        let dup = self
            .faults
            .iter()
            .any(|f| matches!(f, Fault::DupSignal { at } if at.hits(n)));
        if lose {
            self.notes.push((
                "fault".into(),
                format!("lose-signal: SIGNALGUESTEVENT #{n} for host event {event} was never sent"),
            ));
            return;
        }
        let mut m = SignalGuestEvent::zeroed();
        m.hdr.channel_bits = 2;
        m.hdr.command_type = 0;
        m.event = event;
        m.process_id = process_id;
        inbound.push_back(m.as_bytes().pooled());
        if dup {
            self.notes.push((
                "fault".into(),
                format!("dup-signal: SIGNALGUESTEVENT #{n} for host event {event} sent twice"),
            ));
            inbound.push_back(m.as_bytes().pooled());
        }
    }

    /// Marks the device removed (TDR) and tells the guest with SETGUESTDATA for every
    /// device's `error_code` pointer.
    pub fn remove_device(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        if self.removed {
            return;
        }
        self.removed = true;
        self.notes.push((
            "fault".into(),
            "device-removed: the host reports every adapter removed (TDR)".into(),
        ));
        let mut ptrs: Vec<u64> = self.device_error_ptr.values().copied().collect();
        ptrs.sort();
        ptrs.dedup();
        for p in ptrs {
            let mut m = SetGuestData::zeroed();
            m.hdr.channel_bits = 2;
            m.hdr.command_type = 2;
            m.guest_pointer = p;
            m.data64 = 1;
            m.bits = 1; // dereference=1, data_type=DWORD(0)
            inbound.push_back(m.as_bytes().pooled());
        }
    }

    fn fault_for(&mut self, cmd: VmbusCmd) -> (Option<u32>, bool) {
        if self.faults.is_empty() {
            return (None, false); // the counts only serve the faults' occurrences
        }
        let key = (cmd.channel == VmbusChannel::Global, cmd.value);
        let n = {
            let c = self.counts.entry(key).or_insert(0);
            *c += 1;
            *c
        };
        let mut fail = None;
        let mut hang = false;
        for f in &self.faults {
            match f {
                Fault::Status { cmd: c, status, at } if *c == cmd && at.hits(n) => {
                    fail = Some(*status)
                }
                Fault::Hang { cmd: c, at } if *c == cmd && at.hits(n) => hang = true,
                _ => {}
            }
        }
        if let Some(s) = fail {
            self.notes.push((
                "fault".into(),
                format!(
                    "{} #{n} failed by the host with status {s:#010x}",
                    cmd_name(cmd)
                ),
            ));
        }
        if hang {
            self.notes.push((
                "fault".into(),
                format!("hang: the host never completes {} #{n}", cmd_name(cmd)),
            ));
        }
        (fail, hang)
    }

    /// Handles one guest→host message (with or without the ext header); a sync message's
    /// completion goes to `reply` (passed empty).
    pub fn process(
        &mut self,
        msg: &[u8],
        is_async: bool,
        clock: &Clock,
        inbound: &mut VecDeque<Vec<u8>>,
        reply: &mut Vec<u8>,
    ) -> HostOutcome {
        let body = if self.interface_version >= 40 && u32_at(msg, 0) == 16 {
            &msg[16..]
        } else {
            msg
        };
        let vgpu_luid = if body.len() != msg.len() {
            u64_at(msg, 8)
        } else {
            0
        };
        let channel_type = u32_at(body, 12) & 0xff;
        let cmd = VmbusCmd {
            channel: if channel_type == 1 {
                VmbusChannel::Global
            } else {
                VmbusChannel::Adapter
            },
            value: u32_at(body, 16),
        };
        let process = u32_at(body, 8);
        let lat = self.latency(cmd);
        clock.advance(lat);
        self.advance(clock.now(), inbound);
        let (fail, hang) = self.fault_for(cmd);
        if hang && !is_async {
            return HostOutcome::NoReply {
                waited_ns: self.hang_bound_ns,
            };
        }
        // Most messages are for the first adapter (or global: no ext header luid matches).
        let adapter = if self
            .adapters
            .first()
            .is_some_and(|a| a.vgpu_luid == vgpu_luid)
        {
            0
        } else {
            self.adapters
                .iter()
                .position(|a| a.vgpu_luid == vgpu_luid)
                .unwrap_or(0)
        };
        let removed_fail = self.removed
            && cmd.channel == VmbusChannel::Adapter
            && !matches!(cmd.value, 1 | 5 | 7 | 10 | 15 | 42 | 51);
        reply.clear();
        self.dispatch(cmd, body, process, adapter, clock.now(), reply);
        let fail = fail.or(removed_fail.then_some(st::DEVICE_REMOVED));
        if let Some(s) = fail {
            apply_failure(cmd, reply, s);
        }
        self.check_waiters(inbound);
        if is_async {
            reply.clear();
            HostOutcome::Accepted
        } else {
            HostOutcome::Reply
        }
    }

    #[inline(always)]
    fn valid(&self, h: u32, k: Kind) -> bool {
        self.objs.get(h).is_some_and(|o| o.kind == k)
    }

    fn add(&mut self, kind: Kind, process: u32, size: u64) -> u32 {
        let h = self.handle();
        self.objs.insert(
            h,
            Obj {
                kind,
                process,
                size,
                resident: false,
                priority: 0x7800_0000,
            },
        );
        h
    }

    /// A monitored fence: its value lives in an IO-space page, the most recently freed
    /// fence page if there is one (a page is reused only once the fence that had it is
    /// destroyed), else a fresh one.
    fn new_fence(&mut self, process: u32, initial: u64) -> (u32, u64) {
        let h = self.add(Kind::SyncObject, process, 8);
        let phys = match self.free_fence_pages.pop() {
            Some(p) => {
                self.io.insert(p, FENCE_PAGE);
                p
            }
            None => self.io_alloc(FENCE_PAGE),
        };
        self.fences.insert(h, (0, phys));
        // Always writes the page: it may hold a destroyed fence's last value.
        self.write_fence(h, initial);
        (h, phys)
    }

    /// Destroys fence `h`'s storage: its page goes on the free list (no longer mapped).
    fn free_fence(&mut self, h: u32) {
        if let Some((_, phys)) = self.fences.remove(h)
            && self.io.remove(&phys).is_some()
        {
            self.free_fence_pages.push(phys);
        }
    }

    fn gpu_done_at(&mut self, ctx: u32, now: u64) -> u64 {
        let work = self.latency.gpu_work();
        let b = self.busy.get_or_insert_with(ctx, || 0);
        *b = (*b).max(now) + work;
        *b
    }

    #[inline(always)]
    fn dispatch(
        &mut self,
        cmd: VmbusCmd,
        b: &[u8],
        process: u32,
        adapter: usize,
        now: u64,
        out: &mut Vec<u8>,
    ) {
        if cmd.channel == VmbusChannel::Global {
            return match cmd.value {
                1000 => {
                    let h = self.handle();
                    CreateProcessReturn { hprocess: h }.as_bytes().put(out)
                }
                1001 => {
                    self.objs.retain(|_, o| o.process != process);
                    // nobody is left to signal: its CPU waits go with it
                    self.waiters.retain(|w| w.process_id != process as u64);
                    // The process's fences go with it (in handle order: the free list's
                    // order decides which page the next fence gets).
                    let mut gone: Vec<u32> = self
                        .fences
                        .keys()
                        .filter(|h| !self.objs.contains_key(*h))
                        .collect();
                    gone.sort_unstable();
                    for h in gone {
                        self.free_fence(h);
                    }
                    put_status(out, st::SUCCESS)
                }
                1003 => {
                    let h = u32_at(b, 24);
                    if self.objs.remove(h).is_some() {
                        self.free_fence(h);
                        put_status(out, st::SUCCESS)
                    } else {
                        put_status(out, st::INVALID_HANDLE)
                    }
                }
                1010 => put_status(out, st::SUCCESS),
                1021 => {
                    let h = u32_at(b, 28);
                    let ok = self.objs.contains_key(h);
                    ShareObjectWithHostReturn {
                        status: if ok { 0 } else { st::INVALID_HANDLE as i32 },
                        alignment: 0,
                        vail_nt_handle: if ok {
                            0x8000_0000_0000_0000 | h as u64
                        } else {
                            0
                        },
                    }
                    .as_bytes()
                    .put(out)
                }
                _ => put_status(out, st::NOT_SUPPORTED),
            };
        }
        match cmd.value {
            14 => {
                let h = self.handle();
                self.host_adapter_handles[adapter] = h;
                OpenAdapterReturn {
                    host_adapter_handle: h,
                    status: 0,
                    vmbus_interface_version: self.interface_version,
                    vmbus_last_compatible_interface_version: 16,
                }
                .as_bytes()
                .put(out)
            }
            15 => (),
            36 => {
                let a = &self.adapters[adapter];
                let mut r = GetInternalAdapterInfoReturn::zeroed();
                r.device_types = 1;
                r.driver_ddi_version = 0xb000;
                r.flags = if self.async_msg { 1 << 6 } else { 0 } | (1 << 4);
                r.host_adapter_luid = [
                    a.host_adapter_luid as u32,
                    (a.host_adapter_luid >> 32) as u32,
                ];
                for (i, c) in a.description.encode_utf16().take(79).enumerate() {
                    r.device_description[i] = c;
                }
                for (i, c) in format!(
                    "PCI\\VEN_1414&DEV_{:04X}\\{:016X}",
                    if a.compute_only { 0x8a } else { 0x8e },
                    a.luid
                )
                .encode_utf16()
                .take(259)
                .enumerate()
                {
                    r.device_instance_id[i] = c;
                }
                r.host_vgpu_luid = [a.vgpu_luid as u32, (a.vgpu_luid >> 32) as u32];
                r.as_bytes().put(out);
                if self.interface_version < 40 {
                    out.truncate(704);
                }
            }
            0 => {
                let c = CreateDeviceCmd::from_bytes(b);
                let h = self.add(Kind::Device, process, 0);
                self.device_error_ptr.insert(h, c.error_code);
                CreateDeviceReturn { device: h }.as_bytes().put(out)
            }
            1 => {
                let d = u32_at(b, 24);
                if self.objs.remove(d).is_some() {
                    put_status(out, 0)
                } else {
                    put_status(out, st::INVALID_HANDLE)
                }
            }
            42 => put_status(
                out,
                if self.valid(u32_at(b, 24), Kind::Device) {
                    0
                } else {
                    st::INVALID_HANDLE
                },
            ),
            2 => {
                let c = QueryAdapterInfoCmd::from_bytes(b);
                let size = c.private_data_size as usize;
                let input = b.get(32..32 + size).unwrap_or(&[]).pooled();
                let a = self.adapters[adapter].clone();
                let mut data = vec![0u8; size];
                let st_ = match c.query_type {
                    15 | 57 if size >= 4 => {
                        // render_supported bit 0, software_device 0; the guest patches the rest
                        data[..4].copy_from_slice(&1u32.to_le_bytes());
                        0
                    }
                    30 if size >= 4 => {
                        data[..4].copy_from_slice(&1u32.to_le_bytes());
                        0
                    }
                    1 | 65 | 66 => {
                        let s = if c.query_type == 1 {
                            "C:\\Windows\\System32\\DriverStore\\FileRepository\\dxtrace_emu.inf_amd64\\emu_umd.dll".to_string()
                        } else {
                            a.description.clone()
                        };
                        let w: Vec<u8> = s
                            .encode_utf16()
                            .chain([0])
                            .flat_map(|c| c.to_le_bytes())
                            .collect();
                        if w.len() > size {
                            st::BUFFER_TOO_SMALL
                        } else {
                            data[..w.len()].copy_from_slice(&w);
                            0
                        }
                    }
                    0 => {
                        // UMD private: echo what the UMD sent, tagged.
                        data.copy_from_slice(&input);
                        if size >= 4 {
                            data[..4].copy_from_slice(&0x4458_5452u32.to_le_bytes());
                        }
                        0
                    }
                    _ => st::INVALID_PARAMETER,
                };
                if self.interface_version >= 40 {
                    put_status(out, st_);
                }
                out.extend_from_slice(&data);
            }
            4 => self.create_allocation(b, process, out),
            5 => {
                let c = DestroyAllocationCmd::from_bytes(b);
                let n = c.alloc_count as usize;
                let mut ok = true;
                if c.resource != 0 {
                    ok &= self.objs.remove(c.resource).is_some();
                }
                for i in 0..n {
                    let h = u32_at(b, 40 + 4 * i);
                    ok &= self.objs.remove(h).is_some();
                }
                put_status(out, if ok { 0 } else { st::INVALID_HANDLE })
            }
            6 => {
                b.put(out);
                let r = &mut *out;
                let dev = u32_at(b, 28);
                if self.valid(dev, Kind::Device) {
                    let h = self.add(Kind::Context, process, 0);
                    r[24..28].copy_from_slice(&h.to_le_bytes());
                    let n = u32_at(b, 48) as usize;
                    for (i, x) in r.iter_mut().skip(52).take(n).enumerate() {
                        *x ^= (i as u8).wrapping_mul(31) | 1;
                    }
                }
            }
            7 | 51 => {
                let h = u32_at(b, 24);
                let k = if cmd.value == 7 {
                    Kind::Context
                } else {
                    Kind::HwQueue
                };
                if self.valid(h, k) {
                    self.objs.remove(h);
                    put_status(out, 0)
                } else {
                    put_status(out, st::INVALID_HANDLE)
                }
            }
            8 => {
                let c = CreateSyncObjectCmd::from_bytes(b);
                if !self.valid(c.args.device, Kind::Device) {
                    return CreateSyncObjectReturn::zeroed().as_bytes().put(out);
                }
                let ty = c.args.info.type_;
                let mut r = CreateSyncObjectReturn::zeroed();
                if ty == 5 || ty == 6 {
                    let (h, phys) = self.new_fence(process, c.args.info.params[0]);
                    r.sync_object = h;
                    r.fence_storage_address = phys;
                    r.fence_gpu_va = 0x0000_7f00_0000_0000 + (phys - IO_SPACE_BASE);
                } else {
                    r.sync_object = self.add(Kind::SyncObject, process, 0);
                }
                if c.args.info.flags & 1 != 0 {
                    r.global_sync_object = self.handle();
                }
                r.as_bytes().put(out)
            }
            9 => {
                let c = CreatePagingQueueCmd::from_bytes(b);
                if !self.valid(c.args.device, Kind::Device) {
                    return CreatePagingQueueReturn::zeroed().as_bytes().put(out);
                }
                let pq = self.add(Kind::PagingQueue, process, 0);
                let (f, phys) = self.new_fence(process, 0);
                self.paging_fence.insert(pq, f);
                CreatePagingQueueReturn {
                    paging_queue: pq,
                    sync_object: f,
                    fence_storage_physical_address: phys,
                    fence_storage_offset: 0,
                }
                .as_bytes()
                .put(out)
            }
            10 => {
                let pq = u32_at(b, 24);
                if let Some(f) = self.paging_fence.remove(&pq) {
                    self.objs.remove(f);
                    self.free_fence(f);
                }
                self.objs.remove(pq);
            }
            11 => {
                let c = MakeResidentCmd::from_bytes(b);
                let mut newly = false;
                let mut ok = self.valid(c.paging_queue, Kind::PagingQueue);
                for i in 0..c.alloc_count as usize {
                    let h = u32_at(b, 40 + 4 * i);
                    match self.objs.get_mut(h) {
                        Some(o) if o.kind == Kind::Allocation => {
                            newly |= !o.resident;
                            o.resident = true;
                        }
                        _ => ok = false,
                    }
                }
                let fv = self.paging_op(c.paging_queue, now);
                MakeResidentReturn {
                    paging_fence_value: fv,
                    num_bytes_to_trim: 0,
                    status: if !ok {
                        st::INVALID_HANDLE
                    } else if newly {
                        st::PENDING
                    } else {
                        0
                    } as i32,
                    _pad0: 0,
                }
                .as_bytes()
                .put(out)
            }
            12 => {
                let c = EvictCmd::from_bytes(b);
                let mut trim = 0;
                for i in 0..c.alloc_count as usize {
                    if let Some(o) = self.objs.get_mut(u32_at(b, 36 + 4 * i)) {
                        if o.resident {
                            trim += o.size;
                        }
                        o.resident = false;
                    }
                }
                trim.to_le_bytes().put(out)
            }
            13 => {
                let c = EscapeCmd::from_bytes(b);
                let n = c.priv_drv_data_size as usize;
                b.get(48..48 + n).unwrap_or(&[]).put(out);
                // The "KMD" answers by bumping the first dword (a reply counter).
                if out.len() >= 4 {
                    let v = u32_at(out, 0).wrapping_add(1);
                    out[..4].copy_from_slice(&v.to_le_bytes());
                }
            }
            16 => {
                let c = FreeGpuVaCmd::from_bytes(b);
                let space = self.va.entry(process).or_default();
                match space.get(&c.args.base_address) {
                    Some((sz, _)) if *sz == c.args.size => {
                        space.remove(&c.args.base_address);
                        put_status(out, 0)
                    }
                    _ => put_status(out, st::INVALID_PARAMETER),
                }
            }
            17 => self.map_gpu_va(b, process, now, out),
            18 => {
                let c = ReserveGpuVaCmd::from_bytes(b);
                let a = c.args;
                // A size that rounds past the top of the address space gets no range.
                let va = a.size.checked_next_multiple_of(0x10000).and_then(|size| {
                    let (base, min, max) = (a.base_address, a.minimum_address, a.maximum_address);
                    self.va_alloc(process, base, min, max, size, None)
                });
                ReserveGpuVaReturn {
                    virtual_address: va.unwrap_or(0),
                    paging_fence_value: 0,
                }
                .as_bytes()
                .put(out)
            }
            19 => {
                let c = UpdateGpuVaCmd::from_bytes(b);
                let n = c.num_operations as usize;
                let mut okv = true;
                for i in 0..n {
                    let op = UpdateGpuVaOperation::from_bytes(b.get(56 + 64 * i..).unwrap_or(&[]));
                    if op.operation == 0 || op.operation == 3 {
                        let h = op.allocation as u32;
                        okv &= self.valid(h, Kind::Allocation);
                    }
                }
                if okv && c.fence_object != 0 {
                    let done = self.gpu_done_at(c.context, now);
                    self.add_pending((done, c.fence_object, c.fence_value));
                }
                put_status(out, if okv { 0 } else { st::INVALID_HANDLE })
            }
            20 | 52 => {
                // SUBMITCOMMAND: the context's GPU work finishes later; SUBMITCOMMANDTOHWQUEUE
                // also advances the queue's progress fence.
                if cmd.value == 20 {
                    // Read in place (the 408-byte command is not copied per submit).
                    const ARGS: usize = size_of::<VgpuToHostHdr>();
                    let count = ARGS + std::mem::offset_of!(SubmitCommand, broadcast_context_count);
                    let ctxs = ARGS + std::mem::offset_of!(SubmitCommand, broadcast_context);
                    let n = u32_z(b, count).min(64) as usize;
                    for i in 0..n {
                        self.gpu_done_at(u32_z(b, ctxs + 4 * i), now);
                    }
                    put_status(
                        out,
                        if n > 0 && self.valid(u32_z(b, ctxs), Kind::Context) {
                            0
                        } else {
                            st::INVALID_HANDLE
                        },
                    )
                } else {
                    let c = SubmitCommandToHwQueueCmd::from_bytes(b);
                    let q = c.args.hwqueue;
                    if !self.valid(q, Kind::HwQueue) {
                        return put_status(out, st::INVALID_HANDLE);
                    }
                    let done = self.gpu_done_at(q, now);
                    if let Some(f) = self.hwqueue_fence(q) {
                        self.add_pending((done, f, c.args.hwqueue_progress_fence_id));
                    }
                    put_status(out, 0)
                }
            }
            21 => {
                let a = &self.adapters[adapter];
                let group = u32_at(b, 28);
                let budget = if group == 0 {
                    a.dedicated_bytes
                } else {
                    a.shared_bytes
                };
                let used: u64 = self
                    .objs
                    .values()
                    .filter(|o| o.kind == Kind::Allocation && o.process == process)
                    .map(|o| o.size)
                    .sum();
                QueryVideoMemoryInfoReturn {
                    budget,
                    current_usage: if group == 0 { used } else { 0 },
                    current_reservation: 0,
                    available_for_reservation: budget / 2,
                }
                .as_bytes()
                .put(out)
            }
            22 => {
                // The fields are read in place (not copied into the struct first).
                type C = WaitSyncObjectFromCpuCmd;
                let n = u32_z(b, std::mem::offset_of!(C, object_count)) as usize;
                let mut w = Waiter {
                    event: u64_z(b, std::mem::offset_of!(C, guest_event_pointer)),
                    n,
                    inline: [(0, 0); WAIT_INLINE],
                    spill: Vec::new(),
                    process_id: process as u64,
                };
                for i in 0..n {
                    let h = u32_at(b, 56 + 4 * i);
                    let v = u64_at(b, 56 + 4 * n + 8 * i);
                    if !self.fences.contains_key(h) {
                        return put_status(out, st::INVALID_HANDLE);
                    }
                    if n > WAIT_INLINE {
                        w.spill.push((h, v));
                    } else {
                        w.inline[i] = (h, v);
                    }
                }
                self.waiters.push(w);
                self.waiters_dirty = true;
                put_status(out, 0)
            }
            23 => {
                let c = Lock2Cmd::from_bytes(b);
                let size = self
                    .objs
                    .get(c.args.allocation)
                    .filter(|o| o.kind == Kind::Allocation)
                    .map(|o| o.size);
                match size {
                    Some(sz) => {
                        let phys = self.io_alloc(sz);
                        Lock2Return {
                            status: 0,
                            _pad0: 0,
                            cpu_visible_buffer_offset: phys,
                        }
                        .as_bytes()
                        .put(out)
                    }
                    None => Lock2Return {
                        status: st::INVALID_HANDLE as i32,
                        _pad0: 0,
                        cpu_visible_buffer_offset: 0,
                    }
                    .as_bytes()
                    .put(out),
                }
            }
            24 => put_status(
                out,
                if self.valid(u32_at(b, 28), Kind::Allocation) {
                    0
                } else {
                    st::INVALID_HANDLE
                },
            ),
            25 => {
                let ctx = u32_at(b, 24);
                let n = u32_at(b, 28) as usize;
                let mut when = now;
                for i in 0..n {
                    let v = u64_at(b, 40 + 8 * i);
                    let h = u32_at(b, 40 + 8 * n + 4 * i);
                    if self.fence_value(h).is_some_and(|cur| cur < v) {
                        // The GPU queue stalls until the fence is reached; modelled as
                        // the latest pending completion for it.
                        if let Some(t) = self
                            .pending
                            .iter()
                            .filter(|p| p.1 == h && p.2 >= v)
                            .map(|p| p.0)
                            .min()
                        {
                            when = when.max(t);
                        }
                    }
                }
                let b_ = self.busy.get_or_insert_with(ctx, || 0);
                *b_ = (*b_).max(when);
                put_status(out, 0)
            }
            26 => {
                // Handles, contexts, values and the header's fields are read in place (no
                // vectors, no copy of the struct per signal).
                type C = SignalSyncObjectCmd;
                let n = u32_z(b, std::mem::offset_of!(C, object_count)) as usize;
                let nc = u32_z(b, std::mem::offset_of!(C, context_count)) as usize;
                let fence_value = u64_z(b, std::mem::offset_of!(C, fence_value));
                let obj = |i: usize| u32_at(b, 56 + 4 * i);
                let ctx_off = 56 + 4 * n;
                let fences_off = ctx_off + 4 * nc;
                for i in 0..n {
                    // A loop, not `any`: the closure's fold was a call per signal.
                    if !self.objs.contains_key(obj(i)) {
                        return put_status(out, st::INVALID_HANDLE);
                    }
                }
                // Whether a monitored fence is among the objects only matters when the
                // message does not carry all the fence values (looked up only then).
                let carried = b.len() >= fences_off + 8 * n;
                let monitored =
                    !carried && nc != 1 && (0..n).any(|i| self.fences.contains_key(obj(i)));
                let val = |i: usize| {
                    let v = if monitored || carried {
                        u64_at(b, fences_off + 8 * i)
                    } else {
                        fence_value
                    };
                    if v == 0 { fence_value } else { v }
                };
                if nc == 0 {
                    for i in 0..n {
                        self.write_fence(obj(i), val(i));
                    }
                } else {
                    let mut done = now;
                    for j in 0..nc {
                        let ctx = u32_at(b, ctx_off + 4 * j);
                        done = done.max(
                            self.gpu_done_at(ctx, now)
                                .saturating_sub(self.latency.gpu_work())
                                + 1000,
                        );
                    }
                    for i in 0..n {
                        self.add_pending((done, obj(i), val(i)));
                    }
                }
                put_status(out, 0)
            }
            28 => {
                // The reply is the request's arguments (execution state filled in), then
                // the status: built in the reply buffer, not in two structs first.
                const ARGS: usize = size_of::<VgpuToHostHdr>();
                const N: usize = size_of::<GetDeviceState>();
                const STATUS: usize = std::mem::offset_of!(GetDeviceStateReturn, status);
                let args = b.get(ARGS..).unwrap_or(&[]);
                out.extend_from_slice(&args[..args.len().min(N)]);
                out.resize(size_of::<GetDeviceStateReturn>(), 0);
                let device = u32_z(b, ARGS + std::mem::offset_of!(GetDeviceState, device));
                let state_type = u32_z(b, ARGS + std::mem::offset_of!(GetDeviceState, state_type));
                if !self.valid(device, Kind::Device) {
                    out[STATUS..STATUS + 4].copy_from_slice(&st::INVALID_HANDLE.to_le_bytes());
                } else if state_type == 1 {
                    let exec: i32 = if self.removed { 2 } else { 1 };
                    let at = std::mem::offset_of!(GetDeviceState, execution_state);
                    out[at..at + 4].copy_from_slice(&exec.to_le_bytes());
                }
            }
            29 | 37 | 49 | 57 | 67 => put_status(out, 0),
            33 => put_status(
                out,
                if self.valid(u32_at(b, 24), Kind::Context) {
                    0
                } else {
                    st::INVALID_HANDLE
                },
            ),
            61 => {
                let ok = self.valid(u32_at(b, 24), Kind::Context);
                GetContextSchedulingPriorityReturn {
                    status: if ok { 0 } else { st::INVALID_HANDLE as i32 },
                    priority: 2,
                }
                .as_bytes()
                .put(out)
            }
            41 => {
                let c = QueryAllocationResidencyCmd::from_bytes(b);
                let n = if c.args.resource != 0 {
                    1
                } else {
                    c.args.allocation_count as usize
                };
                put_status(out, 0);
                for i in 0..n {
                    let h = if c.args.resource != 0 {
                        c.args.resource
                    } else {
                        u32_at(b, 56 + 4 * i)
                    };
                    let r = match self.objs.get(h) {
                        Some(o) if o.resident => 1u32,
                        Some(_) => 3,
                        None => {
                            out[..4].copy_from_slice(&st::INVALID_HANDLE.to_le_bytes());
                            0
                        }
                    };
                    out.extend_from_slice(&r.to_le_bytes());
                }
            }
            48 => {
                let mut r = QueryStatisticsReturn::zeroed();
                let count = self.objs.values().filter(|o| o.process == process).count() as u64;
                r.result[..8].copy_from_slice(&count.to_le_bytes());
                r.result[8..16]
                    .copy_from_slice(&self.adapters[adapter].dedicated_bytes.to_le_bytes());
                r.as_bytes().put(out)
            }
            56 => {
                let c = UpdateAllocPropertyCmd::from_bytes(b);
                let ok = self.valid(c.args.allocation, Kind::Allocation);
                let fv = self.paging_op(c.args.paging_queue, now);
                UpdateAllocPropertyReturn {
                    paging_fence_value: fv,
                    status: if ok { st::PENDING } else { st::INVALID_HANDLE } as i32,
                    _pad0: 0,
                }
                .as_bytes()
                .put(out)
            }
            58 => {
                let n = u32_at(b, 32) as usize;
                let pq = u32_at(b, 28);
                let fv = self.paging_op(pq, now);
                out.extend_from_slice(&fv.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                for _ in 0..n.max(1) {
                    out.extend_from_slice(&0u32.to_le_bytes()); // NOT_DISCARDED
                }
            }
            59 => {
                let c = SetAllocationPriorityCmd::from_bytes(b);
                let n = if c.resource != 0 {
                    1
                } else {
                    c.allocation_count as usize
                };
                let prio_off = 40 + if c.resource != 0 { 0 } else { 4 * n };
                for i in 0..n {
                    let h = if c.resource != 0 {
                        c.resource
                    } else {
                        u32_at(b, 40 + 4 * i)
                    };
                    let p = u32_at(b, prio_off + 4 * i);
                    if let Some(o) = self.objs.get_mut(h) {
                        o.priority = p;
                    }
                }
                put_status(out, 0)
            }
            60 => {
                let c = GetAllocationPriorityCmd::from_bytes(b);
                let n = if c.resource != 0 {
                    1
                } else {
                    c.allocation_count as usize
                };
                put_status(out, 0);
                for i in 0..n {
                    let h = if c.resource != 0 {
                        c.resource
                    } else {
                        u32_at(b, 40 + 4 * i)
                    };
                    out.extend_from_slice(
                        &self
                            .objs
                            .get(h)
                            .map(|o| o.priority)
                            .unwrap_or(0)
                            .to_le_bytes(),
                    );
                }
            }
            62 => {
                let mut r = QueryClockCalibrationReturn::zeroed();
                r.clock_data.gpu_frequency = 1_000_000_000;
                r.clock_data.gpu_clock_counter = now.wrapping_mul(1);
                r.clock_data.cpu_clock_counter = now;
                r.as_bytes().put(out)
            }
            68 => {
                let f = u32_at(b, 24);
                let mut r = IsFeatureEnabledReturn::zeroed();
                r.descriptor = [1, 1, 0];
                r.result = [1, if f == 0 { 0b1111 } else { 0b0010 }];
                r.as_bytes().put(out)
            }
            50 => {
                b.put(out);
                self.create_hwqueue_echo(out, process);
            }
            45 | 66 => put_status(out, 0),
            _ => put_status(out, st::NOT_SUPPORTED),
        }
    }

    fn hwqueue_fence(&self, q: u32) -> Option<u32> {
        self.paging_fence.get(&(q ^ 0x8000_0000)).copied()
    }

    fn paging_op(&mut self, pq: u32, now: u64) -> u64 {
        let Some(f) = self.paging_fence.get(&pq).copied() else {
            return 0;
        };
        let next = self.fence_value(f).unwrap_or(0).max(
            self.pending
                .iter()
                .filter(|p| p.1 == f)
                .map(|p| p.2)
                .max()
                .unwrap_or(0),
        ) + 1;
        let done = now + self.latency.gpu_work() / 4;
        self.add_pending((done, f, next));
        next
    }

    /// Takes a free range of `size` bytes at `base`, or else the first one at or above
    /// `min` (and the last allocation) ending at or below `max` (0: no limit), for
    /// `allocation` (`None`: a reservation). A range that would run past the top of the
    /// address space is never free: the ioctl's numbers come from the guest unchecked.
    fn va_alloc(
        &mut self,
        process: u32,
        base: u64,
        min: u64,
        max: u64,
        size: u64,
        allocation: Option<u32>,
    ) -> Option<u64> {
        let space = self.va.entry(process).or_default();
        let overlaps = |s: &BTreeMap<u64, (u64, Option<u32>)>, a: u64, end: u64| {
            s.range(..end)
                .next_back()
                .is_some_and(|(st, (sz, _))| st.saturating_add(*sz) > a)
        };
        if base != 0 {
            let end = base.checked_add(size)?;
            if overlaps(space, base, end) {
                return None;
            }
            space.insert(base, (size, allocation));
            return Some(base);
        }
        let mut a = self.next_va.max(min);
        loop {
            let end = a.checked_add(size)?;
            // Ranges only move up from here: past `max` now, past it for good.
            if max != 0 && end > max {
                return None;
            }
            if !overlaps(space, a, end) {
                space.insert(a, (size, allocation));
                self.next_va = end;
                return Some(a);
            }
            a = a.checked_add(0x10000)?;
        }
    }

    fn map_gpu_va(&mut self, b: &[u8], process: u32, now: u64, out: &mut Vec<u8>) {
        let c = MapGpuVaCmd::from_bytes(b);
        let a = c.args;
        let fail = |out: &mut Vec<u8>, s: u32| {
            MapGpuVaReturn {
                virtual_address: 0,
                paging_fence_value: 0,
                status: s as i32,
                _pad0: 0,
            }
            .as_bytes()
            .put(out)
        };
        if !self.valid(a.allocation, Kind::Allocation) {
            return fail(out, st::INVALID_HANDLE);
        }
        // Sizes and ends that run past the top of the address space are refused.
        let Some(size) = a.size_in_pages.checked_mul(4096) else {
            return fail(out, st::INVALID_PARAMETER);
        };
        let space = self.va.entry(process).or_default();
        let va = if a.base_address != 0 {
            // Must lie inside one reserved, unmapped range.
            let end = a.base_address.checked_add(size);
            match (space.range(..=a.base_address).next_back(), end) {
                (Some((st_, (sz, None))), Some(end)) if end <= st_.saturating_add(*sz) => {
                    a.base_address
                }
                _ => return fail(out, st::INVALID_PARAMETER),
            }
        } else {
            let Some(rounded) = size.checked_next_multiple_of(0x10000) else {
                return fail(out, st::INVALID_PARAMETER);
            };
            let (min, max) = (a.minimum_address, a.maximum_address);
            match self.va_alloc(process, 0, min, max, rounded, Some(a.allocation)) {
                Some(v) => v,
                None => return fail(out, st::NO_MEMORY),
            }
        };
        let fv = self.paging_op(a.paging_queue, now);
        MapGpuVaReturn {
            virtual_address: va,
            paging_fence_value: fv,
            status: st::PENDING as i32,
            _pad0: 0,
        }
        .as_bytes()
        .put(out)
    }

    fn create_allocation(&mut self, b: &[u8], process: u32, out: &mut Vec<u8>) {
        let c = CreateAllocationCmd::from_bytes(b);
        let n = c.alloc_count as usize;
        let infos: Vec<CreateAllocationAllocInfo> = (0..n)
            .map(|i| CreateAllocationAllocInfo::from_bytes(b.get(64 + 12 * i..).unwrap_or(&[])))
            .collect();
        let mut off = 64 + 12 * n + c.private_runtime_data_size as usize;
        let std_alloc = c.flags & (1 << 16) != 0;
        off += if std_alloc {
            24
        } else {
            c.priv_drv_data_size as usize
        };
        let mut r = CreateAllocationReturn::zeroed();
        r.flags = c.flags;
        let ok = self.valid(c.device, Kind::Device);
        if ok && c.flags & 1 != 0 {
            r.resource = self.add(Kind::Resource, process, 0);
        }
        out.extend_from_slice(&r.as_bytes()[..16]);
        let mut privs = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let pd = b
                .get(off..off + info.priv_drv_data_size as usize)
                .unwrap_or(&[])
                .pooled();
            off += info.priv_drv_data_size as usize;
            let size = 0x10000 * (1 + (u32_at(&pd, 0) as u64 % 64)) + 0x10000 * i as u64;
            let mut ar = AllocInfoReturn::zeroed();
            if ok {
                ar.allocation = self.add(Kind::Allocation, process, size);
            }
            ar.priv_drv_data_size = pd.len() as u32;
            ar.allocation_flags = 1 << 19;
            ar.allocation_size = size;
            out.extend_from_slice(ar.as_bytes());
            let mut pd = pd;
            for (j, x) in pd.iter_mut().enumerate() {
                *x = x.wrapping_add(j as u8);
            }
            privs.extend(pd);
        }
        out.extend(privs);
    }

    /// Registers a hw queue's progress fence (the driver tells the host which fence a
    /// queue advances; a real host knows it from CREATEHWQUEUE).
    fn register_hwqueue(&mut self, q: u32, f: u32) {
        self.paging_fence.insert(q ^ 0x8000_0000, f);
    }

    /// CREATEHWQUEUE (echo reply) is handled here because it needs a fence too.
    pub fn create_hwqueue_echo(&mut self, b: &mut [u8], process: u32) {
        let ctx = u32_at(b, 56);
        if !self.valid(ctx, Kind::Context) {
            b[24..28].copy_from_slice(&st::INVALID_HANDLE.to_le_bytes());
            return;
        }
        let q = self.add(Kind::HwQueue, process, 0);
        let (f, phys) = self.new_fence(process, 0);
        self.register_hwqueue(q, f);
        b[24..28].copy_from_slice(&0u32.to_le_bytes());
        b[28..32].copy_from_slice(&q.to_le_bytes());
        b[32..36].copy_from_slice(&f.to_le_bytes());
        b[40..48].copy_from_slice(&phys.to_le_bytes());
        b[48..56].copy_from_slice(&(0x0000_7f00_0000_0000 + (phys - IO_SPACE_BASE)).to_le_bytes());
    }
}

/// Offset of the status field in a typed reply, for fault injection.
fn status_offset(cmd: VmbusCmd) -> Option<usize> {
    if cmd.channel == VmbusChannel::Global {
        return match cmd.value {
            1000 | 1002 => None,
            1021 => Some(0),
            _ => Some(0),
        };
    }
    match cmd.value {
        14 => Some(4),
        11 | 17 => Some(16),
        56 | 58 => Some(8),
        28 => Some(56),
        23 | 62 | 48 | 68 | 61 | 41 | 60 | 2 => Some(0),
        1 | 5 | 7 | 16 | 19 | 20 | 22 | 24 | 25 | 26 | 29 | 33 | 37 | 42 | 45 | 49 | 51 | 52
        | 57 | 59 | 66 | 67 => Some(0),
        _ => None,
    }
}

fn apply_failure(cmd: VmbusCmd, reply: &mut Vec<u8>, s: u32) {
    if cmd.channel == VmbusChannel::Adapter && cmd.value == 50 {
        // CREATEHWQUEUE echo: status sits after the 24-byte header.
        if reply.len() >= 28 {
            reply[24..28].copy_from_slice(&s.to_le_bytes());
            reply[28..36].fill(0);
        }
        return;
    }
    if cmd.channel == VmbusChannel::Adapter && cmd.value == 6 {
        // CREATECONTEXTVIRTUAL echo: no status; a 0 context means failure.
        if reply.len() >= 28 {
            reply[24..28].fill(0);
        }
        return;
    }
    match status_offset(cmd) {
        Some(off) => {
            if reply.len() < off + 4 {
                reply.resize(off + 4, 0);
            }
            reply[off..off + 4].copy_from_slice(&s.to_le_bytes());
        }
        // No status in the reply: the host answers with zero handles.
        None => reply.fill(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Pod;

    /// The in-place reads give what `Pod::from_bytes` puts in the fields, for messages of
    /// every length (short ones zero-filled), as the arms that read in place rely on.
    #[test]
    fn in_place_reads_match_the_struct() {
        let full: Vec<u8> = (1..=64u8).collect();
        for len in 0..=full.len() {
            let b = &full[..len];
            let s = SignalSyncObjectCmd::from_bytes(b);
            type S = SignalSyncObjectCmd;
            assert_eq!(
                u32_z(b, std::mem::offset_of!(S, object_count)),
                s.object_count
            );
            assert_eq!(
                u32_z(b, std::mem::offset_of!(S, context_count)),
                s.context_count
            );
            assert_eq!(
                u64_z(b, std::mem::offset_of!(S, fence_value)),
                s.fence_value
            );
            let w = WaitSyncObjectFromCpuCmd::from_bytes(b);
            type W = WaitSyncObjectFromCpuCmd;
            assert_eq!(
                u32_z(b, std::mem::offset_of!(W, object_count)),
                w.object_count
            );
            assert_eq!(
                u64_z(b, std::mem::offset_of!(W, guest_event_pointer)),
                w.guest_event_pointer
            );
        }
    }

    fn host() -> FakeHost {
        let c = crate::emulator::EmulatorConfig::default();
        FakeHost::new(HostConfig {
            faults: Vec::new(),
            ..HostConfig::of(&c)
        })
    }

    /// A WAITFORSYNCOBJECTFROMCPU body: `fences` with the values to reach, host event `ev`.
    fn wait_body(fences: &[(u32, u64)], ev: u64) -> Vec<u8> {
        let mut c = WaitSyncObjectFromCpuCmd::zeroed();
        c.object_count = fences.len() as u32;
        c.guest_event_pointer = ev;
        let mut b = c.as_bytes().to_vec();
        for (h, _) in fences {
            b.extend_from_slice(&h.to_le_bytes());
        }
        for (_, v) in fences {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Host events signalled so far (SIGNALGUESTEVENT packets taken off `inbound`).
    fn signalled(inbound: &mut VecDeque<Vec<u8>>) -> Vec<u64> {
        inbound.drain(..).map(|p| u64_at(&p, 24)).collect()
    }

    /// Pending GPU completions apply in due order and only once due; the next completion
    /// time follows what is left (the cached earliest due time is kept exact).
    #[test]
    fn completions_apply_when_due_and_next_completion_follows() {
        let mut h = host();
        let mut inbound = VecDeque::new();
        let (f, _) = h.new_fence(1, 0);
        assert_eq!(h.next_completion(), None);
        h.add_pending((2_000, f, 2));
        h.add_pending((1_000, f, 1));
        h.add_pending((3_000, f, 3));
        assert_eq!(h.next_completion(), Some(1_000));
        h.advance(999, &mut inbound);
        assert_eq!(h.fence_value(f), Some(0));
        h.advance(1_000, &mut inbound);
        assert_eq!(h.fence_value(f), Some(1));
        assert_eq!(h.next_completion(), Some(2_000));
        h.advance(2_500, &mut inbound);
        assert_eq!(h.fence_value(f), Some(2));
        assert_eq!(h.next_completion(), Some(3_000));
        h.advance(10_000, &mut inbound);
        assert_eq!(h.fence_value(f), Some(3));
        assert_eq!(h.next_completion(), None);
        h.advance(20_000, &mut inbound);
        assert_eq!(h.fence_value(f), Some(3));
    }

    /// CPU waiters (on a few fences, held inline, and on more, held in a vector) are
    /// signalled exactly when all their fences reach their values, whichever way the
    /// fences move: a direct CPU signal or a GPU completion coming due.
    #[test]
    fn cpu_waiters_are_signalled_when_all_their_fences_are_reached() {
        let mut h = host();
        let mut inbound = VecDeque::new();
        let f: Vec<u32> = (0..6).map(|_| h.new_fence(1, 0).0).collect();
        let adapter = VmbusCmd {
            channel: VmbusChannel::Adapter,
            value: 22,
        };
        let wait = |h: &mut FakeHost, objs: &[(u32, u64)], ev: u64, inb: &mut _| {
            let mut r = Vec::new();
            h.dispatch(adapter, &wait_body(objs, ev), 1, 0, 0, &mut r);
            assert_eq!(u32_at(&r, 0), st::SUCCESS);
            h.check_waiters(inb);
        };
        wait(&mut h, &[(f[0], 1), (f[1], 1)], 0xA, &mut inbound);
        let six: Vec<(u32, u64)> = f.iter().map(|h| (*h, 1)).collect();
        wait(&mut h, &six, 0xB, &mut inbound);
        assert_eq!(signalled(&mut inbound), Vec::<u64>::new());
        // Already reached when registered: signalled at once.
        wait(&mut h, &[(f[0], 0)], 0xC, &mut inbound);
        assert_eq!(signalled(&mut inbound), vec![0xC]);
        h.write_fence(f[0], 1);
        h.check_waiters(&mut inbound);
        assert_eq!(signalled(&mut inbound), Vec::<u64>::new());
        h.write_fence(f[1], 1);
        h.check_waiters(&mut inbound);
        assert_eq!(signalled(&mut inbound), vec![0xA]);
        for &x in &f[2..5] {
            h.write_fence(x, 1);
        }
        h.check_waiters(&mut inbound);
        assert_eq!(signalled(&mut inbound), Vec::<u64>::new());
        h.add_pending((5_000, f[5], 1));
        h.advance(4_999, &mut inbound);
        assert_eq!(signalled(&mut inbound), Vec::<u64>::new());
        h.advance(5_000, &mut inbound);
        assert_eq!(signalled(&mut inbound), vec![0xB]);
        assert!(!h.has_waiters());
    }

    /// SUBMITCOMMAND and GETDEVICESTATE read their fields in place; the replies and the
    /// contexts' GPU busy times are those the zero-filled command structs give, for full,
    /// short (cut mid-field) and bad-handle messages.
    #[test]
    fn in_place_reads_answer_like_the_command_structs() {
        let mut h = host();
        let device = h.add(Kind::Device, 1, 0);
        let ctx = h.add(Kind::Context, 1, 0);
        let other = h.add(Kind::Context, 1, 0);
        let submit = VmbusCmd {
            channel: VmbusChannel::Adapter,
            value: 20,
        };
        let state = VmbusCmd {
            channel: VmbusChannel::Adapter,
            value: 28,
        };
        let mut sc = SubmitCommandCmd::zeroed();
        sc.args.broadcast_context_count = 2;
        sc.args.broadcast_context[0] = ctx;
        sc.args.broadcast_context[1] = other;
        let full = sc.as_bytes().to_vec();
        let count_at = 24 + std::mem::offset_of!(SubmitCommand, broadcast_context_count);
        let ctx_at = 24 + std::mem::offset_of!(SubmitCommand, broadcast_context);
        let mut bad = sc;
        bad.args.broadcast_context[0] = device;
        let mut many = sc;
        many.args.broadcast_context_count = 1000;
        let cases: Vec<Vec<u8>> = vec![
            full.clone(),
            full[..ctx_at + 6].to_vec(),
            full[..ctx_at + 2].to_vec(),
            full[..count_at + 1].to_vec(),
            full[..10].to_vec(),
            bad.as_bytes().to_vec(),
            many.as_bytes().to_vec(),
        ];
        for (i, m) in cases.iter().enumerate() {
            let now = 1_000_000 * (i as u64 + 1);
            let c = SubmitCommandCmd::from_bytes(m);
            let n = c.args.broadcast_context_count.min(64) as usize;
            let mut want_busy = h.busy.clone();
            for &x in &c.args.broadcast_context[..n] {
                let b = want_busy.get_or_insert_with(x, || 0);
                *b = (*b).max(now) + h.latency.gpu_work();
            }
            let ok = n > 0 && h.valid(c.args.broadcast_context[0], Kind::Context);
            let want = if ok { 0 } else { st::INVALID_HANDLE };
            let mut r = Vec::new();
            h.dispatch(submit, m, 1, 0, now, &mut r);
            assert_eq!(r, want.to_le_bytes(), "submit case {i}");
            let sorted = |m: &HandleMap<u64>| {
                let mut v: Vec<(u32, u64)> = m.iter().map(|(k, v)| (k, *v)).collect();
                v.sort_unstable();
                v
            };
            assert_eq!(sorted(&h.busy), sorted(&want_busy), "submit case {i}");
        }
        for removed in [false, true] {
            h.removed = removed;
            for (dev, ty) in [(device, 1), (device, 0), (device, 2), (ctx, 1), (0, 1)] {
                let mut gc = GetDeviceStateCmd::zeroed();
                gc.args.device = dev;
                gc.args.state_type = ty;
                gc.args.execution_state = 7;
                gc.args.state_rest = [0xab; 44];
                let m = gc.as_bytes();
                for cut in [m.len(), 24 + 30, 24 + 6, 24 + 2, 20] {
                    let m = &m[..cut];
                    let c = GetDeviceStateCmd::from_bytes(m);
                    let mut want = GetDeviceStateReturn::zeroed();
                    want.args = c.args;
                    if !h.valid(c.args.device, Kind::Device) {
                        want.status = st::INVALID_HANDLE as i32;
                    } else if c.args.state_type == 1 {
                        want.args.execution_state = if removed { 2 } else { 1 };
                    }
                    let mut r = Vec::new();
                    h.dispatch(state, m, 1, 0, 0, &mut r);
                    assert_eq!(r, want.as_bytes(), "state {dev:#x} {ty} cut {cut}");
                }
            }
        }
    }

    /// A CPU signal of monitored fences takes the values the message carries, and the
    /// command's fence value for those it does not (nor when there are none).
    #[test]
    fn cpu_signal_takes_carried_fence_values() {
        let mut h = host();
        let (f0, _) = h.new_fence(1, 0);
        let (f1, _) = h.new_fence(1, 0);
        let signal = VmbusCmd {
            channel: VmbusChannel::Adapter,
            value: 26,
        };
        let mut c = SignalSyncObjectCmd::zeroed();
        c.object_count = 2;
        c.fence_value = 5;
        let mut m = c.as_bytes().to_vec();
        m.extend_from_slice(&f0.to_le_bytes());
        m.extend_from_slice(&f1.to_le_bytes());
        // Only the first value travels.
        m.extend_from_slice(&9u64.to_le_bytes());
        let mut r = Vec::new();
        h.dispatch(signal, &m, 1, 0, 0, &mut r);
        assert_eq!(r, st::SUCCESS.to_le_bytes());
        assert_eq!((h.fence_value(f0), h.fence_value(f1)), (Some(9), Some(5)));
        // Both travel.
        m.extend_from_slice(&12u64.to_le_bytes());
        h.dispatch(signal, &m, 1, 0, 0, &mut Vec::new());
        assert_eq!((h.fence_value(f0), h.fence_value(f1)), (Some(9), Some(12)));
        // None travels: the command's value for both.
        c.fence_value = 20;
        let mut m = c.as_bytes().to_vec();
        m.extend_from_slice(&f0.to_le_bytes());
        m.extend_from_slice(&f1.to_le_bytes());
        h.dispatch(signal, &m, 1, 0, 0, &mut Vec::new());
        assert_eq!((h.fence_value(f0), h.fence_value(f1)), (Some(20), Some(20)));
    }

    /// A process's CPU waits that can no longer be signalled go when the process is
    /// destroyed; other processes' waits stay.
    #[test]
    fn destroying_a_process_drops_its_cpu_waits_only() {
        let mut h = host();
        let clock = Clock::new(true);
        h.fences.insert(7, (0, 0));
        for process in [1u32, 2] {
            let mut c = WaitSyncObjectFromCpuCmd::zeroed();
            c.object_count = 1;
            c.guest_event_pointer = 0x1000 + process as u64;
            let mut b = c.as_bytes().to_vec();
            b.extend_from_slice(&7u32.to_le_bytes());
            b.extend_from_slice(&5u64.to_le_bytes()); // a value the fence never reaches
            let adapter = VmbusCmd {
                channel: VmbusChannel::Adapter,
                value: 22,
            };
            h.dispatch(adapter, &b, process, 0, clock.now(), &mut Vec::new());
        }
        assert_eq!(h.waiters.len(), 2);
        let destroy = VmbusCmd {
            channel: VmbusChannel::Global,
            value: 1001,
        };
        h.dispatch(destroy, &[0u8; 64], 1, 0, clock.now(), &mut Vec::new());
        let left: Vec<u64> = h.waiters.iter().map(|w| w.process_id).collect();
        assert_eq!(left, vec![2]);
    }
}
