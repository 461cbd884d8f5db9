//! The route stage as pure Rust: where each tick goes.
//!
//! An accepted tick goes to the search index and to its lake partition (`dt=YYYY-MM-DD/hour=HH`
//! of its UTC timestamp), and also to the alerts topic when |change| or the spread crosses a
//! configured threshold. A tick rejected upstream goes to the dead-letter topic only.
#![forbid(unsafe_code)]

use std::sync::Arc;
use stockpipe_model::time::Civil;

/// A destination name. Shared, not copied: every tick of a batch points at the same few names.
pub type Name = Arc<str>;

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub search_index: String,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    /// Alert when |change| (percent) >= this; <= 0 disables.
    pub change_alert_pct: f64,
    /// Alert when the spread (bps) >= this; <= 0 disables.
    pub spread_alert_bps: f64,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            search_index: "stock-stream".into(),
            alerts_topic: "stock-alerts".into(),
            dead_letter_topic: "stock-stream.dlq".into(),
            change_alert_pct: 5.0,
            spread_alert_bps: 50.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteInput {
    pub timestamp_us: i64,
    pub instrument_token: u64,
    pub change: f64,
    pub spread_bps: f64,
    pub rejected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub topic: Name,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Destinations {
    pub search_index: Option<Name>,
    pub lake_partition: Option<Name>,
    pub alert: Option<Alert>,
    pub dead_letter_topic: Option<Name>,
}

/// The configuration's names, made shareable once per batch.
struct Names {
    search_index: Name,
    alerts_topic: Name,
    dead_letter_topic: Name,
}

impl Names {
    fn of(config: &RouteConfig) -> Self {
        Self {
            search_index: config.search_index.as_str().into(),
            alerts_topic: config.alerts_topic.as_str().into(),
            dead_letter_topic: config.dead_letter_topic.as_str().into(),
        }
    }
}

/// Routes a batch. Ticks of one batch mostly share an hour, so the partition of the last hour
/// seen is shared instead of formatted again.
pub fn route_batch(config: &RouteConfig, inputs: &[RouteInput]) -> Vec<Destinations> {
    let names = Names::of(config);
    let mut last: Option<(i64, Name)> = None;
    inputs
        .iter()
        .map(|input| {
            route_one_with(config, &names, input, |us| {
                let hour = us.div_euclid(3_600_000_000);
                match &last {
                    Some((h, partition)) if *h == hour => partition.clone(),
                    _ => {
                        let partition: Name = Civil::from_micros(us).lake_partition().into();
                        last = Some((hour, partition.clone()));
                        partition
                    }
                }
            })
        })
        .collect()
}

pub fn route_one(config: &RouteConfig, input: &RouteInput) -> Destinations {
    route_one_with(config, &Names::of(config), input, |us| {
        Civil::from_micros(us).lake_partition().into()
    })
}

fn route_one_with(
    config: &RouteConfig,
    names: &Names,
    input: &RouteInput,
    partition: impl FnOnce(i64) -> Name,
) -> Destinations {
    if input.rejected {
        return Destinations {
            dead_letter_topic: Some(names.dead_letter_topic.clone()),
            ..Destinations::default()
        };
    }
    let mut reasons = Vec::new();
    if config.change_alert_pct > 0.0 && input.change.abs() >= config.change_alert_pct {
        reasons.push(format!(
            "|change| {:.3}% >= {}%",
            input.change.abs(),
            config.change_alert_pct
        ));
    }
    if config.spread_alert_bps > 0.0 && input.spread_bps >= config.spread_alert_bps {
        reasons.push(format!(
            "spread {:.1} bps >= {} bps",
            input.spread_bps, config.spread_alert_bps
        ));
    }
    Destinations {
        search_index: Some(names.search_index.clone()),
        lake_partition: Some(partition(input.timestamp_us)),
        alert: (!reasons.is_empty()).then(|| Alert {
            topic: names.alerts_topic.clone(),
            reason: reasons.join("; "),
        }),
        dead_letter_topic: None,
    }
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
        assert_eq!(route_batch(&config, &inputs), singles);
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
}
