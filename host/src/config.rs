//! One TOML file with every setting; command-line flags override it. Unknown keys are errors that
//! name the key (`deny_unknown_fields`), and [`Config::validate`] checks values before anything
//! starts, naming the offending key. Secrets never live here.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub lake: LakeSection,
    pub elasticsearch: ElasticsearchSection,
    pub guests: GuestsSection,
    pub http: HttpSection,
    pub validate: ValidateSection,
    pub enrich: EnrichSection,
    pub route: RouteSection,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`; empty = start librdkafka's mock cluster in-process.
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub dead_letter_topic: String,
    pub alerts_topic: String,
    /// Partitions of the topic when the embedded cluster creates it.
    pub embedded_partitions: i32,
    /// Most messages in one batch through the guests.
    pub batch_max: usize,
    /// Longest wait to fill a batch, in milliseconds.
    pub batch_wait_ms: u64,
    /// A member silent this long leaves the group (`session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// A member that does not poll for this long leaves the group; a rebalance may also wait this
    /// long for a member that died without leaving (`max.poll.interval.ms`).
    pub max_poll_interval_ms: u64,
    /// Static group membership (`group.instance.id`): empty = dynamic. Give each host of a group
    /// its own stable id (e.g. the container's name) to restart without a rebalance.
    pub group_instance_id: String,
    /// How often librdkafka reports consumer lag, committed offsets and broker states (for
    /// `/metrics` and `/ready`), in milliseconds; 0 = never.
    pub statistics_interval_ms: u64,
    /// How long the broker may hold a fetch waiting for data (`fetch.wait.max.ms`; librdkafka's
    /// default is 500). Bounds the latency of a quiet partition; lower = more idle requests.
    pub fetch_wait_max_ms: u64,
}

