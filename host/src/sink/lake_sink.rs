//! The lake as the run loop sees it: lines in, acknowledgements out. [`LakeSink`] owns the
//! writers (the ticks' and, with the aggregate stage, the bars'), the store, and the objects being
//! stored; it learns what the lake holds already before a partition's first line, stores rolled
//! segments off the loop (at most [`LAKE_STORES_IN_FLIGHT`] at once), and reports the lines each
//! object made durable as [`Acked`].
//!
//! Lines are placed by [`LakePosition`]: a tick's is its offset, a bar's is not (see
//! [`LakePosition::bar`]); segments' positions are turned back into their messages' offsets before
//! they are acknowledged.

use super::lake::{Appended, LakeConfig, LakeSection, LakeWriter, Naming, RolledSegment};
use super::store::{LakeStore, StoreError};
use super::{Acked, PartitionLifecycle, Roll};
use crate::position::LakePosition;
use crate::telemetry::{Dependency, Sink, Telemetry};
use anyhow::Context;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lake objects stored at once, at most: each holds a segment (up to `lake.roll_bytes`, or its
/// unspilled tail) in memory until it lands.
const LAKE_STORES_IN_FLIGHT: usize = 2;

/// A temporary or spool file of a local lake not written for this long (or twice
/// `lake.roll_seconds`, if longer) is a crash's leftover: a live host renames its temporary files
/// within one store and rolls a segment within `roll_seconds` of its first line.
const LAKE_LEFTOVERS_AFTER: Duration = Duration::from_secs(3600);

/// A local lake's segments keep at most about this much of themselves in memory; the rest is in
/// their spool files (see [`crate::sink::lake`]). 8 MiB segments on three partitions held ~34 MiB
/// of the host's ~118 MiB at 20,000 ticks/s (BENCHMARKS.md).
const LAKE_SPILL_BYTES: usize = 1 << 20;

/// A rolled segment and the offsets of the messages its lines came from: what it acknowledges
/// once stored.
struct Rolled {
    segment: RolledSegment,
    offsets: Vec<i64>,
}

impl Rolled {
    fn new(segment: RolledSegment) -> Self {
        // A message's lines are acknowledged per line: its offset once for each.
        let offsets = segment.positions.iter().map(|p| p.message().0).collect();
        Self { segment, offsets }
    }
}

/// A lake object's store, done: what its lines need to be acknowledged.
struct StoredSegment {
    name: String,
    acked: Acked,
    took: Duration,
    stored: Result<(), StoreError>,
}

pub struct LakeSink {
    ticks: LakeWriter,
    /// The aggregate stage's bars, when it runs.
    bars: Option<LakeWriter>,
    store: Arc<LakeStore>,
    telemetry: Arc<Telemetry>,
    roll_seconds: u64,
    /// Segments rolled, to be stored by the next [`LakeSink::store_rolled`].
    rolled: Vec<Rolled>,
    /// Lake objects being stored, off the loop (a local file's write and fsync on the blocking
    /// pool, a GCS upload on the runtime): their lines are acknowledged when they land.
    storing: tokio::task::JoinSet<StoredSegment>,
    /// Partitions whose stored lake objects are known (listed since they were assigned).
    listed: HashSet<i32>,
}

impl LakeSink {
    /// Opens the lake `config` names; `topic` is the ticks' prefix in it.
    pub async fn open(
        config: &LakeSection,
        topic: &str,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Self> {
        let location = config.location()?;
        let store = LakeStore::open(&location, config.gcs_options())
            .await
            .with_context(|| format!("opening the lake at {location}"))?;
        tracing::info!(lake = %location, "lake");
        telemetry.set_ready(Dependency::Lake, Ok(()));
        let ticks = LakeWriter::new(
            LakeConfig {
                spill_bytes: store.spools().then_some(LAKE_SPILL_BYTES),
                ..writer_config(config)
            },
            topic,
        );
        Ok(Self {
            ticks,
            bars: None,
            store: Arc::new(store),
            telemetry,
            roll_seconds: config.roll_seconds,
            rolled: Vec::new(),
            storing: tokio::task::JoinSet::new(),
            listed: HashSet::new(),
        })
    }

    /// Keeps the aggregate stage's bars too, under `prefix`.
    pub fn with_bars(mut self, config: &LakeSection, prefix: &str) -> Self {
        // Bars fill a segment slowly; they are not worth a spool file.
        self.bars = Some(LakeWriter::new(writer_config(config), prefix).with_naming(Naming::Bars));
        self
    }

    /// The store, for the objects beside the segments (checkpoints, state).
    pub fn store(&self) -> &Arc<LakeStore> {
        &self.store
    }

    /// Before the first line of a partition this host did not hold: learns which offset ranges
    /// the lake already holds (after a crash, objects may be stored whose offsets were never
    /// committed; they are not written twice).
    pub async fn know(
        &mut self,
        partitions: impl Iterator<Item = i32> + Clone,
    ) -> anyhow::Result<()> {
        if partitions.clone().all(|p| self.listed.contains(&p)) {
            return Ok(());
        }
        let topic = self.ticks.topic().to_string();
        let stale =
            LAKE_LEFTOVERS_AFTER.max(Duration::from_secs(self.roll_seconds.saturating_mul(2)));
        let swept = self.store.sweep_leftovers(&topic, stale).await;
        if swept > 0 {
            tracing::info!(
                files = swept,
                older_than_s = stale.as_secs(),
                "removed a crash's leftover temporary and spool files from the lake"
            );
        }
        let names = self
            .store
            .list(&topic)
            .await
            .context("listing the lake's objects")?;
        tracing::debug!(objects = names.len(), "listed the lake");
        self.ticks.set_existing(names.iter().map(String::as_str));
        if let Some(bars) = &mut self.bars {
            let prefix = bars.topic().to_string();
            let names = self
                .store
                .list(&prefix)
                .await
                .context("listing the lake's bar objects")?;
            bars.set_existing(names.iter().map(String::as_str));
        }
        self.listed.extend(partitions);
        Ok(())
    }

    /// Offers a tick's line (without its newline) for `lake_partition`. False: the lake holds it
    /// already (a re-delivery), nothing to acknowledge later.
    pub fn append_tick(
        &mut self,
        lake_partition: &str,
        partition: i32,
        position: LakePosition,
        line: &[u8],
    ) -> bool {
        match self.ticks.append(lake_partition, partition, position, line) {
            Appended::Buffered(rolled) => {
                self.rolled.extend(rolled.into_iter().map(Rolled::new));
                true
            }
            Appended::AlreadyStored => false,
        }
    }

    /// Offers a bar's line at `position` (see [`LakePosition::bar`]). False as for
    /// [`LakeSink::append_tick`].
    pub fn append_bar(
        &mut self,
        lake_partition: &str,
        partition: i32,
        position: LakePosition,
        line: &[u8],
    ) -> bool {
        let bars = self
            .bars
            .as_mut()
            .expect("bars are written only with the aggregate stage");
        match bars.append(lake_partition, partition, position, line) {
            Appended::Buffered(rolled) => {
                self.rolled.extend(rolled.into_iter().map(Rolled::new));
                true
            }
            Appended::AlreadyStored => false,
        }
    }

    /// Starts storing every segment rolled so far (waiting while [`LAKE_STORES_IN_FLIGHT`] are
    /// out), each stamped with its partition's `generation`. Returns what landed meanwhile.
    pub async fn store_rolled(
        &mut self,
        generation: impl Fn(i32) -> u64,
    ) -> anyhow::Result<Vec<Acked>> {
        // Spilled pieces first: a segment's object starts with them.
        for op in self.ticks.take_spool_ops() {
            self.store.spool(op).await;
        }
        let mut landed = Vec::new();
        for Rolled { segment, offsets } in std::mem::take(&mut self.rolled) {
            while self.storing.len() >= LAKE_STORES_IN_FLIGHT {
                let done = self
                    .storing
                    .join_next()
                    .await
                    .expect("stores are in flight");
                landed.push(self.stored(done)?);
            }
            let store = self.store.clone();
            let generation = generation(segment.partition);
            self.storing.spawn(async move {
                let started = Instant::now();
                let stored = store
                    .put_segment(&segment.name, segment.spool, segment.bytes)
                    .await;
                StoredSegment {
                    name: segment.name,
                    acked: Acked {
                        partition: segment.partition,
                        generation,
                        offsets,
                    },
                    took: started.elapsed(),
                    stored,
                }
            });
        }
        Ok(landed)
    }

    /// The lake objects that have landed (all of them, waiting, with `all`): their lines
    /// acknowledged; one that failed stops the run (its offsets are not committed).
    pub async fn collect(&mut self, all: bool) -> anyhow::Result<Vec<Acked>> {
        let mut landed = Vec::new();
        loop {
            let done = if all {
                self.storing.join_next().await
            } else {
                self.storing.try_join_next()
            };
            match done {
                Some(done) => landed.push(self.stored(done)?),
                None => return Ok(landed),
            }
        }
    }

    fn stored(
        &mut self,
        done: Result<StoredSegment, tokio::task::JoinError>,
    ) -> anyhow::Result<Acked> {
        let segment = done.context("a lake store panicked")?;
        self.telemetry.sink_request(Sink::Lake, segment.took);
        let ready = segment
            .stored
            .as_ref()
            .map(|_| ())
            .map_err(|e| e.to_string());
        self.telemetry.set_ready(Dependency::Lake, ready);
        segment
            .stored
            .with_context(|| format!("storing lake object {}", segment.name))?;
        let lines = segment.acked.offsets.len();
        self.telemetry.lake_object_stored(lines as u64);
        tracing::debug!(object = %segment.name, lines, "lake object stored");
        Ok(segment.acked)
    }
}

impl PartitionLifecycle for LakeSink {
    fn roll(&mut self, roll: Roll<'_>) {
        let (ticks, bars) = match roll {
            Roll::Due(now) => (
                self.ticks.roll_due(now),
                self.bars.as_mut().map(|b| b.roll_due(now)),
            ),
            Roll::Partitions(partitions) => (
                self.ticks.roll_partitions(partitions),
                self.bars.as_mut().map(|b| b.roll_partitions(partitions)),
            ),
            Roll::All => (
                self.ticks.flush(),
                self.bars.as_mut().map(LakeWriter::flush),
            ),
        };
        self.rolled.extend(ticks.into_iter().map(Rolled::new));
        self.rolled
            .extend(bars.unwrap_or_default().into_iter().map(Rolled::new));
    }

    fn forget(&mut self, partition: i32) -> usize {
        self.listed.remove(&partition);
        if let Some(bars) = &mut self.bars {
            bars.discard(partition);
        }
        self.ticks.discard(partition)
    }
}

fn writer_config(config: &LakeSection) -> LakeConfig {
    LakeConfig {
        roll_bytes: config.roll_bytes,
        roll_age: Duration::from_secs(config.roll_seconds),
        gzip: config.gzip,
        spill_bytes: None,
    }
}
