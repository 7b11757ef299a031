//! Client scenarios written against the [`Backend`] trait, so the same code runs
//! in-process over the emulator, through the FUSE device file, or on a real `/dev/dxg`.
//!
//! Every scenario issues its ioctls through a [`Runner`], which looks request codes up in
//! the device table (never a second table), logs each call (`ioctl`, `code`, `ret`) and
//! keeps the results so runs can be compared. Every struct and pointed-to buffer goes
//! through the fixed-address [`arena`], so traces of a scenario are reproducible.

pub mod arena;
mod dxg;
pub mod kvm;

use std::io::Write;
use std::path::Path;

use crate::backend::Backend;
use crate::layout::Pod;
use crate::schema::lookup_name;

/// Errors of a scenario.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Opening the device failed.
    #[error("cannot open {path}")]
    Open {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A call that must succeed did not.
    #[error("{ioctl} returned {ret} ({what})")]
    Call {
        /// Ioctl name.
        ioctl: String,
        /// Full return value.
        ret: i64,
        /// What the scenario was doing.
        what: String,
    },
    /// The scenario's own check failed.
    #[error("check failed: {0}")]
    Check(String),
    /// Writing the log failed.
    #[error("cannot write the call log")]
    Log(#[source] std::io::Error),
    /// Unknown scenario name.
    #[error("unknown scenario {0:?} (see `dxtrace workload --list`)")]
    Unknown(String),
}

/// One logged call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallLog {
    /// Ioctl name (`LX_DXCREATEDEVICE`).
    pub ioctl: String,
    /// Request code as `0x…`.
    pub code: String,
    /// Full return value.
    pub ret: i64,
    /// The argument struct after the call, hex (for in-process vs FUSE comparisons).
    pub out: String,
}

/// Issues a scenario's calls and logs them.
pub struct Runner<'a, 'l> {
    backend: &'a mut dyn Backend,
    /// Device fd.
    pub fd: i32,
    log: Option<&'l mut dyn Write>,
    /// Every call made, in order.
    pub calls: Vec<CallLog>,
    /// Text the scenario prints (what it did).
    pub notes: Vec<String>,
}

