//! Comparison / remapping plans: a struct layout from the device table flattened into
//! leaves, each tagged with what replay must do with it (compare, remap as a handle or an
//! fd, mask, record a new handle…). Built once per ioctl entry / pointer descriptor from
//! `driver-core`'s layouts and handle effects, then reused for every call, so the hot path
//! compares integers instead of decoding field trees.

use std::rc::Rc;

use driver_core::inthash::IntMap;
use driver_core::layout::{Kind, StructDesc};
use driver_core::schema::{Effect, HandleType, IoctlDesc, Loc, PointerDesc};

/// What replay does with one leaf field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Compared byte for byte.
    Plain,
    /// A handle used by the call: remapped on input, compared through the map on output.
    Handle,
    /// An fd carried in a field: remapped like a handle.
    Fd,
    /// A user pointer: patched on input (by the pointer walk), masked on output.
    Pointer,
    /// A value that legitimately differs between runs (driver mappings, host values).
    Masked,
    /// The driver writes a new handle of this type here.
    Creates(HandleType),
    /// The driver writes a new fd here.
    ReturnsFd(HandleType),
    /// The driver consumes an fd from here.
    TakesFd(HandleType),
    /// The handle here is destroyed by the call.
    Destroys(HandleType),
    /// A process id ([`PID_LISTS`]): the traced process's recorded pid maps to the
    /// replaying process's pid; a pid the trace never saw (another program on the
    /// capturing machine) is not compared.
    Pid,
}

/// Pointed-to arrays of process ids, by ioctl and pointer path. Process ids are chosen by
/// the OS, so they legitimately differ between capture and replay; the table types them
/// as plain integers (`Kind::U`), hence this list.
pub(crate) const PID_LISTS: &[(&str, &str)] = &[("LX_DXENUMPROCESSES", "buffer")];

/// One flattened field.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    /// Field path within the buffer (`fence.fence_value`, `object_array[3]`).
    pub path: String,
    /// Byte offset within the struct / element.
    pub off: usize,
    /// Size in bytes.
    pub size: usize,
    /// How it decodes (for rendering divergences).
    pub kind: Kind,
    /// What replay does with it.
    pub class: Class,
}

/// Leaves of one struct (an ioctl argument or one array element).
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Leaves in offset order.
    pub leaves: Vec<Leaf>,
    /// Element / struct size.
    pub size: usize,
    /// Byte ranges `(offset, length)` covered by `Plain` leaves, adjacent ones merged:
    /// when all of them are equal, no plain leaf can diverge, so only `special` leaves
    /// need a look (the byte-first comparison).
    pub plain_runs: Vec<(usize, usize)>,
    /// Indices in `leaves` of the leaves that need an action even when the bytes match
    /// (handles, fds, pids, created / destroyed objects); pointers and masked values
    /// need none.
    pub special: Vec<usize>,
    /// `special` cut into runs: `(offset, length, range in special)`. A run of adjacent
    /// input-handle leaves of one size (`Class::Handle`: a handle array such as
    /// SUBMITCOMMAND's 64 `broadcast_context` slots) has its byte span, and the slots that
    /// are zero on both sides are skipped 8 bytes at a time (0 is "no handle": nothing to
    /// map, nothing to differ); every other leaf is a run of its own with length 0 (never
    /// skipped).
    pub special_runs: Vec<(usize, usize, std::ops::Range<usize>)>,
    /// The struct can be checked whole against an expected image (see
    /// `Replayer::struct_matches`): its leaves are in offset order, within `size`, do
    /// not overlap, and every leaf that needs an action is an input handle or fd
    /// (`Handle`, `Destroys`, `Fd`, `TakesFd`) of 1 to 8 bytes, which compares through
    /// the live map and changes nothing, or a created handle (`Creates`) of 1 to 8
    /// bytes (listed in `creates`, checked and mapped apart).
    pub fast: bool,
    /// With `fast`: the byte ranges `(offset, length)` of `[0, size)` no leaf compares
    /// (pointers, masked values, padding, created handles), adjacent ones merged.
    pub skip_runs: Vec<(usize, usize)>,
    /// With `fast`: the indices in `leaves` of the created handles, in offset order.
    pub creates: Vec<usize>,
}

