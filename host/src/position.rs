//! Where a message is, in the words the run loop uses: a Kafka [`Partition`], an [`Offset`] in
//! it, [`Offsets`] per partition, and a line's [`LakePosition`] in the lake.
//!
//! Invariant: an [`Offset`] is always a Kafka offset, and every [`Offsets`] map holds the *next*
//! offset of each partition (one past the last message consumed, committed, or in the log: Kafka's
//! own convention for committed offsets and log ends). A lake position is not an offset: a bar's
//! line sits at `offset × 2^20 + k`, and only [`LakePosition::message`] turns it back. The serde
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

/// Bits of a bar's lake position below its message's offset.
pub const PLACE_BITS: u32 = 20;

/// Where a line sits among its partition's lines in the lake; object names carry the first and
/// last. A tick's line sits at its message's offset; the `k`-th bar a message closed at
/// `offset × 2^20 + k` ([`LakePosition::bar`]): one message may close bars of several hours, and
/// with a position of its own each bar is stored exactly once even when its message's bars land in
/// two objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LakePosition(i64);

impl LakePosition {
    /// A tick's line: at its message's offset.
    pub fn tick(offset: Offset) -> Self {
        Self(offset.0)
    }

    /// The `k`-th bar closed by the message at `offset` of `partition`; refused (naming both) when
    /// the place or the offset does not fit.
    pub fn bar(partition: Partition, offset: Offset, k: i64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            k < 1 << PLACE_BITS,
            "offset {offset} of partition {partition} closed more than 2^{PLACE_BITS} bars"
        );
        anyhow::ensure!(
            offset.0 < 1 << (63 - PLACE_BITS),
            "offset {offset} of partition {partition} is past 2^{}, where the bars' lake positions (offset × 2^{PLACE_BITS}) end",
            63 - PLACE_BITS
        );
        Ok(Self((offset.0 << PLACE_BITS) | k))
    }

    /// A position as an object's name spells it.
    pub fn from_name(n: i64) -> Self {
        Self(n)
    }

    /// The number object names carry.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The offset of the message a bar's line came from.
    pub fn bar_message(self) -> Offset {
        Offset(self.0 >> PLACE_BITS)
    }

    /// The offset of the message a tick's line came from.
    pub fn tick_message(self) -> Offset {
        Offset(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_position_keeps_its_message_offset_above_its_place() {
        let (p, o) = (Partition(0), Offset(5));
        assert_eq!(LakePosition::bar(p, o, 0).unwrap().get(), 5 << PLACE_BITS);
        assert_eq!(LakePosition::bar(p, o, 3).unwrap().bar_message(), o);
        assert_eq!(
            LakePosition::bar(p, o, 3).unwrap().get() & ((1 << PLACE_BITS) - 1),
            3
        );
        assert!(
            LakePosition::bar(p, o, (1 << PLACE_BITS) - 1).unwrap()
                < LakePosition::bar(p, o.next(), 0).unwrap(),
            "positions keep their messages' order"
        );
    }

    #[test]
    fn a_bar_position_that_would_wrap_is_refused_naming_the_offset() {
        let e = LakePosition::bar(Partition(4), Offset(1 << 43), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offset 8796093022208 of partition 4"), "{e}");
        let e = LakePosition::bar(Partition(4), Offset(9), 1 << PLACE_BITS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 2^20 bars"), "{e}");
    }

    #[test]
    fn a_tick_line_sits_at_its_offset() {
        assert_eq!(LakePosition::tick(Offset(77)).get(), 77);
        assert_eq!(LakePosition::tick(Offset(77)).tick_message(), Offset(77));
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
