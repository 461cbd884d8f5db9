//! What the host tells about itself while it runs.
//!
//! [`Telemetry`] is shared (`Arc`) by the pipeline loop, the consumer's context, the sinks and the
//! HTTP API. It holds three things:
//! - the Prometheus metrics (`prometheus-client`), encoded for `GET /metrics`;
//! - readiness per dependency (Kafka, the lake, Elasticsearch) for `GET /ready`;
//! - the live view the dashboard at `/` draws: recent prices per instrument, throughput per
//!   second, refusals by reason, the latest forecasts (`GET /api/live`).
//!
//! The loop records per batch, not per tick, so the cost does not grow with the tick rate.

mod counts;
mod interval;
mod labels;
mod readiness;

pub use counts::{Counts, IndexSettled, Totals};
pub use interval::IntervalDocument;
use interval::unix_seconds;
use labels::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub use readiness::{Dependency, DependencyStatus, Readiness};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The sinks whose latency and retries are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Elasticsearch,
    Lake,
    DeadLetter,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::Elasticsearch => "elasticsearch",
            Sink::Lake => "lake",
            Sink::DeadLetter => "dead_letter",
        }
    }
}

/// Everything a batch changed, recorded under one lock.
#[derive(Debug, Default)]
pub struct BatchRecord {
    pub consumed: u64,
    pub accepted: u64,
    /// (stage, code) of every refused tick.
    pub refusals: Vec<(&'static str, String)>,
    /// (instrument, event time µs, last price) of accepted ticks.
    pub prices: Vec<(u64, i64, f64)>,
}

/// How many points of each instrument's price line the live view keeps.
pub const PRICE_POINTS: usize = 240;
/// One point per instrument and this much event time (the last price in it): 240 points cover a
/// minute however fast the ticks come.
pub const PRICE_STEP_US: i64 = 250_000;
/// Instruments drawn at most (the first seen).
pub const MAX_INSTRUMENTS: usize = 64;
/// Closed bars kept per instrument for the dashboard's candlesticks.
pub const BAR_POINTS: usize = 120;

/// A closed bar as the dashboard draws it: `[start (unix seconds), open, high, low, close,
/// traded quantity]`.
pub type Candle = [f64; 6];
/// Seconds of throughput history.
pub const RATE_SECONDS: usize = 300;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RateSample {
    /// Unix seconds.
    pub second: u64,
    pub consumed: u64,
    pub accepted: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct LiveState {
    prices: BTreeMap<u64, VecDeque<(f64, f64)>>,
    rates: VecDeque<RateSample>,
    rejects: BTreeMap<(String, String), u64>,
    forecasts: Vec<serde_json::Value>,
    forecasts_source: Option<String>,
    /// Instrument -> its last closed bars, oldest first (the aggregate stage's).
    bars: BTreeMap<u64, VecDeque<Candle>>,
    /// The alert stage's latest events, oldest first.
    alerts: VecDeque<RecentAlert>,
    counts: Counts,
    lost: Vec<crate::source::positions::LostRange>,
}

/// An alert event as the live view lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentAlert {
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub instrument_token: u64,
    pub value: f64,
    pub threshold: f64,
    /// RFC 3339: the tick's time, or the bar's end.
    pub event_time: String,
}

/// The alert events the live view keeps.
const RECENT_ALERTS: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct RejectCount {
    pub stage: String,
    pub code: String,
    pub count: u64,
}

/// What `GET /api/live` answers (the dashboard's one source).
#[derive(Debug, Clone, Serialize)]
pub struct LiveSnapshot {
    /// Instrument token → `[[unix seconds (event time), last price], …]`, oldest first.
    pub prices: BTreeMap<u64, Vec<(f64, f64)>>,
    pub rates: Vec<RateSample>,
    pub rejects: Vec<RejectCount>,
    pub totals: Totals,
    pub forecasts: Vec<serde_json::Value>,
    pub forecasts_source: Option<String>,
    /// Instrument → its last closed bars, oldest first (absent without the aggregate stage).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bars: BTreeMap<u64, Vec<Candle>>,
    /// The alert stage's latest events (fired and resolved), newest first.
    pub alerts: Vec<RecentAlert>,
}

pub struct Telemetry {
    registry: Registry,
    consumed: Counter,
    accepted: Counter,
    guest_ticks: Family<StageOutcomeLabels, Counter>,
    rejects: Family<RejectLabels, Counter>,
    dead_lettered: Family<StageLabels, Counter>,
    guest_call: Histograms<StageLabels>,
    sink_latency: Histograms<SinkLabels>,
    sink_retries: Family<RetryLabels, Counter>,
    sink_written: Family<SinkLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    uncommitted: Family<PartitionLabels, Gauge>,
    committed: Family<PartitionLabels, Gauge>,
    offsets_lost: Family<PartitionLabels, Counter>,
    kafka_errors: Family<CodeLabels, Counter>,
    guest_info: Family<GuestLabels, Gauge>,
    swaps: Family<StageOutcomeLabels, Counter>,
    extra_truncated: Counter,
    alert_instrument_partitions: Counter,
    readiness: Mutex<BTreeMap<Dependency, DependencyStatus>>,
    live: Mutex<LiveState>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stockpipe");
        let consumed = Counter::default();
        let accepted = Counter::default();
        let guest_ticks = Family::default();
        let rejects = Family::default();
        let dead_lettered = Family::default();
        let guest_call: Histograms<StageLabels> = Family::new_with_constructor(guest_call_buckets);
        let sink_latency: Histograms<SinkLabels> = Family::new_with_constructor(sink_buckets);
        let sink_retries = Family::default();
        let sink_written = Family::default();
        let consumer_lag = Family::default();
        let uncommitted = Family::default();
        let committed = Family::default();
        let offsets_lost = Family::default();
        let kafka_errors = Family::default();
        let guest_info = Family::default();
        let swaps = Family::default();
        let extra_truncated = Counter::default();
        let alert_instrument_partitions = Counter::default();
        registry.register(
            "alert_instrument_partitions",
            "Instruments whose ticks arrived on a second partition: their alert state is kept per partition, so a rule may fire once on each",
            alert_instrument_partitions.clone(),
        );
        registry.register(
            "extra_truncated",
            "Members of ticks' extra objects (fields no column takes) left out by input.extra_max_bytes",
            extra_truncated.clone(),
        );
        registry.register(
            "ticks_consumed",
            "Messages taken from the input topic",
            consumed.clone(),
        );
        registry.register(
            "ticks_accepted",
            "Ticks every guest accepted",
            accepted.clone(),
        );
        registry.register(
            "guest_ticks",
            "Ticks each guest stage accepted or refused",
            guest_ticks.clone(),
        );
        registry.register(
            "ticks_rejected",
            "Ticks refused, by stage (decode, validate, enrich, route) and reason code",
            rejects.clone(),
        );
        registry.register(
            "ticks_dead_lettered",
            "Dead letters the broker acknowledged, by the stage that refused the tick",
            dead_lettered.clone(),
        );
        registry.register(
            "guest_call_seconds",
            "Duration of one batch call into a guest component",
            guest_call.clone(),
        );
        registry.register(
            "sink_request_seconds",
            "Duration of one sink request (a bulk request, a lake object, a dead letter)",
            sink_latency.clone(),
        );
        registry.register(
            "sink_retries",
            "Sink requests or items sent again",
            sink_retries.clone(),
        );
        registry.register(
            "kafka_errors",
            "Errors the Kafka consumer reported, by librdkafka's code",
            kafka_errors.clone(),
        );
        registry.register(
            "sink_written",
            "Documents or lines a sink acknowledged",
            sink_written.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages not yet processed: the end of the partition minus the consumer's position (librdkafka statistics)",
            consumer_lag.clone(),
        );
        registry.register(
            "uncommitted_messages",
            "Messages past the group's committed offset: not processed yet, or waiting for a sink to acknowledge them",
            uncommitted.clone(),
        );
        registry.register(
            "committed_offset",
            "The group's committed offset per partition",
            committed.clone(),
        );
        registry.register(
            "offsets_lost",
            "Offsets the broker had deleted (retention, the embedded cluster's cap) before this group stored them: data never processed",
            offsets_lost.clone(),
        );
        registry.register(
            "guest_info",
            "The loaded guest version of each stage (value 1)",
            guest_info.clone(),
        );
        registry.register(
            "guest_swaps",
            "Hot swap decisions by stage and outcome",
            swaps.clone(),
        );
        Self {
            registry,
            consumed,
            accepted,
            guest_ticks,
            rejects,
            dead_lettered,
            guest_call,
            sink_latency,
            sink_retries,
            sink_written,
            consumer_lag,
            uncommitted,
            committed,
            offsets_lost,
            kafka_errors,
            guest_info,
            swaps,
            extra_truncated,
            alert_instrument_partitions,
            readiness: Mutex::new(BTreeMap::new()),
            live: Mutex::new(LiveState::default()),
        }
    }

