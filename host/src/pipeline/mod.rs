//! The run loop: Kafka batch → decode → guest chain → sinks → acknowledgements → offsets.
//!
//! Read it top to bottom: [`Pipeline::run`] takes a batch at a time from the group
//! ([`Membership`]), lets the group's changes in between two batches, and runs [`Pipeline::step`]:
//! [`Pipeline::process`] (decode, the chain, the aggregate stage, each outcome to its sinks via
//! [`dispatch`]), then [`Pipeline::settle`] (what the sinks made durable is acknowledged, the
//! positions that moved are stored). Everything else is owned elsewhere: group membership by
//! [`Membership`], lake storing by [`LakeSink`], deliveries by [`Deliveries`], the aggregate
//! stage's state by [`bars`]; each answers the per-partition lifecycle
//! ([`PartitionLifecycle`]). Offsets move only through the [`Ledger`]: a message is committed
//! after every sink it was routed to has acknowledged it.

mod alerts;
mod bars;
mod checkpoints;
pub mod commit;
pub mod decode;
mod dispatch;
mod ledger;
mod stateful;
mod swaps;

use crate::chain::swap::{GuestRegistry, ShadowBuffer, SwapApplier};
use crate::chain::{StageChain, WasmChain};
use crate::config::Config;
use crate::position::{Offset, Offsets, Partition};
use crate::sink::document::DocumentWriter;
use crate::sink::elasticsearch::{BulkReport, DeadLetters, EsSink};
use crate::sink::kafka::Deliveries;
use crate::sink::lake_sink::LakeSink;
use crate::sink::{PartitionLifecycle, Roll};
use crate::source::backfill::InputFeed;
use crate::source::group::{Consumed, KAFKA_TIMEOUT, Membership};
use crate::source::kafka as kafka_source;
use crate::source::once::OnceTargets;
use crate::source::positions::LostRange;
use crate::telemetry::{BatchRecord, Counts, Telemetry};
use anyhow::Context;
use ledger::Ledger;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run did, printed as one JSON line at exit: the run's counts (kept by [`Telemetry`])
/// and the offsets the group has committed.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    #[serde(flatten)]
    pub counts: Counts,
    /// Partition -> the group's committed offset (the next offset to consume), read back from the broker.
    pub committed_offsets: Offsets,
    /// Offsets the broker had deleted before this group stored them (never processed). Absent
    /// when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_ranges: Vec<LostRange>,
    /// Ticks of `--input` the broker would not take (e.g. too large): not in the topic, so not
    /// in this run's counts. Absent when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_refused: Vec<crate::source::replay::InputRefusal>,
}

pub struct Pipeline {
    config: Config,
    chain: WasmChain,
    swaps: swaps::HotSwap,
    group: Membership,
    ledger: Ledger,
    lake: LakeSink,
    deliveries: Deliveries,
    es: Option<EsSink>,
    /// The stateful stages, when configured: the aggregate stage's bars, the alert stage.
    stateful: stateful::Stateful,
    telemetry: Arc<Telemetry>,
    /// Room a document takes in the batch's buffer: the last batch's average and a little more,
    /// so that encoding does not regrow (and copy) the buffer; bounded, so that one huge tick does
    /// not make the following batches reserve its size for every document.
    document_capacity: usize,
    /// A file being replayed beside the pipeline (`run --input` on the embedded cluster).
    input: Option<InputFeed>,
    /// How messages are read (`[input]`; its mapping checked and its token table read once).
    decode: stockpipe_model::json::DecodeOptions,
}

impl Pipeline {
    /// Connects the sinks (puts the Elasticsearch templates, waiting for a cluster that does not
    /// answer yet; opens the lake store) and joins the consumer group. `telemetry` hears what
    /// it waits for (readiness) and keeps the run's counts.
    pub async fn new(
        config: Config,
        brokers: &str,
        chain: WasmChain,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let k = &config.kafka;
        let env = |name: &str| std::env::var(name).ok();
        let input = k.input_connection(brokers, env)?;
        let output = k.output_connection(&input, env)?;
        crate::source::topics::check(&input, &output, k, KAFKA_TIMEOUT).await?;
        let producer = kafka_source::producer(&output)?;
        let lake = LakeSink::open(&config.lake, &k.topic, telemetry.clone()).await?;
        let es = if !config.elasticsearch.enabled() {
            None
        } else {
            let settings = config
                .elasticsearch
                .settings(|key| std::env::var(key).ok())?;
            let dead_letters = DeadLetters {
                producer: producer.clone(),
                topic: k.dead_letter_topic.clone(),
            };
            let url = settings.nodes.describe();
            let sink = EsSink::connect(settings, dead_letters, telemetry.clone())
                .await
                .with_context(|| format!("connecting to Elasticsearch at {url}"))?;
            tracing::info!(url = %url, "Elasticsearch sink ready");
            Some(sink)
        };
        let group = Membership::join(&input, k, telemetry.clone())?;
        let decode = config.decode_options()?;
        Ok(Self {
            decode,
            swaps: swaps::HotSwap::off(&chain),
            deliveries: Deliveries::new(producer, telemetry.clone()),
            config,
            chain,
            group,
            ledger: Ledger::default(),
            lake,
            es,
            stateful: stateful::Stateful::default(),
            telemetry,
            document_capacity: 1024,
            input: None,
        })
    }

