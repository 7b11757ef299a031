//! One recorded ioctl turned into memory the driver can be handed: the argument struct
//! and every pointed-to buffer rebuilt at fresh addresses, pointer fields patched, from the
//! table's pointer descriptors (nested arrays too), plus the static "what does this call
//! use / create / destroy" scan shared by replay and trim.

use std::borrow::Cow;
use std::rc::Rc;

use driver_core::layout::read_uint;
use driver_core::schema::{
    ArgKind, CaptureBuf, Cond, Dir, Effect, HandleType, IoctlDesc, Loc, PointerDesc, PtrAddr,
    find_pointer, walk_pointers,
};
use traces::{BufferRole, IoctlRecord};

use crate::plan::{Class, Plan, PlanCache};

/// The table's pointer descriptor of a recorded buffer at `path` when it is an array of
/// structured elements (element size > 1), whose leaves replay walks one by one. Element
/// indices are stripped only when there are some (no allocation per buffer).
fn element_array(entry: &IoctlDesc, path: &str) -> Option<&'static PointerDesc> {
    let dp = if path.contains('[') {
        Cow::Owned(driver_core::schema::desc_path_of(path))
    } else {
        Cow::Borrowed(path)
    };
    find_pointer(entry, &dp).filter(|d| d.elem_size > 1)
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

/// A pointed-to buffer of a compiled call (part of its [`Shape`]).
#[derive(Debug)]
pub(crate) struct BufPlan {
    /// Concrete path (`allocation_info[2].priv_drv_data`).
    pub path: String,
    /// Where it lives.
    pub mem: Mem,
    /// Length handed to the driver.
    pub len: usize,
    /// Index in the record's buffers of what the capture saw the driver write there
    /// (compared after the call).
    pub out: Option<usize>,
    /// Element plan (arrays of structs / handles); `None`: compared as bytes.
    pub elems: Option<Rc<Plan>>,
    /// Element size from the descriptor.
    elem_size: usize,
}

/// A long-lived region of a [`Shape`] (`Dir::Pinned`).
#[derive(Debug)]
pub(crate) struct PinnedShape {
    path: String,
    len: usize,
    /// Index in the record's buffers of the captured content.
    data: Option<usize>,
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

/// An input handle / fd field of a [`Shape`]: rewritten through the live map before the
/// call when the recorded value is set (non-zero; for fds, non-negative).
#[derive(Debug)]
pub(crate) struct RemapSlot {
    /// Byte offset in the image.
    pub off: usize,
    /// Field size.
    pub size: usize,
    /// An fd (else a handle).
    pub is_fd: bool,
    /// Type the table gives (eventfds are made afresh).
    pub ty: HandleType,
    /// Field path, for the error naming an unmapped value.
    pub field: String,
    /// The first slot after the run of adjacent same-size slots this one is in (see
    /// [`set_run_ends`]): when this slot is 0, [`bind_with`] skips the rest of the run
    /// at once if its bytes are all zero (the empty slots of a handle array).
    pub run_end: usize,
}

/// A handle the call reads (a lineage parent of what it creates), maybe destroying it.
#[derive(Debug)]
struct RefSlot {
    /// `None`: the input struct; `Some(i)`: the record's `i`-th buffer.
    src: Option<usize>,
    off: usize,
    size: usize,
    destroys: bool,
    /// As [`RemapSlot::run_end`].
    run_end: usize,
}

/// Sets `run_end` of slots described by `(source, offset, size)`: a run is a maximal
/// sequence of slots of one source and size whose fields are back to back.
fn set_run_ends<T>(
    slots: &mut [T],
    key: impl Fn(&T) -> (Option<usize>, usize, usize),
    set: impl Fn(&mut T, usize),
) {
    let mut end = slots.len();
    for k in (0..slots.len()).rev() {
        if k + 1 < slots.len() {
            let (src, off, size) = key(&slots[k]);
            let (nsrc, noff, nsize) = key(&slots[k + 1]);
            if !(src == nsrc && size == nsize && off + size == noff) {
                end = k + 1;
            }
        }
        set(&mut slots[k], end);
    }
}

/// True if `b[from..to]` is all zero (false when out of range).
fn zero_span(b: &[u8], from: usize, to: usize) -> bool {
    let Some(s) = b.get(from..to) else {
        return false;
    };
    let mut words = s.chunks_exact(8);
    let mut acc = 0u64;
    for w in &mut words {
        acc |= u64::from_ne_bytes(w.try_into().expect("8 bytes"));
    }
    acc == 0 && words.remainder().iter().all(|x| *x == 0)
}

/// One pointed-to buffer's captured input copied into the image, then the remap slots
/// read from it (up to `remaps_end`).
#[derive(Debug)]
struct CapCopy {
    /// (record buffer index, image offset, bytes).
    copy: Option<(usize, usize, usize)>,
    remaps_end: usize,
}

/// Everything about a call that depends only on its *shape* — the ioctl, the
/// layout of its recorded buffers and the struct fields the pointer walk reads (conditions,
/// null pointers, lengths) — and not on the values it carries: image layout, pointer
/// patches, handle-field positions, comparison plans. Calls of the same shape share one
/// (see [`ShapeCache`]); [`bind`] adds a call's values.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    /// The table entry (`None`: an unknown request code).
    pub entry: Option<&'static IoctlDesc>,
    /// `arg` is the recorded plain value (no struct).
    plain_arg: bool,
    image_len: usize,
    /// Length of the argument struct (plus trailing arrays) at the start of the image;
    /// 0 when `arg` is a plain value.
    pub struct_len: usize,
    /// Record buffer copied to the start of the image (the input struct).
    struct_in: Option<usize>,
    /// Record buffer holding the struct after the call.
    struct_out: Option<usize>,
    /// Remap slots read from the struct, before any buffer is copied in.
    struct_remaps: usize,
    copies: Vec<CapCopy>,
    /// Pointer fields: (offset in the image, where the buffer lives).
    pub patches: Vec<(usize, Mem)>,
    /// Input handles / fds.
    pub remaps: Vec<RemapSlot>,
    refs: Vec<RefSlot>,
    pinned: Vec<PinnedShape>,
    /// Pointed-to buffers compared after the call, in walk order.
    pub bufs: Vec<BufPlan>,
    /// Some buffer of `bufs` has a recorded output to compare (most calls' buffers are
    /// inputs only: the loop over them is skipped).
    pub bufs_out: bool,
    /// Comparison plan of the argument struct.
    pub splan: Option<Rc<Plan>>,
    /// With a [`Plan::fast`] struct plan: its `special_runs` as [`bind_with`] scans the
    /// recorded out struct for set handles / fds (see [`OutRun`]).
    out_runs: Vec<OutRun>,
    /// The return value is a new fd of this type.
    pub ret_fd: Option<HandleType>,
    /// A buffer that had to be recreated was not captured (reported when the call runs).
    pub missing: Option<String>,
}

