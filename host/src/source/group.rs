//! The pipeline's place in its consumer group, behind one type: [`Membership`] reads batches,
//! starts the partitions the group assigns (where each resumes, what the broker deleted before
//! this group stored it), lets go of the ones it revokes once their work is committed, stores and
//! commits the positions the loop hands it, and tells `run --once` whether the topic is done.
//!
//! The loop decides *what* may be committed (the commit tracker, the sinks' acknowledgements);
//! this module is the only one that talks to the broker about the group. Every Kafka call here is
//! a blocking librdkafka call bounded by [`KAFKA_TIMEOUT`], run with `block_in_place` so the
//! runtime's other tasks (stores, bulk requests) go on meanwhile.

use crate::position::{Offset, Offsets, Partition};
use crate::sink::SourceRef;
use crate::source::kafka::{self, Connection, KafkaConfig};
use crate::source::member::{self, ConsumerNotes, GroupMember, PipelineConsumer};
use crate::source::once::{OnceStep, OnceTargets};
use crate::source::positions::{Gap, Positions};
use crate::telemetry::Telemetry;
use anyhow::Context;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kafka calls that wait on the broker give up after this long.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// One consumed message, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub source: SourceRef,
    pub key: Option<Vec<u8>>,
    /// Shared: the ticks of a message of several carry it without a copy each.
    pub payload: bytes::Bytes,
    /// The record's timestamp (epoch ms; create or log-append time, whichever the topic keeps):
    /// the event time of a tick that carries none of its own.
    pub timestamp_ms: Option<i64>,
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
                tick: None,
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            timestamp_ms: rdkafka::Message::timestamp(message).to_millis(),
        }
    }
}

/// A partition the group assigned since the last batch, and the group's committed offset there
/// (`None`: never committed), or why it could not be read.
pub type Assigned = (i32, Result<Option<i64>, String>);

/// What the group changed since the last batch.
#[derive(Debug, Default)]
pub struct GroupChanges {
    /// Assigned: their work starts now.
    pub assigned: Vec<Assigned>,
    /// Let go of at once (the assignment was lost, or the wait for the sinks ran out): their
    /// unacknowledged work belongs to the next owner.
    pub dropped: Vec<i32>,
}

/// The pipeline's consumer-group member.
pub struct Membership {
    /// Shared with [`Keeper`], which polls it while a batch waits on its sinks.
    consumer: Arc<GroupMember>,
    notes: ConsumerNotes,
    telemetry: Arc<Telemetry>,
    topic: String,
    group_id: String,
    /// The bootstrap servers, to name them when the brokers do not answer.
    brokers: String,
    batch_max: usize,
    batch_wait: Duration,
    max_poll_interval: Duration,
    statistics_interval: Duration,
    revoke_timeout: Duration,
    /// `kafka.auto_offset_reset`: where a partition the group never committed starts.
    reset: String,
    /// A consumer error repeating this long stops the run.
    give_up: Duration,
    /// Partition -> the offset after the last message consumed from it; gaps the broker deleted.
    positions: Positions,
    /// Partition -> where a file replayed before the run starts in it ([`Self::expect_from`]).
    expected: Offsets,
    /// When `run --once` last said what it waits for.
    waiting_noted: Option<Instant>,
}

impl Membership {
    /// Joins the group (subscribes to `config.topic` on `cluster`).
    pub fn join(
        cluster: &Connection,
        config: &KafkaConfig,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let (consumer, notes) = member::pipeline_consumer(cluster, config, telemetry.clone())?;
        Ok(Self {
            consumer: Arc::new(consumer),
            notes,
            telemetry,
            topic: config.topic.clone(),
            group_id: config.group_id.clone(),
            brokers: cluster.describe(),
            batch_max: config.batch_max,
            batch_wait: Duration::from_millis(config.batch_wait_ms),
            max_poll_interval: Duration::from_millis(config.max_poll_interval_ms),
            statistics_interval: Duration::from_millis(config.statistics_interval_ms),
            revoke_timeout: config.revoke_timeout(),
            reset: config.auto_offset_reset.clone(),
            give_up: Duration::from_millis(config.error_give_up_ms),
            positions: Positions::default(),
            expected: Offsets::new(),
            waiting_noted: None,
        })
    }

