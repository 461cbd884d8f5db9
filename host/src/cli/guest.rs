//! `stockpipe guest`: an author's kit — new → test → diff against the lake's history → promote.

use super::ml::{LakeArgs, open_lake};
use anyhow::{Context, bail};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stockpipe::config::Config;
use stockpipe::runtime::sandbox::Sandbox;
use stockpipe::runtime::{GuestComponent, StageKind};

#[derive(Subcommand)]
pub enum GuestCommand {
    /// Write a new guest crate into DIR, standalone (its own workspace): the stage's shipped guest
    /// as a starting point — lib.rs adapter, logic.rs with native unit tests, fixtures/ — with the
    /// WIT and the tick model vendored at this host's version. It builds with
    /// `cargo build --release --target wasm32-wasip2` and its tests pass as generated.
    New {
        /// validate, enrich, route or alert.
        stage: String,
        /// A new (or empty) directory; the crate is named after it.
        dir: PathBuf,
    },
    /// Run a component over fixture cases (input.jsonl → expected.jsonl) under the production
    /// limits, reporting every mismatch; or, with --record, write what it answers as expected.jsonl.
    Test {
        /// `validate`, `enrich`, `route`, `aggregate` or `alert` (the built-in component), or a path to a .wasm component.
        guest: String,
        /// Stage of a .wasm file (default: guessed from its file name).
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        fixtures: PathBuf,
        /// Write each case's expected.jsonl from this component's outcomes (use a known-good build;
        /// the files are overwritten).
        #[arg(long)]
        record: bool,
    },
    /// Replay the lake's history through two versions of one stage and report what changed:
    /// verdict flips by reason, enriched fields beyond the tolerance, route changes, faults — with
    /// examples. Reads the lake one object at a time (bounded memory). Prints a summary on stderr
    /// and the JSON report on stdout (or into --report).
    ///
    /// With --stage alert: the alert events two rule sets (--rules, --new-rules) or two alert
    /// guests would have raised over the lake's ticks and closed bars, per partition in the
    /// order the stage read them, matched by alert id: events only one side raised, and events
    /// both raised with another value or threshold, by rule and state.
    /// `stockpipe guest diff alert alert --rules stockpipe.toml --new-rules candidate.toml`
    Diff(DiffArgs),
    /// Hand a candidate to a running host (POST /guests/<stage>/promote with the admin token,
    /// $STOCKPIPE_ADMIN_TOKEN). The host still runs its shadow check on the ticks it saw last and
    /// refuses a candidate that fails it; its swap history (GET /guests) keeps the diff report.
    /// A promoted version is written into the host's guests directory, so a restart keeps it.
    Promote {
        /// The candidate .wasm.
        wasm: PathBuf,
        /// Stage of the component (default: guessed from its file name).
        #[arg(long)]
        stage: Option<String>,
        /// The host's API, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        http: String,
        /// A `guest diff` report to attach to the swap's history entry.
        #[arg(long)]
        diff_report: Option<PathBuf>,
        /// Swap even if the shadow check fails.
        #[arg(long)]
        force: bool,
    },
}

/// The stage a file is for: `--stage`, else its stem (`validate`, `…_validate`, `…-validate`).
fn stage_of(path: &Path, stage: Option<&str>) -> anyhow::Result<StageKind> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let name = stage.unwrap_or(stem);
    StageKind::ALL
        .into_iter()
        .chain(StageKind::STATEFUL)
        .find(|k| {
            name == k.name()
                || name.ends_with(&format!("_{}", k.name()))
                || name.ends_with(&format!("-{}", k.name()))
        })
        .with_context(|| {
            format!(
                "cannot tell the stage of {}; pass --stage validate|enrich|route|aggregate|alert",
                path.display()
            )
        })
}

/// A built-in component by stage name, or a .wasm file.
fn load(
    sandbox: &Sandbox,
    guest: &str,
    stage: Option<&str>,
) -> anyhow::Result<Arc<GuestComponent>> {
    let (kind, bytes, source) = match StageKind::from_swappable_name(guest) {
        Some(kind) if stage.is_none_or(|s| s == guest) => (
            kind,
            stockpipe::runtime::embedded_component(kind).to_vec(),
            "embedded".to_string(),
        ),
        _ => {
            let path = Path::new(guest);
            let kind = stage_of(path, stage)?;
            let bytes = std::fs::read(path).with_context(|| format!("reading {guest}"))?;
            (kind, bytes, guest.to_string())
        }
    };
    Ok(Arc::new(GuestComponent::load(
        sandbox, kind, &bytes, source,
    )?))
}

