//! Raw ring-buffer events → `.dxtrace` records.
//!
//! Chunks of a call arrive between its entry and exit events (they come from the same
//! thread, and the ring buffer keeps reservation order), so a call is complete when its
//! exit arrives. Calls still open when the capture ends are flushed with `ts_exit` 0.
//!
//! Calls that carry no bytes come late: the kernel side gathers them per CPU and submits
//! them in batches (see `flush_batches` in probe-ebpf), so a batch can reach the ring
//! after records made later on other CPUs (a thread that moved to another CPU and closed
//! the descriptor, say). Finished records therefore wait in one queue per CPU (each in
//! the order its CPU made them) and are written merged by time, up to a mark before
//! which every batch is known to be in ([`Assembler::release`]); and a batched call on a
//! derived descriptor finds its device in the descriptor's history at the call's time,
//! not as the descriptor is when the batch arrives.

use std::collections::VecDeque;

use driver_core::inthash::{IntMap, IntSet};

use probe_common::*;
use traces::{
    BUF_TRUNCATED, BUF_UNREADABLE, BUF_ZERO_FILLED, Buffer, BufferRole, CaptureStats, Dropped,
    FdEvent, FdOp, IoctlRecord, ProcessInfo, Record, VmbusDir, VmbusMessage,
};

use crate::desc::CmdDescriptor;
use crate::load::RawEvent;

/// A derived descriptor's (device, since, until).
type Span = (u64, u64, u64);

struct Pending {
    rec: IoctlRecord,
    /// (role, desc, elem) → index in `rec.buffers`; a short list (a call has a handful of
    /// buffers), empty and unallocated for calls without pointer buffers.
    index: Vec<((u8, u8, u8), usize)>,
}

#[derive(Default)]
struct PendingVmbus {
    req: Option<Buffer>,
    reply: Option<Buffer>,
    /// Request already written (the reply comes later).
    sent: bool,
    ioctl_id: Option<u64>,
}

/// Turns raw events into records, in order. Its maps are keyed by integers and hashed
/// with `driver_core::inthash` (SipHash was ~2.5 % of a recording's profile, two lookups
/// and an insert per call).
pub struct Assembler {
    descs: IntMap<u32, CmdDescriptor>,
    calls: IntMap<u64, Pending>,
    vmbus: IntMap<u64, PendingVmbus>,
    /// Thread → id of the ioctl it is in (links VMBus messages to ioctls).
    in_call: IntMap<u32, u64>,
    /// (pid, fd) of derived descriptors → device of the descriptor that created them, and
    /// since when (the fd event's time).
    derived_dev: IntMap<(u32, i32), (u64, u64)>,
    /// The earlier derived descriptors of a (pid, fd): (device, since, until), for batched
    /// calls that arrive after their close or reuse; kept until every call before `until`
    /// is in (see [`Assembler::release`]).
    derived_before: IntMap<(u32, i32), Vec<Span>>,
    /// Finished records waiting for [`Assembler::release`].
    queue: Reorder,
    seen_pids: IntSet<u32>,
    next_id: u64,
    last_drops: Vec<Vec<u64>>,
    /// Ioctl records written.
    pub ioctls: u64,
    /// VMBus records written.
    pub vmbus_msgs: u64,
    /// Buffer bytes written.
    pub bytes: u64,
    /// Sum of every drop record's count.
    pub dropped: u64,
}

/// glibc `makedev` from the kernel's `major << 20 | minor`.
fn kernel_dev_to_user(kdev: u64) -> u64 {
    let major = (kdev >> 20) & 0xfff;
    let minor = kdev & 0xfffff;
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn role_of(r: u8) -> BufferRole {
    match r {
        ROLE_STRUCT_OUT => BufferRole::StructOut,
        ROLE_PTR_IN => BufferRole::PtrIn,
        ROLE_PTR_OUT => BufferRole::PtrOut,
        _ => BufferRole::StructIn,
    }
}

/// Name of a `DROP_*` slot as written in [`Dropped::reason`].
pub fn drop_reason(slot: u32) -> &'static str {
    match slot {
        DROP_CALL => "ringbuf_full",
        DROP_CHUNK => "ringbuf_full_chunk",
        DROP_EXIT => "ringbuf_full_exit",
        DROP_FD => "ringbuf_full_fd",
        DROP_VMBUS => "ringbuf_full_vmbus",
        DROP_INFLIGHT => "inflight_full",
        _ => "unknown",
    }
}

