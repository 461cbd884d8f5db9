//! At-least-once bookkeeping: which offsets every sink has acknowledged, and how far each partition
//! may be committed.
//!
//! Each consumed message is tracked with the number of acknowledgements it awaits (one per sink it
//! was routed to). A partition's commit position is the lowest offset still waiting, or one past the
//! highest offset seen when none waits: only a contiguous run of finished offsets is ever committed,
//! so a crash replays everything not yet acknowledged and nothing is skipped.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct PartitionAcks {
    /// offset -> acknowledgements still awaited.
    waiting: BTreeMap<i64, u32>,
    highest_seen: Option<i64>,
    /// The last position handed out by [`CommitTracker::advanced`].
    reported: Option<i64>,
}

impl PartitionAcks {
    fn position(&self) -> Option<i64> {
        self.waiting
            .keys()
            .next()
            .copied()
            .or(self.highest_seen.map(|h| h + 1))
    }
}

#[derive(Debug, Default)]
pub struct CommitTracker {
    partitions: HashMap<i32, PartitionAcks>,
}

impl CommitTracker {
    /// Registers a consumed message that awaits `acks` acknowledgements (0 = done already).
    pub fn track(&mut self, partition: i32, offset: i64, acks: u32) {
        let p = self.partitions.entry(partition).or_default();
        p.highest_seen = Some(p.highest_seen.map_or(offset, |h| h.max(offset)));
        if acks > 0 {
            *p.waiting.entry(offset).or_insert(0) += acks;
        }
    }

    /// One sink acknowledged a message. Unknown or over-acknowledged offsets are a bug upstream and
    /// are ignored rather than allowed to move the position.
    pub fn ack(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && let Some(left) = p.waiting.get_mut(&offset)
        {
            *left -= 1;
            if *left == 0 {
                p.waiting.remove(&offset);
            }
        }
    }

    /// The next offset to consume that may be committed for `partition`.
    pub fn position(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)
            .and_then(PartitionAcks::position)
    }

    /// Messages still awaiting an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.waiting.len()).sum()
    }

    /// Partitions whose commit position moved since the last call, with the new position.
    pub fn advanced(&mut self) -> Vec<(i32, i64)> {
        let mut moved = Vec::new();
        for (&partition, p) in &mut self.partitions {
            if let Some(pos) = p.position()
                && p.reported != Some(pos)
            {
                p.reported = Some(pos);
                moved.push((partition, pos));
            }
        }
        moved.sort_unstable();
        moved
    }

    /// Forgets a partition (revoked in a rebalance): its unacknowledged offsets will be redelivered.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_finished_offsets() {
        let mut t = CommitTracker::default();
        for offset in 0..4 {
            t.track(0, offset, 2);
        }
        t.ack(0, 1);
        t.ack(0, 1);
        assert_eq!(t.position(0), Some(0), "offset 0 still waits");
        t.ack(0, 0);
        assert_eq!(t.position(0), Some(0), "offset 0 waits for its second sink");
        t.ack(0, 0);
        assert_eq!(t.position(0), Some(2));
        t.ack(0, 3);
        t.ack(0, 3);
        assert_eq!(t.position(0), Some(2));
        t.ack(0, 2);
        t.ack(0, 2);
        assert_eq!(t.position(0), Some(4));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block() {
        let mut t = CommitTracker::default();
        t.track(1, 10, 1);
        t.track(1, 15, 0);
        assert_eq!(t.position(1), Some(10));
        t.ack(1, 10);
        assert_eq!(t.position(1), Some(16));
    }

    #[test]
    fn partitions_are_independent_and_advances_reported_once() {
        let mut t = CommitTracker::default();
        t.track(0, 0, 1);
        t.track(1, 0, 1);
        t.ack(1, 0);
        assert_eq!(t.advanced(), vec![(0, 0), (1, 1)]);
        assert_eq!(t.advanced(), vec![]);
        t.ack(0, 0);
        assert_eq!(t.advanced(), vec![(0, 1)]);
    }

    #[test]
    fn stray_acks_are_ignored() {
        let mut t = CommitTracker::default();
        t.track(0, 5, 1);
        t.ack(0, 6);
        t.ack(3, 5);
        assert_eq!(t.position(0), Some(5));
    }
}
