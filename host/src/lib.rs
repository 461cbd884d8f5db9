//! stockpipe's host: Kafka in, sandboxed wasm guests in the middle, Elasticsearch, lake and topics
//! out.
//!
//! Where a tick goes, module by module:
//! 1. [`source::kafka`] — a consumer-group member reads a batch from `stock-stream`
//!    ([`source::replay`] puts files into the topic first; [`source::kafka::EmbeddedKafka`] is the
//!    in-process mock cluster used when no broker is given).
//! 2. [`pipeline`] — decodes each message ([`stockpipe_model::json`]); a message that does not
//!    decode is refused with its reason.
//! 3. [`chain`] — the batch goes through the validate, enrich and route guests, one call per stage
//!    ([`runtime`]: the one `bindgen!`, the sandbox, trap isolation).
//! 4. [`sink`] — accepted ticks become documents: bulk-indexed in Elasticsearch
//!    ([`sink::elasticsearch`]), in the lake partition route chose ([`sink::lake`] segments,
//!    [`sink::store`]: a directory or GCS), and on the alerts topic when route raised an alert;
//!    refused ticks go, byte for byte, to the dead-letter topic with the reason in headers.
//! 5. [`commit`] — each sink acknowledges what it made durable; a partition's offset moves only
//!    over a contiguous run of fully acknowledged messages.
//!
//! Around it: [`telemetry`] (metrics, readiness and the dashboard's live view, served by
//! [`http`]), [`config`] (TOML + validation), [`simulate`] (the tick simulator), [`bench`] and [`bench_pipeline`],
//! [`guest_test`] (fixtures for one component), [`upload`] (files into the lake as NDJSON),
//! [`bigquery`] (the sql/ statements, rendered and submitted), [`kibana`] (the dashboard's saved
//! objects and their import) and [`ml`] (the same models
//! offline, from the lake).

pub mod bench;
pub mod bench_pipeline;
pub mod bigquery;
pub mod chain;
pub mod commit;
pub mod config;
pub mod guest_test;
pub mod http;
pub mod kibana;
pub mod ml;
pub mod pipeline;
pub mod runtime;
pub mod service;
pub mod simulate;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod upload;

/// A number that differs from call to call (std's randomly keyed hasher over the clock): jitter,
/// unique ids. Not for anything that needs real randomness.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}
