//! The validate stage's contract as plain Rust: what it is told (the WIT `validate-config`).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidateConfig {
    /// Ticks before this instant (UTC µs) are refused.
    pub min_timestamp_us: i64,
    /// Ticks after this instant are refused; 0 = no upper bound.
    pub max_timestamp_us: i64,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        // 2000-01-01T00:00:00Z: nothing real in this feed is older.
        Self {
            min_timestamp_us: 946_684_800_000_000,
            max_timestamp_us: 0,
        }
    }
}
