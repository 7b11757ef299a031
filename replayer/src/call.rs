//! One recorded ioctl turned into memory the driver can be handed: the argument struct
//! and every pointed-to buffer rebuilt at fresh addresses, pointer fields patched, from the
//! table's pointer descriptors (nested arrays too), plus the static "what does this call
//! use / create / destroy" scan shared by replay and trim.

use std::borrow::Cow;
use std::rc::Rc;

use driver_core::layout::read_uint;
use driver_core::schema::{
    ArgKind, CaptureBuf, Dir, Effect, HandleType, IoctlDesc, Loc, PointerDesc, PtrAddr,
    find_pointer, walk_pointers,
};
use traces::{BufferRole, IoctlRecord};

use crate::plan::{Class, Plan, PlanCache};

/// The recorded buffer with this role and path, else one at this address.
pub(crate) fn recorded<'a>(
    rec: &'a IoctlRecord,
    role: BufferRole,
    path: &str,
    addr: u64,
) -> Option<&'a [u8]> {
    rec.buffer(role, path)
        .or_else(|| {
            rec.buffers
                .iter()
                .find(|b| b.role == role && b.addr == addr && !b.path.is_empty())
        })
        .map(|b| b.data.as_slice())
}

/// The argument struct as the program passed it (zero-filled to the table size).
pub(crate) fn struct_in(entry: &IoctlDesc, rec: &IoctlRecord) -> Vec<u8> {
    let mut v = rec
        .buffer(BufferRole::StructIn, "")
        .map(|b| b.data.clone())
        .unwrap_or_default();
    v.resize(entry.size().max(v.len()), 0);
    v
}

/// The pointer buffers of a recorded call, computed from its input struct with the table's
/// walk; nested arrays are followed through the recorded input buffers.
pub(crate) fn recorded_walk(
    entry: &'static IoctlDesc,
    rec: &IoctlRecord,
    sin: &[u8],
) -> Vec<CaptureBuf> {
    let mut read = |addr: u64, len: usize| {
        rec.buffers
            .iter()
            .find(|b| b.addr == addr && matches!(b.role, BufferRole::PtrIn | BufferRole::PtrOut))
            .map(|b| b.data[..len.min(b.data.len())].to_vec())
    };
    walk_pointers(entry, rec.arg, sin, &mut read)
}

/// Splits `a[2].b` into (`a`, Some(2)) and `x.y` into (`x`, None); `None` for a top-level path.
fn parent_of(path: &str) -> Option<(&str, Option<usize>)> {
    let (parent, _) = path.rsplit_once('.')?;
    if let Some(stripped) = parent.strip_suffix(']')
        && let Some((base, idx)) = stripped.rsplit_once('[')
    {
        return Some((base, idx.parse().ok()));
    }
    Some((parent, None))
}

/// Calls `f(leaf, value)` for each leaf of `plan` over `bytes` (every element when the
/// buffer is an array of `plan.size`-byte elements), with the element index.
pub(crate) fn for_leaves(
    plan: &Plan,
    bytes: &[u8],
    mut f: impl FnMut(Option<usize>, &crate::plan::Leaf, u64),
) {
    if plan.leaves.is_empty() {
        return;
    }
    let (n, es, arr) = if plan.size > 0 && bytes.len() > plan.size {
        (bytes.len() / plan.size, plan.size, true)
    } else {
        (1, bytes.len(), false)
    };
    for i in 0..n {
        let el = &bytes[i * es..(i * es + es).min(bytes.len())];
        for l in &plan.leaves {
            if l.size <= 8
                && let Some(v) = read_uint(el, l.off, l.size)
            {
                f(arr.then_some(i), l, v);
            }
        }
    }
}

/// Where a rebuilt buffer lives during the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mem {
    /// In the call's scratch image at this byte offset (the argument struct is at 0;
    /// flexible array members right after it; other buffers follow, 16-byte aligned).
    Image(usize),
    /// The `i`-th long-lived page-aligned region made for this call (kept by the driver).
    Pinned(usize),
}

