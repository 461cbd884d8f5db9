//! The alert guest: alert rules with a state kept across calls. This file is only the bindings
//! adapter; the rules are evaluated in `logic.rs`, plain Rust tested natively. Natively only
//! `logic` is compiled.

pub mod logic;

#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "the canonical-ABI exports that wit-bindgen generates"
)]
mod bindings {
    wit_bindgen::generate!({ world: "alerter", path: "../../wit" });

    use crate::logic;
    use exports::stockpipe::pipeline::alert::{
        AlertBars, AlertEvents, AlertRule, AlertState, AlertTicks, Direction, Guest,
    };
    use std::cell::RefCell;

    thread_local! {
        /// The guest's state lives as long as its instance: the host keeps one per stage and
        /// checkpoints it through `export-state`.
        static STATE: RefCell<logic::Alerter> = RefCell::new(logic::Alerter::default());
    }

    fn rules(rules: Vec<AlertRule>) -> Vec<logic::AlertRule> {
        rules
            .into_iter()
            .map(|r| logic::AlertRule {
                name: r.name,
                kind: r.kind,
                threshold: r.threshold,
                clear: r.clear,
                direction: match r.direction {
                    Direction::Up => logic::Direction::Up,
                    Direction::Down => logic::Direction::Down,
                    Direction::Both => logic::Direction::Both,
                },
                for_ms: r.for_ms,
                cooldown_ms: r.cooldown_ms,
                window_bars: r.window_bars,
            })
            .collect()
    }

    struct Alert;

    impl Guest for Alert {
        fn check_rules(rules_: Vec<AlertRule>) -> Result<(), String> {
            logic::check_rules(&rules(rules_))
        }

        fn alert_batch(rules_: Vec<AlertRule>, ticks: AlertTicks, bars: AlertBars) -> AlertEvents {
            let rules = rules(rules_);
            // Rules the host did not check, or columns of unequal length, are a host bug: trap,
            // and the host isolates the batch.
            if let Err(e) = logic::check_rules(&rules) {
                panic!("alert rules not checked by the host: {e}");
            }
            let ticks = logic::AlertTicks {
                partition: &ticks.partition,
                timestamp_us: &ticks.timestamp_us,
                instrument_token: &ticks.instrument_token,
                last_price: &ticks.last_price,
                change: &ticks.change,
                spread_bps: &ticks.spread_bps,
            };
            let bars = logic::AlertBars {
                partition: &bars.partition,
                instrument_token: &bars.instrument_token,
                end_us: &bars.end_us,
                close: &bars.close,
                traded_quantity: &bars.traded_quantity,
                log_return: &bars.log_return,
                closed_by: &bars.closed_by,
            };
            assert!(
                ticks.is_consistent() && bars.is_consistent(ticks.len()),
                "alert input columns differ in length"
            );
            let out = STATE.with_borrow_mut(|state| state.alert_batch(&rules, &ticks, &bars));
            AlertEvents {
                rule: out.rule,
                state: out
                    .state
                    .into_iter()
                    .map(|s| match s {
                        logic::AlertState::Firing => AlertState::Firing,
                        logic::AlertState::Resolved => AlertState::Resolved,
                    })
                    .collect(),
                tick: out.tick,
                instrument_token: out.instrument_token,
                value: out.value,
                threshold: out.threshold,
                event_time_us: out.event_time_us,
            }
        }

        fn export_state(partition: i32) -> Vec<u8> {
            STATE.with_borrow(|state| state.export_state(partition))
        }

        fn import_state(partition: i32, state: Vec<u8>) -> Result<(), String> {
            STATE.with_borrow_mut(|s| s.import_state(partition, &state))
        }

        fn drop_state(partition: i32) {
            STATE.with_borrow_mut(|s| s.drop_state(partition));
        }
    }

    export!(Alert);
}
