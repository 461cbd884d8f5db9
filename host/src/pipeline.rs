//! The run loop: Kafka batch → decode → guest chain → sinks → acknowledgements → offsets.
//!
//! One batch at a time: the guests see a whole batch in one call per stage; the sinks are handed
//! every outcome; dead letters and alerts are awaited before the next batch (so the producer never
//! buffers without bound); lake segments acknowledge once their object is stored; Elasticsearch
//! acknowledges per bulk request, with a bounded number out (a full pipe makes the loop wait).
//! Offsets move only through the [`CommitTracker`](crate::commit::CommitTracker): a message is
//! committed after every sink it was routed to has acknowledged it.

use crate::chain::{Refusal, StageChain, StageOutcome, WasmChain};
use crate::commit::CommitTracker;
use crate::config::Config;
use crate::runtime::swap::{GuestRegistry, ShadowBuffer, SwapApplier};
use crate::sink::elasticsearch::{BulkItem, BulkReport, DeadLetters, EsSink};
use crate::sink::lake::{Appended, LakeConfig, LakeWriter, RolledSegment};
use crate::sink::store::LakeStore;
use crate::sink::{SourceRef, document, kafka as kafka_sink};
use crate::source::kafka as kafka_source;
use crate::telemetry::{BatchRecord, Dependency, Sink, Telemetry};
use anyhow::Context;
use rdkafka::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a run did, printed as one JSON line at exit.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    pub consumed: u64,
    pub accepted: u64,
    /// Refused by decoding or by a guest (each one is dead-lettered).
    pub rejected: u64,
    /// Dead letters the broker acknowledged.
    pub dead_lettered: u64,
    pub alerts: u64,
    pub lake_objects: u64,
    pub lake_lines: u64,
    /// Re-delivered lines an object already in the lake covered (not written twice).
    pub lake_already_stored: u64,
    /// Documents Elasticsearch acknowledged as indexed.
    pub indexed: u64,
    /// Documents Elasticsearch refused (mapping/parse errors), sent to the dead-letter topic.
    pub index_dead_lettered: u64,
    /// Bulk items and whole bulk requests sent again (429, 5xx, connection failures).
    pub index_retried_items: u64,
    pub index_retried_requests: u64,
    /// Partition -> the group's committed offset (the next offset to consume), read back from the broker.
    pub committed_offsets: BTreeMap<i32, i64>,
}