/// A pointed-to buffer of a compiled call.
#[derive(Debug)]
pub(crate) struct BufPlan<'r> {
    /// Concrete path (`allocation_info[2].priv_drv_data`).
    pub path: String,
    /// Where it lives.
    pub mem: Mem,
    /// Length handed to the driver.
    pub len: usize,
    /// What the capture saw the driver write there (compared after the call).
    pub out: Option<&'r [u8]>,
    /// Element plan (arrays of structs / handles); `None`: compared as bytes.
    pub elems: Option<Rc<Plan>>,
    /// Element size from the descriptor.
    elem_size: usize,
}

/// A long-lived region a call needs (`Dir::Pinned`): made fresh for each call, with the
/// captured content, and kept with its owner afterwards.
#[derive(Debug)]
pub(crate) struct PinnedPlan<'r> {
    /// Path, for diagnostics.
    pub path: String,
    /// Bytes to map.
    pub len: usize,
    /// Captured content.
    pub data: &'r [u8],
    /// The object that keeps it alive (the allocation created from the same array
    /// element), else the fd the call is issued on.
    pub owner: Option<crate::replay::Obj>,
}

/// An input handle / fd field rewritten through the live map before the call.
#[derive(Debug)]
pub(crate) struct Remap {
    /// Byte offset in the image.
    pub off: usize,
    /// Field size.
    pub size: usize,
    /// An fd (else a handle).
    pub is_fd: bool,
    /// Type the table gives (eventfds are made afresh).
    pub ty: HandleType,
    /// Recorded value.
    pub value: u64,
    /// Field path, for the error naming an unmapped value.
    pub field: String,
}

/// An ioctl no table knows (`--allow-unknown`): the recorded struct, if any, at a fresh
/// address (compared as bytes afterwards); otherwise the recorded `arg` value as is.
pub(crate) fn compile_unknown(rec: &IoctlRecord) -> CallPlan<'_> {
    let mut cp = CallPlan::empty(None, rec);
    match rec
        .buffer(BufferRole::StructIn, "")
        .or_else(|| rec.buffer(BufferRole::StructOut, ""))
    {
        Some(b) => {
            let size = driver_core::ioc::IocFields::of(rec.cmd).size as usize;
            cp.image = vec![0; size.max(b.data.len())];
            if b.role == BufferRole::StructIn {
                cp.image[..b.data.len()].copy_from_slice(&b.data);
            }
            cp.struct_len = cp.image.len();
            cp.out = rec
                .buffer(BufferRole::StructOut, "")
                .map(|b| b.data.as_slice());
        }
        None => cp.arg = Some(rec.arg),
    }
    cp
}

/// A recorded ioctl compiled once into what replaying it takes: no string paths, no
/// table walks and no per-call allocation remain for the hot loop, which copies `image`
/// into a reused scratch buffer, patches `patches` with the scratch's addresses, rewrites
/// `remaps` through the live map, issues the call and compares with `out` / `bufs`.
#[derive(Debug)]
pub(crate) struct CallPlan<'r> {
    /// The table entry (`None`: an unknown request code).
    pub entry: Option<&'static IoctlDesc>,
    /// `Some(v)`: `arg` is this plain value (no struct); `None`: the scratch address.
    pub arg: Option<u64>,
    /// The argument struct, trailing arrays and heap buffers with their captured input.
    pub image: Vec<u8>,
    /// Length of the argument struct (plus trailing arrays) at the start of `image`;
    /// 0 when `arg` is a plain value.
    pub struct_len: usize,
    /// Pointer fields: (offset in the image, where the buffer lives).
    pub patches: Vec<(usize, Mem)>,
    /// Input handles / fds.
    pub remaps: Vec<Remap>,
    /// Long-lived regions.
    pub pinned: Vec<PinnedPlan<'r>>,
    /// Pointed-to buffers compared after the call, in walk order.
    pub bufs: Vec<BufPlan<'r>>,
    /// The recorded argument struct after the call.
    pub out: Option<&'r [u8]>,
    /// Comparison plan of the argument struct.
    pub splan: Option<Rc<Plan>>,
    /// The return value is a new fd of this type.
    pub ret_fd: Option<HandleType>,
    /// The recorded fd, then the handles the call used (recorded values): the lineage
    /// parents of what the call creates.
    pub parents: Vec<crate::replay::Obj>,
    /// Handles the call destroys (recorded values).
    pub destroys: Vec<u64>,
    /// A buffer that had to be recreated was not captured (reported when the call runs).
    pub missing: Option<String>,
}

