//! The host as a service: the pipeline plus everything around it — guests loaded from the
//! configured place, hot swap (watcher, SIGHUP, HTTP), the HTTP API. `stockpipe run` and the
//! end-to-end tests start it the same way.

use crate::chain::swap::{
    GuestRegistry, ShadowBuffer, SwapApplier, SwapController, SwapTrigger, watch_dir,
};
use crate::chain::{ChainComponents, WasmChain};
use crate::config::Config;
use crate::http::{self, ApiState};
use crate::pipeline::{Pipeline, RunSummary};
use crate::runtime::StageKind;
use crate::runtime::sandbox::{Sandbox, SandboxLimits};
use crate::sink::store::LakeStore;
use crate::telemetry::{Dependency, Telemetry};
use anyhow::Context;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub fn sandbox_limits(config: &Config) -> SandboxLimits {
    SandboxLimits {
        call_deadline: Duration::from_millis(config.guests.call_deadline_ms),
        memory_bytes: config.guests.memory_mib << 20,
        fuel_per_call: (config.guests.fuel_per_call > 0).then_some(config.guests.fuel_per_call),
        ..SandboxLimits::default()
    }
}

/// Runs the pipeline with `config` against `brokers` until `shutdown` (or, with `once`, the end of
/// the topic). `registry` lets the caller watch progress and swaps; `http` serves the API.
pub async fn run(
    config: Config,
    brokers: &str,
    once: bool,
    registry: Arc<GuestRegistry>,
    http: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    let extras = Extras {
        telemetry: Arc::new(Telemetry::new()),
        input: None,
        replayed_from: Default::default(),
    };
    run_with(config, brokers, once, registry, http, shutdown, extras).await
}

/// What a caller may bring to a run besides its configuration: the telemetry (to watch its counts,
/// e.g. a replay that keeps pace with the consumer) and a file replayed meanwhile.
pub struct Extras {
    pub telemetry: Arc<Telemetry>,
    pub input: Option<crate::source::backfill::InputFeed>,
    /// Where a file replayed into the topic before the run starts in each partition (see
    /// [`crate::pipeline::Pipeline::with_replayed_from`]).
    pub replayed_from: crate::position::Offsets,
}

