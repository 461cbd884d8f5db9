//! The alert stage in the run loop: the accepted ticks of a batch and the bars closed meanwhile
//! into the guest, its events to the alerts topic (keyed by instrument, header
//! `stockpipe.alert_id`) and the alerts index (`_id` = `alert_id`), its state into checkpoints
//! that the commits wait for ([`Checkpoints`]), as the aggregate stage's.
//!
//! At least once, with stable ids: every event is tracked against the offset of the message whose
//! tick caused it, so that offset is committed only once the event is stored. A host that takes a
//! partition over restores the state at exactly the committed offset and raises the same events
//! again, with the same ids ([`alert_id`]): the index keeps one document per id, and a consumer
//! of the topic can drop an id it has seen.
//!
//! State is per (partition, instrument): an instrument whose ticks arrive on two partitions has
//! two independent states. It is counted (`stockpipe_alert_instrument_partitions_total`) and
//! warned about once per instrument.

use super::bars::ClosedBar;
use super::checkpoints::Checkpoints;
use super::decode::Decoded;
use crate::chain::alert::{AlertSection, Alerting};
use crate::chain::state::Kept;
use crate::chain::swap::{Deciding, GuestRegistry, Swap};
use crate::chain::{Refusal, RefusalStage, StageOutcome};
use crate::position::{Offset, Offsets, Partition};
use crate::runtime::convert;
use crate::sink::SourceRef;
use crate::sink::store::LakeStore;
use crate::source::group::Consumed;
use crate::telemetry::Telemetry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use stockpipe_model::alert::alert_id;
use stockpipe_model::time::format_rfc3339_micros;

/// The alert stage's part of the pipeline.
pub(super) struct Alerts {
    alerting: Alerting,
    index: Arc<str>,
    topic: Arc<str>,
    checkpoints: Checkpoints,
    /// The partition each instrument's ticks came from first.
    homes: HashMap<u64, i32>,
}

/// An alert event, ready for its sinks.
pub(super) struct AlertEvent {
    /// The message (its place in the batch) whose tick caused it.
    pub(super) message: usize,
    /// That tick's source (its place in a message of several included).
    pub(super) source: SourceRef,
    pub(super) id: String,
    /// The instrument token, as the topic's key.
    pub(super) key: Vec<u8>,
    pub(super) document: Vec<u8>,
    pub(super) time_us: i64,
}

/// What a batch's alert stage leaves for the sinks.
#[derive(Default)]
pub(super) struct AlertsOut {
    /// Ticks the guest faulted on, alone (by their message's place in the batch).
    pub(super) refused: Vec<(usize, Refusal)>,
    pub(super) events: Vec<AlertEvent>,
    pub(super) index: Arc<str>,
    pub(super) topic: Arc<str>,
}

/// An alert event's document, on the topic and in the index.
#[derive(Serialize)]
struct AlertDocument<'a> {
    alert_id: &'a str,
    rule: &'a str,
    kind: &'a str,
    state: &'a str,
    instrument_token: u64,
    value: f64,
    threshold: f64,
    event_time: String,
    source: AlertSource<'a>,
    guest_version: &'a str,
}

#[derive(Serialize)]
struct AlertSource<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// The tick's place in a message of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    tick: Option<u32>,
}

impl Alerts {
    pub(super) fn new(alerting: Alerting, section: &AlertSection, topic: &str) -> Self {
        Self {
            alerting,
            index: Arc::from(section.index.as_str()),
            topic: Arc::from(topic),
            checkpoints: Checkpoints::new("alert", section.checkpoint_ms),
            homes: HashMap::new(),
        }
    }
}

/// Its part of the stateful stages' per-partition lifecycle ([`super::stateful::Stateful`]).
impl Alerts {
    pub(super) fn assigned(&mut self, partition: i32, committed: &Result<Option<i64>, String>) {
        self.checkpoints.assigned(partition, committed);
    }

    /// How far `partition` may be committed given `position`: to its newest stored checkpoint.
    pub(super) fn commit_limit(&self, partition: i32, position: i64) -> Option<i64> {
        self.checkpoints.commit_limit(partition, position)
    }

    /// Forgets a partition let go of: its state and checkpoint bookkeeping.
    pub(super) fn forget(&mut self, partition: i32) {
        self.alerting.kept_mut().forget(partition);
        self.checkpoints.forget(partition);
        self.homes.retain(|_, p| *p != partition);
    }
}

