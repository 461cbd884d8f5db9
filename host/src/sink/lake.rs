//! The lake's segments: `<topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first offset>-<last offset>.ndjson`.
//!
//! Lines are buffered per (lake partition, Kafka partition) segment; a segment rolls — by size, by
//! age, or at shutdown — into a [`RolledSegment`] that the run loop puts in the
//! [`LakeStore`](super::store::LakeStore) (a directory or a GCS bucket) before it acknowledges the
//! segment's lines.
//!
//! Spilling (a local lake): with [`LakeConfig::spill_bytes`], a segment keeps only its newest lines
//! in memory. Whole blocks of it are handed out as [`SpoolOp`]s as it fills, to be appended to the
//! segment's spool file, and the rolled segment carries the rest and the spool's name: its object
//! is the spool file plus that tail, renamed into place. The bytes, the name and the moment an
//! object appears are the same as without spilling; the memory held is a block per partition
//! instead of a whole segment.
//!
//! No duplicates after a crash: an object's name carries its range of lake positions (a tick's is
//! its offset; see [`LakePosition`]), and the writer knows the
//! ranges already in the store ([`LakeWriter::set_existing`], from a listing at start-up and after
//! a rebalance). A re-delivered offset that an existing object covers is acknowledged without being
//! written again, so the lake holds every accepted tick exactly once even when a crash fell between
//! an upload and the offset commit.

use super::layout;
use crate::config::error::{ConfigError, invalid};
use crate::position::LakePosition;
pub use crate::sink::store::{SPILL_ALIGN, SpoolOp};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeConfig {
    /// Roll a segment once its buffered lines reach this many bytes.
    pub roll_bytes: usize,
    /// Roll a segment this long after its first line.
    pub roll_age: Duration,
    /// Store objects gzip-compressed, as `….ndjson.gz` (BigQuery reads them so).
    pub gzip: bool,
    /// Hand out a segment's bytes in whole blocks of [`SPILL_ALIGN`] once this many are buffered
    /// (see the module's doc). `None`: a segment stays in memory until it rolls (gzip, GCS).
    pub spill_bytes: Option<usize>,
}

#[derive(Debug)]
struct Segment {
    /// The lines not spilled yet.
    bytes: Vec<u8>,
    /// How many bytes went to the spool file before `bytes`.
    spilled: usize,
    /// The spool file's name (relative to the lake root, like an object's), once it spilled.
    spool: Option<String>,
    positions: Vec<LakePosition>,
    opened: Instant,
}

impl Segment {
    fn len(&self) -> usize {
        self.spilled + self.bytes.len()
    }
}

/// A segment ready to be stored, and the positions of the lines it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledSegment {
    /// Relative to the lake root, with `/` separators.
    pub name: String,
    pub partition: i32,
    pub positions: Vec<LakePosition>,
    /// The object's bytes; with `spool`, only its tail (the spool file holds what comes before).
    pub bytes: Vec<u8>,
    /// The spool file holding the object's first bytes, if the segment spilled.
    pub spool: Option<String>,
}

impl RolledSegment {
    pub fn lines(&self) -> usize {
        self.positions.len()
    }
}

/// What became of a line offered to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Buffered; it is acknowledged when its segment is stored. Segments that rolled because of
    /// it (full, or the partition moved to another hour) come with it.
    Buffered(Vec<RolledSegment>),
    /// An object already in the lake covers this position: acknowledge it now.
    AlreadyStored,
}

/// How a writer's object names spell its lines' positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `offset` or `offset.k` ([`LakePosition::tick_name`]).
    Ticks,
    /// The position's number ([`LakePosition::get`]).
    Bars,
}

impl Naming {
    fn spell(self, position: LakePosition) -> String {
        match self {
            Naming::Ticks => position.tick_name(),
            Naming::Bars => position.get().to_string(),
        }
    }

    fn read(self, text: &str) -> Option<LakePosition> {
        match self {
            Naming::Ticks => LakePosition::from_tick_name(text),
            Naming::Bars => text.parse().ok().map(LakePosition::from_name),
        }
    }
}

