//! The tick as plain Rust, shared by both sides of the wasm boundary.
//!
//! - [`Tick`] / [`TickRef`] / [`DepthLevel`]: the domain types; the guests' `logic.rs` reads
//!   [`TickRef`]s. Beyond its instant, instrument and last price a tick's fields are optional
//!   ([`Fields`]: which ones it carries, as the contract spells it).
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
pub mod alert;
pub mod columns;
pub mod enrich;
pub mod example;
mod guest_glue;
pub mod hash;
pub mod route;
pub mod state;
pub mod time;
pub mod validate;

#[cfg(feature = "json")]
pub mod json;

/// One level of one side of the order book.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "json", derive(serde::Deserialize))]
#[cfg_attr(feature = "json", serde(deny_unknown_fields))]
pub struct DepthLevel {
    pub price: f64,
    pub orders: i64,
    pub quantity: i64,
}

/// Which of a tick's optional fields it carries: the WIT `field-bits` of `tick-batch.present`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Fields(pub u32);

impl Fields {
    pub const VOLUME: Fields = Fields(1 << 0);
    pub const BUY_QUANTITY: Fields = Fields(1 << 1);
    pub const SELL_QUANTITY: Fields = Fields(1 << 2);
    pub const LAST_QUANTITY: Fields = Fields(1 << 3);
    pub const CHANGE: Fields = Fields(1 << 4);
    pub const NET_CHANGE: Fields = Fields(1 << 5);
    pub const AVERAGE_PRICE: Fields = Fields(1 << 6);
    pub const OPEN: Fields = Fields(1 << 7);
    pub const HIGH: Fields = Fields(1 << 8);
    pub const LOW: Fields = Fields(1 << 9);
    pub const CLOSE: Fields = Fields(1 << 10);
    pub const OI: Fields = Fields(1 << 11);
    pub const OI_DAY_HIGH: Fields = Fields(1 << 12);
    pub const OI_DAY_LOW: Fields = Fields(1 << 13);
    pub const LAST_TRADE_TIME: Fields = Fields(1 << 14);
    pub const EXCHANGE_TIMESTAMP: Fields = Fields(1 << 15);
    pub const MODE: Fields = Fields(1 << 16);
    pub const DEPTH: Fields = Fields(1 << 17);
    /// The instrument trades (false for an index); meaningful with [`Fields::TRADABLE_KNOWN`].
    pub const TRADABLE: Fields = Fields(1 << 18);
    pub const TRADABLE_KNOWN: Fields = Fields(1 << 19);
    /// The tick carried no time of its own: `timestamp_us` is its Kafka record's.
    pub const TIMESTAMP_FROM_KAFKA: Fields = Fields(1 << 20);
    /// Every bit the contract defines.
    pub const ALL: Fields = Fields((1 << 21) - 1);

    /// The optional fields' bits and their names (as documents and `[input.fields]` spell them).
    pub const NAMED: [(Fields, &'static str); 18] = [
        (Fields::VOLUME, "volume"),
        (Fields::BUY_QUANTITY, "buy_quantity"),
        (Fields::SELL_QUANTITY, "sell_quantity"),
        (Fields::LAST_QUANTITY, "last_quantity"),
        (Fields::CHANGE, "change"),
        (Fields::NET_CHANGE, "net_change"),
        (Fields::AVERAGE_PRICE, "average_price"),
        (Fields::OPEN, "open"),
        (Fields::HIGH, "high"),
        (Fields::LOW, "low"),
        (Fields::CLOSE, "close"),
        (Fields::OI, "oi"),
        (Fields::OI_DAY_HIGH, "oi_day_high"),
        (Fields::OI_DAY_LOW, "oi_day_low"),
        (Fields::LAST_TRADE_TIME, "last_trade_time"),
        (Fields::EXCHANGE_TIMESTAMP, "exchange_timestamp"),
        (Fields::MODE, "mode"),
        (Fields::DEPTH, "depth"),
    ];

    pub fn has(self, field: Fields) -> bool {
        self.0 & field.0 == field.0
    }

    /// `field` set when `on`.
    #[must_use]
    pub fn with(self, field: Fields, on: bool) -> Fields {
        if on { Fields(self.0 | field.0) } else { self }
    }
}

/// Kite's ticker modes: what a tick of each carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickMode {
    /// The instrument and its last price.
    Ltp = 1,
    /// Adds the quantities, the day's prices and the change.
    Quote = 2,
    /// Adds the last trade's time, open interest, the exchange's stamp and the book.
    Full = 3,
}

