//! The run loop: Kafka batch → decode → guest chain → sinks → acknowledgements → offsets.
//!
//! One batch at a time: the guests see a whole batch in one call per stage; [`dispatch`] hands
//! every outcome to its sinks; dead letters and alerts are awaited before the next batch (so the
//! producer never buffers without bound); lake segments acknowledge once their object is stored;
//! Elasticsearch acknowledges per bulk request, with a bounded number out (a full pipe makes the
//! loop wait). Offsets move only through the [`CommitTracker`](commit::CommitTracker): a message is
//! committed after every sink it was routed to has acknowledged it.

mod bars;
pub mod commit;
mod dispatch;

use crate::chain::WasmChain;
use crate::chain::swap::{GuestRegistry, ShadowBuffer, SwapApplier};
use crate::config::Config;
use crate::sink::SourceRef;
use crate::sink::elasticsearch::{BulkReport, DeadLetters, EsSink};
use crate::sink::lake::{LakeConfig, LakeWriter, RolledSegment};
use crate::sink::store::LakeStore;
use crate::source::backfill::InputCheckpoint;
use crate::source::kafka as kafka_source;
use crate::source::once::{OnceStep, OnceTargets};
use crate::source::positions::{LostRange, Positions};
use crate::telemetry::{Counts, Dependency, Sink, Telemetry};
use anyhow::Context;
use commit::CommitTracker;
use rdkafka::Message;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run did, printed as one JSON line at exit: the run's counts (kept by [`Telemetry`])
/// and the offsets the group has committed.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    #[serde(flatten)]
    pub counts: Counts,
    /// Partition -> the group's committed offset (the next offset to consume), read back from the broker.
    pub committed_offsets: BTreeMap<i32, i64>,
    /// Offsets the broker had deleted before this group stored them (never processed). Absent
    /// when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_ranges: Vec<LostRange>,
    /// Ticks of `--input` the broker would not take (e.g. too large): not in the topic, so not
    /// in this run's counts. Absent when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_refused: Vec<crate::source::replay::InputRefusal>,
}

/// Lake objects stored at once, at most: each holds a segment (up to `lake.roll_bytes`, or its
/// unspilled tail) in memory until it lands.
const LAKE_STORES_IN_FLIGHT: usize = 2;

/// A temporary or spool file of a local lake not written for this long (or twice
/// `lake.roll_seconds`, if longer) is a crash's leftover: a live host renames its temporary files
/// within one store and rolls a segment within `roll_seconds` of its first line.
const LAKE_LEFTOVERS_AFTER: Duration = Duration::from_secs(3600);

/// A local lake's segments keep at most about this much of themselves in memory; the rest is in
/// their spool files (see [`crate::sink::lake`]). 8 MiB segments on three partitions held ~34 MiB
/// of the host's ~118 MiB at 20,000 ticks/s (BENCHMARKS.md).
const LAKE_SPILL_BYTES: usize = 1 << 20;

/// A lake object's store, done: what its lines need to be acknowledged.
struct StoredSegment {
    name: String,
    partition: i32,
    /// The partition's generation when the store began.
    generation: u64,
    offsets: Vec<i64>,
    took: Duration,
    stored: Result<(), crate::sink::store::StoreError>,
}

