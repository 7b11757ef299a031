//! The replay engine: records in, ioctls through a [`Backend`], divergences out.

use std::collections::HashMap;
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

use crate::call::{self, PrepError, Prepared, recorded};
use crate::error::ReplayError;
use crate::mem::Region;
use crate::plan::{Class, Leaf, Plan, PlanCache};

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
}

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
    /// Differences found, in call order.
    pub divergences: Vec<Divergence>,
    /// Strict mode stopped at the first divergence.
    pub stopped_early: bool,
    /// Wall time of the replay loop.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    /// Sum of the recorded ioctl durations (exit − entry) of the calls issued.
    pub recorded_ioctl_ns: u64,
    /// Sum of the replayed ioctl durations (time inside `Backend::ioctl`).
    pub replayed_ioctl_ns: u64,
    /// Remarks (implicit opens, skipped records…).
    pub notes: Vec<String>,
    /// Driver-in-the-loop: VMBus requests the driver logic sent, and how many the trace
    /// recorded (`None` with the fake host). Differences are in `divergences`.
    pub vmbus_messages: Option<(u64, u64)>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Obj {
    Handle(u64),
    Fd(i64),
}

#[derive(Debug)]
struct Live {
    replayed: u64,
    ty: HandleType,
    creator: Option<u64>,
    parents: Vec<Obj>,
}

/// The replay state for one trace against one backend. Feed it records in order with
/// [`Replayer::step`], or a whole iterator with [`Replayer::run`].
pub struct Replayer<B: Backend> {
    backend: B,
    opts: ReplayOptions,
    plans: PlanCache,
    live: HashMap<Obj, Live>,
    memory: HashMap<Obj, Vec<Region>>,
    orphans: Vec<(Obj, Vec<Region>)>,
    report: Report,
    call_index: u64,
    seen_fds: std::collections::HashSet<i64>,
    pace0: Option<(u64, Instant)>,
    started: Instant,
    done: bool,
    cur_id: u64,
    /// Pids of the traced processes (ioctl and fd records): they map to the backend's pid.
    traced_pids: std::collections::HashSet<u32>,
    vmbus: Option<crate::recorded_host::VmbusCheck>,
    live_ranges: Vec<(u64, usize)>,
    /// Name of the call in flight (for VMBus differences).
    cur_name: String,
}

enum Cmp<'a> {
    Struct,
    Buf(&'a str),
}