/// A run of special leaves of a struct plan (`Plan::special_runs`): bytes `off..off +
/// len` of the struct, leaves `plan.special[slots]`. `per > 0`: a run of handle slots of
/// `8 / per` bytes each, scanned a word at a time (most of them are empty).
#[derive(Debug)]
struct OutRun {
    off: usize,
    len: usize,
    slots: std::ops::Range<usize>,
    per: usize,
}

/// [`Shape::out_runs`] of a struct plan.
fn out_runs(sp: &Plan) -> Vec<OutRun> {
    if !sp.fast {
        return Vec::new();
    }
    sp.special_runs
        .iter()
        .map(|(o, len, r)| {
            let size = sp.leaves[sp.special[r.start]].size;
            let words = *len > 0 && size > 0 && size <= 8 && 8 % size == 0 && len % 8 == 0;
            OutRun {
                off: *o,
                len: *len,
                slots: r.clone(),
                per: if words { 8 / size } else { 0 },
            }
        })
        .collect()
}

/// A recorded ioctl compiled into what replaying it takes: its [`Shape`] (shared with
/// the calls of the same shape) plus its own values. No string paths, no table walks and
/// no per-call allocation remain for the hot loop, which copies `image` into a reused
/// scratch buffer, patches `shape.patches` with the scratch's addresses, rewrites `remaps`
/// through the live map, issues the call and compares with the record.
#[derive(Debug)]
pub(crate) struct CallPlan<'r> {
    /// Layout, shared.
    pub shape: Rc<Shape>,
    /// `Some(v)`: `arg` is this plain value (no struct); `None`: the scratch address.
    pub arg: Option<u64>,
    /// The argument struct, trailing arrays and heap buffers with their captured input.
    pub image: Vec<u8>,
    /// Input handles / fds to rewrite, with what the replay loop needs of their slot in
    /// `shape.remaps` copied in.
    pub remaps: Vec<Remap>,
    /// Long-lived regions.
    pub pinned: Vec<PinnedPlan<'r>>,
    /// The call failed in the capture (an errno or a raw NTSTATUS): input values the
    /// live map does not know are passed through unchanged, to reproduce the failure.
    pub failed: bool,
    /// The recorded argument struct after the call.
    pub out: Option<&'r [u8]>,
    /// The recorded fd, then the handles the call used (recorded values): the lineage
    /// parents of what the call creates.
    pub parents: Vec<crate::replay::Obj>,
    /// Handles the call destroys (recorded values).
    pub destroys: Vec<u64>,
    /// The recorded out struct can be checked whole (its plan is [`Plan::fast`] and it
    /// covers the plan's size).
    pub out_fast: bool,
    /// With `out_fast`: the input handles / fds of the struct plan whose recorded out
    /// value is not 0, in offset order. The others must come back 0, as recorded,
    /// which the whole-struct check covers. (Created handles are not here: see
    /// `Plan::creates`.)
    pub out_nz: Vec<SetLeaf>,
}

