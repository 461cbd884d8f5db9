//! The enrich stage as pure Rust: features for the index, the dashboard and the regression.
//!
//! Book features use only real levels (all-zero padding levels are skipped). A tick whose
//! features come out non-finite (e.g. a zero mid price) is refused rather than indexed as NaN.
#![forbid(unsafe_code)]

use stockpipe_model::time::Civil;
use stockpipe_model::{DepthLevel, Enrichment, ReasonCode, Rejection, TickRef};

pub use stockpipe_model::enrich::EnrichConfig;

pub fn enrich_batch(
    config: &EnrichConfig,
    ticks: &[TickRef<'_>],
) -> Vec<Result<Enrichment, Rejection>> {
    ticks.iter().map(|t| enrich_tick(config, t)).collect()
}

fn real_levels(levels: &[DepthLevel]) -> impl Iterator<Item = &DepthLevel> {
    levels
        .iter()
        .filter(|l| !(l.price == 0.0 && l.orders == 0 && l.quantity == 0))
}

pub fn enrich_tick(config: &EnrichConfig, t: &TickRef<'_>) -> Result<Enrichment, Rejection> {
    let best_bid = real_levels(t.depth_buy).next().map(|l| l.price);
    let best_ask = real_levels(t.depth_sell).next().map(|l| l.price);
    let (mid_price, spread) = match (best_bid, best_ask) {
        (Some(bid), Some(ask)) => ((bid + ask) / 2.0, ask - bid),
        _ => (t.last_price, 0.0),
    };
    if !(mid_price.is_finite() && mid_price > 0.0) {
        return Err(Rejection::new(
            ReasonCode::NotFinite,
            format!("mid price is {mid_price}"),
        ));
    }
    // Without a book there is no spread and no imbalance (absent, not zero).
    let book = t.has_depth;
    let depth_qty = |levels: &[DepthLevel]| -> f64 {
        real_levels(levels)
            .take(config.imbalance_levels)
            .map(|l| l.quantity as f64)
            .sum()
    };
    let (bid_qty, ask_qty) = (depth_qty(t.depth_buy), depth_qty(t.depth_sell));
    let book_imbalance = if bid_qty + ask_qty > 0.0 {
        (bid_qty - ask_qty) / (bid_qty + ask_qty)
    } else {
        0.0
    };
    let deviation_bps = t.average_price.map(|average| {
        if average > 0.0 {
            (t.last_price - average) / average * 10_000.0
        } else {
            0.0
        }
    });
    let civil = Civil::from_micros(t.timestamp_us);
    Ok(Enrichment {
        mid_price,
        spread: book.then_some(spread),
        spread_bps: book.then_some(spread / mid_price * 10_000.0),
        book_imbalance: book.then_some(book_imbalance),
        notional: t.last_quantity.map(|q| t.last_price * q as f64),
        deviation_bps,
        hour: civil.hour as u8,
        minute: civil.minute as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockpipe_model::example::tick;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn features_of_the_first_sample_tick() {
        let e = enrich_tick(&EnrichConfig::default(), &tick().view()).unwrap();
        assert!(close(e.mid_price, (253.7 + 253.95) / 2.0));
        assert!(close(e.spread.unwrap(), 253.95 - 253.7));
        assert!(close(
            e.spread_bps.unwrap(),
            (253.95 - 253.7) / 253.825 * 10_000.0
        ));
        let (bid, ask) = (
            1068.0 + 958.0 + 212.0 + 610.0 + 737.0,
            695.0 + 897.0 + 268.0 + 1107.0 + 532.0,
        );
        assert!(close(e.book_imbalance.unwrap(), (bid - ask) / (bid + ask)));
        assert!(close(e.notional.unwrap(), 2539.5));
        assert!(close(
            e.deviation_bps.unwrap(),
            (253.95 - 253.84) / 253.84 * 10_000.0
        ));
        assert_eq!((e.hour, e.minute), (7, 35));
    }

    #[test]
    fn imbalance_uses_the_configured_levels() {
        let e = enrich_tick(
            &EnrichConfig {
                imbalance_levels: 1,
            },
            &tick().view(),
        )
        .unwrap();
        assert!(close(
            e.book_imbalance.unwrap(),
            (1068.0 - 695.0) / (1068.0 + 695.0)
        ));
    }

    #[test]
    fn one_sided_book_falls_back_to_last_price() {
        let mut t = tick();
        t.depth_sell.clear();
        let e = enrich_tick(&EnrichConfig::default(), &t.view()).unwrap();
        assert_eq!(
            (e.mid_price, e.spread, e.spread_bps),
            (253.95, Some(0.0), Some(0.0))
        );
        assert!(close(e.book_imbalance.unwrap(), 1.0));
    }

    #[test]
    fn a_tick_without_a_book_or_quantities_has_those_features_absent() {
        let t = stockpipe_model::example::ltp_tick();
        let e = enrich_tick(&EnrichConfig::default(), &t.view()).unwrap();
        assert_eq!(
            e.mid_price, t.last_price,
            "the last price stands in for the mid"
        );
        assert_eq!(
            (
                e.spread,
                e.spread_bps,
                e.book_imbalance,
                e.notional,
                e.deviation_bps
            ),
            (None, None, None, None, None)
        );
        assert_eq!((e.hour, e.minute), (7, 35));
    }

    #[test]
    fn an_empty_book_is_a_book() {
        let mut t = tick();
        t.depth_buy.clear();
        t.depth_sell.clear();
        let e = enrich_tick(&EnrichConfig::default(), &t.view()).unwrap();
        assert_eq!((e.spread, e.book_imbalance), (Some(0.0), Some(0.0)));
    }

    #[test]
    fn refuses_a_zero_mid() {
        let mut t = tick();
        t.depth_buy.clear();
        t.depth_sell.clear();
        t.last_price = 0.0;
        t.has_depth = false;
        assert_eq!(
            enrich_tick(&EnrichConfig::default(), &t.view())
                .unwrap_err()
                .code,
            ReasonCode::NotFinite
        );
    }
}
