//! `stockpipe check`: each dependency the configuration names, tried the way the pipeline will
//! use it — Kafka (the brokers and credentials, the input topic and its partitions, the output
//! topics, the group coordinator), Elasticsearch (reachable, its version, the rights to put
//! templates and to write), the lake (a probe object written and deleted) — one line each, `ok`
//! or the whole cause chain.

use crate::config::Config;
use crate::source::kafka::{self, Connection, client as probe_client};
use crate::source::topics::partitions;
use serde::Serialize;
use std::time::Duration;

/// One dependency's answer.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or why it failed (the whole cause chain).
    pub detail: String,
}

fn check(name: &'static str, outcome: anyhow::Result<String>) -> Check {
    match outcome {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: format!("{e:#}"),
        },
    }
}

/// Every check of `config` (`brokers`: the cluster to use), in order.
pub async fn run(config: &Config, brokers: &str, timeout: Duration) -> Vec<Check> {
    let env = |name: &str| std::env::var(name).ok();
    let mut checks = Vec::new();
    let clusters = config
        .kafka
        .input_connection(brokers, env)
        .and_then(|input| {
            let output = config.kafka.output_connection(&input, env)?;
            Ok((input, output))
        });
    match clusters {
        Ok((input, output)) => {
            checks.push(check("kafka", kafka_input(&input, config, timeout)));
            checks.push(check(
                "kafka.output",
                kafka_output(&output, config, timeout),
            ));
            checks.push(check("kafka.group", kafka_group(&input, config, timeout)));
        }
        Err(e) => checks.push(check("kafka", Err(e.into()))),
    }
    if config.elasticsearch.enabled() {
        checks.push(check("elasticsearch", elasticsearch(config).await));
    }
    checks.push(check("lake", lake(config).await));
    checks
}

fn kafka_input(input: &Connection, config: &Config, timeout: Duration) -> anyhow::Result<String> {
    let (client, probe) = probe_client(input, None)?;
    let topic = &config.kafka.topic;
    let found = tokio::task::block_in_place(|| partitions(&client, &probe, topic, timeout))?;
    let brokers = tokio::task::block_in_place(|| {
        rdkafka::consumer::Consumer::fetch_metadata(&client, None, timeout)
    })
    .map_or(0, |m| m.brokers().len());
    match found {
        Some(n) => Ok(format!(
            "{} answers ({brokers} brokers); {topic} has {n} partitions",
            input.describe()
        )),
        None => anyhow::bail!(
            "{} answers, but the input topic {topic} does not exist",
            input.describe()
        ),
    }
}

fn kafka_output(output: &Connection, config: &Config, timeout: Duration) -> anyhow::Result<String> {
    let (client, probe) = probe_client(output, None)?;
    let k = &config.kafka;
    let mut missing = Vec::new();
    for topic in [&k.dead_letter_topic, &k.alerts_topic] {
        if tokio::task::block_in_place(|| partitions(&client, &probe, topic, timeout))?.is_none() {
            missing.push(topic.as_str());
        }
    }
    match (missing.is_empty(), k.create_topics) {
        (true, _) => Ok(format!(
            "{} and {} exist on {}",
            k.dead_letter_topic,
            k.alerts_topic,
            output.describe()
        )),
        (false, true) => Ok(format!(
            "{} will be created at start-up (kafka.create_topics)",
            missing.join(", ")
        )),
        (false, false) => anyhow::bail!(
            "missing on {}: {} (create them, or set kafka.create_topics = true)",
            output.describe(),
            missing.join(", ")
        ),
    }
}

