//! Rebalances that keep their work.
//!
//! A partition the group takes away is not let go of at once: it stays assigned here until the
//! pipeline has stored what it holds for it (its buffered lake lines, its documents in flight) and
//! committed, so that its next owner starts where this host stopped instead of processing that
//! work again. librdkafka allows the unassign to come after the rebalance callback has returned;
//! the group waits for it (at most `max.poll.interval.ms`), and the pipeline bounds its own wait
//! by `kafka.revoke_timeout_ms`, past which the partitions are let go of with their work
//! uncommitted (delivered again to the next owner: at least once, as always).
//!
//! With the default `cooperative-sticky` assignment only the partitions that move are revoked;
//! the others keep flowing through the rebalance. Partitions whose assignment was lost (the group
//! moved on without this member) and every partition when the consumer closes are let go of at
//! once: nothing can be committed for them any more, or the close itself would wait.

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the rebalance callback leaves for the pipeline loop; shared by the consumer's context and
/// the pipeline.
#[derive(Debug, Clone, Default)]
pub struct RebalanceNotes {
    state: Arc<Mutex<State>>,
    closing: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct State {
    /// Revoked by the group and still assigned here, since when: waiting for the pipeline to
    /// store and commit what it holds for them, then [`RebalanceNotes::release`].
    revoking: Option<(TopicPartitionList, Instant)>,
    /// Let go of without storing (lost, closing, overdue): the pipeline forgets their work.
    dropped: Vec<i32>,
    /// Assigned since the pipeline last looked.
    assigned: Vec<i32>,
    /// The group has assigned this member something at least once, if only an empty set: it is
    /// a member, and what it does not hold, another member does.
    joined: bool,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Removes `tpl` from the consumer's assignment, as the group's protocol wants it.
fn unassign<C: ConsumerContext>(consumer: &impl Consumer<C>, tpl: &TopicPartitionList) {
    let done = match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, partitions = ?partitions(tpl), "unassigning failed");
    }
}

impl RebalanceNotes {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("rebalance lock")
    }

    /// The consumer context's rebalance callback (on the thread that polls the consumer).
    pub fn on_rebalance<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        err: RDKafkaRespErr,
        tpl: &TopicPartitionList,
    ) {
        let list = partitions(tpl);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let done = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                match done {
                    Ok(()) => {
                        tracing::info!(partitions = ?list, "partitions assigned");
                        let mut state = self.state();
                        state.assigned.extend(list);
                        state.joined = true;
                    }
                    Err(e) => tracing::error!(error = %e, partitions = ?list, "assigning failed"),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if !self.closing.load(Ordering::SeqCst) && !consumer.assignment_lost() =>
            {
                tracing::info!(
                    partitions = ?list,
                    "partitions revoked: storing and committing what this host holds for them before letting go"
                );
                let mut state = self.state();
                match &mut state.revoking {
                    Some((pending, _)) => {
                        for e in tpl.elements() {
                            pending.add_partition(e.topic(), e.partition());
                        }
                    }
                    None => state.revoking = Some((tpl.clone(), Instant::now())),
                }
            }
            other => {
                let why = if other == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    if consumer.assignment_lost() {
                        "the assignment was lost (the group moved on without this member)"
                    } else {
                        "the consumer is closing"
                    }
                } else {
                    "the rebalance failed"
                };
                if self.closing.load(Ordering::SeqCst) {
                    tracing::info!(partitions = ?list, "letting go of partitions at once: {why}");
                } else {
                    tracing::warn!(partitions = ?list, error = ?other, "letting go of partitions at once: {why}");
                }
                unassign(consumer, tpl);
                let mut state = self.state();
                if let Some((pending, _)) = state.revoking.take() {
                    state.dropped.extend(partitions(&pending));
                }
                state.dropped.extend(list);
            }
        }
    }

    /// The partitions waiting to be let go of, if any.
    pub fn revoking(&self) -> Option<Vec<i32>> {
        self.state()
            .revoking
            .as_ref()
            .map(|(tpl, _)| partitions(tpl))
    }

    /// Lets go of the revoked partitions (what the pipeline held for them is stored, or given up
    /// on); returns them.
    pub fn release<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) -> Vec<i32> {
        let Some((tpl, since)) = self.state().revoking.take() else {
            return Vec::new();
        };
        unassign(consumer, &tpl);
        let list = partitions(&tpl);
        tracing::info!(
            partitions = ?list,
            held_ms = since.elapsed().as_millis() as u64,
            "let go of revoked partitions"
        );
        list
    }

    /// Lets go of revoked partitions that waited `limit` already (the pipeline is stuck on a sink):
    /// their work is dropped, to be delivered again to their next owner. True when it did.
    pub fn release_overdue<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
        limit: Duration,
    ) -> bool {
        let overdue = self
            .state()
            .revoking
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= limit);
        if !overdue {
            return false;
        }
        let list = self.release(consumer);
        tracing::warn!(
            partitions = ?list,
            limit_ms = limit.as_millis() as u64,
            "revoked partitions let go of before their work could be stored: it will be delivered again to their next owner"
        );
        self.state().dropped.extend(list);
        true
    }

    /// Partitions let go of without their work stored since the last call.
    pub fn take_dropped(&self) -> Vec<i32> {
        std::mem::take(&mut self.state().dropped)
    }

    /// Whether the group has assigned this member anything yet (an empty set counts).
    pub fn joined(&self) -> bool {
        self.state().joined
    }

    /// Partitions assigned since the last call.
    pub fn take_assigned(&self) -> Vec<i32> {
        std::mem::take(&mut self.state().assigned)
    }

    /// From now on revocations let go at once (the consumer is about to close).
    pub fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }
}
