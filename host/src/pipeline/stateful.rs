//! The stateful stages after the chain — the aggregate stage's bars ([`Bars`]), then the alert
//! stage ([`Alerts`]), which reads the bars closed in the same batch — as one per-partition
//! lifecycle.
//!
//! Invariant: a partition is committed only at an offset where *every* stateful stage holds a
//! stored checkpoint of its state, so a host that takes the partition over restores each stage
//! at exactly the committed offset. Two things keep it: the stages' checkpoint rounds start
//! together ([`Stateful::save`]), so their snapshots stand at the same offsets; and the commit
//! limit is the newest offset at or before the acknowledged position that both stores hold
//! ([`Stateful::commit_limit`], a fixed point of the stages' own limits), never one stage's
//! limit cut by the other's.

use super::alerts::{self, Alerts};
use super::bars::{self, Bars};
use crate::chain::swap::{GuestRegistry, Swap};
use crate::runtime::StageKind;
use crate::sink::PartitionLifecycle;
use crate::sink::store::LakeStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Default)]
pub(super) struct Stateful {
    pub(super) bars: Option<Bars>,
    pub(super) alerts: Option<Alerts>,
    hand_on: HandOn,
    saved_at: Option<Instant>,
}

/// Which commit limits to hand on: per partition, the position every sink acknowledged and the
/// limit last handed on. Pure bookkeeping: the stages' stored checkpoints set the limits.
#[derive(Debug, Default)]
struct HandOn {
    wanted: HashMap<i32, i64>,
    handed: HashMap<i32, i64>,
}

impl HandOn {
    /// The positions that `advanced` (and the checkpoints stored since, through `limit`) let
    /// move: each partition's limit, when it differs from the one last handed on.
    fn advanced(
        &mut self,
        advanced: Vec<(i32, i64)>,
        limit: impl Fn(i32, i64) -> Option<i64>,
    ) -> Vec<(i32, i64)> {
        self.wanted.extend(advanced);
        let mut due = Vec::new();
        for (&partition, &position) in &self.wanted {
            if let Some(at) = limit(partition, position)
                && self.handed.get(&partition) != Some(&at)
            {
                self.handed.insert(partition, at);
                due.push((partition, at));
            }
        }
        due.sort_unstable();
        due
    }

    fn forget(&mut self, partition: i32) {
        self.wanted.remove(&partition);
        self.handed.remove(&partition);
    }
}

impl Stateful {
    fn any(&self) -> bool {
        self.bars.is_some() || self.alerts.is_some()
    }

    /// A new version of a stateful stage's guest, between two batches (see [`bars::swap`],
    /// [`alerts::swap`]).
    pub(super) fn swap(&mut self, swap: Swap, registry: &GuestRegistry) {
        match swap.component.kind {
            StageKind::Alert => alerts::swap(&mut self.alerts, swap, registry),
            _ => bars::swap(&mut self.bars, swap, registry),
        }
    }

    /// Takes in the checkpoint stores that landed and, every `checkpoint_ms` (the shortest of
    /// the stages'), or now with `all` (waiting for it), starts one round for every stage at
    /// once: only when none is still storing, so every stage's round stores the snapshots at the
    /// same offsets.
    pub(super) async fn save(
        &mut self,
        all: bool,
        store: &Arc<LakeStore>,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<()> {
        if !self.any() {
            return Ok(());
        }
        for checkpoints in self.checkpoints() {
            checkpoints.collect(all).await?;
        }
        let every = self
            .checkpoints()
            .map(|c| c.checkpoint_every())
            .min()
            .unwrap_or_default();
        let due = all || self.saved_at.is_none_or(|at| at.elapsed() >= every);
        if !due || self.checkpoints().any(|c| c.saving()) {
            return Ok(());
        }
        let mut partitions = partitions.to_vec();
        partitions.sort_unstable();
        if let Some(b) = &mut self.bars {
            let (checkpoints, kept) = b.checkpointing();
            checkpoints.start_round(kept, store, topic, &partitions);
        }
        if let Some(a) = &mut self.alerts {
            let (checkpoints, kept) = a.checkpointing();
            checkpoints.start_round(kept, store, topic, &partitions);
        }
        self.saved_at = Some(Instant::now());
        if all {
            for checkpoints in self.checkpoints() {
                checkpoints.collect(true).await?;
            }
        }
        Ok(())
    }

    /// Every running stage's checkpoints.
    fn checkpoints(&mut self) -> impl Iterator<Item = &mut super::checkpoints::Checkpoints> {
        let bars = self.bars.as_mut().map(|b| b.checkpointing().0);
        let alerts = self.alerts.as_mut().map(|a| a.checkpointing().0);
        bars.into_iter().chain(alerts)
    }
}

impl PartitionLifecycle for Stateful {
    fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        if let Some(b) = &mut self.bars {
            b.assigned(partition, committed);
        }
        if let Some(a) = &mut self.alerts {
            a.assigned(partition, committed);
        }
    }

