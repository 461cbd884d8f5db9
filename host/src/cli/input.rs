//! `stockpipe input`: the input's messages as the pipeline reads them.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use stockpipe::config::Config;

#[derive(Subcommand)]
pub enum InputCommand {
    /// How each of a file's first messages is read, one JSON line per tick: the built-in shape
    /// recognised (the sample's, Kite's ticker, Kite's quote API), the event time and whether it
    /// is the tick's own or the Kafka record's, the fields the tick carries — or why the decoder
    /// refuses it, field named. The decoder's view only: the guests' rules (validate) are `guest
    /// test`'s. Exits 0; a count of refusals goes to stderr.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// A file of ticks: NDJSON (one message a line; a line may be a list of ticks) or a JSON array.
    pub file: PathBuf,
    /// The configuration whose `[input]` (and `validate.naive_timestamp_offset_minutes`) say how
    /// times are read; default: the defaults, with STOCKPIPE_* variables over them.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How many messages to read from the start of the file.
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
}

pub fn input(command: InputCommand) -> anyhow::Result<()> {
    match command {
        InputCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let config = Config::load_with_env(args.config.as_deref(), std::env::vars())?;
    config.validate()?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let now_ms = stockpipe::clock::unix_now_us() / 1_000;
    let reports = stockpipe::tools::input_check::check(
        &bytes,
        &config.decode_options()?,
        args.messages,
        now_ms,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    for report in &reports {
        println!("{}", serde_json::to_string(report)?);
    }
    let refused = reports.iter().filter(|r| r.refused.is_some()).count();
    eprintln!(
        "{}: {} ticks in the first {} messages; {refused} refused by the decoder",
        args.file.display(),
        reports.len(),
        args.messages
    );
    Ok(())
}
