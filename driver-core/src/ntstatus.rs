//! NTSTATUS names, the driver's NTSTATUS → errno mapping (`ntstatus2int`), errno names,
//! and the classification of a full 64-bit ioctl return value.

use serde::Serialize;

/// NTSTATUS values the driver uses (reference §2.3), `(value, name)`.
pub const NTSTATUS_NAMES: &[(u32, &str)] = &[
    (0x0000_0000, "STATUS_SUCCESS"),
    (0x0000_0102, "STATUS_TIMEOUT"),
    (0x0000_0103, "STATUS_PENDING"),
    (0xC000_0001, "STATUS_UNSUCCESSFUL"),
    (0xC000_0002, "STATUS_NOT_IMPLEMENTED"),
    (0xC000_0008, "STATUS_INVALID_HANDLE"),
    (0xC000_000D, "STATUS_INVALID_PARAMETER"),
    (0xC000_0017, "STATUS_NO_MEMORY"),
    (0xC000_001D, "STATUS_ILLEGAL_INSTRUCTION"),
    (0xC000_0022, "STATUS_ACCESS_DENIED"),
    (0xC000_0023, "STATUS_BUFFER_TOO_SMALL"),
    (0xC000_0024, "STATUS_OBJECT_TYPE_MISMATCH"),
    (0xC000_0033, "STATUS_OBJECT_NAME_INVALID"),
    (0xC000_0034, "STATUS_OBJECT_NAME_NOT_FOUND"),
    (0xC000_0035, "STATUS_OBJECT_NAME_COLLISION"),
    (0xC000_00BB, "STATUS_NOT_SUPPORTED"),
    (0xC000_02B6, "STATUS_DEVICE_REMOVED"),
    (0xC01E_0102, "STATUS_GRAPHICS_ALLOCATION_BUSY"),
];

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: u32 = 0;
/// `STATUS_TIMEOUT` (a success code: ≥ 0).
pub const STATUS_TIMEOUT: u32 = 0x102;
/// `STATUS_PENDING` (a success code, returned as a positive ioctl value).
pub const STATUS_PENDING: u32 = 0x103;
/// `STATUS_INVALID_PARAMETER`, also returned raw by CREATEALLOCATION.
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;

/// Name of an NTSTATUS value, if known.
pub fn ntstatus_name(v: u32) -> Option<&'static str> {
    NTSTATUS_NAMES
        .iter()
        .find(|(x, _)| *x == v)
        .map(|(_, n)| *n)
}

/// `NAME (0x…)` or `0x…`.
pub fn render_ntstatus(v: u32) -> String {
    match ntstatus_name(v) {
        Some(n) => format!("{n} ({v:#010x})"),
        None => format!("{v:#010x}"),
    }
}

/// The driver's `ntstatus2int`: success codes (≥ 0 as i32) pass through unchanged,
/// failures become a negative errno.
pub fn ntstatus_to_errno(status: u32) -> i32 {
    let s = status as i32;
    if s >= 0 {
        return s;
    }
    -(match status {
        0xC000_0035 => libc::EEXIST,
        0xC000_0017 => libc::ENOMEM,
        0xC000_000D => libc::EINVAL,
        0xC000_0033 | 0xC000_0034 => libc::ENOENT,
        0xC000_0023 => libc::EOVERFLOW,
        0xC000_02B6 => libc::ENODEV,
        0xC000_0022 => libc::EACCES,
        0xC000_00BB => libc::EPERM,
        0xC000_001D => libc::EOPNOTSUPP,
        0xC000_0008 => libc::EBADF,
        0xC01E_0102 => libc::EINPROGRESS,
        0xC000_0024 => libc::EPROTOTYPE,
        0xC000_0002 => libc::EPERM,
        _ => libc::EINVAL,
    })
}

const ERRNO_NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::ENOEXEC, "ENOEXEC"),
    (libc::EBADF, "EBADF"),
    (libc::ECHILD, "ECHILD"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EBADE, "EBADE"),
    (libc::ENODATA, "ENODATA"),
    (libc::ETIME, "ETIME"),
    (libc::EPROTO, "EPROTO"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::EPROTOTYPE, "EPROTOTYPE"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::EINPROGRESS, "EINPROGRESS"),
    (libc::ECANCELED, "ECANCELED"),
    (libc::ENOTRECOVERABLE, "ENOTRECOVERABLE"),
    (512, "ERESTARTSYS"),
];

