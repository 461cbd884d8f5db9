//! The metrics index's document: what one interval added.

use super::{Telemetry, Totals};
use serde::Serialize;
use std::time::Duration;

/// What happened between two [`Telemetry::interval_document`] calls, as the `stockpipe-metrics`
/// index stores it (Kibana's refused / dead-lettered rate reads it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntervalDocument {
    pub timestamp: String,
    /// `timestamp` as a number (the document's `@timestamp` in a data stream).
    #[serde(skip)]
    pub timestamp_us: i64,
    pub host: String,
    pub interval_seconds: f64,
    #[serde(flatten)]
    pub counts: Totals,
}

impl Totals {
    fn minus(self, before: Totals) -> Totals {
        Totals {
            consumed: self.consumed - before.consumed,
            accepted: self.accepted - before.accepted,
            rejected: self.rejected - before.rejected,
            dead_lettered: self.dead_lettered - before.dead_lettered,
            indexed: self.indexed - before.indexed,
            lake_lines: self.lake_lines - before.lake_lines,
        }
    }
}

impl Telemetry {
    /// The counts since `since` (the totals of the previous call), and the totals now.
    pub fn interval_document(
        &self,
        host: &str,
        since: Totals,
        interval: Duration,
    ) -> (IntervalDocument, Totals) {
        let now = self.counts().totals();
        let now_us = crate::clock::unix_now_us();
        let document = IntervalDocument {
            timestamp: stockpipe_model::time::format_rfc3339_micros(now_us),
            timestamp_us: now_us,
            host: host.into(),
            interval_seconds: interval.as_secs_f64(),
            counts: now.minus(since),
        };
        (document, now)
    }
}

pub(super) fn unix_seconds() -> u64 {
    crate::clock::unix_now_secs()
}
