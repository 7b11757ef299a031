//! Streaming statistics: a trace is aggregated frame by frame, never held as rows.
//!
//! Each frame's block is visited in parallel ([`Reader::map_blocks_in_order`]) straight
//! into small per-group partials ([`FrameAgg`]: one entry per (request code, pid, tid),
//! per VMBus command key, per failing (code, return value), a throughput histogram),
//! borrowing from the decompressed block. One sequential pass in frame order merges the
//! partials ([`Agg::merge`]), settles the VMBus pairs that cross frame boundaries
//! ([`crate::pairing`]) and charges each ioctl's group with the host round trips it
//! caused. What grows with the trace is only what quantiles need: one `u64` duration
//! per ioctl and one round trip per paired reply (about 16 bytes per ioctl in all), plus
//! an ioctl id → group table (4 bytes per ioctl when ids are compact).

use std::collections::HashMap;
use std::hash::Hash;

use traces::{Block, BufferRole, Reader, Record, RecordRef, VmbusDir};

use crate::columns::{FAM_UNPAIRED_REPLY, Progress, is_error_return, vmbus_key};
use crate::error::{AnalysisError, Result};
use crate::pairing::{FramePairing, FxMap, Pairing, Reply};
use crate::stats::{Bucket, Throughput, Totals};

/// Ioctl group: (request code, pid, tid). Every grouping (per code, process, thread) is
/// a union of these.
pub(crate) type Triple = (u32, u32, u32);

/// Interned groups: key → dense index, values in first-seen order.
pub(crate) struct Groups<K, V> {
    ix: FxMap<K, u32>,
    pub keys: Vec<K>,
    pub vals: Vec<V>,
}

