//! `stockpipe broker`: librdkafka's mock cluster in a process of its own, for several hosts (or
//! other Kafka clients) to share on one machine — e.g. to try a consumer group's failover.

use clap::Args;
use stockpipe::config::Config;
use stockpipe::source::embedded::EmbeddedKafka;

#[derive(Args)]
pub struct BrokerArgs {
    /// Partitions of the tick topic (the dead-letter and alerts topics get one each).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
}

/// Starts the cluster with the pipeline's topics, prints `{"bootstrap_servers": …}` and serves
/// until SIGINT or SIGTERM. It keeps 5 MiB a partition, like the embedded one.
pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1024).contains(&args.partitions),
        "--partitions must be between 1 and 1024"
    );
    let stop = stockpipe::service::stop_signal();
    let kafka = Config::default().kafka;
    let cluster = EmbeddedKafka::for_pipeline(&kafka, args.partitions)?;
    println!(
        "{}",
        serde_json::json!({
            "bootstrap_servers": cluster.bootstrap_servers(),
            "topic": kafka.topic,
            "partitions": args.partitions,
        })
    );
    stop.await;
    Ok(())
}