/// [`run`], with [`Extras`].
pub async fn run_with(
    config: Config,
    brokers: &str,
    once: bool,
    registry: Arc<GuestRegistry>,
    http: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()>,
    extras: Extras,
) -> anyhow::Result<RunSummary> {
    config.validate()?;
    tokio::pin!(shutdown);
    // Beyond loopback the API's mutating endpoints need a token; without one they are closed.
    let admin = match &http {
        Some(listener) => http::admin_access(listener.local_addr()?, |key| std::env::var(key).ok()),
        None => http::AdminAccess::Open,
    };
    if let http::AdminAccess::Closed { listen } = &admin {
        tracing::warn!(%listen, variable = http::ADMIN_TOKEN_ENV, "the HTTP API listens beyond loopback without an admin token: its reads are served, its admin endpoints answer 401 until the variable is set");
    }
    let sandbox = Arc::new(Sandbox::new(sandbox_limits(&config))?);
    let components = match &config.guests.dir {
        Some(dir) => ChainComponents::from_dir(&sandbox, dir)?,
        None => ChainComponents::embedded(&sandbox)?,
    };
    for stage in crate::runtime::ChainStage::ALL {
        let c = components.get(stage);
        tracing::info!(stage = stage.kind().name(), version = %c.version, source = %c.source_name, "guest loaded");
    }
    let configs = config.stage_configs(crate::clock::unix_now_us());
    let chain = WasmChain::new(sandbox.clone(), components.clone(), configs.clone());
    let aggregation = match config.aggregate.enabled {
        true => Some(crate::chain::aggregate::Aggregation::new(
            sandbox.clone(),
            load_stateful(&sandbox, &config, StageKind::Aggregate)?,
            config.aggregate.guest_config(),
        )),
        false => None,
    };
    let alerting = load_alerting(&sandbox, &config)?;
    let telemetry = extras.telemetry;
    let policy = config.guests.swap_policy();
    let mut triggers_for_http = None;
    let mut _watcher = None;
    let mut sighup = None;
    let mut hot_swap = None;
    if let Some(dir) = &config.guests.dir {
        let (trigger_tx, trigger_rx) = mpsc::channel::<SwapTrigger>();
        let (swap_tx, swap_rx) = mpsc::channel();
        let current = Arc::new(Mutex::new(components));
        let shadow = Arc::new(Mutex::new(ShadowBuffer::new(policy.shadow_ticks)));
        SwapController {
            sandbox,
            dir: dir.clone(),
            policy,
            configs,
            registry: registry.clone(),
            shadow: shadow.clone(),
            current: current.clone(),
            batch_max: config.kafka.batch_max,
            sent: Mutex::new(Vec::new()),
        }
        .spawn(trigger_rx, swap_tx);
        if config.guests.watch {
            _watcher = Some(
                watch_dir(dir, trigger_tx.clone())
                    .with_context(|| format!("watching {}", dir.display()))?,
            );
            tracing::info!(dir = %dir.display(), "watching the guests directory for new versions");
        }
        sighup = Some(spawn_sighup(trigger_tx.clone())?);
        triggers_for_http = Some(Arc::new(Mutex::new(trigger_tx)));
        hot_swap = Some((
            SwapApplier::new(swap_rx, policy, registry.clone(), current),
            shadow,
        ));
    }
    // The API is up before the sinks connect, so that `/ready` can say what start-up waits for.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = match http {
        Some(listener) => {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "HTTP API listening");
            let mut dependencies = vec![Dependency::Kafka, Dependency::Lake];
            if config.elasticsearch.enabled() {
                dependencies.push(Dependency::Elasticsearch);
            }
            let state = ApiState {
                registry: registry.clone(),
                triggers: triggers_for_http,
                telemetry: telemetry.clone(),
                dependencies,
                admin,
            };
            let limits = http::ServeLimits::default();
            Some(tokio::spawn(http::serve(listener, state, limits, async {
                let _ = http_stopped.await;
            })))
        }
        None => None,
    };
    let stop_tasks = || {
        let _ = stop_http.send(());
        if let Some(task) = &sighup {
            task.abort();
        }
    };
    // Connecting may wait on a sink that does not answer yet: a stop request still gets through.
    let connected = tokio::select! {
        pipeline = Pipeline::new(config.clone(), brokers, chain, telemetry.clone()) => pipeline,
        () = &mut shutdown => {
            tracing::info!("shutdown requested during start-up; nothing was consumed");
            stop_tasks();
            return Ok(RunSummary::default());
        }
    };
    let mut pipeline = match connected {
        Ok(p) => p.with_registry(registry.clone()),
        Err(e) => {
            stop_tasks();
            return Err(e);
        }
    };
    if let Some((applier, shadow)) = hot_swap {
        pipeline = pipeline.with_hot_swap(applier, shadow);
    }
    if let Some(input) = extras.input {
        pipeline = pipeline.with_input(input);
    }
    pipeline = pipeline.with_replayed_from(extras.replayed_from);
    if let Some(aggregation) = aggregation {
        pipeline = pipeline.with_aggregation(aggregation);
    }
    if let Some(alerting) = alerting {
        pipeline = pipeline.with_alerting(alerting);
    }
    let forecasts = tokio::spawn(follow_forecasts(config.clone(), telemetry.clone()));
    let metrics = tokio::spawn(report_metrics(config.clone(), telemetry.clone()));
    registry
        .started
        .store(true, std::sync::atomic::Ordering::Release);
    let summary = pipeline.run(once, &mut shutdown).await;
    stop_tasks();
    if let Some(server) = server {
        let _ = server.await;
    }
    forecasts.abort();
    metrics.abort();
    summary
}

/// The alert stage, unless `[alert] enabled = false`: its guest (as [`load_stateful`] finds it)
/// and the configured rules, which the guest checks first.
pub fn load_alerting(
    sandbox: &Arc<Sandbox>,
    config: &Config,
) -> anyhow::Result<Option<crate::chain::alert::Alerting>> {
    crate::chain::alert::warn_deprecated(
        config.route.change_alert_pct,
        config.route.spread_alert_bps,
    );
    if !config.alert.enabled {
        return Ok(None);
    }
    let alerting = crate::chain::alert::Alerting::new(
        sandbox.clone(),
        load_stateful(sandbox, config, StageKind::Alert)?,
        config.alert_rules()?,
    )?;
    Ok(Some(alerting))
}

