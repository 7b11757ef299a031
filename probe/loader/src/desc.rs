//! Per-request-code pointer descriptors in the form the loader accepts, and their flat,
//! bounded kernel form ([`probe_common::CmdDesc`]).
//!
//! The device tables themselves live in `driver-core` (one table per device); this module
//! only holds the shape the probe needs and the conversion to the map value.

use probe_common::{
    CmdDesc, DIR_IN, DIR_OUT, FD_FIELD, FD_NONE, FD_RET, MAX_BUF_LEN, MAX_DESCS, NO_PARENT,
    PTR_TRAILING, PtrDesc,
};

use driver_core::schema::{self, Device, Dir, Effect, Loc, PtrAddr, PtrLen};

/// How an ioctl hands back a new file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FdReturn {
    /// It does not.
    #[default]
    None,
    /// The return value is the descriptor (KVM_CREATE_VM, KVM_CREATE_VCPU).
    Return,
    /// A struct field holds it when the call returns 0 (dxg SHAREOBJECTS, CREATESYNCFILE).
    Field {
        /// Byte offset in the argument struct.
        offset: u32,
        /// Width: 4 or 8.
        size: u8,
    },
}

/// Length of a pointed-to buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenSpec {
    /// Read a `size`-byte unsigned count at `offset` (same base as the pointer), in
    /// elements of [`PointerSpec::elem_size`] bytes.
    Field {
        /// Offset of the count.
        offset: u32,
        /// Width: 1, 2, 4 or 8.
        size: u8,
    },
    /// A fixed number of elements.
    Fixed(u32),
}

/// One embedded pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointerSpec {
    /// Field path written into the trace, e.g. `allocation_info` or
    /// `allocation_info[].priv_drv_data` (`[]` becomes `[i]` per element).
    pub path: String,
    /// Offset of the u64 pointer (in the struct, or in the parent's element); for a
    /// trailing array, the offset of the array itself.
    pub ptr_offset: u32,
    /// The buffer is a trailing array inside the struct's memory, not behind a pointer.
    pub trailing: bool,
    /// Length rule.
    pub len: LenSpec,
    /// Bytes per element.
    pub elem_size: u32,
    /// Captured at entry.
    pub dir_in: bool,
    /// Captured at exit.
    pub dir_out: bool,
    /// Cap in bytes (0 = the driver's 128 KiB limit).
    pub max_bytes: u32,
    /// Index of the array pointer this one lives in (one level of nesting).
    pub parent: Option<usize>,
    /// Memory the driver keeps using after the call (`Dir::Pinned`): pages that are not
    /// resident are stored as zeros (flagged [`traces::BUF_ZERO_FILLED`]) rather than
    /// ending the buffer.
    pub pinned: bool,
}

/// Everything the probe needs to know about one request code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdDescriptor {
    /// Full request code.
    pub cmd: u32,
    /// Name, for diagnostics.
    pub name: String,
    /// New-descriptor rule.
    pub fd: FdReturn,
    /// Pointers, parents before children; at most [`MAX_DESCS`] are followed in the kernel.
    pub pointers: Vec<PointerSpec>,
}

impl CmdDescriptor {
    /// The flat kernel form. Pointers beyond [`MAX_DESCS`] are dropped (and reported by
    /// the returned count) because the kernel side loops over a fixed-size array.
    pub fn to_kernel(&self) -> (CmdDesc, usize) {
        let mut cd = CmdDesc::default();
        let n = self.pointers.len().min(MAX_DESCS);
        cd.n = n as u32;
        let (kind, off, size) = match self.fd {
            FdReturn::None => (FD_NONE, 0, 0),
            FdReturn::Return => (FD_RET, 0, 0),
            FdReturn::Field { offset, size } => (FD_FIELD, offset, size),
        };
        cd.fd_kind = kind;
        cd.fd_off = off;
        cd.fd_size = size;
        for (i, p) in self.pointers.iter().take(n).enumerate() {
            let (len_off, len_size, fixed) = match p.len {
                LenSpec::Field { offset, size } => (offset, size, 0),
                LenSpec::Fixed(c) => (0, 0, c),
            };
            cd.descs[i] = PtrDesc {
                ptr_off: p.ptr_offset,
                len_off,
                elem_size: p.elem_size.max(1),
                fixed_len: fixed,
                len_size,
                dir: (if p.dir_in { DIR_IN } else { 0 }) | (if p.dir_out { DIR_OUT } else { 0 }),
                parent: match p.parent {
                    Some(pi) if pi < i => pi as u8,
                    _ => NO_PARENT,
                },
                flags: if p.trailing { PTR_TRAILING } else { 0 },
                max_len: if p.max_bytes == 0 || p.max_bytes > MAX_BUF_LEN {
                    MAX_BUF_LEN
                } else {
                    p.max_bytes
                },
            };
        }
        (cd, self.pointers.len() - n)
    }

    /// True when descriptor `desc` is pinned memory.
    pub fn is_pinned(&self, desc: usize) -> bool {
        self.pointers.get(desc).is_some_and(|p| p.pinned)
    }

    /// Field path of descriptor `desc` for element `elem` (nested pointers).
    pub fn path_of(&self, desc: usize, elem: usize) -> String {
        match self.pointers.get(desc) {
            Some(p) if p.parent.is_some() => p.path.replacen("[]", &format!("[{elem}]"), 1),
            Some(p) => p.path.clone(),
            None => format!("desc{desc}"),
        }
    }
}

