//! No code: see Cargo.toml. This crate exists so that `polars` (reached only through
//! `analysis`) is compiled with the same dependency features whichever workspace
//! package a release build selects.
