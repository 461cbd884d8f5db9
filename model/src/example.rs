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
        timestamp_us: 1_497_944_105_284_824,
        instrument_token: 136_519_172,
        last_price: 253.95,
        volume: 53_611,
        sell_quantity: 63_121,
        last_quantity: 10,
        change: 0.019_692_792_438,
        average_price: 253.84,
        open: 254.0,
        high: 254.95,
        low: 253.1,
        close: 253.9,
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
    }
}
