//! The aggregate stage in the run loop: the accepted ticks of a batch into the guest, its closed
//! bars to Elasticsearch (`stock-bars`) and the lake (`stock-bars/dt=…/hour=…`), its late ticks to
//! the dead-letter topic, and its state into checkpoints that the commits wait for.
//!
//! Exactly once, the same way the ticks are: every output of a bar is tracked against the offset
//! of the message that closed it, so that offset is committed only once the bar is stored. A
//! partition's offsets are committed only as far as a stored checkpoint of its state
//! ([`commit_cap`]); a host that takes the partition over (after a crash, a rebalance) restores
//! the state at exactly the committed offset and closes the same bars again: Elasticsearch
//! overwrites them (their id is `<instrument>-<start µs>`), the lake skips what it holds.
//!
//! Lake lines of bars are placed by *position*, `offset × 2^20 + k` (k: the bar's place among
//! those its message closed; [`LakePosition::bar`]), not by offset: one message may close bars of
//! several hours, and with a position of its own each bar is stored exactly once even when its
//! message's bars land in two objects.

use super::decode::Decoded;
use crate::chain::aggregate::{AggregateSection, Aggregation, Checkpoint, commit_cap};
use crate::chain::swap::{GuestRegistry, Swap, SwapEvent};
use crate::chain::{Refusal, RefusalStage, StageOutcome};
use crate::position::{LakePosition, Offset, Offsets, Partition};
use crate::runtime::convert;
use crate::sink::PartitionLifecycle;
use crate::sink::store::LakeStore;
use crate::source::group::Consumed;
use crate::telemetry::Telemetry;
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockpipe_model::Fields;
use stockpipe_model::aggregate::BarColumns;
use stockpipe_model::time::{Civil, format_rfc3339_micros};

/// The aggregate stage's part of the pipeline.
pub(super) struct Bars {
    aggregation: Aggregation,
    section: AggregateSection,
    index: Arc<str>,
    /// Per partition: the checkpoint as last stored (or read at assignment).
    checkpoints: HashMap<i32, Checkpoint>,
    /// How far the stored checkpoints let each partition be committed.
    limits: CheckpointLimits,
    /// One round of checkpoint stores at a time, so two stores of one object never race.
    saving: Option<tokio::task::JoinHandle<Vec<SavedCheckpoint>>>,
    saved_at: Option<Instant>,
    /// Partitions assigned since the last batch, with their committed offsets (or why they
    /// could not be read): their state is restored before their first tick.
    to_restore: Vec<(i32, Result<Option<i64>, String>)>,
}

/// How far the aggregate stage lets each partition be committed: to the newest stored checkpoint
/// of its state at or before the position every sink acknowledged ([`commit_cap`]), never
/// further — a host that takes the partition over restores the state at exactly the committed
/// offset. Pure bookkeeping: the stage tells it what is stored and what the sinks acknowledged.
#[derive(Debug, Default)]
struct CheckpointLimits {
    /// Per partition: the offsets of the snapshots stored.
    stored: HashMap<i32, Vec<i64>>,
    /// Per partition: the position every sink acknowledged, and the limit last handed on.
    wanted: HashMap<i32, i64>,
    handed: HashMap<i32, i64>,
}

impl CheckpointLimits {
    /// `partition`'s stored checkpoint now holds snapshots at `offsets`.
    fn stored(&mut self, partition: i32, offsets: Vec<i64>) {
        self.stored.insert(partition, offsets);
    }

    fn limit(&self, partition: i32, position: i64) -> Option<i64> {
        commit_cap(
            self.stored.get(&partition).map_or(&[][..], Vec::as_slice),
            position,
        )
    }

    /// The positions that `advanced` (and the checkpoints stored since) let move: each partition's
    /// limit, when it differs from the one last handed on.
    fn advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        self.wanted.extend(advanced);
        let mut due = Vec::new();
        for (&partition, &position) in &self.wanted {
            if let Some(at) = self.limit(partition, position)
                && self.handed.get(&partition) != Some(&at)
            {
                self.handed.insert(partition, at);
                due.push((partition, at));
            }
        }
        due.sort_unstable();
        due
    }

    fn forget(&mut self, partition: i32) {
        self.stored.remove(&partition);
        self.wanted.remove(&partition);
        self.handed.remove(&partition);
    }
}