/// A new version of the alert guest, between two batches: it must accept the rules, and every
/// partition's state is handed to it. Refused (the current version keeps serving) when it
/// refuses the rules or cannot read the state, unless forced: then the partitions it could not
/// read start empty, and the event and the log say which.
pub(super) fn swap(alerts: &mut Option<Alerts>, swap: Swap, registry: &GuestRegistry) {
    let deciding = Deciding::new("alert", swap);
    let Some(alerts) = alerts else {
        return deciding.not_running(registry);
    };
    let from = alerts.alerting.component().version.clone();
    let candidate = deciding.swap.component.clone();
    let event = match alerts.alerting.hand_over(candidate.clone()) {
        Err(why) => {
            let why = format!("version {}: {why}", deciding.to());
            deciding.event("refused", from, why)
        }
        Ok((next, unread)) => match deciding.unread(&from, &unread) {
            Some(why) if !deciding.swap.force => deciding.event("refused", from, why),
            problem => {
                let reason = match problem {
                    Some(why) => deciding.forced(&why, &unread),
                    None => format!(
                        "the state of {} partitions handed over",
                        alerts.alerting.kept().partitions() - unread.len()
                    ),
                };
                alerts.alerting = next;
                registry.set_stateful(&candidate);
                deciding.event("swapped", from, reason)
            }
        },
    };
    deciding.decided(event, registry);
}

impl Alerts {
    /// Restores the state of partitions assigned since the last batch (see [`Checkpoints`]).
    pub(super) async fn restore(&mut self, store: &LakeStore, topic: &str) -> anyhow::Result<()> {
        let kept = self.alerting.kept_mut();
        self.checkpoints.restore(kept, store, topic).await
    }

    /// The checkpoints and the state they store, for a round (see [`super::stateful`]).
    pub(super) fn checkpointing(
        &mut self,
    ) -> (&mut Checkpoints, &Kept<impl crate::runtime::StateCalls>) {
        (&mut self.checkpoints, self.alerting.kept())
    }

    /// Runs the batch's accepted ticks, and the bars closed meanwhile, through the alert guest:
    /// its events, and the ticks it faulted on, each by its message's place in the batch.
    pub(super) fn alert(
        &mut self,
        batch: &[Consumed],
        decoded: &Decoded,
        outcomes: &[StageOutcome],
        bars: &[ClosedBar],
        telemetry: &Telemetry,
    ) -> AlertsOut {
        let input = self.input(batch, decoded, outcomes, bars, telemetry);
        let alerting = &mut self.alerting;
        let result = tokio::task::block_in_place(|| {
            alerting.process(input.ticks, input.bars, &input.consumed)
        });
        let version = self.alerting.component().version.clone();
        let refused = result
            .faulted
            .into_iter()
            .map(|(i, fault)| {
                let refusal = Refusal {
                    stage: RefusalStage::Alert,
                    code: fault.code.as_str().into(),
                    message: fault.message,
                    guest_version: Some(version.clone()),
                };
                (input.places[i].0, refusal)
            })
            .collect();
        let rules = self.alerting.rules();
        let e = &result.events;
        let mut events = Vec::with_capacity(e.len());
        let mut recent = Vec::with_capacity(e.len());
        for k in 0..e.len() {
            let (m, tick) = input.places[e.tick[k] as usize];
            let source = &batch[m].source;
            let rule = &rules[e.rule[k] as usize];
            let state = e.state[k];
            let token = e.instrument_token[k];
            let id = alert_id(
                &rule.name,
                token,
                &source.topic,
                source.partition,
                source.offset,
                tick,
                state,
            );
            let document = AlertDocument {
                alert_id: &id,
                rule: &rule.name,
                kind: &rule.kind,
                state: state.name(),
                instrument_token: token,
                value: e.value[k],
                threshold: e.threshold[k],
                event_time: format_rfc3339_micros(e.event_time_us[k]),
                source: AlertSource {
                    topic: &source.topic,
                    partition: source.partition,
                    offset: source.offset,
                    tick,
                },
                guest_version: &version,
            };
            recent.push(crate::telemetry::RecentAlert {
                rule: rule.name.clone(),
                state: state.name(),
                instrument_token: token,
                value: e.value[k],
                threshold: e.threshold[k],
                event_time: document.event_time.clone(),
            });
            let document = serde_json::to_vec(&document).expect("an alert serializes");
            events.push(AlertEvent {
                message: m,
                source: SourceRef {
                    tick,
                    ..source.clone()
                },
                key: token.to_string().into_bytes(),
                id,
                document,
                time_us: e.event_time_us[k],
            });
        }
        telemetry.alerts_raised(recent);
        AlertsOut {
            refused,
            events,
            index: self.index.clone(),
            topic: self.topic.clone(),
        }
    }