/// Symbolic name of an errno value (positive), if known.
pub fn errno_name(e: i32) -> Option<&'static str> {
    ERRNO_NAMES.iter().find(|(x, _)| *x == e).map(|(_, n)| *n)
}

/// What a full 64-bit ioctl return value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReturnValue {
    /// 0.
    Success,
    /// Positive value. For dxg this is an NTSTATUS success code (e.g. 0x103
    /// STATUS_PENDING); for other devices a plain value (an fd, a size, a version…).
    Positive {
        /// The value.
        value: i64,
    },
    /// -errno (-4095..=-1), i.e. `ioctl()` returned -1 and set errno.
    Errno {
        /// The positive errno.
        errno: i32,
    },
    /// A raw failure NTSTATUS passed through as the syscall value (the CREATEALLOCATION
    /// quirk): either 0xC000000D as a positive i64 or the same bits as a negative i32.
    RawNtStatus {
        /// The NTSTATUS bits.
        status: u32,
    },
    /// Anything else.
    Other {
        /// The value.
        value: i64,
    },
}

/// Classifies a full syscall return value (raw `syscall(SYS_ioctl)` result, or
/// `-errno` when libc returned -1).
pub fn classify_return(ret: i64) -> ReturnValue {
    match ret {
        0 => ReturnValue::Success,
        -4095..=-1 => ReturnValue::Errno {
            errno: (-ret) as i32,
        },
        0x8000_0000..=0xFFFF_FFFF => ReturnValue::RawNtStatus { status: ret as u32 },
        r if r > 0 => ReturnValue::Positive { value: r },
        r if r >= i32::MIN as i64 => ReturnValue::RawNtStatus {
            status: r as i32 as u32,
        },
        r => ReturnValue::Other { value: r },
    }
}

/// Renders a full ioctl return value. `ntstatus_success` says whether positive values are
/// NTSTATUS success codes (true for dxg).
pub fn render_return(ret: i64, ntstatus_success: bool) -> String {
    match classify_return(ret) {
        ReturnValue::Success => "0".into(),
        ReturnValue::Positive { value } if ntstatus_success && value <= 0x7FFF_FFFF => {
            format!("{value} = {}", render_ntstatus(value as u32))
        }
        ReturnValue::Positive { value } => value.to_string(),
        ReturnValue::Errno { errno } => match errno_name(errno) {
            Some(n) => format!("-{errno} ({n})"),
            None => format!("-{errno}"),
        },
        ReturnValue::RawNtStatus { status } => {
            format!("{ret} = raw NTSTATUS {}", render_ntstatus(status))
        }
        ReturnValue::Other { value } => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_matches_ntstatus2int() {
        assert_eq!(ntstatus_to_errno(0x103), 0x103);
        assert_eq!(ntstatus_to_errno(0x102), 0x102);
        assert_eq!(ntstatus_to_errno(0xC000_0035), -libc::EEXIST);
        assert_eq!(ntstatus_to_errno(0xC000_0002), -libc::EPERM);
        assert_eq!(ntstatus_to_errno(0xC000_00BB), -libc::EPERM);
        assert_eq!(ntstatus_to_errno(0xC000_0001), -libc::EINVAL);
        assert_eq!(ntstatus_to_errno(0xC01E_0102), -libc::EINPROGRESS);
    }

    #[test]
    fn raw_ntstatus_quirk_both_forms() {
        assert_eq!(
            classify_return(3_221_225_485),
            ReturnValue::RawNtStatus {
                status: 0xC000_000D
            }
        );
        assert_eq!(
            classify_return(0xC000_000Du32 as i32 as i64),
            ReturnValue::RawNtStatus {
                status: 0xC000_000D
            }
        );
        assert_eq!(classify_return(-22), ReturnValue::Errno { errno: 22 });
        assert!(render_return(0x103, true).contains("STATUS_PENDING"));
        assert!(render_return(-25, true).contains("ENOTTY"));
        assert!(render_return(3_221_225_485, true).contains("STATUS_INVALID_PARAMETER"));
    }
}
