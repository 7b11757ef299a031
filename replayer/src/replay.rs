//! The replay engine: records in, ioctls through a [`Backend`], divergences out.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driver_core::Backend;
use driver_core::decode::decode_value;
use driver_core::layout::{read_uint, sign_extend};
use driver_core::ntstatus::render_return;
use driver_core::schema::{
    Device, Effect, HandleType, IoctlClass, IoctlDesc, Loc, desc_path_of, find_pointer,
    lookup_code, lookup_name,
};
use serde::Serialize;
use traces::{BufferRole, FdEvent, FdOp, IoctlRecord, Record};

use crate::call::{self, CallPlan, Mem};
use crate::error::ReplayError;
use crate::mem::{CallBuf, Region};
use crate::order::{OrderKey, Window};
use crate::plan::{Class, Leaf, Plan, PlanCache};

// Integer-keyed live maps (handle values, fds): SipHash's per-lookup cost showed in the
// replay profile. The keys come from the trace.
use driver_core::inthash::{IntMap, IntSet};

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Back to back.
    #[default]
    Fast,
    /// Keep the recorded gaps between calls (from their entry timestamps).
    Original,
}

/// What the ioctls are sent to. Replaying against a real device is only ever explicit:
/// it is this variant, chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An in-process backend (the emulator, a fake): opens go to the backend with the
    /// recorded path.
    InProcess,
    /// A real device node (or the FUSE-emulated one): every recorded open of a device
    /// opens this path. Ioctls not in the device's table are refused unless
    /// [`ReplayOptions::allow_unknown`].
    Device(PathBuf),
}

/// What the in-process emulator's driver logic talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMode {
    /// The emulator's fake host GPU, configured from the trace header.
    #[default]
    Fake,
    /// The trace's recorded VMBus replies; the requests the driver logic sends are
    /// compared with the recorded ones (offline driver-in-the-loop,
    /// [`crate::recorded_host`]).
    Recorded,
}

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where ioctls go.
    pub target: Target,
    /// Stop at the first divergence.
    pub strict: bool,
    /// Pacing.
    pub pace: Pace,
    /// First call index (0-based, counting ioctl records) to compare. Earlier calls still
    /// run — they create the handles and fds later calls use — but are not compared.
    pub from: Option<u64>,
    /// Last call index to run (inclusive); later records are not replayed.
    pub to: Option<u64>,
    /// Send ioctls that no device table knows to a real device.
    pub allow_unknown: bool,
    /// With the in-process emulator: its host (see [`crate::replay_file_on_emulator`]).
    pub host: HostMode,
    /// Divergences kept in full in the report; later ones are only counted
    /// ([`Report::divergences_total`]), so a badly diverging long trace cannot exhaust
    /// memory.
    pub max_divergences: usize,
}

/// Default of [`ReplayOptions::max_divergences`].
pub const DEFAULT_MAX_DIVERGENCES: usize = 10_000;

impl ReplayOptions {
    /// Defaults for a target: not strict, fast, everything, unknown ioctls refused.
    pub fn new(target: Target) -> Self {
        ReplayOptions {
            target,
            strict: false,
            pace: Pace::Fast,
            from: None,
            to: None,
            allow_unknown: false,
            host: HostMode::Fake,
            max_divergences: DEFAULT_MAX_DIVERGENCES,
        }
    }
}

/// One difference between the recorded and the replayed result of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Call index (0-based, counting ioctl records in file order).
    pub call: u64,
    /// The record's capture id.
    pub id: u64,
    /// Ioctl name (`KVM_GET_REGS`, `LX_DXCREATEALLOCATION`, `UNKNOWN(0x…)`).
    pub ioctl: String,
    /// Field path: `return`, `out.<field>`, `<pointer path>[i].<field>`.
    pub field: String,
    /// Recorded value, decoded.
    pub recorded: String,
    /// Replayed value, decoded.
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} {}: {}: recorded {}, replayed {}",
            self.call, self.ioctl, self.field, self.recorded, self.replayed
        )
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Ioctls issued.
    pub calls: u64,
    /// Ioctls whose results were compared.
    pub compared: u64,
    /// fd opens / closes replayed.
    pub fd_events: u64,
    /// Differences found, in call order: the first [`ReplayOptions::max_divergences`].
    pub divergences: Vec<Divergence>,
    /// Differences found in all, kept or not (`divergences.len()` when none were dropped).
    pub divergences_total: u64,
    /// Strict mode stopped at the first divergence.
    pub stopped_early: bool,
    /// Wall time of the replay loop.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    /// Sum of the recorded ioctl durations (exit − entry) of the calls issued.
    pub recorded_ioctl_ns: u64,
    /// Sum of the replayed ioctl durations (time inside `Backend::ioctl`), filled in by
    /// [`Replayer::finish`] (timed with the TSC where the kernel trusts it, see
    /// `ticks.rs`).
    pub replayed_ioctl_ns: u64,
    /// Remarks (implicit opens, skipped records…).
    pub notes: Vec<String>,
    /// Driver-in-the-loop: VMBus requests the driver logic sent, and how many the trace
    /// recorded (`None` with the fake host). Differences are in `divergences`.
    pub vmbus_messages: Option<(u64, u64)>,
    /// The pacing used.
    pub pace: Pace,
    /// [`Pace::Original`]: records the replay held back to keep the recorded gap.
    pub pace_waits: u64,
    /// [`Pace::Original`]: the least and the most, over the records, that a record was
    /// issued after its recorded offset (`issued − recorded`, ns, both measured from the
    /// first record). Pacing never issues a record early, so the least is ≥ 0; the most
    /// is how far behind the recorded schedule the replay fell.
    pub pace_lag_ns: Option<(u64, u64)>,
}

impl Report {
    /// True if any divergence was found (kept or only counted).
    pub fn diverged(&self) -> bool {
        self.divergences_total > 0
    }

    /// Divergences found but not kept in `divergences`.
    pub fn divergences_dropped(&self) -> u64 {
        self.divergences_total - self.divergences.len() as u64
    }

    fn add_divergence(&mut self, d: Divergence, keep: usize) {
        self.divergences_total += 1;
        if self.divergences.len() < keep {
            self.divergences.push(d);
        }
    }
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Report {
    /// Calls per second over the replay loop.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.calls as f64 / s } else { 0.0 }
    }
}

/// A recorded object: a handle value or an fd number, as the capture saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Obj {
    Handle(u64),
    Fd(i64),
}

impl Obj {
    /// Recorded value `v` of a handle or fd field.
    #[inline]
    fn of(v: u64, is_fd: bool) -> Obj {
        if is_fd {
            Obj::Fd(v as i64)
        } else {
            Obj::Handle(v)
        }
    }
}

/// One integer per key (the derived impl hashed the variant, then the value: two rounds
/// of the hasher on every live-map lookup). A handle and an fd may hash alike (`Eq`
/// tells them apart); fd numbers are small and handles large, so they rarely do.
impl std::hash::Hash for Obj {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match *self {
            Obj::Handle(v) => h.write_u64(v),
            Obj::Fd(f) => h.write_u64(!(f as u64)),
        }
    }
}

#[derive(Debug)]
struct Live {
    replayed: u64,
    ty: HandleType,
    creator: Option<u64>,
    parents: Parents,
}

/// The replay values of the last few objects the remap loop found in `live`, emptied
/// whenever `live` changes: a frame's calls use the same few handles (a context, a
/// device, a fence) call after call, and a hit here is a few compares instead of a
/// hash-map probe (~30 instructions). Objects whose value does not fit the key (≥ 2^62,
/// negative fds) are not kept.
#[derive(Default)]
struct Recent {
    /// `(key, replay value)`; key 0 is an empty slot.
    slots: [(u64, u64); 4],
    next: usize,
}

impl Recent {
    #[inline]
    fn key(o: Obj) -> u64 {
        match o {
            Obj::Handle(v) if v < 1 << 62 => v << 2 | 1,
            Obj::Fd(f) if (0..1 << 62).contains(&f) => (f as u64) << 2 | 2,
            _ => 0,
        }
    }

    /// The replay value `o` maps to in `live`, if it is live.
    #[inline]
    fn get(&mut self, live: &IntMap<Obj, Live>, o: Obj) -> Option<u64> {
        let key = Self::key(o);
        if key != 0
            && let Some(&(_, v)) = self.slots.iter().find(|s| s.0 == key)
        {
            return Some(v);
        }
        let v = live.get(&o)?.replayed;
        if key != 0 {
            self.slots[self.next % 4] = (key, v);
            self.next = self.next.wrapping_add(1);
        }
        Some(v)
    }

