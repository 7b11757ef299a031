//! The per-trace index: every ioctl and VMBus round trip as compact columns per lane,
//! level-of-detail summaries per lane, the process list, drops and damage. (Per-name
//! statistics come from the `analysis` crate: [`crate::state::AppState::stats`].)
//! Cached on disk across restarts ([`crate::cache`]).
//!
//! Built once per trace (frames decoded in parallel), then every timeline query at any
//! zoom is answered from it without touching the file: a window holding few events gets
//! the spans themselves, a dense one gets per-bucket summaries (count, errors, busiest
//! span, bytes) from the [`Pyramid`]. Only detail views re-read the one or two frames
//! that hold the event.
//!
//! Memory is struct-of-arrays, about 34 bytes per ioctl and 27 per VMBus round trip
//! (the reply is folded into its request as a duration), plus ~2 bytes per event of
//! summaries.

use std::collections::{BTreeMap, HashMap};

use driver_core::ntstatus::{ReturnValue, classify_return};
use driver_core::schema::VmbusCmd;
use serde::{Deserialize, Serialize};
use traces::{
    BUF_TRUNCATED, BUF_UNREADABLE, Block, Header, Reader, Record, RecordKind, RecordRef, VmbusDir,
};

/// Which events a lane holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaneKind {
    /// ioctl spans of one thread.
    Ioctl {
        /// Thread-group id.
        pid: u32,
        /// Thread id.
        tid: u32,
    },
    /// VMBus messages of one channel (request → reply spans; host→guest packets).
    Vmbus {
        /// `None` = the global channel, else the adapter LUID.
        channel: Option<u64>,
    },
}

/// Columns of one ioctl lane, sorted by `ts`. (Columns are stored in the on-disk cache
/// as little-endian byte strings: [`crate::cache`].)
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IoCols {
    /// Entry time, absolute monotonic ns.
    #[serde(with = "crate::cache::le")]
    pub ts: Vec<u64>,
    /// Duration, ns (saturated at u32::MAX ≈ 4.3 s).
    #[serde(with = "crate::cache::le")]
    pub dur: Vec<u32>,
    /// Index into [`TraceIndex::codes`].
    #[serde(with = "crate::cache::le")]
    pub code: Vec<u16>,
    /// Full return value.
    #[serde(with = "crate::cache::le")]
    pub ret: Vec<i64>,
    /// Captured buffer bytes.
    #[serde(with = "crate::cache::le")]
    pub bytes: Vec<u32>,
    /// Capture id ([`traces::IoctlRecord::id`]).
    #[serde(with = "crate::cache::le")]
    pub id: Vec<u64>,
}

/// `VmCols::flags` bit: the reply carried a failure status.
pub const VM_ERR: u8 = 1;
/// `VmCols::flags` bit: sent async (no reply expected).
pub const VM_ASYNC: u8 = 2;
/// `VmCols::flags` bit: a host→guest packet.
pub const VM_HOST: u8 = 4;
/// `VmCols::flags` bit: a sync request whose reply was never seen.
pub const VM_NO_REPLY: u8 = 8;

/// Columns of one VMBus lane, sorted by `ts`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VmCols {
    /// Send time (absolute monotonic ns).
    #[serde(with = "crate::cache::le")]
    pub ts: Vec<u64>,
    /// Round trip to the reply, ns (0 when there is none).
    #[serde(with = "crate::cache::le")]
    pub dur: Vec<u32>,
    /// Index into [`TraceIndex::cmds`].
    #[serde(with = "crate::cache::le")]
    pub cmd: Vec<u16>,
    /// `VM_*` bits.
    #[serde(with = "crate::cache::le")]
    pub flags: Vec<u8>,
    /// Id of the ioctl that caused it, `u64::MAX` if unknown.
    #[serde(with = "crate::cache::le")]
    pub ioctl: Vec<u64>,
    /// Message bytes (request + reply).
    #[serde(with = "crate::cache::le")]
    pub bytes: Vec<u32>,
}

