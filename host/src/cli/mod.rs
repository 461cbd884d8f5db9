//! The `stockpipe` command line: one module per subcommand, each with its arguments and handler.

mod bench;
mod bq;
mod broker;
mod check;
mod guest;
mod input;
mod kibana;
mod ml;
mod run;
mod simulate;
mod topics;
mod upload;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stockpipe",
    version,
    about = "Stream stock ticks from Kafka through sandboxed wasm guests (validate → enrich → route) into Elasticsearch, a lake (directory or GCS) and topics; BigQuery ML and its offline twin"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the pipeline. With no --brokers it starts an in-process Kafka (librdkafka's mock
    /// cluster), so `stockpipe run --input data/stock_data_sample.json --once` works offline.
    Run(run::RunArgs),
    /// Produce ticks from a file (JSON array or NDJSON) to a topic, paced.
    Produce(topics::ProduceArgs),
    /// Print messages of a topic (with their headers, e.g. the dead-letter reasons).
    Consume(topics::ConsumeArgs),
    /// Write simulated ticks in the sample's format, deterministic per seed.
    Simulate(simulate::SimulateArgs),
    /// Upload a file of ticks to the lake's store (gs://bucket/object, or a path) as
    /// newline-delimited JSON, the form a BigQuery external table reads. A JSON array (the sample's
    /// form) is converted on the way.
    Upload(upload::UploadArgs),
    /// The BigQuery ML models computed offline from the lake: the last_price regression and
    /// ARIMA forecasts per instrument.
    #[command(subcommand)]
    Ml(ml::MlCommand),
    /// BigQuery ML: print the statements of sql/ rendered, or submit them.
    #[command(subcommand)]
    Bq(bq::BqCommand),
    /// The input's messages as the pipeline reads them (`input check FILE`).
    #[command(subcommand)]
    Input(input::InputCommand),
    /// Work with guest components.
    #[command(subcommand)]
    Guest(guest::GuestCommand),
    /// Kibana: load the stockpipe dashboard (data views, visualizations) through its API.
    #[command(subcommand)]
    Kibana(kibana::KibanaCommand),
    /// Try every dependency the configuration names — Kafka (brokers, credentials, the input
    /// topic and its partitions, the output topics, the group coordinator), Elasticsearch
    /// (version, rights), the lake (a probe object written and deleted) — one line each, `ok` or
    /// the whole cause; exits 1 if any fails.
    Check(check::CheckArgs),
    /// Serve librdkafka's mock cluster in a process of its own (the pipeline's topics; prints its
    /// bootstrap address), for several hosts to share on one machine.
    Broker(broker::BrokerArgs),
    /// Print performance figures as JSON lines.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging()?;
    match cli.command {
        Command::Run(args) => block_on(run::run(args)),
        Command::Produce(args) => block_on(topics::produce(args)),
        Command::Consume(args) => block_on(topics::consume(args)),
        Command::Simulate(args) => simulate::simulate(args),
        Command::Upload(args) => block_on(upload::upload(args)),
        Command::Ml(command) => block_on(ml::ml(command)),
        Command::Bq(command) => block_on(bq::bq(command)),
        Command::Guest(command) => guest::guest(command),
        Command::Input(command) => input::input(command),
        Command::Kibana(command) => block_on(kibana::kibana(command)),
        Command::Bench(command) => bench::bench(command),
        Command::Broker(args) => block_on(broker::broker(args)),
        Command::Check(args) => block_on(check::check(args)),
    }
}

/// Runs an async subcommand on the host's runtime: two worker threads (the machine's cores).
fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
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
