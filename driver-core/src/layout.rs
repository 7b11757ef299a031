//! Byte-layout descriptions shared by every schema: field kinds, struct descriptors, and
//! the [`Pod`] trait that turns a `#[repr(C)]` mirror into bytes and back.
//!
//! Every ioctl and VMBus struct is declared once with the crate-private `layout!` macro,
//! which emits the `#[repr(C)]` Rust struct, a compile-time size assertion, a
//! compile-time "no implicit padding" assertion, and a [`StructDesc`] whose field offsets
//! come from `offset_of!`. Decoders and the schema table read the descriptor; nothing
//! restates an offset by hand.

/// Names of the values of a C enum (rendered as `NAME (value)`).
#[derive(Debug)]
pub struct EnumDesc {
    /// C name of the enum.
    pub name: &'static str,
    /// `(value, name)` pairs.
    pub values: &'static [(i64, &'static str)],
}

impl EnumDesc {
    /// Name of `v`, if the enum has one.
    pub fn name_of(&self, v: i64) -> Option<&'static str> {
        self.values.iter().find(|(x, _)| *x == v).map(|(_, n)| *n)
    }
}

/// Names of the single-bit members of a C bitfield / flags word.
#[derive(Debug)]
pub struct FlagsDesc {
    /// C name of the flags struct.
    pub name: &'static str,
    /// `(bit index, name)` pairs.
    pub bits: &'static [(u32, &'static str)],
}

impl FlagsDesc {
    /// `name|name|0x…` rendering of `v` (unknown bits as hex remainder).
    pub fn render(&self, v: u64) -> String {
        let mut parts = Vec::new();
        let mut rest = v;
        for (bit, name) in self.bits {
            if *bit < 64 && v & (1u64 << bit) != 0 {
                parts.push((*name).to_string());
                rest &= !(1u64 << bit);
            }
        }
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
        if parts.is_empty() {
            "0".to_string()
        } else {
            parts.join("|")
        }
    }
}

/// How a field's bytes are interpreted and rendered.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Unsigned integer (1, 2, 4 or 8 bytes by field size), decimal.
    U,
    /// Signed integer, decimal.
    I,
    /// Unsigned integer rendered in hex (addresses that are not user pointers, sizes of pages…).
    Hex,
    /// `bool` stored in one byte.
    Bool,
    /// `struct d3dkmthandle` (u32), rendered `0x…`.
    Handle,
    /// `struct winluid` {a, b}, rendered `a:b` in hex.
    Luid,
    /// `struct ntstatus` (i32), rendered with its name.
    NtStatus,
    /// User-space pointer (u64), rendered `0x…`; buffers it points to are described by the
    /// ioctl's pointer descriptors.
    Pointer,
    /// A file descriptor number carried in an integer field.
    Fd,
    /// An enum value.
    Enum(&'static EnumDesc),
    /// A flags / bitfield word.
    Flags(&'static FlagsDesc),
    /// Opaque bytes (private driver data, reserved areas, unions), hex dump.
    Bytes,
    /// Explicit padding inserted by the mirror (not a C field); hidden when rendering.
    Pad,
    /// UTF-16 string (fixed array of u16).
    Utf16,
    /// Fixed array; element kind given, element size = its struct size or the field size /
    /// element count.
    Array(&'static Kind, usize),
    /// Nested struct.
    Struct(&'static StructDesc),
}

impl Kind {
    /// Short type name used in schema output (`u32`, `handle`, `enum d3dddi_…`, …).
    pub fn type_name(&self, size: usize) -> String {
        match self {
            Kind::U => format!("u{}", size * 8),
            Kind::I => format!("i{}", size * 8),
            Kind::Hex => format!("x{}", size * 8),
            Kind::Bool => "bool".into(),
            Kind::Handle => "handle".into(),
            Kind::Luid => "luid".into(),
            Kind::NtStatus => "ntstatus".into(),
            Kind::Pointer => "pointer".into(),
            Kind::Fd => "fd".into(),
            Kind::Enum(e) => format!("enum {}", e.name),
            Kind::Flags(f) => format!("flags {}", f.name),
            Kind::Bytes => "bytes".into(),
            Kind::Pad => "pad".into(),
            Kind::Utf16 => "utf16".into(),
            Kind::Array(k, n) => {
                let es = if *n == 0 { 0 } else { size / n };
                format!("{}[{n}]", k.type_name(es))
            }
            Kind::Struct(s) => format!("struct {}", s.name),
        }
    }
}

/// One top-level field of a struct.
#[derive(Debug)]
pub struct FieldDesc {
    /// C field name (unions are named after the member the decoder shows).
    pub name: &'static str,
    /// Byte offset in the struct.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Interpretation.
    pub kind: Kind,
}

/// A struct's C name, size and top-level fields.
#[derive(Debug)]
pub struct StructDesc {
    /// C name (e.g. `d3dkmt_createallocation`).
    pub name: &'static str,
    /// `sizeof` on x86_64.
    pub size: usize,
    /// Top-level fields in offset order (including explicit `Pad` fields).
    pub fields: &'static [FieldDesc],
    /// `#pragma pack(1)` struct.
    pub packed: bool,
}

impl StructDesc {
    /// Field by name.
    pub fn field(&self, name: &str) -> Option<&'static FieldDesc> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// Fields without the mirror's explicit padding.
    pub fn c_fields(&self) -> impl Iterator<Item = &'static FieldDesc> {
        self.fields.iter().filter(|f| !matches!(f.kind, Kind::Pad))
    }
}

/// Plain-old-data: every bit pattern is valid and the type has no padding bytes.
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers (and arrays / structs of them)
/// without implicit padding. The `layout!` macro checks both at compile time.
pub unsafe trait Pod: Copy + 'static {
    /// All-zero value.
    fn zeroed() -> Self {
        // SAFETY: Pod types accept every bit pattern, including all zeroes.
        unsafe { core::mem::MaybeUninit::<Self>::zeroed().assume_init() }
    }
    /// The value's bytes (native = little-endian on the targets we support).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: Pod types have no padding, so every byte is initialised.
        unsafe { core::slice::from_raw_parts(self as *const Self as *const u8, size_of::<Self>()) }
    }
    /// Mutable byte view.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; any bytes written form a valid value.
        unsafe { core::slice::from_raw_parts_mut(self as *mut Self as *mut u8, size_of::<Self>()) }
    }
    /// Value from the first `size_of::<Self>()` bytes; a short slice is zero-filled.
    fn from_bytes(b: &[u8]) -> Self {
        let mut v = Self::zeroed();
        let n = b.len().min(size_of::<Self>());
        v.as_bytes_mut()[..n].copy_from_slice(&b[..n]);
        v
    }
}

