//! The lake read back as the alert stage read it: tick and bar documents, and a partition's
//! tick lines in position order from segments that may overlap ([`Sweep`]).

use super::Found;
use crate::position::{LakePosition, Offset, Partition};
use crate::sink::layout;
use crate::sink::store::LakeStore;
use anyhow::Context;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A tick as the alert stage read it, from its lake document.
#[derive(Debug, Clone)]
pub(super) struct TickRow {
    pub(super) position: LakePosition,
    pub(super) offset: i64,
    /// Its place in a message of several.
    pub(super) tick: Option<u32>,
    pub(super) timestamp_us: i64,
    pub(super) token: u64,
    pub(super) last_price: f64,
    pub(super) change: f64,
    pub(super) spread_bps: f64,
}

#[derive(Deserialize)]
struct TickLine<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    instrument_token: u64,
    last_price: f64,
    change: Option<f64>,
    spread_bps: Option<f64>,
    source: TickSource,
}

#[derive(Deserialize)]
struct TickSource {
    offset: i64,
    tick: Option<u32>,
}

impl TickRow {
    pub(super) fn parse(line: &[u8], partition: i32) -> Result<Self, String> {
        let doc: TickLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let place = LakePosition::tick(
            Partition(partition),
            Offset(doc.source.offset),
            doc.source.tick.unwrap_or(0),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self {
            position: place,
            offset: doc.source.offset,
            tick: doc.source.tick,
            timestamp_us: stockpipe_model::time::parse_timestamp(&doc.timestamp, 0)
                .map_err(|e| format!("timestamp: {e}"))?,
            token: doc.instrument_token,
            last_price: doc.last_price,
            change: doc.change.unwrap_or(f64::NAN),
            spread_bps: doc.spread_bps.unwrap_or(f64::NAN),
        })
    }
}

/// A closed bar as the alert stage read it, from its lake document.
#[derive(Debug, Clone)]
pub(super) struct BarRow {
    /// The position of the tick that closed it.
    pub(super) closed_by: LakePosition,
    pub(super) end_us: i64,
    pub(super) token: u64,
    pub(super) close: f64,
    pub(super) traded_quantity: i64,
    pub(super) log_return: f64,
}

#[derive(Deserialize)]
struct BarLine<'a> {
    instrument_token: u64,
    #[serde(borrow)]
    bar_end: Cow<'a, str>,
    close: Option<f64>,
    traded_quantity: i64,
    log_return: Option<f64>,
    source: BarSource,
}

#[derive(Deserialize)]
struct BarSource {
    closed_by_offset: i64,
    closed_by_tick: Option<u32>,
}

impl BarRow {
    pub(super) fn parse(line: &[u8], partition: i32) -> Result<Self, String> {
        let doc: BarLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        Ok(Self {
            closed_by: LakePosition::tick(
                Partition(partition),
                Offset(doc.source.closed_by_offset),
                doc.source.closed_by_tick.unwrap_or(0),
            )
            .map_err(|e| e.to_string())?,
            end_us: stockpipe_model::time::parse_timestamp(&doc.bar_end, 0)
                .map_err(|e| format!("bar_end: {e}"))?,
            token: doc.instrument_token,
            close: doc.close.unwrap_or(f64::NAN),
            traded_quantity: doc.traded_quantity,
            log_return: doc.log_return.unwrap_or(f64::NAN),
        })
    }
}

/// A partition's tick lines in position order, from segments whose ranges may overlap. Segments
/// are added in the order of their first position; [`Sweep::release`] then gives every line before
/// the next segment's first position — no later segment can hold one — once, in order.
#[derive(Default)]
pub(super) struct Sweep {
    pending: Vec<TickRow>,
    /// The last position released: a line at or before it is a duplicate.
    released: Option<LakePosition>,
    pub(super) duplicates: u64,
}

impl Sweep {
    pub(super) fn add(&mut self, rows: impl IntoIterator<Item = TickRow>) {
        for row in rows {
            if self.released.is_some_and(|r| row.position <= r) {
                self.duplicates += 1;
            } else {
                self.pending.push(row);
            }
        }
    }

    /// The lines before `next` (the next segment's first position; `None` after the last).
    pub(super) fn release(&mut self, next: Option<LakePosition>) -> Vec<TickRow> {
        self.pending.sort_by_key(|r| r.position);
        let before = self.pending.len();
        self.pending.dedup_by_key(|r| r.position);
        self.duplicates += (before - self.pending.len()) as u64;
        let cut = next.map_or(self.pending.len(), |n| {
            self.pending.partition_point(|r| r.position < n)
        });
        let rest = self.pending.split_off(cut);
        let out = std::mem::replace(&mut self.pending, rest);
        if let Some(last) = out.last() {
            self.released = Some(last.position);
        }
        out
    }
}

