//! The driver's ioctl path in user space (reference §1, §2, §3): dispatch, validation,
//! per-process object model, VMBus message construction, reply handling and teardown.

use crate::inthash::{IntMap, LastHitMap};
use std::ffi::c_void;
use std::sync::Arc;

use super::bus::{
    Bus, CallCtx, DxgVmbusChannel, dxgvmb_send_async_msg, dxgvmb_send_sync_msg,
    dxgvmbuschannel_receive,
};
use super::handles::HandleMap;
use super::host::AdapterSpec;
use super::pool::{Buf, Reply};
use super::sink::{BufEvent, BufRole, Event, IoctlEvent, SignalEvent, VmbusDirection, VmbusEvent};
use crate::backend::{MemError, UserMemory, VouchedMemory};
use crate::dxg::table::IOCTLS;
use crate::dxg::types::*;
use crate::dxg::vmbus::*;
use crate::layout::Pod;
use crate::ntstatus::ntstatus_to_errno;
use crate::schema::{IoctlClass, IoctlDesc, walk_pointers};

/// Opaque "kernel address" of `dxgglobal->device_state_counter` sent in CREATEDEVICE and
/// echoed by the host in SETGUESTDATA.
pub const DEVICE_STATE_COUNTER_ADDR: u64 = 0xffff_ffff_c0de_1000;

type R = Result<i64, i64>;

const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    Device,
    Context,
    Resource,
    Allocation,
    PagingQueue,
    SyncObject,
    MonitoredFence,
    HwQueue,
}

#[derive(Debug, Clone)]
struct Obj {
    kind: K,
    adapter: usize,
    device: u32,
    lock: u32,
    lock_va: u64,
    exec_state: i32,
    exec_counter: u64,
    children: Vec<u32>,
}

/// What the ioctl handlers read of an [`Obj`] (a copy without its children: checking a
/// handle cloned the whole object, vector included, on every call).
#[derive(Debug, Clone, Copy)]
struct ObjView {
    adapter: usize,
    device: u32,
    lock: u32,
    lock_va: u64,
    exec_state: i32,
    exec_counter: u64,
}

#[derive(Debug, Default)]
struct Proc {
    tgid: u32,
    host: u32,
    opens: u32,
    next_local: u32,
    adapters: IntMap<u32, usize>,
    objs: HandleMap<Obj>,
}

/// The processes that have the device open, by tgid. The slot looked up last is tried
/// first (a call's handlers look their caller up several times, each a hash lookup
/// before), checked by its tgid, so a slot freed or reused since is never mistaken for
/// another process. A process that goes leaves its cleared maps for the next one (a
/// process opening and closing the device in a loop no longer grows them from empty).
#[derive(Debug, Default)]
struct Procs {
    slots: Vec<Option<Proc>>,
    index: IntMap<u32, usize>,
    free: Vec<usize>,
    spare: Vec<Proc>,
    last: std::cell::Cell<usize>,
}

impl Procs {
    #[inline(always)]
    fn slot(&self, tgid: u32) -> Option<usize> {
        let i = self.last.get();
        if let Some(Some(p)) = self.slots.get(i)
            && p.tgid == tgid
        {
            return Some(i);
        }
        let i = *self.index.get(&tgid)?;
        self.last.set(i);
        Some(i)
    }
    #[inline(always)]
    fn get(&self, tgid: u32) -> Option<&Proc> {
        if let Some(Some(p)) = self.slots.get(self.last.get())
            && p.tgid == tgid
        {
            return Some(p);
        }
        let i = *self.index.get(&tgid)?;
        self.last.set(i);
        self.slots[i].as_ref()
    }
    #[inline(always)]
    fn get_mut(&mut self, tgid: u32) -> Option<&mut Proc> {
        let i = self.slot(tgid)?;
        self.slots.get_mut(i)?.as_mut()
    }
    fn contains(&self, tgid: u32) -> bool {
        self.slot(tgid).is_some()
    }
    /// A new process (the caller checked `tgid` has none).
    fn insert(&mut self, tgid: u32, host: u32) {
        let mut p = self.spare.pop().unwrap_or_default();
        p.tgid = tgid;
        p.host = host;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[i] = Some(p);
        self.index.insert(tgid, i);
    }
    fn remove(&mut self, tgid: u32) {
        let Some(i) = self.index.remove(&tgid) else {
            return;
        };
        if let Some(mut p) = self.slots[i].take() {
            p.adapters.clear();
            p.objs.clear();
            p.opens = 0;
            p.next_local = 0;
            self.spare.push(p);
        }
        self.free.push(i);
    }
    /// Live processes, in no particular order.
    fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.slots.iter().flatten()
    }
}

impl std::ops::Index<u32> for Procs {
    type Output = Proc;
    fn index(&self, tgid: u32) -> &Proc {
        self.get(tgid).expect("live process")
    }
}

/// Host events (the ids sent as `guest_event_pointer`) → (pid, signalled). The CPU wait
/// the driver is blocked in (at most one: it holds the driver until signalled) is kept
/// apart from the map, so registering, checking and dropping it costs no hashing.
#[derive(Debug, Default)]
struct HostEvents {
    blocked: Option<(u64, (u32, bool))>,
    map: IntMap<u64, (u32, bool)>,
}

impl HostEvents {
    /// Registers `id`, about to be waited on by the driver.
    fn block(&mut self, id: u64, pid: u32) {
        self.park();
        self.blocked = Some((id, (pid, false)));
    }
    /// The blocked wait's event stays registered without a waiter (an async wait, a
    /// failed send): it goes to the map.
    fn park(&mut self) {
        if let Some((id, v)) = self.blocked.take() {
            self.map.insert(id, v);
        }
    }
    /// A signal for `id`: the pid that registered it, if it was registered and not yet
    /// signalled. The blocked wait is marked (the wait loop sees it and drops it); a
    /// parked one is dropped here, as nothing else would (the map kept every async or
    /// failed wait forever). A second signal finds none either way.
    fn signal(&mut self, id: u64) -> Option<u32> {
        match &mut self.blocked {
            Some((b, (pid, signalled))) if *b == id => (!*signalled).then(|| {
                *signalled = true;
                *pid
            }),
            // Entries in the map are never marked signalled: they go at their signal.
            _ => self.map.remove(&id).map(|(pid, _)| pid),
        }
    }
    /// Registered events (the blocked one included), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len() + usize::from(self.blocked.is_some())
    }
    fn signalled(&self, id: u64) -> bool {
        match &self.blocked {
            Some((b, v)) if *b == id => v.1,
            _ => self.map.get(&id).is_some_and(|v| v.1),
        }
    }
    fn remove(&mut self, id: u64) {
        match self.blocked {
            Some((b, _)) if b == id => self.blocked = None,
            _ => {
                self.map.remove(&id);
            }
        }
    }
}

pub(crate) struct GAdapter {
    pub(crate) spec: AdapterSpec,
    ch: Box<DxgVmbusChannel>,
    host_handle: u32,
}

#[derive(Clone, Copy)]
enum Target {
    Global,
    Adapter(usize),
}

/// The emulated driver state (one per emulator).
pub struct Driver {
    pub(crate) bus: Arc<Bus>,
    global: Box<DxgVmbusChannel>,
    pub(crate) adapters: Vec<GAdapter>,
    procs: Procs,
    files: LastHitMap<u64, u32>,
    next_file: u64,
    host_event_id: u64,
    events: HostEvents,
    device_state_counter: u64,
    ioctls: u64,
    version: u32,
    async_msg: bool,
    removed_after: Option<u64>,
    hang_bound_ns: u64,
    pub(crate) comm_override: Option<String>,
    /// `/proc/<tgid>/comm` as read at the first CREATEPROCESS of each tgid: a process
    /// that opens and closes the device in a loop otherwise pays an open + read of procfs
    /// per open (it dominated in-process replays of short scenarios).
    comm_cache: IntMap<u32, String>,
    pub(crate) request_patch: Option<RequestPatch>,
    /// The message being sent (reused from send to send; see [`Driver::send_into`]).
    msg: Vec<u8>,
    /// The host may have notes after any send ([`Host::may_note`], asked once at boot):
    /// when not, they are taken only after a device removal.
    ///
    /// [`Host::may_note`]: super::host::Host::may_note
    host_notes: bool,
}

/// A message buffer larger than this is not kept for the next send.
const MAX_KEPT_MSG: usize = 64 << 10;

/// Alters a guest→host message after the driver logic built it (the whole packet, ext
/// header included), before it is sent. For tests that check a driver-in-the-loop replay
/// notices a change in the driver's request building.
pub type RequestPatch = Box<dyn FnMut(crate::schema::VmbusCmd, &mut Vec<u8>) + Send>;

/// Request numbers of the dxg ioctls the driver logic handles, from the table at compile
/// time (a name missing from the table fails the build).
mod nr {
    use crate::dxg::table::IOCTLS;

    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    const fn of(name: &str) -> u32 {
        let mut i = 0;
        while i < IOCTLS.len() {
            if same(IOCTLS[i].name, name) {
                return IOCTLS[i].nr;
            }
            i += 1;
        }
        panic!("not in the dxg table")
    }

    macro_rules! nrs {
        ($($n:ident),* $(,)?) => {
            $(pub(super) const $n: u32 = of(stringify!($n));)*
        };
    }

    nrs!(
        LX_DXOPENADAPTERFROMLUID,
        LX_DXENUMADAPTERS2,
        LX_DXENUMADAPTERS3,
        LX_DXCLOSEADAPTER,
        LX_DXQUERYADAPTERINFO,
        LX_ISFEATUREENABLED,
        LX_DXCREATEDEVICE,
        LX_DXDESTROYDEVICE,
        LX_DXCREATECONTEXTVIRTUAL,
        LX_DXDESTROYCONTEXT,
        LX_DXCREATEHWQUEUE,
        LX_DXDESTROYHWQUEUE,
        LX_DXCREATEPAGINGQUEUE,
        LX_DXDESTROYPAGINGQUEUE,
        LX_DXCREATESYNCHRONIZATIONOBJECT,
        LX_DXDESTROYSYNCHRONIZATIONOBJECT,
        LX_DXCREATEALLOCATION,
        LX_DXDESTROYALLOCATION2,
        LX_DXMAKERESIDENT,
        LX_DXEVICT,
        LX_DXRESERVEGPUVIRTUALADDRESS,
        LX_DXMAPGPUVIRTUALADDRESS,
        LX_DXFREEGPUVIRTUALADDRESS,
        LX_DXUPDATEGPUVIRTUALADDRESS,
        LX_DXLOCK2,
        LX_DXUNLOCK2,
        LX_DXESCAPE,
        LX_DXGETDEVICESTATE,
        LX_DXMARKDEVICEASERROR,
        LX_DXQUERYVIDEOMEMORYINFO,
        LX_DXCHANGEVIDEOMEMORYRESERVATION,
        LX_DXQUERYCLOCKCALIBRATION,
        LX_DXQUERYSTATISTICS,
        LX_DXFLUSHHEAPTRANSITIONS,
        LX_DXINVALIDATECACHE,
        LX_DXGETCONTEXTINPROCESSSCHEDULINGPRIORITY,
        LX_DXGETCONTEXTSCHEDULINGPRIORITY,
        LX_DXSETCONTEXTINPROCESSSCHEDULINGPRIORITY,
        LX_DXSETCONTEXTSCHEDULINGPRIORITY,
        LX_DXSETALLOCATIONPRIORITY,
        LX_DXGETALLOCATIONPRIORITY,
        LX_DXOFFERALLOCATIONS,
        LX_DXRECLAIMALLOCATIONS2,
        LX_DXQUERYALLOCATIONRESIDENCY,
        LX_DXUPDATEALLOCPROPERTY,
        LX_DXSUBMITCOMMAND,
        LX_DXSUBMITCOMMANDTOHWQUEUE,
        LX_DXSIGNALSYNCHRONIZATIONOBJECT,
        LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU,
        LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU,
        LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2,
        LX_DXSUBMITSIGNALSYNCOBJECTSTOHWQUEUE,
        LX_DXWAITFORSYNCHRONIZATIONOBJECT,
        LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU,
        LX_DXSUBMITWAITFORSYNCOBJECTSTOHWQUEUE,
        LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU,
        LX_DXENUMPROCESSES,
        LX_DXSHAREOBJECTWITHHOST,
    );
}

