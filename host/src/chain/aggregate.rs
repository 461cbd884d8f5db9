//! The aggregate stage beside the chain: the one guest that keeps bars across batches (per
//! instrument, per Kafka partition; the rules are in the guest's `logic.rs`). Its state is kept,
//! restored after a fault and handed over by [`Kept`] (see [`crate::chain::state`]).

use super::state::Kept;
use crate::config::error::{ConfigError, invalid};
use crate::position::Offsets;
use crate::runtime::bindings::aggregate as wit;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{
    AggregateStage, GuestComponent, GuestFault, StageInstance, StateCalls, convert,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use stockpipe_model::aggregate::{AggregateConfig, BarColumns};

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregateSection {
    /// Bars per instrument: `stock-bars` in Elasticsearch and the lake.
    pub enabled: bool,
    /// Width of a bar.
    pub bar_seconds: u32,
    /// How far behind its partition's newest timestamp a tick still counts; older ticks go to the
    /// dead-letter topic with reason `late`.
    pub allowed_lateness_ms: u64,
    /// Log returns in a bar's rolling volatility.
    pub volatility_bars: u32,
    /// The index closed bars go to.
    pub index: String,
    /// The lake prefix closed bars go under (`<prefix>/dt=…/hour=…/`).
    pub lake_prefix: String,
    /// How often each partition's state is checkpointed; offsets are committed only as far as a
    /// stored checkpoint, so this is also how far behind the commits may trail.
    pub checkpoint_ms: u64,
}

impl Default for AggregateSection {
    fn default() -> Self {
        Self {
            enabled: false,
            bar_seconds: 60,
            allowed_lateness_ms: 5_000,
            volatility_bars: 20,
            index: "stock-bars".into(),
            lake_prefix: "stock-bars".into(),
            checkpoint_ms: 1_000,
        }
    }
}

impl AggregateSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bar_seconds == 0 {
            return invalid("aggregate.bar_seconds", "must be at least 1");
        }
        if self.volatility_bars < 2 {
            return invalid(
                "aggregate.volatility_bars",
                "must be at least 2 (a deviation needs two returns)",
            );
        }
        if self.index.is_empty() || self.index.chars().any(|c| c.is_ascii_uppercase()) {
            return invalid(
                "aggregate.index",
                "must be a non-empty lowercase index name",
            );
        }
        let prefix_ok = !self.lake_prefix.is_empty()
            && !self.lake_prefix.starts_with('_')
            && self
                .lake_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !prefix_ok {
            return invalid(
                "aggregate.lake_prefix",
                "must be one path segment of letters, digits, '-', '_' or '.', not starting with '_'",
            );
        }
        if self.checkpoint_ms == 0 {
            return invalid("aggregate.checkpoint_ms", "must be at least 1");
        }
        Ok(())
    }

    pub fn guest_config(&self) -> AggregateConfig {
        AggregateConfig {
            bar_width_us: i64::from(self.bar_seconds) * 1_000_000,
            allowed_lateness_us: i64::try_from(self.allowed_lateness_ms)
                .unwrap_or(i64::MAX / 1_000)
                .saturating_mul(1_000),
            volatility_bars: self.volatility_bars,
        }
    }
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Aggregated {
    /// Input indices of the ticks older than their partition's watermark.
    pub late: Vec<usize>,
    /// Input indices of the ticks the guest faulted on, alone.
    pub faulted: Vec<(usize, GuestFault)>,
    /// The bars closed, `closed_by` an input index.
    pub bars: BarColumns,
}

/// The guest and the per-partition snapshots of its state.
pub struct Aggregation {
    sandbox: Arc<Sandbox>,
    config: wit::AggregateConfig,
    kept: Kept<StageInstance<AggregateStage>>,
    /// The last batch and the states it started from: a candidate's shadow run replays it.
    last: Option<LastBatch>,
}

struct LastBatch {
    before: Vec<(i32, Vec<u8>)>,
    input: wit::AggregateInput,
}

