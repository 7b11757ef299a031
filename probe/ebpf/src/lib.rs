//! Empty on purpose: the programs are in the `probe` binary target (`src/main.rs`), built
//! for bpfel by `probe/loader/build.rs`. This library lets the loader name this package
//! as a build-dependency so cargo rebuilds the loader when the programs change.
#![no_std]
