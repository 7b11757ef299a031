//! The shape of a device table: one [`IoctlDesc`] per ioctl, with its pointer descriptors,
//! handle effects and caused VMBus commands; lookups across devices; and the generic
//! pointer walk that turns an ioctl argument struct into the list of user buffers to
//! capture (used by the probe's user side, the FUSE emulator and the replayer).

use crate::layout::{Kind, StructDesc, read_uint};
use serde::Serialize;

/// The devices this crate has schemas for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    /// `/dev/dxg` (dxgkrnl).
    Dxg,
    /// `/dev/kvm`.
    Kvm,
}

impl Device {
    /// Lower-case name (`dxg`, `kvm`).
    pub fn name(self) -> &'static str {
        match self {
            Device::Dxg => "dxg",
            Device::Kvm => "kvm",
        }
    }
    /// Parses `dxg` / `kvm`.
    pub fn from_name(s: &str) -> Option<Device> {
        match s {
            "dxg" => Some(Device::Dxg),
            "kvm" => Some(Device::Kvm),
            _ => None,
        }
    }
    /// Path of the device node.
    pub fn path(self) -> &'static str {
        match self {
            Device::Dxg => "/dev/dxg",
            Device::Kvm => "/dev/kvm",
        }
    }
    /// The device's ioctl table.
    pub fn table(self) -> &'static [IoctlDesc] {
        match self {
            Device::Dxg => crate::dxg::table::IOCTLS,
            Device::Kvm => crate::kvm::IOCTLS,
        }
    }
    /// Whether positive ioctl return values are NTSTATUS success codes.
    pub fn positive_return_is_ntstatus(self) -> bool {
        matches!(self, Device::Dxg)
    }
}

/// rr-style classification of an ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoctlClass {
    /// Copy the argument struct (by size) before and after; nothing else to follow.
    Flat,
    /// The struct holds user pointers to follow (see [`IoctlDesc::pointers`]).
    PointerFollowing,
    /// Named only (no handler in the final driver → -ENOTTY).
    Unsupported,
}

/// How the ioctl's `arg` is used.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind {
    /// `arg` is the address of the struct described by [`IoctlDesc::layout`].
    Struct,
    /// `arg` is an integer value of this kind (e.g. KVM_CHECK_EXTENSION's capability).
    Value(Kind),
    /// `arg` is unused.
    None,
}

/// Data direction of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Read by the driver (capture at syscall entry).
    In,
    /// Written by the driver (capture at syscall exit).
    Out,
    /// Both (capture at entry and exit).
    InOut,
    /// Not copied: the pages are pinned and shared with the host / guest (dxg existing
    /// sysmem, kvm guest memory). Contents must be recorded separately if needed.
    Pinned,
}

impl Dir {
    /// Captured at syscall entry.
    pub fn is_in(self) -> bool {
        matches!(self, Dir::In | Dir::InOut)
    }
    /// Captured at syscall exit.
    pub fn is_out(self) -> bool {
        matches!(self, Dir::Out | Dir::InOut)
    }
}

/// Where the pointer value lives.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PtrAddr {
    /// A u64 user pointer at this offset of the containing struct.
    Field {
        /// Byte offset of the pointer field.
        offset: u32,
    },
    /// A trailing (flexible) array starting at this offset from the struct's own address
    /// (e.g. `kvm_cpuid2.entries`).
    Trailing {
        /// Byte offset of the array from the struct address.
        offset: u32,
    },
}

/// How long the pointed-to buffer is.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PtrLen {
    /// `count × elem_size` bytes; count read from an integer field.
    Count {
        /// Offset of the count field in the containing struct.
        offset: u32,
        /// Size of the count field (4 or 8).
        size: u8,
    },
    /// Byte length read from an integer field.
    Bytes {
        /// Offset of the length field.
        offset: u32,
        /// Size of the length field (4 or 8).
        size: u8,
    },
    /// A fixed number of elements.
    Fixed {
        /// Element count.
        count: u32,
    },
    /// `count` elements, or exactly 1 element when the handle at `nonzero_offset` is
    /// non-zero (e.g. "priorities: 1 element if resource ≠ 0").
    CountOr1IfNonZero {
        /// Offset of the count field (u32).
        offset: u32,
        /// Offset of the u32 handle that selects the single-element form.
        nonzero_offset: u32,
    },
    /// The length is only known to the host (dxg sysmem: the allocation size the host
    /// reports); the walker cannot compute it.
    HostReported,
}

