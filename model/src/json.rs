//! The Kite-style JSON the pipeline consumes: one tick per Kafka message.
//!
//! Decoding is strict about types (a price written as the string `"NaN"` is refused, not coerced)
//! and names the offending field, because every refusal becomes a dead-letter reason.

pub mod scan;

use crate::columns::TickColumns;
use crate::time::{from_epoch_millis, parse_timestamp};
use crate::{DepthLevel, Tick};
use serde_json::{Map, Value};

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

fn missing(field: &str) -> DecodeError {
    DecodeError {
        code: "missing-field",
        message: format!("field `{field}` is missing"),
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> DecodeError {
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

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value, DecodeError> {
    obj.get(name).ok_or_else(|| missing(name))
}

fn float(obj: &Map<String, Value>, name: &str) -> Result<f64, DecodeError> {
    let v = field(obj, name)?;
    v.as_f64().ok_or_else(|| wrong_type(name, "a number", v))
}

/// An integer; an integral float such as `53611.0` is accepted, `53611.5` is not.
fn integer(obj: &Map<String, Value>, name: &str) -> Result<i64, DecodeError> {
    let v = field(obj, name)?;
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(wrong_type(name, "an integer", v)),
    }
}

fn depth_side(depth: &Map<String, Value>, side: &str) -> Result<Vec<DepthLevel>, DecodeError> {
    let path = format!("depth.{side}");
    let levels = match depth.get(side) {
        None => return Err(missing(&path)),
        Some(Value::Array(levels)) => levels,
        Some(other) => return Err(wrong_type(&path, "an array", other)),
    };
    levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let at = format!("{path}[{i}]");
            let obj = level
                .as_object()
                .ok_or_else(|| wrong_type(&at, "an object", level))?;
            let named = |e: DecodeError| DecodeError {
                message: format!("{at}: {}", e.message),
                ..e
            };
            Ok(DepthLevel {
                price: float(obj, "price").map_err(named)?,
                orders: integer(obj, "orders").map_err(named)?,
                quantity: integer(obj, "quantity").map_err(named)?,
            })
        })
        .collect()
}

/// The typed fast path: the well-formed message (nearly every one) is decoded straight into
/// structs, without building a `Value` tree. Anything it refuses is decoded again by
/// [`decode_tick_slow`], which accepts the same inputs plus a few lenient forms and names the field
/// of any refusal.
mod fast {
    use serde::Deserialize;

    pub enum Timestamp<'a> {
        Text(&'a str),
        Millis(i64),
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Timestamp<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Timestamp<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a timestamp string or epoch milliseconds")
                }
                fn visit_borrowed_str<E: serde::de::Error>(
                    self,
                    v: &'de str,
                ) -> Result<Self::Value, E> {
                    Ok(Timestamp::Text(v))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                    Ok(Timestamp::Millis(v))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                    i64::try_from(v).map(Timestamp::Millis).map_err(E::custom)
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    #[derive(Deserialize)]
    pub struct Level {
        pub price: f64,
        pub orders: i64,
        pub quantity: i64,
    }

    #[derive(Deserialize)]
    pub struct Depth {
        pub buy: Vec<Level>,
        pub sell: Vec<Level>,
    }

    #[derive(Deserialize)]
    pub struct Tick<'a> {
        #[serde(borrow)]
        pub timestamp: Timestamp<'a>,
        pub instrument_token: u64,
        pub last_price: f64,
        pub volume: i64,
        pub sell_quantity: i64,
        pub last_quantity: i64,
        pub change: f64,
        pub average_price: f64,
        pub open: f64,
        pub high: f64,
        pub low: f64,
        pub close: f64,
        pub depth: Depth,
    }
}

/// Decodes one message. `naive_offset_minutes`: see [`parse_timestamp`]. A side of the book
/// deeper than [`MAX_LEVELS`](crate::columns::MAX_LEVELS) is refused (`too-deep`): the batch
/// columns count a tick's levels in a byte.
pub fn decode_tick(bytes: &[u8], naive_offset_minutes: i32) -> Result<Tick, DecodeError> {
    let tick = decode_unbounded(bytes, naive_offset_minutes)?;
    for (side, levels) in [("buy", &tick.depth_buy), ("sell", &tick.depth_sell)] {
        if levels.len() > crate::columns::MAX_LEVELS {
            return Err(DecodeError {
                code: "too-deep",
                message: format!(
                    "depth.{side} has {} levels; at most {} are accepted",
                    levels.len(),
                    crate::columns::MAX_LEVELS
                ),
            });
        }
    }
    Ok(tick)
}

