//! The document written for an accepted tick: the tick's own fields (timestamp as RFC 3339 UTC with
//! microseconds, which Elasticsearch's `date_nanos` with `strict_date_optional_time_nanos` and BigQuery's TIMESTAMP
//! both read — the sample's `2017-06-20 07:35:05.284824` form is not ISO 8601 and was the trap of
//! the original mapping), the enrichment, the Kafka position, and the guest versions that produced
//! it.

use super::SourceRef;
use crate::chain::GuestVersions;
use serde::Serialize;
#[cfg(test)]
use serde_json::{Map, Value};
use stockpipe_model::{DepthLevel, Enrichment, TickRef, time::format_rfc3339_micros};

/// A document's `event_id`: the tick's content hash ([`stockpipe_model::event_id`], the host's)
/// as 16 hex digits. (Not the document's `_id` in Elasticsearch, which is its Kafka position:
/// [`crate::sink::elasticsearch::document_id`].)
pub fn event_id_hex(tick: &TickRef<'_>) -> String {
    let mut id = Vec::with_capacity(16);
    hex16(&mut id, stockpipe_model::event_id(tick));
    String::from_utf8(id).expect("hex digits")
}

/// The document of an accepted tick as serde describes it: the reference [`DocumentWriter`] is
/// held to, byte for byte (the pipeline writes with the writer; tests and tools use this).
#[derive(Debug, Serialize)]
pub struct AcceptedDocument<'a> {
    event_id: String,
    timestamp: String,
    /// `kafka` where the tick carried no time of its own and `timestamp` is its record's; absent
    /// where it is the tick's own (so the sample's documents are what they were).
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_source: Option<&'static str>,
    #[serde(flatten)]
    tick: TickFields<'a>,
    /// The tick's members no column takes (see `input.extra_max_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<serde_json::Value>,
    mid_price: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    spread: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spread_bps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    book_imbalance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notional: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deviation_bps: Option<f64>,
    /// The event's UTC hour. Not `hour`: that is the lake's Hive partition key, and BigQuery
    /// refuses a table whose partition keys are also columns of its files.
    hour_of_day: u8,
    minute: u8,
    source: Source<'a>,
    guest_versions: Versions<'a>,
    /// Set on the copy that goes to the alerts topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_reason: Option<&'a str>,
}

/// Every field of a tick but its timestamp, in the sample's form and order (the document and a
/// simulated Kafka message write their own timestamp); a field the tick lacks is left out.
#[derive(Debug, Serialize)]
pub(crate) struct TickFields<'a> {
    instrument_token: u64,
    last_price: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buy_quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sell_quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_quantity: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    net_change: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    average_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    high: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oi: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oi_day_high: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oi_day_low: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_trade_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tradable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depth: Option<Depth<'a>>,
}

impl<'a> TickFields<'a> {
    pub(crate) fn of(t: &TickRef<'a>) -> Self {
        Self {
            instrument_token: t.instrument_token,
            last_price: t.last_price,
            volume: t.volume,
            buy_quantity: t.buy_quantity,
            sell_quantity: t.sell_quantity,
            last_quantity: t.last_quantity,
            change: t.change,
            net_change: t.net_change,
            average_price: t.average_price,
            open: t.open,
            high: t.high,
            low: t.low,
            close: t.close,
            oi: t.oi,
            oi_day_high: t.oi_day_high,
            oi_day_low: t.oi_day_low,
            last_trade_time: t.last_trade_time_us.map(format_rfc3339_micros),
            exchange_timestamp: t.exchange_timestamp_us.map(format_rfc3339_micros),
            mode: t.mode.map(|m| m.as_str()),
            tradable: t.tradable,
            depth: t.has_depth.then_some(Depth {
                buy: Levels(t.depth_buy),
                sell: Levels(t.depth_sell),
            }),
        }
    }
}

/// `{"buy": [{price, orders, quantity}, …], "sell": […]}`.
#[derive(Debug, Serialize)]
struct Depth<'a> {
    buy: Levels<'a>,
    sell: Levels<'a>,
}

#[derive(Debug)]
struct Levels<'a>(&'a [DepthLevel]);

