//! The Kafka sinks: the dead-letter topic (the original bytes, untouched, with the reason in
//! headers) and the alerts topic (the accepted document plus the alert's reason). [`Deliveries`]
//! sends them and acknowledges each once the broker has it.

use super::{Acked, SourceRef};
use crate::chain::Refusal;
use crate::telemetry::Telemetry;
use anyhow::Context;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::future::Future;

/// Header names on a dead-lettered message.
pub mod headers {
    pub const STAGE: &str = "stockpipe.stage";
    pub const REASON_CODE: &str = "stockpipe.reason.code";
    pub const REASON: &str = "stockpipe.reason";
    pub const GUEST_VERSION: &str = "stockpipe.guest.version";
    pub const SOURCE_TOPIC: &str = "stockpipe.source.topic";
    pub const SOURCE_PARTITION: &str = "stockpipe.source.partition";
    pub const SOURCE_OFFSET: &str = "stockpipe.source.offset";
    /// The tick's place in its message, for a message of several ticks (absent otherwise).
    pub const SOURCE_TICK: &str = "stockpipe.source.tick";
    /// An alert event's id (see `stockpipe_model::alert::alert_id`).
    pub const ALERT_ID: &str = "stockpipe.alert_id";
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Enqueues one dead letter; the returned future resolves when the broker has it.
pub fn send_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    refusal: &Refusal,
    source: &SourceRef,
) -> Result<DeliveryFuture, rdkafka::error::KafkaError> {
    let (partition, offset) = (source.partition.to_string(), source.offset.to_string());
    let version = refusal.guest_version.as_deref().unwrap_or("host");
    let hdrs = OwnedHeaders::new()
        .insert(header(headers::STAGE, refusal.stage.as_str()))
        .insert(header(headers::REASON_CODE, &refusal.code))
        .insert(header(headers::REASON, &refusal.message))
        .insert(header(headers::GUEST_VERSION, version))
        .insert(header(headers::SOURCE_TOPIC, &source.topic))
        .insert(header(headers::SOURCE_PARTITION, &partition))
        .insert(header(headers::SOURCE_OFFSET, &offset));
    // A tick of a message of several: its own JSON is the payload, its place a header.
    let hdrs = match source.tick {
        Some(k) => hdrs.insert(header(headers::SOURCE_TICK, &k.to_string())),
        None => hdrs,
    };
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).payload(payload).headers(hdrs);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer.send_result(record).map_err(|(e, _)| e)
}

/// Enqueues one alert event, keyed by its instrument, its id in a header.
pub fn send_alert(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    alert_id: &str,
    document: &[u8],
) -> Result<DeliveryFuture, rdkafka::error::KafkaError> {
    let hdrs = OwnedHeaders::new().insert(header(headers::ALERT_ID, alert_id));
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .payload(document)
        .key(key)
        .headers(hdrs);
    producer.send_result(record).map_err(|(e, _)| e)
}

/// A delivery to a topic (a dead letter, an alert) not yet acknowledged by the broker: its
/// message's offset cannot move until it is.
struct Pending {
    source: SourceRef,
    delivery: DeliveryFuture,
    /// A dead letter's: the stage that refused the tick; none for an alert.
    refused_at: Option<&'static str>,
    /// The partition's generation when it was sent.
    generation: u64,
}

/// The dead letters and alerts sent and not yet answered. Collected between batches, not
/// awaited by the batch that sent them (so the producer never buffers without bound, the loop
/// waits for all of them at the end of a run and before letting go of a partition).
pub struct Deliveries {
    producer: FutureProducer,
    pending: Vec<Pending>,
    telemetry: std::sync::Arc<Telemetry>,
}

impl Deliveries {
    pub fn new(producer: FutureProducer, telemetry: std::sync::Arc<Telemetry>) -> Self {
        Self {
            producer,
            pending: Vec::new(),
            telemetry,
        }
    }

    /// Sends `payload` (a refused message's original bytes, and its `key`) to `topic` with the
    /// reason in headers; stamped with its partition's `generation`.
    pub fn dead_letter(
        &mut self,
        topic: &str,
        (key, payload): (Option<&[u8]>, &[u8]),
        refusal: &Refusal,
        source: &SourceRef,
        generation: u64,
    ) -> anyhow::Result<()> {
        let delivery = send_dead_letter(&self.producer, topic, key, payload, refusal, source)
            .with_context(|| format!("enqueueing a dead letter to {topic}"))?;
        self.pending.push(Pending {
            source: source.clone(),
            delivery,
            refused_at: Some(refusal.stage.as_str()),
            generation,
        });
        Ok(())
    }

    /// Sends an alert event's `document` to `topic`, keyed by `key` (its instrument).
    pub fn alert(
        &mut self,
        topic: &str,
        key: &[u8],
        alert_id: &str,
        document: &[u8],
        source: &SourceRef,
        generation: u64,
    ) -> anyhow::Result<()> {
        let delivery = send_alert(&self.producer, topic, key, alert_id, document)
            .with_context(|| format!("enqueueing an alert to {topic}"))?;
        self.pending.push(Pending {
            source: source.clone(),
            delivery,
            refused_at: None,
            generation,
        });
        Ok(())
    }

    /// The deliveries the broker has answered for (all of them, waiting, with `all`): each one it
    /// took, for the copy of the work still current (`generation` of its partition), is counted
    /// and acknowledged; one it refused stops the run (its offset is not committed: the next run
    /// sends it again).
    pub async fn collect(
        &mut self,
        all: bool,
        generation: impl Fn(i32) -> u64,
    ) -> anyhow::Result<Vec<Acked>> {
        let mut dead_lettered: Vec<(&'static str, u64)> = Vec::new();
        let mut alerts = 0;
        let mut acked = Vec::new();
        let mut waiting = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            let answer = if all {
                (&mut p.delivery).await
            } else {
                // Polled once, no timer, no wake-up wanted: an answer that has not come stays
                // for the next batch.
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match std::pin::Pin::new(&mut p.delivery).poll(&mut cx) {
                    std::task::Poll::Ready(answer) => answer,
                    std::task::Poll::Pending => {
                        waiting.push(p);
                        continue;
                    }
                }
            };
            let source = p.source;
            match answer {
                Ok(Ok(_)) if p.generation != generation(source.partition) => {
                    // The partition was let go of and taken again since: its offsets are
                    // tracked anew, and this answer is not theirs to count.
                }
                Ok(Ok(_)) => {
                    match p.refused_at {
                        Some(stage) => match dead_lettered.iter_mut().find(|(s, _)| *s == stage) {
                            Some((_, n)) => *n += 1,
                            None => dead_lettered.push((stage, 1)),
                        },
                        None => alerts += 1,
                    }
                    acked.push(Acked {
                        partition: source.partition,
                        generation: p.generation,
                        offsets: vec![source.offset],
                    });
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
        self.pending = waiting;
        for (stage, count) in dead_lettered {
            self.telemetry.dead_lettered(stage, count);
        }
        self.telemetry.alerts_delivered(alerts);
        Ok(acked)
    }
}
