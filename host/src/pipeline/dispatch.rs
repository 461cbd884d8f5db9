//! One batch: decode → the chain → each outcome to its sinks. A refused tick (by decoding or by a
//! guest) goes, byte for byte, to the dead-letter topic; an accepted one becomes a document for the
//! lake, Elasticsearch and (with an alert) the alerts topic. Every sink a message is routed to is
//! tracked, so that its offset moves only once each has acknowledged it.

use super::{Consumed, Pipeline};
use crate::chain::{Refusal, StageChain, StageOutcome};
use crate::sink::document::DocumentWriter;
use crate::sink::elasticsearch::BulkItem;
use crate::sink::lake::{Appended, RolledSegment};
use crate::sink::{SourceRef, kafka as kafka_sink};
use crate::telemetry::BatchRecord;
use anyhow::Context;
use rdkafka::producer::DeliveryFuture;
use std::future::Future;
use std::sync::Arc;
use stockpipe_guest_route::logic::Destinations;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::json::{DecodeError, decode_into};
use stockpipe_model::{Enrichment, TickRef};

/// A delivery to a topic (a dead letter, an alert) not yet acknowledged by the broker: its
/// message's offset cannot move until it is. Collected between batches, not awaited by the batch
/// that sent it.
pub(super) struct Pending {
    pub(super) source: SourceRef,
    pub(super) delivery: DeliveryFuture,
    /// A dead letter's: the stage that refused the tick; none for an alert.
    pub(super) refused_at: Option<&'static str>,
    /// The partition's generation when it was sent (see [`Pipeline::generation`]).
    pub(super) generation: u64,
}

/// A document for the index, its bytes at `range` of the batch's document buffer.
struct ToIndex {
    index: Arc<str>,
    range: std::ops::Range<usize>,
    message: Consumed,
    /// Its partition's generation (see [`Pipeline::generation`]).
    generation: u64,
}

/// What one batch left for after its loop: the counts, the deliveries to await, the lake
/// segments that filled up, the documents to index.
#[derive(Default)]
struct BatchOut {
    record: BatchRecord,
    pending: Vec<Pending>,
    rolled: Vec<RolledSegment>,
    /// Re-delivered lines the lake already holds.
    already_stored: u64,
    /// Every document of the batch, back to back: each is encoded once, the lake copies its line
    /// from here and the index shares it.
    documents: Vec<u8>,
    to_index: Vec<ToIndex>,
}

/// Decodes every message straight into the batch's columns: the ticks, in order, and for each
/// message its tick's index or the reason it did not decode.
fn decode_batch(
    batch: &[Consumed],
    offset_minutes: i32,
) -> (TickColumns, Vec<Result<usize, DecodeError>>) {
    // Five levels a side, the sample's depth: a deeper book only grows the level columns.
    let mut ticks = TickColumns::with_capacity(batch.len(), 5);
    let slots = batch
        .iter()
        .map(|m| decode_into(&m.payload, offset_minutes, &mut ticks).map(|()| ticks.len() - 1))
        .collect();
    (ticks, slots)
}

