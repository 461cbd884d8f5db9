//! Guarded hot swap of guest components.
//!
//! 1. A trigger — the guests directory changed (a `notify` watcher), `POST /guests/<name>/reload`,
//!    or SIGHUP — reaches the [`SwapController`] thread, off the hot path.
//! 2. The controller compiles the new file and checks it like any guest (its stage's interface of
//!    `stockpipe:pipeline@0.2.0`, with the right types, instantiated within the limits). A
//!    component that fails is refused with the reason; the old version keeps serving.
//! 3. It runs the new version in shadow, beside the current one, on the last ticks the pipeline
//!    processed ([`ShadowBuffer`]) and compares outcomes ([`ShadowReport`]). If the new version
//!    rejects more than a configured share of the ticks the old one accepted, the swap is refused
//!    unless forced.
//! 4. An accepted candidate goes to the pipeline loop, which puts it in place between two batches
//!    (a pointer exchange and a fresh instance): no batch sees two versions, and each document
//!    records the versions that produced it.
//! 5. The loop watches a new version for its first batches: if it faults in more than a configured
//!    number of them, the loop puts the previous version back by itself.
//!
//! The aggregate and alert stages' guests hold state, so their swaps are decided in the loop,
//! where the state is ([`Deciding`]): the controller only loads and checks the component, then
//! waits for the loop's word. The
//! loop hands every partition's state to the new version (it imports what the old one exported):
//! a version that cannot read it is refused unless forced, and then the partitions it could not
//! read start empty and the event says so. The shadow run replays the last batch from the states
//! before it through both versions and compares the bars they close
//! ([`crate::chain::aggregate::BarsShadow`]).
//!
//! [`GuestRegistry`] keeps what is loaded and the history of every attempt, for `GET /guests`.

mod config;
mod deciding;
mod registry;
mod shadow;

pub use config::GuestsSection;
pub use deciding::Deciding;
pub use registry::{GuestRegistry, LoadedGuest, RegistryView};
pub use shadow::{ShadowBuffer, ShadowReport};

use crate::chain::{ChainComponents, StageChain, StageConfigs, WasmChain};
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{ChainStage, GuestComponent, StageKind};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use stockpipe_model::Tick;

/// When to refuse a swap and when to undo one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwapPolicy {
    /// How many of the latest processed ticks the shadow run replays.
    pub shadow_ticks: usize,
    /// Refuse when the new version rejects more than this share of the ticks the old accepted.
    pub max_new_reject_share: f64,
    /// Roll back when the new version faults in more than this many batches...
    pub rollback_after_faults: u64,
    /// ...among its first this-many batches.
    pub rollback_window_batches: u64,
}

impl Default for SwapPolicy {
    fn default() -> Self {
        Self {
            shadow_ticks: 1000,
            max_new_reject_share: 0.05,
            rollback_after_faults: 3,
            rollback_window_batches: 100,
        }
    }
}

/// One entry of the swap history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwapEvent {
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub stage: &'static str,
    /// `swapped`, `refused`, `rolled-back` or `unchanged`.
    pub outcome: &'static str,
    pub from_version: String,
    pub to_version: Option<String>,
    /// What asked for it: `watch`, `http`, `sighup`, `rollback`.
    pub trigger: String,
    pub reason: String,
    pub shadow: Option<ShadowReport>,
    /// Time from the trigger to the decision (compile + checks + shadow run).
    pub decision_ms: f64,
    /// The `guest diff` report a promotion came with (`stockpipe guest promote --diff-report`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_report: Option<serde_json::Value>,
    /// The aggregate stage's shadow run: the bars both versions close on the last batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bars_shadow: Option<crate::chain::aggregate::BarsShadow>,
}

fn now_secs() -> f64 {
    crate::clock::unix_now_secs_f64()
}

/// A request to (re)load guests from the directory.
#[derive(Debug)]
pub struct SwapTrigger {
    /// One stage, or every stage.
    pub stage: Option<StageKind>,
    pub force: bool,
    pub trigger: String,
    /// Where to send the decision (the HTTP handler waits for it).
    pub reply: Option<tokio::sync::oneshot::Sender<Vec<SwapEvent>>>,
    /// A component handed over (promoted) instead of the one in the directory; written into the
    /// directory once it is swapped in, so that a restart keeps it.
    pub candidate: Option<Candidate>,
}

