//! Where `traces`' raw records meet `driver-core`'s decoders.
//!
//! The two crates know nothing of each other (shared/DESIGN.md), so the mapping from a
//! captured [`traces::Buffer`] to the [`BufferView`] that [`driver_core::decode_ioctl`]
//! reads lives here, once, for every crate above them (the JSON-lines export, the web
//! UI's event detail).

use driver_core::decode::{BufferRole as DRole, BufferView};
use traces::{BUF_TRUNCATED, BUF_UNREADABLE, Buffer, BufferRef, BufferRole};

/// driver-core's name for a buffer role.
pub fn buffer_role(r: BufferRole) -> DRole {
    match r {
        BufferRole::StructIn => DRole::StructIn,
        BufferRole::StructOut => DRole::StructOut,
        BufferRole::PtrIn => DRole::PtrIn,
        BufferRole::PtrOut => DRole::PtrOut,
    }
}

/// A captured buffer (owned or borrowed from a block) as driver-core's decoders take it.
pub fn buffer_view<'a>(b: impl Into<BufferRef<'a>>) -> BufferView<'a> {
    let b = b.into();
    BufferView {
        role: buffer_role(b.role),
        path: b.path,
        addr: b.addr,
        data: b.data,
        truncated: b.flags & BUF_TRUNCATED != 0,
        unreadable: b.flags & BUF_UNREADABLE != 0,
    }
}

/// An ioctl's captured buffers as driver-core's decoders take them.
pub fn buffer_views(bufs: &[Buffer]) -> Vec<BufferView<'_>> {
    bufs.iter().map(buffer_view).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_flag_is_carried() {
        for (i, role) in [
            BufferRole::StructIn,
            BufferRole::StructOut,
            BufferRole::PtrIn,
            BufferRole::PtrOut,
        ]
        .into_iter()
        .enumerate()
        {
            let b = Buffer {
                addr: 0x1000 + i as u64,
                role,
                path: format!("p[{i}]"),
                len: 9,
                flags: i as u8,
                data: vec![i as u8; 3],
            };
            let v = buffer_views(std::slice::from_ref(&b))[0];
            assert_eq!(format!("{:?}", v.role), format!("{role:?}"));
            assert_eq!(
                (v.path, v.addr, v.data),
                (b.path.as_str(), b.addr, &b.data[..])
            );
            assert_eq!((v.truncated, v.unreadable), (b.truncated(), b.unreadable()));
        }
    }
}
