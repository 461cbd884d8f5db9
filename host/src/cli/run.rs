//! `stockpipe run`: the pipeline, on a broker or on the embedded cluster with a replayed file or a
//! simulated market.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::config::Config;
use stockpipe::source::embedded::{self, EmbeddedKafka};
use stockpipe::source::replay::{self, Pace};

#[derive(Args)]
pub struct RunArgs {
    /// TOML configuration (see stockpipe.example.toml); flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers; omit to use the embedded mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Where the lake is: a directory, file:///path or gs://bucket/prefix.
    #[arg(long, value_name = "URL")]
    pub lake: Option<String>,
    /// Elasticsearch URL (http(s)://host:port); credentials from STOCKPIPE_ES_API_KEY or
    /// STOCKPIPE_ES_USERNAME/STOCKPIPE_ES_PASSWORD.
    #[arg(long, value_name = "URL")]
    pub es_url: Option<String>,
    /// Directory with validate.wasm, enrich.wasm and route.wasm (default: the guests built into this binary).
    #[arg(long)]
    pub guests: Option<PathBuf>,
    /// Replay this file (JSON array or NDJSON) into the topic before consuming.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Exit once everything in the topic at start-up is processed and committed.
    #[arg(long)]
    pub once: bool,
    /// With --once: exit 0 even when the broker had deleted offsets the group never stored
    /// (retention, or the embedded cluster's 5 MiB a partition). They are still logged, counted
    /// and listed in the summary's `lost_ranges`; without this flag such a run exits 1.
    #[arg(long, requires = "once")]
    pub accept_lost_offsets: bool,
    /// Feed the topic with simulated ticks, this many per second, stamped with the clock (a live
    /// market for the offline mode and the dashboard).
    #[arg(long, value_name = "TICKS_PER_SECOND", conflicts_with = "once")]
    pub simulate: Option<f64>,
    /// Instruments of the simulated market.
    #[arg(long, default_value_t = 20, requires = "simulate")]
    pub simulate_instruments: usize,
    /// Seed of the simulated market (default: a new one each run).
    #[arg(long, requires = "simulate")]
    pub simulate_seed: Option<u64>,
    /// Serve the HTTP API and the dashboard on HOST:PORT: GET / (live dashboard), /metrics
    /// (Prometheus), /health, /ready, /guests, /api/live; POST /guests/<name>/reload.
    #[arg(long)]
    pub http: Option<String>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // From here on SIGINT and SIGTERM ask for a graceful stop (the replay and start-up included).
    let shutdown = stockpipe::service::stop_signal();
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
    let embedded = if k.brokers.is_empty() {
        let partitions = payloads.as_ref().map_or(k.embedded_partitions, |input| {
            embedded::partitions_for_replay(k.embedded_partitions, &input.payloads)
        });
        if partitions > k.embedded_partitions {
            tracing::info!(
                partitions,
                "the embedded cluster keeps 5 MiB per partition: sizing the topic to hold the whole input"
            );
        }
        let cluster = EmbeddedKafka::for_pipeline(k, partitions)?;
        tracing::info!(brokers = %cluster.bootstrap_servers(), "embedded Kafka (mock cluster) started");
        Some(cluster)
    } else {
        None
    };
    let brokers = embedded
        .as_ref()
        .map_or_else(|| k.brokers.clone(), EmbeddedKafka::bootstrap_servers);
    let mut input_refused = Vec::new();
    if let (Some(path), Some(input)) = (&args.input, &payloads) {
        let producer = stockpipe::source::kafka::producer(&brokers)?;
        let replayed = match &embedded {
            Some(cluster) => cluster.replay(&producer, &input.payloads).await?,
            None => {
                replay::produce_all(&producer, &k.topic, &input.payloads, Pace::Max, |_| {}).await?
            }
        };
        input_refused = replayed.refusals(input);
        tracing::info!(sent = replayed.sent, refused = input_refused.len(), topic = %k.topic, input = %path.display(), "input replayed into the topic");
    }
    let feed = match args.simulate {
        Some(rate) => {
            let producer = stockpipe::source::kafka::producer(&brokers)?;
            let options = stockpipe::source::simulate::SimulateOptions {
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
    let registry = Arc::new(stockpipe::chain::swap::GuestRegistry::default());
    let summary =
        stockpipe::service::run(config, &brokers, args.once, registry, http, shutdown).await;
    if let Some(feed) = feed {
        feed.abort();
    }
    let mut summary = summary?;
    summary.input_refused = input_refused;
    println!("{}", serde_json::to_string(&summary)?);
    drop(embedded);
    if args.once && !summary.lost_ranges.is_empty() && !args.accept_lost_offsets {
        let ranges: Vec<String> = summary
            .lost_ranges
            .iter()
            .map(|l| format!("partition {} offsets {}..{}", l.partition, l.from, l.to))
            .collect();
        anyhow::bail!(
            "{} ticks were lost: the broker deleted them before this group stored them ({}); the lake and the index do not have them. Replay them from their source, or pass --accept-lost-offsets to accept the gap",
            summary.counts.offsets_lost,
            ranges.join(", ")
        );
    }
    Ok(())
}
