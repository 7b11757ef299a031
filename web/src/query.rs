//! Queries over a [`TraceIndex`]: timeline tiles, search, event details, trace
//! comparison. Pure functions of the index (and, for details, the reader), so they are
//! unit-tested and benchmarked without a server.

use serde::Serialize;
use traces::{BufferRole, Reader, Record, VmbusDir};

use crate::error::AppError;
use crate::index::{
    Lane, LaneData, LaneKind, Pyramid, Summary, TraceIndex, VM_ASYNC, VM_ERR, VM_HOST, VM_NO_REPLY,
    is_error,
};

/// Above this many events in a window, summaries come from the pyramid instead of the
/// raw columns (aggregating 200k events takes about a millisecond).
const RAW_AGGREGATE_MAX: usize = 200_000;
/// Most buckets a timeline query may ask for.
pub const MAX_BUCKETS: u32 = 8192;

/// One span sent as itself.
#[derive(Debug, Serialize)]
pub struct SpanOut {
    /// Index within the lane.
    pub i: u32,
    /// Start, ns from the trace start.
    pub t: u64,
    /// Duration, ns.
    pub d: u32,
    /// Code index (into `io_names` or `vm_names`).
    pub c: u16,
    /// Failed.
    pub e: bool,
}

/// One bucket of a dense lane.
#[derive(Debug, Serialize)]
pub struct BucketOut {
    /// Bucket number within the window.
    pub b: u32,
    /// Events starting in it.
    pub n: u32,
    /// Failed events.
    pub e: u32,
    /// Lane index of the longest event.
    pub i: u32,
    /// Its duration.
    pub d: u32,
    /// Its code index.
    pub c: u16,
}

/// One lane of a timeline answer.
#[derive(Debug, Serialize)]
pub struct LaneTile {
    /// Lane index (stable for the trace).
    pub lane: usize,
    /// Label.
    pub label: String,
    /// What the lane holds.
    pub kind: LaneKind,
    /// Events in the lane in total.
    pub total: usize,
    /// `spans` (every event in the window) or `buckets` (summaries).
    pub mode: &'static str,
    /// Spans, in `spans` mode.
    pub spans: Vec<SpanOut>,
    /// Non-empty buckets, in `buckets` mode.
    pub buckets: Vec<BucketOut>,
}

/// Throughput per bucket, aligned with the lanes.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// ioctls starting in each bucket.
    pub ioctls: Vec<u32>,
    /// Captured ioctl bytes per bucket.
    pub bytes: Vec<u64>,
    /// VMBus messages per bucket.
    pub vmbus: Vec<u32>,
    /// Failed ioctls per bucket.
    pub errors: Vec<u32>,
}

/// A drop marker in the window.
#[derive(Debug, Serialize)]
pub struct DropOut {
    /// ns from the trace start.
    pub t: u64,
    /// Events lost.
    pub count: u64,
    /// Why.
    pub reason: String,
}

/// A damaged region in the window.
#[derive(Debug, Serialize)]
pub struct GapOut {
    /// Start, ns from the trace start.
    pub t0: u64,
    /// End.
    pub t1: u64,
    /// What is wrong.
    pub problem: String,
}

/// The answer to a timeline query.
#[derive(Debug, Serialize)]
pub struct Timeline {
    /// Window start, ns from the trace start.
    pub t0: u64,
    /// Window end.
    pub t1: u64,
    /// Buckets.
    pub buckets: u32,
    /// Bucket width, ns (fractional widths are rounded up).
    pub bucket_ns: u64,
    /// Trace length, ns.
    pub span_ns: u64,
    /// ioctl names by code index.
    pub io_names: Vec<String>,
    /// VMBus command names by code index.
    pub vm_names: Vec<String>,
    /// Lanes.
    pub lanes: Vec<LaneTile>,
    /// Throughput tracks.
    pub throughput: Throughput,
    /// Drops in the window.
    pub drops: Vec<DropOut>,
    /// Damaged regions overlapping the window.
    pub gaps: Vec<GapOut>,
}

