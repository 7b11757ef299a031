//! Encoding and decoding of records inside a frame's decompressed block.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::msgpack::{self, WalkError};
use crate::record::*;
use crate::view::{self, RecordRef};

/// Appends `[kind, body]` for one record to `out`.
pub fn encode_record(out: &mut Vec<u8>, rec: &Record) -> Result<(), String> {
    let kind = match rec.kind() {
        Some(k) => k as u16,
        None => return Err("cannot write a record of unknown kind".into()),
    };
    msgpack::write_array_len(out, 2);
    rmp::encode::write_uint(out, kind as u64).map_err(|e| e.to_string())?;
    let r = match rec {
        Record::Process(r) => body(out, r),
        Record::Fd(r) => body(out, r),
        // The hot kinds are written by hand with the same rmp calls serde would make,
        // so the bytes are identical (a test checks) at a fraction of the cost.
        Record::Ioctl(r) => {
            put_ioctl(out, r);
            Ok(())
        }
        Record::Vmbus(r) => {
            put_vmbus(out, r);
            Ok(())
        }
        Record::Signal(r) => body(out, r),
        Record::Dropped(r) => body(out, r),
        Record::Stats(r) => body(out, r),
        Record::Annotation(r) => body(out, r),
        Record::Unknown { .. } => unreachable!("checked above"),
    };
    r.map_err(|e| e.to_string())
}

// Writing to a Vec<u8> cannot fail: the `let _ =` below discard the `Result`s that rmp's
// generic writer signatures force on us.
fn put_ioctl(out: &mut Vec<u8>, r: &IoctlRecord) {
    use rmp::encode::*;
    msgpack::write_array_len(out, RecordKind::Ioctl.field_count() as u32);
    let _ = write_uint(out, r.id);
    let _ = write_uint(out, r.ts_enter);
    let _ = write_uint(out, r.ts_exit);
    let _ = write_uint(out, r.pid as u64);
    let _ = write_uint(out, r.tid as u64);
    let _ = write_sint(out, r.fd as i64);
    let _ = write_uint(out, r.dev);
    let _ = write_uint(out, r.cmd as u64);
    let _ = write_uint(out, r.arg);
    let _ = write_sint(out, r.ret);
    msgpack::write_array_len(out, r.buffers.len() as u32);
    for b in &r.buffers {
        msgpack::write_array_len(out, 6);
        let _ = write_uint(out, b.addr);
        let _ = write_uint(out, u8::from(b.role) as u64);
        let _ = write_str(out, &b.path);
        let _ = write_uint(out, b.len);
        let _ = write_uint(out, b.flags as u64);
        let _ = write_bin(out, &b.data);
    }
}

fn put_vmbus(out: &mut Vec<u8>, r: &VmbusMessage) {
    use rmp::encode::*;
    msgpack::write_array_len(out, RecordKind::Vmbus.field_count() as u32);
    let _ = write_uint(out, r.ts);
    let _ = write_uint(out, u8::from(r.dir) as u64);
    if let Some(v) = r.channel {
        let _ = write_uint(out, v);
    } else {
        let _ = write_nil(out);
    }
    let _ = write_uint(out, r.request_id);
    let _ = write_bool(out, r.is_async);
    if let Some(v) = r.status {
        let _ = write_sint(out, v);
    } else {
        let _ = write_nil(out);
    }
    if let Some(v) = r.ioctl_id {
        let _ = write_uint(out, v);
    } else {
        let _ = write_nil(out);
    }
    let _ = write_uint(out, r.pid as u64);
    let _ = write_uint(out, r.tid as u64);
    let _ = write_uint(out, r.len);
    let _ = write_uint(out, r.flags as u64);
    let _ = write_bin(out, &r.bytes);
}

fn body<T: Serialize>(out: &mut Vec<u8>, v: &T) -> Result<(), rmp_serde::encode::Error> {
    // Struct-as-array (rmp-serde's default): compact, and the field order is the format.
    v.serialize(&mut rmp_serde::Serializer::new(out))
}

/// Decodes the record at `buf[*pos..]`, advancing `pos`.
pub fn decode_record(buf: &[u8], pos: &mut usize) -> Result<Record, String> {
    visit_record(buf, pos, |r| r.to_owned())
}