    #[inline]
    fn clear(&mut self) {
        self.slots = [(0, 0); 4];
    }
}

/// How many lineage parents a [`Parents`] holds without allocating.
const INLINE_PARENTS: usize = 4;

/// The lineage parents of a live object: the fd its creating call was issued on and the
/// handles that call used. Nearly always a few (an fd, a device, a context): those are
/// kept inline, so mapping a created handle allocates nothing (a `Vec` per creation
/// was ~130 instructions of malloc / free).
#[derive(Debug, Clone)]
enum Parents {
    Inline(u8, [Obj; INLINE_PARENTS]),
    Heap(Vec<Obj>),
}

impl Parents {
    fn of(p: &[Obj]) -> Parents {
        if p.len() <= INLINE_PARENTS {
            // Element by element (a `copy_from_slice` of a few is a `memcpy` call).
            let mut a = [Obj::Fd(0); INLINE_PARENTS];
            for (d, s) in a.iter_mut().zip(p) {
                *d = *s;
            }
            Parents::Inline(p.len() as u8, a)
        } else {
            Parents::Heap(p.to_vec())
        }
    }

    fn push(&mut self, o: Obj) {
        match self {
            Parents::Inline(n, a) if (*n as usize) < INLINE_PARENTS => {
                a[*n as usize] = o;
                *n += 1;
            }
            Parents::Inline(n, a) => {
                let mut v = a[..*n as usize].to_vec();
                v.push(o);
                *self = Parents::Heap(v);
            }
            Parents::Heap(v) => v.push(o),
        }
    }
}

impl std::ops::Deref for Parents {
    type Target = [Obj];
    fn deref(&self) -> &[Obj] {
        match self {
            Parents::Inline(n, a) => &a[..*n as usize],
            Parents::Heap(v) => v,
        }
    }
}

/// The replay state for one trace against one backend. Feed it records in order with
/// [`Replayer::step`], or a whole iterator with [`Replayer::run`].
pub struct Replayer<B: Backend> {
    backend: B,
    opts: ReplayOptions,
    plans: PlanCache,
    live: IntMap<Obj, Live>,
    /// Reverse lineage: for each object, the objects that listed it as a parent when
    /// they were mapped (so a destroy finds its descendants without scanning `live`).
    children: IntMap<Obj, Kids>,
    /// Emptied `Kids::list` vectors, reused for the next parent (objects come and go
    /// every frame: a fresh list per parent was a malloc, a regrowth or two and a free).
    kid_lists: Vec<Vec<Obj>>,
    memory: IntMap<Obj, Vec<Region>>,
    /// `(address, length)` of every region in `memory`, rebuilt when it changes.
    memory_ranges: Vec<(u64, usize)>,
    memory_dirty: bool,
    orphans: Vec<(Obj, Vec<Region>)>,
    /// The call's argument struct and heap buffers, reused from call to call.
    scratch: CallBuf,
    /// Vectors the streaming replay binds each call into.
    spare: call::Spare,
    report: Report,
    call_index: u64,
    seen_fds: IntSet<i64>,
    /// Replay fds that more than one recorded fd maps to (a recorded dup and its
    /// original), with how many do: the fd is closed when the last of them is.
    fd_refs: IntMap<u64, u32>,
    pace0: Option<(u64, Instant)>,
    started: Instant,
    /// Clock of the time inside the backend; `ioctl_ticks` sums its intervals.
    ticks: crate::ticks::Ticks,
    ioctl_ticks: u64,
    done: bool,
    cur_id: u64,
    /// Pids of the traced processes (ioctl and fd records): they map to the backend's pid.
    traced_pids: IntSet<u32>,
    /// The last pid seen (`u64::MAX`: none yet).
    last_pid: u64,
    vmbus: Option<crate::recorded_host::VmbusCheck>,
    live_ranges: Vec<(u64, usize)>,
    /// What is in flight (names VMBus differences and errors; rendered only when one
    /// needs it, so setting it costs no string work per record).
    cur: Cur,
    /// `live_ranges` holds only the scratch buffer (when the last call had one, at index
    /// 0) and `memory_ranges`: a call without pinned regions only updates the scratch
    /// entry when `memory` has not changed.
    /// 0: rebuild; 1: plain, no scratch entry; 2: plain, scratch entry at index 0.
    ranges_plain: u8,
    /// Leaves [`Replayer::compare`] visits (reused).
    visit: Vec<usize>,
    /// The expected out struct of [`Replayer::struct_matches`] (reused).
    expect: Vec<u8>,
    /// The replay values of the call's first input handles / fds (`CallPlan::remaps`)
    /// and which of them were found in `live` (bit k: `reuse[k]` holds remap k's).
    reuse: [u64; call::REMAP_REUSE],
    reused: u32,
    /// The last few input handles / fds found in `live` (see [`Recent`]).
    recent: Recent,
    /// The last fd a call was issued on and its replay fd (cleared whenever an fd
    /// mapping changes).
    /// (`(i64::MIN, _)`: none.)
    last_fd: (i64, i32),
    /// Out structs [`Replayer::struct_matches`] found equal (tests check the fast
    /// comparison is the one that ran).
    #[cfg(test)]
    pub(crate) fast_matches: u64,
    /// Every out struct takes the field walk ([`Replayer::compare`]): tests replay
    /// both ways and expect the same outcome.
    #[cfg(test)]
    pub(crate) walk_only: bool,
    /// Out structs whose created handles [`Replayer::fast_creates`] mapped.
    #[cfg(test)]
    pub(crate) fast_creates: u64,
}

/// The children of one object (see `Replayer::children`): every object mapped with it as a
/// parent, in mapping order, some of them maybe gone or remapped since (a child counts
/// only while it is live and its `Live::parents` list the parent), and how many listings
/// are current. Kept as a list rather than a hash set: a device or fd whose children
/// come and go every frame cost a set insert and remove per creation (~190 and ~50
/// instructions, tombstones making the inserts rehash); stale entries are dropped when
/// they outnumber the current ones. An entry exists while it has current children.
#[derive(Debug, Default)]
struct Kids {
    list: Vec<Obj>,
    current: usize,
}

/// The record in flight, for naming it in errors and VMBus differences.
#[derive(Debug, Clone, Copy)]
enum Cur {
    Start,
    Call(Option<&'static IoctlDesc>, u32),
    Fd(FdOp, i32),
    End,
}

impl std::fmt::Display for Cur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Cur::Start => f.write_str("emulator start"),
            Cur::Call(Some(e), _) => f.write_str(e.name),
            Cur::Call(None, cmd) => write!(f, "UNKNOWN({cmd:#010x})"),
            Cur::Fd(FdOp::Open, fd) => write!(f, "open of fd {fd}"),
            Cur::Fd(FdOp::Close, fd) => write!(f, "close of fd {fd}"),
            Cur::Fd(FdOp::Derived, fd) => write!(f, "fd {fd}"),
            Cur::End => f.write_str("close at the end of the replay"),
        }
    }
}

enum Cmp<'a> {
    Struct,
    Buf(&'a str),
}

impl<B: Backend> Replayer<B> {
    /// A replayer over `backend`.
    pub fn new(backend: B, opts: ReplayOptions) -> Self {
        let pace = opts.pace;
        Replayer {
            backend,
            opts,
            plans: PlanCache::default(),
            live: IntMap::default(),
            children: IntMap::default(),
            kid_lists: Vec::new(),
            memory: IntMap::default(),
            memory_ranges: Vec::new(),
            memory_dirty: false,
            orphans: Vec::new(),
            scratch: CallBuf::zeroed(0),
            spare: call::Spare::default(),
            report: Report {
                pace,
                ..Report::default()
            },
            call_index: 0,
            seen_fds: Default::default(),
            fd_refs: IntMap::default(),
            pace0: None,
            started: Instant::now(),
            ticks: crate::ticks::Ticks::new(),
            ioctl_ticks: 0,
            done: false,
            cur_id: 0,
            traced_pids: Default::default(),
            last_pid: u64::MAX,
            vmbus: None,
            live_ranges: Vec::new(),
            cur: Cur::Start,
            ranges_plain: 0,
            visit: Vec::new(),
            expect: Vec::new(),
            reuse: [0; call::REMAP_REUSE],
            reused: 0,
            recent: Recent::default(),
            last_fd: (i64::MIN, 0),
            #[cfg(test)]
            fast_matches: 0,
            #[cfg(test)]
            walk_only: false,
            #[cfg(test)]
            fast_creates: 0,
        }
    }