fn production_sandbox(config: &Config) -> anyhow::Result<Arc<Sandbox>> {
    Ok(Arc::new(Sandbox::new(stockpipe::service::sandbox_limits(
        config,
    ))?))
}

fn guest_test(
    guest: &str,
    stage: Option<&str>,
    fixtures: &Path,
    record: bool,
) -> anyhow::Result<()> {
    let config = Config::default();
    let sandbox = production_sandbox(&config)?;
    let component = load(&sandbox, guest, stage)?;
    let configs = config.stage_configs(stockpipe::clock::unix_now_us());
    if record {
        let report =
            stockpipe::tools::guest_test::record_fixtures(sandbox, component, &configs, fixtures)?;
        println!(
            "{} cases: wrote {} expected lines",
            report.cases, report.lines
        );
        return Ok(());
    }
    let report =
        stockpipe::tools::guest_test::run_fixtures(sandbox, component, &configs, fixtures)?;
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

fn instant(flag: &str, value: Option<&str>) -> anyhow::Result<Option<i64>> {
    value
        .map(|v| {
            stockpipe_model::time::parse_timestamp(v, 0).map_err(|e| {
                anyhow::anyhow!("--{flag} {v:?}: {e} (use RFC 3339, e.g. 2026-11-30T00:00:00Z)")
            })
        })
        .transpose()
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The current version: a .wasm path, or validate|enrich|route|alert for the built-in one.
    old: String,
    /// The candidate: a .wasm path (or `alert`, the built-in one, to compare rule sets).
    new: String,
    /// Stage of the components (default: guessed from the file names).
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    lake: LakeArgs,
    /// Only ticks stamped at or after this instant (RFC 3339, e.g. 2026-11-30T00:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Only ticks stamped before this instant.
    #[arg(long)]
    to: Option<String>,
    /// --stage alert: a stockpipe config file whose `[[alert.rules]]` (and deprecated route.*
    /// alert keys) the old side runs; its `[aggregate] lake_prefix` says where the bars are.
    /// Default: the built-in rules.
    #[arg(long, value_name = "CONFIG")]
    rules: Option<PathBuf>,
    /// --stage alert: a config file whose rules the new side runs (default: the old side's).
    #[arg(long, value_name = "CONFIG")]
    new_rules: Option<PathBuf>,
    /// Enriched numbers (alert values and thresholds) within this relative difference (absolute
    /// below 1) count as equal.
    #[arg(long, default_value_t = 1e-9)]
    tolerance: f64,
    /// Examples kept per kind of difference.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// Write the JSON report to this file instead of stdout.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Exit with status 1 when anything changed (for scripts and CI gates).
    #[arg(long)]
    fail_on_change: bool,
}

async fn guest_diff(args: DiffArgs) -> anyhow::Result<()> {
    let config = Config::default();
    let sandbox = production_sandbox(&config)?;
    let stage = match args.stage.as_deref() {
        Some(s) => Some(s.to_string()),
        None => Some(stage_of(Path::new(&args.new), None)?.name().to_string()),
    };
    let old = load(&sandbox, &args.old, stage.as_deref())?;
    let new = load(&sandbox, &args.new, stage.as_deref())?;
    match old.kind {
        StageKind::Aggregate => bail!(
            "guest diff compares the chain's stages and alert; a new aggregate version is compared by its swap's shadow run (the last batch's bars, through both)"
        ),
        StageKind::Alert => return alert_diff(args, sandbox, old, new).await,
        _ => {}
    }
    if args.rules.is_some() || args.new_rules.is_some() {
        bail!("--rules and --new-rules are alert rule sets: use them with --stage alert");
    }
    let options = stockpipe::tools::guest_diff::DiffOptions {
        topic: args.lake.topic.clone(),
        from_us: instant("from", args.from.as_deref())?,
        to_us: instant("to", args.to.as_deref())?,
        tolerance: args.tolerance,
        examples: args.examples,
        batch: config.kafka.batch_max,
    };
    let store = open_lake(&args.lake).await?;
    let configs = config.stage_configs(stockpipe::clock::unix_now_us());
    let report =
        stockpipe::tools::guest_diff::diff(sandbox, old, new, &configs, &store, &options).await?;
    let changed = (report.changed > 0)
        .then(|| format!("{} of {} ticks changed", report.changed, report.ticks));
    emit(&report, &report.summary_text(), changed, &args)
}

/// The summary on stderr, the JSON report on stdout or into --report; with --fail-on-change an
/// error when something changed.
fn emit(
    report: &impl serde::Serialize,
    summary: &str,
    changed: Option<String>,
    args: &DiffArgs,
) -> anyhow::Result<()> {
    eprint!("{summary}");
    let json = serde_json::to_string_pretty(report)?;
    match &args.report {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    match changed {
        Some(why) if args.fail_on_change => bail!(why),
        _ => Ok(()),
    }
}

/// The rules a side runs: a config file's `[[alert.rules]]` (checked as `run` checks them), or
/// the built-in ones; and where that config's bars are.
fn alert_rules(
    path: Option<&Path>,
) -> anyhow::Result<(Vec<stockpipe_model::alert::AlertRule>, String, String)> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.alert.validate(true)?;
    let rules = config.alert_rules()?;
    let from = path.map_or("the built-in rules".to_string(), |p| {
        p.display().to_string()
    });
    Ok((rules, from, config.aggregate.lake_prefix))
}

async fn alert_diff(
    args: DiffArgs,
    sandbox: Arc<Sandbox>,
    old: Arc<GuestComponent>,
    new: Arc<GuestComponent>,
) -> anyhow::Result<()> {
    use stockpipe::tools::alert_diff::{AlertDiffOptions, AlertSide, diff};
    let (old_rules, old_from, bars_prefix) = alert_rules(args.rules.as_deref())?;
    let (new_rules, new_from) = match args.new_rules.as_deref() {
        Some(path) => {
            let (rules, from, _) = alert_rules(Some(path))?;
            (rules, from)
        }
        None => (old_rules.clone(), old_from.clone()),
    };
    let options = AlertDiffOptions {
        topic: args.lake.topic.clone(),
        bars_prefix,
        from_us: instant("from", args.from.as_deref())?,
        to_us: instant("to", args.to.as_deref())?,
        tolerance: args.tolerance,
        examples: args.examples,
        batch: Config::default().kafka.batch_max,
    };
    let store = open_lake(&args.lake).await?;
    let side = |component, rules, rules_from| AlertSide {
        component,
        rules,
        rules_from,
    };
    let report = diff(
        sandbox,
        side(old, old_rules, old_from),
        side(new, new_rules, new_from),
        &store,
        &options,
    )
    .await?;
    let changed = (report.changed > 0).then(|| {
        format!(
            "{} alert events differ ({} raised by the old side, {} by the new)",
            report.changed, report.old.events, report.new.events
        )
    });
    emit(&report, &report.summary_text(), changed, &args)
}

async fn guest_promote(
    wasm: &Path,
    stage: Option<&str>,
    http: &str,
    diff_report: Option<&Path>,
    force: bool,
) -> anyhow::Result<()> {
    let kind = stage_of(wasm, stage)?;
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let report = diff_report
        .map(|path| -> anyhow::Result<serde_json::Value> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON diff report", path.display()))
        })
        .transpose()?;
    let token = std::env::var(stockpipe::http::ADMIN_TOKEN_ENV).ok();
    let answer = stockpipe::tools::guest_promote::promote(
        http,
        kind,
        &bytes,
        report,
        force,
        token.as_deref(),
    )
    .await?;
    println!("{}", serde_json::to_string(&answer.events)?);
    if let Some(refused) = answer.refused() {
        bail!("the host refused {}: {}", wasm.display(), refused);
    }
    Ok(())
}

