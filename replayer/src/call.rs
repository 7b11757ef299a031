//! One recorded ioctl turned into memory the driver can be handed: the argument struct
//! and every pointed-to buffer rebuilt at fresh addresses, pointer fields patched, from the
//! table's pointer descriptors (nested arrays too), plus the static "what does this call
//! use / create / destroy" scan shared by replay and trim.

use driver_core::layout::read_uint;
use driver_core::schema::{
    ArgKind, CaptureBuf, Dir, HandleType, IoctlDesc, Loc, PointerDesc, PtrAddr, find_pointer,
    walk_pointers,
};
use traces::{BufferRole, IoctlRecord};

use crate::mem::{CallBuf, Region};
use crate::plan::{Class, Plan, PlanCache};

/// Where a pointed-to buffer lives in the replaying process.
pub(crate) enum BufMem {
    /// Per-call heap buffer.
    Heap(CallBuf),
    /// Inside the argument struct buffer (a flexible array member) at this offset.
    Trailing(usize),
    /// A long-lived page-aligned region (kept by the driver after the call).
    Pinned(Region),
}

/// One rebuilt pointer buffer.
pub(crate) struct PBuf {
    /// Concrete path (`allocation_info[2].priv_drv_data`).
    pub path: String,
    /// Its descriptor.
    pub desc: &'static PointerDesc,
    /// Length handed to the driver.
    pub len: usize,
    /// Memory.
    pub mem: BufMem,
}

impl PBuf {
    fn addr(&self, sb: &CallBuf) -> u64 {
        match &self.mem {
            BufMem::Heap(b) => b.addr(),
            BufMem::Trailing(off) => sb.addr() + *off as u64,
            BufMem::Pinned(r) => r.addr(),
        }
    }
    /// Current bytes (after the call: what the driver wrote).
    pub fn bytes<'a>(&'a self, sb: &'a CallBuf) -> &'a [u8] {
        match &self.mem {
            BufMem::Heap(b) => b.bytes(),
            BufMem::Trailing(off) => &sb.bytes()[*off..*off + self.len],
            BufMem::Pinned(r) => &r.bytes()[..self.len.min(r.len())],
        }
    }
    fn bytes_mut<'a>(&'a mut self, sb: &'a mut CallBuf) -> Option<&'a mut [u8]> {
        match &mut self.mem {
            BufMem::Heap(b) => Some(b.bytes_mut()),
            BufMem::Trailing(off) => Some(&mut sb.bytes_mut()[*off..*off + self.len]),
            BufMem::Pinned(_) => None,
        }
    }
}

/// A call ready to issue.
pub(crate) struct Prepared {
    /// Argument struct (plus trailing arrays), when `arg` is a struct pointer.
    pub sb: Option<CallBuf>,
    /// Pointed-to buffers in walk order (parents before children).
    pub bufs: Vec<PBuf>,
    /// The `arg` to pass.
    pub arg: u64,
}

/// Why a call could not be rebuilt.
#[derive(Debug)]
pub(crate) enum PrepError {
    /// A handle / fd field could not be remapped: (field path, value, is_fd).
    Unmapped(String, u64, bool),
    /// A buffer that must be recreated was not captured.
    Missing(String),
    /// mmap failed.
    Map(String, std::io::Error),
}

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

fn write_uint(b: &mut [u8], off: usize, size: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + size) {
        s.copy_from_slice(&v.to_le_bytes()[..size]);
    }
}