/// An input handle / fd of a call to rewrite (see [`CallPlan::remaps`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remap {
    /// The recorded value.
    pub value: u64,
    /// Byte offset in the image.
    pub off: usize,
    /// Slot in `shape.remaps` (its field path names an unmapped value).
    pub slot: u32,
    pub size: usize,
    pub is_fd: bool,
    /// An eventfd field (the replay makes its own eventfd).
    pub eventfd: bool,
}

/// A set input handle / fd in a recorded out struct (see [`CallPlan::out_nz`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetLeaf {
    /// The recorded value (`size` bytes, zero-extended).
    pub value: u64,
    pub off: u32,
    pub size: u8,
    pub is_fd: bool,
    /// Index in the call's `remaps` of an input with the same value and kind (its
    /// lookup is reused), if one of the first [`REMAP_REUSE`] is; else `u8::MAX`.
    pub remap: u8,
}

/// How many of a call's input remaps keep their replay value for the out struct check.
pub(crate) const REMAP_REUSE: usize = 16;

/// Position of the recorded buffer with this role and path, else of one at this address.
fn recorded_idx(rec: &IoctlRecord, role: BufferRole, path: &str, addr: u64) -> Option<usize> {
    rec.buffers
        .iter()
        .position(|b| b.role == role && b.path == path)
        .or_else(|| recorded_at(rec, role, addr))
}

/// [`recorded_idx`]'s fallback: the first recorded buffer with this role at this address
/// (and some path).
fn recorded_at(rec: &IoctlRecord, role: BufferRole, addr: u64) -> Option<usize> {
    rec.buffers
        .iter()
        .position(|b| b.role == role && b.addr == addr && !b.path.is_empty())
}

/// The shape of an ioctl no table knows (`--allow-unknown`): the recorded struct, if any,
/// at a fresh address (compared as bytes afterwards); otherwise the recorded `arg` value.
fn unknown_shape(rec: &IoctlRecord) -> Shape {
    let mut sh = Shape::default();
    let sin = rec
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::StructIn && b.path.is_empty());
    let sout = rec
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::StructOut && b.path.is_empty());
    match sin.or(sout) {
        Some(i) => {
            let size = driver_core::ioc::IocFields::of(rec.cmd).size as usize;
            sh.image_len = size.max(rec.buffers[i].data.len());
            sh.struct_in = sin;
            sh.struct_len = sh.image_len;
            sh.struct_out = sout;
        }
        None => sh.plain_arg = true,
    }
    sh
}

/// Compiles a call of an ioctl no table knows (see [`unknown_shape`]).
pub(crate) fn compile_unknown(rec: &IoctlRecord) -> CallPlan<'_> {
    bind(Rc::new(unknown_shape(rec)), rec)
}

/// Remap slots for the handle / fd leaves of `plan` over `bytes` (at `base` in the image).
fn remap_slots(plan: &Plan, bytes: &[u8], base: usize, prefix: &str, out: &mut Vec<RemapSlot>) {
    for_leaves(plan, bytes, |i, l, _| {
        let (is_fd, ty) = match l.class {
            Class::Handle | Class::Destroys(_) => (false, HandleType::Any),
            Class::Fd => (true, HandleType::Any),
            Class::TakesFd(t) => (true, t),
            _ => return,
        };
        let field = match i {
            Some(i) => format!("{prefix}[{i}].{}", l.path),
            None if prefix.is_empty() => l.path.clone(),
            None => format!("{prefix}.{}", l.path),
        };
        out.push(RemapSlot {
            off: base + i.unwrap_or(0) * plan.size + l.off,
            size: l.size,
            is_fd,
            ty,
            field,
            run_end: 0,
        });
    });
}

/// Ref slots for the handle leaves (used / destroyed) of `plan` over `bytes`.
fn ref_slots(plan: &Plan, bytes: &[u8], src: Option<usize>, out: &mut Vec<RefSlot>) {
    for_leaves(plan, bytes, |i, l, _| {
        let destroys = match l.class {
            Class::Handle => false,
            Class::Destroys(_) => true,
            _ => return,
        };
        out.push(RefSlot {
            src,
            off: i.unwrap_or(0) * plan.size + l.off,
            size: l.size,
            destroys,
            run_end: 0,
        });
    });
}

