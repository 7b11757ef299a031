//! Reading a trace: header, frame list (from the footer index, or by scanning when the
//! footer is missing), records by iterator, by time range, or frame-parallel; salvage.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use crate::codec::visit_record;
use crate::error::{Result, TraceError};
use crate::frame::*;
use crate::header::Header;
use crate::record::Record;
use crate::view::RecordRef;

/// Joins scoped threads, passing a worker's panic on as `std::thread::scope` would.
///
/// `scope` itself returns once every thread's closure has returned, not once the thread
/// is gone: the rest of its exit (freeing its start closure, thread-local destructors)
/// runs detached, after the scope, while the caller goes on. Joining waits for that too,
/// so no thread of ours is still running, or still freeing memory, after the call that
/// spawned it has returned (LeakSanitizer in the fuzz targets saw such a thread's
/// allocation mid-exit as a leak).
pub fn join_scoped<'scope, T>(
    workers: impl IntoIterator<Item = std::thread::ScopedJoinHandle<'scope, T>>,
) {
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// How to open a trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Resynchronise after damage: search forward for the next intact frame instead of
    /// stopping, and verify every payload checksum while scanning.
    pub salvage: bool,
    /// Ignore the footer index and scan the frames (used by tests and `--salvage`).
    pub ignore_footer: bool,
}

/// Where a frame is and what the index or scan says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// Byte offset of the frame header.
    pub offset: u64,
    /// Stored payload length.
    pub payload_len: u32,
    /// Records in the frame.
    pub record_count: u32,
    /// Smallest timestamp.
    pub ts_min: u64,
    /// Largest timestamp.
    pub ts_max: u64,
}

/// A stretch of the file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRegion {
    /// First byte of the damage.
    pub offset: u64,
    /// Bytes skipped.
    pub len: u64,
    /// What was wrong, with its byte offset.
    pub reason: String,
}

/// A trace opened for reading. Cheap to share across threads (`&Reader` is `Sync`).
pub struct Reader {
    file: File,
    path: String,
    len: u64,
    header: Header,
    version: (u16, u16),
    data_start: u64,
    frames: Vec<FrameInfo>,
    footer: bool,
    footer_problem: Option<TraceError>,
    scan_problem: Option<TraceError>,
    lost: Vec<LostRegion>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("frames", &self.frames.len())
            .field("footer", &self.footer)
            .finish()
    }
}

