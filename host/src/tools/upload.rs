//! `stockpipe upload FILE DEST`: puts a file of ticks in the lake's store as newline-delimited
//! JSON — the only JSON form a BigQuery external table reads. A JSON array (the sample's form, and
//! what the original upload script sent) is converted on the way; NDJSON is checked line by line
//! and sent as it is.

use crate::sink::store::{GcsOptions, LakeLocation, LakeStore};
use serde::Serialize;
use stockpipe_model::json::split_input;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadReport {
    pub destination: String,
    pub lines: usize,
    pub bytes: usize,
    /// The input was a JSON array and was converted to NDJSON.
    pub converted_from_array: bool,
}

/// The file as NDJSON: `(bytes, lines, converted_from_array)`. The split is the one `produce`
/// uses ([`split_input`]); NDJSON lines are also checked to be JSON, so a bad line is named
/// before anything is uploaded.
pub fn to_ndjson(text: &str) -> Result<(Vec<u8>, usize, bool), String> {
    let converted = stockpipe_model::json::is_json_array(text.as_bytes());
    if !converted {
        for (n, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                serde_json::from_str::<serde::de::IgnoredAny>(line)
                    .map_err(|e| format!("line {}: not a JSON value: {e}", n + 1))?;
            }
        }
    }
    let records = split_input(text)?;
    let mut out = Vec::with_capacity(text.len() + records.len());
    for record in &records {
        out.extend_from_slice(record);
        out.push(b'\n');
    }
    Ok((out, records.len(), converted))
}

/// Uploads `file` to `destination` (`gs://bucket/object`, `file:///path` or a path).
pub async fn upload(
    file: &std::path::Path,
    destination: &str,
    gcs: GcsOptions,
) -> anyhow::Result<UploadReport> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (bytes, lines, converted_from_array) =
        to_ndjson(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let (location, name) = match LakeLocation::parse(destination).map_err(anyhow::Error::msg)? {
        LakeLocation::Gcs { bucket, prefix } => {
            anyhow::ensure!(
                !prefix.is_empty(),
                "{destination}: name the object, e.g. gs://{bucket}/stock-stream/sample.ndjson"
            );
            (
                LakeLocation::Gcs {
                    bucket,
                    prefix: String::new(),
                },
                prefix,
            )
        }
        LakeLocation::Local(path) => {
            let parent = path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf();
            let name = path
                .file_name()
                .context("the destination names no file")?
                .to_string_lossy()
                .into_owned();
            (LakeLocation::Local(parent), name)
        }
    };
    let store = LakeStore::open(&location, gcs).await?;
    let size = bytes.len();
    store.put(&name, bytes).await?;
    Ok(UploadReport {
        destination: destination.to_string(),
        lines,
        bytes: size,
        converted_from_array,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_becomes_one_line_per_element() {
        let (bytes, lines, converted) = to_ndjson("[{\"a\": 1},\n {\"a\": [2, 3]}]").unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"a\":1}\n{\"a\":[2,3]}\n"
        );
        assert_eq!((lines, converted), (2, true));
    }

    #[test]
    fn ndjson_is_kept_byte_for_byte_and_checked() {
        let (bytes, lines, converted) = to_ndjson("{\"a\": 1}\n\n{\"b\":2}").unwrap();
        assert_eq!(bytes, b"{\"a\": 1}\n{\"b\":2}\n");
        assert_eq!((lines, converted), (2, false));
        let err = to_ndjson("{\"a\": 1}\n{\"b\":").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(to_ndjson("[{\"a\": 1},").is_err());
    }
}
