//! dxtrace end-to-end tests.
