//! The pipeline's consumer at librdkafka's level: a group member with
//! `enable.auto.offset.store=false` (an offset is stored, then auto-committed, only once the
//! commit tracker says every sink acknowledged it and everything before it), and what its
//! callbacks note for the loop — rebalances ([`RebalanceNotes`]), the fetched end of each
//! partition and the brokers' states (librdkafka statistics). [`super::group::Membership`] is
//! the type the loop uses.

use super::faults::{FaultClass, Faults, classify};
use super::kafka::{Connection, KafkaConfig, consumer_config};
use crate::source::rebalance::RebalanceNotes;
use crate::telemetry::{Dependency, Telemetry};
use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the consumer's callbacks tell the pipeline loop: partitions assigned and taken away in a
/// rebalance ([`RebalanceNotes`]), the end of each partition as its fetches reported it
/// (librdkafka statistics), and the errors seen since the consumer was last healthy ([`Faults`]).
#[derive(Debug, Clone, Default)]
pub struct ConsumerNotes {
    pub rebalance: RebalanceNotes,
    fetched: Arc<Mutex<FetchedEnds>>,
    pub faults: Arc<Mutex<Faults>>,
}

#[derive(Debug, Default)]
struct FetchedEnds {
    /// Statistics reports received so far.
    reports: u64,
    /// (topic, partition) -> high watermark of the latest fetch response.
    high: HashMap<(String, i32), i64>,
}

impl ConsumerNotes {
    /// The end of a partition as its latest fetch response reported it (the high watermark),
    /// as of the latest statistics report; `None` before one has covered the partition.
    pub fn fetched_end(&self, topic: &str, partition: i32) -> Option<i64> {
        let fetched = self.fetched.lock().expect("statistics lock");
        fetched.high.get(&(topic.to_string(), partition)).copied()
    }

    /// Statistics reports received so far.
    pub fn statistics_reports(&self) -> u64 {
        self.fetched.lock().expect("statistics lock").reports
    }

    /// A consumer error: noted, and logged when it is worth a line (see [`Faults::error`]); what
    /// is wrong goes to `/ready` and the metrics.
    pub fn error(&self, error: &KafkaError, detail: Option<&str>, telemetry: &Telemetry) {
        let code = error.rdkafka_error_code();
        let what = match detail {
            Some(detail) if !detail.is_empty() => format!("{error}: {detail}"),
            _ => error.to_string(),
        };
        telemetry.kafka_error(&code.map_or_else(|| "unknown".to_string(), |c| format!("{c:?}")));
        let mut faults = self.faults.lock().expect("faults lock");
        if let Some(count) = faults.error(code, what.clone(), Instant::now()) {
            let class = classify(code);
            tracing::warn!(error = %what, errors = count, fatal = class == FaultClass::Fatal, "Kafka error");
        }
        let current = faults.current().map(str::to_string);
        drop(faults);
        if let Some(current) = current {
            telemetry.set_ready(Dependency::Kafka, Err(current));
        }
    }

    /// A healthy sign (a message, a broker up): transient errors are forgiven.
    pub fn healthy(&self) {
        self.faults.lock().expect("faults lock").healthy();
    }
}

/// The pipeline consumer's context: serves rebalances ([`RebalanceNotes`]), notes the partitions'
/// fetched ends, and reports the statistics to the telemetry.
pub struct PipelineContext {
    notes: ConsumerNotes,
    telemetry: Arc<Telemetry>,
}