impl<'r> CallPlan<'r> {
    fn empty(entry: Option<&'static IoctlDesc>, rec: &IoctlRecord) -> CallPlan<'r> {
        CallPlan {
            entry,
            arg: None,
            image: Vec::new(),
            struct_len: 0,
            patches: Vec::new(),
            remaps: Vec::new(),
            pinned: Vec::new(),
            bufs: Vec::new(),
            out: None,
            splan: None,
            ret_fd: None,
            parents: vec![crate::replay::Obj::Fd(rec.fd as i64)],
            destroys: Vec::new(),
            missing: None,
        }
    }
}

fn write_uint(b: &mut [u8], off: usize, size: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + size) {
        s.copy_from_slice(&v.to_le_bytes()[..size]);
    }
}

/// Writes `v` in the `size`-byte little-endian field at `off` (out-of-range: ignored).
pub(crate) fn put_uint(b: &mut [u8], off: usize, size: usize, v: u64) {
    write_uint(b, off, size, v)
}

/// Input handle / fd leaves of `plan` over `bytes` (at `base` in the image) as remaps.
fn remaps_in(plan: &Plan, bytes: &[u8], base: usize, prefix: &str, out: &mut Vec<Remap>) {
    for_leaves(plan, bytes, |i, l, v| {
        let (is_fd, ty) = match l.class {
            Class::Handle | Class::Destroys(_) => (false, HandleType::Any),
            Class::Fd => (true, HandleType::Any),
            Class::TakesFd(t) => (true, t),
            _ => return,
        };
        // 0 means "no handle" for dxg handles and "no event" for the eventfd fields; a
        // negative fd means none as well.
        let sv = driver_core::layout::sign_extend(v, l.size);
        if v == 0 || (is_fd && sv < 0) {
            return;
        }
        let field = match i {
            Some(i) => format!("{prefix}[{i}].{}", l.path),
            None if prefix.is_empty() => l.path.clone(),
            None => format!("{prefix}.{}", l.path),
        };
        out.push(Remap {
            off: base + i.unwrap_or(0) * plan.size + l.off,
            size: l.size,
            is_fd,
            ty,
            value: v,
            field,
        });
    });
}