impl Reader {
    /// Opens a trace with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
        Reader::open_with(path, ReadOptions::default())
    }

    /// Opens a trace. Fails only when the file header is unreadable; damage in the body
    /// is reported through [`Reader::scan_problem`], [`Reader::lost`] and the record
    /// iterator.
    pub fn open_with(path: impl AsRef<Path>, opts: ReadOptions) -> Result<Reader> {
        let p = path.as_ref();
        let name = p.display().to_string();
        let file = File::open(p).map_err(|e| TraceError::io(&name, e))?;
        let len = file.metadata().map_err(|e| TraceError::io(&name, e))?.len();
        let (header, version, data_start) = read_file_header(&file, len, &name)?;
        let mut r = Reader {
            file,
            path: name,
            len,
            header,
            version,
            data_start,
            frames: Vec::new(),
            footer: false,
            footer_problem: None,
            scan_problem: None,
            lost: Vec::new(),
        };
        if !opts.ignore_footer && !opts.salvage {
            match r.read_footer() {
                Ok(Some(frames)) => {
                    r.frames = frames;
                    r.footer = true;
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => r.footer_problem = Some(e),
            }
        } else if let Ok(Some(_)) = r.read_footer() {
            r.footer = true;
        }
        r.scan(opts.salvage);
        Ok(r)
    }

    /// The capture metadata.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Format version found in the file.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Path as opened.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The record frames, in file order.
    pub fn frames(&self) -> &[FrameInfo] {
        &self.frames
    }

    /// True when a valid footer index was found (the recorder finished cleanly).
    pub fn has_footer(&self) -> bool {
        self.footer
    }

    /// Why the footer index could not be used, if it was present but damaged.
    pub fn footer_problem(&self) -> Option<&TraceError> {
        self.footer_problem.as_ref()
    }

    /// Why scanning stopped before the end of the file (no footer and a damaged or
    /// truncated frame), if it did.
    pub fn scan_problem(&self) -> Option<&TraceError> {
        self.scan_problem.as_ref()
    }

    /// Regions skipped in salvage mode.
    pub fn lost(&self) -> &[LostRegion] {
        &self.lost
    }

    fn read_footer(&self) -> Result<Option<Vec<FrameInfo>>> {
        if self.len < self.data_start + (FRAME_HEADER_LEN + TRAILER_LEN) as u64 {
            return Ok(None);
        }
        let mut trailer = [0u8; TRAILER_LEN];
        let toff = self.len - TRAILER_LEN as u64;
        self.read_at(&mut trailer, toff)?;
        if trailer[8..16] != TRAILER_MAGIC {
            return Ok(None);
        }
        let ioff = u64::from_le_bytes(trailer[0..8].try_into().unwrap());
        let bad = |reason: String| TraceError::CorruptIndex {
            offset: ioff,
            reason,
        };
        if ioff < self.data_start || ioff + FRAME_HEADER_LEN as u64 > toff {
            return Err(TraceError::CorruptIndex {
                offset: toff,
                reason: format!("trailer points to byte {ioff}, outside the frame area"),
            });
        }
        let (h, raw) = self.read_frame_raw(ioff).map_err(|e| bad(e.to_string()))?;
        if h.frame_type != FRAME_INDEX {
            return Err(bad(format!("frame type {} is not an index", h.frame_type)));
        }
        if ioff + h.total_len() != toff {
            return Err(bad("index frame does not end at the trailer".into()));
        }
        let idx: FooterIndex =
            rmp_serde::from_slice(&raw).map_err(|e| bad(format!("undecodable index: {e}")))?;
        let mut expect = self.data_start;
        let mut frames = Vec::with_capacity(idx.frames.len());
        for (i, e) in idx.frames.iter().enumerate() {
            if e.offset != expect {
                return Err(bad(format!(
                    "index entry {i} says byte {}, expected {expect}",
                    e.offset
                )));
            }
            expect = e.offset + FRAME_HEADER_LEN as u64 + e.payload_len as u64;
            frames.push(FrameInfo {
                offset: e.offset,
                payload_len: e.payload_len,
                record_count: e.record_count,
                ts_min: e.ts_min,
                ts_max: e.ts_max,
            });
        }
        if expect != ioff {
            return Err(bad(format!(
                "indexed frames end at byte {expect}, the index starts at {ioff}"
            )));
        }
        Ok(Some(frames))
    }

    fn scan(&mut self, salvage: bool) {
        let mut pos = self.data_start;
        while pos < self.len {
            match self.probe_frame(pos, salvage) {
                Ok(Some(h)) => {
                    self.frames.push(FrameInfo {
                        offset: pos,
                        payload_len: h.payload_len,
                        record_count: h.record_count,
                        ts_min: h.ts_min,
                        ts_max: h.ts_max,
                    });
                    pos += h.total_len();
                }
                Ok(None) => return, // the footer index: end of the record frames
                Err(e) => {
                    if !salvage {
                        self.scan_problem = Some(e);
                        return;
                    }
                    let next = self.resync(pos + 1);
                    self.lost.push(LostRegion {
                        offset: pos,
                        len: next - pos,
                        reason: e.to_string(),
                    });
                    pos = next;
                }
            }
        }
    }

    /// Checks the frame at `pos`: `Ok(None)` for the index frame (end of records).
    fn probe_frame(&self, pos: u64, verify_payload: bool) -> Result<Option<FrameHeader>> {
        let avail = self.len - pos;
        if avail < FRAME_HEADER_LEN as u64 {
            return Err(TraceError::Truncated {
                offset: pos,
                needed: FRAME_HEADER_LEN as u64,
                available: avail,
            });
        }
        let mut hb = [0u8; FRAME_HEADER_LEN];
        self.read_at(&mut hb, pos)?;
        let h = FrameHeader::decode(&hb).map_err(|reason| TraceError::CorruptFrame {
            offset: pos,
            reason,
        })?;
        if h.total_len() > avail {
            return Err(TraceError::Truncated {
                offset: pos,
                needed: h.total_len(),
                available: avail,
            });
        }
        if h.frame_type == FRAME_INDEX {
            return Ok(None);
        }
        if h.frame_type != FRAME_RECORDS {
            return Err(TraceError::CorruptFrame {
                offset: pos,
                reason: format!("unknown frame type {}", h.frame_type),
            });
        }
        if verify_payload {
            with_scratch(|sc| self.load_frame(pos, sc))?;
        }
        Ok(Some(h))
    }

    /// First offset ≥ `from` holding an intact frame (or the end of the file).
    fn resync(&self, from: u64) -> u64 {
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK + 3];
        let mut base = from;
        while base < self.len {
            let n = ((self.len - base) as usize).min(buf.len());
            if self.read_at(&mut buf[..n], base).is_err() {
                return self.len;
            }
            for i in 0..n.saturating_sub(3) {
                if buf[i..i + 4] == FRAME_MAGIC {
                    let at = base + i as u64;
                    if self.probe_frame(at, true).is_ok() {
                        return at;
                    }
                }
            }
            base += CHUNK as u64;
        }
        self.len
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| TraceError::io(&self.path, e))
    }

    /// Reads, checks and decompresses the frame at `offset` (an owned copy of the block).
    fn read_frame_raw(&self, offset: u64) -> Result<(FrameHeader, Vec<u8>)> {
        with_scratch(|sc| {
            let h = self.load_frame(offset, sc)?;
            let raw = if h.codec == CODEC_NONE {
                std::mem::take(&mut sc.payload)
            } else {
                sc.raw.clone()
            };
            Ok((h, raw))
        })
    }

    /// Reads, checks and decompresses the frame at `offset` into `sc`: the block is in
    /// `sc.payload` for stored frames and in `sc.raw` for compressed ones.
    fn load_frame(&self, offset: u64, sc: &mut Scratch) -> Result<FrameHeader> {
        let corrupt = |reason: String| TraceError::CorruptFrame { offset, reason };
        let avail = self.len.saturating_sub(offset);
        if avail < FRAME_HEADER_LEN as u64 {
            return Err(TraceError::Truncated {
                offset,
                needed: FRAME_HEADER_LEN as u64,
                available: avail,
            });
        }
        let mut hb = [0u8; FRAME_HEADER_LEN];
        self.read_at(&mut hb, offset)?;
        let h = FrameHeader::decode(&hb).map_err(corrupt)?;
        if h.total_len() > avail {
            return Err(TraceError::Truncated {
                offset,
                needed: h.total_len(),
                available: avail,
            });
        }
        sc.payload.resize(h.payload_len as usize, 0);
        self.read_at(&mut sc.payload, offset + FRAME_HEADER_LEN as u64)?;
        let crc = crc32c::crc32c(&sc.payload);
        if crc != h.payload_crc {
            return Err(corrupt(format!(
                "payload checksum mismatch (stored {:#010x}, computed {crc:#010x}; payload is \
                 bytes {}..{})",
                h.payload_crc,
                offset + FRAME_HEADER_LEN as u64,
                offset + h.total_len()
            )));
        }
        if h.codec != CODEC_NONE {
            // One decompression context and output buffer per thread, reused frame after
            // frame: a fresh context and a fresh 256 KiB allocation per frame cost as much
            // as decompressing it.
            sc.raw.clear();
            sc.raw.reserve(h.raw_len as usize);
            let dctx = match &mut sc.dctx {
                Some(d) => d,
                None => sc.dctx.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| corrupt(format!("zstd context: {e}")))?,
                ),
            };
            dctx.decompress_to_buffer(&sc.payload, &mut sc.raw)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            if sc.raw.len() != h.raw_len as usize {
                return Err(corrupt(format!(
                    "block decompressed to {} bytes, header says {}",
                    sc.raw.len(),
                    h.raw_len
                )));
            }
        }
        Ok(h)
    }

    /// Reads a record frame into `sc` and checks it against the frame list.
    fn load_block<'s>(&self, frame: &FrameInfo, sc: &'s mut Scratch) -> Result<Block<'s>> {
        let h = self.load_frame(frame.offset, sc)?;
        if h.frame_type != FRAME_RECORDS || h.record_count != frame.record_count {
            return Err(TraceError::CorruptFrame {
                offset: frame.offset,
                reason: "frame header disagrees with the footer index".into(),
            });
        }
        Ok(Block {
            offset: frame.offset,
            count: h.record_count,
            raw: if h.codec == CODEC_NONE {
                &sc.payload
            } else {
                &sc.raw
            },
        })
    }

    /// Reads and decodes every record of a frame.
    pub fn read_frame(&self, frame: &FrameInfo) -> Result<Vec<Record>> {
        self.with_block(frame, |b| b?.to_records())
    }

    /// Reads a frame and lends its decompressed block to `f`, which can visit the records
    /// without copying them ([`Block::for_each`]). The buffers and the zstd context are
    /// the calling thread's, reused from call to call.
    pub fn with_block<R>(&self, frame: &FrameInfo, f: impl FnOnce(Result<Block<'_>>) -> R) -> R {
        with_scratch(|sc| f(self.load_block(frame, sc)))
    }

    /// Every record in file order. A damaged frame yields one `Err` in its place and
    /// the iteration goes on with the next frame; a scan that stopped early yields its
    /// error last.
    pub fn records(&self) -> Records<'_> {
        Records {
            reader: self,
            frames: self.frames.iter().collect(),
            next_frame: 0,
            buf: Vec::new().into_iter(),
            tail_error: self.scan_problem.clone(),
            range: None,
        }
    }

    /// Records whose timestamp lies in `[start, end]` (ns), reading only the frames whose
    /// time range overlaps.
    pub fn records_between(&self, start: u64, end: u64) -> Records<'_> {
        Records {
            reader: self,
            frames: self
                .frames
                .iter()
                .filter(|f| f.ts_max >= start && f.ts_min <= end)
                .collect(),
            next_frame: 0,
            buf: Vec::new().into_iter(),
            tail_error: None,
            range: Some((start, end)),
        }
    }

    /// Decodes frames on `threads` threads and maps each with `f` (frame index, records
    /// or error); results come back in frame order.
    pub fn map_frames<T, F>(&self, threads: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize, Result<Vec<Record>>) -> T + Sync,
    {
        self.map_blocks(threads, |i, b| f(i, b.and_then(|b| b.to_records())))
    }

    /// Reads frames on `threads` threads and maps each block with `f` (frame index, block
    /// or error); results come back in frame order. The zero-copy form of
    /// [`Reader::map_frames`].
    pub fn map_blocks<T, F>(&self, threads: usize, f: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize, Result<Block<'_>>) -> T + Sync,
    {
        let n = self.frames.len();
        let threads = threads.clamp(1, n.max(1));
        if threads == 1 {
            return (self.frames.iter().enumerate())
                .map(|(i, fr)| self.with_block(fr, |b| f(i, b)))
                .collect();
        }
        let next = AtomicUsize::new(0);
        let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let v = self.with_block(&self.frames[i], |b| f(i, b));
                            out.lock().unwrap()[i] = Some(v);
                        }
                    })
                })
                .collect();
            join_scoped(workers);
        });
        out.into_inner()
            .unwrap()
            .into_iter()
            .map(|v| v.expect("every frame mapped"))
            .collect()
    }

    /// Maps blocks on `threads` threads like [`Reader::map_blocks`], but hands each result
    /// to `sink` on the calling thread in frame order as soon as its predecessors are in,
    /// holding at most a few results per thread: for outputs too large to collect (JSON
    /// lines) and for merges that must run in file order. The first error `sink` returns
    /// stops the work and is returned.
    pub fn map_blocks_in_order<T, E, F, S>(
        &self,
        threads: usize,
        f: F,
        mut sink: S,
    ) -> Result<(), E>
    where
        T: Send,
        F: Fn(usize, Result<Block<'_>>) -> T + Sync,
        S: FnMut(usize, T) -> Result<(), E>,
    {
        let n = self.frames.len();
        let threads = threads.clamp(1, n.max(1));
        if threads == 1 {
            for (i, fr) in self.frames.iter().enumerate() {
                let v = self.with_block(fr, |b| f(i, b));
                sink(i, v)?;
            }
            return Ok(());
        }
        // Workers take frame indices in order and wait while they are more than `window`
        // ahead of the sink: the frame the sink waits for is never held back, so there is
        // always progress, and memory stays bounded.
        let window = 4 * threads;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let delivered = (Mutex::new(0usize), Condvar::new());
        let (tx, rx) = std::sync::mpsc::channel::<(usize, T)>();
        std::thread::scope(|s| {
            let mut workers = Vec::with_capacity(threads);
            for _ in 0..threads {
                let tx = tx.clone();
                let (next, stop, delivered, f) = (&next, &stop, &delivered, &f);
                workers.push(s.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        {
                            let (lock, cv) = delivered;
                            let mut d = lock.lock().unwrap();
                            while i >= *d + window && !stop.load(Ordering::Relaxed) {
                                d = cv.wait(d).unwrap();
                            }
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let v = self.with_block(&self.frames[i], |b| f(i, b));
                        if tx.send((i, v)).is_err() {
                            break;
                        }
                    }
                }));
            }
            drop(tx);
            let mut pending = std::collections::BTreeMap::new();
            let mut want = 0usize;
            let mut result = Ok(());
            for (i, v) in rx {
                pending.insert(i, v);
                while let Some(v) = pending.remove(&want) {
                    if result.is_ok() {
                        result = sink(want, v);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    want += 1;
                    let (lock, cv) = &delivered;
                    *lock.lock().unwrap() = want;
                    cv.notify_all();
                }
            }
            join_scoped(workers);
            result
        })
    }

    /// Writes every intact frame to `out` as a new, finished trace (same header, new
    /// footer index). Open the reader with `salvage: true` so damaged regions are skipped.
    pub fn salvage_to(&self, out: impl AsRef<Path>) -> Result<SalvageReport> {
        let name = out.as_ref().display().to_string();
        let mut f = std::io::BufWriter::new(
            File::create(out.as_ref()).map_err(|e| TraceError::io(&name, e))?,
        );
        let io = |e| TraceError::io(&name, e);
        let mut head = vec![0u8; self.data_start as usize];
        self.read_at(&mut head, 0)?;
        f.write_all(&head).map_err(io)?;
        let mut report = SalvageReport {
            lost: self.lost.clone(),
            ..SalvageReport::default()
        };
        let mut index = FooterIndex::default();
        let mut pos = self.data_start;
        for fr in &self.frames {
            // Decoding proves the frame is usable, not only that its checksum matches.
            match self.read_frame(fr) {
                Ok(recs) => {
                    let mut bytes = vec![0u8; FRAME_HEADER_LEN + fr.payload_len as usize];
                    self.read_at(&mut bytes, fr.offset)?;
                    f.write_all(&bytes).map_err(io)?;
                    let mut kinds = std::collections::BTreeMap::<u16, u32>::new();
                    for r in &recs {
                        let k = r.kind().map(|k| k as u16).unwrap_or(0);
                        *kinds.entry(k).or_default() += 1;
                    }
                    index.frames.push(IndexEntry {
                        offset: pos,
                        payload_len: fr.payload_len,
                        record_count: fr.record_count,
                        ts_min: fr.ts_min,
                        ts_max: fr.ts_max,
                        kind_counts: kinds.into_iter().collect(),
                    });
                    pos += bytes.len() as u64;
                    report.frames_recovered += 1;
                    report.records_recovered += recs.len() as u64;
                }
                Err(e) => report.lost.push(LostRegion {
                    offset: fr.offset,
                    len: FRAME_HEADER_LEN as u64 + fr.payload_len as u64,
                    reason: e.to_string(),
                }),
            }
        }
        let raw = rmp_serde::to_vec(&index).map_err(|e| TraceError::Writer(e.to_string()))?;
        let hdr = FrameHeader {
            frame_type: FRAME_INDEX,
            codec: CODEC_NONE,
            payload_len: raw.len() as u32,
            raw_len: raw.len() as u32,
            record_count: index.frames.len() as u32,
            payload_crc: crc32c::crc32c(&raw),
            ts_min: index.frames.iter().map(|f| f.ts_min).min().unwrap_or(0),
            ts_max: index.frames.iter().map(|f| f.ts_max).max().unwrap_or(0),
        };
        let mut trailer = [0u8; TRAILER_LEN];
        trailer[0..8].copy_from_slice(&pos.to_le_bytes());
        trailer[8..16].copy_from_slice(&TRAILER_MAGIC);
        f.write_all(&hdr.encode())
            .and_then(|_| f.write_all(&raw))
            .and_then(|_| f.write_all(&trailer))
            .and_then(|_| f.flush())
            .map_err(io)?;
        report.lost.sort_by_key(|l| l.offset);
        report.bytes_lost = report.lost.iter().map(|l| l.len).sum();
        Ok(report)
    }
}

