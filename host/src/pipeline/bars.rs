//! The aggregate stage in the run loop: the accepted ticks of a batch into the guest, its closed
//! bars to Elasticsearch (`stock-bars`) and the lake (`stock-bars/dt=…/hour=…`), its late ticks to
//! the dead-letter topic, and its state into checkpoints that the commits wait for.
//!
//! Exactly once, the same way the ticks are: every output of a bar is tracked against the offset
//! of the message that closed it, so that offset is committed only once the bar is stored. A
//! partition's offsets are committed only as far as a stored checkpoint of its state
//! ([`Checkpoints`]); a host that takes the partition over (after a crash, a rebalance) restores
//! the state at exactly the committed offset and closes the same bars again: Elasticsearch
//! overwrites them (their id is `<instrument>-<start µs>`), the lake skips what it holds.
//!
//! Lake lines of bars are placed by *position*, `offset × 2^20 + k` (k: the bar's place among
//! those its message closed; [`LakePosition::bar`]), not by offset: one message may close bars of
//! several hours, and with a position of its own each bar is stored exactly once even when its
//! message's bars land in two objects.

use super::checkpoints::Checkpoints;
use super::decode::Decoded;
use crate::chain::aggregate::{AggregateSection, Aggregation};
use crate::chain::state::Kept;
use crate::chain::swap::{Deciding, GuestRegistry, Swap};
use crate::chain::{Refusal, RefusalStage, StageOutcome};
use crate::position::{LakePosition, Offset, Offsets, Partition};
use crate::runtime::convert;
use crate::sink::store::LakeStore;
use crate::source::group::Consumed;
use crate::telemetry::Telemetry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use stockpipe_model::Fields;
use stockpipe_model::aggregate::BarColumns;
use stockpipe_model::time::{Civil, format_rfc3339_micros};

/// The aggregate stage's part of the pipeline.
pub(super) struct Bars {
    aggregation: Aggregation,
    section: AggregateSection,
    index: Arc<str>,
    checkpoints: Checkpoints,
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
    /// The decoded tick (its index in the batch's columns) that closed it.
    pub(super) closed_by_tick: usize,
    /// What the alert stage reads of it.
    pub(super) values: BarValues,
}

/// What the alert stage reads of a closed bar.
pub(super) struct BarValues {
    pub(super) partition: i32,
    pub(super) instrument_token: u64,
    pub(super) end_us: i64,
    pub(super) close: f64,
    pub(super) traded_quantity: i64,
    pub(super) log_return: f64,
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
            checkpoints: Checkpoints::new("aggregate", section.checkpoint_ms),
            aggregation,
            section,
        }
    }
}

/// Its part of the stateful stages' per-partition lifecycle ([`super::stateful::Stateful`]).
impl Bars {
    pub(super) fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        self.checkpoints.assigned(partition, committed);
    }

    /// How far `partition` may be committed given `position`: to its newest stored checkpoint.
    pub(super) fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        self.checkpoints.commit_limit(partition, position)
    }

    /// Forgets a partition let go of: its state and checkpoint bookkeeping.
    pub(super) fn forget(&mut self, partition: i32) {
        self.aggregation.kept_mut().forget(partition);
        self.checkpoints.forget(partition);
    }
}

/// A tick given to the guest: its index in the batch's columns, and its place in a message of
/// several.
type TickPlace = (usize, Option<u32>);

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
    /// The place in that message of the tick that did, when it holds several (as a tick's
    /// `source.tick`).
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_by_tick: Option<u32>,
}

/// `<instrument>-<start µs>`: the bar's `_id`, the same however often it is closed again.
pub fn bar_id(instrument_token: u64, start_us: i64) -> String {
    format!("{instrument_token}-{start_us}")
}

fn bar_document(
    bars: &BarColumns,
    i: usize,
    bar_seconds: u32,
    (topic, closed_by_offset, closed_by_tick): (&str, i64, Option<u32>),
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
            closed_by_tick,
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
    let deciding = Deciding::new("aggregate", swap);
    let Some(bars) = bars else {
        return deciding.not_running(registry);
    };
    let from = bars.aggregation.component().version.clone();
    let candidate = deciding.swap.component.clone();
    let shadow = bars.aggregation.shadow(&candidate);
    let (next, unread) = bars.aggregation.hand_over(candidate.clone());
    let problem = deciding
        .unread(&from, &unread)
        .or_else(|| shadow.as_ref().err().map(|e| format!("shadow run: {e}")));
    let bars_shadow = shadow.ok().flatten();
    let mut event = match problem {
        Some(why) if !deciding.swap.force => deciding.event("refused", from, why),
        problem => {
            let reason = match problem {
                Some(why) => deciding.forced(&why, &unread),
                None => format!(
                    "the state of {} partitions handed over; {}",
                    bars.aggregation.kept().partitions() - unread.len(),
                    match &bars_shadow {
                        Some(s) => format!(
                            "shadow run of the last batch ({} ticks): {} of {} bars differ",
                            s.ticks, s.bars_differing, s.bars_before
                        ),
                        None => "no batch yet for a shadow run".into(),
                    }
                ),
            };
            bars.aggregation = next;
            registry.set_stateful(&candidate);
            deciding.event("swapped", from, reason)
        }
    };
    event.bars_shadow = bars_shadow;
    deciding.decided(event, registry);
}

