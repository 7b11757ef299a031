//! The on-disk cache of per-trace results (the [`crate::index::TraceIndex`], the
//! `analysis` statistics), so a restarted server does not re-read every trace.
//!
//! One file per trace and kind, `<dir>/<kind>-<hash of the canonical path>.bin`:
//!
//! ```text
//! magic      8 bytes  "DXTCACHE"
//! version    u32 LE   CACHE_VERSION (bumped whenever a cached type changes layout)
//! key_len    u32 LE
//! key        MessagePack SourceKey: canonical path, size, mtime (ns), inode, device
//! body_len   u64 LE
//! body_crc   u32 LE   CRC32C of body
//! body       MessagePack (named fields) of the cached value; index columns are
//!            little-endian byte strings (see [`le`]) so loading is a copy, not a parse
//! ```
//!
//! A file whose key differs from the trace's current one (the trace changed, or a hash
//! collision) is *stale*; one that fails any check (magic, version, lengths, CRC,
//! decoding) is *corrupt*. Either way the caller rebuilds and overwrites it: a cache file
//! is never trusted past its checks. Writes go to a temporary file renamed into place,
//! so a crash mid-write leaves the old file or none.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Layout version of cache files. Bump it when `TraceIndex`, `analysis::Stats` or the
/// framing change shape: older files then count as corrupt and are rebuilt.
pub const CACHE_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"DXTCACHE";

/// What identifies the exact trace file a cache entry was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceKey {
    /// Canonical path.
    pub path: String,
    /// Size, bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

impl SourceKey {
    /// The key of the file at `path` as it is now.
    pub fn of(path: &Path) -> std::io::Result<SourceKey> {
        let m = std::fs::metadata(path)?;
        Ok(SourceKey {
            path: path.to_string_lossy().into_owned(),
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        })
    }
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum Miss {
    /// No cache file yet.
    #[error("no cache file")]
    Absent,
    /// Built from another version of the trace.
    #[error("stale: built from {was}")]
    Stale {
        /// The key found in the file.
        was: String,
    },
    /// Failed a check; rebuilt and overwritten.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

/// Default cache directory: `$XDG_CACHE_HOME/dxtrace`, else `~/.cache/dxtrace`.
pub fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
    if let Some(x) = xdg {
        return Some(PathBuf::from(x).join("dxtrace"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/dxtrace"))
}

/// The cache file of `kind` (`index`, `stats`) for the trace at canonical `path`.
pub fn file_for(dir: &Path, kind: &str, path: &Path) -> PathBuf {
    // FNV-1a: stable across builds (the key inside the file is what is trusted)
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    dir.join(format!("{kind}-{h:016x}.bin"))
}

/// Reads exactly `n` bytes of the named header field.
fn take<R: Read>(r: &mut R, n: usize, what: &str) -> Result<Vec<u8>, Miss> {
    let mut b = vec![0; n];
    r.read_exact(&mut b).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Miss::Corrupt(format!("truncated in the {what}")),
        _ => Miss::Corrupt(format!("cannot read the {what}: {e}")),
    })?;
    Ok(b)
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}

/// Longest key accepted (a canonical path and four numbers).
const MAX_KEY: usize = 1 << 20;

/// Reads the value cached in `file` for the trace identified by `key`.
///
/// Streams: the body is checksummed in one pass and decoded in a second, both through a
/// small buffer, so loading a cached 10M-event index never holds the file's bytes beside
/// the index it decodes to.
pub fn read<T: DeserializeOwned>(file: &Path, key: &SourceKey) -> Result<T, Miss> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(e) => return Err(Miss::Corrupt(format!("cannot read: {e}"))),
    };
    let len = f
        .metadata()
        .map_err(|e| Miss::Corrupt(format!("cannot read: {e}")))?
        .len();
    read_from(std::io::BufReader::with_capacity(1 << 20, f), len, key)
}

/// [`read`] over bytes already in memory.
pub fn decode<T: DeserializeOwned>(data: &[u8], key: &SourceKey) -> Result<T, Miss> {
    read_from(std::io::Cursor::new(data), data.len() as u64, key)
}

