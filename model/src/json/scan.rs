//! The tick scanner: one pass over a message's bytes, straight into the batch's columns.
//!
//! It knows the tick's keys and reads exactly the JSON grammar, so the values it gives are the
//! ones [`decode_tick`](super::decode_tick) gives. It never refuses anything itself: a message it
//! does not recognise — an unknown or repeated key, an escape in a string, an integer written as
//! a float, a number out of range, a timestamp it cannot read, a book deeper than the columns
//! count — makes it answer `None` with the columns untouched, and the caller decodes that message
//! the thorough way, which names the field of any refusal. `tests::the_scanner_agrees_with_the_
//! reference` holds the two to the same answers over generated and mutated messages.
//!
//! Numbers: digits are read eight at a time where eight bytes remain; a decimal whose mantissa is
//! at most 2^53 with at most 22 fraction digits is `mantissa / 10^k`, exact and correctly rounded
//! (both are exact doubles and IEEE division rounds once); anything else goes to core's
//! `f64::from_str`, which is correctly rounded too, as serde_json's `float_roundtrip` is.

use crate::Fields;
use crate::columns::{MAX_LEVELS, TickColumns};

/// The fields of the sample's shape: every tick the scanner reads carries them all.
const SAMPLE_FIELDS: Fields = Fields(
    Fields::VOLUME.0
        | Fields::SELL_QUANTITY.0
        | Fields::LAST_QUANTITY.0
        | Fields::CHANGE.0
        | Fields::AVERAGE_PRICE.0
        | Fields::OPEN.0
        | Fields::HIGH.0
        | Fields::LOW.0
        | Fields::CLOSE.0
        | Fields::DEPTH.0,
);
use super::DecodeOptions;
use crate::time::{epoch_micros, parse_timestamp_bytes};

/// Decodes one message onto the end of `columns`, or leaves them as they were and answers `None`.
pub fn scan_into(bytes: &[u8], options: &DecodeOptions, columns: &mut TickColumns) -> Option<()> {
    let marks = Marks::of(columns);
    let canonical = Scanner { b: bytes, i: 0 }.canonical(options, columns);
    if canonical.is_some() {
        return Some(());
    }
    marks.restore(columns);
    let scanned = Scanner { b: bytes, i: 0 }.tick(options, columns);
    if scanned.is_none() {
        marks.restore(columns);
    }
    scanned
}

/// The lengths of the level columns before a message, to undo a half-scanned book.
struct Marks {
    bids: usize,
    asks: usize,
}

impl Marks {
    fn of(c: &TickColumns) -> Self {
        Self {
            bids: c.bid_price.len(),
            asks: c.ask_price.len(),
        }
    }

    fn restore(&self, c: &mut TickColumns) {
        c.bid_price.truncate(self.bids);
        c.bid_orders.truncate(self.bids);
        c.bid_quantity.truncate(self.bids);
        c.ask_price.truncate(self.asks);
        c.ask_orders.truncate(self.asks);
        c.ask_quantity.truncate(self.asks);
    }
}

/// `10^k` for the exact path: every power up to 22 is an exact double.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A number as written: its sign, its digits (at most 19 kept in `mantissa`), where the fraction
/// and the exponent are.
#[derive(Clone, Copy)]
struct Number {
    negative: bool,
    mantissa: u64,
    /// Significant digits seen (integer and fraction part), capped only by the text.
    digits: u32,
    fraction_digits: u32,
    has_exponent: bool,
    start: usize,
    end: usize,
}

impl Number {
    fn is_integer(&self) -> bool {
        self.fraction_digits == 0 && !self.has_exponent
    }
}

/// Every one of the tick's 13 keys seen.
const ALL: u16 = (1 << 13) - 1;

/// A tick's per-tick values, all read before any is pushed (a message may still be declined).
#[derive(Default)]
struct Scalars {
    timestamp_us: i64,
    token: u64,
    volume: i64,
    sell_quantity: i64,
    last_quantity: i64,
    /// last_price, change, average_price, open, high, low, close.
    prices: [f64; 7],
    bids: u8,
    asks: u8,
}