/// Decodes one message onto the end of a batch's columns: [`scan::scan_into`] for the messages it
/// recognises (nearly all), [`decode_tick`] for the rest, which names the field of any refusal.
/// On a refusal the columns are as they were.
pub fn decode_into(
    bytes: &[u8],
    naive_offset_minutes: i32,
    columns: &mut TickColumns,
) -> Result<(), DecodeError> {
    if scan::scan_into(bytes, naive_offset_minutes, columns).is_some() {
        return Ok(());
    }
    columns.push(&decode_tick(bytes, naive_offset_minutes)?.view());
    Ok(())
}

fn decode_unbounded(bytes: &[u8], naive_offset_minutes: i32) -> Result<Tick, DecodeError> {
    if let Ok(t) = serde_json::from_slice::<fast::Tick<'_>>(bytes) {
        let timestamp_us = match t.timestamp {
            fast::Timestamp::Text(s) => parse_timestamp(s, naive_offset_minutes).ok(),
            fast::Timestamp::Millis(ms) => from_epoch_millis(ms),
        };
        if let Some(timestamp_us) = timestamp_us {
            let levels = |side: Vec<fast::Level>| {
                side.into_iter()
                    .map(|l| DepthLevel {
                        price: l.price,
                        orders: l.orders,
                        quantity: l.quantity,
                    })
                    .collect()
            };
            return Ok(Tick {
                volume: Some(t.volume),
                sell_quantity: Some(t.sell_quantity),
                last_quantity: Some(t.last_quantity),
                change: Some(t.change),
                average_price: Some(t.average_price),
                open: Some(t.open),
                high: Some(t.high),
                low: Some(t.low),
                close: Some(t.close),
                has_depth: true,
                depth_buy: levels(t.depth.buy),
                depth_sell: levels(t.depth.sell),
                ..Tick::bare(timestamp_us, t.instrument_token, t.last_price)
            });
        }
    }
    decode_tick_slow(bytes, naive_offset_minutes)
}

/// The thorough path: a `Value` tree, every field checked by name.
fn decode_tick_slow(bytes: &[u8], naive_offset_minutes: i32) -> Result<Tick, DecodeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError {
        code: "malformed-json",
        message: e.to_string(),
    })?;
    let Value::Object(obj) = &value else {
        return Err(wrong_type("(tick)", "an object", &value));
    };
    let ts = field(obj, "timestamp")?;
    let timestamp_us = match ts {
        Value::String(s) => parse_timestamp(s, naive_offset_minutes).map_err(|e| DecodeError {
            code: "bad-timestamp",
            message: e.0,
        })?,
        Value::Number(n) => n
            .as_i64()
            .and_then(from_epoch_millis)
            .ok_or_else(|| wrong_type("timestamp", "epoch milliseconds as an integer", ts))?,
        other => {
            return Err(wrong_type(
                "timestamp",
                "a string or epoch milliseconds",
                other,
            ));
        }
    };
    let token = field(obj, "instrument_token")?;
    let instrument_token = token
        .as_u64()
        .ok_or_else(|| wrong_type("instrument_token", "a non-negative integer", token))?;
    let depth = match field(obj, "depth")? {
        Value::Object(d) => d,
        other => {
            return Err(wrong_type(
                "depth",
                "an object with `buy` and `sell`",
                other,
            ));
        }
    };
    let last_price = float(obj, "last_price")?;
    Ok(Tick {
        volume: Some(integer(obj, "volume")?),
        sell_quantity: Some(integer(obj, "sell_quantity")?),
        last_quantity: Some(integer(obj, "last_quantity")?),
        change: Some(float(obj, "change")?),
        average_price: Some(float(obj, "average_price")?),
        open: Some(float(obj, "open")?),
        high: Some(float(obj, "high")?),
        low: Some(float(obj, "low")?),
        close: Some(float(obj, "close")?),
        has_depth: true,
        depth_buy: depth_side(depth, "buy")?,
        depth_sell: depth_side(depth, "sell")?,
        ..Tick::bare(timestamp_us, instrument_token, last_price)
    })
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
            (with("volume", "<remove>"), "missing-field", "volume"),
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
    fn fast_and_thorough_paths_agree() {
        for input in [
            GOOD.to_string(),
            with("timestamp", "1497944105284"),
            with("timestamp", r#""2017-06-20T07:35:05.284824+05:30""#),
            with("depth", r#"{"buy": [], "sell": [], "extra": 1}"#),
        ] {
            let fast = decode_tick(input.as_bytes(), 0).unwrap();
            assert_eq!(
                decode_tick_slow(input.as_bytes(), 0).unwrap(),
                fast,
                "{input}"
            );
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