pub struct LakeWriter {
    config: LakeConfig,
    topic: String,
    naming: Naming,
    /// Kafka partition -> its one open segment and the lake partition (dt/hour) it belongs to.
    /// One open segment per Kafka partition keeps each partition's objects on disjoint offset
    /// ranges: a tick for another hour rolls the open segment first.
    open: HashMap<i32, (String, Segment)>,
    /// Kafka partition -> sorted position ranges of the objects already stored.
    existing: HashMap<i32, Vec<(LakePosition, LakePosition)>>,
    /// Spool work not taken yet ([`LakeWriter::take_spool_ops`]).
    spool_ops: Vec<SpoolOp>,
    /// Numbers the spool files this writer opens.
    spools_opened: u64,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// An object's lines: gunzipped when its name ends in `.gz`.
pub fn object_lines(name: &str, bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    if layout::is_gzipped(name) {
        use std::io::Read;
        let mut out = Vec::with_capacity(bytes.len() * 4);
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

impl LakeWriter {
    /// A gzip object is compressed whole when it rolls, so a gzip writer does not spill.
    pub fn new(mut config: LakeConfig, topic: impl Into<String>) -> Self {
        if config.gzip {
            config.spill_bytes = None;
        }
        Self {
            config,
            topic: topic.into(),
            naming: Naming::Ticks,
            open: HashMap::new(),
            existing: HashMap::new(),
            spool_ops: Vec::new(),
            spools_opened: 0,
        }
    }

    /// The writer with its object names spelling positions as `naming` says (ticks' by default).
    #[must_use]
    pub fn with_naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// The spool work made since the last call, in order. It must reach the store before any
    /// segment rolled since then (a rolled segment's object starts with its spool file).
    pub fn take_spool_ops(&mut self) -> Vec<SpoolOp> {
        std::mem::take(&mut self.spool_ops)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Records the objects already in the store (names as listed under the topic); positions they
    /// cover are not written again.
    pub fn set_existing<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.existing.clear();
        for (partition, first, last) in names.into_iter().filter_map(layout::parse_segment) {
            let (Some(first), Some(last)) = (self.naming.read(first), self.naming.read(last))
            else {
                continue;
            };
            if first <= last {
                self.existing
                    .entry(partition)
                    .or_default()
                    .push((first, last));
            }
        }
        for ranges in self.existing.values_mut() {
            ranges.sort_unstable();
        }
    }

    fn already_stored(&self, partition: i32, position: LakePosition) -> bool {
        let Some(ranges) = self.existing.get(&partition) else {
            return false;
        };
        // The last range starting at or before `position`; ranges of one partition never overlap.
        let i = ranges.partition_point(|&(first, _)| first <= position);
        i > 0 && ranges[i - 1].1 >= position
    }

    /// Offers one line (without its newline).
    pub fn append(
        &mut self,
        lake_partition: &str,
        partition: i32,
        position: LakePosition,
        line: &[u8],
    ) -> Appended {
        if self.already_stored(partition, position) {
            return Appended::AlreadyStored;
        }
        let mut rolled = Vec::new();
        if self
            .open
            .get(&partition)
            .is_some_and(|(lp, _)| lp != lake_partition)
        {
            rolled.extend(self.roll(vec![partition]));
        }
        let spill = self.config.spill_bytes;
        let (_, segment) = self.open.entry(partition).or_insert_with(|| {
            (
                lake_partition.to_string(),
                Segment {
                    // Room for a spill's worth and a line: no reallocation (and copy) as it fills.
                    bytes: Vec::with_capacity(spill.map_or(0, |s| s + 2 * SPILL_ALIGN)),
                    spilled: 0,
                    spool: None,
                    positions: Vec::new(),
                    opened: Instant::now(),
                },
            )
        });
        segment.bytes.extend_from_slice(line);
        segment.bytes.push(b'\n');
        segment.positions.push(position);
        if segment.len() >= self.config.roll_bytes {
            rolled.extend(self.roll(vec![partition]));
        } else if let Some(spill) = spill
            && segment.bytes.len() >= spill.max(SPILL_ALIGN)
        {
            let spool = segment.spool.get_or_insert_with(|| {
                self.spools_opened += 1;
                layout::spool(&self.topic, lake_partition, partition, self.spools_opened)
            });
            let whole = segment.bytes.len() / SPILL_ALIGN * SPILL_ALIGN;
            let mut rest = Vec::with_capacity(segment.bytes.capacity());
            rest.extend_from_slice(&segment.bytes[whole..]);
            let mut bytes = std::mem::replace(&mut segment.bytes, rest);
            bytes.truncate(whole);
            segment.spilled += whole;
            self.spool_ops.push(SpoolOp::Append {
                spool: spool.clone(),
                bytes,
            });
        }
        Appended::Buffered(rolled)
    }

    /// Rolls every segment older than the configured age.
    pub fn roll_due(&mut self, now: Instant) -> Vec<RolledSegment> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, (_, s))| now.duration_since(s.opened) >= self.config.roll_age)
            .map(|(&p, _)| p)
            .collect();
        self.roll(due)
    }

