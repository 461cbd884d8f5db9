//! The `--once` stopping rule: when a run has read everything that was in the topic at start.

use super::kafka;
use crate::position::{Offset, Offsets, Partition};
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Where `run --once` stops, per partition: the end read at start (ListOffsets), raised once to
/// the end the partition's fetches report (librdkafka statistics) when messages past the end read
/// at start turn up. That takes in what was produced meanwhile, and copes with brokers whose
/// ListOffsets answers short (Tansu 0.6.0 answers the base offset of a partition's last record
/// batch + 1: measured, see BENCHMARKS). Once only, so that a live producer cannot keep the run
/// going; with statistics off (`kafka.statistics_interval_ms` = 0) the ends read at start hold.
#[derive(Debug)]
pub struct OnceTargets {
    pub ends: Offsets,
    /// The group's committed offsets at start: a partition already consumed to its end is done.
    committed: Offsets,
    raised: HashSet<Partition>,
    statistics_interval: Duration,
    /// Since when, and after how many statistics reports, the run has waited for fetched ends.
    awaiting: Option<(Instant, u64)>,
}

/// What `run --once` does once every partition has reached its end.
#[derive(Debug, PartialEq)]
pub enum OnceStep {
    Done,
    /// Ends raised (partition → new end): go on.
    Raised(Offsets),
    /// Messages past an end turned up before the fetched ends were known: go on consuming until
    /// the next statistics report (at most two intervals).
    AwaitStatistics,
}

impl OnceTargets {
    pub fn new(ends: Offsets, committed: Offsets, statistics_interval: Duration) -> Self {
        Self {
            ends,
            committed,
            raised: HashSet::new(),
            statistics_interval,
            awaiting: None,
        }
    }

    /// The group's committed offsets read again: partitions another member of the group holds
    /// count as done once it has committed them to their end (a backfill spread over hosts).
    pub fn committed_since(&mut self, committed: Offsets) {
        for (p, at) in committed {
            let known = self.committed.entry(p).or_insert(at);
            *known = (*known).max(at);
        }
    }

    /// Every partition consumed (or committed) up to its end.
    pub fn reached(&self, consumed_to: &Offsets) -> bool {
        self.short_of_end(consumed_to).is_empty()
    }

    /// The partitions not yet consumed (nor committed) up to their end.
    pub fn short_of_end(&self, consumed_to: &Offsets) -> Vec<i32> {
        self.ends
            .iter()
            .filter(|(p, end)| {
                **end != Offset(0)
                    && consumed_to
                        .get(p)
                        .copied()
                        .max(self.committed.get(p).copied())
                        .is_none_or(|at| at < **end)
            })
            .map(|(p, _)| p.0)
            .collect()
    }

    /// Called when [`OnceTargets::reached`]: raises the ends not raised before to the fetched
    /// ends where those are higher, or waits for them where messages went past an end.
    pub fn next_step(
        &mut self,
        consumed_to: &Offsets,
        fetched_end: impl Fn(Partition) -> Option<Offset>,
        statistics_reports: u64,
        now: Instant,
    ) -> OnceStep {
        let mut raised = BTreeMap::new();
        for (&p, end) in &mut self.ends {
            if self.raised.contains(&p) {
                continue;
            }
            if let Some(high) = fetched_end(p).filter(|&high| high > *end) {
                *end = high;
                raised.insert(p, high);
            }
        }
        if !raised.is_empty() {
            self.raised.extend(raised.keys());
            self.awaiting = None;
            return OnceStep::Raised(raised);
        }
        let past_an_end = self.ends.iter().any(|(p, end)| {
            !self.raised.contains(p) && consumed_to.get(p).is_some_and(|at| at > end)
        });
        if !past_an_end || self.statistics_interval.is_zero() {
            return OnceStep::Done;
        }
        let (since, reports) = *self.awaiting.get_or_insert((now, statistics_reports));
        let patience = self.statistics_interval * 2;
        if statistics_reports > reports || now.duration_since(since) > patience {
            OnceStep::Done
        } else {
            OnceStep::AwaitStatistics
        }
    }
}

impl OnceTargets {
    /// The targets at start: each partition's end (ListOffsets) and the group's committed
    /// offsets. The group coordinator may not answer while a rebalance waits for a member that died
    /// without leaving (after a crash): the committed offsets are asked for again until
    /// `max_poll_interval` (plus one `timeout`) has passed.
    pub fn read<C: ConsumerContext>(
        consumer: &StreamConsumer<C>,
        topic: &str,
        timeout: Duration,
        max_poll_interval: Duration,
        statistics_interval: Duration,
    ) -> anyhow::Result<Self> {
        let high = kafka::high_watermarks(consumer, topic, timeout)?;
        let give_up = Instant::now() + max_poll_interval + timeout;
        let committed = loop {
            match kafka::committed_offsets(consumer, topic, high.keys().copied(), timeout) {
                Ok(c) => break c,
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(error = %format!("{e:#}"), "the group's committed offsets are not available yet; asking again");
                }
                Err(e) => return Err(e),
            }
        };
        tracing::info!(
            ?high,
            ?committed,
            "run --once: processing up to the current end of the topic"
        );
        Ok(Self::new(high, committed, statistics_interval))
    }
}

