//! Google Cloud Storage as the lake's store: a bucket and a prefix in it.

use super::{EMULATOR_ENV, GCS_ENDPOINT, GcsOptions, StoreError};
use google_cloud_storage::client::Storage;

/// A bucket (and a prefix in it) on Google Cloud Storage. Writes and reads go through the official
/// client; listing uses the JSON API's `objects.list` with the same credentials (the client's own
/// listing is gRPC-only, which emulators do not serve).
pub struct GcsStore {
    client: Storage,
    http: reqwest::Client,
    credentials: google_cloud_auth::credentials::Credentials,
    endpoint: String,
    bucket: String,
    prefix: String,
    resumable_threshold: usize,
}

impl GcsStore {
    /// With an endpoint (an emulator) the credentials are anonymous; otherwise Application Default
    /// Credentials.
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        options: GcsOptions,
    ) -> Result<Self, StoreError> {
        let options = options.endpoint_or_env();
        let credentials = match &options.endpoint {
            Some(_) => google_cloud_auth::credentials::anonymous::Builder::new().build(),
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| {
                    StoreError::Connect(format!(
                        "Application Default Credentials: {e} (set GOOGLE_APPLICATION_CREDENTIALS, \
                         or {EMULATOR_ENV} for an emulator)"
                    ))
                })?,
        };
        let mut builder = Storage::builder().with_credentials(credentials.clone());
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let client = builder
            .build()
            .await
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(Self {
            client,
            http: reqwest::Client::new(),
            credentials,
            endpoint: options.endpoint.unwrap_or_else(|| GCS_ENDPOINT.to_string()),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            resumable_threshold: options.resumable_threshold,
        })
    }

    fn object(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn error(&self, object: &str, message: impl std::fmt::Display) -> StoreError {
        StoreError::Gcs {
            bucket: self.bucket.clone(),
            object: object.to_string(),
            message: message.to_string(),
        }
    }

    /// Uploads one object: one request below the resumable threshold, a resumable upload above.
    /// Object contents are a function of their name, so retrying the upload is safe.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let object = self.object(name);
        let mut write = self
            .client
            .write_object(
                format!("projects/_/buckets/{}", self.bucket),
                object.clone(),
                bytes::Bytes::from(bytes),
            )
            .set_content_type(if name.ends_with(".gz") {
                "application/gzip"
            } else {
                "application/x-ndjson"
            })
            .with_idempotency(true);
        if self.resumable_threshold > 0 {
            write = write.with_resumable_upload_threshold(self.resumable_threshold);
        }
        write
            .send_buffered()
            .await
            .map_err(|e| self.error(&object, e))?;
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let object = self.object(name);
        let mut response = self
            .client
            .read_object(
                format!("projects/_/buckets/{}", self.bucket),
                object.clone(),
            )
            .send()
            .await
            .map_err(|e| self.error(&object, e))?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.error(&object, e))?);
        }
        Ok(bytes)
    }

    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, StoreError> {
        use google_cloud_auth::credentials::CacheableResource;
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Ok(reqwest::header::HeaderMap::new()),
            Err(e) => Err(StoreError::Connect(format!("credentials: {e}"))),
        }
    }

    /// Deletes one object (`stockpipe check`'s probe).
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let object = self.object(name);
        let encoded: String = object
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("{}/storage/v1/b/{}/o/{encoded}", self.endpoint, self.bucket);
        let response = self
            .http
            .delete(&url)
            .headers(self.auth_headers().await?)
            .send()
            .await
            .map_err(|e| self.error(&object, format!("deleting: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.error(&object, format!("deleting: {status}: {body}")));
        }
        Ok(())
    }

    /// Names under `prefix`, relative to the store's own prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = self.object(prefix);
        let url = format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket);
        let mut names = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("prefix", full_prefix.clone()),
                ("fields", "items(name),nextPageToken".to_string()),
            ];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let response = self
                .http
                .get(&url)
                .headers(self.auth_headers().await?)
                .query(&query)
                .send()
                .await
                .map_err(|e| self.error(&full_prefix, format!("listing: {e}")))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| self.error(&full_prefix, format!("listing: {e}")))?;
            if !status.is_success() {
                return Err(self.error(
                    &full_prefix,
                    format!("listing: {status}: {}", String::from_utf8_lossy(&body)),
                ));
            }
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| self.error(&full_prefix, format!("listing: {e}")))?;
            let strip = if self.prefix.is_empty() {
                0
            } else {
                self.prefix.len() + 1
            };
            for item in page["items"].as_array().into_iter().flatten() {
                if let Some(name) = item["name"].as_str()
                    && name.len() > strip
                {
                    names.push(name[strip..].to_string());
                }
            }
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(names)
    }
}
