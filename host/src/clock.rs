//! The host's clock, in the units the pipeline uses.

/// The host's clock in UTC µs (the guests get a timestamp window, never a clock).
pub fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