#[cfg(test)]
mod tests {
    use super::{OnceStep, OnceTargets};
    use crate::position::{Offset, Offsets};
    use std::time::{Duration, Instant};

    fn map(pairs: &[(i32, i64)]) -> Offsets {
        crate::position::offsets(pairs.iter().copied())
    }

    const STATS: Duration = Duration::from_secs(2);

    #[test]
    fn once_targets_stop_at_the_ends_read_at_start() {
        let mut targets = OnceTargets::new(map(&[(0, 10), (1, 0), (2, 5)]), map(&[(2, 5)]), STATS);
        // Partition 1 is empty, partition 2 was committed to its end before the run.
        assert!(!targets.reached(&map(&[(0, 9)])));
        let consumed = map(&[(0, 10)]);
        assert!(targets.reached(&consumed));
        // Nothing went past an end: done at once, whatever the fetches say or do not say yet.
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, Instant::now()),
            OnceStep::Done
        );
        let none = OnceTargets::new(map(&[(0, 10)]), map(&[]), STATS);
        assert!(!none.reached(&map(&[])));
    }

    #[test]
    fn partitions_other_members_commit_to_their_end_count_as_done() {
        let mut targets = OnceTargets::new(map(&[(0, 10), (1, 8)]), map(&[(1, 2)]), STATS);
        // This host holds partition 0 only.
        let consumed = map(&[(0, 10)]);
        assert!(!targets.reached(&consumed));
        targets.committed_since(map(&[(1, 5)]));
        assert!(
            !targets.reached(&consumed),
            "partition 1 is committed to 5 of 8"
        );
        targets.committed_since(map(&[(1, 8)]));
        assert!(targets.reached(&consumed));
        // A stale read never moves it back.
        targets.committed_since(map(&[(1, 3)]));
        assert!(targets.reached(&consumed));
    }

    #[test]
    fn a_short_end_is_raised_once_to_the_fetched_end() {
        // A broker that answered 1 as the end of partitions holding 949 and 609 messages; the
        // first batches went past it before any statistics report.
        let mut targets = OnceTargets::new(map(&[(0, 1), (1, 1), (2, 7)]), map(&[]), STATS);
        let consumed = map(&[(0, 500), (1, 609), (2, 7)]);
        assert!(targets.reached(&consumed));
        let start = Instant::now();
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, start),
            OnceStep::AwaitStatistics
        );
        assert_eq!(
            targets.next_step(&consumed, |_| None, 0, start + STATS),
            OnceStep::AwaitStatistics
        );
        let fetched = map(&[(0, 949), (1, 609), (2, 7)]);
        assert_eq!(
            targets.next_step(&consumed, |p| fetched.get(&p).copied(), 1, start + STATS),
            OnceStep::Raised(map(&[(0, 949), (1, 609)]))
        );
        assert!(!targets.reached(&consumed));
        let consumed = map(&[(0, 949), (1, 609), (2, 7)]);
        assert!(targets.reached(&consumed));
        assert_eq!(
            targets.next_step(&consumed, |p| fetched.get(&p).copied(), 2, start + STATS),
            OnceStep::Done
        );
        // Once only: a live producer does not move a raised end again.
        let later = map(&[(0, 2_000), (1, 2_000), (2, 7)]);
        assert_eq!(
            targets.next_step(&consumed, |p| later.get(&p).copied(), 3, start + STATS),
            OnceStep::Done
        );
    }

    #[test]
    fn the_wait_for_fetched_ends_is_bounded() {
        let mut targets = OnceTargets::new(map(&[(0, 1)]), map(&[]), STATS);
        let consumed = map(&[(0, 40)]);
        let start = Instant::now();
        assert_eq!(
            targets.next_step(&consumed, |_| None, 5, start),
            OnceStep::AwaitStatistics
        );
        // A report came and said nothing higher: done.
        assert_eq!(
            targets.next_step(&consumed, |_| Some(Offset(1)), 6, start),
            OnceStep::Done
        );
        // No report within two intervals: done.
        let mut targets = OnceTargets::new(map(&[(0, 1)]), map(&[]), STATS);
        targets.next_step(&consumed, |_| None, 5, start);
        assert_eq!(
            targets.next_step(
                &consumed,
                |_| None,
                5,
                start + STATS * 2 + Duration::from_millis(1)
            ),
            OnceStep::Done
        );
        // Statistics off: the ends read at start hold.
        let mut off = OnceTargets::new(map(&[(0, 1)]), map(&[]), Duration::ZERO);
        assert_eq!(off.next_step(&consumed, |_| None, 0, start), OnceStep::Done);
    }
}
