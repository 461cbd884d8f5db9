//! The stage chain: validate → enrich → route over one batch of decoded ticks, one outcome per
//! tick. [`WasmChain`] runs the guest components in the sandbox; [`NativeChain`] runs the same
//! `logic.rs` code linked natively (the benchmark's reference, and a cross-check in tests).

pub mod aggregate;
pub mod alert;
pub mod state;
pub mod swap;

use crate::config::error::{ConfigError, invalid};
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{
    ChainStage, EnrichStage, GuestComponent, GuestFault, RouteStage, Stage, StageInstance,
    StageKind, ValidateStage, call_isolated, convert,
};
use serde::Deserialize;
use std::sync::Arc;
use stockpipe_guest_enrich::logic as enrich_logic;
use stockpipe_guest_route::logic as route_logic;
use stockpipe_guest_validate::logic as validate_logic;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::route::{Destinations, RouteInput};
use stockpipe_model::{Enrichment, Fields, Rejection, Tick, TickRef};

/// Configuration handed to the guests on every call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageConfigs {
    pub validate: validate_logic::ValidateConfig,
    pub enrich: enrich_logic::EnrichConfig,
    pub route: route_logic::RouteConfig,
}

/// Who refused a tick: the host's decoder, a guest stage, or a sink that cannot take it. Its
/// text is the dead letter's `stockpipe.stage` header and the metrics' `stage` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalStage {
    Decode,
    Validate,
    Enrich,
    Route,
    Aggregate,
    Alert,
    Elasticsearch,
}

impl RefusalStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Validate => "validate",
            Self::Enrich => "enrich",
            Self::Route => "route",
            Self::Aggregate => "aggregate",
            Self::Alert => "alert",
            Self::Elasticsearch => "elasticsearch",
        }
    }
}

impl From<StageKind> for RefusalStage {
    fn from(kind: StageKind) -> Self {
        match kind {
            StageKind::Validate => Self::Validate,
            StageKind::Enrich => Self::Enrich,
            StageKind::Route => Self::Route,
            StageKind::Aggregate => Self::Aggregate,
            StageKind::Alert => Self::Alert,
        }
    }
}

impl std::fmt::Display for RefusalStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a tick did not make it through, and who said so.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub stage: RefusalStage,
    pub code: String,
    pub message: String,
    /// The version of the guest that refused it (none for the host's own decoding).
    pub guest_version: Option<String>,
}

impl Refusal {
    fn rejected(stage: StageKind, version: &str, r: Rejection) -> Self {
        Self {
            stage: stage.into(),
            code: r.code.as_str().into(),
            message: r.message,
            guest_version: Some(version.into()),
        }
    }

    fn faulted(stage: StageKind, version: &str, f: GuestFault) -> Self {
        Self {
            stage: stage.into(),
            code: f.code.as_str().into(),
            message: f.message,
            guest_version: Some(version.into()),
        }
    }
}

/// The fate of one tick.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    Accepted {
        enrichment: Enrichment,
        destinations: Destinations,
    },
    Refused {
        refusal: Refusal,
        dead_letter_topic: String,
    },
}

