//! Where ticks end up. Every sink acknowledges what it has made durable, offset by offset, to the
//! commit tracker; nothing is committed before that.
//!
//! - [`lake`]: newline-delimited JSON segments, Hive-partitioned, named by their offset range;
//!   [`store`] puts them in a directory (`file://`, the offline default) or a GCS bucket (`gs://`).
//! - [`elasticsearch`]: `_bulk` indexing with item-level retries and dead letters.
//! - [`kafka`]: the dead-letter and alerts topics.
//! - [`document`]: the JSON document written for an accepted tick.

pub mod document;
pub mod elasticsearch;
pub mod kafka;
pub mod lake;
pub mod store;

/// The Kafka position of a message, carried with it to every sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    /// Shared: every message of a batch names the same few topics (no `String` per message).
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
}