impl TickMode {
    /// The contract's number (WIT `tick-batch.mode`).
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Ltp),
            2 => Some(Self::Quote),
            3 => Some(Self::Full),
            _ => None,
        }
    }

    /// The feeds' spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ltp => "ltp",
            Self::Quote => "quote",
            Self::Full => "full",
        }
    }
}

/// Declares [`Tick`] and [`TickRef`] (the same fields, depth owned in one and borrowed in the
/// other), and the conversions between them, from one list of fields.
macro_rules! tick_types {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)*) => {
        /// A market tick: its instant (UTC µs), instrument and last price, and whatever else its
        /// feed carried (absent is `None`, never zero).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Tick {
            $($(#[$doc])* pub $name: $ty,)*
            /// Bids, best first (empty without a book).
            pub depth_buy: Vec<DepthLevel>,
            /// Asks, best first (empty without a book).
            pub depth_sell: Vec<DepthLevel>,
        }

        /// A tick borrowed from a batch: what the stages' logic reads. Guests build these over the
        /// batch's columns without copying a tick; the host borrows its decoded [`Tick`]s.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct TickRef<'a> {
            $($(#[$doc])* pub $name: $ty,)*
            pub depth_buy: &'a [DepthLevel],
            pub depth_sell: &'a [DepthLevel],
        }

        impl Tick {
            pub fn view(&self) -> TickRef<'_> {
                TickRef {
                    $($name: self.$name,)*
                    depth_buy: &self.depth_buy,
                    depth_sell: &self.depth_sell,
                }
            }
        }

        impl TickRef<'_> {
            pub fn to_tick(&self) -> Tick {
                Tick {
                    $($name: self.$name,)*
                    depth_buy: self.depth_buy.to_vec(),
                    depth_sell: self.depth_sell.to_vec(),
                }
            }
        }
    };
}

tick_types! {
    /// UTC µs: the tick's own time, or its Kafka record's (see `timestamp_from_kafka`).
    timestamp_us: i64,
    instrument_token: u64,
    last_price: f64,
    /// The day's cumulative traded quantity.
    volume: Option<i64>,
    buy_quantity: Option<i64>,
    sell_quantity: Option<i64>,
    last_quantity: Option<i64>,
    /// Percent change against the previous close.
    change: Option<f64>,
    /// Absolute change against the previous close.
    net_change: Option<f64>,
    average_price: Option<f64>,
    open: Option<f64>,
    high: Option<f64>,
    low: Option<f64>,
    close: Option<f64>,
    oi: Option<i64>,
    oi_day_high: Option<i64>,
    oi_day_low: Option<i64>,
    /// UTC µs.
    last_trade_time_us: Option<i64>,
    /// UTC µs.
    exchange_timestamp_us: Option<i64>,
    mode: Option<TickMode>,
    /// False for an index.
    tradable: Option<bool>,
    /// The tick carried no time of its own.
    timestamp_from_kafka: bool,
    /// Whether the tick carried a book (`depth`), even an empty one.
    has_depth: bool,
}

