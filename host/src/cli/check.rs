//! `stockpipe check`: one line per dependency the configuration names — `ok` or the whole cause.

use clap::Args;
use std::path::PathBuf;
use stockpipe::config::Config;

#[derive(Args)]
pub struct CheckArgs {
    /// TOML configuration (STOCKPIPE_<SECTION>_<KEY> variables apply over it, secrets come from
    /// the environment, as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, over the config's.
    #[arg(long)]
    pub brokers: Option<String>,
    /// One JSON object instead of lines: {"ok": bool, "checks": [{"name", "ok", "detail"}]}.
    #[arg(long)]
    pub json: bool,
    /// How long each Kafka request may take, in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// Prints the checks; fails (exit 1) when any did.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let mut config = Config::load_with_env(args.config.as_deref(), std::env::vars())?;
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    config.validate()?;
    anyhow::ensure!(
        !config.kafka.brokers.is_empty(),
        "kafka.brokers is empty: `check` tries a real cluster (the embedded one needs no check)"
    );
    let timeout = std::time::Duration::from_secs(args.timeout_secs);
    let brokers = config.kafka.brokers.clone();
    let checks = stockpipe::tools::check::run(&config, &brokers, timeout).await;
    let ok = checks.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::json!({ "ok": ok, "checks": checks }));
    } else {
        for c in &checks {
            let verdict = if c.ok { "ok    " } else { "FAILED" };
            println!("{verdict} {:<13} {}", c.name, c.detail);
        }
    }
    if !ok {
        let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        anyhow::bail!("check failed: {}", failed.join(", "));
    }
    Ok(())
}
