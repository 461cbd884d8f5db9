//! `stockpipe guest`: work with guest components.

use anyhow::{Context, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::config::Config;
use stockpipe::runtime::sandbox::Sandbox;
use stockpipe::runtime::{GuestComponent, StageKind};

#[derive(Subcommand)]
pub enum GuestCommand {
    /// Run a component over fixture cases (input.jsonl → expected.jsonl) under the production limits.
    Test {
        /// `validate`, `enrich` or `route` (the built-in component), or a path to a .wasm component.
        guest: String,
        /// Stage of a .wasm file (default: guessed from its file name).
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        fixtures: PathBuf,
    },
}

fn guest_test(guest: &str, stage: Option<&str>, fixtures: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::default();
    let sandbox = Arc::new(Sandbox::new(stockpipe::service::sandbox_limits(&config))?);
    let (kind, bytes, source) = match StageKind::from_name(guest) {
        Some(kind) if stage.is_none() => (
            kind,
            stockpipe::runtime::embedded_component(kind).to_vec(),
            "embedded".to_string(),
        ),
        _ => {
            let path = std::path::Path::new(guest);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let name = stage.unwrap_or(stem);
            let kind = StageKind::ALL
                .into_iter()
                .find(|k| name == k.name() || name.ends_with(&format!("_{}", k.name())))
                .with_context(|| {
                    format!("cannot tell the stage of {guest}; pass --stage validate|enrich|route")
                })?;
            let bytes = std::fs::read(path).with_context(|| format!("reading {guest}"))?;
            (kind, bytes, guest.to_string())
        }
    };
    let component = Arc::new(GuestComponent::load(&sandbox, kind, &bytes, source)?);
    let report = stockpipe::tools::guest_test::run_fixtures(
        sandbox,
        component,
        &config.stage_configs(stockpipe::clock::unix_now_us()),
        fixtures,
    )?;
    for m in &report.mismatches {
        println!("MISMATCH {m}");
    }
    println!(
        "{} cases, {} lines: {} passed, {} failed",
        report.cases,
        report.lines,
        report.lines - report.mismatches.len(),
        report.mismatches.len()
    );
    if !report.mismatches.is_empty() {
        bail!("{} fixture lines did not match", report.mismatches.len());
    }
    Ok(())
}

pub fn guest(command: GuestCommand) -> anyhow::Result<()> {
    match command {
        GuestCommand::Test {
            guest,
            stage,
            fixtures,
        } => guest_test(&guest, stage.as_deref(), &fixtures),
    }
}