impl Tick {
    /// A tick of only its instant, instrument and last price (Kite's `ltp` mode, without the mode).
    pub fn bare(timestamp_us: i64, instrument_token: u64, last_price: f64) -> Self {
        Tick {
            timestamp_us,
            instrument_token,
            last_price,
            volume: None,
            buy_quantity: None,
            sell_quantity: None,
            last_quantity: None,
            change: None,
            net_change: None,
            average_price: None,
            open: None,
            high: None,
            low: None,
            close: None,
            oi: None,
            oi_day_high: None,
            oi_day_low: None,
            last_trade_time_us: None,
            exchange_timestamp_us: None,
            mode: None,
            tradable: None,
            timestamp_from_kafka: false,
            has_depth: false,
            depth_buy: Vec::new(),
            depth_sell: Vec::new(),
        }
    }
}

impl TickRef<'_> {
    /// The bits of the optional fields this tick carries.
    pub fn fields(&self) -> Fields {
        Fields::default()
            .with(Fields::VOLUME, self.volume.is_some())
            .with(Fields::BUY_QUANTITY, self.buy_quantity.is_some())
            .with(Fields::SELL_QUANTITY, self.sell_quantity.is_some())
            .with(Fields::LAST_QUANTITY, self.last_quantity.is_some())
            .with(Fields::CHANGE, self.change.is_some())
            .with(Fields::NET_CHANGE, self.net_change.is_some())
            .with(Fields::AVERAGE_PRICE, self.average_price.is_some())
            .with(Fields::OPEN, self.open.is_some())
            .with(Fields::HIGH, self.high.is_some())
            .with(Fields::LOW, self.low.is_some())
            .with(Fields::CLOSE, self.close.is_some())
            .with(Fields::OI, self.oi.is_some())
            .with(Fields::OI_DAY_HIGH, self.oi_day_high.is_some())
            .with(Fields::OI_DAY_LOW, self.oi_day_low.is_some())
            .with(Fields::LAST_TRADE_TIME, self.last_trade_time_us.is_some())
            .with(
                Fields::EXCHANGE_TIMESTAMP,
                self.exchange_timestamp_us.is_some(),
            )
            .with(Fields::MODE, self.mode.is_some())
            .with(Fields::DEPTH, self.has_depth)
            .with(Fields::TRADABLE, self.tradable == Some(true))
            .with(Fields::TRADABLE_KNOWN, self.tradable.is_some())
            .with(Fields::TIMESTAMP_FROM_KAFKA, self.timestamp_from_kafka)
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

/// Features the enrich stage derives from one tick (a row of the WIT `enrichment-batch`); a
/// feature the tick lacks the fields for is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Enrichment {
    pub mid_price: f64,
    /// Without a book: `None`.
    pub spread: Option<f64>,
    pub spread_bps: Option<f64>,
    pub book_imbalance: Option<f64>,
    /// Without the last quantity: `None`.
    pub notional: Option<f64>,
    /// Without the average price: `None`.
    pub deviation_bps: Option<f64>,
    pub hour: u8,
    pub minute: u8,
}

/// The bits of `enrichment-batch.present` (WIT `feature-bits`).
pub mod feature_bits {
    pub const SPREAD: u32 = 1 << 0;
    pub const SPREAD_BPS: u32 = 1 << 1;
    pub const BOOK_IMBALANCE: u32 = 1 << 2;
    pub const NOTIONAL: u32 = 1 << 3;
    pub const DEVIATION_BPS: u32 = 1 << 4;
}

/// Deterministic id of a tick's content: instrument, instant, price, the cumulative volume and
/// the last quantity identify a quote (absent ones hash as 0); a re-sent quote hashes to the same
/// id. The host's: it names the tick in documents (`event_id`).
pub fn event_id(t: &TickRef<'_>) -> u64 {
    hash::Fnv64::default()
        .write_u64(t.instrument_token)
        .write_u64(t.timestamp_us as u64)
        .write_u64(t.last_price.to_bits())
        .write_u64(t.volume.unwrap_or(0) as u64)
        .write_u64(t.last_quantity.unwrap_or(0) as u64)
        .finish()
}
