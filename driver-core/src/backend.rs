//! The [`Backend`] trait — the one choke point through which this project issues ioctls —
//! the real-device backend, and [`UserMemory`], the view of a process's memory that the
//! pointer walk, the emulator and the replayer use.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A device an ioctl stream can be run against (the real driver, the emulator, a fake).
///
/// `ioctl` returns the **full** syscall value: the raw result on success (0, a positive
/// NTSTATUS, an fd…) and `-errno` on failure, so that positive and raw NTSTATUS values
/// survive (DESIGN principle 5).
pub trait Backend {
    /// Opens a device node; returns the fd.
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<i32>;
    /// Issues an ioctl. `arg` is an address in the current process (or a plain value for
    /// `_IO` requests).
    ///
    /// # Safety
    /// `arg` must be valid for the request's struct size and for every buffer the struct
    /// points to, in the directions the driver uses them.
    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64;
    /// Closes an fd.
    fn close(&mut self, fd: i32) -> io::Result<()>;
    /// [`Backend::ioctl`] for callers that know where the call's memory is: `live` lists
    /// ranges `(address, length)` of this process that stay valid for reads and writes
    /// for the whole call (the argument struct and every buffer it points to). An
    /// in-process backend (the emulator) may access them with plain copies instead of
    /// checked ones; a real device ignores them.
    ///
    /// # Safety
    /// As [`Backend::ioctl`], and every range in `live` must be valid as stated.
    unsafe fn ioctl_live(&mut self, fd: i32, cmd: u32, arg: u64, live: &[(u64, usize)]) -> i64 {
        let _ = live;
        // SAFETY: forwarded; the caller upholds the contract.
        unsafe { self.ioctl(fd, cmd, arg) }
    }
    /// The process id the device sees the calls come from (what a driver reports in
    /// process lists such as dxg ENUMPROCESSES). The replay maps a trace's recorded pid
    /// to this one.
    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// The real kernel driver, through libc. The only `unsafe` ioctl call site.
#[derive(Debug, Default)]
pub struct RealDevice;

impl RealDevice {
    /// New backend.
    pub fn new() -> Self {
        RealDevice
    }
}

impl Backend for RealDevice {
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    unsafe fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> i64 {
        // The raw syscall (not libc's ioctl wrapper) keeps values outside -4095..-1 intact
        // and lets us return -errno ourselves.
        // SAFETY: the caller guarantees `arg` is valid for the request.
        let r = unsafe {
            libc::syscall(
                libc::SYS_ioctl,
                fd as libc::c_long,
                cmd as libc::c_ulong,
                arg as libc::c_ulong,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            -(e as i64)
        } else {
            r as i64
        }
    }

    fn close(&mut self, fd: i32) -> io::Result<()> {
        // SAFETY: closing an fd has no memory-safety preconditions.
        if unsafe { libc::close(fd) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Errors of [`UserMemory`].
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// The range is not (fully) mapped / readable.
    #[error("cannot access {len} bytes at {addr:#x}")]
    Fault {
        /// Address.
        addr: u64,
        /// Length.
        len: usize,
        /// OS error, if any.
        #[source]
        source: Option<io::Error>,
    },
}

/// Read / write access to a process's memory at user addresses.
pub trait UserMemory {
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes `data` at `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError>;
    /// Reads `len` bytes into a new vector.
    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

/// The current process's memory, accessed with `process_vm_readv/writev` on our own pid,
/// so a bad address yields [`MemError::Fault`] instead of a crash.
#[derive(Debug, Default)]
pub struct InProcessMemory;

impl InProcessMemory {
    fn xfer(addr: u64, local: *mut libc::c_void, len: usize, write: bool) -> Result<(), MemError> {
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
        // SAFETY: the local iovec covers a live buffer of `len` bytes owned by the caller;
        // the remote side is validated by the kernel (EFAULT on bad addresses).
        let n = unsafe {
            if write {
                libc::process_vm_writev(libc::getpid(), &liov, 1, &riov, 1, 0)
            } else {
                libc::process_vm_readv(libc::getpid(), &liov, 1, &riov, 1, 0)
            }
        };
        if n == len as isize {
            Ok(())
        } else {
            let source = if n < 0 {
                Some(io::Error::last_os_error())
            } else {
                None
            };
            Err(MemError::Fault { addr, len, source })
        }
    }
}

impl UserMemory for InProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Self::xfer(addr, buf.as_mut_ptr().cast(), buf.len(), false)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        Self::xfer(addr, data.as_ptr() as *mut libc::c_void, data.len(), true)
    }
}

/// This process's memory where the caller vouches for some ranges: accesses that fall
/// inside one of them are plain copies (no syscall); anything else goes through
/// [`InProcessMemory`], so a bad address is still an error and never a crash.
#[derive(Debug)]
pub struct VouchedMemory<'a> {
    live: &'a [(u64, usize)],
}

impl<'a> VouchedMemory<'a> {
    /// Over `live` ranges `(address, length)`.
    ///
    /// # Safety
    /// Every range must be readable and writable memory of this process, not otherwise
    /// borrowed, for as long as the value is used.
    pub unsafe fn new(live: &'a [(u64, usize)]) -> Self {
        VouchedMemory { live }
    }
    /// No vouched ranges: every access is checked.
    pub const fn none() -> VouchedMemory<'static> {
        VouchedMemory { live: &[] }
    }
    fn inside(&self, addr: u64, len: usize) -> bool {
        self.live.iter().any(|(a, l)| {
            addr >= *a
                && (addr - a)
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= *l as u64)
        })
    }
    /// `addr` as a pointer when the `len` bytes there lie inside one vouched range (valid
    /// for reads and writes as the constructor's caller promised), else `None`: for
    /// callers that copy small values in and out without going through a byte buffer.
    #[inline]
    pub fn at(&self, addr: u64, len: usize) -> Option<*mut u8> {
        self.inside(addr, len).then_some(addr as usize as *mut u8)
    }
}

impl UserMemory for VouchedMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if self.inside(addr, buf.len()) {
            // SAFETY: inside a range the constructor's caller vouched for.
            unsafe {
                std::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len())
            };
            return Ok(());
        }
        InProcessMemory.read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if self.inside(addr, data.len()) {
            // SAFETY: inside a range the constructor's caller vouched for.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
            return Ok(());
        }
        InProcessMemory.write(addr, data)
    }
}

/// A borrowed memory is a memory (so callers can lend theirs to a generic user).
impl<T: UserMemory + ?Sized> UserMemory for &mut T {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        (**self).write(addr, data)
    }
}

/// A sparse fake address space made of regions (for tests, the emulator and replay of
/// recorded buffers). Accesses must fall inside one region.
#[derive(Debug, Default, Clone)]
pub struct RegionMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl RegionMemory {
    /// Empty address space.
    pub fn new() -> Self {
        Self::default()
    }
    /// Maps `data` at `addr` (replacing a region that starts there).
    pub fn map(&mut self, addr: u64, data: Vec<u8>) {
        self.regions.insert(addr, data);
    }
    fn find(&self, addr: u64, len: usize) -> Option<(u64, usize)> {
        let (base, r) = self.regions.range(..=addr).next_back()?;
        let off = (addr - base) as usize;
        (off.checked_add(len)? <= r.len()).then_some((*base, off))
    }
}

impl UserMemory for RegionMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (base, off) = self.find(addr, buf.len()).ok_or(MemError::Fault {
            addr,
            len: buf.len(),
            source: None,
        })?;
        buf.copy_from_slice(&self.regions[&base][off..off + buf.len()]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let (base, off) = self.find(addr, data.len()).ok_or(MemError::Fault {
            addr,
            len: data.len(),
            source: None,
        })?;
        self.regions.get_mut(&base).expect("found above")[off..off + data.len()]
            .copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_memory_reads_and_faults() {
        let v = [1u8, 2, 3, 4];
        let m = InProcessMemory;
        assert_eq!(m.read_vec(v.as_ptr() as u64, 4).expect("readable"), v);
        assert!(m.read_vec(8, 4).is_err(), "page 0 must fault, not crash");
    }

    #[test]
    fn real_device_returns_minus_errno() {
        let mut d = RealDevice::new();
        // SAFETY: fd -1 never reaches a driver.
        let r = unsafe { d.ioctl(-1, 0xC00C_4701, 0) };
        assert_eq!(r, -(libc::EBADF as i64));
    }

    #[test]
    fn region_memory_bounds() {
        let mut m = RegionMemory::new();
        m.map(0x1000, vec![0; 16]);
        m.write(0x1004, &[9, 9]).expect("inside");
        assert_eq!(m.read_vec(0x1004, 2).expect("inside"), vec![9, 9]);
        assert!(m.read_vec(0x100f, 2).is_err());
    }
}
