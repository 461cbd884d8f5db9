//! What the sink puts in the cluster before writing: the index templates (one per family of
//! documents, from `data/elasticsearch/`) rendered for the deployment — shards, replicas, the
//! data-stream flag and `@timestamp`, the lifecycle policy — and the policy itself.
//!
//! The files hold the mappings only; everything a deployment chooses is added here, so the
//! templates put by a compose stack (0 replicas, plain indices) and by a production cluster
//! (replicas, data streams, rollover) differ only in what `[elasticsearch]` says.

use super::EsError;
use super::config::{EsMode, RetryPolicy, TemplateSettings};
use elasticsearch::Elasticsearch;
use elasticsearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use elasticsearch::http::{Method, StatusCode};
use serde_json::{Value, json};

/// One family of documents: its index (or data stream) name, the field holding its time (what
/// `@timestamp` copies in data-stream mode and a dated index is named by), and its template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub name: &'static str,
    pub time_field: &'static str,
    pub body: &'static str,
}

/// The index templates we own, put at start-up.
pub const TEMPLATES: [Template; 5] = [
    Template {
        name: "stock-stream",
        time_field: "timestamp",
        body: include_str!("../../../../data/elasticsearch/stock-stream.index-template.json"),
    },
    Template {
        name: "stock-forecast",
        time_field: "forecast_timestamp",
        body: include_str!("../../../../data/elasticsearch/stock-forecast.index-template.json"),
    },
    Template {
        name: "stock-bars",
        time_field: "bar_start",
        body: include_str!("../../../../data/elasticsearch/stock-bars.index-template.json"),
    },
    Template {
        name: "stock-alerts",
        time_field: "event_time",
        body: include_str!("../../../../data/elasticsearch/stock-alerts.index-template.json"),
    },
    Template {
        name: "stockpipe-metrics",
        time_field: "timestamp",
        body: include_str!("../../../../data/elasticsearch/stockpipe-metrics.index-template.json"),
    },
];

/// The lifecycle policy `settings` ask for, as `(name, body)`: rollover (and delete) for data
/// streams; delete only for dated indices; none when there is nothing for it to do.
pub fn lifecycle_policy(settings: &TemplateSettings) -> Option<(String, Value)> {
    let ilm = settings.ilm.as_ref()?;
    let mut phases = serde_json::Map::new();
    if settings.mode == EsMode::DataStream {
        phases.insert(
            "hot".into(),
            json!({"min_age": "0ms", "actions": {"rollover": {
                "max_age": ilm.rollover_max_age,
                "max_primary_shard_size": ilm.rollover_max_primary_shard_size,
            }}}),
        );
    }
    if ilm.delete_after_days > 0 {
        phases.insert(
            "delete".into(),
            json!({"min_age": format!("{}d", ilm.delete_after_days), "actions": {"delete": {}}}),
        );
    }
    if phases.is_empty() {
        return None;
    }
    let body = json!({"policy": {
        "_meta": {"description": "stockpipe: its indices' lifecycle", "managed_by": "stockpipe"},
        "phases": phases,
    }});
    Some((ilm.policy.clone(), body))
}

/// The privileges the pipeline uses, as a `_has_privileges` question (and a role's body would
/// list them): `monitor` (the version check); with `managing`, what putting the templates (and the
/// lifecycle policy) takes; on our indices, `create_doc` for data streams or `index` for plain
/// indices, and `create_index` (the first document of an index or a data stream creates it).
pub fn privileges(settings: &TemplateSettings, managing: bool) -> Value {
    let mut cluster = vec!["monitor"];
    if managing {
        cluster.push("manage_index_templates");
        if lifecycle_policy(settings).is_some() {
            cluster.push("manage_ilm");
        }
    }
    let write = match settings.mode {
        EsMode::Index => "index",
        EsMode::DataStream => "create_doc",
    };
    json!({
        "cluster": cluster,
        "index": [{"names": ["stock-*", "stockpipe-*"], "privileges": [write, "create_index"]}],
    })
}

/// `template` as it is put for `settings`.
pub fn render(template: &Template, settings: &TemplateSettings) -> Value {
    let mut body: Value = serde_json::from_str(template.body).expect("the templates are JSON");
    let dated = settings.dated_indices && settings.mode == EsMode::Index;
    if dated {
        // Only the dated names: ILM's `parse_origination_date` refuses any other.
        body["index_patterns"] = json!([format!("{}-*", template.name)]);
    }
    let index_settings = &mut body["template"]["settings"];
    index_settings["number_of_shards"] = json!(settings.number_of_shards);
    index_settings["number_of_replicas"] = json!(settings.number_of_replicas);
    if let Some((policy, _)) = lifecycle_policy(settings) {
        index_settings["index.lifecycle.name"] = json!(policy);
        if dated {
            index_settings["index.lifecycle.parse_origination_date"] = json!(true);
        }
    }
    if settings.mode == EsMode::DataStream {
        body["data_stream"] = json!({});
        let properties = &mut body["template"]["mappings"]["properties"];
        // `@timestamp` holds the same instant as the family's own time field, mapped alike.
        let time = properties[template.time_field].clone();
        assert!(
            time.is_object(),
            "{}: {} is mapped",
            template.name,
            template.time_field
        );
        properties["@timestamp"] = time;
    }
    body
}

