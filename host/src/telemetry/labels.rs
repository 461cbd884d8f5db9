//! The metrics' label sets and histogram buckets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageLabels {
    pub(super) stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StageOutcomeLabels {
    pub(super) stage: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectLabels {
    pub(super) stage: String,
    pub(super) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabels {
    pub(super) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SinkLabels {
    pub(super) sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RetryLabels {
    pub(super) sink: String,
    pub(super) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PartitionLabels {
    pub(super) topic: String,
    pub(super) partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct GuestLabels {
    pub(super) stage: String,
    pub(super) version: String,
    pub(super) source: String,
}

pub(super) type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub(super) fn guest_call_buckets() -> Histogram {
    // 10 µs .. ~2.6 s: a batch call of 1 to 10,000 ticks.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

pub(super) fn sink_buckets() -> Histogram {
    // 100 µs .. ~26 s.
    Histogram::new(exponential_buckets(1e-4, 4.0, 10))
}
