//! The route stage's contract as plain Rust (mirrors of the WIT `route-input-batch` and
//! `route-plan`): a tick's input and its destinations, inputs column by column, and the plan,
//! where each destination name is written once and every tick holds indices into the names.
//! Shared by the host (which reads the plan) and the route guests (which write it).

use std::sync::Arc;

/// What route is told (the WIT `route-config`).
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

/// A destination name. Shared, not copied: every tick of a batch points at the same few names.
pub type Name = Arc<str>;

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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteColumns {
    pub timestamp_us: Vec<i64>,
    pub instrument_token: Vec<u64>,
    pub change: Vec<f64>,
    pub spread_bps: Vec<f64>,
    pub rejected: Vec<bool>,
}

impl RouteColumns {
    pub fn from_inputs(inputs: &[RouteInput]) -> Self {
        Self {
            timestamp_us: inputs.iter().map(|i| i.timestamp_us).collect(),
            instrument_token: inputs.iter().map(|i| i.instrument_token).collect(),
            change: inputs.iter().map(|i| i.change).collect(),
            spread_bps: inputs.iter().map(|i| i.spread_bps).collect(),
            rejected: inputs.iter().map(|i| i.rejected).collect(),
        }
    }

    pub fn to_inputs(&self) -> Result<Vec<RouteInput>, String> {
        let n = self.timestamp_us.len();
        let lens = [
            self.instrument_token.len(),
            self.change.len(),
            self.spread_bps.len(),
            self.rejected.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(format!(
                "route input columns of unequal lengths: {n} and {lens:?}"
            ));
        }
        Ok((0..n)
            .map(|i| RouteInput {
                timestamp_us: self.timestamp_us[i],
                instrument_token: self.instrument_token[i],
                change: self.change[i],
                spread_bps: self.spread_bps[i],
                rejected: self.rejected[i],
            })
            .collect())
    }
}

/// Destinations of a batch: `names` once, then one index per tick and kind (-1 = none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub names: Vec<String>,
    pub search_index: Vec<i32>,
    pub lake_partition: Vec<i32>,
    pub alert_topic: Vec<i32>,
    pub alert_reason: Vec<Option<String>>,
    pub dead_letter_topic: Vec<i32>,
}

impl RoutePlan {
    /// One [`Destinations`] per tick; refuses unequal columns and indices outside `names`.
    pub fn decode(self) -> Result<Vec<Destinations>, String> {
        let n = self.search_index.len();
        let lens = [
            self.lake_partition.len(),
            self.alert_topic.len(),
            self.alert_reason.len(),
            self.dead_letter_topic.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(format!(
                "route plan columns of unequal lengths: {n} and {lens:?}"
            ));
        }
        let names: Vec<Name> = self.names.iter().map(|n| Name::from(n.as_str())).collect();
        let name = |i: i32| -> Result<Option<Name>, String> {
            match i {
                -1 => Ok(None),
                i => names
                    .get(usize::try_from(i).map_err(|_| format!("bad name index {i}"))?)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("name index {i} outside the {} names", names.len())),
            }
        };
        (0..n)
            .map(|i| {
                let alert = match (name(self.alert_topic[i])?, &self.alert_reason[i]) {
                    (Some(topic), reason) => Some(Alert {
                        topic,
                        reason: reason.clone().unwrap_or_default(),
                    }),
                    (None, _) => None,
                };
                Ok(Destinations {
                    search_index: name(self.search_index[i])?,
                    lake_partition: name(self.lake_partition[i])?,
                    alert,
                    dead_letter_topic: name(self.dead_letter_topic[i])?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_plans_are_refused() {
        let plan = RoutePlan {
            names: vec!["a".into()],
            search_index: vec![3],
            lake_partition: vec![-1],
            alert_topic: vec![-1],
            alert_reason: vec![None],
            dead_letter_topic: vec![-1],
        };
        assert!(plan.decode().unwrap_err().contains("outside"));
        let short = RoutePlan {
            search_index: vec![0, 0],
            ..RoutePlan::default()
        };
        assert!(short.decode().unwrap_err().contains("unequal"));
    }
}
