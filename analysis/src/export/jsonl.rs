//! JSON lines: one record per line, in file order, with its meaning decoded.
//!
//! Every line is an object with `kind` (`process`, `fd`, `ioctl`, `vmbus`, `signal`,
//! `dropped`, `stats`, `annotation`, `unknown`) and the record's fields under their
//! `traces` names (see `traces::record`). Additions, all stable:
//!
//! * `ioctl`: `name` (driver-core's table, or `0x…`), `status` (rendering of `ret`),
//!   `is_error`, `dur_ns`; each buffer is `{addr, role, path, len, flags, data_hex}`;
//!   `decoded` is driver-core's decoding of the call (`fields`: one tree per buffer,
//!   `notes`).
//! * `vmbus`: `dir` as a name, `command` (replies: their request's command, `REPLY ?`
//!   when the request is not in the trace), `rtt_ns` on paired replies, `bytes_hex`.
//! * `unknown`: `kind_id`, the numeric kind a newer writer used.
//!
//! Unreadable frames are skipped (their error is in the summary) and the next ones
//! written: nothing else is left out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use driver_core::decode::decode_ioctl;
use serde_json::{Map, Value, json};
use traces::{Reader, Record, RecordRef, VmbusDir};

use crate::columns::{FAM_UNPAIRED_REPLY, Progress, is_error_return, vmbus_key, vmbus_key_label};
use crate::error::{Result, io_err};
use crate::export::ExportSummary;
use crate::names;
use crate::pairing::{FramePairing, Key, Pairing, Reply};

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

fn with_kind(kind: &str, v: impl serde::Serialize) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), Value::from(kind));
    if let Ok(Value::Object(o)) = serde_json::to_value(v) {
        m.extend(o);
    }
    Value::Object(m)
}

/// Turns records into JSON lines; keeps the open VMBus requests to name replies.
#[derive(Default)]
pub struct JsonlEncoder {
    open: HashMap<(Option<u64>, u64), (u64, u64)>,
    names: HashMap<u32, String>,
}

impl JsonlEncoder {
    /// The JSON object of one record (records must come in file order).
    pub fn encode(&mut self, r: &Record) -> Value {
        match r {
            Record::Vmbus(m) => {
                let mut key = vmbus_key(m.dir, &m.bytes);
                let mut rtt = None;
                match m.dir {
                    VmbusDir::GuestToHost if !m.is_async => {
                        self.open.insert((m.channel, m.request_id), (key, m.ts));
                    }
                    VmbusDir::HostReply => {
                        if let Some((k, ts)) = self.open.remove(&(m.channel, m.request_id)) {
                            key = k;
                            rtt = Some(m.ts.saturating_sub(ts));
                        } else {
                            key = FAM_UNPAIRED_REPLY << 32;
                        }
                    }
                    _ => {}
                }
                vmbus_json(m, key, rtt)
            }
            other => other_json(other, &mut self.names),
        }
    }
}

/// The JSON object of a VMBus message whose command key and round trip are known.
fn vmbus_json(m: &traces::VmbusMessage, key: u64, rtt: Option<u64>) -> Value {
    json!({
        "kind": "vmbus", "ts": m.ts, "dir": m.dir.name(), "channel": m.channel,
        "request_id": m.request_id, "is_async": m.is_async, "status": m.status,
        "ioctl_id": m.ioctl_id, "pid": m.pid, "tid": m.tid, "len": m.len,
        "flags": m.flags, "command": vmbus_key_label(key), "rtt_ns": rtt,
        "bytes_hex": hex(&m.bytes),
    })
}

