//! The Elasticsearch sink: config → [`EsSink::connect`] → `push` / `flush_due` / `drain`.
//!
//! Accepted documents are buffered and written with `_bulk`, a request per batch bounded by count,
//! bytes and age, with at most `max_in_flight` requests out at once (a full pipe makes the run loop
//! wait: the consumer pauses instead of buffering without bound). Every document's `_id` is its
//! Kafka position (`topic-partition-offset`), so a re-delivered tick overwrites itself.
//!
//! A bulk response is read item by item ([`classify_item`]), by who is at fault:
//! - indexed items are done; in a data stream (`mode = "data_stream"`, the action `create`) a 409
//!   `version_conflict_engine_exception` is a re-delivered document the stream already holds,
//!   counted as `index_already_stored`, neither retried nor dead-lettered;
//! - 429, 5xx and `es_rejected_execution_exception`: the cluster is busy; those items are retried
//!   with exponential backoff and jitter;
//! - the cluster's own refusals — 401/403, a closed or read-only index, no write index, no such
//!   index — are not the document's fault: the items wait, retried with backoff, the batch and
//!   so the commit blocked, the reason in `/ready`, the metrics and the log; `run --once` gives up
//!   after `elasticsearch.fault_give_up_ms` with an error naming it;
//! - any other item error (a mapping or parse error, a bad value) sends the original message to
//!   the dead-letter topic with the error.
//!
//! A whole request that fails (connection refused, 429, 5xx) is retried as it is, same items, same
//! order. A batch reports its offsets to the commit protocol only when every item is settled.
//!
//! Laid out as Vector's sink is: [`config`] (the `[elasticsearch]` section, credentials, retry
//! policy), [`client`] (the HTTP client), [`templates`] (the index templates and the lifecycle
//! policy put at start-up), [`bulk`] (a request's body, its answer read item by item, the retries
//! and dead letters), and the sink itself here.

mod bulk;
mod client;
mod config;
mod templates;

pub use bulk::{
    BulkItem, BulkReport, BulkShape, DeadLetters, Delivery, ItemOutcome, OwnDocument,
    classify_item, document_id, index_documents,
};
pub use client::client;
pub use config::{
    ElasticsearchSection, EsAuth, EsCompression, EsMode, EsNodes, EsSettings, IlmSection,
    RetryPolicy, TemplateSettings, env,
};
pub use templates::{TEMPLATES, Template, lifecycle_policy, privileges, put_templates, render};

use crate::telemetry::{Dependency, Telemetry};
use elasticsearch::Elasticsearch;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("elasticsearch url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("elasticsearch credentials: {0}")]
    Auth(String),
    #[error("reading the CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("elasticsearch client: {}", cause_chain(.0))]
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
    /// `run --once`: a batch that could not be delivered for `elasticsearch.fault_give_up_ms`.
    #[error(
        "Elasticsearch: gave up after {} s of {reason} (elasticsearch.fault_give_up_ms = {limit_ms}); nothing past it is committed",
        waited_ms / 1000
    )]
    GaveUp {
        waited_ms: u64,
        limit_ms: u64,
        reason: String,
    },
}

/// An error and every cause under it, `outer: inner: …` (a connection failure says why: the
/// refused connection, the TLS alert, the name that did not resolve).
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// The sink the run loop drives: buffer → bounded bulk requests in flight → reports.
pub struct EsSink {
    settings: EsSettings,
    delivery: Delivery,
    buffer: Vec<BulkItem>,
    buffer_bytes: usize,
    opened: Option<Instant>,
    in_flight: JoinSet<Result<BulkReport, EsError>>,
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
            put_templates(&client, &settings.templates, settings.retry, None, &waiting).await?;
        }
        telemetry.set_ready(Dependency::Elasticsearch, Ok(()));
        let delivery = Delivery {
            client,
            shape: BulkShape::of(&settings.templates),
            retry: settings.retry,
            dead_letters,
            telemetry,
            // A service waits however long; `run --once` sets it (`give_up_after_faults`).
            give_up: None,
        };
        Ok(Self {
            settings,
            delivery,
            buffer: Vec::new(),
            buffer_bytes: 0,
            opened: None,
            in_flight: JoinSet::new(),
        })
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.delivery.client
    }

    /// `run --once`: a batch that cannot be delivered for `elasticsearch.fault_give_up_ms` ends
    /// the run with an error naming why, instead of waiting however long.
    pub fn give_up_after_faults(&mut self) {
        self.delivery.give_up = Some(self.settings.fault_give_up);
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
        let delivery = self.delivery.clone();
        self.in_flight
            .spawn(async move { delivery.deliver(items).await });
        Ok(report)
    }
}

