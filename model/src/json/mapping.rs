//! `[input]` mappings: any JSON tick feed read into our columns by configuration — each column a
//! path into the message, a scale per column (paise to rupees), numeric strings accepted, and a
//! symbol → token table for feeds without numeric tokens. Members of the message no path takes go
//! to the tick's `extra`, as for the built-in shapes.
//!
//! Paths: keys separated by dots, an array element by `[n]`, a key with a dot or a bracket in it
//! quoted, `["a.b"]`: `ltp`, `quote.bid[0].px`, `["52_week_high"]`. The first key of a path is a
//! member of the tick object; a member a path reads (its first key) is not `extra`.

use super::DecodeOptions;
use super::{DecodeError, missing, wrong_type};
use crate::time::{EpochUnit, epoch_micros, parse_timestamp};
use crate::{DepthLevel, Tick, TickMode};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where a column's value is in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    steps: Vec<Step>,
}

impl Path {
    /// Parses the path syntax (see the module's notes); the error says what is wrong.
    pub fn parse(text: &str) -> Result<Path, String> {
        let mut steps = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        let mut key = String::new();
        // A dot was just read: a key must follow.
        let mut after_dot = false;
        let flush = |key: &mut String, steps: &mut Vec<Step>| {
            if !key.is_empty() {
                steps.push(Step::Key(std::mem::take(key)));
            }
        };
        while i < b.len() {
            match b[i] {
                b'.' => {
                    if after_dot || (key.is_empty() && steps.is_empty()) {
                        return Err(format!("{text:?}: a dot with no key before it"));
                    }
                    flush(&mut key, &mut steps);
                    after_dot = true;
                    i += 1;
                    continue;
                }
                b'[' if after_dot => {
                    return Err(format!("{text:?}: a dot before a bracket"));
                }
                b'[' if b.get(i + 1) == Some(&b'"') => {
                    flush(&mut key, &mut steps);
                    let end = text[i + 2..]
                        .find("\"]")
                        .ok_or_else(|| format!("{text:?}: a quoted key not closed by \"]"))?;
                    steps.push(Step::Key(text[i + 2..i + 2 + end].to_string()));
                    i += end + 4;
                }
                b'[' => {
                    flush(&mut key, &mut steps);
                    let end = text[i..]
                        .find(']')
                        .ok_or_else(|| format!("{text:?}: an index not closed by ]"))?;
                    let n = text[i + 1..i + end].parse().map_err(|_| {
                        format!("{text:?}: [{}] is not an index", &text[i + 1..i + end])
                    })?;
                    steps.push(Step::Index(n));
                    i += end + 1;
                }
                _ => {
                    let c = text[i..].chars().next().expect("within the text");
                    key.push(c);
                    i += c.len_utf8();
                }
            }
            after_dot = false;
        }
        if after_dot {
            return Err(format!("{text:?}: ends with a dot"));
        }
        flush(&mut key, &mut steps);
        match steps.first() {
            Some(Step::Key(_)) => Ok(Path {
                text: text.to_string(),
                steps,
            }),
            _ => Err(format!("{text:?}: a path starts with a key")),
        }
    }

    /// The member of the tick object the path starts at.
    fn root(&self) -> &str {
        match &self.steps[0] {
            Step::Key(k) => k,
            Step::Index(_) => unreachable!("a path starts with a key (Path::parse)"),
        }
    }

    /// The value at the path in a tick object (`None` for a missing one or a `null`).
    fn get<'a>(&self, obj: &'a Map<String, Value>) -> Option<&'a Value> {
        let first = obj.get(self.root())?;
        self.steps[1..]
            .iter()
            .try_fold(first, |v, step| match step {
                Step::Key(k) => v.get(k.as_str()),
                Step::Index(n) => v.get(*n),
            })
            .filter(|v| !v.is_null())
    }

    /// The path as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The columns a mapping can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Column {
    InstrumentToken,
    LastPrice,
    Timestamp,
    Volume,
    BuyQuantity,
    SellQuantity,
    LastQuantity,
    Change,
    NetChange,
    AveragePrice,
    Open,
    High,
    Low,
    Close,
    Oi,
    OiDayHigh,
    OiDayLow,
    LastTradeTime,
    ExchangeTimestamp,
    Mode,
    Tradable,
    DepthBuy,
    DepthSell,
}