/// Decodes the record at `buf[*pos..]` without copying its bytes, advancing `pos`, and
/// hands it to `f`. Ioctl and VMBus records borrow from `buf`; other kinds are decoded
/// owned and lent to `f`.
pub fn visit_record<R>(
    buf: &[u8],
    pos: &mut usize,
    f: impl FnOnce(RecordRef<'_>) -> R,
) -> Result<R, String> {
    let n = msgpack::read_array_len(buf, pos).map_err(walk)?;
    if n < 2 {
        return Err(format!("record envelope has {n} elements, expected 2"));
    }
    let kind = msgpack::read_uint(buf, pos).map_err(walk)?;
    let kind = u16::try_from(kind).map_err(|_| format!("record kind {kind} out of range"))?;
    let body_start = *pos;
    let Some(k) = RecordKind::from_u16(kind) else {
        *pos = body_start + msgpack::value_len(&buf[body_start..]).map_err(walk)?;
        skip_reserved(buf, pos, n)?;
        return Ok(f(RecordRef::Other(&Record::Unknown { kind })));
    };
    // Hand-written fast paths for the hot kinds; serde handles everything else and
    // produces the precise error when the fast path gives up.
    match k {
        RecordKind::Ioctl => {
            if let Some((r, p)) = view::ioctl_ref(buf, *pos) {
                *pos = p;
                skip_reserved(buf, pos, n)?;
                return Ok(f(RecordRef::Ioctl(r)));
            }
        }
        RecordKind::Vmbus => {
            if let Some((r, p)) = view::vmbus_ref(buf, *pos) {
                *pos = p;
                skip_reserved(buf, pos, n)?;
                return Ok(f(RecordRef::Vmbus(r)));
            }
        }
        _ => {}
    }
    let rec = match k {
        RecordKind::Process => Record::Process(decode_body(k, buf, pos)?),
        RecordKind::Fd => Record::Fd(decode_body(k, buf, pos)?),
        RecordKind::Ioctl => Record::Ioctl(decode_body(k, buf, pos)?),
        RecordKind::Vmbus => Record::Vmbus(decode_body(k, buf, pos)?),
        RecordKind::Signal => Record::Signal(decode_body(k, buf, pos)?),
        RecordKind::Dropped => Record::Dropped(decode_body(k, buf, pos)?),
        RecordKind::Stats => Record::Stats(decode_body(k, buf, pos)?),
        RecordKind::Annotation => Record::Annotation(decode_body(k, buf, pos)?),
    };
    skip_reserved(buf, pos, n)?;
    Ok(match &rec {
        Record::Ioctl(r) => f(RecordRef::Ioctl(r.into())),
        Record::Vmbus(m) => f(RecordRef::Vmbus(m.into())),
        other => f(RecordRef::Other(other)),
    })
}

fn walk(e: WalkError) -> String {
    format!("malformed MessagePack: {}", e.0)
}

/// Envelope elements after the body are reserved for future use: skip them.
fn skip_reserved(buf: &[u8], pos: &mut usize, n: u32) -> Result<(), String> {
    for _ in 2..n {
        msgpack::skip(buf, pos, 0).map_err(walk)?;
    }
    Ok(())
}

/// Decodes the body at `buf[*pos..]`, advancing `pos`; tolerates extra trailing fields
/// written by a newer minor version.
fn decode_body<T: DeserializeOwned>(
    kind: RecordKind,
    buf: &[u8],
    pos: &mut usize,
) -> Result<T, String> {
    let body = &buf[*pos..];
    let mut p = 0;
    let n = msgpack::read_array_len(body, &mut p).map_err(walk)? as usize;
    let known = kind.field_count();
    let bad = |e: rmp_serde::decode::Error| format!("bad {} record: {e}", kind.name());
    if n <= known {
        // Fast path: one pass, the deserializer tells how much it consumed.
        let mut rd: &[u8] = body;
        let v = T::deserialize(&mut rmp_serde::Deserializer::new(&mut rd)).map_err(bad)?;
        *pos += body.len() - rd.len();
        return Ok(v);
    }
    // Rebuild the array with only the fields this version knows. Rare: only traces from
    // a newer writer take this path.
    let mut trimmed = Vec::with_capacity(body.len());
    msgpack::write_array_len(&mut trimmed, known as u32);
    let first = p;
    for _ in 0..known {
        msgpack::skip(body, &mut p, 0).map_err(walk)?;
    }
    trimmed.extend_from_slice(&body[first..p]);
    for _ in known..n {
        msgpack::skip(body, &mut p, 0).map_err(walk)?;
    }
    *pos += p;
    rmp_serde::from_slice::<T>(&trimmed).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::Process(ProcessInfo {
                ts: 1,
                pid: 2,
                ppid: 1,
                comm: "x".into(),
                exe: "/bin/x".into(),
                start_ns: 5,
                cmdline: vec!["x".into(), "-v".into()],
            }),
            Record::Fd(FdEvent {
                ts: 1,
                pid: 2,
                tid: 3,
                fd: 4,
                op: FdOp::Derived,
                path: "/dev/kvm".into(),
                dev: 10 << 8 | 232,
                ino: 9,
                flags: 2,
                ret: 4,
            }),
            Record::Ioctl(IoctlRecord {
                id: 7,
                ts_enter: 10,
                ts_exit: 20,
                pid: 2,
                tid: 3,
                fd: 4,
                dev: 1,
                cmd: 0xC0484706,
                arg: 0x7fff_0000,
                ret: 0xC000000D,
                buffers: vec![Buffer {
                    addr: 0x7fff_0000,
                    role: BufferRole::PtrOut,
                    path: "allocation_info[0].priv_drv_data".into(),
                    len: 100,
                    flags: BUF_TRUNCATED,
                    data: vec![1, 2, 3],
                }],
            }),
            Record::Vmbus(VmbusMessage {
                ts: 11,
                dir: VmbusDir::HostReply,
                channel: Some(0x1234_5678_9abc),
                request_id: 3,
                is_async: false,
                status: Some(-22),
                ioctl_id: Some(7),
                pid: 2,
                tid: 3,
                len: 4,
                flags: 0,
                bytes: vec![0, 0, 0, 0],
            }),
            Record::Signal(HostSignal {
                ts: 12,
                event_id: 2,
                pid: 2,
                fd: 9,
                source: "cpu_event".into(),
                detail: String::new(),
            }),
            Record::Dropped(Dropped {
                ts: 13,
                count: 5,
                reason: "ringbuf_full".into(),
                cpu: Some(1),
            }),
            Record::Stats(CaptureStats {
                ts: 14,
                counters: vec![("events".into(), 10)],
            }),
            Record::Annotation(Annotation {
                ts: 15,
                pid: 0,
                tid: 0,
                key: "fault".into(),
                text: "device removed".into(),
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_field_counts_match() {
        for rec in samples() {
            let mut buf = Vec::new();
            encode_record(&mut buf, &rec).unwrap();
            let mut pos = 0;
            let back = decode_record(&buf, &mut pos).unwrap();
            assert_eq!(back, rec);
            assert_eq!(pos, buf.len());
            // field_count() must equal what the writer emits, or forward compatibility breaks
            let mut p = 1; // skip envelope header
            msgpack::read_uint(&buf, &mut p).unwrap();
            let n = msgpack::read_array_len(&buf, &mut p).unwrap() as usize;
            assert_eq!(n, rec.kind().unwrap().field_count(), "{}", rec.kind_name());
        }
    }

    #[test]
    fn unknown_kinds_are_skipped_and_extra_fields_ignored() {
        let mut buf = Vec::new();
        // kind 999 with an arbitrary body
        rmp_serde::encode::write(&mut buf, &(999u16, ("future", vec![1u8, 2, 3]))).unwrap();
        // a dropped record written by a "newer" writer with two extra trailing fields
        rmp_serde::encode::write(
            &mut buf,
            &(
                6u16,
                (13u64, 5u64, "ringbuf_full", Some(1u32), "extra", [9u8; 3]),
            ),
        )
        .unwrap();
        // and an older writer's dropped record without the trailing `cpu` field
        rmp_serde::encode::write(&mut buf, &(6u16, (13u64, 5u64, "x"))).unwrap();
        let mut pos = 0;
        assert_eq!(
            decode_record(&buf, &mut pos).unwrap(),
            Record::Unknown { kind: 999 }
        );
        match decode_record(&buf, &mut pos).unwrap() {
            Record::Dropped(d) => assert_eq!((d.count, d.cpu), (5, Some(1))),
            other => panic!("expected dropped, got {other:?}"),
        }
        match decode_record(&buf, &mut pos).unwrap() {
            Record::Dropped(d) => assert_eq!((d.count, d.cpu), (5, None)),
            other => panic!("expected dropped, got {other:?}"),
        }
        assert_eq!(pos, buf.len());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// A newer minor version may append fields to a body: the fast path skips them; an
    /// older writer's shorter body goes to serde, which defaults the missing fields.
    #[test]
    fn fast_paths_take_newer_bodies_and_serde_takes_older_ones() {
        let ioctl = IoctlRecord {
            id: 9,
            ts_enter: 1,
            ts_exit: 2,
            cmd: 0xC0184709,
            buffers: vec![Buffer {
                role: BufferRole::StructOut,
                path: "a.b".into(),
                len: 3,
                data: vec![1, 2, 3],
                ..Buffer::default()
            }],
            ..IoctlRecord::default()
        };
        let vm = VmbusMessage {
            ts: 5,
            dir: VmbusDir::HostReply,
            status: Some(-1),
            bytes: vec![9; 20],
            ..VmbusMessage::default()
        };
        for rec in [Record::Ioctl(ioctl), Record::Vmbus(vm)] {
            let mut buf = Vec::new();
            encode_record(&mut buf, &rec).unwrap();
            // body header is at byte 2 (envelope fixarray + kind)
            let n = buf[2] & 0x0f;
            buf[2] = 0x90 | (n + 2);
            buf.extend_from_slice(&[0xa3, b'n', b'e', b'w', 0x91, 0x07]);
            let fast = match &rec {
                Record::Ioctl(_) => {
                    view::ioctl_ref(&buf, 2).map(|(r, p)| (Record::Ioctl(r.to_owned()), p))
                }
                _ => view::vmbus_ref(&buf, 2).map(|(r, p)| (Record::Vmbus(r.to_owned()), p)),
            };
            assert_eq!(
                fast,
                Some((rec.clone(), buf.len())),
                "newer body takes the fast path"
            );
            let mut pos = 0;
            assert_eq!(decode_record(&buf, &mut pos).unwrap(), rec);
            assert_eq!(pos, buf.len());
        }
        // An older writer's VMBus body without the last two fields (flags, bytes).
        let mut buf = Vec::new();
        rmp_serde::encode::write(
            &mut buf,
            &(
                4u16,
                (
                    5u64,
                    1u8,
                    None::<u64>,
                    3u64,
                    false,
                    Some(-1i64),
                    None::<u64>,
                    7u32,
                    8u32,
                    20u64,
                ),
            ),
        )
        .unwrap();
        assert!(view::vmbus_ref(&buf, 2).is_none());
        let mut pos = 0;
        match decode_record(&buf, &mut pos).unwrap() {
            Record::Vmbus(m) => {
                assert_eq!((m.ts, m.request_id, m.tid, m.len), (5, 3, 8, 20));
                assert_eq!((m.flags, m.bytes.len()), (0, 0));
            }
            other => panic!("expected vmbus, got {other:?}"),
        }
    }

    /// The fast decoders must agree with serde on every value shape (small/large
    /// integers, negative returns, nil/some options, empty and long byte strings).
    #[test]
    fn fast_paths_agree_with_serde() {
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed
        };
        for i in 0..2000 {
            let big = |v: u64, i: u32| v >> (i % 64);
            let ioctl = IoctlRecord {
                id: big(next(), i),
                ts_enter: big(next(), i + 3),
                ts_exit: big(next(), i + 7),
                pid: next() as u32 >> (i % 32),
                tid: next() as u32 >> (i % 32),
                fd: (next() as i32) >> (i % 32),
                dev: big(next(), i + 1),
                cmd: next() as u32,
                arg: big(next(), i + 2),
                ret: (next() as i64) >> (i % 64),
                buffers: (0..(i % 3))
                    .map(|j| Buffer {
                        addr: big(next(), j),
                        role: BufferRole::try_from((j % 4) as u8).unwrap(),
                        path: if j == 1 {
                            "a[1].b".repeat(i as usize % 9)
                        } else {
                            String::new()
                        },
                        len: big(next(), i),
                        flags: (i % 4) as u8,
                        data: vec![7u8; (i as usize * 37) % 700],
                    })
                    .collect(),
            };
            let vm = VmbusMessage {
                ts: big(next(), i),
                dir: VmbusDir::try_from((i % 3) as u8).unwrap(),
                channel: (i % 2 == 0).then(|| big(next(), i)),
                request_id: big(next(), i + 5),
                is_async: i % 5 == 0,
                status: (i % 3 != 0).then(|| (next() as i64) >> (i % 64)),
                ioctl_id: (i % 4 != 0).then(|| big(next(), i)),
                pid: next() as u32,
                tid: next() as u32,
                len: big(next(), i),
                flags: (i % 3) as u8,
                bytes: vec![1u8; (i as usize * 13) % 300],
            };
            for rec in [Record::Ioctl(ioctl), Record::Vmbus(vm)] {
                let mut buf = Vec::new();
                encode_record(&mut buf, &rec).unwrap();
                let mut pos = 0;
                assert_eq!(decode_record(&buf, &mut pos).unwrap(), rec);
                assert_eq!(pos, buf.len());
                // and the fast path itself took it (not the serde fallback)
                let at = 2; // envelope array header + kind (both one byte here)
                let fast = match &rec {
                    Record::Ioctl(r) => {
                        view::ioctl_ref(&buf, at).map(|x| Record::Ioctl(x.0.to_owned()))
                            == Some(Record::Ioctl(r.clone()))
                    }
                    Record::Vmbus(r) => {
                        view::vmbus_ref(&buf, at).map(|x| Record::Vmbus(x.0.to_owned()))
                            == Some(Record::Vmbus(r.clone()))
                    }
                    _ => unreachable!(),
                };
                assert!(fast, "fast path declined {rec:?}");
                // the hand-written encoder writes exactly what serde writes
                let mut via_serde = Vec::new();
                match &rec {
                    Record::Ioctl(r) => body(&mut via_serde, r).unwrap(),
                    Record::Vmbus(r) => body(&mut via_serde, r).unwrap(),
                    _ => unreachable!(),
                }
                assert_eq!(&buf[2..], &via_serde[..], "encoders disagree on {rec:?}");
            }
        }
    }
}
