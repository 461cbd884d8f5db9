//! A well-formed tick in the sample's shape, for tests and benchmarks on both sides of the boundary.

use crate::{DepthLevel, Tick};

/// The first tick of the reference sample (2017-06-20 07:35:05.284824 UTC), five levels a side.
pub fn tick() -> Tick {
    let level = |price, orders, quantity| DepthLevel {
        price,
        orders,
        quantity,
    };
    Tick {
        volume: Some(53_611),
        sell_quantity: Some(63_121),
        last_quantity: Some(10),
        change: Some(0.019_692_792_438),
        average_price: Some(253.84),
        open: Some(254.0),
        high: Some(254.95),
        low: Some(253.1),
        close: Some(253.9),
        has_depth: true,
        depth_buy: vec![
            level(253.7, 3, 1068),
            level(253.6, 4, 958),
            level(253.55, 2, 212),
            level(253.5, 6, 610),
            level(253.45, 4, 737),
        ],
        depth_sell: vec![
            level(253.95, 3, 695),
            level(254.0, 5, 897),
            level(254.05, 2, 268),
            level(254.1, 7, 1107),
            level(254.15, 3, 532),
        ],
        ..Tick::bare(1_497_944_105_284_824, 136_519_172, 253.95)
    }
}

/// A tick of Kite's `ltp` mode: the instrument and its last price.
pub fn ltp_tick() -> Tick {
    Tick {
        mode: Some(crate::TickMode::Ltp),
        ..Tick::bare(1_497_944_105_284_824, 136_519_172, 253.95)
    }
}