/// Remaps input handles / fds in place. `map(value, is_fd)` gives the replay value.
fn remap_in(
    plan: &Plan,
    bytes: &mut [u8],
    prefix: &str,
    map: &mut dyn FnMut(u64, bool, HandleType) -> Option<u64>,
) -> Result<(), PrepError> {
    let mut edits = Vec::new();
    let mut err = None;
    for_leaves(plan, bytes, |i, l, v| {
        let (is_fd, t) = match l.class {
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
        match map(v, is_fd, t) {
            Some(nv) => edits.push((i.unwrap_or(0) * plan.size + l.off, l.size, nv)),
            None if err.is_none() => {
                let p = match i {
                    Some(i) => format!("{prefix}[{i}].{}", l.path),
                    None if prefix.is_empty() => l.path.clone(),
                    None => format!("{prefix}.{}", l.path),
                };
                err = Some(PrepError::Unmapped(p, v, is_fd));
            }
            None => {}
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    for (off, size, v) in edits {
        write_uint(bytes, off, size, v);
    }
    Ok(())
}

/// Rebuilds a recorded call in this process.
pub(crate) fn prepare(
    entry: &'static IoctlDesc,
    rec: &IoctlRecord,
    plans: &mut PlanCache,
    map: &mut dyn FnMut(u64, bool, HandleType) -> Option<u64>,
) -> Result<Prepared, PrepError> {
    if !matches!(entry.arg, ArgKind::Struct) {
        return Ok(Prepared {
            sb: None,
            bufs: Vec::new(),
            arg: rec.arg,
        });
    }
    let sin = struct_in(entry, rec);
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
    let mut sb = CallBuf::zeroed(total);
    sb.bytes_mut()[..sin.len()].copy_from_slice(&sin);
    let splan = plans.for_struct(entry);
    remap_in(&splan, &mut sb.bytes_mut()[..entry.size()], "", map)?;

    let mut bufs: Vec<PBuf> = Vec::with_capacity(caps.len());
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
                    sb.bytes_mut()[off..off + n].copy_from_slice(&d[..n]);
                }
                BufMem::Trailing(off)
            }
            PtrAddr::Field { .. } if c.dir == Dir::Pinned => {
                if c.unknown_len {
                    // Host-reported length (dxg existing sysmem): only the capture knows it.
                    match data_in {
                        Some(d) => len = d.len(),
                        None => return Err(PrepError::Missing(c.path)),
                    }
                }
                let r = Region::anonymous(len, data_in.unwrap_or(&[]), &c.path)
                    .map_err(|e| PrepError::Map(c.path.clone(), e))?;
                BufMem::Pinned(r)
            }
            PtrAddr::Field { .. } => {
                let mut b = CallBuf::zeroed(len);
                if let Some(d) = data_in {
                    let n = d.len().min(len);
                    b.bytes_mut()[..n].copy_from_slice(&d[..n]);
                }
                BufMem::Heap(b)
            }
        };
        let mut pb = PBuf {
            path: c.path,
            desc,
            len,
            mem,
        };
        if desc.elem_size > 1 && c.dir.is_in() {
            let ep = plans.for_elem(entry, desc);
            let path = pb.path.clone();
            if let Some(bytes) = pb.bytes_mut(&mut sb) {
                remap_in(&ep, bytes, &path, map)?;
            }
        }
        // Patch the pointer field in the parent (the struct, or an element of an earlier buffer).
        if let PtrAddr::Field { offset } = desc.addr {
            let new = pb.addr(&sb);
            match parent_of(&pb.path) {
                None => write_uint(sb.bytes_mut(), offset as usize, 8, new),
                Some((ppath, idx)) => {
                    if let Some(parent) = bufs.iter_mut().find(|b| b.path == ppath) {
                        let es = parent.desc.elem_size.max(1) as usize;
                        let base = if parent.desc.elem_size > 1 {
                            idx.unwrap_or(0) * es
                        } else {
                            0
                        };
                        if let Some(pbytes) = parent.bytes_mut(&mut sb) {
                            write_uint(pbytes, base + offset as usize, 8, new);
                        }
                    }
                }
            }
        }
        bufs.push(pb);
    }
    let arg = sb.addr();
    Ok(Prepared {
        sb: Some(sb),
        bufs,
        arg,
    })
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
    let sin = struct_in(entry, rec);
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
        let dp = driver_core::schema::desc_path_of(&b.path);
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