/// Dense summaries of `[t0, t1)` in `nb` buckets of `w` ns, from raw columns when the
/// window is small enough and from the pyramid otherwise.
fn summarize_window(pyr: &Pyramid, lanes: &[&Lane], t0: u64, w: u64, nb: u32) -> Vec<Summary> {
    let t1 = t0 + w * nb as u64;
    let mut out = vec![Summary::default(); nb as usize];
    let ranges: Vec<_> = lanes.iter().map(|l| l.range(t0, t1)).collect();
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    let finest = pyr.levels.first().map(|l| l.width).unwrap_or(0);
    if total <= RAW_AGGREGATE_MAX || w < finest {
        for (l, r) in lanes.iter().zip(ranges) {
            let ts = l.ts();
            let dur = l.dur();
            for i in r {
                if ts[i] < t0 || ts[i] >= t1 {
                    continue;
                }
                let b = ((ts[i] - t0) / w) as usize;
                out[b].add(i as u32, dur[i], l.err(i), l.bytes(i));
            }
        }
        return out;
    }
    let Some(level) = pyr.level_for(w) else {
        return out;
    };
    let lw = level.width;
    let b_lo = (t0.saturating_sub(pyr.origin) / lw) as u32;
    let b_hi = (t1.saturating_sub(pyr.origin) / lw) as u32;
    let lo = level.idx.partition_point(|&b| b < b_lo);
    let hi = level.idx.partition_point(|&b| b <= b_hi);
    for k in lo..hi {
        let start = pyr.origin + level.idx[k] as u64 * lw;
        // a coarse bucket straddling the window edge is credited to the edge bucket
        let ob = (start.max(t0) - t0) / w;
        if ob >= nb as u64 {
            continue;
        }
        out[ob as usize].merge(&level.sum[k]);
    }
    out
}

/// Answers a timeline query for the window `[t0, t1]` (ns from the trace start) drawn
/// with `buckets` columns. A lane with at most `buckets` events in the window gets its
/// spans; a denser one gets per-bucket summaries.
pub fn timeline(ix: &TraceIndex, t0: u64, t1: u64, buckets: u32) -> Result<Timeline, AppError> {
    let span = ix.end.saturating_sub(ix.start);
    if t0 > span {
        return Err(AppError::BadRequest(format!(
            "time window starts at {t0} ns, after the end of the trace ({span} ns)"
        )));
    }
    if t1 <= t0 {
        return Err(AppError::BadRequest(format!(
            "empty time window: t1 ({t1}) must be greater than t0 ({t0})"
        )));
    }
    if buckets == 0 || buckets > MAX_BUCKETS {
        return Err(AppError::BadRequest(format!(
            "buckets must be between 1 and {MAX_BUCKETS}, got {buckets}"
        )));
    }
    let w = (t1 - t0).div_ceil(buckets as u64).max(1);
    let a0 = ix.start + t0;
    let a1 = a0 + w * buckets as u64;
    let mut lanes = Vec::with_capacity(ix.lanes.len());
    for (li, l) in ix.lanes.iter().enumerate() {
        let r = l.range(a0, a1);
        let ts = l.ts();
        let dur = l.dur();
        let mut tile = LaneTile {
            lane: li,
            label: l.label.clone(),
            kind: l.kind,
            total: l.len(),
            mode: "spans",
            spans: Vec::new(),
            buckets: Vec::new(),
        };
        if r.len() <= buckets as usize {
            for i in r {
                if ts[i] + dur[i] as u64 >= a0 {
                    tile.spans.push(SpanOut {
                        i: i as u32,
                        t: ts[i].saturating_sub(ix.start),
                        d: dur[i],
                        c: l.code(i),
                        e: l.err(i),
                    });
                }
            }
        } else {
            tile.mode = "buckets";
            let sums = summarize_window(&l.pyr, &[l], a0, w, buckets);
            for (b, s) in sums.iter().enumerate() {
                if s.count > 0 {
                    tile.buckets.push(BucketOut {
                        b: b as u32,
                        n: s.count,
                        e: s.errors,
                        i: s.busiest,
                        d: s.busiest_dur,
                        c: l.code(s.busiest as usize),
                    });
                }
            }
        }
        lanes.push(tile);
    }
    let io: Vec<&Lane> = ix
        .lanes
        .iter()
        .filter(|l| matches!(l.data, LaneData::Io(_)))
        .collect();
    let vm: Vec<&Lane> = ix
        .lanes
        .iter()
        .filter(|l| matches!(l.data, LaneData::Vm(_)))
        .collect();
    let io_s = summarize_window(&ix.all_io, &io, a0, w, buckets);
    let vm_s = summarize_window(&ix.all_vm, &vm, a0, w, buckets);
    let throughput = Throughput {
        ioctls: io_s.iter().map(|s| s.count).collect(),
        bytes: io_s.iter().map(|s| s.bytes).collect(),
        errors: io_s.iter().map(|s| s.errors).collect(),
        vmbus: vm_s.iter().map(|s| s.count).collect(),
    };
    let drops = ix
        .drops
        .iter()
        .filter(|d| d.ts >= a0 && d.ts <= a1)
        .take(10_000)
        .map(|d| DropOut {
            t: d.ts.saturating_sub(ix.start),
            count: d.count,
            reason: d.reason.clone(),
        })
        .collect();
    let gaps = ix
        .gaps
        .iter()
        .filter_map(|g| {
            let (s, e) = g.ts?;
            (e >= a0 && s <= a1).then(|| GapOut {
                t0: s.saturating_sub(ix.start),
                t1: e.saturating_sub(ix.start),
                problem: g.problem.clone(),
            })
        })
        .collect();
    Ok(Timeline {
        t0,
        t1: t0 + w * buckets as u64,
        buckets,
        bucket_ns: w,
        span_ns: span,
        io_names: ix.codes.iter().map(|c| c.name.clone()).collect(),
        vm_names: ix.cmds.iter().map(|c| c.name.clone()).collect(),
        lanes,
        throughput,
        drops,
        gaps,
    })
}

