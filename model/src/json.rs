//! The Kite-style JSON the pipeline consumes: one tick per Kafka message.
//!
//! Decoding is strict about types (a price written as the string `"NaN"` is refused, not coerced)
//! and names the offending field, because every refusal becomes a dead-letter reason.

mod fast;
pub mod mapping;
pub mod scan;
pub mod shapes;

pub use shapes::Shape;

use crate::columns::TickColumns;
use crate::time::EpochUnit;
use crate::{DepthLevel, Tick};
use serde_json::{Map, Value};

/// How messages are read (`[input]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Offset from UTC (minutes) of zone-less times in the flat shape.
    pub flat_offset_minutes: i32,
    /// Offset from UTC (minutes) of zone-less times in the Kite shapes.
    pub kite_offset_minutes: i32,
    /// The unit of epoch numbers; `None`: by magnitude ([`EpochUnit::of_magnitude`]).
    pub epoch_unit: Option<EpochUnit>,
    /// The most bytes of a tick's `extra` object (its members no column takes); 0 keeps none.
    pub extra_max_bytes: usize,
    /// A configured mapping, tried before the built-in shapes.
    pub mapping: Option<std::sync::Arc<mapping::Mapping>>,
    /// Whether a tick the mapping does not read is tried as a built-in shape.
    pub builtin_shapes: bool,
}

/// The default cap of a tick's `extra` object.
pub const EXTRA_MAX_BYTES: usize = 2048;

/// The exchange's time (IST, UTC+05:30): what Kite's clients write without a zone.
pub const KITE_OFFSET_MINUTES: i32 = 330;

impl DecodeOptions {
    /// The defaults, with the flat shape's zone-less offset.
    pub fn flat(flat_offset_minutes: i32) -> Self {
        Self {
            flat_offset_minutes,
            kite_offset_minutes: KITE_OFFSET_MINUTES,
            epoch_unit: None,
            extra_max_bytes: EXTRA_MAX_BYTES,
            mapping: None,
            builtin_shapes: true,
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self::flat(0)
    }
}

/// Why a message could not be decoded into a [`Tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `malformed-json`, `not-an-object`, `missing-field`, `wrong-type`, `bad-timestamp` or
    /// `too-deep`.
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn missing(field: &str) -> DecodeError {
    DecodeError {
        code: "missing-field",
        message: format!("field `{field}` is missing"),
    }
}

pub(crate) fn wrong_type(field: &str, expected: &str, got: &Value) -> DecodeError {
    let mut shown = got.to_string();
    if shown.len() > 64 {
        shown.truncate(64);
        shown.push('…');
    }
    DecodeError {
        code: "wrong-type",
        message: format!("field `{field}` must be {expected}, got {shown}"),
    }
}

/// Decodes one message. `naive_offset_minutes`: see [`parse_timestamp`](crate::time::parse_timestamp).
/// The defaults otherwise, and no Kafka record time (a tick without a time of its own is refused).
pub fn decode_tick(bytes: &[u8], naive_offset_minutes: i32) -> Result<Tick, DecodeError> {
    decode_message(bytes, &DecodeOptions::flat(naive_offset_minutes), None)
}

/// Decodes one message of any built-in shape ([`shapes`]); `kafka_timestamp_ms` is its record's
/// time, for a tick that carries none of its own. A side of the book deeper than
/// [`MAX_LEVELS`](crate::columns::MAX_LEVELS) is refused (`too-deep`): the batch columns count a
/// tick's levels in a byte.
pub fn decode_message(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Result<Tick, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError {
        code: "malformed-json",
        message: e.to_string(),
    })?;
    let Value::Object(obj) = &value else {
        return Err(wrong_type("(tick)", "an object", &value));
    };
    shapes::decode_object(obj, options, kafka_timestamp_ms)
}

/// Decodes one message onto the end of a batch's columns: [`scan::scan_into`] for the messages it
/// recognises (nearly all of the sample's shape), [`decode_message`] for the rest, which names the
/// field of any refusal. On a refusal the columns are as they were. One tick a message: see
/// [`decode_ticks_into`] for messages of several.
pub fn decode_into(
    bytes: &[u8],
    naive_offset_minutes: i32,
    columns: &mut TickColumns,
) -> Result<(), DecodeError> {
    if scan::scan_into(bytes, &DecodeOptions::flat(naive_offset_minutes), columns).is_some() {
        return Ok(());
    }
    columns.push(&decode_tick(bytes, naive_offset_minutes)?.view());
    Ok(())
}

