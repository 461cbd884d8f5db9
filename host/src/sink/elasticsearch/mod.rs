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
//!
//! Laid out as Vector's sink is: [`config`] (the `[elasticsearch]` section, credentials, retry
//! policy), [`client`] (the HTTP client and the index templates), [`bulk`] (a request's body, its
//! answer read item by item, the retries and dead letters), and the sink itself here.

mod bulk;
mod client;
mod config;

pub use bulk::{
    BulkItem, BulkReport, DeadLetters, ItemOutcome, classify_item, deliver, document_id,
    index_documents,
};
pub use client::{TEMPLATES, client, put_templates};
pub use config::{ElasticsearchSection, EsAuth, EsSettings, RetryPolicy, env};

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
    use super::config::*;
    use crate::sink::SourceRef;
    use serde_json::json;
    use std::time::Duration;

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
