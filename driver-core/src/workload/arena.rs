//! A per-thread staging arena at a fixed address, so that every address a scenario puts
//! in an ioctl — the struct itself and every buffer it points to — is the same on every
//! run.
//!
//! Why: the emulator's trace stores the raw `arg` address, the buffer addresses, the
//! pointer fields inside the structs, and VMBus messages that embed whole user structs.
//! With structs on the stack and buffers on the heap, those bytes change with ASLR and
//! allocator state, and sample traces could never be byte-identical. Staging copies each
//! buffer into the arena when its address is taken ([`stage`], through the scenarios'
//! `addr()`), the struct when the ioctl is issued, and copies everything back after the
//! call ([`sync_back`]), so the scenarios keep reading their own locals.
//!
//! The arena of the first thread that uses one is mapped at [`ARENA_BASE`] with
//! `MAP_FIXED_NOREPLACE`; later threads get the following slots. If the address is taken
//! (or the kernel ignores the flag), the arena is mapped wherever the kernel likes and
//! [`is_fixed`] says so: runs still work, only their addresses are not reproducible.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Address of the first thread's arena.
pub const ARENA_BASE: u64 = 0x0000_3d00_0000_0000;
/// Size of one thread's arena (and distance between slots).
pub const ARENA_SIZE: usize = 4 << 20;

static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);

struct Arena {
    base: *mut u8,
    used: usize,
    fixed: bool,
    /// (arena offset, original address, length) of what was staged since the last call.
    pending: Vec<(usize, *mut u8, usize)>,
}

impl Arena {
    fn map() -> Option<Arena> {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        let want = ARENA_BASE + slot * ARENA_SIZE as u64;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: a new anonymous mapping; NOREPLACE never clobbers an existing one.
        let p = unsafe {
            libc::mmap(
                want as *mut libc::c_void,
                ARENA_SIZE,
                prot,
                flags | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let (p, fixed) = if p == libc::MAP_FAILED {
            // SAFETY: as above, kernel-chosen address.
            let q = unsafe { libc::mmap(std::ptr::null_mut(), ARENA_SIZE, prot, flags, -1, 0) };
            (q, false)
        } else {
            (p, p as u64 == want)
        };
        (p != libc::MAP_FAILED).then(|| Arena {
            base: p.cast(),
            used: 0,
            fixed,
            pending: Vec::new(),
        })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing points into it once the thread ends.
        unsafe { libc::munmap(self.base.cast(), ARENA_SIZE) };
    }
}

thread_local! {
    static ARENA: RefCell<Option<Arena>> = RefCell::new(Arena::map());
}

/// Starts a scenario: the arena is empty again, so the scenario's first buffer lands at
/// the arena's base whatever ran before on this thread.
pub fn reset() {
    ARENA.with(|a| {
        if let Some(a) = a.borrow_mut().as_mut() {
            a.used = 0;
            a.pending.clear();
        }
    });
}

/// Whether this thread's arena sits at its fixed address (reproducible addresses).
pub fn is_fixed() -> bool {
    ARENA.with(|a| a.borrow().as_ref().is_some_and(|a| a.fixed))
}

/// Address of this thread's arena (`None` if it could not be mapped).
pub fn base() -> Option<u64> {
    ARENA.with(|a| a.borrow().as_ref().map(|a| a.base as u64))
}

/// Copies `len` bytes at `ptr` into the arena and returns the copy's address; the copy is
/// written back to `ptr` by the next [`sync_back`]. Returns `ptr` itself when there is no
/// arena or it is full (the call still works, at an unreproducible address).
///
/// # Safety
/// `ptr` must be valid for reads and writes of `len` bytes until the next [`sync_back`].
pub unsafe fn stage(ptr: *mut u8, len: usize) -> u64 {
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        let Some(a) = a.as_mut() else {
            return ptr as u64;
        };
        // 16-byte alignment covers every dxg/kvm struct and element type.
        let off = a.used.next_multiple_of(16);
        if len == 0 || off + len > ARENA_SIZE {
            return ptr as u64;
        }
        // SAFETY: the caller guarantees `ptr`; `off + len` is inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(ptr, a.base.add(off), len) };
        a.used = off + len;
        a.pending.push((off, ptr, len));
        // SAFETY: inside the mapping.
        unsafe { a.base.add(off) as u64 }
    })
}

/// After an ioctl: copies every buffer staged since the last call back to where it came
/// from (the driver may have written any of them) and forgets them.
///
/// # Safety
/// Every pointer passed to [`stage`] since the last `sync_back` must still be valid.
pub unsafe fn sync_back() {
    ARENA.with(|a| {
        if let Some(a) = a.borrow_mut().as_mut() {
            for (off, ptr, len) in a.pending.drain(..) {
                // SAFETY: the caller guarantees `ptr`; the source is inside the mapping.
                unsafe { std::ptr::copy_nonoverlapping(a.base.add(off), ptr, len) };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_buffers_round_trip() {
        std::thread::spawn(|| {
            reset();
            let mut v = [1u32, 2, 3];
            // SAFETY: `v` lives until after sync_back.
            let a = unsafe { stage(v.as_mut_ptr().cast(), 12) };
            assert_ne!(a, v.as_ptr() as u64, "staged into the arena");
            // SAFETY: `a` is the arena copy of `v`.
            unsafe { *(a as *mut u32) = 9 };
            // SAFETY: `v` is still live.
            unsafe { sync_back() };
            assert_eq!(v, [9, 2, 3], "the driver's write comes back");
        })
        .join()
        .expect("thread");
    }
}