/// What one message held: a tick, or several (each decoded or refused on its own).
#[derive(Debug, PartialEq)]
pub enum MessageTicks {
    /// One tick (pushed onto the columns), or why the message is none.
    One(Result<(), DecodeError>),
    /// Several ticks in one message — a JSON array (KiteTicker's `on_ticks` list), or the quote
    /// API's answer (`{"data": {"NSE:INFY": {…}, …}}`, in its keys' order) — each decoded or
    /// refused on its own ([`element_json`] gives one's own JSON, for its dead letter).
    Many(Vec<Result<(), DecodeError>>),
}

/// One tick of a message of several: where it is (`[k]` in a JSON array, `data["NSE:INFY"]` in
/// the quote API's answer), the key it was under in a map (kept in its `extra` as `data_key`).
pub struct Element<'a> {
    pub at: String,
    pub key: Option<&'a str>,
    pub value: &'a Value,
}

/// The ticks of a message of several; `None` for a message of one tick.
pub fn elements(value: &Value) -> Option<Vec<Element<'_>>> {
    match value {
        Value::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(k, value)| Element {
                    at: format!("[{k}]"),
                    key: None,
                    value,
                })
                .collect(),
        ),
        Value::Object(obj) if !obj.contains_key("instrument_token") => match obj.get("data") {
            Some(Value::Object(data)) => Some(
                data.iter()
                    .map(|(key, value)| Element {
                        at: format!("data[{key:?}]"),
                        key: Some(key),
                        value,
                    })
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// A tick's members no column takes (see [`shapes::extra_members`]), as a JSON object's bytes of
/// at most the configured size, and how many members that size cut.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extra {
    pub json: Vec<u8>,
    pub cut: u32,
}

impl Extra {
    /// `members`, in order, while the object stays within `max_bytes`; the rest cut and counted.
    /// `None` when there is nothing to keep and nothing was cut.
    pub fn capped(members: &Map<String, Value>, max_bytes: usize) -> Option<Extra> {
        Self::capped_members(members, max_bytes)
    }

    /// [`Extra::capped`] of members given one by one (the fast path keeps no `Map`).
    pub fn capped_members<K: AsRef<str>, V: std::borrow::Borrow<Value>>(
        members: impl IntoIterator<Item = (K, V)>,
        max_bytes: usize,
    ) -> Option<Extra> {
        let mut members = members.into_iter().peekable();
        members.peek()?;
        let mut json = Vec::with_capacity(max_bytes.min(256));
        json.push(b'{');
        let mut cut = 0;
        for (key, value) in members {
            // Written in place, and taken back when it overflows.
            let mark = json.len();
            if mark > 1 {
                json.push(b',');
            }
            serde_json::to_writer(&mut json, key.as_ref()).expect("writing to a Vec");
            json.push(b':');
            serde_json::to_writer(&mut json, value.borrow()).expect("writing to a Vec");
            // With the closing brace.
            if json.len() + 1 > max_bytes {
                json.truncate(mark);
                cut += 1;
            }
        }
        json.push(b'}');
        Some(Extra {
            json: if json.len() > 2 { json } else { Vec::new() },
            cut,
        })
    }
}

/// Decodes one message of one tick or several onto the end of `columns` (see [`MessageTicks`]);
/// `kafka_timestamp_ms` is the record's time, for ticks that carry none of their own. Each tick
/// pushed onto the columns pushes its [`Extra`] (or `None`) onto `extras`.
pub fn decode_ticks_into(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
    columns: &mut TickColumns,
    extras: &mut Vec<Option<Extra>>,
) -> MessageTicks {
    // A configured mapping goes first: the fast paths read the built-in shapes only.
    let fast = options.mapping.is_none();
    if fast && scan::scan_into(bytes, options, columns).is_some() {
        // The sample's shape, every key a column's.
        extras.push(None);
        return MessageTicks::One(Ok(()));
    }
    // Kite's shapes, well formed (every key a column's, or the quote API's circuit limits).
    if !fast {
        // (the mapping's: below)
    } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        if let Some(ticks) =
            fast::list(bytes, options, kafka_timestamp_ms).filter(|t| !t.is_empty())
        {
            for (tick, kept) in &ticks {
                columns.push(&tick.view());
                extras.push(Extra::capped_members(
                    kept.members(),
                    options.extra_max_bytes,
                ));
            }
            return MessageTicks::Many(ticks.iter().map(|_| Ok(())).collect());
        }
    } else if let Some((tick, kept)) = fast::tick(bytes, options, kafka_timestamp_ms) {
        columns.push(&tick.view());
        extras.push(Extra::capped_members(
            kept.members(),
            options.extra_max_bytes,
        ));
        return MessageTicks::One(Ok(()));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return MessageTicks::One(Err(DecodeError {
                code: "malformed-json",
                message: e.to_string(),
            }));
        }
    };
    let mut one = |at: &str, key: Option<&str>, v: &Value| -> Result<(), DecodeError> {
        let Value::Object(obj) = v else {
            return Err(wrong_type(at, "an object", v));
        };
        let (tick, mut members) = decode_object(obj, options, kafka_timestamp_ms).map_err(|e| {
            if at.is_empty() {
                e
            } else {
                DecodeError {
                    message: format!("{at}: {}", e.message),
                    ..e
                }
            }
        })?;
        if let Some(key) = key {
            members.insert("data_key".into(), key.into());
        }
        columns.push(&tick.view());
        extras.push(Extra::capped(&members, options.extra_max_bytes));
        Ok(())
    };
    let Some(elements) = elements(&value) else {
        return MessageTicks::One(one("", None, &value));
    };
    if elements.is_empty() {
        return MessageTicks::One(Err(DecodeError {
            code: "missing-field",
            message: "the message holds no tick (an empty list)".into(),
        }));
    }
    MessageTicks::Many(
        elements
            .into_iter()
            .map(|e| one(&e.at, e.key, e.value))
            .collect(),
    )
}