    /// Driver-in-the-loop: differences a [`crate::recorded_host::RecordedHost`] finds
    /// in the requests are reported as divergences of the call that sent them.
    pub fn set_vmbus_check(&mut self, check: crate::recorded_host::VmbusCheck) {
        check.set_replay_pid(self.backend.pid());
        self.vmbus = Some(check);
        self.drain_vmbus();
    }

    /// Moves the recorded host's differences into the report.
    fn drain_vmbus(&mut self) {
        let Some(c) = &self.vmbus else { return };
        let diffs = c.take();
        if diffs.is_empty() {
            return;
        }
        let call = self.call_index.saturating_sub(1);
        for d in diffs {
            self.report.add_divergence(
                Divergence {
                    call,
                    id: self.cur_id,
                    ioctl: self.cur.to_string(),
                    field: format!("vmbus #{} {}: {}", d.seq, d.message, d.field),
                    recorded: d.recorded,
                    replayed: d.replayed,
                },
                self.opts.max_divergences,
            );
        }
        if self.opts.strict {
            self.report.stopped_early = true;
            self.done = true;
        }
    }

    /// The backend (e.g. to inspect an emulator after the replay).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// True once strict mode stopped or `to` was passed: further records are ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The replay value a recorded handle maps to, if it is live.
    pub fn mapped_handle(&self, recorded: u64) -> Option<u64> {
        self.live.get(&Obj::Handle(recorded)).map(|l| l.replayed)
    }

    /// The replay fd a recorded fd maps to, if it is open.
    pub fn mapped_fd(&self, recorded: i64) -> Option<i32> {
        self.live.get(&Obj::Fd(recorded)).map(|l| l.replayed as i32)
    }

