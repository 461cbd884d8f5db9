//! The `[elasticsearch]` section, the credentials (from the environment only) and the retry
//! policy.

use super::EsError;
use crate::config::error::{ConfigError, invalid};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
/// Environment variables holding the credentials (never the config file).
pub mod env {
    pub const API_KEY: &str = "STOCKPIPE_ES_API_KEY";
    pub const USERNAME: &str = "STOCKPIPE_ES_USERNAME";
    pub const PASSWORD: &str = "STOCKPIPE_ES_PASSWORD";
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
pub(super) fn jitter_fraction() -> f64 {
    (crate::random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// How documents are written: to plain indices (the bulk action `index`, a re-delivered tick
/// overwrites itself) or to data streams (`create`, a re-delivered tick is answered 409 and
/// counted as already stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EsMode {
    #[default]
    Index,
    DataStream,
}

impl EsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Index => "index",
            Self::DataStream => "data_stream",
        }
    }
}

/// Request bodies as they are, or gzipped (`Content-Encoding: gzip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EsCompression {
    #[default]
    None,
    Gzip,
}

/// `[elasticsearch.ilm]`: an index lifecycle policy put beside the templates and named by them.
/// Written = on. In data-stream mode the backing indices roll over at the first of the two
/// limits and are deleted `delete_after_days` after their rollover; in index mode (with
/// `dated_indices`) a day's index is deleted `delete_after_days` after the day its name says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IlmSection {
    /// The policy's name.
    pub policy: String,
    /// Roll over to a new backing index after this long (data-stream mode): `1d`, `12h`, …
    pub rollover_max_age: String,
    /// … or once a primary shard holds this much (data-stream mode): `50gb`, …
    pub rollover_max_primary_shard_size: String,
    /// Delete data this many days old (0 = keep it).
    pub delete_after_days: u32,
}

impl Default for IlmSection {
    fn default() -> Self {
        Self {
            policy: "stockpipe".into(),
            rollover_max_age: "1d".into(),
            rollover_max_primary_shard_size: "50gb".into(),
            delete_after_days: 0,
        }
    }
}

/// Where the cluster is: one or more node URLs, or an Elastic Cloud id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EsNodes {
    Urls(Vec<String>),
    CloudId(String),
}

impl EsNodes {
    /// For logs and errors: the URLs without credentials, or the cloud id's deployment name.
    pub fn describe(&self) -> String {
        match self {
            Self::Urls(urls) => urls
                .iter()
                .map(|u| crate::redact::url(u))
                .collect::<Vec<_>>()
                .join(", "),
            Self::CloudId(id) => format!(
                "Elastic Cloud deployment {:?}",
                id.split(':').next().unwrap_or_default()
            ),
        }
    }
}