    /// Metrics, readiness and the live view of this pipeline (for the HTTP API).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Shares what is loaded and what happened (processed count, swaps) with `registry`.
    pub fn with_registry(mut self, registry: Arc<GuestRegistry>) -> Self {
        self.swaps.share_registry(registry, &self.chain);
        self
    }

    /// Runs the aggregate stage after the chain: bars to the index and the lake, its state
    /// checkpointed beside the lake (see [`bars`]).
    pub fn with_aggregation(mut self, aggregation: crate::chain::aggregate::Aggregation) -> Self {
        let section = self.config.aggregate.clone();
        self.lake = self.lake.with_bars(&self.config.lake, &section.lake_prefix);
        self.swaps.registry.set_stateful(aggregation.component());
        self.stateful.bars = Some(bars::Bars::new(aggregation, section));
        self
    }

    /// Runs the alert stage after the chain (and the aggregate stage): its events to the alerts
    /// topic and the alerts index, its state checkpointed beside the lake (see [`alerts`]).
    pub fn with_alerting(mut self, alerting: crate::chain::alert::Alerting) -> Self {
        let section = self.config.alert.clone();
        self.swaps.registry.set_stateful(alerting.component());
        self.stateful.alerts = Some(alerts::Alerts::new(
            alerting,
            &section,
            &self.config.kafka.alerts_topic,
        ));
        self
    }

    /// A file was replayed into the topic before the run, starting at `starts` in each partition:
    /// in a partition the group never committed, what the broker deleted of it before the group
    /// got there is reported lost (and fails `--once`), not skipped silently.
    pub fn with_replayed_from(mut self, starts: crate::position::Offsets) -> Self {
        self.group.expect_from(starts);
        self
    }

    /// Consumes a file the caller replays into the topic meanwhile (see [`InputFeed`]).
    pub fn with_input(mut self, input: InputFeed) -> Self {
        self.input = Some(input);
        self
    }

    /// Enables hot swap: `applier` brings checked candidates in between batches, `shadow` receives
    /// every processed batch for the candidates' shadow runs.
    pub fn with_hot_swap(mut self, applier: SwapApplier, shadow: Arc<Mutex<ShadowBuffer>>) -> Self {
        self.swaps.on(applier, shadow);
        self
    }