/// Search filters (all optional; every given one must match).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SearchQuery {
    /// ioctl name, case-insensitive substring (`QUERYADAPTER`), or a code `0x…`.
    pub name: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// Thread id.
    pub tid: Option<u32>,
    /// Status: `error`, `ok`, or an exact return value (decimal or `0x…`).
    pub status: Option<String>,
    /// A handle value (decimal or `0x…`): matches ioctls whose argument struct holds it
    /// as a 32-bit little-endian word (reads the frames in the window).
    pub handle: Option<String>,
    /// Window start, ns from the trace start.
    pub t0: Option<u64>,
    /// Window end.
    pub t1: Option<u64>,
    /// Most results returned (default 200, at most 5000).
    pub limit: Option<usize>,
}

/// One search hit.
#[derive(Debug, Serialize)]
pub struct Hit {
    /// Lane index.
    pub lane: usize,
    /// Index within the lane.
    pub i: u32,
    /// ns from the trace start.
    pub t: u64,
    /// Duration ns.
    pub d: u32,
    /// ioctl name.
    pub name: String,
    /// pid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// Return value.
    pub ret: i64,
    /// Failed.
    pub error: bool,
}

/// Search results.
#[derive(Debug, Serialize)]
pub struct SearchResult {
    /// Matches in total (hits beyond `limit` are counted, not returned).
    pub total: u64,
    /// The first matches by time.
    pub hits: Vec<Hit>,
    /// True if a handle search stopped before the end of the window.
    pub truncated: bool,
}

/// Parses a decimal or `0x` number.
pub fn parse_num(s: &str) -> Result<i64, AppError> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).map(|v| v as i64),
        None => body.parse::<i64>(),
    }
    .map_err(|_| AppError::BadRequest(format!("{s:?} is not a number")))?;
    Ok(if neg { -v } else { v })
}

