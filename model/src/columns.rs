//! Batches laid out column by column, as they cross the wasm boundary (`tick-batch` and
//! `enrichment-batch` in the WIT), and the borrowed per-tick views the stages' logic works on.
//!
//! The host builds [`TickColumns`] from decoded ticks; a guest's adapter moves the WIT record's
//! vectors into a [`TickColumns`] (no copy), checks it, and hands [`TickRef`]s to its logic. Depth
//! levels are concatenated per side, with a count per tick.

use crate::{DepthLevel, Enrichment, Fields, Rejection, Tick, TickMode, TickRef, feature_bits};

/// Most depth levels one side of one tick may carry (the count column is a `u8`).
pub const MAX_LEVELS: usize = u8::MAX as usize;

/// A batch of ticks column by column (the WIT `tick-batch`): a tick's optional field holds a
/// value where its bit in `present` is set, 0 where it is not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickColumns {
    pub timestamp_us: Vec<i64>,
    pub instrument_token: Vec<u64>,
    pub last_price: Vec<f64>,
    /// Per tick, its [`Fields`] bits.
    pub present: Vec<u32>,
    pub volume: Vec<i64>,
    pub buy_quantity: Vec<i64>,
    pub sell_quantity: Vec<i64>,
    pub last_quantity: Vec<i64>,
    pub change: Vec<f64>,
    pub net_change: Vec<f64>,
    pub average_price: Vec<f64>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub oi: Vec<i64>,
    pub oi_day_high: Vec<i64>,
    pub oi_day_low: Vec<i64>,
    pub last_trade_time_us: Vec<i64>,
    pub exchange_timestamp_us: Vec<i64>,
    pub mode: Vec<u8>,
    pub bid_count: Vec<u8>,
    pub bid_price: Vec<f64>,
    pub bid_orders: Vec<i64>,
    pub bid_quantity: Vec<i64>,
    pub ask_count: Vec<u8>,
    pub ask_price: Vec<f64>,
    pub ask_orders: Vec<i64>,
    pub ask_quantity: Vec<i64>,
}

/// The value of an optional field where `present` has its bit, `None` elsewhere.
#[inline]
fn optional<T: Copy>(present: Fields, bit: Fields, value: T) -> Option<T> {
    present.has(bit).then_some(value)
}

