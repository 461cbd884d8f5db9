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
//! those its message closed), not by offset: one message may close bars of several hours, and
//! with a position of its own each bar is stored exactly once even when its message's bars land
//! in two objects.

use super::dispatch::Pending;
use super::{Consumed, Pipeline};
use crate::chain::aggregate::{AggregateSection, Aggregation, Checkpoint, commit_cap};
use crate::chain::swap::{Swap, SwapEvent};
use crate::chain::{Refusal, StageOutcome};
use crate::runtime::convert;
use crate::sink::elasticsearch::BulkItem;
use crate::sink::kafka as kafka_sink;
use crate::sink::lake::{Appended, LakeConfig, LakeWriter, RolledSegment};
use crate::sink::store::LakeStore;
use anyhow::Context;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockpipe_guest_aggregate::logic::BarColumns;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::json::DecodeError;
use stockpipe_model::time::{Civil, format_rfc3339_micros};

/// Bits of a bar's lake position below its message's offset.
pub const POSITION_BITS: u32 = 20;

/// The aggregate stage's part of the pipeline.
pub(super) struct Bars {
    pub(super) aggregation: Aggregation,
    section: AggregateSection,
    index: Arc<str>,
    lake: LakeWriter,
    /// Per partition: the checkpoint as last stored (or read at assignment).
    checkpoints: HashMap<i32, Checkpoint>,
    /// Per partition: the offsets of the snapshots stored; commits stop at them.
    stored: HashMap<i32, Vec<i64>>,
    /// One round of checkpoint stores at a time, so two stores of one object never race.
    saving: Option<tokio::task::JoinHandle<Vec<SavedCheckpoint>>>,
    saved_at: Option<Instant>,
    /// Partitions assigned since the last batch, with their committed offsets (or why they
    /// could not be read): their state is restored before their first tick.
    to_restore: Vec<(i32, Result<Option<i64>, String>)>,
    /// Per partition: the commit tracker's position, and the position last handed on.
    wanted: HashMap<i32, i64>,
    handed: HashMap<i32, i64>,
}

struct SavedCheckpoint {
    partition: i32,
    checkpoint: Checkpoint,
    stored: Result<(), crate::sink::store::StoreError>,
}

/// What a batch's aggregation leaves for the loop: dead letters to await, lake segments to
/// store, bars to index.
#[derive(Default)]
pub(super) struct BarsOut {
    pub(super) pending: Vec<Pending>,
    pub(super) rolled: Vec<RolledSegment>,
    pub(super) to_index: Vec<BulkItem>,
    pub(super) already_stored: u64,
}

impl Bars {
    pub(super) fn new(
        aggregation: Aggregation,
        section: AggregateSection,
        lake: LakeConfig,
    ) -> Self {
        Self {
            index: Arc::from(section.index.as_str()),
            lake: LakeWriter::new(lake, section.lake_prefix.clone()),
            aggregation,
            section,
            checkpoints: HashMap::new(),
            stored: HashMap::new(),
            saving: None,
            saved_at: None,
            to_restore: Vec::new(),
            wanted: HashMap::new(),
            handed: HashMap::new(),
        }
    }

    pub(super) fn lake_prefix(&self) -> &str {
        self.lake.topic()
    }

    pub(super) fn set_existing<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.lake.set_existing(names);
    }

    pub(super) fn assigned(&mut self, partition: i32, committed: Result<Option<i64>, String>) {
        self.to_restore.push((partition, committed));
    }

    /// Forgets a partition let go of: its state, buffered bars and checkpoint bookkeeping.
    pub(super) fn forget(&mut self, partition: i32) {
        self.aggregation.forget(partition);
        self.lake.discard(partition);
        self.checkpoints.remove(&partition);
        self.stored.remove(&partition);
        self.wanted.remove(&partition);
        self.handed.remove(&partition);
        self.to_restore.retain(|(p, _)| *p != partition);
    }

    pub(super) fn roll_due(&mut self, now: Instant) -> Vec<RolledSegment> {
        to_offsets(self.lake.roll_due(now))
    }

    pub(super) fn flush(&mut self) -> Vec<RolledSegment> {
        to_offsets(self.lake.flush())
    }

    pub(super) fn roll_partitions(&mut self, partitions: &[i32]) -> Vec<RolledSegment> {
        to_offsets(self.lake.roll_partitions(partitions))
    }

    /// The tracker's new positions, capped at stored checkpoints: the ones to store now.
    pub(super) fn cap(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        self.wanted.extend(advanced);
        let mut due = Vec::new();
        for (&partition, &position) in &self.wanted {
            let stored = self.stored.get(&partition).map_or(&[][..], Vec::as_slice);
            if let Some(at) = commit_cap(stored, position)
                && self.handed.get(&partition) != Some(&at)
            {
                self.handed.insert(partition, at);
                due.push((partition, at));
            }
        }
        due.sort_unstable();
        due
    }

    /// Where `partition` may be committed, given the tracker's `position`.
    pub(super) fn capped(&self, partition: i32, position: i64) -> Option<i64> {
        commit_cap(
            self.stored.get(&partition).map_or(&[][..], Vec::as_slice),
            position,
        )
    }
}