/// The group coordinator answers, and this principal may read the group's offsets.
fn kafka_group(input: &Connection, config: &Config, timeout: Duration) -> anyhow::Result<String> {
    let k = &config.kafka;
    let (client, probe) = probe_client(input, Some(&k.group_id))?;
    let committed = tokio::task::block_in_place(|| {
        let ends =
            kafka::high_watermarks(&client, &k.topic, timeout).map_err(|e| match probe.seen() {
                seen if seen.is_empty() => e,
                seen => e.context(format!("the client saw: {seen}")),
            })?;
        let partitions = ends.keys().copied();
        let mut list = rdkafka::TopicPartitionList::new();
        for p in partitions {
            list.add_partition(&k.topic, p.0);
        }
        rdkafka::consumer::Consumer::committed_offsets(&client, list, timeout)
            .map_err(|e| probe.explain_after(&client, e))
    })?;
    Ok(format!(
        "group {}'s coordinator answers; {} of {} partitions committed",
        k.group_id,
        committed
            .elements()
            .iter()
            .filter(|e| matches!(e.offset(), rdkafka::Offset::Offset(_)))
            .count(),
        committed.count()
    ))
}

async fn elasticsearch(config: &Config) -> anyhow::Result<String> {
    use elasticsearch::http::Method;
    use elasticsearch::http::headers::HeaderMap;
    let settings = config
        .elasticsearch
        .settings(|name| std::env::var(name).ok())?;
    let client = crate::sink::elasticsearch::client(&settings)?;
    let root = client
        .send(
            Method::Get,
            "/",
            HeaderMap::new(),
            None::<&()>,
            None::<&[u8]>,
            None,
        )
        .await?;
    let status = root.status_code();
    anyhow::ensure!(status.is_success(), "GET / answered {status}");
    let info: serde_json::Value = root.json().await?;
    let version = info["version"]["number"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let question = crate::sink::elasticsearch::privileges(&settings.templates, true);
    let body = serde_json::to_vec(&question)?;
    let asked = client
        .send(
            Method::Post,
            "/_security/user/_has_privileges",
            HeaderMap::new(),
            None::<&()>,
            Some(body.as_slice()),
            None,
        )
        .await?;
    let answer: serde_json::Value = asked.json().await.unwrap_or_default();
    let rights = match answer["has_all_requested"].as_bool() {
        Some(true) => "every right the pipeline uses".to_string(),
        Some(false) => {
            let lacking = lacking(&answer);
            if config.elasticsearch.put_templates || lacking.iter().any(|l| !l.contains("manage")) {
                anyhow::bail!(
                    "Elasticsearch {version} answers, but this user lacks: {}",
                    lacking.join(", ")
                );
            }
            format!(
                "ingest rights only (lacks {}; put_templates = false)",
                lacking.join(", ")
            )
        }
        None => "security is off (no rights to check)".to_string(),
    };
    Ok(format!(
        "Elasticsearch {version} at {} ({} mode); {rights}",
        settings.nodes.describe(),
        settings.templates.mode.as_str()
    ))
}

/// The privileges a `_has_privileges` answer says are missing.
fn lacking(answer: &serde_json::Value) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(cluster) = answer["cluster"].as_object() {
        missing.extend(
            cluster
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(false))
                .map(|(k, _)| k.clone()),
        );
    }
    if let Some(indices) = answer["index"].as_object() {
        for (index, privileges) in indices {
            for (p, v) in privileges.as_object().into_iter().flatten() {
                if v.as_bool() == Some(false) {
                    missing.push(format!("{p} on {index}"));
                }
            }
        }
    }
    missing
}

async fn lake(config: &Config) -> anyhow::Result<String> {
    let location = config.lake.location()?;
    let store = crate::sink::store::LakeStore::open(&location, config.lake.gcs_options()).await?;
    let name = format!(
        "_check/probe-{}-{:016x}",
        std::process::id(),
        crate::random_u64()
    );
    store.put(&name, b"stockpipe check\n".to_vec()).await?;
    store.delete(&name).await?;
    Ok(format!("{location}: a probe object written and deleted"))
}

#[cfg(test)]
mod tests {
    use super::lacking;

    #[test]
    fn the_missing_privileges_are_named() {
        let answer = serde_json::json!({
            "has_all_requested": false,
            "cluster": {"monitor": true, "manage_index_templates": false, "manage_ilm": false},
            "index": {"stock-*": {"create_doc": true, "index": false, "create_index": true}}
        });
        assert_eq!(
            lacking(&answer),
            vec!["manage_index_templates", "manage_ilm", "index on stock-*"]
        );
    }
}
