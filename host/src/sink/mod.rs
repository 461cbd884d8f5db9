//! Where ticks end up. Every sink acknowledges what it has made durable, offset by offset, to the
//! commit tracker; nothing is committed before that.
//!
//! - [`lake`]: newline-delimited JSON objects, Hive-partitioned, on a local directory (the offline
//!   stand-in for GCS, same object names).
//! - [`kafka`]: the dead-letter and alerts topics.
//! - [`document`]: the JSON document written for an accepted tick.

pub mod document;
pub mod kafka;
pub mod lake;

/// The Kafka position of a message, carried with it to every sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}
