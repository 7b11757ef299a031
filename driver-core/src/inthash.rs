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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn signed_and_unsigned_keys_of_one_width_hash_alike() {
        let b = BuildHasherDefault::<IntHasher>::default();
        assert_eq!(b.hash_one(-1i32), b.hash_one(u32::MAX));
        assert_eq!(b.hash_one(-1i64), b.hash_one(u64::MAX));
        assert_ne!(b.hash_one(1u64), b.hash_one(2u64));
    }
}