/// A promoted component and the diff report it came with.
#[derive(Debug)]
pub struct Candidate {
    pub bytes: Vec<u8>,
    pub diff_report: Option<serde_json::Value>,
}

/// A checked candidate on its way to the pipeline loop.
pub struct Swap {
    pub component: Arc<GuestComponent>,
    pub trigger: String,
    pub reason: String,
    pub shadow: Option<ShadowReport>,
    pub decision_ms: f64,
    pub diff_report: Option<serde_json::Value>,
    /// Swap even if the state cannot be handed over (aggregate).
    pub force: bool,
    /// Where the loop says what it decided (aggregate: the controller waits for it).
    pub decided: Option<mpsc::SyncSender<SwapEvent>>,
}

/// How long the controller waits for the loop to decide on an aggregate swap (a loop held by a
/// sink that does not answer takes the swap later; the event is then in the history).
const LOOP_DECISION_WAIT: Duration = Duration::from_secs(30);

/// Decides on swaps, on its own thread.
pub struct SwapController {
    pub sandbox: Arc<Sandbox>,
    pub dir: PathBuf,
    pub policy: SwapPolicy,
    pub configs: StageConfigs,
    pub registry: Arc<GuestRegistry>,
    pub shadow: Arc<Mutex<ShadowBuffer>>,
    /// What serves now, as the loop last reported it.
    pub current: Arc<Mutex<ChainComponents>>,
    pub batch_max: usize,
    /// The version last sent to the loop per stage: the directory's file a promotion wrote is that
    /// version, even before the loop reports it serving.
    pub sent: Mutex<Vec<(StageKind, String)>>,
}

impl SwapController {
    /// Runs until every trigger sender is dropped.
    pub fn spawn(
        self,
        triggers: mpsc::Receiver<SwapTrigger>,
        swaps: mpsc::Sender<Swap>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("guest-swap".into())
            .spawn(move || {
                while let Ok(first) = triggers.recv() {
                    // Editors and copies write in several steps: let the file settle, and fold the
                    // triggers that arrived meanwhile into one decision per stage.
                    std::thread::sleep(Duration::from_millis(150));
                    let mut pending = vec![first];
                    pending.extend(triggers.try_iter());
                    self.handle(pending, &swaps);
                }
            })
            .expect("spawn the swap thread")
    }