/// One pointer of a driver-core table in probe form; `None` for what the kernel side
/// cannot copy (host-reported lengths).
fn spec_of(p: &schema::PointerDesc, parent: Option<usize>) -> Option<PointerSpec> {
    let (dir_in, dir_out) = match p.dir {
        Dir::In => (true, false),
        Dir::Out => (false, true),
        Dir::InOut => (true, true),
        // Memory the driver keeps using after the call (KVM guest memory, dxg existing
        // sysmem) is captured at entry: its content then (e.g. the guest code written
        // before KVM_SET_USER_MEMORY_REGION) is what a replay must recreate.
        Dir::Pinned => (true, false),
    };
    let (ptr_offset, trailing) = match p.addr {
        PtrAddr::Field { offset } => (offset, false),
        PtrAddr::Trailing { offset } => (offset, true),
    };
    let (len, elem_size) = match p.len {
        PtrLen::Count { offset, size } => (LenSpec::Field { offset, size }, p.elem_size),
        PtrLen::Bytes { offset, size } => (LenSpec::Field { offset, size }, 1),
        PtrLen::Fixed { count } => (LenSpec::Fixed(count), p.elem_size),
        // The single-element form ("1 element if resource ≠ 0") reads a zero count and
        // captures nothing; the count form is the common one.
        PtrLen::CountOr1IfNonZero { offset, .. } => {
            (LenSpec::Field { offset, size: 4 }, p.elem_size)
        }
        PtrLen::HostReported => return None,
    };
    Some(PointerSpec {
        path: p.path.to_string(),
        ptr_offset,
        trailing,
        len,
        elem_size,
        dir_in,
        dir_out,
        max_bytes: p.max_bytes,
        parent,
        pinned: p.dir == Dir::Pinned,
    })
}

/// The probe descriptors of one device table (driver-core is the only table). Conditions
/// on pointers are not evaluated in the kernel: the capture follows every pointer that
/// may be valid, and a pointer that is not reads as unreadable (flagged, not an error).
pub fn from_table(device: Device) -> Vec<CmdDescriptor> {
    device
        .table()
        .iter()
        .map(|e| {
            let mut pointers = Vec::new();
            for p in e.pointers {
                let Some(spec) = spec_of(p, None) else {
                    continue;
                };
                let me = pointers.len();
                pointers.push(spec);
                for n in p.nested {
                    if let Some(ns) = spec_of(n, Some(me)) {
                        pointers.push(ns);
                    }
                }
            }
            let fd = e
                .handles
                .iter()
                .find(|h| h.effect == Effect::ReturnsFd)
                .map(|h| match h.loc {
                    Loc::Return => FdReturn::Return,
                    Loc::Field { offset, size, .. } => FdReturn::Field { offset, size },
                    _ => FdReturn::None,
                })
                .unwrap_or_default();
            CmdDescriptor {
                cmd: e.code,
                name: e.name.to_string(),
                fd,
                pointers,
            }
        })
        .collect()
}

/// Descriptors for the schemas named (`dxg`, `kvm`; unknown names contribute nothing).
pub fn for_schemas(names: &[String]) -> Vec<CmdDescriptor> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for n in names {
        if let Some(d) = Device::from_name(n)
            && !seen.contains(&d)
        {
            seen.push(d);
            out.extend(from_table(d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_get_their_index() {
        let d = CmdDescriptor {
            cmd: 1,
            name: "X".into(),
            fd: FdReturn::None,
            pointers: vec![
                PointerSpec {
                    path: "allocation_info".into(),
                    ptr_offset: 48,
                    len: LenSpec::Field {
                        offset: 44,
                        size: 4,
                    },
                    elem_size: 96,
                    dir_in: true,
                    dir_out: true,
                    max_bytes: 0,
                    trailing: false,
                    parent: None,
                    pinned: false,
                },
                PointerSpec {
                    path: "allocation_info[].priv_drv_data".into(),
                    ptr_offset: 16,
                    len: LenSpec::Field {
                        offset: 24,
                        size: 4,
                    },
                    elem_size: 1,
                    dir_in: true,
                    dir_out: false,
                    max_bytes: 0,
                    trailing: false,
                    parent: Some(0),
                    pinned: false,
                },
            ],
        };
        assert_eq!(d.path_of(1, 2), "allocation_info[2].priv_drv_data");
        let (k, cut) = d.to_kernel();
        assert_eq!((k.n, cut), (2, 0));
        assert_eq!(k.descs[1].parent, 0);
        assert_eq!(k.descs[0].parent, NO_PARENT);
        assert_eq!(k.descs[1].dir, DIR_IN);
    }

    #[test]
    fn driver_core_tables_fit_the_kernel_form() {
        let kvm = from_table(Device::Kvm);
        let vm = kvm
            .iter()
            .find(|d| d.name == "KVM_CREATE_VM")
            .expect("KVM_CREATE_VM");
        assert_eq!(vm.fd, FdReturn::Return);
        let dxg = from_table(Device::Dxg);
        let share = dxg
            .iter()
            .find(|d| d.name.contains("SHAREOBJECTS"))
            .expect("SHAREOBJECTS");
        assert_eq!(
            share.fd,
            FdReturn::Field {
                offset: 32,
                size: 8
            }
        );
        for d in kvm.iter().chain(&dxg) {
            let (_, cut) = d.to_kernel();
            assert_eq!(
                cut, 0,
                "{} has more pointers than the kernel side follows",
                d.name
            );
        }
        let alloc = dxg
            .iter()
            .find(|d| d.name.contains("CREATEALLOCATION"))
            .expect("CREATEALLOCATION");
        assert!(
            alloc
                .pointers
                .iter()
                .any(|p| p.parent.is_some() && p.path.contains("priv_drv_data"))
        );
    }
}