/// The JSON object of any record but a VMBus message (which needs the pairing state).
fn other_json(r: &Record, names: &mut HashMap<u32, String>) -> Value {
    match r {
        Record::Ioctl(r) => {
            let name = names
                .entry(r.cmd)
                .or_insert_with(|| names::ioctl_name(r.cmd))
                .clone();
            let d = decode_ioctl(r.cmd, r.arg, &crate::decode::buffer_views(&r.buffers));
            let buffers: Vec<Value> = r
                .buffers
                .iter()
                .map(|b| {
                    json!({"addr": b.addr, "role": b.role.name(), "path": b.path,
                               "len": b.len, "flags": b.flags, "data_hex": hex(&b.data)})
                })
                .collect();
            json!({
                "kind": "ioctl", "id": r.id, "ts_enter": r.ts_enter, "ts_exit": r.ts_exit,
                "dur_ns": r.ts_exit.saturating_sub(r.ts_enter), "pid": r.pid, "tid": r.tid,
                "fd": r.fd, "dev": r.dev, "cmd": r.cmd, "name": name, "arg": r.arg,
                "ret": r.ret, "status": names::status_label(r.cmd, r.ret),
                "is_error": is_error_return(r.ret), "buffers": buffers,
                "decoded": {"fields": d.buffers, "notes": d.notes},
            })
        }
        // Callers name VMBus messages themselves (pairing); alone, one is unpaired.
        Record::Vmbus(m) => vmbus_json(m, vmbus_key(m.dir, &m.bytes), None),
        Record::Process(p) => with_kind("process", p),
        Record::Fd(f) => {
            let mut v = with_kind("fd", f);
            let op = match f.op {
                traces::FdOp::Open => "open",
                traces::FdOp::Close => "close",
                traces::FdOp::Derived => "derived",
            };
            v["op"] = Value::from(op);
            v
        }
        Record::Signal(s) => with_kind("signal", s),
        Record::Dropped(d) => with_kind("dropped", d),
        Record::Stats(s) => with_kind("stats", s),
        Record::Annotation(a) => with_kind("annotation", a),
        Record::Unknown { kind } => json!({"kind": "unknown", "kind_id": kind}),
    }
}

/// Writes one line per record of `input` to `out`, decoding and encoding frames on
/// `threads` threads; the bytes are the same for any number of threads.
pub fn export_jsonl(
    input: &Path,
    out: &Path,
    threads: usize,
    progress: Option<Progress<'_>>,
) -> Result<ExportSummary> {
    let reader = super::open(input)?;
    let f = File::create(out).map_err(io_err(out))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut summary = ExportSummary {
        files: vec![out.to_path_buf()],
        ..ExportSummary::default()
    };
    if threads <= 1 {
        sequential(&reader, &mut w, out, &mut summary, progress)?;
    } else {
        parallel(&reader, threads, &mut w, out, &mut summary, progress)?;
    }
    if let Some(e) = reader.scan_problem() {
        summary.decode_errors.push(e.to_string());
    }
    w.flush().map_err(io_err(out))?;
    Ok(summary)
}

/// One frame after the other through a [`JsonlEncoder`]: the reference the parallel
/// path must match byte for byte.
fn sequential(
    reader: &Reader,
    w: &mut impl Write,
    out: &Path,
    summary: &mut ExportSummary,
    progress: Option<Progress<'_>>,
) -> Result<()> {
    let mut enc = JsonlEncoder::default();
    let frames = reader.frames();
    for (i, fr) in frames.iter().enumerate() {
        match reader.read_frame(fr) {
            Ok(recs) => {
                for r in &recs {
                    serde_json::to_writer(&mut *w, &enc.encode(r))
                        .map_err(std::io::Error::from)
                        .and_then(|_| w.write_all(b"\n"))
                        .map_err(io_err(out))?;
                    summary.rows += 1;
                }
            }
            Err(e) => summary.decode_errors.push(e.to_string()),
        }
        if let Some(p) = progress {
            p(i + 1, frames.len());
        }
    }
    Ok(())
}

/// A request as the JSON of its reply needs it: command key and send time.
type Req = (u64, u64);