macro_rules! pod_prim {
    ($($t:ty),*) => { $(unsafe impl Pod for $t {})* };
}
pod_prim!(u8, u16, u32, u64, i8, i16, i32, i64);
// SAFETY: arrays of Pod are Pod (no padding between elements of a Pod type).
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

macro_rules! fname {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $n:literal) => {
        $n
    };
}
pub(crate) use fname;

/// Declares a `#[repr(C)]` mirror plus its [`StructDesc`] (`Type::DESC`).
macro_rules! layout {
    (@emit [$($repr:tt)*] $packed:literal $(#[$m:meta])* $name:ident = $cname:literal, $size:literal
        { $($(#[$fm:meta])* $f:ident $(as $cn:literal)? : $t:ty => $k:expr),* $(,)? }) => {
        $(#[$m])*
        #[doc = concat!("Mirror of `struct ", $cname, "` (", stringify!($size), " bytes).")]
        #[repr($($repr)*)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);
        const _: () = assert!(0 $(+ core::mem::size_of::<$t>())* == $size, "implicit padding");
        // SAFETY: the two assertions above prove the struct is made of Pod fields with no
        // implicit padding (field types are checked to be Pod below).
        unsafe impl $crate::layout::Pod for $name {}
        const _: fn() = || { fn is_pod<T: $crate::layout::Pod>() {} $(is_pod::<$t>();)* };
        impl $name {
            /// Layout descriptor of this struct.
            pub const DESC: $crate::layout::StructDesc = $crate::layout::StructDesc {
                name: $cname,
                size: $size,
                packed: $packed,
                fields: &[$($crate::layout::FieldDesc {
                    name: $crate::layout::fname!($f $(, $cn)?),
                    offset: core::mem::offset_of!($name, $f),
                    size: core::mem::size_of::<$t>(),
                    kind: $k,
                }),*],
            };
        }
        impl Default for $name {
            fn default() -> Self { <Self as $crate::layout::Pod>::zeroed() }
        }
    };
    ($(#[$m:meta])* packed $name:ident = $cname:literal, $size:literal { $($body:tt)* }) => {
        layout!(@emit [C, packed] true $(#[$m])* $name = $cname, $size { $($body)* });
    };
    ($(#[$m:meta])* $name:ident = $cname:literal, $size:literal { $($body:tt)* }) => {
        layout!(@emit [C] false $(#[$m])* $name = $cname, $size { $($body)* });
    };
}
pub(crate) use layout;

/// Little-endian unsigned read of `size` (1/2/4/8) bytes at `off`; `None` if out of range.
pub fn read_uint(b: &[u8], off: usize, size: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(size)?)?;
    Some(match size {
        1 => s[0] as u64,
        2 => u16::from_le_bytes([s[0], s[1]]) as u64,
        4 => u32::from_le_bytes(s.try_into().ok()?) as u64,
        8 => u64::from_le_bytes(s.try_into().ok()?),
        _ => return None,
    })
}

/// Sign-extends a `size`-byte value.
pub fn sign_extend(v: u64, size: usize) -> i64 {
    match size {
        1 => v as u8 as i8 as i64,
        2 => v as u16 as i16 as i64,
        4 => v as u32 as i32 as i64,
        _ => v as i64,
    }
}
