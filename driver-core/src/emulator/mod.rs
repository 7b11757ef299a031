//! The dxg emulator: a user-space, instrumented build of the dxgkrnl driver's ioctl path
//! on top of a fake host GPU (reference §1–§3).
//!
//! * [`Emulator`] — one emulated machine: the driver state ([`driver`]), the VMBus
//!   ([`bus`], with the exported `dxgvmb_send_sync_msg` / `dxgvmb_send_async_msg`) and
//!   the fake host ([`host`]).
//! * [`EmulatorBackend`] — the [`Backend`](crate::Backend) over it, for in-process runs
//!   and the replayer.
//! * [`sink`] — the instrumentation events ([`Event`]); the CLI turns them into trace
//!   records.
//! * [`fault`] — fault injection specs ([`Fault::parse`]).
//! * [`ProcessMemory`] — another process's memory through `process_vm_readv/writev`
//!   (the FUSE device follows embedded pointers with it).
//! * [`fuse`] — the emulated device as `DIR/dxg` on a FUSE mount ([`FuseMount`]).

pub mod bus;
pub mod driver;
pub mod fault;
pub mod fuse;
mod handles;
pub mod host;
mod pool;
pub mod sink;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::inthash::LastHitMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use bus::{Clock, DxgVmbusChannel, dxgvmb_send_async_msg, dxgvmb_send_sync_msg};
pub use fault::{Fault, FaultError, Occurrence};
pub use fuse::FuseMount;
pub use host::{AdapterSpec, Host, HostOutcome, LatencyModel};
pub use sink::{
    AnnotationEvent, BufEvent, BufRole, Event, EventSink, FdOpEvent, FnSink, IoctlEvent, NullSink,
    SignalEvent, VecSink, VmbusDirection, VmbusEvent,
};

use crate::backend::{Backend, InProcessMemory, MemError, UserMemory, VouchedMemory};

/// How to build an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Seed of everything random (latency jitter, GPU VA base).
    pub seed: u64,
    /// Negotiated VMBus interface version (≥ 40 adds the 16-byte ext header).
    pub interface_version: u32,
    /// The host advertises `async_msg_enabled` (every message on the global channel,
    /// SUBMIT/SIGNAL/WAIT-GPU sent async).
    pub async_msg: bool,
    /// Adapters.
    pub adapters: Vec<AdapterSpec>,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Virtual clock starting at a fixed value (byte-identical traces).
    pub deterministic: bool,
    /// Latencies.
    pub latency: LatencyModel,
    /// How long an injected hang is allowed to last before the emulator gives up.
    pub hang_bound_ns: u64,
    /// Process name sent in CREATEPROCESS instead of `/proc/<pid>/comm` (determinism).
    pub comm: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: 0,
            interface_version: 40,
            async_msg: false,
            adapters: AdapterSpec::defaults(),
            faults: Vec::new(),
            deterministic: false,
            latency: LatencyModel::default(),
            hang_bound_ns: 50_000_000,
            comm: None,
        }
    }
}

/// Header keys under which [`EmulatorConfig::header_extras`] stores the configuration.
pub mod header_keys {
    /// Seed of the fake host.
    pub const SEED: &str = "seed";
    /// Fault plan: [`super::Fault`] spec strings separated by `;` (empty: none).
    pub const FAULTS: &str = "emulator.faults";
    /// `true` / `false`.
    pub const ASYNC_MSG: &str = "emulator.async_msg";
    /// Negotiated VMBus interface version.
    pub const INTERFACE_VERSION: &str = "emulator.interface_version";
    /// Virtual clock (`true` / `false`).
    pub const DETERMINISTIC: &str = "emulator.deterministic";
    /// Process name sent in CREATEPROCESS (absent: `/proc/<pid>/comm`).
    pub const COMM: &str = "emulator.comm";
    /// Latency model: `gpu_work=NS` and `COMMAND=NS` overrides separated by `,` (empty:
    /// the defaults).
    pub const LATENCY: &str = "emulator.latency";
    /// Bound on an injected hang, ns.
    pub const HANG_BOUND_NS: &str = "emulator.hang_bound_ns";
}

/// A header value [`EmulatorConfig::from_header_extras`] cannot use.
#[derive(Debug, thiserror::Error)]
#[error("trace header key `{key}` = {value:?}: {why}")]
pub struct ConfigError {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// What is wrong.
    pub why: String,
}