/// Every column by its name in `[input.fields]`.
const COLUMNS: [(&str, Column); 23] = [
    ("instrument_token", Column::InstrumentToken),
    ("last_price", Column::LastPrice),
    ("timestamp", Column::Timestamp),
    ("volume", Column::Volume),
    ("buy_quantity", Column::BuyQuantity),
    ("sell_quantity", Column::SellQuantity),
    ("last_quantity", Column::LastQuantity),
    ("change", Column::Change),
    ("net_change", Column::NetChange),
    ("average_price", Column::AveragePrice),
    ("open", Column::Open),
    ("high", Column::High),
    ("low", Column::Low),
    ("close", Column::Close),
    ("oi", Column::Oi),
    ("oi_day_high", Column::OiDayHigh),
    ("oi_day_low", Column::OiDayLow),
    ("last_trade_time", Column::LastTradeTime),
    ("exchange_timestamp", Column::ExchangeTimestamp),
    ("mode", Column::Mode),
    ("tradable", Column::Tradable),
    ("depth_buy", Column::DepthBuy),
    ("depth_sell", Column::DepthSell),
];

/// The columns a scale may apply to: prices, changes (absolute ones in the prices' unit).
const SCALABLE: [&str; 9] = [
    "last_price",
    "average_price",
    "open",
    "high",
    "low",
    "close",
    "net_change",
    "change",
    "depth_price",
];

/// A mapping as configured: `fields` (column → path), `scale` (column → factor), the depth levels'
/// member names, and the symbol → token table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingConfig {
    pub fields: BTreeMap<String, String>,
    pub scale: BTreeMap<String, f64>,
    /// Members of a depth level: `price`, `quantity`, `orders` → the feed's names.
    pub depth_level: BTreeMap<String, String>,
    /// Symbol → instrument token, for a feed whose instrument is a name.
    pub tokens: HashMap<String, u64>,
}

/// A mapping, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    fields: Vec<(Column, Path)>,
    scale: HashMap<Column, f64>,
    depth_price_scale: f64,
    level: [String; 3],
    tokens: HashMap<String, u64>,
}

/// Why a mapping was refused: the key (`input.fields.<column>`, …) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    pub key: String,
    pub message: String,
}

