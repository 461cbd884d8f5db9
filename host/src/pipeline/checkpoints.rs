//! A stateful stage's checkpoints in the run loop (`aggregate`, `alert`): each partition's state
//! stored beside the lake (`_state/<stage>/<topic>/<partition>.json`) every `checkpoint_ms`, read
//! back when the partition is assigned, and the commits held at the newest stored one.
//!
//! A partition's offsets are committed only as far as a stored checkpoint of its state
//! ([`commit_cap`]); a host that takes the partition over (after a crash, a rebalance) restores
//! the state at exactly the committed offset and raises the same outputs again, which the sinks
//! deduplicate by id. [`Checkpoints`] decides what to store and how far to commit; the stage's
//! [`Kept`] holds the state.

use crate::chain::state::{Checkpoint, Kept, commit_cap};
use crate::runtime::StateCalls;
use crate::sink::store::LakeStore;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How far a stateful stage lets each partition be committed: to the newest stored checkpoint of
/// its state at or before the position every sink acknowledged ([`commit_cap`]), never further —
/// a host that takes the partition over restores the state at exactly the committed offset. Pure
/// bookkeeping: the stage tells it what is stored. (Which limits to hand on, over every stage,
/// is [`super::stateful`]'s.)
#[derive(Debug, Default)]
struct CheckpointLimits {
    /// Per partition: the offsets of the snapshots stored.
    stored: HashMap<i32, Vec<i64>>,
}

impl CheckpointLimits {
    /// `partition`'s stored checkpoint now holds snapshots at `offsets`.
    fn stored(&mut self, partition: i32, offsets: Vec<i64>) {
        self.stored.insert(partition, offsets);
    }

    fn limit(&self, partition: i32, position: i64) -> Option<i64> {
        commit_cap(
            self.stored.get(&partition).map_or(&[][..], Vec::as_slice),
            position,
        )
    }

    fn forget(&mut self, partition: i32) {
        self.stored.remove(&partition);
    }
}

struct SavedCheckpoint {
    partition: i32,
    checkpoint: Checkpoint,
    stored: Result<(), crate::sink::store::StoreError>,
}

/// One stateful stage's checkpoints and the commit limits they set.
pub(super) struct Checkpoints {
    stage: &'static str,
    checkpoint_ms: u64,
    /// Per partition: the checkpoint as last stored (or read at assignment).
    checkpoints: HashMap<i32, Checkpoint>,
    /// How far the stored checkpoints let each partition be committed.
    limits: CheckpointLimits,
    /// One round of checkpoint stores at a time, so two stores of one object never race.
    saving: Option<tokio::task::JoinHandle<Vec<SavedCheckpoint>>>,
    /// Partitions assigned since the last batch, with their committed offsets (or why they
    /// could not be read): their state is restored before their first tick.
    to_restore: Vec<(i32, Result<Option<i64>, String>)>,
}

impl Checkpoints {
    pub(super) fn new(stage: &'static str, checkpoint_ms: u64) -> Self {
        Self {
            stage,
            checkpoint_ms,
            checkpoints: HashMap::new(),
            limits: CheckpointLimits::default(),
            saving: None,
            to_restore: Vec::new(),
        }
    }