impl<K, V> Default for Groups<K, V> {
    fn default() -> Self {
        Groups {
            ix: FxMap::default(),
            keys: Vec::new(),
            vals: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Copy, V: Default> Groups<K, V> {
    #[inline]
    fn index(&mut self, k: K) -> usize {
        if let Some(i) = self.ix.get(&k) {
            return *i as usize;
        }
        let i = self.keys.len();
        self.ix.insert(k, i as u32);
        self.keys.push(k);
        self.vals.push(V::default());
        i
    }

    #[inline]
    fn get(&mut self, k: K) -> &mut V {
        let i = self.index(k);
        &mut self.vals[i]
    }
}

/// Figures of one ioctl group.
#[derive(Default)]
pub(crate) struct CallAgg {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub host_ns: u64,
    pub round_trips: u64,
    /// Every call's duration (for quantiles), unordered.
    pub durs: Vec<u64>,
}

impl CallAgg {
    fn add(&mut self, o: CallAgg) {
        self.count += o.count;
        self.errors += o.errors;
        self.total_ns += o.total_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.host_ns += o.host_ns;
        self.round_trips += o.round_trips;
        if self.durs.is_empty() {
            self.durs = o.durs;
        } else {
            self.durs.extend_from_slice(&o.durs);
        }
    }
}

/// Figures of one VMBus command key.
#[derive(Default)]
pub(crate) struct VmAgg {
    pub messages: u64,
    pub requests: u64,
    pub replies: u64,
    pub host_to_guest: u64,
    pub sync_requests: u64,
    pub request_bytes: u64,
    pub reply_bytes: u64,
    pub round_trips: u64,
    pub rtt_sum: u64,
    pub rtt_max: u64,
    /// Every round trip (for quantiles), unordered.
    pub rtts: Vec<u64>,
}

impl VmAgg {
    fn add(&mut self, o: VmAgg) {
        self.messages += o.messages;
        self.requests += o.requests;
        self.replies += o.replies;
        self.host_to_guest += o.host_to_guest;
        self.sync_requests += o.sync_requests;
        self.request_bytes += o.request_bytes;
        self.reply_bytes += o.reply_bytes;
        self.round_trips += o.round_trips;
        self.rtt_sum += o.rtt_sum;
        self.rtt_max = self.rtt_max.max(o.rtt_max);
        if self.rtts.is_empty() {
            self.rtts = o.rtts;
        } else {
            self.rtts.extend_from_slice(&o.rtts);
        }
    }

    /// A reply, paired (with its round trip) or not.
    #[inline]
    fn reply(&mut self, len: u64, rtt: Option<u64>) {
        self.messages += 1;
        self.replies += 1;
        self.reply_bytes += len;
        if let Some(t) = rtt {
            self.round_trips += 1;
            self.rtt_sum += t;
            self.rtt_max = self.rtt_max.max(t);
            self.rtts.push(t);
        }
    }
}

/// What a sync request leaves open until its reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Req {
    ts: u64,
    key: u64,
    ioctl_id: Option<u64>,
}

/// Most buckets a throughput series may have (a 1 ns bucket over an hour-long trace
/// would otherwise allocate terabytes).
pub(crate) const MAX_BUCKETS: u64 = 10_000_000;

/// Throughput histogram over buckets `lo..lo + b.len()` of width `width` from `t0`:
/// per bucket `[ioctls, ioctl bytes, VMBus messages, VMBus bytes]`. Grows to whatever
/// range it is fed, up to [`MAX_BUCKETS`] (`overflow` past that).
#[derive(Debug, Clone)]
pub(crate) struct Hist {
    t0: u64,
    width: u64,
    lo: u64,
    b: Vec<[u64; 4]>,
    /// A timestamp before `t0` was fed (the histogram must be rebuilt from a lower `t0`).
    below: bool,
    overflow: bool,
}

impl Hist {
    pub(crate) fn new(t0: u64, width: u64) -> Hist {
        Hist {
            t0,
            width,
            lo: 0,
            b: Vec::new(),
            below: false,
            overflow: false,
        }
    }

    #[inline]
    fn slot(&mut self, i: u64) -> Option<&mut [u64; 4]> {
        if self.b.is_empty() {
            self.lo = i;
            self.b.push([0; 4]);
        } else if i < self.lo {
            let add = self.lo - i;
            if self.b.len() as u64 + add > MAX_BUCKETS {
                self.overflow = true;
                return None;
            }
            self.b
                .splice(0..0, std::iter::repeat_n([0; 4], add as usize));
            self.lo = i;
        } else if i - self.lo >= self.b.len() as u64 {
            let len = i - self.lo + 1;
            if len > MAX_BUCKETS {
                self.overflow = true;
                return None;
            }
            self.b.resize(len as usize, [0; 4]);
        }
        Some(&mut self.b[(i - self.lo) as usize])
    }

    #[inline]
    fn add(&mut self, ts: u64, what: usize, bytes: u64) {
        if ts < self.t0 {
            self.below = true;
            return;
        }
        let i = (ts - self.t0) / self.width;
        if let Some(s) = self.slot(i) {
            s[what] += 1;
            s[what + 1] += bytes;
        }
    }

    /// An ioctl entered at `ts` with `bytes` captured bytes.
    #[inline]
    pub(crate) fn ioctl(&mut self, ts: u64, bytes: u64) {
        self.add(ts, 0, bytes)
    }

    /// A VMBus message of `len` bytes at `ts`.
    #[inline]
    pub(crate) fn vmbus(&mut self, ts: u64, len: u64) {
        self.add(ts, 2, len)
    }

    fn merge(&mut self, o: &Hist) {
        self.below |= o.below;
        self.overflow |= o.overflow;
        for (j, v) in o.b.iter().enumerate() {
            if let Some(s) = self.slot(o.lo + j as u64) {
                for k in 0..4 {
                    s[k] += v[k];
                }
            }
        }
    }

    /// Whether the histogram is exact for a trace whose first timestamp is `t0`.
    fn exact_for(&self, t0: u64) -> bool {
        self.t0 == t0 && !self.below && !self.overflow
    }

    /// The dense series from `t0` (this histogram's) to `ts_max`, empty buckets included.
    pub(crate) fn finish(&self, records: bool, ts_max: u64) -> Result<Throughput> {
        let w = self.width;
        let n = if records {
            ts_max.saturating_sub(self.t0) / w + 1
        } else {
            0
        };
        if n > MAX_BUCKETS {
            return Err(AnalysisError::InvalidOption(format!(
                "a {w} ns bucket makes {n} buckets over this trace (at most {MAX_BUCKETS}); \
                 use a wider bucket"
            )));
        }
        let per_s = 1e9 / w as f64;
        let mut out: Vec<Bucket> = (0..n)
            .map(|i| Bucket {
                start_ns: i * w,
                ioctls: 0,
                bytes: 0,
                vmbus_messages: 0,
                vmbus_bytes: 0,
                ioctls_per_s: 0.0,
                bytes_per_s: 0.0,
                vmbus_messages_per_s: 0.0,
            })
            .collect();
        if let Some(last) = out.len().checked_sub(1) {
            for (j, v) in self.b.iter().enumerate() {
                let b = &mut out[((self.lo + j as u64) as usize).min(last)];
                b.ioctls += v[0];
                b.bytes += v[1];
                b.vmbus_messages += v[2];
                b.vmbus_bytes += v[3];
            }
        }
        for x in &mut out {
            x.ioctls_per_s = x.ioctls as f64 * per_s;
            x.bytes_per_s = x.bytes as f64 * per_s;
            x.vmbus_messages_per_s = x.vmbus_messages as f64 * per_s;
        }
        Ok(Throughput {
            bucket_ns: w,
            buckets: out,
        })
    }
}

/// Ioctl id → ioctl group: a dense table while ids are compact (the capture numbers calls
/// from 0), a hash map for the ids far beyond.
#[derive(Default)]
struct IdMap {
    dense: Vec<u32>,
    sparse: FxMap<u64, u32>,
    n: u64,
}

impl IdMap {
    const NONE: u32 = u32::MAX;

    #[inline]
    fn insert(&mut self, id: u64, v: u32) {
        self.n += 1;
        if let Some(s) = self.dense.get_mut(id as usize) {
            *s = v;
        } else if id < 2 * self.n + (1 << 16) {
            let len = (id as usize + 1).max(2 * self.dense.len());
            self.dense.resize(len, Self::NONE);
            self.dense[id as usize] = v;
        } else {
            self.sparse.insert(id, v);
        }
    }

    #[inline]
    fn get(&self, id: u64) -> Option<u32> {
        match self.dense.get(id as usize) {
            Some(v) if *v != Self::NONE => Some(*v),
            _ => self.sparse.get(&id).copied(),
        }
    }
}

/// The statistics of one frame, built on a worker thread.
#[derive(Default)]
pub(crate) struct FrameAgg {
    records: u64,
    unknown: u64,
    dropped: u64,
    /// (smallest ts, largest ts_end) of the frame's records.
    ts: Option<(u64, u64)>,
    /// (pid, comm) of process records, in order.
    comms: Vec<(u32, String)>,
    totals: Totals,
    calls: Groups<Triple, CallAgg>,
    errs: FxMap<(u32, i64), u64>,
    /// Every ioctl: (id, local group).
    ids: Vec<(u64, u32)>,
    /// (ioctl id, round trip) of the pairs completed within the frame.
    charges: Vec<(u64, u64)>,
    vm: Groups<u64, VmAgg>,
    pairing: FramePairing<Req>,
    /// Replies whose request may be in an earlier frame: (pending index, ts, ioctl id, len).
    pending: Vec<(usize, u64, Option<u64>, u64)>,
    hist: Option<Hist>,
}

/// Captured bytes of an ioctl: (in, out).
#[inline]
fn ioctl_bytes(r: &traces::IoctlRef<'_>) -> (u64, u64) {
    let (mut bin, mut bout) = (0u64, 0u64);
    for b in r.buffers {
        match b.role {
            BufferRole::StructIn | BufferRole::PtrIn => bin += b.data.len() as u64,
            BufferRole::StructOut | BufferRole::PtrOut => bout += b.data.len() as u64,
        }
    }
    (bin, bout)
}

/// Feeds one record to a throughput histogram.
#[inline]
fn hist_add(h: &mut Hist, r: &RecordRef<'_>) {
    match r {
        RecordRef::Ioctl(i) => {
            let (a, b) = ioctl_bytes(i);
            h.ioctl(i.ts_enter, a + b);
        }
        RecordRef::Vmbus(m) => h.vmbus(m.ts, m.len),
        RecordRef::Other(_) => {}
    }
}

/// Aggregates one frame. An undecodable record fails the whole frame (what it built is
/// dropped: the frame counts as unreadable, as everywhere else).
fn frame_agg(block: &Block<'_>, hist: Hist, keep_durs: bool) -> traces::Result<FrameAgg> {
    let mut f = FrameAgg {
        records: block.record_count() as u64,
        ..FrameAgg::default()
    };
    let mut hist = hist;
    let t = &mut f.totals;
    block.for_each(|r| {
        if let (Some(a), Some(b)) = (r.ts(), r.ts_end()) {
            f.ts = Some(match f.ts {
                Some((lo, hi)) => (lo.min(a), hi.max(b)),
                None => (a, b),
            });
        }
        match r {
            RecordRef::Ioctl(r) => {
                let (bin, bout) = ioctl_bytes(&r);
                let dur = r.ts_exit.saturating_sub(r.ts_enter);
                let err = is_error_return(r.ret);
                hist.ioctl(r.ts_enter, bin + bout);
                t.ioctls += 1;
                t.errors += err as u64;
                t.bytes_in += bin;
                t.bytes_out += bout;
                t.ioctl_ns += dur;
                let g = f.calls.index((r.cmd, r.pid, r.tid));
                let c = &mut f.calls.vals[g];
                c.count += 1;
                c.errors += err as u64;
                c.total_ns += dur;
                c.max_ns = c.max_ns.max(dur);
                c.bytes_in += bin;
                c.bytes_out += bout;
                if keep_durs {
                    c.durs.push(dur);
                }
                if err {
                    *f.errs.entry((r.cmd, r.ret)).or_default() += 1;
                }
                f.ids.push((r.id, g as u32));
            }
            RecordRef::Vmbus(m) => {
                hist.vmbus(m.ts, m.len);
                t.vmbus_messages += 1;
                match m.dir {
                    VmbusDir::GuestToHost => {
                        t.vmbus_requests += 1;
                        t.vmbus_request_bytes += m.len;
                        let key = vmbus_key(m.dir, m.bytes);
                        let v = f.vm.get(key);
                        v.messages += 1;
                        v.requests += 1;
                        v.request_bytes += m.len;
                        if !m.is_async {
                            v.sync_requests += 1;
                            let req = Req {
                                ts: m.ts,
                                key,
                                ioctl_id: m.ioctl_id,
                            };
                            f.pairing.request((m.channel, m.request_id), req);
                        }
                    }
                    VmbusDir::HostReply => {
                        t.vmbus_replies += 1;
                        t.vmbus_reply_bytes += m.len;
                        match f.pairing.reply((m.channel, m.request_id)) {
                            Reply::Paired(req) => {
                                let rtt = m.ts.saturating_sub(req.ts);
                                t.round_trips += 1;
                                f.vm.get(req.key).reply(m.len, Some(rtt));
                                if let Some(id) = req.ioctl_id.or(m.ioctl_id) {
                                    f.charges.push((id, rtt));
                                }
                            }
                            Reply::Pending(n) => f.pending.push((n, m.ts, m.ioctl_id, m.len)),
                            Reply::Unpaired => {
                                f.vm.get(FAM_UNPAIRED_REPLY << 32).reply(m.len, None)
                            }
                        }
                    }
                    VmbusDir::HostToGuest => {
                        t.vmbus_host_to_guest += 1;
                        let v = f.vm.get(vmbus_key(m.dir, m.bytes));
                        v.messages += 1;
                        v.host_to_guest += 1;
                    }
                }
            }
            RecordRef::Other(rec) => match rec {
                Record::Process(p) => {
                    t.processes += 1;
                    f.comms.push((p.pid, p.comm.clone()));
                }
                Record::Dropped(d) => f.dropped += d.count,
                Record::Unknown { .. } => f.unknown += 1,
                _ => {}
            },
        }
    })?;
    f.hist = Some(hist);
    Ok(f)
}

/// The whole trace's statistics so far (frames merged in file order).
pub(crate) struct Agg {
    pub records: u64,
    pub unknown: u64,
    pub dropped: u64,
    pub ts: Option<(u64, u64)>,
    /// Last `comm` of each pid (process records in file order).
    pub comm: HashMap<u32, String>,
    pub totals: Totals,
    pub calls: Groups<Triple, CallAgg>,
    pub errs: FxMap<(u32, i64), u64>,
    pub vm: Groups<u64, VmAgg>,
    pub decode_errors: Vec<String>,
    hist: Hist,
    ids: IdMap,
    /// Round trips of ioctls not seen yet: id → (ns, count).
    early: FxMap<u64, (u64, u64)>,
    pairing: Pairing<Req>,
}

impl Agg {
    fn new(hist: Hist) -> Agg {
        Agg {
            records: 0,
            unknown: 0,
            dropped: 0,
            ts: None,
            comm: HashMap::new(),
            totals: Totals::default(),
            calls: Groups::default(),
            errs: FxMap::default(),
            vm: Groups::default(),
            decode_errors: Vec::new(),
            hist,
            ids: IdMap::default(),
            early: FxMap::default(),
            pairing: Pairing::default(),
        }
    }

    #[inline]
    fn charge(&mut self, id: u64, rtt: u64) {
        match self.ids.get(id) {
            Some(g) => {
                let c = &mut self.calls.vals[g as usize];
                c.host_ns += rtt;
                c.round_trips += 1;
            }
            None => {
                let e = self.early.entry(id).or_default();
                e.0 += rtt;
                e.1 += 1;
            }
        }
    }

    fn merge(&mut self, f: FrameAgg) {
        self.records += f.records;
        self.unknown += f.unknown;
        self.dropped += f.dropped;
        if let Some((a, b)) = f.ts {
            self.ts = Some(match self.ts {
                Some((lo, hi)) => (lo.min(a), hi.max(b)),
                None => (a, b),
            });
        }
        self.comm.extend(f.comms);
        add_totals(&mut self.totals, &f.totals);
        let map: Vec<u32> = f
            .calls
            .keys
            .iter()
            .zip(f.calls.vals)
            .map(|(k, v)| {
                let g = self.calls.index(*k);
                self.calls.vals[g].add(v);
                g as u32
            })
            .collect();
        for (k, n) in f.errs {
            *self.errs.entry(k).or_default() += n;
        }
        for (id, l) in f.ids {
            let g = map[l as usize];
            self.ids.insert(id, g);
            if !self.early.is_empty()
                && let Some((ns, n)) = self.early.remove(&id)
            {
                let c = &mut self.calls.vals[g as usize];
                c.host_ns += ns;
                c.round_trips += n;
            }
        }
        for (k, v) in f.vm.keys.iter().zip(f.vm.vals) {
            self.vm.get(*k).add(v);
        }
        let got = self.pairing.merge(f.pairing, |r| r);
        for (n, ts, ioctl_id, len) in f.pending {
            match got[n] {
                Some(req) => {
                    let rtt = ts.saturating_sub(req.ts);
                    self.totals.round_trips += 1;
                    self.vm.get(req.key).reply(len, Some(rtt));
                    if let Some(id) = req.ioctl_id.or(ioctl_id) {
                        self.charge(id, rtt);
                    }
                }
                None => self.vm.get(FAM_UNPAIRED_REPLY << 32).reply(len, None),
            }
        }
        for (id, rtt) in f.charges {
            self.charge(id, rtt);
        }
        if let Some(h) = &f.hist {
            self.hist.merge(h);
        }
    }

    /// The throughput series, exact: from the histogram built while streaming when its
    /// origin (the frames' announced first timestamp) proved right, else from a second
    /// pass over `reader` (damaged first frames, or frame headers that disagree with
    /// their records).
    pub(crate) fn throughput(
        &self,
        reader: &Reader,
        threads: usize,
        bucket_ns: u64,
    ) -> Result<Throughput> {
        let Some((t0, t1)) = self.ts else {
            return Hist::new(0, bucket_ns).finish(false, 0);
        };
        if t1.saturating_sub(t0) / bucket_ns >= MAX_BUCKETS {
            // Report the range error without building anything.
            return Hist::new(t0, bucket_ns).finish(true, t1);
        }
        if self.hist.exact_for(t0) {
            return self.hist.finish(true, t1);
        }
        let mut h = Hist::new(t0, bucket_ns);
        let parts = reader.map_blocks(threads, |_, b| {
            let b = b.ok()?;
            let mut h = Hist::new(t0, bucket_ns);
            b.for_each(|r| hist_add(&mut h, &r)).ok()?;
            Some(h)
        });
        for p in parts.iter().flatten() {
            h.merge(p);
        }
        h.finish(true, t1)
    }
}

fn add_totals(t: &mut Totals, o: &Totals) {
    t.ioctls += o.ioctls;
    t.errors += o.errors;
    t.bytes_in += o.bytes_in;
    t.bytes_out += o.bytes_out;
    t.ioctl_ns += o.ioctl_ns;
    t.host_ns += o.host_ns;
    t.vmbus_messages += o.vmbus_messages;
    t.vmbus_requests += o.vmbus_requests;
    t.vmbus_replies += o.vmbus_replies;
    t.vmbus_host_to_guest += o.vmbus_host_to_guest;
    t.round_trips += o.round_trips;
    t.vmbus_request_bytes += o.vmbus_request_bytes;
    t.vmbus_reply_bytes += o.vmbus_reply_bytes;
    t.processes += o.processes;
}

/// Streams every frame of `reader` through the aggregation on `threads` threads.
/// `keep_durs`: keep every ioctl's duration (needed for the per-group quantiles).
pub(crate) fn aggregate(
    reader: &Reader,
    threads: usize,
    bucket_ns: u64,
    keep_durs: bool,
    progress: Option<Progress<'_>>,
) -> Agg {
    let total = reader.frames().len();
    // The histogram's origin must be the trace's first timestamp, known for sure only at
    // the end: take the frame headers' word for it (checked in `Agg::throughput`).
    let t0 = reader.frames().iter().map(|f| f.ts_min).min().unwrap_or(0);
    let mut agg = Agg::new(Hist::new(t0, bucket_ns));
    let done: std::result::Result<(), std::convert::Infallible> = reader.map_blocks_in_order(
        threads,
        |_, block| block.and_then(|b| frame_agg(&b, Hist::new(t0, bucket_ns), keep_durs)),
        |i, part| {
            match part {
                Ok(f) => agg.merge(f),
                Err(e) => agg.decode_errors.push(e.to_string()),
            }
            if let Some(p) = progress {
                p(i + 1, total);
            }
            Ok(())
        },
    );
    let Ok(()) = done;
    if let Some(e) = reader.scan_problem() {
        agg.decode_errors.push(e.to_string());
    }
    agg.totals.host_ns = agg.calls.vals.iter().map(|c| c.host_ns).sum();
    agg
}

/// Nearest-rank quantiles p50, p90, p99 of `v` (reordered): the value at index
/// `round((n − 1) · q)` of the sorted values, as polars' `QuantileMethod::Nearest`.
/// Three selections, no sort.
pub(crate) fn quantiles(v: &mut [u64]) -> [u64; 3] {
    let n = v.len();
    if n == 0 {
        return [0; 3];
    }
    let idx = |q: f64| (((n - 1) as f64) * q).round() as usize;
    let (i50, i90, i99) = (idx(0.5), idx(0.9), idx(0.99));
    let (_, p99, _) = v.select_nth_unstable(i99);
    let p99 = *p99;
    // Everything left of i99 is ≤ p99, so the smaller ranks are selected there.
    let p90 = if i90 < i99 {
        *v[..i99].select_nth_unstable(i90).1
    } else {
        p99
    };
    let p50 = if i50 < i90 {
        *v[..i90].select_nth_unstable(i50).1
    } else {
        p90
    };
    [p50, p90, p99]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_of_the_sorted_values() {
        let mut seed = 3u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for n in (1..300).chain([1000, 4097]) {
            let mut v: Vec<u64> = (0..n).map(|_| next() % 97).collect();
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let at = |q: f64| sorted[(((n - 1) as f64) * q).round() as usize];
            assert_eq!(quantiles(&mut v), [at(0.5), at(0.9), at(0.99)], "n = {n}");
        }
        assert_eq!(quantiles(&mut []), [0; 3]);
    }

    #[test]
    fn histogram_grows_both_ways_and_merges() {
        let mut a = Hist::new(100, 10);
        a.ioctl(155, 3);
        a.ioctl(105, 1);
        a.vmbus(190, 7);
        let mut b = Hist::new(100, 10);
        b.vmbus(125, 2);
        b.merge(&a);
        assert!(b.exact_for(100));
        let t = b.finish(true, 195).unwrap();
        let got: Vec<[u64; 4]> = t
            .buckets
            .iter()
            .map(|x| [x.ioctls, x.bytes, x.vmbus_messages, x.vmbus_bytes])
            .collect();
        let mut want = vec![[0u64; 4]; 10];
        want[0] = [1, 1, 0, 0];
        want[2] = [0, 0, 1, 2];
        want[5] = [1, 3, 0, 0];
        want[9] = [0, 0, 1, 7];
        assert_eq!(got, want);
        a.ioctl(50, 1);
        assert!(
            !a.exact_for(100),
            "a timestamp before the origin is noticed"
        );
    }

    #[test]
    fn id_map_dense_and_sparse() {
        let mut m = IdMap::default();
        m.insert(3, 1);
        m.insert(1 << 40, 2);
        m.insert(0, 3);
        assert_eq!(
            (m.get(3), m.get(1 << 40), m.get(0), m.get(7)),
            (Some(1), Some(2), Some(3), None)
        );
        m.insert(3, 9);
        assert_eq!(m.get(3), Some(9));
        assert!(m.dense.len() < 1 << 20);
    }
}
