//! The tick as plain Rust, shared by both sides of the wasm boundary.
//!
//! - [`Tick`] / [`DepthLevel`]: the domain types the guests' `logic.rs` works on (the host converts
//!   them to and from the WIT records; the guests' `lib.rs` does the same on their side).
//! - [`time`]: civil-date arithmetic and the timestamp formats the pipeline accepts.
//! - [`hash`]: a stable 64-bit content hash (event ids, guest versions).
//! - `json` (feature): decoding the Kite-style JSON the pipeline consumes, with a reason for every
//!   refusal, and encoding the documents it writes. Guests do not enable it.
#![forbid(unsafe_code)]

pub mod example;
mod guest_glue;
pub mod hash;
pub mod time;

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

/// Features the enrich stage derives from one tick (mirrors the WIT `enrichment`).
#[derive(Debug, Clone, Copy, PartialEq)]
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
