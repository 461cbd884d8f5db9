//! The host's integration tests, in one binary (it links once).

mod e2e;
mod guests;
mod support;
mod swap;
