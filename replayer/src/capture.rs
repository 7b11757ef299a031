//! An in-process recorder: a [`Backend`] wrapper that writes every call as the records the
//! eBPF probe would write — the argument struct at entry and exit (per the request's
//! `_IOC` direction), and every pointed-to buffer the table's pointer walk finds (in
//! buffers at entry, out buffers at exit).
//!
//! It exists so that real-device replays can be tested and benchmarked where the probe
//! cannot run (no BPF privileges, or before the probe records a device). Traces it writes
//! say so in their header (`source = instrumented`, `extra.recorder =
//! replayer::capture`). One addition over the probe's documented behaviour: the content of
//! `Pinned` buffers (KVM guest memory) is stored as a `ptr_in` buffer at the call that
//! hands it to the driver, which is what replay needs to recreate it.

use std::io;
use std::path::Path;

use driver_core::schema::{ArgKind, Effect, Loc, lookup_code, walk_pointers};
use driver_core::{Backend, InProcessMemory, UserMemory};
use traces::header::monotonic_ns;
use traces::{
    Buffer, BufferRole, CaptureSource, FdEvent, FdOp, Header, IoctlRecord, Record, Writer,
    WriterOptions,
};

use crate::error::ReplayError;

/// Records the calls made through it, then forwards them to the inner backend.
pub struct RecordingBackend<B: Backend> {
    inner: B,
    records: Vec<Record>,
    next_id: u64,
    paths: std::collections::HashMap<i32, String>,
}

impl<B: Backend> RecordingBackend<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        RecordingBackend {
            inner,
            records: Vec::new(),
            next_id: 1,
            paths: Default::default(),
        }
    }

    /// The records so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Takes the records.
    pub fn into_records(self) -> Vec<Record> {
        self.records
    }

    /// Sum of recorded ioctl durations (exit − entry), ns.
    pub fn ioctl_ns(&self) -> u64 {
        self.records
            .iter()
            .filter_map(|r| {
                if let Record::Ioctl(i) = r {
                    Some(i.ts_exit - i.ts_enter)
                } else {
                    None
                }
            })
            .sum()
    }

    /// A header labelled as this recorder's, for `device` (`/dev/kvm`, schema `kvm`).
    pub fn header(device_path: &str, schema: &str) -> Header {
        let mut h = Header::for_this_machine(CaptureSource::Instrumented);
        h.devices.push(traces::DeviceInfo {
            path: device_path.into(),
            schema: schema.into(),
            kind: "char".into(),
            ..Default::default()
        });
        h.extra.push((
            "recorder".into(),
            "replayer::capture (in-process RecordingBackend, not the eBPF probe)".into(),
        ));
        h
    }

    /// Writes the records so far to a finished trace file.
    pub fn write(&self, path: impl AsRef<Path>, header: &Header) -> Result<(), ReplayError> {
        write_trace(path, header, &self.records)
    }

    fn fd_event(&mut self, fd: i32, op: FdOp, path: String, ret: i64) {
        self.records.push(Record::Fd(FdEvent {
            ts: monotonic_ns(),
            pid: self.inner.pid(),
            tid: tid(),
            fd,
            op,
            path,
            ret,
            flags: libc::O_RDWR as u32,
            ..Default::default()
        }));
    }
}

/// Writes `records` to a finished trace file.
pub fn write_trace(
    path: impl AsRef<Path>,
    header: &Header,
    records: &[Record],
) -> Result<(), ReplayError> {
    let mut w =
        Writer::create(path, header, WriterOptions::default()).map_err(ReplayError::Write)?;
    for r in records {
        w.push(r).map_err(ReplayError::Write)?;
    }
    w.finish().map_err(ReplayError::Write)?;
    Ok(())
}

/// Test support: copies the trace at `src` to `dst` (same header) with the recorded
/// return value of its last ioctl altered (0 becomes -EINVAL, anything else 0), so that a
/// replay finds exactly that call diverging. Returns the call index altered.
pub fn write_altered_copy(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
) -> Result<u64, ReplayError> {
    let r = traces::Reader::open(src)?;
    let mut recs = r.records().collect::<Result<Vec<Record>, _>>()?;
    let calls = recs
        .iter()
        .filter(|x| matches!(x, Record::Ioctl(_)))
        .count() as u64;
    let Some(last) = recs.iter_mut().rev().find_map(|x| match x {
        Record::Ioctl(io) => Some(io),
        _ => None,
    }) else {
        return Err(ReplayError::NoSuchCall { keep: 0, calls: 0 });
    };
    last.ret = if last.ret == 0 {
        -(libc::EINVAL as i64)
    } else {
        0
    };
    write_trace(dst, r.header(), &recs)?;
    Ok(calls - 1)
}

fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

fn read_bufs(
    entry: &'static driver_core::IoctlDesc,
    arg: u64,
    sb: &[u8],
    want_out: bool,
    out: &mut Vec<Buffer>,
) {
    let mem = InProcessMemory;
    let mut read = |a: u64, l: usize| mem.read_vec(a, l).ok();
    for c in walk_pointers(entry, arg, sb, &mut read) {
        let take = if want_out {
            c.dir.is_out()
        } else {
            c.dir.is_in() || c.dir == driver_core::Dir::Pinned
        };
        if !take || c.unknown_len {
            continue;
        }
        let (data, flags) = match mem.read_vec(c.addr, c.len as usize) {
            Ok(d) => (
                d,
                if c.truncated {
                    traces::BUF_TRUNCATED
                } else {
                    0
                },
            ),
            Err(_) => (Vec::new(), traces::BUF_UNREADABLE),
        };
        out.push(Buffer {
            addr: c.addr,
            role: if want_out {
                BufferRole::PtrOut
            } else {
                BufferRole::PtrIn
            },
            path: c.path,
            len: c.requested_len,
            flags,
            data,
        });
    }
}

impl<B: Backend> Backend for RecordingBackend<B> {
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<i32> {
        let r = self.inner.open(path, flags);
        let ret = match &r {
            Ok(fd) => *fd as i64,
            Err(e) => -(e.raw_os_error().unwrap_or(libc::EIO) as i64),
        };
        let fd = ret.max(-1) as i32;
        self.paths.insert(fd, path.display().to_string());
        self.fd_event(fd, FdOp::Open, path.display().to_string(), ret);
        r
    }

    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        let entry = lookup_code(cmd);
        let ioc = driver_core::ioc::IocFields::of(cmd);
        let is_struct = entry
            .map(|e| matches!(e.arg, ArgKind::Struct))
            .unwrap_or(ioc.size > 0);
        let size = entry.map(|e| e.size()).unwrap_or(ioc.size as usize);
        let mem = InProcessMemory;
        let mut buffers = Vec::new();
        if is_struct
            && ioc.dir & driver_core::ioc::IOC_WRITE != 0
            && let Ok(sb) = mem.read_vec(arg, size)
        {
            if let Some(e) = entry {
                read_bufs(e, arg, &sb, false, &mut buffers);
            }
            buffers.insert(
                0,
                Buffer {
                    addr: arg,
                    role: BufferRole::StructIn,
                    path: String::new(),
                    len: size as u64,
                    flags: 0,
                    data: sb,
                },
            );
        }
        let ts_enter = monotonic_ns();
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let ret = unsafe { self.inner.ioctl(fd, cmd, arg) };
        let ts_exit = monotonic_ns();
        if is_struct && (ioc.dir & driver_core::ioc::IOC_READ != 0) {
            if let Ok(sb) = mem.read_vec(arg, size) {
                buffers.push(Buffer {
                    addr: arg,
                    role: BufferRole::StructOut,
                    path: String::new(),
                    len: size as u64,
                    flags: 0,
                    data: sb.clone(),
                });
                if let Some(e) = entry {
                    read_bufs(e, arg, &sb, true, &mut buffers);
                }
            }
        } else if is_struct {
            // `_IOW` requests whose pointed-to buffers the driver writes (none today) would
            // still need their out buffers; read them from the input struct.
            if let (Some(e), Some(b)) = (entry, buffers.first().cloned()) {
                read_bufs(e, arg, &b.data, true, &mut buffers);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.records.push(Record::Ioctl(IoctlRecord {
            id,
            ts_enter,
            ts_exit,
            pid: self.inner.pid(),
            tid: tid(),
            fd,
            dev: 0,
            cmd,
            arg,
            ret,
            buffers,
        }));
        if let Some(e) = entry
            && ret >= 0
            && e.handles
                .iter()
                .any(|h| h.effect == Effect::ReturnsFd && matches!(h.loc, Loc::Return))
        {
            self.fd_event(ret as i32, FdOp::Derived, String::new(), ret);
        }
        ret
    }

    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    fn close(&mut self, fd: i32) -> io::Result<()> {
        let r = self.inner.close(fd);
        self.fd_event(
            fd,
            FdOp::Close,
            self.paths.get(&fd).cloned().unwrap_or_default(),
            if r.is_ok() { 0 } else { -1 },
        );
        r
    }
}
