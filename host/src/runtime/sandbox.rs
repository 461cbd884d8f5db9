//! The sandbox every guest runs in: no WASI filesystem, network, environment or arguments (a Rust
//! std guest imports WASI interfaces even when it does no I/O, so they are linked to an empty
//! context rather than left undefined), a memory cap per instance, and a deadline per call enforced
//! by epoch interruption (a background thread advances the engine's epoch).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits applied to every guest instance and call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Wall-clock budget of one call (one batch through one stage).
    pub call_deadline: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Granularity of the deadline (the epoch period).
    pub epoch_tick: Duration,
    /// Instructions' worth of fuel per call, a deterministic budget on top of the deadline;
    /// `None` = off (fuel metering costs every guest instruction some time).
    pub fuel_per_call: Option<u64>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            call_deadline: Duration::from_millis(500),
            memory_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(5),
            fuel_per_call: None,
        }
    }
}

impl SandboxLimits {
    /// The deadline in epochs, at least one.
    pub fn deadline_epochs(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (self.call_deadline.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

/// Per-store state: an empty WASI context and the memory limiter.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine, the linker (empty WASI only) and the epoch clock shared by every guest.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: SandboxLimits,
    _ticker: EpochTicker,
}

impl Sandbox {
    pub fn new(limits: SandboxLimits) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel_per_call.is_some());
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        let ticker = EpochTicker::start(engine.clone(), limits.epoch_tick);
        Ok(Self {
            engine,
            linker,
            limits,
            _ticker: ticker,
        })
    }

    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component and resolves its imports against the empty WASI context. A component
    /// that imports anything else (e.g. an HTTP client) is refused here.
    pub fn prepare(&self, bytes: &[u8]) -> anyhow::Result<InstancePre<GuestState>> {
        let component = Component::new(&self.engine, bytes).map_err(anyhow::Error::from)?;
        self.linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
    }

    /// A fresh store: new linear memory, the memory cap, and a deadline that is re-armed per call.
    pub fn new_store(&self) -> Store<GuestState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(4)
            .trap_on_grow_failure(true)
            .build();
        let state = GuestState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.limits.deadline_epochs());
        if let Some(fuel) = self.limits.fuel_per_call {
            store
                .set_fuel(fuel)
                .expect("fuel metering is on when a budget is set");
        }
        store
    }
}