impl Serialize for Levels<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Level {
            price: f64,
            orders: i64,
            quantity: i64,
        }
        serializer.collect_seq(self.0.iter().map(|l| Level {
            price: l.price,
            orders: l.orders,
            quantity: l.quantity,
        }))
    }
}

#[derive(Debug, Serialize)]
struct Source<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The tick's place in a message of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    tick: Option<u32>,
}

#[derive(Debug)]
struct Versions<'a>(&'a GuestVersions);

impl Serialize for Versions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(stage, version)| (*stage, version.as_str())),
        )
    }
}

impl<'a> AcceptedDocument<'a> {
    /// The document with the tick's `extra` object (its JSON, as decoding kept it).
    pub fn with_extra(mut self, extra: Option<&[u8]>) -> Self {
        self.extra = extra
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_slice(e).expect("an extra object is JSON"));
        self
    }

    pub fn new(
        tick: &TickRef<'a>,
        enrichment: &Enrichment,
        source: &'a SourceRef,
        versions: &'a GuestVersions,
    ) -> Self {
        let e = enrichment;
        Self {
            event_id: event_id_hex(tick),
            timestamp: format_rfc3339_micros(tick.timestamp_us),
            timestamp_source: tick.timestamp_from_kafka.then_some("kafka"),
            tick: TickFields::of(tick),
            extra: None,
            mid_price: e.mid_price,
            spread: e.spread,
            spread_bps: e.spread_bps,
            book_imbalance: e.book_imbalance,
            notional: e.notional,
            deviation_bps: e.deviation_bps,
            hour_of_day: e.hour,
            minute: e.minute,
            source: Source {
                topic: &source.topic,
                partition: source.partition,
                offset: source.offset,
                tick: source.tick,
            },
            guest_versions: Versions(versions),
            alert_reason: None,
        }
    }
}

/// Writes documents straight into a caller's buffer: the bytes `serde_json::to_vec` gives for an
/// [`AcceptedDocument`] (integers by itoa, floats by zmij — serde_json's own formatters — a
/// non-finite float as `null`, strings escaped by serde_json), without a value tree, a `String`
/// or a `Vec` of its own. One writer per batch: the guest versions are encoded once.
pub struct DocumentWriter {
    /// `,"guest_versions":{…}`.
    versions: Vec<u8>,
}

impl DocumentWriter {
    pub fn new(versions: &GuestVersions) -> Self {
        let mut out = b",\"guest_versions\":{".to_vec();
        for (i, (stage, version)) in versions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, stage);
            out.push(b':');
            string(&mut out, version);
        }
        out.push(b'}');
        Self { versions: out }
    }

    /// Appends the document of an accepted tick (one line's bytes, without the newline).
    pub fn write(&self, out: &mut Vec<u8>, tick: &TickRef<'_>, e: &Enrichment, source: &SourceRef) {
        self.write_with_extra(out, tick, None, e, source);
    }

    /// [`DocumentWriter::write`] with the tick's `extra` object (its JSON; empty: none).
    pub fn write_with_extra(
        &self,
        out: &mut Vec<u8>,
        tick: &TickRef<'_>,
        extra: Option<&[u8]>,
        e: &Enrichment,
        source: &SourceRef,
    ) {
        out.extend_from_slice(layout::EVENT_ID);
        hex16(out, stockpipe_model::event_id(tick));
        out.extend_from_slice(b"\",");
        out.extend_from_slice(layout::TIMESTAMP);
        stockpipe_model::time::write_rfc3339_micros(out, tick.timestamp_us);
        out.push(b'"');
        if tick.timestamp_from_kafka {
            out.extend_from_slice(b",\"timestamp_source\":\"kafka\"");
        }
        tick_fields(out, tick);
        if let Some(extra) = extra.filter(|e| !e.is_empty()) {
            out.extend_from_slice(b",\"extra\":");
            out.extend_from_slice(extra);
        }
        out.extend_from_slice(layout::MID_PRICE);
        float(out, e.mid_price);
        present_members(
            out,
            &[
                (b",\"spread\":", e.spread),
                (b",\"spread_bps\":", e.spread_bps),
                (b",\"book_imbalance\":", e.book_imbalance),
                (b",\"notional\":", e.notional),
                (b",\"deviation_bps\":", e.deviation_bps),
            ],
            float,
        );
        out.extend_from_slice(b",\"hour_of_day\":");
        integer(out, e.hour);
        out.extend_from_slice(b",\"minute\":");
        integer(out, e.minute);
        out.extend_from_slice(b",\"source\":{\"topic\":");
        string(out, &source.topic);
        out.extend_from_slice(b",\"partition\":");
        integer(out, source.partition);
        out.extend_from_slice(b",\"offset\":");
        integer(out, source.offset);
        if let Some(k) = source.tick {
            out.extend_from_slice(b",\"tick\":");
            integer(out, k);
        }
        out.push(b'}');
        out.extend_from_slice(&self.versions);
        out.push(b'}');
    }

    /// The copy of a document that goes to the alerts topic: the document [`DocumentWriter::write`]
    /// wrote, with `alert_reason` as its last member (not encoded a second time).
    pub fn with_alert(document: &[u8], reason: &str) -> Vec<u8> {
        let members = document
            .strip_suffix(b"}")
            .expect("a document written by `write` ends its object");
        let mut body = Vec::with_capacity(document.len() + reason.len() + 20);
        body.extend_from_slice(members);
        body.extend_from_slice(b",\"alert_reason\":");
        string(&mut body, reason);
        body.push(b'}');
        body
    }
}

