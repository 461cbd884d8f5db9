//! Hot swap as the run loop sees it: a checked candidate comes in between two batches (the only
//! place a guest may change), and every processed batch goes to the shadow buffer that
//! candidates are tried on.

use crate::chain::WasmChain;
use crate::chain::swap::{GuestRegistry, ShadowBuffer, Swap, SwapApplier};
use std::sync::{Arc, Mutex};
use stockpipe_model::columns::TickColumns;

pub(super) struct HotSwap {
    /// What is loaded and what happened (processed count, swaps), shared with the HTTP API.
    pub(super) registry: Arc<GuestRegistry>,
    shadow: Arc<Mutex<ShadowBuffer>>,
    /// None: hot swap is off.
    applier: Option<SwapApplier>,
}

impl HotSwap {
    /// Off; `chain` is what is loaded.
    pub(super) fn off(chain: &WasmChain) -> Self {
        let registry = Arc::new(GuestRegistry::default());
        registry.set_loaded(&chain.components());
        Self {
            registry,
            shadow: Arc::new(Mutex::new(ShadowBuffer::new(0))),
            applier: None,
        }
    }

    pub(super) fn share_registry(&mut self, registry: Arc<GuestRegistry>, chain: &WasmChain) {
        registry.set_loaded(&chain.components());
        self.registry = registry;
    }

    pub(super) fn on(&mut self, applier: SwapApplier, shadow: Arc<Mutex<ShadowBuffer>>) {
        self.applier = Some(applier);
        self.shadow = shadow;
    }

    /// Brings a pending chain swap in; returns the swaps of the stateful stage (aggregate), which
    /// hand their state over in the loop.
    pub(super) fn apply_pending(&mut self, chain: &mut WasmChain) -> Vec<Swap> {
        let Some(applier) = &mut self.applier else {
            return Vec::new();
        };
        let (pause, stateful) = applier.apply_pending(chain);
        if let Some(pause) = pause {
            tracing::info!(
                pause_us = pause.as_micros() as u64,
                "guest swapped between batches"
            );
        }
        stateful
    }

    /// The applier's watch over a new version, the processed count, and the shadow buffer.
    pub(super) fn after_batch(&mut self, chain: &mut WasmChain, ticks: TickColumns) {
        if let Some(applier) = &mut self.applier {
            applier.after_batch(chain);
        }
        self.registry
            .processed
            .fetch_add(ticks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.shadow
            .lock()
            .expect("shadow lock")
            .push(Arc::new(ticks));
    }
}