impl TickColumns {
    /// Builds the columns of a batch. Panics if a side has more than [`MAX_LEVELS`] levels (the
    /// host's decoder refuses such ticks).
    pub fn from_ticks<'a>(ticks: impl ExactSizeIterator<Item = &'a Tick>) -> Self {
        let views: Vec<TickRef<'_>> = ticks.map(Tick::view).collect();
        Self::from_views(&views)
    }

    /// The columns of a batch of views. Panics if a side has more than [`MAX_LEVELS`] levels.
    pub fn from_views(ticks: &[TickRef<'_>]) -> Self {
        let levels: usize = ticks
            .iter()
            .map(|t| t.depth_buy.len().max(t.depth_sell.len()))
            .max()
            .unwrap_or(0);
        let mut out = Self::with_capacity(ticks.len(), levels);
        for t in ticks {
            out.push(t);
        }
        out
    }

    /// Empty columns with room for `ticks` ticks of `levels` levels a side.
    pub fn with_capacity(ticks: usize, levels: usize) -> Self {
        let per_level = ticks * levels;
        Self {
            timestamp_us: Vec::with_capacity(ticks),
            instrument_token: Vec::with_capacity(ticks),
            last_price: Vec::with_capacity(ticks),
            present: Vec::with_capacity(ticks),
            volume: Vec::with_capacity(ticks),
            buy_quantity: Vec::with_capacity(ticks),
            sell_quantity: Vec::with_capacity(ticks),
            last_quantity: Vec::with_capacity(ticks),
            change: Vec::with_capacity(ticks),
            net_change: Vec::with_capacity(ticks),
            average_price: Vec::with_capacity(ticks),
            open: Vec::with_capacity(ticks),
            high: Vec::with_capacity(ticks),
            low: Vec::with_capacity(ticks),
            close: Vec::with_capacity(ticks),
            oi: Vec::with_capacity(ticks),
            oi_day_high: Vec::with_capacity(ticks),
            oi_day_low: Vec::with_capacity(ticks),
            last_trade_time_us: Vec::with_capacity(ticks),
            exchange_timestamp_us: Vec::with_capacity(ticks),
            mode: Vec::with_capacity(ticks),
            bid_count: Vec::with_capacity(ticks),
            bid_price: Vec::with_capacity(per_level),
            bid_orders: Vec::with_capacity(per_level),
            bid_quantity: Vec::with_capacity(per_level),
            ask_count: Vec::with_capacity(ticks),
            ask_price: Vec::with_capacity(per_level),
            ask_orders: Vec::with_capacity(per_level),
            ask_quantity: Vec::with_capacity(per_level),
        }
    }

    /// The ticks at `indices`, in that order, as columns of their own. Panics on an index out of
    /// range or on inconsistent columns (call [`TickColumns::check`] on columns from elsewhere).
    pub fn gather(&self, indices: &[usize]) -> Self {
        let (bids, asks) = self.levels();
        let views = self.views(&bids, &asks);
        let mut out = Self::with_capacity(indices.len(), 0);
        for &i in indices {
            out.push(&views[i]);
        }
        out
    }

    /// Appends one tick. Panics if a side has more than [`MAX_LEVELS`] levels.
    pub fn push(&mut self, t: &TickRef<'_>) {
        let count = |levels: &[DepthLevel]| {
            u8::try_from(levels.len()).expect("the decoder bounds depth at 255 levels")
        };
        self.timestamp_us.push(t.timestamp_us);
        self.instrument_token.push(t.instrument_token);
        self.last_price.push(t.last_price);
        self.present.push(t.fields().0);
        self.volume.push(t.volume.unwrap_or(0));
        self.buy_quantity.push(t.buy_quantity.unwrap_or(0));
        self.sell_quantity.push(t.sell_quantity.unwrap_or(0));
        self.last_quantity.push(t.last_quantity.unwrap_or(0));
        self.change.push(t.change.unwrap_or(0.0));
        self.net_change.push(t.net_change.unwrap_or(0.0));
        self.average_price.push(t.average_price.unwrap_or(0.0));
        self.open.push(t.open.unwrap_or(0.0));
        self.high.push(t.high.unwrap_or(0.0));
        self.low.push(t.low.unwrap_or(0.0));
        self.close.push(t.close.unwrap_or(0.0));
        self.oi.push(t.oi.unwrap_or(0));
        self.oi_day_high.push(t.oi_day_high.unwrap_or(0));
        self.oi_day_low.push(t.oi_day_low.unwrap_or(0));
        self.last_trade_time_us
            .push(t.last_trade_time_us.unwrap_or(0));
        self.exchange_timestamp_us
            .push(t.exchange_timestamp_us.unwrap_or(0));
        self.mode.push(t.mode.map_or(0, |m| m as u8));
        self.bid_count.push(count(t.depth_buy));
        self.ask_count.push(count(t.depth_sell));
        for l in t.depth_buy {
            self.bid_price.push(l.price);
            self.bid_orders.push(l.orders);
            self.bid_quantity.push(l.quantity);
        }
        for l in t.depth_sell {
            self.ask_price.push(l.price);
            self.ask_orders.push(l.orders);
            self.ask_quantity.push(l.quantity);
        }
    }

    pub fn len(&self) -> usize {
        self.timestamp_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp_us.is_empty()
    }

    /// Every column has the length the tick count and the level counts imply.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        let per_tick = [
            ("instrument_token", self.instrument_token.len()),
            ("last_price", self.last_price.len()),
            ("present", self.present.len()),
            ("volume", self.volume.len()),
            ("buy_quantity", self.buy_quantity.len()),
            ("sell_quantity", self.sell_quantity.len()),
            ("last_quantity", self.last_quantity.len()),
            ("change", self.change.len()),
            ("net_change", self.net_change.len()),
            ("average_price", self.average_price.len()),
            ("open", self.open.len()),
            ("high", self.high.len()),
            ("low", self.low.len()),
            ("close", self.close.len()),
            ("oi", self.oi.len()),
            ("oi_day_high", self.oi_day_high.len()),
            ("oi_day_low", self.oi_day_low.len()),
            ("last_trade_time_us", self.last_trade_time_us.len()),
            ("exchange_timestamp_us", self.exchange_timestamp_us.len()),
            ("mode", self.mode.len()),
            ("bid_count", self.bid_count.len()),
            ("ask_count", self.ask_count.len()),
        ];
        if let Some((name, len)) = per_tick.iter().find(|(_, len)| *len != n) {
            return Err(format!("column {name} has {len} entries for {n} ticks"));
        }
        for (i, &bits) in self.present.iter().enumerate() {
            if bits & !Fields::ALL.0 != 0 {
                return Err(format!("tick {i}: present has undefined bits {bits:#x}"));
            }
            if Fields(bits).has(Fields::MODE) && TickMode::from_number(self.mode[i]).is_none() {
                return Err(format!("tick {i}: mode {} is not 1, 2 or 3", self.mode[i]));
            }
            if !Fields(bits).has(Fields::DEPTH) && (self.bid_count[i] | self.ask_count[i]) != 0 {
                return Err(format!("tick {i}: depth levels without the depth bit"));
            }
        }
        let bids: usize = self.bid_count.iter().map(|&c| usize::from(c)).sum();
        let asks: usize = self.ask_count.iter().map(|&c| usize::from(c)).sum();
        let per_level = [
            ("bid_price", self.bid_price.len(), bids),
            ("bid_orders", self.bid_orders.len(), bids),
            ("bid_quantity", self.bid_quantity.len(), bids),
            ("ask_price", self.ask_price.len(), asks),
            ("ask_orders", self.ask_orders.len(), asks),
            ("ask_quantity", self.ask_quantity.len(), asks),
        ];
        if let Some((name, len, want)) = per_level.iter().find(|(_, len, want)| len != want) {
            return Err(format!(
                "column {name} has {len} levels, the counts say {want}"
            ));
        }
        Ok(())
    }

    /// The depth levels of each side as rows: the buffers [`TickColumns::views`] borrows.
    pub fn levels(&self) -> (Vec<DepthLevel>, Vec<DepthLevel>) {
        let rows = |price: &[f64], orders: &[i64], quantity: &[i64]| -> Vec<DepthLevel> {
            price
                .iter()
                .zip(orders)
                .zip(quantity)
                .map(|((&price, &orders), &quantity)| DepthLevel {
                    price,
                    orders,
                    quantity,
                })
                .collect()
        };
        (
            rows(&self.bid_price, &self.bid_orders, &self.bid_quantity),
            rows(&self.ask_price, &self.ask_orders, &self.ask_quantity),
        )
    }

    /// One view per tick. `bids`/`asks` come from [`TickColumns::levels`]; call
    /// [`TickColumns::check`] first (this panics on inconsistent columns).
    pub fn views<'a>(&'a self, bids: &'a [DepthLevel], asks: &'a [DepthLevel]) -> Vec<TickRef<'a>> {
        let (mut b, mut a) = (0usize, 0usize);
        (0..self.len())
            .map(|i| {
                let (nb, na) = (
                    usize::from(self.bid_count[i]),
                    usize::from(self.ask_count[i]),
                );
                let p = Fields(self.present[i]);
                let view = TickRef {
                    timestamp_us: self.timestamp_us[i],
                    instrument_token: self.instrument_token[i],
                    last_price: self.last_price[i],
                    volume: optional(p, Fields::VOLUME, self.volume[i]),
                    buy_quantity: optional(p, Fields::BUY_QUANTITY, self.buy_quantity[i]),
                    sell_quantity: optional(p, Fields::SELL_QUANTITY, self.sell_quantity[i]),
                    last_quantity: optional(p, Fields::LAST_QUANTITY, self.last_quantity[i]),
                    change: optional(p, Fields::CHANGE, self.change[i]),
                    net_change: optional(p, Fields::NET_CHANGE, self.net_change[i]),
                    average_price: optional(p, Fields::AVERAGE_PRICE, self.average_price[i]),
                    open: optional(p, Fields::OPEN, self.open[i]),
                    high: optional(p, Fields::HIGH, self.high[i]),
                    low: optional(p, Fields::LOW, self.low[i]),
                    close: optional(p, Fields::CLOSE, self.close[i]),
                    oi: optional(p, Fields::OI, self.oi[i]),
                    oi_day_high: optional(p, Fields::OI_DAY_HIGH, self.oi_day_high[i]),
                    oi_day_low: optional(p, Fields::OI_DAY_LOW, self.oi_day_low[i]),
                    last_trade_time_us: optional(
                        p,
                        Fields::LAST_TRADE_TIME,
                        self.last_trade_time_us[i],
                    ),
                    exchange_timestamp_us: optional(
                        p,
                        Fields::EXCHANGE_TIMESTAMP,
                        self.exchange_timestamp_us[i],
                    ),
                    mode: optional(p, Fields::MODE, self.mode[i]).and_then(TickMode::from_number),
                    tradable: optional(p, Fields::TRADABLE_KNOWN, p.has(Fields::TRADABLE)),
                    timestamp_from_kafka: p.has(Fields::TIMESTAMP_FROM_KAFKA),
                    has_depth: p.has(Fields::DEPTH),
                    depth_buy: &bids[b..b + nb],
                    depth_sell: &asks[a..a + na],
                };
                b += nb;
                a += na;
                view
            })
            .collect()
    }
}