/// Builds the shape of a recorded call of a known ioctl from that call.
fn build_shape(entry: &'static IoctlDesc, rec: &IoctlRecord, plans: &mut PlanCache) -> Shape {
    let mut sh = Shape {
        entry: Some(entry),
        ret_fd: entry
            .handles
            .iter()
            .find(|h| matches!(h.loc, Loc::Return) && h.effect == Effect::ReturnsFd)
            .map(|h| h.handle_type),
        ..Shape::default()
    };
    if !matches!(entry.arg, ArgKind::Struct) {
        sh.plain_arg = true;
        return sh;
    }
    sh.struct_in = rec
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::StructIn && b.path.is_empty());
    sh.struct_out = rec
        .buffers
        .iter()
        .position(|b| b.role == BufferRole::StructOut && b.path.is_empty());
    let sin = struct_in(entry, rec);
    let splan = plans.for_struct(entry);
    // Handles used (lineage parents) and destroyed: the struct's, then those in the
    // recorded input arrays, in record order.
    ref_slots(&splan, &sin[..entry.size()], None, &mut sh.refs);
    for (bi, b) in rec.buffers.iter().enumerate() {
        if b.role != BufferRole::PtrIn {
            continue;
        }
        let Some(desc) = element_array(entry, &b.path) else {
            continue;
        };
        let ep = plans.for_elem(entry, desc);
        ref_slots(&ep, &b.data, Some(bi), &mut sh.refs);
    }

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
    // The image as the first call of this shape has it (for the element walks below).
    let mut image = vec![0; total];
    image[..sin.len()].copy_from_slice(&sin);
    sh.struct_len = total;
    remap_slots(&splan, &image[..entry.size()], 0, "", &mut sh.remaps);
    sh.struct_remaps = sh.remaps.len();
    sh.out_runs = out_runs(&splan);
    sh.splan = Some(splan);

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
            recorded_idx(rec, BufferRole::PtrIn, &c.path, c.addr)
        } else {
            None
        };
        let mut len = c.len as usize;
        let mut copy = None;
        let mem = match desc.addr {
            PtrAddr::Trailing { offset } => {
                let off = offset as usize;
                if let Some(i) = data_in {
                    let d = &rec.buffers[i].data;
                    let n = d.len().min(len);
                    image[off..off + n].copy_from_slice(&d[..n]);
                    copy = Some((i, off, n));
                }
                Mem::Image(off)
            }
            PtrAddr::Field { .. } if c.dir == Dir::Pinned => {
                if c.unknown_len {
                    // Host-reported length (dxg existing sysmem): only the capture knows it.
                    match data_in {
                        Some(i) => len = rec.buffers[i].data.len(),
                        None => {
                            sh.missing.get_or_insert(c.path.clone());
                            continue;
                        }
                    }
                }
                sh.pinned.push(PinnedShape {
                    path: c.path.clone(),
                    len,
                    data: data_in,
                });
                Mem::Pinned(sh.pinned.len() - 1)
            }
            PtrAddr::Field { .. } => {
                let off = image.len().next_multiple_of(16);
                image.resize(off + len, 0);
                if let Some(i) = data_in {
                    let d = &rec.buffers[i].data;
                    let n = d.len().min(len);
                    image[off..off + n].copy_from_slice(&d[..n]);
                    copy = Some((i, off, n));
                }
                Mem::Image(off)
            }
        };
        let elems = (desc.elem_size > 1).then(|| plans.for_elem(entry, desc));
        if let (Some(ep), true, Mem::Image(off)) = (&elems, c.dir.is_in(), mem) {
            remap_slots(ep, &image[off..off + len], off, &c.path, &mut sh.remaps);
        }
        sh.copies.push(CapCopy {
            copy,
            remaps_end: sh.remaps.len(),
        });
        // Patch the pointer field in the parent (the struct, or an element of an earlier
        // buffer); a parent in a pinned region is left as captured.
        if let PtrAddr::Field { offset } = desc.addr {
            let at = match parent_of(&c.path) {
                None => Some(offset as usize),
                Some((ppath, idx)) => {
                    sh.bufs
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
                sh.patches.push((at, mem));
            }
        }
        let out = recorded_idx(rec, BufferRole::PtrOut, &c.path, u64::MAX);
        sh.bufs.push(BufPlan {
            path: c.path,
            mem,
            len,
            out,
            elems,
            elem_size: desc.elem_size as usize,
        });
    }
    sh.image_len = image.len();
    sh.bufs_out = sh.bufs.iter().any(|b| b.out.is_some());
    set_run_ends(
        &mut sh.remaps,
        |r| (None, r.off, r.size),
        |r, e| r.run_end = e,
    );
    set_run_ends(
        &mut sh.refs,
        |r| (r.src, r.off, r.size),
        |r, e| r.run_end = e,
    );
    sh
}

/// Adds a call's values to its shape: the image with the captured input, the handle and
/// fd fields to rewrite, the lineage, the recorded results.
pub(crate) fn bind(shape: Rc<Shape>, rec: &IoctlRecord) -> CallPlan<'_> {
    bind_with(shape, rec, &mut Spare::default())
}

