//! `stockpipe simulate`: a file of simulated ticks.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 50)]
    pub instruments: usize,
    #[arg(long, default_value_t = 100)]
    pub ticks: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file; `.ndjson`/`.jsonl` writes NDJSON, anything else the sample's JSON array.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use stockpipe::source::simulate::{SimulateOptions, render, simulate};
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
