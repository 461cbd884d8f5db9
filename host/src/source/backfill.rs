//! `run --input FILE`: a file of any size replayed into the topic, streamed.
//!
//! On the embedded cluster (which keeps 5 MiB a partition and dies with the process) the replay
//! runs beside the pipeline and stays at most a [`Window`] of bytes ahead of what the pipeline has
//! consumed, so the broker never drops a tick before it is read; `run --once` ends at the
//! per-partition ends the replay reports. Each tick's partition is chosen here (CRC32 of its key, as
//! librdkafka's default partitioner does; by its position when it has no key) and the producer
//! keeps each partition's order, so the same file always gives the same offsets — which makes a
//! checkpoint of committed offsets ([`InputCheckpoint`], stored beside the lake) valid after a
//! crash: the same command replays the file into a new cluster, the group resumes where the sinks
//! had acknowledged, and the lake's own names (offset ranges) keep every tick there once. On a real
//! broker (`--brokers`) the file is replayed first, streamed, as before.

use super::input::InputReader;
use super::replay::InputRefusal;
use crate::position::{Offset, Offsets, Partition};
use anyhow::Context;
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The replay may be this far ahead of the consumer: below the 5 MiB a partition the embedded
/// cluster keeps, whichever partition the unread ticks are in.
pub const EMBEDDED_WINDOW_BYTES: usize = 4 << 20;

/// How far the replay is ahead of the consumer, in bytes of ticks the consumer has yet to read.
///
/// Invariant: `ahead` is the sum of `sizes`, the sizes of the newest ticks produced, as many as
/// were produced and not consumed yet (consumption is counted, not matched tick by tick: the oldest
/// are taken to be read first).
#[derive(Debug)]
pub struct Window {
    limit: usize,
    sizes: VecDeque<usize>,
    ahead: usize,
    /// The consumed count the window last drained to.
    consumed: u64,
}

impl Window {
    pub fn new(limit: usize, consumed_at_start: u64) -> Self {
        Self {
            limit,
            sizes: VecDeque::new(),
            ahead: 0,
            consumed: consumed_at_start,
        }
    }

    /// Whether a tick of `size` bytes may be produced now that the consumer has taken `consumed`
    /// messages in all. A tick larger than the window goes when nothing is ahead of it.
    pub fn room(&mut self, consumed: u64, size: usize) -> bool {
        while self.consumed < consumed {
            self.consumed += 1;
            match self.sizes.pop_front() {
                Some(s) => self.ahead -= s,
                None => break,
            }
        }
        self.sizes.is_empty() || self.ahead + size <= self.limit
    }

    /// A tick of `size` bytes the consumer will read was produced.
    pub fn produced(&mut self, size: usize) {
        self.sizes.push_back(size);
        self.ahead += size;
    }
}

/// The partition a tick goes to: CRC32 of its key modulo the partition count (librdkafka's
/// default for keyed messages), or its position in the file for one without a key.
pub fn partition_of(key: Option<&str>, position: usize, partitions: i32) -> i32 {
    let n = partitions.max(1) as u32;
    let slot = match key {
        Some(key) => super::embedded::crc32(key.as_bytes()) % n,
        None => (position as u64 % u64::from(n)) as u32,
    };
    slot as i32
}

/// What the replay of a file did.
#[derive(Debug, Default)]
pub struct FileReplayed {
    pub sent: u64,
    /// Partition -> the offset after its last tick: where `run --once` ends.
    pub ends: Offsets,
    /// Partition -> the offset of its first tick: where a group that never committed it must
    /// find the replay (what the broker deleted before is lost; see `Membership::expect_from`).
    pub starts: Offsets,
    pub refused: Vec<InputRefusal>,
}

/// Shared with whoever shows progress.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    pub bytes_read: AtomicU64,
    pub size: AtomicU64,
    pub produced: AtomicU64,
}

/// Keeps the replay behind the consumer: `consumed` tells how many messages the pipeline has taken;
/// ticks below `resume` (their partition's committed offset) will not be read and do not count.
pub struct Gate {
    pub window: Window,
    pub consumed: Box<dyn Fn() -> u64 + Send>,
    pub resume: Offsets,
    /// What [`produce_resumed_prefix`] did, when it ran: the ticks below `resume` are in the topic
    /// already, so they are counted, not produced again.
    pub prefix: Option<ResumedPrefix>,
}