/// Frames in parallel, in two passes. The first pairs each frame's VMBus messages on
/// its own and settles, in frame order, the replies whose request is in an earlier
/// frame ([`crate::pairing`]); the second encodes the frames in parallel with that
/// knowledge and writes them in order. Decoding twice costs less than encoding once.
fn parallel(
    reader: &Reader,
    threads: usize,
    w: &mut impl Write,
    out: &Path,
    summary: &mut ExportSummary,
    progress: Option<Progress<'_>>,
) -> Result<()> {
    let n = reader.frames().len();
    let mut pairing: Pairing<Req> = Pairing::default();
    let mut resolved: Vec<Vec<Option<Req>>> = Vec::with_capacity(n);
    let ok: std::result::Result<(), Infallible> = reader.map_blocks_in_order(
        threads,
        |_, block| {
            let mut fp = FramePairing::default();
            // A frame that fails to decode is skipped whole by the second pass, so its
            // requests must not count here either.
            let visited = block.and_then(|b| {
                b.for_each(|r| {
                    if let RecordRef::Vmbus(m) = r {
                        pair(
                            &mut fp,
                            m.dir,
                            m.is_async,
                            (m.channel, m.request_id),
                            || (vmbus_key(m.dir, m.bytes), m.ts),
                        );
                    }
                })
            });
            visited.map_or_else(|_| FramePairing::default(), |()| fp)
        },
        |_, fp| {
            resolved.push(pairing.merge(fp, |r| r));
            Ok(())
        },
    );
    let Ok(()) = ok;
    let resolved = &resolved;
    reader.map_blocks_in_order(
        threads,
        |i, block| -> std::result::Result<(Vec<u8>, u64), String> {
            let recs = block
                .and_then(|b| b.to_records())
                .map_err(|e| e.to_string())?;
            let mut fp: FramePairing<Req> = FramePairing::default();
            let mut names = HashMap::new();
            let mut buf = Vec::with_capacity(recs.len() * 512);
            for r in &recs {
                let v = match r {
                    Record::Vmbus(m) => {
                        let own = || (vmbus_key(m.dir, &m.bytes), m.ts);
                        let (key, rtt) = match pair(
                            &mut fp,
                            m.dir,
                            m.is_async,
                            (m.channel, m.request_id),
                            own,
                        ) {
                            None => (own().0, None),
                            Some(Reply::Paired(req)) => (req.0, Some(m.ts.saturating_sub(req.1))),
                            Some(Reply::Pending(k)) => match resolved[i][k] {
                                Some(req) => (req.0, Some(m.ts.saturating_sub(req.1))),
                                None => (FAM_UNPAIRED_REPLY << 32, None),
                            },
                            Some(Reply::Unpaired) => (FAM_UNPAIRED_REPLY << 32, None),
                        };
                        vmbus_json(m, key, rtt)
                    }
                    other => other_json(other, &mut names),
                };
                // Writing to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut buf, &v);
                buf.push(b'\n');
            }
            Ok((buf, recs.len() as u64))
        },
        |i, frame| {
            match frame {
                Ok((bytes, rows)) => {
                    w.write_all(&bytes).map_err(io_err(out))?;
                    summary.rows += rows;
                }
                Err(e) => summary.decode_errors.push(e),
            }
            if let Some(p) = progress {
                p(i + 1, n);
            }
            Ok(())
        },
    )
}

/// Feeds one VMBus message to a frame's pairing: `Some` for a reply (what it found),
/// `None` for anything else. `req` gives what a request is remembered by.
fn pair(
    fp: &mut FramePairing<Req>,
    dir: VmbusDir,
    is_async: bool,
    key: Key,
    req: impl FnOnce() -> Req,
) -> Option<Reply<Req>> {
    match dir {
        VmbusDir::GuestToHost if !is_async => {
            fp.request(key, req());
            None
        }
        VmbusDir::HostReply => Some(fp.reply(key)),
        _ => None,
    }
}
