//! A map keyed by the object handles the fake host hands out, without hashing.
//!
//! The host allocates handles as `0x4000_0000 | (index << 6)` with an index that only
//! counts up, so the live handles of a session are mostly recent and close together.
//! [`HandleMap`] keeps its entries packed in a vector (walks and clears cost the live
//! entries, nothing more) and finds them through a fixed window of [`WINDOW`] positions,
//! at the slot a handle's index picks (`index % WINDOW`): a lookup is two loads and a
//! compare of the stored handle. When a newer handle needs a slot still held by an older
//! live entry, the older one's position moves to a spill map (hashed), where lookups
//! that miss the window go.
//!
//! Memory is bounded by the window plus the live entries: it never grows with the highest
//! handle ever made (handles are not recycled: a long session counts far past any
//! table). Any `u32` works as a key (a handle of another form, or a bogus one a caller
//! passed, just lands in some slot and is compared whole). Iteration order is arbitrary,
//! as a hash map's: callers that walk in order sort first.

use crate::inthash::IntMap;

/// Slots in the window (a power of two).
pub(crate) const WINDOW: usize = 1024;

/// No entry at this window slot.
const NONE: u32 = u32::MAX;

/// A map from handles to `V` (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct HandleMap<V> {
    /// The entries, packed.
    entries: Vec<(u32, V)>,
    /// Position in `entries` of the entry owning each slot, or [`NONE`]; allocated with
    /// the first entry.
    window: Vec<u32>,
    /// Positions of the entries whose slot a newer handle took. Invariant: every entry is
    /// reached from exactly one of `window` and `spill`.
    spill: IntMap<u32, u32>,
}

impl<V> Default for HandleMap<V> {
    fn default() -> Self {
        HandleMap {
            entries: Vec::new(),
            window: Vec::new(),
            spill: IntMap::default(),
        }
    }
}

#[inline(always)]
fn slot_of(h: u32) -> usize {
    (h >> 6) as usize & (WINDOW - 1)
}

