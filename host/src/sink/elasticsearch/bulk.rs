//! One `_bulk` request: its body (deterministic ids written in place), its answer read item by
//! item, the retries of what may succeed later and the dead letters of what never will.

use super::EsError;
use super::client::retryable_status;
use super::config::RetryPolicy;
use crate::chain::Refusal;
use crate::sink::SourceRef;
use crate::sink::kafka as kafka_sink;
use crate::telemetry::{Dependency, Sink, Telemetry};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rdkafka::producer::FutureProducer;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
/// One document to index, with what the dead-letter topic needs should Elasticsearch refuse it.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub index: Arc<str>,
    /// The document's bytes: a slice of its batch's buffer (shared, not copied).
    pub document: bytes::Bytes,
    pub source: SourceRef,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The caller's generation of the message's partition, handed back with its acknowledgement
    /// (the pipeline's guard against counting a request sent before the partition was let go of
    /// and taken again).
    pub generation: u64,
    /// The document's `_id` when it is not its message's position (a bar: one per instrument and
    /// start, however many times it is closed again).
    pub id: Option<Box<str>>,
}

/// A document's deterministic `_id`: its message's Kafka position (the bulk body writes it in
/// place, [`write_document_id`]).
pub fn document_id(source: &SourceRef) -> String {
    format!("{}-{}-{}", source.topic, source.partition, source.offset)
}

/// What became of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Indexed,
    Retry(String),
    Refused(String),
}

/// Reads one bulk response item: `status` and its optional `error` object.
pub fn classify_item(status: u16, error: Option<&serde_json::Value>) -> ItemOutcome {
    let describe = || match error {
        Some(e) => {
            let kind = e.get("type").and_then(|t| t.as_str()).unwrap_or("error");
            let reason = e.get("reason").and_then(|t| t.as_str()).unwrap_or("");
            format!("{status} {kind}: {reason}")
        }
        None => format!("status {status}"),
    };
    let rejected_execution = error
        .and_then(|e| e.get("type"))
        .and_then(|t| t.as_str())
        .is_some_and(|t| t == "es_rejected_execution_exception");
    if (200..300).contains(&status) && error.is_none() {
        ItemOutcome::Indexed
    } else if status == 429 || status >= 500 || rejected_execution {
        ItemOutcome::Retry(describe())
    } else {
        ItemOutcome::Refused(describe())
    }
}

#[derive(Deserialize)]
pub(super) struct BulkResponse {
    #[serde(default)]
    errors: bool,
    items: Vec<BulkItemAnswer>,
}

/// One entry of a bulk answer, `{"index": {…}}`: the action's result (none for an empty entry),
/// read without a map or a `String` per item.
pub(super) struct BulkItemAnswer(Option<BulkItemResponse>);

impl<'de> Deserialize<'de> for BulkItemAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BulkItemAnswer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object keyed by the bulk action")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let first = map
                    .next_entry::<serde::de::IgnoredAny, BulkItemResponse>()?
                    .map(|(_, r)| r);
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(BulkItemAnswer(first))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[derive(Deserialize)]
pub(super) struct BulkItemResponse {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// What one bulk batch came to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BulkReport {
    /// Every message of the batch, each indexed or dead-lettered, with its item's generation.
    pub acked: Vec<(SourceRef, u64)>,
    pub indexed: u64,
    pub dead_lettered: u64,
    /// Items sent again after a retryable item error.
    pub retried_items: u64,
    /// Whole requests sent again (connection refused, 429, 5xx).
    pub retried_requests: u64,
    pub requests: u64,
}

impl BulkReport {
    pub fn absorb(&mut self, other: BulkReport) {
        self.acked.extend(other.acked);
        self.indexed += other.indexed;
        self.dead_lettered += other.dead_lettered;
        self.retried_items += other.retried_items;
        self.retried_requests += other.retried_requests;
        self.requests += other.requests;
    }
}

/// Where refused documents go.
#[derive(Clone)]
pub struct DeadLetters {
    pub producer: FutureProducer,
    pub topic: String,
}

pub(super) fn bulk_body(items: &[BulkItem]) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.document.len() + 96).sum());
    for item in items {
        push_index_action(
            &mut body,
            &item.index,
            |body| match &item.id {
                Some(id) => serde_json::to_writer(body, &**id).expect("writing to a Vec"),
                None => write_document_id(body, &item.source),
            },
            &item.document,
        );
    }
    body
}