impl Plan {
    fn new(leaves: Vec<Leaf>, size: usize) -> Plan {
        let mut plain_runs: Vec<(usize, usize)> = Vec::new();
        let mut special = Vec::new();
        for (i, l) in leaves.iter().enumerate() {
            if l.class != Class::Plain {
                if !matches!(l.class, Class::Pointer | Class::Masked) {
                    special.push(i);
                }
                continue;
            }
            match plain_runs.last_mut() {
                Some((o, n)) if *o + *n == l.off => *n += l.size,
                _ => plain_runs.push((l.off, l.size)),
            }
        }
        let mut special_runs: Vec<(usize, usize, std::ops::Range<usize>)> = Vec::new();
        for (k, &i) in special.iter().enumerate() {
            let l = &leaves[i];
            if l.class == Class::Handle
                && let Some((o, n, r)) = special_runs.last_mut()
                && *n > 0
                && *o + *n == l.off
                && r.end == k
                && leaves[special[r.start]].size == l.size
            {
                *n += l.size;
                r.end = k + 1;
                continue;
            }
            let n = if l.class == Class::Handle { l.size } else { 0 };
            special_runs.push((l.off, n, k..k + 1));
        }
        let (fast, skip_runs) = match skip_runs(&leaves, size) {
            Some(s) => (true, s),
            None => (false, Vec::new()),
        };
        let creates = match fast {
            true => (0..leaves.len())
                .filter(|&i| matches!(leaves[i].class, Class::Creates(_)))
                .collect(),
            false => Vec::new(),
        };
        Plan {
            leaves,
            size,
            plain_runs,
            special,
            special_runs,
            fast,
            skip_runs,
            creates,
        }
    }

    /// True if every plain byte range is equal in `a` and `b` (ranges past the end of
    /// either are compared leaf by leaf, as before).
    pub fn plain_equal(&self, a: &[u8], b: &[u8]) -> bool {
        self.plain_runs
            .iter()
            .all(|&(o, n)| match (a.get(o..o + n), b.get(o..o + n)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            })
    }
}

/// The uncompared byte ranges of a struct whose leaves qualify for [`Plan::fast`];
/// `None` if they do not.
fn skip_runs(leaves: &[Leaf], size: usize) -> Option<Vec<(usize, usize)>> {
    let mut skip = Vec::new();
    // End of the last leaf, and of the last compared leaf.
    let (mut end, mut compared_end) = (0, 0);
    for l in leaves {
        if l.off < end || l.off + l.size > size {
            return None;
        }
        end = l.off + l.size;
        let compared = match l.class {
            Class::Plain => true,
            Class::Pointer | Class::Masked => false,
            Class::Creates(_) if (1..=8).contains(&l.size) => false,
            Class::Handle | Class::Destroys(_) | Class::Fd | Class::TakesFd(_)
                if (1..=8).contains(&l.size) =>
            {
                true
            }
            _ => return None,
        };
        if compared {
            if l.off > compared_end {
                skip.push((compared_end, l.off - compared_end));
            }
            compared_end = end;
        }
    }
    if size > compared_end {
        skip.push((compared_end, size - compared_end));
    }
    Some(skip)
}

/// Calls `f(w)` for each 8-byte word `w` of `a` and `b` (of equal lengths, multiples of
/// 8) that is not zero in either, in order: the set slots of a run of handle slots, most
/// of them empty (SUBMITCOMMAND's 64 `broadcast_context` slots). 32 bytes of both are
/// OR-ed at a time and only a block with a set byte is looked at word by word.
pub(crate) fn set_words(a: &[u8], b: &[u8], mut f: impl FnMut(usize)) {
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    let (mut ab, mut bb) = (a.chunks_exact(32), b.chunks_exact(32));
    let mut w = 0;
    for (x, y) in ab.by_ref().zip(bb.by_ref()) {
        let x: &[u8; 32] = x.try_into().expect("32 bytes");
        let y: &[u8; 32] = y.try_into().expect("32 bytes");
        if x.iter().zip(y).fold(0u8, |acc, (p, q)| acc | p | q) != 0 {
            for i in 0..4 {
                if word(&x[i * 8..i * 8 + 8]) | word(&y[i * 8..i * 8 + 8]) != 0 {
                    f(w + i);
                }
            }
        }
        w += 4;
    }
    for (x, y) in ab
        .remainder()
        .chunks_exact(8)
        .zip(bb.remainder().chunks_exact(8))
    {
        if word(x) | word(y) != 0 {
            f(w);
        }
        w += 1;
    }
}