/// One consumed message, detached from the consumer.
struct Consumed {
    source: SourceRef,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

enum Pending {
    /// With the stage that refused the tick.
    DeadLetter(SourceRef, DeliveryFuture, &'static str),
    Alert(SourceRef, DeliveryFuture),
}

pub struct Pipeline {
    config: Config,
    chain: WasmChain,
    registry: Arc<GuestRegistry>,
    shadow: Arc<Mutex<ShadowBuffer>>,
    swaps: Option<SwapApplier>,
    consumer: kafka_source::PipelineConsumer,
    /// Revoked partitions and fetch-reported partition ends, from the consumer's callbacks.
    consumer_notes: kafka_source::ConsumerNotes,
    producer: FutureProducer,
    lake: LakeWriter,
    store: LakeStore,
    /// Partitions whose stored lake objects are known (listed since they were assigned).
    listed: HashSet<i32>,
    /// Room a new document's buffer starts with: the last document's length and a little more,
    /// so that encoding does not regrow (and copy) it; bounded, because every buffer waits in the
    /// bulk queue and one huge tick must not make all the following ones reserve its size.
    document_capacity: usize,
    es: Option<EsSink>,
    tracker: CommitTracker,
    summary: RunSummary,
    telemetry: Arc<Telemetry>,
}

impl Pipeline {
    /// Connects the sinks (puts the Elasticsearch templates, opens the lake store) and joins the
    /// consumer group.
    pub async fn new(config: Config, brokers: &str, chain: WasmChain) -> anyhow::Result<Self> {
        let k = &config.kafka;
        let telemetry = Arc::new(Telemetry::new());
        let producer = kafka_source::producer(brokers)?;
        let location = config.lake.location()?;
        let store = LakeStore::open(&location, config.lake.gcs_options())
            .await
            .with_context(|| format!("opening the lake at {location}"))?;
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
            },
            k.topic.clone(),
        );
        let registry = Arc::new(GuestRegistry::default());
        registry.set_loaded(&chain.components());
        Ok(Self {
            config,
            chain,
            registry,
            shadow: Arc::new(Mutex::new(ShadowBuffer::new(0))),
            swaps: None,
            consumer,
            consumer_notes,
            producer,
            lake,
            store,
            listed: HashSet::new(),
            document_capacity: 1024,
            es,
            tracker: CommitTracker::default(),
            summary: RunSummary::default(),
            telemetry,
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
        let topic = self.config.kafka.topic.clone();
        let timeout = Duration::from_secs(10);
        let mut targets = if once {
            let high = tokio::task::block_in_place(|| {
                kafka_source::high_watermarks(&self.consumer, &topic, timeout)
            })?;
            // The group coordinator may not answer while a rebalance waits for a member that
            // died without leaving (after a crash): keep asking for as long as that may take.
            let give_up = Instant::now()
                + Duration::from_millis(self.config.kafka.max_poll_interval_ms)
                + timeout;
            let committed = loop {
                let fetched = tokio::task::block_in_place(|| {
                    kafka_source::committed_offsets(
                        &self.consumer,
                        &topic,
                        high.keys().copied(),
                        timeout,
                    )
                });
                match fetched {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < give_up => {
                        tracing::warn!(error = %format!("{e:#}"), "the group's committed offsets are not available yet; asking again");
                    }
                    Err(e) => return Err(e),
                }
            };
            tracing::info!(
                ?high,
                ?committed,
                "run --once: processing up to the current end of the topic"
            );
            let statistics = Duration::from_millis(self.config.kafka.statistics_interval_ms);
            Some(OnceTargets::new(high, committed, statistics))
        } else {
            None
        };
        let mut consumed_to: BTreeMap<i32, i64> = BTreeMap::new();
        tokio::pin!(shutdown);
        let mut stopping = false;
        let grace = Duration::from_millis(self.config.elasticsearch.shutdown_grace_ms);
        loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch?,
                () = &mut shutdown => {
                    tracing::info!("shutdown requested");
                    stopping = true;
                    break;
                }
            };
            for m in &batch {
                let next = consumed_to.entry(m.source.partition).or_insert(0);
                *next = (*next).max(m.source.offset + 1);
            }
            // Partitions taken away in a rebalance: their unacknowledged offsets go to the new
            // owner, so their buffered lake lines are dropped, not written twice.
            for partition in self.consumer_notes.take_revoked() {
                let dropped = self.lake.discard(partition);
                self.listed.remove(&partition);
                self.tracker.forget(partition);
                consumed_to.remove(&partition);
                tracing::info!(partition, dropped, "let go of a revoked partition");
            }
            // Between two batches: the only place a guest may change.
            if let Some(swaps) = &mut self.swaps
                && let Some(pause) = swaps.apply_pending(&mut self.chain)
            {
                tracing::info!(
                    pause_us = pause.as_micros() as u64,
                    "guest swapped between batches"
                );
            }
            // A sink that is down makes this wait (the consumer pauses); a shutdown still gets
            // through, and what is not acknowledged is not committed.
            let step = async {
                self.process(batch).await?;
                let rolled = self.lake.roll_due(Instant::now());
                self.store_segments(rolled).await?;
                self.flush_index(false).await?;
                self.store_advanced()?;
                if let Some(targets) = &mut targets
                    && targets.reached(&consumed_to)
                {
                    let notes = &self.consumer_notes;
                    match targets.next_step(
                        &consumed_to,
                        |p| notes.fetched_end(&topic, p),
                        notes.statistics_reports(),
                        Instant::now(),
                    ) {
                        OnceStep::Done => {
                            self.finish_sinks().await?;
                            return Ok::<bool, anyhow::Error>(self.tracker.in_flight() == 0);
                        }
                        OnceStep::Raised(raised) => tracing::info!(
                            ?raised,
                            "run --once: fetches report more than the end read at start (messages produced since, or a broker whose ListOffsets answers short, as Tansu 0.6 does); going on to there"
                        ),
                        OnceStep::AwaitStatistics => {}
                    }
                }
                Ok(false)
            };
            tokio::pin!(step);
            let done = tokio::select! {
                done = &mut step => done?,
                () = &mut shutdown => {
                    // Let the batch finish if its sinks answer within the grace period.
                    stopping = true;
                    match tokio::time::timeout(grace, &mut step).await {
                        Ok(finished) => {
                            finished?;
                        }
                        Err(_) => tracing::warn!(
                            "shutdown: a sink did not answer within the grace period; the batch stays uncommitted"
                        ),
                    }
                    break;
                }
            };
            if done {
                break;
            }
        }
        if stopping {
            match tokio::time::timeout(grace, self.finish_sinks()).await {
                Ok(finished) => finished?,
                Err(_) => tracing::warn!(
                    unacknowledged = self.tracker.in_flight(),
                    "the sinks did not acknowledge everything within the shutdown grace; the rest is not committed and will be delivered again"
                ),
            }
        } else {
            self.finish_sinks().await?;
        }
        let positions: BTreeMap<i32, i64> = consumed_to
            .keys()
            .filter_map(|&p| self.tracker.position(p).map(|pos| (p, pos)))
            .collect();
        if let Err(e) = tokio::task::block_in_place(|| {
            kafka_source::commit_positions(&self.consumer, &topic, &positions)
        }) {
            // E.g. a rebalance under way as the group shrinks. Whatever is not committed is
            // redelivered (at least once); `committed_offsets` below says what the group has.
            tracing::warn!(error = %format!("{e:#}"), "the final commit failed");
        }
        let all_partitions: Vec<i32> = match &targets {
            Some(targets) => targets.ends.keys().copied().collect(),
            None => positions.keys().copied().collect(),
        };
        self.summary.committed_offsets = tokio::task::block_in_place(|| {
            kafka_source::committed_offsets(&self.consumer, &topic, all_partitions, timeout)
        })?;
        for (&partition, &offset) in &self.summary.committed_offsets {
            self.telemetry.committed_offset(&topic, partition, offset);
        }
        let Self {
            consumer, summary, ..
        } = self;
        // Leaving the group: bounded, so that a rebalance under way cannot hang the shutdown.
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
            batch.push(Consumed {
                source: SourceRef {
                    topic: message.topic().to_string(),
                    partition: message.partition(),
                    offset: message.offset(),
                },
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            });
        }
        Ok(batch)
    }

    async fn process(&mut self, batch: Vec<Consumed>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.summary.consumed += batch.len() as u64;
        if batch
            .iter()
            .any(|m| !self.listed.contains(&m.source.partition))
        {
            self.list_lake().await?;
            self.listed.extend(batch.iter().map(|m| m.source.partition));
        }
        let offset_minutes = self.config.validate.naive_timestamp_offset_minutes;
        // Decoded ticks go to the chain in one batch; `slots` maps each message to its tick (or to
        // the reason it did not decode).
        let mut ticks = Vec::with_capacity(batch.len());
        let slots: Vec<Result<usize, stockpipe_model::json::DecodeError>> = batch
            .iter()
            .map(|m| {
                stockpipe_model::json::decode_tick(&m.payload, offset_minutes).map(|t| {
                    ticks.push(t);
                    ticks.len() - 1
                })
            })
            .collect();
        let chain = &mut self.chain;
        let mut outcomes: Vec<Option<StageOutcome>> =
            tokio::task::block_in_place(|| chain.process(&ticks))
                .into_iter()
                .map(Some)
                .collect();
        anyhow::ensure!(
            outcomes.len() == ticks.len(),
            "the chain returned {} outcomes for {} ticks",
            outcomes.len(),
            ticks.len()
        );
        let guest_calls = self.chain.last_calls();
        let mut record = BatchRecord {
            consumed: batch.len() as u64,
            ..BatchRecord::default()
        };
        let versions = self.chain.versions();
        let dlq_topic = self.config.kafka.dead_letter_topic.clone();
        let mut pending = Vec::new();
        let mut rolled = Vec::new();
        for (message, slot) in batch.into_iter().zip(slots) {
            let (tick, outcome) = match slot {
                Ok(i) => (
                    Some(&ticks[i]),
                    outcomes[i].take().expect("each outcome is taken once"),
                ),
                Err(e) => (
                    None,
                    StageOutcome::Refused {
                        refusal: Refusal {
                            stage: "decode",
                            code: e.code.into(),
                            message: e.message,
                            guest_version: None,
                        },
                        dead_letter_topic: dlq_topic.clone(),
                    },
                ),
            };
            let source = &message.source;
            match outcome {
                StageOutcome::Refused {
                    refusal,
                    dead_letter_topic,
                } => {
                    self.summary.rejected += 1;
                    record.refusals.push((refusal.stage, refusal.code.clone()));
                    tracing::debug!(partition = source.partition, offset = source.offset, stage = refusal.stage, code = %refusal.code, "refused");
                    self.tracker.track(source.partition, source.offset, 1);
                    let delivery = kafka_sink::send_dead_letter(
                        &self.producer,
                        &dead_letter_topic,
                        message.key.as_deref(),
                        &message.payload,
                        &refusal,
                        source,
                    )
                    .with_context(|| format!("enqueueing a dead letter to {dead_letter_topic}"))?;
                    pending.push(Pending::DeadLetter(source.clone(), delivery, refusal.stage));
                }
                StageOutcome::Accepted {
                    enrichment,
                    destinations,
                } => {
                    self.summary.accepted += 1;
                    let tick = tick.expect("an accepted tick was decoded");
                    record.accepted += 1;
                    record
                        .prices
                        .push((tick.instrument_token, tick.timestamp_us, tick.last_price));
                    let mut doc =
                        document::AcceptedDocument::new(tick, &enrichment, source, &versions);
                    let index = destinations
                        .search_index
                        .as_ref()
                        .filter(|_| self.es.is_some());
                    let sinks = u32::from(destinations.lake_partition.is_some())
                        + u32::from(destinations.alert.is_some())
                        + u32::from(index.is_some());
                    self.tracker.track(source.partition, source.offset, sinks);
                    let line = if destinations.lake_partition.is_some() || index.is_some() {
                        let mut line = Vec::with_capacity(self.document_capacity);
                        serde_json::to_writer(&mut line, &doc).context("encoding a document")?;
                        self.document_capacity = (line.len() + 64).min(16 << 10);
                        line
                    } else {
                        Vec::new()
                    };
                    if let Some(partition) = &destinations.lake_partition {
                        match self
                            .lake
                            .append(partition, source.partition, source.offset, &line)
                        {
                            Appended::Buffered(r) => rolled.extend(r),
                            Appended::AlreadyStored => {
                                self.summary.lake_already_stored += 1;
                                self.tracker.ack(source.partition, source.offset);
                            }
                        }
                    }
                    if let Some(alert) = &destinations.alert {
                        doc.alert_reason = Some(&alert.reason);
                        let body = serde_json::to_vec(&doc).context("encoding an alert")?;
                        let delivery = kafka_sink::send_alert(
                            &self.producer,
                            &alert.topic,
                            message.key.as_deref(),
                            &body,
                        )
                        .with_context(|| format!("enqueueing an alert to {}", alert.topic))?;
                        pending.push(Pending::Alert(source.clone(), delivery));
                    }
                    if let (Some(index), Some(es)) = (index, &mut self.es) {
                        es.push(BulkItem {
                            index: index.clone(),
                            document: line,
                            source: message.source,
                            key: message.key,
                            payload: message.payload,
                        });
                    }
                }
            }
        }
        self.telemetry.record_batch(record, &guest_calls);
        self.store_segments(rolled).await?;
        if let Some(swaps) = &mut self.swaps {
            swaps.after_batch(&mut self.chain);
        }
        self.registry
            .processed
            .fetch_add(ticks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.shadow
            .lock()
            .expect("shadow lock")
            .push(Arc::new(ticks));
        for p in pending {
            let (source, delivery, refused_at) = match p {
                Pending::DeadLetter(s, d, stage) => (s, d, Some(stage)),
                Pending::Alert(s, d) => (s, d, None),
            };
            match delivery.await {
                Ok(Ok(_)) => {
                    if let Some(stage) = refused_at {
                        self.telemetry.dead_lettered(stage, 1);
                        self.summary.dead_lettered += 1;
                    } else {
                        self.summary.alerts += 1;
                    }
                    self.tracker.ack(source.partition, source.offset);
                }
                // Not acknowledged means not committed: stop here, the next run replays it.
                Ok(Err((e, _))) => {
                    return Err(e).with_context(|| {
                        format!("delivering for {}/{}", source.partition, source.offset)
                    });
                }
                Err(_) => anyhow::bail!(
                    "the producer dropped a delivery for {}/{}",
                    source.partition,
                    source.offset
                ),
            }
        }
        Ok(())
    }

    /// Stores every open lake segment, sends and awaits everything for Elasticsearch, and stores
    /// the offsets that moved.
    async fn finish_sinks(&mut self) -> anyhow::Result<()> {
        let flushed = self.lake.flush();
        self.store_segments(flushed).await?;
        self.flush_index(true).await?;
        self.store_advanced()
    }

    /// Learns which offset ranges the lake already holds (after a crash, objects may be stored
    /// whose offsets were never committed; they are not written twice).
    async fn list_lake(&mut self) -> anyhow::Result<()> {
        let topic = self.lake.topic().to_string();
        let names = self
            .store
            .list(&topic)
            .await
            .context("listing the lake's objects")?;
        tracing::debug!(objects = names.len(), "listed the lake");
        self.lake.set_existing(names.iter().map(String::as_str));
        Ok(())
    }

    /// Puts rolled segments in the lake store, then acknowledges their offsets.
    async fn store_segments(&mut self, segments: Vec<RolledSegment>) -> anyhow::Result<()> {
        for segment in segments {
            let lines = segment.lines();
            let started = Instant::now();
            let stored = self.store.put(&segment.name, segment.bytes).await;
            self.telemetry.sink_request(Sink::Lake, started.elapsed());
            self.telemetry.set_ready(
                Dependency::Lake,
                stored.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            stored.with_context(|| format!("storing lake object {}", segment.name))?;
            self.telemetry.sink_written(Sink::Lake, lines as u64);
            tracing::debug!(object = %segment.name, lines, "lake object stored");
            self.summary.lake_objects += 1;
            self.summary.lake_lines += lines as u64;
            for offset in segment.offsets {
                self.tracker.ack(segment.partition, offset);
            }
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

    fn acknowledge_index(&mut self, report: BulkReport) {
        self.summary.indexed += report.indexed;
        self.summary.index_dead_lettered += report.dead_lettered;
        self.summary.index_retried_items += report.retried_items;
        self.summary.index_retried_requests += report.retried_requests;
        let t = &self.telemetry;
        t.sink_written(Sink::Elasticsearch, report.indexed);
        t.dead_lettered("elasticsearch", report.dead_lettered);
        for source in report.acked {
            self.tracker.ack(source.partition, source.offset);
        }
    }

    fn store_advanced(&mut self) -> anyhow::Result<()> {
        let advanced = self.tracker.advanced();
        if let Err(e) =
            kafka_source::store_positions(&self.consumer, &self.config.kafka.topic, &advanced)
        {
            // A partition revoked a moment ago refuses the store; it is forgotten at the next
            // iteration and its offsets stay with the new owner. Nothing is lost by not storing.
            tracing::warn!(error = %e, "storing offsets failed");
        }
        Ok(())
    }
}

/// Where `run --once` stops, per partition: the end read at start (ListOffsets), raised once to
/// the end the partition's fetches report (librdkafka statistics) when messages past the end read
/// at start turn up. That takes in what was produced meanwhile, and copes with brokers whose
/// ListOffsets answers short (Tansu 0.6.0 answers the base offset of a partition's last record
/// batch + 1: measured, see BENCHMARKS). Once only, so that a live producer cannot keep the run
/// going; with statistics off (`kafka.statistics_interval_ms` = 0) the ends read at start hold.
#[derive(Debug)]
struct OnceTargets {
    ends: BTreeMap<i32, i64>,
    /// The group's committed offsets at start: a partition already consumed to its end is done.
    committed: BTreeMap<i32, i64>,
    raised: HashSet<i32>,
    statistics_interval: Duration,
    /// Since when, and after how many statistics reports, the run has waited for fetched ends.
    awaiting: Option<(Instant, u64)>,
}

/// What `run --once` does once every partition has reached its end.
#[derive(Debug, PartialEq)]
enum OnceStep {
    Done,
    /// Ends raised (partition → new end): go on.
    Raised(BTreeMap<i32, i64>),
    /// Messages past an end turned up before the fetched ends were known: go on consuming until
    /// the next statistics report (at most two intervals).
    AwaitStatistics,
}

impl OnceTargets {
    fn new(
        ends: BTreeMap<i32, i64>,
        committed: BTreeMap<i32, i64>,
        statistics_interval: Duration,
    ) -> Self {
        Self {
            ends,
            committed,
            raised: HashSet::new(),
            statistics_interval,
            awaiting: None,
        }
    }

    /// Every partition consumed (or committed) up to its end.
    fn reached(&self, consumed_to: &BTreeMap<i32, i64>) -> bool {
        self.ends.iter().all(|(p, &end)| {
            end == 0
                || consumed_to
                    .get(p)
                    .copied()
                    .max(self.committed.get(p).copied())
                    .is_some_and(|at| at >= end)
        })
    }

    /// Called when [`OnceTargets::reached`]: raises the ends not raised before to the fetched
    /// ends where those are higher, or waits for them where messages went past an end.
    fn next_step(
        &mut self,
        consumed_to: &BTreeMap<i32, i64>,
        fetched_end: impl Fn(i32) -> Option<i64>,
        statistics_reports: u64,
        now: Instant,
    ) -> OnceStep {
        let mut raised = BTreeMap::new();
        for (&p, end) in &mut self.ends {
            if self.raised.contains(&p) {
                continue;
            }
            if let Some(high) = fetched_end(p).filter(|&high| high > *end) {
                *end = high;
                raised.insert(p, high);
            }
        }
        if !raised.is_empty() {
            self.raised.extend(raised.keys());
            self.awaiting = None;
            return OnceStep::Raised(raised);
        }
        let past_an_end = self.ends.iter().any(|(p, end)| {
            !self.raised.contains(p) && consumed_to.get(p).is_some_and(|at| at > end)
        });
        if !past_an_end || self.statistics_interval.is_zero() {
            return OnceStep::Done;
        }
        let (since, reports) = *self.awaiting.get_or_insert((now, statistics_reports));
        let patience = self.statistics_interval * 2;
        if statistics_reports > reports || now.duration_since(since) > patience {
            OnceStep::Done
        } else {
            OnceStep::AwaitStatistics
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OnceStep, OnceTargets};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn map(pairs: &[(i32, i64)]) -> BTreeMap<i32, i64> {
        pairs.iter().copied().collect()
    }

    const STATS: Duration = Duration::from_secs(2);

    #[test]
    fn once_targets_stop_at_the_ends_read_at_start() {
        let mut targets = OnceTargets::new(map(&[(0, 10), (1, 0), (2, 5)]), map(&[(2, 5)]), STATS);
        // Partition 1 is empty, partition 2 was committed to its end before the run.
        assert!(!targets.reached(&map(&[(0, 9)])));
        let consumed = map(&[(0, 10)]);
        assert!(targets.reached(&consumed));
        // Nothing went past an end: done at once, whatever the fetches say or do not say yet.
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, Instant::now()),
            OnceStep::Done
        );
        let none = OnceTargets::new(map(&[(0, 10)]), map(&[]), STATS);
        assert!(!none.reached(&map(&[])));
    }

    #[test]
    fn a_short_end_is_raised_once_to_the_fetched_end() {
        // A broker that answered 1 as the end of partitions holding 949 and 609 messages; the
        // first batches went past it before any statistics report.
        let mut targets = OnceTargets::new(map(&[(0, 1), (1, 1), (2, 7)]), map(&[]), STATS);
        let consumed = map(&[(0, 500), (1, 609), (2, 7)]);
        assert!(targets.reached(&consumed));
        let start = Instant::now();
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, start),
            OnceStep::AwaitStatistics
        );
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, start + STATS),
            OnceStep::AwaitStatistics
        );
        let fetched = map(&[(0, 949), (1, 609), (2, 7)]);
        assert_eq!(
            targets.next_step(&consumed, |p| fetched.get(&p).copied(), 1, start + STATS),
            OnceStep::Raised(map(&[(0, 949), (1, 609)]))
        );
        assert!(!targets.reached(&consumed));
        let consumed = map(&[(0, 949), (1, 609), (2, 7)]);
        assert!(targets.reached(&consumed));
        assert_eq!(
            targets.next_step(&consumed, |p| fetched.get(&p).copied(), 2, start + STATS),
            OnceStep::Done
        );
        // Once only: a live producer does not move a raised end again.
        let later = map(&[(0, 2_000), (1, 2_000), (2, 7)]);
        assert_eq!(
            targets.next_step(&consumed, |p| later.get(&p).copied(), 3, start + STATS),
            OnceStep::Done
        );
    }

    #[test]
    fn the_wait_for_fetched_ends_is_bounded() {
        let mut targets = OnceTargets::new(map(&[(0, 1)]), map(&[]), STATS);
        let consumed = map(&[(0, 40)]);
        let start = Instant::now();
        assert_eq!(
            targets.next_step(&consumed, |_| None, 5, start),
            OnceStep::AwaitStatistics
        );
        // A report came and said nothing higher: done.
        assert_eq!(
            targets.next_step(&consumed, |_| Some(1), 6, start),
            OnceStep::Done
        );
        // No report within two intervals: done.
        let mut targets = OnceTargets::new(map(&[(0, 1)]), map(&[]), STATS);
        targets.next_step(&consumed, |_| None, 5, start);
        assert_eq!(
            targets.next_step(
                &consumed,
                |_| None,
                5,
                start + STATS * 2 + Duration::from_millis(1)
            ),
            OnceStep::Done
        );
        // Statistics off: the ends read at start hold.
        let mut off = OnceTargets::new(map(&[(0, 1)]), map(&[]), Duration::ZERO);
        assert_eq!(off.next_step(&consumed, |_| None, 0, start), OnceStep::Done);
    }
}