    /// The group assigned `partition`: its state is restored before its first tick.
    pub(super) fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        self.to_restore.push((partition, committed.clone()));
    }

    /// Where `partition` may be committed, given the tracker's `position`: no further than its
    /// newest stored checkpoint.
    pub(super) fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        self.limits.limit(partition, position)
    }

    /// Forgets the bookkeeping of a partition let go of (the stage forgets its state).
    pub(super) fn forget(&mut self, partition: i32) {
        self.checkpoints.remove(&partition);
        self.limits.forget(partition);
        self.to_restore.retain(|(p, _)| *p != partition);
    }

    /// Restores the state of partitions assigned since the last batch into `kept`, from their
    /// checkpoints at exactly their committed offsets. A partition committed before without a
    /// checkpoint at that offset starts empty, and the host says so.
    pub(super) async fn restore<I: StateCalls>(
        &mut self,
        kept: &mut Kept<I>,
        store: &LakeStore,
        topic: &str,
    ) -> anyhow::Result<()> {
        if self.to_restore.is_empty() {
            return Ok(());
        }
        let stage = self.stage;
        let listed = store
            .list(&Checkpoint::prefix(stage, topic))
            .await
            .with_context(|| format!("listing the {stage} checkpoints"))?;
        for (partition, committed) in std::mem::take(&mut self.to_restore) {
            let name = Checkpoint::object_name(stage, topic, partition);
            let checkpoint = match listed.contains(&name) {
                true => Some(read_checkpoint(store, stage, &name).await?),
                false => None,
            };
            let committed = committed.map_err(|e| anyhow::anyhow!(
                "partition {partition}'s committed offset could not be read, so its {stage} state cannot be restored: {e}"
            ))?;
            let Some(committed) = committed else {
                tracing::info!(
                    stage,
                    partition,
                    "a partition never committed starts with an empty state"
                );
                continue;
            };
            self.restore_at(kept, partition, committed, checkpoint.as_ref(), &name)?;
            if let Some(c) = checkpoint {
                self.limits.stored(partition, c.offsets());
                self.checkpoints.insert(partition, c);
            }
        }
        Ok(())
    }

    /// Restores `partition`'s state as `checkpoint` (named `name`) holds it at `committed`.
    fn restore_at<I: StateCalls>(
        &self,
        kept: &mut Kept<I>,
        partition: i32,
        committed: i64,
        checkpoint: Option<&Checkpoint>,
        name: &str,
    ) -> anyhow::Result<()> {
        let stage = self.stage;
        let snapshot = match checkpoint {
            Some(c) => c
                .at(committed)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("reading the {stage} checkpoint {name}"))?,
            None => None,
        };
        let Some(snapshot) = snapshot else {
            tracing::warn!(
                stage,
                partition,
                committed,
                checkpoint = %name,
                kept = ?checkpoint.map(Checkpoint::offsets),
                "no checkpoint of the state at the committed offset; the partition starts with an empty state (each instrument's first bar may be partial, a rule already firing may fire again)"
            );
            return Ok(());
        };
        let exported_by = checkpoint.map(|c| c.guest_version.clone());
        kept.restore(partition, snapshot).map_err(|why| {
            anyhow::anyhow!(
                "the {stage} guest {} cannot read partition {partition}'s state (exported by {}): {why}",
                kept.component().version,
                exported_by.unwrap_or_default()
            )
        })?;
        tracing::info!(
            stage,
            partition,
            offset = committed,
            "state restored from its checkpoint"
        );
        Ok(())
    }

    /// Takes in the stores that landed (all of them, waiting, with `all`).
    pub(super) async fn collect(&mut self, all: bool) -> anyhow::Result<()> {
        let stage = self.stage;
        if let Some(saving) = &mut self.saving
            && (all || saving.is_finished())
        {
            let done = saving.await.context("a checkpoint store panicked")?;
            self.saving = None;
            for saved in done {
                saved.stored.with_context(|| {
                    format!(
                        "storing the {stage} checkpoint of partition {}",
                        saved.partition
                    )
                })?;
                self.limits
                    .stored(saved.partition, saved.checkpoint.offsets());
                self.checkpoints.insert(saved.partition, saved.checkpoint);
            }
        }
        Ok(())
    }

    /// Whether a round of stores is in flight.
    pub(super) fn saving(&self) -> bool {
        self.saving.is_some()
    }

    /// Every `checkpoint_ms`.
    pub(super) fn checkpoint_every(&self) -> Duration {
        Duration::from_millis(self.checkpoint_ms)
    }

    /// Starts storing the snapshots of `kept` that moved since the last checkpoint; the caller
    /// ([`super::stateful::Stateful`]) decides when, for every stateful stage at once, so that
    /// their checkpoints stand at the same offsets.
    pub(super) fn start_round<I: StateCalls>(
        &mut self,
        kept: &Kept<I>,
        store: &Arc<LakeStore>,
        topic: &str,
        partitions: &[i32],
    ) {
        let stage = self.stage;
        let version = kept.component().version.clone();
        let mut round = Vec::new();
        for &partition in partitions {
            let Some(snapshot) = kept.snapshot(partition) else {
                continue;
            };
            let mut checkpoint = self
                .checkpoints
                .get(&partition)
                .cloned()
                .unwrap_or_else(|| Checkpoint::new(topic, partition));
            if checkpoint.push(&version, snapshot) {
                round.push((partition, checkpoint));
            }
        }
        if round.is_empty() {
            return;
        }
        let (task_store, task_topic) = (store.clone(), topic.to_string());
        self.saving = Some(tokio::spawn(async move {
            let (store, topic) = (task_store, task_topic);
            let mut done = Vec::with_capacity(round.len());
            for (partition, checkpoint) in round {
                let bytes = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
                let stored = store
                    .put(&Checkpoint::object_name(stage, &topic, partition), bytes)
                    .await;
                done.push(SavedCheckpoint {
                    partition,
                    checkpoint,
                    stored,
                });
            }
            done
        }));
    }
}

/// Reads and parses the checkpoint `name` of `stage`.
async fn read_checkpoint(store: &LakeStore, stage: &str, name: &str) -> anyhow::Result<Checkpoint> {
    let bytes = store
        .get(name)
        .await
        .with_context(|| format!("reading the {stage} checkpoint {name}"))?;
    Checkpoint::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the {stage} checkpoint {name}"))
}

#[cfg(test)]
mod tests {
    use super::CheckpointLimits;

    #[test]
    fn nothing_is_committed_before_a_checkpoint_of_the_state_is_stored() {
        let mut limits = CheckpointLimits::default();
        assert_eq!(limits.limit(0, 40), None);
        // The checkpoint lands: the acknowledged position may move as far as it.
        limits.stored(0, vec![25]);
        assert_eq!(limits.limit(0, 40), Some(25));
    }

    #[test]
    fn a_position_is_held_at_the_newest_checkpoint_at_or_before_it() {
        let mut limits = CheckpointLimits::default();
        limits.stored(1, vec![10, 30, 50]);
        assert_eq!(limits.limit(1, 49), Some(30));
        assert_eq!(limits.limit(1, 50), Some(50));
        assert_eq!(limits.limit(1, 9), None, "older than every checkpoint kept");
    }

    #[test]
    fn a_forgotten_partition_has_no_checkpoint() {
        let mut limits = CheckpointLimits::default();
        limits.stored(3, vec![4]);
        limits.forget(3);
        assert_eq!(limits.limit(3, 4), None);
    }
}
