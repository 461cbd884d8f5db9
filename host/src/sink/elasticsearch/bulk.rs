//! One `_bulk` request: its body (deterministic ids written in place), its answer read item by
//! item, the retries of what may succeed later and the dead letters of what never will.

use super::EsError;
use super::config::{EsMode, RetryPolicy};
use super::templates::retryable_status;
use crate::chain::Refusal;
use crate::sink::SourceRef;
use crate::sink::kafka as kafka_sink;
use crate::telemetry::{Dependency, IndexSettled, Sink, Telemetry};
use elasticsearch::Elasticsearch;
use elasticsearch::http::Method;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rdkafka::producer::FutureProducer;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
/// One document to index, with what the dead-letter topic needs should Elasticsearch refuse it.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub index: Arc<str>,
    /// The document's bytes: a slice of its batch's buffer (shared, not copied).
    pub document: bytes::Bytes,
    pub source: SourceRef,
    pub key: Option<Vec<u8>>,
    pub payload: bytes::Bytes,
    /// The caller's generation of the message's partition, handed back with its acknowledgement
    /// (the pipeline's guard against counting a request sent before the partition was let go of
    /// and taken again).
    pub generation: u64,
    /// The document's `_id` when it is not its message's position (a bar: one per instrument and
    /// start, however many times it is closed again).
    pub id: Option<Box<str>>,
    /// The instant of the document's time field (the tick's time, the bar's start): its
    /// `@timestamp` in a data stream, its day with dated indices.
    pub time_us: i64,
}

/// A document's deterministic `_id`: its message's Kafka position (the bulk body writes it in
/// place, [`write_document_id`]).
pub fn document_id(source: &SourceRef) -> String {
    match source.tick {
        None => format!("{}-{}-{}", source.topic, source.partition, source.offset),
        Some(k) => format!(
            "{}-{}-{}-{k}",
            source.topic, source.partition, source.offset
        ),
    }
}

/// How a bulk body names and shapes its items: the action (`index`, or `create` for a data
/// stream, which also wants `@timestamp`), and the index name (the day of the document's time
/// appended with dated indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkShape {
    pub mode: EsMode,
    pub dated_indices: bool,
}

impl BulkShape {
    pub const PLAIN: Self = Self {
        mode: EsMode::Index,
        dated_indices: false,
    };

    pub fn of(settings: &super::config::TemplateSettings) -> Self {
        Self {
            mode: settings.mode,
            dated_indices: settings.dated_indices && settings.mode == EsMode::Index,
        }
    }

    /// `{"index":{"_index":…,"_id":…}}` (or `create`) and the document, each on its line; the
    /// index name is JSON-escaped in place, `write_id` writes the id as a JSON string. A data
    /// stream's document gets `"@timestamp"` first (the instant of its own time field).
    pub(super) fn push(
        &self,
        body: &mut Vec<u8>,
        index: &str,
        time_us: i64,
        write_id: impl FnOnce(&mut Vec<u8>),
        document: &[u8],
    ) {
        body.extend_from_slice(match self.mode {
            EsMode::Index => b"{\"index\":{\"_index\":",
            EsMode::DataStream => b"{\"create\":{\"_index\":",
        });
        serde_json::to_writer(&mut *body, index).expect("writing to a Vec");
        if self.dated_indices {
            // `-YYYY.MM.DD` inside the quotes: digits and dots need no escaping.
            body.pop();
            body.push(b'-');
            stockpipe_model::time::Civil::from_micros(time_us).write_index_day(body);
            body.push(b'"');
        }
        body.extend_from_slice(b",\"_id\":");
        write_id(body);
        body.extend_from_slice(b"}}\n");
        match (self.mode, document.split_first()) {
            (EsMode::DataStream, Some((b'{', rest))) => {
                body.extend_from_slice(b"{\"@timestamp\":\"");
                stockpipe_model::time::write_rfc3339_micros(body, time_us);
                body.push(b'"');
                if rest.first().is_some_and(|b| *b != b'}') {
                    body.push(b',');
                }
                body.extend_from_slice(rest);
            }
            _ => body.extend_from_slice(document),
        }
        body.push(b'\n');
    }
}

