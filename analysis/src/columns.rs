//! A trace decoded into columns: one vector per field, one row per ioctl / VMBus message,
//! plus the rarer record kinds as they are.
//!
//! Frames are decoded in parallel straight from their MessagePack blocks into per-frame
//! columns (no [`traces::Record`] is built for the hot kinds: the visitor borrows from
//! the block), VMBus requests are paired with their replies inside each frame, and one
//! sequential pass in frame order appends the frames and settles the pairs that cross a
//! frame boundary ([`crate::pairing`]); at the end each ioctl is charged with the host
//! round trips it caused.
//!
//! This is the one decode pass that statistics and the Parquet export share; the
//! columns move into polars frames without a per-row conversion.

use std::collections::HashMap;
use std::path::Path;

use driver_core::schema::{VmbusChannel, VmbusCmd};
use traces::{
    Annotation, Block, BufferRole, CaptureStats, Dropped, FdEvent, HostSignal, ProcessInfo, Reader,
    Record, RecordRef, VmbusDir,
};

use crate::error::{AnalysisError, Result};
use crate::names;
use crate::pairing::{FramePairing, FxMap, Pairing, Reply};

/// Key of a VMBus command family in [`VmbusColumns::cmd`] (bits 32..): per-adapter.
pub const FAM_ADAPTER: u64 = 0;
/// Global channel command.
pub const FAM_GLOBAL: u64 = 1;
/// Host-initiated command.
pub const FAM_HOST_TO_GUEST: u64 = 2;
/// The header could not be read (too short, unknown channel type).
pub const FAM_UNKNOWN: u64 = 3;
/// A host reply whose request is not in the trace.
pub const FAM_UNPAIRED_REPLY: u64 = 4;

/// Progress callback: `(frames done, frames in all)`. Called from worker threads.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Ioctl rows. `host_ns` and `round_trips` are filled by the VMBus pairing.
#[derive(Debug, Default, Clone)]
pub struct IoctlColumns {
    /// Capture-assigned ioctl id.
    pub id: Vec<u64>,
    /// Entry time, monotonic ns.
    pub ts_enter: Vec<u64>,
    /// Exit time, monotonic ns.
    pub ts_exit: Vec<u64>,
    /// Thread-group id.
    pub pid: Vec<u32>,
    /// Thread id.
    pub tid: Vec<u32>,
    /// File descriptor.
    pub fd: Vec<i32>,
    /// Device number.
    pub dev: Vec<u64>,
    /// Request code.
    pub cmd: Vec<u32>,
    /// Full 64-bit return value.
    pub ret: Vec<i64>,
    /// The return value is a failure (negative, or a raw failure NTSTATUS).
    pub is_error: Vec<bool>,
    /// Captured bytes read at entry (`struct_in` + `ptr_in` buffers).
    pub bytes_in: Vec<u64>,
    /// Captured bytes read at exit (`struct_out` + `ptr_out` buffers).
    pub bytes_out: Vec<u64>,
    /// Number of captured buffers.
    pub buffers: Vec<u32>,
    /// Sum of the round-trip times of the VMBus requests this ioctl caused, ns.
    pub host_ns: Vec<u64>,
    /// Number of those round trips.
    pub round_trips: Vec<u32>,
}

/// VMBus message rows. `rtt_ns` is set on replies that were paired with their request;
/// replies inherit their request's `cmd`.
#[derive(Debug, Default, Clone)]
pub struct VmbusColumns {
    /// Monotonic ns.
    pub ts: Vec<u64>,
    /// 0 guest→host, 1 host reply, 2 host→guest (as on disk).
    pub dir: Vec<u8>,
    /// Channel (`None` = global).
    pub channel: Vec<Option<u64>>,
    /// Per-channel request id.
    pub request_id: Vec<u64>,
    /// Sent without expecting a reply.
    pub is_async: Vec<bool>,
    /// Status of a reply.
    pub status: Vec<Option<i64>>,
    /// The ioctl that caused the message.
    pub ioctl_id: Vec<Option<u64>>,
    /// Sender's thread-group id.
    pub pid: Vec<u32>,
    /// Sender's thread id.
    pub tid: Vec<u32>,
    /// Full message length.
    pub len: Vec<u64>,
    /// Bytes actually captured.
    pub captured: Vec<u64>,
    /// Command key: family (`FAM_*`) << 32 | command value; see [`vmbus_key_label`].
    pub cmd: Vec<u64>,
    /// Round-trip time (reply ts − request ts) on paired replies.
    pub rtt_ns: Vec<Option<u64>>,
}

