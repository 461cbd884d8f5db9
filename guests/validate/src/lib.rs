//! The validate guest. This file is only the bindings adapter (WIT records <-> `stockpipe_model`
//! types); the rules live in `logic.rs`, which is plain Rust tested natively, and `fast.rs` is an
//! optional shortcut for the ticks that pass them.
//! Natively (unit tests, the host's native benchmark) only `logic` is compiled.

pub mod fast;
pub mod logic;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "validator", path: "../../wit" });
    stockpipe_model::guest_type_conversions!();

    use crate::logic;
    use exports::stockpipe::pipeline::validate::{Guest, ValidateConfig};
    use stockpipe::pipeline::types::{Rejection, TickBatch};

    struct Validate;

    impl Guest for Validate {
        fn validate_batch(config: ValidateConfig, ticks: TickBatch) -> Vec<Option<Rejection>> {
            let config = logic::ValidateConfig {
                min_timestamp_us: config.min_timestamp_us,
                max_timestamp_us: config.max_timestamp_us,
            };
            with_tick_views(ticks, |views| {
                logic::validate_batch(&config, views)
                    .into_iter()
                    .map(|v| v.map(rejection_to_wit))
                    .collect()
            })
        }
    }

    export!(Validate);
}
