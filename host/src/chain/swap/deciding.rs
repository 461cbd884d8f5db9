//! A stateful stage's swap, decided in the pipeline loop where its state is.

use super::{GuestRegistry, Swap, SwapEvent};
use std::time::Instant;

/// A new version of a stateful stage's guest while the loop decides on it: what both stages'
/// decisions share (`pipeline::bars::swap`, `pipeline::alerts::swap`) — the event, the reasons
/// that name the partitions whose state the candidate cannot read, and the record.
pub struct Deciding {
    stage: &'static str,
    pub swap: Swap,
    started: Instant,
}

impl Deciding {
    pub fn new(stage: &'static str, swap: Swap) -> Self {
        Self {
            stage,
            swap,
            started: Instant::now(),
        }
    }

    /// The candidate's version.
    pub fn to(&self) -> &str {
        &self.swap.component.version
    }

    pub fn event(&self, outcome: &'static str, from: String, reason: String) -> SwapEvent {
        SwapEvent {
            at: crate::clock::unix_now_secs_f64(),
            stage: self.stage,
            outcome,
            from_version: from,
            to_version: Some(self.to().to_string()),
            trigger: self.swap.trigger.clone(),
            reason,
            shadow: None,
            decision_ms: self.started.elapsed().as_secs_f64() * 1e3,
            diff_report: self.swap.diff_report.clone(),
            bars_shadow: None,
        }
    }

    /// Refused: the stage is not running on this host.
    pub fn not_running(self, registry: &GuestRegistry) {
        let stage = self.stage;
        let why = format!("the {stage} stage is not running here ([{stage}] enabled = false)");
        let event = self.event("refused", String::new(), why);
        self.decided(event, registry);
    }

    /// Why the candidate cannot take over the state `from` exported, when some partitions'
    /// (`unread`, with why) it cannot read.
    pub fn unread(&self, from: &str, unread: &[(i32, String)]) -> Option<String> {
        (!unread.is_empty()).then(|| {
            let list: Vec<String> = unread
                .iter()
                .map(|(p, why)| format!("partition {p}: {why}"))
                .collect();
            format!(
                "version {} cannot read the state version {from} exported ({})",
                self.to(),
                list.join("; ")
            )
        })
    }

    /// The reason of a swap forced despite `why`, logged: the partitions that start empty.
    pub fn forced(&self, why: &str, unread: &[(i32, String)]) -> String {
        let empty: Vec<i32> = unread.iter().map(|(p, _)| *p).collect();
        tracing::warn!(stage = self.stage, partitions = ?empty, %why, "swap forced: these partitions start with an empty state");
        format!("forced despite: {why}; partitions {empty:?} start with an empty state")
    }

    /// Records the decision in the history and tells whoever waits for it.
    pub fn decided(self, event: SwapEvent, registry: &GuestRegistry) {
        registry.record(event.clone());
        if let Some(tell) = self.swap.decided {
            let _ = tell.try_send(event);
        }
    }
}