    /// Replays every record of `records` in recorded order (see [`replay_order`]),
    /// calling `progress(calls)` every 4096 calls.
    ///
    /// Records arrive in file order, which is the order calls *completed* in; they are
    /// issued in the order they *entered* the driver, through a reordering window of
    /// [`REORDER_WINDOW`] records (a call that stayed in the driver while more than that
    /// many later calls completed is issued late, and a note says how many were).
    ///
    /// The records may be owned (a trace reader's) or borrowed (`&Record`, from records
    /// already in memory: nothing is cloned).
    pub fn run<I, R>(
        &mut self,
        records: I,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ReplayError>
    where
        I: IntoIterator<Item = Result<R, traces::TraceError>>,
        R: Borrow<Record>,
    {
        // As in `run_plan`: the scratch buffer is held here for the whole run.
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.run_with(records, progress, &mut scratch);
        self.scratch = scratch;
        r
    }

    fn run_with<I, R>(
        &mut self,
        records: I,
        progress: &mut dyn FnMut(u64),
        scratch: &mut CallBuf,
    ) -> Result<(), ReplayError>
    where
        I: IntoIterator<Item = Result<R, traces::TraceError>>,
        R: Borrow<Record>,
    {
        let mut window = Window::new(self.call_index, self.opts.to);
        let mut last_progress = u64::MAX;
        let mut records = records.into_iter();
        loop {
            if self.done {
                break;
            }
            let next = if window.stopped_at_to {
                None
            } else {
                records.next().transpose()?
            };
            // A record in: release one only when the window is over full. None left:
            // release what is queued.
            if let Some(rec) = next
                && !window.push(rec)
            {
                continue;
            }
            let Some((idx, rec)) = window.pop() else {
                break;
            };
            prefetch_ahead(&window);
            match rec.borrow() {
                Record::Ioctl(io) => self.call(idx, io, None, scratch)?,
                other => self.step(other)?,
            }
            if self.report.calls.is_multiple_of(4096) && self.report.calls != last_progress {
                last_progress = self.report.calls;
                progress(self.report.calls);
            }
        }
        self.end_stream(window.calls, window.stopped_at_to, window.late, progress);
        Ok(())
    }

    /// The end of a streaming replay ([`Replayer::run`]): `calls` ioctl records were
    /// read, `stopped_at_to` if reading stopped at `--to`, `late` records were issued out
    /// of recorded order.
    fn end_stream(
        &mut self,
        calls: u64,
        stopped_at_to: bool,
        late: u64,
        progress: &mut dyn FnMut(u64),
    ) {
        self.call_index = calls;
        if stopped_at_to && !self.done {
            self.done = true;
        }
        if let Some(note) = Window::<Record>::late_note(late) {
            self.report.notes.push(note);
        }
        progress(self.report.calls);
    }

    /// Replays a compiled trace ([`ReplayPlan`]): the same as [`Replayer::run`] over its
    /// records, with the per-call work that does not depend on the replay's state
    /// (pointer layout, buffer images, handle-field offsets, comparison plans) done
    /// before, in [`ReplayPlan::new`].
    pub fn run_plan(
        &mut self,
        plan: &ReplayPlan<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ReplayError> {
        // The scratch buffer is held here for the whole run (not taken out of `self`
        // and put back around every call).
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.run_plan_with(plan, progress, &mut scratch);
        self.scratch = scratch;
        r
    }

    fn run_plan_with(
        &mut self,
        plan: &ReplayPlan<'_>,
        progress: &mut dyn FnMut(u64),
        scratch: &mut CallBuf,
    ) -> Result<(), ReplayError> {
        for (n, item) in plan.items.iter().enumerate() {
            if self.done {
                break;
            }
            if let Some(next) = plan.items.get(n + 1) {
                next.prefetch();
            }
            match item {
                Item::Fd(rec) => self.step(rec)?,
                Item::Call(idx, rec, cp) => self.call(*idx, rec, Some(cp), scratch)?,
            }
            if n % 4096 == 4095 {
                progress(self.report.calls);
            }
        }
        self.call_index = self.call_index.max(plan.calls);
        progress(self.report.calls);
        Ok(())
    }

    /// Closes every fd the replay still holds and returns the report.
    pub fn finish(mut self) -> Report {
        // The ticks' calibration window lies inside `elapsed`'s, so the time inside the
        // backend never exceeds the replay's.
        self.report.replayed_ioctl_ns = self.ticks.ns(self.ioctl_ticks);
        self.report.elapsed = self.started.elapsed();
        self.cur = Cur::End;
        // A dup and its original map to one fd: close it once.
        let mut fds: Vec<u64> = self
            .live
            .iter()
            .filter(|(o, _)| matches!(o, Obj::Fd(_)))
            .map(|(_, l)| l.replayed)
            .collect();
        fds.sort_unstable();
        fds.dedup();
        // Mappings first (they pin the fds' objects), then the fds.
        self.memory.clear();
        self.memory_dirty = true;
        self.orphans.clear();
        for fd in fds {
            let _ = self.backend.close(fd as i32);
        }
        if self.vmbus.is_some() {
            let done = self.done;
            self.done = false;
            self.drain_vmbus();
            self.done = done;
        }
        if let Some(c) = &self.vmbus {
            let (sent, recorded) = (c.sent(), c.recorded());
            self.report.vmbus_messages = Some((sent, recorded));
            // Stopping early (`--to`, `--strict`) legitimately leaves messages unsent.
            if sent < recorded && !self.done {
                let d = Divergence {
                    call: self.call_index.saturating_sub(1),
                    id: self.cur_id,
                    ioctl: self.cur.to_string(),
                    field: "vmbus".into(),
                    recorded: format!("{recorded} guest→host messages"),
                    replayed: format!("{sent} sent by the driver logic"),
                };
                self.report.add_divergence(d, self.opts.max_divergences);
            }
        }
        self.report
    }

    /// Replays one record. Non-ioctl, non-fd records are skipped.
    pub fn step(&mut self, rec: &Record) -> Result<(), ReplayError> {
        if self.done {
            return Ok(());
        }
        match rec {
            Record::Fd(ev) => {
                self.note_pid(ev.pid);
                self.cur = Cur::Fd(ev.op, ev.fd);
                let r = self.fd_event(ev);
                self.drain_vmbus();
                r
            }
            Record::Ioctl(io) => {
                let idx = self.call_index;
                self.call_index += 1;
                if self.opts.to.is_some_and(|to| idx > to) {
                    self.done = true;
                    return Ok(());
                }
                let mut scratch = std::mem::take(&mut self.scratch);
                let r = self.call(idx, io, None, &mut scratch);
                self.scratch = scratch;
                r
            }
            _ => Ok(()),
        }
    }

    fn note_pid(&mut self, pid: u32) {
        if self.last_pid != pid as u64 {
            self.traced_pids.insert(pid);
            self.last_pid = pid as u64;
        }
    }

    /// Replays ioctl record `io`, call `idx`, compiled now unless `plan` is given.
    fn call(
        &mut self,
        idx: u64,
        io: &IoctlRecord,
        plan: Option<&CallPlan<'_>>,
        scratch: &mut CallBuf,
    ) -> Result<(), ReplayError> {
        self.note_pid(io.pid);
        if self.opts.to.is_some_and(|to| idx > to) {
            return Ok(());
        }
        if self.opts.pace == Pace::Original {
            self.pace(io.ts_enter);
        }
        // One call site of `ioctl` (inlined here): the plan given, or one compiled now
        // into the spare vectors, which get them back after.
        let mut compiled = None;
        let p = match plan {
            Some(p) => p,
            None => &*compiled.insert(match lookup_code(io.cmd) {
                Some(e) => call::compile_with(e, io, &mut self.plans, &mut self.spare),
                None => call::compile_unknown(io),
            }),
        };
        let r = self.ioctl(idx, io, p, scratch);
        if let Some(c) = compiled {
            self.spare.recycle(c);
        }
        if self.vmbus.is_some() {
            self.drain_vmbus();
        }
        // A fresh `Ok` rather than a move of `r` (as large as a `ReplayError`).
        if r.is_ok() { Ok(()) } else { r }
    }

    fn pace(&mut self, ts: u64) {
        if self.opts.pace != Pace::Original || ts == 0 {
            return;
        }
        let (t0, start) = *self.pace0.get_or_insert((ts, Instant::now()));
        let recorded = Duration::from_nanos(ts.saturating_sub(t0));
        let due = start + recorded;
        let mut now = Instant::now();
        if due > now {
            self.report.pace_waits += 1;
            // `sleep` may wake early on some platforms: wait until the offset is reached.
            while now < due {
                std::thread::sleep(due - now);
                now = Instant::now();
            }
        }
        let lag = (now - start).saturating_sub(recorded).as_nanos() as u64;
        let l = self.report.pace_lag_ns.get_or_insert((lag, lag));
        *l = (l.0.min(lag), l.1.max(lag));
    }

    fn open_path<'a>(&'a self, recorded: &'a str) -> &'a Path {
        match &self.opts.target {
            Target::Device(p) => p,
            Target::InProcess => Path::new(recorded),
        }
    }

    fn fd_event(&mut self, ev: &FdEvent) -> Result<(), ReplayError> {
        self.pace(ev.ts);
        match ev.op {
            FdOp::Open => {
                if ev.ret < 0 || ev.fd < 0 {
                    return Ok(()); // the open failed in the capture: nothing to recreate
                }
                // Borrowed from the record for an in-process target (no copy per open).
                let path: std::borrow::Cow<'_, Path> = match &self.opts.target {
                    Target::Device(p) => std::borrow::Cow::Owned(p.clone()),
                    Target::InProcess => std::borrow::Cow::Borrowed(Path::new(&ev.path)),
                };
                let flags = if ev.flags == 0 {
                    libc::O_RDWR
                } else {
                    ev.flags as i32 & !libc::O_CLOEXEC
                };
                let fd = self
                    .backend
                    .open(&path, flags)
                    .map_err(|source| ReplayError::Open {
                        path: path.display().to_string(),
                        fd: ev.fd,
                        source,
                    })?;
                self.seen_fds.insert(ev.fd as i64);
                self.forget(Obj::Fd(ev.fd as i64), false);
                self.set_live(
                    Obj::Fd(ev.fd as i64),
                    Live {
                        replayed: fd as u64,
                        ty: HandleType::Any,
                        creator: None,
                        parents: Parents::of(&[]),
                    },
                );
                self.report.fd_events += 1;
            }
            FdOp::Close => {
                self.seen_fds.insert(ev.fd as i64);
                if self.close_recorded_fd(ev.fd as i64) {
                    self.report.fd_events += 1;
                }
            }
            FdOp::Derived => {
                self.seen_fds.insert(ev.fd as i64);
                // A copy (dup, dup2, dup3, F_DUPFD) of a mapped fd, `dup:OLD` in the trace:
                // it maps to the same replay fd, which stays open until the last recorded
                // fd mapping to it is closed. Any other derived fd came from an ioctl the
                // replay issues itself; the mapping is made there.
                let src = ev
                    .path
                    .strip_prefix("dup:")
                    .and_then(|s| s.parse::<i64>().ok());
                if let Some(src) = src
                    && src != ev.fd as i64
                    && let Some(orig) = self.live.get(&Obj::Fd(src))
                {
                    let (replayed, ty, creator) = (orig.replayed, orig.ty, orig.creator);
                    // The original's lineage (a vCPU made on a copy of a VM fd finds the
                    // system fd through it), and the original itself, so memory it owns
                    // outlives it while the copy is open.
                    let mut parents = orig.parents.clone();
                    parents.push(Obj::Fd(src));
                    // dup2 / dup3 onto an open descriptor closes it first.
                    self.close_recorded_fd(ev.fd as i64);
                    *self.fd_refs.entry(replayed).or_insert(1) += 1;
                    self.set_live(
                        Obj::Fd(ev.fd as i64),
                        Live {
                            replayed,
                            ty,
                            creator,
                            parents,
                        },
                    );
                    self.report.fd_events += 1;
                }
            }
        }
        Ok(())
    }

    /// Closes recorded fd `fd`: drops its mapping and closes the replay fd unless another
    /// recorded fd (a dup) still maps to it. False if `fd` was not mapped.
    fn close_recorded_fd(&mut self, fd: i64) -> bool {
        if !self.live.contains_key(&Obj::Fd(fd)) {
            return false;
        }
        self.forget(Obj::Fd(fd), false);
        true
    }

    /// One recorded fd no longer maps to replay fd `replayed`: it is closed unless another
    /// recorded fd (a dup) still maps to it.
    fn release_fd(&mut self, replayed: u64) {
        let last = match self.fd_refs.get_mut(&replayed) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.fd_refs.remove(&replayed);
                true
            }
            None => true,
        };
        if last {
            let _ = self.backend.close(replayed as i32);
        }
    }

    /// Drops a mapping (and, for destroyed handles, every object created under it), and
    /// frees memory whose owner and owner's descendants are all gone. A dropped fd
    /// mapping counts its replay fd down (closed with its last mapping) however it goes:
    /// a recorded close, a cascade from a destroyed parent, or its number reused by a
    /// later open or returned fd without a recorded close (the capture missed it).
    fn forget(&mut self, o: Obj, cascade: bool) {
        if let Obj::Fd(_) = o {
            self.last_fd = (i64::MIN, 0);
        }
        self.recent.clear();
        let Some(gone) = self.live.remove(&o) else {
            return;
        };
        self.unlink(&gone.parents);
        if !self.memory.is_empty()
            && let Some(m) = self.memory.remove(&o)
        {
            self.orphans.push((o, m));
            self.memory_dirty = true;
        }
        if cascade && let Some(kids) = self.children.get(&o) {
            // Stale entries are skipped by `forget` itself: only live children listing
            // `o` are current, and a child listed twice is gone after the first.
            let mut list = self.kid_lists.pop().unwrap_or_default();
            list.extend(
                kids.list
                    .iter()
                    .copied()
                    .filter(|k| self.live.get(k).is_some_and(|l| l.parents.contains(&o))),
            );
            for &k in &list {
                self.forget(k, true);
            }
            self.keep_kid_list(list);
        }
        // A VM's guest memory must outlive the VM fd while vCPU fds created from it are open.
        if !self.orphans.is_empty() {
            let children = &self.children;
            self.orphans
                .retain(|(x, _)| children.get(x).is_some_and(|k| k.current > 0));
        }
        if let Obj::Fd(_) = o {
            self.release_fd(gone.replayed);
        }
    }

    /// Maps `o`, keeping the reverse lineage index (`children`) current.
    fn set_live(&mut self, o: Obj, l: Live) {
        for p in l.parents.iter() {
            let kids = self.children.entry(*p).or_insert_with(|| Kids {
                list: self.kid_lists.pop().unwrap_or_default(),
                current: 0,
            });
            kids.list.push(o);
            kids.current += 1;
            if kids.list.len() > 2 * kids.current + 8 {
                // Compact: keep each current child once (`o` is about to be live).
                let live = &self.live;
                let mut seen = IntSet::default();
                kids.list.retain(|k| {
                    (*k == o || live.get(k).is_some_and(|l| l.parents.contains(p)))
                        && seen.insert(*k)
                });
            }
        }
        if let Obj::Fd(_) = o {
            self.last_fd = (i64::MIN, 0);
        }
        self.recent.clear();
        if let Some(old) = self.live.insert(o, l) {
            self.unlink(&old.parents);
        }
    }

    /// Keeps an emptied children list for reuse (a bounded number of them).
    fn keep_kid_list(&mut self, mut list: Vec<Obj>) {
        if self.kid_lists.len() < 64 {
            list.clear();
            self.kid_lists.push(list);
        }
    }

    /// One listing of a child in each of `parents` is no longer current.
    fn unlink(&mut self, parents: &[Obj]) {
        for p in parents {
            // One probe: the entry is removed through the handle that found it.
            if let std::collections::hash_map::Entry::Occupied(mut e) = self.children.entry(*p) {
                let kids = e.get_mut();
                kids.current -= 1;
                if kids.current == 0 {
                    let k = e.remove();
                    self.keep_kid_list(k.list);
                }
            }
        }
    }

    fn map_value(&self, v: u64, is_fd: bool) -> Option<u64> {
        self.live.get(&Obj::of(v, is_fd)).map(|l| l.replayed)
    }

    #[inline]
    fn ioctl(
        &mut self,
        idx: u64,
        rec: &IoctlRecord,
        plan: &CallPlan<'_>,
        scratch: &mut CallBuf,
    ) -> Result<(), ReplayError> {
        self.cur_id = rec.id;
        let shape = &*plan.shape;
        let entry = shape.entry;
        self.cur = Cur::Call(entry, rec.cmd);
        let real = matches!(self.opts.target, Target::Device(_));
        if entry.is_none() && real && !self.opts.allow_unknown {
            return Err(ReplayError::UnknownRefused {
                call: idx,
                cmd: rec.cmd,
            });
        }
        // The fd the call is issued on.
        let fd = if self.last_fd.0 == rec.fd as i64 {
            self.last_fd.1
        } else {
            match self.map_value(rec.fd as u64, true) {
                Some(fd) => {
                    self.last_fd = (rec.fd as i64, fd as i32);
                    fd as i32
                }
                None => self.implicit_open(idx, rec, entry)?,
            }
        };
        if let Some(field) = &shape.missing {
            return Err(ReplayError::Missing {
                call: idx,
                ioctl: self.cur.to_string(),
                field: field.clone(),
            });
        }
        // The call's memory: the image in the reused scratch buffer, long-lived regions
        // mapped fresh with their captured content.
        let mut regions = Vec::new();
        if !plan.pinned.is_empty() {
            self.map_pinned(idx, plan, &mut regions)?;
        }
        scratch.load(&plan.image);
        let base = scratch.addr();
        let sb = scratch.bytes_mut();
        for &(at, mem) in &shape.patches {
            let addr = match mem {
                Mem::Image(off) => base + off as u64,
                Mem::Pinned(i) => regions[i].addr(),
            };
            call::put_uint(sb, at, 8, addr);
        }
        self.reused = 0;
        if !plan.remaps.is_empty() {
            // A call that failed in the capture may have been given a bogus handle on
            // purpose (error-path tests): pass unknown values through unchanged so the
            // same failure is reproduced. Only successful calls need every input mapped.
            let failed = plan.failed;
            for (k, r) in plan.remaps.iter().enumerate() {
                let value = r.value;
                let o = Obj::of(value, r.is_fd);
                let v = match self.recent.get(&self.live, o) {
                    Some(v) => {
                        if k < call::REMAP_REUSE {
                            self.reuse[k] = v;
                            self.reused |= 1 << k;
                        }
                        Some(v)
                    }
                    // eventfds are made by the program, outside any traced device:
                    // the replay cannot recreate the program's, so it makes its own.
                    None if r.eventfd => make_eventfd(),
                    None if failed => Some(value),
                    None => None,
                };
                let Some(v) = v else {
                    let r = &shape.remaps[r.slot as usize];
                    let ioctl = self.cur.to_string();
                    return Err(if r.is_fd {
                        ReplayError::UnmappedFd {
                            call: idx,
                            ioctl,
                            field: r.field.clone(),
                            fd: value as i64,
                        }
                    } else {
                        ReplayError::UnmappedHandle {
                            call: idx,
                            ioctl,
                            field: r.field.clone(),
                            value,
                        }
                    });
                };
                call::put_uint(sb, r.off, r.size, v);
            }
        }
        let arg = plan.arg.unwrap_or(base);

        // The memory this replay owns for the call: an in-process backend may access it
        // directly (no checked copies).
        if self.memory_dirty {
            self.memory_ranges.clear();
            for regions in self.memory.values() {
                self.memory_ranges
                    .extend(regions.iter().map(|r| (r.addr(), r.len())));
            }
            self.memory_dirty = false;
            self.ranges_plain = 0;
        }
        let with_scratch = plan.arg.is_none();
        if !regions.is_empty() || self.ranges_plain != 1 + with_scratch as u8 {
            self.live_ranges.clear();
            if with_scratch {
                self.live_ranges.push((base, scratch.bytes().len()));
            }
            self.live_ranges
                .extend(regions.iter().map(|r| (r.addr(), r.len())));
            self.live_ranges.extend_from_slice(&self.memory_ranges);
            self.ranges_plain = if regions.is_empty() {
                1 + with_scratch as u8
            } else {
                0
            };
        } else if with_scratch {
            self.live_ranges[0] = (base, scratch.bytes().len());
        }
        let t0 = self.ticks.now();
        // SAFETY: the scratch buffer holds the argument struct and every heap buffer its
        // pointer fields were patched to, sized per the table; `regions` the pinned ones;
        // all outlive the call, and so do the long-lived regions in `self.memory` (the
        // `live` ranges).
        let ret = unsafe { self.backend.ioctl_live(fd, rec.cmd, arg, &self.live_ranges) };
        self.ioctl_ticks += self.ticks.now().wrapping_sub(t0);
        self.report.recorded_ioctl_ns += rec.ts_exit.saturating_sub(rec.ts_enter);
        self.report.calls += 1;

        let compare = self.opts.from.is_none_or(|f| idx >= f);
        if compare {
            self.report.compared += 1;
        }
        let mut divs = Vec::new();
        match entry {
            Some(e) => {
                self.results(idx, e, rec, ret, plan, scratch, &mut regions, &mut divs);
            }
            None => {
                if ret != rec.ret {
                    divs.push(Divergence {
                        call: idx,
                        id: rec.id,
                        ioctl: self.cur.to_string(),
                        field: "return".into(),
                        recorded: rec.ret.to_string(),
                        replayed: ret.to_string(),
                    });
                } else if let (Some(r), None) = (plan.out, plan.arg) {
                    let sb = &scratch.bytes()[..shape.struct_len];
                    let n = r.len().min(sb.len());
                    if r[..n] != sb[..n] {
                        divs.push(Divergence {
                            call: idx,
                            id: rec.id,
                            ioctl: self.cur.to_string(),
                            field: "out".into(),
                            recorded: driver_core::decode::hex_dump(r),
                            replayed: driver_core::decode::hex_dump(&sb[..n]),
                        });
                    }
                }
            }
        }
        if compare && !divs.is_empty() {
            for d in divs.drain(..) {
                self.report.add_divergence(d, self.opts.max_divergences);
            }
            if self.opts.strict {
                self.report.stopped_early = true;
                self.done = true;
            }
        }
        // Nearly always `Vec::new()`s that never allocated: nothing to free, so skip the
        // out-of-line drop calls (~24 instructions per call). Otherwise they drop here
        // (unowned regions are unmapped).
        if divs.capacity() == 0 {
            std::mem::forget(divs);
        }
        if regions.capacity() == 0 {
            std::mem::forget(regions);
        }
        Ok(())
    }

    /// The call's long-lived regions, mapped fresh with their captured content.
    #[cold]
    fn map_pinned(
        &mut self,
        idx: u64,
        plan: &CallPlan<'_>,
        regions: &mut Vec<Region>,
    ) -> Result<(), ReplayError> {
        for p in &plan.pinned {
            let r =
                Region::anonymous(p.len, p.data, &p.path).map_err(|source| ReplayError::Map {
                    call: idx,
                    ioctl: self.cur.to_string(),
                    field: p.path.clone(),
                    source,
                })?;
            regions.push(r);
        }
        Ok(())
    }

    /// An ioctl on an fd the trace never opened (the capture started after the program
    /// opened the device). dxg has one kind of fd, so the replay opens the device for it;
    /// any other fd (a KVM VM or vCPU fd) cannot be recreated and is an error.
    fn implicit_open(
        &mut self,
        idx: u64,
        rec: &IoctlRecord,
        entry: Option<&IoctlDesc>,
    ) -> Result<i32, ReplayError> {
        let name = self.cur.to_string();
        let unmapped = || ReplayError::UnmappedFd {
            call: idx,
            ioctl: name.clone(),
            field: "fd".into(),
            fd: rec.fd as i64,
        };
        if self.seen_fds.contains(&(rec.fd as i64)) || entry.map(|e| e.device) != Some(Device::Dxg)
        {
            return Err(unmapped());
        }
        let path = self.open_path(Device::Dxg.path()).to_path_buf();
        let fd = self
            .backend
            .open(&path, libc::O_RDWR)
            .map_err(|source| ReplayError::Open {
                path: path.display().to_string(),
                fd: rec.fd,
                source,
            })?;
        self.seen_fds.insert(rec.fd as i64);
        self.set_live(
            Obj::Fd(rec.fd as i64),
            Live {
                replayed: fd as u64,
                ty: HandleType::Any,
                creator: None,
                parents: Parents::of(&[]),
            },
        );
        self.report.notes.push(format!(
            "fd {} has no open record before call {idx}; opened {} for it",
            rec.fd,
            path.display()
        ));
        Ok(fd)
    }

    #[allow(clippy::too_many_arguments)]
    fn results(
        &mut self,
        idx: u64,
        e: &'static IoctlDesc,
        rec: &IoctlRecord,
        ret: i64,
        plan: &CallPlan<'_>,
        scratch: &CallBuf,
        regions: &mut Vec<Region>,
        divs: &mut Vec<Divergence>,
    ) {
        let shape = &*plan.shape;
        if let Some(t) = shape.ret_fd
            && rec.ret >= 0
            && ret >= 0
        {
            self.forget(Obj::Fd(rec.ret), false);
            self.set_live(
                Obj::Fd(rec.ret),
                Live {
                    replayed: ret as u64,
                    ty: t,
                    creator: Some(idx),
                    parents: Parents::of(&plan.parents[..1]),
                },
            );
            self.after_fd_created(idx, e, rec.ret, ret as i32, rec.fd as i64);
            return;
        }
        if ret != rec.ret {
            let nt = e.device.positive_return_is_ntstatus();
            divs.push(Divergence {
                call: idx,
                id: rec.id,
                ioctl: e.name.to_string(),
                field: "return".into(),
                recorded: render_return(rec.ret, nt),
                replayed: render_return(ret, nt),
            });
            return;
        }
        if plan.arg.is_some() {
            return;
        }
        // Handles the call used become the parents of what it creates (lineage).
        let parents = &plan.parents;
        let sb = scratch.bytes();
        if let (Some(out), Some(splan)) = (plan.out, &shape.splan) {
            let rep = &sb[..e.size().min(shape.struct_len)];
            let fast = plan.out_fast
                && !self.walk_only()
                && self.struct_matches(splan, &plan.out_nz, out, rep)
                && (splan.creates.is_empty()
                    || self.fast_creates(idx, splan, &plan.out_nz, out, rep, parents));
            if !fast {
                self.compare(idx, e, splan, out, rep, Cmp::Struct, parents, divs);
            }
        }
        let bufs: &[call::BufPlan] = if shape.bufs_out { &shape.bufs } else { &[] };
        for b in bufs {
            let Some(r) = b.out.map(|i| rec.buffers[i].data.as_slice()) else {
                continue;
            };
            let rep = match b.mem {
                Mem::Image(off) => &sb[off..off + b.len],
                Mem::Pinned(i) => &regions[i].bytes()[..b.len.min(regions[i].len())],
            };
            let Some(ep) = &b.elems else {
                let n = r.len().min(rep.len());
                // One `memcmp`; the first differing byte is looked for only if one does.
                if r[..n] != rep[..n]
                    && let Some(off) = (0..n).find(|i| r[*i] != rep[*i])
                {
                    divs.push(Divergence {
                        call: idx,
                        id: rec.id,
                        ioctl: e.name.to_string(),
                        field: format!("{}[+{off}]", b.path),
                        recorded: driver_core::decode::hex_dump(&r[off..n.min(off + 16)]),
                        replayed: driver_core::decode::hex_dump(&rep[off..n.min(off + 16)]),
                    });
                }
                continue;
            };
            self.compare(idx, e, ep, r, rep, Cmp::Buf(&b.path), parents, divs);
        }
        // Destroyed handles (recorded values) stop mapping, with everything created under them.
        for h in &plan.destroys {
            self.forget(Obj::Handle(*h), true);
        }
        // Long-lived memory now belongs to its object: the allocation created from the same
        // array element, else the fd the call was issued on (a KVM VM's guest memory).
        if regions.is_empty() {
            return;
        }
        for (p, r) in plan.pinned.iter().zip(regions.drain(..)) {
            let owner = p.owner.unwrap_or(Obj::Fd(rec.fd as i64));
            self.memory.entry(owner).or_default().push(r);
            self.memory_dirty = true;
        }
    }

    /// KVM: a vCPU fd needs its `kvm_run` page mapped before KVM_RUN is useful (the exit
    /// reason lives there); its size comes from KVM_GET_VCPU_MMAP_SIZE on the system fd.
    fn after_fd_created(&mut self, idx: u64, e: &IoctlDesc, rec_fd: i64, new_fd: i32, parent: i64) {
        if e.name != "KVM_CREATE_VCPU" || !matches!(self.opts.target, Target::Device(_)) {
            return;
        }
        // parent = VM fd; its parent = the /dev/kvm fd.
        let sys = self
            .live
            .get(&Obj::Fd(parent))
            .and_then(|l| l.parents.first().copied())
            .and_then(|o| self.live.get(&o))
            .map(|l| l.replayed as i32);
        let Some(sys) = sys else { return };
        let Some(sz) = lookup_name("KVM_GET_VCPU_MMAP_SIZE") else {
            return;
        };
        // SAFETY: KVM_GET_VCPU_MMAP_SIZE is an `_IO` request; `arg` is unused.
        let size = unsafe { self.backend.ioctl(sys, sz.code, 0) };
        if size <= 0 {
            self.report.notes.push(format!(
                "call {idx}: KVM_GET_VCPU_MMAP_SIZE returned {size}; kvm_run not mapped"
            ));
            return;
        }
        match Region::of_fd(new_fd, size as usize, "kvm_run") {
            Ok(r) => {
                self.memory.entry(Obj::Fd(rec_fd)).or_default().push(r);
                self.memory_dirty = true;
            }
            Err(err) => self
                .report
                .notes
                .push(format!("call {idx}: mmap of kvm_run failed: {err}")),
        }
    }

    /// The fast comparison of an out struct whose plan is [`Plan::fast`]: true if every
    /// compared byte of `rep` is what [`Replayer::compare`] expects — the recorded bytes,
    /// with each set input handle / fd (`nz`, from the call plan) replaced by the value
    /// it maps to. Then `compare` would find nothing and change nothing (those leaves
    /// have no side effects), so it is skipped; otherwise `compare` runs and reports
    /// each difference decoded, as without this check. One copy and one `memcmp` of the
    /// struct instead of a walk over its fields.
    fn struct_matches(
        &mut self,
        plan: &Plan,
        nz: &[call::SetLeaf],
        rec: &[u8],
        rep: &[u8],
    ) -> bool {
        let n = plan.size;
        let (Some(rec), Some(rep)) = (rec.get(..n), rep.get(..n)) else {
            return false;
        };
        let ex = &mut self.expect;
        ex.clear();
        ex.extend_from_slice(rec);
        // Bytes no leaf compares take the replayed value.
        for &(o, len) in &plan.skip_runs {
            copy_small(&mut ex[o..o + len], &rep[o..o + len]);
        }
        let mut ok = true;
        for l in nz {
            // As `compare` computes `expected` for these classes (`l.value` is not 0).
            let (r, is_fd, size) = (l.value, l.is_fd, l.size as usize);
            // The same value remapped on input this call maps the same way (`live` has
            // not changed since); else the live map.
            let k = l.remap as usize;
            let expected = match k < call::REMAP_REUSE && self.reused & (1 << k) != 0 {
                true => self.reuse[k],
                // `map_value`'s lookup, on the field (`ex` borrows `self.expect`).
                false => self.live.get(&Obj::of(r, is_fd)).map_or(r, |l| l.replayed),
            };
            let m = mask(size);
            let expected = if is_fd { expected & m } else { expected };
            if expected & !m != 0 {
                // Does not fit the field: `compare` reports it.
                ok = false;
                break;
            }
            call::put_uint(ex, l.off as usize, size, expected);
        }
        let ok = ok && ex[..] == *rep;
        #[cfg(test)]
        if ok {
            self.fast_matches += 1;
        }
        ok
    }

    /// See `walk_only` (always false outside tests).
    #[inline(always)]
    fn walk_only(&self) -> bool {
        #[cfg(test)]
        {
            self.walk_only
        }
        #[cfg(not(test))]
        {
            false
        }
    }

    /// The created handles of an out struct that [`Replayer::struct_matches`] found
    /// equal, mapped as [`Replayer::compare`] maps them — if `compare` would find
    /// nothing else: each created handle set on both sides or on neither, the set
    /// ones distinct, none of them live (mapping it forgets nothing) and none of them
    /// the value of a set input handle in the struct (whose expected value would then
    /// change mid-walk). Otherwise false, with nothing changed, and `compare` runs.
    fn fast_creates(
        &mut self,
        idx: u64,
        plan: &Plan,
        nz: &[call::SetLeaf],
        rec: &[u8],
        rep: &[u8],
        parents: &[Obj],
    ) -> bool {
        // (recorded, replayed) of each created handle.
        let mut vals = [(0u64, 0u64); FAST_CREATES];
        let Some(vals) = vals.get_mut(..plan.creates.len()) else {
            return false;
        };
        for (k, &li) in plan.creates.iter().enumerate() {
            let l = &plan.leaves[li];
            let r = read_uint(rec, l.off, l.size).unwrap_or(0);
            let p = read_uint(rep, l.off, l.size).unwrap_or(0);
            if (r == 0) != (p == 0) {
                return false;
            }
            if r != 0
                && (vals[..k].iter().any(|v| v.0 == r)
                    || nz.iter().any(|x| !x.is_fd && x.value == r)
                    || self.live.contains_key(&Obj::Handle(r)))
            {
                return false;
            }
            vals[k] = (r, p);
        }
        for (&li, &(r, p)) in plan.creates.iter().zip(vals.iter()) {
            if let (Class::Creates(t), true) = (plan.leaves[li].class, r != 0) {
                // `compare` forgets `r` first: it is not live, so that is nothing.
                self.set_live(
                    Obj::Handle(r),
                    Live {
                        replayed: p,
                        ty: t,
                        creator: Some(idx),
                        parents: Parents::of(parents),
                    },
                );
            }
        }
        #[cfg(test)]
        {
            self.fast_creates += 1;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn compare(
        &mut self,
        idx: u64,
        e: &'static IoctlDesc,
        plan: &Plan,
        rec: &[u8],
        rep: &[u8],
        what: Cmp<'_>,
        parents: &[Obj],
        divs: &mut Vec<Divergence>,
    ) {
        let (n, es, arr) = match what {
            Cmp::Buf(_) if plan.size > 0 => (rec.len().min(rep.len()) / plan.size, plan.size, true),
            _ => (1, plan.size.min(rec.len()).min(rep.len()), false),
        };
        // No leaf needs an action and every compared byte is equal: nothing can diverge
        // (one comparison instead of one per element).
        if plan.special.is_empty() && rec[..n * es] == rep[..n * es] {
            return;
        }
        for i in 0..n {
            let rel = &rec[i * es..(i + 1) * es];
            let pel = &rep[i * es..(i + 1) * es];
            // Bytes first: when every plain range is equal, only the leaves that need an
            // action (handles, creations, pids, masks) are visited; otherwise every leaf,
            // so each differing field is reported decoded.
            let full = rel != pel && !plan.plain_equal(rel, pel);
            let mut visit = std::mem::take(&mut self.visit);
            visit.clear();
            if full {
                visit.extend(0..plan.leaves.len());
            } else {
                for (o, len, r) in &plan.special_runs {
                    let slots = &plan.special[r.clone()];
                    let (Some(rs), Some(ps), true) =
                        (rel.get(*o..o + len), pel.get(*o..o + len), *len > 0)
                    else {
                        visit.extend_from_slice(slots);
                        continue;
                    };
                    // Handle slots empty on both sides have nothing to map or compare: they
                    // are skipped a word (8 bytes, whole slots) at a time.
                    let size = plan.leaves[slots[0]].size;
                    if size > 8 || 8 % size != 0 || len % 8 != 0 {
                        visit.extend_from_slice(slots);
                        continue;
                    }
                    let per = 8 / size;
                    crate::plan::set_words(rs, ps, |w| {
                        visit.extend_from_slice(&slots[w * per..(w + 1) * per])
                    });
                }
            }
            for &li in &visit {
                let l = &plan.leaves[li];
                let (Some(rv), Some(pv)) = (
                    rel.get(l.off..l.off + l.size),
                    pel.get(l.off..l.off + l.size),
                ) else {
                    continue;
                };
                let field = || match what {
                    Cmp::Struct => format!("out.{}", l.path),
                    Cmp::Buf(p) if arr && l.path.is_empty() => format!("{p}[{i}]"),
                    Cmp::Buf(p) if arr => format!("{p}[{i}].{}", l.path),
                    Cmp::Buf(p) if l.path.is_empty() => p.to_string(),
                    Cmp::Buf(p) => format!("{p}.{}", l.path),
                };
                let small = l.size <= 8;
                let r = if small {
                    read_uint(rv, 0, l.size).unwrap_or(0)
                } else {
                    0
                };
                let pvv = if small {
                    read_uint(pv, 0, l.size).unwrap_or(0)
                } else {
                    0
                };
                match l.class {
                    Class::Pointer | Class::Masked => {}
                    Class::Pid if small => {
                        // Another program on the capturing machine: the replay cannot
                        // recreate it, so its pid is not compared.
                        if !self.traced_pids.contains(&(r as u32)) {
                            continue;
                        }
                        let expected = self.backend.pid() as u64;
                        if pvv != expected {
                            let mut d = self.div(idx, e, field(), l, rv, pv, None);
                            d.replayed = format!(
                                "{} (expected {expected}: the recorded pid is the traced process, which is pid {expected} in the replay)",
                                d.replayed
                            );
                            divs.push(d);
                        }
                    }
                    Class::Plain => {
                        if rv != pv {
                            divs.push(self.div(idx, e, field(), l, rv, pv, None));
                        }
                    }
                    Class::Handle | Class::Destroys(_) | Class::Fd | Class::TakesFd(_) if small => {
                        let is_fd = matches!(l.class, Class::Fd | Class::TakesFd(_));
                        let expected = if r == 0 {
                            0
                        } else {
                            self.map_value(r, is_fd).unwrap_or(r)
                        };
                        let expected = if is_fd {
                            expected & mask(l.size)
                        } else {
                            expected
                        };
                        if pvv != expected {
                            divs.push(self.div(idx, e, field(), l, rv, pv, Some(expected)));
                        }
                    }
                    Class::Creates(t) if small => {
                        if r != 0 && pvv != 0 {
                            self.forget(Obj::Handle(r), true);
                            self.set_live(
                                Obj::Handle(r),
                                Live {
                                    replayed: pvv,
                                    ty: t,
                                    creator: Some(idx),
                                    parents: Parents::of(parents),
                                },
                            );
                        } else if r != pvv {
                            divs.push(self.div(idx, e, field(), l, rv, pv, None));
                        }
                    }
                    Class::ReturnsFd(t) if small => {
                        let (rs, ps) = (sign_extend(r, l.size), sign_extend(pvv, l.size));
                        if rs >= 0 && ps >= 0 {
                            self.forget(Obj::Fd(rs), false);
                            self.set_live(
                                Obj::Fd(rs),
                                Live {
                                    replayed: ps as u64,
                                    ty: t,
                                    creator: Some(idx),
                                    parents: Parents::of(parents),
                                },
                            );
                        } else if rs != ps {
                            divs.push(self.div(idx, e, field(), l, rv, pv, None));
                        }
                    }
                    _ => {
                        if rv != pv {
                            divs.push(self.div(idx, e, field(), l, rv, pv, None));
                        }
                    }
                }
            }
            self.visit = visit;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn div(
        &self,
        idx: u64,
        e: &IoctlDesc,
        field: String,
        l: &Leaf,
        rv: &[u8],
        pv: &[u8],
        expected: Option<u64>,
    ) -> Divergence {
        let r = decode_value(&l.path, l.off, l.size, &l.kind, rv).rendered;
        let mut p = decode_value(&l.path, l.off, l.size, &l.kind, pv).rendered;
        if let Some(x) = expected {
            let raw = read_uint(rv, 0, l.size.min(8)).unwrap_or(0);
            let what = match self
                .live
                .get(&Obj::Handle(raw))
                .or_else(|| self.live.get(&Obj::Fd(raw as i64)))
            {
                Some(lv) => format!(
                    "{:?} created by call {}",
                    lv.ty,
                    lv.creator
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "open".into())
                ),
                None => "unmapped".into(),
            };
            p = format!("{p} (expected {x:#x}: recorded value maps to it; {what})");
        }
        Divergence {
            call: idx,
            id: self.cur_id,
            ioctl: e.name.to_string(),
            field,
            recorded: r,
            replayed: p,
        }
    }
}

/// `dst.copy_from_slice(src)`, the usual field sizes as fixed-size copies (no `memcpy`
/// call).
#[inline]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    if let (Ok(d), Ok(s)) = (
        <&mut [u8; 8]>::try_from(&mut *dst),
        <&[u8; 8]>::try_from(src),
    ) {
        *d = *s;
    } else if let (Ok(d), Ok(s)) = (
        <&mut [u8; 4]>::try_from(&mut *dst),
        <&[u8; 4]>::try_from(src),
    ) {
        *d = *s;
    } else {
        dst.copy_from_slice(src);
    }
}