/// The decompressed block of one record frame, lent by [`Reader::with_block`] and
/// [`Reader::map_blocks`].
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    offset: u64,
    count: u32,
    raw: &'a [u8],
}

impl<'a> Block<'a> {
    /// A block over `raw` holding `count` records (for tests and tools that build blocks
    /// themselves); `offset` only labels errors.
    pub fn new(offset: u64, count: u32, raw: &'a [u8]) -> Block<'a> {
        Block { offset, count, raw }
    }

    /// Byte offset of the frame in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Records the frame header announces.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// The decompressed MessagePack bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Decodes the records in order and hands each to `f`, borrowed from the block.
    /// A record that cannot be decoded, or bytes left after the last one, end the visit
    /// with an error naming the frame and the record (the records before it have been
    /// visited: a caller that must not keep part of a frame discards what it built).
    pub fn for_each(&self, mut f: impl FnMut(RecordRef<'_>)) -> Result<()> {
        let mut pos = 0usize;
        for index in 0..self.count {
            visit_record(self.raw, &mut pos, &mut f).map_err(|reason| TraceError::Record {
                frame_offset: self.offset,
                index,
                reason,
            })?;
        }
        if pos != self.raw.len() {
            return Err(TraceError::CorruptFrame {
                offset: self.offset,
                reason: format!(
                    "{} bytes left after the frame's {} records",
                    self.raw.len() - pos,
                    self.count
                ),
            });
        }
        Ok(())
    }

    /// Decodes every record, owned.
    pub fn to_records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(self.count as usize);
        self.for_each(|r| out.push(r.to_owned()))?;
        Ok(out)
    }
}

/// Per-thread reusable read buffers and zstd context.
#[derive(Default)]
struct Scratch {
    payload: Vec<u8>,
    raw: Vec<u8>,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

/// Buffers kept between calls up to this size; a rare huge frame's are freed after use.
const SCRATCH_KEEP: usize = 16 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if `f` re-enters).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut sc) => {
            let r = f(&mut sc);
            let sc = &mut *sc;
            for b in [&mut sc.payload, &mut sc.raw] {
                if b.capacity() > SCRATCH_KEEP {
                    *b = Vec::new();
                }
            }
            r
        }
        Err(_) => f(&mut Scratch::default()),
    })
}

