//! The aggregate stage beside the chain: the one guest that keeps state across batches (bars per
//! instrument, per Kafka partition; the rules are in the guest's `logic.rs`).
//!
//! [`Aggregation`] owns the guest's instance and, per partition, the [`Snapshot`] of its state
//! after the last batch: the bytes the guest exported and the offset after the last message of
//! that partition the batch held. The snapshots serve twice:
//! - a fault discards the instance, and with it every partition's state: the fresh instance gets
//!   the snapshots back, and the batch is retried tick by tick, so that only the poison tick fails
//!   and no tick is counted twice;
//! - the pipeline checkpoints them ([`Checkpoint`]) and commits a partition only at an offset
//!   whose snapshot is stored, so a restarted host resumes state and offsets together.

use crate::config::error::{ConfigError, invalid};
use crate::position::{Offset, Offsets, Partition};
use crate::runtime::bindings::aggregate as wit;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{AggregateStage, GuestComponent, GuestFault, StageInstance, convert};
use base64::Engine;
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

/// One partition's state after the messages before `next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub next_offset: i64,
    pub state: Vec<u8>,
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
    instance: StageInstance<AggregateStage>,
    snapshots: HashMap<i32, Snapshot>,
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
            instance: StageInstance::new(sandbox.clone(), component),
            sandbox,
            snapshots: HashMap::new(),
            last: None,
        }
    }

    /// A new version with the same configuration and no state yet.
    fn successor(&self, component: Arc<GuestComponent>) -> Self {
        Self {
            config: self.config,
            instance: StageInstance::new(self.sandbox.clone(), component),
            sandbox: self.sandbox.clone(),
            snapshots: HashMap::new(),
            last: None,
        }
    }

    /// Hands every partition's state to `candidate`, which imports what this version exported.
    /// Returns the new aggregation and the partitions whose state it could not read, with why
    /// (those start empty in it, at the same offsets).
    pub fn hand_over(&self, candidate: Arc<GuestComponent>) -> (Self, Vec<(i32, String)>) {
        let mut next = self.successor(candidate);
        let mut refused = Vec::new();
        let mut partitions: Vec<&i32> = self.snapshots.keys().collect();
        partitions.sort_unstable();
        for &partition in partitions {
            let snapshot = self.snapshots[&partition].clone();
            let next_offset = snapshot.next_offset;
            if let Err(why) = next.restore(partition, snapshot) {
                refused.push((partition, why));
                next.snapshots.insert(
                    partition,
                    Snapshot {
                        next_offset,
                        state: Vec::new(),
                    },
                );
            }
        }
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
                a.instance
                    .import_state(*partition, state)
                    .map_err(|f| f.to_string())?
                    .map_err(|why| format!("partition {partition}: {why}"))?;
            }
            let out = a
                .instance
                .aggregate(&self.config, &last.input)
                .map_err(|f| f.to_string())?;
            Ok(Aggregated {
                late: out.late.iter().map(|&i| i as usize).collect(),
                faulted: Vec::new(),
                bars: out.bars,
            })
        };
        let before = run(self.instance.component().clone())
            .map_err(|e| format!("the current version, replayed: {e}"))?;
        let after = run(candidate.clone())?;
        Ok(Some(BarsShadow::compare(
            last.input.timestamp_us.len(),
            &before,
            &after,
        )))
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        self.instance.component()
    }

    /// Calls that faulted so far.
    pub fn faults(&self) -> u64 {
        self.instance.faults()
    }

    /// Partitions with a state here.
    pub fn partitions(&self) -> usize {
        self.snapshots.len()
    }

    /// The snapshot of `partition` after the last batch (none before its first).
    pub fn snapshot(&self, partition: i32) -> Option<&Snapshot> {
        self.snapshots.get(&partition)
    }

    /// Whether `partition`'s state already holds the message at `offset`: a message delivered
    /// again (the consumer reset to an older offset than the state's, a replay) is not counted
    /// twice.
    pub fn covers(&self, partition: i32, offset: i64) -> bool {
        self.snapshots
            .get(&partition)
            .is_some_and(|s| offset < s.next_offset)
    }

    /// Gives the guest a partition's state (a checkpoint, on assignment).
    pub fn restore(&mut self, partition: i32, snapshot: Snapshot) -> Result<(), String> {
        match self.instance.import_state(partition, &snapshot.state) {
            Ok(Ok(())) => {
                self.snapshots.insert(partition, snapshot);
                Ok(())
            }
            Ok(Err(why)) => Err(why),
            Err(fault) => {
                self.reinstate();
                Err(format!("the guest faulted importing the state: {fault}"))
            }
        }
    }

    /// Forgets a partition this host let go of.
    pub fn forget(&mut self, partition: i32) {
        self.snapshots.remove(&partition);
        if let Err(fault) = self.instance.drop_state(partition) {
            tracing::warn!(partition, %fault, "the aggregate guest faulted dropping a partition's state; restoring the others");
            self.reinstate();
        }
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
            match self.instance.aggregate(&self.config, &input) {
                Ok(answer) => {
                    out.late = answer.late.iter().map(|&i| i as usize).collect();
                    out.bars = answer.bars;
                    // The states the batch started from move into `last` as the new ones come.
                    for partition in touched {
                        before.push((partition, self.export(partition).unwrap_or_default()));
                    }
                }
                Err(fault) => {
                    tracing::warn!(ticks = n, %fault, "the aggregate guest faulted on a batch; restoring its state and retrying tick by tick");
                    for &p in &touched {
                        let state = self.snapshots.get(&p).map(|s| s.state.clone());
                        before.push((p, state.unwrap_or_default()));
                    }
                    self.reinstate();
                    for i in 0..n {
                        self.process_one(&input, i, &mut out);
                    }
                }
            }
            self.last = Some(LastBatch { before, input });
        }
        for (&Partition(partition), &Offset(next_offset)) in consumed {
            match self.snapshots.get_mut(&partition) {
                Some(s) => s.next_offset = next_offset,
                None => {
                    // A partition whose ticks were all refused so far: its state is empty.
                    self.export(partition);
                    if let Some(s) = self.snapshots.get_mut(&partition) {
                        s.next_offset = next_offset;
                    }
                }
            }
        }
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
        match self.instance.aggregate(&self.config, &one) {
            Ok(answer) => {
                if !answer.late.is_empty() {
                    out.late.push(i);
                }
                // Its bars indexed a batch of one: tick i of this one.
                out.bars.append(answer.bars, i as u32);
                self.export(input.partition[i]);
            }
            Err(fault) => {
                out.faulted.push((i, fault));
                self.reinstate();
            }
        }
    }

    /// Takes the guest's state of `partition` into its snapshot (the offset is set by the
    /// caller); returns the state it replaced.
    fn export(&mut self, partition: i32) -> Option<Vec<u8>> {
        match self.instance.export_state(partition) {
            Ok(state) => {
                let next_offset = self.snapshots.get(&partition).map_or(0, |s| s.next_offset);
                self.snapshots
                    .insert(partition, Snapshot { next_offset, state })
                    .map(|old| old.state)
            }
            Err(fault) => {
                tracing::error!(partition, %fault, "the aggregate guest faulted exporting its state; going on from the last snapshot");
                self.reinstate();
                self.snapshots.get(&partition).map(|s| s.state.clone())
            }
        }
    }

    /// The last batch's input.
    pub fn last_input(&self) -> Option<&wit::AggregateInput> {
        self.last.as_ref().map(|l| &l.input)
    }

    /// After a fault (the instance is gone): every partition's last snapshot into the fresh one.
    fn reinstate(&mut self) {
        let mut partitions: Vec<i32> = self.snapshots.keys().copied().collect();
        partitions.sort_unstable();
        for partition in partitions {
            let state = &self.snapshots[&partition].state;
            match self.instance.import_state(partition, state) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    tracing::error!(partition, %why, "the aggregate guest refused its own snapshot; the partition starts empty");
                    self.snapshots.remove(&partition);
                }
                Err(fault) => {
                    tracing::error!(partition, %fault, "the aggregate guest faulted importing its snapshot; the partition starts empty");
                    self.snapshots.remove(&partition);
                }
            }
        }
    }
}

