//! One TOML file with every setting; command-line flags override it. Unknown keys are errors that
//! name the key (`deny_unknown_fields`), and [`Config::validate`] checks values before anything
//! starts, naming the offending key. Secrets never live here.

pub mod error;

pub use error::ConfigError;

use crate::chain::aggregate::AggregateSection;
use crate::chain::swap::GuestsSection;
use crate::chain::{EnrichSection, RouteSection, ValidateSection};
use crate::http::HttpSection;
use crate::pipeline::decode::InputSection;
use crate::sink::elasticsearch::ElasticsearchSection;
use crate::sink::lake::LakeSection;
use crate::source::kafka::KafkaConfig;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
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
    pub aggregate: AggregateSection,
    pub alert: crate::chain::alert::AlertSection,
    pub input: InputSection,
}

/// Environment variables that override settings start with this.
pub const ENV_PREFIX: &str = "STOCKPIPE_";
/// `json` or `text`: the log format (default: JSON unless stderr is a terminal).
pub const LOG_FORMAT_ENV: &str = "STOCKPIPE_LOG_FORMAT";
/// The sections of the file, as `STOCKPIPE_<SECTION>_<KEY>` spells them (lowercased).
const SECTIONS: [&str; 11] = [
    "kafka",
    "lake",
    "elasticsearch",
    "guests",
    "http",
    "validate",
    "enrich",
    "route",
    "aggregate",
    "alert",
    "input",
];

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
        let mut not_settings: Vec<String> = {
            use crate::sink::elasticsearch::env;
            [
                env::API_KEY,
                env::USERNAME,
                env::PASSWORD,
                LOG_FORMAT_ENV,
                crate::http::ADMIN_TOKEN_ENV,
            ]
            .map(String::from)
            .to_vec()
        };
        not_settings.extend(crate::source::kafka_config::secret_env_names());
        // Each key's type, from the defaults: an override is read as its key's type.
        let defaults = toml::Table::try_from(Self::default()).expect("the defaults serialize");
        let mut overridden = Vec::new();
        for (name, raw) in env {
            if !name.starts_with(ENV_PREFIX)
                || not_settings.contains(&name)
                || is_service_link(&name)
            {
                continue;
            }
            let (path, value) = override_of(&name, &raw, &defaults)?;
            let (section, key) = (path[0].as_str(), &path[1..]);
            let mut entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            for part in &key[..key.len() - 1] {
                let Some(t) = entry.as_table_mut() else {
                    return Err(ConfigError::Env {
                        name,
                        message: format!("[{section}] is not a table in {origin}"),
                    });
                };
                entry = t
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            }
            let Some(t) = entry.as_table_mut() else {
                return Err(ConfigError::Env {
                    name,
                    message: format!(
                        "[{}] is not a table in {origin}",
                        path[..path.len() - 1].join(".")
                    ),
                });
            };
            t.insert(key[key.len() - 1].to_string(), value);
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

    /// Checks every section's values before anything starts; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.lake.validate()?;
        self.elasticsearch.validate()?;
        self.guests.validate()?;
        self.http.validate()?;
        self.validate.validate()?;
        self.enrich.validate()?;
        self.route.validate()?;
        self.aggregate.validate()?;
        self.alert.validate(self.aggregate.enabled)?;
        self.alert_rules()?;
        self.input.validate()
    }

    /// The alert stage's rules: `[[alert.rules]]` (or the defaults), and the rules the deprecated
    /// `route.change_alert_pct` / `route.spread_alert_bps` create. The error names the key.
    pub fn alert_rules(&self) -> Result<Vec<stockpipe_model::alert::AlertRule>, ConfigError> {
        self.alert
            .resolved_rules(self.route.change_alert_pct, self.route.spread_alert_bps)
    }

    /// How the input's messages are decoded (`[input]`, and `validate.naive_timestamp_offset_minutes`
    /// for the sample's shape).
    /// Reads `input.tokens` and checks the mapping; the error names the key.
    pub fn decode_options(&self) -> Result<stockpipe_model::json::DecodeOptions, ConfigError> {
        self.input
            .decode_options(self.validate.naive_timestamp_offset_minutes)
    }

    /// The guests' per-call configuration, with the timestamp window fixed at `now_us`.
    pub fn stage_configs(&self, now_us: i64) -> crate::chain::StageConfigs {
        use stockpipe_model::enrich::EnrichConfig;
        use stockpipe_model::route::RouteConfig;
        use stockpipe_model::validate::ValidateConfig;
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
                // Route raises no alerts under 0.2.0: the alert stage does (see
                // `Config::alert_rules`, which reads the route keys as aliases).
                change_alert_pct: 0.0,
                spread_alert_bps: 0.0,
            },
        }
    }
}

