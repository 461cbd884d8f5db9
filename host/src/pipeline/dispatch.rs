//! One batch's outcomes to their sinks. A refused tick (by decoding, by a guest, by a stateful
//! stage) goes, byte for byte, to the dead-letter topic; an accepted one becomes a document for
//! the lake and Elasticsearch; a closed bar goes to the lake and the index; an alert event to the
//! alerts topic and the index. Every output is tracked in the [`Ledger`] against its message's offset, so that
//! the offset moves only once each sink has acknowledged it.

use super::alerts::AlertsOut;
use super::bars::BarsOut;
use super::decode::{Decoded, Slot};
use super::ledger::Ledger;
use crate::chain::{Refusal, StageOutcome};
use crate::position::{LakePosition, Offset, Partition};
use crate::sink::document::DocumentWriter;
use crate::sink::elasticsearch::{BulkItem, EsSink};
use crate::sink::kafka::Deliveries;
use crate::sink::lake_sink::LakeSink;
use crate::source::group::Consumed;
use crate::telemetry::BatchRecord;
use std::sync::Arc;
use stockpipe_model::json::DecodeError;
use stockpipe_model::route::Destinations;
use stockpipe_model::{Enrichment, TickRef};

/// A document for the index, its bytes at `range` of the batch's document buffer.
struct ToIndex {
    index: Arc<str>,
    range: std::ops::Range<usize>,
    /// The tick's time.
    time_us: i64,
    message: Consumed,
    /// Its partition's generation (see [`Ledger::generation`]).
    generation: u64,
}

/// The sinks one batch's outcomes go to, and what the batch came to.
pub(super) struct Outputs<'a> {
    pub(super) ledger: &'a mut Ledger,
    pub(super) lake: &'a mut LakeSink,
    pub(super) deliveries: &'a mut Deliveries,
    pub(super) es: Option<&'a mut EsSink>,
    /// Where a tick that did not decode goes (a guest's refusal names its own).
    pub(super) dead_letter_topic: &'a str,
    pub(super) record: BatchRecord,
    /// Re-delivered lines the lake already holds.
    pub(super) already_stored: u64,
}

