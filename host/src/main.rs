//! The `stockpipe` command: a thin clap layer over the library.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::config::Config;
use stockpipe::runtime::sandbox::Sandbox;
use stockpipe::runtime::{GuestComponent, StageKind};
use stockpipe::source::kafka::EmbeddedKafka;
use stockpipe::source::replay::{self, Pace};

#[derive(Parser)]
#[command(
    name = "stockpipe",
    version,
    about = "Stream stock ticks from Kafka through sandboxed wasm guests (validate → enrich → route) into Elasticsearch, a lake (directory or GCS) and topics; BigQuery ML and its offline twin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline. With no --brokers it starts an in-process Kafka (librdkafka's mock
    /// cluster), so `stockpipe run --input data/stock_data_sample.json --once` works offline.
    Run(RunArgs),
    /// Produce ticks from a file (JSON array or NDJSON) to a topic, paced.
    Produce(ProduceArgs),
    /// Print messages of a topic (with their headers, e.g. the dead-letter reasons).
    Consume(ConsumeArgs),
    /// Write simulated ticks in the sample's format, deterministic per seed.
    Simulate(SimulateArgs),
    /// Upload a file of ticks to the lake's store (gs://bucket/object, or a path) as
    /// newline-delimited JSON, the form a BigQuery external table reads. A JSON array (the sample's
    /// form) is converted on the way.
    Upload(UploadArgs),
    /// The BigQuery ML models computed offline from the lake: the last_price regression and
    /// ARIMA forecasts per instrument.
    #[command(subcommand)]
    Ml(MlCommand),
    /// BigQuery ML: print the statements of sql/ rendered, or submit them.
    #[command(subcommand)]
    Bq(BqCommand),
    /// Work with guest components.
    #[command(subcommand)]
    Guest(GuestCommand),
    /// Kibana: load the stockpipe dashboard (data views, visualizations) through its API.
    #[command(subcommand)]
    Kibana(KibanaCommand),
    /// Print performance figures as JSON lines.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration (see stockpipe.example.toml); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers; omit to use the embedded mock cluster.
    #[arg(long)]
    brokers: Option<String>,
    /// Where the lake is: a directory, file:///path or gs://bucket/prefix.
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
    /// Elasticsearch URL (http(s)://host:port); credentials from STOCKPIPE_ES_API_KEY or
    /// STOCKPIPE_ES_USERNAME/STOCKPIPE_ES_PASSWORD.
    #[arg(long, value_name = "URL")]
    es_url: Option<String>,
    /// Directory with validate.wasm, enrich.wasm and route.wasm (default: the guests built into this binary).
    #[arg(long)]
    guests: Option<PathBuf>,
    /// Replay this file (JSON array or NDJSON) into the topic before consuming.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Exit once everything in the topic at start-up is processed and committed.
    #[arg(long)]
    once: bool,
    /// Feed the topic with simulated ticks, this many per second, stamped with the clock (a live
    /// market for the offline mode and the dashboard).
    #[arg(long, value_name = "TICKS_PER_SECOND", conflicts_with = "once")]
    simulate: Option<f64>,
    /// Instruments of the simulated market.
    #[arg(long, default_value_t = 20, requires = "simulate")]
    simulate_instruments: usize,
    /// Seed of the simulated market (default: a new one each run).
    #[arg(long, requires = "simulate")]
    simulate_seed: Option<u64>,
    /// Serve the HTTP API and the dashboard on HOST:PORT: GET / (live dashboard), /metrics
    /// (Prometheus), /health, /ready, /guests, /api/live; POST /guests/<name>/reload.
    #[arg(long)]
    http: Option<String>,
}

#[derive(Args)]
struct UploadArgs {
    /// The file: a JSON array of ticks or NDJSON.
    file: PathBuf,
    /// gs://bucket/path/object.ndjson, file:///path or a plain path.
    destination: String,
    /// Cloud Storage endpoint (an emulator); default: $STORAGE_EMULATOR_HOST, else Google's with
    /// Application Default Credentials.
    #[arg(long, value_name = "URL")]
    gcs_endpoint: Option<String>,
}