/// The first table entry with request number `nr` (a lookup table instead of a scan of
/// the table per ioctl).
fn entry_by_nr(nr: u32) -> Option<&'static crate::schema::IoctlDesc> {
    static INDEX: [u16; 256] = {
        let mut idx = [u16::MAX; 256];
        let mut i = 0;
        while i < IOCTLS.len() {
            let nr = IOCTLS[i].nr as usize;
            if nr < 256 && idx[nr] == u16::MAX {
                idx[nr] = i as u16;
            }
            i += 1;
        }
        idx
    };
    let i = *INDEX.get(nr as usize)?;
    (i != u16::MAX).then(|| &IOCTLS[i as usize])
}

/// The calling process's memory as the handlers use it (`copy_from_user` /
/// `copy_to_user`). Accesses inside a range the caller vouched for are plain copies made
/// here, without a virtual call or a staging buffer; everything else goes to `other`,
/// where a bad address is EFAULT, never a crash.
pub(crate) struct Mem<'a> {
    vouched: VouchedMemory<'a>,
    other: &'a mut dyn UserMemory,
}

impl<'a> Mem<'a> {
    /// Every access through `other`.
    pub(crate) fn new(other: &'a mut dyn UserMemory) -> Mem<'a> {
        Mem {
            vouched: VouchedMemory::none(),
            other,
        }
    }
    /// Accesses inside `vouched` are plain copies, the rest go through `other`.
    pub(crate) fn with_vouched(
        vouched: VouchedMemory<'a>,
        other: &'a mut dyn UserMemory,
    ) -> Mem<'a> {
        Mem { vouched, other }
    }
}

impl UserMemory for Mem<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        match self.vouched.at(addr, buf.len()) {
            // SAFETY: inside a vouched range; `buf` is our own, so no overlap.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) },
            None => self.other.read(addr, buf)?,
        }
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        match self.vouched.at(addr, data.len()) {
            // SAFETY: inside a vouched range; no reference into user memory is alive
            // (they borrow the `Mem`, which this call holds mutably).
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) },
            None => self.other.write(addr, data)?,
        }
        Ok(())
    }
}

#[inline(always)]
fn rd<T: Pod>(mem: &Mem, addr: u64) -> Result<T, i64> {
    if let Some(p) = mem.vouched.at(addr, size_of::<T>()) {
        // SAFETY: inside a vouched range; any bytes are a `T` (Pod).
        return Ok(unsafe { p.cast::<T>().read_unaligned() });
    }
    rd_other(mem, addr)
}
#[inline(never)]
fn rd_other<T: Pod>(mem: &Mem, addr: u64) -> Result<T, i64> {
    let mut v = T::zeroed();
    mem.other.read(addr, v.as_bytes_mut()).map_err(|_| EFAULT)?;
    Ok(v)
}
fn rdv(mem: &Mem, addr: u64, len: usize) -> Result<Buf, i64> {
    if len == 0 {
        return Ok(Buf::default());
    }
    let mut v = Buf::zeroed(len);
    mem.read(addr, &mut v).map_err(|_| EFAULT)?;
    Ok(v)
}
/// User bytes: borrowed in place when they lie in vouched memory (the borrow holds the
/// [`Mem`], so nothing writes user memory meanwhile), else up to [`UBytes::INLINE`] of
/// them (the handle and fence-value arrays of the common few-object calls) on the stack
/// and longer reads in a pooled buffer (no pool round trip for the small ones).
enum UBytes<'m> {
    Borrowed(&'m [u8]),
    Inline([u8; UBytes::INLINE], usize),
    Pooled(Buf),
}

impl UBytes<'_> {
    const INLINE: usize = 64;
}

impl std::ops::Deref for UBytes<'_> {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        match self {
            UBytes::Borrowed(b) => b,
            UBytes::Inline(a, n) => &a[..*n],
            UBytes::Pooled(b) => b,
        }
    }
}