struct SavedCheckpoint {
    partition: i32,
    checkpoint: Checkpoint,
    stored: Result<(), crate::sink::store::StoreError>,
}

/// A bar the guest closed: its document, placed in the lake at `position` (see
/// [`LakePosition::bar`]), tracked against the message at `message` of the batch.
pub(super) struct ClosedBar {
    pub(super) message: usize,
    pub(super) id: String,
    pub(super) document: Vec<u8>,
    pub(super) lake_partition: String,
    pub(super) position: LakePosition,
    /// The bar's start (its time field, `bar_start`).
    pub(super) start_us: i64,
}

/// What a batch's aggregation leaves for the sinks: the ticks it refused (by their place in the
/// batch), the bars it closed, and the index bars go to.
#[derive(Default)]
pub(super) struct BarsOut {
    pub(super) refused: Vec<(usize, Refusal)>,
    pub(super) bars: Vec<ClosedBar>,
    pub(super) index: Arc<str>,
}

impl Bars {
    pub(super) fn new(aggregation: Aggregation, section: AggregateSection) -> Self {
        Self {
            index: Arc::from(section.index.as_str()),
            aggregation,
            section,
            checkpoints: HashMap::new(),
            limits: CheckpointLimits::default(),
            saving: None,
            saved_at: None,
            to_restore: Vec::new(),
        }
    }
}

impl PartitionLifecycle for Bars {
    fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        self.to_restore.push((partition, committed.clone()));
    }

    /// Where `partition` may be committed, given the tracker's `position`: no further than its
    /// newest stored checkpoint.
    fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        self.limits.limit(partition, position)
    }

    /// The tracker's new positions, capped at stored checkpoints: the ones to store now.
    fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        self.limits.advanced(advanced)
    }

    /// Forgets a partition let go of: its state and checkpoint bookkeeping.
    fn forget(&mut self, partition: i32) -> usize {
        self.aggregation.forget(partition);
        self.checkpoints.remove(&partition);
        self.limits.forget(partition);
        self.to_restore.retain(|(p, _)| *p != partition);
        0
    }
}

/// A closed bar's document, as the index and the lake hold it.
#[derive(Serialize)]
struct BarDocument<'a> {
    bar_id: &'a str,
    instrument_token: u64,
    bar_start: String,
    bar_end: String,
    bar_seconds: u32,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    traded_quantity: i64,
    tick_count: u32,
    /// NaN (no quantity traded; no previous bar; fewer than two returns) is written as null.
    vwap: f64,
    last_mid_price: f64,
    last_spread: f64,
    log_return: f64,
    volatility: f64,
    source: BarSource<'a>,
    guest_version: &'a str,
}

#[derive(Serialize)]
struct BarSource<'a> {
    topic: &'a str,
    partition: i32,
    /// The message whose timestamp moved the watermark past the bar's end.
    closed_by_offset: i64,
}

/// `<instrument>-<start µs>`: the bar's `_id`, the same however often it is closed again.
pub fn bar_id(instrument_token: u64, start_us: i64) -> String {
    format!("{instrument_token}-{start_us}")
}

fn bar_document(
    bars: &BarColumns,
    i: usize,
    bar_seconds: u32,
    topic: &str,
    closed_by_offset: i64,
    guest_version: &str,
) -> (String, Vec<u8>) {
    let start = bars.start_us[i];
    let id = bar_id(bars.instrument_token[i], start);
    let document = BarDocument {
        bar_id: &id,
        instrument_token: bars.instrument_token[i],
        bar_start: format_rfc3339_micros(start),
        bar_end: format_rfc3339_micros(start + i64::from(bar_seconds) * 1_000_000),
        bar_seconds,
        open: bars.open[i],
        high: bars.high[i],
        low: bars.low[i],
        close: bars.close[i],
        traded_quantity: bars.traded_quantity[i],
        tick_count: bars.tick_count[i],
        vwap: bars.vwap[i],
        last_mid_price: bars.last_mid_price[i],
        last_spread: bars.last_spread[i],
        log_return: bars.log_return[i],
        volatility: bars.volatility[i],
        source: BarSource {
            topic,
            partition: bars.partition[i],
            closed_by_offset,
        },
        guest_version,
    };
    let bytes = serde_json::to_vec(&document).expect("a bar serializes");
    (id, bytes)
}

