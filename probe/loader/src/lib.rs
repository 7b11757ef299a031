//! The dxtrace probe, user side: loads the eBPF programs built from `probe/ebpf`, attaches
//! them, drains their ring buffer and turns the raw events into `.dxtrace` records.
//!
//! Layers:
//! - [`Probe`] (built with [`Probe::builder`]): load + attach + drain raw events; detaches
//!   everything when dropped.
//! - [`Assembler`]: raw events → [`traces::Record`]s (chunks reassembled into buffers,
//!   process info, drop records).
//! - [`record`] / [`record_blocking`]: the whole capture into a file, as `dxtrace record`
//!   runs it.
//!
//! The kernel side filters by device number (fd → file → inode, offsets from BTF), by
//! process tree when asked, and follows descriptors returned by watched ioctls by
//! (pid, fd). See `probe-common` for the event protocol.

mod assemble;
pub mod btf;
pub mod desc;
pub mod doctor;
mod load;
mod run;

pub use assemble::Assembler;
pub use desc::{CmdDescriptor, FdReturn, LenSpec, PointerSpec};
pub use load::{Floor, Probe, ProbeBuilder, RawEvent, SyscallHooks, WatchedDevice};
pub use run::{Progress, RecordOptions, RecordSummary, record, record_blocking};

/// Errors of the probe library.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Kernel BTF missing or unusable.
    #[error("kernel BTF: {what}")]
    Btf {
        /// What went wrong.
        what: String,
    },
    /// A watched device could not be inspected.
    #[error("cannot watch {path}")]
    Device {
        /// The path given.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// tracefs is not mounted and could not be mounted.
    #[error("tracefs is not available at /sys/kernel/tracing ({what})")]
    Tracefs {
        /// Why.
        what: String,
    },
    /// The eBPF object could not be loaded (verifier, permissions, BTF…).
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("{action} program {program} failed")]
    Program {
        /// `load` or `attach`.
        action: &'static str,
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("map {map}: {what}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was attempted.
        what: String,
    },
    /// Starting the command to record failed.
    #[error("cannot start {command}")]
    Spawn {
        /// Program name.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{call} failed")]
    Syscall {
        /// Which call.
        call: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the trace failed.
    #[error("writing the trace failed")]
    Trace(#[from] traces::TraceError),
}