/// Runs a search.
pub fn search(ix: &TraceIndex, reader: &Reader, q: &SearchQuery) -> Result<SearchResult, AppError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let span = ix.end.saturating_sub(ix.start);
    let t0 = q.t0.unwrap_or(0);
    let t1 = q.t1.unwrap_or(span);
    if t1 < t0 {
        return Err(AppError::BadRequest(format!(
            "empty time window: t1 ({t1}) is before t0 ({t0})"
        )));
    }
    let name = q.name.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let code_ok: Vec<bool> = ix
        .codes
        .iter()
        .map(|c| match name {
            None => true,
            Some(n) => match parse_num(n) {
                Ok(v) => c.code as i64 == v,
                Err(_) => c
                    .name
                    .to_ascii_lowercase()
                    .contains(&n.to_ascii_lowercase()),
            },
        })
        .collect();
    enum St {
        Any,
        Err,
        Ok,
        Eq(i64),
    }
    let st = match q.status.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => St::Any,
        Some("error") => St::Err,
        Some("ok") => St::Ok,
        Some(v) => St::Eq(parse_num(v)?),
    };
    let handle = match q.handle.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(h) => Some(parse_num(h)? as u32),
    };
    let a0 = ix.start + t0;
    let a1 = ix.start + t1;
    let mut hits: Vec<Hit> = Vec::new();
    let mut total = 0u64;
    let mut truncated = false;
    for (li, l) in ix.lanes.iter().enumerate() {
        let (LaneKind::Ioctl { pid, tid }, LaneData::Io(c)) = (l.kind, &l.data) else {
            continue;
        };
        if q.pid.is_some_and(|p| p != pid) || q.tid.is_some_and(|t| t != tid) {
            continue;
        }
        let lo = c.ts.partition_point(|&t| t < a0);
        let hi = c.ts.partition_point(|&t| t <= a1);
        // A lane is sorted by time, so its first `limit` matches are the only ones of it
        // that can be among the earliest `limit` overall: the rest are only counted.
        let mut in_lane = 0usize;
        for i in lo..hi {
            if !code_ok[c.code[i] as usize] {
                continue;
            }
            let ret = c.ret[i];
            let ok = match st {
                St::Any => true,
                St::Err => is_error(ret),
                St::Ok => !is_error(ret),
                St::Eq(v) => ret == v,
            };
            if !ok {
                continue;
            }
            if handle.is_some() {
                // checked below against the captured bytes
                hits.push(hit(ix, li, l, i, pid, tid));
                continue;
            }
            total += 1;
            if in_lane < limit {
                in_lane += 1;
                hits.push(hit(ix, li, l, i, pid, tid));
            }
        }
    }
    hits.sort_by_key(|h| h.t);
    if let Some(hv) = handle {
        // Candidates passed the cheap filters; confirm each against its struct bytes,
        // reading the frames of the window once, and stop after a bounded amount of work.
        let want: std::collections::HashSet<(u64, u64)> = hits
            .iter()
            .map(|h| {
                let l = &ix.lanes[h.lane];
                let LaneData::Io(c) = &l.data else {
                    unreachable!("hits come from ioctl lanes")
                };
                (c.id[h.i as usize], c.ts[h.i as usize])
            })
            .collect();
        let mut found = std::collections::HashSet::new();
        let mut scanned = 0u64;
        for r in reader.records_between(a0, a1).flatten() {
            scanned += 1;
            if scanned > 5_000_000 {
                truncated = true;
                break;
            }
            if let Record::Ioctl(x) = r
                && want.contains(&(x.id, x.ts_enter))
                && x.buffers.iter().any(|b| {
                    matches!(b.role, BufferRole::StructIn | BufferRole::StructOut)
                        && b.data
                            .chunks_exact(4)
                            .any(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) == hv)
                })
            {
                found.insert((x.id, x.ts_enter));
            }
        }
        hits.retain(|h| {
            let LaneData::Io(c) = &ix.lanes[h.lane].data else {
                return false;
            };
            found.contains(&(c.id[h.i as usize], c.ts[h.i as usize]))
        });
        total = hits.len() as u64;
    }
    hits.truncate(limit);
    Ok(SearchResult {
        total,
        hits,
        truncated,
    })
}

