//! `stockpipe produce` and `stockpipe consume`: ticks into a topic, messages out of one.

use anyhow::bail;
use clap::Args;
use std::path::PathBuf;
use stockpipe::source::replay::{self, Pace};

#[derive(Args)]
pub struct ProduceArgs {
    /// File of ticks: the sample's JSON array or NDJSON.
    #[arg(long)]
    pub input: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
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
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "stock-stream")]
    pub topic: String,
    /// One JSON object per message (partition, offset, key, headers, payload).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub max: Option<u64>,
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
    let producer = stockpipe::source::kafka::producer(&args.brokers)?;
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
    let consumer = stockpipe::source::kafka::consumer(&args.brokers, &group, &args.topic)?;
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