/// Compiles a recorded call of a known ioctl (see [`CallPlan`]).
pub(crate) fn compile<'r>(
    entry: &'static IoctlDesc,
    rec: &'r IoctlRecord,
    plans: &mut PlanCache,
) -> CallPlan<'r> {
    let ret_fd = entry
        .handles
        .iter()
        .find(|h| matches!(h.loc, Loc::Return) && h.effect == Effect::ReturnsFd)
        .map(|h| h.handle_type);
    let mut cp = CallPlan::empty(Some(entry), rec);
    cp.ret_fd = ret_fd;
    if !matches!(entry.arg, ArgKind::Struct) {
        cp.arg = Some(rec.arg);
        return cp;
    }
    let sin = struct_in(entry, rec);
    let refs = refs_of(entry, rec, &sin, plans);
    cp.parents.extend(
        refs.handles_in
            .iter()
            .map(|h| crate::replay::Obj::Handle(*h)),
    );
    cp.destroys = refs.destroys;
    cp.out = rec
        .buffer(BufferRole::StructOut, "")
        .map(|b| b.data.as_slice());

    let caps = recorded_walk(entry, rec, &sin);
    // Flexible array members live right after the struct: make room for them.
    let mut total = sin.len();
    for c in &caps {
        if let Some(PointerDesc {
            addr: PtrAddr::Trailing { offset },
            ..
        }) = find_pointer(entry, c.desc_path)
        {
            total = total.max(*offset as usize + c.len as usize);
        }
    }
    cp.image = vec![0; total];
    cp.image[..sin.len()].copy_from_slice(&sin);
    cp.struct_len = total;
    let splan = plans.for_struct(entry);
    remaps_in(&splan, &cp.image[..entry.size()], 0, "", &mut cp.remaps);
    cp.splan = Some(splan);

    for c in caps {
        let Some(desc) = find_pointer(entry, c.desc_path) else {
            continue;
        };
        // The program passed memory that could not be read (an error-path test with a bad
        // pointer): keep the recorded address so the driver faults the same way.
        if rec
            .buffers
            .iter()
            .any(|b| b.role == BufferRole::PtrIn && b.path == c.path && b.unreadable())
        {
            continue;
        }
        let data_in = if c.dir.is_in() || c.dir == Dir::Pinned {
            recorded(rec, BufferRole::PtrIn, &c.path, c.addr)
        } else {
            None
        };
        let mut len = c.len as usize;
        let mem = match desc.addr {
            PtrAddr::Trailing { offset } => {
                let off = offset as usize;
                if let Some(d) = data_in {
                    let n = d.len().min(len);
                    cp.image[off..off + n].copy_from_slice(&d[..n]);
                }
                Mem::Image(off)
            }
            PtrAddr::Field { .. } if c.dir == Dir::Pinned => {
                if c.unknown_len {
                    // Host-reported length (dxg existing sysmem): only the capture knows it.
                    match data_in {
                        Some(d) => len = d.len(),
                        None => {
                            cp.missing.get_or_insert(c.path.clone());
                            continue;
                        }
                    }
                }
                cp.pinned.push(PinnedPlan {
                    path: c.path.clone(),
                    len,
                    data: data_in.unwrap_or(&[]),
                    owner: crate::replay::pinned_owner(entry, rec, &c.path),
                });
                Mem::Pinned(cp.pinned.len() - 1)
            }
            PtrAddr::Field { .. } => {
                let off = cp.image.len().next_multiple_of(16);
                cp.image.resize(off + len, 0);
                if let Some(d) = data_in {
                    let n = d.len().min(len);
                    cp.image[off..off + n].copy_from_slice(&d[..n]);
                }
                Mem::Image(off)
            }
        };
        let elems = (desc.elem_size > 1).then(|| plans.for_elem(entry, desc));
        if let (Some(ep), true, Mem::Image(off)) = (&elems, c.dir.is_in(), mem) {
            let (bytes, mut v) = (&cp.image[off..off + len], Vec::new());
            remaps_in(ep, bytes, off, &c.path, &mut v);
            cp.remaps.extend(v);
        }
        // Patch the pointer field in the parent (the struct, or an element of an earlier
        // buffer); a parent in a pinned region is left as captured.
        if let PtrAddr::Field { offset } = desc.addr {
            let at = match parent_of(&c.path) {
                None => Some(offset as usize),
                Some((ppath, idx)) => {
                    cp.bufs
                        .iter()
                        .find(|b| b.path == ppath)
                        .and_then(|b| match b.mem {
                            Mem::Image(poff) => {
                                let base = if b.elem_size > 1 {
                                    idx.unwrap_or(0) * b.elem_size
                                } else {
                                    0
                                };
                                Some(poff + base + offset as usize)
                            }
                            Mem::Pinned(_) => None,
                        })
                }
            };
            if let Some(at) = at {
                cp.patches.push((at, mem));
            }
        }
        let out = recorded(rec, BufferRole::PtrOut, &c.path, u64::MAX);
        cp.bufs.push(BufPlan {
            path: c.path,
            mem,
            len,
            out,
            elems,
            elem_size: desc.elem_size as usize,
        });
    }
    cp
}

