//! The state of a stateful stage (`aggregate`, `alert`), kept the same way for each: per Kafka
//! partition, the [`Snapshot`] of the guest's state after the last batch — the bytes it exported
//! and the offset after the last message of that partition the batch held.
//!
//! The snapshots serve three times:
//! - a fault discards the instance, and with it every partition's state: the fresh instance gets
//!   the snapshots back ([`Kept::reinstate`]), and the stage retries the batch tick by tick, so
//!   that only the poison tick fails and no tick is counted twice;
//! - a new version of the guest imports them ([`Kept::hand_over`]);
//! - the pipeline checkpoints them ([`Checkpoint`], under `_state/<stage>/<topic>/<partition>`)
//!   and commits a partition only at an offset whose snapshot is stored ([`commit_cap`]), so a
//!   restarted host resumes state and offsets together.

use crate::position::{Offset, Offsets, Partition};
use crate::runtime::{GuestComponent, StateCalls};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// One partition's state after the messages before `next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub next_offset: i64,
    pub state: Vec<u8>,
}

/// A stateful guest's instance and the snapshots of its partitions.
pub struct Kept<I: StateCalls> {
    /// The stage's name, for the log.
    stage: &'static str,
    instance: I,
    snapshots: HashMap<i32, Snapshot>,
}

impl<I: StateCalls> Kept<I> {
    pub fn new(stage: &'static str, instance: I) -> Self {
        Self {
            stage,
            instance,
            snapshots: HashMap::new(),
        }
    }

    pub fn instance(&mut self) -> &mut I {
        &mut self.instance
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        self.instance.component()
    }

    /// Calls that faulted so far.
    pub fn faults(&self) -> u64 {
        self.instance.faults()
    }

    /// Partitions with a state here.
    pub fn partitions(&self) -> usize {
        self.snapshots.len()
    }

    /// The partitions with a state here, in order.
    pub fn partition_ids(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.snapshots.keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }

    /// The snapshot of `partition` after the last batch (none before its first).
    pub fn snapshot(&self, partition: i32) -> Option<&Snapshot> {
        self.snapshots.get(&partition)
    }

    /// Whether `partition`'s state already holds the message at `offset`: a message delivered
    /// again (the consumer reset to an older offset than the state's, a replay) is not counted
    /// twice.
    pub fn covers(&self, partition: i32, offset: i64) -> bool {
        self.snapshots
            .get(&partition)
            .is_some_and(|s| offset < s.next_offset)
    }

    /// Gives the guest a partition's state (a checkpoint, on assignment; a hand-over).
    pub fn restore(&mut self, partition: i32, snapshot: Snapshot) -> Result<(), String> {
        match self.instance.import_state(partition, &snapshot.state) {
            Ok(Ok(())) => {
                self.snapshots.insert(partition, snapshot);
                Ok(())
            }
            Ok(Err(why)) => Err(why),
            Err(fault) => {
                self.reinstate();
                Err(format!("the guest faulted importing the state: {fault}"))
            }
        }
    }

    /// Hands every partition's state to `next` (a new version, no state yet), which imports what
    /// this one exported. Returns the partitions whose state it could not read, with why: those
    /// start empty in it, at the same offsets.
    pub fn hand_over(&self, next: &mut Kept<I>) -> Vec<(i32, String)> {
        let mut refused = Vec::new();
        for partition in self.partition_ids() {
            let snapshot = self.snapshots[&partition].clone();
            let next_offset = snapshot.next_offset;
            if let Err(why) = next.restore(partition, snapshot) {
                refused.push((partition, why));
                next.snapshots.insert(
                    partition,
                    Snapshot {
                        next_offset,
                        state: Vec::new(),
                    },
                );
            }
        }
        refused
    }

    /// Forgets a partition this host let go of.
    pub fn forget(&mut self, partition: i32) {
        self.snapshots.remove(&partition);
        if let Err(fault) = self.instance.drop_state(partition) {
            tracing::warn!(stage = self.stage, partition, %fault, "the guest faulted dropping a partition's state; restoring the others");
            self.reinstate();
        }
    }

