//! A batch's messages decoded straight into its columns ([`stockpipe_model::json`]: the tick
//! scanner, the decoder of every built-in shape for what it does not recognise), each message
//! keeping the place of its tick or the reason it did not decode; and `[input]`, the settings of
//! how messages are read.

use crate::config::error::{ConfigError, invalid};
use crate::source::group::Consumed;
use serde::Deserialize;
use std::collections::BTreeMap;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::json::mapping::{Mapping, MappingConfig, parse_tokens};
use stockpipe_model::json::{DecodeError, DecodeOptions, Extra, MessageTicks, decode_ticks_into};
use stockpipe_model::time::EpochUnit;

/// `[input]`: how the input's messages are read.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputSection {
    /// Offset from UTC (minutes) of zone-less times in Kite's shapes (the ticker's
    /// `exchange_timestamp`, the quote API's `timestamp`): the exchange's time, IST, by default.
    /// The sample's shape keeps `validate.naive_timestamp_offset_minutes`.
    pub kite_utc_offset_minutes: i32,
    /// The unit of timestamps written as epoch numbers: `s`, `ms`, `us`, `ns`, or `auto` (by
    /// magnitude: below 10^11 seconds, below 10^14 milliseconds, below 10^17 microseconds, else
    /// nanoseconds — each unit covering 1973 to 5138).
    pub timestamp_unit: String,
    /// The most bytes of a tick's `extra` object: the members of a tick no column takes (the
    /// quote API's circuit limits, a broker's symbol), kept in the document and the lake line
    /// rather than dropped. Members past it are left out and counted in
    /// `stockpipe_extra_truncated_total`; 0 keeps none (drops them all, counted).
    pub extra_max_bytes: usize,
    /// Another JSON feed, by mapping: column → path into the tick (`ltp`, `quote.bid[0].px`,
    /// `["52_week_high"]`). Tried before the built-in shapes; empty: none.
    pub fields: BTreeMap<String, String>,
    /// Column → factor its value is multiplied by (0.01: paise to rupees): the prices, `change`,
    /// `net_change`, and `depth_price` for the book's prices.
    pub scale: BTreeMap<String, f64>,
    /// A depth level's members in the mapped feed: `price`, `quantity`, `orders` → its names.
    pub depth_level: BTreeMap<String, String>,
    /// A CSV file of `symbol,token` lines (relative to the working directory), for a mapped feed
    /// whose instrument is a name ("" = none). Read once at start.
    pub tokens: String,
    /// Whether a tick the mapping does not read (its instrument or last price not there) is
    /// tried as one of the built-in shapes.
    pub builtin_shapes: bool,
}

impl Default for InputSection {
    fn default() -> Self {
        Self {
            kite_utc_offset_minutes: stockpipe_model::json::KITE_OFFSET_MINUTES,
            timestamp_unit: "auto".into(),
            extra_max_bytes: stockpipe_model::json::EXTRA_MAX_BYTES,
            fields: BTreeMap::new(),
            scale: BTreeMap::new(),
            depth_level: BTreeMap::new(),
            tokens: String::new(),
            builtin_shapes: true,
        }
    }
}

impl InputSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kite_utc_offset_minutes.abs() >= 24 * 60 {
            return invalid("input.kite_utc_offset_minutes", "must be within ±1439");
        }
        if self.timestamp_unit != "auto" && EpochUnit::parse(&self.timestamp_unit).is_none() {
            return invalid("input.timestamp_unit", "must be auto, s, ms, us or ns");
        }
        if self.extra_max_bytes > 1 << 20 {
            return invalid("input.extra_max_bytes", "must be at most 1048576 (1 MiB)");
        }
        if !self.fields.is_empty() || !self.builtin_shapes {
            self.mapping()?;
        }
        Ok(())
    }

    /// The mapping, checked, with its token table read; `None` without `input.fields`.
    fn mapping(&self) -> Result<Option<Mapping>, ConfigError> {
        if self.fields.is_empty() {
            if !self.builtin_shapes {
                return invalid(
                    "input.builtin_shapes",
                    "false leaves nothing to read the input with: set input.fields too",
                );
            }
            if !self.scale.is_empty() || !self.depth_level.is_empty() || !self.tokens.is_empty() {
                return invalid(
                    "input.fields",
                    "a scale, depth_level or tokens need a mapping",
                );
            }
            return Ok(None);
        }
        let tokens = match self.tokens.as_str() {
            "" => Default::default(),
            path => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_tokens(&text))
                .map_err(|e| ConfigError::Invalid {
                    key: "input.tokens".into(),
                    message: format!("{path}: {e}"),
                })?,
        };
        let config = MappingConfig {
            fields: self.fields.clone(),
            scale: self.scale.clone(),
            depth_level: self.depth_level.clone(),
            tokens,
        };
        Mapping::new(&config)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: e.key.into(),
                message: e.message,
            })
    }

    /// How messages are decoded, with the flat shape's zone-less offset; reads the token table.
    pub fn decode_options(&self, flat_offset_minutes: i32) -> Result<DecodeOptions, ConfigError> {
        Ok(DecodeOptions {
            flat_offset_minutes,
            kite_offset_minutes: self.kite_utc_offset_minutes,
            epoch_unit: EpochUnit::parse(&self.timestamp_unit),
            extra_max_bytes: self.extra_max_bytes,
            mapping: self.mapping()?.map(std::sync::Arc::new),
            builtin_shapes: self.builtin_shapes,
        })
    }
}

/// A batch's messages decoded straight into its columns: the ticks, in order, and a slot for
/// each tick of each message (one for a message that did not decode), in the messages' order.
pub(crate) struct Decoded {
    pub(crate) ticks: TickColumns,
    /// Per tick (as `ticks`), its members no column takes.
    pub(crate) extras: Vec<Option<Extra>>,
    pub(crate) slots: Vec<Slot>,
}

/// One tick of a batch.
pub(crate) struct Slot {
    /// The message it came from (its place in the batch).
    pub(crate) message: usize,
    /// Its place in a message of several ticks (`None`: the message is one tick).
    pub(crate) tick: Option<u32>,
    /// Its index in the columns, or why it did not decode.
    pub(crate) result: Result<usize, DecodeError>,
}

pub(crate) fn decode_batch(batch: &[Consumed], options: &DecodeOptions) -> Decoded {
    // Five levels a side, the sample's depth: a deeper book only grows the level columns.
    let mut ticks = TickColumns::with_capacity(batch.len(), 5);
    let mut slots = Vec::with_capacity(batch.len());
    let mut extras = Vec::with_capacity(batch.len());
    for (m, message) in batch.iter().enumerate() {
        let before = ticks.len();
        let timestamp = message.timestamp_ms;
        match decode_ticks_into(
            &message.payload,
            options,
            timestamp,
            &mut ticks,
            &mut extras,
        ) {
            MessageTicks::One(result) => slots.push(Slot {
                message: m,
                tick: None,
                result: result.map(|()| before),
            }),
            MessageTicks::Many(each) => {
                let mut next = before;
                for (k, result) in each.into_iter().enumerate() {
                    let result = result.map(|()| {
                        next += 1;
                        next - 1
                    });
                    slots.push(Slot {
                        message: m,
                        tick: Some(u32::try_from(k).unwrap_or(u32::MAX)),
                        result,
                    });
                }
            }
        }
    }
    debug_assert_eq!(extras.len(), ticks.len());
    Decoded {
        ticks,
        extras,
        slots,
    }
}
