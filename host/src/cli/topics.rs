//! `stockpipe produce` and `stockpipe consume`: ticks into a topic, messages out of one.

use anyhow::bail;
use clap::Args;
use std::path::PathBuf;
use stockpipe::config::Config;
use stockpipe::source::kafka::Connection;
use stockpipe::source::replay::{self, Pace};

#[derive(Args)]
pub struct ProduceArgs {
    /// File of ticks: the sample's JSON array or NDJSON.
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, default_value = "stock-stream")]
    pub topic: String,
    /// Messages per second.
    #[arg(long, conflicts_with_all = ["speed", "max"])]
    pub rate: Option<f64>,
    /// Replay at the ticks' own pace times this factor (2 = twice as fast).
    #[arg(long, conflicts_with = "max")]
    pub speed: Option<f64>,
    /// As fast as possible (the default).
    #[arg(long)]
    pub max: bool,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[arg(long, default_value = "stock-stream")]
    pub topic: String,
    /// One JSON object per message (partition, offset, key, headers, payload).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max: Option<u64>,
}

/// Which Kafka, and how to reach it.
#[derive(Args)]
pub struct ClusterArgs {
    /// Kafka bootstrap servers (default: the config's `kafka.brokers`, else 127.0.0.1:9092).
    #[arg(long)]
    pub brokers: Option<String>,
    /// TOML configuration whose `[kafka]` security settings (TLS, SASL, `[kafka.librdkafka]`)
    /// apply; secrets come from the environment (STOCKPIPE_KAFKA_SASL_PASSWORD, …), as for `run`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ClusterArgs {
    fn connection(&self) -> anyhow::Result<Connection> {
        let config = Config::load_with_env(self.config.as_deref(), std::env::vars())?;
        config.kafka.validate()?;
        let brokers = match (&self.brokers, config.kafka.brokers.as_str()) {
            (Some(b), _) => b.clone(),
            (None, "") => "127.0.0.1:9092".to_string(),
            (None, b) => b.to_string(),
        };
        Ok(config
            .kafka
            .input_connection(&brokers, |name| std::env::var(name).ok())?)
    }
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let pace = match (args.rate, args.speed) {
        (Some(r), _) if !(r > 0.0 && r.is_finite()) => bail!("--rate must be a positive number"),
        (_, Some(s)) if !(s > 0.0 && s.is_finite()) => bail!("--speed must be a positive number"),
        (Some(r), _) => Pace::Rate(r),
        (_, Some(s)) => Pace::Speed(s),
        _ => Pace::Max,
    };
    let input = replay::read_input(&args.input)?;
    let payloads = &input.payloads;
    let producer = stockpipe::source::kafka::producer(&args.cluster.connection()?)?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(payloads.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let replayed = replay::produce_all(&producer, &args.topic, payloads, pace, |n| {
        bar.set_position(n)
    })
    .await?;
    bar.finish_and_clear();
    let refused = replayed.refusals(&input);
    let mut line = serde_json::json!({"produced": replayed.sent, "topic": args.topic});
    if !refused.is_empty() {
        line["refused"] = serde_json::to_value(&refused)?;
    }
    println!("{line}");
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let group = format!("stockpipe-consume-{}", std::process::id());
    let cluster = args.cluster.connection()?;
    let consumer = stockpipe::source::kafka::consumer(&cluster, &group, &args.topic)?;
    let mut seen = 0u64;
    let shutdown = stockpipe::service::stop_signal();
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