/// Most created handles [`Replayer::fast_creates`] takes in one out struct.
const FAST_CREATES: usize = 8;

fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// The recorded handle created in the same array element as a pinned buffer
/// (`allocation_info[i].sysmem` → `allocation_info[i].allocation`).
pub(crate) fn pinned_owner(e: &'static IoctlDesc, rec: &IoctlRecord, path: &str) -> Option<Obj> {
    let (arr, rest) = path.split_once('[')?;
    let i: usize = rest.split_once(']')?.0.parse().ok()?;
    let h = e.handles.iter().find(|h| {
        matches!(h.loc, Loc::Elem { pointer, .. } if pointer == arr) && h.effect == Effect::Creates
    })?;
    let Loc::Elem { offset, size, .. } = h.loc else {
        return None;
    };
    let es = find_pointer(e, &desc_path_of(arr))?.elem_size as usize;
    let out = rec.buffer(BufferRole::PtrOut, arr)?;
    let v = read_uint(&out.data, i * es + offset as usize, size as usize)?;
    (v != 0).then_some(Obj::Handle(v))
}

/// How many records [`Replayer::run`] holds to put calls back in the order they entered
/// the driver.
pub const REORDER_WINDOW: usize = 1 << 16;

/// The order a replay issues records in: by the time they entered the driver (an ioctl's
/// entry timestamp, an fd event's timestamp), ties and records without a timestamp kept
/// in file order. Within a thread this is the thread's own order; across threads it is the
/// interleaving the capture saw. A single replaying thread issues them one at a time, so
/// calls that overlapped in the capture run one after the other.
pub fn replay_order(records: &[Record]) -> Vec<usize> {
    let mut order = OrderKey::default();
    let mut keyed: Vec<(u64, usize)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| order.key(r).map(|k| (k, i)))
        .collect();
    keyed.sort_by_key(|&(k, _)| k); // stable: ties keep file order
    keyed.into_iter().map(|(_, i)| i).collect()
}