fn hit(ix: &TraceIndex, li: usize, l: &Lane, i: usize, pid: u32, tid: u32) -> Hit {
    let LaneData::Io(c) = &l.data else {
        unreachable!("search walks ioctl lanes")
    };
    Hit {
        lane: li,
        i: i as u32,
        t: c.ts[i] - ix.start,
        d: c.dur[i],
        name: ix.code_name(l, c.code[i]).to_string(),
        pid,
        tid,
        ret: c.ret[i],
        error: is_error(c.ret[i]),
    }
}

/// A captured buffer as shown in the detail view.
#[derive(Debug, Serialize)]
pub struct BufferOut {
    /// `struct_in`, `struct_out`, `ptr_in`, `ptr_out`.
    pub role: &'static str,
    /// Pointer path (`""` for the struct).
    pub path: String,
    /// User address.
    pub addr: String,
    /// Length asked for.
    pub len: u64,
    /// Bytes captured.
    pub captured: usize,
    /// Truncated to the capture limit.
    pub truncated: bool,
    /// Could not be read.
    pub unreadable: bool,
    /// Hex view with offsets (first 4 KiB).
    pub hex: String,
}

/// A VMBus message linked to an event.
#[derive(Debug, Serialize)]
pub struct MessageOut {
    /// `guest_to_host`, `host_reply`, `host_to_guest`.
    pub dir: &'static str,
    /// ns from the trace start.
    pub t: u64,
    /// Channel (`None` = global).
    pub channel: Option<String>,
    /// Request id.
    pub request_id: u64,
    /// Send status (replies).
    pub status: Option<i64>,
    /// The decoded message.
    pub decoded: driver_core::DecodedMessage,
    /// Hex view.
    pub hex: String,
    /// Where the message's span is drawn: (lane, index), when found.
    pub span: Option<(usize, u32)>,
}

/// Detail of one event.
#[derive(Debug, Serialize)]
pub struct EventDetail {
    /// Lane index.
    pub lane: usize,
    /// Index within the lane.
    pub i: u32,
    /// `ioctl` or `vmbus`.
    pub kind: &'static str,
    /// Display name (ioctl macro name or VMBus command).
    pub name: String,
    /// ns from the trace start.
    pub t: u64,
    /// Duration, ns.
    pub d: u32,
    /// pid.
    pub pid: u32,
    /// tid.
    pub tid: u32,
    /// ioctl details.
    pub ioctl: Option<IoctlOut>,
    /// VMBus messages: for an ioctl, those it caused; for a VMBus span, its request and
    /// reply.
    pub messages: Vec<MessageOut>,
    /// For a VMBus span, the ioctl that caused it: (lane, index).
    pub caused_by: Option<(usize, u32)>,
}

/// The ioctl part of [`EventDetail`].
#[derive(Debug, Serialize)]
pub struct IoctlOut {
    /// Capture id.
    pub id: u64,
    /// Request code `0x…`.
    pub code: String,
    /// fd.
    pub fd: i32,
    /// Return value.
    pub ret: i64,
    /// Return value rendered (NTSTATUS / errno names).
    pub ret_rendered: String,
    /// Decoded struct tree (from `driver-core`).
    pub decoded: driver_core::DecodedCall,
    /// Raw buffers.
    pub buffers: Vec<BufferOut>,
}

/// Hex view `offset: bytes  ascii`, 16 bytes a line, first 4 KiB.
pub fn hex_view(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (n, line) in b.chunks(16).take(256).enumerate() {
        let _ = write!(s, "{:06x}  ", n * 16);
        for i in 0..16 {
            match line.get(i) {
                Some(x) => {
                    let _ = write!(s, "{x:02x} ");
                }
                None => s.push_str("   "),
            }
        }
        s.push(' ');
        for &x in line {
            s.push(if x.is_ascii_graphic() || x == b' ' {
                x as char
            } else {
                '.'
            });
        }
        s.push('\n');
    }
    if b.len() > 4096 {
        let _ = writeln!(s, "… {} more bytes", b.len() - 4096);
    }
    s
}

