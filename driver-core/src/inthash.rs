//! A multiplicative hasher (FxHash's mixing step) for maps keyed by small integers:
//! handle values, fds, pids, request ids, (pid, tid) pairs. The emulator, replay, pairing
//! and statistics hash millions of such keys, where SipHash's per-lookup cost showed in
//! their profiles.
//!
//! Iteration order of these maps is deterministic (no random seed) but arbitrary: the
//! emulator never lets it reach its output (what it walks in order, it sorts first).
//! Not resistant to keys chosen to collide: a crafted trace can make these maps slow
//! (never wrong). That is the trade for the common case of honest traces.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher: one rotate, xor and multiply per integer written (signed integers go
/// through the unsigned writers of the same width, as `Hasher`'s defaults do).
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64)
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64)
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64)
    }
}

/// A `HashMap` with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// A `HashSet` with [`IntHasher`].
pub type IntSet<K> = HashSet<K, BuildHasherDefault<IntHasher>>;

/// An [`IntMap`] of small `Copy` values that remembers the entry it found last and
/// answers a repeated lookup of the same key without hashing (an fd or file id looked up
/// on every call of a stream that mostly uses one). Every change goes through
/// [`LastHitMap::insert`] / [`LastHitMap::remove`], which keep the memo in step, so it
/// never answers with a value that was replaced or removed.
pub struct LastHitMap<K, V> {
    map: IntMap<K, V>,
    last: std::cell::Cell<Option<(K, V)>>,
}

impl<K, V> Default for LastHitMap<K, V> {
    fn default() -> Self {
        LastHitMap {
            map: IntMap::default(),
            last: std::cell::Cell::new(None),
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash, V: Copy> LastHitMap<K, V> {
    /// The value of `k`.
    #[inline]
    pub fn get(&self, k: K) -> Option<V> {
        if let Some((lk, lv)) = self.last.get()
            && lk == k
        {
            return Some(lv);
        }
        let v = *self.map.get(&k)?;
        self.last.set(Some((k, v)));
        Some(v)
    }
    /// Sets `k` to `v`; returns the value it had.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.last.set(Some((k, v)));
        self.map.insert(k, v)
    }
    /// Removes `k`; returns its value.
    pub fn remove(&mut self, k: K) -> Option<V> {
        if self.last.get().is_some_and(|(lk, _)| lk == k) {
            self.last.set(None);
        }
        self.map.remove(&k)
    }
    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn last_hit_map_never_answers_from_a_stale_memo() {
        let mut m = LastHitMap::default();
        m.insert(1, 10);
        m.insert(2, 20);
        assert_eq!(m.get(1), Some(10));
        assert_eq!(m.get(1), Some(10), "from the memo");
        assert_eq!(m.remove(1), Some(10));
        assert_eq!(m.get(1), None, "removed, though it was the last hit");
        assert_eq!(m.get(2), Some(20));
        m.insert(2, 21);
        assert_eq!(m.get(2), Some(21), "replaced while it was the last hit");
        m.insert(3, 30);
        assert_eq!(m.get(2), Some(21));
        assert_eq!(m.remove(3), Some(30));
        assert_eq!(m.get(2), Some(21), "removing another key keeps the memo");
        assert_eq!((m.len(), m.is_empty()), (1, false));
    }

    #[test]
    fn signed_and_unsigned_keys_of_one_width_hash_alike() {
        let b = BuildHasherDefault::<IntHasher>::default();
        assert_eq!(b.hash_one(-1i32), b.hash_one(u32::MAX));
        assert_eq!(b.hash_one(-1i64), b.hash_one(u64::MAX));
        assert_ne!(b.hash_one(1u64), b.hash_one(2u64));
    }
}
