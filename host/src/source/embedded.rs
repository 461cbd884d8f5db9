//! The embedded Kafka: librdkafka's mock cluster in this process, for runs without a broker.
//! One place starts it with the pipeline's topics, sizes the input topic so that a replay fits
//! (the cluster deletes a partition's oldest messages past 5 MiB), and replays into it — for
//! `run`, the benchmarks and the tests alike.

use super::kafka::KafkaConfig;
use super::replay;
use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, Producer};
use std::collections::HashMap;
use std::time::Duration;

/// The in-process mock cluster, kept alive as long as the pipeline runs.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    /// The input topic and its partition count, when started for the pipeline.
    input: Option<(String, i32)>,
}

impl EmbeddedKafka {
    /// Starts a one-broker mock cluster and creates `topics` with `partitions` each (the mock
    /// cluster's admin API cannot create topics; its own call can).
    pub fn start(topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        let cluster = MockCluster::new(1).context("starting librdkafka's mock cluster")?;
        for (topic, partitions) in topics {
            cluster
                .create_topic(topic, *partitions, 1)
                .with_context(|| format!("creating topic {topic} on the mock cluster"))?;
        }
        Ok(Self {
            cluster,
            input: None,
        })
    }

    /// The pipeline's topics: the input with `partitions` (see [`partitions_for_replay`]), one
    /// partition each for the dead letters and the alerts.
    pub fn for_pipeline(kafka: &KafkaConfig, partitions: i32) -> anyhow::Result<Self> {
        let mut cluster = Self::start(&[
            (kafka.topic.as_str(), partitions),
            (kafka.dead_letter_topic.as_str(), 1),
            (kafka.alerts_topic.as_str(), 1),
        ])?;
        cluster.input = Some((kafka.topic.clone(), partitions));
        Ok(cluster)
    }