fn dir_of(d: VmbusDir) -> driver_core::VmbusDirection {
    match d {
        VmbusDir::GuestToHost => driver_core::VmbusDirection::GuestToHost,
        VmbusDir::HostToGuest => driver_core::VmbusDirection::HostToGuest,
        VmbusDir::HostReply => driver_core::VmbusDirection::Reply { request: None },
    }
}

/// Decodes a request and its reply (the reply's layout depends on the request).
fn decode_messages(ix: &TraceIndex, msgs: &[traces::VmbusMessage]) -> Vec<MessageOut> {
    let mut out = Vec::new();
    let mut req_cmd: std::collections::HashMap<(Option<u64>, u64), driver_core::schema::VmbusCmd> =
        Default::default();
    for m in msgs {
        let decoded = match m.dir {
            VmbusDir::HostReply => driver_core::decode_vmbus(
                driver_core::VmbusDirection::Reply {
                    request: req_cmd.get(&(m.channel, m.request_id)).copied(),
                },
                &m.bytes,
            ),
            d => {
                let dm = driver_core::decode_vmbus(dir_of(d), &m.bytes);
                if let Some(c) = dm.cmd {
                    req_cmd.insert((m.channel, m.request_id), c);
                }
                dm
            }
        };
        let span = if m.dir == VmbusDir::HostReply {
            None
        } else {
            ix.lanes.iter().enumerate().find_map(|(li, l)| {
                (l.kind == LaneKind::Vmbus { channel: m.channel }).then(|| {
                    let ts = l.ts();
                    let i = ts.partition_point(|&t| t < m.ts);
                    (i < ts.len() && ts[i] == m.ts).then_some((li, i as u32))
                })?
            })
        };
        out.push(MessageOut {
            dir: m.dir.name(),
            t: m.ts.saturating_sub(ix.start),
            channel: m.channel.map(|c| format!("{c:#x}")),
            request_id: m.request_id,
            status: m.status,
            decoded,
            hex: hex_view(&m.bytes),
            span,
        });
    }
    out
}

