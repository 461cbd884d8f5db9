//! The one `bindgen!` of the host: every stage's exports, from the root `wit/`.
//! Each component exports only its own interface; `GuestIndices::new` of the other interfaces is
//! simply never called for it.

wasmtime::component::bindgen!({
    world: "host",
    path: "../wit",
});

pub use exports::stockpipe::pipeline::{enrich, route, validate};
pub use stockpipe::pipeline::types;
