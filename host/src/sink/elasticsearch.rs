//! The Elasticsearch sink: config → [`EsSink::connect`] → `push` / `flush_due` / `drain`.
//!
//! Accepted documents are buffered and written with `_bulk`, a request per batch bounded by count,
//! bytes and age, with at most `max_in_flight` requests out at once (a full pipe makes the run loop
//! wait: the consumer pauses instead of buffering without bound). Every document's `_id` is its
//! Kafka position (`topic-partition-offset`), so a re-delivered tick overwrites itself.
//!
//! A bulk response is read item by item ([`classify_item`]): indexed items are done; 429, 5xx and
//! `es_rejected_execution_exception` are retried (only those items) with exponential backoff and
//! jitter; any other item error (a mapping or parse error) sends the original message to the
//! dead-letter topic with the error. A whole request that fails (connection refused, 429, 5xx)
//! is retried as it is, same items, same order. A batch reports its offsets to the commit protocol
//! only when every item is indexed or dead-lettered.

use super::SourceRef;
use super::kafka as kafka_sink;
use crate::chain::Refusal;
use crate::config::error::{ConfigError, invalid};
use crate::telemetry::{Dependency, Sink, Telemetry};
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
use rdkafka::producer::FutureProducer;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The index templates we own, put at start-up.
pub const TEMPLATES: [(&str, &str); 4] = [
    (
        "stock-stream",
        include_str!("../../../data/elasticsearch/stock-stream.index-template.json"),
    ),
    (
        "stock-forecast",
        include_str!("../../../data/elasticsearch/stock-forecast.index-template.json"),
    ),
    (
        "stock-bars",
        include_str!("../../../data/elasticsearch/stock-bars.index-template.json"),
    ),
    (
        "stockpipe-metrics",
        include_str!("../../../data/elasticsearch/stockpipe-metrics.index-template.json"),
    ),
];

/// Environment variables holding the credentials (never the config file).
pub mod env {
    pub const API_KEY: &str = "STOCKPIPE_ES_API_KEY";
    pub const USERNAME: &str = "STOCKPIPE_ES_USERNAME";
    pub const PASSWORD: &str = "STOCKPIPE_ES_PASSWORD";
}

#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("elasticsearch url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("elasticsearch credentials: {0}")]
    Auth(String),
    #[error("reading the CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("elasticsearch client: {0}")]
    Client(#[from] elasticsearch::Error),
    /// A refusal that retrying cannot fix (401, 403, 400 on the whole request, …).
    #[error("elasticsearch {what} answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("dead-lettering a document Elasticsearch refused: {0}")]
    DeadLetter(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsAuth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// The base64 `id:key` form Elasticsearch hands out as `encoded`.
    ApiKey(String),
}

impl EsAuth {
    /// From `STOCKPIPE_ES_API_KEY`, or `STOCKPIPE_ES_USERNAME` + `STOCKPIPE_ES_PASSWORD`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EsError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        match (get(env::API_KEY), get(env::USERNAME), get(env::PASSWORD)) {
            (Some(_), Some(_), _) => Err(EsError::Auth(format!(
                "set either {} or {}/{}, not both",
                env::API_KEY,
                env::USERNAME,
                env::PASSWORD
            ))),
            (Some(key), None, _) => Ok(Self::ApiKey(key)),
            (None, Some(username), Some(password)) => Ok(Self::Basic { username, password }),
            (None, Some(_), None) => Err(EsError::Auth(format!(
                "{} is set but {} is not",
                env::USERNAME,
                env::PASSWORD
            ))),
            (None, None, _) => Ok(Self::None),
        }
    }

    pub fn from_env() -> Result<Self, EsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Exponential backoff with jitter: attempt n waits between half and all of
/// `min(max, initial · 2ⁿ)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        ceiling / 2 + ceiling.mul_f64(jitter_fraction() / 2.0)
    }
}

/// A number in [0, 1) that differs from call to call.
fn jitter_fraction() -> f64 {
    (crate::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Debug, Clone, PartialEq)]
