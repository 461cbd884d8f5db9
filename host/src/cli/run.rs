//! `stockpipe run`: the pipeline, on a broker or on the embedded cluster with a replayed file or a
//! simulated market.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::config::Config;
use stockpipe::source::backfill::{
    EMBEDDED_WINDOW_BYTES, Gate, InputCheckpoint, ReplayProgress, Window, produce_file,
    produce_resumed_prefix, show_progress,
};
use stockpipe::source::embedded::EmbeddedKafka;
use stockpipe::source::input::InputReader;
use stockpipe::source::kafka::Connection;
use stockpipe::source::replay;

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
    #[arg(long, value_name = "TICKS_PER_SECOND", conflicts_with_all = ["once", "input"])]
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
        // The flag names the one cluster: over the file's url, urls or cloud_id.
        config.elasticsearch.url = url;
        config.elasticsearch.urls.clear();
        config.elasticsearch.cloud_id.clear();
    }
    if args.guests.is_some() {
        config.guests.dir = args.guests;
    }
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    config.validate()?;

    let input = match &args.input {
        Some(path) => Some(InputReader::open(path)?),
        None => None,
    };
    let k = &config.kafka;
    let embedded = if k.brokers.is_empty() {
        let cluster = EmbeddedKafka::for_pipeline(k, k.embedded_partitions)?;
        tracing::info!(brokers = %cluster.bootstrap_servers(), "embedded Kafka (mock cluster) started");
        Some(cluster)
    } else {
        None
    };
    let brokers = embedded
        .as_ref()
        .map_or_else(|| k.brokers.clone(), EmbeddedKafka::bootstrap_servers);
    // Every client of the input cluster connects this way (secrets from the environment).
    let cluster = k.input_connection(&brokers, |name| std::env::var(name).ok())?;
    let telemetry = Arc::new(stockpipe::telemetry::Telemetry::new());
    let progress = Arc::new(ReplayProgress::default());
    let mut input_refused = Vec::new();
    let mut replayed_from = stockpipe::position::Offsets::new();
    let mut beside = None;
    if let (Some(path), Some(reader)) = (&args.input, input) {
        let producer = stockpipe::source::kafka::producer(&cluster)?;
        if embedded.is_some() {
            beside = Some(
                replay_beside(
                    &config, &cluster, path, reader, producer, &telemetry, &progress,
                )
                .await?,
            );
        } else {
            let replayed =
                replay_first(&cluster, &k.topic, path, reader, producer, &progress).await?;
            input_refused = replayed.refused;
            replayed_from = replayed.starts;
        }
    }
    let (replay, feed_input, resumed) = match beside {
        Some(b) => (Some(b.replay), Some(b.feed), b.resumed),
        None => (None, None, None),
    };
    let shown = args.input.as_ref().and_then(|_| {
        let telemetry = telemetry.clone();
        show_progress(progress.clone(), move || telemetry.counts().consumed)
    });
    let feed = match args.simulate {
        Some(rate) => {
            let producer = stockpipe::source::kafka::producer(&cluster)?;
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
    let extras = stockpipe::service::Extras {
        telemetry,
        input: feed_input,
        replayed_from,
    };
    let summary = stockpipe::service::run_with(
        config, &brokers, args.once, registry, http, shutdown, extras,
    )
    .await;
    if let Some(feed) = feed {
        feed.abort();
    }
    if let Some(shown) = shown {
        shown.abort();
        let _ = shown.await;
        eprint!("\r\x1b[2K");
    }
    if let Some(replay) = replay {
        if replay.is_finished() {
            input_refused = replay.await.unwrap_or_default();
        } else {
            replay.abort();
        }
    }
    let mut summary = summary?;
    summary.input_refused = input_refused;
    if let Some(checkpoint) = resumed.filter(|_| args.once && summary.counts.consumed == 0) {
        tracing::warn!(
            %checkpoint,
            "the input was already processed to its end by an earlier run: nothing to do (delete the checkpoint to process it again)"
        );
    }
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

/// Commits `offsets` for `group` (before any member joins: the group then starts there).
fn commit_for_group(
    cluster: &Connection,
    group: &str,
    topic: &str,
    offsets: &stockpipe::position::Offsets,
) -> anyhow::Result<()> {
    let (consumer, _) = stockpipe::source::kafka::client(cluster, Some(group))
        .context("creating a client to commit the checkpoint's offsets")?;
    stockpipe::source::kafka::commit_positions(&consumer, topic, offsets)
        .context("committing the checkpoint's offsets")
}

/// A file replayed beside the pipeline (the embedded cluster).
struct Beside {
    /// The replay; it answers the ticks the broker refused.
    replay: tokio::task::JoinHandle<Vec<replay::InputRefusal>>,
    feed: stockpipe::source::backfill::InputFeed,
    /// The checkpoint this run resumes from, if any (to name it).
    resumed: Option<String>,
}

/// Starts replaying `path` into the embedded cluster beside the pipeline, at most a window ahead of
/// what it has consumed, resuming from the checkpoint a run over the same file left beside the
/// lake (its offsets committed for the group before the group starts).
async fn replay_beside(
    config: &Config,
    cluster: &Connection,
    path: &std::path::Path,
    mut reader: InputReader,
    producer: rdkafka::producer::FutureProducer,
    telemetry: &Arc<stockpipe::telemetry::Telemetry>,
    progress: &Arc<ReplayProgress>,
) -> anyhow::Result<Beside> {
    let k = &config.kafka;
    let partitions = k.embedded_partitions;
    let store = stockpipe::sink::store::LakeStore::open(
        &config.lake.location()?,
        config.lake.gcs_options(),
    )
    .await?;
    let checkpoint = InputCheckpoint::new(path, reader.size(), partitions)
        .load(&store, &k.topic)
        .await?;
    let mut resumed = None;
    if !checkpoint.committed.is_empty() {
        tokio::task::block_in_place(|| {
            commit_for_group(cluster, &k.group_id, &k.topic, &checkpoint.committed)
        })?;
        tracing::info!(input = %path.display(), committed = ?checkpoint.committed, "resuming the input where the sinks had acknowledged it");
        resumed = Some(format!(
            "{}/{}",
            config.lake.url.trim_end_matches('/'),
            checkpoint.object_name(&k.topic)
        ));
    }
    let prefix = if checkpoint.committed.is_empty() {
        None
    } else {
        let mut prefix_reader = InputReader::open(path)?;
        let prefix = produce_resumed_prefix(
            &producer,
            &k.topic,
            partitions,
            &mut prefix_reader,
            &checkpoint.committed,
        )
        .await
        .context("producing the input's ticks below the resumed offsets")?;
        tracing::info!(
            sent = prefix.sent,
            "the input's ticks below the resumed offsets are in the topic; the pipeline starts at those offsets"
        );
        Some(prefix)
    };
    let prefix_refused = prefix.as_ref().map_or_else(Vec::new, |p| p.refused.clone());
    let (ends_tx, ends_rx) = tokio::sync::oneshot::channel();
    let gate = Gate {
        window: Window::new(EMBEDDED_WINDOW_BYTES, 0),
        consumed: Box::new({
            let telemetry = telemetry.clone();
            move || telemetry.counts().consumed
        }),
        resume: checkpoint.committed.clone(),
        prefix,
    };
    let (topic, progress) = (k.topic.clone(), progress.clone());
    let replay = tokio::spawn(async move {
        let replayed = produce_file(
            &producer,
            &topic,
            partitions,
            &mut reader,
            Some(gate),
            &progress,
        )
        .await;
        let (ends, refused) = match replayed {
            Ok(r) => (Ok(r.ends), r.refused),
            Err(e) => (Err(e), Vec::new()),
        };
        let _ = ends_tx.send(ends);
        let mut all = prefix_refused;
        all.extend(refused);
        all
    });
    Ok(Beside {
        replay,
        feed: stockpipe::source::backfill::InputFeed::new(ends_rx, checkpoint),
        resumed,
    })
}

/// Replays `path` into a real broker's topic before the pipeline starts (the broker keeps it, as
/// far as its retention allows); returns what it did: where each partition's ticks start, and the
/// ticks the broker refused.
async fn replay_first(
    cluster: &Connection,
    topic: &str,
    path: &std::path::Path,
    mut reader: InputReader,
    producer: rdkafka::producer::FutureProducer,
    progress: &ReplayProgress,
) -> anyhow::Result<stockpipe::source::backfill::FileReplayed> {
    let (client, _) = stockpipe::source::kafka::client(cluster, None)?;
    let ends = tokio::task::block_in_place(|| {
        stockpipe::source::kafka::high_watermarks(
            &client,
            topic,
            std::time::Duration::from_secs(10),
        )
    })
    .with_context(|| {
        format!(
            "reading the partitions of {topic} at {}",
            cluster.describe()
        )
    })?;
    let partitions = i32::try_from(ends.len()).unwrap_or(i32::MAX);
    let replayed = produce_file(&producer, topic, partitions, &mut reader, None, progress).await?;
    tracing::info!(sent = replayed.sent, refused = replayed.refused.len(), topic, input = %path.display(), "input replayed into the topic");
    Ok(replayed)
}