impl Bars {
    /// Restores the state of partitions assigned since the last batch (see [`Checkpoints`]).
    pub(super) async fn restore(&mut self, store: &LakeStore, topic: &str) -> anyhow::Result<()> {
        let kept = self.aggregation.kept_mut();
        self.checkpoints.restore(kept, store, topic).await
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
        let (input, messages, ticks, consumed) = self.input(batch, decoded, outcomes);
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
        let bars = self.closed(batch, &messages, &ticks, closed, &version)?;
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
    /// in the batch of each one's message and in the batch's columns of each tick, and per
    /// partition the offset after the last message.
    fn input(
        &self,
        batch: &[Consumed],
        decoded: &Decoded,
        outcomes: &[StageOutcome],
    ) -> (
        crate::runtime::bindings::aggregate::AggregateInput,
        Vec<usize>,
        Vec<TickPlace>,
        Offsets,
    ) {
        let ticks = &decoded.ticks;
        let mut input = convert::empty_aggregate_input();
        let mut messages = Vec::new();
        let mut places = Vec::new();
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
                held = self
                    .aggregation
                    .kept()
                    .covers(source.partition, source.offset);
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
            places.push((*i, slot.tick));
        }
        if again > 0 {
            tracing::debug!(
                messages = again,
                "aggregate: messages its state already holds (delivered again) are not counted twice"
            );
        }
        (input, messages, places, consumed)
    }

    /// The closed bars' documents, each placed in the lake by its message and its place among
    /// the bars that message closed.
    fn closed(
        &self,
        batch: &[Consumed],
        messages: &[usize],
        ticks: &[TickPlace],
        closed: &BarColumns,
        version: &str,
    ) -> anyhow::Result<Vec<ClosedBar>> {
        let mut place: HashMap<usize, i64> = HashMap::new();
        let mut bars = Vec::with_capacity(closed.len());
        for j in 0..closed.len() {
            let closer = closed.closed_by[j] as usize;
            let m = messages[closer];
            let (closer, in_message) = ticks[closer];
            let source = &batch[m].source;
            let (id, document) = bar_document(
                closed,
                j,
                self.section.bar_seconds,
                (&source.topic, source.offset, in_message),
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
                closed_by_tick: closer,
                values: BarValues {
                    partition: closed.partition[j],
                    instrument_token: closed.instrument_token[j],
                    end_us: closed.start_us[j] + i64::from(self.section.bar_seconds) * 1_000_000,
                    close: closed.close[j],
                    traded_quantity: closed.traded_quantity[j],
                    log_return: closed.log_return[j],
                },
            });
        }
        Ok(bars)
    }

    /// The checkpoints and the state they store, for a round (see [`super::stateful`]).
    pub(super) fn checkpointing(
        &mut self,
    ) -> (&mut Checkpoints, &Kept<impl crate::runtime::StateCalls>) {
        (&mut self.checkpoints, self.aggregation.kept())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_names_the_tick_that_closed_it_with_its_place_in_a_message_of_several() {
        let bars = BarColumns {
            partition: vec![2],
            instrument_token: vec![7],
            start_us: vec![60_000_000],
            open: vec![1.0],
            high: vec![2.0],
            low: vec![0.5],
            close: vec![1.5],
            traded_quantity: vec![10],
            tick_count: vec![3],
            vwap: vec![1.2],
            last_mid_price: vec![1.5],
            last_spread: vec![0.1],
            log_return: vec![f64::NAN],
            volatility: vec![f64::NAN],
            closed_by: vec![0],
        };
        let source = |tick| {
            let (id, bytes) = bar_document(&bars, 0, 60, ("t", 40, tick), "v");
            assert_eq!(id, "7-60000000");
            let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(doc["log_return"].is_null(), "NaN is written as null");
            doc["source"].clone()
        };
        assert_eq!(
            source(Some(3)),
            serde_json::json!({"topic": "t", "partition": 2, "closed_by_offset": 40, "closed_by_tick": 3})
        );
        // A message of one tick: no place, as a tick's `source.tick`.
        assert_eq!(
            source(None),
            serde_json::json!({"topic": "t", "partition": 2, "closed_by_offset": 40})
        );
    }
}
