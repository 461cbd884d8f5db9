//! `stockpipe kibana`: the dashboard's saved objects, imported through Kibana's API.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum KibanaCommand {
    /// Import the saved objects (built into this binary, or --file) with
    /// POST /api/saved_objects/_import. Credentials as for Elasticsearch: STOCKPIPE_ES_API_KEY or
    /// STOCKPIPE_ES_USERNAME/STOCKPIPE_ES_PASSWORD. Waits for Kibana to come up.
    Import {
        /// Kibana's base URL.
        #[arg(long, default_value = "http://localhost:5601")]
        kibana_url: String,
        /// NDJSON saved objects to import instead of the built-in ones.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A Kibana space (default: the default space).
        #[arg(long)]
        space: Option<String>,
        /// Keep objects that already exist instead of replacing them.
        #[arg(long)]
        no_overwrite: bool,
        /// Give up after this many seconds of Kibana not answering (or answering 503).
        #[arg(long, default_value_t = 300)]
        wait_secs: u64,
        /// How the pipeline writes (its elasticsearch.mode): `data_stream` filters every data
        /// view and panel by time on `@timestamp`. Ignored with --file.
        #[arg(long, value_name = "index|data_stream", default_value = "index", value_parser = parse_mode)]
        mode: stockpipe::sink::elasticsearch::EsMode,
    },
}

pub async fn kibana(command: KibanaCommand) -> anyhow::Result<()> {
    let KibanaCommand::Import {
        kibana_url,
        file,
        space,
        no_overwrite,
        wait_secs,
        mode,
    } = command;
    let objects = match &file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => stockpipe::tools::kibana::saved_objects(mode).into_bytes(),
    };
    let options = stockpipe::tools::kibana::ImportOptions {
        url: kibana_url,
        space,
        overwrite: !no_overwrite,
        wait: std::time::Duration::from_secs(wait_secs),
        auth: stockpipe::sink::elasticsearch::EsAuth::from_env()?,
    };
    let imported = stockpipe::tools::kibana::import(&options, &objects).await?;
    println!(
        "{}",
        serde_json::json!({"imported": imported, "kibana": options.url})
    );
    Ok(())
}

fn parse_mode(text: &str) -> Result<stockpipe::sink::elasticsearch::EsMode, String> {
    use stockpipe::sink::elasticsearch::EsMode;
    match text {
        "index" => Ok(EsMode::Index),
        "data_stream" => Ok(EsMode::DataStream),
        other => Err(format!("{other:?}: index or data_stream")),
    }
}
