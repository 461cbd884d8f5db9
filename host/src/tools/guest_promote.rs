//! `stockpipe guest promote`: hands a candidate component to a running host
//! (`POST /guests/<stage>/promote`), which decides as for any swap — the shadow check on the ticks
//! it saw last — and keeps the diff report in its swap history.

use crate::runtime::StageKind;
use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::Value;
use std::time::Duration;

/// The host's answer: the swap events of its decision.
#[derive(Debug)]
pub struct PromoteAnswer {
    pub events: Vec<Value>,
}

impl PromoteAnswer {
    /// Why the host refused, if it did.
    pub fn refused(&self) -> Option<String> {
        self.events
            .iter()
            .find(|e| e["outcome"] == "refused")
            .map(|e| {
                e["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_string()
            })
    }
}

/// Sends `component` for `stage` to the host at `base_url`, with the admin token if given.
pub async fn promote(
    base_url: &str,
    stage: StageKind,
    component: &[u8],
    diff_report: Option<Value>,
    force: bool,
    token: Option<&str>,
) -> anyhow::Result<PromoteAnswer> {
    let url = format!(
        "{}/guests/{}/promote",
        base_url.trim_end_matches('/'),
        stage.name()
    );
    let shown = crate::redact::url(&url);
    let body = serde_json::json!({
        "component_base64": base64::engine::general_purpose::STANDARD.encode(component),
        "diff_report": diff_report,
        "force": force,
    });
    let mut request = reqwest::Client::new()
        .post(&url)
        .json(&body)
        // The host compiles the component and runs the shadow check before it answers.
        .timeout(Duration::from_secs(90));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("sending the candidate to {shown}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    match status.as_u16() {
        200 | 409 => {
            let events = answer["events"]
                .as_array()
                .cloned()
                .with_context(|| format!("{shown} answered without events: {text}"))?;
            Ok(PromoteAnswer { events })
        }
        401 => bail!(
            "{shown}: 401 — set {} to the host's admin token",
            crate::http::ADMIN_TOKEN_ENV
        ),
        _ => bail!(
            "{shown}: {status}: {}",
            answer["error"].as_str().unwrap_or(&text)
        ),
    }
}