/// What became of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Indexed,
    /// A data stream already holds the document (`create` answered 409): a re-delivery.
    AlreadyStored,
    /// The cluster is busy or failing (429, 5xx, rejected execution): try again.
    Retry(String),
    /// The cluster refuses for a reason of its own — rights, a closed or read-only index, no
    /// write index, no such index — that any document would meet: wait for it to be fixed,
    /// dead-letter nothing.
    Fault(String),
    /// The document itself is at fault (a mapping or parse error, a bad value): dead-letter it.
    Refused(String),
}

/// Reads one bulk response item: `status` and its optional `error` object, by the error's type
/// and reason together (`illegal_argument_exception` is a bad value as often as a missing write
/// index).
pub fn classify_item(status: u16, error: Option<&serde_json::Value>) -> ItemOutcome {
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(|t| t.as_str())
            .unwrap_or("")
    };
    let (kind, reason) = (text("type"), text("reason"));
    let describe = || match error {
        Some(_) => format!(
            "{status} {}: {reason}",
            if kind.is_empty() { "error" } else { kind }
        ),
        None => format!("status {status}"),
    };
    if (200..300).contains(&status) && error.is_none() {
        ItemOutcome::Indexed
    } else if status == 409 && kind == "version_conflict_engine_exception" {
        ItemOutcome::AlreadyStored
    } else if cluster_fault(status, kind, reason) {
        ItemOutcome::Fault(describe())
    } else if status == 429
        || status >= 500
        || matches!(
            kind,
            "es_rejected_execution_exception" | "circuit_breaking_exception"
        )
    {
        ItemOutcome::Retry(describe())
    } else {
        ItemOutcome::Refused(describe())
    }
}

/// A refusal any document would meet: the cluster's or the deployment's to fix.
fn cluster_fault(status: u16, kind: &str, reason: &str) -> bool {
    // ES's own words for a write the deployment, not the document, makes impossible.
    const ARGUMENTS_OF_THE_CLUSTER: [&str; 3] = [
        "no write index is defined",
        "only write ops with an op_type of create are allowed in data streams",
        "no matching index template found for data stream",
    ];
    matches!(status, 401 | 403)
        || matches!(
            kind,
            "security_exception"
                | "cluster_block_exception"
                | "index_closed_exception"
                | "index_not_found_exception"
                | "invalid_index_name_exception"
        )
        || (kind == "illegal_argument_exception"
            && ARGUMENTS_OF_THE_CLUSTER.iter().any(|a| reason.contains(a)))
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
    /// Every message of the batch, each indexed, already stored or dead-lettered, with its
    /// item's generation.
    pub acked: Vec<(SourceRef, u64)>,
    pub requests: u64,
    /// What was indexed, stored before, dead-lettered, retried, and the faults met: the counts
    /// the telemetry keeps.
    pub counts: IndexSettled,
}

impl BulkReport {
    pub fn absorb(&mut self, other: BulkReport) {
        self.acked.extend(other.acked);
        self.requests += other.requests;
        self.counts.absorb(other.counts);
    }
}

/// Where refused documents go.
#[derive(Clone)]
pub struct DeadLetters {
    pub producer: FutureProducer,
    pub topic: String,
}

