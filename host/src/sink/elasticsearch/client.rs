//! The HTTP client: one node, several used in turn, or an Elastic Cloud deployment; TLS by rustls
//! with an optional CA file; the proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `NO_PROXY`, as for Cloud Storage and BigQuery); gzipped request bodies when asked.

use super::EsError;
use super::config::{EsAuth, EsCompression, EsNodes, EsSettings};
use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::transport::{
    CloudConnectionPool, MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder,
};

/// Builds the client for `settings`.
pub fn client(settings: &EsSettings) -> Result<Elasticsearch, EsError> {
    let credentials = match &settings.auth {
        EsAuth::None => None,
        EsAuth::Basic { username, password } => {
            Some(Credentials::Basic(username.clone(), password.clone()))
        }
        EsAuth::ApiKey(key) => Some(Credentials::EncodedApiKey(key.clone())),
    };
    let mut builder = match &settings.nodes {
        EsNodes::CloudId(id) => {
            if credentials.is_none() {
                return Err(EsError::Auth(format!(
                    "elasticsearch.cloud_id needs credentials: {} or {}/{}",
                    super::env::API_KEY,
                    super::env::USERNAME,
                    super::env::PASSWORD
                )));
            }
            let pool = CloudConnectionPool::new(id).map_err(|e| EsError::Url {
                url: settings.nodes.describe(),
                message: e.to_string(),
            })?;
            TransportBuilder::new(pool)
        }
        EsNodes::Urls(urls) => {
            let parsed = urls
                .iter()
                .map(|u| parse_url(u))
                .collect::<Result<Vec<_>, _>>()?;
            match <[Url; 1]>::try_from(parsed) {
                Ok([one]) => TransportBuilder::new(SingleNodeConnectionPool::new(one)),
                Err(many) if many.is_empty() => {
                    return Err(EsError::Url {
                        url: String::new(),
                        message: "no Elasticsearch URL".into(),
                    });
                }
                Err(many) => {
                    TransportBuilder::new(MultiNodeConnectionPool::round_robin(many, None))
                }
            }
        }
    };
    builder = builder
        .timeout(settings.request_timeout)
        .request_body_compression(settings.compression == EsCompression::Gzip);
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
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
        url: settings.nodes.describe(),
        message: super::cause_chain(&e),
    })?;
    Ok(Elasticsearch::new(transport))
}

fn parse_url(text: &str) -> Result<Url, EsError> {
    let url = Url::parse(text).map_err(|e| EsError::Url {
        url: crate::redact::url(text),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EsError::Url {
            url: crate::redact::url(text),
            message: "the scheme must be http or https".into(),
        });
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::elasticsearch::config::ElasticsearchSection;

    /// An Elastic Cloud deployment: its id decoded into the endpoint, credentials required.
    #[test]
    fn a_cloud_id_needs_credentials_and_names_where_they_come_from() {
        // `<name>:base64(<domain>$<es uuid>$<kibana uuid>)`, as the Cloud console shows it.
        let section = ElasticsearchSection {
            cloud_id: "prod:ZXUtd2VzdC0xLmF3cy5mb3VuZC5pbyRhYmMxMjMkZGVmNDU2".into(),
            ..ElasticsearchSection::default()
        };
        section.validate().unwrap();
        let without = section.settings(|_| None).unwrap();
        let err = client(&without).unwrap_err().to_string();
        assert!(err.contains(super::super::env::API_KEY), "{err}");
        let with = section
            .settings(|k| (k == super::super::env::API_KEY).then(|| "a2V5OnNlY3JldA==".into()))
            .unwrap();
        client(&with).unwrap();
        assert_eq!(with.nodes.describe(), "Elastic Cloud deployment \"prod\"");
    }

    #[test]
    fn several_urls_are_described_without_their_credentials() {
        let nodes = EsNodes::Urls(vec![
            "https://elastic:s3cret@es-1:9200".into(),
            "https://es-2:9200".into(),
        ]);
        let said = nodes.describe();
        assert!(
            !said.contains("s3cret") && said.contains("es-2:9200"),
            "{said}"
        );
    }
}
