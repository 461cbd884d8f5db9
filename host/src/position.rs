//! Where a message is, in the words the run loop uses: a Kafka [`Partition`], an [`Offset`] in
//! it, [`Offsets`] per partition, and a line's [`LakePosition`] in the lake.
//!
//! Invariant: an [`Offset`] is always a Kafka offset, and every [`Offsets`] map holds the *next*
//! offset of each partition (one past the last message consumed, committed, or in the log: Kafka's
//! own convention for committed offsets and log ends). A lake position is not an offset: a line
//! sits at `offset × 2^20 + k`, and only [`LakePosition::message`] turns it back. The serde
//! forms are the plain numbers (`{"0": 42}`), so checkpoints and run summaries written before these
//! types read back unchanged.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A Kafka partition of the input topic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Partition(pub i32);

/// A Kafka offset within a partition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Offset(pub i64);

/// Partition → the next offset (see the module's invariant).
pub type Offsets = BTreeMap<Partition, Offset>;

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Offset {
    /// The offset after this one: where a partition resumes once this message is done.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

/// Builds [`Offsets`] from the plain numbers a client library answers with.
pub fn offsets(pairs: impl IntoIterator<Item = (i32, i64)>) -> Offsets {
    pairs
        .into_iter()
        .map(|(p, o)| (Partition(p), Offset(o)))
        .collect()
}

/// Bits of a lake position below its message's offset.
pub const PLACE_BITS: u32 = 20;

/// Where a line sits among its partition's lines in the lake; object names carry the first and
/// last. A line's position is its message's offset and its place among the lines that message
/// made, `offset × 2^20 + k`: a message of several ticks makes several tick lines, and one message
/// may close bars of several hours; with a position of its own each line is stored exactly once
/// even when its message's lines land in two objects. Tick objects spell a position `offset` (k =
/// 0, what a one-tick message makes: the names of every lake written before) or `offset.k`
/// ([`LakePosition::tick_name`]); bar objects spell the number itself ([`LakePosition::get`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LakePosition(i64);

impl LakePosition {
    /// The `k`-th line made by the message at `offset` of `partition`; refused (naming both) when
    /// the place or the offset does not fit.
    pub fn of(partition: Partition, offset: Offset, k: i64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0..1 << PLACE_BITS).contains(&k),
            "offset {offset} of partition {partition} made more than 2^{PLACE_BITS} lines"
        );
        anyhow::ensure!(
            (0..1 << (63 - PLACE_BITS)).contains(&offset.0),
            "offset {offset} of partition {partition} is past 2^{}, where the lake's positions (offset × 2^{PLACE_BITS}) end",
            63 - PLACE_BITS
        );
        Ok(Self((offset.0 << PLACE_BITS) | k))
    }

    /// The `k`-th bar closed by the message at `offset`.
    pub fn bar(partition: Partition, offset: Offset, k: i64) -> anyhow::Result<Self> {
        Self::of(partition, offset, k)
    }

    /// The `k`-th tick of the message at `offset` (0 for a message of one tick).
    pub fn tick(partition: Partition, offset: Offset, k: u32) -> anyhow::Result<Self> {
        Self::of(partition, offset, i64::from(k))
    }

    /// A position as a bar object's name spells it.
    pub fn from_name(n: i64) -> Self {
        Self(n)
    }

    /// The number a bar object's name carries.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The offset of the message the line came from.
    pub fn message(self) -> Offset {
        Offset(self.0 >> PLACE_BITS)
    }

    /// The line's place among its message's lines.
    pub fn place(self) -> i64 {
        self.0 & ((1 << PLACE_BITS) - 1)
    }

    /// How a tick object's name spells the position: `offset`, or `offset.k` past a message's
    /// first line.
    pub fn tick_name(self) -> String {
        match self.place() {
            0 => self.message().to_string(),
            k => format!("{}.{k}", self.message()),
        }
    }

    /// A tick object's spelling read back (`offset` or `offset.k`).
    pub fn from_tick_name(text: &str) -> Option<Self> {
        let (offset, k) = match text.split_once('.') {
            Some((o, k)) => (o.parse().ok()?, k.parse().ok()?),
            None => (text.parse().ok()?, 0),
        };
        Self::of(Partition(0), Offset(offset), k).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_position_keeps_its_message_offset_above_its_place() {
        let (p, o) = (Partition(0), Offset(5));
        assert_eq!(LakePosition::bar(p, o, 0).unwrap().get(), 5 << PLACE_BITS);
        assert_eq!(LakePosition::bar(p, o, 3).unwrap().message(), o);
        assert_eq!(LakePosition::bar(p, o, 3).unwrap().place(), 3);
        assert!(
            LakePosition::bar(p, o, (1 << PLACE_BITS) - 1).unwrap()
                < LakePosition::bar(p, o.next(), 0).unwrap(),
            "positions keep their messages' order"
        );
    }

    #[test]
    fn a_position_that_would_wrap_is_refused_naming_the_offset() {
        let e = LakePosition::bar(Partition(4), Offset(1 << 43), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 8796093022208 of partition 4"), "{e}");
        let e = LakePosition::bar(Partition(4), Offset(9), 1 << PLACE_BITS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 2^20 lines"), "{e}");
        assert!(LakePosition::bar(Partition(4), Offset(-1), 0).is_err());
    }

    /// A one-tick message's line is named by its offset, as every lake before messages of several
    /// ticks was: an upgraded host reads the old names as the same positions.
    #[test]
    fn tick_names_spell_the_offset_and_the_place_past_the_first() {
        let p = Partition(0);
        let first = LakePosition::tick(p, Offset(77), 0).unwrap();
        assert_eq!(first.tick_name(), "77");
        assert_eq!(first.message(), Offset(77));
        let third = LakePosition::tick(p, Offset(77), 2).unwrap();
        assert_eq!(third.tick_name(), "77.2");
        for position in [first, third] {
            assert_eq!(
                LakePosition::from_tick_name(&position.tick_name()),
                Some(position)
            );
        }
        assert!(first < third && third < LakePosition::tick(p, Offset(78), 0).unwrap());
        for bad in ["", "x", "7.", ".3", "7.3.1", "-1", "7.-1"] {
            assert_eq!(LakePosition::from_tick_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets_keep_the_plain_serde_form_of_checkpoints_and_summaries() {
        let map = offsets([(0, 42), (2, 7)]);
        let text = serde_json::to_string(&map).unwrap();
        assert_eq!(text, r#"{"0":42,"2":7}"#);
        let old: BTreeMap<i32, i64> = serde_json::from_str(&text).unwrap();
        assert_eq!(old, BTreeMap::from([(0, 42), (2, 7)]));
        let back: Offsets = serde_json::from_str(r#"{"0":42,"2":7}"#).unwrap();
        assert_eq!(back, map);
    }
}
