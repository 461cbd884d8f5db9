//! What is loaded and what happened: the guests in place and the history of every swap
//! attempt, for `GET /guests`.

use super::SwapEvent;
use crate::chain::ChainComponents;
use crate::runtime::{ChainStage, GuestComponent};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Serialize)]
pub struct LoadedGuest {
    pub stage: &'static str,
    pub version: String,
    pub source: String,
}

#[derive(Debug, Default)]
struct RegistryState {
    loaded: Vec<LoadedGuest>,
    /// The stateful stages' guests, when they run (`aggregate`, then `alert`).
    stateful: Vec<LoadedGuest>,
    history: Vec<SwapEvent>,
}

/// What is loaded, and what happened: shared by the loop, the controller and the HTTP API.
#[derive(Debug, Default)]
pub struct GuestRegistry {
    state: Mutex<RegistryState>,
    /// Ticks the pipeline has processed (for observers; the loop adds to it per batch).
    pub processed: AtomicU64,
    /// Set once the service is consuming, with its watcher and API in place.
    pub started: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistryView {
    pub guests: Vec<LoadedGuest>,
    pub history: Vec<SwapEvent>,
    pub processed: u64,
}

impl GuestRegistry {
    pub fn set_loaded(&self, components: &ChainComponents) {
        let loaded = ChainStage::ALL
            .iter()
            .map(|&s| {
                let c = components.get(s);
                LoadedGuest {
                    stage: s.kind().name(),
                    version: c.version.clone(),
                    source: c.source_name.clone(),
                }
            })
            .collect();
        self.state.lock().expect("registry lock").loaded = loaded;
    }

    /// A stateful stage's guest (`aggregate`, `alert`) serves.
    pub fn set_stateful(&self, component: &GuestComponent) {
        let guest = LoadedGuest {
            stage: component.kind.name(),
            version: component.version.clone(),
            source: component.source_name.clone(),
        };
        let mut state = self.state.lock().expect("registry lock");
        state.stateful.retain(|g| g.stage != guest.stage);
        state.stateful.push(guest);
        state.stateful.sort_by_key(|g| {
            crate::runtime::StageKind::STATEFUL
                .map(|k| k.name())
                .iter()
                .position(|n| *n == g.stage)
        });
    }

    /// The version of a stateful stage's guest, when it runs.
    pub fn stateful_version(&self, kind: crate::runtime::StageKind) -> Option<String> {
        let state = self.state.lock().expect("registry lock");
        state
            .stateful
            .iter()
            .find(|g| g.stage == kind.name())
            .map(|g| g.version.clone())
    }

    pub fn record(&self, event: SwapEvent) {
        match event.outcome {
            "refused" => {
                tracing::warn!(stage = event.stage, trigger = %event.trigger, shadow = ?event.shadow, reason = %event.reason, "guest swap refused; the current version keeps serving")
            }
            "rolled-back" => {
                tracing::warn!(stage = event.stage, from = %event.from_version, reason = %event.reason, "guest rolled back")
            }
            _ => {
                tracing::info!(stage = event.stage, outcome = event.outcome, from = %event.from_version, to = ?event.to_version, shadow = ?event.shadow, reason = %event.reason, "guest swap")
            }
        }
        self.state
            .lock()
            .expect("registry lock")
            .history
            .push(event);
    }

    pub fn view(&self) -> RegistryView {
        let state = self.state.lock().expect("registry lock");
        RegistryView {
            guests: state
                .loaded
                .iter()
                .chain(&state.stateful)
                .cloned()
                .collect(),
            history: state.history.clone(),
            processed: self.processed.load(Ordering::Relaxed),
        }
    }
}