impl ClientContext for PipelineContext {
    /// librdkafka's statistics (every `kafka.statistics_interval_ms`): each partition's fetched end
    /// (for `run --once`), consumer lag and committed offsets per partition, and whether any
    /// broker is up (for `/ready`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut fetched = self.notes.fetched.lock().expect("statistics lock");
        fetched.reports += 1;
        for (name, topic) in &statistics.topics {
            for (&partition, p) in &topic.partitions {
                if partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                if p.hi_offset >= 0 {
                    fetched.high.insert((name.clone(), partition), p.hi_offset);
                    // Before the first message of a partition the position is the committed
                    // offset, or the start of the partition.
                    let position = [p.app_offset, p.committed_offset, p.lo_offset]
                        .into_iter()
                        .find(|&o| o >= 0)
                        .unwrap_or(0);
                    let uncommitted = if p.consumer_lag >= 0 {
                        p.consumer_lag
                    } else {
                        p.hi_offset - p.committed_offset.max(p.lo_offset).max(0)
                    };
                    let lag = (p.hi_offset - position).max(0);
                    self.telemetry
                        .partition_lag(name, partition, lag, uncommitted);
                }
                if p.committed_offset >= 0 {
                    self.telemetry
                        .committed_offset(name, partition, p.committed_offset);
                }
            }
        }
        drop(fetched);
        let up = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.state == "UP")
            .count();
        let seen = if up > 0 {
            self.notes.healthy();
            match self.notes.faults.lock().expect("faults lock").current() {
                Some(fatal) => Err(fatal.to_string()),
                None => Ok(()),
            }
        } else {
            let states: Vec<String> = statistics
                .brokers
                .values()
                .map(|b| format!("{} {}", b.name, b.state))
                .collect();
            Err(format!("no Kafka broker is up ({})", states.join(", ")))
        };
        self.telemetry.set_ready(Dependency::Kafka, seen);
    }

    /// librdkafka's errors outside a message: a broker down, a TLS handshake or an
    /// authentication refused, … (see [`Faults`]).
    fn error(&self, error: KafkaError, reason: &str) {
        self.notes.error(&error, Some(reason), &self.telemetry);
    }
}

impl ConsumerContext for PipelineContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.notes.rebalance.on_rebalance(consumer, err, tpl);
    }
}

pub type PipelineConsumer = StreamConsumer<PipelineContext>;

/// The pipeline's consumer. Dropping it leaves the group, letting go of every partition at once:
/// the close must not wait for a release (see [`RebalanceNotes`]) that will not come.
pub struct GroupMember {
    consumer: PipelineConsumer,
    notes: ConsumerNotes,
}

impl std::ops::Deref for GroupMember {
    type Target = PipelineConsumer;

    fn deref(&self) -> &PipelineConsumer {
        &self.consumer
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.notes.rebalance.closing();
    }
}

/// How often the pipeline's consumer asks the brokers for the topic's metadata. librdkafka's
/// default (5 minutes) is also how long a host started before its input topic exists — a fresh
/// compose stack, before anything was produced — consumed nothing once the topic appeared; and how
/// late it noticed partitions added to the topic. One metadata request every 10 s costs nothing.
const TOPIC_METADATA_REFRESH_MS: u64 = 10_000;

/// The pipeline's consumer-group member, and what its callbacks note for the pipeline loop.
pub fn pipeline_consumer(
    cluster: &Connection,
    k: &KafkaConfig,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<(GroupMember, ConsumerNotes)> {
    let (group_id, topic, timeouts) = (&k.group_id, &k.topic, k.group_timeouts());
    let notes = ConsumerNotes::default();
    let mut config = consumer_config(cluster, group_id);
    // With `error`, the host's own start rule refuses a partition without a committed offset,
    // naming it and the group, before a batch of it is processed (see `group::Membership`);
    // librdkafka's own refusal would race it and name neither.
    let reset = match k.auto_offset_reset.as_str() {
        "error" => "earliest",
        other => other,
    };
    config
        .set("auto.offset.reset", reset)
        .set("session.timeout.ms", timeouts.session_ms.to_string())
        .set(
            "max.poll.interval.ms",
            timeouts.max_poll_interval_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            timeouts.statistics_interval_ms.to_string(),
        )
        .set("fetch.wait.max.ms", timeouts.fetch_wait_max_ms.to_string())
        .set(
            "topic.metadata.refresh.interval.ms",
            TOPIC_METADATA_REFRESH_MS.to_string(),
        )
        .set(
            "partition.assignment.strategy",
            timeouts.assignment_strategy.as_str(),
        );
    if let Some(id) = &timeouts.instance_id {
        config.set("group.instance.id", id);
    }
    let consumer: PipelineConsumer = config
        .create_with_context(PipelineContext {
            notes: notes.clone(),
            telemetry,
        })
        .with_context(|| format!("creating a Kafka consumer for {}", cluster.describe()))?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let member = GroupMember {
        consumer,
        notes: notes.clone(),
    };
    Ok((member, notes))
}
