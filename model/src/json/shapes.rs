//! The built-in tick shapes, recognised per message without configuration, and the one decoder
//! that reads them all (the scanner, [`super::scan`], reads the sample's shape faster).
//!
//! - **Flat** — the 2017 sample's shape (`timestamp`, flat `open`/`high`/`low`/`close`, `depth`)
//!   and our own documents' fields. Zone-less times are read in
//!   `validate.naive_timestamp_offset_minutes`.
//! - **Ticker** — KiteConnect's ticker (`KiteTicker`'s `on_ticks`, serialised to JSON): `mode`,
//!   `tradable`, `volume_traded`, `last_traded_quantity`, `average_traded_price`,
//!   `total_buy_quantity`, `total_sell_quantity`, a nested `ohlc`, `change`, `last_trade_time`,
//!   `oi`, `oi_day_high`, `oi_day_low`, `exchange_timestamp`, `depth`. Its event time is
//!   `exchange_timestamp`.
//! - **Quote** — Kite's market-quote API (`/quote`, full mode) for one instrument: `timestamp`,
//!   `last_quantity`, `volume`, `average_price`, `buy_quantity`, `sell_quantity`, `net_change`
//!   (absolute), a nested `ohlc`, `oi`…, `depth`.
//!
//! A message is the ticker's if it carries any key only the ticker uses, else the quote API's if
//! it has a nested `ohlc` or `net_change`, else flat. Zone-less times of the Kite shapes are read
//! in `input.kite_utc_offset_minutes` (330, the exchange's time). A tick without a time of its own
//! takes its Kafka record's ([`crate::Fields::TIMESTAMP_FROM_KAFKA`]). Every shape needs the instrument
//! and the last price; a ticker tick that says its `mode` needs what that mode carries (an index,
//! `tradable: false`, has no book and no quantities). Absent fields stay absent; a field given
//! twice (`ohlc.open` and `open`, `volume` and `volume_traded`) is refused.

use super::{DecodeError, DecodeOptions, missing, wrong_type};
use crate::time::{EpochUnit, epoch_micros, parse_timestamp};
use crate::{DepthLevel, Tick, TickMode};
use serde_json::{Map, Value};

/// The built-in shapes (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Flat,
    Ticker,
    Quote,
}

/// Keys only the ticker uses.
const TICKER_KEYS: [&str; 8] = [
    "mode",
    "tradable",
    "volume_traded",
    "last_traded_quantity",
    "average_traded_price",
    "total_buy_quantity",
    "total_sell_quantity",
    "exchange_timestamp",
];

impl Shape {
    /// The shape of a tick object, by the keys it gives a value (a `null` gives none).
    pub fn of(obj: &Map<String, Value>) -> Self {
        let has = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        Self::by_keys(|k| has(k))
    }

    fn by_keys(has: impl Fn(&str) -> bool) -> Self {
        if TICKER_KEYS.iter().any(|k| has(k)) {
            Shape::Ticker
        } else if has("ohlc") || has("net_change") {
            Shape::Quote
        } else {
            Shape::Flat
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Flat => "flat (the sample's)",
            Shape::Ticker => "Kite ticker",
            Shape::Quote => "Kite quote API",
        }
    }
}

/// A field's names: ours first, then the ticker's.
struct Names {
    ours: &'static str,
    ticker: Option<&'static str>,
}

const fn ours(name: &'static str) -> Names {
    Names {
        ours: name,
        ticker: None,
    }
}

const fn or_ticker(name: &'static str, ticker: &'static str) -> Names {
    Names {
        ours: name,
        ticker: Some(ticker),
    }
}

/// The value under one of `names`; both given is refused.
fn one_of<'a>(
    obj: &'a Map<String, Value>,
    names: &Names,
) -> Result<Option<(&'static str, &'a Value)>, DecodeError> {
    // A `null` is no value (as everywhere in a tick).
    let given = |name: &'static str| obj.get(name).filter(|v| !v.is_null()).map(|v| (name, v));
    let a = given(names.ours);
    let b = names.ticker.and_then(given);
    match (a, b) {
        (Some(_), Some(_)) => Err(twice(names.ours, names.ticker.unwrap_or_default())),
        (a, b) => Ok(a.or(b)),
    }
}