impl Pipeline {
    pub(super) async fn process(&mut self, batch: Vec<Consumed>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch
            .iter()
            .any(|m| !self.listed.contains(&m.source.partition))
        {
            self.list_lake().await?;
            self.listed.extend(batch.iter().map(|m| m.source.partition));
        }
        self.restore_states().await?;
        let offset_minutes = self.config.validate.naive_timestamp_offset_minutes;
        let (ticks, slots) = decode_batch(&batch, offset_minutes);
        let chain = &mut self.chain;
        let mut outcomes: Vec<Option<StageOutcome>> =
            tokio::task::block_in_place(|| chain.process_columns(&ticks))
                .into_iter()
                .map(Some)
                .collect();
        anyhow::ensure!(
            outcomes.len() == ticks.len(),
            "the chain returned {} outcomes for {} ticks",
            outcomes.len(),
            ticks.len()
        );
        let bars = self.aggregate(&batch, &slots, &outcomes, &ticks)?;
        let guest_calls = self.chain.last_calls();
        let versions = self.chain.versions();
        let (bids, asks) = ticks.levels();
        let views = ticks.views(&bids, &asks);
        let writer = DocumentWriter::new(&versions);
        let mut out = BatchOut {
            record: BatchRecord {
                consumed: batch.len() as u64,
                ..BatchRecord::default()
            },
            documents: Vec::with_capacity(self.document_capacity * views.len()),
            ..BatchOut::default()
        };
        for (message, slot) in batch.into_iter().zip(slots) {
            match slot {
                Ok(i) => {
                    let outcome = outcomes[i].take().expect("each outcome is taken once");
                    self.dispatch(message, Some(&views[i]), outcome, &writer, &mut out)?;
                }
                Err(e) => {
                    let refused = StageOutcome::Refused {
                        refusal: Refusal {
                            stage: "decode",
                            code: e.code.into(),
                            message: e.message,
                            guest_version: None,
                        },
                        dead_letter_topic: self.config.kafka.dead_letter_topic.clone(),
                    };
                    self.dispatch(message, None, refused, &writer, &mut out)?;
                }
            }
        }
        out.pending.extend(bars.pending);
        out.rolled.extend(bars.rolled);
        out.already_stored += bars.already_stored;
        if let Some(es) = &mut self.es {
            for item in bars.to_index {
                es.push(item);
            }
        }
        if !views.is_empty() {
            self.document_capacity = (out.documents.len() / views.len() + 64).min(16 << 10);
        }
        self.index_documents(
            std::mem::take(&mut out.documents),
            std::mem::take(&mut out.to_index),
        );
        self.telemetry.record_batch(out.record, &guest_calls);
        self.telemetry.lake_already_stored(out.already_stored);
        self.store_segments(out.rolled).await?;
        drop(views);
        self.after_batch(ticks);
        self.deliveries.extend(out.pending);
        Ok(())
    }

    /// Sends one message's outcome to its sinks.
    fn dispatch(
        &mut self,
        message: Consumed,
        tick: Option<&TickRef<'_>>,
        outcome: StageOutcome,
        writer: &DocumentWriter,
        out: &mut BatchOut,
    ) -> anyhow::Result<()> {
        match outcome {
            StageOutcome::Refused {
                refusal,
                dead_letter_topic,
            } => self.refuse(message, &refusal, &dead_letter_topic, out),
            StageOutcome::Accepted {
                enrichment,
                destinations,
            } => {
                let tick = tick.expect("an accepted tick was decoded");
                self.accept(message, tick, &enrichment, &destinations, writer, out)
            }
        }
    }

    /// The original bytes to the dead-letter topic, the reason in headers.
    fn refuse(
        &mut self,
        message: Consumed,
        refusal: &Refusal,
        dead_letter_topic: &str,
        out: &mut BatchOut,
    ) -> anyhow::Result<()> {
        let source = &message.source;
        out.record
            .refusals
            .push((refusal.stage, refusal.code.clone()));
        tracing::debug!(partition = source.partition, offset = source.offset, stage = refusal.stage, code = %refusal.code, "refused");
        self.tracker.track(source.partition, source.offset, 1);
        let delivery = kafka_sink::send_dead_letter(
            &self.producer,
            dead_letter_topic,
            message.key.as_deref(),
            &message.payload,
            refusal,
            source,
        )
        .with_context(|| format!("enqueueing a dead letter to {dead_letter_topic}"))?;
        out.pending.push(Pending {
            source: source.clone(),
            delivery,
            refused_at: Some(refusal.stage),
            generation: self.generation(source.partition),
        });
        Ok(())
    }

