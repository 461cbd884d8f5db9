//! The ticker's scanner: the fast path of Kite's shapes. A well-formed tick — every key one a
//! column takes (or the quote API's circuit limits, kept for `extra`), each value of its column's
//! type, no key twice, no `null` — is read in one pass over the bytes by [`Scanner`], the
//! sample's scanner's cursor, without a `Value` tree or serde's float parser. Anything else (an
//! unknown key for `extra`, a conflict, a wrong type, an escape, a time it cannot read, a mode's
//! missing field) makes it answer `None`, and the thorough decoder
//! ([`super::shapes::decode_object`]) reads the message again and names the field. The two give
//! the same ticks: `tests::the_fast_path_agrees_with_the_thorough_decoder` holds them to it.

use super::DecodeOptions;
use super::scan::Scanner;
use super::shapes::Shape;
use crate::time::{EpochUnit, epoch_micros, parse_timestamp_bytes};
use crate::{DepthLevel, Tick, TickMode};
use serde_json::{Number, Value};

/// A time as a client wrote it: a string, or an integer epoch (a fractional one is left to the
/// thorough decoder).
#[derive(Debug, Clone, Copy)]
enum Time<'a> {
    Text(&'a [u8]),
    Int(i64),
}

impl<'a> Time<'a> {
    fn scan(s: &mut Scanner<'a>) -> Option<Self> {
        s.skip_ws();
        match s.peek()? {
            b'"' => {
                s.expect(b'"')?;
                s.string_body().map(Time::Text)
            }
            // `-0` is a float to serde_json: the thorough decoder reads it as a fractional epoch.
            b'-' if s.peek_at(1) == Some(b'0') => None,
            _ => s.int().map(Time::Int),
        }
    }

    /// µs, as the thorough decoder reads it; `None` where it would refuse.
    fn micros(self, offset_minutes: i32, unit: Option<EpochUnit>) -> Option<i64> {
        match self {
            Time::Text(s) => parse_timestamp_bytes(s, offset_minutes).ok(),
            Time::Int(n) => epoch_micros(n, unit),
        }
    }
}

/// `{"buy": [...], "sell": [...]}`, both sides, at most the columns' levels each.
struct Depth {
    buy: Vec<DepthLevel>,
    sell: Vec<DepthLevel>,
}

impl Depth {
    fn scan(s: &mut Scanner<'_>) -> Option<Self> {
        const SIDES: [&[u8]; 2] = [b"\"buy\":", b"\"sell\":"];
        s.expect(b'{')?;
        let (mut buy, mut sell) = (None, None);
        // A level's keys in the order the first level wrote them: the next levels' predictions.
        let mut order = LevelOrder::default();
        let mut predicted = 0;
        loop {
            let side = match s.field_of(&SIDES, [predicted, predicted])? {
                0 => &mut buy,
                _ => &mut sell,
            };
            predicted = 1;
            if side.replace(levels(s, &mut order)?).is_some() {
                return None;
            }
            if !s.more(b'}')? {
                break;
            }
        }
        Some(Depth {
            buy: buy?,
            sell: sell?,
        })
    }
}

/// A level's keys, `"price"`, `"orders"`, `"quantity"`, as [`LevelOrder`] indexes them.
const LEVEL_KEYS: [&[u8]; 3] = [b"\"price\":", b"\"orders\":", b"\"quantity\":"];

/// The order of a level's keys as last written (Kite's ticker and quote API differ), each one's
/// successor: one comparison a key once the first level is read.
struct LevelOrder([usize; 4]);

impl Default for LevelOrder {
    fn default() -> Self {
        // Our producers' and the sample's: price, orders, quantity.
        Self([1, 2, 3, 0])
    }
}

/// `[{"price": p, "orders": o, "quantity": q}, …]` (the keys in any order, all three), at most
/// [`MAX_LEVELS`](crate::columns::MAX_LEVELS).
fn levels(s: &mut Scanner<'_>, order: &mut LevelOrder) -> Option<Vec<DepthLevel>> {
    s.expect(b'[')?;
    // Kite's books are 5 deep.
    let mut levels = Vec::with_capacity(5);
    s.skip_ws();
    if s.peek() == Some(b']') {
        s.expect(b']')?;
        return Some(levels);
    }
    loop {
        s.expect(b'{')?;
        let (mut price, mut orders, mut quantity) = (None, None, None);
        // Index 3 stands for the level's start.
        let mut prev = 3;
        loop {
            let predicted = order.0[prev];
            let key = s.field_of(&LEVEL_KEYS, [predicted, predicted])?;
            order.0[prev] = key;
            prev = key;
            match key {
                0 => once(&mut price, s.float()),
                1 => once(&mut orders, s.int()),
                _ => once(&mut quantity, s.int()),
            }?;
            if !s.more(b'}')? {
                break;
            }
        }
        levels.push(DepthLevel {
            price: price?,
            orders: orders?,
            quantity: quantity?,
        });
        if levels.len() > crate::columns::MAX_LEVELS {
            return None;
        }
        if !s.more(b']')? {
            return Some(levels);
        }
    }
}

