//! The capture metadata stored in a trace's file header.
//!
//! Unlike records, the header is a MessagePack **map** keyed by field name, so fields can
//! be added in minor versions without any reader change: unknown keys are ignored, missing
//! keys take their defaults.

use serde::{Deserialize, Serialize};

/// Where the events of a trace came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    /// The eBPF probe on a real kernel.
    Ebpf,
    /// The in-process dxg emulator (its instrumented driver logic wrote the records).
    Emulator,
    /// An instrumented client or driver build other than the emulator.
    Instrumented,
    /// Synthesised by a generator, not observed (labelled so in `generated`).
    Generated,
    /// Anything else (older or foreign writers).
    #[default]
    #[serde(other)]
    Other,
}

impl CaptureSource {
    /// Stable lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            CaptureSource::Ebpf => "ebpf",
            CaptureSource::Emulator => "emulator",
            CaptureSource::Instrumented => "instrumented",
            CaptureSource::Generated => "generated",
            CaptureSource::Other => "other",
        }
    }
}

/// A device the capture watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DeviceInfo {
    /// Path as given, e.g. `/dev/dxg`, `/dev/kvm`, `/mnt/dxtrace/dxg`.
    pub path: String,
    /// Schema name that gives the ioctls meaning: `"dxg"`, `"kvm"`, or `""` if unknown.
    pub schema: String,
    /// Device number (`st_rdev`) for a character device, `st_dev` for a regular file.
    pub dev: u64,
    /// Major number of `dev`.
    pub major: u32,
    /// Minor number of `dev`.
    pub minor: u32,
    /// Inode number (identifies a FUSE file, whose `dev` is the mount's).
    pub ino: u64,
    /// `"char"` for a character device, `"file"` for a regular (FUSE) file.
    pub kind: String,
}

/// Whether VMBus traffic was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VmbusCapture {
    /// True when the VMBus hooks were attached for the whole capture.
    pub active: bool,
    /// How (e.g. `"uprobe:emulator"`, `"in-process"`), or why not (e.g.
    /// `"dxgvmb_send_sync_msg not in /proc/kallsyms"`).
    pub detail: String,
}

/// Capture metadata. Encoded as a MessagePack map with these key names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Header {
    /// Name of the writing tool, `"dxtrace"`.
    pub tool: String,
    /// Version of the writing tool.
    pub tool_version: String,
    /// `uname -r` of the capturing machine.
    pub kernel_release: String,
    /// Host name of the capturing machine.
    pub hostname: String,
    /// Wall-clock start of the capture, ns since the Unix epoch.
    pub wall_clock_start_ns: u64,
    /// `CLOCK_MONOTONIC` reading (ns) taken at the same moment as `wall_clock_start_ns`;
    /// every record timestamp is on this clock.
    pub monotonic_base_ns: u64,
    /// Where the events came from.
    pub source: CaptureSource,
    /// Watched devices.
    pub devices: Vec<DeviceInfo>,
    /// dxg ABI revision when known (e.g. `"dxgkrnl 2.0.3 / ioctls 0x01-0x49"`).
    pub dxg_abi: Option<String>,
    /// VMBus capture state.
    pub vmbus: VmbusCapture,
    /// For [`CaptureSource::Generated`] traces: what generated them and how to regenerate.
    pub generated: Option<String>,
    /// The command that was captured, if the recorder started it.
    pub command: Vec<String>,
    /// Free-form key/values (scenario name, seed, fault plan…).
    pub extra: Vec<(String, String)>,
}

impl Header {
    /// A header with tool name/version, kernel release, host name and both clocks filled
    /// in from the current machine.
    pub fn for_this_machine(source: CaptureSource) -> Header {
        let (wall, mono) = clock_pair();
        Header {
            tool: "dxtrace".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: uname_release(),
            hostname: hostname(),
            wall_clock_start_ns: wall,
            monotonic_base_ns: mono,
            source,
            ..Header::default()
        }
    }

    /// Value of an `extra` key.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `CLOCK_REALTIME` and `CLOCK_MONOTONIC` back to back (ns).
pub fn clock_pair() -> (u64, u64) {
    (
        clock_ns(libc::CLOCK_REALTIME),
        clock_ns(libc::CLOCK_MONOTONIC),
    )
}

/// Current `CLOCK_MONOTONIC` in ns: the clock of every record timestamp.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Current time of `clock` in ns (0 if it cannot be read).
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn uname_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