    fn handle(&self, pending: Vec<SwapTrigger>, swaps: &mpsc::Sender<Swap>) {
        let (promoted, pending): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|t| t.candidate.is_some());
        for mut t in promoted {
            let events = self.handle_candidate(&mut t, swaps);
            if let Some(reply) = t.reply {
                let _ = reply.send(events);
            }
        }
        if pending.is_empty() {
            return;
        }
        let mut stages: Vec<(StageKind, bool, String)> = Vec::new();
        for t in &pending {
            for kind in t.stage.map_or(StageKind::ALL.to_vec(), |k| vec![k]) {
                match stages.iter_mut().find(|(k, _, _)| *k == kind) {
                    Some(entry) => entry.1 |= t.force,
                    None => stages.push((kind, t.force, t.trigger.clone())),
                }
            }
        }
        let mut events = Vec::new();
        for (kind, force, trigger) in stages {
            let started = Instant::now();
            match self.decide(kind, force, &trigger) {
                Ok(Some(mut swap)) if kind.is_stateful() => {
                    swap.force = force;
                    match self.decided_by_loop(swap, swaps) {
                        Some(event) => events.push(event),
                        None => return,
                    }
                }
                Ok(Some(mut swap)) => {
                    swap.decision_ms = started.elapsed().as_secs_f64() * 1e3;
                    let from = self.serving(kind);
                    events.push(SwapEvent {
                        at: now_secs(),
                        stage: kind.name(),
                        outcome: "swapped",
                        from_version: from,
                        to_version: Some(swap.component.version.clone()),
                        trigger: trigger.clone(),
                        reason: swap.reason.clone(),
                        shadow: swap.shadow,
                        decision_ms: swap.decision_ms,
                        diff_report: None,
                        bars_shadow: None,
                    });
                    if !self.send(swap, swaps) {
                        return;
                    }
                }
                Ok(None) => {}
                Err(mut event) => {
                    event.decision_ms = started.elapsed().as_secs_f64() * 1e3;
                    self.registry.record((*event).clone());
                    events.push(*event);
                }
            }
        }
        for t in pending {
            if let Some(reply) = t.reply {
                let _ = reply.send(events.clone());
            }
        }
    }

    /// Sends a stateful stage's candidate to the loop and waits for its decision. None once the loop
    /// is gone.
    fn decided_by_loop(&self, mut swap: Swap, swaps: &mpsc::Sender<Swap>) -> Option<SwapEvent> {
        let (tx, rx) = mpsc::sync_channel(1);
        swap.decided = Some(tx);
        let kind = swap.component.kind;
        let (stage, from, to, trigger) = (
            kind.name(),
            self.serving(swap.component.kind),
            swap.component.version.clone(),
            swap.trigger.clone(),
        );
        if !self.send(swap, swaps) {
            return None;
        }
        let decided = rx.recv_timeout(LOOP_DECISION_WAIT);
        if decided.as_ref().is_ok_and(|e| e.outcome == "refused") {
            // Not serving: the same file asked for again (say, forced) is decided again.
            let mut sent = self.sent.lock().expect("sent lock");
            sent.retain(|(k, v)| !(*k == kind && *v == to));
        }
        Some(decided.unwrap_or_else(|_| SwapEvent {
            at: now_secs(),
            stage,
            outcome: "pending",
            from_version: from,
            to_version: Some(to),
            trigger,
            reason: format!(
                "handed to the pipeline loop, which had not decided within {} s (it decides between two batches; see GET /guests)",
                LOOP_DECISION_WAIT.as_secs()
            ),
            shadow: None,
            decision_ms: LOOP_DECISION_WAIT.as_secs_f64() * 1e3,
            diff_report: None,
            bars_shadow: None,
        }))
    }

    /// `Ok(Some)` = swap, `Ok(None)` = nothing changed, `Err(event)` = refused.
    fn decide(
        &self,
        kind: StageKind,
        force: bool,
        trigger: &str,
    ) -> Result<Option<Swap>, Box<SwapEvent>> {
        let from_version = self.serving(kind);
        let path = self.dir.join(kind.file_name());
        let bytes = std::fs::read(&path).map_err(|e| {
            refusal(
                kind,
                &from_version,
                trigger,
                None,
                format!("reading {}: {e}", path.display()),
                None,
            )
        })?;
        let version = crate::runtime::component_version(&bytes);
        if version == from_version || self.was_sent(kind, &version) {
            tracing::debug!(stage = kind.name(), %version, "guest file unchanged");
            return Ok(None);
        }
        self.check(kind, force, trigger, &bytes, path.display().to_string())
            .map(Some)
    }

    /// The version of `kind` serving now, as the loop last reported it.
    fn serving(&self, kind: StageKind) -> String {
        let Some(stage) = kind.chain_stage() else {
            return self.registry.stateful_version(kind).unwrap_or_default();
        };
        self.current
            .lock()
            .expect("current lock")
            .get(stage)
            .version
            .clone()
    }

    /// Loads `bytes` as the next version of `kind` and runs the shadow check: `Ok` = swap,
    /// `Err(event)` = refused.
    fn check(
        &self,
        kind: StageKind,
        force: bool,
        trigger: &str,
        bytes: &[u8],
        source: String,
    ) -> Result<Swap, Box<SwapEvent>> {
        let current = self.current.lock().expect("current lock").clone();
        let from_version = self.serving(kind);
        let refuse = |to_version: Option<String>, reason: String, shadow: Option<ShadowReport>| {
            refusal(kind, &from_version, trigger, to_version, reason, shadow)
        };
        let version = crate::runtime::component_version(bytes);
        let component = GuestComponent::load(&self.sandbox, kind, bytes, source)
            .map_err(|e| refuse(Some(version.clone()), e.to_string(), None))?;
        let component = Arc::new(component);
        if kind.is_stateful() {
            // Its state (and the aggregate's shadow run) are in the loop.
            return Ok(Swap {
                component,
                trigger: trigger.to_string(),
                reason: "loaded and checked".into(),
                shadow: None,
                decision_ms: 0.0,
                diff_report: None,
                force,
                decided: None,
            });
        }
        let ticks = self.shadow.lock().expect("shadow lock").snapshot();
        let report = self.shadow_run(&current, &component, &ticks);
        let reason = match report.verdict(&self.policy) {
            Ok(()) => format!("shadow run on {} ticks passed", report.ticks),
            Err(why) if force => format!("forced despite: {why}"),
            Err(why) => return Err(refuse(Some(version), why, Some(report))),
        };
        Ok(Swap {
            component,
            trigger: trigger.to_string(),
            reason,
            shadow: Some(report),
            decision_ms: 0.0,
            diff_report: None,
            force,
            decided: None,
        })
    }

    /// Sends a decided swap to the loop and notes its version; false once the loop is gone.
    fn send(&self, swap: Swap, swaps: &mpsc::Sender<Swap>) -> bool {
        let (kind, version) = (swap.component.kind, swap.component.version.clone());
        if swaps.send(swap).is_err() {
            return false;
        }
        let mut sent = self.sent.lock().expect("sent lock");
        sent.retain(|(k, _)| *k != kind);
        sent.push((kind, version));
        true
    }

    fn was_sent(&self, kind: StageKind, version: &str) -> bool {
        self.sent
            .lock()
            .expect("sent lock")
            .iter()
            .any(|(k, v)| *k == kind && v == version)
    }

    /// A promoted component: checked like a file's, then written into the directory (atomically)
    /// once it is swapped in. Its diff report goes into the history entry either way.
    fn handle_candidate(&self, t: &mut SwapTrigger, swaps: &mpsc::Sender<Swap>) -> Vec<SwapEvent> {
        let Some(Candidate { bytes, diff_report }) = t.candidate.take() else {
            return Vec::new();
        };
        let Some(kind) = t.stage else {
            return Vec::new();
        };
        let started = Instant::now();
        let from_version = self.serving(kind);
        let source = format!("promoted ({} bytes)", bytes.len());
        match self.check(kind, t.force, &t.trigger, &bytes, source) {
            Ok(mut swap) if kind.is_stateful() => {
                swap.diff_report = diff_report;
                let Some(event) = self.decided_by_loop(swap, swaps) else {
                    return Vec::new();
                };
                if event.outcome == "swapped" {
                    let path = self.dir.join(kind.file_name());
                    if let Err(e) = write_atomically(&path, &bytes) {
                        tracing::warn!(stage = kind.name(), path = %path.display(), error = %e, "the promoted guest serves but is not kept for restarts");
                    }
                }
                vec![event]
            }
            Ok(mut swap) => {
                swap.decision_ms = started.elapsed().as_secs_f64() * 1e3;
                let path = self.dir.join(kind.file_name());
                if let Err(e) = write_atomically(&path, &bytes) {
                    swap.reason.push_str(&format!(
                        "; not kept for restarts: writing {}: {e}",
                        path.display()
                    ));
                }
                let event = SwapEvent {
                    at: now_secs(),
                    stage: kind.name(),
                    outcome: "swapped",
                    from_version,
                    to_version: Some(swap.component.version.clone()),
                    trigger: t.trigger.clone(),
                    reason: swap.reason.clone(),
                    shadow: swap.shadow,
                    decision_ms: swap.decision_ms,
                    diff_report: diff_report.clone(),
                    bars_shadow: None,
                };
                swap.diff_report = diff_report;
                self.send(swap, swaps);
                vec![event]
            }
            Err(mut event) => {
                event.decision_ms = started.elapsed().as_secs_f64() * 1e3;
                event.diff_report = diff_report;
                self.registry.record((*event).clone());
                vec![*event]
            }
        }
    }

    fn shadow_run(
        &self,
        current: &ChainComponents,
        candidate: &Arc<GuestComponent>,
        ticks: &[Tick],
    ) -> ShadowReport {
        let mut before =
            WasmChain::new(self.sandbox.clone(), current.clone(), self.configs.clone());
        let mut after = WasmChain::new(
            self.sandbox.clone(),
            current.clone().with(candidate.clone()),
            self.configs.clone(),
        );
        let (mut b, mut a) = (
            Vec::with_capacity(ticks.len()),
            Vec::with_capacity(ticks.len()),
        );
        for chunk in ticks.chunks(self.batch_max.max(1)) {
            b.extend(before.process(chunk));
            a.extend(after.process(chunk));
        }
        ShadowReport::compare(&b, &a)
    }
}