impl<'a, 'l> Runner<'a, 'l> {
    /// Runner over an already-open fd.
    pub fn new(
        backend: &'a mut dyn Backend,
        fd: i32,
        log: Option<&'l mut dyn Write>,
    ) -> Runner<'a, 'l> {
        Runner {
            backend,
            fd,
            log,
            calls: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Issues ioctl `name` (table name) with `arg` as its struct; returns the full value.
    pub fn call<T: Pod>(&mut self, name: &str, arg: &mut T) -> Result<i64, WorkloadError> {
        let e = lookup_name(name)
            .ok_or_else(|| WorkloadError::Check(format!("{name} is not in any table")))?;
        if e.size() != size_of::<T>() {
            return Err(WorkloadError::Check(format!(
                "{name}: struct is {} bytes, table says {}",
                size_of::<T>(),
                e.size()
            )));
        }
        // SAFETY: `arg` is a live, correctly sized struct; every pointer the scenarios put
        // in it targets a live buffer (or its arena copy) of the size the struct states;
        // the staged buffers' owners are still live locals of the calling scenario.
        let ret = unsafe {
            let staged = arena::stage((arg as *mut T).cast(), size_of::<T>());
            let ret = self.issue(e.code, staged);
            arena::sync_back();
            ret
        };
        self.record(e.name, e.code, ret, arg.as_bytes())?;
        Ok(ret)
    }

    /// Issues a raw request code (error paths: wrong sizes, unknown numbers).
    pub fn raw(&mut self, label: &str, code: u32, arg: u64) -> Result<i64, WorkloadError> {
        // `_IO` requests carry a plain value, never an address: only sized ones are staged.
        let size = ((code >> 16) & 0x3fff) as usize;
        // SAFETY: the scenarios pass either 0 or the address of a live buffer of at least
        // the size encoded in `code`.
        let ret = unsafe {
            let staged = if arg != 0 && size > 0 {
                arena::stage(arg as *mut u8, size)
            } else {
                arg
            };
            let ret = self.issue(code, staged);
            arena::sync_back();
            ret
        };
        self.record(label, code, ret, &[])?;
        Ok(ret)
    }

    /// Issues one ioctl, telling an in-process backend that this thread's staging arena
    /// is live memory (it then copies struct and buffers directly instead of through a
    /// checked `process_vm_readv/writev` per access; other addresses, such as the
    /// error-path scenarios' bad pointers, still go through the checked path).
    ///
    /// # Safety
    /// As [`Backend::ioctl`].
    unsafe fn issue(&mut self, code: u32, arg: u64) -> i64 {
        let live = arena::base().map(|b| (b, arena::ARENA_SIZE));
        // SAFETY: the caller's contract for `arg`; the arena is this thread's own
        // read-write mapping, untouched by anything else during the call.
        unsafe { self.backend.ioctl_live(self.fd, code, arg, live.as_slice()) }
    }

    /// Like [`Runner::call`] but fails the scenario unless the return is ≥ 0.
    pub fn ok<T: Pod>(
        &mut self,
        name: &str,
        arg: &mut T,
        what: &str,
    ) -> Result<i64, WorkloadError> {
        let r = self.call(name, arg)?;
        if r < 0 {
            return Err(WorkloadError::Call {
                ioctl: name.into(),
                ret: r,
                what: what.into(),
            });
        }
        Ok(r)
    }

    /// Fails the scenario unless `name` returns exactly `want`.
    pub fn expect<T: Pod>(
        &mut self,
        name: &str,
        arg: &mut T,
        want: i64,
        what: &str,
    ) -> Result<(), WorkloadError> {
        let r = self.call(name, arg)?;
        if r != want {
            return Err(WorkloadError::Check(format!(
                "{what}: {name} returned {r}, expected {want}"
            )));
        }
        Ok(())
    }

    fn record(&mut self, name: &str, code: u32, ret: i64, out: &[u8]) -> Result<(), WorkloadError> {
        let c = CallLog {
            ioctl: name.to_string(),
            code: format!("{code:#010x}"),
            ret,
            out: hex(out),
        };
        if let Some(w) = self.log.as_mut() {
            let line = serde_json::to_string(&c)
                .map_err(|e| WorkloadError::Log(std::io::Error::other(e)))?;
            writeln!(w, "{line}").map_err(WorkloadError::Log)?;
        }
        self.calls.push(c);
        Ok(())
    }

    /// Adds a line to what the scenario reports.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

/// Lower-case hex of `bytes` (one allocation; formatting each byte as its own `String`
/// dominated the workload's own call rate).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A scenario: name, one-line description, device, body.
pub struct Scenario {
    /// Name (`canonical`).
    pub name: &'static str,
    /// What it does.
    pub about: &'static str,
    /// Device schema it targets (`dxg` / `kvm`).
    pub device: &'static str,
    /// Body.
    pub run: fn(&mut Runner<'_, '_>) -> Result<(), WorkloadError>,
}

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "canonical",
        about: "the typical session of reference §5.3, open to teardown",
        device: "dxg",
        run: dxg::canonical,
    },
    Scenario {
        name: "frame-loop",
        about: "a render frame loop: submits, GPU signals and CPU fence waits",
        device: "dxg",
        run: dxg::frame_loop,
    },
    Scenario {
        name: "compute-loop",
        about: "a compute loop on a hardware queue with progress fences",
        device: "dxg",
        run: dxg::compute_loop,
    },
    Scenario {
        name: "resource-churn",
        about: "allocations created, made resident, mapped, prioritised, offered, reclaimed, destroyed",
        device: "dxg",
        run: dxg::resource_churn,
    },
    Scenario {
        name: "multi-submit",
        about: "several submitter contexts interleaving submits and signals on shared fences",
        device: "dxg",
        run: dxg::multi_submit,
    },
    Scenario {
        name: "queries",
        about: "adapter, memory, clock, statistics, priority and device-state queries",
        device: "dxg",
        run: dxg::queries,
    },
    Scenario {
        name: "error-paths",
        about: "bad handles, limits exceeded, buffers too small, wrong request codes",
        device: "dxg",
        run: dxg::error_paths,
    },
    Scenario {
        name: "kvm-smoke",
        about: "a KVM VM running `mov $42,%eax; hlt` in real mode",
        device: "kvm",
        run: kvm::smoke,
    },
];

/// Scenario by name.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Opens `device` with `backend`, runs scenario `name`, closes. Returns the calls made and
/// the scenario's notes.
pub fn run(
    name: &str,
    backend: &mut dyn Backend,
    device: &Path,
    log: Option<&mut dyn Write>,
) -> Result<(Vec<CallLog>, Vec<String>), WorkloadError> {
    let s = scenario(name).ok_or_else(|| WorkloadError::Unknown(name.into()))?;
    let flags = libc::O_RDWR | libc::O_CLOEXEC;
    let fd = backend
        .open(device, flags)
        .map_err(|source| WorkloadError::Open {
            path: device.display().to_string(),
            source,
        })?;
    arena::reset();
    let (res, calls, notes) = {
        let mut r = Runner::new(backend, fd, log);
        let res = (s.run)(&mut r);
        (res, r.calls, r.notes)
    };
    let _ = backend.close(fd);
    res.map(|_| (calls, notes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_matches_per_byte_formatting() {
        let b: Vec<u8> = (0..=255).collect();
        let want: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(super::hex(&b), want);
    }
}
