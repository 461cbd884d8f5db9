//! The `[kafka]` section, and how every Kafka client of the binary connects: a [`Connection`]
//! per cluster — the input's, and the output's (the alert and dead-letter topics: the input's
//! unless `[kafka.output]` names brokers of its own, and then nothing is inherited).
//!
//! Security is typed keys (`security_protocol`, `sasl_mechanism`, `sasl_username`, the TLS files,
//! `ssl_endpoint_identification`); secrets come only from the environment or a file the
//! environment names ([`secret_env`]) — never from the TOML, and a [`Connection`] prints them as
//! `<redacted>`. `[kafka.librdkafka]` passes other librdkafka properties as they are, refusing at
//! start-up the ones a typed key, a secret or the delivery protocol owns.

use super::secrets::Secrets;
pub use super::secrets::{secret_env, secret_env_names};
use crate::config::error::{ConfigError, invalid};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// How partitions are shared among the group's members (`partition.assignment.strategy`):
    /// `cooperative-sticky` (default: a rebalance revokes only the partitions that move), or the
    /// eager `range` / `roundrobin` (every member lets go of everything at each rebalance). All
    /// members of a group must use the same kind.
    pub assignment_strategy: String,
    /// How long a host may hold partitions the group revoked while it stores and commits what it
    /// holds for them, in milliseconds; past it they are let go of and that work is delivered again
    /// to their next owner. At most half of `max_poll_interval_ms` and half of `session_timeout_ms`
    /// is used: Kafka waits up to the poll interval for the member to rejoin, some brokers
    /// (librdkafka's mock cluster) only about the session timeout.
    pub revoke_timeout_ms: u64,
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (`security.protocol`).
    pub security_protocol: String,
    /// With SASL: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`. The password comes
    /// from `STOCKPIPE_KAFKA_SASL_PASSWORD` (or the file `STOCKPIPE_KAFKA_SASL_PASSWORD_FILE`).
    pub sasl_mechanism: String,
    pub sasl_username: String,
    /// PEM file of the CAs that sign the brokers' certificates (empty: the system's).
    pub ssl_ca_file: String,
    /// mTLS: this client's certificate and key (PEM); a key's passphrase comes from
    /// `STOCKPIPE_KAFKA_SSL_KEY_PASSWORD[_FILE]`.
    pub ssl_certificate_file: String,
    pub ssl_key_file: String,
    /// Check that a broker's certificate names the host dialled (`https`); false only for a
    /// test cluster whose certificates do not.
    pub ssl_endpoint_identification: bool,
    /// Producers' codec: `none` (default), `gzip`, `snappy`, `lz4`, `zstd`. Consumers read
    /// every codec whatever this says.
    pub compression: String,
    /// Where a partition the group never committed starts: `earliest` (default), `latest`, or
    /// `error` (the start stops, naming the partition).
    pub auto_offset_reset: String,
    /// A consumer error that repeats for this long without a message or a broker coming back
    /// stops the run (milliseconds). Errors that waiting cannot heal (an unsupported codec, an
    /// authentication or authorization failure, an unknown topic) stop it at once.
    pub error_give_up_ms: u64,
    /// Create the alert and dead-letter topics (and the input topic) when they do not exist;
    /// false: a missing one is a start-up error naming it.
    pub create_topics: bool,
    /// Partitions and replication factor of a topic `create_topics` creates (-1: the broker's
    /// default replication).
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    /// Other librdkafka properties, passed as they are to every client of the input cluster
    /// (file only). Keys are librdkafka's names, quoted: `"fetch.min.bytes" = "1024"`.
    pub librdkafka: BTreeMap<String, toml::Value>,
    /// The cluster of the alert and dead-letter topics, when it is not the input's.
    pub output: KafkaOutput,
}