/// A condition on the bytes of a struct. Serialises as its [`Cond::describe`] text.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    /// Always.
    Always,
    /// Bit `bit` of the u32 at `offset` is set.
    BitSet {
        /// Offset of the u32 flags word.
        offset: u32,
        /// Bit index.
        bit: u32,
    },
    /// Bit `bit` of the u32 at `offset` is clear.
    BitClear {
        /// Offset of the u32 flags word.
        offset: u32,
        /// Bit index.
        bit: u32,
    },
    /// The `size`-byte integer at `offset` equals `value`.
    Eq {
        /// Offset.
        offset: u32,
        /// Size (1/2/4/8).
        size: u8,
        /// Value.
        value: u64,
    },
    /// All of the listed conditions.
    All(&'static [Cond]),
    /// The inner condition, evaluated on the outermost ioctl struct instead of the
    /// containing element.
    Root(&'static Cond),
    /// The driver decides from state the capture cannot see (e.g. "if objects[0] is a
    /// monitored fence"): capture best-effort, an unreadable buffer is not an error.
    BestEffort,
}

impl Serialize for Cond {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.describe())
    }
}

impl Cond {
    /// Human-readable form (`bit 16 of @56 set`, `root(@8 == 0) && @0 == 3`).
    pub fn describe(&self) -> String {
        match self {
            Cond::Always => "always".into(),
            Cond::BestEffort => "best effort".into(),
            Cond::BitSet { offset, bit } => format!("bit {bit} of @{offset} set"),
            Cond::BitClear { offset, bit } => format!("bit {bit} of @{offset} clear"),
            Cond::Eq {
                offset,
                size,
                value,
            } => format!("u{}@{offset} == {value}", *size as u32 * 8),
            Cond::All(cs) => cs
                .iter()
                .map(|c| c.describe())
                .collect::<Vec<_>>()
                .join(" && "),
            Cond::Root(c) => format!("root({})", c.describe()),
        }
    }

    /// Evaluates against the containing struct `own` and the ioctl struct `root`.
    pub fn eval(&self, own: &[u8], root: &[u8]) -> bool {
        match self {
            Cond::Always | Cond::BestEffort => true,
            Cond::BitSet { offset, bit } => {
                read_uint(own, *offset as usize, 4).is_some_and(|v| v & (1 << bit) != 0)
            }
            Cond::BitClear { offset, bit } => {
                read_uint(own, *offset as usize, 4).is_none_or(|v| v & (1 << bit) == 0)
            }
            Cond::Eq {
                offset,
                size,
                value,
            } => read_uint(own, *offset as usize, *size as usize) == Some(*value),
            Cond::All(cs) => cs.iter().all(|c| c.eval(own, root)),
            Cond::Root(c) => c.eval(root, root),
        }
    }
}

/// One embedded user pointer of an ioctl struct (or of an element of a pointed-to array).
#[derive(Debug, Serialize)]
pub struct PointerDesc {
    /// Field path, e.g. `allocation_info` or `allocation_info[].priv_drv_data`.
    pub path: &'static str,
    /// Address of the buffer.
    pub addr: PtrAddr,
    /// Length rule.
    pub len: PtrLen,
    /// Element size in bytes (1 for byte buffers).
    pub elem_size: u32,
    /// How elements decode.
    #[serde(skip)]
    pub elem: Kind,
    /// Direction.
    pub dir: Dir,
    /// Upper bound the driver enforces (bytes); longer buffers are captured truncated.
    pub max_bytes: u32,
    /// Condition on the containing struct for the pointer to be followed.
    pub cond: Cond,
    /// Pointers inside each element (elements are `elem_size`-byte structs).
    pub nested: &'static [PointerDesc],
    /// Free-text remark from the reference.
    pub note: &'static str,
}