impl EmulatorConfig {
    /// The settings that decide what the emulator does (seed, fault plan, latency model,
    /// message mode, clock, process name) as trace-header key/values, so that a replay can
    /// configure its emulator the way the capture's was ([`Self::from_header_extras`]).
    /// Adapters are not stored: traces are written with [`AdapterSpec::defaults`].
    pub fn header_extras(&self) -> Vec<(String, String)> {
        use header_keys::*;
        let mut lat: Vec<String> = self
            .latency
            .gpu_work_ns
            .map(|n| format!("gpu_work={n}"))
            .into_iter()
            .collect();
        let mut ov: Vec<_> = self.latency.overrides.iter().collect();
        ov.sort();
        lat.extend(ov.into_iter().map(|(k, v)| format!("{k}={v}")));
        let mut v = vec![
            (SEED.to_string(), self.seed.to_string()),
            (
                FAULTS.to_string(),
                self.faults
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            (ASYNC_MSG.to_string(), self.async_msg.to_string()),
            (
                INTERFACE_VERSION.to_string(),
                self.interface_version.to_string(),
            ),
            (DETERMINISTIC.to_string(), self.deterministic.to_string()),
            (LATENCY.to_string(), lat.join(",")),
            (HANG_BOUND_NS.to_string(), self.hang_bound_ns.to_string()),
        ];
        if let Some(c) = &self.comm {
            v.push((COMM.to_string(), c.clone()));
        }
        v
    }

    /// A configuration from trace-header key/values written by [`Self::header_extras`];
    /// keys that are absent keep their defaults, unknown keys are ignored.
    pub fn from_header_extras(extra: &[(String, String)]) -> Result<EmulatorConfig, ConfigError> {
        use header_keys::*;
        let mut c = EmulatorConfig::default();
        let err = |k: &str, v: &str, why: String| ConfigError {
            key: k.into(),
            value: v.into(),
            why,
        };
        let num = |k: &str, v: &str| -> Result<u64, ConfigError> {
            v.trim()
                .parse()
                .map_err(|e| err(k, v, format!("not a number ({e})")))
        };
        let flag = |k: &str, v: &str| -> Result<bool, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| err(k, v, "expected true or false".into()))
        };
        for (k, v) in extra {
            match k.as_str() {
                SEED => c.seed = num(k, v)?,
                FAULTS => {
                    c.faults = v
                        .split(';')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| Fault::parse(s).map_err(|e| err(k, v, e.to_string())))
                        .collect::<Result<_, _>>()?
                }
                ASYNC_MSG => c.async_msg = flag(k, v)?,
                INTERFACE_VERSION => {
                    c.interface_version =
                        u32::try_from(num(k, v)?).map_err(|_| err(k, v, "out of range".into()))?
                }
                DETERMINISTIC => c.deterministic = flag(k, v)?,
                COMM => c.comm = Some(v.clone()),
                HANG_BOUND_NS => c.hang_bound_ns = num(k, v)?,
                LATENCY => {
                    for part in v.split(',').filter(|s| !s.trim().is_empty()) {
                        let (name, ns) = part
                            .split_once('=')
                            .ok_or_else(|| err(k, v, format!("{part:?} is not NAME=NS")))?;
                        let ns = num(k, ns)?;
                        if name.trim() == "gpu_work" {
                            c.latency.gpu_work_ns = Some(ns);
                        } else {
                            c.latency.overrides.insert(name.trim().to_string(), ns);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

/// One emulated machine with a `/dev/dxg`. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Emulator {
    driver: Arc<Mutex<driver::Driver>>,
}

impl Emulator {
    /// Boots the emulated driver: adapters start (SETIOSPACEREGION, OPENADAPTER,
    /// GETINTERNALADAPTERINFO are sent and reported to `sink`).
    pub fn new(cfg: EmulatorConfig, sink: Box<dyn EventSink>) -> Emulator {
        let host = host::FakeHost::new(host::HostConfig::of(&cfg));
        Emulator::with_host(cfg, sink, Box::new(host))
    }

    /// Boots the emulated driver over another [`Host`] (e.g. a replay's recorded
    /// replies); `cfg`'s host settings (seed, latency, faults other than device removal)
    /// are then the host's business.
    pub fn with_host(
        cfg: EmulatorConfig,
        sink: Box<dyn EventSink>,
        host: Box<dyn Host>,
    ) -> Emulator {
        let removed_after = cfg.faults.iter().find_map(|f| match f {
            Fault::DeviceRemoved { after } => Some(*after),
            _ => None,
        });
        let bus = Arc::new(bus::Bus {
            recording: sink.enabled(),
            host: bus::Serial::new(host),
            sink: Mutex::new(sink),
            clock: Clock::new(cfg.deterministic),
            inbound: bus::Serial::new(VecDeque::new()),
            reply: bus::Serial::new(Vec::new()),
            ctx: bus::Serial::new(bus::CallCtx::default()),
        });
        let mut d = driver::Driver::new(
            bus,
            cfg.adapters,
            cfg.interface_version,
            cfg.async_msg,
            removed_after,
            cfg.hang_bound_ns,
        );
        d.comm_override = cfg.comm;
        Emulator {
            driver: Arc::new(Mutex::new(d)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, driver::Driver> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `open("/dev/dxg")` by process `tgid`; returns a file id.
    pub fn open(&self, tgid: u32, tid: u32) -> Result<u64, i64> {
        self.lock().open(tgid, tid)
    }

    /// Last `close()` of a file.
    pub fn close(&self, file: u64, tid: u32) {
        self.lock().close(file, tid)
    }

    /// Reports an open or close of a descriptor to the sink, stamped with the emulator's
    /// clock. The emulator itself sees files, not descriptor numbers; the front end that
    /// hands out the numbers (the in-process backend) reports them, so traces carry the
    /// fd records a replay needs to map descriptors.
    pub fn record_fd(&self, pid: u32, tid: u32, fd: i32, open: bool, path: &str, ret: i64) {
        let d = self.lock();
        if !d.bus.recording {
            return; // dropped by `Bus::emit`: not built (the path allocates)
        }
        let ts = d.bus.clock.now();
        d.bus.emit(Event::Fd(FdOpEvent {
            ts,
            pid,
            tid,
            fd,
            open,
            path: path.to_string(),
            ret,
        }));
    }

    /// One ioctl by `tgid`/`tid` on `file`, whose embedded pointers are resolved in `mem`.
    pub fn ioctl(
        &self,
        file: u64,
        tgid: u32,
        tid: u32,
        cmd: u32,
        arg: u64,
        mem: &mut dyn UserMemory,
    ) -> i64 {
        self.lock()
            .ioctl(file, tgid, tid, cmd, arg, &mut driver::Mem::new(mem))
    }

    /// [`Emulator::ioctl`] where accesses inside `vouched` are plain copies (the rest go
    /// through `mem`).
    #[allow(clippy::too_many_arguments)]
    fn ioctl_vouched(
        &self,
        file: u64,
        tgid: u32,
        tid: u32,
        cmd: u32,
        arg: u64,
        vouched: VouchedMemory<'_>,
        mem: &mut dyn UserMemory,
    ) -> i64 {
        self.lock().ioctl(
            file,
            tgid,
            tid,
            cmd,
            arg,
            &mut driver::Mem::with_vouched(vouched, mem),
        )
    }

    /// Installs (or with `None` removes) a [`driver::RequestPatch`] that alters the
    /// messages the driver logic builds from now on. Test-only in spirit: it is how the
    /// driver-in-the-loop replay is shown to catch a change in the driver logic.
    pub fn set_request_patch(&self, patch: Option<driver::RequestPatch>) {
        self.lock().request_patch = patch;
    }

    /// Current emulator time (ns).
    pub fn now(&self) -> u64 {
        self.lock().bus.clock.now()
    }
}

/// Memory of another process through `process_vm_readv` / `process_vm_writev` (needs the
/// same uid or CAP_SYS_PTRACE).
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    /// Target pid (any thread id of the process works).
    pub pid: i32,
}

impl ProcessMemory {
    fn xfer(
        &self,
        addr: u64,
        local: *mut libc::c_void,
        len: usize,
        write: bool,
    ) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        let liov = libc::iovec {
            iov_base: local,
            iov_len: len,
        };
        let riov = libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: the local iovec covers a live buffer of `len` bytes; the kernel checks
        // the remote range.
        let n = unsafe {
            if write {
                libc::process_vm_writev(self.pid, &liov, 1, &riov, 1, 0)
            } else {
                libc::process_vm_readv(self.pid, &liov, 1, &riov, 1, 0)
            }
        };
        if n == len as isize {
            Ok(())
        } else {
            Err(MemError::Fault {
                addr,
                len,
                source: (n < 0).then(io::Error::last_os_error),
            })
        }
    }
}

impl UserMemory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.xfer(addr, buf.as_mut_ptr().cast(), buf.len(), false)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.xfer(addr, data.as_ptr() as *mut libc::c_void, data.len(), true)
    }
}

fn gettid() -> u32 {
    thread_local! {
        // A syscall per ioctl otherwise.
        static TID: u32 = {
            // SAFETY: gettid has no preconditions.
            unsafe { libc::gettid() as u32 }
        };
    }
    TID.with(|t| *t)
}

/// The [`Backend`] over an [`Emulator`], in this process: `open` of any path whose file
/// name is `dxg` (e.g. `/dev/dxg`) opens the emulated device; fds are virtual numbers
/// from 1000 up (they are never real kernel fds).
pub struct EmulatorBackend {
    emu: Emulator,
    fds: LastHitMap<i32, u64>,
    next_fd: i32,
    pid: u32,
    /// `pid` is this process (calls carry the real thread id).
    own_pid: bool,
}

impl EmulatorBackend {
    /// Backend over `emu`, acting as this process.
    pub fn new(emu: Emulator) -> EmulatorBackend {
        EmulatorBackend {
            emu,
            fds: LastHitMap::default(),
            next_fd: 1000,
            pid: std::process::id(),
            own_pid: true,
        }
    }
    /// Backend acting as process `pid` (deterministic traces, several simulated clients).
    pub fn with_pid(emu: Emulator, pid: u32) -> EmulatorBackend {
        let mut b = EmulatorBackend::new(emu);
        b.pid = pid;
        b.own_pid = pid == std::process::id();
        b
    }
    /// The emulator.
    pub fn emulator(&self) -> &Emulator {
        &self.emu
    }
    fn tid(&self) -> u32 {
        if self.own_pid { gettid() } else { self.pid }
    }
}

impl Backend for EmulatorBackend {
    fn open(&mut self, path: &Path, _flags: i32) -> io::Result<i32> {
        // The common spelling first: a path ending in `/dxg` names a file `dxg`.
        let b = path.as_os_str().as_bytes();
        if !b.ends_with(b"/dxg") && path.file_name() != Some(std::ffi::OsStr::new("dxg")) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let f = self
            .emu
            .open(self.pid, self.tid())
            .map_err(|e| io::Error::from_raw_os_error(-e as i32))?;
        let fd = self.next_fd;
        self.next_fd += 1;
        self.fds.insert(fd, f);
        // Ioctl records name the descriptor by the emulator's file id (the driver sees
        // files, not descriptor numbers), so the fd records use the same id.
        let tid = self.tid();
        self.emu
            .record_fd(self.pid, tid, f as i32, true, "/dev/dxg", f as i64);
        Ok(fd)
    }

    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        let Some(f) = self.fds.get(fd) else {
            return -(libc::EBADF as i64);
        };
        let tid = self.tid();
        self.emu
            .ioctl(f, self.pid, tid, cmd, arg, &mut InProcessMemory)
    }

    unsafe fn ioctl_live(&mut self, fd: i32, cmd: u32, arg: u64, live: &[(u64, usize)]) -> i64 {
        let Some(f) = self.fds.get(fd) else {
            return -(libc::EBADF as i64);
        };
        let tid = self.tid();
        // SAFETY: the caller vouches for `live` for the whole call.
        let vouched = unsafe { VouchedMemory::new(live) };
        self.emu
            .ioctl_vouched(f, self.pid, tid, cmd, arg, vouched, &mut InProcessMemory)
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn close(&mut self, fd: i32) -> io::Result<()> {
        let f = self
            .fds
            .remove(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        self.emu.close(f, self.tid());
        let tid = self.tid();
        self.emu
            .record_fd(self.pid, tid, f as i32, false, "/dev/dxg", 0);
        Ok(())
    }
}

impl Drop for EmulatorBackend {
    fn drop(&mut self) {
        let mut fds: Vec<i32> = self.fds.keys().copied().collect();
        fds.sort_unstable(); // closed in fd order, whatever the map's order
        for fd in fds {
            let _ = self.close(fd);
        }
    }
}