    /// Takes the guest's state of `partition` into its snapshot (the offset stays); returns the
    /// state it replaced.
    pub fn export(&mut self, partition: i32) -> Option<Vec<u8>> {
        match self.instance.export_state(partition) {
            Ok(state) => {
                let next_offset = self.snapshots.get(&partition).map_or(0, |s| s.next_offset);
                self.snapshots
                    .insert(partition, Snapshot { next_offset, state })
                    .map(|old| old.state)
            }
            Err(fault) => {
                tracing::error!(stage = self.stage, partition, %fault, "the guest faulted exporting its state; going on from the last snapshot");
                self.reinstate();
                self.snapshots.get(&partition).map(|s| s.state.clone())
            }
        }
    }

    /// Each partition's snapshot now stands after `consumed` (per partition, the offset after the
    /// batch's last message of it, accepted or not).
    pub fn consumed(&mut self, consumed: &Offsets) {
        for (&Partition(partition), &Offset(next_offset)) in consumed {
            if !self.snapshots.contains_key(&partition) {
                // A partition whose ticks were all refused so far: its state is empty.
                self.export(partition);
            }
            if let Some(s) = self.snapshots.get_mut(&partition) {
                s.next_offset = next_offset;
            }
        }
    }

    /// After a fault (the instance is gone): every partition's last snapshot into the fresh one.
    pub fn reinstate(&mut self) {
        for partition in self.partition_ids() {
            let state = &self.snapshots[&partition].state;
            match self.instance.import_state(partition, state) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    tracing::error!(stage = self.stage, partition, %why, "the guest refused its own snapshot; the partition starts empty");
                    self.snapshots.remove(&partition);
                }
                Err(fault) => {
                    tracing::error!(stage = self.stage, partition, %fault, "the guest faulted importing its snapshot; the partition starts empty");
                    self.snapshots.remove(&partition);
                }
            }
        }
    }
}

/// The stored checkpoint of one partition of one stage: its newest snapshots, newest last. More
/// than one is kept because offsets reach the group's commit asynchronously (auto-commit, every
/// second): the committed offset may trail the newest snapshot, and a restarted host needs the
/// snapshot at exactly the committed offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: u32,
    pub topic: String,
    pub partition: i32,
    /// The guest version that exported the newest snapshot.
    pub guest_version: String,
    pub snapshots: Vec<StoredSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSnapshot {
    pub next_offset: i64,
    /// The guest's bytes, base64.
    pub state: String,
}

impl Checkpoint {
    pub const FORMAT: u32 = 1;
    /// Snapshots kept per partition: at one a second, 16 s of commit lag.
    pub const KEEP: usize = 16;

    pub fn new(topic: &str, partition: i32) -> Self {
        Self {
            format: Self::FORMAT,
            topic: topic.into(),
            partition,
            guest_version: String::new(),
            snapshots: Vec::new(),
        }
    }

    /// Where the checkpoints of `stage` for `topic`'s partitions live in the lake store.
    pub fn prefix(stage: &str, topic: &str) -> String {
        crate::sink::layout::state_prefix(stage, topic)
    }

    /// Where a partition's checkpoint of `stage` lives in the lake store.
    pub fn object_name(stage: &str, topic: &str, partition: i32) -> String {
        crate::sink::layout::state_object(stage, topic, partition)
    }

