//! The enrich guest. This file is only the bindings adapter; the features are computed in
//! `logic.rs`, plain Rust tested natively. Natively only `logic` is compiled.

pub mod logic;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "enricher", path: "../../wit" });
    stockpipe_model::guest_type_conversions!();

    use crate::logic;
    use exports::stockpipe::pipeline::enrich::{EnrichConfig, Enrichment, Guest};
    use stockpipe::pipeline::types::{Rejection, Tick};

    struct Enrich;

    impl Guest for Enrich {
        fn enrich_batch(
            config: EnrichConfig,
            ticks: Vec<Tick>,
        ) -> Vec<Result<Enrichment, Rejection>> {
            let config = logic::EnrichConfig {
                imbalance_levels: config.imbalance_levels as usize,
            };
            let ticks: Vec<_> = ticks.into_iter().map(tick_from_wit).collect();
            logic::enrich_batch(&config, &ticks)
                .into_iter()
                .map(|outcome| {
                    outcome
                        .map(|e| Enrichment {
                            event_id: e.event_id,
                            mid_price: e.mid_price,
                            spread: e.spread,
                            spread_bps: e.spread_bps,
                            book_imbalance: e.book_imbalance,
                            notional: e.notional,
                            deviation_bps: e.deviation_bps,
                            hour: e.hour,
                            minute: e.minute,
                        })
                        .map_err(rejection_to_wit)
                })
                .collect()
        }
    }

    export!(Enrich);
}