/// Name and version of each stage's guest, in pipeline order.
pub type GuestVersions = Vec<(&'static str, String)>;

pub trait StageChain {
    /// One outcome per tick of a batch laid out as columns (as the pipeline decodes it), in order.
    fn process_columns(&mut self, batch: &TickColumns) -> Vec<StageOutcome>;

    /// [`StageChain::process_columns`] of ticks one by one (tests and tools).
    fn process(&mut self, ticks: &[Tick]) -> Vec<StageOutcome> {
        self.process_columns(&TickColumns::from_ticks(ticks.iter()))
    }

    fn versions(&self) -> GuestVersions;
}

/// Puts per-stage results together; shared by both chains so that they cannot drift apart.
fn assemble(
    config: &StageConfigs,
    batch: &TickColumns,
    verdicts: Vec<Result<(), Refusal>>,
    mut enrich_outcomes: impl FnMut(&[usize]) -> Vec<Result<Enrichment, Refusal>>,
    route: impl FnOnce(&[RouteInput]) -> Vec<Result<Destinations, Refusal>>,
) -> Vec<StageOutcome> {
    let accepted: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_ok())
        .map(|(i, _)| i)
        .collect();
    let mut fates: Vec<Result<Option<Enrichment>, Refusal>> =
        verdicts.into_iter().map(|v| v.map(|()| None)).collect();
    for (i, outcome) in accepted.iter().zip(enrich_outcomes(&accepted)) {
        fates[*i] = outcome.map(Some);
    }
    let inputs: Vec<RouteInput> = fates
        .iter()
        .enumerate()
        .map(|(i, fate)| RouteInput {
            timestamp_us: batch.timestamp_us[i],
            instrument_token: batch.instrument_token[i],
            // The contract's NaN: a tick without a change, or without a book.
            change: if Fields(batch.present[i]).has(Fields::CHANGE) {
                batch.change[i]
            } else {
                f64::NAN
            },
            spread_bps: fate
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map_or(0.0, |e| e.spread_bps.unwrap_or(f64::NAN)),
            rejected: fate.is_err(),
        })
        .collect();
    let fallback_dlq = &config.route.dead_letter_topic;
    fates
        .into_iter()
        .zip(route(&inputs))
        .map(|(fate, routed)| match (fate, routed) {
            (Ok(Some(enrichment)), Ok(destinations)) => StageOutcome::Accepted {
                enrichment,
                destinations,
            },
            (Ok(_), Err(refusal)) => StageOutcome::Refused {
                refusal,
                dead_letter_topic: fallback_dlq.clone(),
            },
            (Ok(None), Ok(_)) => unreachable!("every accepted tick was enriched"),
            (Err(refusal), routed) => {
                let dead_letter_topic = routed
                    .ok()
                    .and_then(|d| d.dead_letter_topic.map(|t| t.to_string()))
                    .unwrap_or_else(|| fallback_dlq.clone());
                StageOutcome::Refused {
                    refusal,
                    dead_letter_topic,
                }
            }
        })
        .collect()
}

/// The guests, in the sandbox.
pub struct WasmChain {
    pub config: StageConfigs,
    sandbox: Arc<Sandbox>,
    validate: StageInstance<ValidateStage>,
    enrich: StageInstance<EnrichStage>,
    route: StageInstance<RouteStage>,
    /// Per stage (pipeline order): batches in which the stage faulted at least once.
    faulted_batches: [u64; 3],
    /// Per stage (pipeline order): how long its call took in the last batch (zero if not called).
    last_calls: [std::time::Duration; 3],
}

/// The three components of a chain.
#[derive(Clone)]
pub struct ChainComponents {
    pub validate: Arc<GuestComponent>,
    pub enrich: Arc<GuestComponent>,
    pub route: Arc<GuestComponent>,
}

impl ChainComponents {
    pub fn get(&self, stage: ChainStage) -> &Arc<GuestComponent> {
        match stage {
            ChainStage::Validate => &self.validate,
            ChainStage::Enrich => &self.enrich,
            ChainStage::Route => &self.route,
        }
    }

    /// The same components with `component` in its stage's place (a component of no chain
    /// stage, `aggregate`, has no place here: the components stay as they were).
    pub fn with(mut self, component: Arc<GuestComponent>) -> Self {
        match component.kind.chain_stage() {
            Some(ChainStage::Validate) => self.validate = component,
            Some(ChainStage::Enrich) => self.enrich = component,
            Some(ChainStage::Route) => self.route = component,
            None => {}
        }
        self
    }

