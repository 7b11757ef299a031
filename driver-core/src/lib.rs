//! `driver-core`: device schemas (`/dev/dxg`, `/dev/kvm`), decoders, the [`Backend`]
//! trait and the real-device backend.
//!
//! * [`schema`] — the table shape ([`IoctlDesc`], [`PointerDesc`], handle effects),
//!   lookups, and [`walk_pointers`] (which user buffers an ioctl reads / writes).
//! * [`dxg`] — the dxgkrnl structs, ioctl table and VMBus protocol.
//! * [`kvm`] — the kvm schema.
//! * [`decode`] — bytes → field trees for ioctls and VMBus messages.
//! * [`ntstatus`] — NTSTATUS names, `ntstatus2int`, full return-value rendering.
//! * [`render`] — `dxtrace schema` output (JSON and text).
//! * [`backend`] — [`Backend`], [`RealDevice`], [`UserMemory`].
//! * [`inthash`] — the integer-keyed hash maps the emulator, replay and analysis share.

pub mod backend;
pub mod decode;
pub mod dxg;
pub mod emulator;
pub mod inthash;
pub mod ioc;
pub mod kvm;
pub mod layout;
pub mod ntstatus;
pub mod render;
pub mod schema;
pub mod workload;

pub use backend::{
    Backend, InProcessMemory, MemError, RealDevice, RegionMemory, UserMemory, VouchedMemory,
};
pub use decode::{
    BufferRole, BufferView, DecodedCall, DecodedMessage, Field, VmbusDirection, decode_ioctl,
    decode_vmbus,
};
pub use layout::Pod;
pub use ntstatus::{ReturnValue, classify_return, ntstatus_to_errno, render_return};
pub use schema::{
    CaptureBuf, Device, Dir, IoctlClass, IoctlDesc, PointerDesc, lookup_code, lookup_name,
    walk_pointers,
};