    /// Runs until `shutdown` resolves, or — with `once` — until everything in the topic when the
    /// run started has been processed and committed.
    pub async fn run(
        mut self,
        once: bool,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<RunSummary> {
        // With a file replayed meanwhile, the targets are its ends, known when the replay is done.
        if let (true, Some(es)) = (once, &mut self.es) {
            es.give_up_after_faults();
        }
        let mut targets = match once && self.input.is_none() {
            true => Some(self.group.once_targets()?),
            false => None,
        };
        tokio::pin!(shutdown);
        // Once a stop is requested, everything left — the batch in hand, the sinks' last
        // acknowledgements, the final commit — shares one grace period.
        let grace = Duration::from_millis(self.config.elasticsearch.shutdown_grace_ms);
        // Messages taken while the partitions were being paused: the next batch starts with them.
        let mut carried: Vec<Consumed> = Vec::new();
        let stop_by = loop {
            let batch = tokio::select! {
                batch = self.group.next_batch() => batch?,
                () = &mut shutdown => {
                    tracing::info!("shutdown requested");
                    break Some(tokio::time::Instant::now() + grace);
                }
            };
            let batch = match carried.is_empty() {
                true => batch,
                false => std::mem::take(&mut carried)
                    .into_iter()
                    .chain(batch)
                    .collect(),
            };
            self.between_batches(&batch)?;
            if let (true, None, Some(input)) = (once, &targets, &mut self.input) {
                targets = input.targets(&self.group)?;
            }
            // A sink that is down makes the step wait; past a while the keeper pauses the
            // partitions and polls, so that this host stays a member of its group however long
            // the outage. A shutdown still gets through, and what is not acknowledged is not
            // committed.
            let stop = {
                let mut keeper = self.group.keeper();
                let step = self.step(batch, targets.as_mut());
                tokio::pin!(step);
                let outcome = tokio::select! {
                    done = &mut step => Some(done),
                    never = keeper.hold() => match never {},
                    () = &mut shutdown => None,
                };
                carried = keeper.finish();
                match outcome {
                    Some(done) => done?.then_some(None),
                    None => {
                        // Let the batch finish if its sinks answer within the grace period.
                        let stop_by = tokio::time::Instant::now() + grace;
                        match tokio::time::timeout_at(stop_by, &mut step).await {
                            Ok(finished) => {
                                finished?;
                            }
                            Err(_) => tracing::warn!(
                                "shutdown: a sink did not answer within the grace period; the batch stays uncommitted"
                            ),
                        }
                        Some(Some(stop_by))
                    }
                }
            };
            // Done (`--once`), or stopping with a deadline.
            if let Some(stop_by) = stop {
                break stop_by;
            }
            self.release_revoked().await;
        };
        self.close(targets, stop_by).await
    }

    /// Lets the group's changes in, between two batches: partitions assigned start, partitions
    /// let go of at once are forgotten, and a pending guest swap is applied — between two
    /// batches, the only place a guest may change.
    fn between_batches(&mut self, batch: &[Consumed]) -> anyhow::Result<()> {
        let changes = self.group.changes(batch)?;
        for (partition, committed) in &changes.assigned {
            self.stateful.assigned(*partition, committed);
        }
        // Their unacknowledged offsets go to the next owner, so their buffered lake lines are
        // dropped, not written twice.
        for partition in changes.dropped {
            let dropped = self.forget(partition);
            tracing::info!(
                partition,
                dropped,
                "forgot a partition let go of; its uncommitted work goes to its next owner"
            );
        }
        for swap in self.swaps.apply_pending(&mut self.chain) {
            self.stateful.swap(swap, &self.swaps.registry);
        }
        Ok(())
    }

    /// One batch through the chain and into its sinks, then what is due: segments rolled, bulks
    /// sent, offsets stored. True when `run --once` is done.
    async fn step(
        &mut self,
        batch: Vec<Consumed>,
        targets: Option<&mut OnceTargets>,
    ) -> anyhow::Result<bool> {
        self.process(batch).await?;
        self.settle(Roll::Due(Instant::now()), false).await?;
        if let Some(input) = &mut self.input {
            input
                .save(self.lake.store(), &self.config.kafka.topic, false)
                .await;
        }
        let Some(targets) = targets else {
            return Ok(false);
        };
        if !self.group.consumed_all(targets) {
            return Ok(false);
        }
        self.settle(Roll::All, true).await?;
        Ok(self.ledger.in_flight() == 0)
    }

    /// One batch: decoded straight into the batch's columns, through the chain in one call per
    /// stage, through the aggregate stage, and each outcome to its sinks ([`dispatch`]).
    async fn process(&mut self, batch: Vec<Consumed>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let topic = &self.config.kafka.topic;
        self.lake
            .know(batch.iter().map(|m| m.source.partition))
            .await?;
        if let Some(bars) = &mut self.stateful.bars {
            bars.restore(self.lake.store(), topic).await?;
        }
        if let Some(alerts) = &mut self.stateful.alerts {
            alerts.restore(self.lake.store(), topic).await?;
        }
        let decoded = decode::decode_batch(&batch, &self.decode);
        let cut = decoded
            .extras
            .iter()
            .flatten()
            .map(|e| u64::from(e.cut))
            .sum();
        self.telemetry.extra_truncated(cut);
        let chain = &mut self.chain;
        let outcomes = tokio::task::block_in_place(|| chain.process_columns(&decoded.ticks));
        anyhow::ensure!(
            outcomes.len() == decoded.ticks.len(),
            "the chain returned {} outcomes for {} ticks",
            outcomes.len(),
            decoded.ticks.len()
        );
        let closed = match &mut self.stateful.bars {
            Some(bars) => bars.aggregate(&batch, &decoded, &outcomes, &self.telemetry)?,
            None => bars::BarsOut::default(),
        };
        let mut outputs = dispatch::Outputs {
            ledger: &mut self.ledger,
            lake: &mut self.lake,
            deliveries: &mut self.deliveries,
            es: self.es.as_mut(),
            dead_letter_topic: &self.config.kafka.dead_letter_topic,
            record: BatchRecord {
                consumed: batch.len() as u64,
                ..BatchRecord::default()
            },
            already_stored: 0,
        };
        if let Some(alerts) = &mut self.stateful.alerts {
            let raised = alerts.alert(&batch, &decoded, &outcomes, &closed.bars, &self.telemetry);
            outputs.alerts(&batch, raised)?;
        }
        outputs.bars(&batch, closed)?;
        let versions = self.chain.versions();
        let writer = DocumentWriter::new(&versions);
        let capacity = self.document_capacity;
        let written = outputs.ticks(batch, &decoded, outcomes, &writer, capacity)?;
        let (record, already_stored) = (outputs.record, outputs.already_stored);
        if !decoded.ticks.is_empty() {
            self.document_capacity = (written / decoded.ticks.len() + 64).min(16 << 10);
        }
        self.telemetry
            .record_batch(record, &self.chain.last_calls());
        self.telemetry.lake_already_stored(already_stored);
        self.swaps.after_batch(&mut self.chain, decoded.ticks);
        Ok(())
    }

    /// What the sinks have made durable since the last call (everything, waiting for it, with
    /// `all`), after rolling the lake segments `roll` selects: acknowledged in the ledger, and the
    /// positions that moved stored for the next commit.
    async fn settle(&mut self, roll: Roll<'_>, all: bool) -> anyhow::Result<()> {
        self.lake.roll(roll);
        let ledger = &self.ledger;
        let landed = self.lake.store_rolled(|p| ledger.generation(p)).await?;
        self.ledger.acknowledge(landed);
        let landed = self.lake.collect(all).await?;
        self.ledger.acknowledge(landed);
        let ledger = &self.ledger;
        let delivered = self
            .deliveries
            .collect(all, |p| ledger.generation(p))
            .await?;
        self.ledger.acknowledge(delivered);
        let report = settle_index(self.es.as_mut(), all).await?;
        self.telemetry.index_settled(&report.counts);
        for (source, generation) in report.acked {
            self.ledger.ack(source.partition, generation, source.offset);
        }
        let partitions: Vec<i32> = self.group.consumed_to().keys().map(|p| p.0).collect();
        let (store, topic) = (self.lake.store(), &self.config.kafka.topic);
        self.stateful.save(all, store, topic, &partitions).await?;
        let advanced = self.stateful.limit_advanced(self.ledger.advanced());
        if let Some(input) = &mut self.input {
            input.advance(&advanced);
        }
        self.group.store(&advanced);
        Ok(())
    }

    /// Partitions the group revoked: stores what this host holds for them (their lake lines;
    /// everything in flight to Elasticsearch, which settles per request, not per partition) and
    /// commits it, within `kafka.revoke_timeout_ms`, then lets go of them. Their next owner
    /// starts where this host stopped; what could not be stored in time goes to it again.
    async fn release_revoked(&mut self) {
        let Some(partitions) = self.group.revoking() else {
            return;
        };
        let started = Instant::now();
        let limit = self.config.kafka.revoke_timeout();
        match tokio::time::timeout(limit, self.settle(Roll::Partitions(&partitions), true)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), ?partitions, "storing the work of revoked partitions failed; what is not committed goes to their next owner")
            }
            Err(_) => tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                ?partitions,
                "the work of revoked partitions was not stored in time; what is not committed goes to their next owner"
            ),
        }
        let positions = commit_positions(&self.ledger, &self.stateful, partitions.iter().copied());
        for partition in self.group.release(&positions) {
            self.forget(partition);
        }
        tracing::info!(
            ?positions,
            took_ms = started.elapsed().as_millis() as u64,
            "revoked partitions stored and committed before letting go"
        );
    }

    /// Forgets what this host knew of `partition` (no longer its own). Returns the buffered lake
    /// lines dropped.
    fn forget(&mut self, partition: i32) -> usize {
        self.ledger.forget(partition);
        self.stateful.forget(partition);
        self.lake.forget(partition)
    }

    /// The sinks' last acknowledgements — all of them at the end of a run, or whatever comes by
    /// `stop_by` when stopping —, the last commit, the committed offsets read back, and the group
    /// left. When stopping, each of the last Kafka calls may take what is left of the grace (at
    /// least a second: without the commit the next owner starts further back).
    async fn close(
        mut self,
        targets: Option<OnceTargets>,
        stop_by: Option<tokio::time::Instant>,
    ) -> anyhow::Result<RunSummary> {
        let timeout = match stop_by {
            None => {
                self.settle(Roll::All, true).await?;
                KAFKA_TIMEOUT
            }
            Some(stop_by) => {
                match tokio::time::timeout_at(stop_by, self.settle(Roll::All, true)).await {
                    Ok(finished) => finished?,
                    Err(_) => tracing::warn!(
                        unacknowledged = self.ledger.in_flight(),
                        "the sinks did not acknowledge everything within the shutdown grace; the rest is not committed and will be delivered again"
                    ),
                }
                let left = stop_by.saturating_duration_since(tokio::time::Instant::now());
                left.clamp(Duration::from_secs(1), KAFKA_TIMEOUT)
            }
        };
        if let Some(input) = &mut self.input {
            input
                .save(self.lake.store(), &self.config.kafka.topic, true)
                .await;
        }
        let consumed: Vec<i32> = self.group.consumed_to().keys().map(|p| p.0).collect();
        let positions = commit_positions(&self.ledger, &self.stateful, consumed.into_iter());
        let partitions: Vec<i32> = match &targets {
            Some(targets) => targets.ends.keys().map(|p| p.0).collect(),
            None => positions.keys().map(|p| p.0).collect(),
        };
        let counts = self.telemetry.counts();
        let committed_offsets = self.group.leave(&positions, partitions, timeout)?;
        Ok(RunSummary {
            counts,
            committed_offsets,
            lost_ranges: self.telemetry.lost_ranges(),
            input_refused: Vec::new(),
        })
    }
}

