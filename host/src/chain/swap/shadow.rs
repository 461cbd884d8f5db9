//! The shadow run's material and verdict: the last ticks the pipeline processed, and how a
//! candidate's outcomes on them compare with the current version's.

use super::SwapPolicy;
use crate::chain::StageOutcome;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::{Tick, TickRef};

/// The latest processed batches, shared (not copied) with the shadow runs.
#[derive(Debug, Default)]
pub struct ShadowBuffer {
    batches: VecDeque<Arc<TickColumns>>,
    ticks: usize,
    capacity: usize,
}

impl ShadowBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    pub fn push(&mut self, batch: Arc<TickColumns>) {
        if self.capacity == 0 || batch.is_empty() {
            return;
        }
        self.ticks += batch.len();
        self.batches.push_back(batch);
        while self.ticks - self.batches.front().map_or(0, |b| b.len()) >= self.capacity {
            let dropped = self.batches.pop_front().expect("non-empty");
            self.ticks -= dropped.len();
        }
    }

    /// The latest `capacity` ticks (or fewer), oldest first.
    pub fn snapshot(&self) -> Vec<Tick> {
        let mut skip = self.ticks.saturating_sub(self.capacity);
        let mut latest = Vec::with_capacity(self.ticks - skip);
        for batch in &self.batches {
            if skip >= batch.len() {
                skip -= batch.len();
                continue;
            }
            let (bids, asks) = batch.levels();
            let views = batch.views(&bids, &asks);
            latest.extend(views[skip..].iter().map(TickRef::to_tick));
            skip = 0;
        }
        latest
    }
}

/// How the candidate's outcomes differ from the current version's on the same ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShadowReport {
    pub ticks: usize,
    /// Accepted by the current version.
    pub accepted_before: usize,
    /// Accepted by the current version, refused (or faulted) by the candidate.
    pub newly_rejected: usize,
    /// Refused by the current version, accepted by the candidate.
    pub newly_accepted: usize,
    /// Accepted by both, routed differently.
    pub route_changes: usize,
    /// Accepted by both, with different features.
    pub feature_changes: usize,
}

impl ShadowReport {
    pub fn compare(before: &[StageOutcome], after: &[StageOutcome]) -> Self {
        let mut r = Self {
            ticks: before.len(),
            ..Self::default()
        };
        for (b, a) in before.iter().zip(after) {
            match (b, a) {
                (
                    StageOutcome::Accepted {
                        enrichment: eb,
                        destinations: db,
                    },
                    StageOutcome::Accepted {
                        enrichment: ea,
                        destinations: da,
                    },
                ) => {
                    r.accepted_before += 1;
                    r.route_changes += usize::from(db != da);
                    r.feature_changes += usize::from(eb != ea);
                }
                (StageOutcome::Accepted { .. }, StageOutcome::Refused { .. }) => {
                    r.accepted_before += 1;
                    r.newly_rejected += 1;
                }
                (StageOutcome::Refused { .. }, StageOutcome::Accepted { .. }) => {
                    r.newly_accepted += 1
                }
                (StageOutcome::Refused { .. }, StageOutcome::Refused { .. }) => {}
            }
        }
        r
    }

    /// `Err(reason)` when the policy refuses the candidate.
    pub fn verdict(&self, policy: &SwapPolicy) -> Result<(), String> {
        if self.accepted_before == 0 {
            return Ok(());
        }
        let share = self.newly_rejected as f64 / self.accepted_before as f64;
        if share > policy.max_new_reject_share {
            return Err(format!(
                "the new version rejects {} of the {} shadow ticks the current one accepted ({:.1} % > {:.1} %)",
                self.newly_rejected,
                self.accepted_before,
                share * 100.0,
                policy.max_new_reject_share * 100.0
            ));
        }
        Ok(())
    }
}