    /// Rolls everything (shutdown, or `--once` at the end of the input).
    pub fn flush(&mut self) -> Vec<RolledSegment> {
        let all: Vec<_> = self.open.keys().copied().collect();
        self.roll(all)
    }

    /// Rolls the segments of `partitions` (revoked: stored before they are let go of).
    pub fn roll_partitions(&mut self, partitions: &[i32]) -> Vec<RolledSegment> {
        self.roll(partitions.to_vec())
    }

    /// Drops the buffered lines of a Kafka partition (revoked: its new owner will write them) and
    /// what is known of its stored objects (the new owner may add some). Returns the lines dropped.
    pub fn discard(&mut self, partition: i32) -> usize {
        self.existing.remove(&partition);
        let Some((_, segment)) = self.open.remove(&partition) else {
            return 0;
        };
        if let Some(spool) = segment.spool {
            self.spool_ops.push(SpoolOp::Discard { spool });
        }
        segment.positions.len()
    }

    pub fn buffered_lines(&self) -> usize {
        self.open.values().map(|(_, s)| s.positions.len()).sum()
    }

    fn roll(&mut self, mut partitions: Vec<i32>) -> Vec<RolledSegment> {
        partitions.sort_unstable();
        partitions
            .into_iter()
            .filter_map(|partition| {
                let (lake_partition, segment) = self.open.remove(&partition)?;
                Some(self.seal(&lake_partition, partition, segment))
            })
            .collect()
    }

