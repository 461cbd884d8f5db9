//! The topics checked before the pipeline starts: the input topic must exist (its partition
//! count is logged); the alert and dead-letter topics exist, or are created with
//! `kafka.create_topics`. A missing one is a start-up error naming it — rather than a producer
//! that creates it by accident with the broker's defaults, or waits on it forever.
//!
//! A cluster that does not answer is named with the errors its client saw meanwhile (a
//! certificate that does not verify, a refused password), not only "timed out": [`Probe`]
//! keeps them.

use super::kafka::{Connection, KafkaConfig};
use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A client of `cluster` that keeps its errors (in `group`, never committing, when given).
pub fn probe_client(
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
    let (client, probe) = probe_client(input, None)?;
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
    let (client, probe) = probe_client(output, None)?;
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