    /// The components embedded in this binary.
    pub fn embedded(sandbox: &Sandbox) -> anyhow::Result<Self> {
        let load = |kind| -> anyhow::Result<Arc<GuestComponent>> {
            Ok(Arc::new(GuestComponent::load(
                sandbox,
                kind,
                crate::runtime::embedded_component(kind),
                "embedded",
            )?))
        };
        Ok(Self {
            validate: load(StageKind::Validate)?,
            enrich: load(StageKind::Enrich)?,
            route: load(StageKind::Route)?,
        })
    }

    /// `validate.wasm`, `enrich.wasm` and `route.wasm` from a directory.
    pub fn from_dir(sandbox: &Sandbox, dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let load = |kind: StageKind| -> anyhow::Result<Arc<GuestComponent>> {
            let path = dir.join(kind.file_name());
            let bytes = std::fs::read(&path).with_context(|| {
                format!("reading guest {} from {}", kind.name(), path.display())
            })?;
            Ok(Arc::new(GuestComponent::load(
                sandbox,
                kind,
                &bytes,
                path.display().to_string(),
            )?))
        };
        Ok(Self {
            validate: load(StageKind::Validate)?,
            enrich: load(StageKind::Enrich)?,
            route: load(StageKind::Route)?,
        })
    }
}

impl WasmChain {
    pub fn new(sandbox: Arc<Sandbox>, components: ChainComponents, config: StageConfigs) -> Self {
        Self {
            config,
            validate: StageInstance::new(sandbox.clone(), components.validate),
            enrich: StageInstance::new(sandbox.clone(), components.enrich),
            route: StageInstance::new(sandbox.clone(), components.route),
            sandbox,
            faulted_batches: [0; 3],
            last_calls: [std::time::Duration::ZERO; 3],
        }
    }

    /// How long each guest's call took in the last batch, for the guests that were called.
    pub fn last_calls(&self) -> Vec<(&'static str, std::time::Duration)> {
        ChainStage::ALL
            .iter()
            .zip(self.last_calls)
            .filter(|(_, took)| !took.is_zero())
            .map(|(s, took)| (s.kind().name(), took))
            .collect()
    }

    /// Calls of `stage`'s instance that faulted so far.
    fn faults(&self, stage: ChainStage) -> u64 {
        match stage {
            ChainStage::Validate => self.validate.faults(),
            ChainStage::Enrich => self.enrich.faults(),
            ChainStage::Route => self.route.faults(),
        }
    }

    pub fn components(&self) -> ChainComponents {
        ChainComponents {
            validate: self.validate.component().clone(),
            enrich: self.enrich.component().clone(),
            route: self.route.component().clone(),
        }
    }

    /// Puts `component` in its stage's place, with a fresh instance, and returns the component it
    /// replaced. Called between two batches, so no batch sees two versions of a stage.
    /// (A component of no chain stage, `aggregate`, is handed back as it came: nothing replaced.)
    pub fn replace(&mut self, component: Arc<GuestComponent>) -> Arc<GuestComponent> {
        fn swap_in<S: Stage>(
            slot: &mut StageInstance<S>,
            sandbox: &Arc<Sandbox>,
            component: Arc<GuestComponent>,
        ) -> Arc<GuestComponent> {
            let fresh = StageInstance::new(sandbox.clone(), component);
            std::mem::replace(slot, fresh).component().clone()
        }
        let sandbox = &self.sandbox;
        match component.kind.chain_stage() {
            Some(ChainStage::Validate) => swap_in(&mut self.validate, sandbox, component),
            Some(ChainStage::Enrich) => swap_in(&mut self.enrich, sandbox, component),
            Some(ChainStage::Route) => swap_in(&mut self.route, sandbox, component),
            None => component,
        }
    }

    /// Batches in which `stage`'s guest faulted (trap, exhausted limit, broken contract).
    pub fn faulted_batches(&self, stage: ChainStage) -> u64 {
        self.faulted_batches[stage.index()]
    }
}