/// The ticks below the resume offsets, produced before the pipeline starts.
#[derive(Debug, Default)]
pub struct ResumedPrefix {
    /// File positions the producer refused at once (too large): they took no offset.
    pub skipped: HashSet<usize>,
    /// Every refusal, delivered or not, for the run's summary.
    pub refused: Vec<InputRefusal>,
    pub sent: u64,
}

/// Produces the ticks of `input` below `resume` (their partitions' committed offsets: processed
/// by the sinks before, never read again), in file order, and waits for their delivery; it stops
/// at the first position where every partition has reached its resume offset.
///
/// Why, before the pipeline starts: a consumer that starts at a committed offset past its
/// partition's end is reset to the log's start (`auto.offset.reset`). Beside a replay that has
/// not reached that offset yet, it would read again what had been processed, and count it, which
/// let the window run ahead in another partition until the embedded cluster dropped ticks no one
/// had read (`offsets lost`). A partition's order is kept: its ticks below the resume offset all
/// come before the others, and [`produce_file`] produces the rest afterwards.
pub async fn produce_resumed_prefix(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    input: &mut InputReader,
    resume: &Offsets,
) -> anyhow::Result<ResumedPrefix> {
    let mut prefix = ResumedPrefix::default();
    let mut replayed = FileReplayed::default();
    let mut pending = VecDeque::new();
    let mut next: Offsets = BTreeMap::new();
    // Partitions whose produced ticks have not reached their resume offset yet.
    let mut short = resume.values().filter(|&&r| r > Offset(0)).count();
    while short > 0 {
        let Some((position, payload)) = input.next_item()? else {
            break;
        };
        let key = super::replay::key_of(&payload);
        let partition = partition_of(key.as_deref(), position, partitions);
        let offset = next.get(&Partition(partition)).copied().unwrap_or_default();
        if resume
            .get(&Partition(partition))
            .is_none_or(|&r| offset >= r)
        {
            continue; // read by the pipeline: produce_file's
        }
        let at = Tick {
            unit: input.unit(),
            position,
            partition,
        };
        match enqueue_tick(producer, topic, at, key.as_deref(), &payload).await? {
            Ok(delivery) => pending.push_back((position, payload.len(), delivery)),
            Err(refusal) => {
                prefix.skipped.insert(position);
                prefix.refused.push(refusal);
                continue;
            }
        }
        let produced = next.entry(Partition(partition)).or_default();
        *produced = produced.next();
        if resume.get(&Partition(partition)) == Some(produced) {
            short -= 1;
        }
        if pending.len() >= 10_000 {
            settle(&mut pending, 5_000, topic, input.unit(), &mut replayed).await?;
        }
    }
    settle(&mut pending, 0, topic, input.unit(), &mut replayed).await?;
    prefix.refused.extend(replayed.refused);
    prefix.sent = replayed.sent;
    Ok(prefix)
}

