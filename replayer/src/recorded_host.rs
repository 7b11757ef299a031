//! Offline driver-in-the-loop (`dxtrace replay --target emulator --host recorded`): the
//! emulator's driver logic runs on the recorded ioctls, but the host it talks to is the
//! trace itself.
//!
//! [`RecordedHost`] holds the trace's VMBus records in file order. Each message the driver
//! logic sends is matched with the next recorded guest→host message, compared with it
//! field by field through `driver-core`'s VMBus decoders, and answered with that
//! message's recorded reply (no reply recorded: the host never answered, a hang). The
//! host→guest packets recorded after a reply (signals, SETGUESTDATA) are delivered right
//! after it, in recorded order. Differences go to a shared [`VmbusCheck`] that the
//! [`Replayer`](crate::Replayer) drains into its report as divergences.
//!
//! Fields that legitimately differ between capture and replay:
//! * pids (G:CREATEPROCESS `process_id`): the traced process's pid maps to the replaying
//!   backend's pid, like ENUMPROCESSES results;
//! * guest kernel addresses (G:CREATEPROCESS `process`, the guest's `struct dxgprocess`
//!   pointer): chosen by the guest kernel, not compared;
//! * user pointers the driver copies into a message (QUERYALLOCATIONRESIDENCY forwards the
//!   ioctl struct): addresses in the replaying process, not compared (the data behind
//!   them travels in the message and is compared).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use driver_core::decode::{Field, VmbusDirection, decode_vmbus, hex_dump};
use driver_core::emulator::bus::Clock;
use driver_core::emulator::host::{IO_SPACE_BASE, IO_SPACE_SIZE};
use driver_core::emulator::{Host, HostOutcome};
use traces::{Record, VmbusDir, VmbusMessage};

use crate::error::ReplayError;
use crate::mem::Region;

/// Request fields holding a pid, by message label and field path.
const PID_FIELDS: &[(&str, &str)] = &[("G:CREATEPROCESS", "command.process_id")];
/// Request fields holding guest kernel addresses, by message label and field path.
const KERNEL_ADDRS: &[(&str, &str)] = &[("G:CREATEPROCESS", "command.process")];

/// One difference between a message the driver logic sent and the recorded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmbusDiff {
    /// 1-based position of the message among the guest→host messages.
    pub seq: u64,
    /// Message label (`CREATEALLOCATION`, `G:CREATEPROCESS`).
    pub message: String,
    /// Field path in the decoded message (`command.alloc_count`, `tail[+8]`, `command`).
    pub field: String,
    /// Recorded value, decoded.
    pub recorded: String,
    /// Value the driver logic sent, decoded.
    pub replayed: String,
}

#[derive(Debug, Default)]
struct CheckState {
    diffs: Vec<VmbusDiff>,
    sent: u64,
    replay_pid: Option<u32>,
}

/// The replay's view of a [`RecordedHost`]: differences found so far, and the pid the
/// replaying backend uses (for pid fields).
#[derive(Debug, Clone, Default)]
pub struct VmbusCheck {
    shared: Arc<Mutex<CheckState>>,
    /// Messages recorded in the trace.
    recorded: u64,
}

impl VmbusCheck {
    fn lock(&self) -> std::sync::MutexGuard<'_, CheckState> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Takes the differences found since the last call.
    pub fn take(&self) -> Vec<VmbusDiff> {
        std::mem::take(&mut self.lock().diffs)
    }
    /// Sets the pid the replaying process has (the traced pid maps to it).
    pub fn set_replay_pid(&self, pid: u32) {
        self.lock().replay_pid = Some(pid);
    }
    /// Guest→host messages the driver logic sent so far.
    pub fn sent(&self) -> u64 {
        self.lock().sent
    }
    /// Guest→host messages in the trace.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }
}

/// A [`Host`] that answers with a trace's recorded replies and compares what it is sent
/// with the recorded requests.
pub struct RecordedHost {
    seq: Vec<VmbusMessage>,
    pos: usize,
    /// Index among guest→host messages of the next one to match (0-based).
    n: u64,
    check: VmbusCheck,
    traced_pids: HashSet<u32>,
    window: Region,
    hang_bound_ns: u64,
}

