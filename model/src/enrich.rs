//! The enrich stage's contract as plain Rust: what it is told (the WIT `enrich-config`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrichConfig {
    /// Depth levels used for the order-book imbalance.
    pub imbalance_levels: usize,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        Self {
            imbalance_levels: 5,
        }
    }
}