/// What [`Reader::salvage_to`] recovered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Intact frames copied.
    pub frames_recovered: u64,
    /// Records in them.
    pub records_recovered: u64,
    /// Damaged regions skipped.
    pub lost: Vec<LostRegion>,
    /// Bytes skipped in all.
    pub bytes_lost: u64,
}

/// Iterator over records; see [`Reader::records`].
pub struct Records<'a> {
    reader: &'a Reader,
    frames: Vec<&'a FrameInfo>,
    next_frame: usize,
    buf: std::vec::IntoIter<Record>,
    tail_error: Option<TraceError>,
    range: Option<(u64, u64)>,
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            for r in self.buf.by_ref() {
                match self.range {
                    Some((a, b)) => {
                        let t = r.ts().unwrap_or(0);
                        if t >= a && t <= b {
                            return Some(Ok(r));
                        }
                    }
                    None => return Some(Ok(r)),
                }
            }
            if self.next_frame < self.frames.len() {
                let f = self.frames[self.next_frame];
                self.next_frame += 1;
                match self.reader.read_frame(f) {
                    Ok(recs) => self.buf = recs.into_iter(),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            return self.tail_error.take().map(Err);
        }
    }
}

fn read_file_header(file: &File, len: u64, name: &str) -> Result<(Header, (u16, u16), u64)> {
    let io = |e| TraceError::io(name, e);
    if len < FILE_PREFIX_LEN as u64 {
        let mut b = vec![0u8; len as usize];
        file.read_exact_at(&mut b, 0).map_err(io)?;
        if !FILE_MAGIC.starts_with(&b[..b.len().min(8)]) {
            return Err(bad_magic(&b));
        }
        return Err(TraceError::CorruptHeader {
            offset: len,
            reason: format!(
                "file is {len} bytes, shorter than the {FILE_PREFIX_LEN}-byte header prefix"
            ),
        });
    }
    let mut p = [0u8; FILE_PREFIX_LEN];
    file.read_exact_at(&mut p, 0).map_err(io)?;
    if p[0..8] != FILE_MAGIC {
        return Err(bad_magic(&p[0..8]));
    }
    let major = u16::from_le_bytes([p[8], p[9]]);
    let minor = u16::from_le_bytes([p[10], p[11]]);
    if major != FORMAT_MAJOR {
        return Err(TraceError::Version {
            found_major: major,
            found_minor: minor,
            expected_major: FORMAT_MAJOR,
            hint: if major > FORMAT_MAJOR {
                "the file was written by a newer dxtrace; upgrade dxtrace to read it"
            } else {
                "the file was written by an older, incompatible dxtrace; read it with that \
                 version and re-export"
            },
        });
    }
    let hlen = u32::from_le_bytes(p[12..16].try_into().unwrap());
    let hcrc = u32::from_le_bytes(p[16..20].try_into().unwrap());
    if hlen > MAX_HEADER_LEN {
        return Err(TraceError::CorruptHeader {
            offset: 12,
            reason: format!("metadata length {hlen} exceeds the {MAX_HEADER_LEN} limit"),
        });
    }
    let end = FILE_PREFIX_LEN as u64 + hlen as u64;
    if end > len {
        return Err(TraceError::CorruptHeader {
            offset: FILE_PREFIX_LEN as u64,
            reason: format!(
                "metadata needs {hlen} bytes, the file has {} left",
                len - 24
            ),
        });
    }
    let mut meta = vec![0u8; hlen as usize];
    file.read_exact_at(&mut meta, FILE_PREFIX_LEN as u64)
        .map_err(io)?;
    let crc = crc32c::crc32c(&meta);
    if crc != hcrc {
        return Err(TraceError::CorruptHeader {
            offset: FILE_PREFIX_LEN as u64,
            reason: format!(
                "metadata checksum mismatch (stored {hcrc:#010x}, computed {crc:#010x})"
            ),
        });
    }
    let header: Header = rmp_serde::from_slice(&meta).map_err(|e| TraceError::CorruptHeader {
        offset: FILE_PREFIX_LEN as u64,
        reason: format!("undecodable metadata: {e}"),
    })?;
    Ok((header, (major, minor), end))
}

fn bad_magic(found: &[u8]) -> TraceError {
    TraceError::BadMagic {
        expected: format!("{:02x?}", FILE_MAGIC),
        found: format!("{found:02x?}"),
    }
}
