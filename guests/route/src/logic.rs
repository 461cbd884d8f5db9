//! The route stage as pure Rust: where each tick goes.
//!
//! An accepted tick goes to the search index and to its lake partition (`dt=YYYY-MM-DD/hour=HH`
//! of its UTC timestamp), and also to the alerts topic when |change| or the spread crosses a
//! configured threshold. A tick rejected upstream goes to the dead-letter topic only.
#![forbid(unsafe_code)]

pub use crate::plan::{Alert, Destinations, Name, RouteConfig, RouteInput};

use crate::plan::RoutePlan;
use stockpipe_model::time::Civil;

/// Where each name sits in a plan's `names`: the configured ones first, then lake partitions in
/// the order they appear.
const SEARCH_INDEX: i32 = 0;
const ALERTS_TOPIC: i32 = 1;
const DEAD_LETTER_TOPIC: i32 = 2;

/// Routes a batch into a [`RoutePlan`]: every destination name written once, one index per tick
/// and kind. This is the stage's whole answer, in the shape it crosses the wasm boundary (no
/// per-tick strings but the rare alert reason); [`RoutePlan::decode`] turns it into
/// [`Destinations`]. Ticks of one batch mostly share an hour: a partition already named is looked
/// up (newest first), and only a new hour is formatted.
pub fn route_batch(config: &RouteConfig, inputs: &[RouteInput]) -> RoutePlan {
    let n = inputs.len();
    let mut plan = RoutePlan {
        names: vec![
            config.search_index.clone(),
            config.alerts_topic.clone(),
            config.dead_letter_topic.clone(),
        ],
        search_index: Vec::with_capacity(n),
        lake_partition: Vec::with_capacity(n),
        alert_topic: Vec::with_capacity(n),
        alert_reason: Vec::with_capacity(n),
        dead_letter_topic: Vec::with_capacity(n),
    };
    let alerts = AlertRules::new(config);
    // (UTC hour since the epoch, index of its partition in `names`), newest last.
    let mut hours: Vec<(i64, i32)> = Vec::new();
    for input in inputs {
        if input.rejected {
            plan.search_index.push(-1);
            plan.lake_partition.push(-1);
            plan.alert_topic.push(-1);
            plan.alert_reason.push(None);
            plan.dead_letter_topic.push(DEAD_LETTER_TOPIC);
            continue;
        }
        let hour = input.timestamp_us.div_euclid(3_600_000_000);
        let partition = match hours.iter().rev().find(|(h, _)| *h == hour) {
            Some(&(_, index)) => index,
            None => {
                let index =
                    i32::try_from(plan.names.len()).expect("a batch names < 2^31 partitions");
                plan.names
                    .push(Civil::from_micros(input.timestamp_us).lake_partition());
                hours.push((hour, index));
                index
            }
        };
        let reason = alerts.reason(input);
        plan.search_index.push(SEARCH_INDEX);
        plan.lake_partition.push(partition);
        plan.alert_topic
            .push(if reason.is_some() { ALERTS_TOPIC } else { -1 });
        plan.alert_reason.push(reason);
        plan.dead_letter_topic.push(-1);
    }
    plan
}

/// One tick's destinations (the batch path, for one tick).
pub fn route_one(config: &RouteConfig, input: &RouteInput) -> Destinations {
    route_batch(config, std::slice::from_ref(input))
        .decode()
        .expect("a plan made here is consistent")
        .pop()
        .expect("one destination per input")
}

/// The alert thresholds of a batch, with their text written once (not once per alert).
struct AlertRules {
    /// |change| (percent) at or above which a tick alerts, and its text.
    change_pct: Option<(f64, String)>,
    /// Spread (bps) at or above which a tick alerts, and its text.
    spread_bps: Option<(f64, String)>,
}

impl AlertRules {
    fn new(config: &RouteConfig) -> Self {
        let rule = |threshold: f64| (threshold > 0.0).then(|| (threshold, threshold.to_string()));
        Self {
            change_pct: rule(config.change_alert_pct),
            spread_bps: rule(config.spread_alert_bps),
        }
    }