/// Detail of event `i` of lane `lane`: re-reads the frames of its time window.
pub fn event_detail(
    ix: &TraceIndex,
    reader: &Reader,
    lane: usize,
    i: u32,
) -> Result<EventDetail, AppError> {
    let l = ix
        .lanes
        .get(lane)
        .ok_or_else(|| AppError::NotFound(format!("no lane {lane}")))?;
    let iu = i as usize;
    if iu >= l.len() {
        return Err(AppError::NotFound(format!(
            "lane {lane} has {} events; no event {i}",
            l.len()
        )));
    }
    match (&l.data, l.kind) {
        (LaneData::Io(c), LaneKind::Ioctl { pid, tid }) => {
            let (ts, id) = (c.ts[iu], c.id[iu]);
            let end = ts + c.dur[iu] as u64;
            let mut rec = None;
            let mut msgs = Vec::new();
            for r in reader.records_between(ts, end).flatten() {
                match r {
                    Record::Ioctl(x) if x.id == id && x.ts_enter == ts => rec = Some(x),
                    Record::Vmbus(m) if m.ioctl_id == Some(id) => msgs.push(m),
                    _ => {}
                }
            }
            let x = rec.ok_or_else(|| {
                AppError::NotFound(format!("ioctl {id} is no longer readable in the file"))
            })?;
            msgs.sort_by_key(|m| m.ts);
            let views = analysis::decode::buffer_views(&x.buffers);
            let decoded = driver_core::decode_ioctl(x.cmd, x.arg, &views);
            let ntstatus = decoded
                .device
                .map(|d| d.positive_return_is_ntstatus())
                .unwrap_or(false);
            let buffers = x
                .buffers
                .iter()
                .map(|b| BufferOut {
                    role: b.role.name(),
                    path: b.path.clone(),
                    addr: format!("{:#x}", b.addr),
                    len: b.len,
                    captured: b.data.len(),
                    truncated: b.truncated(),
                    unreadable: b.unreadable(),
                    hex: hex_view(&b.data),
                })
                .collect();
            Ok(EventDetail {
                lane,
                i,
                kind: "ioctl",
                name: decoded.name.clone(),
                t: ts - ix.start,
                d: c.dur[iu],
                pid,
                tid,
                ioctl: Some(IoctlOut {
                    id,
                    code: format!("{:#010x}", x.cmd),
                    fd: x.fd,
                    ret: x.ret,
                    ret_rendered: driver_core::render_return(x.ret, ntstatus),
                    decoded,
                    buffers,
                }),
                messages: decode_messages(ix, &msgs),
                caused_by: None,
            })
        }
        (LaneData::Vm(c), LaneKind::Vmbus { channel }) => {
            let ts = c.ts[iu];
            let end = ts + c.dur[iu] as u64;
            let mut req: Option<traces::VmbusMessage> = None;
            let mut reply = None;
            for r in reader.records_between(ts, end).flatten() {
                let Record::Vmbus(m) = r else { continue };
                if m.channel != channel {
                    continue;
                }
                match (&req, m.dir) {
                    (None, VmbusDir::GuestToHost | VmbusDir::HostToGuest) if m.ts == ts => {
                        req = Some(m)
                    }
                    (Some(q), VmbusDir::HostReply) if m.request_id == q.request_id => {
                        reply = Some(m);
                        break;
                    }
                    _ => {}
                }
            }
            let q = req.ok_or_else(|| {
                AppError::NotFound("VMBus message is no longer readable in the file".into())
            })?;
            let (pid, tid, ioctl_id) = (q.pid, q.tid, q.ioctl_id);
            let mut msgs = vec![q];
            msgs.extend(reply);
            let caused_by = ioctl_id.and_then(|id| find_ioctl(ix, pid, tid, id, ts));
            let flags = c.flags[iu];
            let mut name = ix.code_name(l, c.cmd[iu]).to_string();
            for (bit, what) in [
                (VM_ASYNC, "async"),
                (VM_HOST, "host→guest"),
                (VM_NO_REPLY, "no reply seen"),
                (VM_ERR, "failed"),
            ] {
                if flags & bit != 0 {
                    name.push_str(&format!(" ({what})"));
                }
            }
            Ok(EventDetail {
                lane,
                i,
                kind: "vmbus",
                name,
                t: ts - ix.start,
                d: c.dur[iu],
                pid,
                tid,
                ioctl: None,
                messages: decode_messages(ix, &msgs),
                caused_by,
            })
        }
        _ => Err(AppError::Internal("lane kind and data disagree".into())),
    }
}

/// The (lane, index) of ioctl `id` of thread pid/tid that was running at `at`.
fn find_ioctl(ix: &TraceIndex, pid: u32, tid: u32, id: u64, at: u64) -> Option<(usize, u32)> {
    let (li, l) = ix
        .lanes
        .iter()
        .enumerate()
        .find(|(_, l)| l.kind == LaneKind::Ioctl { pid, tid })?;
    let LaneData::Io(c) = &l.data else {
        return None;
    };
    let hi = c.ts.partition_point(|&t| t <= at);
    // the causing call started shortly before; look back a bounded number of calls
    (hi.saturating_sub(4096)..hi)
        .rev()
        .find(|&i| c.id[i] == id)
        .map(|i| (li, i as u32))
}

/// One row of a comparison.
#[derive(Debug, Serialize)]
pub struct CompareRow {
    /// ioctl name.
    pub name: String,
    /// Calls in A.
    pub a_count: u64,
    /// Calls in B.
    pub b_count: u64,
    /// Median ns in A.
    pub a_p50_ns: u64,
    /// Median ns in B.
    pub b_p50_ns: u64,
    /// p99 ns in A.
    pub a_p99_ns: u64,
    /// p99 ns in B.
    pub b_p99_ns: u64,
    /// Errors in A.
    pub a_errors: u64,
    /// Errors in B.
    pub b_errors: u64,
}