fn twice(a: &str, b: &str) -> DecodeError {
    DecodeError {
        code: "conflicting-fields",
        message: format!("both `{a}` and `{b}` are given; a tick carries one"),
    }
}

fn number(name: &str, v: &Value) -> Result<f64, DecodeError> {
    v.as_f64().ok_or_else(|| wrong_type(name, "a number", v))
}

/// An integer; an integral float such as `53611.0` is accepted, `53611.5` is not.
fn whole(name: &str, v: &Value) -> Result<i64, DecodeError> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(wrong_type(name, "an integer", v)),
    }
}

/// A time: a string (the sample's form, ISO 8601 with or without a zone) read in
/// `offset_minutes` when it has no zone, or an epoch number in `unit` (by magnitude without one).
fn time(
    name: &str,
    v: &Value,
    offset_minutes: i32,
    unit: Option<EpochUnit>,
) -> Result<i64, DecodeError> {
    match v {
        Value::String(s) => parse_timestamp(s, offset_minutes).map_err(|e| DecodeError {
            code: "bad-timestamp",
            message: format!("{name}: {}", e.0),
        }),
        Value::Number(n) => {
            let us = match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => epoch_micros(i, unit),
                // A fractional epoch (Python's time.time()): its unit by its whole part.
                (None, Some(f)) if f.is_finite() && f.abs() < 9.0e18 => {
                    let unit = unit.unwrap_or_else(|| EpochUnit::of_magnitude(f as i64));
                    let per_us = match unit {
                        EpochUnit::Seconds => 1e6,
                        EpochUnit::Millis => 1e3,
                        EpochUnit::Micros => 1.0,
                        EpochUnit::Nanos => 1e-3,
                    };
                    let us = (f * per_us).round();
                    (us.abs() < 9.0e18).then_some(us as i64)
                }
                _ => None,
            };
            us.ok_or_else(|| wrong_type(name, "a time within the years 0 to 9999", v))
        }
        other => Err(wrong_type(
            name,
            "a time: a string or an epoch number",
            other,
        )),
    }
}

fn depth_side(depth: &Map<String, Value>, side: &str) -> Result<Vec<DepthLevel>, DecodeError> {
    let path = format!("depth.{side}");
    let levels = match depth.get(side) {
        None => return Err(missing(&path)),
        Some(Value::Array(levels)) => levels,
        Some(other) => return Err(wrong_type(&path, "an array", other)),
    };
    if levels.len() > crate::columns::MAX_LEVELS {
        return Err(DecodeError {
            code: "too-deep",
            message: format!(
                "{path} has {} levels; at most {} are accepted",
                levels.len(),
                crate::columns::MAX_LEVELS
            ),
        });
    }
    levels
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let at = format!("{path}[{i}]");
            let obj = level
                .as_object()
                .ok_or_else(|| wrong_type(&at, "an object", level))?;
            let get = |name: &str| -> Result<&Value, DecodeError> {
                obj.get(name)
                    .ok_or_else(|| missing(&format!("{at}.{name}")))
            };
            Ok(DepthLevel {
                price: number(&format!("{at}.price"), get("price")?)?,
                orders: whole(&format!("{at}.orders"), get("orders")?)?,
                quantity: whole(&format!("{at}.quantity"), get("quantity")?)?,
            })
        })
        .collect()
}

/// Every key a built-in shape (or our own document's tick fields, read back) gives a column.
const KNOWN_KEYS: [&str; 30] = [
    "instrument_token",
    "last_price",
    "timestamp",
    "timestamp_source",
    "exchange_timestamp",
    "last_trade_time",
    "volume",
    "volume_traded",
    "buy_quantity",
    "total_buy_quantity",
    "sell_quantity",
    "total_sell_quantity",
    "last_quantity",
    "last_traded_quantity",
    "average_price",
    "average_traded_price",
    "change",
    "net_change",
    "oi",
    "oi_day_high",
    "oi_day_low",
    "ohlc",
    "open",
    "high",
    "low",
    "close",
    "mode",
    "tradable",
    "depth",
    "extra",
];