pub(super) fn bulk_body(items: &[BulkItem], shape: BulkShape) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.document.len() + 128).sum());
    for item in items {
        shape.push(
            &mut body,
            &item.index,
            item.time_us,
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
    if let Some(k) = source.tick {
        body.push(b'-');
        body.extend_from_slice(itoa::Buffer::new().format(k).as_bytes());
    }
    body.push(b'"');
}

/// A document of our own (not from Kafka: a forecast, the host's metrics).
#[derive(Debug, Clone)]
pub struct OwnDocument {
    pub index: String,
    pub id: String,
    /// The instant of its time field (its `@timestamp`, its dated index's day).
    pub time_us: i64,
    pub body: Vec<u8>,
}

/// Indexes a few documents of our own in one `_bulk` request, retrying the request while the
/// cluster is unavailable; any item error is an error (a 409 from a data stream that already
/// holds the document is not).
pub async fn index_documents(
    client: &Elasticsearch,
    retry: RetryPolicy,
    shape: BulkShape,
    documents: &[OwnDocument],
) -> Result<u64, EsError> {
    let mut body = Vec::new();
    for d in documents {
        shape.push(
            &mut body,
            &d.index,
            d.time_us,
            |b| serde_json::to_writer(b, &d.id).expect("writing to a Vec"),
            &d.body,
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
                        ItemOutcome::Indexed | ItemOutcome::AlreadyStored => None,
                        ItemOutcome::Retry(e) | ItemOutcome::Fault(e) | ItemOutcome::Refused(e) => {
                            Some(e)
                        }
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

/// How the batches of one sink are delivered: its client, the shape of its bodies, the retry
/// policy, where refused documents go, and how long a fault may last (`run --once`).
#[derive(Clone)]
pub struct Delivery {
    pub client: Elasticsearch,
    pub shape: BulkShape,
    pub retry: RetryPolicy,
    pub dead_letters: DeadLetters,
    pub telemetry: Arc<Telemetry>,
    /// Give up once nothing of a batch has settled for this long; `None` = wait however long.
    pub give_up: Option<Duration>,
}

/// Why the items left of a batch wait.
enum Blocked {
    /// The cluster is busy or unreachable (429, 5xx, a connection failure).
    Busy(String),
    /// The cluster refuses what any document would meet: its rights, its indices.
    Fault(String),
}

impl Delivery {
    /// Delivers one batch: sends, reads the items, retries what may be retried (waiting out a
    /// fault of the cluster's, however long, unless told when to give up), dead-letters what is
    /// refused. Returns only when every item is settled.
    pub async fn deliver(&self, mut items: Vec<BulkItem>) -> Result<BulkReport, EsError> {
        let mut report = BulkReport::default();
        let mut attempt = 0u32;
        let mut blocked_since: Option<Instant> = None;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        while !items.is_empty() {
            report.requests += 1;
            let before = items.len();
            let blocked =
                match send_bulk(&self.client, &headers, &items, self.shape, &self.telemetry).await?
                {
                    BulkAttempt::Answered(parsed) => {
                        let (left, blocked) = self.read_answer(items, parsed, &mut report).await?;
                        items = left;
                        blocked
                    }
                    BulkAttempt::Retry(why) => {
                        report.counts.retried_requests += 1;
                        self.telemetry
                            .sink_retries(Sink::Elasticsearch, "request", 1);
                        Some(Blocked::Busy(why))
                    }
                    BulkAttempt::Fault(why) => Some(Blocked::Fault(why)),
                };
            let Some(blocked) = blocked else {
                continue;
            };
            if items.len() < before {
                blocked_since = None;
                attempt = 0;
            }
            let since = *blocked_since.get_or_insert_with(Instant::now);
            let reason = match blocked {
                Blocked::Busy(why) => {
                    tracing::warn!(reason = %why, attempt, items = items.len(), "bulk request not settled; sending it again");
                    why
                }
                Blocked::Fault(why) => {
                    report.counts.faults += 1;
                    self.telemetry.sink_retries(Sink::Elasticsearch, "fault", 1);
                    let said =
                        format!("the cluster refuses writes (not the documents' fault): {why}");
                    tracing::error!(reason = %why, attempt, items = items.len(), waited_ms = since.elapsed().as_millis() as u64, "Elasticsearch refuses writes for a reason of its own; nothing is dead-lettered or committed until it is fixed");
                    self.telemetry
                        .set_ready(Dependency::Elasticsearch, Err(said));
                    why
                }
            };
            if let Some(limit) = self.give_up
                && since.elapsed() >= limit
            {
                return Err(EsError::GaveUp {
                    waited_ms: since.elapsed().as_millis() as u64,
                    limit_ms: limit.as_millis() as u64,
                    reason,
                });
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
        Ok(report)
    }

    /// Settles the items an answer settles (indexed, already stored, dead-lettered); returns
    /// the others, to send again, and why they wait.
    async fn read_answer(
        &self,
        items: Vec<BulkItem>,
        parsed: BulkResponse,
        report: &mut BulkReport,
    ) -> Result<(Vec<BulkItem>, Option<Blocked>), EsError> {
        if !parsed.errors {
            report.counts.indexed += items.len() as u64;
            report
                .acked
                .extend(items.into_iter().map(|i| (i.source, i.generation)));
            self.telemetry.set_ready(Dependency::Elasticsearch, Ok(()));
            return Ok((Vec::new(), None));
        }
        let (mut again, mut busy, mut fault) = (Vec::new(), None, None);
        let mut settled = false;
        for (item, answer) in items.into_iter().zip(parsed.items) {
            let Some(result) = answer.0 else {
                again.push(item);
                busy.get_or_insert_with(|| "an empty bulk item".to_string());
                continue;
            };
            match classify_item(result.status, result.error.as_ref()) {
                ItemOutcome::Indexed => report.counts.indexed += 1,
                ItemOutcome::AlreadyStored => report.counts.already_stored += 1,
                ItemOutcome::Retry(reason) => {
                    busy = Some(reason);
                    again.push(item);
                    continue;
                }
                ItemOutcome::Fault(reason) => {
                    fault = Some(reason);
                    again.push(item);
                    continue;
                }
                ItemOutcome::Refused(reason) => {
                    dead_letter(&self.dead_letters, &item, reason).await?;
                    report.counts.dead_lettered += 1;
                }
            }
            settled = true;
            report.acked.push((item.source, item.generation));
        }
        if settled {
            self.telemetry.set_ready(Dependency::Elasticsearch, Ok(()));
        }
        if !again.is_empty() {
            report.counts.retried_items += again.len() as u64;
            self.telemetry
                .sink_retries(Sink::Elasticsearch, "item", again.len() as u64);
        }
        let blocked = match (fault, busy) {
            (Some(why), _) => Some(Blocked::Fault(why)),
            (None, Some(why)) => Some(Blocked::Busy(why)),
            (None, None) => None,
        };
        Ok((again, blocked))
    }
}

/// What one `_bulk` request came to, short of a refusal that stops the run.
pub(super) enum BulkAttempt {
    /// An answer with one item per document sent.
    Answered(BulkResponse),
    /// Nothing usable came back (connection failure, 429/5xx, an unreadable body, the wrong number
    /// of items): the whole request goes again.
    Retry(String),
    /// The whole request refused for a reason of the cluster's (401, 403, 404): waited out.
    Fault(String),
}

/// Sends `items` as one `_bulk` request and classifies the answer; keeps the readiness and the
/// request latency up to date. Other 4xx answers (a malformed request) are errors.
pub(super) async fn send_bulk(
    client: &Elasticsearch,
    headers: &HeaderMap,
    items: &[BulkItem],
    shape: BulkShape,
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
            Some(bytes::Bytes::from(bulk_body(items, shape))),
            None,
        )
        .await;
    telemetry.sink_request(Sink::Elasticsearch, started.elapsed());
    let response = match sent {
        Err(e) => {
            let why = super::cause_chain(&e);
            telemetry.set_ready(Dependency::Elasticsearch, Err(why.clone()));
            return Ok(BulkAttempt::Retry(why));
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
            let why = format!("reading the bulk response: {}", super::cause_chain(&e));
            telemetry.set_ready(Dependency::Elasticsearch, Err(why.clone()));
            return Ok(BulkAttempt::Retry(why));
        }
    };
    if matches!(status.as_u16(), 401 | 403 | 404) {
        return Ok(BulkAttempt::Fault(format!(
            "POST /_bulk answered {status}: {}",
            error_of(&body)
        )));
    }
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

/// A refused request's `error` (`type: reason`), or its body as text when it has none.
fn error_of(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    match error {
        Some(e) if e.is_object() => format!(
            "{}: {}",
            e.get("type").and_then(|t| t.as_str()).unwrap_or("error"),
            e.get("reason").and_then(|t| t.as_str()).unwrap_or("")
        ),
        Some(e) => e.as_str().unwrap_or_default().to_string(),
        None => String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
    }
}

pub(super) async fn dead_letter(
    dead_letters: &DeadLetters,
    item: &BulkItem,
    reason: String,
) -> Result<(), EsError> {
    tracing::warn!(partition = item.source.partition, offset = item.source.offset, %reason, "Elasticsearch refused a document; dead-lettering it");
    let refusal = Refusal {
        stage: crate::chain::RefusalStage::Elasticsearch,
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