/// Vectors of a finished [`CallPlan`], kept to bind the next call into (the streaming
/// replay binds one call at a time: no allocation per call once they have grown).
#[derive(Default)]
pub(crate) struct Spare {
    image: Vec<u8>,
    remaps: Vec<Remap>,
    parents: Vec<crate::replay::Obj>,
    destroys: Vec<u64>,
    out_nz: Vec<SetLeaf>,
}

impl Spare {
    /// Takes back the vectors of a plan that has run.
    pub fn recycle(&mut self, cp: CallPlan<'_>) {
        self.image = cp.image;
        self.remaps = cp.remaps;
        self.parents = cp.parents;
        self.destroys = cp.destroys;
        self.out_nz = cp.out_nz;
    }
}

/// [`bind`] into vectors taken from `spare` (cleared first: the plan is the same).
pub(crate) fn bind_with<'r>(
    shape: Rc<Shape>,
    rec: &'r IoctlRecord,
    spare: &mut Spare,
) -> CallPlan<'r> {
    let mut parents = std::mem::take(&mut spare.parents);
    parents.clear();
    parents.push(crate::replay::Obj::Fd(rec.fd as i64));
    let mut cp = CallPlan {
        arg: shape.plain_arg.then_some(rec.arg),
        image: Vec::new(),
        remaps: std::mem::take(&mut spare.remaps),
        pinned: Vec::new(),
        out: shape.struct_out.map(|i| rec.buffers[i].data.as_slice()),
        failed: matches!(
            driver_core::ntstatus::classify_return(rec.ret),
            driver_core::ReturnValue::Errno { .. } | driver_core::ReturnValue::RawNtStatus { .. }
        ),
        parents,
        destroys: std::mem::take(&mut spare.destroys),
        out_fast: false,
        out_nz: std::mem::take(&mut spare.out_nz),
        shape,
    };
    cp.remaps.clear();
    cp.destroys.clear();
    cp.out_nz.clear();
    let sh = &*cp.shape;
    if sh.plain_arg {
        return cp;
    }
    if let (Some(out), Some(sp)) = (cp.out, &sh.splan)
        && sp.fast
        && out.len() >= sp.size
    {
        cp.out_fast = true;
        let mut set = |li: usize| {
            let l = &sp.leaves[li];
            if let Class::Creates(_) = l.class {
                // Checked and mapped apart (`Plan::creates`).
                return;
            }
            let value = read_field(out, l.off, l.size);
            if value != 0 {
                cp.out_nz.push(SetLeaf {
                    value,
                    off: l.off as u32,
                    size: l.size as u8,
                    is_fd: matches!(l.class, Class::Fd | Class::TakesFd(_)),
                    remap: u8::MAX,
                });
            }
        };
        for r in &sh.out_runs {
            let slots = &sp.special[r.slots.clone()];
            let per = r.per;
            if per > 0 {
                // A run of handle slots, most of them empty: only the set words' slots.
                let rs = &out[r.off..r.off + r.len];
                crate::plan::set_words(rs, rs, |w| {
                    slots[w * per..(w + 1) * per].iter().for_each(|&li| set(li))
                });
            } else {
                slots.iter().for_each(|&li| set(li));
            }
        }
    }
    let mut image = std::mem::take(&mut spare.image);
    image.clear();
    // The input struct, then zeros (no zero fill of what the struct overwrites).
    if let Some(i) = sh.struct_in {
        let d = &rec.buffers[i].data;
        assert!(
            d.len() <= sh.image_len,
            "input struct longer than its shape"
        );
        image.extend_from_slice(d);
    }
    image.resize(sh.image_len, 0);
    let mut k = 0;
    while k < sh.refs.len() {
        let r = &sh.refs[k];
        let bytes = match r.src {
            None => &image[..],
            Some(i) => &rec.buffers[i].data[..],
        };
        let v = read_field(bytes, r.off, r.size);
        if v != 0 {
            cp.parents.push(crate::replay::Obj::Handle(v));
            if r.destroys {
                cp.destroys.push(v);
            }
        } else if r.run_end > k + 1 {
            // The rest of the run is zero (empty handle slots): nothing there.
            let last = &sh.refs[r.run_end - 1];
            if zero_span(bytes, r.off + r.size, last.off + last.size) {
                k = r.run_end;
                continue;
            }
        }
        k += 1;
    }
    take_remaps(sh, &image, 0..sh.struct_remaps, &mut cp.remaps);
    let mut from = sh.struct_remaps;
    for c in &sh.copies {
        if let Some((i, off, n)) = c.copy {
            image[off..off + n].copy_from_slice(&rec.buffers[i].data[..n]);
        }
        take_remaps(sh, &image, from..c.remaps_end, &mut cp.remaps);
        from = c.remaps_end;
    }
    cp.image = image;
    for l in &mut cp.out_nz {
        if let Some(k) = cp.remaps[..cp.remaps.len().min(REMAP_REUSE)]
            .iter()
            .position(|r| r.value == l.value && r.is_fd == l.is_fd)
        {
            l.remap = k as u8;
        }
    }
    if let Some(e) = sh.entry {
        for p in &sh.pinned {
            cp.pinned.push(PinnedPlan {
                path: p.path.clone(),
                len: p.len,
                data: p.data.map_or(&[][..], |i| rec.buffers[i].data.as_slice()),
                owner: crate::replay::pinned_owner(e, rec, &p.path),
            });
        }
    }
    cp
}

