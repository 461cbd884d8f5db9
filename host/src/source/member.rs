//! The pipeline's consumer at librdkafka's level: a group member with
//! `enable.auto.offset.store=false` (an offset is stored, then auto-committed, only once the
//! commit tracker says every sink acknowledged it and everything before it), and what its
//! callbacks note for the loop — rebalances ([`RebalanceNotes`]), the fetched end of each
//! partition and the brokers' states (librdkafka statistics). [`super::group::Membership`] is
//! the type the loop uses.

use super::kafka::consumer_config;
use crate::source::rebalance::RebalanceNotes;
use crate::telemetry::{Dependency, Telemetry};
use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the consumer's callbacks tell the pipeline loop: partitions assigned and taken away in a
/// rebalance ([`RebalanceNotes`]), and the end of each partition as its fetches reported it
/// (librdkafka statistics).
#[derive(Debug, Clone, Default)]
pub struct ConsumerNotes {
    pub rebalance: RebalanceNotes,
    fetched: Arc<Mutex<FetchedEnds>>,
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
            Ok(())
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
    brokers: &str,
    group_id: &str,
    topic: &str,
    timeouts: GroupTimeouts,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<(GroupMember, ConsumerNotes)> {
    let notes = ConsumerNotes::default();
    let mut config = consumer_config(brokers, group_id);
    config
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
        .with_context(|| format!("creating a Kafka consumer for {brokers}"))?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let member = GroupMember {
        consumer,
        notes: notes.clone(),
    };
    Ok((member, notes))
}

/// How long the group waits for a silent member (`session.timeout.ms`) and for a member that
/// stopped polling (`max.poll.interval.ms`; also how long a rebalance may wait for a member that
/// died without leaving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTimeouts {
    pub session_ms: u64,
    pub max_poll_interval_ms: u64,
    /// Static membership (`group.instance.id`): a restarted member with the same id takes its
    /// place back at once instead of waiting for the old one to time out.
    pub instance_id: Option<String>,
    /// How often librdkafka reports lag and broker states (0 = never; `/ready` then never sees Kafka).
    pub statistics_interval_ms: u64,
    /// `fetch.wait.max.ms`: how long a fetch may wait for data before the broker answers.
    pub fetch_wait_max_ms: u64,
    /// `partition.assignment.strategy`.
    pub assignment_strategy: String,
}
