//! One TOML file with every setting; command-line flags override it. Unknown keys are errors that
//! name the key (`deny_unknown_fields`), and [`Config::validate`] checks values before anything
//! starts, naming the offending key. Secrets never live here.

pub mod error;

pub use error::ConfigError;

use crate::chain::aggregate::AggregateSection;
use crate::chain::swap::GuestsSection;
use crate::chain::{EnrichSection, RouteSection, ValidateSection};
use crate::http::HttpSection;
use crate::sink::elasticsearch::ElasticsearchSection;
use crate::sink::lake::LakeSection;
use crate::source::kafka::KafkaConfig;
use serde::Deserialize;
use std::path::Path;

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
    pub aggregate: AggregateSection,
}

/// Environment variables that override settings start with this.
pub const ENV_PREFIX: &str = "STOCKPIPE_";
/// `json` or `text`: the log format (default: JSON unless stderr is a terminal).
pub const LOG_FORMAT_ENV: &str = "STOCKPIPE_LOG_FORMAT";
/// The sections of the file, as `STOCKPIPE_<SECTION>_<KEY>` spells them (lowercased).
const SECTIONS: [&str; 9] = [
    "kafka",
    "lake",
    "elasticsearch",
    "guests",
    "http",
    "validate",
    "enrich",
    "route",
    "aggregate",
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
        let not_settings = {
            use crate::sink::elasticsearch::env;
            [
                env::API_KEY,
                env::USERNAME,
                env::PASSWORD,
                LOG_FORMAT_ENV,
                crate::http::ADMIN_TOKEN_ENV,
            ]
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
        self.aggregate.validate()
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
