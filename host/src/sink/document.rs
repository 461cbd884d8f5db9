//! The document written for an accepted tick: the tick's own fields (timestamp as RFC 3339 UTC with
//! microseconds, which Elasticsearch's `date_nanos` with `strict_date_optional_time` and BigQuery's TIMESTAMP
//! both read — the sample's `2017-06-20 07:35:05.284824` form is not ISO 8601 and was the trap of
//! the original mapping), the enrichment, the Kafka position, and the guest versions that produced
//! it.

use super::SourceRef;
use crate::chain::GuestVersions;
use serde_json::{Map, Value};
use stockpipe_model::{Enrichment, Tick, json::tick_fields, time::format_rfc3339_micros};

/// The deterministic document id: the guest's event id (content hash) as 16 hex digits.
pub fn document_id(enrichment: &Enrichment) -> String {
    format!("{:016x}", enrichment.event_id)
}

pub fn accepted_document(
    tick: &Tick,
    enrichment: &Enrichment,
    source: &SourceRef,
    versions: &GuestVersions,
) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("event_id".into(), document_id(enrichment).into());
    doc.insert(
        "timestamp".into(),
        format_rfc3339_micros(tick.timestamp_us).into(),
    );
    tick_fields(tick, &mut doc);
    let e = enrichment;
    for (name, value) in [
        ("mid_price", e.mid_price),
        ("spread", e.spread),
        ("spread_bps", e.spread_bps),
        ("book_imbalance", e.book_imbalance),
        ("notional", e.notional),
        ("deviation_bps", e.deviation_bps),
    ] {
        doc.insert(name.into(), value.into());
    }
    doc.insert("hour".into(), e.hour.into());
    doc.insert("minute".into(), e.minute.into());
    doc.insert(
        "source".into(),
        serde_json::json!({"topic": source.topic, "partition": source.partition, "offset": source.offset}),
    );
    let guests: Map<String, Value> = versions
        .iter()
        .map(|(n, v)| ((*n).to_string(), Value::from(v.as_str())))
        .collect();
    doc.insert("guest_versions".into(), Value::Object(guests));
    doc
}
