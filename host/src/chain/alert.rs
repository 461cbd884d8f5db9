//! The alert stage beside the chain: rules evaluated by a stateful guest (the shipped one's
//! semantics are in `guests/alert/src/logic.rs`), fed the enriched ticks and the bars closed in
//! the same batch. Its state is kept, restored after a fault and handed over by [`Kept`] (see
//! [`crate::chain::state`]), exactly as the aggregate stage's.
//!
//! The rules are configuration (`[[alert.rules]]`), passed to the guest as data with every call
//! and checked by the guest at start-up ([`Alerting::new`]) and before a new version serves.

use super::state::Kept;
use crate::config::error::{ConfigError, invalid};
use crate::position::Offsets;
use crate::runtime::bindings::alert as wit;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{AlertStage, GuestComponent, GuestFault, StageInstance, convert};
use serde::Deserialize;
use std::sync::Arc;
use stockpipe_model::alert::{AlertEvents, AlertRule, BAR_KINDS, Direction};

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSection {
    /// Alert events to the alerts topic (`kafka.alerts_topic`) and the `index`.
    pub enabled: bool,
    /// The rules. Absent: the two default rules ([`AlertSection::DEFAULT_RULES`], today's
    /// `route.change_alert_pct` and `route.spread_alert_bps` defaults); `rules = []`: none.
    pub rules: Option<Vec<RuleConfig>>,
    /// The index alert events go to.
    pub index: String,
    /// How often each partition's state is checkpointed (as `aggregate.checkpoint_ms`).
    pub checkpoint_ms: u64,
}

impl Default for AlertSection {
    fn default() -> Self {
        Self {
            enabled: true,
            rules: None,
            index: "stock-alerts".into(),
            checkpoint_ms: 1_000,
        }
    }
}

/// One `[[alert.rules]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// `change_pct`, `spread_bps`, `price_cross`, `volume_spike`, `volatility` (the shipped
    /// guest's; a guest of one's own may know others).
    pub kind: String,
    pub threshold: f64,
    /// The hysteresis level; default: the threshold (no band).
    #[serde(default)]
    pub clear: Option<f64>,
    /// `up`, `down` or `both`; default `up`.
    #[serde(default = "RuleConfig::default_direction")]
    pub direction: String,
    #[serde(default)]
    pub for_ms: u64,
    #[serde(default)]
    pub cooldown_ms: u64,
    #[serde(default)]
    pub window_bars: u32,
}

impl RuleConfig {
    fn default_direction() -> String {
        "up".into()
    }
}

