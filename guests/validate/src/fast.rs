//! An optional optimisation of the validate stage: every rule of [`explain`](crate::logic::explain)
//! at once, as integer tests on the values' bits combined without early exits. It changes no
//! verdict (a test in `logic.rs` holds the two to that on every edge); it only makes the common
//! case, a tick that passes, cheap — a fraction of the rule-by-rule walk, most of all in wasm.
//! A guest written from this one can leave this file out and call `explain` alone.

use stockpipe_model::validate::ValidateConfig;
use stockpipe_model::{DepthLevel, TickRef};

/// The least positive double (a subnormal): an absent `low` stands in as it, below any high.
const LEAST_POSITIVE: f64 = f64::from_bits(1);

/// True exactly when [`explain`](crate::logic::explain) accepts the tick.
#[inline]
pub fn passes(config: &ValidateConfig, t: &TickRef<'_>) -> bool {
    let in_window = (t.timestamp_us >= config.min_timestamp_us)
        & ((config.max_timestamp_us == 0) | (t.timestamp_us <= config.max_timestamp_us));
    // An absent field stands in as a value that passes its rule.
    let prices = positive_finite(t.last_price)
        & positive_finite(t.average_price.unwrap_or(1.0))
        & positive_finite(t.open.unwrap_or(1.0))
        & positive_finite(t.high.unwrap_or(f64::MAX))
        & positive_finite(t.low.unwrap_or(LEAST_POSITIVE))
        & positive_finite(t.close.unwrap_or(1.0));
    // With both positive and finite, their bit patterns order like the values.
    let range = t.low.unwrap_or(LEAST_POSITIVE).to_bits() <= t.high.unwrap_or(f64::MAX).to_bits();
    let quantities = (t.volume.unwrap_or(0)
        | t.buy_quantity.unwrap_or(0)
        | t.sell_quantity.unwrap_or(0)
        | t.last_quantity.unwrap_or(0)
        | t.oi.unwrap_or(0)
        | t.oi_day_high.unwrap_or(0)
        | t.oi_day_low.unwrap_or(0))
        >= 0;
    let changes = finite(t.change.unwrap_or(0.0)) & finite(t.net_change.unwrap_or(0.0));
    if !(in_window & prices & changes & range & quantities) {
        return false;
    }
    let (Some(bid), Some(ask)) = (
        side_passes(t.depth_buy, |better, worse| better >= worse),
        side_passes(t.depth_sell, |better, worse| better <= worse),
    ) else {
        return false;
    };
    match (bid, ask) {
        (Some(bid), Some(ask)) => bid <= ask,
        _ => true,
    }
}

/// `Some(best price's bits)` when the side passes `check_side`'s rules (in `logic.rs`), `None` when it does not.
/// `in_order` compares bit patterns, which order like the prices where those are positive and
/// finite (where they are not, the side fails anyway).
#[inline]
fn side_passes(levels: &[DepthLevel], in_order: impl Fn(u64, u64) -> bool) -> Option<Option<u64>> {
    let (mut ok, mut best, mut previous) = (true, None, None);
    for level in levels {
        let price = level.price.to_bits();
        // Padding: a price of ±0 (the sign shifted out) and no orders or quantity.
        if (price << 1) | (level.orders | level.quantity) as u64 == 0 {
            continue;
        }
        ok &= positive_finite(level.price) & ((level.orders | level.quantity) >= 0);
        if let Some(previous) = previous {
            ok &= in_order(previous, price);
        } else {
            best = Some(price);
        }
        previous = Some(price);
    }
    ok.then_some(best)
}

/// `x > 0` and finite: the bit patterns 1 (the least subnormal) to `f64::MAX`'s.
#[inline]
fn positive_finite(x: f64) -> bool {
    x.to_bits().wrapping_sub(1) < f64::MAX.to_bits()
}

/// Neither infinite nor NaN: an exponent that is not all ones.
#[inline]
fn finite(x: f64) -> bool {
    const EXPONENT: u64 = 0x7ff0_0000_0000_0000;
    x.to_bits() & EXPONENT != EXPONENT
}