/// The events of a lane.
#[derive(Debug, Serialize, Deserialize)]
pub enum LaneData {
    /// ioctl spans.
    Io(IoCols),
    /// VMBus spans.
    Vm(VmCols),
}

/// One timeline lane.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lane {
    /// What it holds.
    pub kind: LaneKind,
    /// Display label.
    pub label: String,
    /// Longest span, ns (queries look back this far for spans entering the window).
    pub max_dur: u32,
    /// The events.
    pub data: LaneData,
    /// Level-of-detail summaries.
    pub pyr: Pyramid,
}

impl Lane {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts().len()
    }
    /// True if the lane has no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Start times.
    pub fn ts(&self) -> &[u64] {
        match &self.data {
            LaneData::Io(c) => &c.ts,
            LaneData::Vm(c) => &c.ts,
        }
    }
    /// Durations.
    pub fn dur(&self) -> &[u32] {
        match &self.data {
            LaneData::Io(c) => &c.dur,
            LaneData::Vm(c) => &c.dur,
        }
    }
    /// Code index (ioctl code or VMBus command) of event `i`.
    pub fn code(&self, i: usize) -> u16 {
        match &self.data {
            LaneData::Io(c) => c.code[i],
            LaneData::Vm(c) => c.cmd[i],
        }
    }
    /// Whether event `i` failed.
    pub fn err(&self, i: usize) -> bool {
        match &self.data {
            LaneData::Io(c) => is_error(c.ret[i]),
            LaneData::Vm(c) => c.flags[i] & VM_ERR != 0,
        }
    }
    /// Bytes of event `i`.
    pub fn bytes(&self, i: usize) -> u32 {
        match &self.data {
            LaneData::Io(c) => c.bytes[i],
            LaneData::Vm(c) => c.bytes[i],
        }
    }
    /// Index range of events that may overlap `[t0, t1]`.
    pub fn range(&self, t0: u64, t1: u64) -> std::ops::Range<usize> {
        let ts = self.ts();
        let from = t0.saturating_sub(self.max_dur as u64);
        let lo = ts.partition_point(|&t| t < from);
        let hi = ts.partition_point(|&t| t <= t1);
        lo..hi.max(lo)
    }
}

/// Whether a full ioctl return value is a failure (-errno or a raw failure NTSTATUS).
pub fn is_error(ret: i64) -> bool {
    matches!(
        classify_return(ret),
        ReturnValue::Errno { .. } | ReturnValue::RawNtStatus { .. }
    )
}

/// Summary of the events starting in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Events.
    pub count: u32,
    /// Failed events.
    pub errors: u32,
    /// Index (within the lane) of the longest event.
    pub busiest: u32,
    /// Its duration.
    pub busiest_dur: u32,
    /// Bytes.
    pub bytes: u64,
}

impl Summary {
    pub(crate) fn add(&mut self, i: u32, dur: u32, err: bool, bytes: u32) {
        if self.count == 0 || dur > self.busiest_dur {
            self.busiest = i;
            self.busiest_dur = dur;
        }
        self.count += 1;
        self.errors += err as u32;
        self.bytes += bytes as u64;
    }
    pub(crate) fn merge(&mut self, o: &Summary) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 || o.busiest_dur > self.busiest_dur {
            self.busiest = o.busiest;
            self.busiest_dur = o.busiest_dur;
        }
        self.count += o.count;
        self.errors += o.errors;
        self.bytes += o.bytes;
    }
}

/// One level of a [`Pyramid`]: non-empty buckets of `width` ns, by bucket number.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Level {
    /// Bucket width, ns.
    pub width: u64,
    /// Bucket numbers (`(ts - origin) / width`), ascending.
    #[serde(with = "crate::cache::le")]
    pub idx: Vec<u32>,
    /// Their summaries.
    #[serde(with = "crate::cache::summaries")]
    pub sum: Vec<Summary>,
}

