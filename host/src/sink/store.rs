//! Where lake objects are stored, chosen by URL: `file:///path` (or a plain path; the offline
//! default) or `gs://bucket/prefix` (Google Cloud Storage through the official client).
//!
//! A store puts whole objects (a reader never sees half of one: a temporary file + fsync + rename
//! locally, a single- or resumable upload on GCS), lists names under a prefix and reads objects
//! back. Names are relative to the lake's root (`stock-stream/dt=…/hour=…/…ndjson`).

use google_cloud_storage::client::Storage;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable the Google clients read to reach an emulator.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";
const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    Local(PathBuf),
    Gcs { bucket: String, prefix: String },
}

impl LakeLocation {
    /// `file:///abs/path`, `gs://bucket[/prefix]`, or a plain filesystem path.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{text:?}: no bucket in the gs:// URL"));
            }
            return Ok(Self::Gcs {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err(format!("{text:?}: no path in the file:// URL"));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if text.contains("://") {
            return Err(format!(
                "{text:?}: the lake is a directory, file:///path or gs://bucket/prefix"
            ));
        }
        if text.is_empty() {
            return Err("the lake location is empty".into());
        }
        Ok(Self::Local(PathBuf::from(text)))
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "file://{}", p.display()),
            Self::Gcs { bucket, prefix } if prefix.is_empty() => write!(f, "gs://{bucket}"),
            Self::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lake object {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gs://{bucket}/{object}: {message}")]
    Gcs {
        bucket: String,
        object: String,
        message: String,
    },
    #[error("connecting to Cloud Storage: {0}")]
    Connect(String),
}

/// How to reach GCS: the endpoint (an emulator's, or none for Google's), and the threshold above
/// which uploads are resumable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcsOptions {
    pub endpoint: Option<String>,
    pub resumable_threshold: usize,
}

impl GcsOptions {
    /// The configured endpoint, else `STORAGE_EMULATOR_HOST` (`host:port` or a URL).
    pub fn endpoint_or_env(mut self) -> Self {
        if self.endpoint.as_deref().is_none_or(str::is_empty) {
            self.endpoint = std::env::var(EMULATOR_ENV).ok().filter(|v| !v.is_empty());
        }
        self.endpoint = self.endpoint.map(|e| {
            let e = e.trim_end_matches('/');
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        });
        self
    }
}

pub enum LakeStore {
    Local(PathBuf),
    Gcs(Box<GcsStore>),
}

impl LakeStore {
    pub async fn open(location: &LakeLocation, gcs: GcsOptions) -> Result<Self, StoreError> {
        Ok(match location {
            LakeLocation::Local(root) => Self::Local(root.clone()),
            LakeLocation::Gcs { bucket, prefix } => {
                Self::Gcs(Box::new(GcsStore::connect(bucket, prefix, gcs).await?))
            }
        })
    }

    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            // A file's write and fsync block: on the blocking pool, not a runtime worker.
            Self::Local(root) => {
                let path = root.join(name);
                let (root, name) = (root.clone(), name.to_string());
                match tokio::task::spawn_blocking(move || put_local(&root, &name, &bytes)).await {
                    Ok(stored) => stored,
                    Err(e) => Err(StoreError::Io {
                        path,
                        source: std::io::Error::other(e.to_string()),
                    }),
                }
            }
            Self::Gcs(gcs) => gcs.put(name, bytes).await,
        }
    }

    /// Object names under `prefix` (relative to the lake root), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names = match self {
            Self::Local(root) => list_local(root, prefix)?,
            Self::Gcs(gcs) => gcs.list(prefix).await?,
        };
        names.sort();
        Ok(names)
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Local(root) => {
                let path = root.join(name);
                std::fs::read(&path).map_err(|source| StoreError::Io { path, source })
            }
            Self::Gcs(gcs) => gcs.get(name).await,
        }
    }
}

fn put_local(root: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = root.join(name);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    let dir = path
        .parent()
        .ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .expect("object names end in a file name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    // Make the rename itself durable.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Every file under `root/prefix`, skipping temporary files (a crash can leave `.…tmp` behind).
fn list_local(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let mut dirs = vec![root.join(prefix)];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with('.')
                && let Ok(rel) = path.strip_prefix(root)
            {
                names.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(names)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_from_urls_and_paths() {
        assert_eq!(
            LakeLocation::parse("gs://bucket/a/b/").unwrap(),
            LakeLocation::Gcs {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            LakeLocation::parse("gs://bucket").unwrap(),
            LakeLocation::Gcs {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            LakeLocation::parse("file:///tmp/lake").unwrap(),
            LakeLocation::Local("/tmp/lake".into())
        );
        assert_eq!(
            LakeLocation::parse("lake").unwrap(),
            LakeLocation::Local("lake".into())
        );
        assert!(LakeLocation::parse("s3://x").is_err());
        assert!(LakeLocation::parse("gs://").is_err());
        assert_eq!(
            LakeLocation::parse("gs://b/p").unwrap().to_string(),
            "gs://b/p"
        );
    }

    #[tokio::test]
    async fn local_store_puts_lists_and_reads_whole_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = LakeStore::open(
            &LakeLocation::Local(dir.path().to_path_buf()),
            GcsOptions::default(),
        )
        .await
        .unwrap();
        store
            .put("t/dt=2017-06-20/hour=07/0-1-2.ndjson", b"a\nb\n".to_vec())
            .await
            .unwrap();
        store
            .put("t/dt=2017-06-20/hour=08/1-3-3.ndjson", b"c\n".to_vec())
            .await
            .unwrap();
        std::fs::write(dir.path().join("t/dt=2017-06-20/hour=07/.x.tmp"), "junk").unwrap();
        assert_eq!(
            store.list("t").await.unwrap(),
            [
                "t/dt=2017-06-20/hour=07/0-1-2.ndjson",
                "t/dt=2017-06-20/hour=08/1-3-3.ndjson"
            ]
        );
        assert_eq!(
            store
                .get("t/dt=2017-06-20/hour=07/0-1-2.ndjson")
                .await
                .unwrap(),
            b"a\nb\n"
        );
        assert!(store.list("missing").await.unwrap().is_empty());
    }
}
