//! Errors of the trace format. Every corruption error names the byte offset.

use std::io;

/// What went wrong reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// An I/O error outside of any particular structure.
    #[error("i/o error on {path}")]
    Io {
        /// File (or `"<stream>"`).
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the `.dxtrace` magic.
    #[error("not a .dxtrace file: expected magic {expected:?} at byte 0, found {found:?}")]
    BadMagic {
        /// The magic this version expects.
        expected: String,
        /// What was there.
        found: String,
    },
    /// The file's format major version is not one this reader understands.
    #[error(
        "unsupported .dxtrace format version {found_major}.{found_minor}: this dxtrace reads \
         {expected_major}.x; {hint}"
    )]
    Version {
        /// Major found in the file.
        found_major: u16,
        /// Minor found in the file.
        found_minor: u16,
        /// Major this reader reads.
        expected_major: u16,
        /// What to do about it.
        hint: &'static str,
    },
    /// The file header is damaged.
    #[error("corrupt file header at byte {offset}: {reason}")]
    CorruptHeader {
        /// Byte offset of the damaged part.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A frame is damaged.
    #[error("corrupt frame at byte {offset}: {reason}")]
    CorruptFrame {
        /// Byte offset of the frame header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file ends in the middle of a frame.
    #[error(
        "truncated frame at byte {offset}: the frame needs {needed} bytes but the file has \
         {available} left (the recorder probably stopped mid-write; `dxtrace info --salvage` \
         recovers the intact frames)"
    )]
    Truncated {
        /// Byte offset of the frame header.
        offset: u64,
        /// Bytes the frame claims.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A record inside an intact frame could not be decoded.
    #[error("undecodable record #{index} in frame at byte {frame_offset}: {reason}")]
    Record {
        /// Byte offset of the frame header.
        frame_offset: u64,
        /// Index of the record in the frame.
        index: u32,
        /// What is wrong.
        reason: String,
    },
    /// The footer index is present but unusable (the reader falls back to scanning).
    #[error("corrupt footer index at byte {offset}: {reason}")]
    CorruptIndex {
        /// Byte offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The writer's background threads failed.
    #[error("trace writer failed: {0}")]
    Writer(String),
}

impl Clone for TraceError {
    fn clone(&self) -> Self {
        use TraceError::*;
        match self {
            Io { path, source } => Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            BadMagic { expected, found } => BadMagic {
                expected: expected.clone(),
                found: found.clone(),
            },
            Version {
                found_major,
                found_minor,
                expected_major,
                hint,
            } => Version {
                found_major: *found_major,
                found_minor: *found_minor,
                expected_major: *expected_major,
                hint,
            },
            CorruptHeader { offset, reason } => CorruptHeader {
                offset: *offset,
                reason: reason.clone(),
            },
            CorruptFrame { offset, reason } => CorruptFrame {
                offset: *offset,
                reason: reason.clone(),
            },
            Truncated {
                offset,
                needed,
                available,
            } => Truncated {
                offset: *offset,
                needed: *needed,
                available: *available,
            },
            Record {
                frame_offset,
                index,
                reason,
            } => Record {
                frame_offset: *frame_offset,
                index: *index,
                reason: reason.clone(),
            },
            CorruptIndex { offset, reason } => CorruptIndex {
                offset: *offset,
                reason: reason.clone(),
            },
            Writer(s) => Writer(s.clone()),
        }
    }
}

impl TraceError {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        TraceError::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Byte offset the error refers to, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            TraceError::CorruptHeader { offset, .. }
            | TraceError::CorruptFrame { offset, .. }
            | TraceError::Truncated { offset, .. }
            | TraceError::CorruptIndex { offset, .. } => Some(*offset),
            TraceError::Record { frame_offset, .. } => Some(*frame_offset),
            TraceError::BadMagic { .. } => Some(0),
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = TraceError> = std::result::Result<T, E>;