    /// Produces `payloads` into the input topic as fast as the cluster takes them, and checks
    /// that it kept them all (it deletes a partition's oldest messages past its limits).
    pub async fn replay(
        &self,
        producer: &FutureProducer,
        payloads: &[Vec<u8>],
    ) -> anyhow::Result<replay::Replayed> {
        let (topic, partitions) = self
            .input
            .as_ref()
            .context("the embedded cluster was not started for the pipeline")?;
        let replayed =
            replay::produce_all(producer, topic, payloads, replay::Pace::Max, |_| {}).await?;
        let sent = replayed.sent;
        let dropped = tokio::task::block_in_place(|| dropped(producer, topic, *partitions))?;
        anyhow::ensure!(
            dropped == 0,
            "the embedded Kafka cluster dropped {dropped} of the {sent} replayed messages (it keeps 5 MiB per partition): \
             raise kafka.embedded_partitions (now {partitions}) or use a real broker (--brokers)"
        );
        Ok(replayed)
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

/// librdkafka's mock broker deletes a partition's oldest messages beyond 5 MiB (or 100,000
/// messages), like a broker with a tiny retention.
pub const EMBEDDED_PARTITION_BYTES: usize = 5 << 20;

/// Messages the embedded cluster keeps per partition (see [`EMBEDDED_PARTITION_BYTES`]).
pub const EMBEDDED_PARTITION_MESSAGES: usize = 100_000;

/// Partitions the embedded cluster needs to keep every message of a replay until it is consumed:
/// the fewest, at least `configured` (and at most 1,024), at which no partition holds more than
/// 80 % of the cluster's per-partition limits, with each keyed message placed where our
/// producer's partitioner puts it. `messages`: each message's key and payload size. (Keys are
/// instrument tokens, few and uneven: at 50 keys over 55 partitions, an average share was far
/// from the fullest partition.)
pub fn partitions_for(configured: i32, messages: &[(Option<&str>, usize)]) -> i32 {
    const MOST: i32 = 1024;
    // Bytes the cluster counts per message beyond its payload (record and batch headers), with
    // room to spare.
    const OVERHEAD: usize = 128;
    let byte_budget = EMBEDDED_PARTITION_BYTES / 5 * 4;
    let count_budget = EMBEDDED_PARTITION_MESSAGES / 5 * 4;
    let mut keyed: HashMap<&str, (usize, usize)> = HashMap::new();
    let (mut keyless_bytes, mut keyless_count) = (0, 0);
    for &(key, size) in messages {
        let (bytes, count) = match key {
            Some(key) => keyed.entry(key).or_default(),
            None => {
                keyless_bytes += size + OVERHEAD;
                keyless_count += 1;
                continue;
            }
        };
        *bytes += size + OVERHEAD;
        *count += 1;
    }
    let keyed: Vec<(u32, usize, usize)> = keyed
        .into_iter()
        .map(|(key, (bytes, count))| (crc32(key.as_bytes()), bytes, count))
        .collect();
    let total_bytes = keyed.iter().map(|k| k.1).sum::<usize>() + keyless_bytes;
    let even = total_bytes
        .div_ceil(byte_budget)
        .max(messages.len().div_ceil(count_budget));
    let least = configured
        .max(i32::try_from(even).unwrap_or(MOST))
        .min(MOST);
    if keyed
        .iter()
        .any(|&(_, bytes, count)| bytes > byte_budget || count > count_budget)
    {
        // One key alone overflows a partition: no count helps (the replay's check says so).
        return least;
    }
    (least..=MOST)
        .find(|&partitions| {
            let n = partitions as usize;
            // Keyless messages land at random: an even share with a quarter to spare.
            let spread = |total: usize| (total / n) + (total / n) / 4 + 1;
            let mut load = vec![(spread(keyless_bytes), spread(keyless_count)); n];
            for &(hash, bytes, count) in &keyed {
                let slot = &mut load[hash as usize % n];
                slot.0 += bytes;
                slot.1 += count;
            }
            load.iter()
                .all(|&(bytes, count)| bytes <= byte_budget && count <= count_budget)
        })
        .unwrap_or(MOST)
}

/// CRC-32 (IEEE, reflected: zlib's), which librdkafka's default partitioner (`consistent_random`)
/// takes modulo the partition count to place a keyed message.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Messages the embedded cluster already deleted from `topic` (its low watermarks): anything but
/// 0 right after a replay means the input did not fit, and would be lost without a word.
fn dropped(producer: &FutureProducer, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    let timeout = Duration::from_secs(10);
    let mut dropped = 0;
    for p in 0..partitions {
        let (low, _) = producer
            .client()
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        dropped += low;
    }
    Ok(dropped)
}

/// Partitions the embedded cluster needs to retain a replay of `payloads`, each keyed as
/// [`replay::produce_all`] keys it (see [`partitions_for`]).
pub fn partitions_for_replay(configured: i32, payloads: &[Vec<u8>]) -> i32 {
    let keys: Vec<Option<String>> = payloads.iter().map(|p| replay::key_of(p)).collect();
    let messages: Vec<(Option<&str>, usize)> = keys
        .iter()
        .zip(payloads)
        .map(|(key, p)| (key.as_deref(), p.len()))
        .collect();
    partitions_for(configured, &messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    /// The fullest partition when `messages` are placed the way the producer places them.
    fn fullest(messages: &[(Option<&str>, usize)], partitions: i32) -> usize {
        let mut load = vec![0; partitions as usize];
        for (key, size) in messages {
            load[crc32(key.unwrap().as_bytes()) as usize % partitions as usize] += size + 128;
        }
        load.into_iter().max().unwrap()
    }

    #[test]
    fn the_embedded_topic_is_sized_to_retain_the_input() {
        let budget = EMBEDDED_PARTITION_BYTES / 5 * 4;
        let small = [(Some("1"), 720); 100];
        assert_eq!(partitions_for(3, &small), 3);
        // 100,000 ticks of ~720 bytes over 50 instruments (72 MB): the run that dropped 2,011
        // messages at 55 partitions (an even share with headroom).
        let keys: Vec<String> = (0..50).map(|i| (256_265 + 7_919 * i).to_string()).collect();
        let ticks: Vec<(Option<&str>, usize)> = (0..100_000)
            .map(|i| (Some(keys[i % 50].as_str()), 720))
            .collect();
        let partitions = partitions_for(3, &ticks);
        assert!(fullest(&ticks, partitions) <= budget, "{partitions}");
        assert!(
            fullest(&ticks, partitions - 1) > budget,
            "{partitions} is the fewest"
        );
        // Many small keyless messages: the cluster's message cap counts too.
        let tiny = vec![(None, 3); 300_000];
        let partitions = partitions_for(1, &tiny);
        assert!(
            300_000 / partitions as usize <= EMBEDDED_PARTITION_MESSAGES * 4 / 5,
            "{partitions}"
        );
        // One key bigger than a partition: no partition count helps; no 1,024-partition topic.
        let one = vec![(Some("42"), 1_000); 10_000];
        assert_eq!(partitions_for(3, &one), 3);
    }
}
