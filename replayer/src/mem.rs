//! Memory the replay hands to the driver: per-call buffers (8-byte aligned heap memory,
//! freed after the call) and long-lived page-aligned regions (guest memory, existing
//! sysmem, vCPU `kvm_run` mappings) that stay mapped as long as the object using them.

use std::io;

/// An 8-byte aligned, zero-initialised heap buffer whose address is passed to the driver.
/// (`Default`: empty and unallocated, a placeholder only: its address is dangling.)
#[derive(Debug, Clone, Default)]
pub(crate) struct CallBuf {
    words: Vec<u64>,
    len: usize,
}

impl CallBuf {
    /// `len` zero bytes (at least one word, so the address is never dangling).
    pub fn zeroed(len: usize) -> CallBuf {
        CallBuf {
            words: vec![0; len.div_ceil(8).max(1)],
            len,
        }
    }
    /// Makes the buffer exactly `image` (reusing its memory when it is large enough; the
    /// address changes only when it grows).
    #[inline]
    pub fn load(&mut self, image: &[u8]) {
        let words = image.len().div_ceil(8).max(1);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
        self.len = image.len();
        self.bytes_mut().copy_from_slice(image);
    }
    /// Address in this process.
    pub fn addr(&self) -> u64 {
        self.words.as_ptr() as u64
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` owns at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
    /// The bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A page-aligned anonymous (or fd-backed) shared mapping, unmapped on drop.
#[derive(Debug)]
pub struct Region {
    addr: *mut libc::c_void,
    len: usize,
    /// What it is, for diagnostics (`guest_memory`, `kvm_run`, `allocation_info[0].sysmem`).
    pub what: String,
}

// SAFETY: the region is plain memory owned by this value; nothing aliases it on our side.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes of zeroed anonymous memory (rounded up to whole pages) and copies
    /// `content` to its start. Private anonymous memory is what a VMM or a dxg client would
    /// have used; the driver pins or maps these pages itself.
    pub fn anonymous(len: usize, content: &[u8], what: &str) -> io::Result<Region> {
        let page = page_size();
        let maplen = len.max(content.len()).max(1).div_ceil(page) * page;
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                maplen,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the mapping is at least `content.len()` bytes and writable.
        unsafe { std::ptr::copy_nonoverlapping(content.as_ptr(), p.cast::<u8>(), content.len()) };
        Ok(Region {
            addr: p,
            len: maplen,
            what: what.to_string(),
        })
    }

    /// Maps `len` bytes of `fd` shared, read-write, at offset 0 (the vCPU `kvm_run` page).
    pub fn of_fd(fd: i32, len: usize, what: &str) -> io::Result<Region> {
        // SAFETY: a fresh shared mapping of a device fd; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            addr: p,
            len: len.max(1),
            what: what.to_string(),
        })
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }
    /// Mapped length (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never empty (a mapping has at least one page); present for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is readable and `len` bytes long while `self` lives.
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value created.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_page_aligned_and_holds_content() {
        let r = Region::anonymous(10, b"\xf4hello", "t").expect("mmap");
        assert_eq!(r.addr() as usize % page_size(), 0);
        assert_eq!(r.len(), page_size());
        assert_eq!(&r.bytes()[..6], b"\xf4hello");
    }

    #[test]
    fn callbuf_is_aligned() {
        let mut b = CallBuf::zeroed(13);
        assert_eq!(b.addr() % 8, 0);
        b.bytes_mut()[12] = 7;
        assert_eq!(b.bytes().len(), 13);
        assert_eq!(b.bytes()[12], 7);
    }
}