/// Level-of-detail summaries of one lane: level 0 has buckets holding ~16 events on
/// average, each further level is 4× coarser, up to one bucket for the whole trace.
/// Sparse, so a lane that is idle most of the time costs nothing for its idle time.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pyramid {
    /// Time of bucket 0 of every level.
    pub origin: u64,
    /// Finest first.
    pub levels: Vec<Level>,
}

/// Average events per level-0 bucket; below that a query aggregates raw events instead.
const EVENTS_PER_BUCKET: u64 = 16;

impl Pyramid {
    fn build(lane: &Lane, origin: u64, span: u64) -> Pyramid {
        let n = lane.len() as u64;
        if n == 0 {
            return Pyramid {
                origin,
                levels: Vec::new(),
            };
        }
        let w0 = (span.max(1) * EVENTS_PER_BUCKET / n)
            .max(1024)
            .next_power_of_two();
        let ts = lane.ts();
        let dur = lane.dur();
        let mut l0 = Level {
            width: w0,
            ..Level::default()
        };
        for i in 0..ts.len() {
            let b = ((ts[i] - origin) / w0) as u32;
            if l0.idx.last() != Some(&b) {
                l0.idx.push(b);
                l0.sum.push(Summary::default());
            }
            l0.sum
                .last_mut()
                .expect("pushed")
                .add(i as u32, dur[i], lane.err(i), lane.bytes(i));
        }
        Pyramid::coarsen(origin, l0, span)
    }

    /// The levels above `l0`, each 4× coarser, up to one bucket or one wider than `span`.
    fn coarsen(origin: u64, l0: Level, span: u64) -> Pyramid {
        let mut levels = vec![l0];
        loop {
            let prev = levels.last().expect("level 0");
            if prev.idx.len() <= 1 || prev.width > span {
                break;
            }
            let mut next = Level {
                width: prev.width * 4,
                ..Level::default()
            };
            for (b, s) in prev.idx.iter().zip(&prev.sum) {
                let nb = b / 4;
                if next.idx.last() != Some(&nb) {
                    next.idx.push(nb);
                    next.sum.push(Summary::default());
                }
                next.sum.last_mut().expect("pushed").merge(s);
            }
            levels.push(next);
        }
        Pyramid { origin, levels }
    }

    /// The coarsest level whose buckets are no wider than `width` (level 0 if none).
    pub fn level_for(&self, width: u64) -> Option<&Level> {
        self.levels
            .iter()
            .rev()
            .find(|l| l.width <= width)
            .or(self.levels.first())
    }
}

/// A request code seen in the trace, with its name from `driver-core`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeInfo {
    /// Request code.
    pub code: u32,
    /// Macro name, or the code in hex when no table knows it.
    pub name: String,
}

/// A VMBus command seen in the trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmdInfo {
    /// Display name (`G:CREATEPROCESS`, `SUBMITCOMMAND`, `UNKNOWN`).
    pub name: String,
}

/// A process and its threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRow {
    /// pid.
    pub pid: u32,
    /// `comm`, empty if no process record was seen.
    pub comm: String,
    /// Threads that made ioctls, with their call counts.
    pub threads: Vec<(u32, u64)>,
    /// ioctls in total.
    pub ioctls: u64,
}

/// Lost events reported by the capture.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropMark {
    /// When (absolute ns).
    pub ts: u64,
    /// How many events.
    pub count: u64,
    /// Why.
    pub reason: String,
}

/// A region of the file that could not be read, with the time it covers when known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gap {
    /// Byte offset.
    pub offset: u64,
    /// Time range (absolute ns) of the damaged frame, if its header was readable.
    pub ts: Option<(u64, u64)>,
    /// What is wrong.
    pub problem: String,
}