/// What an ioctl does to a handle / fd / mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// A new handle of `handle_type` is written to the location.
    Creates,
    /// The handle at the location is freed.
    Destroys,
    /// A new file descriptor is returned at the location.
    ReturnsFd,
    /// The location holds an fd the driver consumes (remap on replay).
    TakesFd,
    /// The location receives a CPU VA of a new driver-created mapping (mask on replay).
    MapsVa,
    /// The location receives a host-chosen value that varies between runs (GPU VAs, host
    /// NT handles, fence values): mask on replay comparison.
    HostValue,
}

/// Kind of object a handle / fd refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleType {
    /// dxg adapter (guest-local handle).
    Adapter,
    /// dxg device.
    Device,
    /// dxg context.
    Context,
    /// dxg allocation.
    Allocation,
    /// dxg resource.
    Resource,
    /// dxg paging queue.
    PagingQueue,
    /// dxg sync object.
    SyncObject,
    /// dxg monitored fence (paging-queue / hw-queue progress fence).
    MonitoredFence,
    /// dxg hardware queue.
    HwQueue,
    /// Global shared handle (host NT-shared).
    SharedHandle,
    /// fd of an anon inode "dxgsyncobj"/"dxgresource".
    SharedObjectFd,
    /// sync_file fd.
    SyncFileFd,
    /// eventfd.
    EventFd,
    /// Host NT handle (u64).
    HostNtHandle,
    /// CPU mapping.
    Mapping,
    /// KVM VM fd.
    KvmVm,
    /// KVM vCPU fd.
    KvmVcpu,
    /// Any / unspecified.
    Any,
}

/// Where a handle effect applies.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loc {
    /// A field of the ioctl struct.
    Field {
        /// Field path.
        path: &'static str,
        /// Offset.
        offset: u32,
        /// Size (4 or 8).
        size: u8,
    },
    /// A field inside each element of a pointed-to array.
    Elem {
        /// Path of the pointer (as in [`PointerDesc::path`]).
        pointer: &'static str,
        /// Offset within the element.
        offset: u32,
        /// Size.
        size: u8,
    },
    /// The ioctl's return value.
    Return,
    /// The ioctl's `arg` value.
    Arg,
}

/// A handle / fd / mapping effect of an ioctl.
#[derive(Debug, Serialize)]
pub struct HandleEffect {
    /// What happens.
    pub effect: Effect,
    /// Where.
    pub loc: Loc,
    /// Object type.
    pub handle_type: HandleType,
    /// Condition, free text ("" = always on success).
    pub when: &'static str,
}

/// Which VMBus enum a command value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmbusChannel {
    /// `dxgkvmb_commandtype_global` (1000–1023), global channel.
    Global,
    /// `dxgkvmb_commandtype` (0–69), per-adapter.
    Adapter,
    /// `dxgkvmb_commandtype_host_to_vm` (0–5), inbound.
    HostToGuest,
}

/// A VMBus command identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct VmbusCmd {
    /// Enum family.
    pub channel: VmbusChannel,
    /// Enum value.
    pub value: u32,
}

/// A VMBus command an ioctl causes.
#[derive(Debug, Serialize)]
pub struct VmbusEffect {
    /// The command.
    pub cmd: VmbusCmd,
    /// When it is sent (free text, "" = always).
    pub when: &'static str,
}

