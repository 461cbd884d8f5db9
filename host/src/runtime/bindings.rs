//! The one `bindgen!` of the host: every stage's exports, from the root `wit/`.
//! Each component exports only its own interface; `GuestIndices::new` of the other interfaces is
//! simply never called for it.

wasmtime::component::bindgen!({
    world: "host",
    path: "../wit",
});

pub use self::exports::stockpipe::pipeline::{aggregate, alert, enrich, route, validate};
pub use self::stockpipe::pipeline::types;