/// Produces every tick of `input` to `topic` (of `partitions` partitions), in file order, each to
/// [`partition_of`]; with a `gate`, waits while the window is full.
pub async fn produce_file(
    producer: &FutureProducer,
    topic: &str,
    partitions: i32,
    input: &mut InputReader,
    mut gate: Option<Gate>,
    progress: &ReplayProgress,
) -> anyhow::Result<FileReplayed> {
    progress.size.store(input.size(), Ordering::Relaxed);
    let mut replayed = FileReplayed::default();
    let mut pending = VecDeque::new();
    // Partition -> offsets handed to the producer (the same as the broker's: one producer, in order).
    let mut next: Offsets = BTreeMap::new();
    while let Some((position, payload)) = input.next_item()? {
        let key = super::replay::key_of(&payload);
        let partition = partition_of(key.as_deref(), position, partitions);
        let offset = *next.entry(Partition(partition)).or_default();
        // A tick the consumer will read (past its partition's committed offset) waits for room.
        let read = gate.as_ref().is_some_and(|g| {
            g.resume
                .get(&Partition(partition))
                .is_none_or(|&r| offset >= r)
        });
        if let Some(prefix) = gate.as_ref().and_then(|g| g.prefix.as_ref())
            && !read
        {
            // In the topic already (produce_resumed_prefix), or refused there without an offset.
            if !prefix.skipped.contains(&position) {
                next.insert(Partition(partition), offset.next());
            }
            continue;
        }
        if let Some(gate) = gate.as_mut().filter(|_| read) {
            while !gate.window.room((gate.consumed)(), payload.len()) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let at = Tick {
            unit: input.unit(),
            position,
            partition,
        };
        let delivery = match enqueue_tick(producer, topic, at, key.as_deref(), &payload).await? {
            Ok(delivery) => delivery,
            Err(refusal) => {
                replayed.refused.push(refusal);
                continue;
            }
        };
        if let Some(gate) = gate.as_mut().filter(|_| read) {
            gate.window.produced(payload.len());
        }
        next.insert(Partition(partition), offset.next());
        pending.push_back((position, payload.len(), delivery));
        if pending.len() >= 10_000 {
            settle(&mut pending, 5_000, topic, input.unit(), &mut replayed).await?;
        }
        progress
            .bytes_read
            .store(input.bytes_read(), Ordering::Relaxed);
        progress.produced.fetch_add(1, Ordering::Relaxed);
    }
    settle(&mut pending, 0, topic, input.unit(), &mut replayed).await?;
    Ok(replayed)
}

/// Where a tick of the input is and goes.
#[derive(Debug, Clone, Copy)]
struct Tick {
    /// "line" or "element" ([`InputReader::unit`]).
    unit: &'static str,
    position: usize,
    partition: i32,
}

/// Hands one tick to the producer. A tick the broker will never take (too large) is logged and
/// comes back as its refusal; any other error names the tick.
async fn enqueue_tick(
    producer: &FutureProducer,
    topic: &str,
    at: Tick,
    key: Option<&str>,
    payload: &[u8],
) -> anyhow::Result<Result<rdkafka::producer::DeliveryFuture, InputRefusal>> {
    let Tick {
        unit,
        position,
        partition,
    } = at;
    match super::replay::enqueue(producer, topic, key, payload, Some(partition)).await {
        Ok(delivery) => Ok(Ok(delivery)),
        Err(e) if super::replay::refused_for_good(&e) => {
            let at = format!("{unit} {position}");
            tracing::warn!(at = %at, bytes = payload.len(), reason = %e, "an input tick the broker would not take is left out of the topic");
            Ok(Err(InputRefusal {
                at,
                bytes: payload.len(),
                reason: e.to_string(),
            }))
        }
        Err(e) => Err(e).with_context(|| format!("producing {unit} {position} to {topic}")),
    }
}

/// Awaits deliveries until `keep` are left: the sent ticks' partitions' ends noted, a tick the
/// broker refused for good (too large) recorded with its position.
async fn settle(
    pending: &mut VecDeque<(usize, usize, rdkafka::producer::DeliveryFuture)>,
    keep: usize,
    topic: &str,
    unit: &str,
    replayed: &mut FileReplayed,
) -> anyhow::Result<()> {
    while pending.len() > keep {
        let (position, bytes, delivery) = pending.pop_front().expect("non-empty");
        match delivery.await {
            Ok(Ok(delivered)) => {
                replayed.sent += 1;
                let end = replayed
                    .ends
                    .entry(Partition(delivered.partition))
                    .or_default();
                *end = (*end).max(Offset(delivered.offset).next());
                let start = replayed
                    .starts
                    .entry(Partition(delivered.partition))
                    .or_insert(Offset(delivered.offset));
                *start = (*start).min(Offset(delivered.offset));
            }
            Ok(Err((e, _))) if super::replay::refused_for_good(&e) => {
                let at = format!("{unit} {position}");
                tracing::warn!(at = %at, bytes, reason = %e, "an input tick the broker would not take is left out of the topic");
                replayed.refused.push(InputRefusal {
                    at,
                    bytes,
                    reason: e.to_string(),
                });
            }
            Ok(Err((e, _))) => {
                return Err(e).with_context(|| format!("delivering {unit} {position} to {topic}"));
            }
            Err(_) => anyhow::bail!("the producer was dropped before delivering to {topic}"),
        }
    }
    Ok(())
}

/// The committed offsets of a replayed file, stored beside the lake as
/// `_checkpoints/<topic>/<id>.json`, written by the pipeline as its offsets are committed (the
/// commit tracker's positions: every sink acknowledged everything before them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputCheckpoint {
    pub input: String,
    pub size: u64,
    pub partitions: i32,
    pub committed: Offsets,
}