/// `read_uint(b, off, size).unwrap_or(0)` with the handle sizes (4 and 8 bytes) as
/// fixed-size loads.
#[inline(always)]
fn read_field(b: &[u8], off: usize, size: usize) -> u64 {
    match size {
        4 => b
            .get(off..)
            .and_then(|s| s.first_chunk::<4>())
            .map_or(0, |c| u32::from_le_bytes(*c) as u64),
        8 => b
            .get(off..)
            .and_then(|s| s.first_chunk::<8>())
            .map_or(0, |c| u64::from_le_bytes(*c)),
        _ => read_uint(b, off, size).unwrap_or(0),
    }
}

/// Adds to `out` the set input handles / fds of `sh.remaps[slots]` in `image` (see
/// [`CallPlan::remaps`]).
#[inline(always)]
fn take_remaps(sh: &Shape, image: &[u8], slots: std::ops::Range<usize>, out: &mut Vec<Remap>) {
    let mut k = slots.start;
    while k < slots.end {
        let s = &sh.remaps[k];
        let v = read_field(image, s.off, s.size);
        // 0 means "no handle" for dxg handles and "no event" for the eventfd fields;
        // a negative fd means none as well.
        if v == 0 {
            let end = s.run_end.min(slots.end);
            if end > k + 1 {
                let last = &sh.remaps[end - 1];
                if zero_span(image, s.off + s.size, last.off + last.size) {
                    k = end;
                    continue;
                }
            }
            k += 1;
            continue;
        }
        k += 1;
        if s.is_fd && driver_core::layout::sign_extend(v, s.size) < 0 {
            continue;
        }
        out.push(Remap {
            value: v,
            off: s.off,
            slot: (k - 1) as u32,
            size: s.size,
            is_fd: s.is_fd,
            eventfd: s.is_fd && s.ty == HandleType::EventFd,
        });
    }
}

/// Most shapes kept by a [`ShapeCache`]; calls of further shapes are compiled afresh.
const MAX_SHAPES: usize = 4096;

/// Shapes already built, by shape key ([`shape_key`]).
#[derive(Default)]
pub(crate) struct ShapeCache {
    shapes: std::collections::HashMap<Box<[u64]>, Rc<Shape>, BuildKeyHasher>,
    key: Vec<u64>,
    /// The last shape per request code (256 slots, see [`last_slot`] and [`LastShape`]),
    /// checked before `shapes`.
    last: Vec<LastShape>,
    /// Calls compiled from a cached shape / from scratch (for tests and profiling).
    pub hits: u64,
    pub misses: u64,
}

/// The shape of the last keyed call of one table entry, with its key: consecutive calls
/// of a request mostly share their shape, which a compare of the keys finds without
/// hashing the key and probing the map. Also what [`shape_key`] needs of the entry.
#[derive(Default)]
struct LastShape {
    /// Address of the table entry (0: none yet).
    entry: usize,
    key: Vec<u64>,
    shape: Option<Rc<Shape>>,
    /// See [`path_ids`].
    ids: Option<Box<[u8]>>,
}

/// Most top-level pointers of an entry, and most buffers of a record, for which
/// [`shape_key`] finds each pointer's recorded buffers through the path ids of the
/// record's buffers (more: by string compares).
const KEY_PTRS: usize = 31;
const KEY_BUFS: usize = 16;

/// False if the entry has nested or pinned pointers (its calls are not keyed).
fn keyed_ptrs(entry: &IoctlDesc) -> bool {
    !entry
        .pointers
        .iter()
        .any(|p| !p.nested.is_empty() || p.dir == Dir::Pinned)
}

/// Per top-level pointer of `entry`, the path id [`shape_key`] gives a recorded buffer
/// whose path is the pointer's: 0 for the empty path, else 1 + the position of the first
/// pointer with that path. `None` when the entry has more than [`KEY_PTRS`] pointers
/// or is not keyed ([`keyed_ptrs`]).
fn path_ids(entry: &IoctlDesc) -> Option<Box<[u8]>> {
    let ptrs = entry.pointers;
    if ptrs.len() > KEY_PTRS || !keyed_ptrs(entry) {
        return None;
    }
    Some(
        ptrs.iter()
            .map(|p| match ptrs.iter().position(|q| q.path == p.path) {
                _ if p.path.is_empty() => 0,
                Some(k) => k as u8 + 1,
                None => unreachable!("a pointer's path is in its entry"),
            })
            .collect(),
    )
}