/// The enrich stage's answer, column by column (mirrors the WIT `enrichment-batch`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnrichmentColumns {
    pub rejected: Vec<Option<Rejection>>,
    /// Per tick, its [`feature_bits`].
    pub present: Vec<u32>,
    pub mid_price: Vec<f64>,
    pub spread: Vec<f64>,
    pub spread_bps: Vec<f64>,
    pub book_imbalance: Vec<f64>,
    pub notional: Vec<f64>,
    pub deviation_bps: Vec<f64>,
    pub hour: Vec<u8>,
    pub minute: Vec<u8>,
}

impl EnrichmentColumns {
    pub fn from_outcomes(outcomes: Vec<Result<Enrichment, Rejection>>) -> Self {
        let mut c = Self::default();
        for outcome in outcomes {
            let (e, rejected) = match outcome {
                Ok(e) => (e, None),
                Err(r) => (Enrichment::default(), Some(r)),
            };
            let bit = |v: Option<f64>, b: u32| if v.is_some() { b } else { 0 };
            c.rejected.push(rejected);
            c.present.push(
                bit(e.spread, feature_bits::SPREAD)
                    | bit(e.spread_bps, feature_bits::SPREAD_BPS)
                    | bit(e.book_imbalance, feature_bits::BOOK_IMBALANCE)
                    | bit(e.notional, feature_bits::NOTIONAL)
                    | bit(e.deviation_bps, feature_bits::DEVIATION_BPS),
            );
            c.mid_price.push(e.mid_price);
            c.spread.push(e.spread.unwrap_or(0.0));
            c.spread_bps.push(e.spread_bps.unwrap_or(0.0));
            c.book_imbalance.push(e.book_imbalance.unwrap_or(0.0));
            c.notional.push(e.notional.unwrap_or(0.0));
            c.deviation_bps.push(e.deviation_bps.unwrap_or(0.0));
            c.hour.push(e.hour);
            c.minute.push(e.minute);
        }
        c
    }

