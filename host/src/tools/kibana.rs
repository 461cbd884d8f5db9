//! Kibana: our saved objects (data views, visualizations, the dashboard) and their import.
//!
//! The objects live in `data/kibana/stockpipe.ndjson` (written by `build_saved_objects.py` there)
//! and are embedded in the binary, so `stockpipe kibana import` (and the compose stack's one-shot
//! service) needs no files. The import is one `POST /api/saved_objects/_import?overwrite=true`
//! (multipart, `kbn-xsrf`), retried while Kibana is starting (connection refused, 503); any
//! object Kibana refuses makes the command fail with Kibana's own error.

use crate::sink::elasticsearch::EsAuth;
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The saved objects, one JSON object per line.
pub const SAVED_OBJECTS: &str = include_str!("../../../data/kibana/stockpipe.ndjson");

/// The saved objects for indices written in `mode`: as they are for plain indices; for data
/// streams, every data view and panel filtered by time on `@timestamp` (a data stream's time
/// field, holding the same instant as each family's own: the tick's time, the bar's start, the
/// forecast's time).
pub fn saved_objects(mode: crate::sink::elasticsearch::EsMode) -> String {
    use crate::sink::elasticsearch::EsMode;
    if mode == EsMode::Index {
        return SAVED_OBJECTS.to_string();
    }
    let mut out = String::with_capacity(SAVED_OBJECTS.len());
    for line in SAVED_OBJECTS.lines().filter(|l| !l.trim().is_empty()) {
        let mut object: serde_json::Value =
            serde_json::from_str(line).expect("the built-in saved objects are JSON");
        let attributes = &mut object["attributes"];
        if attributes.get("timeFieldName").is_some() {
            attributes["timeFieldName"] = "@timestamp".into();
        }
        if let Some(state) = attributes.get("visState").and_then(|s| s.as_str()) {
            let mut state: serde_json::Value =
                serde_json::from_str(state).expect("a visState is JSON");
            if let Some(spec) = state["params"]["spec"].as_str() {
                let mut spec: serde_json::Value =
                    serde_json::from_str(spec).expect("a Vega-Lite spec is JSON");
                retime(&mut spec);
                state["params"]["spec"] = spec.to_string().into();
            }
            attributes["visState"] = state.to_string().into();
        }
        out.push_str(&object.to_string());
        out.push('\n');
    }
    out
}