fn is_known(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

/// The members of a tick object no column takes (the quote API's circuit limits, a broker's
/// `symbol`): kept, not dropped, in the document's `extra` object. An `extra` object of our own
/// documents (read back) is taken in as it is.
/// In key order, whatever the message's.
pub fn extra_members(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut members: Vec<(&String, &Value)> = match obj.get("extra") {
        Some(Value::Object(kept)) => kept.iter().collect(),
        _ => Vec::new(),
    };
    // A `null` is no value, here as everywhere in a tick.
    members.extend(obj.iter().filter(|(key, v)| !is_known(key) && !v.is_null()));
    members.sort_by(|a, b| a.0.cmp(b.0));
    members
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Decodes one tick object of any built-in shape.
pub fn decode_object(
    obj: &Map<String, Value>,
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Result<Tick, DecodeError> {
    let shape = Shape::of(obj);
    let offset = match shape {
        Shape::Flat => options.flat_offset_minutes,
        Shape::Ticker | Shape::Quote => options.kite_offset_minutes,
    };
    let unit = options.epoch_unit;
    let token = obj
        .get("instrument_token")
        .ok_or_else(|| missing("instrument_token"))?;
    let instrument_token = token
        .as_u64()
        .ok_or_else(|| wrong_type("instrument_token", "a non-negative integer", token))?;
    let last_price = number(
        "last_price",
        obj.get("last_price").ok_or_else(|| missing("last_price"))?,
    )?;
    // The ticker's time is its exchange stamp; our documents of its ticks also carry `timestamp`.
    let own_times: &[&str] = match shape {
        Shape::Ticker => &["exchange_timestamp", "timestamp"],
        Shape::Flat | Shape::Quote => &["timestamp"],
    };
    let own = own_times
        .iter()
        .find_map(|&name| obj.get(name).filter(|v| !v.is_null()).map(|v| (name, v)));
    let (timestamp_us, timestamp_from_kafka) = match own {
        Some((name, v)) => (time(name, v, offset, unit)?, false),
        None => match kafka_timestamp_ms.and_then(crate::time::from_epoch_millis) {
            Some(us) => (us, true),
            None => return Err(missing(own_times[0])),
        },
    };
    let mut t = Tick::bare(timestamp_us, instrument_token, last_price);
    t.timestamp_from_kafka = timestamp_from_kafka;
    let int = |names: Names| -> Result<Option<i64>, DecodeError> {
        one_of(obj, &names)?
            .map(|(name, v)| whole(name, v))
            .transpose()
    };
    let float = |names: Names| -> Result<Option<f64>, DecodeError> {
        one_of(obj, &names)?
            .map(|(name, v)| number(name, v))
            .transpose()
    };
    t.volume = int(or_ticker("volume", "volume_traded"))?;
    t.buy_quantity = int(or_ticker("buy_quantity", "total_buy_quantity"))?;
    t.sell_quantity = int(or_ticker("sell_quantity", "total_sell_quantity"))?;
    t.last_quantity = int(or_ticker("last_quantity", "last_traded_quantity"))?;
    t.average_price = float(or_ticker("average_price", "average_traded_price"))?;
    t.change = float(ours("change"))?;
    t.net_change = float(ours("net_change"))?;
    t.oi = int(ours("oi"))?;
    t.oi_day_high = int(ours("oi_day_high"))?;
    t.oi_day_low = int(ours("oi_day_low"))?;
    day_prices(obj, &mut t)?;
    t.last_trade_time_us = match obj.get("last_trade_time").filter(|v| !v.is_null()) {
        Some(v) => Some(time("last_trade_time", v, offset, unit)?),
        None => None,
    };
    if shape != Shape::Ticker {
        // The flat shape and the quote API name no exchange stamp of their own; our documents
        // write it back under this name.
        t.exchange_timestamp_us = match obj.get("exchange_timestamp").filter(|v| !v.is_null()) {
            Some(v) => Some(time("exchange_timestamp", v, offset, unit)?),
            None => None,
        };
    } else if let Some(v) = obj.get("exchange_timestamp").filter(|v| !v.is_null()) {
        t.exchange_timestamp_us = Some(time("exchange_timestamp", v, offset, unit)?);
    }
    t.mode = match obj.get("mode").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::String(m)) => Some(match m.as_str() {
            "ltp" => TickMode::Ltp,
            "quote" => TickMode::Quote,
            "full" => TickMode::Full,
            _ => {
                return Err(wrong_type(
                    "mode",
                    "\"ltp\", \"quote\" or \"full\"",
                    &obj["mode"],
                ));
            }
        }),
        Some(other) => return Err(wrong_type("mode", "a string", other)),
    };
    t.tradable = match obj.get("tradable").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(wrong_type("tradable", "true or false", other)),
    };
    match obj.get("depth").filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(d)) => {
            t.has_depth = true;
            t.depth_buy = depth_side(d, "buy")?;
            t.depth_sell = depth_side(d, "sell")?;
        }
        Some(other) => {
            return Err(wrong_type(
                "depth",
                "an object with `buy` and `sell`",
                other,
            ));
        }
    }
    if shape == Shape::Ticker {
        required_by_mode(&t)?;
    }
    Ok(t)
}