/// The bytes [`DocumentWriter::write`] lays a document out by, which [`DocumentParts`] reads it
/// back by: one home for both.
mod layout {
    /// The document opens with its event id: `{"event_id":"` + 16 hex digits + `",`.
    pub(super) const EVENT_ID: &[u8] = b"{\"event_id\":\"";
    /// Where the event id's 16 digits start, and where the tick's fields start after them.
    pub(super) const ID_AT: usize = EVENT_ID.len();
    pub(super) const FIELDS_AT: usize = ID_AT + 16 + 2;
    /// The tick's fields start with its time …
    pub(super) const TIMESTAMP: &[u8] = b"\"timestamp\":\"";
    /// … and the enrichment with the mid price, after the tick's depth.
    pub(super) const MID_PRICE: &[u8] = b",\"mid_price\":";
    pub(super) const SPREAD_BPS: &[u8] = b"\"spread_bps\":";
}

/// A document of our writer, split without parsing it: what the fast readers of the lake need
/// (`guest diff` rebuilds each tick as a message and scans it; the benchmark's stand-in sink
/// reads the tick's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentParts<'a> {
    /// The 16 hex digits of the event id.
    pub event_id: &'a [u8],
    /// The tick's fields, `"timestamp":…` up to the end of `"depth":{…}`, without braces.
    pub tick_fields: &'a [u8],
    /// The enrichment and the rest, from `,"mid_price":` to the closing brace.
    pub enrichment: &'a [u8],
}

impl<'a> DocumentParts<'a> {
    /// Splits a line [`DocumentWriter::write`] wrote; `None` for any other layout.
    pub fn split(line: &'a [u8]) -> Option<Self> {
        use layout::*;
        static MID: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(MID_PRICE));
        if !line.starts_with(EVENT_ID)
            || !line.get(FIELDS_AT - 2..FIELDS_AT)?.eq(b"\",")
            || !line[FIELDS_AT..].starts_with(TIMESTAMP)
        {
            return None;
        }
        let event_id = &line[ID_AT..ID_AT + 16];
        let end = MID.rfind(line)?;
        // Anything else (a key inside the id, no fields between) is not our layout.
        if !event_id.iter().all(u8::is_ascii_hexdigit) || end < FIELDS_AT + TIMESTAMP.len() {
            return None;
        }
        Some(Self {
            event_id,
            tick_fields: &line[FIELDS_AT..end],
            enrichment: &line[end..],
        })
    }

    /// The tick's time as written (RFC 3339 UTC, without its quotes).
    pub fn timestamp(&self) -> Option<&'a [u8]> {
        let value = &self.tick_fields[layout::TIMESTAMP.len()..];
        let end = memchr::memchr(b'"', value)?;
        Some(&value[..end])
    }

    /// The tick's time in µs.
    pub fn time_us(&self) -> Option<i64> {
        stockpipe_model::time::parse_timestamp_bytes(self.timestamp()?, 0).ok()
    }

    /// The enrichment's `spread_bps` (what route was given), if it is there.
    pub fn spread_bps(&self) -> Option<f64> {
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(layout::SPREAD_BPS));
        let text = self.enrichment;
        let at = FINDER.find(text)? + layout::SPREAD_BPS.len();
        let len = text[at..].iter().position(|b| matches!(b, b',' | b'}'))?;
        std::str::from_utf8(&text[at..at + len]).ok()?.parse().ok()
    }
}