impl Mapping {
    /// Checks `config`: every column named is one we have, every path parses, the instrument and
    /// the last price are mapped, every scale is a finite, non-zero factor of a scalable column.
    pub fn new(config: &MappingConfig) -> Result<Mapping, MappingError> {
        let err = |key: String, message: String| MappingError { key, message };
        let mut fields = Vec::new();
        for (name, text) in &config.fields {
            let key = format!("input.fields.{name}");
            let column = COLUMNS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
                    err(
                        key.clone(),
                        format!("no such column; the columns are {}", names.join(", ")),
                    )
                })?;
            fields.push((column, Path::parse(text).map_err(|e| err(key, e))?));
        }
        for needed in ["instrument_token", "last_price"] {
            if !config.fields.contains_key(needed) {
                return Err(err(
                    format!("input.fields.{needed}"),
                    "a mapping names where the instrument and the last price are".into(),
                ));
            }
        }
        let mut scale = HashMap::new();
        let mut depth_price_scale = 1.0;
        for (name, &factor) in &config.scale {
            let key = format!("input.scale.{name}");
            if !SCALABLE.contains(&name.as_str()) {
                return Err(err(
                    key,
                    format!("only {} take a scale", SCALABLE.join(", ")),
                ));
            }
            if !(factor.is_finite() && factor != 0.0) {
                return Err(err(key, "must be a finite, non-zero factor".into()));
            }
            if name == "depth_price" {
                depth_price_scale = factor;
            } else if let Some((_, column)) = COLUMNS.iter().find(|(n, _)| n == name) {
                scale.insert(*column, factor);
            }
        }
        let mut level = [
            "price".to_string(),
            "quantity".to_string(),
            "orders".to_string(),
        ];
        for (name, member) in &config.depth_level {
            let at = ["price", "quantity", "orders"]
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| {
                    err(
                        format!("input.depth_level.{name}"),
                        "a level's members are price, quantity and orders".into(),
                    )
                })?;
            level[at] = member.clone();
        }
        Ok(Mapping {
            fields,
            scale,
            depth_price_scale,
            level,
            tokens: config.tokens.clone(),
        })
    }

    /// Whether this mapping reads `obj`: its instrument and last price are there.
    pub fn applies(&self, obj: &Map<String, Value>) -> bool {
        self.fields
            .iter()
            .filter(|(c, _)| matches!(c, Column::InstrumentToken | Column::LastPrice))
            .all(|(_, path)| path.get(obj).is_some())
    }

    /// Why the mapping does not read `obj`: the path of the instrument or the last price that is
    /// not there.
    pub fn not_applying(&self, obj: &Map<String, Value>) -> DecodeError {
        let absent: Vec<&str> = self
            .fields
            .iter()
            .filter(|(c, p)| {
                matches!(c, Column::InstrumentToken | Column::LastPrice) && p.get(obj).is_none()
            })
            .map(|(_, p)| p.as_str())
            .collect();
        DecodeError {
            code: "missing-field",
            message: format!(
                "the input mapping's {} is not in the tick (and input.builtin_shapes is off)",
                absent.join(" and ")
            ),
        }
    }

    /// Reads one tick object; its members no path starts at are returned as its extra.
    pub fn decode(
        &self,
        obj: &Map<String, Value>,
        options: &DecodeOptions,
        kafka_timestamp_ms: Option<i64>,
    ) -> Result<(Tick, Map<String, Value>), DecodeError> {
        let value = |column: Column| -> Option<(&Path, &Value)> {
            self.fields
                .iter()
                .find(|(c, _)| *c == column)
                .and_then(|(_, p)| p.get(obj).map(|v| (p, v)))
        };
        let scale = |column: Column| self.scale.get(&column).copied().unwrap_or(1.0);
        let float = |column: Column| -> Result<Option<f64>, DecodeError> {
            value(column)
                .map(|(p, v)| number(&p.text, v).map(|x| x * scale(column)))
                .transpose()
        };
        let int = |column: Column| -> Result<Option<i64>, DecodeError> {
            value(column).map(|(p, v)| whole(&p.text, v)).transpose()
        };
        let (token_path, token) =
            value(Column::InstrumentToken).ok_or_else(|| missing("instrument_token"))?;
        let instrument_token = self.token(&token_path.text, token)?;
        let last_price = float(Column::LastPrice)?.ok_or_else(|| missing("last_price"))?;
        let offset = options.kite_offset_minutes;
        let unit = options.epoch_unit;
        let time = |column: Column| -> Result<Option<i64>, DecodeError> {
            value(column)
                .map(|(p, v)| read_time(&p.text, v, offset, unit))
                .transpose()
        };
        let own = match time(Column::Timestamp)? {
            Some(t) => Some(t),
            None => time(Column::ExchangeTimestamp)?,
        };
        let (timestamp_us, from_kafka) = match own {
            Some(t) => (t, false),
            None => match kafka_timestamp_ms.and_then(crate::time::from_epoch_millis) {
                Some(us) => (us, true),
                None => return Err(missing("timestamp")),
            },
        };
        let mut t = Tick::bare(timestamp_us, instrument_token, last_price);
        t.timestamp_from_kafka = from_kafka;
        t.volume = int(Column::Volume)?;
        t.buy_quantity = int(Column::BuyQuantity)?;
        t.sell_quantity = int(Column::SellQuantity)?;
        t.last_quantity = int(Column::LastQuantity)?;
        t.change = float(Column::Change)?;
        t.net_change = float(Column::NetChange)?;
        t.average_price = float(Column::AveragePrice)?;
        t.open = float(Column::Open)?;
        t.high = float(Column::High)?;
        t.low = float(Column::Low)?;
        t.close = float(Column::Close)?;
        t.oi = int(Column::Oi)?;
        t.oi_day_high = int(Column::OiDayHigh)?;
        t.oi_day_low = int(Column::OiDayLow)?;
        t.last_trade_time_us = time(Column::LastTradeTime)?;
        t.exchange_timestamp_us = time(Column::ExchangeTimestamp)?;
        t.mode = match value(Column::Mode) {
            None => None,
            Some((p, v)) => Some(match v.as_str() {
                Some("ltp") => TickMode::Ltp,
                Some("quote") => TickMode::Quote,
                Some("full") => TickMode::Full,
                _ => return Err(wrong_type(&p.text, "\"ltp\", \"quote\" or \"full\"", v)),
            }),
        };
        t.tradable = match value(Column::Tradable) {
            None => None,
            Some((_, Value::Bool(b))) => Some(*b),
            Some((p, v)) => return Err(wrong_type(&p.text, "true or false", v)),
        };
        let buy = value(Column::DepthBuy);
        let sell = value(Column::DepthSell);
        if buy.is_some() || sell.is_some() {
            t.has_depth = true;
            t.depth_buy = buy
                .map(|(p, v)| self.levels(&p.text, v))
                .transpose()?
                .unwrap_or_default();
            t.depth_sell = sell
                .map(|(p, v)| self.levels(&p.text, v))
                .transpose()?
                .unwrap_or_default();
        }
        let roots: Vec<&str> = self.fields.iter().map(|(_, p)| p.root()).collect();
        let extra = obj
            .iter()
            .filter(|(k, v)| !roots.contains(&k.as_str()) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        Ok((t, extra))
    }

    /// The instrument: an integer (or an integer string), else a symbol of the token table.
    fn token(&self, path: &str, v: &Value) -> Result<u64, DecodeError> {
        if let Some(n) = v.as_u64() {
            return Ok(n);
        }
        let Some(text) = v.as_str() else {
            return Err(wrong_type(path, "an instrument token or a symbol", v));
        };
        if let Ok(n) = text.trim().parse::<u64>() {
            return Ok(n);
        }
        self.tokens.get(text).copied().ok_or_else(|| DecodeError {
            code: "unknown-symbol",
            message: format!(
                "{path}: symbol {text:?} is not in input.tokens ({} symbols)",
                self.tokens.len()
            ),
        })
    }

    /// A side of the book: an array of levels, or one level as an object.
    fn levels(&self, path: &str, v: &Value) -> Result<Vec<DepthLevel>, DecodeError> {
        // Names are built only for a refusal: a book is read without an allocation a member.
        let one = |at: &dyn Fn() -> String, level: &Value| -> Result<DepthLevel, DecodeError> {
            let [price, quantity, orders] = &self.level;
            let member = |name: &str| -> Result<&Value, DecodeError> {
                level
                    .get(name)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| missing(&format!("{}.{name}", at())))
            };
            let read = |name: &str, v: &Value, f: fn(&str, &Value) -> Result<f64, DecodeError>| {
                f("", v).map_err(|_| f(&format!("{}.{name}", at()), v).unwrap_err())
            };
            let price = read(price, member(price)?, number)? * self.depth_price_scale;
            let quantity = member(quantity)?;
            let quantity = whole("", quantity).map_err(|_| {
                whole(&format!("{}.{}", at(), self.level[1]), quantity).unwrap_err()
            })?;
            // A feed without order counts: 0.
            let orders = match level.get(orders.as_str()).filter(|v| !v.is_null()) {
                None => 0,
                Some(v) => whole("", v)
                    .map_err(|_| whole(&format!("{}.{}", at(), self.level[2]), v).unwrap_err())?,
            };
            Ok(DepthLevel {
                price,
                quantity,
                orders,
            })
        };
        let levels = match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, l)| one(&|| format!("{path}[{i}]"), l))
                .collect::<Result<Vec<_>, _>>()?,
            Value::Object(_) => vec![one(&|| path.to_string(), v)?],
            other => return Err(wrong_type(path, "a list of levels or one level", other)),
        };
        if levels.len() > crate::columns::MAX_LEVELS {
            return Err(DecodeError {
                code: "too-deep",
                message: format!("{path} has {} levels", levels.len()),
            });
        }
        Ok(levels)
    }
}