impl Scalars {
    #[inline(always)]
    fn push(&self, c: &mut TickColumns) {
        let [last_price, change, average_price, open, high, low, close] = self.prices;
        c.timestamp_us.push(self.timestamp_us);
        c.instrument_token.push(self.token);
        c.last_price.push(last_price);
        c.present.push(SAMPLE_FIELDS.0);
        c.volume.push(self.volume);
        c.buy_quantity.push(0);
        c.sell_quantity.push(self.sell_quantity);
        c.last_quantity.push(self.last_quantity);
        c.change.push(change);
        c.net_change.push(0.0);
        c.average_price.push(average_price);
        c.open.push(open);
        c.high.push(high);
        c.low.push(low);
        c.close.push(close);
        c.oi.push(0);
        c.oi_day_high.push(0);
        c.oi_day_low.push(0);
        c.last_trade_time_us.push(0);
        c.exchange_timestamp_us.push(0);
        c.mode.push(0);
        c.bid_count.push(self.bids);
        c.ask_count.push(self.asks);
    }
}

/// A cursor over a message's bytes that reads JSON's grammar exactly and answers `None` for
/// anything it does not read itself (the callers then leave the message to the thorough decoder).
/// The ticker's scanner ([`super::fast`]) reads with it too.
pub(super) struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }

    /// Whether only whitespace is left.
    pub(super) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.i == self.b.len()
    }

    /// The number next, as written (for a value kept as the message wrote it).
    pub(super) fn raw_number(&mut self) -> Option<&'a str> {
        let n = self.number()?;
        std::str::from_utf8(&self.b[n.start..n.end]).ok()
    }

    #[inline(always)]
    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The byte `k` past the next.
    pub(super) fn peek_at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    #[inline(always)]
    pub(super) fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.i += 1;
        }
    }

    /// The next byte past any whitespace, consumed.
    #[inline(always)]
    pub(super) fn next_token(&mut self) -> Option<u8> {
        self.skip_ws();
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline(always)]
    pub(super) fn expect(&mut self, c: u8) -> Option<()> {
        (self.next_token()? == c).then_some(())
    }

    /// A string's bytes, the opening quote already consumed; `None` on an escape or a control
    /// character (the thorough path reads those).
    #[inline(always)]
    pub(super) fn string_body(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }

    /// `"key":`, returning the key.
    #[inline(always)]
    pub(super) fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let k = self.string_body()?;
        self.expect(b':')?;
        Some(k)
    }

    /// `,` (more members follow) or `close` (the container ends).
    #[inline(always)]
    pub(super) fn more(&mut self, close: u8) -> Option<bool> {
        match self.next_token()? {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Option<Number> {
        self.skip_ws();
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let (int_len, mut mantissa) = digit_run(self.b, self.i, 0);
        let leading_zero = *self.b.get(self.i)? == b'0';
        if int_len == 0 || (leading_zero && int_len > 1) {
            return None;
        }
        let mut digits = if leading_zero { 0 } else { int_len as u32 };
        self.i += int_len;
        let mut fraction_digits = 0u32;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let (len, value) = digit_run(self.b, self.i, mantissa);
            if len == 0 {
                return None;
            }
            // Leading zeros of a fraction (0.0012) are not significant.
            let zeros = if digits == 0 {
                self.b[self.i..self.i + len]
                    .iter()
                    .take_while(|&&d| d == b'0')
                    .count()
            } else {
                0
            };
            mantissa = value;
            digits += (len - zeros) as u32;
            fraction_digits = len as u32;
            self.i += len;
        }
        let mut has_exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            has_exponent = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let at = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == at {
                return None;
            }
        }
        Some(Number {
            negative,
            mantissa,
            digits,
            fraction_digits,
            has_exponent,
            start,
            end: self.i,
        })
    }

    /// A signed integer in an `i64`'s range.
    #[inline(always)]
    pub(super) fn int(&mut self) -> Option<i64> {
        let n = self.number()?;
        if !n.is_integer() || n.digits > 19 {
            return None;
        }
        if n.negative {
            0i64.checked_sub_unsigned(n.mantissa)
        } else {
            i64::try_from(n.mantissa).ok()
        }
    }

    /// A non-negative integer that fits a `u64` (at most 19 digits).
    #[inline(always)]
    pub(super) fn uint(&mut self) -> Option<u64> {
        let n = self.number()?;
        if !n.is_integer() || n.negative || n.digits > 19 {
            return None;
        }
        Some(n.mantissa)
    }

    #[inline(always)]
    pub(super) fn float(&mut self) -> Option<f64> {
        let n = self.number()?;
        // Exact when the mantissa is (at most 2^53, and at most 19 digits were kept).
        let v = if !n.has_exponent
            && n.digits <= 19
            && n.mantissa <= 1 << 53
            && n.fraction_digits <= 22
        {
            n.mantissa as f64 / POW10[n.fraction_digits as usize]
        } else {
            let text = std::str::from_utf8(&self.b[n.start..n.end]).ok()?;
            let v: f64 = text.parse().ok()?;
            // Out of range: serde_json refuses what overflows; leave both extremes to it.
            if !v.is_finite() || (v == 0.0 && n.digits != 0) {
                return None;
            }
            return Some(v);
        };
        Some(if n.negative { -v } else { v })
    }

    fn timestamp(&mut self, options: &DecodeOptions) -> Option<i64> {
        let naive_offset_minutes = options.flat_offset_minutes;
        self.skip_ws();
        match self.peek()? {
            b'"' => {
                self.i += 1;
                // The sample's form has 26 characters, and no form the parser accepts holds a
                // quote or a backslash: no scan for the closing quote.
                if self.b.get(self.i + 26) == Some(&b'"') {
                    let text = self.b.get(self.i..self.i + 26)?;
                    if let Ok(us) = parse_timestamp_bytes(text, naive_offset_minutes) {
                        self.i += 27;
                        return Some(us);
                    }
                }
                parse_timestamp_bytes(self.string_body()?, naive_offset_minutes).ok()
            }
            // An epoch number (see `epoch_micros`). JSON's `-0` is a float to serde_json, which the reference
            // refuses here: left to it, as is any fraction.
            b'-' if self.peek_at(1) == Some(b'0') => None,
            b'-' | b'0'..=b'9' => epoch_micros(self.int()?, options.epoch_unit),
            _ => None,
        }
    }

    /// The member's key as an index into `keys` (each written `"name":`), trying `predicted` —
    /// the usual order's next — first: one comparison instead of a scan. `None` for a key not in
    /// `keys`.
    #[inline(always)]
    fn field(&mut self, keys: &[&[u8]], predicted: usize) -> Option<usize> {
        self.field_of(keys, [predicted, predicted])
    }

    /// [`Scanner::field`] with two predictions (the usual orders of two shapes), tried in turn.
    #[inline(always)]
    pub(super) fn field_of(&mut self, keys: &[&[u8]], predicted: [usize; 2]) -> Option<usize> {
        self.skip_ws();
        debug_assert!(keys.iter().all(|k| (4..=24).contains(&k.len())));
        let rest = self.b.get(self.i..)?;
        for (n, p) in predicted.into_iter().enumerate() {
            if n == 1 && p == predicted[0] {
                break;
            }
            let pattern = keys.get(p).copied().unwrap_or_default();
            if starts_with_key(rest, pattern) {
                self.i += pattern.len();
                return Some(p);
            }
        }
        let name = self.key()?;
        keys.iter().position(|k| &k[1..k.len() - 2] == name)
    }

    /// `text` next, exactly (no whitespace skipped).
    #[inline(always)]
    pub(super) fn literal(&mut self, text: &[u8]) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        let matched = if text.len() < 4 {
            rest.starts_with(text)
        } else {
            starts_with_key(rest, text)
        };
        if matched {
            self.i += text.len();
            Some(())
        } else {
            None
        }
    }

    /// The form our producers write, and serde_json writes the sample's ticks in: compact, the
    /// keys in the usual order. Straight-line: each key with its punctuation is one comparison.
    /// Any other form is [`Scanner::tick`]'s.
    #[inline(always)]
    fn canonical(mut self, options: &DecodeOptions, c: &mut TickColumns) -> Option<()> {
        self.literal(b"{\"timestamp\":")?;
        let timestamp_us = self.timestamp(options)?;
        self.literal(b",\"instrument_token\":")?;
        let token = self.uint()?;
        self.literal(b",\"last_price\":")?;
        let last_price = self.float()?;
        self.literal(b",\"volume\":")?;
        let volume = self.int()?;
        self.literal(b",\"sell_quantity\":")?;
        let sell_quantity = self.int()?;
        self.literal(b",\"last_quantity\":")?;
        let last_quantity = self.int()?;
        self.literal(b",\"change\":")?;
        let change = self.float()?;
        self.literal(b",\"average_price\":")?;
        let average_price = self.float()?;
        self.literal(b",\"open\":")?;
        let open = self.float()?;
        self.literal(b",\"high\":")?;
        let high = self.float()?;
        self.literal(b",\"low\":")?;
        let low = self.float()?;
        self.literal(b",\"close\":")?;
        let close = self.float()?;
        self.literal(b",\"depth\":{\"buy\":")?;
        let bids =
            self.canonical_levels(&mut c.bid_price, &mut c.bid_orders, &mut c.bid_quantity)?;
        self.literal(b",\"sell\":")?;
        let asks =
            self.canonical_levels(&mut c.ask_price, &mut c.ask_orders, &mut c.ask_quantity)?;
        self.literal(b"}}")?;
        if self.i != self.b.len() {
            return None;
        }
        Scalars {
            timestamp_us,
            token,
            volume,
            sell_quantity,
            last_quantity,
            prices: [last_price, change, average_price, open, high, low, close],
            bids,
            asks,
        }
        .push(c);
        Some(())
    }

    /// A side of the book in the canonical form.
    #[inline(always)]
    fn canonical_levels(
        &mut self,
        prices: &mut Vec<f64>,
        orders: &mut Vec<i64>,
        quantities: &mut Vec<i64>,
    ) -> Option<u8> {
        if self.literal(b"[]").is_some() {
            return Some(0);
        }
        self.literal(b"[")?;
        let mut count = 0usize;
        loop {
            self.literal(b"{\"price\":")?;
            let price = self.float()?;
            self.literal(b",\"orders\":")?;
            let order = self.int()?;
            self.literal(b",\"quantity\":")?;
            let quantity = self.int()?;
            count += 1;
            if count > MAX_LEVELS {
                return None;
            }
            prices.push(price);
            orders.push(order);
            quantities.push(quantity);
            match self.b.get(self.i..self.i + 2)? {
                b"}," => self.i += 2,
                b"}]" => {
                    self.i += 2;
                    return u8::try_from(count).ok();
                }
                _ => return None,
            }
        }
    }

    /// The members of an object whose `{` is consumed, up to its `}`: each key one of `keys`,
    /// none twice, and `read` reads each value. Answers which keys were seen (bit i: `keys[i]`).
    #[inline(always)]
    fn object(
        &mut self,
        keys: &[&[u8]],
        mut read: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<u16> {
        let mut seen = 0u16;
        let mut predicted = 0;
        loop {
            let field = self.field(keys, predicted)?;
            read(self, field)?;
            let bit = 1 << field;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            predicted = field + 1;
            if !self.more(b'}')? {
                return Some(seen);
            }
        }
    }

    /// The top-level object, then nothing but whitespace. Out of line: the canonical form is
    /// the common case, and keeping this tier apart keeps its code lean.
    #[inline(never)]
    fn tick(mut self, options: &DecodeOptions, c: &mut TickColumns) -> Option<()> {
        self.expect(b'{')?;
        let mut v = Scalars::default();
        // The time is read once every key is known to be the sample's (a Kite tick also starts
        // with keys the sample has): here its value is only skipped.
        let mut timestamp_at = 0;
        let seen = self.object(&TICK_KEYS, |s, field| {
            match field {
                0 => {
                    s.skip_ws();
                    timestamp_at = s.i;
                    if s.peek()? == b'"' {
                        s.i += 1;
                        s.string_body()?;
                    } else {
                        s.number()?;
                    }
                }
                1 => v.token = s.uint()?,
                2 => v.prices[0] = s.float()?,
                3 => v.volume = s.int()?,
                4 => v.sell_quantity = s.int()?,
                5 => v.last_quantity = s.int()?,
                6..=11 => v.prices[field - 5] = s.float()?,
                _ => (v.bids, v.asks) = s.depth(c)?,
            }
            Some(())
        })?;
        self.skip_ws();
        if seen != ALL || self.i != self.b.len() {
            return None;
        }
        v.timestamp_us = Scanner::new(&self.b[timestamp_at..]).timestamp(options)?;
        v.push(c);
        Some(())
    }

    /// `{"buy": [...], "sell": [...]}`: the levels go straight onto the level columns.
    #[inline(always)]
    fn depth(&mut self, c: &mut TickColumns) -> Option<(u8, u8)> {
        self.expect(b'{')?;
        let (mut bids, mut asks) = (0, 0);
        let seen = self.object(&[b"\"buy\":", b"\"sell\":"], |s, side| {
            if side == 0 {
                bids = s.levels(&mut c.bid_price, &mut c.bid_orders, &mut c.bid_quantity)?;
            } else {
                asks = s.levels(&mut c.ask_price, &mut c.ask_orders, &mut c.ask_quantity)?;
            }
            Some(())
        })?;
        (seen == 0b11).then_some((bids, asks))
    }

    /// `[{"price": p, "orders": o, "quantity": q}, …]`, at most [`MAX_LEVELS`] of them.
    #[inline(always)]
    fn levels(
        &mut self,
        prices: &mut Vec<f64>,
        orders: &mut Vec<i64>,
        quantities: &mut Vec<i64>,
    ) -> Option<u8> {
        self.expect(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(0);
        }
        let mut count = 0usize;
        loop {
            self.expect(b'{')?;
            let (mut price, mut order, mut quantity) = (0f64, 0i64, 0i64);
            let seen = self.object(&LEVEL_KEYS, |s, field| {
                match field {
                    0 => price = s.float()?,
                    1 => order = s.int()?,
                    _ => quantity = s.int()?,
                }
                Some(())
            })?;
            count += 1;
            if seen != 0b111 || count > MAX_LEVELS {
                return None;
            }
            prices.push(price);
            orders.push(order);
            quantities.push(quantity);
            if !self.more(b']')? {
                break;
            }
        }
        u8::try_from(count).ok()
    }
}

