//! The typed fast path of the built-in shapes: a well-formed tick — every key one a column takes,
//! each value of its column's type, no field given twice — is deserialized straight into a struct,
//! without a `Value` tree. Anything else (an unknown key for `extra`, a conflict, a wrong type, a
//! time it cannot read, a mode's missing field) makes it answer `None`, and the thorough decoder
//! ([`super::shapes::decode_object`]) reads the message again and names the field. The two give
//! the same ticks: `tests::the_fast_path_agrees_with_the_thorough_decoder` holds them to it.

use super::DecodeOptions;
use super::shapes::Shape;
use crate::time::{EpochUnit, epoch_micros, parse_timestamp};
use crate::{DepthLevel, Tick, TickMode};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A time as a client wrote it.
#[derive(Debug, Clone, Copy)]
enum Time<'a> {
    Text(&'a str),
    Int(i64),
    /// A fractional epoch (the thorough decoder reads it).
    Float,
}

impl<'de: 'a, 'a> Deserialize<'de> for Time<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Time<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a time: a string or an epoch number")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Time::Text(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Time::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v).map(Time::Int).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Time::Float)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Time<'_> {
    /// µs, as the thorough decoder reads it; `None` where it would refuse.
    fn micros(self, offset_minutes: i32, unit: Option<EpochUnit>) -> Option<i64> {
        match self {
            Time::Text(s) => parse_timestamp(s, offset_minutes).ok(),
            Time::Int(n) => epoch_micros(n, unit),
            // Fractional epochs are rare: the thorough decoder reads them.
            Time::Float => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Depth {
    buy: Vec<DepthLevel>,
    sell: Vec<DepthLevel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ohlc {
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
}

/// Every key of every built-in shape, each under its own name (a field given under two names is
/// refused after, not merged).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnyTick<'a> {
    instrument_token: u64,
    last_price: f64,
    #[serde(borrow)]
    timestamp: Option<Time<'a>>,
    #[serde(borrow)]
    exchange_timestamp: Option<Time<'a>>,
    #[serde(borrow)]
    last_trade_time: Option<Time<'a>>,
    volume: Option<i64>,
    volume_traded: Option<i64>,
    buy_quantity: Option<i64>,
    total_buy_quantity: Option<i64>,
    sell_quantity: Option<i64>,
    total_sell_quantity: Option<i64>,
    last_quantity: Option<i64>,
    last_traded_quantity: Option<i64>,
    average_price: Option<f64>,
    average_traded_price: Option<f64>,
    change: Option<f64>,
    net_change: Option<f64>,
    oi: Option<i64>,
    oi_day_high: Option<i64>,
    oi_day_low: Option<i64>,
    ohlc: Option<Ohlc>,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    #[serde(borrow)]
    mode: Option<&'a str>,
    tradable: Option<bool>,
    depth: Option<Depth>,
    /// The quote API's circuit limits: no column takes them; they go to `extra`.
    lower_circuit_limit: Option<serde_json::Number>,
    upper_circuit_limit: Option<serde_json::Number>,
}

/// One of two names' value; `Err` when both are given.
fn either<T>(a: Option<T>, b: Option<T>) -> Result<Option<T>, ()> {
    match (a, b) {
        (Some(_), Some(_)) => Err(()),
        (a, b) => Ok(a.or(b)),
    }
}

impl AnyTick<'_> {
    fn shape(&self) -> Shape {
        let ticker = self.mode.is_some()
            || self.tradable.is_some()
            || self.volume_traded.is_some()
            || self.last_traded_quantity.is_some()
            || self.average_traded_price.is_some()
            || self.total_buy_quantity.is_some()
            || self.total_sell_quantity.is_some()
            || self.exchange_timestamp.is_some();
        if ticker {
            Shape::Ticker
        } else if self.ohlc.is_some() || self.net_change.is_some() {
            Shape::Quote
        } else {
            Shape::Flat
        }
    }

    fn into_tick(self, options: &DecodeOptions, kafka_timestamp_ms: Option<i64>) -> Option<Tick> {
        let shape = self.shape();
        let offset = match shape {
            Shape::Flat => options.flat_offset_minutes,
            Shape::Ticker | Shape::Quote => options.kite_offset_minutes,
        };
        let unit = options.epoch_unit;
        let own = match shape {
            Shape::Ticker => self.exchange_timestamp.or(self.timestamp),
            Shape::Flat | Shape::Quote => self.timestamp,
        };
        let (timestamp_us, from_kafka) = match own {
            Some(t) => (t.micros(offset, unit)?, false),
            None => (crate::time::from_epoch_millis(kafka_timestamp_ms?)?, true),
        };
        let mut t = Tick::bare(timestamp_us, self.instrument_token, self.last_price);
        t.timestamp_from_kafka = from_kafka;
        t.volume = either(self.volume, self.volume_traded).ok()?;
        t.buy_quantity = either(self.buy_quantity, self.total_buy_quantity).ok()?;
        t.sell_quantity = either(self.sell_quantity, self.total_sell_quantity).ok()?;
        t.last_quantity = either(self.last_quantity, self.last_traded_quantity).ok()?;
        t.average_price = either(self.average_price, self.average_traded_price).ok()?;
        t.change = self.change;
        t.net_change = self.net_change;
        t.oi = self.oi;
        t.oi_day_high = self.oi_day_high;
        t.oi_day_low = self.oi_day_low;
        let nested = self.ohlc.unwrap_or(Ohlc {
            open: None,
            high: None,
            low: None,
            close: None,
        });
        t.open = either(self.open, nested.open).ok()?;
        t.high = either(self.high, nested.high).ok()?;
        t.low = either(self.low, nested.low).ok()?;
        t.close = either(self.close, nested.close).ok()?;
        t.last_trade_time_us = match self.last_trade_time {
            Some(v) => Some(v.micros(offset, unit)?),
            None => None,
        };
        t.exchange_timestamp_us = match self.exchange_timestamp {
            Some(v) => Some(v.micros(offset, unit)?),
            None => None,
        };
        t.mode = match self.mode {
            None => None,
            Some("ltp") => Some(TickMode::Ltp),
            Some("quote") => Some(TickMode::Quote),
            Some("full") => Some(TickMode::Full),
            Some(_) => return None,
        };
        t.tradable = self.tradable;
        if let Some(depth) = self.depth {
            let fits = |side: &[DepthLevel]| side.len() <= crate::columns::MAX_LEVELS;
            if !(fits(&depth.buy) && fits(&depth.sell)) {
                return None;
            }
            t.has_depth = true;
            t.depth_buy = depth.buy;
            t.depth_sell = depth.sell;
        }
        if shape == Shape::Ticker {
            super::shapes::required_by_mode(&t).ok()?;
        }
        Some(t)
    }
}

/// A tick and its members no column takes (in key order, as [`super::shapes::extra_members`]).
pub type WithExtra = (Tick, Map<String, Value>);

impl AnyTick<'_> {
    fn with_extra(
        mut self,
        options: &DecodeOptions,
        kafka_timestamp_ms: Option<i64>,
    ) -> Option<WithExtra> {
        let mut extra = Map::new();
        // As written (an integer stays one), in key order.
        if let Some(v) = self.lower_circuit_limit.take() {
            extra.insert("lower_circuit_limit".into(), Value::Number(v));
        }
        if let Some(v) = self.upper_circuit_limit.take() {
            extra.insert("upper_circuit_limit".into(), Value::Number(v));
        }
        Some((self.into_tick(options, kafka_timestamp_ms)?, extra))
    }
}

