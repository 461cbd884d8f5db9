//! The stateful stages after the chain — the aggregate stage's bars ([`Bars`]), then the alert
//! stage ([`Alerts`]), which reads the bars closed in the same batch — as one per-partition
//! lifecycle: a partition is committed only as far as *both* stages' stored checkpoints allow
//! (the aggregate's limit, limited again by the alert stage's), and a guest swap goes to the
//! stage it is for.

use super::alerts::{self, Alerts};
use super::bars::{self, Bars};
use crate::chain::swap::{GuestRegistry, Swap};
use crate::runtime::StageKind;
use crate::sink::PartitionLifecycle;

#[derive(Default)]
pub(super) struct Stateful {
    pub(super) bars: Option<Bars>,
    pub(super) alerts: Option<Alerts>,
}

impl Stateful {
    /// A new version of a stateful stage's guest, between two batches (see [`bars::swap`],
    /// [`alerts::swap`]).
    pub(super) fn swap(&mut self, swap: Swap, registry: &GuestRegistry) {
        match swap.component.kind {
            StageKind::Alert => alerts::swap(&mut self.alerts, swap, registry),
            _ => bars::swap(&mut self.bars, swap, registry),
        }
    }
}

impl PartitionLifecycle for Stateful {
    fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        self.bars.assigned(partition, committed);
        self.alerts.assigned(partition, committed);
    }

    fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        let at = self.bars.commit_limit(partition, position)?;
        self.alerts.commit_limit(partition, at)
    }

    fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        let advanced = self.bars.limit_advanced(advanced);
        self.alerts.limit_advanced(advanced)
    }

    fn forget(&mut self, partition: i32) -> usize {
        self.bars.forget(partition) + self.alerts.forget(partition)
    }
}