/// Segments of bar lines carry positions; their acknowledgements are per offset.
fn to_offsets(mut segments: Vec<RolledSegment>) -> Vec<RolledSegment> {
    for s in &mut segments {
        for o in &mut s.offsets {
            *o >>= POSITION_BITS;
        }
    }
    segments
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

impl Pipeline {
    /// A new version of the aggregate guest, between two batches: every partition's state handed
    /// to it, and the last batch replayed through both versions. Refused (the current version
    /// keeps serving) when it cannot read the state or faults, unless forced: then the partitions
    /// it could not read start empty, and the event and the log say which.
    pub(super) fn swap_aggregate(&mut self, swap: Swap) {
        let started = Instant::now();
        let to = swap.component.version.clone();
        let event = |outcome, from: String, reason, bars_shadow| SwapEvent {
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
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
        let decided = match &mut self.bars {
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
                        self.registry.set_aggregate(&swap.component);
                        event("swapped", from, reason, bars_shadow)
                    }
                }
            }
        };
        self.registry.record(decided.clone());
        if let Some(tell) = swap.decided {
            let _ = tell.try_send(decided);
        }
    }

    /// Restores the state of partitions assigned since the last batch, from their checkpoints
    /// at exactly their committed offsets. A partition committed before without a checkpoint at
    /// that offset starts empty, and the host says so (its first bars may be partial).
    pub(super) async fn restore_states(&mut self) -> anyhow::Result<()> {
        let Some(bars) = &mut self.bars else {
            return Ok(());
        };
        if bars.to_restore.is_empty() {
            return Ok(());
        }
        let topic = self.config.kafka.topic.clone();
        let listed = self
            .store
            .list(&format!("_state/aggregate/{topic}/"))
            .await
            .context("listing the aggregate checkpoints")?;
        for (partition, committed) in std::mem::take(&mut bars.to_restore) {
            let name = Checkpoint::object_name(&topic, partition);
            let checkpoint = if listed.contains(&name) {
                let bytes = self
                    .store
                    .get(&name)
                    .await
                    .with_context(|| format!("reading the aggregate checkpoint {name}"))?;
                Some(
                    Checkpoint::parse(&bytes)
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .with_context(|| format!("reading the aggregate checkpoint {name}"))?,
                )
            } else {
                None
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
            let snapshot = match &checkpoint {
                Some(c) => c
                    .at(committed)
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .with_context(|| format!("reading the aggregate checkpoint {name}"))?,
                None => None,
            };
            match snapshot {
                Some(snapshot) => {
                    let version = checkpoint.as_ref().map(|c| c.guest_version.clone());
                    bars.aggregation
                        .restore(partition, snapshot)
                        .map_err(|why| anyhow::anyhow!(
                            "the aggregate guest {} cannot read partition {partition}'s state (exported by {}): {why}",
                            bars.aggregation.component().version,
                            version.unwrap_or_default()
                        ))?;
                    tracing::info!(
                        partition,
                        offset = committed,
                        "aggregate: state restored from its checkpoint"
                    );
                }
                None => tracing::warn!(
                    partition,
                    committed,
                    checkpoint = %name,
                    kept = ?checkpoint.as_ref().map(Checkpoint::offsets),
                    "aggregate: no checkpoint of the state at the committed offset; the partition starts with an empty state (each instrument's first bar may be partial)"
                ),
            }
            if let Some(c) = checkpoint {
                bars.stored.insert(partition, c.offsets());
                bars.checkpoints.insert(partition, c);
            }
        }
        Ok(())
    }

    /// Runs the batch's accepted ticks through the aggregate guest and hands its outputs on:
    /// the late and faulted ticks to the dead-letter topic, the closed bars to the lake and the
    /// index. Every output is tracked against its message's offset.
    pub(super) fn aggregate(
        &mut self,
        batch: &[Consumed],
        slots: &[Result<usize, DecodeError>],
        outcomes: &[Option<StageOutcome>],
        ticks: &TickColumns,
    ) -> anyhow::Result<BarsOut> {
        let mut out = BarsOut::default();
        let Some(bars) = &mut self.bars else {
            return Ok(out);
        };
        let mut input = convert::empty_aggregate_input();
        // Input index -> message index.
        let mut messages = Vec::new();
        let mut consumed: BTreeMap<i32, i64> = BTreeMap::new();
        let mut again = 0_u64;
        for (m, (message, slot)) in batch.iter().zip(slots).enumerate() {
            let source = &message.source;
            if bars.aggregation.covers(source.partition, source.offset) {
                again += 1;
                continue;
            }
            let next = consumed.entry(source.partition).or_insert(0);
            *next = (*next).max(source.offset + 1);
            let Ok(i) = slot else { continue };
            let Some(StageOutcome::Accepted { enrichment, .. }) = &outcomes[*i] else {
                continue;
            };
            input.partition.push(message.source.partition);
            input.timestamp_us.push(ticks.timestamp_us[*i]);
            input.instrument_token.push(ticks.instrument_token[*i]);
            input.last_price.push(ticks.last_price[*i]);
            input.volume.push(ticks.volume[*i]);
            input.mid_price.push(enrichment.mid_price);
            input.spread.push(enrichment.spread);
            messages.push(m);
        }
        if again > 0 {
            tracing::debug!(
                messages = again,
                "aggregate: messages its state already holds (delivered again) are not counted twice"
            );
        }
        let aggregation = &mut bars.aggregation;
        let result = tokio::task::block_in_place(|| aggregation.process(input, &consumed));
        let empty = convert::empty_aggregate_input();
        // What the guest was given (kept for a candidate's shadow run).
        let input = match messages.is_empty() {
            true => &empty,
            false => bars.aggregation.last_input().unwrap_or(&empty),
        };
        let version = bars.aggregation.component().version.clone();
        let dead_letter_topic = &self.config.kafka.dead_letter_topic;
        let lateness_ms = bars.section.allowed_lateness_ms;
        let late = result.late.iter().map(|&i| {
            (
                i,
                Refusal {
                    stage: "aggregate",
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
            (
                i,
                Refusal {
                    stage: "aggregate",
                    code: fault.code.into(),
                    message: fault.message,
                    guest_version: Some(version.clone()),
                },
            )
        });
        for (i, refusal) in late.chain(faulted) {
            let message = &batch[messages[i]];
            let source = &message.source;
            tracing::debug!(partition = source.partition, offset = source.offset, code = %refusal.code, "aggregate refused a tick");
            self.tracker.track(source.partition, source.offset, 1);
            let delivery = kafka_sink::send_dead_letter(
                &self.producer,
                dead_letter_topic,
                message.key.as_deref(),
                &message.payload,
                &refusal,
                source,
            )
            .with_context(|| format!("enqueueing a dead letter to {dead_letter_topic}"))?;
            out.pending.push(Pending {
                source: source.clone(),
                delivery,
                refused_at: Some("aggregate"),
                generation: *self.generations.get(&source.partition).unwrap_or(&0),
            });
        }
        let closed = &result.bars;
        let mut place: HashMap<usize, i64> = HashMap::new();
        for j in 0..closed.len() {
            let message = &batch[messages[closed.closed_by[j] as usize]];
            let source = &message.source;
            let (id, document) = bar_document(
                closed,
                j,
                bars.section.bar_seconds,
                &source.topic,
                source.offset,
                &version,
            );
            let k = place
                .entry(messages[closed.closed_by[j] as usize])
                .or_insert(0);
            anyhow::ensure!(
                *k < 1 << POSITION_BITS,
                "offset {} of partition {} closed more than 2^{POSITION_BITS} bars",
                source.offset,
                source.partition
            );
            anyhow::ensure!(
                source.offset < 1 << (63 - POSITION_BITS),
                "offset {} of partition {} is past 2^{}, where the bars' lake positions (offset × 2^{POSITION_BITS}) end",
                source.offset,
                source.partition,
                63 - POSITION_BITS
            );
            let position = (source.offset << POSITION_BITS) | *k;
            *k += 1;
            let lake_partition = Civil::from_micros(closed.start_us[j]).lake_partition();
            match bars
                .lake
                .append(&lake_partition, source.partition, position, &document)
            {
                Appended::Buffered(rolled) => {
                    self.tracker.track(source.partition, source.offset, 1);
                    out.rolled.extend(to_offsets(rolled));
                }
                Appended::AlreadyStored => out.already_stored += 1,
            }
            if self.es.is_some() {
                self.tracker.track(source.partition, source.offset, 1);
                out.to_index.push(BulkItem {
                    index: bars.index.clone(),
                    payload: document.clone(),
                    document: document.into(),
                    source: source.clone(),
                    key: message.key.clone(),
                    generation: *self.generations.get(&source.partition).unwrap_or(&0),
                    id: Some(id.into()),
                });
            }
        }
        self.telemetry.bars_closed((0..closed.len()).map(|j| {
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
        Ok(out)
    }

    /// Stores the snapshots that moved since the last checkpoint (every `checkpoint_ms`, or
    /// now with `all`, waiting for them), and takes in the stores that landed.
    pub(super) async fn save_states(&mut self, all: bool) -> anyhow::Result<()> {
        let Some(bars) = &mut self.bars else {
            return Ok(());
        };
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
                bars.stored
                    .insert(saved.partition, saved.checkpoint.offsets());
                bars.checkpoints.insert(saved.partition, saved.checkpoint);
            }
        }
        let due = bars
            .saved_at
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(bars.section.checkpoint_ms));
        if bars.saving.is_some() || !(all || due) {
            return Ok(());
        }
        let topic = &self.config.kafka.topic;
        let version = bars.aggregation.component().version.clone();
        let mut round = Vec::new();
        let mut partitions: Vec<i32> = self.positions.next().keys().copied().collect();
        partitions.sort_unstable();
        for partition in partitions {
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
        let store: Arc<LakeStore> = self.store.clone();
        let topic = topic.clone();
        bars.saving = Some(tokio::spawn(async move {
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
            Box::pin(self.save_states(true)).await?;
        }
        Ok(())
    }
}
