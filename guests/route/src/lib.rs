//! The route guest. This file is only the bindings adapter; the decisions are made in `logic.rs`,
//! plain Rust tested natively. Natively only `logic` is compiled.

pub mod logic;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "router", path: "../../wit" });

    use crate::logic;
    use exports::stockpipe::pipeline::route::{
        Alert, Destinations, Guest, RouteConfig, RouteInput,
    };

    struct Route;

    impl Guest for Route {
        fn route_batch(config: RouteConfig, inputs: Vec<RouteInput>) -> Vec<Destinations> {
            let config = logic::RouteConfig {
                search_index: config.search_index,
                alerts_topic: config.alerts_topic,
                dead_letter_topic: config.dead_letter_topic,
                change_alert_pct: config.change_alert_pct,
                spread_alert_bps: config.spread_alert_bps,
            };
            let inputs: Vec<_> = inputs
                .into_iter()
                .map(|i| logic::RouteInput {
                    timestamp_us: i.timestamp_us,
                    instrument_token: i.instrument_token,
                    change: i.change,
                    spread_bps: i.spread_bps,
                    rejected: i.rejected,
                })
                .collect();
            logic::route_batch(&config, &inputs)
                .into_iter()
                .map(|d| Destinations {
                    search_index: d.search_index,
                    lake_partition: d.lake_partition,
                    alert: d.alert.map(|a| Alert {
                        topic: a.topic,
                        reason: a.reason,
                    }),
                    dead_letter_topic: d.dead_letter_topic,
                })
                .collect()
        }
    }

    export!(Route);
}