    /// Adds a snapshot (a newer offset than any kept, or the newest's again); keeps the newest
    /// [`Checkpoint::KEEP`]. False when it is not newer (nothing changed).
    pub fn push(&mut self, guest_version: &str, snapshot: &Snapshot) -> bool {
        if let Some(last) = self.snapshots.last_mut() {
            if snapshot.next_offset < last.next_offset {
                return false;
            }
            if snapshot.next_offset == last.next_offset {
                // Same offset: the same ticks, so the same state (a restore, a re-save).
                return false;
            }
        }
        self.guest_version = guest_version.into();
        self.snapshots.push(StoredSnapshot {
            next_offset: snapshot.next_offset,
            state: base64::engine::general_purpose::STANDARD.encode(&snapshot.state),
        });
        if self.snapshots.len() > Self::KEEP {
            let extra = self.snapshots.len() - Self::KEEP;
            self.snapshots.drain(..extra);
        }
        true
    }

    /// The snapshot at exactly `offset`, decoded.
    pub fn at(&self, offset: i64) -> Result<Option<Snapshot>, String> {
        let Some(s) = self.snapshots.iter().find(|s| s.next_offset == offset) else {
            return Ok(None);
        };
        let state = base64::engine::general_purpose::STANDARD
            .decode(&s.state)
            .map_err(|e| format!("snapshot at offset {offset} is not base64: {e}"))?;
        Ok(Some(Snapshot {
            next_offset: offset,
            state,
        }))
    }

    /// The offsets of the kept snapshots, oldest first.
    pub fn offsets(&self) -> Vec<i64> {
        self.snapshots.iter().map(|s| s.next_offset).collect()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.format != Self::FORMAT {
            return Err(format!(
                "checkpoint format {}; this host reads format {}",
                c.format,
                Self::FORMAT
            ));
        }
        Ok(c)
    }
}

/// How far a partition may be committed: the newest stored snapshot at or before `position` (the
/// commit tracker's), none when no stored snapshot is that old. Committing past the stored state
/// would let a restarted host resume offsets its state does not include.
pub fn commit_cap(stored: &[i64], position: i64) -> Option<i64> {
    stored.iter().copied().filter(|&s| s <= position).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(next_offset: i64, byte: u8) -> Snapshot {
        Snapshot {
            next_offset,
            state: vec![byte; 3],
        }
    }

    #[test]
    fn a_checkpoint_keeps_the_newest_snapshots_and_finds_one_by_offset() {
        let mut c = Checkpoint::new("t", 2);
        assert!(c.push("v1", &snap(10, 1)));
        assert!(!c.push("v1", &snap(10, 9)), "same offset: kept as it was");
        assert!(!c.push("v1", &snap(5, 9)), "older: refused");
        for i in 0..20 {
            assert!(c.push("v2", &snap(20 + i, i as u8)));
        }
        assert_eq!(c.snapshots.len(), Checkpoint::KEEP);
        assert_eq!(
            c.offsets().first(),
            Some(&(20 + 20 - Checkpoint::KEEP as i64))
        );
        assert_eq!(c.guest_version, "v2");
        let round = Checkpoint::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        assert_eq!(round.at(39).unwrap(), Some(snap(39, 19)));
        assert_eq!(round.at(10).unwrap(), None, "dropped as too old");
        let mut newer = serde_json::to_value(&c).unwrap();
        newer["format"] = 2.into();
        let e = Checkpoint::parse(&serde_json::to_vec(&newer).unwrap()).unwrap_err();
        assert!(e.contains("format 2"), "{e}");
    }

    #[test]
    fn commits_stop_at_the_newest_stored_snapshot() {
        assert_eq!(commit_cap(&[], 100), None);
        assert_eq!(commit_cap(&[10, 50, 90], 100), Some(90));
        assert_eq!(commit_cap(&[10, 50, 90], 89), Some(50));
        assert_eq!(commit_cap(&[10, 50, 90], 90), Some(90));
        assert_eq!(commit_cap(&[10], 9), None);
    }

    #[test]
    fn each_stage_checkpoints_under_its_own_prefix() {
        assert_eq!(
            Checkpoint::object_name("alert", "s", 4),
            "_state/alert/s/4.json"
        );
        assert!(
            Checkpoint::object_name("aggregate", "s", 4)
                .starts_with(&Checkpoint::prefix("aggregate", "s"))
        );
    }
}