/// A number, or a string holding one (feeds that quote their numbers).
fn number(path: &str, v: &Value) -> Result<f64, DecodeError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
    .ok_or_else(|| wrong_type(path, "a number (or a string of one)", v))
}

/// An integer, or a string of one; an integral float is accepted.
fn whole(path: &str, v: &Value) -> Result<i64, DecodeError> {
    let parsed = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| wrong_type(path, "an integer (or a string of one)", v))
}

fn read_time(
    path: &str,
    v: &Value,
    offset_minutes: i32,
    unit: Option<EpochUnit>,
) -> Result<i64, DecodeError> {
    match v {
        Value::String(s) => match s.trim().parse::<i64>() {
            // An epoch number written as a string.
            Ok(n) => epoch_micros(n, unit).ok_or_else(|| wrong_type(path, "a time", v)),
            Err(_) => parse_timestamp(s, offset_minutes).map_err(|e| DecodeError {
                code: "bad-timestamp",
                message: format!("{path}: {}", e.0),
            }),
        },
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| epoch_micros(n, unit))
            .ok_or_else(|| wrong_type(path, "a time: an epoch integer or a string", v)),
        other => Err(wrong_type(
            path,
            "a time: a string or an epoch number",
            other,
        )),
    }
}

/// A symbol → token table from CSV text: `symbol,token` a line, a header line allowed, `#`
/// comments. The error names the line.
pub fn parse_tokens(text: &str) -> Result<HashMap<String, u64>, String> {
    let mut tokens = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((symbol, token)) = line.split_once(',') else {
            return Err(format!("line {}: expected symbol,token", n + 1));
        };
        let (symbol, token) = (
            symbol.trim().trim_matches('"'),
            token.trim().trim_matches('"'),
        );
        match token.parse::<u64>() {
            Ok(t) => {
                tokens.insert(symbol.to_string(), t);
            }
            Err(_) if n == 0 => {} // a header
            Err(_) => return Err(format!("line {}: token {token:?} is not an integer", n + 1)),
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_keys_indices_and_quoted_keys() {
        let v = json!({"quote": {"bid": [{"px": 1.5}]}, "52.week": 9, "a b": 2});
        let obj = v.as_object().unwrap();
        for (text, want) in [
            ("quote.bid[0].px", Some(json!(1.5))),
            ("[\"52.week\"]", Some(json!(9))),
            ("a b", Some(json!(2))),
            ("quote.bid[1].px", None),
            ("quote.ask", None),
        ] {
            let path = Path::parse(text).unwrap();
            assert_eq!(path.get(obj).cloned(), want, "{text}");
        }
        for bad in ["", ".a", "a..b", "[0].a", "a[x]", "a[1", "[\"a"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    fn mapping(fields: &[(&str, &str)], scale: &[(&str, f64)]) -> Result<Mapping, MappingError> {
        Mapping::new(&MappingConfig {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scale: scale.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            depth_level: [("orders".to_string(), "no of orders".to_string())].into(),
            tokens: [("AAPL".to_string(), 265_598)].into(),
        })
    }

    #[test]
    fn a_broken_mapping_is_refused_naming_the_key() {
        let base = [("instrument_token", "token"), ("last_price", "ltp")];
        let e = mapping(&[base[0]], &[]).unwrap_err();
        assert_eq!(e.key, "input.fields.last_price");
        let e = mapping(&[base[0], base[1], ("bid", "b")], &[]).unwrap_err();
        assert_eq!(e.key, "input.fields.bid");
        assert!(e.message.contains("last_price"), "{e:?}");
        let e = mapping(&[base[0], base[1], ("open", "a..b")], &[]).unwrap_err();
        assert_eq!(e.key, "input.fields.open");
        let e = mapping(&base, &[("volume", 0.01)]).unwrap_err();
        assert_eq!(e.key, "input.scale.volume");
        let e = mapping(&base, &[("last_price", 0.0)]).unwrap_err();
        assert_eq!(e.key, "input.scale.last_price");
    }

    #[test]
    fn a_mapped_tick_is_scaled_its_strings_read_and_its_other_members_kept() {
        let m = mapping(
            &[
                ("instrument_token", "token"),
                ("last_price", "ltp"),
                ("exchange_timestamp", "t"),
                ("volume", "v"),
                ("depth_buy", "best_buy"),
                ("depth_sell", "ask"),
            ],
            &[("last_price", 0.01), ("depth_price", 0.01)],
        )
        .unwrap();
        let v = json!({"token": "2885", "ltp": 245030, "t": 1700120700000_i64, "v": "1234",
            "best_buy": [{"price": 245025, "quantity": 100, "no of orders": 5}],
            "ask": {"price": 245030, "quantity": 7}, "seq": 9});
        let obj = v.as_object().unwrap();
        assert!(m.applies(obj));
        let (t, extra) = m.decode(obj, &DecodeOptions::default(), None).unwrap();
        assert_eq!((t.instrument_token, t.last_price), (2885, 2450.3));
        assert_eq!(t.timestamp_us, 1_700_120_700_000_000);
        assert_eq!(t.volume, Some(1234), "a numeric string");
        assert_eq!(t.depth_buy[0].price, 2450.25);
        assert_eq!(t.depth_buy[0].orders, 5);
        assert_eq!(
            (t.depth_sell[0].quantity, t.depth_sell[0].orders),
            (7, 0),
            "one level, no count"
        );
        assert_eq!(extra, json!({"seq": 9}).as_object().unwrap().clone());
        // A symbol from the table; one not in it is refused, naming it.
        let aapl = json!({"token": "AAPL", "ltp": 100});
        let (t, _) = m
            .decode(
                aapl.as_object().unwrap(),
                &DecodeOptions::default(),
                Some(5),
            )
            .unwrap();
        assert_eq!(
            (t.instrument_token, t.timestamp_from_kafka),
            (265_598, true)
        );
        let e = m
            .decode(
                json!({"token": "TSLA", "ltp": 1}).as_object().unwrap(),
                &DecodeOptions::default(),
                Some(5),
            )
            .unwrap_err();
        assert_eq!(e.code, "unknown-symbol");
        assert!(e.message.contains("\"TSLA\""), "{e}");
        let e = m
            .decode(
                json!({"token": 1, "ltp": "x"}).as_object().unwrap(),
                &DecodeOptions::default(),
                Some(5),
            )
            .unwrap_err();
        assert_eq!(e.code, "wrong-type");
        assert!(e.message.contains("`ltp`"), "{e}");
        // Another shape: not this mapping's.
        assert!(
            !m.applies(
                json!({"instrument_token": 1, "last_price": 2.0})
                    .as_object()
                    .unwrap()
            )
        );
    }

    #[test]
    fn token_tables_read_csv_with_a_header_and_comments() {
        let t = parse_tokens("symbol,token\n# a comment\nAAPL, 265598\n\"MSFT\",272093\n").unwrap();
        assert_eq!(t.get("AAPL"), Some(&265_598));
        assert_eq!(t.get("MSFT"), Some(&272_093));
        let e = parse_tokens("AAPL,1\nMSFT,x\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_tokens("AAPL\n").unwrap_err().contains("line 1"));
    }
}
