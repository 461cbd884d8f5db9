//! Where ticks end up. Every sink acknowledges what it has made durable, offset by offset, to the
//! commit tracker; nothing is committed before that.
//!
//! - [`lake`]: newline-delimited JSON segments, Hive-partitioned, named by their offset range;
//!   [`store`] puts them in a directory (`file://`, the offline default) or a GCS bucket (`gs://`);
//!   [`lake_sink`] is the lake as the run loop sees it (lines in, acknowledgements out).
//! - [`elasticsearch`]: `_bulk` indexing with item-level retries and dead letters.
//! - [`kafka`]: the dead-letter and alerts topics, and the deliveries awaiting the broker.
//! - [`document`]: the JSON document written for an accepted tick.

pub mod document;
pub mod elasticsearch;
pub mod kafka;
pub mod lake;
pub mod lake_sink;
pub mod layout;
pub mod store;

/// The Kafka position of a message, carried with it to every sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    /// Shared: every message of a batch names the same few topics (no `String` per message).
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The tick's place in a message of several (`None`: the message is one tick). Its document's
    /// `_id` is the message's with `-<tick>` appended, its lake line sits at `offset.tick`.
    pub tick: Option<u32>,
}

/// A sink's acknowledgement: it made `offsets` of `partition` durable, for the copy of the
/// partition's work stamped `generation` when the output was made (see the pipeline's ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub generation: u64,
    pub offsets: Vec<i64>,
}

/// Which buffered segments to roll (close and hand on to be stored).
#[derive(Debug, Clone, Copy)]
pub enum Roll<'a> {
    /// Those that have been open for their roll age.
    Due(std::time::Instant),
    /// Those of partitions being revoked: stored before they are let go of.
    Partitions(&'a [i32]),
    /// Everything (the end of a run, a shutdown).
    All,
}

/// The per-partition lifecycle every sink and stateful stage answers, so that the run loop
/// calls each in turn instead of branching on which ones run. Each hook has a default that does
/// nothing; a part implements the ones it has state for.
pub trait PartitionLifecycle {
    /// The group assigned `partition`; `committed` is its committed offset (`None`: never
    /// committed), or why that could not be read.
    fn assigned(&mut self, _partition: i32, _committed: &Result<Option<i64>, String>) {}

    /// Closes the buffered segments `roll` selects, for the next store.
    fn roll(&mut self, _roll: Roll<'_>) {}

    /// How far `partition` may be committed, given that every sink acknowledged everything
    /// before `position`; `None` holds it where it is.
    fn commit_limit(&self, _partition: i32, position: i64) -> Option<i64> {
        Some(position)
    }

    /// The positions to store now, of the partitions whose position `advanced`.
    fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        advanced
    }

    /// `partition` is no longer this host's: drops what is buffered for it (its next owner
    /// processes it again). Returns how many lines were dropped.
    fn forget(&mut self, _partition: i32) -> usize {
        0
    }
}

impl<T: PartitionLifecycle> PartitionLifecycle for Option<T> {
    fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        if let Some(part) = self {
            part.assigned(partition, committed);
        }
    }

    fn roll(&mut self, roll: Roll<'_>) {
        if let Some(part) = self {
            part.roll(roll);
        }
    }

    fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        match self {
            Some(part) => part.commit_limit(partition, position),
            None => Some(position),
        }
    }

    fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
        match self {
            Some(part) => part.limit_advanced(advanced),
            None => advanced,
        }
    }

    fn forget(&mut self, partition: i32) -> usize {
        self.as_mut().map_or(0, |part| part.forget(partition))
    }
}

#[cfg(test)]
mod tests {
    use super::{PartitionLifecycle, Roll};

    /// Notes what it is told.
    #[derive(Default)]
    struct Noting {
        assigned: Vec<i32>,
        rolls: usize,
        forgotten: Vec<i32>,
    }

    impl PartitionLifecycle for Noting {
        fn assigned(&mut self, partition: i32, _committed: &Result<Option<i64>, String>) {
            self.assigned.push(partition);
        }
        fn roll(&mut self, _roll: Roll<'_>) {
            self.rolls += 1;
        }
        fn commit_limit(&self, _partition: i32, position: i64) -> Option<i64> {
            Some(position - 1)
        }
        fn limit_advanced(&mut self, advanced: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
            advanced.into_iter().filter(|(p, _)| *p != 0).collect()
        }
        fn forget(&mut self, partition: i32) -> usize {
            self.forgotten.push(partition);
            7
        }
    }

    #[test]
    fn a_part_that_does_not_run_passes_everything_through() {
        let mut absent: Option<Noting> = None;
        absent.assigned(1, &Ok(None));
        absent.roll(Roll::All);
        assert_eq!(absent.commit_limit(1, 42), Some(42));
        assert_eq!(absent.limit_advanced(vec![(0, 3)]), vec![(0, 3)]);
        assert_eq!(absent.forget(1), 0);
    }

    #[test]
    fn a_part_that_runs_hears_every_hook() {
        let mut present = Some(Noting::default());
        present.assigned(1, &Ok(Some(5)));
        present.roll(Roll::Partitions(&[1]));
        assert_eq!(present.commit_limit(1, 42), Some(41));
        assert_eq!(present.limit_advanced(vec![(0, 3), (1, 4)]), vec![(1, 4)]);
        assert_eq!(present.forget(2), 7);
        let noted = present.unwrap();
        assert_eq!(
            (noted.assigned, noted.rolls, noted.forgotten),
            (vec![1], 1, vec![2])
        );
    }
}