fn flatten(kind: &Kind, off: usize, size: usize, path: String, out: &mut Vec<Leaf>) {
    match kind {
        Kind::Pad => {}
        Kind::Struct(d) => flatten_struct(d, off, &format!("{path}."), out),
        Kind::Array(ek, n)
            if *n > 0
                && matches!(
                    ek,
                    Kind::Struct(_) | Kind::Handle | Kind::Fd | Kind::Pointer
                ) =>
        {
            let es = size / n;
            for i in 0..*n {
                flatten(ek, off + i * es, es, format!("{path}[{i}]"), out);
            }
        }
        k => {
            let class = match k {
                Kind::Handle => Class::Handle,
                Kind::Fd => Class::Fd,
                Kind::Pointer => Class::Pointer,
                _ => Class::Plain,
            };
            out.push(Leaf {
                path,
                off,
                size,
                kind: *k,
                class,
            });
        }
    }
}

fn flatten_struct(d: &StructDesc, base: usize, prefix: &str, out: &mut Vec<Leaf>) {
    if d.fields.is_empty() {
        // Legacy entries carry only a size: compare the struct as one opaque blob.
        if d.size > 0 {
            out.push(Leaf {
                path: format!("{prefix}raw"),
                off: base,
                size: d.size,
                kind: Kind::Bytes,
                class: Class::Plain,
            });
        }
        return;
    }
    for f in d.fields {
        flatten(
            &f.kind,
            base + f.offset,
            f.size,
            format!("{prefix}{}", f.name),
            out,
        );
    }
}

fn class_of(effect: Effect, t: HandleType) -> Class {
    match effect {
        Effect::Creates => Class::Creates(t),
        Effect::Destroys => Class::Destroys(t),
        Effect::ReturnsFd => Class::ReturnsFd(t),
        Effect::TakesFd => Class::TakesFd(t),
        Effect::MapsVa | Effect::HostValue => Class::Masked,
    }
}

/// Applies an effect to the leaf range `[off, off+size)`: an exact leaf takes the class;
/// a larger (opaque) leaf is split so only the effect's bytes change class.
fn apply(leaves: &mut Vec<Leaf>, off: usize, size: usize, name: &str, class: Class) {
    if let Some(l) = leaves.iter_mut().find(|l| l.off == off && l.size == size) {
        // A union of a pointer and an fd (SIGNAL…FROMGPU2: monitored_fence_values /
        // cpu_event_handle): the fd arm's condition is free text the replay cannot
        // evaluate, while the pointer arm is driven by the table's walk; keep the pointer.
        if !(l.class == Class::Pointer && matches!(class, Class::TakesFd(_))) {
            l.class = class;
        }
        return;
    }
    if let Some(i) = leaves
        .iter()
        .position(|l| l.off <= off && off + size <= l.off + l.size)
    {
        let l = leaves.remove(i);
        let mut parts = Vec::new();
        if off > l.off {
            parts.push(Leaf {
                path: format!("{}[..{}]", l.path, off - l.off),
                off: l.off,
                size: off - l.off,
                kind: Kind::Bytes,
                class: l.class,
            });
        }
        parts.push(Leaf {
            path: name.to_string(),
            off,
            size,
            kind: Kind::Hex,
            class,
        });
        let end = l.off + l.size;
        if off + size < end {
            parts.push(Leaf {
                path: format!("{}[{}..]", l.path, off + size - l.off),
                off: off + size,
                size: end - off - size,
                kind: Kind::Bytes,
                class: l.class,
            });
        }
        for (j, p) in parts.into_iter().enumerate() {
            leaves.insert(i + j, p);
        }
        return;
    }
    leaves.push(Leaf {
        path: name.to_string(),
        off,
        size,
        kind: Kind::Hex,
        class,
    });
    leaves.sort_by_key(|l| l.off);
}

/// The table's pointer descriptors are authoritative for which fields hold pointers
/// (a union member may be declared as a plain integer in the layout).
fn mark_pointers(leaves: &mut Vec<Leaf>, ptrs: &[PointerDesc]) {
    for p in ptrs {
        if let driver_core::schema::PtrAddr::Field { offset } = p.addr {
            apply(leaves, offset as usize, 8, p.path, Class::Pointer);
        }
    }
}

/// Plan of an ioctl's argument struct, with the entry's field-level handle effects.
pub(crate) fn struct_plan(entry: &IoctlDesc) -> Plan {
    let mut leaves = Vec::new();
    flatten_struct(entry.layout, 0, "", &mut leaves);
    mark_pointers(&mut leaves, entry.pointers);
    for h in entry.handles {
        // An fd taken only under a condition the table states in prose ("if
        // flags.enqueue_cpu_event") shares its bytes with plain values (fence values): the
        // replay cannot tell which arm is live, so it leaves the bytes as recorded.
        if h.effect == Effect::TakesFd && !h.when.is_empty() {
            continue;
        }
        if let Loc::Field { path, offset, size } = h.loc {
            apply(
                &mut leaves,
                offset as usize,
                size as usize,
                path,
                class_of(h.effect, h.handle_type),
            );
        }
    }
    Plan::new(leaves, entry.size())
}

