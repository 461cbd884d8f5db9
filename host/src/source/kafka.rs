//! Kafka clients and the calls made with them: the producer, a plain consumer, watermarks,
//! committed offsets, storing and committing positions, reading a topic whole; and the `[kafka]`
//! section. The pipeline's own group member is [`super::member`]'s, used through
//! [`super::group::Membership`].

pub use super::kafka_config::{Connection, GroupTimeouts, KafkaConfig};
use crate::position::{self, Offsets, Partition};
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A producer of `cluster` (idempotent, with `kafka.compression`).
pub fn producer(cluster: &Connection) -> anyhow::Result<FutureProducer> {
    cluster
        .producer_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .with_context(|| format!("creating a Kafka producer for {}", cluster.describe()))
}

/// A client context that keeps the errors librdkafka reports outside a request (TLS, SASL,
/// connections), to name the cause when a request fails.
#[derive(Clone, Default)]
pub struct Probe {
    errors: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Probe {
    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }

    /// librdkafka says why a connection failed (a certificate that does not verify, a handshake
    /// refused) in its log lines, from its own threads: the ones at warning level and above are
    /// kept.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(facility, message, "librdkafka");
        use RDKafkaLogLevel as L;
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            self.note(message.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Probe {}

impl Probe {
    fn note(&self, what: String) {
        let mut errors = self.errors.lock().expect("probe lock");
        if !errors.contains(&what) && errors.len() < 8 {
            errors.push(what);
        }
    }

    /// What the client saw go wrong, joined (empty when nothing).
    pub fn seen(&self) -> String {
        self.errors.lock().expect("probe lock").join("; ")
    }

    /// `e` with the errors `client` saw: its logs and errors arrive on its queue, which is served
    /// first so that the probe hears why.
    pub fn explain_after(&self, client: &BaseConsumer<Probe>, e: KafkaError) -> anyhow::Error {
        for _ in 0..100 {
            if client.poll(Duration::ZERO).is_none() && !self.seen().is_empty() {
                break;
            }
        }
        self.explain(e)
    }

    /// `e` with the errors seen, when there were any.
    pub fn explain(&self, e: KafkaError) -> anyhow::Error {
        match self.seen() {
            seen if seen.is_empty() => anyhow::Error::from(e),
            seen => anyhow::Error::from(e).context(format!("the client saw: {seen}")),
        }
    }
}

/// A client of `cluster` in no group subscription — metadata, watermarks, offsets, reading a
/// topic — that keeps the errors it sees (in `group`, never committing, when given).
pub fn client(
    cluster: &Connection,
    group: Option<&str>,
) -> anyhow::Result<(BaseConsumer<Probe>, Probe)> {
    let probe = Probe::default();
    let mut config = cluster.client_config();
    if let Some(group) = group {
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
    }
    let client = config
        .create_with_context(probe.clone())
        .with_context(|| format!("creating a Kafka client for {}", cluster.describe()))?;
    Ok((client, probe))
}

/// Drops `value` (a consumer: dropping one leaves its group, `rd_kafka_consumer_close`) on a thread
/// of its own and waits at most `limit`. librdkafka's close serves a pending rebalance and can wait
/// on it without a deadline; a shutdown must not hang on that, so past `limit` the close is left to
/// finish (or not) in the background and this returns `false`.
pub fn drop_within<T: Send + 'static>(value: T, limit: Duration, what: &str) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(value);
            let _ = done.send(());
        });
    if spawned.is_err() {
        tracing::warn!(what, "could not start a thread to close it; left open");
        return false;
    }
    let closed = finished.recv_timeout(limit).is_ok();
    if !closed {
        tracing::warn!(
            what,
            limit_ms = limit.as_millis() as u64,
            "not closed in time; shutting down without waiting for it"
        );
    }
    closed
}

/// A group member's settings: offsets stored only when told, then auto-committed.
pub(super) fn consumer_config(cluster: &Connection, group_id: &str) -> ClientConfig {
    let mut config = cluster.client_config();
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("client.id", client_id());
    config
}

/// How this process shows in a group's description (`stockpipe-<host>-<pid>`), so that an operator
/// — or another host's `run --once` — can tell who holds a partition.
fn client_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        .unwrap_or_else(|| "host".into());
    format!("stockpipe-{host}-{}", std::process::id())
}

/// A plain group member (the `consume` command, tests).
pub fn consumer(
    cluster: &Connection,
    group_id: &str,
    topic: &str,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = consumer_config(cluster, group_id)
        .create()
        .with_context(|| format!("creating a Kafka consumer for {}", cluster.describe()))?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    Ok(consumer)
}

/// Partition -> high watermark, from the broker.
pub fn high_watermarks<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Offsets> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    let topic_md = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic missing from metadata")?;
    if topic_md.partitions().is_empty() {
        anyhow::bail!("topic {topic} has no partitions (does it exist?)");
    }
    let partitions: Vec<i32> = topic_md.partitions().iter().map(|p| p.id()).collect();
    // One ListOffsets request for every partition ("latest", timestamp -1) instead of one round
    // trip per partition; the per-partition query stays as the fallback.
    let mut latest = TopicPartitionList::new();
    for &p in &partitions {
        latest
            .add_partition_offset(topic, p, Offset::End)
            .context("building the offsets request")?;
    }
    if let Ok(answer) = consumer.offsets_for_times(latest, timeout) {
        let ends: Option<Offsets> = answer
            .elements_for_topic(topic)
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) if e.error().is_ok() => {
                    Some((Partition(e.partition()), position::Offset(o)))
                }
                _ => None,
            })
            .collect();
        if let Some(ends) = ends.filter(|e| e.len() == partitions.len()) {
            return Ok(ends);
        }
    }
    tracing::debug!(topic, "asking for the end of each partition one at a time");
    partitions
        .iter()
        .map(|&p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            Ok((Partition(p), position::Offset(high)))
        })
        .collect()
}

