//! The route guest. This file is only the bindings adapter (WIT records <-> `plan` types); the
//! decisions are made in `logic.rs` and the batch shapes live in `plan.rs`, both plain Rust tested
//! natively. Natively only those two are compiled.

pub mod logic;
pub mod plan;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "router", path: "../../wit" });

    use crate::{logic, plan};
    use exports::stockpipe::pipeline::route::{Guest, RouteConfig, RouteInputBatch, RoutePlan};

    struct Route;

    impl Guest for Route {
        fn route_batch(config: RouteConfig, ticks: RouteInputBatch) -> RoutePlan {
            let config = logic::RouteConfig {
                search_index: config.search_index,
                alerts_topic: config.alerts_topic,
                dead_letter_topic: config.dead_letter_topic,
                change_alert_pct: config.change_alert_pct,
                spread_alert_bps: config.spread_alert_bps,
            };
            let columns = plan::RouteColumns {
                timestamp_us: ticks.timestamp_us,
                instrument_token: ticks.instrument_token,
                change: ticks.change,
                spread_bps: ticks.spread_bps,
                rejected: ticks.rejected,
            };
            let inputs = columns
                .to_inputs()
                .unwrap_or_else(|e| panic!("inconsistent route batch: {e}"));
            let p = logic::route_batch(&config, &inputs);
            RoutePlan {
                names: p.names,
                search_index: p.search_index,
                lake_partition: p.lake_partition,
                alert_topic: p.alert_topic,
                alert_reason: p.alert_reason,
                dead_letter_topic: p.dead_letter_topic,
            }
        }
    }

    export!(Route);
}