impl StageChain for WasmChain {
    fn process_columns(&mut self, batch: &TickColumns) -> Vec<StageOutcome> {
        let faults_before = ChainStage::ALL.map(|s| self.faults(s));
        let outcomes = self.process_batch(batch);
        for stage in ChainStage::ALL {
            if self.faults(stage) > faults_before[stage.index()] {
                self.faulted_batches[stage.index()] += 1;
            }
        }
        outcomes
    }

    fn versions(&self) -> GuestVersions {
        [
            self.validate.component(),
            self.enrich.component(),
            self.route.component(),
        ]
        .iter()
        .map(|c| (c.kind.name(), c.version.clone()))
        .collect()
    }
}

impl WasmChain {
    fn process_batch(&mut self, batch: &TickColumns) -> Vec<StageOutcome> {
        let validate_cfg = convert::validate_config(&self.config.validate);
        let enrich_cfg = convert::enrich_config(&self.config.enrich);
        let route_cfg = convert::route_config(&self.config.route);
        let (vv, ev, rv) = (
            self.validate.component().version.clone(),
            self.enrich.component().version.clone(),
            self.route.component().version.clone(),
        );
        let validate = &mut self.validate;
        let mut took = [std::time::Duration::ZERO; 3];
        let started = std::time::Instant::now();
        // The whole batch crosses as one copy of its columns: validate's call, and enrich's when
        // every tick passed. A part of it (a retry tick by tick after a fault, the ticks validate
        // accepted) gets columns of its own.
        let whole = batch.len();
        let columns = convert::tick_batch(batch);
        let every: Vec<usize> = (0..whole).collect();
        let part = |indices: &[usize]| convert::tick_batch_owned(batch.gather(indices));
        let validated = call_isolated(&every, |indices| {
            if indices.len() == whole {
                validate.validate_columns(&validate_cfg, &columns, whole)
            } else {
                validate.validate_columns(&validate_cfg, &part(indices), indices.len())
            }
        });
        took[0] = started.elapsed();
        let verdicts = validated
            .into_iter()
            .map(|v| match v {
                Ok(None) => Ok(()),
                Ok(Some(r)) => Err(Refusal::rejected(StageKind::Validate, &vv, r)),
                Err(f) => Err(Refusal::faulted(StageKind::Validate, &vv, f)),
            })
            .collect();
        let enrich = &mut self.enrich;
        let route = &mut self.route;
        let [_, enrich_took, route_took] = &mut took;
        let outcomes = assemble(
            &self.config,
            batch,
            verdicts,
            |accepted| {
                let started = std::time::Instant::now();
                let enriched = call_isolated(accepted, |indices| {
                    if indices.len() == whole {
                        enrich.enrich_columns(&enrich_cfg, &columns, whole)
                    } else {
                        enrich.enrich_columns(&enrich_cfg, &part(indices), indices.len())
                    }
                });
                if !accepted.is_empty() {
                    *enrich_took = started.elapsed();
                }
                enriched
                    .into_iter()
                    .map(|o| match o {
                        Ok(Ok(e)) => Ok(e),
                        Ok(Err(r)) => Err(Refusal::rejected(StageKind::Enrich, &ev, r)),
                        Err(f) => Err(Refusal::faulted(StageKind::Enrich, &ev, f)),
                    })
                    .collect()
            },
            |inputs| {
                let started = std::time::Instant::now();
                let routed = call_isolated(inputs, |b| route.route(&route_cfg, b));
                *route_took = started.elapsed();
                routed
                    .into_iter()
                    .map(|o| o.map_err(|f| Refusal::faulted(StageKind::Route, &rv, f)))
                    .collect()
            },
        );
        self.last_calls = took;
        outcomes
    }
}

/// The same logic, linked natively.
#[derive(Default)]
pub struct NativeChain {
    pub config: StageConfigs,
}

