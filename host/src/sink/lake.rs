//! The local lake: `<root>/<topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first offset>-<last offset>.ndjson`.
//!
//! Lines are buffered per (lake partition, Kafka partition) segment and written as one object when
//! the segment rolls — by size, by age, or at shutdown — through a temporary file, fsync and
//! rename, so a reader never sees half an object. A segment's offsets are acknowledged only once
//! its object is in place. The object names are the ones the GCS sink uses.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeConfig {
    pub root: PathBuf,
    /// Roll a segment once its buffered lines reach this many bytes.
    pub roll_bytes: usize,
    /// Roll a segment this long after its first line.
    pub roll_age: Duration,
}

#[derive(Debug)]
struct Segment {
    bytes: Vec<u8>,
    offsets: Vec<i64>,
    opened: Instant,
}

/// A written object and the offsets it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// Relative to the lake root, with `/` separators.
    pub name: String,
    pub partition: i32,
    pub offsets: Vec<i64>,
    pub lines: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("lake object {path}: {source}")]
pub struct LakeError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub struct LocalLake {
    config: LakeConfig,
    topic: String,
    open: HashMap<(String, i32), Segment>,
}

/// The object name for a segment; shared with the GCS sink.
pub fn object_name(
    topic: &str,
    lake_partition: &str,
    partition: i32,
    first: i64,
    last: i64,
) -> String {
    format!("{topic}/{lake_partition}/{partition}-{first}-{last}.ndjson")
}

