//! The route stage's batch shapes: the contract's own types, from the model crate the host
//! shares (a tick's input, its destinations, the plan a batch is answered with).

pub use stockpipe_model::route::*;