/// `len` user bytes at `addr` as a [`UBytes`].
#[inline(always)]
fn rds<'m>(mem: &'m Mem, addr: u64, len: usize) -> Result<UBytes<'m>, i64> {
    if len == 0 {
        return Ok(UBytes::Borrowed(&[]));
    }
    if let Some(p) = mem.vouched.at(addr, len) {
        // SAFETY: inside a vouched range, which nothing writes while `mem` is borrowed.
        return Ok(UBytes::Borrowed(unsafe {
            std::slice::from_raw_parts(p, len)
        }));
    }
    rds_other(mem, addr, len)
}
#[inline(never)]
fn rds_other<'m>(mem: &'m Mem, addr: u64, len: usize) -> Result<UBytes<'m>, i64> {
    if len > UBytes::INLINE {
        return rdv(mem, addr, len).map(UBytes::Pooled);
    }
    let mut a = [0u8; UBytes::INLINE];
    mem.other.read(addr, &mut a[..len]).map_err(|_| EFAULT)?;
    Ok(UBytes::Inline(a, len))
}
/// The `n` handles of `hs` as little-endian bytes (a message's handle array).
fn le_bytes<'a>(hs: impl Iterator<Item = &'a u32>, n: usize) -> UBytes<'static> {
    let put = |b: &mut [u8]| {
        for (d, h) in b.chunks_exact_mut(4).zip(hs) {
            d.copy_from_slice(&h.to_le_bytes());
        }
    };
    if 4 * n <= UBytes::INLINE {
        let mut a = [0u8; UBytes::INLINE];
        put(&mut a[..4 * n]);
        UBytes::Inline(a, 4 * n)
    } else {
        let mut b = Buf::zeroed(4 * n);
        put(&mut b);
        UBytes::Pooled(b)
    }
}
/// `copy_to_user`: a plain copy inside vouched memory (inlined at the call), else
/// through the other memory.
#[inline(always)]
fn wr(mem: &mut Mem, addr: u64, data: &[u8]) -> Result<(), i64> {
    if let Some(p) = mem.vouched.at(addr, data.len()) {
        // SAFETY: inside a vouched range; no reference into user memory is alive (they
        // borrow the `Mem`, which this call holds mutably).
        unsafe { super::bus::copy_bytes(data.as_ptr(), p, data.len()) };
        return Ok(());
    }
    wr_other(mem, addr, data)
}
#[inline(never)]
fn wr_other(mem: &mut Mem, addr: u64, data: &[u8]) -> Result<(), i64> {
    mem.other.write(addr, data).map_err(|_| EFAULT)
}
/// Address of element `i` of `size` bytes in a user array at `base`: an array that runs
/// past the end of the address space is EFAULT, as in the kernel, never an overflow.
fn elem(base: u64, size: u64, i: usize) -> Result<u64, i64> {
    (i as u64)
        .checked_mul(size)
        .and_then(|o| base.checked_add(o))
        .ok_or(EFAULT)
}
/// The handles of a user handle array (little-endian `u32`s, as messages carry them).
fn handles(b: &[u8]) -> impl Iterator<Item = u32> + '_ {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
        .unwrap_or(0)
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8")))
        .unwrap_or(0)
}
fn st_ret(reply: &[u8]) -> i64 {
    if reply.len() < 4 {
        0
    } else {
        ntstatus_to_errno(u32_at(reply, 0)) as i64
    }
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        bus: Arc<Bus>,
        adapters: Vec<AdapterSpec>,
        version: u32,
        async_msg: bool,
        removed_after: Option<u64>,
        hang_bound_ns: u64,
    ) -> Driver {
        let ch = |luid: u64| Box::new(DxgVmbusChannel::new(Arc::as_ptr(&bus), luid));
        let global = ch(0);
        let adapters = adapters
            .into_iter()
            .map(|s| GAdapter {
                ch: ch(s.luid),
                spec: s,
                host_handle: 0,
            })
            .collect();
        let mut d = Driver {
            bus: bus.clone(),
            global,
            adapters,
            procs: Procs::default(),
            files: LastHitMap::default(),
            next_file: 1,
            host_event_id: 1,
            events: HostEvents::default(),
            device_state_counter: 0,
            ioctls: 0,
            version,
            async_msg: false,
            removed_after,
            hang_bound_ns,
            comm_override: None,
            comm_cache: IntMap::default(),
            request_patch: None,
            msg: Vec::new(),
            host_notes: true,
        };
        d.host_notes = d.bus.host.borrow_mut().may_note();
        d.bring_up(async_msg);
        d
    }

    /// Adapter start (§3.1): SETIOSPACEREGION, OPENADAPTER, GETINTERNALADAPTERINFO.
    fn bring_up(&mut self, _async_msg: bool) {
        for i in 0..self.adapters.len() {
            let mut io = SetIoSpaceRegionCmd::zeroed();
            io.start = super::host::IO_SPACE_BASE;
            io.length = super::host::IO_SPACE_SIZE;
            let _ = self.send(
                None,
                Target::Global,
                1010,
                &[&io.as_bytes()[24..]],
                4,
                false,
                true,
            );
            let mut oa = OpenAdapterCmd::zeroed();
            oa.vmbus_interface_version = self.version;
            oa.vmbus_last_compatible_interface_version = 16;
            if let Ok(r) = self.send(
                None,
                Target::Adapter(i),
                14,
                &[&oa.as_bytes()[24..]],
                16,
                false,
                true,
            ) {
                self.adapters[i].host_handle = u32_at(&r, 0);
            }
            let rs = if self.version >= 40 { 712 } else { 704 };
            if let Ok(r) = self.send(None, Target::Adapter(i), 36, &[], rs, false, true) {
                // The async flag is global: the last adapter's answer wins, as in dxgadapter.c.
                self.async_msg = u32_at(&r, 12) & (1 << 6) != 0;
            }
        }
    }

    /// Sets the caller stamped on events. Only [`Bus::ctx`] reads it, and only when
    /// events are recorded: otherwise the lock is not taken.
    fn set_ctx(&self, c: CallCtx) {
        if !self.bus.recording {
            return;
        }
        *self.bus.ctx.borrow_mut() = c;
    }

    /// Sends a message whose reply is `result_size` bytes (none when sent async). Inlined
    /// at each call site for the same reason as [`Driver::send_st`] (~12 instructions
    /// per replayed call out of line).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn send(
        &mut self,
        tgid: Option<u32>,
        target: Target,
        cmd: u32,
        body: &[&[u8]],
        result_size: usize,
        may_async: bool,
        adapter_level: bool,
    ) -> Result<Reply, i64> {
        let is_async = may_async && self.async_msg;
        let mut res = Reply::zeroed(if is_async { 0 } else { result_size });
        self.send_into(tgid, target, cmd, body, &mut res, may_async, adapter_level)?;
        Ok(res)
    }

    /// Builds the message (ext header, header, then `body`'s parts one after another) in
    /// the driver's reused message buffer and sends it; a sync reply fills `res` (its
    /// length is the result size). An async send leaves `res` alone.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn send_into(
        &mut self,
        tgid: Option<u32>,
        target: Target,
        cmd: u32,
        body: &[&[u8]],
        res: &mut [u8],
        may_async: bool,
        adapter_level: bool,
    ) -> Result<(), i64> {
        let process = if adapter_level {
            0
        } else {
            tgid.and_then(|t| self.procs.get(t))
                .map(|p| p.host)
                .unwrap_or(0)
        };
        let is_async = may_async && self.async_msg;
        // The driver's own buffer (every send runs under the driver lock, one at a time):
        // no pool round trip per message. Borrowed in place (a take and a put back cost
        // a send ~10 instructions).
        let msg = &mut self.msg;
        // The whole message is written in one go: headers as fixed-size stores, the
        // parts one after another, into room reserved once (not an append per piece).
        let ext = if self.version >= 40 {
            size_of::<ExtHeader>()
        } else {
            0
        };
        const HDR: usize = size_of::<VmToHostHdr>();
        const _: () = assert!(size_of::<VgpuToHostHdr>() == HDR);
        let total = ext + HDR + body.iter().map(|p| p.len()).sum::<usize>();
        msg.clear();
        msg.reserve(total);
        let hdr: [u8; HDR] = match target {
            Target::Global => *VmToHostHdr {
                command_id: 0,
                process,
                channel_type: 1,
                command_type: cmd,
                _pad0: 0,
            }
            .as_bytes()
            .first_chunk()
            .expect("header size"),
            Target::Adapter(_) => *VgpuToHostHdr {
                command_id: 0,
                process,
                channel_bits: if is_async { 1 << 8 } else { 0 },
                command_type: cmd,
                _pad0: 0,
            }
            .as_bytes()
            .first_chunk()
            .expect("header size"),
        };
        let dst = msg.as_mut_ptr();
        // SAFETY: `msg` has room for `total` bytes (reserved above), which are all written
        // below before the length is set; the sources are our own values and `body`'s
        // slices, none of which overlaps `msg`'s buffer.
        unsafe {
            if ext != 0 {
                let mut e = ExtHeader::zeroed();
                e.command_offset = 16;
                if let Target::Adapter(i) = target {
                    let l = self.adapters[i].spec.vgpu_luid;
                    e.vgpu_luid = [l as u32, (l >> 32) as u32];
                }
                std::ptr::write_unaligned(dst.cast::<ExtHeader>(), e);
            }
            std::ptr::write_unaligned(dst.add(ext).cast::<[u8; HDR]>(), hdr);
            let mut o = ext + HDR;
            for part in body {
                super::bus::copy_bytes(part.as_ptr(), dst.add(o), part.len());
                o += part.len();
            }
            debug_assert_eq!(o, total);
            msg.set_len(total);
        }
        if let Some(patch) = &mut self.request_patch {
            let channel = match target {
                Target::Global => crate::schema::VmbusChannel::Global,
                Target::Adapter(_) => crate::schema::VmbusChannel::Adapter,
            };
            patch(
                crate::schema::VmbusCmd {
                    channel,
                    value: cmd,
                },
                msg,
            );
        }
        // §3.2: with async messages enabled every message travels on the global channel.
        let ch: *const DxgVmbusChannel = match target {
            Target::Adapter(i) if !self.async_msg => &*self.adapters[i].ch,
            _ => &*self.global,
        };
        let r = if is_async {
            // SAFETY: channel and buffer are live for the call.
            unsafe {
                dxgvmb_send_async_msg(ch as *mut c_void, msg.as_ptr().cast(), msg.len() as u32)
            }
        } else {
            // SAFETY: channel, command and result buffers are live and sized as passed.
            unsafe {
                dxgvmb_send_sync_msg(
                    ch as *mut c_void,
                    msg.as_ptr().cast(),
                    msg.len() as u32,
                    res.as_mut_ptr().cast(),
                    res.len() as u32,
                )
            }
        };
        if msg.capacity() > MAX_KEPT_MSG {
            *msg = Vec::new();
        }
        self.after_send();
        if r < 0 { Err(r as i64) } else { Ok(()) }
    }

    /// Sends an adapter message whose reply is a status (the body's parts go one after
    /// another, not joined first); the status lands on the stack. Inlined at each call
    /// site: the command, the async flag and the number of parts are then constants, the
    /// message build loop is unrolled and the parts are not laid out as an array first
    /// (out of line it cost a replayed call ~45 instructions).
    #[inline(always)]
    fn send_st(&mut self, tgid: u32, a: usize, cmd: u32, body: &[&[u8]], may_async: bool) -> R {
        let mut st = [0u8; 4];
        let is_async = may_async && self.async_msg;
        self.send_into(
            Some(tgid),
            Target::Adapter(a),
            cmd,
            body,
            &mut st,
            may_async,
            false,
        )?;
        // An async send has no reply: status 0, as the empty reply gave before.
        Ok(if is_async { 0 } else { st_ret(&st) })
    }

    /// Host notes and host→guest packets (`dxgvmbuschannel_receive` on the global channel).
    ///
    /// The receive callback runs only when the host has queued packets, as the real one
    /// runs when the channel signals them (a call that finds none produced no event and
    /// nothing a probe reports: the probe's packet programs fire on packets only). Most
    /// sends queue none; the empty call cost ~45 instructions.
    ///
    /// The common case (a host that never notes, no packets) is two checks inlined at the
    /// call site, no call into the host; the work is out of line (its register saves cost
    /// every call ~15 instructions).
    #[inline]
    fn after_send(&mut self) {
        if self.host_notes || !self.bus.inbound.borrow_mut().is_empty() {
            self.after_send_work(self.host_notes);
        }
    }

    /// [`Driver::after_send`]'s work; `notes`: take the host's notes first.
    #[inline(never)]
    fn after_send_work(&mut self, notes: bool) {
        if notes {
            let notes = self.bus.host.borrow_mut().take_notes();
            for (k, t) in notes {
                self.bus.annotate(&k, t);
            }
        }
        // `received` is only filled by the receive below, which drains into it what it
        // finds; the loop below empties it again.
        if self.bus.inbound.borrow_mut().is_empty() {
            return;
        }
        let global: *const DxgVmbusChannel = &*self.global;
        // SAFETY: the global channel lives as long as the driver.
        unsafe { dxgvmbuschannel_receive(global as *mut c_void) };
        loop {
            let Some(p) = self.global.received.borrow_mut().pop_front() else {
                break;
            };
            if self.bus.recording {
                let c = self.bus.ctx();
                self.bus.emit(Event::Vmbus(VmbusEvent {
                    ts: self.bus.clock.now(),
                    dir: VmbusDirection::HostToGuest,
                    channel: None,
                    request_id: 0,
                    is_async: false,
                    status: None,
                    ioctl_id: c.ioctl_id,
                    pid: c.pid,
                    tid: c.tid,
                    bytes: p.clone(),
                }));
            }
            match u32_at(&p, 16) {
                0 | 3 if p.len() >= 48 => self.signal_host_event(u64_at(&p, 24)),
                2 if p.len() >= 48 => {
                    let bits = u32_at(&p, 40);
                    if (bits >> 1) & 0xf == 0
                        && u64_at(&p, 24) == DEVICE_STATE_COUNTER_ADDR
                        && u32_at(&p, 32) != 0
                    {
                        self.device_state_counter += 1;
                    }
                }
                _ => self.bus.annotate(
                    "unexpected-host-message",
                    format!("command_type {}", u32_at(&p, 16)),
                ),
            }
            super::pool::give(p);
        }
    }

    fn signal_host_event(&mut self, id: u64) {
        let ts = self.bus.clock.now();
        match self.events.signal(id) {
            Some(pid) => {
                if !self.bus.recording {
                    return; // nothing to report (no event built: its strings allocate)
                }
                self.bus.emit(Event::Signal(SignalEvent {
                    ts,
                    event_id: id,
                    pid,
                    source: "cpu_event".into(),
                    detail: "SIGNALGUESTEVENT completed a WAITFORSYNCOBJECTFROMCPU".into(),
                }));
            }
            _ => {
                self.bus.emit(Event::Signal(SignalEvent {
                    ts,
                    event_id: id,
                    pid: 0,
                    source: "unknown".into(),
                    detail: "no host event with this id (already signalled or never registered)"
                        .into(),
                }));
                self.bus.annotate(
                    "duplicate-signal",
                    format!("SIGNALGUESTEVENT for host event {id} found no waiter"),
                );
            }
        }
    }

    // ------------------------------------------------------------ open / close

    /// `dxgk_open`: joins or creates the per-tgid process (G:CREATEPROCESS on first open).
    pub fn open(&mut self, tgid: u32, tid: u32) -> Result<u64, i64> {
        self.set_ctx(CallCtx {
            pid: tgid,
            tid,
            ioctl_id: None,
        });
        if !self.procs.contains(tgid) {
            let mut c = CreateProcessCmd::zeroed();
            c.process = 0xffff_8880_0000_0000 | ((tgid as u64) << 12);
            c.process_id = tgid as u64;
            let comm: &str = match &self.comm_override {
                Some(c) => c,
                None => self.comm_cache.entry(tgid).or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                }),
            };
            for (i, ch) in comm.bytes().take(15).enumerate() {
                c.process_name[i] = ch as u16;
            }
            c.flags = 1 << 3;
            // The 4-byte result on the stack (no pooled buffer per open).
            let mut res = [0u8; 4];
            let r = self.send_into(
                None,
                Target::Global,
                1000,
                &[&c.as_bytes()[24..]],
                &mut res,
                false,
                true,
            );
            let h = match r {
                Ok(()) if u32_at(&res, 0) != 0 => u32_at(&res, 0),
                _ => return Err(-(libc::EBADF as i64)),
            };
            self.procs.insert(tgid, h);
        }
        let p = self.procs.get_mut(tgid).expect("inserted");
        p.opens += 1;
        let f = self.next_file;
        self.next_file += 1;
        self.files.insert(f, tgid);
        Ok(f)
    }

    /// `dxgk_release`: on the last close of a process, adapters are torn down (FLUSHDEVICE
    /// + device teardown), sync objects destroyed, then G:DESTROYPROCESS.
    pub fn close(&mut self, file: u64, tid: u32) {
        let Some(tgid) = self.files.remove(file) else {
            return;
        };
        self.set_ctx(CallCtx {
            pid: tgid,
            tid,
            ioctl_id: None,
        });
        let last = {
            let p = self.procs.get_mut(tgid).expect("file's process");
            p.opens -= 1;
            p.opens == 0
        };
        if !last {
            return;
        }
        let devices: Vec<u32> = self.sorted(tgid, K::Device);
        for d in devices {
            let a = self.procs[tgid].objs.get(d).expect("device").adapter;
            let _ = self.send_st(
                tgid,
                a,
                42,
                &[FlushDeviceCmd {
                    reason: 4,
                    device: d,
                    ..FlushDeviceCmd::zeroed()
                }
                .as_bytes()
                .get(24..)
                .unwrap_or(&[])],
                false,
            );
            self.destroy_device(tgid, d);
        }
        for s in self.sorted(tgid, K::SyncObject) {
            let mut c = DestroySyncObjectCmd::zeroed();
            c.sync_object = s;
            let _ = self.send(
                Some(tgid),
                Target::Global,
                1003,
                &[&c.as_bytes()[24..]],
                4,
                false,
                false,
            );
        }
        let mut res = [0u8; 4];
        let _ = self.send_into(
            Some(tgid),
            Target::Global,
            1001,
            &[],
            &mut res,
            false,
            false,
        );
        self.procs.remove(tgid);
    }

    fn sorted(&self, tgid: u32, k: K) -> Vec<u32> {
        if self.procs.get(tgid).is_none_or(|p| p.objs.is_empty()) {
            return Vec::new(); // a process closing after its own teardown
        }
        let mut v: Vec<u32> = self
            .procs
            .get(tgid)
            .map(|p| {
                p.objs
                    .iter()
                    .filter(|(_, o)| o.kind == k)
                    .map(|(h, _)| h)
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn destroy_device(&mut self, tgid: u32, d: u32) {
        let Some(p) = self.procs.get(tgid) else {
            return;
        };
        let a = p.objs.get(d).map(|o| o.adapter).unwrap_or(0);
        let mut res: Vec<u32> = p
            .objs
            .iter()
            .filter(|(_, o)| o.device == d && o.kind == K::Resource)
            .map(|(h, _)| h)
            .collect();
        res.sort();
        let mut loose: Vec<u32> = p
            .objs
            .iter()
            .filter(|(h, o)| {
                o.device == d
                    && o.kind == K::Allocation
                    && !p
                        .objs
                        .values()
                        .any(|r| r.kind == K::Resource && r.children.contains(h))
            })
            .map(|(h, _)| h)
            .collect();
        loose.sort();
        for r in res {
            let mut c = DestroyAllocationCmd::zeroed();
            c.device = d;
            c.resource = r;
            let _ = self.send_st(tgid, a, 5, &[&c.as_bytes()[24..40]], false);
        }
        if !loose.is_empty() {
            let mut c = DestroyAllocationCmd::zeroed();
            c.device = d;
            c.alloc_count = loose.len() as u32;
            let hs = le_bytes(loose.iter(), loose.len());
            let _ = self.send_st(tgid, a, 5, &[&c.as_bytes()[24..40], &hs], false);
        }
        let mut c = DestroyDeviceCmd::zeroed();
        c.device = d;
        let _ = self.send_st(tgid, a, 1, &[&c.as_bytes()[24..]], false);
        if let Some(p) = self.procs.get_mut(tgid) {
            p.objs.retain(|h, o| h != d && o.device != d);
        }
    }

    /// Host events registered and not yet done with (for tests).
    #[cfg(test)]
    pub(crate) fn host_events(&self) -> usize {
        self.events.len()
    }

    /// Whether a file is open.
    pub fn file_tgid(&self, file: u64) -> Option<u32> {
        self.files.get(file)
    }

    // ------------------------------------------------------------ ioctl

    /// `dxgk_unlocked_ioctl`: full return value (0, positive NTSTATUS, -errno, or the raw
    /// NTSTATUS quirk).
    pub(crate) fn ioctl(
        &mut self,
        file: u64,
        tgid: u32,
        tid: u32,
        cmd: u32,
        arg: u64,
        mem: &mut Mem,
    ) -> i64 {
        let nr = cmd & 0xff;
        let enotty = -(libc::ENOTTY as i64);
        self.ioctls += 1;
        let id = self.ioctls;
        self.set_ctx(CallCtx {
            pid: tgid,
            tid,
            ioctl_id: Some(id),
        });
        let ts_enter = self.bus.clock.now();
        self.bus.clock.advance(1_500);
        let entry = entry_by_nr(nr);
        let size = ((cmd >> 16) & 0x3fff) as usize;
        let mut bufs = Vec::new();
        let ok_entry = match entry {
            Some(e)
                if (1..0x4a).contains(&nr)
                    && e.class != IoctlClass::Unsupported
                    && e.code == cmd =>
            {
                Some(e)
            }
            _ => None,
        };
        let recording = self.bus.recording;
        if let Some(e) = ok_entry.filter(|_| recording) {
            capture(mem, e, arg, size, true, &mut bufs);
        }
        let ret = match (ok_entry, self.files.get(file)) {
            (None, _) => enotty,
            (_, None) => -(libc::EBADF as i64),
            (Some(_), Some(t)) if t != tgid => enotty,
            (Some(e), Some(_)) => match self.handle(e, tgid, arg, mem) {
                Ok(v) | Err(v) => v,
            },
        };
        if let Some(e) = ok_entry.filter(|_| recording) {
            capture(mem, e, arg, size, false, &mut bufs);
        }
        let ts_exit = self.bus.clock.advance(800);
        if recording {
            self.bus.emit(Event::Ioctl(IoctlEvent {
                id,
                ts_enter,
                ts_exit,
                pid: tgid,
                tid,
                fd: file as i32,
                cmd,
                arg,
                ret,
                buffers: bufs,
            }));
        }
        if self.removed_after == Some(self.ioctls) {
            self.set_ctx(CallCtx {
                pid: tgid,
                tid,
                ioctl_id: None,
            });
            let b = self.bus.clone();
            b.host
                .borrow_mut()
                .remove_device(&mut b.inbound.borrow_mut());
            // Its note is taken whether or not the host otherwise notes.
            self.after_send_work(true);
        }
        ret
    }

    fn local_adapter(&self, tgid: u32, h: u32) -> Result<usize, i64> {
        self.procs
            .get(tgid)
            .and_then(|p| p.adapters.get(&h))
            .copied()
            .ok_or(EINVAL)
    }

    /// Object `h` of process `tgid` if it is a `k` (a monitored fence is a sync object).
    #[inline(always)]
    fn obj(&self, tgid: u32, h: u32, k: K) -> Result<ObjView, i64> {
        self.obj_ref(tgid, h, k).map(|o| ObjView {
            adapter: o.adapter,
            device: o.device,
            lock: o.lock,
            lock_va: o.lock_va,
            exec_state: o.exec_state,
            exec_counter: o.exec_counter,
        })
    }

    #[inline(always)]
    fn obj_ref(&self, tgid: u32, h: u32, k: K) -> Result<&Obj, i64> {
        match self.procs.get(tgid).and_then(|p| p.objs.get(h)) {
            Some(o) if o.kind == k || (k == K::SyncObject && o.kind == K::MonitoredFence) => Ok(o),
            _ => Err(EINVAL),
        }
    }

    fn reg(&mut self, tgid: u32, h: u32, kind: K, adapter: usize, device: u32) {
        let o = Obj {
            kind,
            adapter,
            device,
            lock: 0,
            lock_va: 0,
            exec_state: 1,
            exec_counter: 0,
            children: Vec::new(),
        };
        if let Some(p) = self.procs.get_mut(tgid) {
            p.objs.insert(h, o);
        }
    }

    fn open_adapter(&mut self, tgid: u32, a: usize) -> u32 {
        let p = self.procs.get_mut(tgid).expect("open process");
        let h = 0x4000_0000 | ((p.next_local & 0x00FF_FFFF) << 6);
        p.next_local += 1;
        p.adapters.insert(h, a);
        h
    }

    fn map_io(&self, phys: u64) -> u64 {
        self.bus.host.borrow_mut().map_io(phys).unwrap_or(0)
    }

    fn not_emulated(&self, name: &str) -> R {
        self.bus.annotate(
            "not-emulated",
            format!("{name}: sharing through fds / sync files is not emulated"),
        );
        Err(-(libc::EOPNOTSUPP as i64))
    }

    /// Runs ioctl `e` (dispatched on its request number: a string match on the name
    /// compared names one after another on every call).
    #[inline(always)]
    fn handle(&mut self, e: &'static IoctlDesc, t: u32, arg: u64, mem: &mut Mem) -> R {
        let name = e.name;
        match e.nr {
            nr::LX_DXOPENADAPTERFROMLUID => {
                let mut s: OpenAdapterFromLuid = rd(mem, arg)?;
                let luid = s.adapter_luid[0] as u64 | (s.adapter_luid[1] as u64) << 32;
                let a = self
                    .adapters
                    .iter()
                    .position(|x| x.spec.luid == luid)
                    .ok_or(EINVAL)?;
                s.adapter_handle = self.open_adapter(t, a);
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXENUMADAPTERS2 => {
                let mut s: EnumAdapters2 = rd(mem, arg)?;
                let total = self.adapters.len() as u32;
                if s.adapters == 0 {
                    s.num_adapters = total;
                    wr(mem, arg, s.as_bytes())?;
                    return Ok(0);
                }
                if s.num_adapters < total {
                    return Err(-(libc::EOVERFLOW as i64));
                }
                let list: Vec<usize> = (0..self.adapters.len())
                    .filter(|i| !self.adapters[*i].spec.compute_only)
                    .collect();
                self.write_adapters(t, &list, s.adapters, mem)?;
                s.num_adapters = list.len() as u32;
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXENUMADAPTERS3 => {
                let mut s: EnumAdapters3 = rd(mem, arg)?;
                if s.adapter_count > 0xFFFF {
                    return Err(EINVAL);
                }
                let list: Vec<usize> = (0..self.adapters.len())
                    .filter(|i| s.filter & 1 != 0 || !self.adapters[*i].spec.compute_only)
                    .collect();
                if s.adapters == 0 || s.adapter_count == 0 {
                    s.adapter_count = self.adapters.len() as u32;
                    wr(mem, arg, s.as_bytes())?;
                    return Ok(0);
                }
                if list.len() as u32 > s.adapter_count {
                    // §6.3: the capacity check comes after the handles were opened; the
                    // call "succeeds", writes nothing back and leaks the handles.
                    for a in &list {
                        self.open_adapter(t, *a);
                    }
                    self.bus.annotate("driver-bug", "ENUMADAPTERS3 capacity check after the fact (§6.3): success, nothing written, adapter handles leaked".into());
                    return Ok(0);
                }
                self.write_adapters(t, &list, s.adapters, mem)?;
                s.adapter_count = list.len() as u32;
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXCLOSEADAPTER => {
                let s: CloseAdapter = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter_handle)?;
                let p = self.procs.get_mut(t).expect("process");
                p.adapters.remove(&s.adapter_handle);
                if !p.adapters.values().any(|x| *x == a) {
                    let devs: Vec<u32> = self
                        .sorted(t, K::Device)
                        .into_iter()
                        .filter(|d| self.procs[t].objs.get(*d).expect("device").adapter == a)
                        .collect();
                    for d in devs {
                        let _ = self.send_st(
                            t,
                            a,
                            42,
                            &[&FlushDeviceCmd {
                                reason: 4,
                                device: d,
                                ..FlushDeviceCmd::zeroed()
                            }
                            .as_bytes()[24..]],
                            false,
                        );
                        self.destroy_device(t, d);
                    }
                }
                Ok(0)
            }
            nr::LX_DXQUERYADAPTERINFO => {
                let s: QueryAdapterInfo = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let n = s.private_data_size as usize;
                if n == 0 || n > 131072 {
                    return Err(EINVAL);
                }
                let data = rdv(mem, s.private_data, n)?;
                let body: &[&[u8]] = &[
                    &(s.type_ as u32).to_le_bytes(),
                    &(n as u32).to_le_bytes(),
                    &data,
                ];
                let rs = if self.version >= 40 { 4 + n } else { n };
                let r = self.send(Some(t), Target::Adapter(a), 2, body, rs, false, false)?;
                let (ret, mut out) = if self.version >= 40 {
                    (st_ret(&r), r[4..].to_vec())
                } else {
                    (0, r.into_vec())
                };
                if ret < 0 {
                    return Ok(ret);
                }
                if (s.type_ == 15 || s.type_ == 57) && out.len() >= 4 {
                    let mut v = u32_at(&out, 0);
                    v |= 1 << 7; // paravirtualized
                    v &= !((1 << 1) | (1 << 3) | (1 << 6) | (1 << 8) | (1 << 9) | (1 << 11));
                    if self.adapters[a].spec.compute_only {
                        v |= 1 << 11;
                    }
                    out[..4].copy_from_slice(&v.to_le_bytes());
                }
                wr(mem, s.private_data, &out)?;
                Ok(ret)
            }
            nr::LX_ISFEATUREENABLED => {
                let mut s: IsFeatureEnabled = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    68,
                    &[&(s.feature_id as u32).to_le_bytes(), &[0; 4]],
                    16,
                    false,
                    true,
                )?;
                let ret = st_ret(&r);
                if ret >= 0 {
                    s.result = FeatureResult::from_bytes(&r[10..14]);
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXCREATEDEVICE => {
                let mut s: CreateDevice = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let mut c = CreateDeviceCmd::zeroed();
                c.flags = s.flags;
                c.error_code = DEVICE_STATE_COUNTER_ADDR;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    0,
                    &[&c.as_bytes()[24..]],
                    4,
                    false,
                    false,
                )?;
                let h = u32_at(&r, 0);
                if h != 0 {
                    self.reg(t, h, K::Device, a, h);
                    s.device = h;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(0)
            }
            nr::LX_DXDESTROYDEVICE => {
                let s: DestroyDevice = rd(mem, arg)?;
                self.obj(t, s.device, K::Device)?;
                self.destroy_device(t, s.device);
                Ok(0)
            }
            nr::LX_DXCREATECONTEXTVIRTUAL => {
                let mut s: CreateContextVirtual = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let n = s.priv_drv_data_size as usize;
                if n > 131072 {
                    return Err(EINVAL);
                }
                let pd = rdv(mem, s.priv_drv_data, n)?;
                let mut c = CreateContextVirtualCmd::zeroed();
                c.device = s.device;
                c.node_ordinal = s.node_ordinal;
                c.engine_affinity = s.engine_affinity;
                c.flags = s.flags;
                c.client_hint = s.client_hint as u32;
                c.priv_drv_data_size = n as u32;
                let body: &[&[u8]] = &[&c.as_bytes()[24..52], &pd];
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    6,
                    body,
                    24 + body.iter().map(|p| p.len()).sum::<usize>(),
                    false,
                    false,
                )?;
                let h = u32_at(&r, 24);
                if h == 0 {
                    return Err(EINVAL);
                }
                wr(mem, s.priv_drv_data, &r[52..52 + n])?;
                self.reg(t, h, K::Context, d.adapter, s.device);
                s.context = h;
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXDESTROYCONTEXT => {
                let s: DestroyContext = rd(mem, arg)?;
                let o = self.obj(t, s.context, K::Context)?;
                let r = self.send_st(
                    t,
                    o.adapter,
                    7,
                    &[&DestroyContextCmd {
                        context: s.context,
                        ..DestroyContextCmd::zeroed()
                    }
                    .as_bytes()[24..]],
                    false,
                )?;
                self.procs
                    .get_mut(t)
                    .expect("process")
                    .objs
                    .remove(s.context);
                Ok(r)
            }
            nr::LX_DXCREATEHWQUEUE => {
                let mut s: CreateHwQueue = rd(mem, arg)?;
                let o = self.obj(t, s.context, K::Context)?;
                let n = s.priv_drv_data_size as usize;
                if n > 131072 {
                    return Err(EINVAL);
                }
                let pd = rdv(mem, s.priv_drv_data, n)?;
                let mut c = CreateHwQueueCmd::zeroed();
                c.context = s.context;
                c.flags = s.flags;
                c.priv_drv_data_size = n as u32;
                let body: &[&[u8]] = &[&c.as_bytes()[24..68], &pd];
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    50,
                    body,
                    24 + body.iter().map(|p| p.len()).sum::<usize>(),
                    false,
                    false,
                )?;
                let ret = ntstatus_to_errno(u32_at(&r, 24)) as i64;
                if ret < 0 {
                    return Ok(ret);
                }
                s.queue = u32_at(&r, 28);
                s.queue_progress_fence = u32_at(&r, 32);
                s.queue_progress_fence_cpu_va = self.map_io(u64_at(&r, 40));
                s.queue_progress_fence_gpu_va = u64_at(&r, 48);
                self.reg(t, s.queue, K::HwQueue, o.adapter, o.device);
                self.reg(
                    t,
                    s.queue_progress_fence,
                    K::MonitoredFence,
                    o.adapter,
                    o.device,
                );
                wr(mem, s.priv_drv_data, &r[68..68 + n])?;
                wr(mem, arg, s.as_bytes())?;
                Ok(ret)
            }
            nr::LX_DXDESTROYHWQUEUE => {
                let s: DestroyHwQueue = rd(mem, arg)?;
                let o = self.obj(t, s.queue, K::HwQueue)?;
                let r = self.send_st(
                    t,
                    o.adapter,
                    51,
                    &[&DestroyHwQueueCmd {
                        hwqueue: s.queue,
                        ..DestroyHwQueueCmd::zeroed()
                    }
                    .as_bytes()[24..]],
                    false,
                )?;
                self.procs.get_mut(t).expect("process").objs.remove(s.queue);
                Ok(r)
            }
            nr::LX_DXCREATEPAGINGQUEUE => {
                let mut s: CreatePagingQueue = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    9,
                    &[s.as_bytes()],
                    24,
                    false,
                    false,
                )?;
                let rr = CreatePagingQueueReturn::from_bytes(&r);
                if rr.paging_queue == 0 {
                    return Err(EINVAL);
                }
                s.paging_queue = rr.paging_queue;
                s.sync_object = rr.sync_object;
                s.fence_cpu_virtual_address =
                    self.map_io(rr.fence_storage_physical_address + rr.fence_storage_offset);
                self.reg(t, rr.paging_queue, K::PagingQueue, d.adapter, s.device);
                self.reg(t, rr.sync_object, K::MonitoredFence, d.adapter, s.device);
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXDESTROYPAGINGQUEUE => {
                let s: DestroyPagingQueue = rd(mem, arg)?;
                let o = self.obj(t, s.paging_queue, K::PagingQueue)?;
                self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    10,
                    &[&DestroyPagingQueueCmd {
                        paging_queue: s.paging_queue,
                        ..DestroyPagingQueueCmd::zeroed()
                    }
                    .as_bytes()[24..]],
                    0,
                    false,
                    false,
                )?;
                self.procs
                    .get_mut(t)
                    .expect("process")
                    .objs
                    .remove(s.paging_queue);
                Ok(0)
            }
            nr::LX_DXCREATESYNCHRONIZATIONOBJECT => {
                let mut s: CreateSyncObject2 = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                if s.info.type_ == 4 {
                    // cpu_notification: the eventfd is replaced by a host-event id.
                    self.host_event_id += 1;
                    s.info.params[0] = self.host_event_id;
                }
                let mut c = CreateSyncObjectCmd::zeroed();
                c.args = s;
                c.client_hint = 1;
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    8,
                    &[&c.as_bytes()[24..]],
                    32,
                    false,
                    false,
                )?;
                let rr = CreateSyncObjectReturn::from_bytes(&r);
                if rr.sync_object == 0 {
                    return Err(EINVAL);
                }
                s = rd(mem, arg)?;
                s.sync_object = rr.sync_object;
                if s.info.type_ == 5 || s.info.type_ == 6 {
                    let i = if s.info.type_ == 5 { 1 } else { 2 };
                    s.info.params[i] =
                        self.map_io(rr.fence_storage_address + rr.fence_storage_offset as u64);
                    s.info.params[i + 1] = rr.fence_gpu_va;
                }
                if s.info.flags & 1 != 0 {
                    s.info.shared_handle = rr.global_sync_object;
                }
                self.reg(t, rr.sync_object, K::SyncObject, d.adapter, s.device);
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXDESTROYSYNCHRONIZATIONOBJECT => {
                let s: DestroySyncObject = rd(mem, arg)?;
                self.obj(t, s.sync_object, K::SyncObject)?;
                let r = self.send(
                    Some(t),
                    Target::Global,
                    1003,
                    &[&DestroySyncObjectCmd {
                        sync_object: s.sync_object,
                        ..DestroySyncObjectCmd::zeroed()
                    }
                    .as_bytes()[24..]],
                    4,
                    false,
                    false,
                )?;
                self.procs
                    .get_mut(t)
                    .expect("process")
                    .objs
                    .remove(s.sync_object);
                Ok(st_ret(&r))
            }
            nr::LX_DXCREATEALLOCATION => self.create_allocation(t, arg, mem),
            nr::LX_DXDESTROYALLOCATION2 => {
                let s: DestroyAllocation2 = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                if (s.alloc_count == 0) == (s.resource == 0) || s.alloc_count > 1024 {
                    return Err(EINVAL);
                }
                let hb = rds(mem, s.allocations, 4 * s.alloc_count as usize)?;
                for h in handles(&hb) {
                    self.obj(t, h, K::Allocation)?;
                }
                let mut freed: Vec<u32> = handles(&hb).collect();
                if s.resource != 0 {
                    let r = self.obj_ref(t, s.resource, K::Resource)?;
                    freed.extend_from_slice(&r.children);
                    freed.push(s.resource);
                }
                let mut c = DestroyAllocationCmd::zeroed();
                c.device = s.device;
                c.resource = s.resource;
                c.alloc_count = s.alloc_count;
                c.flags = s.flags;
                let r = self.send_st(t, d.adapter, 5, &[&c.as_bytes()[24..40], &hb], false)?;
                let p = self.procs.get_mut(t).expect("process");
                for h in freed {
                    p.objs.remove(h);
                }
                Ok(r)
            }
            nr::LX_DXMAKERESIDENT => {
                let mut s: MakeResident = rd(mem, arg)?;
                let o = self.obj(t, s.paging_queue, K::PagingQueue)?;
                if s.alloc_count == 0 || s.alloc_count > 10240 {
                    return Err(EINVAL);
                }
                let hs = rdv(mem, s.allocation_list, 4 * s.alloc_count as usize)?;
                let mut c = MakeResidentCmd::zeroed();
                c.paging_queue = s.paging_queue;
                c.flags = s.flags;
                c.alloc_count = s.alloc_count;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    11,
                    &[&c.as_bytes()[24..40], &hs],
                    24,
                    false,
                    false,
                )?;
                let rr = MakeResidentReturn::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret >= 0 {
                    s.paging_fence_value = rr.paging_fence_value;
                    s.num_bytes_to_trim = rr.num_bytes_to_trim;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXEVICT => {
                let mut s: Evict = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                if s.alloc_count == 0 || s.alloc_count > 10240 {
                    return Err(EINVAL);
                }
                let hs = rdv(mem, s.allocations, 4 * s.alloc_count as usize)?;
                let mut c = EvictCmd::zeroed();
                c.device = s.device;
                c.flags = s.flags;
                c.alloc_count = s.alloc_count;
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    12,
                    &[&c.as_bytes()[24..36], &hs],
                    8,
                    false,
                    false,
                )?;
                s.num_bytes_to_trim = u64_at(&r, 0);
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXRESERVEGPUVIRTUALADDRESS => {
                let mut s: ReserveGpuVa = rd(mem, arg)?;
                let a = match self.local_adapter(t, s.adapter) {
                    Ok(a) => a,
                    Err(_) => self.obj(t, s.adapter, K::PagingQueue)?.adapter,
                };
                let mut c = ReserveGpuVaCmd::zeroed();
                c.args = s;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    18,
                    &[&c.as_bytes()[24..]],
                    16,
                    false,
                    false,
                )?;
                s.virtual_address = u64_at(&r, 0);
                s.paging_fence_value = u64_at(&r, 8);
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXMAPGPUVIRTUALADDRESS => {
                let mut s: MapGpuVa = rd(mem, arg)?;
                let o = self.obj(t, s.paging_queue, K::PagingQueue)?;
                self.obj(t, s.allocation, K::Allocation)?;
                let mut c = MapGpuVaCmd::zeroed();
                c.args = s;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    17,
                    &[&c.as_bytes()[24..]],
                    24,
                    false,
                    false,
                )?;
                let rr = MapGpuVaReturn::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret >= 0 {
                    s.virtual_address = rr.virtual_address;
                    s.paging_fence_value = rr.paging_fence_value;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXFREEGPUVIRTUALADDRESS => {
                let s: FreeGpuVa = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                self.send_st(t, a, 16, &[s.as_bytes()], false)
            }
            nr::LX_DXUPDATEGPUVIRTUALADDRESS => {
                let s: UpdateGpuVa = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                if s.num_operations == 0 || s.num_operations > 2048 {
                    return Err(EINVAL);
                }
                let ops = rdv(mem, s.operations, 64 * s.num_operations as usize)?;
                let mut c = UpdateGpuVaCmd::zeroed();
                c.fence_value = s.fence_value;
                c.device = s.device;
                c.context = s.context;
                c.fence_object = s.fence_object;
                c.num_operations = s.num_operations;
                c.flags = s.flags;
                self.send_st(t, d.adapter, 19, &[&c.as_bytes()[24..56], &ops], false)
            }
            nr::LX_DXLOCK2 => {
                let mut s: Lock2 = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let o = self.obj(t, s.allocation, K::Allocation)?;
                if o.lock > 0 {
                    // Already mapped: no message, refcount++.
                    let p = self.procs.get_mut(t).expect("process");
                    p.objs.get_mut(s.allocation).expect("checked").lock += 1;
                    s.data = o.lock_va;
                    wr(mem, arg, s.as_bytes())?;
                    return Ok(0);
                }
                let mut c = Lock2Cmd::zeroed();
                c.args = s;
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    23,
                    &[&c.as_bytes()[24..]],
                    16,
                    false,
                    false,
                )?;
                let rr = Lock2Return::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret < 0 {
                    return Ok(ret);
                }
                s.data = self.map_io(rr.cpu_visible_buffer_offset);
                let p = self.procs.get_mut(t).expect("process");
                let ob = p.objs.get_mut(s.allocation).expect("checked");
                ob.lock = 1;
                ob.lock_va = s.data;
                wr(mem, arg, s.as_bytes())?;
                Ok(ret)
            }
            nr::LX_DXUNLOCK2 => {
                let s: Unlock2 = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let o = self.obj(t, s.allocation, K::Allocation)?;
                let p = self.procs.get_mut(t).expect("process");
                let ob = p.objs.get_mut(s.allocation).expect("checked");
                ob.lock = ob.lock.saturating_sub(1);
                if o.lock > 1 {
                    return Ok(0);
                }
                ob.lock_va = 0;
                let mut c = Unlock2Cmd::zeroed();
                c.args = s;
                self.send_st(t, d.adapter, 24, &[&c.as_bytes()[24..]], false)
            }
            nr::LX_DXESCAPE => {
                let s: Escape = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let n = s.priv_drv_data_size as usize;
                if n > 131072 {
                    return Err(EINVAL);
                }
                let pd = rdv(mem, s.priv_drv_data, n)?;
                if s.type_ == 0 && s.flags & (1 << 6) != 0 && n >= 4 && u32_at(&pd, 0) <= 1 {
                    // TRANSLATEALLOCATIONHANDLE / TRANSLATERESOURCEHANDLE: "host and VM
                    // handles are the same", no message.
                    return Ok(0);
                }
                let mut c = EscapeCmd::zeroed();
                c.adapter = self.adapters[a].host_handle;
                c.device = s.device;
                c.type_ = s.type_ as u32;
                c.flags = s.flags;
                c.priv_drv_data_size = n as u32;
                c.context = s.context;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    13,
                    &[&c.as_bytes()[24..48], &pd],
                    n,
                    false,
                    false,
                )?;
                wr(mem, s.priv_drv_data, &r)?;
                Ok(0)
            }
            nr::LX_DXGETDEVICESTATE => {
                let mut s: GetDeviceState = rd(mem, arg)?;
                let o = self.obj(t, s.device, K::Device)?;
                if s.state_type == 1 && o.exec_counter == self.device_state_counter {
                    s.execution_state = o.exec_state;
                    wr(mem, arg, s.as_bytes())?;
                    return Ok(0);
                }
                let mut c = GetDeviceStateCmd::zeroed();
                c.args = s;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    28,
                    &[&c.as_bytes()[24..]],
                    64,
                    false,
                    false,
                )?;
                let rr = GetDeviceStateReturn::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret < 0 {
                    return Ok(ret);
                }
                if s.state_type == 1 {
                    let ctr = self.device_state_counter;
                    let ob = self
                        .procs
                        .get_mut(t)
                        .expect("process")
                        .objs
                        .get_mut(s.device)
                        .expect("checked");
                    ob.exec_state = rr.args.execution_state;
                    ob.exec_counter = ctr;
                }
                wr(mem, arg, rr.args.as_bytes())?;
                Ok(ret)
            }
            nr::LX_DXMARKDEVICEASERROR => {
                let s: MarkDeviceAsError = rd(mem, arg)?;
                let o = self.obj(t, s.device, K::Device)?;
                self.procs
                    .get_mut(t)
                    .expect("process")
                    .objs
                    .get_mut(s.device)
                    .expect("checked")
                    .exec_state = 2;
                self.send_st(t, o.adapter, 29, &[s.as_bytes()], false)
            }
            nr::LX_DXQUERYVIDEOMEMORYINFO => {
                let mut s: QueryVideoMemoryInfo = rd(mem, arg)?;
                if s.process != 0 {
                    return Err(EINVAL);
                }
                let a = self.local_adapter(t, s.adapter)?;
                let mut c = QueryVideoMemoryInfoCmd::zeroed();
                c.adapter = self.adapters[a].host_handle;
                c.memory_segment_group = s.memory_segment_group as u32;
                c.physical_adapter_index = s.physical_adapter_index;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    21,
                    &[&c.as_bytes()[24..]],
                    32,
                    false,
                    false,
                )?;
                let rr = QueryVideoMemoryInfoReturn::from_bytes(&r);
                s.budget = rr.budget;
                s.current_usage = rr.current_usage;
                s.current_reservation = rr.current_reservation;
                s.available_for_reservation = rr.available_for_reservation;
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXCHANGEVIDEOMEMORYRESERVATION => {
                let s: ChangeVidMemReservation = rd(mem, arg)?;
                if s.process != 0 {
                    return Err(EINVAL);
                }
                let a = self.local_adapter(t, s.adapter)?;
                self.send_st(t, a, 49, &[s.as_bytes()], false)
            }
            nr::LX_DXQUERYCLOCKCALIBRATION => {
                let mut s: QueryClockCalibration = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let mut c = QueryClockCalibrationCmd::zeroed();
                c.args = s;
                c.args.adapter = self.adapters[a].host_handle;
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    62,
                    &[&c.as_bytes()[24..]],
                    32,
                    false,
                    false,
                )?;
                let rr = QueryClockCalibrationReturn::from_bytes(&r);
                // §6.3: copied out before the status is checked.
                s.clock_data = rr.clock_data;
                wr(mem, arg, s.as_bytes())?;
                Ok(ntstatus_to_errno(rr.status as u32) as i64)
            }
            nr::LX_DXQUERYSTATISTICS => {
                let mut s: QueryStatistics = rd(mem, arg)?;
                let luid = s.adapter_luid[0] as u64 | (s.adapter_luid[1] as u64) << 32;
                let a = self
                    .adapters
                    .iter()
                    .position(|x| x.spec.luid == luid)
                    .ok_or(EINVAL)?;
                let mut c = QueryStatisticsCmd::zeroed();
                c.args = s;
                let hl = self.adapters[a].spec.host_adapter_luid;
                c.args.adapter_luid = [hl as u32, (hl >> 32) as u32];
                let r = self.send(
                    Some(t),
                    Target::Adapter(a),
                    48,
                    &[&c.as_bytes()[24..]],
                    784,
                    false,
                    false,
                )?;
                let rr = QueryStatisticsReturn::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret >= 0 {
                    s.result = rr.result;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXFLUSHHEAPTRANSITIONS => {
                let mut s: FlushHeapTransitions = rd(mem, arg)?;
                let a = self.local_adapter(t, s.adapter)?;
                let r = self.send_st(t, a, 37, &[], false)?;
                // The struct is copied back with the host adapter handle in it.
                s.adapter = self.adapters[a].host_handle;
                wr(mem, arg, s.as_bytes())?;
                Ok(r)
            }
            nr::LX_DXINVALIDATECACHE => {
                let s: InvalidateCache = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let mut c = InvalidateCacheCmd::zeroed();
                c.device = s.device;
                c.allocation = s.allocation;
                c.offset = s.offset;
                c.length = s.length;
                self.send_st(t, d.adapter, 67, &[&c.as_bytes()[24..]], false)
            }
            nr::LX_DXGETCONTEXTINPROCESSSCHEDULINGPRIORITY
            | nr::LX_DXGETCONTEXTSCHEDULINGPRIORITY => {
                let mut s: GetContextSchedulingPriority = rd(mem, arg)?;
                let o = self.obj(t, s.context, K::Context)?;
                let mut c = GetContextSchedulingPriorityCmd::zeroed();
                c.context = s.context;
                c.in_process = name.contains("INPROCESS") as u8;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    61,
                    &[&c.as_bytes()[24..]],
                    8,
                    false,
                    false,
                )?;
                let ret = st_ret(&r);
                if ret >= 0 {
                    s.priority = u32_at(&r, 4) as i32;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXSETCONTEXTINPROCESSSCHEDULINGPRIORITY
            | nr::LX_DXSETCONTEXTSCHEDULINGPRIORITY => {
                let s: SetContextSchedulingPriority = rd(mem, arg)?;
                let o = self.obj(t, s.context, K::Context)?;
                let mut c = SetContextSchedulingPriority2Cmd::zeroed();
                c.context = s.context;
                c.priority = s.priority;
                c.in_process = name.contains("INPROCESS") as u8;
                self.send_st(t, o.adapter, 33, &[&c.as_bytes()[24..]], false)
            }
            nr::LX_DXSETALLOCATIONPRIORITY | nr::LX_DXGETALLOCATIONPRIORITY => {
                let s: SetAllocationPriority = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let n = if s.resource != 0 {
                    1
                } else {
                    s.allocation_count as usize
                };
                if n == 0 || n > 10240 {
                    return Err(EINVAL);
                }
                let hs = if s.resource != 0 {
                    Buf::default()
                } else {
                    rdv(mem, s.allocation_list, 4 * n)?
                };
                let mut c = SetAllocationPriorityCmd::zeroed();
                c.device = s.device;
                c.resource = s.resource;
                c.allocation_count = s.allocation_count;
                if name == "LX_DXSETALLOCATIONPRIORITY" {
                    let pr = rdv(mem, s.priorities, 4 * n)?;
                    self.send_st(t, d.adapter, 59, &[&c.as_bytes()[24..40], &hs, &pr], false)
                } else {
                    // dxgvmb_send_get_allocation_priority sends msg.size + res_size: the
                    // result area travels as zeros.
                    let res = 4 + 4 * n;
                    let body: &[&[u8]] =
                        &[&c.as_bytes()[24..40], &hs, &vec![0u8; res.div_ceil(8) * 8]];
                    let r = self.send(
                        Some(t),
                        Target::Adapter(d.adapter),
                        60,
                        body,
                        res,
                        false,
                        false,
                    )?;
                    let ret = st_ret(&r);
                    if ret >= 0 {
                        wr(mem, s.priorities, &r[4..])?;
                    }
                    Ok(ret)
                }
            }
            nr::LX_DXOFFERALLOCATIONS => {
                let s: OfferAllocations = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let n = s.allocation_count as usize;
                if n == 0 || n > 10240 || (s.resources != 0) == (s.allocations != 0) {
                    return Err(EINVAL);
                }
                let hs = rdv(
                    mem,
                    if s.resources != 0 {
                        s.resources
                    } else {
                        s.allocations
                    },
                    4 * n,
                )?;
                let mut c = OfferAllocationsCmd::zeroed();
                c.device = s.device;
                c.allocation_count = n as u32;
                c.priority = s.priority as u32;
                c.flags = s.flags;
                c.resources = (s.resources != 0) as u8;
                self.send_st(t, d.adapter, 57, &[&c.as_bytes()[24..44], &hs], false)
            }
            nr::LX_DXRECLAIMALLOCATIONS2 => {
                let mut s: ReclaimAllocations2 = rd(mem, arg)?;
                let o = self.obj(t, s.paging_queue, K::PagingQueue)?;
                let n = s.allocation_count as usize;
                if n == 0 || n > 10240 || (s.resources != 0) == (s.allocations != 0) {
                    return Err(EINVAL);
                }
                let hs = rdv(
                    mem,
                    if s.resources != 0 {
                        s.resources
                    } else {
                        s.allocations
                    },
                    4 * n,
                )?;
                let mut c = ReclaimAllocationsCmd::zeroed();
                c.device = o.device;
                c.paging_queue = s.paging_queue;
                c.allocation_count = n as u32;
                c.resources = (s.resources != 0) as u8;
                c.write_results = (s.results != 0) as u8;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    58,
                    &[&c.as_bytes()[24..40], &hs],
                    12 + 4 * n,
                    false,
                    false,
                )?;
                let ret = ntstatus_to_errno(u32_at(&r, 8)) as i64;
                if ret >= 0 {
                    if s.results != 0 {
                        wr(mem, s.results, &r[12..12 + 4 * n])?;
                    }
                    s.paging_fence_value = u64_at(&r, 0);
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            nr::LX_DXQUERYALLOCATIONRESIDENCY => {
                let s: QueryAllocationResidency = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                if (s.allocation_count == 0) == (s.resource == 0) {
                    return Err(EINVAL);
                }
                let n = if s.resource != 0 {
                    1
                } else {
                    s.allocation_count as usize
                };
                let hs = if s.resource != 0 {
                    Buf::default()
                } else {
                    rdv(mem, s.allocations, 4 * n)?
                };
                let r = self.send(
                    Some(t),
                    Target::Adapter(d.adapter),
                    41,
                    &[s.as_bytes(), &hs],
                    4 + 4 * n,
                    false,
                    false,
                )?;
                let ret = st_ret(&r);
                if ret >= 0 {
                    wr(mem, s.residency_status, &r[4..])?;
                }
                Ok(ret)
            }
            nr::LX_DXUPDATEALLOCPROPERTY => {
                let mut s: UpdateAllocProperty = rd(mem, arg)?;
                let o = self.obj(t, s.paging_queue, K::PagingQueue)?;
                let r = self.send(
                    Some(t),
                    Target::Adapter(o.adapter),
                    56,
                    &[s.as_bytes()],
                    16,
                    false,
                    false,
                )?;
                let stv = u32_at(&r, 8);
                if stv == super::host::st::PENDING {
                    s.paging_fence_value = u64_at(&r, 0);
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ntstatus_to_errno(stv) as i64)
            }
            nr::LX_DXSUBMITCOMMAND => {
                let s: SubmitCommand = rd(mem, arg)?;
                let n = s.broadcast_context_count as usize;
                if n == 0
                    || n > 64
                    || s.num_primaries > 16
                    || s.num_history_buffers > 1024
                    || s.priv_drv_data_size > 131072
                {
                    return Err(EINVAL);
                }
                let o = self.obj(t, s.broadcast_context[0], K::Context)?;
                let hist = rds(
                    mem,
                    s.history_buffer_array,
                    4 * s.num_history_buffers as usize,
                )?;
                let pd = rds(mem, s.priv_drv_data, s.priv_drv_data_size as usize)?;
                self.send_st(t, o.adapter, 20, &[s.as_bytes(), &hist, &pd], true)
            }
            nr::LX_DXSUBMITCOMMANDTOHWQUEUE => {
                let s: SubmitCommandToHwQueue = rd(mem, arg)?;
                let o = self.obj(t, s.hwqueue, K::HwQueue)?;
                if s.num_primaries > 131072 || s.priv_drv_data_size > 131072 {
                    return Err(EINVAL);
                }
                let prim = rds(mem, s.written_primaries, 4 * s.num_primaries as usize)?;
                let pd = rds(mem, s.priv_drv_data, s.priv_drv_data_size as usize)?;
                self.send_st(t, o.adapter, 52, &[s.as_bytes(), &prim, &pd], true)
            }
            nr::LX_DXSIGNALSYNCHRONIZATIONOBJECT => {
                let s: SignalSyncObject2 = rd(mem, arg)?;
                let n = s.object_count as usize;
                if n == 0 || n > 32 || s.context_count > 64 {
                    return Err(EINVAL);
                }
                let o = self.obj(t, s.context, K::Context)?;
                // Double fetch (§6.3): the send re-reads the arrays from user memory.
                let again: SignalSyncObject2 = rd(mem, arg)?;
                let nc = s.context_count as usize;
                let ctxs = le_bytes(
                    std::iter::once(&s.context).chain(&again.contexts[..nc]),
                    1 + nc,
                );
                self.signal_msg(
                    t,
                    o.adapter,
                    s.flags,
                    s.fence_value,
                    0,
                    &again.object_array.as_bytes()[..4 * n],
                    &ctxs,
                    &[],
                )
            }
            nr::LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU => {
                let s: SignalSyncObjectFromCpu = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let n = s.object_count as usize;
                if n == 0 || n > 32 {
                    return Err(EINVAL);
                }
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.fence_values, 8 * n)?;
                self.signal_msg(t, d.adapter, s.flags, 0, s.device as u64, &objs, &[], &f)
            }
            nr::LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU => {
                let s: SignalSyncObjectFromGpu = rd(mem, arg)?;
                let o = self.obj(t, s.context, K::Context)?;
                let n = s.object_count as usize;
                if n == 0 || n > 131072 {
                    return Err(EINVAL);
                }
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.monitored_fence_values, 8 * n)?;
                let ctx = s.context.to_le_bytes();
                self.signal_msg(t, o.adapter, 0, 0, 0, &objs, &ctx, &f)
            }
            nr::LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2 => {
                let s: SignalSyncObjectFromGpu2 = rd(mem, arg)?;
                let n = s.object_count as usize;
                let nc = s.context_count as usize;
                if n > 131072 || nc == 0 || nc > 64 || (n == 0 && s.flags & 2 == 0) {
                    return Err(EINVAL);
                }
                let ctxs = rds(mem, s.contexts, 4 * nc)?;
                let o = self.obj(t, u32_at(&ctxs, 0), K::Context)?;
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.monitored_fence_values, 8 * n)?;
                self.signal_msg(t, o.adapter, s.flags, 0, 0, &objs, &ctxs, &f)
            }
            nr::LX_DXSUBMITSIGNALSYNCOBJECTSTOHWQUEUE => {
                let s: SubmitSignalSyncObjectsToHwQueue = rd(mem, arg)?;
                let nq = s.hwqueue_count as usize;
                let n = s.object_count as usize;
                if nq == 0 || nq > 64 || n == 0 || n > 32 {
                    return Err(EINVAL);
                }
                let qs = rds(mem, s.hwqueues, 4 * nq)?;
                let o = self.obj(t, u32_at(&qs, 0), K::HwQueue)?;
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.fence_values, 8 * n)?;
                self.signal_msg(t, o.adapter, s.flags, 0, 0, &objs, &qs, &f)
            }
            nr::LX_DXWAITFORSYNCHRONIZATIONOBJECT => {
                let s: WaitSyncObject2 = rd(mem, arg)?;
                let n = s.object_count as usize;
                if n == 0 || n > 32 {
                    return Err(EINVAL);
                }
                let o = self.obj(t, s.context, K::Context)?;
                let f: Vec<u8> = (0..n).flat_map(|_| s.fence_value.to_le_bytes()).collect();
                let objs = &s.object_array.as_bytes()[..4 * n];
                self.wait_gpu_msg(t, o.adapter, s.context, objs, &f, true)
            }
            nr::LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU => {
                let s: WaitSyncObjectFromGpu = rd(mem, arg)?;
                let n = s.object_count as usize;
                if n == 0 || n > 131072 {
                    return Err(EINVAL);
                }
                let o = self.obj(t, s.context, K::Context)?;
                let objs = rds(mem, s.objects, 4 * n)?;
                let monitored = self.obj(t, u32_at(&objs, 0), K::SyncObject).is_ok();
                let f = if monitored {
                    rdv(mem, s.monitored_fence_values, 8 * n)?
                } else {
                    let mut v = Buf::new();
                    for _ in 0..n {
                        v.extend_from_slice(&s.monitored_fence_values.to_le_bytes());
                    }
                    v
                };
                self.wait_gpu_msg(t, o.adapter, s.context, &objs, &f, false)
            }
            nr::LX_DXSUBMITWAITFORSYNCOBJECTSTOHWQUEUE => {
                let s: SubmitWaitForSyncObjectsToHwQueue = rd(mem, arg)?;
                let n = s.object_count as usize;
                if n == 0 || n > 32 {
                    return Err(EINVAL);
                }
                let o = self.obj(t, s.hwqueue, K::HwQueue)?;
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.fence_values, 8 * n)?;
                self.wait_gpu_msg(t, o.adapter, s.hwqueue, &objs, &f, false)
            }
            nr::LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU => {
                let s: WaitSyncObjectFromCpu = rd(mem, arg)?;
                let d = self.obj(t, s.device, K::Device)?;
                let n = s.object_count as usize;
                if n == 0 || n > 131072 {
                    return Err(EINVAL);
                }
                let objs = rds(mem, s.objects, 4 * n)?;
                let f = rds(mem, s.fence_values, 8 * n)?;
                self.host_event_id += 1;
                let ev = self.host_event_id;
                self.events.block(ev, t);
                let mut c = WaitSyncObjectFromCpuCmd::zeroed();
                c.device = s.device;
                c.object_count = n as u32;
                c.flags = s.flags;
                c.guest_event_pointer = ev;
                let r = self.send_st(t, d.adapter, 22, &[&c.as_bytes()[24..56], &objs, &f], false);
                match r {
                    Ok(r) if r >= 0 && s.async_event == 0 => self.block_on_event(ev),
                    // async_event: the eventfd would be signalled later; the ioctl returns
                    // now. A failed wait stays registered too.
                    _ => {
                        self.events.park();
                        r
                    }
                }
            }
            nr::LX_DXENUMPROCESSES => {
                let mut s: EnumProcesses = rd(mem, arg)?;
                let luid = s.adapter_luid[0] as u64 | (s.adapter_luid[1] as u64) << 32;
                let a = self
                    .adapters
                    .iter()
                    .position(|x| x.spec.luid == luid)
                    .ok_or(EINVAL)?;
                let mut pids: Vec<u32> = self
                    .procs
                    .iter()
                    .filter(|p| p.adapters.values().any(|x| *x == a))
                    .map(|p| p.tgid)
                    .collect();
                pids.sort();
                let need = pids.len() as u64;
                if s.buffer == 0 || s.buffer_count < need {
                    s.buffer_count = (s.buffer_count & !0xffff_ffff) | need;
                    wr(mem, arg, s.as_bytes())?;
                    return Err(-(libc::EOVERFLOW as i64));
                }
                let b: Vec<u8> = pids.iter().flat_map(|p| p.to_le_bytes()).collect();
                wr(mem, s.buffer, &b)?;
                s.buffer_count = (s.buffer_count & !0xffff_ffff) | need;
                wr(mem, arg, s.as_bytes())?;
                Ok(0)
            }
            nr::LX_DXSHAREOBJECTWITHHOST => {
                let mut s: ShareObjectWithHost = rd(mem, arg)?;
                self.obj(t, s.device_handle, K::Device)?;
                let mut c = ShareObjectWithHostCmd::zeroed();
                c.device_handle = s.device_handle;
                c.object_handle = s.object_handle;
                let r = self.send(
                    Some(t),
                    Target::Global,
                    1021,
                    &[&c.as_bytes()[24..]],
                    16,
                    false,
                    false,
                )?;
                let rr = ShareObjectWithHostReturn::from_bytes(&r);
                let ret = ntstatus_to_errno(rr.status as u32) as i64;
                if ret >= 0 {
                    s.object_vail_nt_handle = rr.vail_nt_handle;
                    wr(mem, arg, s.as_bytes())?;
                }
                Ok(ret)
            }
            _ => self.not_emulated(name),
        }
    }

    fn write_adapters(
        &mut self,
        t: u32,
        list: &[usize],
        addr: u64,
        mem: &mut Mem,
    ) -> Result<(), i64> {
        for (i, a) in list.iter().enumerate() {
            let h = self.open_adapter(t, *a);
            let l = self.adapters[*a].spec.luid;
            let info = AdapterInfo {
                adapter_handle: h,
                adapter_luid: [l as u32, (l >> 32) as u32],
                num_sources: 0,
                present_move_regions_preferred: 0,
            };
            wr(mem, elem(addr, 20, i)?, info.as_bytes())?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn signal_msg(
        &mut self,
        t: u32,
        a: usize,
        flags: u32,
        fence_value: u64,
        union_: u64,
        objs: &[u8],
        ctxs: &[u8],
        fences: &[u8],
    ) -> R {
        for h in handles(objs) {
            self.obj(t, h, K::SyncObject)?;
        }
        let mut c = SignalSyncObjectCmd::zeroed();
        c.object_count = (objs.len() / 4) as u32;
        c.flags = flags;
        c.context_count = (ctxs.len() / 4) as u32;
        c.fence_value = fence_value;
        c.cpu_event_handle = union_;
        self.send_st(t, a, 26, &[&c.as_bytes()[24..], objs, ctxs, fences], true)
    }

    fn wait_gpu_msg(
        &mut self,
        t: u32,
        a: usize,
        ctx: u32,
        objs: &[u8],
        fences: &[u8],
        legacy: bool,
    ) -> R {
        let n = objs.len() / 4;
        if n > 32 {
            // The VMBus path rejects more than D3DDDI_MAX_OBJECT_WAITED_ON.
            return Err(EINVAL);
        }
        // 40 + 12n bytes (§6.3): fence_values at body offset 40, then the handles.
        let mut c = WaitSyncObjectFromGpuCmd::zeroed();
        c.context = ctx;
        c.object_count = n as u32;
        c.legacy_fence_object = legacy as u8;
        self.send_st(t, a, 25, &[&c.as_bytes()[24..40], fences, objs], true)
    }

    /// Blocks until the host signals `ev`: virtual time jumps to each pending GPU
    /// completion; with nothing left that could signal it, the wait is a bounded hang.
    /// The send that registered the wait has just taken in what the host queued (a fence
    /// already reached is signalled by then), so the event is checked first.
    fn block_on_event(&mut self, ev: u64) -> R {
        loop {
            if self.events.signalled(ev) {
                self.events.remove(ev);
                return Ok(0);
            }
            let bus = &*self.bus;
            let next = bus.host.borrow_mut().next_completion();
            match next {
                Some(tn) => {
                    bus.clock.advance_to(tn);
                    bus.host
                        .borrow_mut()
                        .advance(tn, &mut bus.inbound.borrow_mut());
                }
                None => {
                    bus.clock.advance(self.hang_bound_ns);
                    self.events.remove(ev);
                    self.bus.annotate(
                        "hang",
                        format!(
                            "WAITFORSYNCOBJECTFROMCPU: host event {ev} was never signalled after {} ms; the real \
                             driver blocks until a signal arrives (-ERESTARTSYS when interrupted), the emulator \
                             fails the ioctl with -ETIMEDOUT",
                            self.hang_bound_ns / 1_000_000
                        ),
                    );
                    return Err(-(libc::ETIMEDOUT as i64));
                }
            }
            self.after_send();
        }
    }

    fn create_allocation(&mut self, t: u32, arg: u64, mem: &mut Mem) -> R {
        let mut s: CreateAllocation = rd(mem, arg)?;
        let d = self.obj(t, s.device, K::Device)?;
        let n = s.alloc_count as usize;
        if n == 0 || n > 1024 {
            return Err(EINVAL);
        }
        let std_alloc = s.flags & (1 << 16) != 0;
        let mut infos: Vec<AllocationInfo2> = Vec::with_capacity(n);
        for i in 0..n {
            infos.push(rd(mem, elem(s.allocation_info, 96, i)?)?);
        }
        let sysmem = infos.iter().filter(|i| i.sysmem != 0).count();
        if sysmem != 0 && sysmem != n {
            return Err(EINVAL);
        }
        let std_blob = if std_alloc {
            let sa: CreateStandardAllocation = rd(mem, s.priv_drv_data)?;
            if sa.type_ != 1
                || sa.existing_heap_size == 0
                || !sa.existing_heap_size.is_multiple_of(4096)
                || sysmem == 0
            {
                // The raw-NTSTATUS quirk: STATUS_INVALID_PARAMETER as the ioctl value.
                return Ok(crate::ntstatus::STATUS_INVALID_PARAMETER as i32 as i64);
            }
            self.bus.annotate("not-emulated", "CREATEALLOCATION with a standard allocation: DDIGETSTANDARDALLOCATIONDRIVERDATA is not emulated".into());
            return Err(-(libc::EOPNOTSUPP as i64));
        } else {
            rdv(mem, s.priv_drv_data, s.priv_drv_data_size as usize)?
        };
        let rt = rdv(
            mem,
            s.private_runtime_data,
            s.private_runtime_data_size as usize,
        )?;
        let mut total = 0usize;
        let mut privs = Vec::new();
        let mut ai = Vec::new();
        for i in &infos {
            if i.priv_drv_data_size as usize >= 131072 {
                return Err(EINVAL);
            }
            total += i.priv_drv_data_size as usize;
            privs.push(rdv(mem, i.priv_drv_data, i.priv_drv_data_size as usize)?);
            ai.extend_from_slice(
                CreateAllocationAllocInfo {
                    flags: i.flags,
                    priv_drv_data_size: i.priv_drv_data_size,
                    vidpn_source_id: i.vidpn_source_id,
                }
                .as_bytes(),
            );
        }
        if total >= 131072 {
            return Err(EINVAL);
        }
        let mut c = CreateAllocationCmd::zeroed();
        c.device = s.device;
        c.resource = s.resource;
        c.private_runtime_data_size = s.private_runtime_data_size;
        c.priv_drv_data_size = s.priv_drv_data_size;
        c.alloc_count = n as u32;
        c.flags = s.flags;
        c.private_runtime_resource_handle = s.private_runtime_resource_handle;
        let pj: Vec<u8> = privs.iter().flat_map(|p| p.iter().copied()).collect();
        let body: &[&[u8]] = &[&c.as_bytes()[24..], &ai, &rt, &std_blob, &pj];
        let rsize = 16 + 72 * n + total;
        let r = self.send(
            Some(t),
            Target::Adapter(d.adapter),
            4,
            body,
            rsize,
            false,
            false,
        )?;
        let resource = u32_at(&r, 4);
        let handles: Vec<u32> = (0..n).map(|i| u32_at(&r, 16 + 72 * i)).collect();
        if handles.contains(&0) || (s.flags & 1 != 0 && resource == 0) {
            // Rollback: DESTROYALLOCATION for what the host did create.
            let made: Vec<u32> = handles.iter().copied().filter(|h| *h != 0).collect();
            if !made.is_empty() || resource != 0 {
                let mut dc = DestroyAllocationCmd::zeroed();
                dc.device = s.device;
                dc.resource = resource;
                dc.alloc_count = made.len() as u32;
                let hb = le_bytes(made.iter(), made.len());
                let _ = self.send_st(t, d.adapter, 5, &[&dc.as_bytes()[24..40], &hb], false);
            }
            return Err(-(libc::ENOMEM as i64));
        }
        let mut off = 16 + 72 * n;
        for (i, info) in infos.iter_mut().enumerate() {
            info.allocation = handles[i];
            let sz = info.priv_drv_data_size as usize;
            wr(mem, info.priv_drv_data, &r[off..off + sz])?;
            off += sz;
            wr(mem, elem(s.allocation_info, 96, i)?, info.as_bytes())?;
            self.reg(t, handles[i], K::Allocation, d.adapter, s.device);
        }
        if sysmem != 0 {
            for h in &handles {
                let mut c = SetExistingSysmemStoreCmd::zeroed();
                c.device = s.device;
                c.allocation = *h;
                c.gpadl = 0x1000 + *h % 0x1000;
                let _ = self.send_st(t, d.adapter, 45, &[&c.as_bytes()[24..]], false);
            }
        }
        if s.flags & 1 != 0 {
            self.reg(t, resource, K::Resource, d.adapter, s.device);
            self.procs
                .get_mut(t)
                .expect("process")
                .objs
                .get_mut(resource)
                .expect("registered")
                .children = handles;
            s.resource = resource;
        }
        wr(mem, arg, s.as_bytes())?;
        Ok(0)
    }
}

fn capture(
    mem: &Mem,
    e: &crate::schema::IoctlDesc,
    arg: u64,
    size: usize,
    entry: bool,
    out: &mut Vec<BufEvent>,
) {
    let st = mem.read_vec(arg, size);
    let (data, unreadable) = match st {
        Ok(d) => (d, false),
        Err(_) => (Vec::new(), true),
    };
    out.push(BufEvent {
        addr: arg,
        role: if entry {
            BufRole::StructIn
        } else {
            BufRole::StructOut
        },
        path: String::new(),
        len: size as u64,
        data: data.clone(),
        unreadable,
    });
    if unreadable {
        return;
    }
    let mut rdf = |a: u64, l: usize| mem.read_vec(a, l).ok();
    for b in walk_pointers(e, arg, &data, &mut rdf) {
        if (entry && !b.dir.is_in()) || (!entry && !b.dir.is_out()) || b.unknown_len {
            continue;
        }
        let d = mem.read_vec(b.addr, b.len as usize);
        out.push(BufEvent {
            addr: b.addr,
            role: if entry {
                BufRole::PtrIn
            } else {
                BufRole::PtrOut
            },
            path: b.path,
            len: b.len,
            unreadable: d.is_err(),
            data: d.unwrap_or_default(),
        });
    }
}