#[derive(Default)]
struct Ohlc {
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
}

impl Ohlc {
    /// `{"open": …, "high": …, "low": …, "close": …}`, any of them.
    fn scan(s: &mut Scanner<'_>) -> Option<Self> {
        const KEYS: [&[u8]; 4] = [b"\"open\":", b"\"high\":", b"\"low\":", b"\"close\":"];
        s.expect(b'{')?;
        let mut o = Ohlc::default();
        s.skip_ws();
        if s.peek() == Some(b'}') {
            s.expect(b'}')?;
            return Some(o);
        }
        let mut predicted = 0;
        loop {
            let key = s.field_of(&KEYS, [predicted, predicted])?;
            predicted = key + 1;
            let slot = match key {
                0 => &mut o.open,
                1 => &mut o.high,
                2 => &mut o.low,
                _ => &mut o.close,
            };
            once(slot, s.float())?;
            if !s.more(b'}')? {
                return Some(o);
            }
        }
    }
}

/// Every key of every built-in shape, each under its own name (a field given under two names is
/// refused after, not merged).
#[derive(Default)]
struct AnyTick<'a> {
    instrument_token: Option<u64>,
    last_price: Option<f64>,
    timestamp: Option<Time<'a>>,
    exchange_timestamp: Option<Time<'a>>,
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
    mode: Option<&'a [u8]>,
    tradable: Option<bool>,
    depth: Option<Depth>,
    /// The quote API's circuit limits: no column takes them; they go to `extra` as written.
    lower_circuit_limit: Option<&'a str>,
    upper_circuit_limit: Option<&'a str>,
}

/// Sets `slot` to `value`; `None` when the key was already given.
#[inline(always)]
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    slot.replace(value?).is_none().then_some(())
}

/// The keys [`AnyTick::scan`] reads, the ticker's in the order KiteTicker writes them (each one's
/// successor is the next), then the others.
const TICK_KEYS: [&[u8]; 30] = [
    b"\"tradable\":",
    b"\"mode\":",
    b"\"instrument_token\":",
    b"\"last_price\":",
    b"\"last_traded_quantity\":",
    b"\"average_traded_price\":",
    b"\"volume_traded\":",
    b"\"total_buy_quantity\":",
    b"\"total_sell_quantity\":",
    b"\"ohlc\":",
    b"\"change\":",
    b"\"last_trade_time\":",
    b"\"oi\":",
    b"\"oi_day_high\":",
    b"\"oi_day_low\":",
    b"\"exchange_timestamp\":",
    b"\"depth\":",
    b"\"timestamp\":",
    b"\"last_quantity\":",
    b"\"buy_quantity\":",
    b"\"sell_quantity\":",
    b"\"volume\":",
    b"\"average_price\":",
    b"\"net_change\":",
    b"\"lower_circuit_limit\":",
    b"\"upper_circuit_limit\":",
    b"\"open\":",
    b"\"high\":",
    b"\"low\":",
    b"\"close\":",
];

/// A key's successor in the quote API's order (`instrument_token`, `timestamp`,
/// `last_trade_time`, `last_price`, …, `ohlc`, `depth`), as an index into [`TICK_KEYS`]; the
/// start of an object is index 30.
const QUOTE_NEXT: [usize; 31] = {
    let order = [
        2, 17, 11, 3, 18, 19, 20, 21, 22, 12, 13, 14, 23, 24, 25, 9, 16,
    ];
    let mut next = [0; 31];
    let mut i = 0;
    while i < 31 {
        // Keys outside the order: predict the ticker's successor.
        next[i] = i + 1;
        i += 1;
    }
    next[30] = order[0];
    let mut k = 0;
    while k + 1 < order.len() {
        next[order[k]] = order[k + 1];
        k += 1;
    }
    next
};