    /// A file was replayed into the topic before the run, from `starts` in each partition. A
    /// partition the group never committed starts where `kafka.auto_offset_reset` says, as any
    /// other; but its offsets from the replay's start to the log's start were deleted by the broker
    /// (retention, the mock cluster's 5 MiB) before anyone read them, and are reported lost.
    pub fn expect_from(&mut self, starts: Offsets) {
        self.expected = starts;
    }

    /// The partitions consumed from, each with the offset after its last message (or where it
    /// resumes, before the first).
    pub fn consumed_to(&self) -> &Offsets {
        self.positions.next()
    }

    /// Up to `kafka.batch_max` messages, waiting at most `kafka.batch_wait_ms` once the first has
    /// arrived (and at most 200 ms for the first, so that the loop can roll segments and notice
    /// the end). Fails, naming it, on a consumer error that waiting cannot heal or that has
    /// repeated for `kafka.error_give_up_ms` (see [`crate::source::faults`]).
    pub async fn next_batch(&self) -> anyhow::Result<Vec<Consumed>> {
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut topic: Arc<str> = Arc::from("");
        while batch.len() < self.batch_max {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    self.notes.error(&e, None, &self.telemetry);
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            if batch.is_empty() {
                deadline = tokio::time::Instant::now() + self.batch_wait;
                self.notes.healthy();
            }
            batch.push(Consumed::from(&message, &mut topic));
        }
        let faults = self.notes.faults.lock().expect("faults lock");
        if let Some(why) = faults.verdict(Instant::now(), self.give_up) {
            anyhow::bail!("{why} (consuming {} at {})", self.topic, self.brokers);
        }
        Ok(batch)
    }

    /// Keeps this member in its group while a batch waits on its sinks (see [`Keeper`]).
    pub fn keeper(&self) -> Keeper {
        Keeper {
            consumer: self.consumer.clone(),
            notes: self.notes.clone(),
            revoke_timeout: self.revoke_timeout,
            patience: keep_member_after(self.max_poll_interval),
            paused: None,
            carried: Vec::new(),
        }
    }

    /// What the group changed since the last batch, and what `batch` consumed: partitions
    /// assigned are started (see [`Membership::start`]), gaps in `batch`'s offsets checked
    /// against the log's start, partitions let go of at once forgotten.
    pub fn changes(&mut self, batch: &[Consumed]) -> anyhow::Result<GroupChanges> {
        let assigned = self.notes.rebalance.take_assigned();
        let assigned = self.start(&assigned)?;
        let gaps: Vec<Gap> = batch
            .iter()
            .filter_map(|m| self.positions.consumed(m.source.partition, m.source.offset))
            .collect();
        for gap in gaps {
            self.check_gap(gap);
        }
        let dropped = self.notes.rebalance.take_dropped();
        for &partition in &dropped {
            self.positions.forget(partition);
        }
        Ok(GroupChanges { assigned, dropped })
    }