/// One consumed message, detached from the consumer.
struct Consumed {
    source: SourceRef,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Consumed {
    /// `topic`: the last topic seen, reused while messages come from it.
    fn from(message: &rdkafka::message::BorrowedMessage<'_>, topic: &mut Arc<str>) -> Self {
        if &**topic != message.topic() {
            *topic = Arc::from(message.topic());
        }
        Self {
            source: SourceRef {
                topic: topic.clone(),
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// How long a batch may wait on its sinks before the partitions are paused and the consumer kept
/// polling: well inside `max.poll.interval.ms` (after which librdkafka leaves the group), and
/// not so soon that a merely slow sink makes the consumer pause and refetch at every batch.
fn keep_member_after(max_poll_interval: Duration) -> Duration {
    (max_poll_interval / 4).min(Duration::from_secs(5))
}

/// Keeps the consumer a healthy member of its group while a batch waits on its sinks: after
/// `patience`, pauses the assigned partitions (noted in `paused`, to be resumed) and polls — which
/// serves the group's heartbeats, rebalances and statistics. A message that was already on its way
/// goes to `carried`, for the next batch. Partitions the group revoked meanwhile are let go of
/// once they have waited `revoke_timeout` (the batch that holds their work is stuck). Runs until
/// dropped.
async fn keep_member(
    consumer: &kafka_source::PipelineConsumer,
    notes: &kafka_source::ConsumerNotes,
    revoke_timeout: Duration,
    patience: Duration,
    paused: &mut Option<rdkafka::TopicPartitionList>,
    carried: &mut Vec<Consumed>,
) -> std::convert::Infallible {
    use rdkafka::consumer::Consumer;
    tokio::time::sleep(patience).await;
    match consumer.assignment() {
        Ok(partitions) => match consumer.pause(&partitions) {
            Ok(()) => {
                tracing::info!(
                    partitions = partitions.count(),
                    waited_ms = patience.as_millis() as u64,
                    "the sinks are saturated: partitions paused, the consumer keeps its place in the group"
                );
                *paused = Some(partitions);
            }
            Err(e) => tracing::warn!(error = %e, "pausing the partitions failed"),
        },
        Err(e) => tracing::warn!(error = %e, "reading the assignment failed"),
    }
    let mut topic: Arc<str> = Arc::from("");
    loop {
        notes.rebalance.release_overdue(consumer, revoke_timeout);
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(message)) => carried.push(Consumed::from(&message, &mut topic)),
            Ok(Err(e)) => tracing::debug!(error = %e, "consumer error while paused"),
            Err(_idle) => {}
        }
    }
}

/// Resumes the partitions [`keep_member`] paused.
fn resume(consumer: &kafka_source::PipelineConsumer, partitions: &rdkafka::TopicPartitionList) {
    if let Err(e) = rdkafka::consumer::Consumer::resume(consumer, partitions) {
        tracing::warn!(error = %e, "resuming the paused partitions failed");
    } else {
        tracing::info!("the sinks caught up: partitions resumed");
    }
}

pub struct Pipeline {
    config: Config,
    /// Dead letters and alerts sent, not yet answered by the broker.
    deliveries: Vec<dispatch::Pending>,
    /// Per partition, how many times its work was forgotten (let go of without storing it). A
    /// lake store, a delivery or a bulk request still in flight from an earlier generation does
    /// not acknowledge the offsets tracked since: they are the same offsets, but this host's copy
    /// of them is new.
    generations: HashMap<i32, u64>,
    chain: WasmChain,
    registry: Arc<GuestRegistry>,
    shadow: Arc<Mutex<ShadowBuffer>>,
    swaps: Option<SwapApplier>,
    /// Shared with [`keep_member`], which polls it while a batch waits on its sinks.
    consumer: Arc<kafka_source::GroupMember>,
    /// Rebalances and fetch-reported partition ends, from the consumer's callbacks.
    consumer_notes: kafka_source::ConsumerNotes,
    producer: FutureProducer,
    lake: LakeWriter,
    /// Shared with the stores in flight.
    store: Arc<LakeStore>,
    /// Lake objects being stored, off the loop (a local file's write and fsync on the blocking
    /// pool, a GCS upload on the runtime): their lines are acknowledged when they land.
    storing: tokio::task::JoinSet<StoredSegment>,
    /// Partitions whose stored lake objects are known (listed since they were assigned).
    listed: HashSet<i32>,
    /// Room a document takes in the batch's buffer: the last batch's average and a little more,
    /// so that encoding does not regrow (and copy) the buffer; bounded, so that one huge tick does
    /// not make the following batches reserve its size for every document.
    document_capacity: usize,
    es: Option<EsSink>,
    tracker: CommitTracker,
    telemetry: Arc<Telemetry>,
    /// Partition -> the offset after the last message consumed from it; gaps the broker deleted.
    positions: Positions,
    /// The bootstrap servers, to name them when the brokers do not answer.
    brokers: String,
    /// When `run --once` last said what it waits for.
    waiting_noted: Option<Instant>,
    /// A file being replayed beside the pipeline (`run --input` on the embedded cluster).
    input: Option<InputFeed>,
    /// The aggregate stage, when configured.
    bars: Option<bars::Bars>,
}

/// A file replayed into the topic while the pipeline consumes it: `run --once` ends where the
/// replay ends, and the committed offsets are kept in a checkpoint beside the lake.
pub struct InputFeed {
    /// Partition -> end of the replayed file, once the replay is done (or why it failed).
    ends: tokio::sync::oneshot::Receiver<anyhow::Result<BTreeMap<i32, i64>>>,
    checkpoint: InputCheckpoint,
    /// When the checkpoint was last stored, and whether it has moved since.
    saved_at: Option<Instant>,
    unsaved: bool,
}

impl InputFeed {
    /// `ends` answers once the replay is done; `checkpoint` is where the file resumes.
    pub fn new(
        ends: tokio::sync::oneshot::Receiver<anyhow::Result<BTreeMap<i32, i64>>>,
        checkpoint: InputCheckpoint,
    ) -> Self {
        Self {
            ends,
            checkpoint,
            saved_at: None,
            unsaved: false,
        }
    }
}

/// Kafka calls that wait on the broker give up after this long.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

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
        let producer = kafka_source::producer(brokers)?;
        let location = config.lake.location()?;
        let store = LakeStore::open(&location, config.lake.gcs_options())
            .await
            .with_context(|| format!("opening the lake at {location}"))?;
        let store = Arc::new(store);
        tracing::info!(lake = %location, "lake");
        telemetry.set_ready(Dependency::Lake, Ok(()));
        let es = if config.elasticsearch.url.is_empty() {
            None
        } else {
            let settings = config
                .elasticsearch
                .settings(|key| std::env::var(key).ok())?;
            let dead_letters = DeadLetters {
                producer: producer.clone(),
                topic: k.dead_letter_topic.clone(),
            };
            let sink = EsSink::connect(settings, dead_letters, telemetry.clone())
                .await
                .with_context(|| {
                    format!(
                        "connecting to Elasticsearch at {}",
                        config.elasticsearch.url
                    )
                })?;
            tracing::info!(url = %config.elasticsearch.url, "Elasticsearch sink ready");
            Some(sink)
        };
        let (consumer, consumer_notes) = kafka_source::pipeline_consumer(
            brokers,
            &k.group_id,
            &k.topic,
            k.group_timeouts(),
            telemetry.clone(),
        )?;
        let lake = LakeWriter::new(
            LakeConfig {
                roll_bytes: config.lake.roll_bytes,
                roll_age: Duration::from_secs(config.lake.roll_seconds),
                gzip: config.lake.gzip,
                spill_bytes: store.spools().then_some(LAKE_SPILL_BYTES),
            },
            k.topic.clone(),
        );
        let registry = Arc::new(GuestRegistry::default());
        registry.set_loaded(&chain.components());
        Ok(Self {
            config,
            deliveries: Vec::new(),
            storing: tokio::task::JoinSet::new(),
            generations: HashMap::new(),
            chain,
            registry,
            shadow: Arc::new(Mutex::new(ShadowBuffer::new(0))),
            swaps: None,
            consumer: Arc::new(consumer),
            consumer_notes,
            producer,
            lake,
            store,
            listed: HashSet::new(),
            document_capacity: 1024,
            es,
            tracker: CommitTracker::default(),
            telemetry,
            positions: Positions::default(),
            brokers: brokers.to_string(),
            waiting_noted: None,
            input: None,
            bars: None,
        })
    }

    /// Metrics, readiness and the live view of this pipeline (for the HTTP API).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Shares what is loaded and what happened (processed count, swaps) with `registry`.
    pub fn with_registry(mut self, registry: Arc<GuestRegistry>) -> Self {
        registry.set_loaded(&self.chain.components());
        self.registry = registry;
        self
    }

    /// Runs the aggregate stage after the chain: bars to the index and the lake, its state
    /// checkpointed beside the lake (see [`bars`]).
    pub fn with_aggregation(mut self, aggregation: crate::chain::aggregate::Aggregation) -> Self {
        let lake = LakeConfig {
            roll_bytes: self.config.lake.roll_bytes,
            roll_age: Duration::from_secs(self.config.lake.roll_seconds),
            gzip: self.config.lake.gzip,
            // Bars fill a segment slowly; they are not worth a spool file.
            spill_bytes: None,
        };
        self.registry.set_aggregate(aggregation.component());
        self.bars = Some(bars::Bars::new(
            aggregation,
            self.config.aggregate.clone(),
            lake,
        ));
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
        self.swaps = Some(applier);
        self.shadow = shadow;
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
        let mut targets = if once && self.input.is_none() {
            Some(self.once_targets()?)
        } else {
            None
        };
        tokio::pin!(shutdown);
        let grace = Duration::from_millis(self.config.elasticsearch.shutdown_grace_ms);
        // Once a stop is requested, everything left — the batch in hand, the sinks' last
        // acknowledgements, the final commit — shares one grace period.
        let consumer = self.consumer.clone();
        let notes = self.consumer_notes.clone();
        let revoke_timeout = self.config.kafka.revoke_timeout();
        let patience = keep_member_after(Duration::from_millis(
            self.config.kafka.max_poll_interval_ms,
        ));
        // Messages taken while the partitions were being paused: the next batch starts with them.
        let mut carried: Vec<Consumed> = Vec::new();
        let stop_by = loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch?,
                () = &mut shutdown => {
                    tracing::info!("shutdown requested");
                    break Some(tokio::time::Instant::now() + grace);
                }
            };
            let batch = if carried.is_empty() {
                batch
            } else {
                carried.extend(batch);
                std::mem::take(&mut carried)
            };
            self.between_batches(&batch);
            if once && targets.is_none() {
                targets = self.input_ends()?;
            }
            let done = {
                // A sink that is down makes this wait; past `patience` the partitions are paused
                // and the consumer polled, so that it stays a member of its group however long the
                // outage. A shutdown still gets through, and what is not acknowledged is not
                // committed.
                let mut paused = None;
                let step = self.step(batch, targets.as_mut());
                tokio::pin!(step);
                let outcome = tokio::select! {
                    done = &mut step => Some(done),
                    never = keep_member(&consumer, &notes, revoke_timeout, patience, &mut paused, &mut carried) => match never {},
                    () = &mut shutdown => None,
                };
                if let Some(partitions) = paused {
                    resume(&consumer, &partitions);
                }
                match outcome {
                    Some(done) => done?,
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
                        break Some(stop_by);
                    }
                }
            };
            if done {
                break None;
            }
            self.release_revoked().await;
        };
        drop(consumer);
        let kafka_timeout = self.settle(stop_by).await?;
        self.close(targets, kafka_timeout).await
    }

    /// The `--once` targets, read from the brokers.
    fn once_targets(&self) -> anyhow::Result<OnceTargets> {
        let k = &self.config.kafka;
        let read = || {
            OnceTargets::read(
                &**self.consumer,
                &k.topic,
                KAFKA_TIMEOUT,
                Duration::from_millis(k.max_poll_interval_ms),
                Duration::from_millis(k.statistics_interval_ms),
            )
        };
        tokio::task::block_in_place(read).with_context(|| {
            format!(
                "run --once: reading where {} ends from the brokers at {}",
                k.topic, self.brokers
            )
        })
    }

    /// The sinks' last acknowledgements: all of them at the end of a run, or whatever comes by
    /// `stop_by` when stopping. Returns how long each of the last Kafka calls may take: what is
    /// left of the grace when stopping (at least a second: without the commit the next owner
    /// starts further back).
    async fn settle(&mut self, stop_by: Option<tokio::time::Instant>) -> anyhow::Result<Duration> {
        let Some(stop_by) = stop_by else {
            self.finish_sinks().await?;
            return Ok(KAFKA_TIMEOUT);
        };
        match tokio::time::timeout_at(stop_by, self.finish_sinks()).await {
            Ok(finished) => finished?,
            Err(_) => tracing::warn!(
                unacknowledged = self.tracker.in_flight(),
                "the sinks did not acknowledge everything within the shutdown grace; the rest is not committed and will be delivered again"
            ),
        }
        let left = stop_by.saturating_duration_since(tokio::time::Instant::now());
        Ok(left.clamp(Duration::from_secs(1), KAFKA_TIMEOUT))
    }

    /// Starts the partitions assigned since the last batch, notes what `batch` consumed (and any
    /// offsets the broker deleted before this group got to them), forgets partitions let go of
    /// without their work stored, and applies a pending guest swap — between two batches, the
    /// only place a guest may change.
    fn between_batches(&mut self, batch: &[Consumed]) {
        let assigned = self.consumer_notes.rebalance.take_assigned();
        self.start_partitions(&assigned);
        let gaps: Vec<_> = batch
            .iter()
            .filter_map(|m| self.positions.consumed(m.source.partition, m.source.offset))
            .collect();
        for gap in gaps {
            self.check_gap(gap);
        }
        // Let go of at once (the assignment was lost, or the wait for the sinks ran out): their
        // unacknowledged offsets go to the next owner, so their buffered lake lines are dropped,
        // not written twice.
        for partition in self.consumer_notes.rebalance.take_dropped() {
            let dropped = self.forget_partition(partition);
            tracing::info!(
                partition,
                dropped,
                "forgot a partition let go of; its uncommitted work goes to its next owner"
            );
        }
        let Some(swaps) = &mut self.swaps else {
            return;
        };
        let (pause, stateful) = swaps.apply_pending(&mut self.chain);
        if let Some(pause) = pause {
            tracing::info!(
                pause_us = pause.as_micros() as u64,
                "guest swapped between batches"
            );
        }
        for swap in stateful {
            self.swap_aggregate(swap);
        }
    }

    /// Forgets what this host knew of `partition` (no longer its own). Returns the buffered lake
    /// lines dropped.
    fn forget_partition(&mut self, partition: i32) -> usize {
        *self.generations.entry(partition).or_default() += 1;
        self.listed.remove(&partition);
        self.tracker.forget(partition);
        self.positions.forget(partition);
        if let Some(bars) = &mut self.bars {
            bars.forget(partition);
        }
        self.lake.discard(partition)
    }

    /// How many times `partition`'s work has been forgotten (see `generations`).
    fn generation(&self, partition: i32) -> u64 {
        self.generations.get(&partition).copied().unwrap_or(0)
    }

    /// Newly assigned partitions: where each resumes, and what the broker deleted before this
    /// group stored it (reported, see [`Telemetry::offsets_lost`]). A partition the group never
    /// committed is committed at the log's start now, so that a later loss there shows.
    fn start_partitions(&mut self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        let topic = self.config.kafka.topic.clone();
        let consumer = &**self.consumer;
        let starts = tokio::task::block_in_place(|| {
            let committed = kafka_source::committed_offsets(
                consumer,
                &topic,
                partitions.iter().copied(),
                KAFKA_TIMEOUT,
            )?;
            partitions
                .iter()
                .map(|&p| {
                    let start = kafka_source::log_start(consumer, &topic, p, KAFKA_TIMEOUT)?;
                    Ok((p, committed.get(&p).copied(), start))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        });
        let starts = match starts {
            Ok(starts) => starts,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), ?partitions, "could not read where the assigned partitions start: offsets the broker deleted there are not checked");
                if let Some(bars) = &mut self.bars {
                    for &partition in partitions {
                        bars.assigned(partition, Err(format!("{e:#}")));
                    }
                }
                return;
            }
        };
        let mut never_committed = BTreeMap::new();
        for (partition, committed, start) in starts {
            if let Some(bars) = &mut self.bars {
                bars.assigned(partition, Ok(committed));
            }
            if let Some(lost) = self.positions.start(partition, committed, start) {
                self.telemetry.offsets_lost(&topic, lost);
            }
            if committed.is_none() {
                never_committed.insert(partition, start);
            }
        }
        let pinned = tokio::task::block_in_place(|| {
            kafka_source::commit_positions(consumer, &topic, &never_committed)
        });
        if let Err(e) = pinned {
            tracing::warn!(error = %format!("{e:#}"), "committing the start of partitions the group never committed failed");
        }
    }

    /// A jump in a partition's offsets: lost as far as the broker's log starts past it.
    fn check_gap(&mut self, gap: crate::source::positions::Gap) {
        let topic = &self.config.kafka.topic;
        let consumer = &**self.consumer;
        match tokio::task::block_in_place(|| {
            kafka_source::log_start(consumer, topic, gap.partition, KAFKA_TIMEOUT)
        }) {
            Ok(start) => match gap.lost(start) {
                Some(lost) => self.telemetry.offsets_lost(topic, lost),
                None => tracing::debug!(
                    ?gap,
                    "a gap in the offsets the log still covers (compaction or transaction markers)"
                ),
            },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), ?gap, "offsets skipped, and the log's start could not be read to tell whether they were deleted")
            }
        }
    }

    /// Partitions the group revoked: stores what this host holds for them (their lake lines;
    /// everything in flight to Elasticsearch, which settles per request, not per partition) and
    /// commits it, within `kafka.revoke_timeout_ms`, then lets go of them. Their next owner
    /// starts where this host stopped; what could not be stored in time goes to it again.
    async fn release_revoked(&mut self) {
        let Some(partitions) = self.consumer_notes.rebalance.revoking() else {
            return;
        };
        let started = Instant::now();
        let limit = self.config.kafka.revoke_timeout();
        let mut rolled = self.lake.roll_partitions(&partitions);
        if let Some(bars) = &mut self.bars {
            rolled.extend(bars.roll_partitions(&partitions));
        }
        let store = async {
            self.store_segments(rolled).await?;
            self.collect_stores(true).await?;
            self.collect_deliveries(true).await?;
            self.flush_index(true).await?;
            self.save_states(true).await
        };
        match tokio::time::timeout(limit, store).await {
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
        let positions: BTreeMap<i32, i64> = partitions
            .iter()
            .filter_map(|&p| self.commit_position(p).map(|at| (p, at)))
            .collect();
        let topic = &self.config.kafka.topic;
        let consumer = &**self.consumer;
        let committed = tokio::task::block_in_place(|| {
            let list: Vec<(i32, i64)> = positions.iter().map(|(&p, &at)| (p, at)).collect();
            kafka_source::store_positions(consumer, topic, &list)?;
            kafka_source::commit_positions(consumer, topic, &positions)
        });
        if let Err(e) = committed {
            tracing::warn!(error = %format!("{e:#}"), ?positions, "committing revoked partitions failed; their next owner starts from the last commit");
        }
        for partition in self.consumer_notes.rebalance.release(consumer) {
            self.forget_partition(partition);
        }
        tracing::info!(
            ?positions,
            took_ms = started.elapsed().as_millis() as u64,
            "revoked partitions stored and committed before letting go"
        );
    }

    /// One batch through the chain and into its sinks, then what is due: segments rolled, bulks
    /// sent, offsets stored. True when `run --once` is done.
    async fn step(
        &mut self,
        batch: Vec<Consumed>,
        targets: Option<&mut OnceTargets>,
    ) -> anyhow::Result<bool> {
        self.process(batch).await?;
        self.collect_deliveries(false).await?;
        let now = Instant::now();
        let mut rolled = self.lake.roll_due(now);
        if let Some(bars) = &mut self.bars {
            rolled.extend(bars.roll_due(now));
        }
        self.store_segments(rolled).await?;
        self.collect_stores(false).await?;
        self.flush_index(false).await?;
        self.save_states(false).await?;
        self.store_advanced()?;
        self.save_checkpoint(false).await;
        let Some(targets) = targets else {
            return Ok(false);
        };
        if !targets.reached(self.positions.next()) {
            self.note_waiting(targets);
            return Ok(false);
        }
        let notes = &self.consumer_notes;
        let topic = &self.config.kafka.topic;
        match targets.next_step(
            self.positions.next(),
            |p| notes.fetched_end(topic, p),
            notes.statistics_reports(),
            Instant::now(),
        ) {
            OnceStep::Done => {
                self.finish_sinks().await?;
                return Ok(self.tracker.in_flight() == 0);
            }
            OnceStep::Raised(raised) => tracing::info!(
                ?raised,
                "run --once: fetches report more than the end read at start (messages produced since, or a broker whose ListOffsets answers short, as Tansu 0.6 does); going on to there"
            ),
            OnceStep::AwaitStatistics => {}
        }
        Ok(false)
    }

    /// `run --once` waiting on partitions this host does not hold: every few seconds, says which,
    /// and which member of the group holds them (their committed offsets have to reach the end).
    fn note_waiting(&mut self, targets: &OnceTargets) {
        const EVERY: Duration = Duration::from_secs(5);
        if self.waiting_noted.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.waiting_noted = Some(Instant::now());
        let own: HashSet<i32> = rdkafka::consumer::Consumer::assignment(&**self.consumer)
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        if !self.consumer_notes.rebalance.joined() {
            // Not assigned anything yet, not even an empty set: the group is still forming
            // (joining takes seconds).
            tracing::debug!("run --once: waiting for the group to assign partitions");
            return;
        }
        let elsewhere: Vec<i32> = targets
            .short_of_end(self.positions.next())
            .into_iter()
            .filter(|p| !own.contains(p))
            .collect();
        if elsewhere.is_empty() {
            return;
        }
        let k = &self.config.kafka;
        let holders = tokio::task::block_in_place(|| {
            kafka_source::partition_holders(
                &**self.consumer,
                &k.group_id,
                &k.topic,
                Duration::from_secs(2),
            )
        });
        let held_by = match holders {
            Ok(members) => members
                .into_iter()
                .filter(|(_, partitions)| partitions.iter().any(|p| elsewhere.contains(p)))
                .map(|(who, partitions)| format!("{who} holds {partitions:?}"))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(the group could not be described: {e:#})"),
        };
        tracing::warn!(
            partitions = ?elsewhere,
            held_by = %held_by,
            "run --once: waiting for partitions another member of the group holds to be committed to their end"
        );
    }

    /// Commits the last positions, reads back what the group has committed, and leaves the group,
    /// each Kafka call bounded by `timeout`.
    async fn close(
        mut self,
        targets: Option<OnceTargets>,
        timeout: Duration,
    ) -> anyhow::Result<RunSummary> {
        self.save_checkpoint(true).await;
        let topic = &self.config.kafka.topic;
        let positions: BTreeMap<i32, i64> = self
            .positions
            .next()
            .keys()
            .filter_map(|&p| self.commit_position(p).map(|pos| (p, pos)))
            .collect();
        if let Err(e) = tokio::task::block_in_place(|| {
            kafka_source::commit_positions(&**self.consumer, topic, &positions)
        }) {
            // E.g. a rebalance under way as the group shrinks. Whatever is not committed is
            // redelivered (at least once); `committed_offsets` below says what the group has.
            tracing::warn!(error = %format!("{e:#}"), "the final commit failed");
        }
        let all_partitions: Vec<i32> = match &targets {
            Some(targets) => targets.ends.keys().copied().collect(),
            None => positions.keys().copied().collect(),
        };
        let committed_offsets = tokio::task::block_in_place(|| {
            kafka_source::committed_offsets(&**self.consumer, topic, all_partitions, timeout)
        })?;
        for (&partition, &offset) in &committed_offsets {
            self.telemetry.committed_offset(topic, partition, offset);
        }
        let summary = RunSummary {
            counts: self.telemetry.counts(),
            committed_offsets,
            lost_ranges: self.telemetry.lost_ranges(),
            input_refused: Vec::new(),
        };
        // Leaving the group: bounded, so that a rebalance under way cannot hang the shutdown.
        let consumer = self.consumer;
        tokio::task::block_in_place(|| {
            kafka_source::drop_within(consumer, timeout, "the Kafka consumer")
        });
        Ok(summary)
    }

    /// Up to `batch_max` messages, waiting at most `batch_wait_ms` once the first has arrived
    /// (and at most 200 ms for the first, so that the loop can roll segments and notice the end).
    async fn next_batch(&mut self) -> anyhow::Result<Vec<Consumed>> {
        let max = self.config.kafka.batch_max;
        let wait = Duration::from_millis(self.config.kafka.batch_wait_ms);
        let mut batch = Vec::with_capacity(max);
        let mut deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut topic: Arc<str> = Arc::from("");
        while batch.len() < max {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    // Transient consumer errors (e.g. a partition EOF, a broker hiccup) are logged;
                    // librdkafka retries on its own.
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            if batch.is_empty() {
                deadline = tokio::time::Instant::now() + wait;
            }
            batch.push(Consumed::from(&message, &mut topic));
        }
        Ok(batch)
    }

    /// Stores every open lake segment, sends and awaits everything for Elasticsearch, and stores
    /// the offsets that moved.
    async fn finish_sinks(&mut self) -> anyhow::Result<()> {
        let mut flushed = self.lake.flush();
        if let Some(bars) = &mut self.bars {
            flushed.extend(bars.flush());
        }
        self.store_segments(flushed).await?;
        self.collect_stores(true).await?;
        self.collect_deliveries(true).await?;
        self.flush_index(true).await?;
        self.save_states(true).await?;
        self.store_advanced()
    }

    /// How far `partition` may be committed: the commit tracker's position, capped at the newest
    /// stored checkpoint of its aggregate state when that stage runs.
    fn commit_position(&self, partition: i32) -> Option<i64> {
        let position = self.tracker.position(partition)?;
        match &self.bars {
            Some(bars) => bars.capped(partition, position),
            None => Some(position),
        }
    }

    /// Learns which offset ranges the lake already holds (after a crash, objects may be stored
    /// whose offsets were never committed; they are not written twice).
    async fn list_lake(&mut self) -> anyhow::Result<()> {
        let topic = self.lake.topic().to_string();
        let stale = LAKE_LEFTOVERS_AFTER.max(Duration::from_secs(
            self.config.lake.roll_seconds.saturating_mul(2),
        ));
        let swept = self.store.sweep_leftovers(&topic, stale).await;
        if swept > 0 {
            tracing::info!(
                files = swept,
                older_than_s = stale.as_secs(),
                "removed a crash's leftover temporary and spool files from the lake"
            );
        }
        let names = self
            .store
            .list(&topic)
            .await
            .context("listing the lake's objects")?;
        tracing::debug!(objects = names.len(), "listed the lake");
        self.lake.set_existing(names.iter().map(String::as_str));
        if let Some(bars) = &mut self.bars {
            let prefix = bars.lake_prefix().to_string();
            let names = self
                .store
                .list(&prefix)
                .await
                .context("listing the lake's bar objects")?;
            bars.set_existing(names.iter().map(String::as_str));
        }
        Ok(())
    }

    /// Puts rolled segments in the lake store, then acknowledges their offsets.
    async fn store_segments(&mut self, segments: Vec<RolledSegment>) -> anyhow::Result<()> {
        // Spilled pieces first: a segment's object starts with them.
        for op in self.lake.take_spool_ops() {
            self.store.spool(op).await;
        }
        for segment in segments {
            while self.storing.len() >= LAKE_STORES_IN_FLIGHT {
                let done = self
                    .storing
                    .join_next()
                    .await
                    .expect("stores are in flight");
                self.segment_stored(done)?;
            }
            let store = self.store.clone();
            let generation = self.generation(segment.partition);
            self.storing.spawn(async move {
                let started = Instant::now();
                let stored = store
                    .put_segment(&segment.name, segment.spool, segment.bytes)
                    .await;
                StoredSegment {
                    name: segment.name,
                    partition: segment.partition,
                    generation,
                    offsets: segment.offsets,
                    took: started.elapsed(),
                    stored,
                }
            });
        }
        Ok(())
    }

    /// The lake objects that have landed (all of them, waiting, with `all`): their lines are
    /// acknowledged; one that failed stops the run (its offsets are not committed).
    async fn collect_stores(&mut self, all: bool) -> anyhow::Result<()> {
        loop {
            let done = if all {
                self.storing.join_next().await
            } else {
                self.storing.try_join_next()
            };
            match done {
                Some(done) => self.segment_stored(done)?,
                None => return Ok(()),
            }
        }
    }

    fn segment_stored(
        &mut self,
        done: Result<StoredSegment, tokio::task::JoinError>,
    ) -> anyhow::Result<()> {
        let segment = done.context("a lake store panicked")?;
        self.telemetry.sink_request(Sink::Lake, segment.took);
        self.telemetry.set_ready(
            Dependency::Lake,
            segment
                .stored
                .as_ref()
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        segment
            .stored
            .with_context(|| format!("storing lake object {}", segment.name))?;
        let lines = segment.offsets.len();
        self.telemetry.lake_object_stored(lines as u64);
        tracing::debug!(object = %segment.name, lines, "lake object stored");
        if segment.generation != self.generation(segment.partition) {
            // Stored, but the partition was let go of and taken again meanwhile: the offsets
            // tracked since are acknowledged by their own copy.
            return Ok(());
        }
        for offset in segment.offsets {
            self.tracker.ack(segment.partition, offset);
        }
        Ok(())
    }

    /// Sends what is due to Elasticsearch (everything with `all`, waiting for it) and acknowledges
    /// what it has settled.
    async fn flush_index(&mut self, all: bool) -> anyhow::Result<()> {
        let Some(es) = &mut self.es else {
            return Ok(());
        };
        let report = if all {
            es.drain().await?
        } else {
            es.flush_due(Instant::now()).await?
        };
        self.acknowledge_index(report);
        Ok(())
    }

    /// Counts what Elasticsearch settled and acknowledges it.
    fn acknowledge_index(&mut self, report: BulkReport) {
        self.telemetry.index_settled(
            report.indexed,
            report.dead_lettered,
            report.retried_items,
            report.retried_requests,
        );
        for (source, generation) in report.acked {
            // A request sent before the partition was let go of and taken again does not count.
            if generation == self.generation(source.partition) {
                self.tracker.ack(source.partition, source.offset);
            }
        }
    }

    /// The `--once` targets of a replayed file, once its replay is done: its ends, and the group's
    /// committed offsets (a partition resumed at its end has nothing left).
    fn input_ends(&mut self) -> anyhow::Result<Option<OnceTargets>> {
        use tokio::sync::oneshot::error::TryRecvError;
        let Some(input) = &mut self.input else {
            return Ok(None);
        };
        let ends = match input.ends.try_recv() {
            Ok(ends) => ends.context("replaying the input")?,
            Err(TryRecvError::Empty) => return Ok(None),
            Err(TryRecvError::Closed) => anyhow::bail!("the input's replay stopped without a word"),
        };
        let k = &self.config.kafka;
        let committed = tokio::task::block_in_place(|| {
            kafka_source::committed_offsets(
                &**self.consumer,
                &k.topic,
                ends.keys().copied(),
                KAFKA_TIMEOUT,
            )
        })?;
        tracing::info!(
            ?ends,
            ?committed,
            "run --once: the input is replayed; processing up to its end"
        );
        Ok(Some(OnceTargets::new(
            ends,
            committed,
            Duration::from_millis(k.statistics_interval_ms),
        )))
    }

    /// Stores the replayed file's checkpoint when its offsets moved (at most every second, unless
    /// `now`). A failure is logged: the next one carries the same offsets.
    async fn save_checkpoint(&mut self, now: bool) {
        let Some(input) = &mut self.input else {
            return;
        };
        let due = input
            .saved_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if !input.unsaved || !(now || due) {
            return;
        }
        let name = input.checkpoint.object_name(&self.config.kafka.topic);
        let bytes = serde_json::to_vec(&input.checkpoint).expect("a checkpoint serializes");
        match self.store.put(&name, bytes).await {
            Ok(()) => {
                input.saved_at = Some(Instant::now());
                input.unsaved = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, checkpoint = %name, "storing the input's checkpoint failed")
            }
        }
    }

    fn store_advanced(&mut self) -> anyhow::Result<()> {
        let mut advanced = self.tracker.advanced();
        if let Some(bars) = &mut self.bars {
            advanced = bars.cap(advanced);
        }
        if let Some(input) = &mut self.input
            && input.checkpoint.advance(&advanced)
        {
            input.unsaved = true;
        }
        if let Err(e) =
            kafka_source::store_positions(&**self.consumer, &self.config.kafka.topic, &advanced)
        {
            // A partition revoked a moment ago refuses the store; it is forgotten at the next
            // iteration and its offsets stay with the new owner. Nothing is lost by not storing.
            tracing::warn!(error = %e, "storing offsets failed");
        }
        Ok(())
    }
}