/// The run of ASCII digits at `at`: its length, and `value` with the digits appended (wrapping:
/// a mantissa of more than 19 digits is never read). Eight bytes at a time where eight remain.
#[inline(always)]
fn digit_run(b: &[u8], at: usize, mut value: u64) -> (usize, u64) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    const HIGH_NIBBLES: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    let mut len = 0;
    loop {
        let Some(word) = b
            .get(at + len..at + len + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        else {
            for &d in b.get(at + len..).unwrap_or_default() {
                if !d.is_ascii_digit() {
                    break;
                }
                value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                len += 1;
            }
            return (len, value);
        };
        let w = u64::from_le_bytes(word);
        // A byte is a digit when its high nibble is 3 and adding 6 keeps it so. A carry out of a
        // byte ≥ 0xfa only disturbs the bytes after it, past the first non-digit.
        let not_digit = ((w & HIGH_NIBBLES) ^ ZEROS)
            | ((w.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) ^ ZEROS);
        let k = (not_digit.trailing_zeros() / 8) as usize;
        if k > 0 {
            // The k digits moved to the top bytes (zeros below them are leading zeros), then
            // combined pairwise: the first character is the lowest byte, the most significant
            // digit.
            let d = w.wrapping_sub(ZEROS) << (8 * (8 - k));
            let d = d.wrapping_mul(10).wrapping_add(d >> 8);
            let d = ((d & 0x0000_00ff_0000_00ff)
                .wrapping_mul(100 + (1_000_000 << 32))
                .wrapping_add(
                    ((d >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32)),
                ))
                >> 32;
            value = value.wrapping_mul(POW10_U64[k]).wrapping_add(d);
        }
        len += k;
        if k < 8 {
            return (len, value);
        }
    }
}