/// The tick of a well-formed message of one tick; `None` for anything the thorough decoder must
/// read (see the module's notes).
pub fn tick(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Option<WithExtra> {
    serde_json::from_slice::<AnyTick<'_>>(bytes)
        .ok()?
        .with_extra(options, kafka_timestamp_ms)
}

/// The ticks of a well-formed JSON list of ticks; `None` for anything else (one bad element, and
/// the thorough decoder reads the list, tick by tick).
pub fn list(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Option<Vec<WithExtra>> {
    serde_json::from_slice::<Vec<AnyTick<'_>>>(bytes)
        .ok()?
        .into_iter()
        .map(|t| t.with_extra(options, kafka_timestamp_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The Kite examples in `data/kite/`, written here so the model crate tests alone.
    fn examples() -> Vec<Value> {
        vec![
            json!({"tradable": true, "mode": "ltp", "instrument_token": 408065, "last_price": 1573.15}),
            json!({"tradable": false, "mode": "quote", "instrument_token": 256265,
                "last_price": 15175.3, "ohlc": {"open": 15100.0, "high": 15200.0, "low": 15050.0,
                "close": 15100.1}, "change": 0.498}),
            json!({"tradable": true, "mode": "full", "instrument_token": 408065,
                "last_price": 1573.15, "last_traded_quantity": 1, "average_traded_price": 1570.37,
                "volume_traded": 1192471, "total_buy_quantity": 256511,
                "total_sell_quantity": 360421, "ohlc": {"open": 1565.0, "high": 1585.0,
                "low": 1562.0, "close": 1575.15}, "change": -0.127,
                "last_trade_time": "2021-05-25 15:29:59", "oi": 0, "oi_day_high": 0,
                "oi_day_low": 0, "exchange_timestamp": "2021-05-25T15:30:00+05:30",
                "depth": {"buy": [{"quantity": 25, "price": 1573.1, "orders": 1}],
                          "sell": [{"quantity": 40, "price": 1573.15, "orders": 2}]}}),
            json!({"instrument_token": 408065, "timestamp": "2021-05-25 15:45:56",
                "upper_circuit_limit": 1528.6, "lower_circuit_limit": 1250.7,
                "last_price": 1412.95, "last_quantity": 5, "buy_quantity": 0,
                "sell_quantity": 5191, "volume": 7360198, "average_price": 1412.47,
                "net_change": 0, "ohlc": {"open": 1396.0, "high": 1421.75, "low": 1395.55,
                "close": 1389.65}, "depth": {"buy": [], "sell": []}}),
            json!({"timestamp": 1621936800123_i64, "instrument_token": 7, "last_price": 1.5,
                "open": 1.0, "high": 2.0, "low": 1.0, "close": 1.5, "volume": 10}),
        ]
    }

    /// Small xorshift: the mutations are the same every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn mutate(v: &mut Value, r: &mut Rng) {
        let obj = v.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        let key = keys[r.below(keys.len())].clone();
        let values = [
            json!(null),
            json!("x"),
            json!(1.5),
            json!(7),
            json!(-3),
            json!(1621936800),
            json!(1621936800.5),
            json!(true),
            json!("2021-05-25T15:30:00"),
            json!({"open": 1.0}),
            json!(53611.0),
        ];
        match r.below(5) {
            0 => {
                obj.remove(&key);
            }
            1 => {
                obj.insert(key, values[r.below(values.len())].clone());
            }
            2 => {
                // A key of another shape, or one no column takes.
                let other = [
                    "volume",
                    "volume_traded",
                    "open",
                    "ohlc",
                    "mode",
                    "symbol",
                    "exchange_timestamp",
                    "timestamp",
                    "net_change",
                    "tradable",
                ];
                obj.insert(
                    other[r.below(other.len())].into(),
                    values[r.below(values.len())].clone(),
                );
            }
            3 => {
                if let Some(Value::Object(o)) = obj.get_mut("ohlc") {
                    o.insert("high".into(), values[r.below(values.len())].clone());
                }
            }
            _ => {
                if let Some(Value::Object(d)) = obj.get_mut("depth") {
                    d.insert("buy".into(), json!([{"price": 1.0, "orders": values[r.below(3) + 2].clone(), "quantity": 1}]));
                }
            }
        }
    }

    /// What the fast path answers, the thorough decoder answers the same; and the well-formed
    /// examples take the fast path.
    #[test]
    fn the_fast_path_agrees_with_the_thorough_decoder() {
        let options = DecodeOptions::default();
        let thorough = |v: &Value| match v {
            Value::Object(o) => super::super::shapes::decode_object(o, &options, Some(1_000)),
            _ => unreachable!("the examples are objects"),
        };
        let extra = |v: &Value| super::super::shapes::extra_members(v.as_object().unwrap());
        for v in examples() {
            let fast = tick(v.to_string().as_bytes(), &options, Some(1_000));
            assert!(
                fast.is_some(),
                "a well-formed example takes the fast path: {v}"
            );
            let (fast, fast_extra) = fast.unwrap();
            assert_eq!(Ok(&fast), thorough(&v).as_ref(), "{v}");
            assert_eq!(fast_extra, extra(&v), "{v}");
        }
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let (mut fast_taken, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let mut v = examples()[r.below(5)].clone();
            for _ in 0..=r.below(3) {
                mutate(&mut v, &mut r);
            }
            let text = v.to_string();
            match tick(text.as_bytes(), &options, Some(1_000)) {
                Some((fast, fast_extra)) => {
                    fast_taken += 1;
                    assert_eq!(Ok(&fast), thorough(&v).as_ref(), "{text}");
                    assert_eq!(fast_extra, extra(&v), "{text}");
                }
                None => declined += 1,
            }
        }
        assert!(
            fast_taken > 2_000 && declined > 2_000,
            "{fast_taken} / {declined}"
        );
        // A list: every tick, or none (the thorough decoder reads it tick by tick).
        let list = Value::Array(examples()).to_string();
        assert_eq!(list_len(&list), Some(5));
        let mut bad = examples();
        bad[1]["symbol"] = json!("NIFTY");
        assert_eq!(list_len(&Value::Array(bad).to_string()), None);
    }

    fn list_len(text: &str) -> Option<usize> {
        list(text.as_bytes(), &DecodeOptions::default(), Some(1)).map(|t| t.len())
    }
}
