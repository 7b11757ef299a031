//! Errors that stop a replay (divergences are not errors: they go in the report).

use std::io;

/// Why a replay or trim could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read.
    #[error("cannot read the trace")]
    Trace(#[from] traces::TraceError),
    /// A handle used by a call was never created by an earlier call of the trace.
    #[error(
        "call {call} ({ioctl}): field `{field}` holds handle {value:#x}, which no earlier call of the trace created (or it was destroyed)"
    )]
    UnmappedHandle {
        /// Call index.
        call: u64,
        /// Ioctl name.
        ioctl: String,
        /// Field path.
        field: String,
        /// Recorded value.
        value: u64,
    },
    /// An fd used by a call was never opened or returned earlier in the trace.
    #[error(
        "call {call} ({ioctl}): `{field}` is fd {fd}, which the trace never opened or received from an ioctl (or it was closed)"
    )]
    UnmappedFd {
        /// Call index.
        call: u64,
        /// Ioctl name.
        ioctl: String,
        /// `fd` for the fd the call is issued on, else the field path.
        field: String,
        /// Recorded fd.
        fd: i64,
    },
    /// An ioctl no device table knows, on a real device.
    #[error(
        "call {call}: request code {cmd:#010x} is not in any device table; refusing to send it to a real device (pass --allow-unknown to send it anyway)"
    )]
    UnknownRefused {
        /// Call index.
        call: u64,
        /// Request code.
        cmd: u32,
    },
    /// A buffer the replay must recreate was not captured.
    #[error(
        "call {call} ({ioctl}): buffer `{field}` must be recreated but the trace has no capture of it"
    )]
    Missing {
        /// Call index.
        call: u64,
        /// Ioctl name.
        ioctl: String,
        /// Buffer path.
        field: String,
    },
    /// Long-lived memory could not be mapped.
    #[error("call {call} ({ioctl}): cannot map memory for `{field}`")]
    Map {
        /// Call index.
        call: u64,
        /// Ioctl name.
        ioctl: String,
        /// Buffer path.
        field: String,
        /// mmap error.
        #[source]
        source: io::Error,
    },
    /// The target could not be opened.
    #[error("cannot open {path} (for the trace's fd {fd})")]
    Open {
        /// Path.
        path: String,
        /// Recorded fd.
        fd: i32,
        /// Error.
        #[source]
        source: io::Error,
    },
    /// Trim: the call index is not in the trace.
    #[error("the trace has {calls} ioctl calls; there is no call {keep}")]
    NoSuchCall {
        /// Requested index.
        keep: u64,
        /// Calls in the trace.
        calls: u64,
    },
    /// The trace was synthesised by a generator, not captured: its handles and results
    /// were never produced by a driver, so there is nothing to reproduce.
    #[error(
        "the trace is synthetic, not a capture ({generated}); its calls were never made on a driver, so their handles and results cannot be reproduced: replay a captured or emulator trace instead"
    )]
    Synthetic {
        /// The header's `generated` label.
        generated: String,
    },
    /// The header's emulator settings cannot be applied.
    #[error("cannot configure the emulator from the trace header")]
    EmulatorConfig(#[source] driver_core::emulator::ConfigError),
    /// A recording backend failed to write.
    #[error("cannot write the trace")]
    Write(#[source] traces::TraceError),
}