/// Plan of one element of a pointed-to array, with the entry's element-level effects.
/// Byte buffers (element size 1) get an empty plan: they are compared as bytes.
pub(crate) fn elem_plan(entry: &IoctlDesc, p: &PointerDesc) -> Plan {
    let es = p.elem_size as usize;
    let mut leaves = Vec::new();
    if es > 1 {
        flatten(&p.elem, 0, es, String::new(), &mut leaves);
        for l in &mut leaves {
            // Element leaves are named relative to the element (`allocation`, not `.allocation`).
            if let Some(s) = l.path.strip_prefix('.') {
                l.path = s.to_string();
            }
        }
        mark_pointers(&mut leaves, p.nested);
        for h in entry.handles {
            if let Loc::Elem {
                pointer,
                offset,
                size,
            } = h.loc
                && pointer == p.path
            {
                apply(
                    &mut leaves,
                    offset as usize,
                    size as usize,
                    "",
                    class_of(h.effect, h.handle_type),
                );
            }
        }
    }
    if PID_LISTS.contains(&(entry.name, p.path)) {
        for l in &mut leaves {
            if l.class == Class::Plain {
                l.class = Class::Pid;
            }
        }
    }
    Plan::new(leaves, es)
}

/// Plans cached by the address of the static table entry / pointer descriptor.
#[derive(Default)]
pub(crate) struct PlanCache {
    structs: IntMap<usize, Rc<Plan>>,
    elems: IntMap<usize, Rc<Plan>>,
    /// Call shapes ([`crate::call::Shape`]) by shape key.
    pub shapes: crate::call::ShapeCache,
}

impl PlanCache {
    pub fn for_struct(&mut self, entry: &'static IoctlDesc) -> Rc<Plan> {
        self.structs
            .entry(entry as *const _ as usize)
            .or_insert_with(|| Rc::new(struct_plan(entry)))
            .clone()
    }
    pub fn for_elem(&mut self, entry: &'static IoctlDesc, p: &'static PointerDesc) -> Rc<Plan> {
        self.elems
            .entry(p as *const _ as usize)
            .or_insert_with(|| Rc::new(elem_plan(entry, p)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driver_core::schema::{find_pointer, lookup_name};

    #[test]
    fn createallocation_plan_marks_created_handles() {
        let e = lookup_name("LX_DXCREATEALLOCATION").expect("in table");
        let sp = struct_plan(e);
        let dev = sp
            .leaves
            .iter()
            .find(|l| l.path == "device")
            .expect("device leaf");
        assert_eq!(dev.class, Class::Handle);
        let res = sp
            .leaves
            .iter()
            .find(|l| l.off == 4)
            .expect("resource leaf");
        assert!(matches!(res.class, Class::Creates(HandleType::Resource)));
        let p = find_pointer(e, "allocation_info").expect("pointer");
        let ep = elem_plan(e, p);
        assert!(
            matches!(ep.leaves[0].class, Class::Creates(HandleType::Allocation)),
            "{:?}",
            ep.leaves[0]
        );
        assert!(
            ep.leaves
                .iter()
                .any(|l| l.path == "sysmem" && l.class == Class::Pointer)
        );
    }

    /// `set_words` reports exactly the words set on either side, for every length up to
    /// 80 bytes and every position of a set byte on each side.
    #[test]
    fn set_words_finds_every_set_word() {
        for words in 0..=10 {
            let n = words * 8;
            for at in 0..n {
                for side in 0..2 {
                    let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                    [&mut a, &mut b][side][at] = 1;
                    if at >= 8 {
                        [&mut b, &mut a][side][at - 8] = 2;
                    }
                    let mut got = Vec::new();
                    set_words(&a, &b, |w| got.push(w));
                    let want: Vec<usize> = if at >= 8 {
                        vec![at / 8 - 1, at / 8]
                    } else {
                        vec![at / 8]
                    };
                    assert_eq!(got, want, "{n} bytes, byte {at}, side {side}");
                }
            }
        }
    }

    #[test]
    fn mapped_va_is_masked() {
        let e = lookup_name("LX_DXCREATEPAGINGQUEUE").expect("in table");
        let sp = struct_plan(e);
        let l = sp.leaves.iter().find(|l| l.off == 16).expect("fence va");
        assert_eq!(l.class, Class::Masked);
    }
}
