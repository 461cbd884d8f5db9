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