/// The [`ShapeCache::last`] slot of a request code: its number xor its type byte (the
/// codes of one driver differ in their number).
fn last_slot(cmd: u32) -> usize {
    ((cmd ^ cmd >> 8) & 0xff) as usize
}

type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// FxHash-style hasher for shape keys (slices of u64, hashed 8 bytes at a time).
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for b in chunks.remainder() {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64)
    }
}

/// The shape key of a call of `entry`: everything [`build_shape`] reads besides the
/// entry itself, so two calls with equal keys build equal shapes. `false`: the call is
/// not keyed (nested or pinned pointers, unusual buffer paths) and is compiled afresh.
///
/// What goes in: the request code; per recorded buffer its role, flags, data length and
/// which pointer (or the struct) its path names; per pointer of the table entry whether
/// its condition holds, whether it is null and its length; per buffer the walk yields,
/// which recorded buffers hold its input and output (the address fallback of
/// [`recorded_idx`] included).
fn shape_key(
    entry: &'static IoctlDesc,
    rec: &IoctlRecord,
    ids: Option<&[u8]>,
    key: &mut Vec<u64>,
) -> bool {
    key.clear();
    key.push(rec.cmd as u64);
    if !matches!(entry.arg, ArgKind::Struct) {
        return true;
    }
    let ptrs = entry.pointers;
    match ids {
        // `path_ids` gives none for an entry that is not keyed.
        Some(ids) if ids.len() == ptrs.len() => {}
        _ if !keyed_ptrs(entry) => return false,
        _ => {}
    }
    let ids = ids.filter(|ids| ids.len() == ptrs.len());
    let n = rec.buffers.len();
    key.reserve(2 + 2 * n + 4 * ptrs.len());
    key.push(n as u64);
    let mut sin: Option<&[u8]> = None;
    // Each recorded buffer's role and path id (`role | id << 8`, as below), for
    // `recorded_idx`'s path match without string compares; unused past `KEY_BUFS` buffers.
    let mut bids = [0u16; KEY_BUFS];
    let ids = ids.filter(|_| n <= KEY_BUFS);
    let mut at_max = false;
    for (bi, b) in rec.buffers.iter().enumerate() {
        let path_id = if b.path.is_empty() {
            if sin.is_none() && b.role == BufferRole::StructIn {
                sin = Some(&b.data);
            }
            0
        } else {
            match ptrs.iter().position(|p| p.path == b.path) {
                Some(k) => k + 1,
                None => return false,
            }
        };
        if let Some(x) = bids.get_mut(bi) {
            *x = b.role as u16 | (path_id as u16) << 8;
        }
        at_max |= b.addr == u64::MAX;
        key.extend_from_slice(&[
            b.role as u64 | (b.flags as u64) << 8 | (path_id as u64) << 16,
            b.data.len() as u64,
        ]);
    }
    // The walk reads the input struct zero-filled to the table size.
    let padded;
    let sin = match sin {
        Some(s) if s.len() >= entry.size() => s,
        s => {
            let mut v = s.unwrap_or_default().to_vec();
            v.resize(entry.size(), 0);
            padded = v;
            &padded[..]
        }
    };
    for (k, p) in ptrs.iter().enumerate() {
        // As `walk_pointers` at the top level.
        if !matches!(p.cond, Cond::Always) && !p.cond.eval(sin, sin) {
            key.push(0);
            continue;
        }
        let addr = match p.addr {
            PtrAddr::Field { offset } => match read_uint(sin, offset as usize, 8) {
                Some(a) => a,
                None => {
                    key.push(1);
                    continue;
                }
            },
            PtrAddr::Trailing { offset } => rec.arg.wrapping_add(offset as u64),
        };
        if addr == 0 {
            key.push(2);
            continue;
        }
        let (len, unknown) = match driver_core::schema::ptr_len(p, sin) {
            Some(l) => (l.min(p.max_bytes as u64), false),
            None => (0, true),
        };
        if len == 0 && !unknown {
            key.push(3);
            continue;
        }
        key.extend_from_slice(&[4 | (unknown as u64) << 3, len]);
        let (i_in, i_out) = match ids {
            Some(ids) => {
                // `recorded_idx` through the path ids.
                let id = (ids[k] as u16) << 8;
                let bids = &bids[..n];
                let i_in = bids
                    .iter()
                    .position(|&b| b == BufferRole::PtrIn as u16 | id);
                let i_out = bids
                    .iter()
                    .position(|&b| b == BufferRole::PtrOut as u16 | id);
                (
                    i_in.or_else(|| recorded_at(rec, BufferRole::PtrIn, addr)),
                    i_out.or_else(|| {
                        at_max
                            .then(|| recorded_at(rec, BufferRole::PtrOut, u64::MAX))
                            .flatten()
                    }),
                )
            }
            None => (
                recorded_idx(rec, BufferRole::PtrIn, p.path, addr),
                recorded_idx(rec, BufferRole::PtrOut, p.path, u64::MAX),
            ),
        };
        let idx = |i: Option<usize>| i.map_or(u64::MAX, |i| i as u64);
        key.extend_from_slice(&[idx(i_in), idx(i_out)]);
    }
    true
}

