//! What a run counts: [`Counts`] (a run's summary, the live view's [`Totals`]) and what the
//! Elasticsearch sink settles between two looks ([`IndexSettled`]).

use serde::Serialize;

/// Everything a run counts — the one place the counts are kept: a run's summary
/// ([`crate::pipeline::RunSummary`]) is these at its end, the live view and the metrics index show
/// [`Totals`] made from them. (The Prometheus counters beside them are bumped by the same calls.)
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Counts {
    pub consumed: u64,
    pub accepted: u64,
    /// Refused by decoding or by a guest (each one is dead-lettered).
    pub rejected: u64,
    /// Dead letters of refused ticks the broker acknowledged.
    pub dead_lettered: u64,
    /// Alert events (a rule firing, or resolving) the broker acknowledged on the alerts topic.
    pub alerts: u64,
    pub lake_objects: u64,
    pub lake_lines: u64,
    /// Re-delivered lines an object already in the lake covered (not written twice).
    pub lake_already_stored: u64,
    /// Documents Elasticsearch acknowledged as indexed.
    pub indexed: u64,
    /// Documents Elasticsearch refused (mapping/parse errors), sent to the dead-letter topic.
    pub index_dead_lettered: u64,
    /// Bulk items and whole bulk requests sent again (429, 5xx, connection failures).
    pub index_retried_items: u64,
    pub index_retried_requests: u64,
    /// Documents a data stream already held (`create` answered 409: a re-delivered tick), counted
    /// as stored, neither retried nor dead-lettered.
    #[serde(skip_serializing_if = "is_zero")]
    pub index_already_stored: u64,
    /// Times a bulk request met a fault of the cluster's (rights, a closed or read-only index, no
    /// write index) and waited for it to be fixed.
    #[serde(skip_serializing_if = "is_zero")]
    pub index_faults: u64,
    /// Offsets the broker no longer had when this group got to them (see [`super::Telemetry::offsets_lost`]).
    pub offsets_lost: u64,
    /// Bars the aggregate stage closed (absent without it). Their lake lines count in
    /// `lake_lines` too; late ticks' dead letters in `dead_lettered`.
    #[serde(skip_serializing_if = "is_zero")]
    pub bars_closed: u64,
    /// Members of ticks' `extra` objects their cap left out (`input.extra_max_bytes`).
    #[serde(skip_serializing_if = "is_zero")]
    pub extra_truncated: u64,
}

/// What the Elasticsearch sink settled since it was last asked (a `BulkReport`'s counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexSettled {
    /// Documents indexed.
    pub indexed: u64,
    /// Documents refused for their own fault (mapping, parse errors), sent to the dead-letter
    /// topic.
    pub dead_lettered: u64,
    /// Items sent again after a retryable item error.
    pub retried_items: u64,
    /// Whole requests sent again (connection refused, 429, 5xx).
    pub retried_requests: u64,
    /// Items a data stream already held (409 to `create`).
    pub already_stored: u64,
    /// Attempts that met a fault of the cluster's and waited.
    pub faults: u64,
}

impl IndexSettled {
    pub fn absorb(&mut self, other: IndexSettled) {
        self.indexed += other.indexed;
        self.dead_lettered += other.dead_lettered;
        self.retried_items += other.retried_items;
        self.retried_requests += other.retried_requests;
        self.already_stored += other.already_stored;
        self.faults += other.faults;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Counts {
    /// What the dashboard and the `stockpipe-metrics` index show: every dead letter together.
    pub fn totals(&self) -> Totals {
        Totals {
            consumed: self.consumed,
            accepted: self.accepted,
            rejected: self.rejected,
            dead_lettered: self.dead_lettered + self.index_dead_lettered,
            indexed: self.indexed,
            lake_lines: self.lake_lines,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Totals {
    pub consumed: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub indexed: u64,
    pub lake_lines: u64,
}