/// Everything the pages need about one trace.
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceIndex {
    /// Header from the file.
    pub header: Header,
    /// Format version `major.minor`.
    pub version: String,
    /// File size.
    pub file_bytes: u64,
    /// Frames.
    pub frames: u64,
    /// The file has its footer index.
    pub footer: bool,
    /// First and last timestamp (absolute ns).
    pub start: u64,
    /// Last timestamp.
    pub end: u64,
    /// Records per kind name.
    pub records: BTreeMap<String, u64>,
    /// All records.
    pub total_records: u64,
    /// ioctl request codes, indexed by [`IoCols::code`].
    pub codes: Vec<CodeInfo>,
    /// VMBus commands, indexed by [`VmCols::cmd`].
    pub cmds: Vec<CmdInfo>,
    /// Lanes: ioctl lanes by (pid, tid), then VMBus lanes by channel.
    pub lanes: Vec<Lane>,
    /// Global ioctl throughput summaries.
    pub all_io: Pyramid,
    /// Global VMBus throughput summaries.
    pub all_vm: Pyramid,
    /// Processes.
    pub processes: Vec<ProcessRow>,
    /// Drop records.
    pub drops: Vec<DropMark>,
    /// Events lost in total.
    pub dropped_events: u64,
    /// Damaged or unreadable regions.
    pub gaps: Vec<Gap>,
    /// ioctls whose buffers were truncated or unreadable.
    pub incomplete_buffers: u64,
    /// Wall time the build took, ms.
    pub build_ms: u64,
}

/// Raw per-frame output of the parallel decode; interned on the main thread.
#[derive(Default)]
struct Chunk {
    io: Vec<RawIo>,
    vm: Vec<RawVm>,
    replies: Vec<RawReply>,
    procs: Vec<(u32, String)>,
    drops: Vec<DropMark>,
    kinds: BTreeMap<&'static str, u64>,
    incomplete: u64,
    unknown: u64,
}

struct RawIo {
    ts: u64,
    dur: u32,
    pid: u32,
    tid: u32,
    cmd: u32,
    ret: i64,
    bytes: u32,
    id: u64,
}

struct RawVm {
    ts: u64,
    channel: Option<u64>,
    request_id: u64,
    cmd: Option<VmbusCmd>,
    flags: u8,
    ioctl: u64,
    bytes: u32,
    dur: u32,
    paired: bool,
}

struct RawReply {
    ts: u64,
    channel: Option<u64>,
    request_id: u64,
    err: bool,
    bytes: u32,
}