/// What a recorded call uses, creates and destroys (from its recorded bytes).
#[derive(Debug, Default, Clone)]
pub(crate) struct Refs {
    /// Handles read by the call.
    pub handles_in: Vec<u64>,
    /// fds read by the call (besides the fd it is issued on).
    pub fds_in: Vec<i64>,
    /// Handles created (recorded values) with their types.
    pub creates: Vec<(u64, HandleType)>,
    /// fds returned (recorded values).
    pub returns_fds: Vec<(i64, HandleType)>,
    /// Handles destroyed.
    pub destroys: Vec<u64>,
}

/// Scans a recorded call through the table's plans.
pub(crate) fn refs(entry: &'static IoctlDesc, rec: &IoctlRecord, plans: &mut PlanCache) -> Refs {
    let sin = if matches!(entry.arg, ArgKind::Struct) {
        struct_in(entry, rec)
    } else {
        Vec::new()
    };
    refs_of(entry, rec, &sin, plans)
}

/// [`refs`] over the call's input struct `sin` (from [`struct_in`]; unused unless the
/// argument is a struct).
fn refs_of(
    entry: &'static IoctlDesc,
    rec: &IoctlRecord,
    sin: &[u8],
    plans: &mut PlanCache,
) -> Refs {
    let mut r = Refs::default();
    for h in entry.handles {
        if matches!(h.loc, Loc::Return)
            && h.effect == driver_core::schema::Effect::ReturnsFd
            && rec.ret >= 0
        {
            r.returns_fds.push((rec.ret, h.handle_type));
        }
    }
    if !matches!(entry.arg, ArgKind::Struct) {
        return r;
    }
    let splan = plans.for_struct(entry);
    let on_in = |l: &crate::plan::Leaf, v: u64, r: &mut Refs| {
        if v == 0 {
            return;
        }
        match l.class {
            Class::Handle => r.handles_in.push(v),
            Class::Destroys(_) => {
                r.handles_in.push(v);
                r.destroys.push(v);
            }
            Class::Fd | Class::TakesFd(_) => {
                let s = driver_core::layout::sign_extend(v, l.size);
                if s >= 0 {
                    r.fds_in.push(s)
                }
            }
            _ => {}
        }
    };
    let on_out = |l: &crate::plan::Leaf, v: u64, r: &mut Refs| match l.class {
        Class::Creates(t) if v != 0 => r.creates.push((v, t)),
        Class::ReturnsFd(t) => {
            let s = driver_core::layout::sign_extend(v, l.size);
            if s >= 0 {
                r.returns_fds.push((s, t))
            }
        }
        _ => {}
    };
    for_leaves(&splan, &sin[..entry.size()], |_, l, v| on_in(l, v, &mut r));
    if let Some(out) = rec.buffer(BufferRole::StructOut, "")
        && rec.ret >= 0
    {
        for_leaves(&splan, &out.data, |_, l, v| on_out(l, v, &mut r));
    }
    for b in &rec.buffers {
        if !matches!(b.role, BufferRole::PtrIn | BufferRole::PtrOut) {
            continue;
        }
        // Element indices are stripped only when there are some (no allocation per buffer).
        let dp = if b.path.contains('[') {
            Cow::Owned(driver_core::schema::desc_path_of(&b.path))
        } else {
            Cow::Borrowed(b.path.as_str())
        };
        let Some(desc) = find_pointer(entry, &dp) else {
            continue;
        };
        if desc.elem_size <= 1 {
            continue;
        }
        let ep = plans.for_elem(entry, desc);
        if b.role == BufferRole::PtrIn {
            for_leaves(&ep, &b.data, |_, l, v| on_in(l, v, &mut r));
        } else if rec.ret >= 0 {
            for_leaves(&ep, &b.data, |_, l, v| on_out(l, v, &mut r));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_paths() {
        assert_eq!(parent_of("a"), None);
        assert_eq!(parent_of("a[2].b"), Some(("a", Some(2))));
        assert_eq!(parent_of("x.y"), Some(("x", None)));
    }
}