/// One ioctl of a device.
#[derive(Debug)]
pub struct IoctlDesc {
    /// Device.
    pub device: Device,
    /// Macro name (`LX_DXCREATEALLOCATION`, `KVM_CREATE_VM`).
    pub name: &'static str,
    /// `_IOC_NR`.
    pub nr: u32,
    /// Full 32-bit request code.
    pub code: u32,
    /// Argument struct (name, size, top-level fields). Empty field list for legacy entries.
    pub layout: &'static StructDesc,
    /// How `arg` is used.
    pub arg: ArgKind,
    /// Class.
    pub class: IoctlClass,
    /// Embedded pointers.
    pub pointers: &'static [PointerDesc],
    /// Handle / fd / mapping effects.
    pub handles: &'static [HandleEffect],
    /// VMBus commands caused.
    pub vmbus: &'static [VmbusEffect],
    /// Kernel handler name.
    pub handler: &'static str,
    /// Remark.
    pub note: &'static str,
}

impl IoctlDesc {
    /// Argument struct size.
    pub fn size(&self) -> usize {
        self.layout.size
    }
}

/// Entry of `device`'s table with this request code.
pub fn lookup_code_in(device: Device, code: u32) -> Option<&'static IoctlDesc> {
    device.table().iter().find(|d| d.code == code)
}

/// Entry with this request code in any device table (dxg and kvm codes do not collide:
/// their `_IOC_TYPE` differs).
pub fn lookup_code(code: u32) -> Option<&'static IoctlDesc> {
    [Device::Dxg, Device::Kvm]
        .into_iter()
        .find_map(|d| lookup_code_in(d, code))
}

/// Entry by macro name (`LX_DXESCAPE`, `KVM_RUN`) in any device table.
pub fn lookup_name(name: &str) -> Option<&'static IoctlDesc> {
    [Device::Dxg, Device::Kvm]
        .into_iter()
        .find_map(|d| d.table().iter().find(|e| e.name.eq_ignore_ascii_case(name)))
}

/// One user buffer to capture, computed by [`walk_pointers`].
#[derive(Debug, Clone, Serialize)]
pub struct CaptureBuf {
    /// Concrete path (`allocation_info[2].priv_drv_data`).
    pub path: String,
    /// User address.
    pub addr: u64,
    /// Bytes to capture (already clipped to `max_bytes`).
    pub len: u64,
    /// Length the struct asked for, before clipping.
    pub requested_len: u64,
    /// Direction.
    pub dir: Dir,
    /// Descriptor path (`allocation_info[].priv_drv_data`), for decoding.
    pub desc_path: &'static str,
    /// `len` < `requested_len`.
    pub truncated: bool,
    /// Length unknown to the guest (host-reported); `len` is 0.
    pub unknown_len: bool,
}

/// Limits for [`walk_pointers`].
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Max elements of an array whose nested pointers are followed.
    pub max_nested_elems: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_nested_elems: 1024,
        }
    }
}

/// Length in bytes of the buffer `p` points to, from its containing struct `own`, before
/// the `max_bytes` clip; `None` when only the host knows it ([`PtrLen::HostReported`]) or a
/// length field lies outside `own`. (What [`walk_pointers`] uses.)
pub fn ptr_len(p: &PointerDesc, own: &[u8]) -> Option<u64> {
    let es = p.elem_size as u64;
    Some(match p.len {
        PtrLen::Count { offset, size } => {
            read_uint(own, offset as usize, size as usize)?.saturating_mul(es)
        }
        PtrLen::Bytes { offset, size } => read_uint(own, offset as usize, size as usize)?,
        PtrLen::Fixed { count } => count as u64 * es,
        PtrLen::CountOr1IfNonZero {
            offset,
            nonzero_offset,
        } => {
            if read_uint(own, nonzero_offset as usize, 4)? != 0 {
                es
            } else {
                read_uint(own, offset as usize, 4)?.saturating_mul(es)
            }
        }
        PtrLen::HostReported => return None,
    })
}

