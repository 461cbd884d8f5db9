//! Where each assigned partition's next message should be, and the ranges the broker no longer
//! had when the consumer got there.
//!
//! Invariant: a partition's expected position only moves forward, to where the consumer resumes
//! (its committed offset, or the log's start when the broker deleted past it) and then one past each
//! message consumed. An offset that jumps past the expected position is a gap; the part of a gap
//! below the log's start is data the broker dropped before this group stored it (retention, or the
//! embedded cluster's cap), and is reported, never skipped silently. The rest of a gap is not data
//! (compaction, transaction markers).

use crate::position::{Offset, Offsets, Partition};
use serde::Serialize;

/// Offsets `from..to` of `partition` that the group never consumed and the broker no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LostRange {
    pub partition: i32,
    pub from: i64,
    /// One past the last offset lost.
    pub to: i64,
}

impl LostRange {
    pub fn len(&self) -> u64 {
        (self.to - self.from).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.to <= self.from
    }
}

/// Offsets skipped between two consecutive messages of a partition (or between where it resumed
/// and its first message): `from..to`. Lost only as far as the log's start is past `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl Gap {
    /// The part of the gap the broker deleted, given the partition's log start now.
    pub fn lost(&self, log_start: i64) -> Option<LostRange> {
        lost_below(self.partition, self.from, log_start.min(self.to))
    }
}

fn lost_below(partition: i32, from: i64, to: i64) -> Option<LostRange> {
    (to > from).then_some(LostRange {
        partition,
        from,
        to,
    })
}

/// Partition → the offset its next message should have.
#[derive(Debug, Default)]
pub struct Positions {
    next: Offsets,
}

impl Positions {
    /// A partition was assigned. `committed` is the group's committed offset (`None` when the
    /// group never committed it: it starts at the log's start, and nothing before that was ever
    /// this group's), `log_start` the broker's first offset now. Returns what was lost between the
    /// two.
    pub fn start(
        &mut self,
        partition: i32,
        committed: Option<i64>,
        log_start: i64,
    ) -> Option<LostRange> {
        let resume = committed.unwrap_or(log_start).max(0);
        self.next
            .insert(Partition(partition), Offset(resume.max(log_start)));
        lost_below(partition, resume, log_start)
    }

    /// A message of `partition` at `offset` was consumed. Returns the gap before it, if it skipped
    /// any offsets past the expected position (to be checked against the log start).
    pub fn consumed(&mut self, partition: i32, offset: i64) -> Option<Gap> {
        let next = self
            .next
            .entry(Partition(partition))
            .or_insert(Offset(offset));
        let gap = (offset > next.0).then_some(Gap {
            partition,
            from: next.0,
            to: offset,
        });
        *next = (*next).max(Offset(offset).next());
        gap
    }

    /// The partition is no longer this host's.
    pub fn forget(&mut self, partition: i32) {
        self.next.remove(&Partition(partition));
    }

    /// Partition → the offset after the last message consumed (or where it resumes, before the
    /// first).
    pub fn next(&self) -> &Offsets {
        &self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_offset_below_the_log_start_is_lost_up_to_it() {
        let mut p = Positions::default();
        assert_eq!(
            p.start(5, Some(0), 1948),
            Some(LostRange {
                partition: 5,
                from: 0,
                to: 1948
            })
        );
        assert_eq!(p.next()[&Partition(5)], Offset(1948));
        assert_eq!(p.consumed(5, 1948), None);
        assert_eq!(p.next()[&Partition(5)], Offset(1949));
    }

    #[test]
    fn resuming_within_the_log_loses_nothing() {
        let mut p = Positions::default();
        assert_eq!(p.start(0, Some(700), 100), None);
        assert_eq!(p.start(1, Some(100), 100), None);
        assert_eq!(p.start(2, None, 4000), None, "never committed: never ours");
        assert_eq!(p.next()[&Partition(0)], Offset(700));
        assert_eq!(p.next()[&Partition(2)], Offset(4000));
    }

    #[test]
    fn a_jump_is_a_gap_lost_as_far_as_the_log_start_passed_it() {
        let mut p = Positions::default();
        p.start(0, Some(10), 0);
        assert_eq!(p.consumed(0, 10), None);
        assert_eq!(p.consumed(0, 11), None);
        let gap = p.consumed(0, 500).unwrap();
        assert_eq!((gap.from, gap.to), (12, 500));
        // Retention moved the start to 400: 12..400 was deleted; 400..500 was not data.
        assert_eq!(
            gap.lost(400),
            Some(LostRange {
                partition: 0,
                from: 12,
                to: 400
            })
        );
        // The start moved beyond the gap since: only the gap itself counts.
        assert_eq!(gap.lost(9_000).map(|l| l.len()), Some(488));
        // A compacted or transactional gap: the log still starts before it.
        assert_eq!(gap.lost(12), None);
        assert_eq!(gap.lost(0), None);
    }

    #[test]
    fn redelivered_or_first_messages_are_not_gaps() {
        let mut p = Positions::default();
        assert_eq!(
            p.consumed(3, 50),
            None,
            "no start known: the first message sets it"
        );
        assert_eq!(p.consumed(3, 51), None);
        assert_eq!(
            p.consumed(3, 40),
            None,
            "an older offset does not move it back"
        );
        assert_eq!(p.next()[&Partition(3)], Offset(52));
        p.forget(3);
        assert!(p.next().is_empty());
    }
}
