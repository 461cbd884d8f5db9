//! The wasm side of the host: the sandbox, the stage guests, and the calls into them.
//!
//! - [`sandbox`]: engine, empty-WASI linker, memory cap, per-call epoch deadline.
//! - [`bindings`]: the one `bindgen!`.
//! - [`GuestComponent`]: a compiled, checked component and its version (a content hash).
//! - [`StageInstance`]: a store + instance of one guest; a fault (trap, exhausted limit, wrong
//!   number of outcomes) discards the instance and the next call gets a fresh one.
//! - [`call_isolated`]: one call per batch; when that call faults, one call per item, so that only
//!   the poison item fails and the rest of the batch goes on.

pub mod bindings;
pub mod convert;
pub mod sandbox;
mod stateful;

pub use stateful::StateCalls;

use bindings::{aggregate, alert, enrich, route, validate};
use sandbox::{GuestState, Sandbox};
use sha2::Digest;
use std::sync::Arc;
use stockpipe_model::columns::TickColumns;
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// The stages: the stateless chain's three in pipeline order, then the stateful two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    Validate,
    Enrich,
    Route,
    /// Bars per instrument, with state kept across calls ([`crate::chain::aggregate`]). Not one
    /// of [`StageKind::ALL`]: it runs after the chain, only when configured, and is not swapped
    /// through the chain's controller.
    Aggregate,
    /// Alert rules, with state kept across calls ([`crate::chain::alert`]); like `aggregate`,
    /// after the chain.
    Alert,
}

impl StageKind {
    /// The stateless chain, in pipeline order.
    pub const ALL: [StageKind; 3] = [StageKind::Validate, StageKind::Enrich, StageKind::Route];

    pub fn name(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Enrich => "enrich",
            Self::Route => "route",
            Self::Aggregate => "aggregate",
            Self::Alert => "alert",
        }
    }

    /// The stages with a state of their own: swapped by the run loop, which hands the state over.
    pub const STATEFUL: [StageKind; 2] = [StageKind::Aggregate, StageKind::Alert];

    pub fn is_stateful(self) -> bool {
        Self::STATEFUL.contains(&self)
    }

    /// The component's file name in a guests directory.
    pub fn file_name(self) -> String {
        format!("{}.wasm", self.name())
    }

    /// One of the chain's stages by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Any stage a guests directory, a reload or a promotion may name: the chain's and the
    /// stateful ones.
    pub fn from_swappable_name(name: &str) -> Option<Self> {
        Self::from_name(name).or(Self::STATEFUL.into_iter().find(|k| k.name() == name))
    }
}

/// The stateless chain's stages, in pipeline order: what a [`crate::chain::WasmChain`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainStage {
    Validate,
    Enrich,
    Route,
}

impl ChainStage {
    pub const ALL: [ChainStage; 3] = [Self::Validate, Self::Enrich, Self::Route];

    pub fn kind(self) -> StageKind {
        match self {
            Self::Validate => StageKind::Validate,
            Self::Enrich => StageKind::Enrich,
            Self::Route => StageKind::Route,
        }
    }

    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    /// Its place in pipeline order.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl StageKind {
    /// The chain's stage this is, if it is one (not `aggregate`).
    pub fn chain_stage(self) -> Option<ChainStage> {
        match self {
            Self::Validate => Some(ChainStage::Validate),
            Self::Enrich => Some(ChainStage::Enrich),
            Self::Route => Some(ChainStage::Route),
            Self::Aggregate | Self::Alert => None,
        }
    }
}

/// The guest components built with this binary (see build.rs).
pub const EMBEDDED_GUESTS: [(&str, &[u8]); 5] =
    include!(concat!(env!("OUT_DIR"), "/embedded_guests.rs"));

/// Where build.rs put the test-only guests (e.g. `stockpipe_guest_hostile.wasm`); never embedded.
#[doc(hidden)]
pub const TEST_GUESTS_DIR: &str = env!("BUILT_GUESTS_DIR_FOR_TESTS");

