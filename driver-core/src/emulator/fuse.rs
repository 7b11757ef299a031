//! The emulated `/dev/dxg` as a file on a FUSE mount (`dxtrace emulate --mount DIR`).
//!
//! Unmodified programs `open()` `DIR/dxg` and make real `ioctl()` syscalls on it; the
//! kernel forwards each one to this daemon, which runs it through the [`Emulator`] and
//! answers. How the pieces map:
//!
//! * FUSE `open` / `release` of the file → [`Emulator::open`] / [`Emulator::close`], per
//!   caller process (the FUSE request carries the calling *thread* id; the process is
//!   read from `/proc/TID/status`).
//! * FUSE `ioctl` → [`Emulator::ioctl`]. A FUSE file on a normal mount only gets
//!   *restricted* ioctls: the kernel copies `_IOC_SIZE(cmd)` bytes in (`_IOC_WRITE`) and
//!   out (`_IOC_READ`) and never tells the daemon the argument address. The address is
//!   read from `/proc/TID/syscall` (the caller is blocked inside the ioctl), so the
//!   emulator sees and records the real `arg`. The struct itself is served from the
//!   bytes the kernel passed in ([`Overlay`]) and the final bytes are the reply, because
//!   the kernel copies the reply over the caller's struct. Embedded pointers (allocation
//!   arrays, private data…) are followed in the caller's memory with
//!   `process_vm_readv` / `process_vm_writev` ([`ProcessMemory`]).
//!
//! Limits (also in `dxtrace emulate --help` and the README):
//! * `DIR/dxg` is a regular file, not a character device; `stat` shows `S_IFREG`.
//! * No device `mmap`: the fence CPU pages and `LOCK2` mappings the emulator reports are
//!   addresses in no process; the client cannot poll fence values in memory.
//! * The ioctl result is an `i32` in the FUSE protocol: 0, positive NTSTATUS success
//!   codes, `-errno` and the raw NTSTATUS quirk (`0xC000000D` comes back as the negative
//!   `int` the real driver returns) all fit; a value outside `i32` becomes `-EOVERFLOW`.
//! * Following pointers needs the same uid as the caller or `CAP_SYS_PTRACE`.
//! * The kernel copies the struct before the daemon sees the call, so a bad `arg` is
//!   `-EFAULT` from the kernel even where the real driver would fail another check first.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags,
    LockOwner, OpenFlags, ReplyAttr, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    Request,
};

use super::{Emulator, ProcessMemory};
use crate::backend::{MemError, UserMemory};

/// Name of the device file inside the mount directory.
pub const DEVICE_NAME: &str = "dxg";

const DEV_INO: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(3600);

fn attr(ino: INodeNo, kind: FileType, perm: u16, uid: u32, gid: u32) -> FileAttr {
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

/// The thread group (process) of thread `tid`, from `/proc/TID/status`.
fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The argument of the ioctl thread `tid` is blocked in, from `/proc/TID/syscall`
/// (`NR fd cmd arg …`). `None` when the thread is not in `ioctl(…, cmd, …)`.
fn ioctl_arg_of(tid: u32, cmd: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    let f: Vec<&str> = s.split_whitespace().collect();
    let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
    if f.first()?.parse::<i64>().ok()? != libc::SYS_ioctl {
        return None;
    }
    (hex(f.get(2)?)? as u32 == cmd).then(|| hex(f.get(3)?))?
}

/// The caller's memory with the ioctl struct `[base, base+buf.len())` replaced by the
/// bytes the kernel handed over: reads and writes of that range go to `buf` (which
/// becomes the reply), everything else to the process.
pub struct Overlay<'a, M = ProcessMemory> {
    /// Struct address in the caller.
    pub base: u64,
    /// Struct bytes.
    pub buf: &'a mut Vec<u8>,
    /// The caller's memory (`None`: no pointer can be followed).
    pub inner: Option<M>,
}