pub fn guest(command: GuestCommand) -> anyhow::Result<()> {
    match command {
        GuestCommand::New { stage, dir } => {
            let kind = StageKind::from_swappable_name(&stage)
                .filter(|k| stockpipe::tools::guest_new::TEMPLATES.contains(k))
                .with_context(|| {
                    format!("no template {stage:?}; use validate, enrich, route or alert")
                })?;
            let name = stockpipe::tools::guest_new::generate(kind, &dir)?;
            let wasm = stockpipe::tools::guest_new::component_path(&name);
            println!(
                "wrote the {} guest crate {name} in {}\n  cd {} && cargo test && cargo build --release --target wasm32-wasip2\n  stockpipe guest test {}/{wasm} --stage {} --fixtures {}/fixtures",
                kind.name(),
                dir.display(),
                dir.display(),
                dir.display(),
                kind.name(),
                dir.display()
            );
            Ok(())
        }
        GuestCommand::Test {
            guest,
            stage,
            fixtures,
            record,
        } => guest_test(&guest, stage.as_deref(), &fixtures, record),
        GuestCommand::Diff(args) => super::block_on(guest_diff(args)),
        GuestCommand::Promote {
            wasm,
            stage,
            http,
            diff_report,
            force,
        } => super::block_on(guest_promote(
            &wasm,
            stage.as_deref(),
            &http,
            diff_report.as_deref(),
            force,
        )),
    }
}