/// The bars the current version and a candidate close on the last batch, from the same states.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BarsShadow {
    pub ticks: usize,
    pub bars_before: usize,
    pub bars_after: usize,
    /// Bars (by partition, instrument and start) closed by one version only, or with a field
    /// that differs (bit for bit).
    pub bars_differing: usize,
    /// Ticks late for one version and not the other.
    pub late_differing: usize,
}

impl BarsShadow {
    pub fn compare(ticks: usize, before: &Aggregated, after: &Aggregated) -> Self {
        let key = |b: &BarColumns, i: usize| (b.partition[i], b.instrument_token[i], b.start_us[i]);
        let fields = |b: &BarColumns, i: usize| {
            (
                [
                    b.open[i],
                    b.high[i],
                    b.low[i],
                    b.close[i],
                    b.vwap[i],
                    b.last_mid_price[i],
                    b.last_spread[i],
                    b.log_return[i],
                    b.volatility[i],
                ]
                .map(f64::to_bits),
                b.traded_quantity[i],
                b.tick_count[i],
            )
        };
        let index = |b: &BarColumns| -> HashMap<_, _> {
            (0..b.len()).map(|i| (key(b, i), fields(b, i))).collect()
        };
        let (a, b) = (index(&before.bars), index(&after.bars));
        let differing = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count()
            + b.keys().filter(|k| !a.contains_key(*k)).count();
        let late_a: std::collections::HashSet<_> = before.late.iter().collect();
        let late_b: std::collections::HashSet<_> = after.late.iter().collect();
        Self {
            ticks,
            bars_before: before.bars.len(),
            bars_after: after.bars.len(),
            bars_differing: differing,
            late_differing: late_a.symmetric_difference(&late_b).count(),
        }
    }
}

impl Aggregation {
    pub fn new(
        sandbox: Arc<Sandbox>,
        component: Arc<GuestComponent>,
        config: AggregateConfig,
    ) -> Self {
        Self {
            config: convert::aggregate_config(&config),
            kept: Kept::new("aggregate", StageInstance::new(sandbox.clone(), component)),
            sandbox,
            last: None,
        }
    }

    /// A new version with the same configuration and no state yet.
    fn successor(&self, component: Arc<GuestComponent>) -> Self {
        Self {
            config: self.config,
            kept: Kept::new(
                "aggregate",
                StageInstance::new(self.sandbox.clone(), component),
            ),
            sandbox: self.sandbox.clone(),
            last: None,
        }
    }

    /// Hands every partition's state to `candidate`, which imports what this version exported.
    /// Returns the new aggregation and the partitions whose state it could not read, with why
    /// (those start empty in it, at the same offsets).
    pub fn hand_over(&self, candidate: Arc<GuestComponent>) -> (Self, Vec<(i32, String)>) {
        let mut next = self.successor(candidate);
        let refused = self.kept.hand_over(&mut next.kept);
        (next, refused)
    }

    /// The shadow run of `candidate`: the last batch again, from the states it started from,
    /// through this version and the candidate (fresh instances; the live ones are untouched).
    /// `Err` when the candidate cannot read those states or faults on the batch; `Ok(None)`
    /// before any batch.
    pub fn shadow(&self, candidate: &Arc<GuestComponent>) -> Result<Option<BarsShadow>, String> {
        let Some(last) = &self.last else {
            return Ok(None);
        };
        let run = |component: Arc<GuestComponent>| -> Result<Aggregated, String> {
            let mut a = self.successor(component);
            for (partition, state) in &last.before {
                a.kept
                    .instance()
                    .import_state(*partition, state)
                    .map_err(|f| f.to_string())?
                    .map_err(|why| format!("partition {partition}: {why}"))?;
            }
            let out = a
                .kept
                .instance()
                .aggregate(&self.config, &last.input)
                .map_err(|f| f.to_string())?;
            Ok(Aggregated {
                late: out.late.iter().map(|&i| i as usize).collect(),
                faulted: Vec::new(),
                bars: out.bars,
            })
        };
        let before = run(self.kept.component().clone())
            .map_err(|e| format!("the current version, replayed: {e}"))?;
        let after = run(candidate.clone())?;
        Ok(Some(BarsShadow::compare(
            last.input.timestamp_us.len(),
            &before,
            &after,
        )))
    }

