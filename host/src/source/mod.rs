//! Where ticks come from: Kafka (a real broker or the embedded mock cluster), files replayed into
//! Kafka, and the simulated market that feeds it live.

pub mod backfill;
pub mod embedded;
pub mod faults;
pub mod group;
pub mod input;
pub mod kafka;
pub mod kafka_config;
pub mod member;
pub mod once;
pub mod positions;
pub mod rebalance;
pub mod replay;
pub mod secrets;
pub mod simulate;
pub mod topics;