    /// The metrics in the OpenMetrics text format, with the guest versions of `loaded`.
    pub fn encode(
        &self,
        loaded: &[crate::chain::swap::LoadedGuest],
        history: &[crate::chain::swap::SwapEvent],
    ) -> String {
        self.guest_info.clear();
        for g in loaded {
            self.guest_info
                .get_or_create(&GuestLabels {
                    stage: g.stage.into(),
                    version: g.version.clone(),
                    source: g.source.clone(),
                })
                .set(1);
        }
        self.swaps.clear();
        for e in history {
            self.swaps
                .get_or_create(&StageOutcomeLabels {
                    stage: e.stage.into(),
                    outcome: e.outcome.into(),
                })
                .inc();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// Records one processed batch: the counters, each stage's accepted/refused counts, the
    /// guest call durations, and the live view.
    pub fn record_batch(&self, record: BatchRecord, guest_calls: &[(&'static str, Duration)]) {
        self.consumed.inc_by(record.consumed);
        self.accepted.inc_by(record.accepted);
        let mut refused_at: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (stage, code) in &record.refusals {
            *refused_at.entry(stage).or_default() += 1;
            self.rejects
                .get_or_create(&RejectLabels {
                    stage: (*stage).into(),
                    code: code.clone(),
                })
                .inc();
        }
        // Ticks reaching a stage = those no earlier stage refused.
        let mut reaching = record.consumed - refused_at.get("decode").copied().unwrap_or(0);
        for stage in ["validate", "enrich", "route"] {
            let refused = refused_at.get(stage).copied().unwrap_or(0);
            let labels = |outcome: &str| StageOutcomeLabels {
                stage: stage.into(),
                outcome: outcome.into(),
            };
            self.guest_ticks
                .get_or_create(&labels("accepted"))
                .inc_by(reaching.saturating_sub(refused));
            self.guest_ticks
                .get_or_create(&labels("refused"))
                .inc_by(refused);
            reaching = reaching.saturating_sub(refused);
        }
        for (stage, took) in guest_calls {
            self.guest_call
                .get_or_create(&StageLabels {
                    stage: (*stage).into(),
                })
                .observe(took.as_secs_f64());
        }
        let second = unix_seconds();
        let mut live = self.live.lock().expect("live view lock");
        live.counts.consumed += record.consumed;
        live.counts.accepted += record.accepted;
        live.counts.rejected += record.refusals.len() as u64;
        let sample = match live.rates.back_mut() {
            Some(s) if s.second == second => s,
            _ => {
                live.rates.push_back(RateSample {
                    second,
                    ..RateSample::default()
                });
                while live.rates.len() > RATE_SECONDS {
                    live.rates.pop_front();
                }
                live.rates.back_mut().expect("just pushed")
            }
        };
        sample.consumed += record.consumed;
        sample.accepted += record.accepted;
        sample.rejected += record.refusals.len() as u64;
        for (stage, code) in record.refusals {
            *live.rejects.entry((stage.to_string(), code)).or_default() += 1;
        }
        for (instrument, at_us, price) in record.prices {
            if !live.prices.contains_key(&instrument) && live.prices.len() >= MAX_INSTRUMENTS {
                continue;
            }
            let line = live.prices.entry(instrument).or_default();
            let point = (at_us as f64 / 1e6, price);
            let step = |t: f64| (t * 1e6) as i64 / PRICE_STEP_US;
            match line.back_mut() {
                Some(last) if step(last.0) == step(point.0) => *last = point,
                _ => line.push_back(point),
            }
            if line.len() > PRICE_POINTS {
                line.pop_front();
            }
        }
    }

    /// `count` dead letters of ticks `stage` refused were acknowledged by the broker.
    pub fn dead_lettered(&self, stage: &str, count: u64) {
        if count == 0 {
            return;
        }
        self.dead_lettered_metric(stage, count);
        self.live
            .lock()
            .expect("live view lock")
            .counts
            .dead_lettered += count;
    }

    fn dead_lettered_metric(&self, stage: &str, count: u64) {
        self.dead_lettered
            .get_or_create(&StageLabels {
                stage: stage.into(),
            })
            .inc_by(count);
    }

    /// What Elasticsearch settled: documents indexed, documents it refused (dead-lettered with
    /// stage `elasticsearch`), and the retries of the settled requests (counted when a request
    /// completes, unlike the `sink_retries` metric, which counts each retry as it is sent).
    pub fn index_settled(&self, report: &IndexSettled) {
        self.sink_written(Sink::Elasticsearch, report.indexed);
        if report.dead_lettered > 0 {
            self.dead_lettered_metric("elasticsearch", report.dead_lettered);
        }
        let counts = &mut self.live.lock().expect("live view lock").counts;
        counts.index_dead_lettered += report.dead_lettered;
        counts.index_retried_items += report.retried_items;
        counts.index_retried_requests += report.retried_requests;
        counts.index_already_stored += report.already_stored;
        counts.index_faults += report.faults;
    }

    /// `count` alerts were acknowledged by the broker.
    pub fn alerts_delivered(&self, count: u64) {
        if count > 0 {
            self.live.lock().expect("live view lock").counts.alerts += count;
        }
    }

    /// A lake object of `lines` lines was stored.
    pub fn lake_object_stored(&self, lines: u64) {
        self.sink_written(Sink::Lake, lines);
        self.live
            .lock()
            .expect("live view lock")
            .counts
            .lake_objects += 1;
    }

    /// An instrument's ticks arrived on a second partition (the alert stage warns once).
    pub fn alert_instrument_split(&self) {
        self.alert_instrument_partitions.inc();
    }

    /// `count` members of ticks' `extra` objects left out by their cap (`input.extra_max_bytes`).
    pub fn extra_truncated(&self, count: u64) {
        if count > 0 {
            self.extra_truncated.inc_by(count);
            self.live
                .lock()
                .expect("live view lock")
                .counts
                .extra_truncated += count;
        }
    }

    /// `count` re-delivered lines that objects already in the lake cover.
    pub fn lake_already_stored(&self, count: u64) {
        if count > 0 {
            self.live
                .lock()
                .expect("live view lock")
                .counts
                .lake_already_stored += count;
        }
    }

    /// Bars the aggregate stage closed, per instrument, in the order they closed.
    pub fn bars_closed(&self, bars: impl IntoIterator<Item = (u64, Candle)>) {
        let mut live = self.live.lock().expect("live view lock");
        for (instrument, candle) in bars {
            live.counts.bars_closed += 1;
            if !live.bars.contains_key(&instrument) && live.bars.len() >= MAX_INSTRUMENTS {
                continue;
            }
            let line = live.bars.entry(instrument).or_default();
            line.push_back(candle);
            if line.len() > BAR_POINTS {
                line.pop_front();
            }
        }
    }

    /// Alert events the alert stage raised (the live view keeps the latest).
    pub fn alerts_raised(&self, events: Vec<RecentAlert>) {
        if events.is_empty() {
            return;
        }
        let mut live = self.live.lock().expect("live view lock");
        for event in events {
            live.alerts.push_back(event);
            if live.alerts.len() > RECENT_ALERTS {
                live.alerts.pop_front();
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.live.lock().expect("live view lock").counts
    }

    pub fn sink_request(&self, sink: Sink, took: Duration) {
        self.sink_latency
            .get_or_create(&SinkLabels {
                sink: sink.name().into(),
            })
            .observe(took.as_secs_f64());
    }

    /// `kind` is `request` (a whole request sent again) or `item` (bulk items sent again).
    pub fn sink_retries(&self, sink: Sink, kind: &str, count: u64) {
        if count > 0 {
            self.sink_retries
                .get_or_create(&RetryLabels {
                    sink: sink.name().into(),
                    kind: kind.into(),
                })
                .inc_by(count);
        }
    }

    /// An error the Kafka consumer reported (`code`: librdkafka's, as its name).
    pub fn kafka_error(&self, code: &str) {
        self.kafka_errors
            .get_or_create(&CodeLabels { code: code.into() })
            .inc();
    }

    pub fn sink_written(&self, sink: Sink, count: u64) {
        self.sink_written
            .get_or_create(&SinkLabels {
                sink: sink.name().into(),
            })
            .inc_by(count);
        let mut live = self.live.lock().expect("live view lock");
        match sink {
            Sink::Elasticsearch => live.counts.indexed += count,
            Sink::Lake => live.counts.lake_lines += count,
            Sink::DeadLetter => {}
        }
    }

    /// `lag`: messages not processed yet; `uncommitted`: past the committed offset.
    pub fn partition_lag(&self, topic: &str, partition: i32, lag: i64, uncommitted: i64) {
        let labels = PartitionLabels {
            topic: topic.into(),
            partition,
        };
        self.consumer_lag.get_or_create(&labels).set(lag);
        self.uncommitted.get_or_create(&labels).set(uncommitted);
    }

    pub fn committed_offset(&self, topic: &str, partition: i32, offset: i64) {
        self.committed
            .get_or_create(&PartitionLabels {
                topic: topic.into(),
                partition,
            })
            .set(offset);
    }

    /// The broker no longer had `lost` when the group got there: logged as an error, counted, and
    /// kept for the run's summary.
    pub fn offsets_lost(&self, topic: &str, lost: crate::source::positions::LostRange) {
        tracing::error!(
            topic,
            partition = lost.partition,
            from = lost.from,
            to = lost.to,
            lost = lost.len(),
            "offsets lost: the broker deleted them (retention, or the embedded cluster's cap) before this group stored them; they were never processed"
        );
        self.offsets_lost
            .get_or_create(&PartitionLabels {
                topic: topic.into(),
                partition: lost.partition,
            })
            .inc_by(lost.len());
        let mut live = self.live.lock().expect("live view lock");
        live.counts.offsets_lost += lost.len();
        live.lost.push(lost);
    }

    /// Every range reported lost so far.
    pub fn lost_ranges(&self) -> Vec<crate::source::positions::LostRange> {
        self.live.lock().expect("live view lock").lost.clone()
    }

    pub fn set_forecasts(&self, source: String, forecasts: Vec<serde_json::Value>) {
        let mut live = self.live.lock().expect("live view lock");
        live.forecasts = forecasts;
        live.forecasts_source = Some(source);
    }

    pub fn forecasts_source(&self) -> Option<String> {
        self.live
            .lock()
            .expect("live view lock")
            .forecasts_source
            .clone()
    }

    pub fn live(&self) -> LiveSnapshot {
        let live = self.live.lock().expect("live view lock");
        LiveSnapshot {
            prices: live
                .prices
                .iter()
                .map(|(k, v)| (*k, v.iter().copied().collect()))
                .collect(),
            rates: live.rates.iter().copied().collect(),
            rejects: live
                .rejects
                .iter()
                .map(|((stage, code), count)| RejectCount {
                    stage: stage.clone(),
                    code: code.clone(),
                    count: *count,
                })
                .collect(),
            totals: live.counts.totals(),
            forecasts: live.forecasts.clone(),
            forecasts_source: live.forecasts_source.clone(),
            bars: live
                .bars
                .iter()
                .map(|(k, v)| (*k, v.iter().copied().collect()))
                .collect(),
            alerts: live.alerts.iter().rev().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_view_keeps_the_latest_alerts_newest_first() {
        let t = Telemetry::new();
        let alert = |n: u64| RecentAlert {
            rule: "r".into(),
            state: "firing",
            instrument_token: n,
            value: 1.0,
            threshold: 1.0,
            event_time: String::new(),
        };
        t.alerts_raised((0..RECENT_ALERTS as u64 + 5).map(alert).collect());
        let kept: Vec<u64> = t.live().alerts.iter().map(|a| a.instrument_token).collect();
        assert_eq!(kept.len(), RECENT_ALERTS);
        assert_eq!(kept[0], RECENT_ALERTS as u64 + 4, "newest first");
        assert_eq!(*kept.last().unwrap(), 5, "the oldest dropped");
    }

    #[test]
    fn extra_members_the_cap_left_out_are_counted() {
        let t = Telemetry::new();
        t.extra_truncated(0);
        t.extra_truncated(3);
        assert_eq!(t.counts().extra_truncated, 3);
        let text = t.encode(&[], &[]);
        assert!(text.contains("stockpipe_extra_truncated_total 3"), "{text}");
    }

    #[test]
    fn lost_offsets_are_counted_per_partition_and_kept_for_the_summary() {
        use crate::source::positions::LostRange;
        let t = Telemetry::new();
        let lost = |partition, from, to| LostRange {
            partition,
            from,
            to,
        };
        t.offsets_lost("stock-stream", lost(5, 0, 1948));
        t.offsets_lost("stock-stream", lost(5, 3000, 3010));
        t.offsets_lost("stock-stream", lost(1, 7, 8));
        let text = t.encode(&[], &[]);
        assert!(
            text.contains(
                r#"stockpipe_offsets_lost_total{topic="stock-stream",partition="5"} 1958"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"stockpipe_offsets_lost_total{topic="stock-stream",partition="1"} 1"#),
            "{text}"
        );
        assert_eq!(t.counts().offsets_lost, 1959);
        assert_eq!(
            t.lost_ranges(),
            vec![lost(5, 0, 1948), lost(5, 3000, 3010), lost(1, 7, 8)]
        );
    }

    #[test]
    fn a_batch_counts_per_stage_and_feeds_the_live_view() {
        let t = Telemetry::new();
        t.record_batch(
            BatchRecord {
                consumed: 10,
                accepted: 7,
                refusals: vec![
                    ("decode", "bad-json".into()),
                    ("validate", "non-positive-price".into()),
                    ("enrich", "crossed-book".into()),
                ],
                prices: vec![
                    (1, 1_000_000, 10.0),
                    (1, 2_000_000, 11.0),
                    // Same step as the one before: replaces it.
                    (1, 2_000_001, 12.0),
                    (2, 1_000_000, 5.0),
                ],
            },
            &[("validate", Duration::from_micros(40))],
        );
        let text = t.encode(&[], &[]);
        assert!(text.contains("stockpipe_ticks_consumed_total 10"), "{text}");
        assert!(text.contains("stockpipe_ticks_accepted_total 7"), "{text}");
        // 9 decoded, 1 refused by validate, 8 reach enrich, 1 refused there, 7 reach route.
        for line in [
            r#"stockpipe_guest_ticks_total{stage="validate",outcome="accepted"} 8"#,
            r#"stockpipe_guest_ticks_total{stage="enrich",outcome="accepted"} 7"#,
            r#"stockpipe_guest_ticks_total{stage="route",outcome="accepted"} 7"#,
            r#"stockpipe_ticks_rejected_total{stage="decode",code="bad-json"} 1"#,
            r#"stockpipe_guest_call_seconds_count{stage="validate"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let live = t.live();
        assert_eq!(live.prices[&1], vec![(1.0, 10.0), (2.000001, 12.0)]);
        assert_eq!(live.totals.rejected, 3);
        assert_eq!(live.rates.iter().map(|r| r.consumed).sum::<u64>(), 10);
        assert_eq!(live.rejects.len(), 3);
    }

    #[test]
    fn price_lines_and_instruments_are_bounded() {
        let t = Telemetry::new();
        let prices = (0..(MAX_INSTRUMENTS as u64 + 5))
            .flat_map(|i| (0..(PRICE_POINTS as i64 + 10)).map(move |k| (i, k * PRICE_STEP_US, 1.0)))
            .collect();
        t.record_batch(
            BatchRecord {
                prices,
                ..BatchRecord::default()
            },
            &[],
        );
        let live = t.live();
        assert_eq!(live.prices.len(), MAX_INSTRUMENTS);
        assert!(live.prices.values().all(|l| l.len() == PRICE_POINTS));
        // The newest points are kept.
        let newest = (PRICE_POINTS as i64 + 9) * PRICE_STEP_US;
        assert_eq!(live.prices[&0].last().unwrap().0, newest as f64 / 1e6);
    }

    #[test]
    fn readiness_waits_for_every_expected_dependency() {
        let t = Telemetry::new();
        let expected = [Dependency::Kafka, Dependency::Lake];
        assert!(!t.readiness(&expected).ready);
        t.set_ready(Dependency::Kafka, Ok(()));
        let r = t.readiness(&expected);
        assert!(!r.ready);
        assert_eq!(r.dependencies[&Dependency::Lake].detail, "not checked yet");
        t.set_ready(Dependency::Lake, Ok(()));
        assert!(t.readiness(&expected).ready);
        t.set_ready(Dependency::Kafka, Err("no broker is up".into()));
        let r = t.readiness(&expected);
        assert!(!r.ready);
        assert_eq!(r.dependencies[&Dependency::Kafka].detail, "no broker is up");
    }
}
