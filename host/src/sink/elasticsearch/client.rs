//! The HTTP client (one node, TLS by rustls) and the index templates put at start-up.

use super::EsError;
use super::config::{EsAuth, EsSettings, RetryPolicy};
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
/// The index templates we own, put at start-up.
pub const TEMPLATES: [(&str, &str); 4] = [
    (
        "stock-stream",
        include_str!("../../../../data/elasticsearch/stock-stream.index-template.json"),
    ),
    (
        "stock-forecast",
        include_str!("../../../../data/elasticsearch/stock-forecast.index-template.json"),
    ),
    (
        "stock-bars",
        include_str!("../../../../data/elasticsearch/stock-bars.index-template.json"),
    ),
    (
        "stockpipe-metrics",
        include_str!("../../../../data/elasticsearch/stockpipe-metrics.index-template.json"),
    ),
];

/// Builds the client (one node, TLS by rustls with an optional CA file, auth as given).
pub fn client(settings: &EsSettings) -> Result<Elasticsearch, EsError> {
    let url = Url::parse(&settings.url).map_err(|e| EsError::Url {
        url: crate::redact::url(&settings.url),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EsError::Url {
            url: crate::redact::url(&settings.url),
            message: "the scheme must be http or https".into(),
        });
    }
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(settings.request_timeout)
        .disable_proxy();
    builder = match &settings.auth {
        EsAuth::None => builder,
        EsAuth::Basic { username, password } => {
            builder.auth(Credentials::Basic(username.clone(), password.clone()))
        }
        EsAuth::ApiKey(key) => builder.auth(Credentials::EncodedApiKey(key.clone())),
    };
    if let Some(path) = &settings.ca_file {
        let ca_error = |message: String| EsError::CaFile {
            path: path.clone(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    let transport = builder.build().map_err(|e| EsError::Url {
        url: settings.url.clone(),
        message: e.to_string(),
    })?;
    Ok(Elasticsearch::new(transport))
}

/// Puts our index templates. A refusal that retrying cannot change (a 4xx but 429: a bad template,
/// missing rights) is an error at once; a cluster that does not answer, or answers 429/5xx, is
/// asked again with backoff — up to `attempts` times, or with `None` until it answers (the
/// caller stops waiting by dropping the future). `waiting` hears each failure, to say why the
/// sink is not ready.
pub async fn put_templates(
    client: &Elasticsearch,
    retry: RetryPolicy,
    attempts: Option<u32>,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<(), EsError> {
    for (name, body) in TEMPLATES {
        let path = format!("/_index_template/{name}");
        let mut attempt = 0;
        loop {
            let sent = client
                .send(
                    Method::Put,
                    &path,
                    HeaderMap::new(),
                    None::<&()>,
                    Some(body.as_bytes()),
                    None,
                )
                .await;
            let last = attempts.is_some_and(|most| attempt + 1 >= most);
            match sent {
                Ok(r) if r.status_code().is_success() => break,
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
                        Err(e) => format!("PUT {path}: {e}"),
                    };
                    let delay = retry.delay(attempt);
                    tracing::warn!(template = name, %why, attempt, retry_in_ms = delay.as_millis() as u64, "Elasticsearch is not ready; waiting for it");
                    waiting(&why);
                    tokio::time::sleep(delay).await;
                }
            }
            attempt += 1;
        }
        tracing::info!(template = name, "index template in place");
    }
    Ok(())
}

pub(super) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}