/// A new version of the aggregate guest, between two batches: every partition's state handed
/// to it, and the last batch replayed through both versions. Refused (the current version keeps
/// serving) when it cannot read the state or faults, unless forced: then the partitions it could
/// not read start empty, and the event and the log say which.
pub(super) fn swap(bars: &mut Option<Bars>, swap: Swap, registry: &GuestRegistry) {
    let started = Instant::now();
    let to = swap.component.version.clone();
    let event = |outcome, from: String, reason, bars_shadow| SwapEvent {
        at: crate::clock::unix_now_secs_f64(),
        stage: "aggregate",
        outcome,
        from_version: from,
        to_version: Some(to.clone()),
        trigger: swap.trigger.clone(),
        reason,
        shadow: None,
        decision_ms: started.elapsed().as_secs_f64() * 1e3,
        diff_report: swap.diff_report.clone(),
        bars_shadow,
    };
    let decided = match bars {
        None => event(
            "refused",
            String::new(),
            "the aggregate stage is not running here ([aggregate] enabled = false)".into(),
            None,
        ),
        Some(bars) => {
            let from = bars.aggregation.component().version.clone();
            let shadow = bars.aggregation.shadow(&swap.component);
            let (next, unread) = bars.aggregation.hand_over(swap.component.clone());
            let problem = if !unread.is_empty() {
                let list: Vec<String> = unread
                    .iter()
                    .map(|(p, why)| format!("partition {p}: {why}"))
                    .collect();
                Some(format!(
                    "version {to} cannot read the state version {from} exported ({})",
                    list.join("; ")
                ))
            } else {
                shadow.as_ref().err().map(|e| format!("shadow run: {e}"))
            };
            let bars_shadow = shadow.ok().flatten();
            match problem {
                Some(why) if !swap.force => event("refused", from, why, bars_shadow),
                problem => {
                    let handed = bars.aggregation.partitions() - unread.len();
                    let mut reason = format!(
                        "the state of {handed} partitions handed over; {}",
                        match &bars_shadow {
                            Some(s) => format!(
                                "shadow run of the last batch ({} ticks): {} of {} bars differ",
                                s.ticks, s.bars_differing, s.bars_before
                            ),
                            None => "no batch yet for a shadow run".into(),
                        }
                    );
                    if let Some(why) = problem {
                        let empty: Vec<i32> = unread.iter().map(|(p, _)| *p).collect();
                        tracing::warn!(partitions = ?empty, %why, "aggregate swap forced: these partitions start with an empty state");
                        reason = format!(
                            "forced despite: {why}; partitions {empty:?} start with an empty state"
                        );
                    }
                    bars.aggregation = next;
                    registry.set_aggregate(&swap.component);
                    event("swapped", from, reason, bars_shadow)
                }
            }
        }
    };
    registry.record(decided.clone());
    if let Some(tell) = swap.decided {
        let _ = tell.try_send(decided);
    }
}

impl Bars {
    /// Restores the state of partitions assigned since the last batch, from their checkpoints
    /// at exactly their committed offsets. A partition committed before without a checkpoint at
    /// that offset starts empty, and the host says so (its first bars may be partial).
    pub(super) async fn restore(&mut self, store: &LakeStore, topic: &str) -> anyhow::Result<()> {
        if self.to_restore.is_empty() {
            return Ok(());
        }
        let listed = store
            .list(&Checkpoint::prefix(topic))
            .await
            .context("listing the aggregate checkpoints")?;
        for (partition, committed) in std::mem::take(&mut self.to_restore) {
            let name = Checkpoint::object_name(topic, partition);
            let checkpoint = match listed.contains(&name) {
                true => Some(read_checkpoint(store, &name).await?),
                false => None,
            };
            let committed = committed.map_err(|e| anyhow::anyhow!(
                "partition {partition}'s committed offset could not be read, so its aggregate state cannot be restored: {e}"
            ))?;
            let Some(committed) = committed else {
                tracing::info!(
                    partition,
                    "aggregate: a partition never committed starts with an empty state"
                );
                continue;
            };
            self.restore_at(partition, committed, checkpoint.as_ref(), &name)?;
            if let Some(c) = checkpoint {
                self.limits.stored(partition, c.offsets());
                self.checkpoints.insert(partition, c);
            }
        }
        Ok(())
    }