    /// The guest's state, per partition.
    pub fn kept(&self) -> &Kept<StageInstance<AggregateStage>> {
        &self.kept
    }

    pub fn kept_mut(&mut self) -> &mut Kept<StageInstance<AggregateStage>> {
        &mut self.kept
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        self.kept.component()
    }

    /// Runs the accepted ticks of a batch. `consumed`: per partition, the offset after the batch's
    /// last message of it (accepted or not), where that partition's snapshot now stands.
    /// The input is kept (the last batch, for a candidate's shadow run): see
    /// [`Aggregation::last_input`].
    pub fn process(&mut self, input: wit::AggregateInput, consumed: &Offsets) -> Aggregated {
        let n = input.timestamp_us.len();
        let mut out = Aggregated::default();
        if n > 0 {
            let mut touched: Vec<i32> = input.partition.clone();
            touched.sort_unstable();
            touched.dedup();
            let mut before = Vec::with_capacity(touched.len());
            match self.kept.instance().aggregate(&self.config, &input) {
                Ok(answer) => {
                    out.late = answer.late.iter().map(|&i| i as usize).collect();
                    out.bars = answer.bars;
                    // The states the batch started from move into `last` as the new ones come.
                    for partition in touched {
                        before.push((partition, self.kept.export(partition).unwrap_or_default()));
                    }
                }
                Err(fault) => {
                    tracing::warn!(ticks = n, %fault, "the aggregate guest faulted on a batch; restoring its state and retrying tick by tick");
                    for &p in &touched {
                        let state = self.kept.snapshot(p).map(|s| s.state.clone());
                        before.push((p, state.unwrap_or_default()));
                    }
                    self.kept.reinstate();
                    for i in 0..n {
                        self.process_one(&input, i, &mut out);
                    }
                }
            }
            self.last = Some(LastBatch { before, input });
        }
        self.kept.consumed(consumed);
        out
    }

    fn process_one(&mut self, input: &wit::AggregateInput, i: usize, out: &mut Aggregated) {
        let one = wit::AggregateInput {
            partition: vec![input.partition[i]],
            timestamp_us: vec![input.timestamp_us[i]],
            instrument_token: vec![input.instrument_token[i]],
            last_price: vec![input.last_price[i]],
            volume: vec![input.volume[i]],
            mid_price: vec![input.mid_price[i]],
            spread: vec![input.spread[i]],
        };
        match self.kept.instance().aggregate(&self.config, &one) {
            Ok(answer) => {
                if !answer.late.is_empty() {
                    out.late.push(i);
                }
                // Its bars indexed a batch of one: tick i of this one.
                out.bars.append(answer.bars, i as u32);
                self.kept.export(input.partition[i]);
            }
            Err(fault) => {
                out.faulted.push((i, fault));
                self.kept.reinstate();
            }
        }
    }

    /// The last batch's input.
    pub fn last_input(&self) -> Option<&wit::AggregateInput> {
        self.last.as_ref().map(|l| &l.input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_named() {
        for (section, key) in [
            (
                AggregateSection {
                    bar_seconds: 0,
                    ..Default::default()
                },
                "aggregate.bar_seconds",
            ),
            (
                AggregateSection {
                    volatility_bars: 1,
                    ..Default::default()
                },
                "aggregate.volatility_bars",
            ),
            (
                AggregateSection {
                    index: "Bars".into(),
                    ..Default::default()
                },
                "aggregate.index",
            ),
            (
                AggregateSection {
                    lake_prefix: "_state".into(),
                    ..Default::default()
                },
                "aggregate.lake_prefix",
            ),
            (
                AggregateSection {
                    lake_prefix: "a/b".into(),
                    ..Default::default()
                },
                "aggregate.lake_prefix",
            ),
            (
                AggregateSection {
                    checkpoint_ms: 0,
                    ..Default::default()
                },
                "aggregate.checkpoint_ms",
            ),
        ] {
            let e = section.validate().unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        AggregateSection::default().validate().unwrap();
    }
}
