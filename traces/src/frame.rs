//! Fixed-width on-disk structures: file header prefix, frame header, trailer, and the
//! footer index. All integers little-endian.

use serde::{Deserialize, Serialize};

/// First 8 bytes of every `.dxtrace` file. The high-bit first byte catches 7-bit and
/// text-mode transfers, as PNG's does.
pub const FILE_MAGIC: [u8; 8] = *b"\x89DXTRACE";
/// Format major version this crate writes and reads. A different major is refused.
pub const FORMAT_MAJOR: u16 = 1;
/// Format minor version this crate writes. Newer minors are read (unknown record kinds
/// and extra trailing fields are skipped); older minors are read (missing trailing fields
/// take defaults).
pub const FORMAT_MINOR: u16 = 0;
/// Size of the fixed file-header prefix before the metadata map.
pub const FILE_PREFIX_LEN: usize = 24;
/// Largest metadata map accepted (guards allocations on corrupt input).
pub const MAX_HEADER_LEN: u32 = 16 << 20;

/// Magic at the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"DXFR";
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 48;
/// Largest stored payload accepted.
pub const MAX_PAYLOAD_LEN: u32 = 64 << 20;
/// Largest decompressed block accepted.
pub const MAX_RAW_LEN: u32 = 256 << 20;

/// Magic ending the trailer (last 16 bytes of a finished file).
pub const TRAILER_MAGIC: [u8; 8] = *b"DXTRIDX1";
/// Size of the trailer.
pub const TRAILER_LEN: usize = 16;

/// Frame holding records.
pub const FRAME_RECORDS: u8 = 1;
/// Frame holding the footer index.
pub const FRAME_INDEX: u8 = 2;

/// Payload stored as is.
pub const CODEC_NONE: u8 = 0;
/// Payload is one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// [`FRAME_RECORDS`] or [`FRAME_INDEX`].
    pub frame_type: u8,
    /// [`CODEC_NONE`] or [`CODEC_ZSTD`].
    pub codec: u8,
    /// Stored payload bytes following the header.
    pub payload_len: u32,
    /// Decompressed size.
    pub raw_len: u32,
    /// Records in the block.
    pub record_count: u32,
    /// CRC32C of the stored payload.
    pub payload_crc: u32,
    /// Smallest record timestamp (ns).
    pub ts_min: u64,
    /// Largest record timestamp (ns; ioctl exit times included).
    pub ts_max: u64,
}

impl FrameHeader {
    /// Serialises to the 48-byte on-disk form (header CRC included).
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4] = self.frame_type;
        b[5] = self.codec;
        b[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[24..32].copy_from_slice(&self.ts_min.to_le_bytes());
        b[32..40].copy_from_slice(&self.ts_max.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and validates a frame header; the error says what is wrong.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, String> {
        if b[0..4] != FRAME_MAGIC {
            return Err(format!(
                "bad frame magic: expected {:?}, found {:02x?}",
                String::from_utf8_lossy(&FRAME_MAGIC),
                &b[0..4]
            ));
        }
        let stored = u32::from_le_bytes(b[44..48].try_into().unwrap());
        let crc = crc32c::crc32c(&b[0..44]);
        if stored != crc {
            return Err(format!(
                "frame header checksum mismatch (stored {stored:#010x}, computed {crc:#010x})"
            ));
        }
        let h = FrameHeader {
            frame_type: b[4],
            codec: b[5],
            payload_len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            raw_len: u32::from_le_bytes(b[12..16].try_into().unwrap()),
            record_count: u32::from_le_bytes(b[16..20].try_into().unwrap()),
            payload_crc: u32::from_le_bytes(b[20..24].try_into().unwrap()),
            ts_min: u64::from_le_bytes(b[24..32].try_into().unwrap()),
            ts_max: u64::from_le_bytes(b[32..40].try_into().unwrap()),
        };
        if h.codec > CODEC_ZSTD {
            return Err(format!("unknown codec {}", h.codec));
        }
        if h.payload_len > MAX_PAYLOAD_LEN {
            return Err(format!(
                "payload length {} exceeds the {} limit",
                h.payload_len, MAX_PAYLOAD_LEN
            ));
        }
        if h.raw_len > MAX_RAW_LEN {
            return Err(format!(
                "block length {} exceeds the {} limit",
                h.raw_len, MAX_RAW_LEN
            ));
        }
        Ok(h)
    }

    /// Bytes the frame occupies on disk.
    pub fn total_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + self.payload_len as u64
    }
}

/// One entry of the footer index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct IndexEntry {
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
    /// `[[kind, count], …]` for the frame.
    pub kind_counts: Vec<(u16, u32)>,
}

/// The footer index: the payload of the [`FRAME_INDEX`] frame (a MessagePack array
/// `[entries]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FooterIndex {
    /// One entry per record frame, in file order.
    pub frames: Vec<IndexEntry>,
}