impl Outputs<'_> {
    /// The aggregate stage's outputs: its refused ticks to the dead-letter topic, its closed bars
    /// to the lake and the index.
    pub(super) fn bars(&mut self, batch: &[Consumed], closed: BarsOut) -> anyhow::Result<()> {
        for (m, refusal) in closed.refused {
            let message = &batch[m];
            let source = &message.source;
            tracing::debug!(partition = source.partition, offset = source.offset, code = %refusal.code, "aggregate refused a tick");
            let topic = self.dead_letter_topic;
            self.dead_letter(message, &refusal, topic)?;
        }
        for bar in closed.bars {
            let message = &batch[bar.message];
            let source = &message.source;
            if self.lake.append_bar(
                &bar.lake_partition,
                source.partition,
                bar.position,
                &bar.document,
            ) {
                self.ledger.track(source.partition, source.offset, 1);
            } else {
                self.already_stored += 1;
            }
            if let Some(es) = &mut self.es {
                self.ledger.track(source.partition, source.offset, 1);
                let document = bytes::Bytes::from(bar.document);
                es.push(BulkItem {
                    index: closed.index.clone(),
                    payload: document.clone(),
                    document,
                    source: source.clone(),
                    key: message.key.clone(),
                    generation: self.ledger.generation(source.partition),
                    id: Some(bar.id.into()),
                    time_us: bar.start_us,
                });
            }
        }
        Ok(())
    }

    /// The alert stage's outputs: the ticks it faulted on to the dead-letter topic, its events
    /// to the alerts topic and the index.
    pub(super) fn alerts(&mut self, batch: &[Consumed], out: AlertsOut) -> anyhow::Result<()> {
        for (m, refusal) in out.refused {
            let topic = self.dead_letter_topic;
            self.dead_letter(&batch[m], &refusal, topic)?;
        }
        for event in out.events {
            let message = &batch[event.message];
            let source = &message.source;
            let generation = self.ledger.generation(source.partition);
            self.ledger.track(source.partition, source.offset, 1);
            self.deliveries.alert(
                &out.topic,
                &event.key,
                &event.id,
                &event.document,
                source,
                generation,
            )?;
            if let Some(es) = &mut self.es {
                self.ledger.track(source.partition, source.offset, 1);
                let document = bytes::Bytes::from(event.document);
                es.push(BulkItem {
                    index: out.index.clone(),
                    payload: document.clone(),
                    document,
                    source: event.source,
                    key: Some(event.key),
                    generation,
                    id: Some(event.id.into()),
                    time_us: event.time_us,
                });
            }
        }
        Ok(())
    }

    /// Each message's outcome to its sinks; the documents are encoded once, into one buffer of
    /// about `capacity` bytes a tick, that the lake copies lines from and the index shares.
    /// Returns the buffer's length.
    pub(super) fn ticks(
        &mut self,
        batch: Vec<Consumed>,
        decoded: &Decoded,
        outcomes: Vec<StageOutcome>,
        writer: &DocumentWriter,
        capacity: usize,
    ) -> anyhow::Result<usize> {
        let (bids, asks) = decoded.ticks.levels();
        let views = decoded.ticks.views(&bids, &asks);
        let mut outcomes: Vec<Option<StageOutcome>> = outcomes.into_iter().map(Some).collect();
        let mut documents = Vec::with_capacity(capacity * views.len());
        let mut to_index = Vec::new();
        let mut messages: Vec<Option<Consumed>> = batch.into_iter().map(Some).collect();
        for (s, slot) in decoded.slots.iter().enumerate() {
            let message = message_of(&mut messages, &decoded.slots, s);
            let (tick, outcome) = match &slot.result {
                Ok(i) => (
                    Some(&views[*i]),
                    outcomes[*i].take().expect("each outcome is taken once"),
                ),
                Err(e) => (None, decode_refusal(e, self.dead_letter_topic)),
            };
            match outcome {
                StageOutcome::Refused {
                    refusal,
                    dead_letter_topic,
                } => self.refuse(&refused_bytes(message), &refusal, &dead_letter_topic)?,
                StageOutcome::Accepted {
                    enrichment,
                    destinations,
                } => {
                    let tick = tick.expect("an accepted tick was decoded");
                    let i = *slot.result.as_ref().expect("an accepted tick was decoded");
                    let accepted = Accepted {
                        tick,
                        extra: decoded.extras[i].as_ref().map(|e| e.json.as_slice()),
                        enrichment: &enrichment,
                        destinations: &destinations,
                    };
                    if let Some(index) = self.accept(&message, accepted, writer, &mut documents)? {
                        to_index.push(ToIndex {
                            generation: self.ledger.generation(message.source.partition),
                            time_us: tick.timestamp_us,
                            index: index.0,
                            range: index.1,
                            message,
                        });
                    }
                }
            }
        }
        let written = documents.len();
        self.index_documents(documents, to_index);
        Ok(written)
    }

    /// The original bytes to the dead-letter topic, the reason in headers.
    fn refuse(
        &mut self,
        message: &Consumed,
        refusal: &Refusal,
        dead_letter_topic: &str,
    ) -> anyhow::Result<()> {
        let source = &message.source;
        self.record
            .refusals
            .push((refusal.stage.as_str(), refusal.code.clone()));
        tracing::debug!(partition = source.partition, offset = source.offset, stage = %refusal.stage, code = %refusal.code, "refused");
        self.dead_letter(message, refusal, dead_letter_topic)
    }

    fn dead_letter(
        &mut self,
        message: &Consumed,
        refusal: &Refusal,
        topic: &str,
    ) -> anyhow::Result<()> {
        let source = &message.source;
        self.ledger.track(source.partition, source.offset, 1);
        let original = (message.key.as_deref(), &message.payload[..]);
        let generation = self.ledger.generation(source.partition);
        self.deliveries
            .dead_letter(topic, original, refusal, source, generation)
    }

    /// The document to the lake partition that route chose; returns the
    /// index it goes to, and where its bytes are in `documents`, when route chose one.
    fn accept(
        &mut self,
        message: &Consumed,
        accepted: Accepted<'_, '_>,
        writer: &DocumentWriter,
        documents: &mut Vec<u8>,
    ) -> anyhow::Result<Option<(Arc<str>, std::ops::Range<usize>)>> {
        let Accepted {
            tick,
            extra,
            enrichment,
            destinations,
        } = accepted;
        let source = &message.source;
        self.record.accepted += 1;
        self.record
            .prices
            .push((tick.instrument_token, tick.timestamp_us, tick.last_price));
        let index = destinations
            .search_index
            .as_ref()
            .filter(|_| self.es.is_some());
        // Route's alert fields are always empty under 0.2.0 (alerts are the alert stage's).
        let sinks = u32::from(destinations.lake_partition.is_some()) + u32::from(index.is_some());
        self.ledger.track(source.partition, source.offset, sinks);
        let start = documents.len();
        if sinks > 0 {
            writer.write_with_extra(documents, tick, extra, enrichment, source);
        }
        let range = start..documents.len();
        if let Some(partition) = &destinations.lake_partition {
            let line = &documents[range.clone()];
            let position = LakePosition::tick(
                Partition(source.partition),
                Offset(source.offset),
                source.tick.unwrap_or(0),
            )?;
            if !self
                .lake
                .append_tick(partition, source.partition, position, line)
            {
                self.already_stored += 1;
                self.ledger.ack_now(source.partition, source.offset);
            }
        }
        Ok(index.map(|index| (index.clone(), range)))
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
                time_us: item.time_us,
            });
        }
    }
}

/// The message of the `s`-th slot, as its tick's outputs carry it: the message itself (taken at
/// its last slot), or for a tick of a message of several, a copy with the tick's place.
fn message_of(messages: &mut [Option<Consumed>], slots: &[Slot], s: usize) -> Consumed {
    let slot = &slots[s];
    let last = slots.get(s + 1).is_none_or(|n| n.message != slot.message);
    let entry = &mut messages[slot.message];
    let mut message = if last {
        entry.take().expect("a message is taken at its last slot")
    } else {
        entry.clone().expect("a message is taken at its last slot")
    };
    message.source.tick = slot.tick;
    message
}

/// What a refused tick's dead letter carries: the message, or for a tick of a message of several,
/// that tick's own JSON.
fn refused_bytes(mut message: Consumed) -> Consumed {
    if let Some(k) = message.source.tick
        && let Some(own) = stockpipe_model::json::element_json(&message.payload, k as usize)
    {
        message.payload = own.into();
    }
    message
}

/// An accepted tick: the decoded tick, and what enrich and route made of it.
struct Accepted<'a, 'b> {
    tick: &'a TickRef<'b>,
    /// Its members no column takes (`extra`).
    extra: Option<&'a [u8]>,
    enrichment: &'a Enrichment,
    destinations: &'a Destinations,
}

/// A message that did not decode, refused by the host's decoder.
fn decode_refusal(e: &DecodeError, dead_letter_topic: &str) -> StageOutcome {
    StageOutcome::Refused {
        refusal: Refusal {
            stage: crate::chain::RefusalStage::Decode,
            code: e.code.into(),
            message: e.message.clone(),
            guest_version: None,
        },
        dead_letter_topic: dead_letter_topic.to_string(),
    }
}