/// The history entry of a refused candidate.
fn refusal(
    kind: StageKind,
    from_version: &str,
    trigger: &str,
    to_version: Option<String>,
    reason: String,
    shadow: Option<ShadowReport>,
) -> Box<SwapEvent> {
    Box::new(SwapEvent {
        at: now_secs(),
        stage: kind.name(),
        outcome: "refused",
        from_version: from_version.to_string(),
        to_version,
        trigger: trigger.to_string(),
        reason,
        shadow,
        decision_ms: 0.0,
        diff_report: None,
        bars_shadow: None,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so that
/// a reader (the watcher, a restart) never sees half a component.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("wasm.promoting");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Watches the guests directory (not the files: an atomic rename replaces the inode) and turns
/// changes of `validate.wasm`, `enrich.wasm`, `route.wasm` or `aggregate.wasm` into triggers.
pub fn watch_dir(
    dir: &Path,
    triggers: mpsc::Sender<SwapTrigger>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
            return;
        }
        for path in &event.paths {
            let stage = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
                .and_then(StageKind::from_swappable_name);
            if let Some(stage) = stage {
                let _ = triggers.send(SwapTrigger {
                    stage: Some(stage),
                    force: false,
                    trigger: "watch".into(),
                    reply: None,
                    candidate: None,
                });
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The loop's side: applies swaps between batches and rolls back a new version that keeps faulting.
pub struct SwapApplier {
    swaps: mpsc::Receiver<Swap>,
    policy: SwapPolicy,
    registry: Arc<GuestRegistry>,
    current: Arc<Mutex<ChainComponents>>,
    /// Per stage: the version before the last swap, the batch count and fault count at the swap.
    watching: Vec<(ChainStage, Arc<GuestComponent>, u64, u64)>,
    batches: u64,
}

impl SwapApplier {
    pub fn new(
        swaps: mpsc::Receiver<Swap>,
        policy: SwapPolicy,
        registry: Arc<GuestRegistry>,
        current: Arc<Mutex<ChainComponents>>,
    ) -> Self {
        Self {
            swaps,
            policy,
            registry,
            current,
            watching: Vec::new(),
            batches: 0,
        }
    }

    /// Call between batches. Returns how long the swap itself held the loop (the pause), and the
    /// aggregate stage's swaps, which the pipeline hands its state to.
    pub fn apply_pending(&mut self, chain: &mut WasmChain) -> (Option<Duration>, Vec<Swap>) {
        let mut paused = None;
        let mut stateful = Vec::new();
        while let Ok(swap) = self.swaps.try_recv() {
            let Some(stage) = swap.component.kind.chain_stage() else {
                stateful.push(swap);
                continue;
            };
            let started = Instant::now();
            let kind = stage.kind();
            let previous = chain.replace(swap.component.clone());
            paused = Some(started.elapsed());
            self.watching.retain(|(s, ..)| *s != stage);
            self.watching.push((
                stage,
                previous.clone(),
                self.batches,
                chain.faulted_batches(stage),
            ));
            self.publish(chain);
            self.registry.record(SwapEvent {
                at: now_secs(),
                stage: kind.name(),
                outcome: "swapped",
                from_version: previous.version.clone(),
                to_version: Some(swap.component.version.clone()),
                trigger: swap.trigger,
                reason: swap.reason,
                shadow: swap.shadow,
                decision_ms: swap.decision_ms,
                diff_report: swap.diff_report,
                bars_shadow: None,
            });
        }
        (paused, stateful)
    }

    /// Call after each batch: rolls back a new version that faulted in too many of its first batches.
    pub fn after_batch(&mut self, chain: &mut WasmChain) {
        self.batches += 1;
        let (batches, policy) = (self.batches, self.policy);
        let mut rollbacks = Vec::new();
        self.watching
            .retain(|(stage, previous, at_batch, faults_at)| {
                let faulted = chain.faulted_batches(*stage) - faults_at;
                if faulted > policy.rollback_after_faults {
                    rollbacks.push((stage.kind(), previous.clone(), faulted));
                    return false;
                }
                batches - at_batch < policy.rollback_window_batches
            });
        for (kind, previous, faulted) in rollbacks {
            let failed = chain.replace(previous.clone());
            self.publish(chain);
            self.registry.record(SwapEvent {
                at: now_secs(),
                stage: kind.name(),
                outcome: "rolled-back",
                from_version: failed.version.clone(),
                to_version: Some(previous.version.clone()),
                trigger: "rollback".into(),
                reason: format!(
                    "the new version faulted in {faulted} batches of its first {} (limit {})",
                    policy.rollback_window_batches, policy.rollback_after_faults
                ),
                shadow: None,
                decision_ms: 0.0,
                diff_report: None,
                bars_shadow: None,
            });
        }
    }

    fn publish(&self, chain: &WasmChain) {
        let components = chain.components();
        self.registry.set_loaded(&components);
        *self.current.lock().expect("current lock") = components;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Refusal, StageOutcome};
    use stockpipe_model::Enrichment;
    use stockpipe_model::columns::TickColumns;
    use stockpipe_model::route::Destinations;

    fn accepted(partition: &str) -> StageOutcome {
        StageOutcome::Accepted {
            enrichment: Enrichment::default(),
            destinations: Destinations {
                lake_partition: Some(partition.into()),
                ..Destinations::default()
            },
        }
    }

    fn refused() -> StageOutcome {
        StageOutcome::Refused {
            refusal: Refusal {
                stage: crate::chain::RefusalStage::Validate,
                code: "other".into(),
                message: String::new(),
                guest_version: None,
            },
            dead_letter_topic: "dlq".into(),
        }
    }

    #[test]
    fn shadow_reports_count_flips_and_changes() {
        let before = [
            accepted("a"),
            accepted("a"),
            refused(),
            accepted("a"),
            refused(),
        ];
        let after = [
            accepted("a"),
            refused(),
            accepted("a"),
            accepted("b"),
            refused(),
        ];
        let r = ShadowReport::compare(&before, &after);
        assert_eq!(
            r,
            ShadowReport {
                ticks: 5,
                accepted_before: 3,
                newly_rejected: 1,
                newly_accepted: 1,
                route_changes: 1,
                feature_changes: 0
            }
        );
    }

    #[test]
    fn the_policy_refuses_a_version_that_rejects_too_much() {
        let policy = SwapPolicy {
            max_new_reject_share: 0.1,
            ..SwapPolicy::default()
        };
        let ok = ShadowReport {
            ticks: 100,
            accepted_before: 100,
            newly_rejected: 10,
            ..Default::default()
        };
        assert!(ok.verdict(&policy).is_ok());
        let bad = ShadowReport {
            newly_rejected: 11,
            ..ok
        };
        assert!(bad.verdict(&policy).unwrap_err().contains("11 of the 100"));
        // Nothing to compare against: no reason to refuse.
        assert!(ShadowReport::default().verdict(&policy).is_ok());
    }

    #[test]
    fn the_shadow_buffer_keeps_the_latest_ticks() {
        let mut buffer = ShadowBuffer::new(5);
        let tick = |token| Tick {
            instrument_token: token,
            ..stockpipe_model::example::tick()
        };
        for start in [0u64, 3, 6] {
            let ticks: Vec<Tick> = (start..start + 3).map(tick).collect();
            buffer.push(Arc::new(TickColumns::from_ticks(ticks.iter())));
        }
        let tokens: Vec<u64> = buffer
            .snapshot()
            .iter()
            .map(|t| t.instrument_token)
            .collect();
        assert_eq!(tokens, [4, 5, 6, 7, 8]);
        assert_eq!(ShadowBuffer::new(0).snapshot(), vec![]);
    }
}