impl InputCheckpoint {
    pub fn new(path: &Path, size: u64, partitions: i32) -> Self {
        let input = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
        Self {
            input,
            size,
            partitions,
            committed: BTreeMap::new(),
        }
    }

    /// Where the checkpoints of files replayed into `topic` live in the lake.
    pub fn prefix(topic: &str) -> String {
        crate::sink::layout::checkpoints_prefix(topic)
    }

    /// Its object in the lake: one per file (path, size) and partition count.
    pub fn object_name(&self, topic: &str) -> String {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let id = format!("{}\n{}\n{}", self.input, self.size, self.partitions);
        for b in id.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        crate::sink::layout::input_checkpoint(topic, hash)
    }

    /// The stored checkpoint of the same file, if any (a checkpoint of another file or partition
    /// count does not apply: its offsets would be another file's).
    pub async fn load(
        self,
        store: &crate::sink::store::LakeStore,
        topic: &str,
    ) -> anyhow::Result<Self> {
        let name = self.object_name(topic);
        let listed = store
            .list(&Self::prefix(topic))
            .await
            .context("listing the lake's checkpoints")?;
        if !listed.contains(&name) {
            return Ok(self);
        }
        let bytes = store
            .get(&name)
            .await
            .with_context(|| format!("reading the checkpoint {name}"))?;
        let stored: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("the checkpoint {name} is not one stockpipe wrote"))?;
        if (&stored.input, stored.size, stored.partitions)
            != (&self.input, self.size, self.partitions)
        {
            tracing::warn!(checkpoint = %name, "the checkpoint is of another file; starting from the beginning");
            return Ok(self);
        }
        Ok(stored)
    }

    /// Notes positions the commit tracker moved; true when any moved forward.
    pub fn advance(&mut self, positions: &[(i32, i64)]) -> bool {
        let mut moved = false;
        for &(partition, at) in positions {
            let at = Offset(at);
            let committed = self.committed.entry(Partition(partition)).or_default();
            if at > *committed {
                *committed = at;
                moved = true;
            }
        }
        moved
    }
}

/// A replay's progress on a terminal (nothing elsewhere): the share of the file the pipeline has
/// consumed, ticks, rate and ETA, updated every 500 ms until the task is aborted.
pub fn show_progress(
    progress: Arc<ReplayProgress>,
    consumed: impl Fn() -> u64 + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    use indicatif::{ProgressBar, ProgressStyle};
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    const STEPS: u64 = 10_000;
    let bar = ProgressBar::new(STEPS).with_style(
        ProgressStyle::with_template("{percent:>3} % [{bar:30}] {msg}  ETA {eta}")
            .expect("a valid template"),
    );
    Some(tokio::spawn(async move {
        let at_start = consumed();
        let mut first: Option<(std::time::Instant, u64)> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let size = progress.size.load(Ordering::Relaxed).max(1);
            let read = progress.bytes_read.load(Ordering::Relaxed);
            let produced = progress.produced.load(Ordering::Relaxed).max(1);
            let done = consumed().saturating_sub(at_start);
            // The share of the file behind the consumer: read share × consumed share of produced.
            let share = (read as f64 / size as f64) * (done as f64 / produced as f64).min(1.0);
            // The rate counts from the first tick consumed (joining the group takes seconds).
            let (since, base) = *first.get_or_insert((std::time::Instant::now(), done));
            let rate = done.saturating_sub(base) as f64 / since.elapsed().as_secs_f64().max(1e-3);
            bar.set_position((share * STEPS as f64) as u64);
            bar.set_message(format!("{done} ticks  {rate:.0}/s"));
        }
    }))
}

/// A file replayed into the topic while the pipeline consumes it: `run --once` ends where the
/// replay ends, and the committed offsets are kept in a checkpoint beside the lake.
pub struct InputFeed {
    /// Partition -> end of the replayed file, once the replay is done (or why it failed).
    ends: tokio::sync::oneshot::Receiver<anyhow::Result<Offsets>>,
    checkpoint: InputCheckpoint,
    /// When the checkpoint was last stored, and whether it has moved since.
    saved_at: Option<std::time::Instant>,
    unsaved: bool,
}

