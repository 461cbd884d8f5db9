//! `stockpipe upload`: a file of ticks into the lake's store as NDJSON.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct UploadArgs {
    /// The file: a JSON array of ticks or NDJSON.
    pub file: PathBuf,
    /// gs://bucket/path/object.ndjson, file:///path or a plain path.
    pub destination: String,
    /// Cloud Storage endpoint (an emulator); default: $STORAGE_EMULATOR_HOST, else Google's with
    /// Application Default Credentials.
    #[arg(long, value_name = "URL")]
    pub gcs_endpoint: Option<String>,
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let gcs = stockpipe::sink::store::GcsOptions {
        endpoint: args.gcs_endpoint,
        resumable_threshold: 16 << 20,
    };
    let report = stockpipe::tools::upload::upload(&args.file, &args.destination, gcs).await?;
    if report.converted_from_array {
        eprintln!(
            "{}: a JSON array of {} ticks, converted to newline-delimited JSON (BigQuery reads only that form)",
            args.file.display(),
            report.lines
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