    /// The guest's input: the accepted ticks of messages its state does not hold yet, the bars
    /// those ticks closed, and per partition the offset after the batch's last message.
    fn input(
        &mut self,
        batch: &[Consumed],
        decoded: &Decoded,
        outcomes: &[StageOutcome],
        bars: &[ClosedBar],
        telemetry: &Telemetry,
    ) -> AlertInput {
        let ticks = &decoded.ticks;
        let mut input = AlertInput {
            ticks: convert::empty_alert_ticks(),
            bars: convert::empty_alert_bars(),
            places: Vec::new(),
            consumed: BTreeMap::new(),
        };
        // Per decoded tick, its place in the guest's input (`u32::MAX`: not in it).
        let mut place_of = vec![u32::MAX; ticks.len()];
        let (mut current, mut held) = (None, false);
        for slot in &decoded.slots {
            let m = slot.message;
            let source = &batch[m].source;
            if current != Some(m) {
                current = Some(m);
                held = self.alerting.kept().covers(source.partition, source.offset);
                if !held {
                    let next = input
                        .consumed
                        .entry(Partition(source.partition))
                        .or_default();
                    *next = (*next).max(Offset(source.offset).next());
                }
            }
            if held {
                continue;
            }
            let Ok(i) = &slot.result else { continue };
            let StageOutcome::Accepted { enrichment, .. } = &outcomes[*i] else {
                continue;
            };
            let token = ticks.instrument_token[*i];
            self.home(token, source.partition, telemetry);
            place_of[*i] = input.places.len() as u32;
            input.places.push((m, slot.tick));
            let t = &mut input.ticks;
            t.partition.push(source.partition);
            t.timestamp_us.push(ticks.timestamp_us[*i]);
            t.instrument_token.push(token);
            t.last_price.push(ticks.last_price[*i]);
            let has_change =
                stockpipe_model::Fields(ticks.present[*i]).has(stockpipe_model::Fields::CHANGE);
            t.change.push(if has_change {
                ticks.change[*i]
            } else {
                f64::NAN
            });
            t.spread_bps.push(enrichment.spread_bps.unwrap_or(f64::NAN));
        }
        for bar in bars {
            // A bar closed by a tick this stage's state already holds was read before.
            let at = place_of[bar.closed_by_tick];
            if at == u32::MAX {
                continue;
            }
            let b = &mut input.bars;
            b.partition.push(bar.values.partition);
            b.instrument_token.push(bar.values.instrument_token);
            b.end_us.push(bar.values.end_us);
            b.close.push(bar.values.close);
            b.traded_quantity.push(bar.values.traded_quantity);
            b.log_return.push(bar.values.log_return);
            b.closed_by.push(at);
        }
        input
    }

    /// Notes the partition `token`'s ticks come from: a second one is counted and warned about
    /// once (its two states are independent; the input should be keyed by instrument).
    fn home(&mut self, token: u64, partition: i32, telemetry: &Telemetry) {
        match self.homes.get(&token) {
            None => {
                self.homes.insert(token, partition);
            }
            Some(&home) if home == partition || home < 0 => {}
            Some(&home) => {
                tracing::warn!(
                    instrument_token = token,
                    partitions = ?[home, partition],
                    "an instrument's ticks arrive on two partitions: its alert state is kept per partition, so its rules may fire once on each (key the input topic by instrument)"
                );
                telemetry.alert_instrument_split();
                // Warned once: marked.
                self.homes.insert(token, -1);
            }
        }
    }
}

/// The guest's input, and where each of its ticks came from.
struct AlertInput {
    ticks: crate::runtime::bindings::alert::AlertTicks,
    bars: crate::runtime::bindings::alert::AlertBars,
    /// Per input tick: its message's place in the batch and its place in that message.
    places: Vec<(usize, Option<u32>)>,
    consumed: Offsets,
}