    /// Restores `partition`'s state as `checkpoint` (named `name`) holds it at `committed`.
    fn restore_at(
        &mut self,
        partition: i32,
        committed: i64,
        checkpoint: Option<&Checkpoint>,
        name: &str,
    ) -> anyhow::Result<()> {
        let snapshot = match checkpoint {
            Some(c) => c
                .at(committed)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("reading the aggregate checkpoint {name}"))?,
            None => None,
        };
        let Some(snapshot) = snapshot else {
            tracing::warn!(
                partition,
                committed,
                checkpoint = %name,
                kept = ?checkpoint.map(Checkpoint::offsets),
                "aggregate: no checkpoint of the state at the committed offset; the partition starts with an empty state (each instrument's first bar may be partial)"
            );
            return Ok(());
        };
        let exported_by = checkpoint.map(|c| c.guest_version.clone());
        self.aggregation
            .restore(partition, snapshot)
            .map_err(|why| anyhow::anyhow!(
                "the aggregate guest {} cannot read partition {partition}'s state (exported by {}): {why}",
                self.aggregation.component().version,
                exported_by.unwrap_or_default()
            ))?;
        tracing::info!(
            partition,
            offset = committed,
            "aggregate: state restored from its checkpoint"
        );
        Ok(())
    }

    /// Runs the batch's accepted ticks through the aggregate guest: the ticks it refused (late,
    /// or faulted) and the bars it closed, each by its message's place in the batch.
    pub(super) fn aggregate(
        &mut self,
        batch: &[Consumed],
        decoded: &Decoded,
        outcomes: &[StageOutcome],
        telemetry: &Telemetry,
    ) -> anyhow::Result<BarsOut> {
        let (input, messages, consumed) = self.input(batch, decoded, outcomes);
        let aggregation = &mut self.aggregation;
        let result = tokio::task::block_in_place(|| aggregation.process(input, &consumed));
        let empty = convert::empty_aggregate_input();
        // What the guest was given (kept for a candidate's shadow run).
        let input = match messages.is_empty() {
            true => &empty,
            false => self.aggregation.last_input().unwrap_or(&empty),
        };
        let version = self.aggregation.component().version.clone();
        let lateness_ms = self.section.allowed_lateness_ms;
        let late = result.late.iter().map(|&i| {
            (
                messages[i],
                Refusal {
                    stage: RefusalStage::Aggregate,
                    code: "late".into(),
                    message: format!(
                        "timestamp {} is older than partition {}'s watermark (its newest timestamp minus the allowed lateness of {lateness_ms} ms): counted in no bar",
                        format_rfc3339_micros(input.timestamp_us[i]),
                        input.partition[i]
                    ),
                    guest_version: Some(version.clone()),
                },
            )
        });
        let faulted = result.faulted.into_iter().map(|(i, fault)| {
            let refusal = Refusal {
                stage: RefusalStage::Aggregate,
                code: fault.code.as_str().into(),
                message: fault.message,
                guest_version: Some(version.clone()),
            };
            (messages[i], refusal)
        });
        let refused = late.chain(faulted).collect();
        let closed = &result.bars;
        let bars = self.closed(batch, &messages, closed, &version)?;
        telemetry.bars_closed((0..closed.len()).map(|j| {
            let candle = [
                closed.start_us[j] as f64 / 1e6,
                closed.open[j],
                closed.high[j],
                closed.low[j],
                closed.close[j],
                closed.traded_quantity[j] as f64,
            ];
            (closed.instrument_token[j], candle)
        }));
        Ok(BarsOut {
            refused,
            bars,
            index: self.index.clone(),
        })
    }

    /// The guest's input: the accepted ticks of messages its state does not hold yet, the place
    /// in the batch of each one's message, and per partition the offset after the last message.
    fn input(
        &self,
        batch: &[Consumed],
        decoded: &Decoded,
        outcomes: &[StageOutcome],
    ) -> (
        crate::runtime::bindings::aggregate::AggregateInput,
        Vec<usize>,
        Offsets,
    ) {
        let ticks = &decoded.ticks;
        let mut input = convert::empty_aggregate_input();
        let mut messages = Vec::new();
        let mut consumed: Offsets = BTreeMap::new();
        let mut again = 0_u64;
        // A message's ticks are consecutive slots: it is checked once, at its first.
        let (mut current, mut held) = (None, false);
        for slot in &decoded.slots {
            let m = slot.message;
            let message = &batch[m];
            let source = &message.source;
            if current != Some(m) {
                current = Some(m);
                held = self.aggregation.covers(source.partition, source.offset);
                if held {
                    again += 1;
                } else {
                    let next = consumed.entry(Partition(source.partition)).or_default();
                    *next = (*next).max(Offset(source.offset).next());
                }
            }
            if held {
                continue;
            }
            let Ok(i) = &slot.result else { continue };
            let StageOutcome::Accepted { enrichment, .. } = &outcomes[*i] else {
                continue;
            };
            input.partition.push(message.source.partition);
            input.timestamp_us.push(ticks.timestamp_us[*i]);
            input.instrument_token.push(ticks.instrument_token[*i]);
            input.last_price.push(ticks.last_price[*i]);
            // The contract's -1 and NaN: no volume (an index), no book.
            let has_volume = Fields(ticks.present[*i]).has(Fields::VOLUME);
            input
                .volume
                .push(if has_volume { ticks.volume[*i] } else { -1 });
            input.mid_price.push(enrichment.mid_price);
            input.spread.push(enrichment.spread.unwrap_or(f64::NAN));
            messages.push(m);
        }
        if again > 0 {
            tracing::debug!(
                messages = again,
                "aggregate: messages its state already holds (delivered again) are not counted twice"
            );
        }
        (input, messages, consumed)
    }

    /// The closed bars' documents, each placed in the lake by its message and its place among
    /// the bars that message closed.
    fn closed(
        &self,
        batch: &[Consumed],
        messages: &[usize],
        closed: &BarColumns,
        version: &str,
    ) -> anyhow::Result<Vec<ClosedBar>> {
        let mut place: HashMap<usize, i64> = HashMap::new();
        let mut bars = Vec::with_capacity(closed.len());
        for j in 0..closed.len() {
            let m = messages[closed.closed_by[j] as usize];
            let source = &batch[m].source;
            let (id, document) = bar_document(
                closed,
                j,
                self.section.bar_seconds,
                &source.topic,
                source.offset,
                version,
            );
            let k = place.entry(m).or_insert(0);
            let position =
                LakePosition::bar(Partition(source.partition), Offset(source.offset), *k)?;
            *k += 1;
            bars.push(ClosedBar {
                message: m,
                id,
                document,
                lake_partition: Civil::from_micros(closed.start_us[j]).lake_partition(),
                position,
                start_us: closed.start_us[j],
            });
        }
        Ok(bars)
    }

    /// Stores the snapshots that moved since the last checkpoint (every `checkpoint_ms`, or
    /// now with `all`, waiting for them), and takes in the stores that landed.
    pub(super) async fn save(
        &mut self,
        all: bool,
        store: &Arc<LakeStore>,
        topic: &str,
        partitions: impl Iterator<Item = i32>,
    ) -> anyhow::Result<()> {
        let bars = self;
        if let Some(saving) = &mut bars.saving
            && (all || saving.is_finished())
        {
            let done = saving.await.context("a checkpoint store panicked")?;
            bars.saving = None;
            for saved in done {
                saved.stored.with_context(|| {
                    format!(
                        "storing the aggregate checkpoint of partition {}",
                        saved.partition
                    )
                })?;
                bars.limits
                    .stored(saved.partition, saved.checkpoint.offsets());
                bars.checkpoints.insert(saved.partition, saved.checkpoint);
            }
        }
        let due = bars
            .saved_at
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(bars.section.checkpoint_ms));
        if bars.saving.is_some() || !(all || due) {
            return Ok(());
        }
        let version = bars.aggregation.component().version.clone();
        let mut round = Vec::new();
        let mut partitions: Vec<i32> = partitions.collect();
        partitions.sort_unstable();
        for &partition in &partitions {
            let Some(snapshot) = bars.aggregation.snapshot(partition) else {
                continue;
            };
            let mut checkpoint = bars
                .checkpoints
                .get(&partition)
                .cloned()
                .unwrap_or_else(|| Checkpoint::new(topic, partition));
            if checkpoint.push(&version, snapshot) {
                round.push((partition, checkpoint));
            }
        }
        bars.saved_at = Some(Instant::now());
        if round.is_empty() {
            return Ok(());
        }
        let (task_store, task_topic) = (store.clone(), topic.to_string());
        bars.saving = Some(tokio::spawn(async move {
            let (store, topic) = (task_store, task_topic);
            let mut done = Vec::with_capacity(round.len());
            for (partition, checkpoint) in round {
                let bytes = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
                let stored = store
                    .put(&Checkpoint::object_name(&topic, partition), bytes)
                    .await;
                done.push(SavedCheckpoint {
                    partition,
                    checkpoint,
                    stored,
                });
            }
            done
        }));
        if all {
            // Wait for this round too.
            Box::pin(bars.save(true, store, topic, partitions.into_iter())).await?;
        }
        Ok(())
    }
}