/// The component embedded in this binary for a stage.
pub fn embedded_component(kind: StageKind) -> &'static [u8] {
    EMBEDDED_GUESTS
        .iter()
        .find(|(name, _)| *name == kind.name())
        .map(|(_, b)| *b)
        .expect("every stage is embedded")
}

/// The version of the `stockpipe:pipeline` package this host serves (wit/pipeline.wit).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The version of `stockpipe:pipeline` a component's export of `stage` names, when it names one
/// other than [`CONTRACT_VERSION`].
fn other_contract(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
    stage: &str,
) -> Option<String> {
    let prefix = format!("stockpipe:pipeline/{stage}@");
    component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix(&prefix).map(str::to_string))
        .filter(|version| version != CONTRACT_VERSION)
}

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuestLoadError {
    #[error("guest {stage} from {source_name}: not a loadable component: {reason}")]
    Compile {
        stage: &'static str,
        source_name: String,
        reason: String,
    },
    #[error(
        "guest {stage} from {source_name}: built for stockpipe:pipeline@{built_for}, and this host serves @{CONTRACT_VERSION}: rebuild it against the {CONTRACT_VERSION} contract (`stockpipe guest new` writes a crate on it; what changed is at the top of wit/pipeline.wit)"
    )]
    WrongVersion {
        stage: &'static str,
        source_name: String,
        built_for: String,
    },
    #[error(
        "guest {stage} from {source_name}: does not implement stockpipe:pipeline/{stage}@{CONTRACT_VERSION}: {reason}"
    )]
    WrongWorld {
        stage: &'static str,
        source_name: String,
        reason: String,
    },
}

/// A compiled component, checked to export its stage's interface.
pub struct GuestComponent {
    pub kind: StageKind,
    /// `sha256:<first 16 hex digits>` of the component bytes.
    pub version: String,
    /// Where it came from: a path, or `embedded`.
    pub source_name: String,
    pre: InstancePre<GuestState>,
}

impl std::fmt::Debug for GuestComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestComponent")
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("source_name", &self.source_name)
            .finish()
    }
}

/// The content hash that names a guest version.
pub fn component_version(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl GuestComponent {
    pub fn load(
        sandbox: &Sandbox,
        kind: StageKind,
        bytes: &[u8],
        source_name: impl Into<String>,
    ) -> Result<Self, GuestLoadError> {
        let source_name = source_name.into();
        let stage = kind.name();
        let pre = sandbox
            .prepare(bytes)
            .map_err(|e| GuestLoadError::Compile {
                stage,
                source_name: source_name.clone(),
                reason: format!("{e:#}"),
            })?;
        // A trial instance in a throw-away store: the export must exist *and* have the right
        // types, and the component must instantiate within the limits, before it may serve.
        let mut store = sandbox.new_store();
        if let Err(e) = trial(&pre, kind, &mut store) {
            if let Some(built_for) = other_contract(sandbox.engine(), pre.component(), stage) {
                return Err(GuestLoadError::WrongVersion {
                    stage,
                    source_name,
                    built_for,
                });
            }
            return Err(GuestLoadError::WrongWorld {
                stage,
                source_name,
                reason: format!("{e:#}"),
            });
        }
        Ok(Self {
            kind,
            version: component_version(bytes),
            source_name,
            pre,
        })
    }
}

/// What kind of fault ended a call; its text is the refusal's code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// The call outran its deadline (`guests.call_deadline_ms`).
    DeadlineExceeded,
    /// The call used up its fuel (`guests.fuel_per_call`).
    FuelExhausted,
    /// The guest asked for more memory than its cap.
    MemoryExhausted,
    /// Any other trap: a panic, an unreachable, an out-of-bounds access.
    Trap,
    /// An answer of the wrong shape: the wrong number of outcomes, columns of unequal length.
    BrokenContract,
}

impl FaultCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::FuelExhausted => "fuel-exhausted",
            Self::MemoryExhausted => "memory-exhausted",
            Self::Trap => "trap",
            Self::BrokenContract => "broken-contract",
        }
    }
}

