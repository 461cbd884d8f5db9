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

/// The ticks of an input file, one payload each, in the file's order.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub payloads: Vec<Vec<u8>>,
    /// Where each payload stands in the file, 1-based: its line (NDJSON) or element (array).
    pub positions: Vec<usize>,
    /// `line` or `element`.
    pub unit: &'static str,
}

/// Reads an input file into one payload per tick. NDJSON lines are kept byte for byte (invalid
/// UTF-8 included: such a line reaches the dead-letter topic like any tick that does not decode).
pub fn read_input(path: &Path) -> anyhow::Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let unit = if stockpipe_model::json::is_json_array(&bytes) {
        "element"
    } else {
        "line"
    };
    let items = stockpipe_model::json::split_input_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (positions, payloads) = items.into_iter().unzip();
    Ok(Input {
        payloads,
        positions,
        unit,
    })
}

/// A payload the broker would not take (e.g. larger than a message may be): it is not in the
/// topic, so the run reports it instead of stopping.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InputRefusal {
    /// `line 12` or `element 3`; or the payload's index when its place in a file is not known.
    pub at: String,
    pub bytes: usize,
    pub reason: String,
}

/// What a replay produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replayed {
    /// Messages the broker acknowledged.
    pub sent: u64,
    /// `(index of the payload, its size, why)` of each payload the broker would not take.
    pub refused: Vec<(usize, usize, String)>,
}

impl Replayed {
    /// The refusals, placed in `input` and logged.
    pub fn refusals(&self, input: &Input) -> Vec<InputRefusal> {
        self.refused
            .iter()
            .map(|(i, bytes, reason)| {
                let at = match input.positions.get(*i) {
                    Some(n) => format!("{} {n}", input.unit),
                    None => format!("payload {i}"),
                };
                tracing::warn!(at = %at, bytes, reason = %reason, "an input tick the broker would not take is left out of the topic");
                InputRefusal {
                    at,
                    bytes: *bytes,
                    reason: reason.clone(),
                }
            })
            .collect()
    }
}

/// Whether the broker refuses this message for what it is (it could never be produced), rather
/// than for the state the broker or the connection is in.
pub(crate) fn refused_for_good(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e,
        KafkaError::MessageProduction(
            Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::InvalidMessage
        )
    )
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

/// Produces every payload and waits until the broker has acknowledged all of them. A payload the
/// broker refuses for good (too large) is left out and reported in [`Replayed::refused`]; any
/// other failure stops the replay. `progress` is called with the count sent so far.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    payloads: &[Vec<u8>],
    pace: Pace,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Replayed> {
    let start = Instant::now();
    let first_ts = payloads.iter().find_map(|p| timestamp_of(p));
    let mut pending = Vec::with_capacity(payloads.len().min(100_000));
    let mut replayed = Replayed::default();
    let mut handed = 0u64;
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
        match enqueue(producer, topic, key.as_deref(), payload, None).await {
            Ok(delivery) => pending.push((i, delivery)),
            Err(e) if refused_for_good(&e) => {
                replayed.refused.push((i, payload.len(), e.to_string()));
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("producing message {i} to {topic}"));
            }
        }
        handed += 1;
        if pending.len() >= 10_000 {
            settle(&mut pending, payloads, topic, &mut replayed).await?;
        }
        if handed.is_multiple_of(1000) {
            progress(handed);
        }
    }
    settle(&mut pending, payloads, topic, &mut replayed).await?;
    progress(replayed.sent);
    Ok(replayed)
}

/// Awaits the deliveries of a replay: counted when acknowledged, recorded when refused for good.
async fn settle(
    pending: &mut Vec<(usize, rdkafka::producer::DeliveryFuture)>,
    payloads: &[Vec<u8>],
    topic: &str,
    replayed: &mut Replayed,
) -> anyhow::Result<()> {
    for (i, delivery) in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => replayed.sent += 1,
            Ok(Err((e, _))) if refused_for_good(&e) => {
                replayed.refused.push((i, payloads[i].len(), e.to_string()));
            }
            Ok(Err((e, _))) => {
                return Err(e).with_context(|| format!("delivering message {i} to {topic}"));
            }
            Err(_) => anyhow::bail!("the producer was dropped before delivering to {topic}"),
        }
    }
    Ok(())
}

/// Hands one message to the producer (to `partition`, or where the producer's partitioner puts
/// it), waiting while its queue is full.
pub(crate) async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
    partition: Option<i32>,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(partition) = partition {
        record = record.partition(partition);
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
                enqueue(&producer, &topic, Some(&key), &payload, None)
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