#[derive(Args)]
struct ProduceArgs {
    /// File of ticks: the sample's JSON array or NDJSON.
    #[arg(long)]
    input: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "stock-stream")]
    topic: String,
    /// Messages per second.
    #[arg(long, conflicts_with_all = ["speed", "max"])]
    rate: Option<f64>,
    /// Replay at the ticks' own pace times this factor (2 = twice as fast).
    #[arg(long, conflicts_with = "max")]
    speed: Option<f64>,
    /// As fast as possible (the default).
    #[arg(long)]
    max: bool,
}

#[derive(Args)]
struct ConsumeArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "stock-stream")]
    topic: String,
    /// One JSON object per message (partition, offset, key, headers, payload).
    #[arg(long)]
    json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
}

#[derive(Args)]
struct SimulateArgs {
    #[arg(long, default_value_t = 50)]
    instruments: usize,
    #[arg(long, default_value_t = 100)]
    ticks: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file; `.ndjson`/`.jsonl` writes NDJSON, anything else the sample's JSON array.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Subcommand)]
enum GuestCommand {
    /// Run a component over fixture cases (input.jsonl → expected.jsonl) under the production limits.
    Test {
        /// `validate`, `enrich` or `route` (the built-in component), or a path to a .wasm component.
        guest: String,
        /// Stage of a .wasm file (default: guessed from its file name).
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        fixtures: PathBuf,
    },
}

#[derive(Args)]
struct SqlArgs {
    /// Google Cloud project of the dataset (default: $GOOGLE_CLOUD_PROJECT).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", default_value = "my-project")]
    project: String,
    /// BigQuery dataset for the table and models.
    #[arg(long, default_value = "stockpipe")]
    dataset: String,
    /// The lake's bucket (as in --lake gs://BUCKET/PREFIX).
    #[arg(long, default_value = "stockpipe-lake")]
    bucket: String,
    /// The lake's prefix in the bucket.
    #[arg(long, default_value = "stockpipe")]
    prefix: String,
    /// Only these statements (file names without .sql), in their usual order.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    only: Vec<String>,
}

impl SqlArgs {
    fn params(&self) -> stockpipe::bigquery::SqlParams {
        stockpipe::bigquery::SqlParams {
            project: self.project.clone(),
            dataset: self.dataset.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

#[derive(Args)]
struct LakeArgs {
    /// The lake: a directory, file:///path or gs://bucket/prefix.
    #[arg(long, default_value = "lake")]
    lake: String,
    /// Cloud Storage endpoint (an emulator); default: $STORAGE_EMULATOR_HOST, else Google's.
    #[arg(long, value_name = "URL")]
    gcs_endpoint: Option<String>,
    /// The topic whose documents the lake holds.
    #[arg(long, default_value = "stock-stream")]
    topic: String,
}

#[derive(Subcommand)]
enum MlCommand {
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
        #[arg(long, default_value_t = 10)]
        horizon: usize,
        #[arg(long, default_value_t = 60)]
        step_seconds: u64,
        /// Width of the prediction interval.
        #[arg(long, default_value_t = 0.9)]
        confidence: f64,
        /// Skip series shorter than this (after regularizing).
        #[arg(long, default_value_t = 12)]
        min_points: usize,
        /// Also index the forecasts in Elasticsearch (credentials as for `run`).
        #[arg(long, value_name = "URL")]
        es_url: Option<String>,
        #[arg(long, default_value = "stock-forecast")]
        index: String,
    },
}

#[derive(Subcommand)]
enum KibanaCommand {
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
    },
}

#[derive(Subcommand)]
enum BqCommand {
    /// Print the rendered statements, in the order `submit` runs them.
    Render(SqlArgs),
    /// Run the statements through the BigQuery REST API (Application Default Credentials), each
    /// to the end before the next; BigQuery's errors are printed as they come.
    Submit {
        #[command(flatten)]
        sql: SqlArgs,
        /// Location of the dataset (every call carries it).
        #[arg(long, default_value = "US")]
        location: String,
        /// Validate each statement without running it (dryRun).
        #[arg(long)]
        dry_run: bool,
        /// Give up on a job after this long.
        #[arg(long, default_value_t = 900)]
        timeout_secs: u64,
        /// BigQuery endpoint (a local or test server, reached without credentials).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The guest chain, wasm vs the same logic linked natively.
    Guests {
        #[arg(long, default_value_t = 200_000)]
        ticks: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Kafka → host → Elasticsearch (embedded broker, an endpoint that acknowledges at once):
    /// backlog throughput; then, paced, produce-to-index latency p50/p99 and the host's peak RSS;
    /// with --python, the per-document Python consumer against the same broker and endpoint.
    Pipeline {
        /// Backlog for the throughput run.
        #[arg(long, default_value_t = 200_000)]
        ticks: usize,
        /// Ticks per second of the paced run (0 = skip it).
        #[arg(long, default_value_t = 20_000.0)]
        rate: f64,
        /// Seconds of the paced run.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// elasticsearch.bulk_max_age_ms of the paced run (bounds the latency of a quiet stream).
        #[arg(long, default_value_t = 200)]
        bulk_max_age_ms: u64,
        /// The per-document baseline script (bench/python_baseline.py), run over --python-ticks.
        #[arg(long)]
        python: Option<PathBuf>,
        #[arg(long, default_value_t = 5_000)]
        python_ticks: usize,
        /// An external broker (host:port, e.g. a Tansu broker) instead of the embedded mock
        /// cluster; each run creates its own topics and group there.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// What a guest hot swap costs: preparing the candidate, its shadow run, and the pause the
    /// pipeline loop feels at the batch boundary.
    Swap {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
        #[arg(long, default_value_t = 1_000)]
        shadow_ticks: usize,
    },
}

/// Logs go to stderr: human-readable on a terminal, one JSON object per line otherwise (a
/// container, a file, a pipe), or as `STOCKPIPE_LOG_FORMAT=json|text` says. `RUST_LOG` filters.
fn init_logging() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let json = match std::env::var(stockpipe::config::LOG_FORMAT_ENV).as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        Ok(other) => bail!("STOCKPIPE_LOG_FORMAT must be json or text, not {other:?}"),
        Err(_) => !std::io::stderr().is_terminal(),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        logs.init();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging()?;
    match cli.command {
        Command::Simulate(args) => simulate(args),
        Command::Guest(GuestCommand::Test {
            guest,
            stage,
            fixtures,
        }) => guest_test(&guest, stage.as_deref(), &fixtures),
        Command::Bench(BenchCommand::Swap {
            rounds,
            batch,
            shadow_ticks,
        }) => {
            let result = stockpipe::bench::swap(rounds, batch, shadow_ticks)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Guests {
            ticks,
            batch,
            rounds,
        }) => {
            let result = stockpipe::bench::guests(ticks, batch, rounds)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        command => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(async move {
                match command {
                    Command::Run(args) => run(args).await,
                    Command::Produce(args) => produce(args).await,
                    Command::Consume(args) => consume(args).await,
                    Command::Upload(args) => upload(args).await,
                    Command::Bq(command) => bq(command).await,
                    Command::Ml(command) => ml(command).await,
                    Command::Kibana(command) => kibana(command).await,
                    Command::Bench(BenchCommand::Pipeline {
                        ticks,
                        rate,
                        seconds,
                        bulk_max_age_ms,
                        python,
                        python_ticks,
                        brokers,
                    }) => {
                        use stockpipe::bench_pipeline as b;
                        let external = brokers.as_deref();
                        let host = b::throughput(ticks, external).await?;
                        println!("{}", serde_json::to_string(&host)?);
                        if rate > 0.0 {
                            let exe = std::env::current_exe()?;
                            let paced =
                                b::paced(&exe, rate, seconds, bulk_max_age_ms, external).await?;
                            println!("{}", serde_json::to_string(&paced)?);
                        }
                        if let Some(script) = python {
                            let baseline = b::python_baseline(
                                &script,
                                python_ticks,
                                Some(host.sink_ticks_per_s),
                                external,
                            )
                            .await?;
                            println!("{}", serde_json::to_string(&baseline)?);
                        }
                        Ok(())
                    }
                    _ => unreachable!("handled above"),
                }
            }),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = Config::load_with_env(args.config.as_deref(), std::env::vars())?;
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    if let Some(lake) = args.lake {
        config.lake.url = lake;
    }
    if let Some(url) = args.es_url {
        config.elasticsearch.url = url;
    }
    if args.guests.is_some() {
        config.guests.dir = args.guests;
    }
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    config.validate()?;

    let payloads = match &args.input {
        Some(input) => Some(replay::read_input(input)?),
        None => None,
    };
    let k = &config.kafka;
    let mut embedded_partitions = k.embedded_partitions;
    let embedded = if k.brokers.is_empty() {
        let partitions = match &payloads {
            Some(p) => stockpipe::source::replay::embedded_partitions_for(k.embedded_partitions, p),
            None => k.embedded_partitions,
        };
        embedded_partitions = partitions;
        if partitions > k.embedded_partitions {
            tracing::info!(
                partitions,
                "the embedded cluster keeps 5 MiB per partition: sizing the topic to hold the whole input"
            );
        }
        let cluster = EmbeddedKafka::start(&[
            (k.topic.as_str(), partitions),
            (k.dead_letter_topic.as_str(), 1),
            (k.alerts_topic.as_str(), 1),
        ])?;
        tracing::info!(brokers = %cluster.bootstrap_servers(), "embedded Kafka (mock cluster) started");
        Some(cluster)
    } else {
        None
    };
    let brokers = embedded
        .as_ref()
        .map_or_else(|| k.brokers.clone(), EmbeddedKafka::bootstrap_servers);
    if let (Some(input), Some(payloads)) = (&args.input, &payloads) {
        let producer = stockpipe::source::kafka::producer(&brokers)?;
        let sent = replay::produce_all(&producer, &k.topic, payloads, Pace::Max, |_| {}).await?;
        tracing::info!(sent, topic = %k.topic, input = %input.display(), "input replayed into the topic");
        if embedded.is_some() {
            let partitions = embedded_partitions;
            let dropped = tokio::task::block_in_place(|| {
                stockpipe::source::kafka::embedded_dropped(&producer, &k.topic, partitions)
            })?;
            anyhow::ensure!(
                dropped == 0,
                "the embedded Kafka cluster dropped {dropped} of the {sent} replayed messages (it keeps 5 MiB per partition): \
                 raise kafka.embedded_partitions (now {partitions}) or use a real broker (--brokers)"
            );
        }
    }
    let feed = match args.simulate {
        Some(rate) => {
            let producer = stockpipe::source::kafka::producer(&brokers)?;
            let options = stockpipe::simulate::SimulateOptions {
                instruments: args.simulate_instruments,
                seed: args.simulate_seed.unwrap_or_else(stockpipe::random_u64),
                ..Default::default()
            };
            tracing::info!(rate, topic = %k.topic, instruments = options.instruments, "feeding simulated ticks");
            let topic = k.topic.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = replay::feed_simulated(producer, topic, rate, options).await {
                    tracing::error!(error = %format!("{e:#}"), "the simulated feed stopped");
                }
            }))
        }
        None => None,
    };
    let http = match config.http.listen.as_str() {
        "" => None,
        addr => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP API to {addr} (http.listen)"))?,
        ),
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let registry = Arc::new(stockpipe::runtime::swap::GuestRegistry::default());
    let summary =
        stockpipe::service::run(config, &brokers, args.once, registry, http, shutdown).await;
    if let Some(feed) = feed {
        feed.abort();
    }
    let summary = summary?;
    println!("{}", serde_json::to_string(&summary)?);
    drop(embedded);
    Ok(())
}

async fn kibana(command: KibanaCommand) -> anyhow::Result<()> {
    let KibanaCommand::Import {
        kibana_url,
        file,
        space,
        no_overwrite,
        wait_secs,
    } = command;
    let objects = match &file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => stockpipe::kibana::SAVED_OBJECTS.as_bytes().to_vec(),
    };
    let options = stockpipe::kibana::ImportOptions {
        url: kibana_url,
        space,
        overwrite: !no_overwrite,
        wait: std::time::Duration::from_secs(wait_secs),
        auth: stockpipe::sink::elasticsearch::EsAuth::from_env()?,
    };
    let imported = stockpipe::kibana::import(&options, &objects).await?;
    println!(
        "{}",
        serde_json::json!({"imported": imported, "kibana": options.url})
    );
    Ok(())
}

async fn open_lake(args: &LakeArgs) -> anyhow::Result<stockpipe::sink::store::LakeStore> {
    let location =
        stockpipe::sink::store::LakeLocation::parse(&args.lake).map_err(anyhow::Error::msg)?;
    let gcs = stockpipe::sink::store::GcsOptions {
        endpoint: args.gcs_endpoint.clone(),
        resumable_threshold: 16 << 20,
    };
    Ok(stockpipe::sink::store::LakeStore::open(&location, gcs).await?)
}

async fn ml(command: MlCommand) -> anyhow::Result<()> {
    use stockpipe::ml;
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
            horizon,
            step_seconds,
            confidence,
            min_points,
            es_url,
            index,
        } => {
            anyhow::ensure!((1..=1000).contains(&horizon), "--horizon must be 1..=1000");
            anyhow::ensure!(step_seconds > 0, "--step-seconds must be at least 1");
            anyhow::ensure!(
                confidence > 0.0 && confidence < 1.0,
                "--confidence must be in (0, 1)"
            );
            let store = open_lake(&lake).await?;
            let rows = ml::load_lake(&store, &lake.topic).await?;
            let generated = stockpipe::config::unix_now_us();
            let options = ml::ForecastOptions {
                horizon,
                step_us: step_seconds as i64 * 1_000_000,
                level: confidence,
                min_points: min_points.max(4),
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
            if let Some(url) = es_url {
                let settings = stockpipe::config::ElasticsearchSection {
                    url,
                    ..Default::default()
                }
                .settings(|k| std::env::var(k).ok())?;
                let client = stockpipe::sink::elasticsearch::client(&settings)?;
                stockpipe::sink::elasticsearch::put_templates(&client, settings.retry).await?;
                indexed = stockpipe::sink::elasticsearch::index_documents(
                    &client,
                    settings.retry,
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

async fn bq(command: BqCommand) -> anyhow::Result<()> {
    use stockpipe::bigquery::{BqClient, render, select};
    match command {
        BqCommand::Render(args) => {
            for (name, sql) in select(&args.only)? {
                println!("-- {name}.sql");
                println!("{}", render(name, sql, &args.params())?.trim_end());
                println!();
            }
            Ok(())
        }
        BqCommand::Submit {
            sql,
            location,
            dry_run,
            timeout_secs,
            endpoint,
        } => {
            let params = sql.params();
            let statements = select(&sql.only)?
                .into_iter()
                .map(|(name, text)| Ok((name, render(name, text, &params)?)))
                .collect::<Result<Vec<_>, stockpipe::bigquery::BqError>>()?;
            let mut client = BqClient::new(&params.project, &location, endpoint.as_deref())?;
            client.timeout = std::time::Duration::from_secs(timeout_secs);
            for (name, text) in statements {
                eprintln!("{} {name} …", if dry_run { "checking" } else { "running" });
                let report = client.run(name, &text, dry_run).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
    }
}

async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let gcs = stockpipe::sink::store::GcsOptions {
        endpoint: args.gcs_endpoint,
        resumable_threshold: 16 << 20,
    };
    let report = stockpipe::upload::upload(&args.file, &args.destination, gcs).await?;
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

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let pace = match (args.rate, args.speed) {
        (Some(r), _) if !(r > 0.0 && r.is_finite()) => bail!("--rate must be a positive number"),
        (_, Some(s)) if !(s > 0.0 && s.is_finite()) => bail!("--speed must be a positive number"),
        (Some(r), _) => Pace::Rate(r),
        (_, Some(s)) => Pace::Speed(s),
        _ => Pace::Max,
    };
    let payloads = replay::read_input(&args.input)?;
    let producer = stockpipe::source::kafka::producer(&args.brokers)?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(payloads.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let sent = replay::produce_all(&producer, &args.topic, &payloads, pace, |n| {
        bar.set_position(n)
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::json!({"produced": sent, "topic": args.topic})
    );
    Ok(())
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let group = format!("stockpipe-consume-{}", std::process::id());
    let consumer = stockpipe::source::kafka::consumer(&args.brokers, &group, &args.topic)?;
    let mut seen = 0u64;
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    while args.max.is_none_or(|m| seen < m) {
        let message = tokio::select! {
            m = consumer.recv() => m?,
            _ = &mut shutdown => break,
        };
        seen += 1;
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default());
        if args.json {
            let headers: serde_json::Map<String, serde_json::Value> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let line = serde_json::json!({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                "headers": headers,
                "payload": payload,
            });
            println!("{line}");
        } else {
            println!("{}/{} {}", message.partition(), message.offset(), payload);
        }
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use stockpipe::simulate::{SimulateOptions, render, simulate};
    let ticks = simulate(&SimulateOptions {
        instruments: args.instruments,
        ticks: args.ticks,
        seed: args.seed,
        ..SimulateOptions::default()
    });
    let ndjson = matches!(
        args.out.extension().and_then(|e| e.to_str()),
        Some("ndjson" | "jsonl")
    );
    std::fs::write(&args.out, render(&ticks, ndjson))
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ticks of {} instruments to {}",
        ticks.len(),
        args.instruments,
        args.out.display()
    );
    Ok(())
}

fn guest_test(guest: &str, stage: Option<&str>, fixtures: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::default();
    let sandbox = Arc::new(Sandbox::new(stockpipe::service::sandbox_limits(&config))?);
    let (kind, bytes, source) = match StageKind::from_name(guest) {
        Some(kind) if stage.is_none() => (
            kind,
            stockpipe::runtime::embedded_component(kind).to_vec(),
            "embedded".to_string(),
        ),
        _ => {
            let path = std::path::Path::new(guest);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let name = stage.unwrap_or(stem);
            let kind = StageKind::ALL
                .into_iter()
                .find(|k| name == k.name() || name.ends_with(&format!("_{}", k.name())))
                .with_context(|| {
                    format!("cannot tell the stage of {guest}; pass --stage validate|enrich|route")
                })?;
            let bytes = std::fs::read(path).with_context(|| format!("reading {guest}"))?;
            (kind, bytes, guest.to_string())
        }
    };
    let component = Arc::new(GuestComponent::load(&sandbox, kind, &bytes, source)?);
    let report = stockpipe::guest_test::run_fixtures(
        sandbox,
        component,
        &config.stage_configs(stockpipe::config::unix_now_us()),
        fixtures,
    )?;
    for m in &report.mismatches {
        println!("MISMATCH {m}");
    }
    println!(
        "{} cases, {} lines: {} passed, {} failed",
        report.cases,
        report.lines,
        report.lines - report.mismatches.len(),
        report.mismatches.len()
    );
    if !report.mismatches.is_empty() {
        bail!("{} fixture lines did not match", report.mismatches.len());
    }
    Ok(())
}