/// How far each of `partitions` may be committed: the ledger's position, limited by every stage
/// with state of its own (the stateful stages' stored checkpoints).
fn commit_positions(
    ledger: &Ledger,
    stages: &impl PartitionLifecycle,
    partitions: impl Iterator<Item = i32>,
) -> Offsets {
    partitions
        .filter_map(|p| {
            let position = ledger.position(p)?;
            stages
                .commit_limit(p, position)
                .map(|at| (Partition(p), Offset(at)))
        })
        .collect()
}

/// Sends what is due to Elasticsearch (everything with `all`, waiting for it): what it settled.
async fn settle_index(es: Option<&mut EsSink>, all: bool) -> anyhow::Result<BulkReport> {
    match es {
        None => Ok(BulkReport::default()),
        Some(es) if all => Ok(es.drain().await?),
        Some(es) => Ok(es.flush_due(Instant::now()).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::{Ledger, commit_positions};
    use crate::sink::PartitionLifecycle;

    /// A stage whose state is stored up to `0` in every partition.
    struct StoredUpTo(i64);

    impl PartitionLifecycle for StoredUpTo {
        fn commit_limit(&self, _partition: i32, position: i64) -> Option<i64> {
            (self.0 <= position).then_some(self.0)
        }
    }

    #[test]
    fn a_partition_is_committed_as_far_as_the_sinks_and_the_stages_allow() {
        let mut ledger = Ledger::default();
        for offset in 0..10 {
            ledger.track(0, offset, 1);
            ledger.track(1, offset, 1);
        }
        for offset in 0..8 {
            ledger.ack(0, 0, offset);
        }
        for offset in 0..3 {
            ledger.ack(1, 0, offset);
        }
        let stages = Some(StoredUpTo(5));
        let positions = commit_positions(&ledger, &stages, [0, 1].into_iter());
        // Partition 0: the sinks are at 8, the stage's state at 5; partition 1: the sinks at 3,
        // before any stored state, so it stays where it is.
        assert_eq!(positions, crate::position::offsets([(0, 5)]));
        let without_stages: Option<StoredUpTo> = None;
        let positions = commit_positions(&ledger, &without_stages, [0, 1].into_iter());
        assert_eq!(positions, crate::position::offsets([(0, 8), (1, 3)]));
    }

    #[test]
    fn a_partition_nothing_was_consumed_from_is_not_committed() {
        let ledger = Ledger::default();
        let stages: Option<StoredUpTo> = None;
        assert!(commit_positions(&ledger, &stages, [4].into_iter()).is_empty());
    }
}
