//! `replayer`: re-executes a `.dxtrace` trace against a [`driver_core::Backend`] — the
//! emulator in-process, or a real device (`/dev/dxg`, `/dev/kvm`) when asked explicitly —
//! and reports where the results differ.
//!
//! * **Buffers** are rebuilt at fresh addresses in this process; every pointer field is
//!   patched from the device table's pointer descriptors (nested arrays too, and flexible
//!   array members placed right after their struct). Memory the driver keeps using after
//!   the call (`Dir::Pinned`: KVM guest memory, dxg existing sysmem) is recreated
//!   page-aligned with the captured content and stays mapped as long as its owner (the VM
//!   fd and every fd created from it / the allocation handle).
//! * **Handles and fds** the capture saw created (the table's handle effects) map to the
//!   values the replay gets; input fields are rewritten through the map, and a handle with
//!   no mapping is an [`ReplayError::UnmappedHandle`] naming call, ioctl and field.
//!   Destroying a handle drops its mapping and those of the objects created under it.
//! * **Order**: per-thread order, threads interleaved as recorded. The file holds calls
//!   in the order they *completed* (the probe writes a call at its exit); the replay
//!   issues them in the order they *entered* the driver ([`replay_order`]: by entry
//!   timestamp, ties in file order), from one replaying thread. One thread issuing every
//!   call in global recorded order keeps each thread's order and the recorded
//!   interleaving; calls that overlapped in the capture run one after the other. Known
//!   limit: a call that blocked until another thread's *later* call released it (a CPU
//!   wait on a fence another thread signals) is issued before that call; the emulator
//!   bounds such waits, a real device may block the replay.
//!   [`Pace::Original`] keeps the recorded gaps between entries.
//! * **Divergences**: the full return value is compared exactly; then the out struct and
//!   the out buffers field by field (handles through the map; pointers, driver mappings and
//!   host-chosen values masked). Each [`Divergence`] names call, ioctl, field and both
//!   values decoded by `driver-core`. The first [`ReplayOptions::max_divergences`] are
//!   kept in full, the rest only counted ([`Report::divergences_total`]).
//! * **Trim** ([`trim()`]) keeps the handle lineage of one call.
//! * **Capture** ([`capture::RecordingBackend`]) records the calls of an in-process
//!   program the way the probe does, for tests and benchmarks where the probe cannot run.

#![warn(missing_docs)]

mod call;
pub mod capture;
pub mod error;
pub mod kvm_smoke;
mod mem;
mod order;
mod plan;
pub mod recorded_host;
pub mod replay;
mod ticks;
pub mod trim;

pub use error::ReplayError;
pub use mem::{Region, page_size};
pub use replay::{
    DEFAULT_MAX_DIVERGENCES, Divergence, HostMode, Pace, REORDER_WINDOW, ReplayOptions, ReplayPlan,
    Replayer, Report, Target, is_known, replay_order,
};
pub use trim::{TrimOptions, TrimResult, trim, trim_file};

/// Refuses traces that were generated rather than captured ([`ReplayError::Synthetic`]).
pub fn check_replayable(header: &traces::Header) -> Result<(), ReplayError> {
    if header.source == traces::CaptureSource::Generated {
        return Err(ReplayError::Synthetic {
            generated: header
                .generated
                .clone()
                .unwrap_or_else(|| "capture source: generated".into()),
        });
    }
    Ok(())
}

/// The emulator configuration a trace's header describes: seed, fault plan, latency
/// model, message mode and process name as the capture's emulator had them (written by
/// `dxtrace emulate`), so host-chosen values and injected faults reproduce. Traces from
/// elsewhere get the defaults. The replay always runs on the virtual clock, so timing
/// (GPU completions, hang bounds) is the same on every run.
pub fn emulator_config(
    header: &traces::Header,
) -> Result<driver_core::emulator::EmulatorConfig, ReplayError> {
    let mut cfg = driver_core::emulator::EmulatorConfig::from_header_extras(&header.extra)
        .map_err(ReplayError::EmulatorConfig)?;
    cfg.deterministic = true;
    Ok(cfg)
}

/// Records decoded per batch by [`run_reader`]'s decoding thread.
const READ_AHEAD_BATCH: usize = 512;
/// Batches the decoding thread may be ahead by.
const READ_AHEAD_DEPTH: usize = 8;

/// Records the replay is done with, on their way back to the decoding thread in batches
/// of [`READ_AHEAD_BATCH`]: it decodes the next records into them (in the steady state
/// nothing is allocated per record) and, once it has decoded the whole trace, frees them
/// while the replay issues the last calls. No record is freed by the replaying thread
/// (a record is several allocations: freeing the ~65k the reordering window still holds
/// at the end cost it ~500 instructions per record).
struct RecordBin {
    /// Records given back since the last batch went. Only the replaying thread locks it.
    batch: std::sync::Mutex<Vec<traces::Record>>,
    /// `None` once the replay has ended (see [`RecordBin::close`]).
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<Vec<traces::Record>>>>,
}