impl<B: Backend> Replayer<B> {
    /// A replayer over `backend`.
    pub fn new(backend: B, opts: ReplayOptions) -> Self {
        Replayer {
            backend,
            opts,
            plans: PlanCache::default(),
            live: HashMap::new(),
            memory: HashMap::new(),
            orphans: Vec::new(),
            report: Report::default(),
            call_index: 0,
            seen_fds: Default::default(),
            pace0: None,
            started: Instant::now(),
            done: false,
            cur_id: 0,
            traced_pids: Default::default(),
            vmbus: None,
            live_ranges: Vec::new(),
            cur_name: "emulator start".into(),
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
            self.report.divergences.push(Divergence {
                call,
                id: self.cur_id,
                ioctl: self.cur_name.clone(),
                field: format!("vmbus #{} {}: {}", d.seq, d.message, d.field),
                recorded: d.recorded,
                replayed: d.replayed,
            });
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

    /// Replays every record of `records`, calling `progress(calls)` every 4096 calls.
    pub fn run<I>(&mut self, records: I, progress: &mut dyn FnMut(u64)) -> Result<(), ReplayError>
    where
        I: IntoIterator<Item = Result<Record, traces::TraceError>>,
    {
        for r in records {
            if self.done {
                break;
            }
            self.step(&r?)?;
            if self.report.calls.is_multiple_of(4096) {
                progress(self.report.calls);
            }
        }
        progress(self.report.calls);
        Ok(())
    }

    /// Closes every fd the replay still holds and returns the report.
    pub fn finish(mut self) -> Report {
        self.report.elapsed = self.started.elapsed();
        self.cur_name = "close at the end of the replay".into();
        let fds: Vec<(Obj, u64)> = self
            .live
            .iter()
            .filter(|(o, _)| matches!(o, Obj::Fd(_)))
            .map(|(o, l)| (*o, l.replayed))
            .collect();
        // Mappings first (they pin the fds' objects), then the fds.
        self.memory.clear();
        self.orphans.clear();
        for (_, fd) in fds {
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
                self.report.divergences.push(Divergence {
                    call: self.call_index.saturating_sub(1),
                    id: self.cur_id,
                    ioctl: self.cur_name.clone(),
                    field: "vmbus".into(),
                    recorded: format!("{recorded} guest→host messages"),
                    replayed: format!("{sent} sent by the driver logic"),
                });
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
                self.traced_pids.insert(ev.pid);
                self.cur_name = match ev.op {
                    FdOp::Open => format!("open of fd {}", ev.fd),
                    FdOp::Close => format!("close of fd {}", ev.fd),
                    FdOp::Derived => format!("fd {}", ev.fd),
                };
                let r = self.fd_event(ev);
                self.drain_vmbus();
                r
            }
            Record::Ioctl(io) => {
                self.traced_pids.insert(io.pid);
                let idx = self.call_index;
                self.call_index += 1;
                if self.opts.to.is_some_and(|to| idx > to) {
                    self.done = true;
                    return Ok(());
                }
                self.pace(io.ts_enter);
                let r = self.ioctl(idx, io);
                self.drain_vmbus();
                r
            }
            _ => Ok(()),
        }
    }

    fn pace(&mut self, ts: u64) {
        if self.opts.pace != Pace::Original || ts == 0 {
            return;
        }
        let (t0, start) = *self.pace0.get_or_insert((ts, Instant::now()));
        let due = start + Duration::from_nanos(ts.saturating_sub(t0));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
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
                let path = self.open_path(&ev.path).to_path_buf();
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
                self.live.insert(
                    Obj::Fd(ev.fd as i64),
                    Live {
                        replayed: fd as u64,
                        ty: HandleType::Any,
                        creator: None,
                        parents: Vec::new(),
                    },
                );
                self.report.fd_events += 1;
            }
            FdOp::Close => {
                self.seen_fds.insert(ev.fd as i64);
                if let Some(l) = self.live.get(&Obj::Fd(ev.fd as i64)) {
                    let fd = l.replayed as i32;
                    self.forget(Obj::Fd(ev.fd as i64), false);
                    let _ = self.backend.close(fd);
                    self.report.fd_events += 1;
                }
            }
            // The fd came from an ioctl the replay issues itself; the mapping is made there.
            FdOp::Derived => {
                self.seen_fds.insert(ev.fd as i64);
            }
        }
        Ok(())
    }

    /// Drops a mapping (and, for destroyed handles, every object created under it), and
    /// frees memory whose owner and owner's descendants are all gone.
    fn forget(&mut self, o: Obj, cascade: bool) {
        if self.live.remove(&o).is_none() {
            return;
        }
        if let Some(m) = self.memory.remove(&o) {
            self.orphans.push((o, m));
        }
        if cascade {
            let kids: Vec<Obj> = self
                .live
                .iter()
                .filter(|(_, l)| l.parents.contains(&o))
                .map(|(k, _)| *k)
                .collect();
            for k in kids {
                self.forget(k, true);
            }
        }
        // A VM's guest memory must outlive the VM fd while vCPU fds created from it are open.
        let live = &self.live;
        let has_desc = |x: &Obj| live.values().any(|l| l.parents.contains(x));
        self.orphans.retain(|(x, _)| has_desc(x));
    }

    fn map_value(&self, v: u64, is_fd: bool) -> Option<u64> {
        let o = if is_fd {
            Obj::Fd(v as i64)
        } else {
            Obj::Handle(v)
        };
        self.live.get(&o).map(|l| l.replayed)
    }

    fn name_of(entry: Option<&IoctlDesc>, cmd: u32) -> String {
        entry
            .map(|e| e.name.to_string())
            .unwrap_or_else(|| format!("UNKNOWN({cmd:#010x})"))
    }

    fn ioctl(&mut self, idx: u64, rec: &IoctlRecord) -> Result<(), ReplayError> {
        self.cur_id = rec.id;
        let entry = lookup_code(rec.cmd);
        let name = Self::name_of(entry, rec.cmd);
        self.cur_name.clone_from(&name);
        let real = matches!(self.opts.target, Target::Device(_));
        if entry.is_none() && real && !self.opts.allow_unknown {
            return Err(ReplayError::UnknownRefused {
                call: idx,
                cmd: rec.cmd,
            });
        }
        // The fd the call is issued on.
        let fd = match self
            .map_value(rec.fd as u64, true)
            .or_else(|| self.live.get(&Obj::Fd(rec.fd as i64)).map(|l| l.replayed))
        {
            Some(fd) => fd as i32,
            None => self.implicit_open(idx, rec, entry, &name)?,
        };
        let mut prepared = match entry {
            Some(e) => {
                let live = &self.live;
                // A call that failed in the capture may have been given a bogus handle on
                // purpose (error-path tests): pass unknown values through unchanged so the
                // same failure is reproduced. Only successful calls need every input mapped.
                let failed = matches!(
                    driver_core::ntstatus::classify_return(rec.ret),
                    driver_core::ReturnValue::Errno { .. }
                        | driver_core::ReturnValue::RawNtStatus { .. }
                );
                let mut map = |v: u64, is_fd: bool, t: HandleType| -> Option<u64> {
                    let o = if is_fd {
                        Obj::Fd(v as i64)
                    } else {
                        Obj::Handle(v)
                    };
                    match live.get(&o) {
                        Some(l) => Some(l.replayed),
                        // eventfds are made by the program, outside any traced device:
                        // the replay cannot recreate the program's, so it makes its own.
                        None if is_fd && t == HandleType::EventFd => make_eventfd(),
                        None if failed => Some(v),
                        None => None,
                    }
                };
                call::prepare(e, rec, &mut self.plans, &mut map).map_err(|e| match e {
                    PrepError::Unmapped(field, value, is_fd) => {
                        if is_fd {
                            ReplayError::UnmappedFd {
                                call: idx,
                                ioctl: name.clone(),
                                field,
                                fd: value as i64,
                            }
                        } else {
                            ReplayError::UnmappedHandle {
                                call: idx,
                                ioctl: name.clone(),
                                field,
                                value,
                            }
                        }
                    }
                    PrepError::Missing(field) => ReplayError::Missing {
                        call: idx,
                        ioctl: name.clone(),
                        field,
                    },
                    PrepError::Map(field, source) => ReplayError::Map {
                        call: idx,
                        ioctl: name.clone(),
                        field,
                        source,
                    },
                })?
            }
            None => unknown_prepare(rec),
        };

        // The memory this replay owns for the call: an in-process backend may access it
        // directly (no checked copies).
        let mut live = std::mem::take(&mut self.live_ranges);
        live.clear();
        if let Some(sb) = &prepared.sb {
            live.push((sb.addr(), sb.bytes().len()));
        }
        for b in &prepared.bufs {
            match &b.mem {
                call::BufMem::Heap(h) => live.push((h.addr(), h.bytes().len())),
                call::BufMem::Pinned(r) => live.push((r.addr(), r.len())),
                call::BufMem::Trailing(_) => {}
            }
        }
        for regions in self.memory.values() {
            live.extend(regions.iter().map(|r| (r.addr(), r.len())));
        }
        let t0 = Instant::now();
        // SAFETY: `prepared` owns the argument struct and every buffer its pointer fields
        // were patched to, sized per the table; they outlive the call, and so do the
        // long-lived regions in `self.memory` (the `live` ranges).
        let ret = unsafe { self.backend.ioctl_live(fd, rec.cmd, prepared.arg, &live) };
        self.live_ranges = live;
        self.report.replayed_ioctl_ns += t0.elapsed().as_nanos() as u64;
        self.report.recorded_ioctl_ns += rec.ts_exit.saturating_sub(rec.ts_enter);
        self.report.calls += 1;

        let compare = self.opts.from.is_none_or(|f| idx >= f);
        if compare {
            self.report.compared += 1;
        }
        let mut divs = Vec::new();
        match entry {
            Some(e) => self.results(idx, e, rec, ret, fd, &mut prepared, &mut divs),
            None => {
                if ret != rec.ret {
                    divs.push(Divergence {
                        call: idx,
                        id: rec.id,
                        ioctl: name.clone(),
                        field: "return".into(),
                        recorded: rec.ret.to_string(),
                        replayed: ret.to_string(),
                    });
                } else if let (Some(r), Some(sb)) =
                    (rec.buffer(BufferRole::StructOut, ""), &prepared.sb)
                {
                    let n = r.data.len().min(sb.bytes().len());
                    if r.data[..n] != sb.bytes()[..n] {
                        divs.push(Divergence {
                            call: idx,
                            id: rec.id,
                            ioctl: name.clone(),
                            field: "out".into(),
                            recorded: driver_core::decode::hex_dump(&r.data),
                            replayed: driver_core::decode::hex_dump(&sb.bytes()[..n]),
                        });
                    }
                }
            }
        }
        if compare && !divs.is_empty() {
            self.report.divergences.extend(divs);
            if self.opts.strict {
                self.report.stopped_early = true;
                self.done = true;
            }
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
        name: &str,
    ) -> Result<i32, ReplayError> {
        let unmapped = || ReplayError::UnmappedFd {
            call: idx,
            ioctl: name.to_string(),
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
        self.live.insert(
            Obj::Fd(rec.fd as i64),
            Live {
                replayed: fd as u64,
                ty: HandleType::Any,
                creator: None,
                parents: Vec::new(),
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
        fd: i32,
        p: &mut Prepared,
        divs: &mut Vec<Divergence>,
    ) {
        let mk = |field: String, recorded: String, replayed: String| Divergence {
            call: idx,
            id: rec.id,
            ioctl: e.name.to_string(),
            field,
            recorded,
            replayed,
        };
        let ret_fd = e
            .handles
            .iter()
            .find(|h| matches!(h.loc, Loc::Return) && h.effect == Effect::ReturnsFd);
        let mut parents = vec![Obj::Fd(rec.fd as i64)];
        if let Some(h) = ret_fd
            && rec.ret >= 0
            && ret >= 0
        {
            self.forget(Obj::Fd(rec.ret), false);
            self.live.insert(
                Obj::Fd(rec.ret),
                Live {
                    replayed: ret as u64,
                    ty: h.handle_type,
                    creator: Some(idx),
                    parents: parents.clone(),
                },
            );
            self.after_fd_created(idx, e, rec.ret, ret as i32, rec.fd as i64);
            return;
        }
        if ret != rec.ret {
            let nt = e.device.positive_return_is_ntstatus();
            divs.push(mk(
                "return".into(),
                render_return(rec.ret, nt),
                render_return(ret, nt),
            ));
            return;
        }
        let Some(sb) = &p.sb else { return };
        // Handles the call used become the parents of what it creates (lineage).
        let refs = call::refs(e, rec, &mut self.plans);
        parents.extend(refs.handles_in.iter().map(|h| Obj::Handle(*h)));
        let splan = self.plans.for_struct(e);
        if let Some(out) = rec.buffer(BufferRole::StructOut, "") {
            let rep = sb.bytes()[..e.size().min(sb.bytes().len())].to_vec();
            self.compare(idx, e, &splan, &out.data, &rep, Cmp::Struct, &parents, divs);
        }
        for b in &p.bufs {
            let Some(r) = recorded(rec, BufferRole::PtrOut, &b.path, u64::MAX) else {
                continue;
            };
            let rep = b.bytes(sb).to_vec();
            if b.desc.elem_size <= 1 {
                let n = r.len().min(rep.len());
                if let Some(off) = (0..n).find(|i| r[*i] != rep[*i]) {
                    divs.push(mk(
                        format!("{}[+{off}]", b.path),
                        driver_core::decode::hex_dump(&r[off..n.min(off + 16)]),
                        driver_core::decode::hex_dump(&rep[off..n.min(off + 16)]),
                    ));
                }
                continue;
            }
            let ep = self.plans.for_elem(e, b.desc);
            self.compare(idx, e, &ep, r, &rep, Cmp::Buf(&b.path), &parents, divs);
        }
        // Destroyed handles (recorded values) stop mapping, with everything created under them.
        for h in refs.destroys {
            self.forget(Obj::Handle(h), true);
        }
        // Long-lived memory now belongs to its object: the allocation created from the same
        // array element, else the fd the call was issued on (a KVM VM's guest memory).
        let _ = fd;
        let mut keep = Vec::new();
        for b in p.bufs.drain(..) {
            if let call::BufMem::Pinned(r) = b.mem {
                let owner = pinned_owner(e, rec, &b.path).unwrap_or(Obj::Fd(rec.fd as i64));
                keep.push((owner, r));
            }
        }
        for (o, r) in keep {
            self.memory.entry(o).or_default().push(r);
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
            Ok(r) => self.memory.entry(Obj::Fd(rec_fd)).or_default().push(r),
            Err(err) => self
                .report
                .notes
                .push(format!("call {idx}: mmap of kvm_run failed: {err}")),
        }
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
        for i in 0..n {
            let rel = &rec[i * es..(i + 1) * es];
            let pel = &rep[i * es..(i + 1) * es];
            if !plan.has(|c| c != Class::Plain) && rel == pel {
                continue;
            }
            for l in &plan.leaves {
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
                            self.live.insert(
                                Obj::Handle(r),
                                Live {
                                    replayed: pvv,
                                    ty: t,
                                    creator: Some(idx),
                                    parents: parents.to_vec(),
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
                            self.live.insert(
                                Obj::Fd(rs),
                                Live {
                                    replayed: ps as u64,
                                    ty: t,
                                    creator: Some(idx),
                                    parents: parents.to_vec(),
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

fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// The recorded handle created in the same array element as a pinned buffer
/// (`allocation_info[i].sysmem` → `allocation_info[i].allocation`).
fn pinned_owner(e: &'static IoctlDesc, rec: &IoctlRecord, path: &str) -> Option<Obj> {
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

/// For an ioctl no table knows (`--allow-unknown`): the recorded struct, if any, at a
/// fresh address; otherwise the recorded `arg` value as is.
fn unknown_prepare(rec: &IoctlRecord) -> Prepared {
    match rec
        .buffer(BufferRole::StructIn, "")
        .or_else(|| rec.buffer(BufferRole::StructOut, ""))
    {
        Some(b) => {
            let size = driver_core::ioc::IocFields::of(rec.cmd).size as usize;
            let mut sb = crate::mem::CallBuf::zeroed(size.max(b.data.len()));
            if b.role == BufferRole::StructIn {
                sb.bytes_mut()[..b.data.len()].copy_from_slice(&b.data);
            }
            let arg = sb.addr();
            Prepared {
                sb: Some(sb),
                bufs: Vec::new(),
                arg,
            }
        }
        None => Prepared {
            sb: None,
            bufs: Vec::new(),
            arg: rec.arg,
        },
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