/// `[kafka.output]`: the alert and dead-letter topics' own cluster. Unset `brokers` = the input's
/// cluster and everything about it; set = nothing inherited (credentials above all).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOutput {
    pub brokers: String,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub ssl_ca_file: String,
    pub ssl_certificate_file: String,
    pub ssl_key_file: String,
    pub ssl_endpoint_identification: bool,
    pub librdkafka: BTreeMap<String, toml::Value>,
}

impl Default for KafkaOutput {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            security_protocol: "PLAINTEXT".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            ssl_ca_file: String::new(),
            ssl_certificate_file: String::new(),
            ssl_key_file: String::new(),
            ssl_endpoint_identification: true,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// How long the group waits for a silent member (`session.timeout.ms`) and for a member that
/// stopped polling (`max.poll.interval.ms`; also how long a rebalance may wait for a member that
/// died without leaving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTimeouts {
    pub session_ms: u64,
    pub max_poll_interval_ms: u64,
    /// Static membership (`group.instance.id`): a restarted member with the same id takes its
    /// place back at once instead of waiting for the old one to time out.
    pub instance_id: Option<String>,
    /// How often librdkafka reports lag and broker states (0 = never; `/ready` then never sees Kafka).
    pub statistics_interval_ms: u64,
    /// `fetch.wait.max.ms`: how long a fetch may wait for data before the broker answers.
    pub fetch_wait_max_ms: u64,
    /// `partition.assignment.strategy`.
    pub assignment_strategy: String,
}

/// The security keys of one cluster, from `[kafka]` or `[kafka.output]`.
#[derive(Debug, Clone, PartialEq)]
struct Security {
    /// `kafka` or `kafka.output`: where the keys are, for errors.
    section: &'static str,
    protocol: String,
    mechanism: String,
    username: String,
    ca_file: String,
    certificate_file: String,
    key_file: String,
    endpoint_identification: bool,
}

const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl Security {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.section)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let protocol = self.protocol.to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return invalid(
                self.key("security_protocol"),
                &format!("{:?} is not one of {}", self.protocol, PROTOCOLS.join(", ")),
            );
        }
        let sasl = protocol.starts_with("SASL_");
        let mechanism = self.mechanism.to_ascii_uppercase();
        if sasl && !MECHANISMS.contains(&mechanism.as_str()) {
            return invalid(
                self.key("sasl_mechanism"),
                &format!(
                    "{:?} is not one of {} (security_protocol {protocol} needs one)",
                    self.mechanism,
                    MECHANISMS.join(", ")
                ),
            );
        }
        if !sasl && (!self.mechanism.is_empty() || !self.username.is_empty()) {
            return invalid(
                self.key("sasl_mechanism"),
                &format!(
                    "SASL settings need security_protocol SASL_PLAINTEXT or SASL_SSL, not {protocol}"
                ),
            );
        }
        let tls_files = [
            ("ssl_ca_file", &self.ca_file),
            ("ssl_certificate_file", &self.certificate_file),
            ("ssl_key_file", &self.key_file),
        ];
        for (name, path) in tls_files {
            if path.is_empty() {
                continue;
            }
            if !protocol.ends_with("SSL") {
                return invalid(
                    self.key(name),
                    &format!("TLS files need security_protocol SSL or SASL_SSL, not {protocol}"),
                );
            }
            if let Err(e) = std::fs::metadata(path) {
                return invalid(self.key(name), &format!("{path}: {e}"));
            }
        }
        if self.certificate_file.is_empty() != self.key_file.is_empty() {
            return invalid(
                self.key("ssl_key_file"),
                "mTLS needs both ssl_certificate_file and ssl_key_file",
            );
        }
        Ok(())
    }

    /// The librdkafka properties of these keys and `secrets`.
    fn properties(&self, secrets: &Secrets) -> Vec<(&'static str, String)> {
        let mut p = vec![("security.protocol", self.protocol.to_ascii_lowercase())];
        let nonempty = |v: &String| (!v.is_empty()).then(|| v.clone());
        if self.protocol.to_ascii_uppercase().starts_with("SASL_") {
            p.push(("sasl.mechanism", self.mechanism.to_ascii_uppercase()));
            p.extend(nonempty(&self.username).map(|u| ("sasl.username", u)));
            p.extend(secrets.sasl_password.clone().map(|s| ("sasl.password", s)));
            p.extend(
                (secrets.oauth_client_secret.clone())
                    .map(|s| ("sasl.oauthbearer.client.secret", s)),
            );
        }
        if self.protocol.to_ascii_uppercase().ends_with("SSL") {
            p.extend(nonempty(&self.ca_file).map(|f| ("ssl.ca.location", f)));
            p.extend(nonempty(&self.certificate_file).map(|f| ("ssl.certificate.location", f)));
            p.extend(nonempty(&self.key_file).map(|f| ("ssl.key.location", f)));
            p.extend(
                secrets
                    .ssl_key_password
                    .clone()
                    .map(|s| ("ssl.key.password", s)),
            );
            let check = if self.endpoint_identification {
                "https"
            } else {
                "none"
            };
            p.push(("ssl.endpoint.identification.algorithm", check.into()));
        }
        p
    }
}