enum Item<'r> {
    Fd(&'r Record),
    Call(u64, &'r IoctlRecord, CallPlan<'r>),
}

impl Item<'_> {
    #[inline(always)]
    fn prefetch(&self) {
        match self {
            Item::Fd(r) => prefetch(*r as *const Record),
            Item::Call(_, rec, cp) => prefetch_call(rec, cp),
        }
    }
}

/// Asks the CPU to start loading `p`'s cache line. A prefetch is a hint: it never
/// faults and has no effect on the program's memory, whatever the address.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: see above; the address is not dereferenced.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches, in three stages, what compiling and replaying the next streamed records
/// reads: the record two places ahead; the buffer list of the one after next; the
/// buffers' paths and bytes of the next one. A record waited in the window for up to
/// [`REORDER_WINDOW`] others (and a file's was decoded on another core), so every one
/// of these is a cache miss the replay would otherwise wait for, in turn.
#[inline(always)]
fn prefetch_ahead<R: Borrow<Record>>(w: &Window<R>) {
    if let Some(r) = w.peek_in_order(2) {
        prefetch(r.borrow() as *const Record);
    }
    if let Some(Record::Ioctl(io)) = w.peek_in_order(1).map(|r| r.borrow()) {
        let (p, n) = (io.buffers.as_ptr(), io.buffers.len());
        for line in 0..(n * std::mem::size_of::<traces::Buffer>())
            .div_ceil(64)
            .min(4)
        {
            prefetch(p.cast::<u8>().wrapping_add(line * 64));
        }
    }
    if let Some(Record::Ioctl(io)) = w.peek_in_order(0).map(|r| r.borrow()) {
        for b in io.buffers.iter().take(4) {
            prefetch(b.data.as_ptr());
            if !b.path.is_empty() {
                prefetch(b.path.as_ptr());
            }
        }
    }
}