/// A variable of Kubernetes' service links for a Service whose name starts with `stockpipe`
/// (`STOCKPIPE[_X]_SERVICE_HOST`, `…_SERVICE_PORT[_NAME]`, `…_PORT`,
/// `…_PORT_<n>_<TCP|UDP|SCTP>[_ADDR|_PORT|_PROTO]`): never a setting, and ignored.
pub fn is_service_link(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    if name.ends_with("_SERVICE_HOST") || name.ends_with("_SERVICE_PORT") || name.ends_with("_PORT")
    {
        return true;
    }
    if name.contains("_SERVICE_PORT_") {
        return true;
    }
    // …_PORT_<n>_<proto>[_ADDR|_PORT|_PROTO]
    let parts: Vec<&str> = name.split('_').collect();
    parts.windows(3).enumerate().any(|(i, w)| {
        let rest = &parts[i + 3..];
        w[0] == "PORT"
            && !w[1].is_empty()
            && w[1].bytes().all(|b| b.is_ascii_digit())
            && ["TCP", "UDP", "SCTP"].contains(&w[2])
            && (rest.is_empty()
                || (rest.len() == 1 && ["ADDR", "PORT", "PROTO"].contains(&rest[0])))
    })
}

/// Where `STOCKPIPE_<SECTION>_<KEY>` goes (section, then key; `[kafka.output]`'s keys as
/// `STOCKPIPE_KAFKA_OUTPUT_<KEY>`), and its value read as the key's type in `defaults`: a string
/// key takes the text as it is (a numeric group id stays a string), a number or a boolean must
/// parse as one.
fn override_of(
    name: &str,
    raw: &str,
    defaults: &toml::Table,
) -> Result<(Vec<String>, toml::Value), ConfigError> {
    let refuse = |message: String| ConfigError::Env {
        name: name.to_string(),
        message,
    };
    let lower = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    let Some(section) = SECTIONS
        .iter()
        .find(|s| lower.starts_with(&format!("{s}_")))
    else {
        return Err(refuse(format!(
            "no such section (sections: {})",
            SECTIONS.join(", ")
        )));
    };
    let mut key = lower[section.len() + 1..].to_string();
    let mut path = vec![section.to_string()];
    let mut section_defaults = defaults.get(*section).and_then(toml::Value::as_table);
    // The tables inside a section: `[kafka.output]`, `[elasticsearch.ilm]` (absent by default:
    // its keys' types from its own defaults).
    let ilm_defaults = toml::Table::try_from(crate::sink::elasticsearch::IlmSection::default())
        .expect("the defaults serialize");
    for (outer, inner) in [("kafka", "output"), ("elasticsearch", "ilm")] {
        if *section == outer
            && let Some(rest) = key.strip_prefix(&format!("{inner}_"))
        {
            path.push(inner.to_string());
            section_defaults = section_defaults
                .and_then(|t| t.get(inner))
                .and_then(toml::Value::as_table)
                .or((inner == "ilm").then_some(&ilm_defaults));
            key = rest.to_string();
            break;
        }
    }
    if key == "librdkafka" || key.starts_with("librdkafka_") {
        return Err(refuse(
            "librdkafka properties are set in the file only, in its [kafka.librdkafka] table"
                .into(),
        ));
    }
    let value = match section_defaults.and_then(|t| t.get(&key)) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_string()),
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| refuse(format!("{key}: {raw:?} is not an integer")))?,
        ),
        Some(toml::Value::Float(_)) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| refuse(format!("{key}: {raw:?} is not a number")))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| refuse(format!("{key}: {raw:?} is not true or false")))?,
        ),
        // A list: TOML's `["a", "b"]`, or the items separated by commas.
        Some(toml::Value::Array(_)) if !raw.trim_start().starts_with('[') => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        ),
        // A key without a default (optional) or an unknown one (refused by the section's parse,
        // naming it): read as TOML, else as text.
        _ => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
    };
    path.push(key);
    Ok((path, value))
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
    fn kubernetes_service_links_are_not_settings() {
        let links = [
            ("STOCKPIPE_SERVICE_HOST", "10.0.0.1"),
            ("STOCKPIPE_SERVICE_PORT", "8080"),
            ("STOCKPIPE_SERVICE_PORT_HTTP", "8080"),
            ("STOCKPIPE_PORT", "tcp://10.0.0.1:8080"),
            ("STOCKPIPE_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("STOCKPIPE_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("STOCKPIPE_PORT_8080_TCP_PORT", "8080"),
            ("STOCKPIPE_PORT_8080_TCP_PROTO", "tcp"),
            ("STOCKPIPE_KAFKA_SERVICE_HOST", "10.0.0.2"),
            ("STOCKPIPE_KAFKA_PORT_9092_TCP", "tcp://10.0.0.2:9092"),
            ("STOCKPIPE_METRICS_PORT_9100_UDP_ADDR", "10.0.0.3"),
        ];
        assert_eq!(
            Config::load_with_env(None, env(&links)).unwrap(),
            Config::default()
        );
        for (name, _) in links {
            assert!(is_service_link(name), "{name}");
        }
        for setting in [
            "STOCKPIPE_KAFKA_BROKERS",
            "STOCKPIPE_HTTP_LISTEN",
            "STOCKPIPE_PORTS",
        ] {
            assert!(!is_service_link(setting), "{setting}");
        }
    }

    #[test]
    fn an_override_is_read_as_its_keys_type() {
        let config = Config::load_with_env(
            None,
            env(&[
                ("STOCKPIPE_KAFKA_GROUP_ID", "12345"),
                ("STOCKPIPE_KAFKA_SASL_USERNAME", "true"),
                ("STOCKPIPE_KAFKA_BATCH_MAX", "250"),
                ("STOCKPIPE_KAFKA_CREATE_TOPICS", "true"),
                ("STOCKPIPE_ROUTE_CHANGE_ALERT_PCT", "3"),
                ("STOCKPIPE_KAFKA_OUTPUT_BROKERS", "out:9092"),
                ("STOCKPIPE_KAFKA_SASL_PASSWORD", "a secret, not a setting"),
                (
                    "STOCKPIPE_KAFKA_OUTPUT_SSL_KEY_PASSWORD_FILE",
                    "/run/secrets/k",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(config.kafka.group_id, "12345");
        assert_eq!(config.kafka.sasl_username, "true");
        assert_eq!(config.kafka.batch_max, 250);
        assert!(config.kafka.create_topics);
        assert_eq!(config.route.change_alert_pct, Some(3.0));
        assert_eq!(config.kafka.output.brokers, "out:9092");
        let e = Config::load_with_env(None, env(&[("STOCKPIPE_KAFKA_CREATE_TOPICS", "yes")]))
            .unwrap_err();
        assert!(
            e.to_string().contains("STOCKPIPE_KAFKA_CREATE_TOPICS"),
            "{e}"
        );
        let e = Config::load_with_env(
            None,
            env(&[("STOCKPIPE_KAFKA_LIBRDKAFKA_FETCH_MIN_BYTES", "1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[kafka.librdkafka]"), "{e}");
    }

    #[test]
    fn elasticsearch_for_production_from_the_environment() {
        use crate::sink::elasticsearch::{EsMode, IlmSection};
        let config = Config::load_with_env(
            None,
            env(&[
                (
                    "STOCKPIPE_ELASTICSEARCH_URLS",
                    "https://es-1:9200, https://es-2:9200",
                ),
                ("STOCKPIPE_ELASTICSEARCH_MODE", "data_stream"),
                ("STOCKPIPE_ELASTICSEARCH_NUMBER_OF_REPLICAS", "0"),
                ("STOCKPIPE_ELASTICSEARCH_ILM_DELETE_AFTER_DAYS", "30"),
                ("STOCKPIPE_ELASTICSEARCH_ILM_POLICY", "2024"),
            ]),
        )
        .unwrap();
        let es = &config.elasticsearch;
        assert_eq!(es.urls, ["https://es-1:9200", "https://es-2:9200"]);
        assert_eq!(es.mode, EsMode::DataStream);
        assert_eq!(es.number_of_replicas, 0);
        // One key written makes the table: the others keep their defaults.
        assert_eq!(
            es.ilm,
            Some(IlmSection {
                delete_after_days: 30,
                policy: "2024".into(),
                ..IlmSection::default()
            })
        );
        config.validate().unwrap();
        // The defaults are a production cluster's: one replica, plain indices, no lifecycle.
        let defaults = Config::default().elasticsearch;
        assert_eq!(
            (defaults.number_of_replicas, defaults.mode, defaults.ilm),
            (1, EsMode::Index, None)
        );
    }

    #[test]
    fn a_broken_elasticsearch_section_fails_naming_the_key() {
        let cases = [
            ("[elasticsearch]\nmode = \"tsds\"", "mode"),
            (
                "[elasticsearch]\nurl = \"http://a:9200\"\ncloud_id = \"x:eA==\"",
                "elasticsearch.url",
            ),
            (
                "[elasticsearch]\ncloud_id = \"no-colon\"",
                "elasticsearch.cloud_id",
            ),
            (
                "[elasticsearch]\nmode = \"data_stream\"\ndated_indices = true",
                "elasticsearch.dated_indices",
            ),
            (
                "[elasticsearch.ilm]\ndelete_after_days = 7",
                "elasticsearch.ilm.delete_after_days",
            ),
            (
                "[elasticsearch.ilm]\nrollover_max_age = \"one day\"",
                "elasticsearch.ilm.rollover_max_age",
            ),
            (
                "[elasticsearch]\nfault_give_up_ms = 10",
                "elasticsearch.fault_give_up_ms",
            ),
            (
                "[elasticsearch]\nurls = [\"es:9200\"]",
                "elasticsearch.urls",
            ),
            (
                "[elasticsearch]\nurl = \"https://elastic:s3cret@es:9200\"",
                "STOCKPIPE_ES_USERNAME",
            ),
            (
                "[elasticsearch]\nurls = [\"https://es-1:9200\", \"https://k:s3cret@es-2:9200\"]",
                "elasticsearch.urls",
            ),
        ];
        for (text, key) in cases {
            let said = match Config::parse(text, "t.toml") {
                Err(e) => e.to_string(),
                Ok(config) => config.validate().unwrap_err().to_string(),
            };
            assert!(said.contains(key), "{text}: {said}");
            assert!(!said.contains("s3cret"), "a secret printed: {said}");
        }
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
            (
                "[kafka]\nassignment_strategy = \"sticky\"",
                "kafka.assignment_strategy",
            ),
            ("[kafka]\nrevoke_timeout_ms = 0", "kafka.revoke_timeout_ms"),
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
            (
                "[validate]\nmin_timestamp = \"2000-01-01T00:00:00\"",
                "validate.min_timestamp",
            ),
            ("[input]\ntimestamp_unit = \"sec\"", "input.timestamp_unit"),
            (
                "[input]\nkite_utc_offset_minutes = 1440",
                "input.kite_utc_offset_minutes",
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