impl AlertSection {
    /// The rules when none are configured: |change| ≥ 5 % and a spread ≥ 50 bps, as the route
    /// stage alerted before (now once per crossing).
    pub const DEFAULT_RULES: [(&'static str, f64); 2] = [("change_pct", 5.0), ("spread_bps", 50.0)];

    /// The rules the guest is given: the configured ones (or the defaults), then those the
    /// deprecated `route.change_alert_pct` / `route.spread_alert_bps` create, named after the
    /// key. Errors name the key.
    pub fn resolved_rules(
        &self,
        route_change_pct: Option<f64>,
        route_spread_bps: Option<f64>,
    ) -> Result<Vec<AlertRule>, ConfigError> {
        let mut rules = Vec::new();
        match &self.rules {
            None => {
                for (kind, threshold) in Self::DEFAULT_RULES {
                    rules.push(alias(kind, kind, threshold));
                }
            }
            Some(configured) => {
                for (i, r) in configured.iter().enumerate() {
                    let key = |k: &str| format!("alert.rules[{i}].{k}");
                    let Some(direction) = Direction::parse(&r.direction) else {
                        return invalid(
                            key("direction"),
                            &format!("{:?} is not one of up, down, both", r.direction),
                        );
                    };
                    let ms = |k: &str, v: u64| {
                        i64::try_from(v).map_err(|_| ConfigError::Invalid {
                            key: key(k).into(),
                            message: "is too large".into(),
                        })
                    };
                    rules.push(AlertRule {
                        name: r.name.clone(),
                        kind: r.kind.clone(),
                        threshold: r.threshold,
                        clear: r.clear.unwrap_or(r.threshold),
                        direction,
                        for_ms: ms("for_ms", r.for_ms)?,
                        cooldown_ms: ms("cooldown_ms", r.cooldown_ms)?,
                        window_bars: r.window_bars,
                    });
                }
            }
        }
        for (key, kind, value) in [
            ("route.change_alert_pct", "change_pct", route_change_pct),
            ("route.spread_alert_bps", "spread_bps", route_spread_bps),
        ] {
            let Some(threshold) = value else { continue };
            if threshold > 0.0 {
                // The route stage's rule was |change| ≥ x and spread ≥ x, per tick.
                rules.retain(|r| r.name != kind || self.rules.is_some());
                rules.push(alias(key, kind, threshold));
            } else if self.rules.is_none() {
                // `<= 0` disabled the route stage's alert: it disables the default rule too.
                rules.retain(|r| r.name != kind);
            }
        }
        Ok(rules)
    }

    /// Checks the section's own values (the rules are checked by the guest); the error names
    /// the key.
    pub fn validate(&self, aggregation: bool) -> Result<(), ConfigError> {
        if self.index.is_empty() || self.index.chars().any(|c| c.is_ascii_uppercase()) {
            return invalid("alert.index", "must be a non-empty lowercase index name");
        }
        if self.checkpoint_ms == 0 {
            return invalid("alert.checkpoint_ms", "must be at least 1");
        }
        for (i, r) in self.rules.iter().flatten().enumerate() {
            if BAR_KINDS.contains(&r.kind.as_str()) && !aggregation && self.enabled {
                return invalid(
                    format!("alert.rules[{i}].kind"),
                    &format!(
                        "{:?} reads closed bars: it needs [aggregate] enabled = true",
                        r.kind
                    ),
                );
            }
        }
        Ok(())
    }
}

/// Logs, once at start-up, each deprecated route key that is set and the rule it stands for.
pub fn warn_deprecated(route_change_pct: Option<f64>, route_spread_bps: Option<f64>) {
    for (key, kind, value) in [
        ("route.change_alert_pct", "change_pct", route_change_pct),
        ("route.spread_alert_bps", "spread_bps", route_spread_bps),
    ] {
        if let Some(threshold) = value {
            tracing::warn!(
                key,
                threshold,
                "{key} is deprecated: it creates the alert rule {key:?} (kind {kind}); write it as an [[alert.rules]] table"
            );
        }
    }
}

/// The rule a deprecated key (or a default) creates.
fn alias(name: &str, kind: &str, threshold: f64) -> AlertRule {
    AlertRule {
        name: name.into(),
        kind: kind.into(),
        threshold,
        clear: threshold,
        direction: match kind {
            "change_pct" => Direction::Both,
            _ => Direction::Up,
        },
        for_ms: 0,
        cooldown_ms: 0,
        window_bars: 0,
    }
}

/// What one batch raised.
#[derive(Debug, Default)]
pub struct Alerted {
    /// The events, `tick` an input index.
    pub events: AlertEvents,
    /// Input indices of the ticks the guest faulted on, alone.
    pub faulted: Vec<(usize, GuestFault)>,
}

/// The guest, its rules and the per-partition snapshots of its state.
pub struct Alerting {
    sandbox: Arc<Sandbox>,
    rules: Vec<AlertRule>,
    wit_rules: Vec<wit::AlertRule>,
    kept: Kept<StageInstance<AlertStage>>,
}

impl Alerting {
    /// The stage with `rules`, which the guest checks first: its error names the rule and key.
    pub fn new(
        sandbox: Arc<Sandbox>,
        component: Arc<GuestComponent>,
        rules: Vec<AlertRule>,
    ) -> anyhow::Result<Self> {
        let mut a = Self {
            wit_rules: convert::alert_rules(&rules),
            rules,
            kept: Kept::new("alert", StageInstance::new(sandbox.clone(), component)),
            sandbox,
        };
        a.check()
            .map_err(|why| anyhow::anyhow!("alert.rules: {why}"))?;
        Ok(a)
    }

    /// The guest's check of the rules.
    fn check(&mut self) -> Result<(), String> {
        let version = self.kept.component().version.clone();
        match self.kept.instance().check_rules(&self.wit_rules) {
            Ok(checked) => checked,
            Err(fault) => Err(format!(
                "the alert guest {version} faulted checking the rules: {fault}"
            )),
        }
    }

    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// A new version with the same rules, every partition's state handed to it. `Err` when it
    /// refuses the rules; otherwise the partitions whose state it could not read, with why (those
    /// start empty in it, at the same offsets).
    pub fn hand_over(
        &self,
        candidate: Arc<GuestComponent>,
    ) -> Result<(Self, Vec<(i32, String)>), String> {
        let mut next = Self {
            sandbox: self.sandbox.clone(),
            rules: self.rules.clone(),
            wit_rules: self.wit_rules.clone(),
            kept: Kept::new("alert", StageInstance::new(self.sandbox.clone(), candidate)),
        };
        next.check()
            .map_err(|why| format!("it refuses the rules: {why}"))?;
        let refused = self.kept.hand_over(&mut next.kept);
        Ok((next, refused))
    }

    pub fn kept(&self) -> &Kept<StageInstance<AlertStage>> {
        &self.kept
    }

    pub fn kept_mut(&mut self) -> &mut Kept<StageInstance<AlertStage>> {
        &mut self.kept
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        self.kept.component()
    }

    /// Runs a batch's accepted ticks and the bars closed meanwhile. `consumed`: per partition,
    /// the offset after the batch's last message of it, where its snapshot now stands.
    pub fn process(
        &mut self,
        ticks: wit::AlertTicks,
        bars: wit::AlertBars,
        consumed: &Offsets,
    ) -> Alerted {
        let n = ticks.timestamp_us.len();
        let mut out = Alerted::default();
        if n > 0 {
            let mut touched: Vec<i32> = ticks.partition.clone();
            touched.sort_unstable();
            touched.dedup();
            match self.kept.instance().alert(&self.wit_rules, &ticks, &bars) {
                Ok(events) => {
                    out.events = events;
                    for partition in touched {
                        self.kept.export(partition);
                    }
                }
                Err(fault) => {
                    tracing::warn!(ticks = n, %fault, "the alert guest faulted on a batch; restoring its state and retrying tick by tick");
                    self.kept.reinstate();
                    for i in 0..n {
                        self.process_one(&ticks, &bars, i, &mut out);
                    }
                }
            }
        }
        self.kept.consumed(consumed);
        out
    }

    /// Tick `i` alone, with the bars it closed.
    fn process_one(
        &mut self,
        ticks: &wit::AlertTicks,
        bars: &wit::AlertBars,
        i: usize,
        out: &mut Alerted,
    ) {
        let one = wit::AlertTicks {
            partition: vec![ticks.partition[i]],
            timestamp_us: vec![ticks.timestamp_us[i]],
            instrument_token: vec![ticks.instrument_token[i]],
            last_price: vec![ticks.last_price[i]],
            change: vec![ticks.change[i]],
            spread_bps: vec![ticks.spread_bps[i]],
        };
        let mut its = convert::empty_alert_bars();
        for b in (0..bars.closed_by.len()).filter(|&b| bars.closed_by[b] as usize == i) {
            its.partition.push(bars.partition[b]);
            its.instrument_token.push(bars.instrument_token[b]);
            its.end_us.push(bars.end_us[b]);
            its.close.push(bars.close[b]);
            its.traded_quantity.push(bars.traded_quantity[b]);
            its.log_return.push(bars.log_return[b]);
            its.closed_by.push(0);
        }
        match self.kept.instance().alert(&self.wit_rules, &one, &its) {
            Ok(events) => {
                // Its events indexed a batch of one: tick i of this one.
                out.events.append(events, i as u32);
                self.kept.export(ticks.partition[i]);
            }
            Err(fault) => {
                out.faulted.push((i, fault));
                self.kept.reinstate();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> AlertSection {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn without_rules_the_defaults_alert_as_the_route_stage_did() {
        let rules = AlertSection::default().resolved_rules(None, None).unwrap();
        let named: Vec<_> = rules
            .iter()
            .map(|r| (r.name.as_str(), r.threshold, r.clear, r.direction))
            .collect();
        assert_eq!(
            named,
            vec![
                ("change_pct", 5.0, 5.0, Direction::Both),
                ("spread_bps", 50.0, 50.0, Direction::Up)
            ]
        );
        assert!(
            section("rules = []")
                .resolved_rules(None, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_route_keys_are_aliases_of_rules() {
        // Set: the default rule of its kind is replaced by the alias.
        let rules = AlertSection::default()
            .resolved_rules(Some(3.0), None)
            .unwrap();
        let named: Vec<_> = rules
            .iter()
            .map(|r| (r.name.as_str(), r.threshold))
            .collect();
        assert_eq!(
            named,
            vec![("spread_bps", 50.0), ("route.change_alert_pct", 3.0)]
        );
        // 0 disables, as it did.
        let rules = AlertSection::default()
            .resolved_rules(None, Some(0.0))
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "change_pct");
        // Beside configured rules: added.
        let s = section(
            r#"[[rules]]
name = "big"
kind = "price_cross"
threshold = 100.0
clear = 99.0
"#,
        );
        let rules = s.resolved_rules(Some(2.0), None).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].direction, Direction::Up);
        assert_eq!(rules[0].clear, 99.0);
        assert_eq!(rules[1].name, "route.change_alert_pct");
    }

    #[test]
    fn bad_values_are_named() {
        let e = section(
            r#"[[rules]]
name = "x"
kind = "change_pct"
threshold = 1.0
direction = "sideways"
"#,
        )
        .resolved_rules(None, None)
        .unwrap_err();
        assert!(e.to_string().contains("alert.rules[0].direction"), "{e}");
        let bars = section(
            r#"[[rules]]
name = "v"
kind = "volatility"
threshold = 0.01
window_bars = 5
"#,
        );
        let e = bars.validate(false).unwrap_err();
        assert!(e.to_string().contains("alert.rules[0].kind"), "{e}");
        bars.validate(true).unwrap();
        let e = section("index = \"Alerts\"").validate(true).unwrap_err();
        assert!(e.to_string().contains("alert.index"), "{e}");
        let e = section("checkpoint_ms = 0").validate(true).unwrap_err();
        assert!(e.to_string().contains("alert.checkpoint_ms"), "{e}");
        let e: Result<AlertSection, _> = toml::from_str("[[rules]]\nname = \"x\"\n");
        assert!(e.unwrap_err().to_string().contains("kind"));
    }
}