/// Reads and parses the aggregate checkpoint `name`.
async fn read_checkpoint(store: &LakeStore, name: &str) -> anyhow::Result<Checkpoint> {
    let bytes = store
        .get(name)
        .await
        .with_context(|| format!("reading the aggregate checkpoint {name}"))?;
    Checkpoint::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the aggregate checkpoint {name}"))
}

#[cfg(test)]
mod tests {
    use super::CheckpointLimits;

    #[test]
    fn nothing_is_committed_before_a_checkpoint_of_the_state_is_stored() {
        let mut limits = CheckpointLimits::default();
        assert_eq!(limits.advanced(vec![(0, 40)]), vec![]);
        assert_eq!(limits.limit(0, 40), None);
        // The checkpoint lands: the acknowledged position moves as far as it.
        limits.stored(0, vec![25]);
        assert_eq!(limits.advanced(vec![]), vec![(0, 25)]);
    }

    #[test]
    fn a_position_is_held_at_the_newest_checkpoint_at_or_before_it() {
        let mut limits = CheckpointLimits::default();
        limits.stored(1, vec![10, 30, 50]);
        assert_eq!(limits.limit(1, 49), Some(30));
        assert_eq!(limits.limit(1, 50), Some(50));
        assert_eq!(limits.limit(1, 9), None, "older than every checkpoint kept");
    }

    #[test]
    fn a_limit_is_handed_on_once() {
        let mut limits = CheckpointLimits::default();
        limits.stored(0, vec![5]);
        limits.stored(2, vec![7]);
        assert_eq!(limits.advanced(vec![(0, 6), (2, 9)]), vec![(0, 5), (2, 7)]);
        // The sinks moved on, but no newer checkpoint is stored: nothing new to store.
        assert_eq!(limits.advanced(vec![(0, 8)]), vec![]);
        limits.stored(0, vec![5, 8]);
        assert_eq!(limits.advanced(vec![]), vec![(0, 8)]);
    }

    #[test]
    fn a_forgotten_partition_starts_over() {
        let mut limits = CheckpointLimits::default();
        limits.stored(3, vec![4]);
        assert_eq!(limits.advanced(vec![(3, 4)]), vec![(3, 4)]);
        limits.forget(3);
        assert_eq!(limits.limit(3, 4), None);
        // Taken again with the same checkpoint: its limit is handed on again (the new owner's
        // position must be stored anew).
        limits.stored(3, vec![4]);
        assert_eq!(limits.advanced(vec![(3, 4)]), vec![(3, 4)]);
    }
}
