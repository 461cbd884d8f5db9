//! Replays a file of ticks into a topic: the sample's JSON array or NDJSON, one message per tick,
//! keyed by instrument token (so one instrument's ticks stay in order on one partition). Pacing:
//! as fast as possible, a fixed rate, or the ticks' own timestamps scaled by a speed factor.

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    Max,
    /// Messages per second.
    Rate(f64),
    /// The ticks' own inter-arrival times divided by this factor.
    Speed(f64),
}

/// Reads an input file into one payload per tick.
pub fn read_input(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let items = stockpipe_model::json::split_input(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(items)
}

/// The message key: the instrument token when the payload has one.
pub(crate) fn key_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Token {
        instrument_token: serde_json::Value,
    }
    // Only the one field is read; a tick that is otherwise malformed keeps its key.
    let token: Token = serde_json::from_slice(payload).ok()?;
    Some(token.instrument_token.to_string())
}

fn timestamp_of(payload: &[u8]) -> Option<i64> {
    stockpipe_model::json::decode_tick(payload, 0)
        .ok()
        .map(|t| t.timestamp_us)
}

/// Produces every payload and waits until the broker has acknowledged all of them.
/// `progress` is called with the count sent so far.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    payloads: &[Vec<u8>],
    pace: Pace,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let start = Instant::now();
    let first_ts = payloads.iter().find_map(|p| timestamp_of(p));
    let mut pending = Vec::with_capacity(payloads.len().min(100_000));
    let mut sent = 0u64;
    for (i, payload) in payloads.iter().enumerate() {
        let due = match pace {
            Pace::Max => None,
            Pace::Rate(rate) => Some(Duration::from_secs_f64(i as f64 / rate)),
            Pace::Speed(speed) => match (first_ts, timestamp_of(payload)) {
                (Some(first), Some(ts)) if ts > first => {
                    Some(Duration::from_secs_f64((ts - first) as f64 / 1e6 / speed))
                }
                _ => None,
            },
        };
        if let Some(due) = due
            && let Some(wait) = due.checked_sub(start.elapsed())
        {
            tokio::time::sleep(wait).await;
        }
        let key = key_of(payload);
        let delivery = enqueue(producer, topic, key.as_deref(), payload)
            .await
            .with_context(|| format!("producing message {i} to {topic}"))?;
        pending.push(delivery);
        sent += 1;
        if pending.len() >= 10_000 {
            await_deliveries(&mut pending, topic).await?;
        }
        if sent.is_multiple_of(1000) {
            progress(sent);
        }
    }
    await_deliveries(&mut pending, topic).await?;
    progress(sent);
    Ok(sent)
}

/// Hands one message to the producer, waiting while its queue is full.
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Produces simulated ticks stamped with the wall clock, `rate` per second, until dropped (a live
/// market for the offline mode, the dashboard and the benchmarks).
pub async fn feed_simulated(
    producer: FutureProducer,
    topic: String,
    rate: f64,
    options: crate::source::simulate::SimulateOptions,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate > 0.0 && rate.is_finite(),
        "the simulated rate must be positive"
    );
    let mut simulator = crate::source::simulate::Simulator::new(&options);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut pending = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let t = simulator.tick_at(crate::clock::unix_now_us());
            let key = t.instrument_token.to_string();
            let payload = crate::source::simulate::tick_json(&t);
            pending.push(
                enqueue(&producer, &topic, Some(&key), &payload)
                    .await
                    .with_context(|| format!("producing a simulated tick to {topic}"))?,
            );
            sent += 1;
        }
        if pending.len() >= 10_000 {
            await_deliveries(&mut pending, &topic).await?;
        }
    }
}

async fn await_deliveries(
    pending: &mut Vec<rdkafka::producer::DeliveryFuture>,
    topic: &str,
) -> anyhow::Result<()> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e).with_context(|| format!("delivering to {topic}")),
            Err(_) => anyhow::bail!("the producer was dropped before delivering to {topic}"),
        }
    }
    Ok(())
}