/// The stored checkpoint of one partition: its newest snapshots, newest last. More than one is
/// kept because offsets reach the group's commit asynchronously (auto-commit, every second): the
/// committed offset may trail the newest snapshot, and a restarted host needs the snapshot at
/// exactly the committed offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: u32,
    pub topic: String,
    pub partition: i32,
    /// The guest version that exported the newest snapshot.
    pub guest_version: String,
    pub snapshots: Vec<StoredSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSnapshot {
    pub next_offset: i64,
    /// The guest's bytes, base64.
    pub state: String,
}

impl Checkpoint {
    pub const FORMAT: u32 = 1;
    /// Snapshots kept per partition: at one a second, 16 s of commit lag.
    pub const KEEP: usize = 16;

    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            format: Self::FORMAT,
            topic: topic.into(),
            partition,
            guest_version: String::new(),
            snapshots: Vec::new(),
        }
    }

    /// Where the checkpoints of `topic`'s partitions live in the lake store.
    pub fn prefix(topic: &str) -> String {
        crate::sink::layout::state_prefix("aggregate", topic)
    }

    /// Where a partition's checkpoint lives in the lake store.
    pub fn object_name(topic: &str, partition: i32) -> String {
        crate::sink::layout::state_object("aggregate", topic, partition)
    }

    /// Adds a snapshot (a newer offset than any kept, or the newest's again); keeps the newest
    /// [`Checkpoint::KEEP`]. False when it is not newer (nothing changed).
    pub fn push(&mut self, guest_version: &str, snapshot: &Snapshot) -> bool {
        if let Some(last) = self.snapshots.last_mut() {
            if snapshot.next_offset < last.next_offset {
                return false;
            }
            if snapshot.next_offset == last.next_offset {
                // Same offset: the same ticks, so the same state (a restore, a re-save).
                return false;
            }
        }
        self.guest_version = guest_version.into();
        self.snapshots.push(StoredSnapshot {
            next_offset: snapshot.next_offset,
            state: base64::engine::general_purpose::STANDARD.encode(&snapshot.state),
        });
        if self.snapshots.len() > Self::KEEP {
            let extra = self.snapshots.len() - Self::KEEP;
            self.snapshots.drain(..extra);
        }
        true
    }

    /// The snapshot at exactly `offset`, decoded.
    pub fn at(&self, offset: i64) -> Result<Option<Snapshot>, String> {
        let Some(s) = self.snapshots.iter().find(|s| s.next_offset == offset) else {
            return Ok(None);
        };
        let state = base64::engine::general_purpose::STANDARD
            .decode(&s.state)
            .map_err(|e| format!("snapshot at offset {offset} is not base64: {e}"))?;
        Ok(Some(Snapshot {
            next_offset: offset,
            state,
        }))
    }

    /// The offsets of the kept snapshots, oldest first.
    pub fn offsets(&self) -> Vec<i64> {
        self.snapshots.iter().map(|s| s.next_offset).collect()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.format != Self::FORMAT {
            return Err(format!(
                "checkpoint format {}; this host reads format {}",
                c.format,
                Self::FORMAT
            ));
        }
        Ok(c)
    }
}

