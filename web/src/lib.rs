//! Arrives with its issue; see the crate description.
