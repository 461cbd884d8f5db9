//! The aggregate guest: per-instrument bars kept across calls. This file is only the bindings
//! adapter; the bars are computed in `logic.rs`, plain Rust tested natively. Natively only
//! `logic` is compiled.

pub mod logic;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "aggregator", path: "../../wit" });

    use crate::logic;
    use exports::stockpipe::pipeline::aggregate::{
        AggregateConfig, AggregateInput, AggregateOutput, BarBatch, Guest,
    };
    use std::cell::RefCell;

    thread_local! {
        /// The guest's state lives as long as its instance: the host keeps one per stage and
        /// checkpoints it through `export-state`.
        static STATE: RefCell<logic::Aggregator> = RefCell::new(logic::Aggregator::default());
    }

    struct Aggregate;

    impl Guest for Aggregate {
        fn aggregate_batch(config: AggregateConfig, ticks: AggregateInput) -> AggregateOutput {
            let config = logic::AggregateConfig {
                bar_width_us: config.bar_width_us,
                allowed_lateness_us: config.allowed_lateness_us,
                volatility_bars: config.volatility_bars,
            };
            let input = logic::AggregateInput {
                partition: &ticks.partition,
                timestamp_us: &ticks.timestamp_us,
                instrument_token: &ticks.instrument_token,
                last_price: &ticks.last_price,
                volume: &ticks.volume,
                mid_price: &ticks.mid_price,
                spread: &ticks.spread,
            };
            // Columns of unequal length are a host bug: trap, and the host isolates the batch.
            assert!(
                input.is_consistent(),
                "aggregate input columns differ in length"
            );
            let out = STATE.with_borrow_mut(|state| state.aggregate_batch(&config, &input));
            let b = out.bars;
            AggregateOutput {
                late: out.late,
                bars: BarBatch {
                    partition: b.partition,
                    instrument_token: b.instrument_token,
                    start_us: b.start_us,
                    open: b.open,
                    high: b.high,
                    low: b.low,
                    close: b.close,
                    traded_quantity: b.traded_quantity,
                    tick_count: b.tick_count,
                    vwap: b.vwap,
                    last_mid_price: b.last_mid_price,
                    last_spread: b.last_spread,
                    log_return: b.log_return,
                    volatility: b.volatility,
                    closed_by: b.closed_by,
                },
            }
        }

        fn export_state(partition: i32) -> Vec<u8> {
            STATE.with_borrow(|state| state.export_state(partition))
        }

        fn import_state(partition: i32, state: Vec<u8>) -> Result<(), String> {
            STATE.with_borrow_mut(|s| s.import_state(partition, &state))
        }

        fn drop_state(partition: i32) {
            STATE.with_borrow_mut(|state| state.drop_state(partition));
        }
    }

    export!(Aggregate);
}
