//! The host's clock, in the units the pipeline uses: the one place wall-clock time is read.

use std::time::{Duration, SystemTime};

/// Time since the Unix epoch (zero for a clock set before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The host's clock in UTC µs (the guests get a timestamp window, never a clock).
pub fn unix_now_us() -> i64 {
    since_epoch().as_micros() as i64
}

/// Whole seconds (the metrics index's interval documents).
pub fn unix_now_secs() -> u64 {
    since_epoch().as_secs()
}

/// Seconds with their fraction (when a swap happened, for `GET /guests`).
pub fn unix_now_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}

/// Nanoseconds (unique job ids).
pub fn unix_now_nanos() -> u128 {
    since_epoch().as_nanos()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_units_agree() {
        let secs = super::unix_now_secs();
        let us = super::unix_now_us();
        let f = super::unix_now_secs_f64();
        // Read one after another: within a second of each other, and after 2020.
        assert!(secs > 1_577_836_800);
        assert!((us / 1_000_000 - secs as i64).abs() <= 1);
        assert!((f - secs as f64).abs() <= 1.0);
    }
}