    /// Back to one outcome per tick; refuses columns whose lengths disagree.
    pub fn into_outcomes(self) -> Result<Vec<Result<Enrichment, Rejection>>, String> {
        let n = self.rejected.len();
        let lens = [
            self.present.len(),
            self.mid_price.len(),
            self.spread.len(),
            self.spread_bps.len(),
            self.book_imbalance.len(),
            self.notional.len(),
            self.deviation_bps.len(),
            self.hour.len(),
            self.minute.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(format!(
                "enrichment columns of unequal lengths: {n} verdicts, feature columns {lens:?}"
            ));
        }
        Ok(self
            .rejected
            .into_iter()
            .enumerate()
            .map(|(i, rejected)| match rejected {
                Some(r) => Err(r),
                None => {
                    let p = self.present[i];
                    let get = |b: u32, v: f64| (p & b != 0).then_some(v);
                    Ok(Enrichment {
                        mid_price: self.mid_price[i],
                        spread: get(feature_bits::SPREAD, self.spread[i]),
                        spread_bps: get(feature_bits::SPREAD_BPS, self.spread_bps[i]),
                        book_imbalance: get(feature_bits::BOOK_IMBALANCE, self.book_imbalance[i]),
                        notional: get(feature_bits::NOTIONAL, self.notional[i]),
                        deviation_bps: get(feature_bits::DEVIATION_BPS, self.deviation_bps[i]),
                        hour: self.hour[i],
                        minute: self.minute[i],
                    })
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::tick;

    /// Three ticks with books of different depths (one side empty).
    fn mixed() -> [Tick; 3] {
        let mut second = tick();
        second.instrument_token = 7;
        second.depth_sell.truncate(2);
        second.depth_buy.clear();
        let mut third = tick();
        third.depth_buy.truncate(1);
        [tick(), second, third]
    }

    #[test]
    fn columns_round_trip_through_views() {
        let ticks = mixed();
        let columns = TickColumns::from_ticks(ticks.iter());
        columns.check().unwrap();
        assert_eq!(columns.len(), 3);
        assert_eq!(columns.bid_price.len(), 6);
        assert_eq!(columns.ask_price.len(), 12);
        let (bids, asks) = columns.levels();
        let views = columns.views(&bids, &asks);
        let back: Vec<Tick> = views.iter().map(TickRef::to_tick).collect();
        assert_eq!(back, ticks);
    }

    #[test]
    fn gather_picks_ticks_with_their_levels() {
        let ticks = mixed();
        let columns = TickColumns::from_ticks(ticks.iter());
        for picked in [vec![], vec![1], vec![2, 0], vec![0, 1, 2], vec![1, 1]] {
            let expected: Vec<&Tick> = picked.iter().map(|&i| &ticks[i]).collect();
            let gathered = columns.gather(&picked);
            gathered.check().unwrap();
            assert_eq!(
                gathered,
                TickColumns::from_ticks(expected.into_iter()),
                "{picked:?}"
            );
        }
    }

    #[test]
    fn inconsistent_columns_are_named() {
        let mut columns = TickColumns::from_ticks([tick()].iter());
        columns.close.push(1.0);
        assert!(columns.check().unwrap_err().contains("close"));
        let mut columns = TickColumns::from_ticks([tick()].iter());
        columns.ask_orders.pop();
        assert!(columns.check().unwrap_err().contains("ask_orders"));
    }

    #[test]
    fn enrichment_columns_round_trip() {
        let e = Enrichment {
            mid_price: 1.5,
            spread: Some(0.25),
            notional: Some(0.0),
            hour: 7,
            ..Enrichment::default()
        };
        let r = Rejection::new(crate::ReasonCode::Other, "no");
        let outcomes = vec![Ok(e), Err(r.clone()), Ok(e)];
        let columns = EnrichmentColumns::from_outcomes(outcomes.clone());
        assert_eq!(columns.clone().into_outcomes().unwrap(), outcomes);
        let mut short = columns;
        short.minute.pop();
        assert!(short.into_outcomes().is_err());
    }
}