impl RecordBin {
    fn new(tx: std::sync::mpsc::Sender<Vec<traces::Record>>) -> RecordBin {
        RecordBin {
            batch: std::sync::Mutex::new(Vec::with_capacity(READ_AHEAD_BATCH)),
            tx: std::sync::Mutex::new(Some(tx)),
        }
    }

    fn give(&self, r: traces::Record) {
        let mut v = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        v.push(r);
        if v.len() >= READ_AHEAD_BATCH {
            let full = std::mem::replace(&mut *v, Vec::with_capacity(READ_AHEAD_BATCH));
            drop(v);
            if let Some(tx) = &*self.tx.lock().unwrap_or_else(|e| e.into_inner()) {
                // The decoding thread ends only after `close`: it receives this.
                let _ = tx.send(full);
            }
        }
    }

    /// Ends the returns: the decoding thread's last receive returns once it has the
    /// batches sent so far. Records given later are freed where they are dropped.
    fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A record from the decoding thread; when the replay drops it, it goes back to the bin.
struct Recycled<'a> {
    rec: Option<traces::Record>,
    bin: &'a RecordBin,
}

impl std::borrow::Borrow<traces::Record> for Recycled<'_> {
    fn borrow(&self) -> &traces::Record {
        self.rec.as_ref().expect("a record until dropped")
    }
}

impl Drop for Recycled<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.rec.take() {
            self.bin.give(r);
        }
    }
}

/// Ioctl records the replay is done with, by request code, for the decoding thread to
/// decode the next ones into: a record of the same request nearly always has the same
/// buffers, so its vectors are reused as they are (taking any spare record instead made
/// most of them grow, a reallocation and a copy each).
#[derive(Default)]
struct Spares {
    by_cmd: driver_core::inthash::IntMap<u32, Vec<traces::IoctlRecord>>,
}

impl Spares {
    fn put(&mut self, r: traces::Record) {
        if let traces::Record::Ioctl(io) = r {
            self.by_cmd.entry(io.cmd).or_default().push(io);
        }
    }

    /// `r` decoded owned, into a spare record of the same request when there is one (its
    /// buffer vector, paths and byte vectors reused): the same record
    /// [`traces::RecordRef::to_owned`] gives.
    fn decode(&mut self, r: traces::RecordRef<'_>) -> traces::Record {
        if let traces::RecordRef::Ioctl(io) = r
            && let Some(mut out) = self.by_cmd.get_mut(&io.cmd).and_then(Vec::pop)
        {
            io.clone_into(&mut out);
            return traces::Record::Ioctl(out);
        }
        r.to_owned()
    }
}

type Batch<'a> = Vec<Result<Recycled<'a>, traces::TraceError>>;

/// The records a decoding thread sends, as an iterator on the replaying thread.
struct ReadAhead<'a> {
    rx: std::sync::mpsc::Receiver<Batch<'a>>,
    cur: std::vec::IntoIter<Result<Recycled<'a>, traces::TraceError>>,
}

impl<'a> Iterator for ReadAhead<'a> {
    type Item = Result<Recycled<'a>, traces::TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.cur.next() {
                return Some(r);
            }
            self.cur = self.rx.recv().ok()?.into_iter();
        }
    }
}

/// What the decoding thread of [`run_reader`] does: every record of `reader` in file
/// order, exactly as `reader.records()` yields them (a damaged frame is one `Err` in its
/// place and none of its records; the scan's own problem comes last), decoded borrowed
/// from each frame's block into the records `back` returns, sent in batches. Then it
/// frees the records still coming back until the replay closes `bin`.
fn decode_ahead<'a>(
    reader: &traces::Reader,
    tx: std::sync::mpsc::SyncSender<Batch<'a>>,
    bin: &'a RecordBin,
    back: std::sync::mpsc::Receiver<Vec<traces::Record>>,
) {
    decode_records(reader, tx, bin, &back);
    // The replay holds up to a reordering window of records: they come back as it
    // issues its last calls, and are freed here meanwhile.
    for batch in back.iter() {
        drop(batch);
    }
}