/// One tick object, by the configured mapping when it reads it, else (unless
/// `input.builtin_shapes` is off) as a built-in shape; with its members no column takes.
pub fn decode_object(
    obj: &Map<String, Value>,
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Result<(Tick, Map<String, Value>), DecodeError> {
    if let Some(mapping) = &options.mapping {
        if mapping.applies(obj) {
            return mapping.decode(obj, options, kafka_timestamp_ms);
        }
        if !options.builtin_shapes {
            return Err(mapping.not_applying(obj));
        }
    }
    let tick = shapes::decode_object(obj, options, kafka_timestamp_ms)?;
    Ok((tick, shapes::extra_members(obj)))
}

/// The JSON of the `k`-th tick of a message of several (see [`elements`]): what its dead letter
/// carries. `None` when the message holds no such tick.
pub fn element_json(bytes: &[u8], k: usize) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let elements = elements(&value)?;
    Some(elements.get(k)?.value.to_string().into_bytes())
}

fn depth_json(levels: &[DepthLevel]) -> Value {
    Value::Array(
        levels
            .iter()
            .map(|l| serde_json::json!({"price": l.price, "orders": l.orders, "quantity": l.quantity}))
            .collect(),
    )
}

/// The tick's own fields as a JSON object in the input format (the timestamp in the sample's form,
/// UTC). `decode_tick(encode_tick(t)) == t`.
pub fn encode_tick(t: &Tick) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "timestamp".into(),
        crate::time::format_sample_micros(t.timestamp_us).into(),
    );
    tick_fields(t, &mut m);
    m
}

/// Every field but the timestamp, for callers that write their own timestamp form; an absent
/// field is left out.
pub fn tick_fields(t: &Tick, m: &mut Map<String, Value>) {
    fn put<T: Into<Value>>(m: &mut Map<String, Value>, name: &str, value: Option<T>) {
        if let Some(v) = value {
            m.insert(name.into(), v.into());
        }
    }
    m.insert("instrument_token".into(), t.instrument_token.into());
    m.insert("last_price".into(), t.last_price.into());
    put(m, "volume", t.volume);
    put(m, "buy_quantity", t.buy_quantity);
    put(m, "sell_quantity", t.sell_quantity);
    put(m, "last_quantity", t.last_quantity);
    put(m, "change", t.change);
    put(m, "net_change", t.net_change);
    put(m, "average_price", t.average_price);
    put(m, "open", t.open);
    put(m, "high", t.high);
    put(m, "low", t.low);
    put(m, "close", t.close);
    put(m, "oi", t.oi);
    put(m, "oi_day_high", t.oi_day_high);
    put(m, "oi_day_low", t.oi_day_low);
    put(m, "mode", t.mode.map(|m| m.as_str()));
    put(m, "tradable", t.tradable);
    if t.has_depth {
        m.insert(
            "depth".into(),
            serde_json::json!({"buy": depth_json(&t.depth_buy), "sell": depth_json(&t.depth_sell)}),
        );
    }
}