fn read_from<T: DeserializeOwned, R: Read + Seek>(
    mut r: R,
    len: u64,
    key: &SourceKey,
) -> Result<T, Miss> {
    if take(&mut r, 8, "magic")? != MAGIC {
        return Err(Miss::Corrupt("not a dxtrace cache file".into()));
    }
    let v = u32_of(&take(&mut r, 4, "version")?);
    if v != CACHE_VERSION {
        return Err(Miss::Corrupt(format!(
            "cache layout version {v}, this build uses {CACHE_VERSION}"
        )));
    }
    let klen = u32_of(&take(&mut r, 4, "key length")?) as usize;
    if klen > MAX_KEY || klen as u64 > len {
        return Err(Miss::Corrupt(format!("key length {klen} is implausible")));
    }
    let kbytes = take(&mut r, klen, "key")?;
    let found: SourceKey = rmp_serde::from_slice(&kbytes)
        .map_err(|e| Miss::Corrupt(format!("unreadable key: {e}")))?;
    if &found != key {
        return Err(Miss::Stale {
            was: format!(
                "{} ({} bytes, mtime {} ns)",
                found.path, found.size, found.mtime_ns
            ),
        });
    }
    let blen = u64::from_le_bytes(take(&mut r, 8, "body length")?.try_into().expect("8"));
    let crc = u32_of(&take(&mut r, 4, "checksum")?);
    let start = 8 + 4 + 4 + klen as u64 + 8 + 4;
    if blen != len.saturating_sub(start) {
        return Err(Miss::Corrupt(format!(
            "body is {} bytes, header says {blen}",
            len.saturating_sub(start)
        )));
    }
    // pass 1: the checksum, before anything is decoded (so lengths inside are trusted)
    let mut buf = vec![0u8; 1 << 16];
    let mut sum = 0u32;
    let mut left = blen;
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.read_exact(&mut buf[..n])
            .map_err(|e| Miss::Corrupt(format!("cannot read the body: {e}")))?;
        sum = crc32c::crc32c_append(sum, &buf[..n]);
        left -= n as u64;
    }
    if sum != crc {
        return Err(Miss::Corrupt("checksum mismatch".into()));
    }
    // pass 2: decode
    r.seek(SeekFrom::Start(start))
        .map_err(|e| Miss::Corrupt(format!("cannot read the body: {e}")))?;
    rmp_serde::from_read(r.take(blen)).map_err(|e| Miss::Corrupt(format!("undecodable body: {e}")))
}

/// Counts and checksums what passes through to the inner writer.
struct Summing<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.crc = crc32c::crc32c_append(self.crc, &b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the cache file format for `value` and `key` to `out`, streaming the body (its
/// length and checksum are patched into the header afterwards).
fn write_to<T: Serialize, W: Write + Seek>(
    mut out: W,
    value: &T,
    key: &SourceKey,
) -> Result<(), String> {
    let k = rmp_serde::to_vec_named(key).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&CACHE_VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&(k.len() as u32).to_le_bytes()).map_err(io)?;
    out.write_all(&k).map_err(io)?;
    let at = out.stream_position().map_err(io)?;
    out.write_all(&[0; 12]).map_err(io)?; // body length and checksum, patched below
    let mut body = Summing {
        inner: &mut out,
        crc: 0,
        len: 0,
    };
    value
        .serialize(&mut rmp_serde::Serializer::new(&mut body).with_struct_map())
        .map_err(|e| e.to_string())?;
    let (len, crc) = (body.len, body.crc);
    out.seek(SeekFrom::Start(at)).map_err(io)?;
    out.write_all(&len.to_le_bytes()).map_err(io)?;
    out.write_all(&crc.to_le_bytes()).map_err(io)?;
    out.seek(SeekFrom::End(0)).map_err(io)?;
    out.flush().map_err(io)
}

/// Encodes `value` for `key` in the cache file format.
pub fn encode<T: Serialize>(value: &T, key: &SourceKey) -> Result<Vec<u8>, String> {
    let mut out = std::io::Cursor::new(Vec::new());
    write_to(&mut out, value, key)?;
    Ok(out.into_inner())
}

/// Writes `value` to `file` for `key` (temporary file, then rename), streaming: the
/// encoded body is never held in memory beside the value.
pub fn write<T: Serialize>(file: &Path, key: &SourceKey, value: &T) -> Result<(), String> {
    let dir = file.parent().ok_or("cache file has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    write_to(
        std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
        value,
        key,
    )
    .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    tmp.persist(file)
        .map_err(|e| format!("cannot rename into {}: {e}", file.display()))?;
    Ok(())
}

/// A fixed-width number stored little-endian.
pub trait Le: Copy {
    /// Width, bytes.
    const W: usize;
    /// Appends the bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads from exactly `W` bytes.
    fn get(b: &[u8]) -> Self;
}

macro_rules! le_impl {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const W: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("width"))
            }
        }
    )*};
}
le_impl!(u8, u16, u32, u64, i64);

