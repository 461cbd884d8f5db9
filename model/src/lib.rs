//! The tick as plain Rust, shared by both sides of the wasm boundary.
//!
//! - [`Tick`] / [`TickRef`] / [`DepthLevel`]: the domain types; the guests' `logic.rs` reads
//!   [`TickRef`]s.
//! - [`columns`]: batches column by column, as they cross the wasm boundary.
//! - [`time`]: civil-date arithmetic and the timestamp formats the pipeline accepts.
//! - [`hash`]: a stable 64-bit content hash (event ids, guest versions).
//! - [`validate`], [`enrich`], [`route`], [`aggregate`]: each stage's contract as plain Rust —
//!   its config, its inputs and outputs beyond the tick — shared by the host, which calls the
//!   stage, and the guests, which implement it.
//! - `json` (feature): decoding the Kite-style JSON the pipeline consumes (`json::scan`, the tick
//!   scanner into columns; serde_json's paths for everything else), with a reason for every
//!   refusal, and encoding the documents it writes. Guests do not enable it.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod columns;
pub mod enrich;
pub mod example;
mod guest_glue;
pub mod hash;
pub mod route;
pub mod time;
pub mod validate;

#[cfg(feature = "json")]
pub mod json;

/// One level of one side of the order book.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthLevel {
    pub price: f64,
    pub orders: i64,
    pub quantity: i64,
}

/// A market tick with every field of the Kite-style quote; the timestamp normalized to UTC µs.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub timestamp_us: i64,
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
    /// Bids, best first.
    pub depth_buy: Vec<DepthLevel>,
    /// Asks, best first.
    pub depth_sell: Vec<DepthLevel>,
}

/// A tick borrowed from a batch: what the stages' logic reads. Guests build these over the
/// batch's columns without copying a tick; the host borrows its decoded [`Tick`]s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickRef<'a> {
    pub timestamp_us: i64,
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
    pub depth_buy: &'a [DepthLevel],
    pub depth_sell: &'a [DepthLevel],
}

impl Tick {
    pub fn view(&self) -> TickRef<'_> {
        TickRef {
            timestamp_us: self.timestamp_us,
            instrument_token: self.instrument_token,
            last_price: self.last_price,
            volume: self.volume,
            sell_quantity: self.sell_quantity,
            last_quantity: self.last_quantity,
            change: self.change,
            average_price: self.average_price,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            depth_buy: &self.depth_buy,
            depth_sell: &self.depth_sell,
        }
    }
}

impl TickRef<'_> {
    pub fn to_tick(&self) -> Tick {
        Tick {
            timestamp_us: self.timestamp_us,
            instrument_token: self.instrument_token,
            last_price: self.last_price,
            volume: self.volume,
            sell_quantity: self.sell_quantity,
            last_quantity: self.last_quantity,
            change: self.change,
            average_price: self.average_price,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            depth_buy: self.depth_buy.to_vec(),
            depth_sell: self.depth_sell.to_vec(),
        }
    }
}

/// Why a stage refused a tick (mirrors the WIT `reason-code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    NotFinite,
    NonPositivePrice,
    NegativeQuantity,
    InvertedRange,
    UnsortedBook,
    CrossedBook,
    BadTimestamp,
    Other,
}

impl ReasonCode {
    /// The WIT spelling, used in dead-letter headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFinite => "not-finite",
            Self::NonPositivePrice => "non-positive-price",
            Self::NegativeQuantity => "negative-quantity",
            Self::InvertedRange => "inverted-range",
            Self::UnsortedBook => "unsorted-book",
            Self::CrossedBook => "crossed-book",
            Self::BadTimestamp => "bad-timestamp",
            Self::Other => "other",
        }
    }
}

/// A stage's refusal of one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ReasonCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Features the enrich stage derives from one tick (a row of the WIT `enrichment-batch`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Enrichment {
    pub event_id: u64,
    pub mid_price: f64,
    pub spread: f64,
    pub spread_bps: f64,
    pub book_imbalance: f64,
    pub notional: f64,
    pub deviation_bps: f64,
    pub hour: u8,
    pub minute: u8,
}
