//! The `.dxtrace` trace format: writer, reader, footer index, salvage.
//!
//! A `.dxtrace` file is what a capture writes for hours, that survives a crash of the
//! recorder, and that another machine reads years later. It stores raw observations
//! (request codes, bytes, return values, times, ids) and no interpretation: meaning comes
//! from `driver-core`, so old traces improve when the decoders do.
//!
//! # Wire format (version 1.0)
//!
//! Everything below is precise enough to write an independent reader with any
//! MessagePack library and a CRC32C and zstd implementation. All fixed-width integers are
//! **little-endian**; MessagePack integers are big-endian as MessagePack defines.
//!
//! ```text
//! file    := prefix metadata frame* [index-frame trailer]
//! prefix  := magic[8] major:u16 minor:u16 meta_len:u32 meta_crc:u32 reserved:u32   (24 bytes)
//! frame   := frame-header(48 bytes) payload[payload_len]
//! trailer := index_offset:u64 "DXTRIDX1"                                            (16 bytes)
//! ```
//!
//! ## Prefix and metadata
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 44 58 54 52 41 43 45` (`\x89DXTRACE`) |
//! | 8 | 2 | format major (1) |
//! | 10 | 2 | format minor (0) |
//! | 12 | 4 | `meta_len`: bytes of metadata that follow the prefix (≤ 16 MiB) |
//! | 16 | 4 | CRC32C (Castagnoli) of the metadata bytes |
//! | 20 | 4 | reserved, 0 |
//!
//! The metadata is one MessagePack **map** whose keys are the field names of [`Header`]
//! (`tool`, `tool_version`, `kernel_release`, `hostname`, `wall_clock_start_ns`,
//! `monotonic_base_ns`, `source` (string: `ebpf`/`emulator`/`instrumented`/`generated`),
//! `devices` (array of maps: `path`, `schema`, `dev`, `major`, `minor`, `ino`, `kind`),
//! `dxg_abi` (string or nil), `vmbus` (map: `active` bool, `detail` string),
//! `generated` (string or nil), `command` (array of strings), `extra` (array of
//! `[key, value]` string pairs)). Unknown keys must be ignored; missing keys take their
//! zero value.
//!
//! ## Frames
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `DXFR` |
//! | 4 | 1 | frame type: 1 = records, 2 = footer index |
//! | 5 | 1 | codec: 0 = stored, 1 = one zstd frame |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 4 | `payload_len`: stored bytes after this header (≤ 64 MiB) |
//! | 12 | 4 | `raw_len`: bytes after decompression (≤ 256 MiB) |
//! | 16 | 4 | `record_count` (index frame: number of index entries) |
//! | 20 | 4 | CRC32C of the stored payload |
//! | 24 | 8 | `ts_min`: smallest record timestamp, ns |
//! | 32 | 8 | `ts_max`: largest record timestamp (ioctl exit times included), ns |
//! | 40 | 4 | reserved, 0 |
//! | 44 | 4 | CRC32C of bytes 0..44 of this header |
//!
//! Frames follow each other with no gap, so a reader skips a frame by adding
//! `48 + payload_len`. The header checksum makes the length trustworthy before it is
//! used; the payload checksum is checked before decompression.
//!
//! The decompressed block of a record frame is `record_count` MessagePack values back to
//! back, each a **record envelope**: an array `[kind, body, …]` — a positive integer kind
//! and the body; further envelope elements are reserved and must be skipped. The body is
//! a MessagePack array of the record's fields in the order below (serde
//! "struct as array"). Byte strings are MessagePack `bin`; optional values are `nil` when
//! absent; enums are small integers.
//!
//! | kind | record | body |
//! |---|---|---|
//! | 1 | [`ProcessInfo`] | `[ts, pid, ppid, comm, exe, start_ns, cmdline[]]` |
//! | 2 | [`FdEvent`] | `[ts, pid, tid, fd, op (0 open, 1 close, 2 derived), path, dev, ino, flags, ret]` |
//! | 3 | [`IoctlRecord`] | `[id, ts_enter, ts_exit, pid, tid, fd, dev, cmd, arg, ret, buffers[]]` |
//! |   | [`Buffer`] (element of `buffers`) | `[addr, role (0 struct_in, 1 struct_out, 2 ptr_in, 3 ptr_out), path, len, flags (1 truncated, 2 unreadable, 4 zero-filled: non-resident pages of pinned memory stored as zeros), data: bin]` |
//! | 4 | [`VmbusMessage`] | `[ts, dir (0 guest→host, 1 host reply, 2 host→guest), channel (nil = global, else adapter LUID u64), request_id, is_async, status (nil or i64), ioctl_id (nil or u64), pid, tid, len, flags, bytes: bin]` |
//! | 5 | [`HostSignal`] | `[ts, event_id, pid, fd, source, detail]` |
//! | 6 | [`Dropped`] | `[ts, count, reason, cpu (nil or u32)]` |
//! | 7 | [`CaptureStats`] | `[ts, [[name, value], …]]` |
//! | 8 | [`Annotation`] | `[ts, pid, tid, key, text]` |
//!
//! Timestamps are `CLOCK_MONOTONIC` nanoseconds; `monotonic_base_ns` and
//! `wall_clock_start_ns` in the metadata were read at the same moment and convert them to
//! wall-clock time. Every ioctl's `ret` is the full 64-bit syscall return value.
//!
//! ## Footer
//!
//! A finished file ends with an index frame (type 2) whose block is a MessagePack array
//! `[entries]`, each entry `[offset, payload_len, record_count, ts_min, ts_max,
//! [[kind, count], …]]` for one record frame in file order, followed by the 16-byte
//! trailer: the index frame's offset and the magic `DXTRIDX1`. A reader checks the
//! trailer magic, the index frame's checksums, and that the entries tile the file from
//! the end of the metadata to the index frame exactly; otherwise it ignores the footer and
//! scans frames from the start. A file without footer (the recorder crashed) is read the
//! same way; the writer seals a frame at least every second ([`WriterOptions`]), so a
//! crash loses about one second of events.
//!
//! ## Version policy
//!
//! * A reader refuses a different **major** version with an error that names the version
//!   found, the version expected and what to do (upgrade, or use the old tool).
//! * **Minor** versions only add: new record kinds (a reader skips kinds it does not
//!   know, reporting them as [`Record::Unknown`]), new trailing fields in a record body
//!   (ignored by older readers; defaulted when missing by newer ones), new metadata keys.
//!   Kind numbers and field positions are never reused.
//!
//! ## Damage
//!
//! A corrupt or truncated frame gives an error naming its byte offset and what is wrong
//! ([`TraceError`]); the records of every other readable frame are still returned.
//! [`ReadOptions::salvage`] searches forward for the next intact frame, and
//! [`Reader::salvage_to`] writes every intact frame into a new, finished file and reports
//! what was lost.

#![warn(missing_docs)]

mod codec;
pub mod error;
pub mod frame;
pub mod header;
mod msgpack;
pub mod reader;
pub mod record;
pub mod summary;
pub mod synth;
pub mod view;
pub mod writer;

pub use codec::{decode_record, encode_record, visit_record};
pub use error::{Result, TraceError};
pub use header::{CaptureSource, DeviceInfo, Header, VmbusCapture};
pub use reader::{
    Block, FrameInfo, LostRegion, ReadOptions, Reader, Records, SalvageReport, join_scoped,
};
pub use record::*;
pub use summary::{TraceSummary, summarize};
pub use view::{BufferRef, BuffersRef, IoctlRef, RecordRef, VmbusRef};
pub use writer::{WriteSummary, Writer, WriterOptions};

#[cfg(test)]
mod tests;