/// Compiles a recorded call of a known ioctl (see [`CallPlan`]), reusing the shape of an
/// earlier call with the same shape key.
pub(crate) fn compile<'r>(
    entry: &'static IoctlDesc,
    rec: &'r IoctlRecord,
    plans: &mut PlanCache,
) -> CallPlan<'r> {
    compile_with(entry, rec, plans, &mut Spare::default())
}

/// [`compile`], binding into `spare`'s vectors.
pub(crate) fn compile_with<'r>(
    entry: &'static IoctlDesc,
    rec: &'r IoctlRecord,
    plans: &mut PlanCache,
    spare: &mut Spare,
) -> CallPlan<'r> {
    let sc = &mut plans.shapes;
    let mut key = std::mem::take(&mut sc.key);
    if sc.last.is_empty() {
        sc.last.resize_with(256, LastShape::default);
    }
    let last = &mut sc.last[last_slot(rec.cmd)];
    let eid = entry as *const IoctlDesc as usize;
    if last.entry != eid {
        *last = LastShape {
            entry: eid,
            key: Vec::new(),
            shape: None,
            ids: path_ids(entry),
        };
    }
    let keyed = shape_key(entry, rec, last.ids.as_deref(), &mut key);
    let cached = if !keyed {
        None
    } else if let Some(s) = &last.shape
        && last.key == key
    {
        Some(s.clone())
    } else {
        let s = sc.shapes.get(&key[..]).cloned();
        if let Some(s) = &s {
            last.key.clone_from(&key);
            last.shape = Some(s.clone());
        }
        s
    };
    let shape = match cached {
        Some(s) => {
            sc.hits += 1;
            s
        }
        None => {
            sc.misses += 1;
            let s = Rc::new(build_shape(entry, rec, plans));
            let sc = &mut plans.shapes;
            if keyed {
                let last = &mut sc.last[last_slot(rec.cmd)];
                last.key.clone_from(&key);
                last.shape = Some(s.clone());
                if sc.shapes.len() < MAX_SHAPES {
                    sc.shapes.insert(key.clone().into_boxed_slice(), s.clone());
                }
            }
            s
        }
    };
    plans.shapes.key = key;
    bind_with(shape, rec, spare)
}

/// The shape key of a call built with the entry's path ids and without (string compares
/// only): (keyed, key) for each.
#[cfg(test)]
pub(crate) fn shape_keys(entry: &'static IoctlDesc, rec: &IoctlRecord) -> [(bool, Vec<u64>); 2] {
    let ids = path_ids(entry);
    [ids.as_deref(), None].map(|ids| {
        let mut key = Vec::new();
        (shape_key(entry, rec, ids, &mut key), key)
    })
}

/// [`compile`] without the shape cache: the shape built from this call itself.
#[cfg(test)]
pub(crate) fn compile_fresh<'r>(
    entry: &'static IoctlDesc,
    rec: &'r IoctlRecord,
    plans: &mut PlanCache,
) -> CallPlan<'r> {
    bind(Rc::new(build_shape(entry, rec, plans)), rec)
}

#[inline]
fn write_uint(b: &mut [u8], off: usize, size: usize, v: u64) {
    let Some(s) = b.get_mut(off..off + size) else {
        return;
    };
    // The usual sizes as fixed-size stores (a `memcpy` call of `size` bytes otherwise:
    // ~30 instructions, 2–3 times per replayed call).
    match size {
        8 => s.copy_from_slice(&v.to_le_bytes()),
        4 => s.copy_from_slice(&(v as u32).to_le_bytes()),
        _ => s.copy_from_slice(&v.to_le_bytes()[..size]),
    }
}

/// Writes `v` in the `size`-byte little-endian field at `off` (out-of-range: ignored).
#[inline]
pub(crate) fn put_uint(b: &mut [u8], off: usize, size: usize, v: u64) {
    write_uint(b, off, size, v)
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
        let Some(desc) = element_array(entry, &b.path) else {
            continue;
        };
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
    fn read_field_reads_as_read_uint() {
        let b: Vec<u8> = (1..=20).collect();
        for size in [0, 1, 2, 3, 4, 8, 16] {
            for off in (0..=24).chain([usize::MAX - 3, usize::MAX]) {
                assert_eq!(
                    read_field(&b, off, size),
                    read_uint(&b, off, size).unwrap_or(0),
                    "size {size} at {off}"
                );
            }
        }
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_of("a"), None);
        assert_eq!(parent_of("a[2].b"), Some(("a", Some(2))));
        assert_eq!(parent_of("x.y"), Some(("x", None)));
    }
}