impl<'a> AnyTick<'a> {
    /// One tick object, its members in any order.
    fn scan(s: &mut Scanner<'a>) -> Option<Self> {
        s.expect(b'{')?;
        let mut t = AnyTick::default();
        // The ticker's first key, or the quote API's.
        let mut predicted = [0, QUOTE_NEXT[30]];
        loop {
            let key = s.field_of(&TICK_KEYS, predicted)?;
            predicted = [key + 1, QUOTE_NEXT[key]];
            match key {
                0 => once(&mut t.tradable, boolean(s)),
                1 => once(&mut t.mode, s.expect(b'"').and_then(|()| s.string_body())),
                2 => once(&mut t.instrument_token, s.uint()),
                3 => once(&mut t.last_price, s.float()),
                4 => once(&mut t.last_traded_quantity, s.int()),
                5 => once(&mut t.average_traded_price, s.float()),
                6 => once(&mut t.volume_traded, s.int()),
                7 => once(&mut t.total_buy_quantity, s.int()),
                8 => once(&mut t.total_sell_quantity, s.int()),
                9 => once(&mut t.ohlc, Ohlc::scan(s)),
                10 => once(&mut t.change, s.float()),
                11 => once(&mut t.last_trade_time, Time::scan(s)),
                12 => once(&mut t.oi, s.int()),
                13 => once(&mut t.oi_day_high, s.int()),
                14 => once(&mut t.oi_day_low, s.int()),
                15 => once(&mut t.exchange_timestamp, Time::scan(s)),
                16 => once(&mut t.depth, Depth::scan(s)),
                17 => once(&mut t.timestamp, Time::scan(s)),
                18 => once(&mut t.last_quantity, s.int()),
                19 => once(&mut t.buy_quantity, s.int()),
                20 => once(&mut t.sell_quantity, s.int()),
                21 => once(&mut t.volume, s.int()),
                22 => once(&mut t.average_price, s.float()),
                23 => once(&mut t.net_change, s.float()),
                24 => once(&mut t.lower_circuit_limit, s.raw_number()),
                25 => once(&mut t.upper_circuit_limit, s.raw_number()),
                26 => once(&mut t.open, s.float()),
                27 => once(&mut t.high, s.float()),
                28 => once(&mut t.low, s.float()),
                _ => once(&mut t.close, s.float()),
            }?;
            if !s.more(b'}')? {
                return Some(t);
            }
        }
    }
}