/// A whole trace as columns.
#[derive(Debug, Default, Clone)]
pub struct Columns {
    /// Ioctl rows, in file order.
    pub ioctls: IoctlColumns,
    /// VMBus rows, in file order.
    pub vmbus: VmbusColumns,
    /// Process records, in file order.
    pub processes: Vec<ProcessInfo>,
    /// Fd open / close / derived records, in file order.
    pub fds: Vec<FdEvent>,
    /// Dropped-event records, in file order.
    pub drops: Vec<Dropped>,
    /// Host-to-guest signal records, in file order.
    pub signals: Vec<HostSignal>,
    /// Capture statistics records, in file order.
    pub capture_stats: Vec<CaptureStats>,
    /// Annotations, in file order.
    pub annotations: Vec<Annotation>,
    /// Records of kinds this version does not know (written by a newer dxtrace).
    pub unknown_records: u64,
    /// Records read, of every kind.
    pub records: u64,
    /// Events the capture reported lost (sum of `Dropped::count`).
    pub dropped_events: u64,
    /// Frames that could not be read, and why (their records are missing).
    pub decode_errors: Vec<String>,
    /// Smallest timestamp seen (ns), 0 for an empty trace.
    pub ts_min: u64,
    /// Largest timestamp seen (ioctl exit times included).
    pub ts_max: u64,
}

macro_rules! extend_all {
    ($dst:expr, $src:expr; $($f:ident),*) => { $( $dst.$f.extend_from_slice(&$src.$f); )* };
}

impl IoctlColumns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.id.len()
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
    fn append(&mut self, o: &IoctlColumns) {
        extend_all!(self, o; id, ts_enter, ts_exit, pid, tid, fd, dev, cmd, ret, is_error,
            bytes_in, bytes_out, buffers, host_ns, round_trips);
    }
}

impl VmbusColumns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    fn append(&mut self, o: &VmbusColumns) {
        extend_all!(self, o; ts, dir, channel, request_id, is_async, status, ioctl_id, pid,
            tid, len, captured, cmd, rtt_ns);
    }
}

/// True if a full ioctl return value is a failure: negative (-errno, or a negative
/// NTSTATUS) or a raw failure NTSTATUS passed through as a positive value.
pub fn is_error_return(ret: i64) -> bool {
    use driver_core::ntstatus::ReturnValue;
    ret < 0
        || matches!(
            driver_core::classify_return(ret),
            ReturnValue::RawNtStatus { .. }
        )
}

/// Command key of a VMBus message, read from its header at the offsets of driver-core's
/// header layouts (decoding the whole message would cost far more than the rest of the
/// statistics). Replies get their request's key during pairing.
pub fn vmbus_key(dir: VmbusDir, bytes: &[u8]) -> u64 {
    use driver_core::VmbusDirection as D;
    let d = match dir {
        VmbusDir::GuestToHost => D::GuestToHost,
        VmbusDir::HostToGuest => D::HostToGuest,
        VmbusDir::HostReply => return FAM_UNPAIRED_REPLY << 32,
    };
    match driver_core::decode::vmbus_command(d, bytes) {
        Some(c) => {
            let fam = match c.channel {
                VmbusChannel::Adapter => FAM_ADAPTER,
                VmbusChannel::Global => FAM_GLOBAL,
                VmbusChannel::HostToGuest => FAM_HOST_TO_GUEST,
            };
            (fam << 32) | c.value as u64
        }
        None => FAM_UNKNOWN << 32,
    }
}

/// Display label of a command key (`CREATEALLOCATION`, `G:CREATEPROCESS`, `H:…`), with
/// driver-core's names.
pub fn vmbus_key_label(key: u64) -> String {
    let value = (key & 0xffff_ffff) as u32;
    let channel = match key >> 32 {
        FAM_ADAPTER => VmbusChannel::Adapter,
        FAM_GLOBAL => VmbusChannel::Global,
        FAM_HOST_TO_GUEST => VmbusChannel::HostToGuest,
        FAM_UNPAIRED_REPLY => return "REPLY ?".into(),
        _ => return "UNKNOWN".into(),
    };
    driver_core::decode::vmbus_cmd_label(VmbusCmd { channel, value })
}

