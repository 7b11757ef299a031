//! Linux `_IOC` request-code arithmetic (asm-generic layout, as on x86_64 and arm64).

use serde::Serialize;

/// `_IOC_NONE`.
pub const IOC_NONE: u32 = 0;
/// `_IOC_WRITE` (user → kernel).
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ` (kernel → user).
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | ((size & 0x3fff) << 16) | ((ty & 0xff) << 8) | (nr & 0xff)
}
/// `_IO(type, nr)`.
pub const fn io(ty: u32, nr: u32) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}
/// `_IOR(type, nr, size)`.
pub const fn ior(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size as u32)
}
/// `_IOW(type, nr, size)`.
pub const fn iow(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size as u32)
}
/// `_IOWR(type, nr, size)`.
pub const fn iowr(ty: u32, nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size as u32)
}

/// The four `_IOC` fields of a request code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IocFields {
    /// Direction bits (`_IOC_DIR`).
    pub dir: u32,
    /// Type byte (`_IOC_TYPE`), e.g. 0x47 'G' for dxg, 0xAE for kvm.
    pub ty: u32,
    /// Number (`_IOC_NR`).
    pub nr: u32,
    /// Argument size (`_IOC_SIZE`).
    pub size: u32,
}

impl IocFields {
    /// Splits a request code.
    pub const fn of(code: u32) -> Self {
        IocFields {
            dir: code >> 30,
            ty: (code >> 8) & 0xff,
            nr: code & 0xff,
            size: (code >> 16) & 0x3fff,
        }
    }
    /// `NONE` / `W` / `R` / `RW`.
    pub fn dir_name(&self) -> &'static str {
        match self.dir {
            0 => "NONE",
            1 => "W",
            2 => "R",
            _ => "RW",
        }
    }
}

impl std::fmt::Display for IocFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ty = self.ty as u8;
        let tyc = if ty.is_ascii_graphic() {
            format!(" '{}'", ty as char)
        } else {
            String::new()
        };
        write!(
            f,
            "_IOC(dir={}, type={:#04x}{}, nr={:#04x}, size={})",
            self.dir_name(),
            self.ty,
            tyc,
            self.nr,
            self.size
        )
    }
}