impl KafkaConfig {
    pub fn group_timeouts(&self) -> crate::source::kafka::GroupTimeouts {
        crate::source::kafka::GroupTimeouts {
            session_ms: self.session_timeout_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
            instance_id: (!self.group_instance_id.is_empty())
                .then(|| self.group_instance_id.clone()),
            statistics_interval_ms: self.statistics_interval_ms,
            fetch_wait_max_ms: self.fetch_wait_max_ms,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic: "stock-stream".into(),
            group_id: "stockpipe".into(),
            dead_letter_topic: "stock-stream.dlq".into(),
            alerts_topic: "stock-alerts".into(),
            embedded_partitions: 3,
            batch_max: 1000,
            batch_wait_ms: 50,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            group_instance_id: String::new(),
            statistics_interval_ms: 2_000,
            fetch_wait_max_ms: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSection {
    /// `file:///path`, a plain directory, or `gs://bucket/prefix`.
    pub url: String,
    pub roll_bytes: usize,
    pub roll_seconds: u64,
    /// GCS endpoint (an emulator); empty = `STORAGE_EMULATOR_HOST`, else Google's.
    pub gcs_endpoint: String,
    /// GCS uploads above this many bytes are resumable.
    pub gcs_resumable_threshold_bytes: usize,
    /// Write `….ndjson.gz` objects (gzip) instead of plain NDJSON.
    pub gzip: bool,
}

impl Default for LakeSection {
    fn default() -> Self {
        Self {
            url: "lake".into(),
            roll_bytes: 8 << 20,
            roll_seconds: 60,
            gcs_endpoint: String::new(),
            gcs_resumable_threshold_bytes: 16 << 20,
            gzip: false,
        }
    }
}

impl LakeSection {
    pub fn location(&self) -> Result<crate::sink::store::LakeLocation, ConfigError> {
        crate::sink::store::LakeLocation::parse(&self.url).map_err(|message| ConfigError::Invalid {
            key: "lake.url",
            message,
        })
    }

    pub fn gcs_options(&self) -> crate::sink::store::GcsOptions {
        crate::sink::store::GcsOptions {
            endpoint: (!self.gcs_endpoint.is_empty()).then(|| self.gcs_endpoint.clone()),
            resumable_threshold: self.gcs_resumable_threshold_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// The sink's settings, with credentials read from `lookup` (the environment).
    pub fn settings(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::sink::elasticsearch::EsSettings, crate::sink::elasticsearch::EsError> {
        use std::time::Duration;
        Ok(crate::sink::elasticsearch::EsSettings {
            url: self.url.clone(),
            auth: crate::sink::elasticsearch::EsAuth::from_lookup(lookup)?,
            ca_file: self.ca_file.clone(),
            bulk_max_docs: self.bulk_max_docs,
            bulk_max_bytes: self.bulk_max_bytes,
            bulk_max_age: Duration::from_millis(self.bulk_max_age_ms),
            max_in_flight: self.max_in_flight,
            retry: crate::sink::elasticsearch::RetryPolicy {
                initial: Duration::from_millis(self.retry_initial_ms),
                max: Duration::from_millis(self.retry_max_ms),
            },
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            put_templates: self.put_templates,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestsSection {
    /// Directory holding validate.wasm, enrich.wasm and route.wasm; empty = the embedded guests.
    pub dir: Option<PathBuf>,
    pub call_deadline_ms: u64,
    pub memory_mib: usize,
    /// Fuel per call (a deterministic instruction budget on top of the deadline); 0 = off.
    pub fuel_per_call: u64,
    /// Swap a guest when its file in `dir` changes.
    pub watch: bool,
    /// Latest processed ticks a candidate is run on, beside the current version, before a swap.
    pub shadow_ticks: usize,
    /// Refuse a swap whose candidate rejects more than this share of what the current version accepted.
    pub max_new_reject_share: f64,
    /// Roll back a new version that faults in more than this many batches...
    pub rollback_after_faults: u64,
    /// ...among its first this-many batches.
    pub rollback_window_batches: u64,
}

impl Default for GuestsSection {
    fn default() -> Self {
        let policy = crate::runtime::swap::SwapPolicy::default();
        Self {
            dir: None,
            call_deadline_ms: 500,
            memory_mib: 64,
            fuel_per_call: 0,
            watch: true,
            shadow_ticks: policy.shadow_ticks,
            max_new_reject_share: policy.max_new_reject_share,
            rollback_after_faults: policy.rollback_after_faults,
            rollback_window_batches: policy.rollback_window_batches,
        }
    }
}

impl GuestsSection {
    pub fn swap_policy(&self) -> crate::runtime::swap::SwapPolicy {
        crate::runtime::swap::SwapPolicy {
            shadow_ticks: self.shadow_ticks,
            max_new_reject_share: self.max_new_reject_share,
            rollback_after_faults: self.rollback_after_faults,
            rollback_window_batches: self.rollback_window_batches,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `host:port` of the HTTP API (`/guests`, `/health`); empty = no HTTP.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateSection {
    /// Offset from UTC, in minutes, of timestamps written without a zone (the sample's form).
    pub naive_timestamp_offset_minutes: i32,
    /// Earliest accepted tick time, RFC 3339.
    pub min_timestamp: String,
    /// How far past the host's clock a tick may be stamped, in seconds (0 = no limit).
    pub max_future_seconds: u64,
}

impl Default for ValidateSection {
    fn default() -> Self {
        Self {
            naive_timestamp_offset_minutes: 0,
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichSection {
    pub imbalance_levels: u32,
}

impl Default for EnrichSection {
    fn default() -> Self {
        Self {
            imbalance_levels: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSection {
    pub search_index: String,
    pub change_alert_pct: f64,
    pub spread_alert_bps: f64,
}

impl Default for RouteSection {
    fn default() -> Self {
        Self {
            search_index: "stock-stream".into(),
            change_alert_pct: 5.0,
            spread_alert_bps: 50.0,
        }
    }
}

/// Environment variables that override settings start with this.
pub const ENV_PREFIX: &str = "STOCKPIPE_";
/// `json` or `text`: the log format (default: JSON unless stderr is a terminal).
pub const LOG_FORMAT_ENV: &str = "STOCKPIPE_LOG_FORMAT";
/// The sections of the file, as `STOCKPIPE_<SECTION>_<KEY>` spells them (lowercased).
const SECTIONS: [&str; 8] = [
    "kafka",
    "lake",
    "elasticsearch",
    "guests",
    "http",
    "validate",
    "enrich",
    "route",
];

/// The host's clock in UTC µs (the guests get a timestamp window, never a clock).
pub fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })
    }

    /// The file (or the defaults), then `STOCKPIPE_<SECTION>_<KEY>` variables from `env` on top:
    /// `STOCKPIPE_KAFKA_BROKERS=kafka:9092`, `STOCKPIPE_ELASTICSEARCH_BULK_MAX_DOCS=500`. Values
    /// are read as TOML (numbers, booleans) and otherwise taken as strings. A variable naming no
    /// section or key is an error that names the variable. The secrets
    /// ([`crate::sink::elasticsearch::env`]) are not settings and are left alone.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "(none: the defaults)".to_string()),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        // Secrets (never settings) and process options that are not settings either.
        let not_settings = {
            use crate::sink::elasticsearch::env;
            [env::API_KEY, env::USERNAME, env::PASSWORD, LOG_FORMAT_ENV]
        };
        let mut overridden = Vec::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if not_settings.contains(&name.as_str()) {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let Some(section) = SECTIONS
                .iter()
                .find(|s| lower.starts_with(&format!("{s}_")))
            else {
                return Err(ConfigError::Env {
                    name,
                    message: format!("no such section (sections: {})", SECTIONS.join(", ")),
                });
            };
            let key = lower[section.len() + 1..].to_string();
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            let entry = table
                .entry((*section).to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                return Err(ConfigError::Env {
                    name,
                    message: format!("[{section}] is not a table in {origin}"),
                });
            };
            section_table.insert(key, value);
            overridden.push(name);
        }
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: if overridden.is_empty() {
                    origin
                } else {
                    format!("{origin} with {}", overridden.join(", "))
                },
                message: e.to_string(),
            })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        let k = &self.kafka;
        for (key, topic) in [
            ("kafka.topic", &k.topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.alerts_topic", &k.alerts_topic),
        ] {
            if topic.is_empty()
                || topic.len() > 249
                || !topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return invalid(
                    key,
                    &format!("{topic:?} is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])"),
                );
            }
        }
        if k.dead_letter_topic == k.topic || k.alerts_topic == k.topic {
            return invalid(
                "kafka.dead_letter_topic",
                "the dead-letter and alerts topics must differ from kafka.topic",
            );
        }
        if k.group_id.is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        if k.batch_max == 0 || k.batch_max > 100_000 {
            return invalid("kafka.batch_max", "must be between 1 and 100000");
        }
        if k.session_timeout_ms < 1000 || k.max_poll_interval_ms < k.session_timeout_ms {
            return invalid(
                "kafka.max_poll_interval_ms",
                "kafka.session_timeout_ms must be at least 1000 and at most kafka.max_poll_interval_ms",
            );
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return invalid("kafka.embedded_partitions", "must be between 1 and 1024");
        }
        if self.lake.roll_bytes < 1024 {
            return invalid("lake.roll_bytes", "must be at least 1024");
        }
        if self.lake.roll_seconds == 0 {
            return invalid("lake.roll_seconds", "must be at least 1");
        }
        self.lake.location()?;
        let es = &self.elasticsearch;
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
        if self.guests.call_deadline_ms == 0 {
            return invalid("guests.call_deadline_ms", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.guests.max_new_reject_share) {
            return invalid(
                "guests.max_new_reject_share",
                "must be a share between 0 and 1",
            );
        }
        if self.guests.shadow_ticks > 1_000_000 {
            return invalid("guests.shadow_ticks", "must be at most 1000000");
        }
        if self.guests.rollback_window_batches == 0 {
            return invalid("guests.rollback_window_batches", "must be at least 1");
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return invalid(
                "http.listen",
                "must be host:port with an IP address, e.g. 127.0.0.1:8080",
            );
        }
        if !(1..=4096).contains(&self.guests.memory_mib) {
            return invalid("guests.memory_mib", "must be between 1 and 4096");
        }
        if self.validate.naive_timestamp_offset_minutes.abs() >= 24 * 60 {
            return invalid(
                "validate.naive_timestamp_offset_minutes",
                "must be within ±1439",
            );
        }
        if stockpipe_model::time::parse_timestamp(&self.validate.min_timestamp, 0).is_err()
            || !self.validate.min_timestamp.contains('T')
        {
            return invalid(
                "validate.min_timestamp",
                "must be an RFC 3339 timestamp, e.g. 2000-01-01T00:00:00Z",
            );
        }
        if self.enrich.imbalance_levels == 0 {
            return invalid("enrich.imbalance_levels", "must be at least 1");
        }
        if self.route.search_index.is_empty()
            || self
                .route
                .search_index
                .chars()
                .any(|c| c.is_ascii_uppercase())
        {
            return invalid(
                "route.search_index",
                "must be a non-empty lowercase index name",
            );
        }
        for (key, v) in [
            ("route.change_alert_pct", self.route.change_alert_pct),
            ("route.spread_alert_bps", self.route.spread_alert_bps),
        ] {
            if !v.is_finite() {
                return invalid(key, "must be a finite number (<= 0 disables the alert)");
            }
        }
        Ok(())
    }

    /// The guests' per-call configuration, with the timestamp window fixed at `now_us`.
    pub fn stage_configs(&self, now_us: i64) -> crate::chain::StageConfigs {
        use stockpipe_guest_enrich::logic::EnrichConfig;
        use stockpipe_guest_route::logic::RouteConfig;
        use stockpipe_guest_validate::logic::ValidateConfig;
        let min =
            stockpipe_model::time::parse_timestamp(&self.validate.min_timestamp, 0).unwrap_or(0);
        let max = match self.validate.max_future_seconds {
            0 => 0,
            s => now_us.saturating_add(s as i64 * 1_000_000),
        };
        crate::chain::StageConfigs {
            validate: ValidateConfig {
                min_timestamp_us: min,
                max_timestamp_us: max,
            },
            enrich: EnrichConfig {
                imbalance_levels: self.enrich.imbalance_levels as usize,
            },
            route: RouteConfig {
                search_index: self.route.search_index.clone(),
                alerts_topic: self.kafka.alerts_topic.clone(),
                dead_letter_topic: self.kafka.dead_letter_topic.clone(),
                change_alert_pct: self.route.change_alert_pct,
                spread_alert_bps: self.route.spread_alert_bps,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn environment_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbrokers = \"file:9092\"\nbatch_max = 10\n").unwrap();
        let config = Config::load_with_env(
            Some(&path),
            env(&[
                ("STOCKPIPE_KAFKA_BROKERS", "kafka:9092"),
                ("STOCKPIPE_ELASTICSEARCH_BULK_MAX_DOCS", "500"),
                ("STOCKPIPE_ELASTICSEARCH_PUT_TEMPLATES", "false"),
                ("STOCKPIPE_LAKE_URL", "gs://b/p"),
                ("STOCKPIPE_ES_API_KEY", "secret, not a setting"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "kafka:9092");
        assert_eq!(config.kafka.batch_max, 10, "the file's other keys stay");
        assert_eq!(config.elasticsearch.bulk_max_docs, 500);
        assert!(!config.elasticsearch.put_templates);
        assert_eq!(config.lake.url, "gs://b/p");
        assert_eq!(
            Config::load_with_env(None, env(&[])).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn a_wrong_variable_is_named() {
        let e = Config::load_with_env(None, env(&[("STOCKPIPE_KAFKA_BROKER", "x")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("broker") && text.contains("STOCKPIPE_KAFKA_BROKER"),
            "{text}"
        );
        let e = Config::load_with_env(None, env(&[("STOCKPIPE_SINK_URL", "x")])).unwrap_err();
        assert!(e.to_string().contains("STOCKPIPE_SINK_URL"), "{e}");
        let e =
            Config::load_with_env(None, env(&[("STOCKPIPE_KAFKA_BATCH_MAX", "many")])).unwrap_err();
        assert!(e.to_string().contains("batch_max"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("[kafka]\nbatch_maxx = 3\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("batch_maxx"), "{e}");
        let e = Config::parse("[lakes]\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("lakes"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[kafka]\nbatch_max = 0", "kafka.batch_max"),
            (
                "[kafka]\ndead_letter_topic = \"stock-stream\"",
                "kafka.dead_letter_topic",
            ),
            ("[kafka]\ntopic = \"a b\"", "kafka.topic"),
            ("[guests]\nmemory_mib = 0", "guests.memory_mib"),
            (
                "[guests]\nmax_new_reject_share = 2.0",
                "guests.max_new_reject_share",
            ),
            ("[http]\nlisten = \"localhost\"", "http.listen"),
            (
                "[validate]\nmin_timestamp = \"yesterday\"",
                "validate.min_timestamp",
            ),
            ("[route]\nsearch_index = \"Stock\"", "route.search_index"),
        ];
        for (text, key) in cases {
            let e = Config::parse(text, "t").unwrap().validate().unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn wrong_types_are_parse_errors_naming_the_key() {
        let e = Config::parse("[kafka]\nbatch_max = \"many\"", "t").unwrap_err();
        assert!(e.to_string().contains("batch_max"), "{e}");
    }
}