/// [`document_id`] as a JSON string, written in place: its digits and dashes need no escaping,
/// so escaping the topic alone gives serde_json's bytes.
pub(super) fn write_document_id(body: &mut Vec<u8>, source: &SourceRef) {
    serde_json::to_writer(&mut *body, &*source.topic).expect("writing to a Vec");
    body.pop(); // the topic's closing quote
    body.push(b'-');
    body.extend_from_slice(itoa::Buffer::new().format(source.partition).as_bytes());
    body.push(b'-');
    body.extend_from_slice(itoa::Buffer::new().format(source.offset).as_bytes());
    body.push(b'"');
}

/// `{"index":{"_index":…,"_id":…}}` and the document, each on its line; the index name is
/// JSON-escaped in place, `write_id` writes the id as a JSON string (no value tree per document).
pub(super) fn push_index_action(
    body: &mut Vec<u8>,
    index: &str,
    write_id: impl FnOnce(&mut Vec<u8>),
    document: &[u8],
) {
    body.extend_from_slice(b"{\"index\":{\"_index\":");
    serde_json::to_writer(&mut *body, index).expect("writing to a Vec");
    body.extend_from_slice(b",\"_id\":");
    write_id(body);
    body.extend_from_slice(b"}}\n");
    body.extend_from_slice(document);
    body.push(b'\n');
}