#[expect(clippy::too_many_arguments, reason = "recursive walker state")]
fn walk_level(
    ptrs: &'static [PointerDesc],
    own: &[u8],
    own_addr: u64,
    root: &[u8],
    prefix: &str,
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
    limits: WalkLimits,
    out: &mut Vec<CaptureBuf>,
) {
    for p in ptrs {
        if !p.cond.eval(own, root) {
            continue;
        }
        let addr = match p.addr {
            PtrAddr::Field { offset } => match read_uint(own, offset as usize, 8) {
                Some(a) => a,
                None => continue,
            },
            PtrAddr::Trailing { offset } => own_addr.wrapping_add(offset as u64),
        };
        if addr == 0 {
            continue;
        }
        let field = p.path.rsplit('.').next().unwrap_or(p.path);
        let path = if prefix.is_empty() {
            p.path.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        let (len, requested, unknown) = match ptr_len(p, own) {
            Some(l) => (l.min(p.max_bytes as u64), l, false),
            None => (0, 0, true),
        };
        if len == 0 && !unknown {
            continue;
        }
        out.push(CaptureBuf {
            path: path.clone(),
            addr,
            len,
            requested_len: requested,
            dir: p.dir,
            desc_path: p.path,
            truncated: len < requested,
            unknown_len: unknown,
        });
        if p.nested.is_empty() || unknown || p.elem_size == 0 {
            continue;
        }
        let Some(data) = read(addr, len as usize) else {
            continue;
        };
        // A byte buffer with nested pointers is one struct (ESCAPE's known-escape payload);
        // an array is walked element by element.
        if p.elem_size == 1 {
            walk_level(p.nested, &data, addr, root, &path, read, limits, out);
            continue;
        }
        let es = p.elem_size as usize;
        let n = (data.len() / es).min(limits.max_nested_elems);
        for i in 0..n {
            let elem = &data[i * es..(i + 1) * es];
            let ep = format!("{path}[{i}]");
            walk_level(
                p.nested,
                elem,
                addr + (i * es) as u64,
                root,
                &ep,
                read,
                limits,
                out,
            );
        }
    }
}

/// Computes the user buffers an ioctl call reads or writes, from the argument struct
/// bytes `arg_struct` (as read at `arg_addr`). `read(addr, len)` reads user memory (used
/// only to follow nested pointers inside arrays); returning `None` skips that level.
///
/// The result lists every buffer with its direction: capture `dir.is_in()` buffers at
/// syscall entry and `dir.is_out()` buffers at exit (recomputing from the struct as it is
/// at exit). Null pointers and zero lengths are skipped; lengths above the driver limit
/// are clipped and flagged `truncated`.
pub fn walk_pointers(
    entry: &IoctlDesc,
    arg_addr: u64,
    arg_struct: &[u8],
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
) -> Vec<CaptureBuf> {
    walk_pointers_with(entry, arg_addr, arg_struct, read, WalkLimits::default())
}

/// [`walk_pointers`] with explicit limits.
pub fn walk_pointers_with(
    entry: &IoctlDesc,
    arg_addr: u64,
    arg_struct: &[u8],
    read: &mut dyn FnMut(u64, usize) -> Option<Vec<u8>>,
    limits: WalkLimits,
) -> Vec<CaptureBuf> {
    let mut out = Vec::new();
    if !matches!(entry.arg, ArgKind::Struct) {
        return out;
    }
    walk_level(
        entry.pointers,
        arg_struct,
        arg_addr,
        arg_struct,
        "",
        read,
        limits,
        &mut out,
    );
    out
}

/// Finds the pointer descriptor for a descriptor path (`a[].b`) in an entry.
pub fn find_pointer(entry: &IoctlDesc, desc_path: &str) -> Option<&'static PointerDesc> {
    fn rec(ps: &'static [PointerDesc], path: &str) -> Option<&'static PointerDesc> {
        for p in ps {
            if p.path == path {
                return Some(p);
            }
            if let Some(x) = rec(p.nested, path) {
                return Some(x);
            }
        }
        None
    }
    rec(entry.pointers, desc_path)
}

/// Normalises a concrete buffer path (`allocation_info[3].priv_drv_data`) to its
/// descriptor path (`allocation_info[].priv_drv_data`).
pub fn desc_path_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_idx = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_idx = true;
                out.push('[');
            }
            ']' => {
                in_idx = false;
                out.push(']');
            }
            _ if in_idx => {}
            _ => out.push(c),
        }
    }
    out
}