/// A call as seen in the divergence report.
#[derive(Debug, Serialize)]
pub struct CallRef {
    /// Lane.
    pub lane: usize,
    /// Index in the lane.
    pub i: u32,
    /// Name.
    pub name: String,
    /// Return value.
    pub ret: i64,
}

/// Where two traces first differ (in time order of ioctl entries: name or return value).
#[derive(Debug, Serialize)]
pub struct Divergence {
    /// Position in the ioctl sequence (0-based).
    pub index: u64,
    /// A's call there (None: A ended).
    pub a: Option<CallRef>,
    /// B's call there.
    pub b: Option<CallRef>,
}

/// Side-by-side comparison of two traces.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// ioctls in A.
    pub a_ioctls: u64,
    /// ioctls in B.
    pub b_ioctls: u64,
    /// Per name.
    pub rows: Vec<CompareRow>,
    /// First difference, `None` if the sequences are equal.
    pub first_divergence: Option<Divergence>,
}

fn sequence(ix: &TraceIndex) -> impl Iterator<Item = CallRef> + '_ {
    // k-way merge of the ioctl lanes by entry time
    let lanes: Vec<(usize, &crate::index::IoCols)> = ix
        .lanes
        .iter()
        .enumerate()
        .filter_map(|(li, l)| match &l.data {
            LaneData::Io(c) => Some((li, c)),
            _ => None,
        })
        .collect();
    let mut heap = std::collections::BinaryHeap::new();
    for (k, (_, c)) in lanes.iter().enumerate() {
        if !c.ts.is_empty() {
            heap.push(std::cmp::Reverse((c.ts[0], k, 0usize)));
        }
    }
    std::iter::from_fn(move || {
        let std::cmp::Reverse((_, k, i)) = heap.pop()?;
        let (li, c) = lanes[k];
        if i + 1 < c.ts.len() {
            heap.push(std::cmp::Reverse((c.ts[i + 1], k, i + 1)));
        }
        Some(CallRef {
            lane: li,
            i: i as u32,
            name: ix.codes[c.code[i] as usize].name.clone(),
            ret: c.ret[i],
        })
    })
}

/// Compares two traces: counts and latency per ioctl name (from their `analysis`
/// statistics), and the first call where the ioctl sequences differ.
pub fn compare(
    a: &TraceIndex,
    a_stats: &analysis::Stats,
    b: &TraceIndex,
    b_stats: &analysis::Stats,
) -> Comparison {
    let by = |s: &analysis::Stats| -> std::collections::BTreeMap<String, analysis::CallStats> {
        s.by_ioctl
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.calls.clone()))
            .collect()
    };
    let (ma, mb) = (by(a_stats), by(b_stats));
    let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    names.sort();
    names.dedup();
    let rows = names
        .into_iter()
        .map(|n| {
            let sa = ma.get(n);
            let sb = mb.get(n);
            CompareRow {
                a_count: sa.map_or(0, |s| s.count),
                b_count: sb.map_or(0, |s| s.count),
                a_p50_ns: sa.map_or(0, |s| s.latency.p50_ns),
                b_p50_ns: sb.map_or(0, |s| s.latency.p50_ns),
                a_p99_ns: sa.map_or(0, |s| s.latency.p99_ns),
                b_p99_ns: sb.map_or(0, |s| s.latency.p99_ns),
                a_errors: sa.map_or(0, |s| s.errors),
                b_errors: sb.map_or(0, |s| s.errors),
                name: n.clone(),
            }
        })
        .collect();
    let mut sa = sequence(a);
    let mut sb = sequence(b);
    let mut index = 0u64;
    let first_divergence = loop {
        match (sa.next(), sb.next()) {
            (None, None) => break None,
            (x, y) => {
                let same =
                    matches!((&x, &y), (Some(p), Some(q)) if p.name == q.name && p.ret == q.ret);
                if !same {
                    break Some(Divergence { index, a: x, b: y });
                }
            }
        }
        index += 1;
    };
    Comparison {
        a_ioctls: a.ioctl_count(),
        b_ioctls: b.ioctl_count(),
        rows,
        first_divergence,
    }
}
