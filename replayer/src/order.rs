//! The order a streaming replay issues records in: the file holds calls in the order they
//! *completed*, the replay issues them in the order they *entered* the driver. A
//! [`Window`] takes records in file order and gives them back in replay order, holding up
//! to [`REORDER_WINDOW`] of them: [`crate::Replayer::run`]'s order (records in memory,
//! or decoded from a file on a second thread by [`crate::run_reader`]).

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use traces::Record;

use crate::replay::REORDER_WINDOW;

/// Sort key of a record: its entry time; a record without one (0) takes the previous
/// record's, so it stays where the file has it. `None`: not replayed.
#[derive(Default)]
pub(crate) struct OrderKey {
    last: u64,
}

impl OrderKey {
    pub(crate) fn key(&mut self, r: &Record) -> Option<u64> {
        let ts = match r {
            Record::Ioctl(io) => io.ts_enter,
            Record::Fd(ev) => ev.ts,
            _ => return None,
        };
        if ts != 0 {
            self.last = ts;
        }
        Some(self.last)
    }
}

/// A queued record: (enter time, file position) → (call index, slot in the slab).
struct Pending {
    key: u64,
    seq: u64,
    idx: u64,
    slot: usize,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.key, self.seq) == (o.key, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.key, self.seq).cmp(&(o.key, o.seq))
    }
}

/// The reordering window (see the module docs). The records stay put in a slab (slots
/// reused as they leave), so the heap only moves small keys. Records nearly always
/// arrive in entry order: those that sort after every record already queued go to
/// `sorted`, in order; only the others pay for the heap. The next record is the least of
/// both fronts.
pub(crate) struct Window<R> {
    heap: BinaryHeap<Reverse<Pending>>,
    sorted: VecDeque<Pending>,
    slab: Vec<Option<R>>,
    free: Vec<usize>,
    order: OrderKey,
    seq: u64,
    released: u64,
    /// Records that entered the driver before a record already released: issued late,
    /// out of recorded order.
    pub late: u64,
    /// Ioctl records pushed so far, counting from the first call index given to
    /// [`Window::new`] (the next call index).
    pub calls: u64,
    to: Option<u64>,
    /// A call past `to` was pushed.
    pub stopped_at_to: bool,
}

impl<R: Borrow<Record>> Window<R> {
    /// An empty window whose first ioctl gets call index `calls`; ioctls past `to` stop it.
    pub(crate) fn new(calls: u64, to: Option<u64>) -> Self {
        Window {
            heap: BinaryHeap::new(),
            sorted: VecDeque::new(),
            slab: Vec::new(),
            free: Vec::new(),
            order: OrderKey::default(),
            seq: 0,
            released: 0,
            late: 0,
            calls,
            to,
            stopped_at_to: false,
        }
    }

    /// Queues the next record in file order; records not replayed (VMBus messages,
    /// annotations…) and ioctls past `to` (then [`Window::stopped_at_to`]: nothing more is
    /// to be pushed, the queued records are to be drained) are dropped. `true`: more than
    /// [`REORDER_WINDOW`] records are queued, release one ([`Window::pop`]) before the
    /// next push.
    pub(crate) fn push(&mut self, rec: R) -> bool {
        let Some(key) = self.order.key(rec.borrow()) else {
            return false;
        };
        let idx = match rec.borrow() {
            Record::Ioctl(_) => {
                self.calls += 1;
                self.calls - 1
            }
            _ => u64::MAX,
        };
        if idx != u64::MAX && self.to.is_some_and(|to| idx > to) {
            // Every call up to `to` has been pushed: drain and stop.
            self.stopped_at_to = true;
            return false;
        }
        if key < self.released {
            self.late += 1;
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(rec);
                i
            }
            None => {
                self.slab.push(Some(rec));
                self.slab.len() - 1
            }
        };
        let p = Pending {
            key,
            seq: self.seq,
            idx,
            slot,
        };
        // `seq` grows, so `p` sorts after every queued record whose key is ≤ its own.
        if self.sorted.back().is_none_or(|b| b.key <= key) {
            self.sorted.push_back(p);
        } else {
            self.heap.push(Reverse(p));
        }
        self.seq += 1;
        self.heap.len() + self.sorted.len() > REORDER_WINDOW
    }

    /// The queued record that entered the driver first, with its call index (`u64::MAX`
    /// for an fd event); `None` when the window is empty.
    pub(crate) fn pop(&mut self) -> Option<(u64, R)> {
        let from_sorted = match (self.sorted.front(), self.heap.peek()) {
            (Some(a), Some(Reverse(b))) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let p = if from_sorted {
            self.sorted.pop_front()
        } else {
            self.heap.pop().map(|Reverse(p)| p)
        }?;
        self.released = self.released.max(p.key);
        let rec = self.slab[p.slot]
            .take()
            .expect("a pending record is in its slot");
        self.free.push(p.slot);
        Some((p.idx, rec))
    }

    /// The record `n` places after the next one [`Window::pop`] gives, if records keep
    /// arriving in entry order (nearly always; when some wait in the heap the answer may
    /// be another record). Only for prefetching: a wrong guess costs a wasted load.
    pub(crate) fn peek_in_order(&self, n: usize) -> Option<&R> {
        let p = self.sorted.get(n)?;
        self.slab[p.slot].as_ref()
    }

    /// The note a replay adds when records were issued late.
    pub(crate) fn late_note(late: u64) -> Option<String> {
        (late > 0).then(|| {
            format!(
                "{late} records entered the driver before calls already replayed (more than {REORDER_WINDOW} calls completed while they were in flight); they were issued late, out of recorded order"
            )
        })
    }
}
