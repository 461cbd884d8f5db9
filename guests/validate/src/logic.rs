//! The validate stage as pure Rust: is this tick fit for the lake and the index?
//!
//! The host has already decoded the JSON (types and presence are checked there); this stage checks
//! what the values mean. `low <= last_price <= high` is deliberately not required: real ticks break
//! it (the last trade may print outside the day's range as reported in the same quote).
#![forbid(unsafe_code)]

use crate::fast;
use stockpipe_model::{DepthLevel, ReasonCode, Rejection, TickRef};

pub use stockpipe_model::validate::ValidateConfig;

/// One verdict per tick, in order: `None` = accepted.
pub fn validate_batch(config: &ValidateConfig, ticks: &[TickRef<'_>]) -> Vec<Option<Rejection>> {
    ticks
        .iter()
        .map(|t| validate_tick(config, t).err())
        .collect()
}

/// A level of all zeros is padding (an exchange sends it for an empty level), not a quote.
#[inline]
pub fn is_padding(level: &DepthLevel) -> bool {
    level.price == 0.0 && level.orders == 0 && level.quantity == 0
}

/// The rules of [`explain`]; most ticks pass, and [`fast::passes`] says so at a fraction of the
/// cost. A guest of your own can drop the fast path and call `explain` alone: the verdicts are
/// the same.
pub fn validate_tick(config: &ValidateConfig, t: &TickRef<'_>) -> Result<(), Rejection> {
    if fast::passes(config, t) {
        return Ok(());
    }
    explain(config, t)
}

/// The rules one by one, with the first one a tick breaks named in the rejection.
pub fn explain(config: &ValidateConfig, t: &TickRef<'_>) -> Result<(), Rejection> {
    if t.timestamp_us < config.min_timestamp_us {
        return Err(Rejection::new(
            ReasonCode::BadTimestamp,
            format!(
                "timestamp {} µs is before the accepted minimum {}",
                t.timestamp_us, config.min_timestamp_us
            ),
        ));
    }
    if config.max_timestamp_us != 0 && t.timestamp_us > config.max_timestamp_us {
        return Err(Rejection::new(
            ReasonCode::BadTimestamp,
            format!(
                "timestamp {} µs is after the accepted maximum {}",
                t.timestamp_us, config.max_timestamp_us
            ),
        ));
    }
    positive_price("last_price", t.last_price)?;
    // The optional fields are checked where the tick carries them.
    let prices = [
        ("average_price", t.average_price),
        ("open", t.open),
        ("high", t.high),
        ("low", t.low),
        ("close", t.close),
    ];
    for (name, price) in prices {
        if let Some(price) = price {
            positive_price(name, price)?;
        }
    }
    for (name, change) in [("change", t.change), ("net_change", t.net_change)] {
        if let Some(change) = change.filter(|c| !c.is_finite()) {
            return Err(Rejection::new(
                ReasonCode::NotFinite,
                format!("{name} is {change}"),
            ));
        }
    }
    if let (Some(low), Some(high)) = (t.low, t.high)
        && low > high
    {
        return Err(Rejection::new(
            ReasonCode::InvertedRange,
            format!("low {low} is above high {high}"),
        ));
    }
    for (name, qty) in [
        ("volume", t.volume),
        ("buy_quantity", t.buy_quantity),
        ("sell_quantity", t.sell_quantity),
        ("last_quantity", t.last_quantity),
        ("oi", t.oi),
        ("oi_day_high", t.oi_day_high),
        ("oi_day_low", t.oi_day_low),
    ] {
        if let Some(qty) = qty {
            non_negative(name, qty)?;
        }
    }
    let best_bid = check_side("depth.buy", t.depth_buy, |better, worse| better >= worse)?;
    let best_ask = check_side("depth.sell", t.depth_sell, |better, worse| better <= worse)?;
    if let (Some(bid), Some(ask)) = (best_bid, best_ask)
        && bid > ask
    {
        return Err(Rejection::new(
            ReasonCode::CrossedBook,
            format!("best bid {bid} is above best ask {ask}"),
        ));
    }
    Ok(())
}

#[inline]
fn positive_price(name: &str, price: f64) -> Result<(), Rejection> {
    positive_price_at(price, || name.to_string())
}

/// `name` is only built when the check fails: valid ticks (nearly all) allocate nothing.
#[inline]
fn positive_price_at(price: f64, name: impl Fn() -> String) -> Result<(), Rejection> {
    if !price.is_finite() {
        return Err(Rejection::new(
            ReasonCode::NotFinite,
            format!("{} is {price}", name()),
        ));
    }
    if price <= 0.0 {
        return Err(Rejection::new(
            ReasonCode::NonPositivePrice,
            format!("{} is {price}, must be > 0", name()),
        ));
    }
    Ok(())
}

#[inline]
fn non_negative(name: &str, qty: i64) -> Result<(), Rejection> {
    non_negative_at(qty, || name.to_string())
}

#[inline]
fn non_negative_at(qty: i64, name: impl Fn() -> String) -> Result<(), Rejection> {
    if qty < 0 {
        return Err(Rejection::new(
            ReasonCode::NegativeQuantity,
            format!("{} is {qty}, must be >= 0", name()),
        ));
    }
    Ok(())
}

/// Checks one side of the book and returns its best price. `in_order(better, worse)` says whether
/// two consecutive levels are in the side's order (bids descending, asks ascending).
#[inline]
fn check_side(
    side: &str,
    levels: &[DepthLevel],
    in_order: impl Fn(f64, f64) -> bool,
) -> Result<Option<f64>, Rejection> {
    let mut previous: Option<f64> = None;
    for (i, level) in levels.iter().enumerate().filter(|(_, l)| !is_padding(l)) {
        positive_price_at(level.price, || format!("{side}[{i}].price"))?;
        non_negative_at(level.orders, || format!("{side}[{i}].orders"))?;
        non_negative_at(level.quantity, || format!("{side}[{i}].quantity"))?;
        if let Some(prev) = previous
            && !in_order(prev, level.price)
        {
            return Err(Rejection::new(
                ReasonCode::UnsortedBook,
                format!(
                    "{side}[{i}].price {} is out of order after {prev}",
                    level.price
                ),
            ));
        }
        previous = Some(level.price);
    }
    Ok(levels.iter().find(|l| !is_padding(l)).map(|l| l.price))
}

#[cfg(test)]
mod tests {
    use super::*;

    use stockpipe_model::Tick;
    use stockpipe_model::example::tick;

    fn code(t: &Tick) -> Option<ReasonCode> {
        validate_tick(&ValidateConfig::default(), &t.view())
            .err()
            .map(|r| r.code)
    }

    #[test]
    fn accepts_a_sound_tick() {
        assert_eq!(code(&tick()), None);
    }

    #[test]
    fn last_price_outside_the_day_range_is_accepted() {
        let mut t = tick();
        t.last_price = t.high.unwrap() + 1.0;
        assert_eq!(code(&t), None);
    }

    #[test]
    fn refuses_bad_prices() {
        let mut t = tick();
        t.last_price = f64::NAN;
        assert_eq!(code(&t), Some(ReasonCode::NotFinite));
        let mut t = tick();
        t.open = Some(-1.0);
        assert_eq!(code(&t), Some(ReasonCode::NonPositivePrice));
        let mut t = tick();
        t.close = Some(0.0);
        assert_eq!(code(&t), Some(ReasonCode::NonPositivePrice));
        let mut t = tick();
        t.change = Some(f64::INFINITY);
        assert_eq!(code(&t), Some(ReasonCode::NotFinite));
    }

    #[test]
    fn refuses_low_above_high() {
        let mut t = tick();
        t.low = Some(300.0);
        let r = validate_tick(&ValidateConfig::default(), &t.view()).unwrap_err();
        assert_eq!(r.code, ReasonCode::InvertedRange);
        assert!(r.message.contains("low 300"), "{}", r.message);
    }

    #[test]
    fn refuses_negative_quantities() {
        let mut t = tick();
        t.volume = Some(-1);
        assert_eq!(code(&t), Some(ReasonCode::NegativeQuantity));
        let mut t = tick();
        t.depth_sell[1].quantity = -5;
        assert_eq!(code(&t), Some(ReasonCode::NegativeQuantity));
    }

    #[test]
    fn refuses_unsorted_and_crossed_books() {
        let mut t = tick();
        t.depth_buy.swap(0, 1);
        assert_eq!(code(&t), Some(ReasonCode::UnsortedBook));
        let mut t = tick();
        t.depth_sell.swap(1, 2);
        assert_eq!(code(&t), Some(ReasonCode::UnsortedBook));
        let mut t = tick();
        t.depth_buy[0].price = 254.5;
        t.depth_buy.truncate(1);
        t.depth_sell.truncate(1);
        assert_eq!(code(&t), Some(ReasonCode::CrossedBook));
    }

    #[test]
    fn locked_books_one_sided_books_and_padding_are_fine() {
        let mut t = tick();
        t.depth_buy[0].price = t.depth_sell[0].price;
        assert_eq!(code(&t), None);
        let mut t = tick();
        t.depth_sell.clear();
        assert_eq!(code(&t), None);
        let mut t = tick();
        t.depth_buy.push(DepthLevel {
            price: 0.0,
            orders: 0,
            quantity: 0,
        });
        assert_eq!(code(&t), None);
    }

    #[test]
    fn a_tick_of_only_a_price_is_valid_and_what_it_carries_is_checked() {
        let t = stockpipe_model::example::ltp_tick();
        assert_eq!(code(&t), None);
        let mut t = stockpipe_model::example::ltp_tick();
        t.oi = Some(-3);
        let r = validate_tick(&ValidateConfig::default(), &t.view()).unwrap_err();
        assert_eq!(r.code, ReasonCode::NegativeQuantity);
        assert!(r.message.contains("oi is -3"), "{}", r.message);
        let mut t = stockpipe_model::example::ltp_tick();
        t.net_change = Some(f64::NAN);
        assert_eq!(code(&t), Some(ReasonCode::NotFinite));
        // A range needs both ends.
        let mut t = tick();
        t.high = None;
        t.low = Some(1e9);
        assert_eq!(code(&t), None);
    }

    #[test]
    fn timestamp_window() {
        let config = ValidateConfig {
            min_timestamp_us: 1_000,
            max_timestamp_us: 2_000,
        };
        let mut t = tick();
        t.timestamp_us = 999;
        assert_eq!(
            validate_tick(&config, &t.view()).unwrap_err().code,
            ReasonCode::BadTimestamp
        );
        t.timestamp_us = 2_001;
        assert_eq!(
            validate_tick(&config, &t.view()).unwrap_err().code,
            ReasonCode::BadTimestamp
        );
        t.timestamp_us = 1_500;
        assert!(validate_tick(&config, &t.view()).is_ok());
    }

    /// The fast test and the rule-by-rule walk agree on every tick, including the edges of each
    /// rule: ±0, NaN, infinities, subnormals, negative counts, padding and near-padding levels,
    /// levels out of order, crossed and locked books, the window's bounds.
    #[test]
    fn the_fast_test_agrees_with_the_rules() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let prices = [
            253.7,
            254.0,
            253.95,
            0.0,
            -0.0,
            -1.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 4.0,
            f64::MAX,
        ];
        let counts = [0, 1, 7, -1, i64::MIN, i64::MAX];
        let times = [999, 1_000, 1_500, 2_000, 2_001, i64::MIN, i64::MAX];
        let configs = [
            ValidateConfig::default(),
            ValidateConfig {
                min_timestamp_us: 1_000,
                max_timestamp_us: 2_000,
            },
        ];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..200_000 {
            let mut t = tick();
            for _ in 0..next(4) {
                let price = prices[next(prices.len())];
                let count = counts[next(counts.len())];
                match next(12) {
                    0 => t.timestamp_us = times[next(times.len())],
                    1 => t.last_price = price,
                    2 => t.low = [Some(price), None][next(2)],
                    3 => t.high = [Some(price), None][next(2)],
                    4 => t.change = [Some(price), None][next(2)],
                    5 => t.volume = [Some(count), None][next(2)],
                    6 => t.close = [Some(price), None][next(2)],
                    7 => {
                        let side = if next(2) == 0 {
                            &mut t.depth_buy
                        } else {
                            &mut t.depth_sell
                        };
                        let i = next(side.len() + 1).min(side.len().saturating_sub(1));
                        match next(5) {
                            0 => side.clear(),
                            1 => side.truncate(i),
                            2 if !side.is_empty() => side[i].price = price,
                            3 if !side.is_empty() => side[i].orders = count,
                            _ if !side.is_empty() => side[i].quantity = count,
                            _ => {}
                        }
                    }
                    8 => {
                        // Padding (either zero), or a zero price with something on it.
                        let side = if next(2) == 0 {
                            &mut t.depth_buy
                        } else {
                            &mut t.depth_sell
                        };
                        let at = next(side.len() + 1);
                        let price = if next(2) == 0 { 0.0 } else { -0.0 };
                        let quantity = [0, 0, 3][next(3)];
                        side.insert(
                            at,
                            DepthLevel {
                                price,
                                orders: 0,
                                quantity,
                            },
                        );
                    }
                    9 if !t.depth_buy.is_empty() && !t.depth_sell.is_empty() => {
                        t.depth_buy[0].price = t.depth_sell[0].price + [-0.05, 0.0, 0.05][next(3)];
                    }
                    10 if !t.depth_sell.is_empty() => {
                        let other = next(t.depth_sell.len());
                        t.depth_sell.swap(0, other);
                    }
                    _ => t.open = [Some(price), None][next(2)],
                }
            }
            let config = &configs[next(configs.len())];
            let fast = fast::passes(config, &t.view());
            let rules = explain(config, &t.view());
            assert_eq!(fast, rules.is_ok(), "{t:?}: {rules:?}");
            if fast { accepted += 1 } else { refused += 1 }
        }
        // Both answers were exercised, many times.
        assert!(
            accepted > 10_000 && refused > 10_000,
            "{accepted} / {refused}"
        );
    }

    #[test]
    fn batch_keeps_order_and_length() {
        let mut bad = tick();
        bad.low = Some(1_000.0);
        let (good, bad) = (tick(), bad);
        let verdicts = validate_batch(
            &ValidateConfig::default(),
            &[good.view(), bad.view(), good.view()],
        );
        assert_eq!(verdicts.len(), 3);
        assert!(verdicts[0].is_none() && verdicts[2].is_none());
        assert_eq!(
            verdicts[1].as_ref().unwrap().code,
            ReasonCode::InvertedRange
        );
    }
}