/// Puts the lifecycle policy (when there is one) and our index templates. A refusal that
/// retrying cannot change (a 4xx but 429: a bad template, missing rights) is an error at once; a
/// cluster that does not answer, or answers 429/5xx, is asked again with backoff — up to
/// `attempts` times, or with `None` until it answers (the caller stops waiting by dropping the
/// future). `waiting` hears each failure, to say why the sink is not ready.
pub async fn put_templates(
    client: &Elasticsearch,
    settings: &TemplateSettings,
    retry: RetryPolicy,
    attempts: Option<u32>,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<(), EsError> {
    let put = Put {
        client,
        retry,
        attempts,
        waiting,
    };
    if let Some((name, policy)) = lifecycle_policy(settings) {
        put.json(&format!("/_ilm/policy/{name}"), &policy).await?;
        tracing::info!(policy = %name, "lifecycle policy in place");
    }
    for template in &TEMPLATES {
        let body = render(template, settings);
        put.json(&format!("/_index_template/{}", template.name), &body)
            .await?;
        tracing::info!(
            template = template.name,
            mode = settings.mode.as_str(),
            "index template in place"
        );
    }
    Ok(())
}

struct Put<'a> {
    client: &'a Elasticsearch,
    retry: RetryPolicy,
    attempts: Option<u32>,
    waiting: &'a (dyn Fn(&str) + Sync),
}

impl Put<'_> {
    async fn json(&self, path: &str, body: &Value) -> Result<(), EsError> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .send(
                    Method::Put,
                    path,
                    headers.clone(),
                    None::<&()>,
                    Some(bytes.clone()),
                    None,
                )
                .await;
            let last = self.attempts.is_some_and(|most| attempt + 1 >= most);
            match sent {
                Ok(r) if r.status_code().is_success() => return Ok(()),
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
                        Err(e) => format!("PUT {path}: {}", super::cause_chain(&e)),
                    };
                    let delay = self.retry.delay(attempt);
                    tracing::warn!(%why, attempt, retry_in_ms = delay.as_millis() as u64, "Elasticsearch is not ready; waiting for it");
                    (self.waiting)(&why);
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
    }
}

pub(super) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::elasticsearch::config::IlmSection;

    fn settings(mode: EsMode, dated: bool, ilm: Option<IlmSection>) -> TemplateSettings {
        TemplateSettings {
            mode,
            dated_indices: dated,
            number_of_shards: 2,
            number_of_replicas: 1,
            ilm,
        }
    }

    #[test]
    fn every_template_is_put_with_the_deployment_s_shards_and_replicas() {
        for template in &TEMPLATES {
            let body = render(template, &settings(EsMode::Index, false, None));
            let s = &body["template"]["settings"];
            assert_eq!(
                (
                    s["number_of_shards"].clone(),
                    s["number_of_replicas"].clone()
                ),
                (json!(2), json!(1))
            );
            assert!(body.get("data_stream").is_none());
            assert_eq!(
                body["index_patterns"],
                json!([format!("{}*", template.name)])
            );
            assert!(s.get("index.lifecycle.name").is_none());
        }
    }

    #[test]
    fn a_data_stream_template_maps_timestamp_like_the_family_s_time_and_names_the_policy() {
        let ilm = IlmSection::default();
        for template in &TEMPLATES {
            let body = render(
                template,
                &settings(EsMode::DataStream, false, Some(ilm.clone())),
            );
            assert_eq!(body["data_stream"], json!({}));
            let properties = &body["template"]["mappings"]["properties"];
            assert_eq!(properties["@timestamp"], properties[template.time_field]);
            assert!(
                properties["@timestamp"]["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("date")
            );
            assert_eq!(
                body["template"]["settings"]["index.lifecycle.name"],
                "stockpipe"
            );
        }
        let (name, policy) =
            lifecycle_policy(&settings(EsMode::DataStream, false, Some(ilm))).unwrap();
        assert_eq!(name, "stockpipe");
        assert_eq!(
            policy["policy"]["phases"],
            json!({"hot": {"min_age": "0ms", "actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}}})
        );
    }

    #[test]
    fn dated_indices_are_deleted_by_the_day_in_their_name_and_nothing_else_is() {
        let ilm = IlmSection {
            delete_after_days: 30,
            ..IlmSection::default()
        };
        let dated = settings(EsMode::Index, true, Some(ilm.clone()));
        let (_, policy) = lifecycle_policy(&dated).unwrap();
        assert_eq!(
            policy["policy"]["phases"],
            json!({"delete": {"min_age": "30d", "actions": {"delete": {}}}}),
            "index mode: no rollover"
        );
        let body = render(&TEMPLATES[0], &dated);
        assert_eq!(body["index_patterns"], json!(["stock-stream-*"]));
        let s = &body["template"]["settings"];
        assert_eq!(s["index.lifecycle.parse_origination_date"], true);
        // Nothing to delete and no rollover in index mode: no policy, none named.
        let keep = settings(EsMode::Index, true, Some(IlmSection::default()));
        assert!(lifecycle_policy(&keep).is_none());
        assert!(
            render(&TEMPLATES[0], &keep)["template"]["settings"]
                .get("index.lifecycle.name")
                .is_none()
        );
    }
}
