//! A multiplicative hasher (FxHash's mixing step) for the emulator's maps keyed by small
//! integers (handles, fds, pids, file ids): SipHash's per-lookup cost showed in the
//! replay profile, where the emulator serves every call. The same hasher as
//! `traces::inthash` (driver-core does not depend on `traces`).
//!
//! Iteration order of these maps is deterministic (no random seed) but arbitrary: the
//! emulator never lets it reach its output (what it walks in order, it sorts first).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The hasher: one rotate, xor and multiply per integer written.
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
    fn write_i32(&mut self, v: i32) {
        self.write_u64(v as u32 as u64)
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