fn append(buf: &mut Buffer, ev: &BufEvent, data: &[u8], pinned: bool) {
    if ev.flags & FLAG_UNREADABLE != 0 {
        if pinned && ev.offset as usize == buf.data.len() && data.is_empty() {
            // A non-resident page of pinned memory (e.g. guest memory never touched
            // before KVM_SET_USER_MEMORY_REGION): anonymous memory reads as zeros, and
            // the flag says these bytes were not actually read.
            buf.data.resize(buf.data.len() + ev.len as usize, 0);
            buf.flags |= BUF_ZERO_FILLED;
            return;
        }
        buf.flags |= BUF_UNREADABLE;
    }
    if ev.flags & FLAG_TRUNCATED != 0 {
        buf.flags |= BUF_TRUNCATED;
    }
    if ev.offset as usize == buf.data.len() {
        buf.data.extend_from_slice(data);
    } else {
        // A chunk before this one was lost: keep the prefix only, flagged.
        buf.flags |= BUF_TRUNCATED;
    }
}

/// The argument struct as carried inside an enter or exit record.
fn inline_struct(addr: u64, len: u16, flags: u8, data: &[u8], role: BufferRole) -> Buffer {
    Buffer {
        addr,
        role,
        path: String::new(),
        len: len as u64,
        flags: if flags & FLAG_UNREADABLE != 0 {
            BUF_UNREADABLE
        } else {
            0
        },
        data: data.to_vec(),
    }
}

fn new_buffer(ev: &BufEvent, role: BufferRole, path: String) -> Buffer {
    Buffer {
        addr: ev.addr,
        role,
        path,
        len: ev.total_len,
        flags: 0,
        data: Vec::new(),
    }
}