/// How far a partition may be committed: the newest stored snapshot at or before `position` (the
/// commit tracker's), none when no stored snapshot is that old. Committing past the stored state
/// would let a restarted host resume offsets its state does not include.
pub fn commit_cap(stored: &[i64], position: i64) -> Option<i64> {
    stored.iter().copied().filter(|&s| s <= position).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(next_offset: i64, byte: u8) -> Snapshot {
        Snapshot {
            next_offset,
            state: vec![byte; 3],
        }
    }

    #[test]
    fn a_checkpoint_keeps_the_newest_snapshots_and_finds_one_by_offset() {
        let mut c = Checkpoint::new("t", 2);
        assert!(c.push("v1", &snap(10, 1)));
        assert!(!c.push("v1", &snap(10, 9)), "same offset: kept as it was");
        assert!(!c.push("v1", &snap(5, 9)), "older: refused");
        for i in 0..20 {
            assert!(c.push("v2", &snap(20 + i, i as u8)));
        }
        assert_eq!(c.snapshots.len(), Checkpoint::KEEP);
        assert_eq!(
            c.offsets().first(),
            Some(&(20 + 20 - Checkpoint::KEEP as i64))
        );
        assert_eq!(c.guest_version, "v2");
        let round = Checkpoint::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        assert_eq!(round.at(39).unwrap(), Some(snap(39, 19)));
        assert_eq!(round.at(10).unwrap(), None, "dropped as too old");
        let mut newer = serde_json::to_value(&c).unwrap();
        newer["format"] = 2.into();
        let e = Checkpoint::parse(&serde_json::to_vec(&newer).unwrap()).unwrap_err();
        assert!(e.contains("format 2"), "{e}");
    }

    #[test]
    fn commits_stop_at_the_newest_stored_snapshot() {
        assert_eq!(commit_cap(&[], 100), None);
        assert_eq!(commit_cap(&[10, 50, 90], 100), Some(90));
        assert_eq!(commit_cap(&[10, 50, 90], 89), Some(50));
        assert_eq!(commit_cap(&[10, 50, 90], 90), Some(90));
        assert_eq!(commit_cap(&[10], 9), None);
    }

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
