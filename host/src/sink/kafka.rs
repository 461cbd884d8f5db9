//! The Kafka sinks: the dead-letter topic (the original bytes, untouched, with the reason in
//! headers) and the alerts topic (the accepted document plus the alert's reason).

use super::SourceRef;
use crate::chain::Refusal;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Header names on a dead-lettered message.
pub mod headers {
    pub const STAGE: &str = "stockpipe.stage";
    pub const REASON_CODE: &str = "stockpipe.reason.code";
    pub const REASON: &str = "stockpipe.reason";
    pub const GUEST_VERSION: &str = "stockpipe.guest.version";
    pub const SOURCE_TOPIC: &str = "stockpipe.source.topic";
    pub const SOURCE_PARTITION: &str = "stockpipe.source.partition";
    pub const SOURCE_OFFSET: &str = "stockpipe.source.offset";
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
        .insert(header(headers::STAGE, refusal.stage))
        .insert(header(headers::REASON_CODE, &refusal.code))
        .insert(header(headers::REASON, &refusal.message))
        .insert(header(headers::GUEST_VERSION, version))
        .insert(header(headers::SOURCE_TOPIC, &source.topic))
        .insert(header(headers::SOURCE_PARTITION, &partition))
        .insert(header(headers::SOURCE_OFFSET, &offset));
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).payload(payload).headers(hdrs);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer.send_result(record).map_err(|(e, _)| e)
}

/// Enqueues one alert: the document with `alert_reason` added.
pub fn send_alert(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    document: &[u8],
) -> Result<DeliveryFuture, rdkafka::error::KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(document);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer.send_result(record).map_err(|(e, _)| e)
}