impl Assembler {
    /// An assembler that names pointer buffers after `descs`.
    pub fn new(descs: impl IntoIterator<Item = CmdDescriptor>) -> Assembler {
        Assembler {
            descs: descs.into_iter().map(|d| (d.cmd, d)).collect(),
            calls: IntMap::default(),
            vmbus: IntMap::default(),
            in_call: IntMap::default(),
            derived_dev: IntMap::default(),
            derived_before: IntMap::default(),
            queue: Reorder::default(),
            seen_pids: IntSet::default(),
            next_id: 1,
            last_drops: Vec::new(),
            ioctls: 0,
            vmbus_msgs: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    fn process(&mut self, pid: u32, comm: &str, ts: u64, out: &mut impl FnMut(Record)) {
        if pid == 0 || !self.seen_pids.insert(pid) {
            return;
        }
        out(Record::Process(process_info(pid, comm, ts)));
    }

    /// A new call's record id and device (user-space encoding; a derived fd's from the
    /// call that returned it), after the process record of a pid seen for the first time (`comm`: the
    /// thread's name when the event carries it).
    fn new_call(
        &mut self,
        pid: u32,
        fd: i32,
        kernel_dev: u64,
        comm: Option<&[u8; 16]>,
        ts: u64,
        out: &mut impl FnMut(Record),
    ) -> (u64, u64) {
        if !self.seen_pids.contains(&pid) {
            let comm = comm.map(|c| cstr(c)).unwrap_or_default();
            self.process(pid, &comm, ts, out);
        }
        let id = self.next_id;
        self.next_id += 1;
        let dev = if kernel_dev == 0 {
            self.derived_device(pid, fd, ts)
        } else {
            kernel_dev_to_user(kernel_dev)
        };
        (id, dev)
    }

    /// Device of derived descriptor `fd` of `pid` as it was at `ts` (0: not known).
    fn derived_device(&self, pid: u32, fd: i32, ts: u64) -> u64 {
        let now = self.derived_dev.get(&(pid, fd)).copied();
        if let Some((dev, since)) = now
            && since <= ts
        {
            return dev;
        }
        self.derived_before
            .get(&(pid, fd))
            .and_then(|h| {
                h.iter()
                    .rev()
                    .find(|&&(_, since, until)| since <= ts && ts < until)
            })
            .map_or_else(|| now.map_or(0, |(dev, _)| dev), |&(dev, _, _)| dev)
    }

    /// (pid, fd) names a new derived descriptor (`dev`) from `ts` on, or none (`None`).
    fn set_derived(&mut self, key: (u32, i32), dev: Option<u64>, ts: u64) {
        if let Some((old, since)) = self.derived_dev.remove(&key) {
            self.derived_before
                .entry(key)
                .or_default()
                .push((old, since, ts));
        }
        if let Some(dev) = dev {
            self.derived_dev.insert(key, (dev, ts));
        }
    }

    /// A finished record, made on `cpu` at `ts`, into the time-ordered queue.
    fn finished(&mut self, cpu: u32, ts: u64, rec: Record) {
        self.queue.push(cpu, ts, rec);
    }

    /// Writes the finished records made before `mark` (`CLOCK_MONOTONIC` ns), merged in
    /// time order: every batched call that returned before `mark` must have been pushed
    /// (see [`crate::Probe::flush_batches`]). Records made later wait, unless more than
    /// [`MAX_HELD`] do (then the oldest go). `u64::MAX` writes them all.
    pub fn release(&mut self, mark: u64, out: &mut impl FnMut(Record)) {
        self.queue.release(mark, out);
        if !self.derived_before.is_empty() {
            // Calls made before the mark are all in: an older history is not needed.
            self.derived_before.retain(|_, h| {
                h.retain(|&(_, _, until)| until >= mark);
                !h.is_empty()
            });
        }
    }

    /// Records waiting for [`Assembler::release`].
    pub fn held(&self) -> usize {
        self.queue.held
    }

    /// Feeds one event; completed records are queued for [`Assembler::release`] (process
    /// records, which only describe a pid, go to `out` at once).
    pub fn push(&mut self, ev: RawEvent<'_>, out: &mut impl FnMut(Record)) {
        match ev {
            RawEvent::Enter(e, inline) => {
                let (id, dev) = self.new_call(
                    e.pid,
                    e.fd,
                    e.dev,
                    (e.has_comm != 0).then_some(&e.comm),
                    e.ts,
                    out,
                );
                self.in_call.insert(e.tid, id);
                let mut buffers = Vec::new();
                if e.inline != 0 {
                    buffers.push(inline_struct(
                        e.arg,
                        e.struct_len,
                        e.struct_flags,
                        inline,
                        BufferRole::StructIn,
                    ));
                }
                self.calls.insert(
                    e.call_id,
                    Pending {
                        rec: IoctlRecord {
                            id,
                            ts_enter: e.ts,
                            ts_exit: 0,
                            pid: e.pid,
                            tid: e.tid,
                            fd: e.fd,
                            dev,
                            cmd: e.cmd,
                            arg: e.arg,
                            ret: 0,
                            buffers,
                        },
                        index: Vec::new(),
                    },
                );
            }
            RawEvent::Call(c) => {
                let comm = (c.has_comm != 0).then_some(&c.comm);
                let (id, dev) = self.new_call(c.pid, c.fd, c.dev, comm, c.ts_enter, out);
                let ts = if c.ts_exit != 0 {
                    c.ts_exit
                } else {
                    c.ts_enter
                };
                self.emit_ioctl(
                    c.hdr.cpu,
                    ts,
                    IoctlRecord {
                        id,
                        ts_enter: c.ts_enter,
                        ts_exit: c.ts_exit,
                        pid: c.pid,
                        tid: c.tid,
                        fd: c.fd,
                        dev,
                        cmd: c.cmd,
                        arg: c.arg,
                        ret: c.ret,
                        buffers: Vec::new(),
                    },
                );
            }
            RawEvent::Buf(b, data) => {
                if b.role == ROLE_VMBUS_REQ || b.role == ROLE_VMBUS_REPLY {
                    let v = self.vmbus.entry(b.id).or_default();
                    let slot = if b.role == ROLE_VMBUS_REQ {
                        &mut v.req
                    } else {
                        &mut v.reply
                    };
                    let buf = slot
                        .get_or_insert_with(|| new_buffer(&b, BufferRole::StructIn, String::new()));
                    append(buf, &b, data, false);
                    return;
                }
                let Some(p) = self.calls.get_mut(&b.id) else {
                    return;
                };
                let key = (b.role, b.desc, b.elem);
                let idx = match p.index.iter().find(|(k, _)| *k == key) {
                    Some(&(_, i)) => i,
                    None => {
                        let path = if b.desc == DESC_STRUCT {
                            String::new()
                        } else {
                            self.descs
                                .get(&p.rec.cmd)
                                .map(|d| d.path_of(b.desc as usize, b.elem as usize))
                                .unwrap_or_else(|| format!("desc{}", b.desc))
                        };
                        p.rec.buffers.push(new_buffer(&b, role_of(b.role), path));
                        p.index.push((key, p.rec.buffers.len() - 1));
                        p.rec.buffers.len() - 1
                    }
                };
                let pinned = b.desc != DESC_STRUCT
                    && self
                        .descs
                        .get(&p.rec.cmd)
                        .is_some_and(|d| d.is_pinned(b.desc as usize));
                append(&mut p.rec.buffers[idx], &b, data, pinned);
            }
            RawEvent::Exit(x, inline) => {
                let Some(mut p) = self.calls.remove(&x.call_id) else {
                    return;
                };
                p.rec.ts_exit = x.ts;
                p.rec.ret = x.ret;
                if x.inline != 0 {
                    // After the entry's struct and any pointer buffers read at entry,
                    // before those read at exit: the order chunked structs arrive in.
                    let at = p
                        .rec
                        .buffers
                        .iter()
                        .position(|b| b.role == BufferRole::PtrOut)
                        .unwrap_or(p.rec.buffers.len());
                    p.rec.buffers.insert(
                        at,
                        inline_struct(
                            p.rec.arg,
                            x.struct_len,
                            x.struct_flags,
                            inline,
                            BufferRole::StructOut,
                        ),
                    );
                }
                if x.lost_chunks > 0 {
                    for b in &mut p.rec.buffers {
                        if (b.data.len() as u64) < b.len.min(MAX_BUF_LEN as u64) {
                            b.flags |= BUF_TRUNCATED;
                        }
                    }
                }
                if self.in_call.get(&p.rec.tid) == Some(&p.rec.id) {
                    self.in_call.remove(&p.rec.tid);
                }
                self.emit_ioctl(x.hdr.cpu, x.ts, p.rec);
            }
            RawEvent::Fd(f) => {
                self.process(f.pid, "", f.ts, out);
                let op = match f.op {
                    FD_OP_CLOSE => FdOp::Close,
                    FD_OP_DERIVED | FD_OP_DUP => FdOp::Derived,
                    _ => FdOp::Open,
                };
                let mut dev = kernel_dev_to_user(f.dev);
                let mut path = cstr(&f.path);
                match op {
                    FdOp::Derived if f.op == FD_OP_DUP => {
                        // A copy: the device of the copied descriptor (an anonymous inode
                        // has none of its own; a device or FUSE file is named by the
                        // kernel side). The trace says what was copied in `path`.
                        let parent = if f.dev == 0 {
                            self.derived_device(f.pid, f.old_fd, f.ts)
                        } else {
                            dev
                        };
                        self.set_derived((f.pid, f.fd), Some(parent), f.ts);
                        path = format!("dup:{}", f.old_fd);
                        dev = 0;
                    }
                    FdOp::Derived => {
                        // The creating call's device: the parent fd's device.
                        let parent = self.calls.get(&f.call_id).map(|p| p.rec.dev).unwrap_or(0);
                        self.set_derived((f.pid, f.fd), Some(parent), f.ts);
                        dev = 0;
                    }
                    FdOp::Close => self.set_derived((f.pid, f.fd), None, f.ts),
                    FdOp::Open => {}
                }
                let rec = Record::Fd(FdEvent {
                    ts: f.ts,
                    pid: f.pid,
                    tid: f.tid,
                    fd: f.fd,
                    op,
                    path,
                    dev,
                    ino: f.ino,
                    flags: f.flags,
                    ret: f.ret,
                });
                self.finished(f.hdr.cpu, f.ts, rec);
            }
            RawEvent::Vmbus(v) => {
                self.process(v.pid, "", v.ts, out);
                let ioctl_id = self.in_call.get(&v.tid).copied();
                let entry = self.vmbus.entry(v.msg_id).or_default();
                if v.dir == VMBUS_GUEST_TO_HOST {
                    entry.ioctl_id = ioctl_id;
                }
                let (buf, dir) = if v.dir == VMBUS_HOST_REPLY {
                    (entry.reply.take(), VmbusDir::HostReply)
                } else if v.dir == VMBUS_HOST_TO_GUEST {
                    (entry.req.take(), VmbusDir::HostToGuest)
                } else {
                    entry.sent = true;
                    (entry.req.take(), VmbusDir::GuestToHost)
                };
                let buf = buf.unwrap_or_default();
                let msg = VmbusMessage {
                    ts: v.ts,
                    dir,
                    // The adapter LUID where the channel layout is known (0: global
                    // channel); unknown (None) otherwise.
                    channel: (v.has_channel_id != 0 && v.channel_id != 0).then_some(v.channel_id),
                    request_id: v.request_id,
                    is_async: v.is_async != 0,
                    status: (v.has_status != 0).then_some(v.status),
                    ioctl_id: entry.ioctl_id.or(ioctl_id),
                    pid: v.pid,
                    tid: v.tid,
                    len: v.len,
                    flags: buf.flags,
                    bytes: buf.data,
                };
                if v.dir != VMBUS_GUEST_TO_HOST || v.is_async != 0 {
                    self.vmbus.remove(&v.msg_id);
                }
                self.vmbus_msgs += 1;
                self.bytes += msg.bytes.len() as u64;
                self.finished(v.hdr.cpu, v.ts, Record::Vmbus(msg));
            }
        }
    }

    fn emit_ioctl(&mut self, cpu: u32, ts: u64, rec: IoctlRecord) {
        self.ioctls += 1;
        self.bytes += rec.payload_bytes();
        self.finished(cpu, ts, Record::Ioctl(rec));
    }

    /// Writes a [`Dropped`] record for every per-CPU counter that grew since the last call.
    pub fn drops(&mut self, counts: &[Vec<u64>], ts: u64, out: &mut impl FnMut(Record)) {
        for (slot, cpus) in counts.iter().enumerate() {
            for (cpu, &v) in cpus.iter().enumerate() {
                let last = self
                    .last_drops
                    .get(slot)
                    .and_then(|c| c.get(cpu))
                    .copied()
                    .unwrap_or(0);
                if v > last {
                    self.dropped += v - last;
                    out(Record::Dropped(Dropped {
                        ts,
                        count: v - last,
                        reason: drop_reason(slot as u32).into(),
                        cpu: Some(cpu as u32),
                    }));
                }
            }
        }
        self.last_drops = counts.to_vec();
    }

    /// Flushes calls that never saw their exit (capture ended first, or the exit record
    /// was dropped) and writes the final statistics.
    pub fn finish(&mut self, counters: &[u64], ts: u64, out: &mut impl FnMut(Record)) {
        self.release(u64::MAX, out);
        let mut open: Vec<_> = self.calls.drain().map(|(_, p)| p.rec).collect();
        open.sort_by_key(|r| r.id);
        for rec in open {
            self.emit_ioctl(0, 0, rec);
        }
        self.release(u64::MAX, out);
        let names = [
            "kernel_calls",
            "kernel_bytes",
            "read_failures",
            "walk_failures",
            "kernel_vmbus",
            "batch_flushes",
        ];
        let mut c: Vec<(String, u64)> = names
            .iter()
            .zip(counters)
            .map(|(n, v)| (n.to_string(), *v))
            .collect();
        c.push(("ioctl_records".into(), self.ioctls));
        c.push(("vmbus_records".into(), self.vmbus_msgs));
        c.push(("payload_bytes".into(), self.bytes));
        c.push(("dropped".into(), self.dropped));
        out(Record::Stats(CaptureStats { ts, counters: c }));
    }
}

/// Most finished records held for ordering; beyond, the oldest are written anyway.
pub const MAX_HELD: usize = 1 << 18;

/// Finished records per CPU that made them, each queue in its CPU's order (the order of
/// its ring records), merged by time on release.
#[derive(Default)]
struct Reorder {
    queues: Vec<VecDeque<(u64, Record)>>,
    held: usize,
}

impl Reorder {
    fn push(&mut self, cpu: u32, ts: u64, rec: Record) {
        let cpu = cpu as usize;
        if cpu >= self.queues.len() {
            self.queues.resize_with(cpu + 1, VecDeque::new);
        }
        self.queues[cpu].push_back((ts, rec));
        self.held += 1;
    }

    /// Writes, oldest first, the records made before `mark` (and the oldest beyond
    /// [`MAX_HELD`]). A queue's head is the oldest record of its CPU, so the oldest
    /// record held is the oldest of the heads.
    fn release(&mut self, mark: u64, out: &mut impl FnMut(Record)) {
        while self.held > 0 {
            let Some((q, ts)) = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|(ts, _)| (i, *ts)))
                .min_by_key(|&(_, ts)| ts)
            else {
                break;
            };
            if ts >= mark && self.held <= MAX_HELD {
                break;
            }
            let (_, rec) = self.queues[q].pop_front().expect("a head");
            self.held -= 1;
            out(rec);
        }
    }
}