struct BytesVisitor<F>(F);

impl<'de, T, F: Fn(&[u8]) -> Result<T, String>> serde::de::Visitor<'de> for BytesVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string of packed numbers")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<T, E> {
        (self.0)(&v).map_err(E::custom)
    }
}

/// `#[serde(with = "crate::cache::le")]` for `Vec<number>`: one byte string of
/// little-endian values (a column of 10M u64 loads as one copy).
pub mod le {
    use super::{BytesVisitor, Le};

    /// Serialises the column.
    pub fn serialize<T: Le, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(v.len() * T::W);
        for x in v {
            x.put(&mut out);
        }
        s.serialize_bytes(&out)
    }

    /// Deserialises the column; a length that is not a multiple of the width is an error.
    pub fn deserialize<'de, T: Le, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_bytes(BytesVisitor(|b: &[u8]| {
            if !b.len().is_multiple_of(T::W) {
                return Err(format!("{} bytes is not a multiple of {}", b.len(), T::W));
            }
            Ok(b.chunks_exact(T::W).map(T::get).collect())
        }))
    }
}

/// `#[serde(with = "crate::cache::summaries")]` for `Vec<Summary>`: 24 bytes each.
pub mod summaries {
    use super::{BytesVisitor, Le};
    use crate::index::Summary;

    const W: usize = 24;

    /// Serialises the summaries.
    pub fn serialize<S: serde::Serializer>(v: &[Summary], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(v.len() * W);
        for x in v {
            x.count.put(&mut out);
            x.errors.put(&mut out);
            x.busiest.put(&mut out);
            x.busiest_dur.put(&mut out);
            x.bytes.put(&mut out);
        }
        s.serialize_bytes(&out)
    }

    /// Deserialises the summaries.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Summary>, D::Error> {
        d.deserialize_bytes(BytesVisitor(|b: &[u8]| {
            if !b.len().is_multiple_of(W) {
                return Err(format!("{} bytes is not a multiple of {W}", b.len()));
            }
            Ok(b.chunks_exact(W)
                .map(|c| Summary {
                    count: u32::get(&c[0..4]),
                    errors: u32::get(&c[4..8]),
                    busiest: u32::get(&c[8..12]),
                    busiest_dur: u32::get(&c[12..16]),
                    bytes: u64::get(&c[16..24]),
                })
                .collect())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SourceKey {
        SourceKey {
            path: "/t/a.dxtrace".into(),
            size: 10,
            mtime_ns: 5,
            ino: 1,
            dev: 2,
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cols {
        #[serde(with = "le")]
        a: Vec<u64>,
        #[serde(with = "le")]
        b: Vec<u16>,
        #[serde(with = "le")]
        c: Vec<i64>,
    }

    #[test]
    fn round_trip_and_every_corruption_is_refused() {
        let v = Cols {
            a: vec![1, u64::MAX, 3],
            b: vec![7, 8],
            c: vec![-1, i64::MIN],
        };
        let data = encode(&v, &key()).unwrap();
        assert_eq!(decode::<Cols>(&data, &key()).unwrap(), v);
        // another version of the trace: stale, not corrupt
        let mut k2 = key();
        k2.mtime_ns += 1;
        assert!(matches!(
            decode::<Cols>(&data, &k2),
            Err(Miss::Stale { .. })
        ));
        // every truncation and every single-bit flip is caught
        for n in 0..data.len() {
            assert!(
                matches!(decode::<Cols>(&data[..n], &key()), Err(Miss::Corrupt(_))),
                "truncated at {n}"
            );
        }
        for i in 0..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[i] ^= 1 << bit;
                match decode::<Cols>(&d, &key()) {
                    Err(_) => {}
                    Ok(x) => panic!("flip of bit {bit} of byte {i} accepted: {x:?}"),
                }
            }
        }
    }
}