pub struct EsSettings {
    pub url: String,
    pub auth: EsAuth,
    pub ca_file: Option<PathBuf>,
    pub bulk_max_docs: usize,
    pub bulk_max_bytes: usize,
    pub bulk_max_age: Duration,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// Put our index templates at start-up.
    pub put_templates: bool,
}

/// Builds the client (one node, TLS by rustls with an optional CA file, auth as given).
pub fn client(settings: &EsSettings) -> Result<Elasticsearch, EsError> {
    let url = Url::parse(&settings.url).map_err(|e| EsError::Url {
        url: crate::redact::url(&settings.url),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EsError::Url {
            url: crate::redact::url(&settings.url),
            message: "the scheme must be http or https".into(),
        });
    }
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(settings.request_timeout)
        .disable_proxy();
    builder = match &settings.auth {
        EsAuth::None => builder,
        EsAuth::Basic { username, password } => {
            builder.auth(Credentials::Basic(username.clone(), password.clone()))
        }
        EsAuth::ApiKey(key) => builder.auth(Credentials::EncodedApiKey(key.clone())),
    };
    if let Some(path) = &settings.ca_file {
        let ca_error = |message: String| EsError::CaFile {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder.build().map_err(|e| EsError::Url {
        url: settings.url.clone(),
        message: e.to_string(),
    })?;
    Ok(Elasticsearch::new(transport))
}

/// Puts our index templates. A refusal that retrying cannot change (a 4xx but 429: a bad template,
/// missing rights) is an error at once; a cluster that does not answer, or answers 429/5xx, is
/// asked again with backoff — up to `attempts` times, or with `None` until it answers (the
/// caller stops waiting by dropping the future). `waiting` hears each failure, to say why the
/// sink is not ready.
pub async fn put_templates(
    client: &Elasticsearch,
    retry: RetryPolicy,
    attempts: Option<u32>,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<(), EsError> {
    for (name, body) in TEMPLATES {
        let path = format!("/_index_template/{name}");
        let mut attempt = 0;
        loop {
            let sent = client
                .send(
                    Method::Put,
                    &path,
                    HeaderMap::new(),
                    None::<&()>,
                    Some(body.as_bytes()),
                    None,
                )
                .await;
            let last = attempts.is_some_and(|most| attempt + 1 >= most);
            match sent {
                Ok(r) if r.status_code().is_success() => break,
                Ok(r) if !retryable_status(r.status_code()) || last => {
                    let status = r.status_code().as_u16();
                    return Err(EsError::Refused {
                        what: format!("PUT {path}"),
                        status,
                        body: r.text().await.unwrap_or_default(),
                    });
                }
                Err(e) if last => return Err(e.into()),
                outcome => {
                    let why = match outcome {
                        Ok(r) => format!("PUT {path} answered {}", r.status_code()),
                        Err(e) => format!("PUT {path}: {e}"),
                    };
                    let delay = retry.delay(attempt);
                    tracing::warn!(template = name, %why, attempt, retry_in_ms = delay.as_millis() as u64, "Elasticsearch is not ready; waiting for it");
                    waiting(&why);
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
        tracing::info!(template = name, "index template in place");
    }
    Ok(())
}

fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

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
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    items: Vec<BulkItemAnswer>,
}

/// One entry of a bulk answer, `{"index": {…}}`: the action's result (none for an empty entry),
/// read without a map or a `String` per item.
struct BulkItemAnswer(Option<BulkItemResponse>);

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
struct BulkItemResponse {
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

fn bulk_body(items: &[BulkItem]) -> Vec<u8> {
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
fn write_document_id(body: &mut Vec<u8>, source: &SourceRef) {
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
fn push_index_action(
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
enum BulkAttempt {
    /// An answer with one item per document sent.
    Answered(BulkResponse),
    /// Nothing usable came back (connection failure, 429/5xx, an unreadable body, the wrong number
    /// of items): the whole request goes again.
    Retry(String),
}

/// Sends `items` as one `_bulk` request and classifies the answer; keeps the readiness and the
/// request latency up to date. Other 4xx answers (auth, a malformed request) are errors.
async fn send_bulk(
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

async fn dead_letter(
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

/// The sink the run loop drives: buffer → bounded bulk requests in flight → reports.
pub struct EsSink {
    client: Elasticsearch,
    settings: EsSettings,
    dead_letters: DeadLetters,
    buffer: Vec<BulkItem>,
    buffer_bytes: usize,
    opened: Option<Instant>,
    in_flight: JoinSet<Result<BulkReport, EsError>>,
    telemetry: Arc<Telemetry>,
}

impl EsSink {
    /// Builds the client and, unless turned off, puts the index templates.
    pub async fn connect(
        settings: EsSettings,
        dead_letters: DeadLetters,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, EsError> {
        let client = client(&settings)?;
        if settings.put_templates {
            // Until the cluster answers (in a compose stack or a cluster restart it may be down
            // for minutes); a stop request ends the wait.
            let waiting = |why: &str| {
                telemetry.set_ready(
                    Dependency::Elasticsearch,
                    Err(format!("waiting at start-up: {why}")),
                );
            };
            put_templates(&client, settings.retry, None, &waiting).await?;
        }
        telemetry.set_ready(Dependency::Elasticsearch, Ok(()));
        Ok(Self {
            client,
            settings,
            dead_letters,
            buffer: Vec::new(),
            buffer_bytes: 0,
            opened: None,
            in_flight: JoinSet::new(),
            telemetry,
        })
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// Buffers one document; call [`EsSink::flush_due`] after a batch.
    pub fn push(&mut self, item: BulkItem) {
        self.opened.get_or_insert_with(Instant::now);
        self.buffer_bytes += item.document.len() + 96;
        self.buffer.push(item);
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Sends the buffer if it is full or old enough (waiting for a free slot when `max_in_flight`
    /// requests are out) and returns the reports of the requests that have finished.
    pub async fn flush_due(&mut self, now: Instant) -> Result<BulkReport, EsError> {
        let mut report = BulkReport::default();
        while self.buffer.len() >= self.settings.bulk_max_docs
            || self.buffer_bytes >= self.settings.bulk_max_bytes
        {
            let take = self.buffer.len().min(self.settings.bulk_max_docs);
            report.absorb(self.send(take).await?);
        }
        let aged = self
            .opened
            .is_some_and(|t| now.duration_since(t) >= self.settings.bulk_max_age);
        if aged && !self.buffer.is_empty() {
            report.absorb(self.send(self.buffer.len()).await?);
        }
        while let Some(done) = self.in_flight.try_join_next() {
            report.absorb(joined(done)?);
        }
        Ok(report)
    }

    /// Sends everything buffered and waits for every request out.
    pub async fn drain(&mut self) -> Result<BulkReport, EsError> {
        let mut report = BulkReport::default();
        while !self.buffer.is_empty() {
            let take = self.buffer.len().min(self.settings.bulk_max_docs);
            report.absorb(self.send(take).await?);
        }
        while let Some(done) = self.in_flight.join_next().await {
            report.absorb(joined(done)?);
        }
        Ok(report)
    }

    /// Starts a request with the first `take` buffered items, first waiting for a slot.
    async fn send(&mut self, take: usize) -> Result<BulkReport, EsError> {
        let mut report = BulkReport::default();
        while self.in_flight.len() >= self.settings.max_in_flight.max(1) {
            let done = self.in_flight.join_next().await.expect("non-empty");
            report.absorb(joined(done)?);
        }
        let items: Vec<BulkItem> = self.buffer.drain(..take).collect();
        self.buffer_bytes = self
            .buffer
            .iter()
            .map(|i| i.document.len() + 96)
            .sum::<usize>();
        self.opened = if self.buffer.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        let (client, retry, dead_letters, telemetry) = (
            self.client.clone(),
            self.settings.retry,
            self.dead_letters.clone(),
            self.telemetry.clone(),
        );
        self.in_flight
            .spawn(async move { deliver(&client, items, retry, &dead_letters, &telemetry).await });
        Ok(report)
    }
}

fn joined(
    done: Result<Result<BulkReport, EsError>, tokio::task::JoinError>,
) -> Result<BulkReport, EsError> {
    match done {
        Ok(result) => result,
        Err(e) => Err(EsError::DeadLetter(format!("a bulk task failed: {e}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchSection {
    /// `http(s)://host:port`; empty = no Elasticsearch sink. Credentials come from the
    /// environment only (STOCKPIPE_ES_API_KEY, or STOCKPIPE_ES_USERNAME + STOCKPIPE_ES_PASSWORD).
    pub url: String,
    /// PEM file of the CA that signed the cluster's certificate.
    pub ca_file: Option<PathBuf>,
    pub bulk_max_docs: usize,
    pub bulk_max_bytes: usize,
    pub bulk_max_age_ms: u64,
    pub max_in_flight: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub request_timeout_ms: u64,
    pub put_templates: bool,
    /// At shutdown, how long to wait for the sinks to acknowledge what is buffered and in
    /// flight; what they have not acknowledged by then is not committed (delivered again later).
    pub shutdown_grace_ms: u64,
    /// Every this many milliseconds, index the host's counters of the interval in
    /// `stockpipe-metrics` (Kibana's refused / dead-lettered rate); 0 = never.
    pub metrics_interval_ms: u64,
}

impl Default for ElasticsearchSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            bulk_max_docs: 1000,
            bulk_max_bytes: 5 << 20,
            bulk_max_age_ms: 1000,
            max_in_flight: 2,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            request_timeout_ms: 30_000,
            put_templates: true,
            shutdown_grace_ms: 30_000,
            metrics_interval_ms: 10_000,
        }
    }
}

impl ElasticsearchSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let es = self;
        if !(es.url.is_empty() || es.url.starts_with("http://") || es.url.starts_with("https://")) {
            return invalid(
                "elasticsearch.url",
                "must be http://host:port or https://host:port (or empty for no Elasticsearch)",
            );
        }
        if !(1..=100_000).contains(&es.bulk_max_docs) {
            return invalid(
                "elasticsearch.bulk_max_docs",
                "must be between 1 and 100000",
            );
        }
        if es.bulk_max_bytes < 1024 {
            return invalid("elasticsearch.bulk_max_bytes", "must be at least 1024");
        }
        if !(1..=64).contains(&es.max_in_flight) {
            return invalid("elasticsearch.max_in_flight", "must be between 1 and 64");
        }
        if es.retry_initial_ms == 0 || es.retry_max_ms < es.retry_initial_ms {
            return invalid(
                "elasticsearch.retry_initial_ms",
                "must be at least 1 and at most elasticsearch.retry_max_ms",
            );
        }
        if es.request_timeout_ms == 0 {
            return invalid("elasticsearch.request_timeout_ms", "must be at least 1");
        }
        if let Some(ca) = &es.ca_file
            && !ca.is_file()
        {
            return invalid(
                "elasticsearch.ca_file",
                &format!("{} is not a readable file", ca.display()),
            );
        }
        Ok(())
    }

    /// The sink's settings, with credentials read from `lookup` (the environment).
    pub fn settings(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<EsSettings, EsError> {
        use std::time::Duration;
        Ok(EsSettings {
            url: self.url.clone(),
            auth: EsAuth::from_lookup(lookup)?,
            ca_file: self.ca_file.clone(),
            bulk_max_docs: self.bulk_max_docs,
            bulk_max_bytes: self.bulk_max_bytes,
            bulk_max_age: Duration::from_millis(self.bulk_max_age_ms),
            max_in_flight: self.max_in_flight,
            retry: RetryPolicy {
                initial: Duration::from_millis(self.retry_initial_ms),
                max: Duration::from_millis(self.retry_max_ms),
            },
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            put_templates: self.put_templates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_are_classified() {
        assert_eq!(classify_item(201, None), ItemOutcome::Indexed);
        assert_eq!(classify_item(200, None), ItemOutcome::Indexed);
        assert!(matches!(
            classify_item(429, Some(&json!({"type": "circuit_breaking_exception"}))),
            ItemOutcome::Retry(_)
        ));
        assert!(matches!(classify_item(503, None), ItemOutcome::Retry(_)));
        // Seen with a 400-class status on some versions: still a back-pressure signal.
        assert!(matches!(
            classify_item(
                400,
                Some(&json!({"type": "es_rejected_execution_exception"}))
            ),
            ItemOutcome::Retry(_)
        ));
        assert_eq!(
            classify_item(
                400,
                Some(
                    &json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [volume]"})
                )
            ),
            ItemOutcome::Refused(
                "400 mapper_parsing_exception: failed to parse field [volume]".into()
            )
        );
    }

    #[test]
    fn backoff_grows_to_its_ceiling_with_jitter() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..30 {
            let ceiling = (Duration::from_millis(100) * 2u32.pow(attempt.min(20))).min(policy.max);
            let d = policy.delay(attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| policy.delay(5)).collect();
        assert!(distinct.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn auth_comes_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(EsAuth::from_lookup(env(&[])).unwrap(), EsAuth::None);
        assert_eq!(
            EsAuth::from_lookup(env(&[(env::API_KEY, "abc")])).unwrap(),
            EsAuth::ApiKey("abc".into())
        );
        assert_eq!(
            EsAuth::from_lookup(env(&[(env::USERNAME, "u"), (env::PASSWORD, "p")])).unwrap(),
            EsAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        let err = EsAuth::from_lookup(env(&[(env::USERNAME, "u")])).unwrap_err();
        assert!(err.to_string().contains(env::PASSWORD), "{err}");
        assert!(EsAuth::from_lookup(env(&[(env::USERNAME, "u"), (env::API_KEY, "k")])).is_err());
    }

    #[test]
    fn the_bulk_body_is_ndjson_with_deterministic_ids() {
        let item = BulkItem {
            index: "stock-stream".into(),
            document: bytes::Bytes::from_static(br#"{"a":1}"#),
            source: SourceRef {
                topic: "stock-stream".into(),
                partition: 2,
                offset: 41,
            },
            key: None,
            payload: Vec::new(),
            generation: 0,
            id: None,
        };
        let mut odd = item.clone();
        odd.source.topic = "a\"b\\c".into();
        odd.source.offset = -1;
        let body = String::from_utf8(bulk_body(&[item])).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_index\":\"stock-stream\",\"_id\":\"stock-stream-2-41\"}}\n{\"a\":1}\n"
        );
        // The id written in place is the escaped `document_id`, whatever the topic.
        let body = String::from_utf8(bulk_body(std::slice::from_ref(&odd))).unwrap();
        let id = serde_json::to_string(&document_id(&odd.source)).unwrap();
        assert!(body.contains(&format!(",\"_id\":{id}}}}}\n")), "{body}");
        // A bar names its own id, whatever message closed it.
        odd.id = Some("408065-1498043700000000".into());
        let body = String::from_utf8(bulk_body(&[odd])).unwrap();
        assert!(
            body.contains(",\"_id\":\"408065-1498043700000000\"}}\n"),
            "{body}"
        );
    }

    #[test]
    fn the_templates_parse_and_map_the_timestamp_as_a_date() {
        for (name, text) in TEMPLATES {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(v["index_patterns"][0].as_str().unwrap().starts_with(name));
        }
        let v: serde_json::Value = serde_json::from_str(TEMPLATES[0].1).unwrap();
        let ts = &v["template"]["mappings"]["properties"]["timestamp"];
        // date_nanos keeps the ticks' microseconds; the formats take both the RFC 3339 form we
        // write and the sample's own `2017-06-20 07:35:05.284824`.
        assert_eq!(ts["type"], "date_nanos");
        let formats: Vec<&str> = ts["format"].as_str().unwrap().split("||").collect();
        assert!(
            formats.contains(&"uuuu-MM-dd HH:mm:ss.SSSSSS"),
            "{formats:?}"
        );
        // The first format is also how Elasticsearch prints the value (sorts, aggregations,
        // `fields`): `strict_date_optional_time` would print milliseconds. The plain one stays
        // as the second, for the ES-API emulator, which does not know the `_nanos` name.
        assert_eq!(
            formats[..2],
            [
                "strict_date_optional_time_nanos",
                "strict_date_optional_time"
            ]
        );
        assert_eq!(
            v["template"]["mappings"]["properties"]["instrument_token"]["type"],
            "keyword"
        );
    }
}