/// The tick's fields after its timestamp, each preceded by its comma.
fn tick_fields(out: &mut Vec<u8>, t: &TickRef<'_>) {
    out.extend_from_slice(b",\"instrument_token\":");
    integer(out, t.instrument_token);
    out.extend_from_slice(b",\"last_price\":");
    float(out, t.last_price);
    present_members(
        out,
        &[
            (b",\"volume\":", t.volume),
            (b",\"buy_quantity\":", t.buy_quantity),
            (b",\"sell_quantity\":", t.sell_quantity),
            (b",\"last_quantity\":", t.last_quantity),
        ],
        integer,
    );
    present_members(
        out,
        &[
            (b",\"change\":", t.change),
            (b",\"net_change\":", t.net_change),
            (b",\"average_price\":", t.average_price),
            (b",\"open\":", t.open),
            (b",\"high\":", t.high),
            (b",\"low\":", t.low),
            (b",\"close\":", t.close),
        ],
        float,
    );
    present_members(
        out,
        &[
            (b",\"oi\":", t.oi),
            (b",\"oi_day_high\":", t.oi_day_high),
            (b",\"oi_day_low\":", t.oi_day_low),
        ],
        integer,
    );
    for (key, time) in [
        (&b",\"last_trade_time\":\""[..], t.last_trade_time_us),
        (b",\"exchange_timestamp\":\"", t.exchange_timestamp_us),
    ] {
        if let Some(time) = time {
            out.extend_from_slice(key);
            stockpipe_model::time::write_rfc3339_micros(out, time);
            out.push(b'"');
        }
    }
    if let Some(mode) = t.mode {
        out.extend_from_slice(b",\"mode\":");
        string(out, mode.as_str());
    }
    if let Some(tradable) = t.tradable {
        out.extend_from_slice(if tradable {
            b",\"tradable\":true"
        } else {
            b",\"tradable\":false"
        });
    }
    if t.has_depth {
        out.extend_from_slice(b",\"depth\":{\"buy\":");
        levels(out, t.depth_buy);
        out.extend_from_slice(b",\"sell\":");
        levels(out, t.depth_sell);
        out.push(b'}');
    }
}

/// Object members, each written `,"key":` (the key's bytes as given) then its value; an absent
/// one is left out.
fn present_members<T: Copy>(
    out: &mut Vec<u8>,
    members: &[(&[u8], Option<T>)],
    write: fn(&mut Vec<u8>, T),
) {
    for &(key, value) in members {
        if let Some(value) = value {
            out.extend_from_slice(key);
            write(out, value);
        }
    }
}

fn levels(out: &mut Vec<u8>, levels: &[DepthLevel]) {
    out.push(b'[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"price\":");
        float(out, l.price);
        out.extend_from_slice(b",\"orders\":");
        integer(out, l.orders);
        out.extend_from_slice(b",\"quantity\":");
        integer(out, l.quantity);
        out.push(b'}');
    }
    out.push(b']');
}

fn integer<T: itoa::Integer>(out: &mut Vec<u8>, value: T) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Shortest round trip, as serde_json writes it; `null` for NaN and the infinities, as it does.
fn float(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
    } else if !four_decimals(out, value) {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    }
}