    /// Newly assigned partitions: where each resumes, and what the broker deleted before this
    /// group stored it (reported, see [`Telemetry::offsets_lost`]). A partition the group never
    /// committed is committed where `kafka.auto_offset_reset` says it starts — the log's start
    /// (`earliest`) or its end (`latest`) — so that a later loss there shows; with `error` the
    /// start stops, naming it.
    fn start(&mut self, partitions: &[i32]) -> anyhow::Result<Vec<Assigned>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let (consumer, topic) = (&**self.consumer, self.topic.as_str());
        let starts = tokio::task::block_in_place(|| {
            let committed = kafka::committed_offsets(
                consumer,
                topic,
                partitions.iter().copied().map(Partition),
                KAFKA_TIMEOUT,
            )?;
            partitions
                .iter()
                .map(|&p| {
                    let (low, high) = kafka::watermarks(consumer, topic, p, KAFKA_TIMEOUT)?;
                    Ok((p, committed.get(&Partition(p)).map(|o| o.0), low, high))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        });
        let starts = match starts {
            Ok(starts) => starts,
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(error = %why, ?partitions, "could not read where the assigned partitions start: offsets the broker deleted there are not checked");
                return Ok(partitions.iter().map(|&p| (p, Err(why.clone()))).collect());
            }
        };
        let mut never_committed = BTreeMap::new();
        let mut assigned = Vec::with_capacity(starts.len());
        for (partition, committed, low, high) in starts {
            let resume = match (committed, self.reset.as_str()) {
                (Some(at), _) => Some(at),
                (None, "latest") => Some(high),
                (None, "error") => anyhow::bail!(
                    "partition {partition} of {topic} has no committed offset for group {} and kafka.auto_offset_reset = \"error\" (its log holds offsets {low} to {high}); commit a start for it, or set auto_offset_reset to earliest or latest",
                    self.group_id
                ),
                (None, _) => None,
            };
            // Never committed: the part of a replayed file below the log's start was deleted.
            let expected = self.expected.get(&Partition(partition)).map(|o| o.0);
            let from = resume.or(expected.filter(|&e| e < low));
            if let Some(lost) = self.positions.start(partition, from, low) {
                self.telemetry.offsets_lost(topic, lost);
            }
            if committed.is_none() {
                never_committed.insert(Partition(partition), Offset(resume.unwrap_or(low)));
            }
            assigned.push((partition, Ok(committed)));
        }
        let pinned = tokio::task::block_in_place(|| {
            kafka::commit_positions(consumer, topic, &never_committed)
        });
        if let Err(e) = pinned {
            tracing::warn!(error = %format!("{e:#}"), "committing the start of partitions the group never committed failed");
        }
        Ok(assigned)
    }