impl RecordedHost {
    /// Collects the VMBus records of a trace (in file order).
    pub fn from_records<I>(records: I) -> Result<RecordedHost, ReplayError>
    where
        I: IntoIterator<Item = Result<Record, traces::TraceError>>,
    {
        let mut seq = Vec::new();
        for r in records {
            if let Record::Vmbus(m) = r? {
                seq.push(m);
            }
        }
        Ok(RecordedHost::new(seq))
    }

    /// A host over these VMBus records (file order).
    pub fn new(seq: Vec<VmbusMessage>) -> RecordedHost {
        let recorded = seq
            .iter()
            .filter(|m| m.dir == VmbusDir::GuestToHost)
            .count() as u64;
        let traced_pids = seq.iter().map(|m| m.pid).collect();
        // Fence pages and LOCK2 data the driver maps for user space: zero pages here (their
        // content came from the host, which is not running); MAP_NORESERVE, so untouched
        // pages cost nothing.
        let window = Region::anonymous(IO_SPACE_SIZE as usize, &[], "recorded host IO space")
            .expect("reserving address space for the IO window");
        RecordedHost {
            seq,
            pos: 0,
            n: 0,
            check: VmbusCheck {
                shared: Default::default(),
                recorded,
            },
            traced_pids,
            window,
            hang_bound_ns: driver_core::emulator::EmulatorConfig::default().hang_bound_ns,
        }
    }

    /// The handle the replayer reads differences from.
    pub fn check(&self) -> VmbusCheck {
        self.check.clone()
    }

    fn diff(&self, seq: u64, message: &str, field: String, recorded: String, replayed: String) {
        self.check.lock().diffs.push(VmbusDiff {
            seq,
            message: message.to_string(),
            field,
            recorded,
            replayed,
        });
    }

    /// Delivers host→guest packets recorded before the next guest→host message.
    fn deliver_pending(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        while let Some(m) = self.seq.get(self.pos) {
            match m.dir {
                VmbusDir::GuestToHost => break,
                VmbusDir::HostToGuest => inbound.push_back(m.bytes.clone()),
                // A reply nobody asked for (its request was not matched): skip.
                VmbusDir::HostReply => {}
            }
            self.pos += 1;
        }
    }

    fn compare(&self, seq: u64, rec: &VmbusMessage, sent: &[u8], is_async: bool) {
        let r = decode_vmbus(VmbusDirection::GuestToHost, &rec.bytes);
        let s = decode_vmbus(VmbusDirection::GuestToHost, sent);
        let label = r.name.clone();
        if r.cmd != s.cmd {
            // A different command: field paths do not line up, name the commands.
            self.diff(seq, &label, "command".into(), r.name, s.name);
            return;
        }
        if rec.is_async != is_async {
            self.diff(
                seq,
                &label,
                "is_async".into(),
                rec.is_async.to_string(),
                is_async.to_string(),
            );
        }
        let mut rl = Vec::new();
        let mut sl = Vec::new();
        for f in &r.fields {
            leaves(f, "", &mut rl);
        }
        for f in &s.fields {
            leaves(f, "", &mut sl);
        }
        let replay_pid = self.check.lock().replay_pid;
        for (rf, sf) in rl.iter().zip(&sl) {
            let path = &rf.0;
            // User pointers the driver copies into messages (QUERYALLOCATIONRESIDENCY
            // forwards the ioctl struct): addresses in the replaying process.
            if KERNEL_ADDRS.contains(&(label.as_str(), path.as_str())) || rf.1.ty == "pointer" {
                continue;
            }
            if PID_FIELDS.contains(&(label.as_str(), path.as_str())) {
                let traced =
                    rf.1.raw
                        .is_some_and(|v| self.traced_pids.contains(&(v as u32)));
                if let (true, Some(p)) = (traced, replay_pid)
                    && sf.1.raw == Some(p as u64)
                {
                    continue;
                }
            }
            let same = match (rf.1.raw, sf.1.raw) {
                (Some(a), Some(b)) => a == b,
                _ => rf.1.rendered == sf.1.rendered,
            };
            if !same {
                self.diff(
                    seq,
                    &label,
                    path.clone(),
                    rf.1.rendered.clone(),
                    sf.1.rendered.clone(),
                );
            }
        }
        // Variable data after the command struct (handle arrays, private driver data).
        let (rt, st) = (
            rec.bytes.get(fixed_len(&r)..).unwrap_or(&[]),
            sent.get(fixed_len(&s)..).unwrap_or(&[]),
        );
        if rec.len != sent.len() as u64 {
            self.diff(
                seq,
                &label,
                "size".into(),
                rec.len.to_string(),
                sent.len().to_string(),
            );
        }
        if let Some(off) = (0..rt.len().min(st.len())).find(|i| rt[*i] != st[*i]) {
            let end = |b: &[u8]| b.len().min(off + 16);
            self.diff(
                seq,
                &label,
                format!("tail[+{off}]"),
                hex_dump(&rt[off..end(rt)]),
                hex_dump(&st[off..end(st)]),
            );
        }
    }
}

