//! The `/dev/dxg` schema: struct mirrors ([`types`]), the ioctl table ([`table`]) and the
//! VMBus protocol ([`vmbus`]).

pub mod table;
pub mod types;
pub mod vmbus;
