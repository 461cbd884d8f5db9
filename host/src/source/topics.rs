//! The topics checked before the pipeline starts: the input topic must exist (its partition
//! count is logged); the alert and dead-letter topics exist, or are created with
//! `kafka.create_topics`. A missing one is a start-up error naming it — rather than a producer
//! that creates it by accident with the broker's defaults, or waits on it forever.
//!
//! A cluster that does not answer is named with the errors its client saw meanwhile (a
//! certificate that does not verify, a refused password), not only "timed out":
//! [`kafka::Probe`](super::kafka::Probe) keeps them.

use super::kafka::{self, Connection, KafkaConfig, Probe};
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// How many partitions `topic` has on `cluster`; `None` when it does not exist.
pub fn partitions(
    client: &BaseConsumer<Probe>,
    probe: &Probe,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Option<usize>> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| probe.explain_after(client, e))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error() {
        None if !found.partitions().is_empty() => Ok(Some(found.partitions().len())),
        None => Ok(None),
        Some(e) => {
            let code = rdkafka::types::RDKafkaErrorCode::from(e);
            use rdkafka::types::RDKafkaErrorCode as C;
            if matches!(code, C::UnknownTopicOrPartition | C::UnknownTopic) {
                Ok(None)
            } else {
                anyhow::bail!("the metadata of {topic}: {code}")
            }
        }
    }
}

/// Checks the input topic on `input` and the output topics on `output` (creating those with
/// `kafka.create_topics`); `embedded`: the embedded cluster made them all, nothing to create.
pub async fn check(
    input: &Connection,
    output: &Connection,
    k: &KafkaConfig,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (client, probe) = kafka::client(input, None)?;
    let topic = k.topic.clone();
    let found = tokio::task::block_in_place(|| partitions(&client, &probe, &topic, timeout))
        .with_context(|| format!("reading the metadata of {topic} from {}", input.describe()))?;
    let count = match found {
        Some(count) => count,
        None if k.create_topics => {
            create(input, &topic, k).await?;
            k.topic_partitions as usize
        }
        None => anyhow::bail!(
            "the input topic {topic} does not exist on {} (create it, or set kafka.create_topics = true)",
            input.describe()
        ),
    };
    tracing::info!(topic = %topic, partitions = count, brokers = %input.describe(), "input topic");
    let (client, probe) = kafka::client(output, None)?;
    for topic in [&k.dead_letter_topic, &k.alerts_topic] {
        let found = tokio::task::block_in_place(|| partitions(&client, &probe, topic, timeout))
            .with_context(|| {
                format!("reading the metadata of {topic} from {}", output.describe())
            })?;
        match found {
            Some(_) => {}
            None if k.create_topics => create(output, topic, k).await?,
            None => anyhow::bail!(
                "the output topic {topic} does not exist on {} (create it, or set kafka.create_topics = true)",
                output.describe()
            ),
        }
    }
    Ok(())
}

/// Creates `topic` on `cluster` with `kafka.topic_partitions` and `topic_replication_factor`.
async fn create(cluster: &Connection, topic: &str, k: &KafkaConfig) -> anyhow::Result<()> {
    let probe = Probe::default();
    let admin: AdminClient<Probe> = cluster
        .client_config()
        .create_with_context(probe.clone())
        .with_context(|| format!("creating a Kafka admin client for {}", cluster.describe()))?;
    let new = NewTopic::new(
        topic,
        k.topic_partitions,
        TopicReplication::Fixed(k.topic_replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| probe.explain(e))
        .with_context(|| format!("creating topic {topic} on {}", cluster.describe()))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, partitions = k.topic_partitions, "topic created"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                anyhow::bail!("creating topic {name} on {}: {code}", cluster.describe())
            }
        }
    }
    Ok(())
}