impl<V> HandleMap<V> {
    /// Position of `h` in `entries`.
    #[inline(always)]
    fn pos(&self, h: u32) -> Option<usize> {
        if let Some(&p) = self.window.get(slot_of(h))
            && let Some((k, _)) = self.entries.get(p as usize)
            && *k == h
        {
            return Some(p as usize);
        }
        self.pos_spilled(h)
    }
    #[inline(never)]
    fn pos_spilled(&self, h: u32) -> Option<usize> {
        if self.spill.is_empty() {
            return None;
        }
        self.spill.get(&h).map(|&p| p as usize)
    }
    /// The value of `h`.
    #[inline(always)]
    pub(crate) fn get(&self, h: u32) -> Option<&V> {
        let p = self.pos(h)?;
        Some(&self.entries[p].1)
    }
    /// The value of `h`, mutable.
    #[inline(always)]
    pub(crate) fn get_mut(&mut self, h: u32) -> Option<&mut V> {
        let p = self.pos(h)?;
        Some(&mut self.entries[p].1)
    }
    /// Whether `h` has a value.
    #[inline(always)]
    pub(crate) fn contains_key(&self, h: u32) -> bool {
        self.pos(h).is_some()
    }
    /// Adds `h` (it has no entry); returns its position.
    fn push(&mut self, h: u32, v: V) -> usize {
        if self.window.is_empty() {
            self.window = vec![NONE; WINDOW];
        }
        let p = self.entries.len();
        assert!(p < NONE as usize, "handle map full");
        self.entries.push((h, v));
        let s = slot_of(h);
        let old = std::mem::replace(&mut self.window[s], p as u32);
        if old != NONE {
            // An older handle gives its slot up.
            self.spill.insert(self.entries[old as usize].0, old);
        }
        p
    }
    /// Sets `h` to `v`; returns the value it had.
    pub(crate) fn insert(&mut self, h: u32, v: V) -> Option<V> {
        match self.pos(h) {
            Some(p) => Some(std::mem::replace(&mut self.entries[p].1, v)),
            None => {
                self.push(h, v);
                None
            }
        }
    }
    /// The value of `h`, set to `f()` first if it had none.
    #[inline]
    pub(crate) fn get_or_insert_with(&mut self, h: u32, f: impl FnOnce() -> V) -> &mut V {
        let p = match self.pos(h) {
            Some(p) => p,
            None => self.push(h, f()),
        };
        &mut self.entries[p].1
    }
    /// Removes the entry at `p` (the last entry moves to `p`).
    fn remove_at(&mut self, p: usize) -> V {
        let (h, v) = self.entries.swap_remove(p);
        let s = slot_of(h);
        if self.window[s] == p as u32 {
            self.window[s] = NONE;
        } else {
            self.spill.remove(&h);
        }
        if let Some(&(moved, _)) = self.entries.get(p) {
            // The former last entry, now at `p`.
            let last = self.entries.len() as u32;
            let ms = slot_of(moved);
            if self.window[ms] == last {
                self.window[ms] = p as u32;
            } else {
                *self.spill.get_mut(&moved).expect("a spilled entry") = p as u32;
            }
        }
        v
    }
    /// Removes `h`; returns its value.
    pub(crate) fn remove(&mut self, h: u32) -> Option<V> {
        let p = self.pos(h)?;
        Some(self.remove_at(p))
    }
    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Removes every entry (memory is kept for reuse).
    pub(crate) fn clear(&mut self) {
        for (h, _) in &self.entries {
            self.window[slot_of(*h)] = NONE;
        }
        self.entries.clear();
        self.spill.clear();
    }
    /// Keeps the entries for which `f` is true.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u32, &mut V) -> bool) {
        let mut i = 0;
        while i < self.entries.len() {
            let (h, v) = &mut self.entries[i];
            if f(*h, v) {
                i += 1;
            } else {
                self.remove_at(i);
            }
        }
    }
    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &V)> {
        self.entries.iter().map(|(k, v)| (*k, v))
    }
    /// The handles, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|(k, _)| *k)
    }
    /// The values, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
    /// Slots in the window (for tests: fixed at [`WINDOW`]).
    #[cfg(test)]
    pub(crate) fn window_len(&self) -> usize {
        self.window.len()
    }
    /// Entries in the spill map (for tests).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> usize {
        self.spill.len()
    }
    /// Every entry is reached from exactly one of the window and the spill map, at its
    /// position (for tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let from_window = self.window.iter().filter(|&&p| p != NONE).count();
        assert_eq!(from_window + self.spill.len(), self.entries.len());
        for (p, (h, _)) in self.entries.iter().enumerate() {
            let w = self.window[slot_of(*h)] == p as u32;
            let s = self.spill.get(h) == Some(&(p as u32));
            assert!(w != s, "entry {h:#x} reached from exactly one place");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A host handle of index `i`.
    fn h(i: u32) -> u32 {
        0x4000_0000 | ((i & 0x00FF_FFFF) << 6)
    }

    /// Many objects created and destroyed, with a few long-lived ones pinned across many
    /// windows' worth of handles and some bogus keys: every lookup agrees with a
    /// `HashMap` doing the same, and memory stays bounded by the window and the live
    /// entries (not by the highest handle made).
    #[test]
    fn agrees_with_a_hash_map_and_stays_bounded() {
        let mut m: HandleMap<u64> = HandleMap::default();
        let mut r: HashMap<u32, u64> = HashMap::new();
        let mut live: Vec<u32> = Vec::new();
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Long-lived objects (a device, its context) made first.
        for i in 0x100..0x104 {
            assert_eq!(m.insert(h(i), i as u64), None);
            r.insert(h(i), i as u64);
        }
        let mut i = 0x104u32;
        for round in 0..200_000u64 {
            match next() % 8 {
                0..=3 => {
                    let k = h(i);
                    i += 1;
                    assert_eq!(m.insert(k, round), r.insert(k, round));
                    live.push(k);
                }
                4 | 5 if !live.is_empty() => {
                    let j = (next() as usize) % live.len();
                    let k = live.swap_remove(j);
                    assert_eq!(m.remove(k), r.remove(&k));
                    assert_eq!(m.remove(k), None);
                }
                6 if !live.is_empty() => {
                    let k = live[(next() as usize) % live.len()];
                    *m.get_mut(k).expect("live") += 1;
                    *r.get_mut(&k).expect("live") += 1;
                    assert_eq!(m.insert(k, round), r.insert(k, round), "replace");
                }
                _ => {
                    let bogus = next() as u32;
                    assert_eq!(m.get(bogus), r.get(&bogus));
                    *m.get_or_insert_with(h(0x100), || 0) += 1;
                    *r.entry(h(0x100)).or_insert(0) += 1;
                }
            }
            if live.len() > 3000 {
                // Keep the live set moderate (objects are destroyed, as in a session).
                for k in live.drain(..2000) {
                    assert_eq!(m.remove(k), r.remove(&k));
                }
            }
            assert_eq!(m.len(), r.len());
            if round % 4096 == 0 {
                m.check();
            }
        }
        m.check();
        assert!(i > 64 * WINDOW as u32, "handles went far past the window");
        for (k, v) in &r {
            assert_eq!(m.get(*k), Some(v));
            assert!(m.contains_key(*k));
        }
        let mut a: Vec<(u32, u64)> = m.iter().map(|(k, v)| (k, *v)).collect();
        let mut b: Vec<(u32, u64)> = r.iter().map(|(k, v)| (*k, *v)).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "iteration sees every entry once");
        assert_eq!(
            m.window_len(),
            WINDOW,
            "the window never grows past its size"
        );
        assert!(
            m.entries.capacity() <= 2 * 3000 + 64,
            "the entries are the live ones (capacity {})",
            m.entries.capacity()
        );
        assert!(
            m.spilled() <= r.len(),
            "only live entries spill ({} spilled, {} live)",
            m.spilled(),
            r.len()
        );
        // The long-lived ones were pushed out of the window and are still found.
        assert_eq!(m.get(h(0x101)), Some(&0x101));
        m.retain(|k, _| k & 0x40 == 0);
        r.retain(|k, _| k & 0x40 == 0);
        m.check();
        assert_eq!(m.len(), r.len());
        for (k, v) in &r {
            assert_eq!(m.get(*k), Some(v));
        }
        m.clear();
        m.check();
        assert!(m.is_empty() && m.iter().next().is_none() && m.spilled() == 0);
        assert_eq!(m.get(h(0x101)), None);
    }

    /// A handle re-inserted after its slot went to a newer one is updated where it is
    /// (spilled), never stored twice.
    #[test]
    fn a_spilled_handle_is_never_duplicated() {
        let mut m: HandleMap<u32> = HandleMap::default();
        let old = h(5);
        let new = h(5 + WINDOW as u32);
        m.insert(old, 1);
        m.insert(new, 2);
        assert_eq!(m.spilled(), 1);
        assert_eq!(m.insert(old, 3), Some(1));
        assert_eq!((m.len(), m.spilled()), (2, 1));
        assert_eq!(*m.get_or_insert_with(old, || 9), 3);
        assert_eq!(m.remove(new), Some(2));
        assert_eq!(m.get(old), Some(&3));
        // Its slot is free now, but the old handle stays in the spill map: one copy.
        m.insert(old, 4);
        assert_eq!((m.len(), m.iter().count()), (1, 1));
        m.check();
        assert_eq!(m.remove(old), Some(4));
        assert!(m.is_empty());
        m.check();
    }
}