impl LocalLake {
    pub fn new(config: LakeConfig, topic: impl Into<String>) -> Self {
        Self {
            config,
            topic: topic.into(),
            open: HashMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// Buffers one line (without its newline). Returns the objects that rolled because of it.
    pub fn append(
        &mut self,
        lake_partition: &str,
        partition: i32,
        offset: i64,
        line: &[u8],
    ) -> Result<Vec<WrittenObject>, LakeError> {
        let key = (lake_partition.to_string(), partition);
        let segment = self.open.entry(key.clone()).or_insert_with(|| Segment {
            bytes: Vec::new(),
            offsets: Vec::new(),
            opened: Instant::now(),
        });
        segment.bytes.extend_from_slice(line);
        segment.bytes.push(b'\n');
        segment.offsets.push(offset);
        if segment.bytes.len() >= self.config.roll_bytes {
            let segment = self.open.remove(&key).expect("just used");
            return Ok(vec![self.write(&key.0, key.1, segment)?]);
        }
        Ok(Vec::new())
    }

    /// Rolls every segment older than the configured age.
    pub fn roll_due(&mut self, now: Instant) -> Result<Vec<WrittenObject>, LakeError> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, s)| now.duration_since(s.opened) >= self.config.roll_age)
            .map(|(k, _)| k.clone())
            .collect();
        self.roll(due)
    }

    /// Rolls everything (shutdown, or `--once` at the end of the input).
    pub fn flush(&mut self) -> Result<Vec<WrittenObject>, LakeError> {
        let all: Vec<_> = self.open.keys().cloned().collect();
        self.roll(all)
    }

    /// Drops the buffered lines of a Kafka partition (revoked: its new owner will write them).
    /// Returns how many lines were dropped.
    pub fn discard(&mut self, partition: i32) -> usize {
        let mut dropped = 0;
        self.open.retain(|(_, p), segment| {
            if *p == partition {
                dropped += segment.offsets.len();
            }
            *p != partition
        });
        dropped
    }

    pub fn buffered_lines(&self) -> usize {
        self.open.values().map(|s| s.offsets.len()).sum()
    }

    fn roll(&mut self, keys: Vec<(String, i32)>) -> Result<Vec<WrittenObject>, LakeError> {
        let mut written = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(segment) = self.open.remove(&key) {
                written.push(self.write(&key.0, key.1, segment)?);
            }
        }
        Ok(written)
    }

    fn write(
        &mut self,
        lake_partition: &str,
        partition: i32,
        segment: Segment,
    ) -> Result<WrittenObject, LakeError> {
        let first = *segment
            .offsets
            .iter()
            .min()
            .expect("a segment holds at least one line");
        let last = *segment.offsets.iter().max().expect("non-empty");
        let name = object_name(&self.topic, lake_partition, partition, first, last);
        let path = self.config.root.join(&name);
        let dir = path.parent().expect("object names have directories");
        let io = |source| LakeError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{partition}-{first}-{last}.ndjson.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&segment.bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        tracing::debug!(object = %name, lines = segment.offsets.len(), "lake object written");
        Ok(WrittenObject {
            name,
            partition,
            lines: segment.offsets.len(),
            offsets: segment.offsets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(dir: &Path, roll_bytes: usize) -> LocalLake {
        LocalLake::new(
            LakeConfig {
                root: dir.to_path_buf(),
                roll_bytes,
                roll_age: Duration::from_secs(3600),
            },
            "stock-stream",
        )
    }

    #[test]
    fn rolls_by_size_into_named_objects() {
        let dir = tempfile::tempdir().unwrap();
        let mut lake = lake(dir.path(), 20);
        assert!(
            lake.append("dt=2017-06-20/hour=07", 2, 5, b"{\"a\":1}")
                .unwrap()
                .is_empty()
        );
        let rolled = lake
            .append("dt=2017-06-20/hour=07", 2, 6, b"{\"a\":22222}")
            .unwrap();
        assert_eq!(rolled.len(), 1);
        assert_eq!(
            rolled[0].name,
            "stock-stream/dt=2017-06-20/hour=07/2-5-6.ndjson"
        );
        assert_eq!(rolled[0].offsets, vec![5, 6]);
        let text = std::fs::read_to_string(dir.path().join(&rolled[0].name)).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":22222}\n");
        assert_eq!(lake.buffered_lines(), 0);
    }

    #[test]
    fn segments_are_per_partition_and_flushed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut lake = lake(dir.path(), 1 << 20);
        lake.append("dt=2017-06-20/hour=07", 0, 1, b"x").unwrap();
        lake.append("dt=2017-06-20/hour=08", 0, 2, b"y").unwrap();
        lake.append("dt=2017-06-20/hour=07", 1, 1, b"z").unwrap();
        assert_eq!(lake.buffered_lines(), 3);
        let mut names: Vec<_> = lake.flush().unwrap().into_iter().map(|w| w.name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "stock-stream/dt=2017-06-20/hour=07/0-1-1.ndjson",
                "stock-stream/dt=2017-06-20/hour=07/1-1-1.ndjson",
                "stock-stream/dt=2017-06-20/hour=08/0-2-2.ndjson"
            ]
        );
        // No temporary files are left behind.
        let hour =
            std::fs::read_dir(dir.path().join("stock-stream/dt=2017-06-20/hour=07")).unwrap();
        assert!(
            hour.map(|e| e.unwrap().file_name().into_string().unwrap())
                .all(|n| n.ends_with(".ndjson") && !n.starts_with('.'))
        );
    }

    #[test]
    fn a_revoked_partition_is_discarded_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut lake = lake(dir.path(), 1 << 20);
        lake.append("dt=2017-06-20/hour=07", 0, 1, b"x").unwrap();
        lake.append("dt=2017-06-20/hour=08", 0, 2, b"y").unwrap();
        lake.append("dt=2017-06-20/hour=07", 1, 1, b"z").unwrap();
        assert_eq!(lake.discard(0), 2);
        let written = lake.flush().unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].partition, 1);
    }

    #[test]
    fn rolls_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut lake = LocalLake::new(
            LakeConfig {
                root: dir.path().to_path_buf(),
                roll_bytes: 1 << 20,
                roll_age: Duration::from_millis(1),
            },
            "t",
        );
        lake.append("dt=2017-06-20/hour=07", 0, 9, b"x").unwrap();
        assert!(
            lake.roll_due(Instant::now() - Duration::from_secs(1))
                .unwrap()
                .is_empty()
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(lake.roll_due(Instant::now()).unwrap().len(), 1);
    }
}