/// `true` or `false`.
fn boolean(s: &mut Scanner<'_>) -> Option<bool> {
    s.skip_ws();
    match s.peek()? {
        b't' => s.literal(b"true").map(|()| true),
        b'f' => s.literal(b"false").map(|()| false),
        _ => None,
    }
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
        let mut t = Tick::bare(timestamp_us, self.instrument_token?, self.last_price?);
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
        let nested = self.ohlc.unwrap_or_default();
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
            Some(b"ltp") => Some(TickMode::Ltp),
            Some(b"quote") => Some(TickMode::Quote),
            Some(b"full") => Some(TickMode::Full),
            Some(_) => return None,
        };
        t.tradable = self.tradable;
        if let Some(depth) = self.depth {
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

/// The members no column takes that the fast path reads: the quote API's circuit limits, as
/// written (an integer stays one), in key order as [`super::shapes::extra_members`] gives them.
#[derive(Debug, Default)]
pub struct Kept([Option<Number>; 2]);

impl Kept {
    const KEYS: [&'static str; 2] = ["lower_circuit_limit", "upper_circuit_limit"];

    pub fn members(&self) -> impl Iterator<Item = (&'static str, Value)> + '_ {
        Self::KEYS
            .iter()
            .zip(&self.0)
            .filter_map(|(k, v)| Some((*k, Value::Number(v.clone()?))))
    }
}

/// A tick and its members no column takes.
pub type WithExtra = (Tick, Kept);

impl AnyTick<'_> {
    fn with_extra(
        mut self,
        options: &DecodeOptions,
        kafka_timestamp_ms: Option<i64>,
    ) -> Option<WithExtra> {
        let mut kept = Kept::default();
        for (slot, raw) in kept.0.iter_mut().zip([
            self.lower_circuit_limit.take(),
            self.upper_circuit_limit.take(),
        ]) {
            if let Some(raw) = raw {
                *slot = Some(raw.parse::<Number>().ok()?);
            }
        }
        Some((self.into_tick(options, kafka_timestamp_ms)?, kept))
    }
}

/// The tick of a well-formed message of one tick; `None` for anything the thorough decoder must
/// read (see the module's notes).
pub fn tick(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Option<WithExtra> {
    let mut s = Scanner::new(bytes);
    let tick = AnyTick::scan(&mut s)?;
    s.at_end().then_some(())?;
    tick.with_extra(options, kafka_timestamp_ms)
}

/// The ticks of a well-formed JSON list of ticks; `None` for anything else (one bad element, and
/// the thorough decoder reads the list, tick by tick).
pub fn list(
    bytes: &[u8],
    options: &DecodeOptions,
    kafka_timestamp_ms: Option<i64>,
) -> Option<Vec<WithExtra>> {
    let mut s = Scanner::new(bytes);
    s.expect(b'[')?;
    let mut ticks = Vec::new();
    loop {
        ticks.push(AnyTick::scan(&mut s)?.with_extra(options, kafka_timestamp_ms)?);
        if !s.more(b']')? {
            break;
        }
    }
    s.at_end().then_some(ticks)
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
            json!(5.0),
            json!(-0.0),
            json!(1e300),
            json!(u64::MAX),
            json!("ltp"),
            json!("fu\"ll"),
            json!({"buy": [], "sell": [], "x": 1}),
            json!([{"open": 1.0}]),
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
            assert_eq!(kept(&fast_extra), extra(&v), "{v}");
        }
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let (mut fast_taken, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let mut v = examples()[r.below(5)].clone();
            for _ in 0..=r.below(3) {
                mutate(&mut v, &mut r);
            }
            // The scanner reads text: whitespace between every token, too.
            let text = if r.below(4) == 0 {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                v.to_string()
            };
            match tick(text.as_bytes(), &options, Some(1_000)) {
                Some((fast, fast_extra)) => {
                    fast_taken += 1;
                    assert_eq!(Ok(&fast), thorough(&v).as_ref(), "{text}");
                    assert_eq!(kept(&fast_extra), extra(&v), "{text}");
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
        for text in ["[]", "[{}]", "[1]", "{\"a\":1}", "", " [ ", "[ {} , ]"] {
            assert_eq!(list_len(text), None, "{text}");
        }
        // Lists of mutated ticks agree tick by tick.
        let mut lists = 0;
        for _ in 0..2_000 {
            let mut ticks = Vec::new();
            for _ in 0..=r.below(4) {
                let mut v = examples()[r.below(5)].clone();
                if r.below(3) == 0 {
                    mutate(&mut v, &mut r);
                }
                ticks.push(v);
            }
            let text = Value::Array(ticks.clone()).to_string();
            if let Some(fast) = super::list(text.as_bytes(), &options, Some(1_000)) {
                lists += 1;
                assert_eq!(fast.len(), ticks.len());
                for ((fast, fast_extra), v) in fast.iter().zip(&ticks) {
                    assert_eq!(Ok(fast), thorough(v).as_ref(), "{text}");
                    assert_eq!(kept(fast_extra), extra(v), "{text}");
                }
            }
        }
        assert!(lists > 500, "{lists}");
    }

    /// A key given twice, a `null`, an escape: the scanner leaves each to the thorough decoder
    /// (which takes a repeated key's last value, and names what it refuses).
    #[test]
    fn the_scanner_declines_what_it_does_not_read() {
        let options = DecodeOptions::default();
        let ltp = r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1573.15}"#;
        assert!(tick(ltp.as_bytes(), &options, Some(1)).is_some());
        for text in [
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1573.15, "last_price": 1}"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1573.15, "oi": null}"#,
            r#"{"mode": "l\u0074p", "instrument_token": 408065, "last_price": 1573.15}"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1573.15} x"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1573.15, "oi": 1.0}"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 01573.15}"#,
            r#"{"mode": "ltp", "instrument_token": 408065}"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1, "tradable": truth}"#,
            r#"{"mode": "ltp", "instrument_token": 408065, "last_price": 1, "ohlc": {"open": 1, "open": 2}}"#,
        ] {
            assert!(tick(text.as_bytes(), &options, Some(1)).is_none(), "{text}");
        }
    }

    fn kept(k: &Kept) -> serde_json::Map<String, Value> {
        k.members().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn list_len(text: &str) -> Option<usize> {
        list(text.as_bytes(), &DecodeOptions::default(), Some(1)).map(|t| t.len())
    }
}
