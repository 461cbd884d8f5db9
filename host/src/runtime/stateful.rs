//! The stateful stages' calls: the state calls every stateful interface shares
//! ([`StateCalls`], so one piece of code keeps, checkpoints and hands over any stage's state:
//! [`crate::chain::state`]), and the alert stage's own calls.

use super::bindings::alert;
use super::{AggregateStage, AlertStage, GuestComponent, GuestFault, StageInstance, convert};
use std::sync::Arc;

/// A stateful stage's state calls (`export-state`, `import-state`, `drop-state`): the same in
/// every stateful interface, so the state is kept, checkpointed and handed over by one piece of
/// code ([`crate::chain::state`]).
pub trait StateCalls {
    fn component(&self) -> &Arc<GuestComponent>;

    /// Calls that faulted so far.
    fn faults(&self) -> u64;

    /// One partition's state as the guest exports it.
    fn export_state(&mut self, partition: i32) -> Result<Vec<u8>, GuestFault>;

    /// Hands one partition's state to the guest: `Ok(Err(why))` when it cannot read it.
    fn import_state(
        &mut self,
        partition: i32,
        state: &[u8],
    ) -> Result<Result<(), String>, GuestFault>;

    fn drop_state(&mut self, partition: i32) -> Result<(), GuestFault>;
}

macro_rules! state_calls {
    ($stage:ty) => {
        impl StateCalls for StageInstance<$stage> {
            fn component(&self) -> &Arc<GuestComponent> {
                StageInstance::component(self)
            }

            fn faults(&self) -> u64 {
                StageInstance::faults(self)
            }

            fn export_state(&mut self, partition: i32) -> Result<Vec<u8>, GuestFault> {
                self.call(|g, store| {
                    g.call_export_state(store, partition)
                        .map_err(GuestFault::from_wasmtime)
                })
            }

            fn import_state(
                &mut self,
                partition: i32,
                state: &[u8],
            ) -> Result<Result<(), String>, GuestFault> {
                self.call(|g, store| {
                    g.call_import_state(store, partition, state)
                        .map_err(GuestFault::from_wasmtime)
                })
            }

            fn drop_state(&mut self, partition: i32) -> Result<(), GuestFault> {
                self.call(|g, store| {
                    g.call_drop_state(store, partition)
                        .map_err(GuestFault::from_wasmtime)
                })
            }
        }
    };
}

state_calls!(AggregateStage);
state_calls!(AlertStage);

impl StageInstance<AlertStage> {
    /// The guest's check of the rules: `Ok(Err(why))` names the rule and the key.
    pub fn check_rules(
        &mut self,
        rules: &[alert::AlertRule],
    ) -> Result<Result<(), String>, GuestFault> {
        self.call(|g, store| {
            g.call_check_rules(store, rules)
                .map_err(GuestFault::from_wasmtime)
        })
    }

    /// One alert call. The guest's state lives in the instance: a fault discards it, and the
    /// caller restores what it checkpointed.
    pub fn alert(
        &mut self,
        rules: &[alert::AlertRule],
        ticks: &alert::AlertTicks,
        bars: &alert::AlertBars,
    ) -> Result<stockpipe_model::alert::AlertEvents, GuestFault> {
        let (n, rule_count) = (ticks.timestamp_us.len(), rules.len());
        self.call(|g, store| {
            let out = g
                .call_alert_batch(store, rules, ticks, bars)
                .map_err(GuestFault::from_wasmtime)?;
            convert::alert_events_from_wit(out, n, rule_count).map_err(GuestFault::broken_contract)
        })
    }
}