    fn seal(&mut self, lake_partition: &str, partition: i32, segment: Segment) -> RolledSegment {
        let first = *segment
            .positions
            .iter()
            .min()
            .expect("a segment holds at least one line");
        let last = *segment.positions.iter().max().expect("non-empty");
        let ranges = self.existing.entry(partition).or_default();
        let at = ranges.partition_point(|&(f, _)| f < first);
        ranges.insert(at, (first, last));
        let name = layout::segment(
            &self.topic,
            lake_partition,
            partition,
            &self.naming.spell(first),
            &self.naming.spell(last),
        );
        let (name, bytes) = if self.config.gzip {
            (layout::gzipped(name), gzip(&segment.bytes))
        } else {
            (name, segment.bytes)
        };
        RolledSegment {
            name,
            partition,
            positions: segment.positions,
            bytes,
            spool: segment.spool,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSection {
    /// `file:///path`, a plain directory, or `gs://bucket/prefix`.
    pub url: String,
    pub roll_bytes: usize,
    pub roll_seconds: u64,
    /// GCS endpoint (an emulator); empty = `STORAGE_EMULATOR_HOST`, else Google's.
    pub gcs_endpoint: String,
    /// GCS uploads above this many bytes are resumable.
    pub gcs_resumable_threshold_bytes: usize,
    /// Write `….ndjson.gz` objects (gzip) instead of plain NDJSON.
    pub gzip: bool,
}

impl Default for LakeSection {
    fn default() -> Self {
        Self {
            url: "lake".into(),
            roll_bytes: 8 << 20,
            roll_seconds: 60,
            gcs_endpoint: String::new(),
            gcs_resumable_threshold_bytes: 16 << 20,
            gzip: false,
        }
    }
}

impl LakeSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roll_bytes < 1024 {
            return invalid("lake.roll_bytes", "must be at least 1024");
        }
        if self.roll_seconds == 0 {
            return invalid("lake.roll_seconds", "must be at least 1");
        }
        self.location()?;
        Ok(())
    }

    pub fn location(&self) -> Result<crate::sink::store::LakeLocation, ConfigError> {
        crate::sink::store::LakeLocation::parse(&self.url).map_err(|message| ConfigError::Invalid {
            key: "lake.url".into(),
            message,
        })
    }

    pub fn gcs_options(&self) -> crate::sink::store::GcsOptions {
        crate::sink::store::GcsOptions {
            endpoint: (!self.gcs_endpoint.is_empty()).then(|| self.gcs_endpoint.clone()),
            resumable_threshold: self.gcs_resumable_threshold_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    fn at(offset: i64) -> crate::position::LakePosition {
        use crate::position::{LakePosition, Offset, Partition};
        LakePosition::tick(Partition(0), Offset(offset), 0).unwrap()
    }

    use super::*;

    const H7: &str = "dt=2017-06-20/hour=07";
    const H8: &str = "dt=2017-06-20/hour=08";

    fn writer(roll_bytes: usize) -> LakeWriter {
        LakeWriter::new(
            LakeConfig {
                roll_bytes,
                roll_age: Duration::from_secs(3600),
                gzip: false,
                spill_bytes: None,
            },
            "stock-stream",
        )
    }

    fn rolled(a: Appended) -> Vec<RolledSegment> {
        match a {
            Appended::Buffered(r) => r,
            Appended::AlreadyStored => panic!("not stored yet"),
        }
    }

    #[test]
    fn rolls_by_size_into_named_segments() {
        let mut lake = writer(20);
        assert!(rolled(lake.append(H7, 2, at(5), b"{\"a\":1}")).is_empty());
        let out = rolled(lake.append(H7, 2, at(6), b"{\"a\":22222}"));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].name,
            "stock-stream/dt=2017-06-20/hour=07/2-5-6.ndjson"
        );
        assert_eq!(out[0].positions, vec![at(5), at(6)]);
        assert_eq!(out[0].bytes, b"{\"a\":1}\n{\"a\":22222}\n");
        assert_eq!(lake.buffered_lines(), 0);
    }

    #[test]
    fn a_partition_moving_to_another_hour_rolls_its_segment() {
        let mut lake = writer(1 << 20);
        assert!(rolled(lake.append(H7, 0, at(1), b"x")).is_empty());
        let out = rolled(lake.append(H8, 0, at(2), b"y"));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].name,
            "stock-stream/dt=2017-06-20/hour=07/0-1-1.ndjson"
        );
        lake.append(H7, 1, at(1), b"z");
        assert_eq!(lake.buffered_lines(), 2);
        let names: Vec<_> = lake.flush().into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "stock-stream/dt=2017-06-20/hour=08/0-2-2.ndjson",
                "stock-stream/dt=2017-06-20/hour=07/1-1-1.ndjson"
            ]
        );
    }

    #[test]
    fn a_revoked_partition_is_discarded_alone() {
        let mut lake = writer(1 << 20);
        lake.append(H7, 0, at(1), b"x");
        lake.append(H7, 0, at(2), b"y");
        lake.append(H7, 1, at(1), b"z");
        assert_eq!(lake.discard(0), 2);
        let written = lake.flush();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].partition, 1);
    }

    #[test]
    fn rolls_by_age() {
        let mut lake = LakeWriter::new(
            LakeConfig {
                roll_bytes: 1 << 20,
                roll_age: Duration::from_millis(1),
                gzip: false,
                spill_bytes: None,
            },
            "t",
        );
        lake.append(H7, 0, at(9), b"x");
        assert!(
            lake.roll_due(Instant::now() - Duration::from_secs(1))
                .is_empty()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(lake.roll_due(Instant::now()).len(), 1);
    }

    #[test]
    fn gzip_objects_are_named_so_and_read_back() {
        let mut lake = LakeWriter::new(
            LakeConfig {
                roll_bytes: 1 << 20,
                roll_age: Duration::from_secs(60),
                gzip: true,
                spill_bytes: None,
            },
            "stock-stream",
        );
        lake.append(H7, 0, at(3), b"{\"a\":1}");
        lake.append(H7, 0, at(4), b"{\"a\":2}");
        let out = lake.flush();
        assert_eq!(
            out[0].name,
            "stock-stream/dt=2017-06-20/hour=07/0-3-4.ndjson.gz"
        );
        assert_eq!(&out[0].bytes[..2], &[0x1f, 0x8b], "a gzip stream");
        assert_eq!(
            object_lines(&out[0].name, out[0].bytes.clone()).unwrap(),
            b"{\"a\":1}\n{\"a\":2}\n"
        );
        assert_eq!(layout::parse_segment(&out[0].name), Some((0, "3", "4")));
    }

    #[test]
    fn offsets_in_stored_objects_are_not_written_again() {
        let mut lake = writer(1 << 20);
        lake.set_existing([
            "stock-stream/dt=2017-06-20/hour=07/0-10-19.ndjson",
            "stock-stream/dt=2017-06-20/hour=07/0-30-39.ndjson",
            "stock-stream/dt=2017-06-20/hour=07/1-0-5.ndjson",
        ]);
        for offset in [10, 15, 19, 30, 39] {
            assert_eq!(
                lake.append(H7, 0, at(offset), b"x"),
                Appended::AlreadyStored
            );
        }
        for offset in [9, 20, 29, 40] {
            assert!(matches!(
                lake.append(H7, 0, at(offset), b"x"),
                Appended::Buffered(_)
            ));
        }
        assert_eq!(lake.append(H7, 1, at(5), b"x"), Appended::AlreadyStored);
        assert!(matches!(
            lake.append(H7, 2, at(5), b"x"),
            Appended::Buffered(_)
        ));
        // Forgotten with the partition: a new owner may have written more.
        lake.discard(0);
        assert!(matches!(
            lake.append(H7, 0, at(15), b"x"),
            Appended::Buffered(_)
        ));
    }

    /// A spilling writer's object = its spool pieces + the rolled tail, byte for byte the object
    /// the same lines make without spilling; pieces are whole blocks, in order, to one spool.
    #[test]
    fn a_spilled_segment_is_its_pieces_then_its_tail() {
        let config = |spill_bytes| LakeConfig {
            roll_bytes: 50_000,
            roll_age: Duration::from_secs(3600),
            gzip: false,
            spill_bytes,
        };
        let mut plain = LakeWriter::new(config(None), "t");
        let mut spilling = LakeWriter::new(config(Some(SPILL_ALIGN)), "t");
        let mut objects = (Vec::new(), Vec::new());
        let mut spools: HashMap<String, Vec<u8>> = HashMap::new();
        for offset in 0..400 {
            let line = vec![b'a' + (offset % 26) as u8; 100 + (offset as usize * 37) % 300];
            objects
                .0
                .extend(rolled(plain.append(H7, 0, at(offset), &line)));
            objects
                .1
                .extend(rolled(spilling.append(H7, 0, at(offset), &line)));
            for op in spilling.take_spool_ops() {
                let SpoolOp::Append { spool, bytes } = op else {
                    panic!("nothing was discarded")
                };
                assert!(bytes.len().is_multiple_of(SPILL_ALIGN), "whole blocks");
                spools.entry(spool).or_default().extend(bytes);
            }
        }
        objects.0.extend(plain.flush());
        objects.1.extend(spilling.flush());
        assert!(objects.0.len() >= 2, "the test rolls segments by size");
        assert_eq!(spools.len(), objects.1.len(), "every object spilled");
        for (whole, tail) in objects.0.iter().zip(&objects.1) {
            assert_eq!(
                (&whole.name, &whole.positions),
                (&tail.name, &tail.positions)
            );
            let spool = tail.spool.as_ref().expect("spilled");
            assert!(spool.starts_with("t/dt=2017-06-20/hour=07/."), "{spool}");
            let mut object = spools[spool].clone();
            object.extend(&tail.bytes);
            assert!(object == whole.bytes, "{} differs", whole.name);
            assert!(tail.bytes.len() < SPILL_ALIGN + 400);
        }
    }

    #[test]
    fn a_discarded_spilled_segment_discards_its_spool() {
        let mut lake = LakeWriter::new(
            LakeConfig {
                roll_bytes: 1 << 20,
                roll_age: Duration::from_secs(3600),
                gzip: false,
                spill_bytes: Some(SPILL_ALIGN),
            },
            "t",
        );
        lake.append(H7, 3, at(1), &[b'x'; 5000]);
        let ops = lake.take_spool_ops();
        let [SpoolOp::Append { spool, .. }] = &ops[..] else {
            panic!("one piece: {ops:?}")
        };
        assert_eq!(lake.discard(3), 1);
        assert_eq!(
            lake.take_spool_ops(),
            [SpoolOp::Discard {
                spool: spool.clone()
            }]
        );
        assert!(lake.flush().is_empty());
    }

    #[test]
    fn gzip_writers_do_not_spill() {
        let mut lake = LakeWriter::new(
            LakeConfig {
                roll_bytes: 1 << 20,
                roll_age: Duration::from_secs(3600),
                gzip: true,
                spill_bytes: Some(SPILL_ALIGN),
            },
            "t",
        );
        lake.append(H7, 0, at(1), &[b'x'; 10_000]);
        assert!(lake.take_spool_ops().is_empty());
        assert_eq!(lake.flush()[0].spool, None);
    }
}