/// A value of at most four decimals below 10^11 — a price, nearly every float of a tick — written
/// from its integer ten-thousandths, which is zmij's shortest round trip: `n / 10^4` is the double
/// nearest that decimal, and no other decimal of four places or fewer is within an ulp (< 10^-4
/// below 10^11). Answers false, writing nothing, for any other value (zero too: its sign).
fn four_decimals(out: &mut Vec<u8>, value: f64) -> bool {
    let magnitude = value.abs();
    if value == 0.0 || magnitude >= 1e11 {
        return false;
    }
    // Rounded half away from zero, as `f64::round` (a libm call here) rounds: below 10^15 the
    // sum is exact or, next to a half, off by one — which the check below refuses either way.
    let n = (magnitude * 10_000.0 + 0.5) as u64;
    if n as f64 / 10_000.0 != magnitude {
        return false;
    }
    if value < 0.0 {
        out.push(b'-');
    }
    out.extend_from_slice(itoa::Buffer::new().format(n / 10_000).as_bytes());
    let fraction = n % 10_000;
    if fraction == 0 {
        out.extend_from_slice(b".0");
        return true;
    }
    let digits = [
        b'.',
        b'0' + (fraction / 1000) as u8,
        b'0' + (fraction / 100 % 10) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let mut width = digits.len();
    while digits[width - 1] == b'0' {
        width -= 1;
    }
    out.extend_from_slice(&digits[..width]);
    true
}

fn string(out: &mut Vec<u8>, value: &str) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec");
}