    /// Why an accepted tick raises an alert, if it does.
    fn reason(&self, input: &RouteInput) -> Option<String> {
        let change = self
            .change_pct
            .as_ref()
            .filter(|(threshold, _)| input.change.abs() >= *threshold);
        let spread = self
            .spread_bps
            .as_ref()
            .filter(|(threshold, _)| input.spread_bps >= *threshold);
        let change = change
            .map(|(_, text)| format!("|change| {}% >= {text}%", fixed(input.change.abs(), 3)));
        let spread = spread
            .map(|(_, text)| format!("spread {} bps >= {text} bps", fixed(input.spread_bps, 1)));
        match (change, spread) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(one),
            (Some(change), Some(spread)) => Some(format!("{change}; {spread}")),
        }
    }
}

/// `format!("{x:.decimals$}")`, written with integer arithmetic where that gives the same text:
/// core's exact float formatting falls back to big-number arithmetic, slow in wasm (no native
/// 128-bit multiply): a batch in which every tick alerted cost route 1,617 ns a tick in wasm, and
/// 523–713 with this. Ties, negative values, large ones and non-finite ones go to core's
/// formatting.
fn fixed(x: f64, decimals: u32) -> String {
    let scale = 10_u64.pow(decimals);
    let scaled = x * scale as f64;
    // Below 1e9 the product's rounding error is under 1e-7, so away from a tie (±1e-6) the
    // rounded integer is the one the exact decimal expansion of x rounds to.
    let near_tie = (scaled.fract() - 0.5).abs() < 1e-6;
    if x.is_sign_negative() || !(0.0..1e9).contains(&scaled) || near_tie {
        return format!("{x:.0$}", decimals as usize);
    }
    let units = scaled.round() as u64;
    if decimals == 0 {
        return units.to_string();
    }
    format!("{}.{:02$}", units / scale, units % scale, decimals as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RouteInput {
        RouteInput {
            timestamp_us: 1_497_944_105_284_824,
            instrument_token: 136_519_172,
            change: 0.02,
            spread_bps: 9.8,
            rejected: false,
        }
    }

    #[test]
    fn accepted_ticks_go_to_the_index_and_their_partition() {
        let d = route_one(&RouteConfig::default(), &input());
        assert_eq!(d.search_index.as_deref(), Some("stock-stream"));
        assert_eq!(d.lake_partition.as_deref(), Some("dt=2017-06-20/hour=07"));
        assert_eq!((d.alert, d.dead_letter_topic), (None, None));
    }

    #[test]
    fn rejected_ticks_go_to_the_dead_letter_topic_only() {
        let d = route_one(
            &RouteConfig::default(),
            &RouteInput {
                rejected: true,
                ..input()
            },
        );
        assert_eq!(
            d,
            Destinations {
                dead_letter_topic: Some("stock-stream.dlq".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn thresholds_raise_alerts_with_reasons() {
        let config = RouteConfig {
            change_alert_pct: 1.0,
            spread_alert_bps: 5.0,
            ..RouteConfig::default()
        };
        let d = route_one(
            &config,
            &RouteInput {
                change: -1.5,
                spread_bps: 1.0,
                ..input()
            },
        );
        let alert = d.alert.unwrap();
        assert_eq!(&*alert.topic, "stock-alerts");
        assert!(alert.reason.contains("|change| 1.500%"), "{}", alert.reason);
        let d = route_one(&config, &input());
        assert!(d.alert.unwrap().reason.starts_with("spread 9.8 bps"));
        let off = RouteConfig {
            change_alert_pct: 0.0,
            spread_alert_bps: 0.0,
            ..RouteConfig::default()
        };
        assert_eq!(
            route_one(
                &off,
                &RouteInput {
                    change: 99.0,
                    ..input()
                }
            )
            .alert,
            None
        );
        // Accepted ticks with an alert still go to the index and the lake.
        assert!(route_one(&config, &input()).search_index.is_some());
    }

    /// `fixed` writes what core's `{:.N}` writes: ties, tiny and huge values, the thresholds'
    /// edges, and values spread over many magnitudes.
    #[test]
    fn fixed_point_text_matches_core_formatting() {
        let mut values = vec![
            0.0,
            -0.0,
            0.0005,
            0.0015,
            0.05,
            0.25,
            1.0625,
            2.5,
            4.9995,
            5.0,
            9.75,
            9.85,
            99.95,
            123.456_5,
            999_999.999_5,
            1e9,
            1e12,
            -1.5,
            f64::NAN,
            f64::INFINITY,
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let magnitude = 10_f64.powi((state % 12) as i32 - 4);
            values.push((state >> 11) as f64 / (1_u64 << 53) as f64 * magnitude);
        }
        for x in values {
            for decimals in [0, 1, 3] {
                assert_eq!(
                    fixed(x, decimals),
                    format!("{x:.0$}", decimals as usize),
                    "{x:e} to {decimals} decimals"
                );
            }
        }
    }

    #[test]
    fn batches_route_like_single_ticks() {
        let config = RouteConfig::default();
        let inputs: Vec<RouteInput> = [0, 1, 3_600_000_000, 3_600_000_001, 5, 86_400_000_000]
            .iter()
            .map(|d| RouteInput {
                timestamp_us: 1_497_944_105_284_824 + d,
                ..input()
            })
            .collect();
        let singles: Vec<_> = inputs.iter().map(|i| route_one(&config, i)).collect();
        let plan = route_batch(&config, &inputs);
        // The index, the alerts and dead-letter topics, then hours 07, 08 and (a day later) 07.
        assert_eq!(plan.names.len(), 6, "{:?}", plan.names);
        assert_eq!(plan.decode().unwrap(), singles);
    }

    #[test]
    fn partitions_follow_the_utc_hour() {
        let d = route_one(
            &RouteConfig::default(),
            &RouteInput {
                timestamp_us: 1_497_999_600_000_000,
                ..input()
            },
        );
        assert_eq!(d.lake_partition.as_deref(), Some("dt=2017-06-20/hour=23"));
    }

    #[test]
    fn plans_round_trip_and_share_names() {
        let config = RouteConfig {
            change_alert_pct: 1.0,
            ..RouteConfig::default()
        };
        let inputs: Vec<RouteInput> = (0..6)
            .map(|i| RouteInput {
                timestamp_us: 1_497_944_105_284_824 + i * 1_800_000_000,
                instrument_token: 5,
                change: if i == 2 { 3.0 } else { 0.1 },
                spread_bps: 1.0,
                rejected: i == 4,
            })
            .collect();
        let columns = crate::plan::RouteColumns::from_inputs(&inputs);
        assert_eq!(columns.to_inputs().unwrap(), inputs);
        let plan = route_batch(&config, &inputs);
        // The index, the alerts topic, the dead-letter topic, four hourly partitions (07-10).
        assert_eq!(plan.names.len(), 7, "{:?}", plan.names);
        assert_eq!(plan.lake_partition, [3, 4, 4, 5, -1, 6]);
        assert_eq!(plan.alert_topic, [-1, -1, 1, -1, -1, -1]);
        assert_eq!(plan.dead_letter_topic, [-1, -1, -1, -1, 2, -1]);
        let destinations = plan.decode().unwrap();
        assert_eq!(
            destinations[3].lake_partition.as_deref(),
            Some("dt=2017-06-20/hour=09")
        );
        // Ticks pointing at one name share one allocation.
        let (a, b) = (&destinations[1], &destinations[2]);
        assert!(std::sync::Arc::ptr_eq(
            a.lake_partition.as_ref().unwrap(),
            b.lake_partition.as_ref().unwrap()
        ));
    }
}