    /// The newest offset at or before `position` at which both stages hold a stored checkpoint:
    /// each stage's limit applied in turn until neither lowers it.
    fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        common_limit(
            |at| {
                self.bars
                    .as_ref()
                    .map_or(Some(at), |b| b.commit_limit(partition, at))
            },
            |at| {
                self.alerts
                    .as_ref()
                    .map_or(Some(at), |a| a.commit_limit(partition, at))
            },
            position,
        )
    }

    fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        if !self.any() {
            return advanced;
        }
        let mut hand_on = std::mem::take(&mut self.hand_on);
        let due = hand_on.advanced(advanced, |p, position| self.commit_limit(p, position));
        self.hand_on = hand_on;
        due
    }

    fn forget(&mut self, partition: i32) -> usize {
        self.hand_on.forget(partition);
        if let Some(b) = &mut self.bars {
            b.forget(partition);
        }
        if let Some(a) = &mut self.alerts {
            a.forget(partition);
        }
        0
    }
}

/// The newest offset at or before `position` that both limits leave where it is: each applied
/// in turn until neither lowers it (each limit is at or before what it is given, so this ends).
fn common_limit(
    a: impl Fn(i64) -> Option<i64>,
    b: impl Fn(i64) -> Option<i64>,
    position: i64,
) -> Option<i64> {
    let mut at = position;
    loop {
        let by_a = a(at)?;
        let by_both = b(by_a)?;
        if by_both == by_a {
            return Some(by_both);
        }
        at = by_both;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::state::commit_cap;

    /// Both stages' limits, given the offsets each stored.
    fn both(a: &[i64], b: &[i64], position: i64) -> Option<i64> {
        common_limit(|at| commit_cap(a, at), |at| commit_cap(b, at), position)
    }

    #[test]
    fn a_partition_is_committed_only_where_both_stages_stored_their_state() {
        // The run that showed it: aggregate stored 2372, 9387, 15080; the alert stage 2256 too.
        // One stage's limit cut by the other's (2372 → 2256) is no offset the aggregate stored.
        let bars = [2372, 9387, 15080];
        assert_eq!(both(&bars, &[2256, 2372, 9387], 16_000), Some(9387));
        assert_eq!(both(&bars, &[2256, 2372, 9387], 9000), Some(2372));
        assert_eq!(
            both(&bars, &[2256, 9000], 16_000),
            None,
            "no common offset: held"
        );
        assert_eq!(both(&bars, &[100, 2372], 9386), Some(2372));
        // One stage alone (the other passes every position through).
        assert_eq!(
            common_limit(|at| commit_cap(&bars, at), Some, 9386),
            Some(2372)
        );
    }

    #[test]
    fn a_limit_is_handed_on_once() {
        let stored = |p: i32| if p == 0 { vec![5] } else { vec![7] };
        let mut hand_on = HandOn::default();
        let limit = |p: i32, at: i64| commit_cap(&stored(p), at);
        assert_eq!(
            hand_on.advanced(vec![(0, 6), (2, 9)], limit),
            vec![(0, 5), (2, 7)]
        );
        // The sinks moved on, but no newer checkpoint is stored: nothing new to store.
        assert_eq!(hand_on.advanced(vec![(0, 8)], limit), vec![]);
        // A newer checkpoint lands: the position already acknowledged moves to it.
        let limit = |p: i32, at: i64| commit_cap(if p == 0 { &[5, 8][..] } else { &[7][..] }, at);
        assert_eq!(hand_on.advanced(vec![], limit), vec![(0, 8)]);
    }

    #[test]
    fn nothing_is_handed_on_before_a_checkpoint_and_a_forgotten_partition_starts_over() {
        let mut hand_on = HandOn::default();
        assert_eq!(hand_on.advanced(vec![(3, 40)], |_, _| None), vec![]);
        let limit = |_: i32, at: i64| commit_cap(&[4], at);
        assert_eq!(hand_on.advanced(vec![], limit), vec![(3, 4)]);
        hand_on.forget(3);
        // Taken again with the same checkpoint: its limit is handed on again (the new owner's
        // position must be stored anew).
        assert_eq!(hand_on.advanced(vec![(3, 4)], limit), vec![(3, 4)]);
    }
}