/// Properties `[kafka.librdkafka]` may not set, and who owns each.
fn owner(property: &str) -> Option<&'static str> {
    Some(match property {
        "sasl.password" => "a secret: set STOCKPIPE_KAFKA_SASL_PASSWORD (or …_FILE)",
        "ssl.key.password" => "a secret: set STOCKPIPE_KAFKA_SSL_KEY_PASSWORD (or …_FILE)",
        "ssl.key.pem" => "a secret: put the key in a file named by kafka.ssl_key_file",
        "sasl.oauthbearer.client.secret" => {
            "a secret: set STOCKPIPE_KAFKA_OAUTH_CLIENT_SECRET (or …_FILE)"
        }
        "group.id"
        | "enable.auto.commit"
        | "enable.auto.offset.store"
        | "enable.idempotence"
        | "bootstrap.servers"
        | "metadata.broker.list" => {
            "the delivery protocol (offsets are stored only after every sink acknowledged them)"
        }
        "security.protocol" => "kafka.security_protocol",
        "sasl.mechanism" | "sasl.mechanisms" => "kafka.sasl_mechanism",
        "sasl.username" => "kafka.sasl_username",
        "ssl.ca.location" => "kafka.ssl_ca_file",
        "ssl.certificate.location" => "kafka.ssl_certificate_file",
        "ssl.key.location" => "kafka.ssl_key_file",
        "ssl.endpoint.identification.algorithm" => "kafka.ssl_endpoint_identification",
        "compression.type" | "compression.codec" => "kafka.compression",
        "auto.offset.reset" => "kafka.auto_offset_reset",
        "session.timeout.ms" => "kafka.session_timeout_ms",
        "max.poll.interval.ms" => "kafka.max_poll_interval_ms",
        "statistics.interval.ms" => "kafka.statistics_interval_ms",
        "fetch.wait.max.ms" => "kafka.fetch_wait_max_ms",
        "group.instance.id" => "kafka.group_instance_id",
        "partition.assignment.strategy" => "kafka.assignment_strategy",
        _ => return None,
    })
}

/// A `[… .librdkafka]` table as librdkafka's strings; refuses a property another owns, and one
/// librdkafka itself refuses (an unknown name, a bad value), naming both.
fn passthrough(
    section: &'static str,
    table: &BTreeMap<String, toml::Value>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let key = format!("{section}.librdkafka");
    let mut properties = Vec::with_capacity(table.len());
    for (name, value) in table {
        if let Some(owner) = owner(name) {
            return invalid(
                key,
                &format!("{name:?} may not be set here: it is owned by {owner}"),
            );
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return invalid(
                    key,
                    &format!("{name:?}: a {} is not a librdkafka value", other.type_str()),
                );
            }
        };
        let mut probe = ClientConfig::new();
        probe.set(name, &value);
        if let Err(e) = probe.create_native_config() {
            return invalid(
                key,
                &format!("{name:?} = {value:?}: librdkafka refuses it: {e}"),
            );
        }
        properties.push((name.clone(), value));
    }
    Ok(properties)
}