impl InputFeed {
    /// `ends` answers once the replay is done; `checkpoint` is where the file resumes.
    pub fn new(
        ends: tokio::sync::oneshot::Receiver<anyhow::Result<Offsets>>,
        checkpoint: InputCheckpoint,
    ) -> Self {
        Self {
            ends,
            checkpoint,
            saved_at: None,
            unsaved: false,
        }
    }

    /// The `--once` targets, once the replay is done: the file's ends, and the group's
    /// committed offsets (a partition resumed at its end has nothing left).
    pub fn targets(
        &mut self,
        group: &super::group::Membership,
    ) -> anyhow::Result<Option<super::once::OnceTargets>> {
        use tokio::sync::oneshot::error::TryRecvError;
        let ends = match self.ends.try_recv() {
            Ok(ends) => ends.context("replaying the input")?,
            Err(TryRecvError::Empty) => return Ok(None),
            Err(TryRecvError::Closed) => anyhow::bail!("the input's replay stopped without a word"),
        };
        group.input_targets(ends).map(Some)
    }

    /// The positions the pipeline stores now: the checkpoint follows them.
    pub fn advance(&mut self, advanced: &[(i32, i64)]) {
        if self.checkpoint.advance(advanced) {
            self.unsaved = true;
        }
    }

    /// Stores the checkpoint when its offsets moved (at most every second, unless `now`). A
    /// failure is logged: the next one carries the same offsets.
    pub async fn save(&mut self, store: &crate::sink::store::LakeStore, topic: &str, now: bool) {
        let due = self
            .saved_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if !self.unsaved || !(now || due) {
            return;
        }
        let name = self.checkpoint.object_name(topic);
        let bytes = serde_json::to_vec(&self.checkpoint).expect("a checkpoint serializes");
        match store.put(&name, bytes).await {
            Ok(()) => {
                self.saved_at = Some(std::time::Instant::now());
                self.unsaved = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, checkpoint = %name, "storing the input's checkpoint failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_the_replay_within_its_bytes_of_the_consumer() {
        let mut w = Window::new(1000, 0);
        for _ in 0..4 {
            assert!(w.room(0, 250));
            w.produced(250);
        }
        assert!(!w.room(0, 250), "1000 bytes ahead");
        assert!(!w.room(0, 1), "full is full");
        assert!(w.room(1, 250), "one read: room for one");
        w.produced(250);
        assert!(!w.room(1, 250));
        assert!(w.room(5, 1000), "all read");
        w.produced(1000);
        assert!(!w.room(5, 1));
        // A tick larger than the window waits until nothing is ahead, then goes alone.
        assert!(!w.room(5, 5000));
        assert!(w.room(6, 5000));
        // More consumed than produced (messages from before the replay) drains it all, no more.
        let mut w = Window::new(100, 10);
        w.produced(60);
        assert!(w.room(50, 100));
    }

    #[test]
    fn partitions_follow_librdkafka_s_key_hash() {
        assert_eq!(
            partition_of(Some("408065"), 1, 3),
            (super::super::embedded::crc32(b"408065") % 3) as i32
        );
        assert_eq!(partition_of(None, 7, 3), 1);
        assert_eq!(partition_of(Some("x"), 1, 1), 0);
    }

    #[test]
    fn a_checkpoint_moves_forward_only_and_names_its_file() {
        let mut c = InputCheckpoint {
            input: "/data/day.ndjson".into(),
            size: 700,
            partitions: 3,
            committed: BTreeMap::new(),
        };
        assert!(c.advance(&[(0, 10), (2, 5)]));
        assert!(!c.advance(&[(0, 9)]));
        assert!(c.advance(&[(0, 11)]));
        assert_eq!(c.committed, crate::position::offsets([(0, 11), (2, 5)]));
        let name = c.object_name("stock-stream");
        assert!(
            name.starts_with("_checkpoints/stock-stream/input-"),
            "{name}"
        );
        c.partitions = 4;
        assert_ne!(c.object_name("stock-stream"), name);
    }
}