/// Decodes `path` into columns on `threads` threads.
pub fn load(path: &Path, threads: usize, progress: Option<Progress<'_>>) -> Result<Columns> {
    let reader = Reader::open(path).map_err(|source| AnalysisError::Trace {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(load_reader(&reader, threads, progress))
}

/// Decodes an open trace into columns on `threads` threads. Damaged frames are listed in
/// [`Columns::decode_errors`]; the rest is still returned.
pub fn load_reader(reader: &Reader, threads: usize, progress: Option<Progress<'_>>) -> Columns {
    let total = reader.frames().len();
    let mut all = Columns::default();
    let mut pairing: Pairing<usize> = Pairing::default();
    // (ioctl id, round trip) for every paired reply, charged once all ioctls are in.
    let mut charges: Vec<(u64, u64)> = Vec::new();
    let mut first = true;
    let done: std::result::Result<(), std::convert::Infallible> = reader.map_blocks_in_order(
        threads,
        |_, block| match block.and_then(|b| frame_part(&b)) {
            Ok(part) => part,
            Err(e) => FramePart {
                cols: Columns {
                    decode_errors: vec![e.to_string()],
                    ..Columns::default()
                },
                ..FramePart::default()
            },
        },
        |i, part| {
            let base = all.vmbus.len();
            let got = pairing.merge(part.pairing, |row| base + row as usize);
            let p = part.cols;
            all.ioctls.append(&p.ioctls);
            all.vmbus.append(&p.vmbus);
            charges.extend_from_slice(&part.charges);
            let v = &mut all.vmbus;
            for (row, n) in part.pending {
                let (i, Some(j)) = (base + row as usize, got[n]) else {
                    continue;
                };
                let rtt = v.ts[i].saturating_sub(v.ts[j]);
                v.rtt_ns[i] = Some(rtt);
                v.cmd[i] = v.cmd[j];
                if let Some(id) = v.ioctl_id[j].or(v.ioctl_id[i]) {
                    charges.push((id, rtt));
                }
            }
            all.processes.extend(p.processes);
            all.fds.extend(p.fds);
            all.drops.extend(p.drops);
            all.signals.extend(p.signals);
            all.capture_stats.extend(p.capture_stats);
            all.annotations.extend(p.annotations);
            all.unknown_records += p.unknown_records;
            all.records += p.records;
            all.dropped_events += p.dropped_events;
            all.decode_errors.extend(p.decode_errors);
            if p.records > 0 {
                all.ts_min = if first {
                    p.ts_min
                } else {
                    all.ts_min.min(p.ts_min)
                };
                all.ts_max = all.ts_max.max(p.ts_max);
                first = false;
            }
            if let Some(p) = progress {
                p(i + 1, total);
            }
            Ok(())
        },
    );
    let Ok(()) = done;
    if let Some(e) = reader.scan_problem() {
        all.decode_errors.push(e.to_string());
    }
    let io = &mut all.ioctls;
    let index = IdIndex::new(&io.id);
    for (id, rtt) in charges {
        if let Some(row) = index.row(id) {
            io.host_ns[row] += rtt;
            io.round_trips[row] += 1;
        }
    }
    all
}

/// One frame as columns, paired within the frame.
#[derive(Default)]
struct FramePart {
    cols: Columns,
    /// Requests by frame-local VMBus row.
    pairing: FramePairing<u32>,
    /// Replies whose request may be in an earlier frame: (local row, pending index).
    pending: Vec<(u32, usize)>,
    /// (ioctl id, round trip) of the pairs completed within the frame.
    charges: Vec<(u64, u64)>,
}

/// Decodes one frame's block into columns. An undecodable record fails the whole frame
/// (its rows are dropped, as the owned decoder would).
fn frame_part(block: &Block<'_>) -> traces::Result<FramePart> {
    let mut part = FramePart::default();
    let c = &mut part.cols;
    c.records = block.record_count() as u64;
    c.ts_min = u64::MAX;
    block.for_each(|r| {
        if let (Some(a), Some(b)) = (r.ts(), r.ts_end()) {
            c.ts_min = c.ts_min.min(a);
            c.ts_max = c.ts_max.max(b);
        }
        match r {
            RecordRef::Ioctl(r) => {
                let io = &mut c.ioctls;
                let (mut bin, mut bout) = (0u64, 0u64);
                for b in r.buffers {
                    match b.role {
                        BufferRole::StructIn | BufferRole::PtrIn => bin += b.data.len() as u64,
                        BufferRole::StructOut | BufferRole::PtrOut => bout += b.data.len() as u64,
                    }
                }
                io.id.push(r.id);
                io.ts_enter.push(r.ts_enter);
                io.ts_exit.push(r.ts_exit);
                io.pid.push(r.pid);
                io.tid.push(r.tid);
                io.fd.push(r.fd);
                io.dev.push(r.dev);
                io.cmd.push(r.cmd);
                io.ret.push(r.ret);
                io.is_error.push(is_error_return(r.ret));
                io.bytes_in.push(bin);
                io.bytes_out.push(bout);
                io.buffers.push(r.buffers.len() as u32);
                io.host_ns.push(0);
                io.round_trips.push(0);
            }
            RecordRef::Vmbus(m) => {
                let v = &mut c.vmbus;
                let row = v.len();
                let mut key = vmbus_key(m.dir, m.bytes);
                let mut rtt = None;
                match m.dir {
                    VmbusDir::GuestToHost if !m.is_async => {
                        part.pairing.request((m.channel, m.request_id), row as u32);
                    }
                    VmbusDir::HostReply => match part.pairing.reply((m.channel, m.request_id)) {
                        Reply::Paired(j) => {
                            let j = j as usize;
                            let t = m.ts.saturating_sub(v.ts[j]);
                            rtt = Some(t);
                            key = v.cmd[j];
                            if let Some(id) = v.ioctl_id[j].or(m.ioctl_id) {
                                part.charges.push((id, t));
                            }
                        }
                        Reply::Pending(n) => part.pending.push((row as u32, n)),
                        Reply::Unpaired => {}
                    },
                    _ => {}
                }
                v.cmd.push(key);
                v.ts.push(m.ts);
                v.dir.push(u8::from(m.dir));
                v.channel.push(m.channel);
                v.request_id.push(m.request_id);
                v.is_async.push(m.is_async);
                v.status.push(m.status);
                v.ioctl_id.push(m.ioctl_id);
                v.pid.push(m.pid);
                v.tid.push(m.tid);
                v.len.push(m.len);
                v.captured.push(m.bytes.len() as u64);
                v.rtt_ns.push(rtt);
            }
            RecordRef::Other(rec) => match rec {
                Record::Process(p) => c.processes.push(p.clone()),
                Record::Fd(f) => c.fds.push(f.clone()),
                Record::Dropped(d) => {
                    c.dropped_events += d.count;
                    c.drops.push(d.clone());
                }
                Record::Signal(s) => c.signals.push(s.clone()),
                Record::Stats(s) => c.capture_stats.push(s.clone()),
                Record::Annotation(a) => c.annotations.push(a.clone()),
                Record::Unknown { .. } => c.unknown_records += 1,
                // The hot kinds always come as views.
                Record::Ioctl(_) | Record::Vmbus(_) => {}
            },
        }
    })?;
    if c.ts_min == u64::MAX {
        c.ts_min = 0;
    }
    Ok(part)
}

/// Ioctl id → row, as a dense table when ids are compact (the usual case: the capture
/// numbers calls from 0) and a hash map otherwise.
enum IdIndex {
    Dense(Vec<u32>),
    Sparse(FxMap<u64, u32>),
}

impl IdIndex {
    fn new(ids: &[u64]) -> IdIndex {
        let max = ids.iter().copied().max().unwrap_or(0);
        if max < 4 * ids.len() as u64 + 1024 {
            let mut t = vec![u32::MAX; max as usize + 1];
            for (row, id) in ids.iter().enumerate() {
                t[*id as usize] = row as u32;
            }
            IdIndex::Dense(t)
        } else {
            IdIndex::Sparse(
                ids.iter()
                    .enumerate()
                    .map(|(r, id)| (*id, r as u32))
                    .collect(),
            )
        }
    }
    fn row(&self, id: u64) -> Option<usize> {
        match self {
            IdIndex::Dense(t) => t
                .get(id as usize)
                .copied()
                .filter(|r| *r != u32::MAX)
                .map(|r| r as usize),
            IdIndex::Sparse(m) => m.get(&id).map(|r| *r as usize),
        }
    }
}

/// Ioctl name of each distinct request code in `cmds` (driver-core's tables; unknown codes
/// as `0x…`), looked up once per code.
pub(crate) fn ioctl_name_cache(cmds: &[u32]) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    for c in cmds {
        m.entry(*c).or_insert_with(|| names::ioctl_name(*c));
    }
    m
}
