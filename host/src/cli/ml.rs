//! `stockpipe ml`: the BigQuery ML models computed offline from the lake.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct LakeArgs {
    /// The lake: a directory, file:///path or gs://bucket/prefix.
    #[arg(long, default_value = "lake")]
    pub lake: String,
    /// Cloud Storage endpoint (an emulator); default: $STORAGE_EMULATOR_HOST, else Google's.
    #[arg(long, value_name = "URL")]
    pub gcs_endpoint: Option<String>,
    /// The topic whose documents the lake holds.
    #[arg(long, default_value = "stock-stream")]
    pub topic: String,
}

#[derive(Subcommand)]
pub enum MlCommand {
    /// Ordinary least squares of last_price on volume, average price, OHLC, spread and book
    /// imbalance; R², MAE and MSE on the newest --eval-fraction of the rows. Prints one JSON line.
    Train {
        #[command(flatten)]
        lake: LakeArgs,
        #[arg(long, default_value_t = 0.2)]
        eval_fraction: f64,
    },
    /// ARIMA per instrument (order by AIC over p,q ≤ 2, d ≤ 1) on the last price regularized to
    /// one value per --step-seconds; writes forecasts/…ndjson to the lake and, with --es-url, the
    /// stock-forecast index.
    Forecast {
        #[command(flatten)]
        lake: LakeArgs,
        /// `all` (one series per instrument, as the per-instrument BigQuery model), `busiest` (one
        /// series: the instrument with the most ticks, as the single-series model by default), or
        /// an instrument token.
        #[arg(long, value_name = "all|busiest|TOKEN", default_value = "all")]
        instrument: stockpipe::tools::ml::Instruments,
        #[arg(long, default_value_t = 10)]
        horizon: usize,
        /// Seconds per value of the series (default: the coarsest of 60, 30, 15, 10, 5, 2, 1 at
        /// which the longest series has --min-points values; printed as step_seconds).
        #[arg(long)]
        step_seconds: Option<u64>,
        /// Width of the prediction interval.
        #[arg(long, default_value_t = 0.9)]
        confidence: f64,
        /// Skip series shorter than this (after regularizing).
        #[arg(long, default_value_t = 12)]
        min_points: usize,
        /// Also index the forecasts in Elasticsearch (credentials as for `run`).
        #[arg(long, value_name = "URL")]
        es_url: Option<String>,
        /// The pipeline's config file: its [elasticsearch] section (and STOCKPIPE_ELASTICSEARCH_*
        /// variables) say how the forecasts are written — the cluster when --es-url is not given,
        /// the mode (index or data stream), dated indices, shards, replicas, lifecycle.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        #[arg(long, default_value = "stock-forecast")]
        index: String,
        /// Forecast each bar's close (the aggregate stage's bars, under this lake prefix,
        /// `[aggregate] lake_prefix`) instead of the ticks' last price; the step defaults to the
        /// bars' width.
        #[arg(long, value_name = "PREFIX", num_args = 0..=1, default_missing_value = "stock-bars")]
        bars: Option<String>,
    },
}

pub async fn open_lake(args: &LakeArgs) -> anyhow::Result<stockpipe::sink::store::LakeStore> {
    let location =
        stockpipe::sink::store::LakeLocation::parse(&args.lake).map_err(anyhow::Error::msg)?;
    let gcs = stockpipe::sink::store::GcsOptions {
        endpoint: args.gcs_endpoint.clone(),
        resumable_threshold: 16 << 20,
    };
    Ok(stockpipe::sink::store::LakeStore::open(&location, gcs).await?)
}

pub async fn ml(command: MlCommand) -> anyhow::Result<()> {
    use stockpipe::tools::ml;
    match command {
        MlCommand::Train {
            lake,
            eval_fraction,
        } => {
            anyhow::ensure!(
                (0.0..1.0).contains(&eval_fraction),
                "--eval-fraction must be in [0, 1)"
            );
            let store = open_lake(&lake).await?;
            let mut rows = ml::load_lake(&store, &lake.topic).await?;
            let report = ml::train_regression(&mut rows, eval_fraction)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        MlCommand::Forecast {
            lake,
            instrument,
            horizon,
            step_seconds,
            confidence,
            min_points,
            es_url,
            config,
            index,
            bars,
        } => {
            anyhow::ensure!((1..=1000).contains(&horizon), "--horizon must be 1..=1000");
            anyhow::ensure!(step_seconds != Some(0), "--step-seconds must be at least 1");
            anyhow::ensure!(
                confidence > 0.0 && confidence < 1.0,
                "--confidence must be in (0, 1)"
            );
            let store = open_lake(&lake).await?;
            let rows = match &bars {
                Some(prefix) => ml::load_bars(&store, prefix).await?,
                None => ml::load_lake(&store, &lake.topic).await?,
            };
            let rows = ml::select_instruments(rows, instrument).map_err(anyhow::Error::msg)?;
            let generated = stockpipe::clock::unix_now_us();
            let min_points = min_points.max(4);
            let step_seconds =
                step_seconds.unwrap_or_else(|| ml::choose_step_seconds(&rows, min_points));
            let options = ml::ForecastOptions {
                horizon,
                step_us: step_seconds as i64 * 1_000_000,
                level: confidence,
                min_points,
            };
            let (forecasts, skipped) =
                tokio::task::block_in_place(|| ml::forecast_all(&rows, options, generated));
            for s in &skipped {
                tracing::warn!(instrument = s.instrument_token, reason = %s.error_message, "no forecast");
            }
            anyhow::ensure!(
                !forecasts.is_empty(),
                "no instrument could be forecast ({} skipped; the first: {})",
                skipped.len(),
                skipped.first().map_or("", |s| s.error_message.as_str())
            );
            let object = ml::store_forecasts(&store, &forecasts, generated).await?;
            let mut indexed = 0;
            let mut section =
                stockpipe::config::Config::load_with_env(config.as_deref(), std::env::vars())?
                    .elasticsearch;
            if let Some(url) = es_url {
                section.url = url;
                section.urls.clear();
                section.cloud_id.clear();
            }
            if section.enabled() {
                use stockpipe::sink::elasticsearch as es;
                section.validate()?;
                let settings = section.settings(|k| std::env::var(k).ok())?;
                let client = es::client(&settings)?;
                if settings.put_templates {
                    es::put_templates(
                        &client,
                        &settings.templates,
                        settings.retry,
                        Some(9),
                        &|_| {},
                    )
                    .await?;
                }
                indexed = es::index_documents(
                    &client,
                    settings.retry,
                    es::BulkShape::of(&settings.templates),
                    &ml::forecast_documents(&index, &forecasts),
                )
                .await?;
            }
            let instruments: std::collections::BTreeSet<u64> =
                forecasts.iter().map(|f| f.instrument_token).collect();
            println!(
                "{}",
                serde_json::json!({
                    "instruments": instruments.len(),
                    "step_seconds": step_seconds,
                    "forecasts": forecasts.len(),
                    "skipped": skipped,
                    "lake_object": object,
                    "indexed": indexed,
                })
            );
            Ok(())
        }
    }
}
