//! dxtrace end-to-end tests: one test binary, one module per area.

mod e2e {
    pub mod analysis;
    pub mod cli;
    pub mod corrupt;
    pub mod crash;
    pub mod emulator;
    pub mod probe;
    pub mod replay;
    pub mod web;
}
