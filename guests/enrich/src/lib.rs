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
    use exports::stockpipe::pipeline::enrich::{EnrichConfig, EnrichmentBatch, Guest};
    use stockpipe::pipeline::types::TickBatch;
    use stockpipe_model::columns::EnrichmentColumns;

    struct Enrich;

    impl Guest for Enrich {
        fn enrich_batch(config: EnrichConfig, ticks: TickBatch) -> EnrichmentBatch {
            let config = logic::EnrichConfig {
                imbalance_levels: config.imbalance_levels as usize,
            };
            let c = EnrichmentColumns::from_outcomes(with_tick_views(ticks, |views| {
                logic::enrich_batch(&config, views)
            }));
            EnrichmentBatch {
                rejected: c
                    .rejected
                    .into_iter()
                    .map(|r| r.map(rejection_to_wit))
                    .collect(),
                present: c.present,
                mid_price: c.mid_price,
                spread: c.spread,
                spread_bps: c.spread_bps,
                book_imbalance: c.book_imbalance,
                notional: c.notional,
                deviation_bps: c.deviation_bps,
                hour: c.hour,
                minute: c.minute,
            }
        }
    }

    export!(Enrich);
}