pub(super) fn joined(
    done: Result<Result<BulkReport, EsError>, tokio::task::JoinError>,
) -> Result<BulkReport, EsError> {
    match done {
        Ok(result) => result,
        Err(e) => Err(EsError::DeadLetter(format!("a bulk task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::TEMPLATES;
    use super::bulk::*;
    use super::config::EsMode;
    use super::config::*;
    use crate::sink::SourceRef;
    use serde_json::json;
    use std::time::Duration;

    /// `{"a":1}` from stock-stream's partition 2, offset 41, timed `time_us`.
    fn item_at(time_us: i64) -> BulkItem {
        BulkItem {
            index: "stock-stream".into(),
            document: bytes::Bytes::from_static(br#"{"a":1}"#),
            source: SourceRef {
                topic: "stock-stream".into(),
                partition: 2,
                offset: 41,
                tick: None,
            },
            key: None,
            payload: bytes::Bytes::new(),
            generation: 0,
            id: None,
            time_us,
        }
    }

    fn item(status: u16, kind: &str, reason: &str) -> ItemOutcome {
        classify_item(status, Some(&json!({"type": kind, "reason": reason})))
    }

    #[test]
    fn an_item_is_indexed_or_already_stored_when_the_cluster_says_so() {
        assert_eq!(classify_item(201, None), ItemOutcome::Indexed);
        assert_eq!(classify_item(200, None), ItemOutcome::Indexed);
        // `create` into a data stream that holds the id: a re-delivery, stored before.
        assert_eq!(
            item(
                409,
                "version_conflict_engine_exception",
                "[stock-stream-0-1]: version conflict, document already exists (current version [1])"
            ),
            ItemOutcome::AlreadyStored
        );
    }

    #[test]
    fn a_busy_cluster_is_retried() {
        assert!(matches!(
            item(429, "circuit_breaking_exception", "[parent] Data too large"),
            ItemOutcome::Retry(_)
        ));
        assert!(matches!(classify_item(503, None), ItemOutcome::Retry(_)));
        // Seen with a 400-class status on some versions: still a back-pressure signal.
        assert!(matches!(
            item(400, "es_rejected_execution_exception", "rejected execution"),
            ItemOutcome::Retry(_)
        ));
    }

    #[test]
    fn a_refusal_any_document_would_meet_is_the_cluster_s_fault() {
        let faults = [
            (
                403,
                "security_exception",
                "action [indices:data/write/bulk[s]] is unauthorized for API key id [x] of user [ingest] on indices [stock-stream]",
            ),
            (
                401,
                "security_exception",
                "missing authentication credentials for REST request [/_bulk]",
            ),
            (
                403,
                "cluster_block_exception",
                "index [stock-stream] blocked by: [FORBIDDEN/8/index write (api)];",
            ),
            (
                429,
                "cluster_block_exception",
                "index [stock-stream] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];",
            ),
            (400, "index_closed_exception", "closed"),
            (
                404,
                "index_not_found_exception",
                "no such index [stock-stream] and [action.auto_create_index] ([false]) doesn't match",
            ),
            (
                400,
                "illegal_argument_exception",
                "no write index is defined for alias [stock-stream]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index",
            ),
            (
                400,
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams",
            ),
        ];
        for (status, kind, reason) in faults {
            match item(status, kind, reason) {
                ItemOutcome::Fault(said) => {
                    assert!(said.contains(kind) && said.contains(reason), "{said}")
                }
                other => panic!("{status} {kind}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_document_at_fault_is_dead_lettered() {
        let refused = [
            (
                400,
                "mapper_parsing_exception",
                "failed to parse field [volume] of type [long] in document with id 'stock-stream-0-7'",
            ),
            (
                400,
                "document_parsing_exception",
                "[1:30] failed to parse field [last_price] of type [double]",
            ),
            // The same type as a missing write index, with a reason that is the document's.
            (
                400,
                "illegal_argument_exception",
                "mapper [depth.buy.price] cannot be changed from type [double] to [long]",
            ),
            (
                400,
                "strict_dynamic_mapping_exception",
                "[1:2] mapping set to strict, dynamic introduction of [x] within [_doc] is not allowed",
            ),
        ];
        for (status, kind, reason) in refused {
            assert_eq!(
                item(status, kind, reason),
                ItemOutcome::Refused(format!("{status} {kind}: {reason}"))
            );
        }
    }

    #[test]
    fn a_data_stream_gets_create_and_timestamp_and_a_dated_index_the_tick_s_day() {
        // 2017-06-20T23:59:59.999999Z: the day is the tick's, in UTC.
        let item = item_at(1_498_003_199_999_999);
        let stream = BulkShape {
            mode: EsMode::DataStream,
            dated_indices: false,
        };
        let body = String::from_utf8(bulk_body(std::slice::from_ref(&item), stream)).unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"stock-stream\",\"_id\":\"stock-stream-2-41\"}}\n\
             {\"@timestamp\":\"2017-06-20T23:59:59.999999Z\",\"a\":1}\n"
        );
        let dated = BulkShape {
            mode: EsMode::Index,
            dated_indices: true,
        };
        let body = String::from_utf8(bulk_body(std::slice::from_ref(&item), dated)).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_index\":\"stock-stream-2017.06.20\",\"_id\":\"stock-stream-2-41\"}}\n{\"a\":1}\n"
        );
        // An empty object stays an object.
        let mut empty = item;
        empty.document = bytes::Bytes::from_static(b"{}");
        let body = String::from_utf8(bulk_body(&[empty], stream)).unwrap();
        let document: serde_json::Value =
            serde_json::from_str(body.lines().nth(1).unwrap()).unwrap();
        assert_eq!(
            document,
            json!({"@timestamp": "2017-06-20T23:59:59.999999Z"})
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
        let item = item_at(1_498_044_305_284_824);
        let mut odd = item.clone();
        odd.source.topic = "a\"b\\c".into();
        odd.source.offset = -1;
        let body =
            String::from_utf8(bulk_body(std::slice::from_ref(&item), BulkShape::PLAIN)).unwrap();
        assert_eq!(
            body,
            "{\"index\":{\"_index\":\"stock-stream\",\"_id\":\"stock-stream-2-41\"}}\n{\"a\":1}\n"
        );
        // The id written in place is the escaped `document_id`, whatever the topic.
        let body =
            String::from_utf8(bulk_body(std::slice::from_ref(&odd), BulkShape::PLAIN)).unwrap();
        let id = serde_json::to_string(&document_id(&odd.source)).unwrap();
        assert!(body.contains(&format!(",\"_id\":{id}}}}}\n")), "{body}");
        // A tick of a message of several: the message's id and its place.
        let mut third = item.clone();
        third.source.tick = Some(2);
        assert_eq!(document_id(&third.source), "stock-stream-2-41-2");
        let body = String::from_utf8(bulk_body(&[third], BulkShape::PLAIN)).unwrap();
        assert!(
            body.contains(",\"_id\":\"stock-stream-2-41-2\"}}\n"),
            "{body}"
        );
        // A bar names its own id, whatever message closed it.
        odd.id = Some("408065-1498043700000000".into());
        let body = String::from_utf8(bulk_body(&[odd], BulkShape::PLAIN)).unwrap();
        assert!(
            body.contains(",\"_id\":\"408065-1498043700000000\"}}\n"),
            "{body}"
        );
    }

    #[test]
    fn the_templates_parse_and_map_the_timestamp_as_a_date() {
        for template in TEMPLATES {
            let v: serde_json::Value = serde_json::from_str(template.body).unwrap();
            assert!(
                v["index_patterns"][0]
                    .as_str()
                    .unwrap()
                    .starts_with(template.name)
            );
        }
        let v: serde_json::Value = serde_json::from_str(TEMPLATES[0].body).unwrap();
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
