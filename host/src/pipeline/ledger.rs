//! Where every sink's acknowledgement lands: the [`CommitTracker`] of this host's copy of each
//! partition's work, and that copy's *generation*.
//!
//! Invariant: an acknowledgement counts only for the copy of the work it was made for. When a
//! partition is let go of without its work stored ([`Ledger::forget`]) and taken again, the
//! offsets tracked since are the same numbers but a new copy: a lake store, a delivery or a bulk
//! request still in flight from the earlier generation must not acknowledge them. Every output
//! is therefore stamped with [`Ledger::generation`] when it is made, and [`Ledger::ack`] drops an
//! acknowledgement whose stamp is not the partition's current generation.

use super::commit::CommitTracker;
use crate::sink::Acked;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Ledger {
    tracker: CommitTracker,
    /// Per partition, how many times its work was forgotten.
    generations: HashMap<i32, u64>,
}

impl Ledger {
    /// A consumed message that awaits `acks` acknowledgements (0: done already).
    pub fn track(&mut self, partition: i32, offset: i64, acks: u32) {
        self.tracker.track(partition, offset, acks);
    }

    /// The stamp of outputs made now for `partition`.
    pub fn generation(&self, partition: i32) -> u64 {
        self.generations.get(&partition).copied().unwrap_or(0)
    }

    /// One sink acknowledged `offset` of `partition`, for the output stamped `generation`.
    /// Returns whether it counted (false: the partition was let go of and taken again since).
    pub fn ack(&mut self, partition: i32, generation: u64, offset: i64) -> bool {
        if generation != self.generation(partition) {
            return false;
        }
        self.tracker.ack(partition, offset);
        true
    }

    /// What a sink reports as made durable (see [`Acked`]).
    pub fn acknowledge(&mut self, acked: Vec<Acked>) {
        for a in acked {
            for offset in a.offsets {
                self.ack(a.partition, a.generation, offset);
            }
        }
    }

    /// A message whose output turned out to be stored already (a re-delivered lake line): its
    /// acknowledgement is due at once.
    pub fn ack_now(&mut self, partition: i32, offset: i64) {
        self.tracker.ack(partition, offset);
    }

    /// The next offset of `partition` that every sink has acknowledged everything before.
    pub fn position(&self, partition: i32) -> Option<i64> {
        self.tracker.position(partition)
    }

    /// Messages still awaiting an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.tracker.in_flight()
    }

    /// Partitions whose position moved since the last call, with the new position.
    pub fn advanced(&mut self) -> Vec<(i32, i64)> {
        self.tracker.advanced()
    }

    /// `partition`'s work is no longer this copy's: what it tracked is dropped (its next owner
    /// processes it again) and acknowledgements still on their way no longer count.
    pub fn forget(&mut self, partition: i32) {
        *self.generations.entry(partition).or_default() += 1;
        self.tracker.forget(partition);
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn an_acknowledgement_moves_the_position_of_its_own_copy() {
        let mut ledger = Ledger::default();
        ledger.track(0, 5, 1);
        let stamp = ledger.generation(0);
        assert_eq!(ledger.position(0), Some(5));
        assert!(ledger.ack(0, stamp, 5));
        assert_eq!(ledger.position(0), Some(6));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn an_acknowledgement_made_before_the_partition_was_let_go_of_does_not_count() {
        let mut ledger = Ledger::default();
        ledger.track(2, 10, 1);
        let before = ledger.generation(2);
        ledger.forget(2);
        // Taken again: the same offset is consumed anew, and waits for its own store.
        ledger.track(2, 10, 1);
        assert!(!ledger.ack(2, before, 10), "the old store's answer");
        assert_eq!(ledger.position(2), Some(10));
        assert!(ledger.ack(2, ledger.generation(2), 10));
        assert_eq!(ledger.position(2), Some(11));
    }

    #[test]
    fn forgetting_a_partition_leaves_the_others_alone() {
        let mut ledger = Ledger::default();
        ledger.track(0, 1, 1);
        ledger.track(1, 1, 1);
        let stamp = ledger.generation(1);
        ledger.forget(0);
        assert_eq!(
            ledger.position(0),
            None,
            "nothing of it is tracked any more"
        );
        assert!(ledger.ack(1, stamp, 1));
        assert_eq!(ledger.advanced(), vec![(1, 2)]);
    }

    #[test]
    fn a_line_already_stored_is_acknowledged_at_once() {
        let mut ledger = Ledger::default();
        ledger.track(0, 7, 2);
        ledger.ack_now(0, 7);
        assert_eq!(
            ledger.position(0),
            Some(7),
            "one sink still owes its acknowledgement"
        );
        ledger.ack_now(0, 7);
        assert_eq!(ledger.position(0), Some(8));
    }
}