    /// The document to the lake partition, the index and the alerts topic that route chose.
    fn accept(
        &mut self,
        message: Consumed,
        tick: &TickRef<'_>,
        enrichment: &Enrichment,
        destinations: &Destinations,
        writer: &DocumentWriter,
        out: &mut BatchOut,
    ) -> anyhow::Result<()> {
        let source = &message.source;
        out.record.accepted += 1;
        out.record
            .prices
            .push((tick.instrument_token, tick.timestamp_us, tick.last_price));
        let index = destinations
            .search_index
            .as_ref()
            .filter(|_| self.es.is_some());
        let sinks = u32::from(destinations.lake_partition.is_some())
            + u32::from(destinations.alert.is_some())
            + u32::from(index.is_some());
        self.tracker.track(source.partition, source.offset, sinks);
        let start = out.documents.len();
        if sinks > 0 {
            writer.write(&mut out.documents, tick, enrichment, source);
        }
        let range = start..out.documents.len();
        if let Some(partition) = &destinations.lake_partition {
            let line = &out.documents[range.clone()];
            match self
                .lake
                .append(partition, source.partition, source.offset, line)
            {
                Appended::Buffered(r) => out.rolled.extend(r),
                Appended::AlreadyStored => {
                    out.already_stored += 1;
                    self.tracker.ack(source.partition, source.offset);
                }
            }
        }
        if let Some(alert) = &destinations.alert {
            let body = DocumentWriter::with_alert(&out.documents[range.clone()], &alert.reason);
            let delivery =
                kafka_sink::send_alert(&self.producer, &alert.topic, message.key.as_deref(), &body)
                    .with_context(|| format!("enqueueing an alert to {}", alert.topic))?;
            out.pending.push(Pending {
                source: source.clone(),
                delivery,
                refused_at: None,
                generation: self.generation(source.partition),
            });
        }
        if let Some(index) = index {
            out.to_index.push(ToIndex {
                index: index.clone(),
                range,
                generation: self.generation(message.source.partition),
                message,
            });
        }
        Ok(())
    }

    /// Hands the batch's documents for the index to the Elasticsearch sink, each a slice of the
    /// one buffer they were encoded into.
    fn index_documents(&mut self, documents: Vec<u8>, to_index: Vec<ToIndex>) {
        let Some(es) = &mut self.es else {
            return;
        };
        let documents = bytes::Bytes::from(documents);
        for item in to_index {
            es.push(BulkItem {
                generation: item.generation,
                index: item.index,
                document: documents.slice(item.range),
                source: item.message.source,
                key: item.message.key,
                payload: item.message.payload,
                id: None,
            });
        }
    }

    /// Hot swap's bookkeeping: the applier's watch over a new version, the processed count, and
    /// the shadow buffer a candidate is tried on.
    fn after_batch(&mut self, ticks: TickColumns) {
        if let Some(swaps) = &mut self.swaps {
            swaps.after_batch(&mut self.chain);
        }
        self.registry
            .processed
            .fetch_add(ticks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.shadow
            .lock()
            .expect("shadow lock")
            .push(Arc::new(ticks));
    }

    /// The dead letters and alerts the broker has answered for (all of them, waiting, with `all`):
    /// each one it took is acknowledged, and counted; one it refused stops the run (its offset is
    /// not committed: the next run sends it again).
    pub(super) async fn collect_deliveries(&mut self, all: bool) -> anyhow::Result<()> {
        let mut dead_lettered: Vec<(&'static str, u64)> = Vec::new();
        let mut alerts = 0;
        let mut waiting = Vec::new();
        for mut p in std::mem::take(&mut self.deliveries) {
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
            let (source, refused_at) = (p.source, p.refused_at);
            match answer {
                Ok(Ok(_)) if p.generation != self.generation(source.partition) => {
                    // The partition was let go of and taken again since: its offsets are
                    // tracked anew, and this answer is not theirs to count.
                }
                Ok(Ok(_)) => {
                    match refused_at {
                        Some(stage) => match dead_lettered.iter_mut().find(|(s, _)| *s == stage) {
                            Some((_, n)) => *n += 1,
                            None => dead_lettered.push((stage, 1)),
                        },
                        None => alerts += 1,
                    }
                    self.tracker.ack(source.partition, source.offset);
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
        self.deliveries = waiting;
        for (stage, count) in dead_lettered {
            self.telemetry.dead_lettered(stage, count);
        }
        self.telemetry.alerts_delivered(alerts);
        Ok(())
    }
}
