//! The aggregate stage's contract as plain Rust (mirrors of the WIT `aggregate-config`,
//! `aggregate-input` and `aggregate-output`): what the stage reads, column by column, and the
//! bars it closes. Shared by the host (which feeds the stage and writes its bars) and the
//! aggregate guests.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggregateConfig {
    pub bar_width_us: i64,
    pub allowed_lateness_us: i64,
    pub volatility_bars: u32,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self {
            bar_width_us: 60_000_000,
            allowed_lateness_us: 5_000_000,
            volatility_bars: 20,
        }
    }
}

/// The columns aggregate reads, entry i of each for tick i.
#[derive(Debug, Clone, Copy)]
pub struct AggregateInput<'a> {
    pub partition: &'a [i32],
    pub timestamp_us: &'a [i64],
    pub instrument_token: &'a [u64],
    pub last_price: &'a [f64],
    pub volume: &'a [i64],
    pub mid_price: &'a [f64],
    pub spread: &'a [f64],
}

impl AggregateInput<'_> {
    pub fn len(&self) -> usize {
        self.timestamp_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every column has the same length.
    pub fn is_consistent(&self) -> bool {
        let n = self.len();
        [
            self.partition.len(),
            self.instrument_token.len(),
            self.last_price.len(),
            self.volume.len(),
            self.mid_price.len(),
            self.spread.len(),
        ]
        .iter()
        .all(|&l| l == n)
    }
}

/// Closed bars, one column per field (the WIT `bar-batch`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarColumns {
    pub partition: Vec<i32>,
    pub instrument_token: Vec<u64>,
    pub start_us: Vec<i64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub traded_quantity: Vec<i64>,
    pub tick_count: Vec<u32>,
    pub vwap: Vec<f64>,
    pub last_mid_price: Vec<f64>,
    pub last_spread: Vec<f64>,
    pub log_return: Vec<f64>,
    pub volatility: Vec<f64>,
    pub closed_by: Vec<u32>,
}

impl BarColumns {
    pub fn len(&self) -> usize {
        self.start_us.len()
    }

    /// `other`'s bars after these, their `closed_by` moved on by `shift` (they indexed a batch
    /// that starts `shift` ticks into this one's).
    pub fn append(&mut self, other: BarColumns, shift: u32) {
        macro_rules! extend {
            ($($f:ident),*) => { $(self.$f.extend(other.$f);)* };
        }
        extend!(
            partition,
            instrument_token,
            start_us,
            open,
            high,
            low,
            close,
            traded_quantity,
            tick_count,
            vwap,
            last_mid_price,
            last_spread,
            log_return,
            volatility
        );
        self.closed_by
            .extend(other.closed_by.into_iter().map(|i| i + shift));
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one batch did: the late ticks and the bars it closed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateOutput {
    pub late: Vec<u32>,
    pub bars: BarColumns,
}