/// Indexes a few documents of our own (not from Kafka: the forecasts) in one `_bulk` request,
/// retrying the request while the cluster is unavailable; any item error is an error.
pub async fn index_documents(
    client: &Elasticsearch,
    retry: RetryPolicy,
    documents: &[(String, String, Vec<u8>)],
) -> Result<u64, EsError> {
    let mut body = Vec::new();
    for (index, id, document) in documents {
        push_index_action(
            &mut body,
            index,
            |b| serde_json::to_writer(b, id).expect("writing to a Vec"),
            document,
        );
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let mut attempt = 0;
    loop {
        let sent = client
            .send(
                Method::Post,
                "/_bulk",
                headers.clone(),
                Some(&[("refresh", "true")]),
                Some(body.clone()),
                None,
            )
            .await;
        match sent {
            Ok(r) if r.status_code().is_success() => {
                let parsed: BulkResponse = r.json().await?;
                let failed: Vec<String> = parsed
                    .items
                    .into_iter()
                    .filter_map(|i| i.0)
                    .filter_map(|i| match classify_item(i.status, i.error.as_ref()) {
                        ItemOutcome::Indexed => None,
                        ItemOutcome::Retry(e) | ItemOutcome::Refused(e) => Some(e),
                    })
                    .collect();
                if let Some(first) = failed.first() {
                    return Err(EsError::Refused {
                        what: format!(
                            "indexing {} documents ({} failed)",
                            documents.len(),
                            failed.len()
                        ),
                        status: 200,
                        body: first.clone(),
                    });
                }
                return Ok(documents.len() as u64);
            }
            Ok(r) if !retryable_status(r.status_code()) || attempt >= 8 => {
                let status = r.status_code().as_u16();
                return Err(EsError::Refused {
                    what: "POST /_bulk".into(),
                    status,
                    body: r.text().await.unwrap_or_default(),
                });
            }
            Err(e) if attempt >= 8 => return Err(e.into()),
            _ => {}
        }
        tokio::time::sleep(retry.delay(attempt)).await;
        attempt += 1;
    }
}

/// Delivers one batch: sends, reads the items, retries what may be retried, dead-letters what is
/// refused. Returns only when every item is settled (or on an error retrying cannot fix).
pub async fn deliver(
    client: &Elasticsearch,
    mut items: Vec<BulkItem>,
    retry: RetryPolicy,
    dead_letters: &DeadLetters,
    telemetry: &Telemetry,
) -> Result<BulkReport, EsError> {
    let mut report = BulkReport::default();
    let mut attempt = 0u32;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    while !items.is_empty() {
        report.requests += 1;
        let parsed = match send_bulk(client, &headers, &items, telemetry).await? {
            BulkAttempt::Answered(parsed) => parsed,
            BulkAttempt::Retry(why) => {
                tracing::warn!(reason = %why, attempt, items = items.len(), "bulk request not answered; sending the batch again");
                report.retried_requests += 1;
                telemetry.sink_retries(Sink::Elasticsearch, "request", 1);
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        if !parsed.errors {
            report.indexed += items.len() as u64;
            report
                .acked
                .extend(items.drain(..).map(|i| (i.source, i.generation)));
            break;
        }
        let mut again = Vec::new();
        let mut last_retry_reason = None;
        for (item, answer) in items.drain(..).zip(parsed.items) {
            let Some(result) = answer.0 else {
                again.push(item);
                continue;
            };
            match classify_item(result.status, result.error.as_ref()) {
                ItemOutcome::Indexed => {
                    report.indexed += 1;
                    report.acked.push((item.source, item.generation));
                }
                ItemOutcome::Retry(reason) => {
                    last_retry_reason = Some(reason);
                    again.push(item);
                }
                ItemOutcome::Refused(reason) => {
                    dead_letter(dead_letters, &item, reason).await?;
                    report.dead_lettered += 1;
                    report.acked.push((item.source, item.generation));
                }
            }
        }
        if !again.is_empty() {
            tracing::warn!(
                items = again.len(),
                reason = last_retry_reason.as_deref().unwrap_or(""),
                attempt,
                "bulk items to retry"
            );
            report.retried_items += again.len() as u64;
            telemetry.sink_retries(Sink::Elasticsearch, "item", again.len() as u64);
            tokio::time::sleep(retry.delay(attempt)).await;
            attempt += 1;
        } else {
            attempt = 0;
        }
        items = again;
    }
    Ok(report)
}

/// What one `_bulk` request came to, short of a refusal that stops the run.
pub(super) enum BulkAttempt {
    /// An answer with one item per document sent.
    Answered(BulkResponse),
    /// Nothing usable came back (connection failure, 429/5xx, an unreadable body, the wrong number
    /// of items): the whole request goes again.
    Retry(String),
}

/// Sends `items` as one `_bulk` request and classifies the answer; keeps the readiness and the
/// request latency up to date. Other 4xx answers (auth, a malformed request) are errors.
pub(super) async fn send_bulk(
    client: &Elasticsearch,
    headers: &HeaderMap,
    items: &[BulkItem],
    telemetry: &Telemetry,
) -> Result<BulkAttempt, EsError> {
    let started = Instant::now();
    let sent = client
        .send(
            Method::Post,
            "/_bulk",
            headers.clone(),
            None::<&()>,
            // As `Bytes`, which the client sends as it is (a `Vec` it would copy).
            Some(bytes::Bytes::from(bulk_body(items))),
            None,
        )
        .await;
    telemetry.sink_request(Sink::Elasticsearch, started.elapsed());
    let response = match sent {
        Err(e) => {
            telemetry.set_ready(Dependency::Elasticsearch, Err(e.to_string()));
            return Ok(BulkAttempt::Retry(e.to_string()));
        }
        Ok(r) => r,
    };
    let status = response.status_code();
    if retryable_status(status) {
        let why = format!("POST /_bulk answered {status}");
        telemetry.set_ready(Dependency::Elasticsearch, Err(why.clone()));
        return Ok(BulkAttempt::Retry(why));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            // The connection broke mid-answer: as transient as one that broke before it.
            let why = format!("reading the bulk response: {e}");
            telemetry.set_ready(Dependency::Elasticsearch, Err(why.clone()));
            return Ok(BulkAttempt::Retry(why));
        }
    };
    telemetry.set_ready(Dependency::Elasticsearch, Ok(()));
    if !status.is_success() {
        return Err(EsError::Refused {
            what: "POST /_bulk".into(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let parsed: BulkResponse = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return Ok(BulkAttempt::Retry(format!("unreadable bulk response: {e}"))),
    };
    if parsed.items.len() != items.len() {
        return Ok(BulkAttempt::Retry(format!(
            "bulk response with {} items for {} documents",
            parsed.items.len(),
            items.len()
        )));
    }
    Ok(BulkAttempt::Answered(parsed))
}

pub(super) async fn dead_letter(
    dead_letters: &DeadLetters,
    item: &BulkItem,
    reason: String,
) -> Result<(), EsError> {
    tracing::warn!(partition = item.source.partition, offset = item.source.offset, %reason, "Elasticsearch refused a document; dead-lettering it");
    let refusal = Refusal {
        stage: "elasticsearch",
        code: "index-refused".into(),
        message: reason,
        guest_version: None,
    };
    let delivery = kafka_sink::send_dead_letter(
        &dead_letters.producer,
        &dead_letters.topic,
        item.key.as_deref(),
        &item.payload,
        &refusal,
        &item.source,
    )
    .map_err(|e| EsError::DeadLetter(e.to_string()))?;
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(EsError::DeadLetter(e.to_string())),
        Err(_) => Err(EsError::DeadLetter(
            "the producer dropped the delivery".into(),
        )),
    }
}
