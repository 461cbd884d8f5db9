//! The `[guests]` section: where guests come from, their sandbox limits, the swap policy.

use super::SwapPolicy;
use crate::config::error::{ConfigError, invalid};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestsSection {
    /// Directory holding validate.wasm, enrich.wasm and route.wasm; empty = the embedded guests.
    pub dir: Option<PathBuf>,
    pub call_deadline_ms: u64,
    pub memory_mib: usize,
    /// Fuel per call (a deterministic instruction budget on top of the deadline); 0 = off.
    pub fuel_per_call: u64,
    /// Swap a guest when its file in `dir` changes.
    pub watch: bool,
    /// Latest processed ticks a candidate is run on, beside the current version, before a swap.
    pub shadow_ticks: usize,
    /// Refuse a swap whose candidate rejects more than this share of what the current version accepted.
    pub max_new_reject_share: f64,
    /// Roll back a new version that faults in more than this many batches...
    pub rollback_after_faults: u64,
    /// ...among its first this-many batches.
    pub rollback_window_batches: u64,
}

impl Default for GuestsSection {
    fn default() -> Self {
        let policy = SwapPolicy::default();
        Self {
            dir: None,
            call_deadline_ms: 500,
            memory_mib: 64,
            fuel_per_call: 0,
            watch: true,
            shadow_ticks: policy.shadow_ticks,
            max_new_reject_share: policy.max_new_reject_share,
            rollback_after_faults: policy.rollback_after_faults,
            rollback_window_batches: policy.rollback_window_batches,
        }
    }
}

impl GuestsSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.call_deadline_ms == 0 {
            return invalid("guests.call_deadline_ms", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.max_new_reject_share) {
            return invalid(
                "guests.max_new_reject_share",
                "must be a share between 0 and 1",
            );
        }
        if self.shadow_ticks > 1_000_000 {
            return invalid("guests.shadow_ticks", "must be at most 1000000");
        }
        if self.rollback_window_batches == 0 {
            return invalid("guests.rollback_window_batches", "must be at least 1");
        }
        if !(1..=4096).contains(&self.memory_mib) {
            return invalid("guests.memory_mib", "must be between 1 and 4096");
        }
        Ok(())
    }

    pub fn swap_policy(&self) -> SwapPolicy {
        SwapPolicy {
            shadow_ticks: self.shadow_ticks,
            max_new_reject_share: self.max_new_reject_share,
            rollback_after_faults: self.rollback_after_faults,
            rollback_window_batches: self.rollback_window_batches,
        }
    }
}