/// 16 lowercase hex digits.
fn hex16(out: &mut Vec<u8>, value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[(value >> (shift * 4)) as usize & 0xf]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same document as the tick's own JSON fields plus ours, built the slow way.
    #[test]
    fn the_document_is_the_tick_plus_its_enrichment_and_origin() {
        let tick = stockpipe_model::example::tick();
        let enrichment = Enrichment {
            mid_price: 10.5,
            spread: Some(0.1),
            spread_bps: Some(9.5),
            book_imbalance: Some(-0.25),
            notional: Some(1234.5),
            deviation_bps: Some(1.5),
            hour: 7,
            minute: 35,
        };
        let source = SourceRef {
            topic: "stock-stream".into(),
            partition: 2,
            offset: 41,
            tick: None,
        };
        let versions: GuestVersions = vec![("validate", "sha256:1".into()), ("route", "v2".into())];
        let mut doc = AcceptedDocument::new(&tick.view(), &enrichment, &source, &versions);
        let value: Value = serde_json::to_value(&doc).unwrap();
        let mut expected = Map::new();
        expected.insert(
            "event_id".into(),
            format!("{:016x}", stockpipe_model::event_id(&tick.view())).into(),
        );
        expected.insert(
            "timestamp".into(),
            format_rfc3339_micros(tick.timestamp_us).into(),
        );
        stockpipe_model::json::tick_fields(&tick, &mut expected);
        for (k, v) in [
            ("mid_price", 10.5),
            ("spread", 0.1),
            ("spread_bps", 9.5),
            ("book_imbalance", -0.25),
            ("notional", 1234.5),
            ("deviation_bps", 1.5),
        ] {
            expected.insert(k.into(), v.into());
        }
        expected.insert("hour_of_day".into(), 7.into());
        expected.insert("minute".into(), 35.into());
        expected.insert(
            "source".into(),
            serde_json::json!({"topic": "stock-stream", "partition": 2, "offset": 41}),
        );
        expected.insert(
            "guest_versions".into(),
            serde_json::json!({"validate": "sha256:1", "route": "v2"}),
        );
        assert_eq!(value, Value::Object(expected.clone()));
        doc.alert_reason = Some("spread");
        let with_alert: Value = serde_json::to_value(&doc).unwrap();
        expected.insert("alert_reason".into(), "spread".into());
        assert_eq!(with_alert, Value::Object(expected));
    }

    /// What the writer writes, the reader splits back: the event id, the tick's fields (a message
    /// the decoder reads as the tick), its time, the enrichment's spread.
    #[test]
    fn a_written_document_is_read_back_by_its_parts() {
        let tick = stockpipe_model::example::tick();
        let enrichment = Enrichment {
            spread_bps: Some(9.5),
            ..Enrichment::default()
        };
        let source = SourceRef {
            topic: "stock-stream".into(),
            partition: 2,
            offset: 41,
            tick: None,
        };
        let writer = DocumentWriter::new(&vec![("validate", "sha256:1".into())]);
        let mut line = Vec::new();
        writer.write(&mut line, &tick.view(), &enrichment, &source);
        let parts = DocumentParts::split(&line).expect("our own layout");
        assert_eq!(parts.event_id, event_id_hex(&tick.view()).as_bytes());
        assert_eq!(parts.time_us(), Some(tick.timestamp_us));
        assert_eq!(parts.spread_bps(), Some(9.5));
        let message = [b"{", parts.tick_fields, b"}"].concat();
        let decoded = stockpipe_model::json::decode_tick(&message, 0).unwrap();
        assert_eq!(decoded, tick);
        // A document of another layout (serde's key order) is not ours to split.
        let reference = serde_json::to_vec(&AcceptedDocument::new(
            &tick.view(),
            &enrichment,
            &source,
            &vec![],
        ))
        .unwrap();
        assert_eq!(
            DocumentParts::split(&reference).is_some(),
            reference.starts_with(layout::EVENT_ID)
        );
    }

    /// A tick of only a price, and an enrichment without a book: the absent fields are left out
    /// of the document, by the writer as by serde, and the new fields written where present.
    #[test]
    fn absent_fields_are_left_out_of_the_document() {
        let mut tick = stockpipe_model::example::ltp_tick();
        tick.oi = Some(1200);
        tick.tradable = Some(false);
        tick.exchange_timestamp_us = Some(tick.timestamp_us);
        tick.timestamp_from_kafka = true;
        let enrichment = Enrichment {
            mid_price: tick.last_price,
            ..Enrichment::default()
        };
        let source = SourceRef {
            topic: "stock-stream".into(),
            partition: 0,
            offset: 7,
            tick: None,
        };
        let versions: GuestVersions = vec![("validate", "v".into())];
        let mut line = Vec::new();
        let extra = br#"{"symbol":"INFY","upper_circuit_limit":1528.6}"#;
        DocumentWriter::new(&versions).write_with_extra(
            &mut line,
            &tick.view(),
            Some(extra),
            &enrichment,
            &source,
        );
        let written: Value = serde_json::from_slice(&line).unwrap();
        let document = AcceptedDocument::new(&tick.view(), &enrichment, &source, &versions)
            .with_extra(Some(extra));
        // Byte for byte: the writer's layout is serde's.
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            serde_json::to_string(&document).unwrap()
        );
        let reference = serde_json::to_value(&document).unwrap();
        assert_eq!(written, reference);
        assert_eq!(written["extra"]["symbol"], "INFY");
        let keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for absent in [
            "volume",
            "depth",
            "spread",
            "spread_bps",
            "notional",
            "open",
        ] {
            assert!(!keys.contains(&absent), "{absent} in {keys:?}");
        }
        assert_eq!(written["oi"], 1200);
        assert_eq!(written["tradable"], false);
        assert_eq!(written["mode"], "ltp");
        assert_eq!(written["exchange_timestamp"], written["timestamp"]);
        assert_eq!(written["timestamp_source"], "kafka");
    }

    /// The four-decimal shortcut writes zmij's bytes, over prices, ratios, the edges of its range
    /// and values it must leave to zmij.
    #[test]
    fn floats_are_written_as_zmij_writes_them() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut values = vec![
            0.0,
            -0.0,
            1e-4,
            5e-5,
            1e-5,
            0.1,
            0.3,
            1e11,
            99_999_999_999.99,
            1e11 - 1e-4,
            1e15,
            1e16,
            358.75,
            359.0,
            -253.95,
            0.05,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            // Next to a half of the fourth decimal, where adding 0.5 can round.
            0.499_999_999_999_999_94e-4,
            0.000_05,
            1.000_05,
            1.000_049_999_999_999_9,
            12_345.678_95,
            -0.000_15,
        ];
        for _ in 0..200_000 {
            let n = (next() % 2_000_000_000_000) as f64 - 1e12;
            let scale = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6][(next() % 7) as usize];
            values.push(n / scale);
            values.push(f64::from_bits(next()));
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let mut out = Vec::new();
            float(&mut out, v);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                zmij::Buffer::new().format_finite(v),
                "{v:?}"
            );
        }
    }
}