/// The first offset the broker still has of `partition` (its low watermark).
pub fn log_start<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> anyhow::Result<i64> {
    let (low, _) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .with_context(|| format!("watermarks of {topic}/{partition}"))?;
    Ok(low)
}

/// The first offset the broker still has of `partition`, and the offset after its last.
pub fn watermarks<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> anyhow::Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, timeout)
        .with_context(|| format!("watermarks of {topic}/{partition}"))
}

/// Partition -> committed offset of the group (absent when the group never committed it).
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    partitions: impl IntoIterator<Item = Partition>,
    timeout: Duration,
) -> anyhow::Result<Offsets> {
    let mut tpl = TopicPartitionList::new();
    for Partition(p) in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .context("fetching the group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((Partition(e.partition()), position::Offset(o))),
            _ => None,
        })
        .collect())
}

/// Stores the next offsets to commit (picked up by the next auto-commit).
pub fn store_positions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    positions: &[(i32, i64)],
) -> anyhow::Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for &(partition, next) in positions {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))
            .context("building the offsets list")?;
    }
    consumer.store_offsets(&tpl).context("storing offsets")
}

/// Commits positions synchronously (at shutdown, so that nothing acknowledged is replayed).
pub fn commit_positions<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    positions: &Offsets,
) -> anyhow::Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (&Partition(partition), &position::Offset(next)) in positions {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))
            .context("building the offsets list")?;
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .context("committing offsets")
}

/// Every message of `topic` from the beginning up to its current end, read without a group
/// (used by tests and tools to inspect the dead-letter and alerts topics).
pub fn read_to_end(
    cluster: &Connection,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    use rdkafka::Message;
    let (consumer, _) = client(cluster, Some("stockpipe-reader")).context("creating a reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    let mut done: BTreeMap<i32, bool> = ends.keys().map(|&p| (p, false)).collect();
    while done.values().any(|d| !d) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if m.offset() + 1 >= ends[&m.partition()] {
                    done.insert(m.partition(), true);
                }
                messages.push(m.detach());
            }
            Some(Err(e)) => tracing::debug!(error = %e, "reader"),
            None => {}
        }
    }
    Ok(messages)
}

/// The partitions of `topic` in a group member's assignment, as the group coordinator reports it
/// (Kafka's consumer protocol: version i16, then per topic its name and partitions, then user
/// data; big-endian). `None` when it does not parse.
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<i32>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn int(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let mut bytes = assignment;
    take(&mut bytes, 2)?; // version
    let topics = int(&mut bytes)?;
    let mut found = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?);
        let name = take(&mut bytes, usize::try_from(len).ok()?)?;
        let count = int(&mut bytes)?;
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(int(&mut bytes)?);
        }
        if name == topic.as_bytes() {
            found.extend(partitions);
        }
    }
    Some(found)
}

/// Who holds which partitions of `topic` in `group`: each member as `client id (member id) on
/// host`, with its partitions.
pub fn partition_holders<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, Vec<i32>)>> {
    let groups = consumer
        .fetch_group_list(Some(group), timeout)
        .with_context(|| format!("describing group {group}"))?;
    Ok(groups
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .map(|m| {
            let partitions = m
                .assignment()
                .and_then(|a| assigned_partitions(a, topic))
                .unwrap_or_default();
            let who = format!("{} ({}) on {}", m.client_id(), m.id(), m.client_host());
            (who, partitions)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_names_its_partitions() {
        // Version 1; two topics; user data of 3 bytes.
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, partitions) in [("other", &[9i32][..]), ("stock-stream", &[0, 4][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend([0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(
            assigned_partitions(&bytes, "stock-stream"),
            Some(vec![0, 4])
        );
        assert_eq!(assigned_partitions(&bytes, "none"), Some(vec![]));
        for cut in 0..bytes.len() - 7 {
            assert_eq!(
                assigned_partitions(&bytes[..cut], "stock-stream"),
                None,
                "{cut}"
            );
        }
        assert_eq!(
            assigned_partitions(&[0, 0, 0xff, 0xff, 0xff, 0xff], "x"),
            Some(vec![])
        );
    }

    #[test]
    fn a_close_that_hangs_is_left_behind_in_bounded_time() {
        struct SlowClose(Duration);
        impl Drop for SlowClose {
            fn drop(&mut self) {
                std::thread::sleep(self.0);
            }
        }
        let started = std::time::Instant::now();
        assert!(!drop_within(
            SlowClose(Duration::from_secs(5)),
            Duration::from_millis(100),
            "a test value"
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(drop_within(
            SlowClose(Duration::from_millis(1)),
            Duration::from_secs(5),
            "a test value"
        ));
    }
}