impl StageChain for NativeChain {
    fn process_columns(&mut self, batch: &TickColumns) -> Vec<StageOutcome> {
        let config = &self.config;
        let (bids, asks) = batch.levels();
        let views: Vec<TickRef<'_>> = batch.views(&bids, &asks);
        let verdicts = validate_logic::validate_batch(&config.validate, &views)
            .into_iter()
            .map(|v| match v {
                None => Ok(()),
                Some(r) => Err(Refusal::rejected(StageKind::Validate, "native", r)),
            })
            .collect();
        assemble(
            config,
            batch,
            verdicts,
            |accepted| {
                accepted
                    .iter()
                    .map(|&i| {
                        enrich_logic::enrich_tick(&config.enrich, &views[i])
                            .map_err(|r| Refusal::rejected(StageKind::Enrich, "native", r))
                    })
                    .collect()
            },
            |inputs| {
                route_logic::route_batch(&config.route, inputs)
                    .decode()
                    .expect("a plan made by the route logic is consistent")
                    .into_iter()
                    .map(Ok)
                    .collect()
            },
        )
    }

    fn versions(&self) -> GuestVersions {
        StageKind::ALL
            .iter()
            .map(|k| (k.name(), "native".to_string()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateSection {
    /// Offset from UTC, in minutes, of timestamps written without a zone (the sample's form).
    pub naive_timestamp_offset_minutes: i32,
    /// Earliest accepted tick time, RFC 3339.
    pub min_timestamp: String,
    /// How far past the host's clock a tick may be stamped, in seconds (0 = no limit).
    pub max_future_seconds: u64,
}

impl Default for ValidateSection {
    fn default() -> Self {
        Self {
            naive_timestamp_offset_minutes: 0,
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_seconds: 86_400,
        }
    }
}

impl ValidateSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.naive_timestamp_offset_minutes.abs() >= 24 * 60 {
            return invalid(
                "validate.naive_timestamp_offset_minutes",
                "must be within ±1439",
            );
        }
        // RFC 3339: a 'T' and a zone (a zone-less ISO time parses too, as a wall-clock time).
        let t = self.min_timestamp.as_str();
        let zoned = t.ends_with('Z')
            || t.ends_with('z')
            || t.len() > 6 && matches!(t.as_bytes()[t.len() - 6], b'+' | b'-');
        if stockpipe_model::time::parse_timestamp(t, 0).is_err() || !t.contains('T') || !zoned {
            return invalid(
                "validate.min_timestamp",
                "must be an RFC 3339 timestamp, e.g. 2000-01-01T00:00:00Z",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichSection {
    pub imbalance_levels: u32,
}

impl Default for EnrichSection {
    fn default() -> Self {
        Self {
            imbalance_levels: 5,
        }
    }
}

impl EnrichSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.imbalance_levels == 0 {
            return invalid("enrich.imbalance_levels", "must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteSection {
    pub search_index: String,
    /// Deprecated: an alias of the `[[alert.rules]]` rule `route.change_alert_pct` (kind
    /// `change_pct`, direction `both`); `<= 0` turns the default change rule off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_alert_pct: Option<f64>,
    /// Deprecated: an alias of the rule `route.spread_alert_bps` (kind `spread_bps`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spread_alert_bps: Option<f64>,
}

impl Default for RouteSection {
    fn default() -> Self {
        Self {
            search_index: "stock-stream".into(),
            change_alert_pct: None,
            spread_alert_bps: None,
        }
    }
}

impl RouteSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.search_index.is_empty() || self.search_index.chars().any(|c| c.is_ascii_uppercase())
        {
            return invalid(
                "route.search_index",
                "must be a non-empty lowercase index name",
            );
        }
        for (key, v) in [
            ("route.change_alert_pct", self.change_alert_pct),
            ("route.spread_alert_bps", self.spread_alert_bps),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                return invalid(key, "must be a finite number (<= 0 disables the alert)");
            }
        }
        Ok(())
    }
}