const POW10_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// Whether `text` starts with `key` (a `"name":` pattern of 4 to 24 bytes; an empty one never
/// matches), compared a word at a time — overlapping loads, no call to `memcmp`.
#[inline(always)]
fn starts_with_key(text: &[u8], key: &[u8]) -> bool {
    let n = key.len();
    if !(4..=24).contains(&n) || text.len() < n {
        return false;
    }
    if n < 8 {
        let word = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        };
        return word(text, 0) == word(key, 0) && word(text, n - 4) == word(key, n - 4);
    }
    let word = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    word(text, 0) == word(key, 0)
        && word(text, n - 8) == word(key, n - 8)
        && (n <= 16 || word(text, 8) == word(key, 8))
}

/// The tick's keys in the usual order, as they are written before a value.
const TICK_KEYS: [&[u8]; 13] = [
    b"\"timestamp\":",
    b"\"instrument_token\":",
    b"\"last_price\":",
    b"\"volume\":",
    b"\"sell_quantity\":",
    b"\"last_quantity\":",
    b"\"change\":",
    b"\"average_price\":",
    b"\"open\":",
    b"\"high\":",
    b"\"low\":",
    b"\"close\":",
    b"\"depth\":",
];

const LEVEL_KEYS: [&[u8]; 3] = [b"\"price\":", b"\"orders\":", b"\"quantity\":"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::decode_tick;

    /// A small deterministic generator (xorshift64*), so that a failure names a seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    /// Numbers as producers write them: short prices, long ratios, integers, and the edges of
    /// JSON's grammar and of a double's range.
    fn price(r: &mut Rng) -> String {
        match r.below(6) {
            0 => format!("{}.{:02}", r.below(5000), r.below(100)),
            1 => format!("{}", r.below(100_000)),
            2 => format!("{:?}", (r.next() as f64 / u64::MAX as f64 - 0.5) * 10.0),
            3 => format!("{}.0", r.below(3000)),
            4 => format!("{}.{}", r.below(10), r.below(u64::MAX)),
            _ => format!("{:?}", f64::from_bits(r.next() >> 2)),
        }
    }

    fn integer(r: &mut Rng) -> String {
        match r.below(4) {
            0 => format!("{}", r.below(1_000_000)),
            1 => format!("-{}", r.below(100)),
            2 => format!("{}", r.next() >> r.below(64)),
            _ => "0".into(),
        }
    }

    const ODD_NUMBERS: &[&str] = &[
        "-0",
        "-0.0",
        "0",
        "01",
        "1.",
        ".5",
        "+1",
        "1e400",
        "-1e400",
        "1e-400",
        "4.9e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "53611.0",
        "53611.5",
        "1E+2",
        "0.1e1",
        "12345678901234567890",
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "9007199254740993",
        "0.30000000000000004",
        "123456789012345678901234567890",
        "1e",
        "1e+",
        "--1",
        "-",
        "0x10",
        "1_000",
        "\"1\"",
        "null",
        "true",
        "[]",
        "{}",
        "NaN",
        "Infinity",
        "1.0000000000000000000000001",
        "0.000000000000000000000000000001",
    ];

    const ODD_TIMESTAMPS: &[&str] = &[
        "\"2017-06-20 07:35:05.284824\"",
        "\"2017-06-20T07:35:05.284824Z\"",
        "\"2017-06-20T07:35:05+05:30\"",
        "\"2017-06-20 07:35:05\"",
        "\"2017-02-30 07:35:05\"",
        "\"2017-02-29 07:35:05.123456\"",
        "\"2016-02-29 23:59:60.999999\"",
        "\"2017-06-20 24:00:00.000000\"",
        "\"2017-06-20 07:3a:05.000000\"",
        "\"2017-06-20T07:35:05.000000\"",
        "\"2017/06/20 07:35:05.000000\"",
        "\"2017-06-20\\u0020\"",
        "\"yesterday\"",
        "1497944105284",
        "-1497944105284",
        "1497944105284.0",
        "99999999999999999999",
        "null",
    ];

    fn level(r: &mut Rng) -> Vec<(String, String)> {
        vec![
            ("price".into(), price(r)),
            ("orders".into(), integer(r)),
            ("quantity".into(), integer(r)),
        ]
    }

    fn object(members: &[(String, String)]) -> String {
        let inner: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    fn side(r: &mut Rng, n: usize) -> String {
        let levels: Vec<String> = (0..n).map(|_| object(&level(r))).collect();
        format!("[{}]", levels.join(","))
    }

    fn message(r: &mut Rng) -> Vec<(String, String)> {
        let timestamp = if r.below(4) == 0 {
            r.pick(ODD_TIMESTAMPS).to_string()
        } else {
            format!(
                "\"2017-06-{:02} {:02}:{:02}:{:02}.{:06}\"",
                1 + r.below(28),
                r.below(24),
                r.below(60),
                r.below(60),
                r.below(1_000_000)
            )
        };
        let (nb, na) = (r.below(7) as usize, r.below(7) as usize);
        let depth = format!("{{\"buy\":{},\"sell\":{}}}", side(r, nb), side(r, na));
        let mut m = vec![
            ("timestamp".into(), timestamp),
            ("instrument_token".into(), format!("{}", r.below(1 << 40))),
            ("last_price".into(), price(r)),
            ("volume".into(), integer(r)),
            ("sell_quantity".into(), integer(r)),
            ("last_quantity".into(), integer(r)),
            ("change".into(), price(r)),
            ("average_price".into(), price(r)),
            ("open".into(), price(r)),
            ("high".into(), price(r)),
            ("low".into(), price(r)),
            ("close".into(), price(r)),
            ("depth".into(), depth),
        ];
        if r.below(5) == 0 {
            let a = r.below(m.len() as u64) as usize;
            let b = r.below(m.len() as u64) as usize;
            m.swap(a, b);
        }
        m
    }

    /// Changes a message the way broken producers and hostile inputs do.
    fn mutate(r: &mut Rng, members: &mut Vec<(String, String)>) -> Option<String> {
        let n = members.len() as u64;
        match r.below(10) {
            0 => {
                let at = r.below(n) as usize;
                members[at].1 = r.pick(ODD_NUMBERS).to_string();
            }
            1 => {
                members.remove(r.below(n) as usize);
            }
            2 => {
                let copy = members[r.below(n) as usize].clone();
                members.push(copy);
            }
            3 => members.push(("mode".into(), "\"full\"".into())),
            4 => {
                let at = members.iter().position(|(k, _)| k == "depth")?;
                let mut lv = level(r);
                let which = r.below(3) as usize;
                match r.below(3) {
                    0 => lv[which].1 = r.pick(ODD_NUMBERS).to_string(),
                    1 => {
                        lv.remove(which);
                    }
                    _ => lv.push(lv[which].clone()),
                }
                members[at].1 = format!("{{\"buy\":[{}],\"sell\":[]}}", object(&lv));
            }
            5 => {
                let at = members.iter().position(|(k, _)| k == "depth")?;
                let deep = if r.below(2) == 0 { 255 } else { 256 };
                members[at].1 = format!("{{\"sell\":{},\"buy\":[]}}", side(r, deep));
            }
            _ => {
                // Bytes: cut, doubled, replaced or spaced out.
                let mut text = object(members).into_bytes();
                let at = r.below(text.len() as u64) as usize;
                match r.below(4) {
                    0 => text.truncate(at),
                    1 => text.insert(at, *r.pick(b" \n\t\r")),
                    2 => text[at] = *r.pick(b"\"\\.,:{}[]eE-+09x \x01\xff"),
                    _ => text.extend_from_slice(r.pick::<&[u8]>(&[b" ", b"x", b"{}", b"\n\n"])),
                }
                return Some(String::from_utf8_lossy(&text).into_owned());
            }
        }
        None
    }

    /// Bit-exact comparison (`-0.0` and `0.0` differ): floats' `Debug` is their shortest round
    /// trip with the sign.
    fn same(a: &TickColumns, b: &TickColumns) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    /// Scans one message onto columns that already hold a tick, and checks it against the
    /// reference decoder. Answers whether the scanner took it.
    fn check(input: &str) -> bool {
        let mut columns = TickColumns::from_ticks([crate::example::tick()].iter());
        let before = columns.clone();
        let reference = decode_tick(input.as_bytes(), 330);
        match scan_into(input.as_bytes(), &DecodeOptions::flat(330), &mut columns) {
            Some(()) => {
                let tick = reference.unwrap_or_else(|e| {
                    panic!("the scanner took what the reference refused ({e}): {input}")
                });
                let mut expected = before;
                expected.push(&tick.view());
                assert!(
                    same(&columns, &expected),
                    "values differ: {input}\n{columns:?}\n{expected:?}"
                );
                columns.check().unwrap();
                true
            }
            None => {
                assert!(
                    same(&columns, &before),
                    "a declined message left columns behind: {input}"
                );
                false
            }
        }
    }

    #[test]
    fn the_scanner_agrees_with_the_reference() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut scanned, mut declined, mut mutated_scanned) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut members = message(&mut r);
            let plain = object(&members);
            if check(&plain) {
                scanned += 1;
            } else {
                declined += 1;
                // What the reference accepts is the scanner's, but for a string with an escape
                // and a fractional epoch (the thorough decoder reads Python's time.time()).
                let fractional_epoch = serde_json::from_str::<serde_json::Value>(&plain)
                    .is_ok_and(|v| v["timestamp"].is_f64());
                assert!(
                    decode_tick(plain.as_bytes(), 330).is_err()
                        || plain.contains('\\')
                        || fractional_epoch,
                    "a well-formed message was declined: {plain}"
                );
            }
            let text = mutate(&mut r, &mut members).unwrap_or_else(|| object(&members));
            if check(&text) {
                mutated_scanned += 1;
            }
        }
        assert!(scanned > 15_000, "{scanned} scanned, {declined} declined");
        // Some mutations (whitespace, a swapped order, a valid odd number) are still ticks.
        assert!(mutated_scanned > 1_000, "{mutated_scanned}");
    }

    #[test]
    fn whitespace_and_key_order_are_read() {
        let pretty = "\n { \"depth\" : { \"sell\" : [ ] , \"buy\" : [ { \"quantity\" : 5 , \
                      \"orders\" : 1 , \"price\" : 1.5 } ] } ,\r\n \"close\" : 2 , \"low\" : 1 , \
                      \"high\" : 3 , \"open\" : 2 , \"average_price\" : 2 , \"change\" : -0.5 , \
                      \"last_quantity\" : 1 , \"sell_quantity\" : 0 , \"volume\" : 9 , \
                      \"last_price\" : 2 , \"instrument_token\" : 1 , \
                      \"timestamp\" : \"2017-06-20 07:35:05\" } \n";
        assert!(check(pretty));
    }

    #[test]
    fn the_shipped_sample_is_scanned_element_by_element() {
        let text = include_str!("../../../data/stock_data_sample.json");
        let items = crate::json::split_input(text).unwrap();
        assert!(items.len() > 10);
        for item in items {
            assert!(check(std::str::from_utf8(&item).unwrap()));
        }
    }

    #[test]
    fn declines_leave_the_work_to_the_reference() {
        for odd in [
            r#"{"timestamp":"2017-06-20 07:35:05","timestamp":"2017-06-20 07:35:05"}"#,
            "[1,2]",
            "",
            "{",
            "{}",
        ] {
            assert!(!check(odd), "{odd}");
        }
    }
}