impl<M> Overlay<'_, M> {
    /// Splits `[addr, addr+len)` into the part before, inside and after the struct.
    fn split(&self, addr: u64, len: usize) -> [(u64, usize, bool); 3] {
        let end = addr.saturating_add(len as u64);
        let (b, e) = (self.base, self.base + self.buf.len() as u64);
        let lo = addr.clamp(b, e);
        let hi = end.clamp(b, e);
        let (lo, hi) = if hi > lo { (lo, hi) } else { (end, end) };
        [
            (addr, (lo.min(end) - addr) as usize, false),
            (lo, (hi - lo) as usize, true),
            (hi.max(addr), (end - hi.max(addr)) as usize, false),
        ]
    }
    fn no_memory(addr: u64, len: usize) -> MemError {
        MemError::Fault {
            addr,
            len,
            source: None,
        }
    }
}

impl<M: UserMemory> UserMemory for Overlay<'_, M> {
    fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        let mut off = 0;
        for (a, n, mine) in self.split(addr, out.len()) {
            if n == 0 {
                continue;
            }
            let dst = &mut out[off..off + n];
            if mine {
                let s = (a - self.base) as usize;
                dst.copy_from_slice(&self.buf[s..s + n]);
            } else {
                self.inner
                    .as_ref()
                    .ok_or_else(|| Self::no_memory(a, n))?
                    .read(a, dst)?;
            }
            off += n;
        }
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let mut off = 0;
        for (a, n, mine) in self.split(addr, data.len()) {
            if n == 0 {
                continue;
            }
            let src = &data[off..off + n];
            if mine {
                let s = (a - self.base) as usize;
                self.buf[s..s + n].copy_from_slice(src);
            } else {
                self.inner
                    .as_mut()
                    .ok_or_else(|| Self::no_memory(a, n))?
                    .write(a, src)?;
            }
            off += n;
        }
        Ok(())
    }
}

/// The FUSE `ioctl` request path without the FUSE plumbing: `cmd` and the struct bytes
/// the kernel copied in (`in_data`, for `_IOC_WRITE`), the argument address if it could
/// be read (`arg`), and the caller's memory for embedded pointers. Returns the result
/// and the bytes to copy back (at most `out_size`, for `_IOC_READ`), or an errno when
/// the result cannot travel in FUSE's `i32`. Separate so the fuzzer drives it.
#[allow(clippy::too_many_arguments)]
pub fn serve_ioctl<M: UserMemory>(
    emu: &Emulator,
    file: u64,
    tgid: u32,
    tid: u32,
    cmd: u32,
    in_data: &[u8],
    out_size: u32,
    arg: Option<u64>,
    mem: Option<M>,
) -> Result<(i32, Vec<u8>), i32> {
    let size = ((cmd >> 16) & 0x3fff) as usize;
    let dir = cmd >> 30;
    let mut ov = Overlay {
        // Without the real address (no /proc access) the struct is still served, at a
        // page-0 address no embedded pointer can alias.
        base: arg.unwrap_or(0),
        buf: &mut vec![0u8; size],
        inner: mem,
    };
    if dir & 1 != 0 {
        // _IOC_WRITE: the kernel copied the struct in for us.
        let n = in_data.len().min(size);
        ov.buf[..n].copy_from_slice(&in_data[..n]);
    } else if let (Some(a), Some(m)) = (arg, ov.inner.as_ref()) {
        // _IOC_READ only: the driver may still look at the caller's bytes.
        let _ = m.read(a, ov.buf);
    }
    let base = ov.base;
    let ret = emu.ioctl(file, tgid, tid, cmd, base, &mut ov);
    let ret = i32::try_from(ret).map_err(|_| libc::EOVERFLOW)?;
    let mut out = std::mem::take(ov.buf);
    out.truncate(if dir & 2 != 0 {
        (out_size as usize).min(size)
    } else {
        0
    });
    Ok((ret, out))
}

/// The FUSE filesystem: a directory holding one file, `dxg`.
pub struct DxgFs {
    emu: Emulator,
    uid: u32,
    gid: u32,
    /// Open files (FUSE file handle = emulator file id) → calling process.
    files: Mutex<HashMap<u64, u32>>,
}

impl DxgFs {
    /// Filesystem over `emu`, owned by the daemon's uid/gid.
    pub fn new(emu: Emulator) -> DxgFs {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        DxgFs {
            emu,
            uid,
            gid,
            files: Mutex::new(HashMap::new()),
        }
    }
    fn dir_attr(&self) -> FileAttr {
        attr(
            INodeNo::ROOT,
            FileType::Directory,
            0o755,
            self.uid,
            self.gid,
        )
    }
    fn dev_attr(&self) -> FileAttr {
        attr(DEV_INO, FileType::RegularFile, 0o666, self.uid, self.gid)
    }
}