/// Asks the CPU to start loading what replaying a compiled call reads first (its record,
/// argument image, input remaps and recorded out struct): a compiled trace is larger
/// than the caches (and a streamed one was compiled on another core), and each call's
/// data sits in separate allocations, so without this every call starts with a few
/// cache misses in a row.
#[inline(always)]
fn prefetch_call(rec: &IoctlRecord, cp: &CallPlan<'_>) {
    prefetch(rec as *const IoctlRecord);
    prefetch(cp.image.as_ptr());
    prefetch(cp.image.as_ptr().wrapping_add(64));
    prefetch(cp.remaps.as_ptr());
    if let Some(o) = cp.out {
        prefetch(o.as_ptr());
    }
}

/// A trace's records compiled for replay, in replay order ([`replay_order`]): what
/// [`Replayer::run_plan`] executes. Building it does, once per call, everything that does
/// not depend on the replay's state, so the replay loop itself does no string work, no
/// table walks and no allocation for calls that create nothing.
pub struct ReplayPlan<'r> {
    items: Vec<Item<'r>>,
    calls: u64,
}

impl<'r> ReplayPlan<'r> {
    /// Compiles `records` (call indices count ioctl records in file order, as everywhere).
    pub fn new(records: &'r [Record]) -> ReplayPlan<'r> {
        let mut plans = PlanCache::default();
        let mut idx = vec![u64::MAX; records.len()];
        let mut calls = 0;
        for (i, r) in records.iter().enumerate() {
            if matches!(r, Record::Ioctl(_)) {
                idx[i] = calls;
                calls += 1;
            }
        }
        let items = replay_order(records)
            .into_iter()
            .map(|i| match &records[i] {
                Record::Ioctl(io) => Item::Call(
                    idx[i],
                    io,
                    match lookup_code(io.cmd) {
                        Some(e) => call::compile(e, io, &mut plans),
                        None => call::compile_unknown(io),
                    },
                ),
                r => Item::Fd(r),
            })
            .collect();
        ReplayPlan { items, calls }
    }

    /// Ioctl calls in the plan.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Calls whose out struct takes the fast whole-struct comparison.
    #[cfg(test)]
    pub(crate) fn fast_out_calls(&self) -> u64 {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Call(_, _, cp) if cp.out_fast))
            .count() as u64
    }
}

fn make_eventfd() -> Option<u64> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    (fd >= 0).then_some(fd as u64)
}

/// Whether an ioctl is in a table and may go to a real device.
pub fn is_known(cmd: u32) -> bool {
    lookup_code(cmd).is_some_and(|e| e.class != IoctlClass::Unsupported || e.device == Device::Dxg)
}
