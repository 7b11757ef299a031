//! VMBus request/reply pairing, frame by frame.
//!
//! The rule, in file order: a sync guest→host request opens `(channel, request_id)`
//! (replacing a request already open under that key, which then stays unanswered); a
//! host reply closes the request open under its key, if any (else it is unpaired).
//!
//! Frames are paired on their own in parallel ([`FramePairing`]); what crosses a frame
//! boundary is settled by one sequential pass in frame order ([`Pairing::merge`]):
//! the frame's replies that found no request earlier in the frame (pending) take the
//! requests left open by earlier frames, then the frame's own requests replace the
//! earlier ones under the keys they used. A reply whose key a request of its own frame
//! used before it never reaches back to earlier frames: that request replaced them.
//! The result is exactly the sequential rule's (a test checks it on random streams).

/// `(channel, request_id)`.
pub(crate) type Key = (Option<u64>, u64);

// Pairing hashes millions of small integer keys, where SipHash's DoS resistance buys
// nothing and costs a third of the pairing time.
pub(crate) type FxMap<K, V> = driver_core::inthash::IntMap<K, V>;
type FxSet<K> = driver_core::inthash::IntSet<K>;

/// What a reply found within its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply<P> {
    /// Its request, earlier in the same frame.
    Paired(P),
    /// No request can match (a request of this frame used the key and was answered).
    Unpaired,
    /// Depends on earlier frames: the `n`th pending reply of the frame; its request is
    /// the `n`th entry of what [`Pairing::merge`] returns for the frame.
    Pending(usize),
}

/// One frame's pairing; `P` is whatever the caller needs of a request (a row, a
/// command and a time…).
#[derive(Debug)]
pub(crate) struct FramePairing<P> {
    open: FxMap<Key, P>,
    used: FxSet<Key>,
    pending: Vec<Key>,
}

impl<P> Default for FramePairing<P> {
    fn default() -> Self {
        FramePairing {
            open: FxMap::default(),
            used: FxSet::default(),
            pending: Vec::new(),
        }
    }
}

impl<P: Copy> FramePairing<P> {
    /// A sync guest→host request.
    pub(crate) fn request(&mut self, key: Key, p: P) {
        self.open.insert(key, p);
        self.used.insert(key);
    }

    /// A host reply.
    pub(crate) fn reply(&mut self, key: Key) -> Reply<P> {
        if let Some(p) = self.open.remove(&key) {
            Reply::Paired(p)
        } else if self.used.contains(&key) {
            Reply::Unpaired
        } else {
            self.pending.push(key);
            Reply::Pending(self.pending.len() - 1)
        }
    }
}

/// The requests open across frame boundaries.
#[derive(Debug)]
pub(crate) struct Pairing<P> {
    open: FxMap<Key, P>,
}

impl<P> Default for Pairing<P> {
    fn default() -> Self {
        Pairing {
            open: FxMap::default(),
        }
    }
}

impl<P: Copy> Pairing<P> {
    /// Settles the next frame (frames must come in file order): returns the request of
    /// each of its pending replies, in order, and carries its open requests on, turned
    /// into `P` by `map` (a frame-local row into a global one, say).
    pub(crate) fn merge<Q>(&mut self, f: FramePairing<Q>, map: impl Fn(Q) -> P) -> Vec<Option<P>> {
        let got = f.pending.iter().map(|k| self.open.remove(k)).collect();
        for k in &f.used {
            self.open.remove(k);
        }
        self.open
            .extend(f.open.into_iter().map(|(k, q)| (k, map(q))));
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Req(Key),
        Rep(Key),
    }

    /// The sequential rule, spelled out: request index each reply gets.
    fn sequential(evs: &[Ev]) -> Vec<Option<usize>> {
        let mut open: HashMap<Key, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            match e {
                Ev::Req(k) => {
                    open.insert(*k, i);
                }
                Ev::Rep(k) => out.push(open.remove(k)),
            }
        }
        out
    }

    fn by_frames(evs: &[Ev], cuts: &[usize]) -> Vec<Option<usize>> {
        let mut frames = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&evs.len())) {
            frames.push(start..c);
            start = c;
        }
        // "Parallel" part: each frame alone.
        let local: Vec<(FramePairing<usize>, Vec<Reply<usize>>)> = frames
            .iter()
            .map(|r| {
                let mut fp = FramePairing::default();
                let mut replies = Vec::new();
                for i in r.clone() {
                    match evs[i] {
                        Ev::Req(k) => fp.request(k, i),
                        Ev::Rep(k) => replies.push(fp.reply(k)),
                    }
                }
                (fp, replies)
            })
            .collect();
        let mut p = Pairing::default();
        let mut out = Vec::new();
        for (fp, replies) in local {
            let got = p.merge(fp, |i| i);
            for r in replies {
                out.push(match r {
                    Reply::Paired(i) => Some(i),
                    Reply::Unpaired => None,
                    Reply::Pending(n) => got[n],
                });
            }
        }
        out
    }

    #[test]
    fn frame_pairing_equals_the_sequential_rule_on_random_streams() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..3000 {
            let len = 1 + next(60) as usize;
            // Few keys, so that keys collide, requests are replaced and replies miss.
            let keys = 1 + next(4);
            let evs: Vec<Ev> = (0..len)
                .map(|_| {
                    let k = (if next(3) == 0 { Some(next(2)) } else { None }, next(keys));
                    if next(2) == 0 { Ev::Req(k) } else { Ev::Rep(k) }
                })
                .collect();
            let mut cuts: Vec<usize> = (0..next(8))
                .map(|_| next(len as u64 + 1) as usize)
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                by_frames(&evs, &cuts),
                sequential(&evs),
                "round {round}: {evs:?} cut at {cuts:?}"
            );
        }
    }

    /// The case a naive merge gets wrong: a request in the frame takes the key, its
    /// reply closes it, and a second reply with that key must not reach back to the
    /// earlier frame's request (the frame's request replaced it).
    #[test]
    fn a_request_in_the_frame_hides_earlier_frames_requests_of_its_key() {
        let k = (None, 1);
        let evs = [Ev::Req(k), Ev::Req(k), Ev::Rep(k), Ev::Rep(k)];
        assert_eq!(sequential(&evs), vec![Some(1), None]);
        assert_eq!(by_frames(&evs, &[1]), vec![Some(1), None]);
    }
}