/// Leaves of a decoded field tree with their dotted paths.
fn leaves<'a>(f: &'a Field, prefix: &str, out: &mut Vec<(String, &'a Field)>) {
    let path = if prefix.is_empty() {
        f.name.clone()
    } else if f.name.starts_with('[') {
        format!("{prefix}{}", f.name)
    } else {
        format!("{prefix}.{}", f.name)
    };
    if f.children.is_empty() {
        out.push((path, f));
    } else {
        for c in &f.children {
            leaves(c, &path, out);
        }
    }
}

/// Bytes of a guest→host message covered by its decoded header and command struct.
fn fixed_len(m: &driver_core::decode::DecodedMessage) -> usize {
    let ext = if m.ext_header { 16 } else { 0 };
    ext + m
        .fields
        .iter()
        .filter(|f| f.name != "ext_header")
        .map(|f| f.offset + f.size)
        .max()
        .unwrap_or(0)
}

impl Host for RecordedHost {
    fn process(
        &mut self,
        msg: &[u8],
        is_async: bool,
        _clock: &Clock,
        inbound: &mut VecDeque<Vec<u8>>,
        reply_out: &mut Vec<u8>,
    ) -> HostOutcome {
        self.deliver_pending(inbound);
        self.n += 1;
        let seq = self.n;
        self.check.lock().sent = seq;
        let Some(rec) = self.seq.get(self.pos).cloned() else {
            let m = decode_vmbus(VmbusDirection::GuestToHost, msg);
            self.diff(
                seq,
                &m.name,
                "message".into(),
                "(none: the trace has no more messages)".into(),
                format!("{} ({} bytes)", m.name, msg.len()),
            );
            return if is_async {
                HostOutcome::Accepted
            } else {
                HostOutcome::NoReply {
                    waited_ns: self.hang_bound_ns,
                }
            };
        };
        self.pos += 1;
        self.compare(seq, &rec, msg, is_async);
        if is_async || rec.is_async {
            self.deliver_pending(inbound);
            return HostOutcome::Accepted;
        }
        // The reply: the next HostReply of the same channel and request id before the
        // next request (host→guest packets may come in between).
        let mut reply = None;
        let mut i = self.pos;
        while let Some(m) = self.seq.get(i) {
            if m.dir == VmbusDir::GuestToHost {
                break;
            }
            if m.dir == VmbusDir::HostReply
                && m.request_id == rec.request_id
                && m.channel == rec.channel
            {
                reply = Some(i);
                break;
            }
            i += 1;
        }
        match reply {
            Some(i) => {
                reply_out.extend_from_slice(&self.seq[i].bytes);
                // Packets recorded before the reply were delivered before it.
                for m in &self.seq[self.pos..i] {
                    if m.dir == VmbusDir::HostToGuest {
                        inbound.push_back(m.bytes.clone());
                    }
                }
                self.pos = i + 1;
                self.deliver_pending(inbound);
                HostOutcome::Reply
            }
            None => {
                self.deliver_pending(inbound);
                HostOutcome::NoReply {
                    waited_ns: self.hang_bound_ns,
                }
            }
        }
    }

    fn may_note(&self) -> bool {
        false // recorded replies carry no notes
    }
    fn map_io(&mut self, phys: u64) -> Option<u64> {
        (IO_SPACE_BASE..IO_SPACE_BASE + IO_SPACE_SIZE)
            .contains(&phys)
            .then(|| self.window.addr() + (phys - IO_SPACE_BASE))
    }

    fn remove_device(&mut self, inbound: &mut VecDeque<Vec<u8>>) {
        // The recorded SETGUESTDATA packets follow in the sequence.
        self.deliver_pending(inbound);
    }

    fn advance(&mut self, _now: u64, inbound: &mut VecDeque<Vec<u8>>) {
        self.deliver_pending(inbound);
    }

    fn next_completion(&self) -> Option<u64> {
        // Everything recorded up to the next request has been delivered already.
        None
    }
}
