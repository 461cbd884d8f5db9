//! `stockpipe bench`: performance figures as JSON lines.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
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

pub fn bench(command: BenchCommand) -> anyhow::Result<()> {
    use stockpipe::tools::bench_pipeline as b;
    match command {
        BenchCommand::Swap {
            rounds,
            batch,
            shadow_ticks,
        } => {
            let result = stockpipe::tools::bench::swap(rounds, batch, shadow_ticks)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        BenchCommand::Guests {
            ticks,
            batch,
            rounds,
        } => {
            let result = stockpipe::tools::bench::guests(ticks, batch, rounds)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        BenchCommand::Pipeline {
            ticks,
            rate,
            seconds,
            bulk_max_age_ms,
            python,
            python_ticks,
            brokers,
        } => super::block_on(async move {
            let external = brokers.as_deref();
            let host = b::throughput(ticks, external).await?;
            println!("{}", serde_json::to_string(&host)?);
            if rate > 0.0 {
                let exe = std::env::current_exe()?;
                let paced = b::paced(&exe, rate, seconds, bulk_max_age_ms, external).await?;
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
        }),
    }
}