/// Whether an input file is a JSON array (the sample's form) rather than NDJSON.
pub fn is_json_array(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Splits an input file into one JSON text per tick: a JSON array (the sample's form) or
/// newline-delimited JSON. Each element is re-serialized compactly; NDJSON lines are kept as they
/// are (byte for byte), so a malformed line still reaches the pipeline and its dead-letter topic.
pub fn split_input(text: &str) -> Result<Vec<Vec<u8>>, String> {
    Ok(split_input_bytes(text.as_bytes())?
        .into_iter()
        .map(|(_, item)| item)
        .collect())
}

/// [`split_input`] over bytes, with each item's 1-based position in the file: its line (NDJSON)
/// or its element (array). An NDJSON line need not be UTF-8: it is kept for the dead-letter
/// topic like any other line that does not decode.
pub fn split_input_bytes(bytes: &[u8]) -> Result<Vec<(usize, Vec<u8>)>, String> {
    if is_json_array(bytes) {
        let items: Vec<Value> = serde_json::from_slice(bytes)
            .map_err(|e| format!("input looks like a JSON array but is not valid JSON: {e}"))?;
        return Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v.to_string().into_bytes()))
            .collect());
    }
    Ok(bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| (n, line.to_vec()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keeps_the_members_that_fit_and_counts_the_rest() {
        let members: Map<String, Value> = serde_json::from_str(
            r#"{"a": 1, "b": "two", "c": [3, 3, 3, 3, 3, 3, 3, 3, 3], "d": 4}"#,
        )
        .unwrap();
        let all = Extra::capped(&members, 1024).unwrap();
        assert_eq!(
            all.json,
            br#"{"a":1,"b":"two","c":[3,3,3,3,3,3,3,3,3],"d":4}"#
        );
        assert_eq!(all.cut, 0);
        // Room for `a`, `b` and `d`: `c` is left out and counted; the object stays JSON.
        let capped = Extra::capped(&members, 24).unwrap();
        assert_eq!(capped.json, br#"{"a":1,"b":"two","d":4}"#);
        assert_eq!(capped.cut, 1);
        assert!(capped.json.len() <= 24);
        // Nothing kept: every member counted, no object written.
        let none = Extra::capped(&members, 0).unwrap();
        assert_eq!((none.json.len(), none.cut), (0, 4));
        assert_eq!(Extra::capped(&Map::new(), 0), None);
    }

    #[test]
    fn fields_no_column_takes_are_kept_as_extra() {
        let mut columns = TickColumns::default();
        let mut extras = Vec::new();
        let message = br#"{"instrument_token": 1, "last_price": 2.5, "timestamp": 1621936800,
            "symbol": "INFY", "ohlc": {"open": 1.0, "high": 3.0, "low": 1.0, "close": 2.0}}"#;
        let one = decode_ticks_into(
            message,
            &DecodeOptions::default(),
            None,
            &mut columns,
            &mut extras,
        );
        assert_eq!(one, MessageTicks::One(Ok(())));
        assert_eq!(extras[0].as_ref().unwrap().json, br#"{"symbol":"INFY"}"#);
        // The sample's shape (the scanner's) has none.
        let sample = GOOD.as_bytes();
        decode_ticks_into(
            sample,
            &DecodeOptions::default(),
            None,
            &mut columns,
            &mut extras,
        );
        assert_eq!(extras.len(), 2);
        assert_eq!(extras[1], None);
    }

    const GOOD: &str = r#"{"timestamp": "2017-06-20 07:35:05.284824", "instrument_token": 136519172,
        "last_price": 253.95, "volume": 53611, "sell_quantity": 63121, "last_quantity": 10,
        "change": 0.0196, "average_price": 253.84, "open": 254.0, "high": 254.95, "low": 253.1,
        "close": 253.9, "depth": {"buy": [{"price": 253.7, "orders": 3, "quantity": 1068}],
        "sell": [{"price": 253.95, "orders": 3, "quantity": 695}]}}"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        if value == "<remove>" {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = serde_json::from_str(value).unwrap();
        }
        v.to_string()
    }

    #[test]
    fn decodes_the_sample_form() {
        let t = decode_tick(GOOD.as_bytes(), 0).unwrap();
        assert_eq!(t.instrument_token, 136_519_172);
        assert_eq!(t.timestamp_us, 1_497_944_105_284_824);
        assert_eq!(
            t.depth_buy[0],
            DepthLevel {
                price: 253.7,
                orders: 3,
                quantity: 1068
            }
        );
        assert_eq!(t.depth_sell.len(), 1);
    }

    #[test]
    fn encode_round_trips() {
        let t = decode_tick(GOOD.as_bytes(), 0).unwrap();
        let text = Value::Object(encode_tick(&t)).to_string();
        assert_eq!(decode_tick(text.as_bytes(), 0).unwrap(), t);
    }

    #[test]
    fn accepts_rfc3339_and_epoch_millis() {
        let rfc = with("timestamp", r#""2017-06-20T07:35:05.284824Z""#);
        assert_eq!(
            decode_tick(rfc.as_bytes(), 0).unwrap().timestamp_us,
            1_497_944_105_284_824
        );
        let ms = with("timestamp", "1497944105284");
        assert_eq!(
            decode_tick(ms.as_bytes(), 0).unwrap().timestamp_us,
            1_497_944_105_284_000
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (with("last_price", r#""NaN""#), "wrong-type", "last_price"),
            (
                with("last_price", "<remove>"),
                "missing-field",
                "last_price",
            ),
            (with("timestamp", "<remove>"), "missing-field", "timestamp"),
            (with("volume", "1.5"), "wrong-type", "volume"),
            (
                with("instrument_token", "-3"),
                "wrong-type",
                "instrument_token",
            ),
            (
                with("timestamp", r#""yesterday""#),
                "bad-timestamp",
                "yesterday",
            ),
            (
                with(
                    "depth",
                    r#"{"buy": [{"price": 1.0, "orders": 1}], "sell": []}"#,
                ),
                "missing-field",
                "depth.buy[0]",
            ),
            (
                with("depth", r#"{"buy": []}"#),
                "missing-field",
                "depth.sell",
            ),
            ("{not json".to_string(), "malformed-json", ""),
            ("[1,2]".to_string(), "wrong-type", "(tick)"),
        ];
        for (input, code, needle) in cases {
            let e = decode_tick(input.as_bytes(), 0).unwrap_err();
            assert_eq!(e.code, code, "{input}: {e}");
            assert!(e.message.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn a_book_deeper_than_the_columns_count_is_refused() {
        let level = r#"{"price": 1.0, "orders": 1, "quantity": 1}"#;
        let side = |n: usize| format!("[{}]", vec![level; n].join(","));
        let deepest = with("depth", &format!(r#"{{"buy": {}, "sell": []}}"#, side(255)));
        assert_eq!(
            decode_tick(deepest.as_bytes(), 0).unwrap().depth_buy.len(),
            255
        );
        for depth in [
            format!(r#"{{"buy": {}, "sell": []}}"#, side(256)),
            format!(r#"{{"buy": [], "sell": {}}}"#, side(10_000)),
        ] {
            let e = decode_tick(with("depth", &depth).as_bytes(), 0).unwrap_err();
            assert_eq!(e.code, "too-deep", "{e}");
            assert!(e.message.contains("at most 255"), "{e}");
        }
    }

    #[test]
    fn integral_floats_are_integers() {
        let t = decode_tick(with("volume", "53611.0").as_bytes(), 0).unwrap();
        assert_eq!(t.volume, Some(53611));
    }

    #[test]
    fn splits_arrays_and_ndjson() {
        assert_eq!(
            split_input("[{\"a\": 1}, {\"b\": 2}]").unwrap(),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert_eq!(
            split_input("{\"a\": 1}\n\n{oops\n").unwrap(),
            vec![b"{\"a\": 1}".to_vec(), b"{oops".to_vec()]
        );
        assert!(split_input("[{\"a\": 1},").is_err());
        // Lines keep their numbers and their bytes, UTF-8 or not.
        assert_eq!(
            split_input_bytes(b"{\"a\": 1}\r\n\n\xff\xfe\n").unwrap(),
            vec![(1, b"{\"a\": 1}".to_vec()), (3, b"\xff\xfe".to_vec())]
        );
    }
}