    /// A jump in a partition's offsets: lost as far as the broker's log starts past it.
    fn check_gap(&self, gap: Gap) {
        let (consumer, topic) = (&**self.consumer, self.topic.as_str());
        match tokio::task::block_in_place(|| {
            kafka::log_start(consumer, topic, gap.partition, KAFKA_TIMEOUT)
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

    /// Partitions the group is revoking, waiting for this member to let go of them.
    pub fn revoking(&self) -> Option<Vec<i32>> {
        self.notes.rebalance.revoking()
    }

    /// Commits `positions` of the revoked partitions and lets go of them. Returns the partitions
    /// let go of (their work is no longer this host's).
    pub fn release(&mut self, positions: &Offsets) -> Vec<i32> {
        let (consumer, topic) = (&**self.consumer, self.topic.as_str());
        let committed = tokio::task::block_in_place(|| {
            let list: Vec<(i32, i64)> = positions.iter().map(|(p, at)| (p.0, at.0)).collect();
            kafka::store_positions(consumer, topic, &list)?;
            kafka::commit_positions(consumer, topic, positions)
        });
        if let Err(e) = committed {
            tracing::warn!(error = %format!("{e:#}"), ?positions, "committing revoked partitions failed; their next owner starts from the last commit");
        }
        let released = self.notes.rebalance.release(consumer);
        for &partition in &released {
            self.positions.forget(partition);
        }
        released
    }

    /// Stores `advanced` positions for the next auto-commit.
    pub fn store(&self, advanced: &[(i32, i64)]) {
        if let Err(e) = kafka::store_positions(&**self.consumer, &self.topic, advanced) {
            // A partition revoked a moment ago refuses the store; it is forgotten at the next
            // iteration and its offsets stay with the new owner. Nothing is lost by not storing.
            tracing::warn!(error = %e, "storing offsets failed");
        }
    }

    /// The `--once` targets, read from the brokers: each partition's end and the group's
    /// committed offsets.
    pub fn once_targets(&self) -> anyhow::Result<OnceTargets> {
        let read = || {
            OnceTargets::read(
                &**self.consumer,
                &self.topic,
                KAFKA_TIMEOUT,
                self.max_poll_interval,
                self.statistics_interval,
            )
        };
        tokio::task::block_in_place(read).with_context(|| {
            format!(
                "run --once: reading where {} ends from the brokers at {}",
                self.topic, self.brokers
            )
        })
    }

    /// The `--once` targets of a replayed file, given its `ends`: those, and the group's
    /// committed offsets (a partition resumed at its end has nothing left).
    pub fn input_targets(&self, ends: Offsets) -> anyhow::Result<OnceTargets> {
        let committed = tokio::task::block_in_place(|| {
            kafka::committed_offsets(
                &**self.consumer,
                &self.topic,
                ends.keys().copied(),
                KAFKA_TIMEOUT,
            )
        })?;
        tracing::info!(
            ?ends,
            ?committed,
            "run --once: the input is replayed; processing up to its end"
        );
        Ok(OnceTargets::new(ends, committed, self.statistics_interval))
    }

    /// Whether `run --once` has consumed everything up to `targets` (raising them once where the
    /// fetches report more; see [`OnceTargets::next_step`]). While it has not, says now and then
    /// what it waits for.
    pub fn consumed_all(&mut self, targets: &mut OnceTargets) -> bool {
        if !targets.reached(self.positions.next()) {
            self.note_waiting(targets);
            if !targets.reached(self.positions.next()) {
                return false;
            }
        }
        let (notes, topic) = (&self.notes, self.topic.as_str());
        match targets.next_step(
            self.positions.next(),
            |p| notes.fetched_end(topic, p.0).map(Offset),
            notes.statistics_reports(),
            Instant::now(),
        ) {
            OnceStep::Done => return true,
            OnceStep::Raised(raised) => tracing::info!(
                ?raised,
                "run --once: fetches report more than the end read at start (messages produced since, or a broker whose ListOffsets answers short, as Tansu 0.6 does); going on to there"
            ),
            OnceStep::AwaitStatistics => {}
        }
        false
    }

    /// `run --once` waiting on partitions this host does not hold: every few seconds, says which,
    /// and which member of the group holds them (their committed offsets have to reach the end).
    fn note_waiting(&mut self, targets: &mut OnceTargets) {
        const EVERY: Duration = Duration::from_secs(5);
        if self.waiting_noted.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.waiting_noted = Some(Instant::now());
        let own: HashSet<i32> = self
            .consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        if !self.notes.rebalance.joined() {
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
        // Another member may have committed them to their end since: then this host is done.
        let committed = tokio::task::block_in_place(|| {
            kafka::committed_offsets(
                &**self.consumer,
                &self.topic,
                elsewhere.iter().copied().map(Partition),
                KAFKA_TIMEOUT,
            )
        });
        match committed {
            Ok(committed) => targets.committed_since(committed),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "re-reading the group's committed offsets failed")
            }
        }
        if targets.reached(self.positions.next()) {
            return;
        }
        let holders = tokio::task::block_in_place(|| {
            kafka::partition_holders(
                &**self.consumer,
                &self.group_id,
                &self.topic,
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

    /// Commits the last `positions`, reads back what the group has committed for `partitions`
    /// (reported to the telemetry), and leaves the group, each Kafka call bounded by `timeout`.
    pub fn leave(
        self,
        positions: &Offsets,
        partitions: Vec<i32>,
        timeout: Duration,
    ) -> anyhow::Result<Offsets> {
        let (consumer, topic) = (&**self.consumer, self.topic.as_str());
        if let Err(e) =
            tokio::task::block_in_place(|| kafka::commit_positions(consumer, topic, positions))
        {
            // E.g. a rebalance under way as the group shrinks. Whatever is not committed is
            // redelivered (at least once); the committed offsets read next say what the group has.
            tracing::warn!(error = %format!("{e:#}"), "the final commit failed");
        }
        let committed = tokio::task::block_in_place(|| {
            kafka::committed_offsets(
                consumer,
                topic,
                partitions.into_iter().map(Partition),
                timeout,
            )
        })?;
        for (&partition, &offset) in &committed {
            self.telemetry
                .committed_offset(topic, partition.0, offset.0);
        }
        // Leaving the group: bounded, so that a rebalance under way cannot hang the shutdown.
        let consumer = self.consumer;
        tokio::task::block_in_place(|| kafka::drop_within(consumer, timeout, "the Kafka consumer"));
        Ok(committed)
    }
}

/// How long a batch may wait on its sinks before the partitions are paused and the consumer kept
/// polling: well inside `max.poll.interval.ms` (after which librdkafka leaves the group), and
/// not so soon that a merely slow sink makes the consumer pause and refetch at every batch.
fn keep_member_after(max_poll_interval: Duration) -> Duration {
    (max_poll_interval / 4).min(Duration::from_secs(5))
}

/// Keeps the consumer a healthy member of its group while a batch waits on its sinks: run
/// [`Keeper::hold`] beside the batch; when the batch is done, [`Keeper::finish`] resumes what was
/// paused and hands back the messages polled meanwhile.
pub struct Keeper {
    consumer: Arc<GroupMember>,
    notes: ConsumerNotes,
    revoke_timeout: Duration,
    patience: Duration,
    paused: Option<rdkafka::TopicPartitionList>,
    carried: Vec<Consumed>,
}

impl Keeper {
    /// After `patience`, pauses the assigned partitions and polls — which serves the group's
    /// heartbeats, rebalances and statistics. A message that was already on its way is carried,
    /// for the next batch. Partitions the group revoked meanwhile are let go of once they have
    /// waited `kafka.revoke_timeout_ms` (the batch that holds their work is stuck). Runs until
    /// dropped.
    pub async fn hold(&mut self) -> std::convert::Infallible {
        let consumer: &PipelineConsumer = &self.consumer;
        tokio::time::sleep(self.patience).await;
        match consumer.assignment() {
            Ok(partitions) => match consumer.pause(&partitions) {
                Ok(()) => {
                    tracing::info!(
                        partitions = partitions.count(),
                        waited_ms = self.patience.as_millis() as u64,
                        "the sinks are saturated: partitions paused, the consumer keeps its place in the group"
                    );
                    self.paused = Some(partitions);
                }
                Err(e) => tracing::warn!(error = %e, "pausing the partitions failed"),
            },
            Err(e) => tracing::warn!(error = %e, "reading the assignment failed"),
        }
        let mut topic: Arc<str> = Arc::from("");
        loop {
            self.notes
                .rebalance
                .release_overdue(consumer, self.revoke_timeout);
            match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                Ok(Ok(message)) => self.carried.push(Consumed::from(&message, &mut topic)),
                Ok(Err(e)) => tracing::debug!(error = %e, "consumer error while paused"),
                Err(_idle) => {}
            }
        }
    }

    /// Resumes the partitions [`Keeper::hold`] paused; returns the messages it polled meanwhile.
    pub fn finish(self) -> Vec<Consumed> {
        if let Some(partitions) = &self.paused {
            if let Err(e) = self.consumer.resume(partitions) {
                tracing::warn!(error = %e, "resuming the paused partitions failed");
            } else {
                tracing::info!("the sinks caught up: partitions resumed");
            }
        }
        self.carried
    }
}

#[cfg(test)]
mod tests {
    use super::keep_member_after;
    use std::time::Duration;

    #[test]
    fn a_member_is_kept_well_inside_its_poll_interval() {
        // A quarter of the interval, so that a slow sink never costs the membership...
        assert_eq!(
            keep_member_after(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        // ...and never later than 5 s, so that a long interval does not leave heartbeats and
        // rebalances unserved for minutes.
        assert_eq!(
            keep_member_after(Duration::from_secs(300)),
            Duration::from_secs(5)
        );
    }
}