/// What the index templates put say besides the mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSettings {
    pub mode: EsMode,
    pub dated_indices: bool,
    pub number_of_shards: u32,
    pub number_of_replicas: u32,
    pub ilm: Option<IlmSection>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EsSettings {
    pub nodes: EsNodes,
    pub auth: EsAuth,
    pub ca_file: Option<PathBuf>,
    pub bulk_max_docs: usize,
    pub bulk_max_bytes: usize,
    pub bulk_max_age: Duration,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// Put our index templates (and the lifecycle policy) at start-up.
    pub put_templates: bool,
    pub templates: TemplateSettings,
    pub compression: EsCompression,
    /// How long a fault may last before `run --once` gives up (a service waits however long).
    pub fault_give_up: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchSection {
    /// `http(s)://host:port`; empty (and no `urls`, no `cloud_id`) = no Elasticsearch sink.
    /// Credentials come from the environment only (STOCKPIPE_ES_API_KEY, or
    /// STOCKPIPE_ES_USERNAME + STOCKPIPE_ES_PASSWORD).
    pub url: String,
    /// Several nodes of one cluster, used in turn (instead of `url`).
    pub urls: Vec<String>,
    /// An Elastic Cloud deployment's Cloud ID (instead of `url`); needs credentials.
    pub cloud_id: String,
    /// `index` (plain indices, the bulk action `index`) or `data_stream` (`create`, `@timestamp`).
    pub mode: EsMode,
    /// Index mode: one index per day of the tick's own time, `stock-stream-YYYY.MM.DD`.
    pub dated_indices: bool,
    pub number_of_shards: u32,
    /// Elasticsearch's own default is 1: a copy of every shard on another node. A one-node
    /// cluster (the compose stack) needs 0, or its indices stay yellow.
    pub number_of_replicas: u32,
    /// `none` or `gzip` (request bodies).
    pub compression: EsCompression,
    /// `run --once`: give up after a fault of the cluster (refused rights, a read-only or closed
    /// index, no write index, the cluster unreachable) has lasted this long with nothing
    /// delivered; a service waits for it to be fixed.
    pub fault_give_up_ms: u64,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ilm: Option<IlmSection>,
}

impl Default for ElasticsearchSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            urls: Vec::new(),
            cloud_id: String::new(),
            mode: EsMode::Index,
            dated_indices: false,
            number_of_shards: 1,
            number_of_replicas: 1,
            compression: EsCompression::None,
            fault_give_up_ms: 300_000,
            ilm: None,
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
    /// Where the cluster is, if anywhere: `url`, `urls` or `cloud_id` (one of them).
    pub fn nodes(&self) -> Option<EsNodes> {
        if !self.cloud_id.is_empty() {
            Some(EsNodes::CloudId(self.cloud_id.clone()))
        } else if !self.urls.is_empty() {
            Some(EsNodes::Urls(self.urls.clone()))
        } else if !self.url.is_empty() {
            Some(EsNodes::Urls(vec![self.url.clone()]))
        } else {
            None
        }
    }

    /// Whether there is an Elasticsearch sink at all.
    pub fn enabled(&self) -> bool {
        self.nodes().is_some()
    }

    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let es = self;
        es.validate_nodes()?;
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
        if es.fault_give_up_ms < 1000 {
            return invalid("elasticsearch.fault_give_up_ms", "must be at least 1000");
        }
        if !(1..=1024).contains(&es.number_of_shards) {
            return invalid(
                "elasticsearch.number_of_shards",
                "must be between 1 and 1024",
            );
        }
        if es.number_of_replicas > 32 {
            return invalid("elasticsearch.number_of_replicas", "must be at most 32");
        }
        if es.dated_indices && es.mode == EsMode::DataStream {
            return invalid(
                "elasticsearch.dated_indices",
                "is for mode = \"index\"; a data stream rolls over by itself (see [elasticsearch.ilm])",
            );
        }
        if let Some(ilm) = &es.ilm {
            ilm.validate(es.mode, es.dated_indices)?;
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

    /// `url`, `urls` or `cloud_id`: one of them, well formed.
    fn validate_nodes(&self) -> Result<(), ConfigError> {
        let es = self;
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !(es.url.is_empty() || http(&es.url)) {
            return invalid(
                "elasticsearch.url",
                "must be http://host:port or https://host:port (or empty for no Elasticsearch)",
            );
        }
        if let Some(bad) = es.urls.iter().find(|u| !http(u)) {
            return invalid(
                "elasticsearch.urls",
                &format!(
                    "{:?} is not http://host:port or https://host:port",
                    crate::redact::url(bad)
                ),
            );
        }
        // Credentials come from the environment only: in a URL they would reach every error
        // (the HTTP client prints the request's URL whole) and so the log and /ready.
        for (key, url) in std::iter::once(("elasticsearch.url", &es.url))
            .chain(es.urls.iter().map(|u| ("elasticsearch.urls", u)))
        {
            if crate::redact::url(url) != *url {
                return invalid(
                    key,
                    &format!(
                        "{} holds credentials; give them in {} or {}/{} instead",
                        crate::redact::url(url),
                        env::API_KEY,
                        env::USERNAME,
                        env::PASSWORD
                    ),
                );
            }
        }
        let given = [
            !es.url.is_empty(),
            !es.urls.is_empty(),
            !es.cloud_id.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return invalid(
                "elasticsearch.url",
                "set one of elasticsearch.url, elasticsearch.urls and elasticsearch.cloud_id",
            );
        }
        if !es.cloud_id.is_empty()
            && let Err(e) = elasticsearch::http::transport::CloudId::parse(&es.cloud_id)
        {
            return invalid("elasticsearch.cloud_id", &format!("not a Cloud ID: {e}"));
        }
        Ok(())
    }

    /// The sink's settings, with credentials read from `lookup` (the environment).
    pub fn settings(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<EsSettings, EsError> {
        use std::time::Duration;
        let nodes = self.nodes().unwrap_or(EsNodes::Urls(Vec::new()));
        Ok(EsSettings {
            nodes,
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
            templates: TemplateSettings {
                mode: self.mode,
                dated_indices: self.dated_indices,
                number_of_shards: self.number_of_shards,
                number_of_replicas: self.number_of_replicas,
                ilm: self.ilm.clone(),
            },
            compression: self.compression,
            fault_give_up: Duration::from_millis(self.fault_give_up_ms),
        })
    }
}

impl IlmSection {
    fn validate(&self, mode: EsMode, dated_indices: bool) -> Result<(), ConfigError> {
        let policy_ok = !self.policy.is_empty()
            && self
                .policy
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !policy_ok {
            return invalid(
                "elasticsearch.ilm.policy",
                "must be lowercase letters, digits, '-', '_' or '.'",
            );
        }
        if !is_time_unit(&self.rollover_max_age) {
            return invalid(
                "elasticsearch.ilm.rollover_max_age",
                "must be a number and a unit (d, h, m, s), e.g. \"1d\"",
            );
        }
        if !is_byte_size(&self.rollover_max_primary_shard_size) {
            return invalid(
                "elasticsearch.ilm.rollover_max_primary_shard_size",
                "must be a number and a unit (b, kb, mb, gb, tb), e.g. \"50gb\"",
            );
        }
        if mode == EsMode::Index && self.delete_after_days > 0 && !dated_indices {
            return invalid(
                "elasticsearch.ilm.delete_after_days",
                "in index mode needs elasticsearch.dated_indices = true (a lifecycle would \
                 otherwise delete the one index, all of it)",
            );
        }
        Ok(())
    }
}

/// Elasticsearch's time units as ILM takes them: `30d`, `12h`, `90m`, `45s`.
fn is_time_unit(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && ["d", "h", "m", "s"].contains(&&text[digits..])
}

/// Elasticsearch's byte sizes: `50gb`, `500mb`, …
fn is_byte_size(text: &str) -> bool {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && ["b", "kb", "mb", "gb", "tb", "pb"].contains(&&text[digits..])
}