/// A stateful stage's guest (`aggregate`, `alert`): `<stage>.wasm` of the guests directory when
/// there is one, else the embedded component.
fn load_stateful(
    sandbox: &Arc<Sandbox>,
    config: &Config,
    kind: StageKind,
) -> anyhow::Result<Arc<crate::runtime::GuestComponent>> {
    use crate::runtime::GuestComponent;
    let in_dir = config
        .guests
        .dir
        .as_ref()
        .map(|dir| dir.join(kind.file_name()))
        .filter(|path| path.exists());
    let component = match in_dir {
        Some(path) => {
            let bytes = std::fs::read(&path).with_context(|| {
                format!("reading guest {} from {}", kind.name(), path.display())
            })?;
            GuestComponent::load(sandbox, kind, &bytes, path.display().to_string())?
        }
        None => GuestComponent::load(
            sandbox,
            kind,
            crate::runtime::embedded_component(kind),
            "embedded",
        )?,
    };
    tracing::info!(stage = kind.name(), version = %component.version, source = %component.source_name, "guest loaded");
    Ok(Arc::new(component))
}

/// Indexes the host's counters every `elasticsearch.metrics_interval_ms` in `stockpipe-metrics`
/// (one document per host and interval). A failure is logged; the next interval carries on.
async fn report_metrics(config: Config, telemetry: Arc<Telemetry>) {
    let es = &config.elasticsearch;
    if !es.enabled() || es.metrics_interval_ms == 0 {
        return;
    }
    let client = match es.settings(|key| std::env::var(key).ok()).and_then(|s| {
        let shape = crate::sink::elasticsearch::BulkShape::of(&s.templates);
        crate::sink::elasticsearch::client(&s).map(|c| (c, s.retry, shape))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no metrics to Elasticsearch");
            return;
        }
    };
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "stockpipe".into());
    let every = Duration::from_millis(es.metrics_interval_ms);
    let mut since = telemetry.live().totals;
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let (document, now) = telemetry.interval_document(&host, since, last.elapsed());
        last = std::time::Instant::now();
        since = now;
        let documents = [crate::sink::elasticsearch::OwnDocument {
            index: METRICS_INDEX.to_string(),
            id: format!("{host}-{}", document.timestamp),
            time_us: document.timestamp_us,
            body: serde_json::to_vec(&document).expect("a metrics document serializes"),
        }];
        if let Err(e) =
            crate::sink::elasticsearch::index_documents(&client.0, client.1, client.2, &documents)
                .await
        {
            tracing::warn!(error = %e, "indexing the host's metrics failed");
        }
    }
}

/// Where [`report_metrics`] writes.
pub const METRICS_INDEX: &str = "stockpipe-metrics";

/// Keeps the live view's forecasts those of the newest `forecasts/…ndjson` object in the lake
/// (written by `stockpipe ml forecast`), looking every 30 s.
async fn follow_forecasts(config: Config, telemetry: Arc<Telemetry>) {
    let store = match config.lake.location() {
        Ok(location) => LakeStore::open(&location, config.lake.gcs_options()).await,
        Err(_) => return,
    };
    let Ok(store) = store else { return };
    loop {
        match latest_forecasts(&store, telemetry.forecasts_source()).await {
            Ok(Some((name, rows))) => {
                tracing::info!(object = %name, rows = rows.len(), "forecasts loaded for the dashboard");
                telemetry.set_forecasts(name, rows);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "no forecasts read"),
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// The newest forecasts object, unless it is `known` already.
async fn latest_forecasts(
    store: &LakeStore,
    known: Option<String>,
) -> anyhow::Result<Option<(String, Vec<serde_json::Value>)>> {
    let names = store.list(crate::sink::layout::FORECASTS_PREFIX).await?;
    let Some(newest) = names.into_iter().filter(|n| n.ends_with(".ndjson")).max() else {
        return Ok(None);
    };
    if known.as_deref() == Some(newest.as_str()) {
        return Ok(None);
    }
    let bytes = store.get(&newest).await?;
    let rows = bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .with_context(|| format!("reading {newest}"))?;
    Ok(Some((newest, rows)))
}

/// A future that resolves on the first SIGINT (Ctrl-C) or SIGTERM (`docker stop`, Kubernetes):
/// the signals that ask the host to stop after the sinks have acknowledged what is in hand. The
/// handlers are installed when this is called (within the runtime), so a signal that arrives
/// before the future is first awaited is not lost — and does not kill the process.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = handlers else {
            tracing::warn!("cannot listen for SIGINT/SIGTERM; only a kill stops this process");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "stop requested");
    }
}

fn spawn_sighup(
    triggers: mpsc::Sender<SwapTrigger>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading guests");
            let trigger = SwapTrigger {
                stage: None,
                force: false,
                trigger: "sighup".into(),
                reply: None,
                candidate: None,
            };
            if triggers.send(trigger).is_err() {
                break;
            }
        }
    }))
}