/// How every client of one cluster connects: its brokers, security and passed-through
/// properties. Debug-printing it shows no secret: the secrets are `<redacted>`, and so is a
/// passed-through value whose name says it is one (`ssl.keystore.password`, …).
#[derive(Clone, PartialEq)]
pub struct Connection {
    pub brokers: String,
    security: Option<(Security, Secrets)>,
    properties: Vec<(String, String)>,
    compression: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |name: &str| {
            ["password", "secret", "pem", "token"]
                .iter()
                .any(|w| name.contains(w))
        };
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str(),
                    if secret(n) { "<redacted>" } else { v.as_str() },
                )
            })
            .collect();
        f.debug_struct("Connection")
            .field("brokers", &self.brokers)
            .field("security", &self.security)
            .field("properties", &properties)
            .field("compression", &self.compression)
            .finish()
    }
}

impl Connection {
    /// A plaintext cluster without settings of its own (the embedded cluster, tests, benches).
    pub fn plaintext(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_string(),
            security: None,
            properties: Vec::new(),
            compression: "none".into(),
        }
    }

    /// The settings every client of this cluster starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        if let Some((security, secrets)) = &self.security {
            for (name, value) in security.properties(secrets) {
                config.set(name, value);
            }
        }
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }

    /// [`Connection::client_config`] for a producer: with `kafka.compression`.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config.set("compression.codec", &self.compression);
        config
    }

    /// The brokers and how they are reached, for messages (no secret).
    pub fn describe(&self) -> String {
        match &self.security {
            Some((s, _)) => format!("{} ({})", self.brokers, s.protocol.to_ascii_uppercase()),
            None => self.brokers.clone(),
        }
    }
}

