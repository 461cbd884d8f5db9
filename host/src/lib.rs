//! stockpipe's host: Kafka in, sandboxed wasm guests in the middle, Elasticsearch, lake and topics
//! out.
//!
//! Where a tick goes, module by module:
//! 1. [`source`] — a consumer-group member reads a batch from `stock-stream`
//!    ([`source::group::Membership`]: the group behind one type, over [`source::kafka`]'s
//!    clients; [`source::rebalance`] keeps a revoked partition until its work is stored,
//!    [`source::positions`] reports offsets the broker deleted); without a broker,
//!    [`source::embedded`] starts librdkafka's mock cluster in-process, [`source::backfill`] streams
//!    a file ([`source::input`]) into it beside the pipeline and checkpoints it, and
//!    [`source::replay`] puts ticks (or [`source::simulate`]'s market) into a topic;
//!    [`source::once`] says when `run --once` has read everything.
//! 2. [`pipeline`] — the loop: decodes each message straight into the batch's columns
//!    ([`stockpipe_model::json::scan`], the tick scanner; a message it does not recognise is
//!    decoded the thorough way, and one that does not decode is refused with its reason), hands
//!    the columns to the chain and the aggregate stage, and sends each outcome to its sinks
//!    (documents written once per batch by [`sink::document::DocumentWriter`]).
//! 3. [`chain`] — the batch goes through the validate, enrich and route guests, one call per stage;
//!    [`chain::swap`] replaces a guest between batches ([`runtime`]: plain wasmtime — the one
//!    `bindgen!`, the sandbox, trap isolation).
//! 4. [`sink`] — accepted ticks become documents ([`sink::document`]): bulk-indexed in
//!    Elasticsearch ([`sink::elasticsearch`]), in the lake partition route chose
//!    ([`sink::lake_sink`]: [`sink::lake`] segments, [`sink::store`]: a directory or GCS), and on
//!    the alerts topic when route raised an alert ([`sink::kafka`]); refused ticks go, byte for
//!    byte, to the dead-letter topic with the reason in headers. Every sink and stateful stage
//!    answers one per-partition lifecycle ([`sink::PartitionLifecycle`]).
//! 5. [`pipeline::commit`] — each sink acknowledges what it made durable; a partition's offset
//!    moves only over a contiguous run of fully acknowledged messages.
//!
//! Around it: [`service`] (a run: the chain, the pipeline, hot swap and the HTTP API together),
//! [`telemetry`] (the counts — the one place they are kept — metrics, readiness and the live
//! view), [`http`] (the API and the dashboard), [`config`] (the TOML file; each section lives with
//! its connector), [`clock`], [`redact`] (what is printed of a secret). The tools behind the
//! other subcommands are in [`tools`]; none is on
//! a tick's path.

pub mod chain;
pub mod clock;
pub mod config;
pub mod http;
pub mod pipeline;
pub mod position;
pub mod redact;
pub mod runtime;
pub mod service;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod tools;

/// A number that differs from call to call (std's randomly keyed hasher over the clock): jitter,
/// unique ids. Not for anything that needs real randomness.
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}
