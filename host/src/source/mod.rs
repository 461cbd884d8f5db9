//! Where ticks come from: Kafka (a real broker or the embedded mock cluster) and files replayed
//! into Kafka.

pub mod kafka;
pub mod replay;