/// Every `%timefield%` of a Vega spec set to `@timestamp`.
fn retime(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(field) = map.get_mut("%timefield%") {
                *field = "@timestamp".into();
            }
            map.values_mut().for_each(retime);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(retime),
        _ => {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KibanaError {
    #[error("Kibana at {url} did not answer within {waited:?}: {last}")]
    Unavailable {
        url: String,
        waited: Duration,
        last: String,
    },
    #[error("Kibana refused the import ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("Kibana imported {imported} objects but refused {}: {}", .errors.len(), .errors.join("; "))]
    Partial { imported: u64, errors: Vec<String> },
    #[error("Kibana's answer is not an import result: {0}")]
    Answer(String),
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Kibana's base URL, e.g. `http://localhost:5601`.
    pub url: String,
    /// A Kibana space other than the default one.
    pub space: Option<String>,
    /// Replace objects with the same ids (re-running the import updates the dashboard).
    pub overwrite: bool,
    /// Keep trying this long while Kibana is not up yet.
    pub wait: Duration,
    pub auth: EsAuth,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportAnswer {
    success: bool,
    #[serde(default)]
    success_count: u64,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

/// The request body: `objects` as the form field `file` (Kibana reads `*.ndjson`).
pub fn multipart_body(boundary: &str, objects: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(objects.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stockpipe.ndjson\"\r\n\
             Content-Type: application/ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(objects);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Imports `objects` (NDJSON saved objects); returns how many Kibana stored.
pub async fn import(options: &ImportOptions, objects: &[u8]) -> Result<u64, KibanaError> {
    let base = options.url.trim_end_matches('/');
    let space = options
        .space
        .as_deref()
        .map(|s| format!("/s/{s}"))
        .unwrap_or_default();
    let url = format!(
        "{base}{space}/api/saved_objects/_import?overwrite={}",
        options.overwrite
    );
    let boundary = format!("stockpipe-{:016x}", crate::random_u64());
    let body = multipart_body(&boundary, objects);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let mut request = http
            .post(&url)
            .header("kbn-xsrf", "stockpipe")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body.clone())
            .timeout(Duration::from_secs(60));
        request = match &options.auth {
            EsAuth::None => request,
            EsAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
            EsAuth::ApiKey(key) => request.header("authorization", format!("ApiKey {key}")),
        };
        let last = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if status.is_success() {
                    let answer: ImportAnswer = serde_json::from_str(&text)
                        .map_err(|e| KibanaError::Answer(format!("{e}: {text}")))?;
                    if answer.success && answer.errors.is_empty() {
                        return Ok(answer.success_count);
                    }
                    return Err(KibanaError::Partial {
                        imported: answer.success_count,
                        errors: answer.errors.iter().map(describe_error).collect(),
                    });
                }
                // Kibana answers 503 while it starts or while Elasticsearch is not there yet.
                if status.as_u16() != 503 && status.as_u16() != 502 {
                    return Err(KibanaError::Refused {
                        status: status.as_u16(),
                        body: text,
                    });
                }
                format!("{status}: {text}")
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= options.wait {
            return Err(KibanaError::Unavailable {
                url: crate::redact::url(base),
                waited: options.wait,
                last,
            });
        }
        tracing::info!(attempt, error = %last, "Kibana is not ready; trying again");
        let delay = Duration::from_millis(250 << attempt.min(5));
        tokio::time::sleep(delay.min(options.wait.saturating_sub(started.elapsed()))).await;
        attempt += 1;
    }
}

/// `type/id: message` of one import error.
fn describe_error(error: &serde_json::Value) -> String {
    let kind = error["type"].as_str().unwrap_or("?");
    let id = error["id"].as_str().unwrap_or("?");
    let what = &error["error"];
    let message = what["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| what["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| what.to_string());
    format!("{kind}/{id}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::HashSet;

    fn objects() -> Vec<Value> {
        SAVED_OBJECTS
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect()
    }

    /// The dashboard's query and filters, and a lower bound only at the time picker's start: no
    /// `%timefield%` (Kibana would add the picker's upper bound, `now`, and drop every forecast).
    fn assert_follows_filters_and_the_time_s_start(url: &Value) {
        assert!(url.get("%timefield%").is_none(), "{url}");
        assert!(
            url.get("%context%").is_none(),
            "a body query rules it out: {url}"
        );
        let query = &url["body"]["query"]["bool"];
        assert_eq!(
            query["must"],
            serde_json::json!(["%dashboard_context-must_clause%"])
        );
        assert_eq!(
            query["must_not"],
            serde_json::json!(["%dashboard_context-must_not_clause%"])
        );
        let filter = query["filter"].as_array().unwrap();
        assert_eq!(filter[0], "%dashboard_context-filter_clause%");
        let range = &filter[1]["range"]["forecast_timestamp"];
        assert_eq!(range["gte"], serde_json::json!({"%timefilter%": "min"}));
        assert_eq!(range["format"], "epoch_millis");
        let mut bounds: Vec<&String> = range.as_object().unwrap().keys().collect();
        bounds.sort();
        assert_eq!(bounds, ["format", "gte"], "no upper bound: {range}");
        assert!(!url.to_string().contains("\"max\""), "{url}");
    }

    /// Data-stream mode: the same objects, every time filter on `@timestamp` (which the
    /// templates map in that mode), nothing else changed.
    #[test]
    fn data_stream_mode_filters_time_on_timestamp() {
        use crate::sink::elasticsearch::EsMode;
        assert_eq!(saved_objects(EsMode::Index), SAVED_OBJECTS);
        let streams = saved_objects(EsMode::DataStream);
        let before: Vec<Value> = objects();
        let after: Vec<Value> = streams
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(before.len(), after.len());
        let mut retimed = 0;
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((&b["id"], &b["type"]), (&a["id"], &a["type"]));
            if b["type"] == "index-pattern" {
                assert_eq!(a["attributes"]["timeFieldName"], "@timestamp");
                assert_eq!(b["attributes"]["title"], a["attributes"]["title"]);
                retimed += 1;
            }
            if let Some(state) = a["attributes"]["visState"].as_str() {
                let state: Value = serde_json::from_str(state).unwrap();
                if let Some(spec) = state["params"]["spec"].as_str() {
                    assert!(!spec.contains("\"%timefield%\":\"timestamp\""), "{spec}");
                    assert!(!spec.contains("\"%timefield%\":\"bar_start\""), "{spec}");
                    assert!(!spec.contains("\"%timefield%\":\"event_time\""), "{spec}");
                    retimed += spec.matches("\"%timefield%\":\"@timestamp\"").count();
                }
            }
        }
        assert_eq!(retimed, 5 + 8, "5 data views, 8 time-filtered panels");
    }

    #[test]
    fn the_saved_objects_hold_together() {
        let objects = objects();
        let ids: HashSet<(String, String)> = objects
            .iter()
            .map(|o| {
                (
                    o["type"].as_str().unwrap().to_string(),
                    o["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(ids.len(), objects.len(), "ids are unique");
        let data_views: HashSet<&str> = objects
            .iter()
            .filter(|o| o["type"] == "index-pattern")
            .map(|o| o["attributes"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(
            data_views,
            HashSet::from([
                "stock-stream*",
                "stock-forecast*",
                "stockpipe-metrics*",
                "stock-bars*",
                "stock-alerts*"
            ])
        );
        let mut queried = HashSet::new();
        for vis in objects.iter().filter(|o| o["type"] == "visualization") {
            let state: Value =
                serde_json::from_str(vis["attributes"]["visState"].as_str().unwrap()).unwrap();
            assert_eq!(state["type"], "vega");
            let spec: Value = serde_json::from_str(state["params"]["spec"].as_str().unwrap())
                .expect("the Vega-Lite spec is JSON");
            // Every index a spec queries has a data view; every query follows the dashboard's
            // filters and time — the forecasts from its start on only (they lie ahead of now).
            let mut stack = vec![&spec];
            while let Some(v) = stack.pop() {
                if let Some(url) = v.get("url").filter(|u| u.is_object()) {
                    let index = url["index"].as_str().unwrap();
                    if index == "stock-forecast*" {
                        assert_follows_filters_and_the_time_s_start(url);
                    } else {
                        assert_eq!(url["%context%"], true);
                        assert!(url["%timefield%"].is_string());
                    }
                    queried.insert(index.to_string());
                }
                match v {
                    Value::Object(m) => stack.extend(m.values()),
                    Value::Array(a) => stack.extend(a.iter()),
                    _ => {}
                }
            }
        }
        assert!(queried.iter().all(|i| data_views.contains(i.as_str())));
        assert_eq!(queried.len(), 5, "{queried:?}");
        let dashboard = objects.iter().find(|o| o["type"] == "dashboard").unwrap();
        let panels: Vec<Value> =
            serde_json::from_str(dashboard["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
        let references = dashboard["references"].as_array().unwrap();
        assert_eq!(panels.len(), 8);
        for panel in &panels {
            let reference = references
                .iter()
                .find(|r| r["name"] == panel["panelRefName"])
                .expect("each panel names a reference");
            assert!(ids.contains(&(
                reference["type"].as_str().unwrap().into(),
                reference["id"].as_str().unwrap().into()
            )));
        }
    }

    /// The fields a query body names: aggregation and range fields, `_source`, sort keys.
    fn named_fields(body: &Value, out: &mut Vec<String>) {
        match body {
            Value::Object(m) => {
                for (key, v) in m {
                    match (key.as_str(), v) {
                        ("field", Value::String(f)) => out.push(f.clone()),
                        ("_source", Value::Array(fields)) => {
                            out.extend(fields.iter().filter_map(|f| f.as_str().map(String::from)));
                        }
                        ("range", Value::Object(r)) => out.extend(r.keys().cloned()),
                        ("sort", Value::Array(keys)) => {
                            for k in keys.iter().filter_map(Value::as_object) {
                                out.extend(k.keys().cloned());
                            }
                        }
                        _ => named_fields(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| named_fields(v, out)),
            _ => {}
        }
    }

    /// Every field a panel queries is mapped by the index template of the index it queries (the
    /// documents' names, as the lake and the BigQuery table have them).
    #[test]
    fn the_panels_query_fields_the_templates_map() {
        let templates: Vec<(String, Value)> = crate::sink::elasticsearch::TEMPLATES
            .iter()
            .map(|t| {
                (
                    format!("{}*", t.name),
                    serde_json::from_str(t.body).unwrap(),
                )
            })
            .collect();
        let mut checked = 0;
        for vis in objects().iter().filter(|o| o["type"] == "visualization") {
            let state: Value =
                serde_json::from_str(vis["attributes"]["visState"].as_str().unwrap()).unwrap();
            let spec: Value =
                serde_json::from_str(state["params"]["spec"].as_str().unwrap()).unwrap();
            let mut stack = vec![&spec];
            while let Some(v) = stack.pop() {
                if let Some(url) = v.get("url").filter(|u| u.is_object()) {
                    let index = url["index"].as_str().unwrap();
                    let (_, template) = templates.iter().find(|(p, _)| p == index).unwrap();
                    let properties = &template["template"]["mappings"]["properties"];
                    let mut fields = Vec::new();
                    named_fields(&url["body"], &mut fields);
                    if let Some(time) = url["%timefield%"].as_str() {
                        fields.push(time.to_string());
                    }
                    for field in fields {
                        let mut at = properties;
                        for part in field.split('.') {
                            at = &at[part];
                            assert!(!at.is_null(), "{index}: {field} is not mapped");
                            if at.get("properties").is_some() {
                                at = &at["properties"];
                            }
                        }
                        checked += 1;
                    }
                }
                match v {
                    Value::Object(m) => stack.extend(m.values()),
                    Value::Array(a) => stack.extend(a.iter()),
                    _ => {}
                }
            }
        }
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn the_body_is_one_file_field() {
        let body = multipart_body("B", b"{\"a\":1}\n");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"stockpipe.ndjson\"\r\n"));
        assert!(text.ends_with("{\"a\":1}\n\r\n--B--\r\n"));
    }
}
