//! Byte vectors reused from call to call: the emulator's VMBus messages, host replies,
//! host→guest packets and copies of user buffers would otherwise each cost an allocation
//! and a free per ioctl (they dominated the allocator's share of a replay profile).
//!
//! A small per-thread free list: [`take`] pops an empty vector (capacity kept), [`give`]
//! clears one and pushes it back. [`Buf`] gives its vector back when dropped, so code that
//! builds a message in one does not have to.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Vectors kept per thread.
const KEEP: usize = 64;
/// Vectors with more capacity than this are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 64 << 10;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty vector, reused when one is free.
pub(crate) fn take() -> Vec<u8> {
    POOL.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A copy of `b` in a reused vector.
pub(crate) fn copy(b: &[u8]) -> Vec<u8> {
    let mut v = take();
    v.extend_from_slice(b);
    v
}

/// Returns `v` for reuse (emptied).
pub(crate) fn give(mut v: Vec<u8>) {
    if v.capacity() == 0 || v.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    v.clear();
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(v);
        }
    });
}

/// A vector from the pool that goes back to it when dropped.
#[derive(Debug, Default)]
pub(crate) struct Buf(Vec<u8>);

impl Buf {
    /// An empty buffer (reused capacity).
    pub(crate) fn new() -> Buf {
        Buf(take())
    }
    /// `n` zero bytes.
    pub(crate) fn zeroed(n: usize) -> Buf {
        let mut v = take();
        v.resize(n, 0);
        Buf(v)
    }
    /// The vector, no longer pooled.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        Buf(v)
    }
}

impl Deref for Buf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Replies of up to this many bytes are held inline (every reply on a replayed frame's
/// path is smaller).
pub(crate) const INLINE_REPLY: usize = 64;

/// A reply buffer of fixed length: up to [`INLINE_REPLY`] bytes in place (no pool round
/// trip: taking and giving back a pooled vector cost a send ~25 instructions of setup and
/// teardown), longer ones in a [`Buf`].
#[derive(Debug)]
pub(crate) enum Reply {
    /// The first `.0` bytes of `.1`.
    Inline(usize, [u8; INLINE_REPLY]),
    /// A pooled buffer (longer replies).
    Heap(Buf),
}

impl Reply {
    /// `n` zero bytes.
    #[inline]
    pub(crate) fn zeroed(n: usize) -> Reply {
        if n <= INLINE_REPLY {
            Reply::Inline(n, [0; INLINE_REPLY])
        } else {
            Reply::Heap(Buf::zeroed(n))
        }
    }
    /// The bytes as a vector.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Reply::Inline(n, b) => b[..n].to_vec(),
            Reply::Heap(b) => b.into_vec(),
        }
    }
}

impl Deref for Reply {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Reply::Inline(n, b) => &b[..*n],
            Reply::Heap(b) => b,
        }
    }
}

impl DerefMut for Reply {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Reply::Inline(n, b) => &mut b[..*n],
            Reply::Heap(b) => b,
        }
    }
}

/// `to_vec` into a reused vector.
pub(crate) trait Pooled {
    /// A copy in a reused vector.
    fn pooled(&self) -> Vec<u8>;
}

impl Pooled for [u8] {
    fn pooled(&self) -> Vec<u8> {
        copy(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_vectors_come_back_empty() {
        let mut v = take();
        v.extend_from_slice(&[1, 2, 3]);
        let cap = v.capacity();
        give(v);
        let w = take();
        assert!(w.is_empty());
        assert!(w.capacity() >= cap.min(3));
        let b = Buf::from(copy(&[9; 5]));
        assert_eq!(&b[..], &[9; 5]);
        drop(b);
        assert!(take().is_empty());
    }

    #[test]
    fn replies_have_their_length_inline_or_not() {
        for n in [
            0,
            1,
            4,
            INLINE_REPLY - 1,
            INLINE_REPLY,
            INLINE_REPLY + 1,
            712,
        ] {
            let mut r = Reply::zeroed(n);
            assert_eq!(matches!(r, Reply::Inline(..)), n <= INLINE_REPLY, "{n}");
            assert_eq!(r.len(), n);
            assert!(r.iter().all(|&b| b == 0));
            for (i, b) in r.iter_mut().enumerate() {
                *b = i as u8;
            }
            let want: Vec<u8> = (0..n).map(|i| i as u8).collect();
            assert_eq!(&r[..], &want[..]);
            assert_eq!(r.into_vec(), want);
        }
    }
}