/// Reads what /proc still knows about a process.
fn process_info(pid: u32, comm: &str, ts: u64) -> ProcessInfo {
    let base = format!("/proc/{pid}");
    let read = |f: &str| std::fs::read(format!("{base}/{f}")).ok();
    let mut info = ProcessInfo {
        ts,
        pid,
        comm: comm.to_string(),
        ..ProcessInfo::default()
    };
    if let Some(c) = read("comm") {
        info.comm = String::from_utf8_lossy(&c).trim_end().to_string();
    }
    if let Ok(exe) = std::fs::read_link(format!("{base}/exe")) {
        info.exe = exe.display().to_string();
    }
    if let Some(c) = read("cmdline") {
        info.cmdline = c
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
    }
    if let Some(stat) = read("stat") {
        let s = String::from_utf8_lossy(&stat);
        // Fields after the parenthesised comm: state ppid … starttime is field 22.
        if let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            info.ppid = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            // SAFETY: sysconf has no memory effects.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let ticks: u64 = f.get(19).and_then(|v| v.parse().ok()).unwrap_or(0);
            info.start_ns = ticks * (1_000_000_000 / hz);
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    const KVM: u64 = (10 << 20) | 232;
    const OTHER: u64 = (10 << 20) | 60;

    fn enter(cpu: u32, call_id: u64, fd: i32, dev: u64, ts: u64) -> RawEvent<'static> {
        RawEvent::Enter(
            EnterEvent {
                hdr: EventHeader {
                    kind: EV_ENTER,
                    cpu,
                },
                call_id,
                ts,
                pid: 7,
                tid: 7,
                fd,
                cmd: 0xae01,
                dev,
                ..EnterEvent::default()
            },
            &[],
        )
    }

    fn exit(cpu: u32, call_id: u64, ts: u64, ret: i64) -> RawEvent<'static> {
        RawEvent::Exit(
            ExitEvent {
                hdr: EventHeader { kind: EV_EXIT, cpu },
                call_id,
                ts,
                ret,
                ..ExitEvent::default()
            },
            &[],
        )
    }

    fn fd_event(cpu: u32, op: u32, fd: i32, call_id: u64, ts: u64) -> RawEvent<'static> {
        RawEvent::Fd(Box::new(FdEventRaw {
            hdr: EventHeader { kind: EV_FD, cpu },
            ts,
            pid: 7,
            tid: 7,
            fd,
            op,
            dev: 0,
            ino: 0,
            flags: 0,
            old_fd: -1,
            ret: 0,
            call_id,
            path: [0; PATH_LEN],
        }))
    }

    fn batched(cpu: u32, call_id: u64, fd: i32, ts_enter: u64, ts_exit: u64) -> RawEvent<'static> {
        RawEvent::Call(CallEvent {
            hdr: EventHeader { kind: EV_CALL, cpu },
            call_id,
            ts_enter,
            ts_exit,
            pid: 7,
            tid: 7,
            fd,
            cmd: 0xae03,
            ..CallEvent::default()
        })
    }

    /// What a batch that reaches the ring late looks like: a thread makes a call on a
    /// derived descriptor on CPU 0 (batched there), moves to CPU 1, closes the descriptor
    /// and gets the same number back for a descriptor of another device; CPU 0's batch
    /// arrives after all that. The trace has the call where it happened, before the
    /// close, with the device the descriptor had then.
    #[test]
    fn late_batched_call_is_written_in_time_order_with_its_device_then() {
        let mut a = Assembler::new([]);
        let mut recs = Vec::new();
        let mut out = |r: Record| recs.push(r);
        // fd 5 derived from a call on /dev/kvm (fd 3), made on CPU 1.
        a.push(enter(1, 1, 3, KVM, 10), &mut out);
        a.push(fd_event(1, FD_OP_DERIVED, 5, 1, 20), &mut out);
        a.push(exit(1, 1, 19, 5), &mut out);
        // The thread moves to CPU 1: close, and fd 5 again from a call on another device.
        a.push(fd_event(1, FD_OP_CLOSE, 5, 0, 200), &mut out);
        a.push(enter(1, 2, 4, OTHER, 205), &mut out);
        a.push(fd_event(1, FD_OP_DERIVED, 5, 2, 207), &mut out);
        a.push(exit(1, 2, 206, 5), &mut out);
        // A call on the second fd 5, batched on CPU 1 (and submitted before CPU 1's next
        // record), then that fd closed too; only then CPU 0's batch arrives, with the call
        // on the first fd 5, made at 100.
        a.push(batched(1, 4, 5, 220, 230), &mut out);
        a.push(fd_event(1, FD_OP_CLOSE, 5, 0, 240), &mut out);
        a.push(batched(0, 3, 5, 100, 110), &mut out);
        // And one more CPU 1 record, made after the mark.
        a.push(fd_event(1, FD_OP_OPEN, 6, 0, 300), &mut out);
        // Records before the mark are written, later ones wait.
        a.release(250, &mut out);
        let order = |recs: &[Record]| -> Vec<(&'static str, u64, u64)> {
            recs.iter()
                .filter_map(|r| match r {
                    Record::Ioctl(i) => Some(("ioctl", i.ts_enter, i.dev)),
                    Record::Fd(f) => Some(("fd", f.ts, f.fd as u64)),
                    _ => None,
                })
                .collect()
        };
        let kvm = kernel_dev_to_user(KVM);
        let other = kernel_dev_to_user(OTHER);
        assert_eq!(
            order(&recs),
            // A descriptor a call returns is reported before the call (as its CPU
            // made the records); CPU 0's call goes between CPU 1's records of its time.
            [
                ("fd", 20, 5),
                ("ioctl", 10, kvm),
                ("ioctl", 100, kvm),
                ("fd", 200, 5),
                ("fd", 207, 5),
                ("ioctl", 205, other),
                ("ioctl", 220, other),
                ("fd", 240, 5),
            ]
        );
        a.finish(&[], 400, &mut |r| recs.push(r));
        assert_eq!(order(&recs)[8..], [("fd", 300, 6)]);
    }

    #[test]
    fn dev_round_trip() {
        assert_eq!(kernel_dev_to_user((10 << 20) | 232), 0x0ae8);
        for user in [0x0ae8u64, 0x0801, 0x1230_0345] {
            assert_eq!(kernel_dev_to_user(user_dev_to_kernel(user) as u64), user);
        }
    }
}