impl KafkaConfig {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_topics()?;
        let k = self;
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
        if !["cooperative-sticky", "range", "roundrobin"].contains(&k.assignment_strategy.as_str())
        {
            return invalid(
                "kafka.assignment_strategy",
                &format!(
                    "{:?} is not one of cooperative-sticky, range, roundrobin",
                    k.assignment_strategy
                ),
            );
        }
        if k.revoke_timeout_ms == 0 {
            return invalid("kafka.revoke_timeout_ms", "must be above 0");
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return invalid("kafka.embedded_partitions", "must be between 1 and 1024");
        }
        self.validate_delivery()?;
        self.validate_connections()
    }

    fn validate_topics(&self) -> Result<(), ConfigError> {
        let k = self;
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
        Ok(())
    }

    fn validate_delivery(&self) -> Result<(), ConfigError> {
        const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.compression.as_str()) {
            return invalid(
                "kafka.compression",
                &format!("{:?} is not one of {}", self.compression, CODECS.join(", ")),
            );
        }
        const RESETS: [&str; 3] = ["earliest", "latest", "error"];
        if !RESETS.contains(&self.auto_offset_reset.as_str()) {
            return invalid(
                "kafka.auto_offset_reset",
                &format!(
                    "{:?} is not one of {}",
                    self.auto_offset_reset,
                    RESETS.join(", ")
                ),
            );
        }
        if self.error_give_up_ms < 1000 {
            return invalid("kafka.error_give_up_ms", "must be at least 1000");
        }
        if self.topic_partitions < 1 {
            return invalid("kafka.topic_partitions", "must be at least 1");
        }
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            return invalid(
                "kafka.topic_replication_factor",
                "must be at least 1, or -1 for the broker's default",
            );
        }
        Ok(())
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
        let input = self.security();
        input.validate()?;
        if self.brokers.is_empty() && !input.protocol.eq_ignore_ascii_case("PLAINTEXT") {
            return invalid(
                "kafka.security_protocol",
                "the embedded cluster (kafka.brokers empty) speaks PLAINTEXT only",
            );
        }
        passthrough("kafka", &self.librdkafka)?;
        let o = &self.output;
        if o.brokers.is_empty() {
            if *o != KafkaOutput::default() {
                return invalid(
                    "kafka.output.brokers",
                    "[kafka.output] has settings but no brokers: without brokers the output is the input's cluster, with all of its settings",
                );
            }
            return Ok(());
        }
        self.output_security().validate()?;
        passthrough("kafka.output", &o.librdkafka).map(drop)
    }

    fn security(&self) -> Security {
        Security {
            section: "kafka",
            protocol: self.security_protocol.clone(),
            mechanism: self.sasl_mechanism.clone(),
            username: self.sasl_username.clone(),
            ca_file: self.ssl_ca_file.clone(),
            certificate_file: self.ssl_certificate_file.clone(),
            key_file: self.ssl_key_file.clone(),
            endpoint_identification: self.ssl_endpoint_identification,
        }
    }

    fn output_security(&self) -> Security {
        let o = &self.output;
        Security {
            section: "kafka.output",
            protocol: o.security_protocol.clone(),
            mechanism: o.sasl_mechanism.clone(),
            username: o.sasl_username.clone(),
            ca_file: o.ssl_ca_file.clone(),
            certificate_file: o.ssl_certificate_file.clone(),
            key_file: o.ssl_key_file.clone(),
            endpoint_identification: o.ssl_endpoint_identification,
        }
    }

    /// The input cluster's connection, at `brokers` (the configured ones, or the embedded
    /// cluster's), with the secrets `env` holds.
    pub fn input_connection(
        &self,
        brokers: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Connection, ConfigError> {
        Ok(Connection {
            brokers: brokers.to_string(),
            security: Some((self.security(), Secrets::from_env(false, &env)?)),
            properties: passthrough("kafka", &self.librdkafka)?,
            compression: self.compression.clone(),
        })
    }

    /// The output cluster's connection: the input's (`input`) unless `[kafka.output]` names
    /// brokers.
    pub fn output_connection(
        &self,
        input: &Connection,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Connection, ConfigError> {
        if self.output.brokers.is_empty() {
            return Ok(input.clone());
        }
        Ok(Connection {
            brokers: self.output.brokers.clone(),
            security: Some((self.output_security(), Secrets::from_env(true, &env)?)),
            properties: passthrough("kafka.output", &self.output.librdkafka)?,
            compression: self.compression.clone(),
        })
    }

    /// How long revoked partitions are held for their work to be stored: `revoke_timeout_ms`, at
    /// most half of `max_poll_interval_ms` and of `session_timeout_ms`.
    pub fn revoke_timeout(&self) -> Duration {
        Duration::from_millis(
            self.revoke_timeout_ms
                .min(self.max_poll_interval_ms / 2)
                .min(self.session_timeout_ms / 2),
        )
    }

    pub fn group_timeouts(&self) -> GroupTimeouts {
        GroupTimeouts {
            session_ms: self.session_timeout_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
            instance_id: (!self.group_instance_id.is_empty())
                .then(|| self.group_instance_id.clone()),
            statistics_interval_ms: self.statistics_interval_ms,
            fetch_wait_max_ms: self.fetch_wait_max_ms,
            assignment_strategy: self.assignment_strategy.clone(),
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
            assignment_strategy: "cooperative-sticky".into(),
            revoke_timeout_ms: 10_000,
            security_protocol: "PLAINTEXT".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            ssl_ca_file: String::new(),
            ssl_certificate_file: String::new(),
            ssl_key_file: String::new(),
            ssl_endpoint_identification: true,
            compression: "none".into(),
            auto_offset_reset: "earliest".into(),
            error_give_up_ms: 60_000,
            create_topics: false,
            topic_partitions: 3,
            topic_replication_factor: -1,
            librdkafka: BTreeMap::new(),
            output: KafkaOutput::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .collect();
        move |name| {
            owned
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn property(c: &ClientConfig, name: &str) -> Option<String> {
        c.get(name).map(str::to_string)
    }

    fn sasl_ssl() -> KafkaConfig {
        KafkaConfig {
            brokers: "broker:9093".into(),
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "alice".into(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn the_security_keys_and_the_secret_reach_librdkafka() {
        let k = sasl_ssl();
        k.validate().unwrap();
        let c = k
            .input_connection(
                "broker:9093",
                env(&[("STOCKPIPE_KAFKA_SASL_PASSWORD", "s3cret")]),
            )
            .unwrap();
        let config = c.client_config();
        assert_eq!(
            property(&config, "security.protocol").as_deref(),
            Some("sasl_ssl")
        );
        assert_eq!(
            property(&config, "sasl.mechanism").as_deref(),
            Some("SCRAM-SHA-512")
        );
        assert_eq!(property(&config, "sasl.username").as_deref(), Some("alice"));
        assert_eq!(
            property(&config, "sasl.password").as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            property(&config, "ssl.endpoint.identification.algorithm").as_deref(),
            Some("https")
        );
        // Whatever prints the connection prints no secret.
        let shown = format!("{c:?} {}", c.describe());
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn a_secret_can_come_from_a_file_and_not_from_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.display().to_string();
        let c = sasl_ssl()
            .input_connection("b:1", env(&[("STOCKPIPE_KAFKA_SASL_PASSWORD_FILE", &path)]))
            .unwrap();
        assert_eq!(
            property(&c.client_config(), "sasl.password").as_deref(),
            Some("from-file")
        );
        let both = env(&[
            ("STOCKPIPE_KAFKA_SASL_PASSWORD_FILE", &path),
            ("STOCKPIPE_KAFKA_SASL_PASSWORD", "x"),
        ]);
        let e = sasl_ssl().input_connection("b:1", both).unwrap_err();
        assert!(e.to_string().contains("set only one of"), "{e}");
        let missing = env(&[("STOCKPIPE_KAFKA_SASL_PASSWORD_FILE", "/nonexistent/pw")]);
        let e = sasl_ssl().input_connection("b:1", missing).unwrap_err();
        assert!(
            e.to_string().contains("STOCKPIPE_KAFKA_SASL_PASSWORD_FILE"),
            "{e}"
        );
    }

    #[test]
    fn a_property_another_key_owns_is_refused_naming_both() {
        for (property, owner) in [
            ("sasl.password", "STOCKPIPE_KAFKA_SASL_PASSWORD"),
            ("ssl.key.pem", "kafka.ssl_key_file"),
            ("group.id", "delivery protocol"),
            ("enable.auto.offset.store", "delivery protocol"),
            ("security.protocol", "kafka.security_protocol"),
            ("compression.type", "kafka.compression"),
        ] {
            let k = KafkaConfig {
                librdkafka: [(property.to_string(), toml::Value::from("x"))].into(),
                ..KafkaConfig::default()
            };
            let e = k.validate().unwrap_err().to_string();
            assert!(e.contains(property) && e.contains(owner), "{property}: {e}");
        }
    }

    #[test]
    fn librdkafka_names_what_it_refuses() {
        let k = KafkaConfig {
            librdkafka: [("fetch.min.bytez".to_string(), toml::Value::from(1))].into(),
            ..KafkaConfig::default()
        };
        let e = k.validate().unwrap_err().to_string();
        assert!(
            e.contains("fetch.min.bytez") && e.contains("librdkafka"),
            "{e}"
        );
        let ok = KafkaConfig {
            librdkafka: [
                ("fetch.min.bytes".to_string(), toml::Value::from(1024)),
                ("client.rack".to_string(), toml::Value::from("eu-1a")),
            ]
            .into(),
            ..KafkaConfig::default()
        };
        ok.validate().unwrap();
        let c = ok
            .input_connection("b:1", env(&[]))
            .unwrap()
            .client_config();
        assert_eq!(property(&c, "fetch.min.bytes").as_deref(), Some("1024"));
        assert_eq!(property(&c, "client.rack").as_deref(), Some("eu-1a"));
        // A passed-through secret (a PKCS#12 keystore's password) reaches librdkafka, and no
        // printout of the connection.
        let keystore = KafkaConfig {
            librdkafka: [(
                "ssl.keystore.password".to_string(),
                toml::Value::from("k3y"),
            )]
            .into(),
            ..KafkaConfig::default()
        };
        let c = keystore.input_connection("b:1", env(&[])).unwrap();
        assert_eq!(
            property(&c.client_config(), "ssl.keystore.password").as_deref(),
            Some("k3y")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("k3y") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn the_output_is_the_input_unless_it_names_brokers_and_then_inherits_nothing() {
        let k = sasl_ssl();
        let secrets = env(&[("STOCKPIPE_KAFKA_SASL_PASSWORD", "in")]);
        let input = k.input_connection("broker:9093", &secrets).unwrap();
        assert_eq!(k.output_connection(&input, &secrets).unwrap(), input);
        let separate = KafkaConfig {
            output: KafkaOutput {
                brokers: "other:9092".into(),
                ..KafkaOutput::default()
            },
            ..sasl_ssl()
        };
        separate.validate().unwrap();
        let out = separate.output_connection(&input, &secrets).unwrap();
        let c = out.client_config();
        assert_eq!(
            property(&c, "bootstrap.servers").as_deref(),
            Some("other:9092")
        );
        assert_eq!(
            property(&c, "security.protocol").as_deref(),
            Some("plaintext")
        );
        assert_eq!(
            property(&c, "sasl.password"),
            None,
            "the input's password is not sent"
        );
        let half = KafkaConfig {
            output: KafkaOutput {
                sasl_username: "bob".into(),
                ..KafkaOutput::default()
            },
            ..KafkaConfig::default()
        };
        let e = half.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.output.brokers"), "{e}");
    }

    #[test]
    fn inconsistent_security_is_refused_naming_the_key() {
        let cases = [
            (
                KafkaConfig {
                    brokers: "b:1".into(),
                    security_protocol: "TLS".into(),
                    ..KafkaConfig::default()
                },
                "kafka.security_protocol",
            ),
            (
                KafkaConfig {
                    brokers: "b:1".into(),
                    security_protocol: "SASL_SSL".into(),
                    ..KafkaConfig::default()
                },
                "kafka.sasl_mechanism",
            ),
            (
                KafkaConfig {
                    brokers: "b:1".into(),
                    ssl_ca_file: "/etc/hostname".into(),
                    ..KafkaConfig::default()
                },
                "kafka.ssl_ca_file",
            ),
            (
                KafkaConfig {
                    brokers: "b:1".into(),
                    security_protocol: "SSL".into(),
                    ssl_ca_file: "/nonexistent/ca.pem".into(),
                    ..KafkaConfig::default()
                },
                "kafka.ssl_ca_file",
            ),
            (
                KafkaConfig {
                    security_protocol: "SSL".into(),
                    ..KafkaConfig::default()
                },
                "kafka.security_protocol",
            ),
            (
                KafkaConfig {
                    compression: "brotli".into(),
                    ..KafkaConfig::default()
                },
                "kafka.compression",
            ),
            (
                KafkaConfig {
                    auto_offset_reset: "smallest".into(),
                    ..KafkaConfig::default()
                },
                "kafka.auto_offset_reset",
            ),
        ];
        for (config, key) in cases {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