impl Filesystem for DxgFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == DEVICE_NAME {
            reply.entry(&TTL, &self.dev_attr(), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT => reply.attr(&TTL, &self.dir_attr()),
            DEV_INO => reply.attr(&TTL, &self.dev_attr()),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            reply.error(Errno::ENOTDIR);
            return;
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DEV_INO, FileType::RegularFile, DEVICE_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != DEV_INO {
            reply.error(Errno::EISDIR);
            return;
        }
        let tid = req.pid();
        let tgid = tgid_of(tid).unwrap_or(tid);
        match self.emu.open(tgid, tid) {
            Ok(f) => {
                self.files
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(f, tgid);
                // DIRECT_IO: no page cache for a device-like file.
                reply.opened(FileHandle(f), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(Errno::from_i32((-e) as i32)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() of one fd; the device only cares about the last one (release).
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes (ls/SELinux probe for them on every lookup).
        reply.error(Errno::ENODATA);
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let f: u64 = fh.0;
        let known = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&f);
        if known.is_some() {
            // RELEASE comes from whatever thread dropped the last reference (often 0 when
            // the process has exited); the emulator only uses it to stamp events.
            self.emu.close(f, req.pid());
        }
        reply.ok();
    }

    fn ioctl(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let tid = req.pid();
        let f: u64 = fh.0;
        let Some(tgid) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f)
            .copied()
        else {
            reply.error(Errno::EBADF);
            return;
        };
        let arg = ioctl_arg_of(tid, cmd);
        let mem = ProcessMemory { pid: tid as i32 };
        match serve_ioctl(
            &self.emu,
            f,
            tgid,
            tid,
            cmd,
            in_data,
            out_size,
            arg,
            Some(mem),
        ) {
            Ok((ret, out)) => reply.ioctl(ret, &out),
            Err(errno) => reply.error(Errno::from_i32(errno)),
        }
    }
}

/// A mounted emulated device. Dropping it unmounts.
pub struct FuseMount {
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

impl FuseMount {
    /// Mounts a [`DxgFs`] over `emu` on `dir` (which must exist) and serves it from a
    /// background thread.
    pub fn mount(emu: Emulator, dir: &Path) -> io::Result<FuseMount> {
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            fuser::MountOption::FSName("dxtrace-emulator".into()),
            fuser::MountOption::Subtype("dxg".into()),
            fuser::MountOption::NoExec,
            fuser::MountOption::NoSuid,
        ];
        // Other users' programs may open the device when we are root (allow_other needs
        // `user_allow_other` in /etc/fuse.conf otherwise).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cfg.acl = fuser::SessionACL::All;
        }
        // Several threads so one client blocked in a wait does not stall the others'
        // opens and releases; the emulator serialises ioctls itself.
        cfg.n_threads = Some(4);
        let session = fuser::spawn_mount(DxgFs::new(emu), dir, &cfg)?;
        Ok(FuseMount {
            session: Some(session),
            dir: dir.to_path_buf(),
        })
    }

    /// Path of the device file (`DIR/dxg`).
    pub fn device(&self) -> PathBuf {
        self.dir.join(DEVICE_NAME)
    }

    /// Unmounts and waits for the serving thread.
    pub fn unmount(mut self) -> io::Result<()> {
        self.session.take().map_or(Ok(()), |s| s.umount_and_join())
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_splits_struct_and_process_memory() {
        let outside = [1u8, 2, 3, 4];
        let mut buf = vec![9u8; 4];
        let base = outside.as_ptr() as u64 + 2;
        let mut ov = Overlay {
            base,
            buf: &mut buf,
            inner: Some(ProcessMemory {
                pid: std::process::id() as i32,
            }),
        };
        let mut got = [0u8; 4];
        ov.read(outside.as_ptr() as u64, &mut got)
            .expect("readable");
        assert_eq!(got, [1, 2, 9, 9], "the struct range comes from the overlay");
        ov.write(base, &[5, 6]).expect("inside");
        assert_eq!(buf, vec![5, 6, 9, 9]);
    }
}