impl std::fmt::Display for FaultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for FaultCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What went wrong in one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFault {
    pub code: FaultCode,
    pub message: String,
}

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl GuestFault {
    fn from_wasmtime(e: wasmtime::Error) -> Self {
        let message = format!("{e:#}");
        let code = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => FaultCode::DeadlineExceeded,
            Some(wasmtime::Trap::OutOfFuel) => FaultCode::FuelExhausted,
            _ if message.contains("growing memory") || message.contains("memory size") => {
                FaultCode::MemoryExhausted
            }
            _ => FaultCode::Trap,
        };
        Self { code, message }
    }

    fn broken_contract(message: String) -> Self {
        Self {
            code: FaultCode::BrokenContract,
            message,
        }
    }
}

/// One stage's contract as the host calls it: its kind and its exports, loaded (and so
/// type-checked) from an instance. A [`StageInstance`] is typed by its stage, so each call finds
/// the exports it needs without asking which stage it is.
pub trait Stage {
    const KIND: StageKind;
    type Exports;
    fn load(
        pre: &InstancePre<GuestState>,
        store: &mut Store<GuestState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<Self::Exports>;
}

macro_rules! stage {
    ($(#[$doc:meta])* $name:ident, $kind:ident, $world:ident) => {
        $(#[$doc])*
        pub enum $name {}

        impl Stage for $name {
            const KIND: StageKind = StageKind::$kind;
            type Exports = $world::Guest;
            fn load(
                pre: &InstancePre<GuestState>,
                store: &mut Store<GuestState>,
                instance: &wasmtime::component::Instance,
            ) -> wasmtime::Result<Self::Exports> {
                $world::GuestIndices::new(pre)?.load(store, instance)
            }
        }
    };
}

stage!(
    /// `validate-batch`: a verdict per tick.
    ValidateStage, Validate, validate
);
stage!(
    /// `enrich-batch`: the enrichment columns.
    EnrichStage, Enrich, enrich
);
stage!(
    /// `route-batch`: the destinations.
    RouteStage, Route, route
);
stage!(
    /// `aggregate-batch` and the state calls: bars, with state kept per partition.
    AggregateStage, Aggregate, aggregate
);
stage!(
    /// `check-rules`, `alert-batch` and the state calls: alert events, with state kept per
    /// partition.
    AlertStage, Alert, alert
);

/// Instantiates a component and loads `S`'s exports, type-checking them.
fn instantiate<S: Stage>(
    pre: &InstancePre<GuestState>,
    store: &mut Store<GuestState>,
) -> wasmtime::Result<S::Exports> {
    let instance = pre.instantiate(&mut *store)?;
    S::load(pre, store, &instance)
}

/// A trial instance of `kind`'s stage, in a throw-away store: the check a component passes
/// before it may serve.
fn trial(
    pre: &InstancePre<GuestState>,
    kind: StageKind,
    store: &mut Store<GuestState>,
) -> wasmtime::Result<()> {
    match kind {
        StageKind::Validate => instantiate::<ValidateStage>(pre, store).map(drop),
        StageKind::Enrich => instantiate::<EnrichStage>(pre, store).map(drop),
        StageKind::Route => instantiate::<RouteStage>(pre, store).map(drop),
        StageKind::Aggregate => instantiate::<AggregateStage>(pre, store).map(drop),
        StageKind::Alert => instantiate::<AlertStage>(pre, store).map(drop),
    }
}

struct Live<S: Stage> {
    store: Store<GuestState>,
    exports: S::Exports,
}

/// One guest's instance, typed by its stage. Faults discard it; the next call instantiates afresh
/// (~10 µs). Built for a component of another stage, its exports do not load: every call is a
/// fault, never a wrong call.
pub struct StageInstance<S: Stage> {
    component: Arc<GuestComponent>,
    deadline_epochs: u64,
    fuel_per_call: Option<u64>,
    new_store: Box<dyn Fn() -> Store<GuestState> + Send>,
    live: Option<Live<S>>,
    faults: u64,
}

impl<S: Stage> StageInstance<S> {
    pub fn new(sandbox: Arc<Sandbox>, component: Arc<GuestComponent>) -> Self {
        let deadline_epochs = sandbox.limits().deadline_epochs();
        let fuel_per_call = sandbox.limits().fuel_per_call;
        Self {
            component,
            deadline_epochs,
            fuel_per_call,
            new_store: Box::new(move || sandbox.new_store()),
            live: None,
            faults: 0,
        }
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        &self.component
    }

    /// Calls that faulted so far (a batch call and its tick-by-tick retries each count).
    pub fn faults(&self) -> u64 {
        self.faults
    }

    fn live(&mut self) -> Result<&mut Live<S>, GuestFault> {
        if self.live.is_none() {
            let mut store = (self.new_store)();
            let exports = instantiate::<S>(&self.component.pre, &mut store)
                .map_err(GuestFault::from_wasmtime)?;
            self.live = Some(Live { store, exports });
        }
        Ok(self.live.as_mut().expect("just set"))
    }

    /// Runs one call with a fresh deadline; any fault (or an answer of the wrong shape)
    /// discards the instance.
    fn call<O>(
        &mut self,
        f: impl FnOnce(&S::Exports, &mut Store<GuestState>) -> Result<O, GuestFault>,
    ) -> Result<O, GuestFault> {
        let (deadline, fuel) = (self.deadline_epochs, self.fuel_per_call);
        let live = self.live()?;
        live.store.set_epoch_deadline(deadline);
        if let Some(fuel) = fuel {
            live.store
                .set_fuel(fuel)
                .map_err(GuestFault::from_wasmtime)?;
        }
        let result = f(&live.exports, &mut live.store);
        if result.is_err() {
            self.live = None;
            self.faults += 1;
        }
        result
    }
}

impl StageInstance<ValidateStage> {
    pub fn validate(
        &mut self,
        config: &validate::ValidateConfig,
        ticks: &[stockpipe_model::TickRef<'_>],
    ) -> Result<Vec<Option<stockpipe_model::Rejection>>, GuestFault> {
        let batch = convert::tick_batch_owned(TickColumns::from_views(ticks));
        self.validate_columns(config, &batch, ticks.len())
    }

    /// [`StageInstance::validate`] of `ticks` ticks already laid out as columns (the chain builds
    /// them once for validate and, when every tick passed, enrich).
    pub fn validate_columns(
        &mut self,
        config: &validate::ValidateConfig,
        batch: &bindings::types::TickBatch,
        ticks: usize,
    ) -> Result<Vec<Option<stockpipe_model::Rejection>>, GuestFault> {
        self.call(|exports, store| {
            let g = exports;
            let out = g
                .call_validate_batch(store, *config, batch)
                .map_err(GuestFault::from_wasmtime)?;
            expect_len(ticks, out.len())?;
            Ok(out
                .into_iter()
                .map(|v| v.map(convert::rejection_from_wit))
                .collect())
        })
    }
}

impl StageInstance<EnrichStage> {
    pub fn enrich(
        &mut self,
        config: &enrich::EnrichConfig,
        ticks: &[stockpipe_model::TickRef<'_>],
    ) -> Result<Vec<Result<stockpipe_model::Enrichment, stockpipe_model::Rejection>>, GuestFault>
    {
        let batch = convert::tick_batch_owned(TickColumns::from_views(ticks));
        self.enrich_columns(config, &batch, ticks.len())
    }

    /// [`StageInstance::enrich`] of `ticks` ticks already laid out as columns.
    pub fn enrich_columns(
        &mut self,
        config: &enrich::EnrichConfig,
        batch: &bindings::types::TickBatch,
        ticks: usize,
    ) -> Result<Vec<Result<stockpipe_model::Enrichment, stockpipe_model::Rejection>>, GuestFault>
    {
        self.call(|exports, store| {
            let g = exports;
            let out = g
                .call_enrich_batch(store, *config, batch)
                .map_err(GuestFault::from_wasmtime)?;
            let outcomes = convert::enrichment_columns_from_wit(out)
                .into_outcomes()
                .map_err(GuestFault::broken_contract)?;
            expect_len(ticks, outcomes.len())?;
            Ok(outcomes)
        })
    }
}

impl StageInstance<RouteStage> {
    pub fn route(
        &mut self,
        config: &route::RouteConfig,
        inputs: &[stockpipe_model::route::RouteInput],
    ) -> Result<Vec<stockpipe_model::route::Destinations>, GuestFault> {
        let batch = convert::route_batch(inputs);
        self.call(|exports, store| {
            let g = exports;
            let out = g
                .call_route_batch(store, config, &batch)
                .map_err(GuestFault::from_wasmtime)?;
            let destinations = convert::route_plan_from_wit(out)
                .decode()
                .map_err(GuestFault::broken_contract)?;
            expect_len(inputs.len(), destinations.len())?;
            Ok(destinations)
        })
    }
}

impl StageInstance<AggregateStage> {
    /// One aggregate call. The guest's state lives in the instance: a fault discards it, and the
    /// caller restores what it checkpointed ([`crate::chain::aggregate`]).
    pub fn aggregate(
        &mut self,
        config: &aggregate::AggregateConfig,
        input: &aggregate::AggregateInput,
    ) -> Result<stockpipe_model::aggregate::AggregateOutput, GuestFault> {
        let ticks = input.timestamp_us.len();
        self.call(|exports, store| {
            let g = exports;
            let out = g
                .call_aggregate_batch(store, *config, input)
                .map_err(GuestFault::from_wasmtime)?;
            convert::aggregate_output_from_wit(out, ticks).map_err(GuestFault::broken_contract)
        })
    }
}

fn expect_len(inputs: usize, outputs: usize) -> Result<(), GuestFault> {
    if inputs == outputs {
        Ok(())
    } else {
        Err(GuestFault::broken_contract(format!(
            "guest returned {outputs} outcomes for {inputs} inputs"
        )))
    }
}

/// Calls `call` once for the whole batch; if that faults, once per item, so that a poison item
/// fails alone. Returns one result per input, in order.
pub fn call_isolated<I, O>(
    inputs: &[I],
    mut call: impl FnMut(&[I]) -> Result<Vec<O>, GuestFault>,
) -> Vec<Result<O, GuestFault>> {
    if inputs.is_empty() {
        return Vec::new();
    }
    match call(inputs) {
        Ok(outputs) => outputs.into_iter().map(Ok).collect(),
        Err(batch_fault) => {
            tracing::warn!(items = inputs.len(), fault = %batch_fault, "batch call faulted; retrying item by item");
            inputs
                .iter()
                .map(|item| {
                    call(std::slice::from_ref(item))
                        .map(|mut one| one.pop().expect("length checked"))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_fails_only_the_poison_item() {
        let inputs = [1, 2, 13, 4];
        let mut calls = 0;
        let out = call_isolated(&inputs, |batch| {
            calls += 1;
            if batch.contains(&13) {
                Err(GuestFault {
                    code: FaultCode::Trap,
                    message: "unlucky".into(),
                })
            } else {
                Ok(batch.iter().map(|x| x * 10).collect())
            }
        });
        assert_eq!(calls, 5);
        assert_eq!(out[0], Ok(10));
        assert_eq!(out[2].as_ref().unwrap_err().code, FaultCode::Trap);
        assert_eq!(out[3], Ok(40));
    }

    #[test]
    fn deadline_epochs_round_up() {
        let limits = sandbox::SandboxLimits {
            call_deadline: std::time::Duration::from_millis(12),
            epoch_tick: std::time::Duration::from_millis(5),
            ..Default::default()
        };
        assert_eq!(limits.deadline_epochs(), 3);
    }
}