fn decode_records<'a>(
    reader: &traces::Reader,
    tx: std::sync::mpsc::SyncSender<Batch<'a>>,
    bin: &'a RecordBin,
    back: &std::sync::mpsc::Receiver<Vec<traces::Record>>,
) {
    let mut batch: Batch<'a> = Vec::with_capacity(READ_AHEAD_BATCH);
    let mut spares = Spares::default();
    let mut frame: Vec<traces::Record> = Vec::new();
    let send = |batch: &mut Batch<'a>, last: bool| -> bool {
        if batch.len() < READ_AHEAD_BATCH && !last {
            return true;
        }
        let full = std::mem::replace(batch, Vec::with_capacity(READ_AHEAD_BATCH));
        // The replay stopped (strict, `--to`, an error): it dropped the receiver.
        full.is_empty() || tx.send(full).is_ok()
    };
    for f in reader.frames() {
        while let Ok(returned) = back.try_recv() {
            returned.into_iter().for_each(|r| spares.put(r));
        }
        let res = reader.with_block(f, |b| b?.for_each(|r| frame.push(spares.decode(r))));
        match res {
            Ok(()) => {
                for rec in frame.drain(..) {
                    batch.push(Ok(Recycled {
                        rec: Some(rec),
                        bin,
                    }));
                    if !send(&mut batch, false) {
                        return;
                    }
                }
            }
            Err(e) => {
                frame.drain(..).for_each(|r| spares.put(r));
                batch.push(Err(e));
                // As the plain reader's consumer does, the replay stops at an error.
                send(&mut batch, true);
                return;
            }
        }
    }
    if let Some(e) = reader.scan_problem() {
        batch.push(Err(e.clone()));
    }
    send(&mut batch, true);
}

/// Closes a [`RecordBin`] when dropped, also when the replay unwinds (the decoding
/// thread waits for it, and the scope for the thread).
struct CloseBin<'a>(&'a RecordBin);

impl Drop for CloseBin<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// [`Replayer::run`] over every record of `reader`, read and decoded ahead on a second
/// thread (batches of records through a bounded channel), so reading, CRC checks,
/// decompression and decoding overlap the replay instead of adding to it. The records
/// and the order they are replayed in are exactly those of `r.run(reader.records(), …)`;
/// a decoding error stops the replay where that would. Records are decoded from each
/// frame's block into records the replay has finished with (no allocation per record
/// once the pool is warm), and freed by the decoding thread.
pub fn run_reader<B: driver_core::Backend>(
    r: &mut Replayer<B>,
    reader: &traces::Reader,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReplayError> {
    let (back_tx, back_rx) = std::sync::mpsc::channel();
    let bin = RecordBin::new(back_tx);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_DEPTH);
        let bin = &bin;
        let close = CloseBin(bin);
        let read_ahead = s.spawn(move || decode_ahead(reader, tx, bin, back_rx));
        let records = ReadAhead {
            rx,
            cur: Vec::new().into_iter(),
        };
        // `records` (the receiver) is dropped when `run` returns, which ends the
        // decoding; closing the bin ends the thread.
        let result = r.run(records, progress);
        drop(close);
        traces::join_scoped([read_ahead]);
        result
    })
}

/// Replays a whole trace file against `backend`. Unlike [`replay_file_on_emulator`] it
/// does not refuse synthetic traces (call [`check_replayable`] first to).
pub fn replay_file<B: driver_core::Backend>(
    path: impl AsRef<std::path::Path>,
    backend: B,
    opts: ReplayOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, ReplayError> {
    let reader = traces::Reader::open(path)?;
    let mut r = Replayer::new(backend, opts);
    run_reader(&mut r, &reader, progress)?;
    Ok(r.finish())
}

/// Replays a trace file against the in-process emulator configured from the trace's
/// header ([`emulator_config`]) and returns the report: the one-call entry point (the
/// CLI's `--target emulator` and the web server use it). `opts.target` should be
/// [`Target::InProcess`]; `opts.host` picks the fake host or the recorded replies.
pub fn replay_file_on_emulator(
    path: impl AsRef<std::path::Path>,
    opts: ReplayOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, ReplayError> {
    let reader = traces::Reader::open(path)?;
    check_replayable(reader.header())?;
    let cfg = emulator_config(reader.header())?;
    let sink = Box::new(driver_core::emulator::NullSink);
    match opts.host {
        HostMode::Fake => {
            let emu = driver_core::emulator::Emulator::new(cfg, sink);
            let mut r = Replayer::new(driver_core::emulator::EmulatorBackend::new(emu), opts);
            run_reader(&mut r, &reader, progress)?;
            Ok(r.finish())
        }
        HostMode::Recorded => {
            let host = recorded_host::RecordedHost::from_records(reader.records())?;
            let check = host.check();
            let emu = driver_core::emulator::Emulator::with_host(cfg, sink, Box::new(host));
            let mut r = Replayer::new(driver_core::emulator::EmulatorBackend::new(emu), opts);
            r.set_vmbus_check(check);
            run_reader(&mut r, &reader, progress)?;
            Ok(r.finish())
        }
    }
}

#[cfg(test)]
mod tests;