/// Decodes one frame's records in place (borrowed, nothing copied) into a [`Chunk`]. A
/// frame that cannot be read, or holds a record that cannot be decoded, gives its
/// problem instead: the part decoded before it is discarded, as a damaged frame is one
/// [`Gap`].
fn decode_chunk(block: traces::Result<Block<'_>>) -> Result<Chunk, String> {
    let block = block.map_err(|e| e.to_string())?;
    let mut c = Chunk::default();
    // replies in the same frame as their request are folded in right here
    let mut open: HashMap<(Option<u64>, u64), usize> = HashMap::new();
    block
        .for_each(|r| c.add(r, &mut open))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

impl Chunk {
    fn add(&mut self, r: RecordRef<'_>, open: &mut HashMap<(Option<u64>, u64), usize>) {
        let c = self;
        *c.kinds
            .entry(r.kind().map(RecordKind::name).unwrap_or("unknown"))
            .or_default() += 1;
        match r {
            RecordRef::Ioctl(x) => {
                let mut bytes = 0u64;
                let mut incomplete = false;
                for b in x.buffers.iter() {
                    bytes += b.data.len() as u64;
                    incomplete |= b.flags & (BUF_TRUNCATED | BUF_UNREADABLE) != 0;
                }
                if incomplete {
                    c.incomplete += 1;
                }
                let dur = x.ts_exit.saturating_sub(x.ts_enter).min(u32::MAX as u64) as u32;
                c.io.push(RawIo {
                    ts: x.ts_enter,
                    dur,
                    pid: x.pid,
                    tid: x.tid,
                    cmd: x.cmd,
                    ret: x.ret,
                    bytes: bytes.min(u32::MAX as u64) as u32,
                    id: x.id,
                });
            }
            RecordRef::Vmbus(m) => {
                let bytes = m.len.min(u32::MAX as u64) as u32;
                match m.dir {
                    VmbusDir::HostReply => {
                        let err = m.status.is_some_and(|s| s != 0);
                        if let Some(i) = open.remove(&(m.channel, m.request_id)) {
                            let v = &mut c.vm[i];
                            v.dur = m.ts.saturating_sub(v.ts).min(u32::MAX as u64) as u32;
                            v.bytes = v.bytes.saturating_add(bytes);
                            v.paired = true;
                            if err {
                                v.flags |= VM_ERR;
                            }
                        } else {
                            c.replies.push(RawReply {
                                ts: m.ts,
                                channel: m.channel,
                                request_id: m.request_id,
                                err,
                                bytes,
                            });
                        }
                    }
                    dir => {
                        let mut flags = 0;
                        if m.is_async {
                            flags |= VM_ASYNC;
                        }
                        if dir == VmbusDir::HostToGuest {
                            flags |= VM_HOST;
                        }
                        let needs_reply = dir == VmbusDir::GuestToHost && !m.is_async;
                        if needs_reply {
                            open.insert((m.channel, m.request_id), c.vm.len());
                        }
                        c.vm.push(RawVm {
                            ts: m.ts,
                            channel: m.channel,
                            request_id: m.request_id,
                            cmd: driver_core::decode::vmbus_command(
                                if dir == VmbusDir::HostToGuest {
                                    driver_core::VmbusDirection::HostToGuest
                                } else {
                                    driver_core::VmbusDirection::GuestToHost
                                },
                                m.bytes,
                            ),
                            flags,
                            ioctl: m.ioctl_id.unwrap_or(u64::MAX),
                            bytes,
                            dur: 0,
                            paired: !needs_reply,
                        });
                    }
                }
            }
            RecordRef::Other(Record::Process(p)) => c.procs.push((p.pid, p.comm.clone())),
            RecordRef::Other(Record::Dropped(d)) => {
                c.drops.push(DropMark {
                    ts: d.ts,
                    count: d.count,
                    reason: d.reason.clone(),
                });
            }
            RecordRef::Other(Record::Unknown { .. }) => c.unknown += 1,
            RecordRef::Other(_) => {}
        }
    }
}

/// Sorts a lane's columns by timestamp (threads of one lane can interleave out of order
/// across frames) and gives back the slack the columns grew by doubling, before the index
/// lives for hours.
fn sort_lane_io(c: &mut IoCols) {
    let perm = ts_order(&mut c.ts);
    permute(&mut c.dur, &perm);
    permute(&mut c.code, &perm);
    permute(&mut c.ret, &perm);
    permute(&mut c.bytes, &perm);
    permute(&mut c.id, &perm);
}

fn sort_lane_vm(c: &mut VmCols) {
    let perm = ts_order(&mut c.ts);
    permute(&mut c.dur, &perm);
    permute(&mut c.cmd, &perm);
    permute(&mut c.flags, &perm);
    permute(&mut c.ioctl, &perm);
    permute(&mut c.bytes, &perm);
}

/// Sorts `ts` and returns the permutation that did it (`None`: it already was sorted).
fn ts_order(ts: &mut Vec<u64>) -> Option<Vec<u32>> {
    ts.shrink_to_fit();
    if ts.is_sorted() {
        return None;
    }
    let mut perm: Vec<u32> = (0..ts.len() as u32).collect();
    perm.sort_by_key(|&i| ts[i as usize]);
    *ts = perm.iter().map(|&i| ts[i as usize]).collect();
    Some(perm)
}

/// Applies [`ts_order`]'s permutation to another column of the same lane.
fn permute<T: Copy>(v: &mut Vec<T>, perm: &Option<Vec<u32>>) {
    match perm {
        Some(p) => *v = p.iter().map(|&i| v[i as usize]).collect(),
        None => v.shrink_to_fit(),
    }
}

/// A global throughput pyramid over all lanes of one sort (ioctl or VMBus).
fn build_global(lanes: &[&Lane], origin: u64, span: u64) -> Pyramid {
    let n: u64 = lanes.iter().map(|l| l.len() as u64).sum();
    if n == 0 {
        return Pyramid {
            origin,
            levels: Vec::new(),
        };
    }
    let w0 = (span.max(1) * EVENTS_PER_BUCKET / n)
        .max(1024)
        .next_power_of_two();
    let nb = (span / w0 + 1) as usize;
    let mut dense = vec![Summary::default(); nb];
    for l in lanes {
        let ts = l.ts();
        let dur = l.dur();
        for i in 0..ts.len() {
            let b = ((ts[i] - origin) / w0) as usize;
            dense[b.min(nb - 1)].add(i as u32, dur[i], l.err(i), l.bytes(i));
        }
    }
    let mut l0 = Level {
        width: w0,
        ..Level::default()
    };
    for (b, s) in dense.into_iter().enumerate() {
        if s.count > 0 {
            l0.idx.push(b as u32);
            l0.sum.push(s);
        }
    }
    Pyramid::coarsen(origin, l0, span)
}

impl TraceIndex {
    /// Reads every frame of `reader` on `threads` threads and builds the index. Damaged
    /// frames become [`Gap`]s; they never fail the build.
    pub fn build(reader: &Reader, threads: usize) -> TraceIndex {
        let t_start = std::time::Instant::now();
        let frames = reader.frames();
        let mut codes: Vec<CodeInfo> = Vec::new();
        let mut code_ix: HashMap<u32, u16> = HashMap::new();
        let mut cmds: Vec<CmdInfo> = Vec::new();
        let mut cmd_ix: HashMap<Option<VmbusCmd>, u16> = HashMap::new();
        let mut lane_ix: HashMap<LaneKind, usize> = HashMap::new();
        let mut lanes: Vec<(LaneKind, LaneData)> = Vec::new();
        let mut unpaired_req: HashMap<(Option<u64>, u64), (usize, usize)> = HashMap::new();
        let mut orphan_replies: Vec<RawReply> = Vec::new();
        let mut procs: BTreeMap<u32, String> = BTreeMap::new();
        let mut drops = Vec::new();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        let mut gaps = Vec::new();
        let mut incomplete = 0;
        let mut total = 0u64;

        // Frames are decoded in parallel and merged here in frame order: appending in
        // that order keeps each lane's columns sorted in the common case, so no sort pass
        // is needed afterwards.
        let merged: Result<(), std::convert::Infallible> = reader.map_blocks_in_order(
            threads,
            |_, b| decode_chunk(b),
            |fi, r| {
                let c = match r {
                    Ok(c) => c,
                    Err(e) => {
                        let f = &frames[fi];
                        gaps.push(Gap {
                            offset: f.offset,
                            ts: Some((f.ts_min, f.ts_max)),
                            problem: e,
                        });
                        return Ok(());
                    }
                };
                for (k, v) in c.kinds {
                    *kinds.entry(k.to_string()).or_default() += v;
                    total += v;
                }
                if c.unknown > 0 {
                    *kinds.entry("unknown".into()).or_default() += 0;
                }
                incomplete += c.incomplete;
                procs.extend(c.procs);
                drops.extend(c.drops);
                for x in c.io {
                    let code = *code_ix.entry(x.cmd).or_insert_with(|| {
                        codes.push(CodeInfo {
                            code: x.cmd,
                            name: driver_core::lookup_code(x.cmd)
                                .map(|d| d.name.to_string())
                                .unwrap_or_else(|| format!("{:#010x}", x.cmd)),
                        });
                        (codes.len() - 1).min(u16::MAX as usize) as u16
                    });
                    let kind = LaneKind::Ioctl {
                        pid: x.pid,
                        tid: x.tid,
                    };
                    let li = *lane_ix.entry(kind).or_insert_with(|| {
                        lanes.push((kind, LaneData::Io(IoCols::default())));
                        lanes.len() - 1
                    });
                    let LaneData::Io(cols) = &mut lanes[li].1 else {
                        unreachable!("ioctl lane kinds hold ioctl data")
                    };
                    cols.ts.push(x.ts);
                    cols.dur.push(x.dur);
                    cols.code.push(code);
                    cols.ret.push(x.ret);
                    cols.bytes.push(x.bytes);
                    cols.id.push(x.id);
                }
                for x in c.vm {
                    let cmd = *cmd_ix.entry(x.cmd).or_insert_with(|| {
                        cmds.push(CmdInfo {
                            name: x
                                .cmd
                                .map(driver_core::decode::vmbus_cmd_label)
                                .unwrap_or_else(|| "UNKNOWN".into()),
                        });
                        (cmds.len() - 1).min(u16::MAX as usize) as u16
                    });
                    let kind = LaneKind::Vmbus { channel: x.channel };
                    let li = *lane_ix.entry(kind).or_insert_with(|| {
                        lanes.push((kind, LaneData::Vm(VmCols::default())));
                        lanes.len() - 1
                    });
                    let LaneData::Vm(cols) = &mut lanes[li].1 else {
                        unreachable!("vmbus lane kinds hold vmbus data")
                    };
                    if !x.paired {
                        unpaired_req.insert((x.channel, x.request_id), (li, cols.ts.len()));
                    }
                    cols.ts.push(x.ts);
                    cols.dur.push(x.dur);
                    cols.cmd.push(cmd);
                    cols.flags.push(x.flags);
                    cols.ioctl.push(x.ioctl);
                    cols.bytes.push(x.bytes);
                }
                orphan_replies.extend(c.replies);
                Ok(())
            },
        );
        let Ok(()) = merged;

        // Replies that crossed a frame boundary.
        for r in orphan_replies {
            if let Some((li, i)) = unpaired_req.remove(&(r.channel, r.request_id))
                && let LaneData::Vm(cols) = &mut lanes[li].1
            {
                cols.dur[i] = r.ts.saturating_sub(cols.ts[i]).min(u32::MAX as u64) as u32;
                cols.bytes[i] = cols.bytes[i].saturating_add(r.bytes);
                if r.err {
                    cols.flags[i] |= VM_ERR;
                }
            }
        }
        for (_, (li, i)) in unpaired_req {
            if let LaneData::Vm(cols) = &mut lanes[li].1 {
                cols.flags[i] |= VM_NO_REPLY;
            }
        }
        if let Some(e) = reader.scan_problem() {
            gaps.push(Gap {
                offset: e.offset().unwrap_or(0),
                ts: None,
                problem: e.to_string(),
            });
        }
        for l in reader.lost() {
            gaps.push(Gap {
                offset: l.offset,
                ts: None,
                problem: format!("{} bytes skipped: {}", l.len, l.reason),
            });
        }

        let start = frames.iter().map(|f| f.ts_min).min().unwrap_or(0);
        let end = frames.iter().map(|f| f.ts_max).max().unwrap_or(start);
        let span = end.saturating_sub(start);

        // Deterministic lane order: ioctl lanes by (pid, tid), then VMBus channels.
        lanes.sort_by_key(|(k, _)| *k);
        let mut built: Vec<Lane> = lanes
            .into_iter()
            .map(|(kind, mut data)| {
                match &mut data {
                    LaneData::Io(c) => sort_lane_io(c),
                    LaneData::Vm(c) => sort_lane_vm(c),
                }
                let label = match kind {
                    LaneKind::Ioctl { pid, tid } => {
                        let comm = procs.get(&pid).map(String::as_str).unwrap_or("");
                        if comm.is_empty() {
                            format!("{pid}/{tid}")
                        } else {
                            format!("{comm} {pid}/{tid}")
                        }
                    }
                    LaneKind::Vmbus { channel: None } => "vmbus global".to_string(),
                    LaneKind::Vmbus { channel: Some(c) } => format!("vmbus {c:#x}"),
                };
                let mut lane = Lane {
                    kind,
                    label,
                    max_dur: 0,
                    data,
                    pyr: Pyramid::default(),
                };
                lane.max_dur = lane.dur().iter().copied().max().unwrap_or(0);
                lane.pyr = Pyramid::build(&lane, start, span);
                lane
            })
            .collect();
        built.shrink_to_fit();

        let io_lanes: Vec<&Lane> = built
            .iter()
            .filter(|l| matches!(l.data, LaneData::Io(_)))
            .collect();
        let vm_lanes: Vec<&Lane> = built
            .iter()
            .filter(|l| matches!(l.data, LaneData::Vm(_)))
            .collect();
        let all_io = build_global(&io_lanes, start, span);
        let all_vm = build_global(&vm_lanes, start, span);

        let mut prows: BTreeMap<u32, ProcessRow> = BTreeMap::new();
        for (pid, comm) in &procs {
            prows.insert(
                *pid,
                ProcessRow {
                    pid: *pid,
                    comm: comm.clone(),
                    threads: Vec::new(),
                    ioctls: 0,
                },
            );
        }
        for l in &io_lanes {
            if let LaneKind::Ioctl { pid, tid } = l.kind {
                let row = prows.entry(pid).or_insert_with(|| ProcessRow {
                    pid,
                    comm: String::new(),
                    threads: Vec::new(),
                    ioctls: 0,
                });
                row.threads.push((tid, l.len() as u64));
                row.ioctls += l.len() as u64;
            }
        }
        drops.sort_by_key(|d: &DropMark| d.ts);
        let dropped_events = drops.iter().map(|d| d.count).sum();
        let (maj, min) = reader.version();
        TraceIndex {
            header: reader.header().clone(),
            version: format!("{maj}.{min}"),
            file_bytes: reader.file_len(),
            frames: frames.len() as u64,
            footer: reader.has_footer(),
            start,
            end,
            records: kinds,
            total_records: total,
            codes,
            cmds,
            lanes: built,
            all_io,
            all_vm,
            processes: prows.into_values().collect(),
            drops,
            dropped_events,
            gaps,
            incomplete_buffers: incomplete,
            build_ms: t_start.elapsed().as_millis() as u64,
        }
    }

    /// Number of ioctls.
    pub fn ioctl_count(&self) -> u64 {
        self.lanes
            .iter()
            .filter(|l| matches!(l.data, LaneData::Io(_)))
            .map(|l| l.len() as u64)
            .sum()
    }

    /// Number of VMBus spans (a request and its reply count once).
    pub fn vmbus_count(&self) -> u64 {
        self.lanes
            .iter()
            .filter(|l| matches!(l.data, LaneData::Vm(_)))
            .map(|l| l.len() as u64)
            .sum()
    }

    /// Display name of the code index `c` of a lane.
    pub fn code_name(&self, lane: &Lane, c: u16) -> &str {
        match lane.data {
            LaneData::Io(_) => self.codes.get(c as usize).map(|x| x.name.as_str()),
            LaneData::Vm(_) => self.cmds.get(c as usize).map(|x| x.name.as_str()),
        }
        .unwrap_or("?")
    }

    /// Approximate heap bytes held (columns and summaries), for the benchmark and logs.
    pub fn heap_bytes(&self) -> u64 {
        let mut n = 0u64;
        let pyr = |p: &Pyramid| -> u64 {
            p.levels
                .iter()
                .map(|l| (l.idx.capacity() * 4 + l.sum.capacity() * 24) as u64)
                .sum()
        };
        for l in &self.lanes {
            n += match &l.data {
                LaneData::Io(c) => {
                    (c.ts.capacity() * 8
                        + c.dur.capacity() * 4
                        + c.code.capacity() * 2
                        + c.ret.capacity() * 8
                        + c.bytes.capacity() * 4
                        + c.id.capacity() * 8) as u64
                }
                LaneData::Vm(c) => {
                    (c.ts.capacity() * 8
                        + c.dur.capacity() * 4
                        + c.cmd.capacity() * 2
                        + c.flags.capacity()
                        + c.ioctl.capacity() * 8
                        + c.bytes.capacity() * 4) as u64
                }
            };
            n += pyr(&l.pyr);
        }
        n + pyr(&self.all_io) + pyr(&self.all_vm)
    }
}