/// The day's prices: flat (`open`, …) or nested (`ohlc.open`, …), not both.
fn day_prices(obj: &Map<String, Value>, t: &mut Tick) -> Result<(), DecodeError> {
    let nested = match obj.get("ohlc").filter(|v| !v.is_null()) {
        None => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => return Err(wrong_type("ohlc", "an object", other)),
    };
    let mut prices = [None; 4];
    for (slot, name) in prices.iter_mut().zip(["open", "high", "low", "close"]) {
        let flat = obj.get(name).filter(|v| !v.is_null());
        let inner = nested.and_then(|o| o.get(name)).filter(|v| !v.is_null());
        *slot = match (flat, inner) {
            (Some(_), Some(_)) => return Err(twice(name, &format!("ohlc.{name}"))),
            (Some(v), None) => Some(number(name, v)?),
            (None, Some(v)) => Some(number(&format!("ohlc.{name}"), v)?),
            (None, None) => None,
        };
    }
    [t.open, t.high, t.low, t.close] = prices;
    Ok(())
}

/// A ticker tick that names its mode carries what the mode does (an index — `tradable: false` —
/// has no quantities and no book).
pub(super) fn required_by_mode(t: &Tick) -> Result<(), DecodeError> {
    let Some(mode) = t.mode else { return Ok(()) };
    let index = t.tradable == Some(false);
    let mut needed: Vec<(&str, bool)> = Vec::new();
    if mode != TickMode::Ltp {
        needed.extend([
            ("ohlc", t.open.is_some() && t.close.is_some()),
            ("change", t.change.is_some()),
        ]);
        if !index {
            needed.extend([
                ("volume_traded", t.volume.is_some()),
                ("last_traded_quantity", t.last_quantity.is_some()),
                ("average_traded_price", t.average_price.is_some()),
                ("total_buy_quantity", t.buy_quantity.is_some()),
                ("total_sell_quantity", t.sell_quantity.is_some()),
            ]);
        }
    }
    if mode == TickMode::Full && !index {
        needed.extend([
            ("last_trade_time", t.last_trade_time_us.is_some()),
            ("depth", t.has_depth),
        ]);
    }
    match needed.into_iter().find(|(_, there)| !there) {
        Some((name, _)) => Err(DecodeError {
            code: "missing-field",
            message: format!(
                "field `{name}` is missing, which a {} tick of mode {} carries",
                if index { "index" } else { "tradable" },
                mode.as_str()
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::decode_message;

    const QUOTE: &str = r#"{"tradable": true, "mode": "quote", "instrument_token": 408065,
        "last_price": 1573.15, "last_traded_quantity": 1, "average_traded_price": 1570.37,
        "volume_traded": 1192471, "total_buy_quantity": 256511, "total_sell_quantity": 360421,
        "ohlc": {"open": 1565.0, "high": 1585.0, "low": 1562.0, "close": 1575.15},
        "change": -0.127}"#;

    fn full() -> Value {
        let mut v: Value = serde_json::from_str(QUOTE).unwrap();
        let more = serde_json::json!({
            "mode": "full",
            "last_trade_time": "2021-05-25 15:29:59",
            "oi": 0, "oi_day_high": 0, "oi_day_low": 0,
            "exchange_timestamp": "2021-05-25 15:30:00",
            "depth": {
                "buy": [{"quantity": 25, "price": 1573.1, "orders": 1}],
                "sell": [{"quantity": 40, "price": 1573.15, "orders": 2}]
            }
        });
        v.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        v
    }

    fn decode(v: &Value, kafka_ms: Option<i64>) -> Result<Tick, DecodeError> {
        decode_message(
            v.to_string().as_bytes(),
            &DecodeOptions::default(),
            kafka_ms,
        )
    }

    /// 2021-05-25 15:30:00 IST.
    const CLOSE_IST_US: i64 = 1_621_936_800_000_000;

    #[test]
    fn a_full_ticker_tick_reads_its_exchange_time_in_ist() {
        let t = decode(&full(), Some(1)).unwrap();
        assert_eq!(t.timestamp_us, CLOSE_IST_US);
        assert!(!t.timestamp_from_kafka);
        assert_eq!(t.exchange_timestamp_us, Some(CLOSE_IST_US));
        assert_eq!(t.last_trade_time_us, Some(CLOSE_IST_US - 1_000_000));
        assert_eq!(
            (t.volume, t.last_quantity, t.buy_quantity, t.sell_quantity),
            (Some(1_192_471), Some(1), Some(256_511), Some(360_421))
        );
        assert_eq!((t.open, t.close), (Some(1565.0), Some(1575.15)));
        assert_eq!((t.mode, t.tradable), (Some(TickMode::Full), Some(true)));
        assert_eq!(t.oi, Some(0));
        assert!(t.has_depth);
        assert_eq!(t.depth_sell[0].quantity, 40);
    }

    #[test]
    fn ltp_and_quote_ticks_take_the_kafka_time() {
        let ltp = serde_json::json!({"tradable": true, "mode": "ltp",
            "instrument_token": 408065, "last_price": 1573.15});
        let t = decode(&ltp, Some(1_621_936_800_123)).unwrap();
        assert_eq!(t.timestamp_us, 1_621_936_800_123_000);
        assert!(t.timestamp_from_kafka);
        assert_eq!((t.volume, t.open, t.has_depth), (None, None, false));
        let e = decode(&ltp, None).unwrap_err();
        assert_eq!(e.code, "missing-field");
        assert!(e.message.contains("exchange_timestamp"), "{e}");
        let quote: Value = serde_json::from_str(QUOTE).unwrap();
        let t = decode(&quote, Some(5)).unwrap();
        assert_eq!((t.change, t.high), (Some(-0.127), Some(1585.0)));
        assert_eq!(t.mode, Some(TickMode::Quote));
    }

    #[test]
    fn an_index_tick_has_no_book_and_no_quantities() {
        let index = serde_json::json!({"tradable": false, "mode": "full",
            "instrument_token": 256265, "last_price": 15175.3,
            "ohlc": {"open": 15100.0, "high": 15200.0, "low": 15050.0, "close": 15100.1},
            "change": 0.498, "exchange_timestamp": "2021-05-25 15:30:00"});
        let t = decode(&index, None).unwrap();
        assert_eq!(t.tradable, Some(false));
        assert_eq!((t.volume, t.has_depth), (None, false));
        assert_eq!(t.timestamp_us, CLOSE_IST_US);
    }

    #[test]
    fn the_quote_api_reads_its_own_names() {
        let quote = serde_json::json!({"instrument_token": 408065,
            "timestamp": "2021-05-25 15:30:00", "last_trade_time": "2021-05-25 15:29:59",
            "last_price": 1412.95, "last_quantity": 5, "buy_quantity": 0, "sell_quantity": 5191,
            "volume": 7360198, "average_price": 1412.47, "oi": 0, "oi_day_high": 0,
            "oi_day_low": 0, "net_change": -2.5, "lower_circuit_limit": 1250.7,
            "upper_circuit_limit": 1528.6,
            "ohlc": {"open": 1396.0, "high": 1421.75, "low": 1395.55, "close": 1389.65},
            "depth": {"buy": [], "sell": []}});
        assert_eq!(Shape::of(quote.as_object().unwrap()), Shape::Quote);
        let t = decode(&quote, None).unwrap();
        assert_eq!(
            t.timestamp_us, CLOSE_IST_US,
            "zone-less: the exchange's time"
        );
        assert_eq!((t.net_change, t.change), (Some(-2.5), None));
        assert_eq!((t.volume, t.buy_quantity), (Some(7_360_198), Some(0)));
        assert!(t.has_depth && t.depth_buy.is_empty());
    }

    #[test]
    fn timestamps_as_clients_serialise_them() {
        let mut v = full();
        for (stamp, want) in [
            (serde_json::json!("2021-05-25 15:30:00"), CLOSE_IST_US),
            (serde_json::json!("2021-05-25T15:30:00"), CLOSE_IST_US),
            (serde_json::json!("2021-05-25T15:30:00+05:30"), CLOSE_IST_US),
            (serde_json::json!("2021-05-25T10:00:00Z"), CLOSE_IST_US),
            (serde_json::json!(1_621_936_800), CLOSE_IST_US),
            (serde_json::json!(1_621_936_800_000_i64), CLOSE_IST_US),
            (serde_json::json!(1_621_936_800_000_000_i64), CLOSE_IST_US),
            (
                serde_json::json!(1_621_936_800_000_000_000_i64),
                CLOSE_IST_US,
            ),
            (serde_json::json!(1_621_936_800.25), CLOSE_IST_US + 250_000),
        ] {
            v["exchange_timestamp"] = stamp.clone();
            assert_eq!(decode(&v, None).unwrap().timestamp_us, want, "{stamp}");
        }
        let seconds = DecodeOptions {
            epoch_unit: Some(EpochUnit::Seconds),
            ..DecodeOptions::default()
        };
        v["exchange_timestamp"] = serde_json::json!(1_621_936_800_000_i64);
        // The configured unit wins over the magnitude: milliseconds read as seconds.
        let t = decode_message(v.to_string().as_bytes(), &seconds, None).unwrap();
        assert_eq!(t.timestamp_us, CLOSE_IST_US * 1_000);
    }

    #[test]
    fn hostile_ticks_are_refused_naming_the_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                {
                    let mut v = full();
                    v["open"] = serde_json::json!(1.0);
                    v
                },
                "conflicting-fields",
                "ohlc.open",
            ),
            (
                {
                    let mut v = full();
                    v["volume"] = serde_json::json!(1);
                    v
                },
                "conflicting-fields",
                "volume_traded",
            ),
            (
                {
                    let mut v = full();
                    v["ohlc"]["high"] = serde_json::json!("high");
                    v
                },
                "wrong-type",
                "ohlc.high",
            ),
            (
                {
                    let mut v = full();
                    v.as_object_mut().unwrap().remove("depth");
                    v
                },
                "missing-field",
                "depth",
            ),
            (
                {
                    let mut v = full();
                    v["mode"] = serde_json::json!("snap");
                    v
                },
                "wrong-type",
                "mode",
            ),
            (
                {
                    let mut v = full();
                    v["tradable"] = serde_json::json!("yes");
                    v
                },
                "wrong-type",
                "tradable",
            ),
            (
                {
                    let mut v: Value = serde_json::from_str(QUOTE).unwrap();
                    v.as_object_mut().unwrap().remove("total_buy_quantity");
                    v
                },
                "missing-field",
                "total_buy_quantity",
            ),
            (
                {
                    let mut v = full();
                    v["exchange_timestamp"] = serde_json::json!("soon");
                    v
                },
                "bad-timestamp",
                "exchange_timestamp",
            ),
            (
                {
                    let mut v = full();
                    v["depth"]["buy"][0]["price"] = serde_json::json!(null);
                    v
                },
                "wrong-type",
                "depth.buy[0].price",
            ),
        ];
        for (input, code, needle) in cases {
            let e = decode(&input, Some(1)).unwrap_err();
            assert_eq!(e.code, code, "{input}: {e}");
            assert!(e.message.contains(needle), "{input}: {e}");
        }
    }
}