/// The segments under `prefix` by partition, each partition's in the order of its first position
/// (`position` reads a name's spelling); names that are not ours are reported, not read.
pub(super) async fn segments(
    store: &LakeStore,
    prefix: &str,
    position: fn(&str) -> Option<LakePosition>,
    found: &mut Found,
    limit: usize,
) -> anyhow::Result<BTreeMap<i32, Vec<(LakePosition, String)>>> {
    let mut by_partition: BTreeMap<i32, Vec<(LakePosition, String)>> = BTreeMap::new();
    for name in store.list(&format!("{prefix}/")).await? {
        if !layout::is_segment(&name) {
            continue;
        }
        match layout::parse_segment(&name).and_then(|(p, first, _)| Some((p, position(first)?))) {
            Some((partition, first)) => by_partition
                .entry(partition)
                .or_default()
                .push((first, name)),
            None => found.undecodable(limit, || {
                format!("{name}: not a segment name (<partition>-<first>-<last>.ndjson)")
            }),
        }
    }
    for list in by_partition.values_mut() {
        list.sort();
    }
    Ok(by_partition)
}

/// The lines of a lake object, each parsed by `parse`; undecodable lines are reported.
pub(super) async fn read_lines<T>(
    store: &LakeStore,
    name: &str,
    found: &mut Found,
    limit: usize,
    mut parse: impl FnMut(&[u8]) -> Result<T, String>,
) -> anyhow::Result<Vec<T>> {
    let bytes = crate::sink::lake::object_lines(name, store.get(name).await?)
        .with_context(|| format!("gunzipping {name}"))?;
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse(line) {
            Ok(row) => rows.push(row),
            Err(e) => found.undecodable(limit, || format!("{name} line {}: {e}", i + 1)),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: i64, tick: Option<u32>) -> TickRow {
        TickRow {
            position: LakePosition::tick(Partition(0), Offset(offset), tick.unwrap_or(0)).unwrap(),
            offset,
            tick,
            timestamp_us: 0,
            token: 1,
            last_price: 1.0,
            change: f64::NAN,
            spread_bps: f64::NAN,
        }
    }

    fn offsets(rows: &[TickRow]) -> Vec<(i64, Option<u32>)> {
        rows.iter().map(|r| (r.offset, r.tick)).collect()
    }

    #[test]
    fn overlapping_segments_are_released_in_position_order_each_line_once() {
        // Three segments in the order of their first position; one message's ticks (7) landed
        // in two of them, and a line (5) was written twice.
        let mut sweep = Sweep::default();
        sweep.add([row(0, None), row(5, None), row(7, Some(0)), row(10, None)]);
        assert_eq!(
            offsets(&sweep.release(Some(row(3, None).position))),
            [(0, None)]
        );
        sweep.add([row(3, None), row(7, Some(1)), row(5, None), row(12, None)]);
        assert_eq!(
            offsets(&sweep.release(Some(row(11, None).position))),
            [(3, None), (5, None), (7, Some(0)), (7, Some(1)), (10, None)]
        );
        // A line already released comes again: dropped, not replayed out of order.
        sweep.add([row(11, None), row(3, None), row(13, None)]);
        assert_eq!(
            offsets(&sweep.release(None)),
            [(11, None), (12, None), (13, None)]
        );
        assert_eq!(sweep.duplicates, 2);
    }

    #[test]
    fn documents_are_read_as_the_stage_read_them() {
        let tick = br#"{"event_id":"x","timestamp":"2026-12-01T09:15:00.000001Z","instrument_token":7,"last_price":101.5,"change":-2.5,"mid_price":101.6,"spread_bps":null,"source":{"topic":"t","partition":2,"offset":40,"tick":3}}"#;
        let r = TickRow::parse(tick, 2).unwrap();
        assert_eq!((r.offset, r.tick, r.token), (40, Some(3), 7));
        assert_eq!(
            r.position,
            LakePosition::tick(Partition(2), Offset(40), 3).unwrap()
        );
        assert_eq!((r.last_price, r.change), (101.5, -2.5));
        assert!(
            r.spread_bps.is_nan(),
            "no book: NaN, as the pipeline passes it"
        );
        // No change field: NaN.
        let bare = br#"{"timestamp":"2026-12-01T09:15:00Z","instrument_token":7,"last_price":1.0,"source":{"partition":2,"offset":41}}"#;
        assert!(TickRow::parse(bare, 2).unwrap().change.is_nan());
        assert!(TickRow::parse(b"{\"timestamp\":\"yesterday\"}", 2).is_err());
        let bar = br#"{"bar_id":"7-0","instrument_token":7,"bar_start":"2026-12-01T09:15:00Z","bar_end":"2026-12-01T09:16:00Z","close":101.0,"traded_quantity":30,"log_return":null,"source":{"topic":"t","partition":2,"closed_by_offset":40,"closed_by_tick":3}}"#;
        let b = BarRow::parse(bar, 2).unwrap();
        assert_eq!(b.closed_by, r.position, "closed by the tick above");
        assert!(b.log_return.is_nan());
        assert_eq!(b.traded_quantity, 30);
    }
}
