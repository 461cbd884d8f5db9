//! `bench guests`' figures of the stateful stages (aggregate, alert): each timed in wasm and
//! natively over the simulated ticks, and the alerts their rules raise against the route stage's
//! per-tick alerts before.

use super::timing::per_tick;
use crate::position::{Offset, Offsets, Partition};
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{GuestComponent, StageKind};
use std::sync::Arc;
use std::time::Instant;
use stockpipe_model::Tick;

/// A tick's spread in basis points, as the enrich stage computes it (NaN without a book).
fn spread_bps(t: &Tick) -> f64 {
    let config = stockpipe_model::enrich::EnrichConfig::default();
    stockpipe_guest_enrich::logic::enrich_tick(&config, &t.view())
        .ok()
        .and_then(|e| e.spread_bps)
        .unwrap_or(f64::NAN)
}

/// The benchmark's three partitions, by instrument.
fn partition_of(t: &Tick) -> i32 {
    (t.instrument_token % 3) as i32
}

/// Where each of the three partitions stands after `batches` batches of `batch` ticks.
fn consumed_after(batches: usize, batch: usize) -> Offsets {
    (0..3)
        .map(|p| (Partition(p), Offset((batches * batch) as i64)))
        .collect()
}

/// The built-in component of a stateful stage.
fn embedded(sandbox: &Sandbox, kind: StageKind) -> anyhow::Result<Arc<GuestComponent>> {
    let bytes = crate::runtime::embedded_component(kind);
    Ok(Arc::new(GuestComponent::load(
        sandbox, kind, bytes, "embedded",
    )?))
}

/// See [`super::bench::StageBreakdown::route_alerts_per_100k_before`].
pub(super) fn route_alerts_before(ticks: &[Tick]) -> f64 {
    let alerted = ticks
        .iter()
        .filter(|t| t.change.is_some_and(|c| c.abs() >= 5.0) || spread_bps(t) >= 50.0)
        .count();
    alerted as f64 * 100_000.0 / ticks.len() as f64
}

/// See [`super::bench::StageBreakdown::alert_wasm_ns`]: ns per tick, wasm and native, best of `rounds`, and
/// the events per 100,000 ticks.
pub(super) fn time_alert(
    sandbox: &Arc<Sandbox>,
    ticks: &[Tick],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    use crate::chain::alert::{AlertSection, Alerting};
    use crate::runtime::bindings::alert::AlertTicks;
    use stockpipe_guest_alert::logic::Alerter;
    let rules = AlertSection::default().resolved_rules(None, None)?;
    let inputs: Vec<AlertTicks> = ticks
        .chunks(batch)
        .map(|chunk| AlertTicks {
            partition: chunk.iter().map(partition_of).collect(),
            timestamp_us: chunk.iter().map(|t| t.timestamp_us).collect(),
            instrument_token: chunk.iter().map(|t| t.instrument_token).collect(),
            last_price: chunk.iter().map(|t| t.last_price).collect(),
            change: chunk.iter().map(|t| t.change.unwrap_or(f64::NAN)).collect(),
            spread_bps: chunk.iter().map(spread_bps).collect(),
        })
        .collect();
    let component = embedded(sandbox, StageKind::Alert)?;
    let (mut faulted, mut events) = (0, 0);
    let mut wasm = f64::INFINITY;
    for _ in 0..=rounds.max(1) {
        let owned = inputs.clone();
        let mut alerting = Alerting::new(sandbox.clone(), component.clone(), rules.clone())?;
        events = 0;
        let start = Instant::now();
        for (i, input) in owned.into_iter().enumerate() {
            let next = consumed_after(i, batch);
            let out = alerting.process(input, crate::runtime::convert::empty_alert_bars(), &next);
            faulted += out.faulted.len();
            events += out.events.len();
            std::hint::black_box(out);
        }
        wasm = wasm.min(start.elapsed().as_secs_f64() * 1e9 / ticks.len() as f64);
    }
    anyhow::ensure!(faulted == 0, "the alert guest faulted during the benchmark");
    let native = per_tick(ticks.len(), rounds, || {
        let mut alerter = Alerter::default();
        for input in &inputs {
            let view = stockpipe_model::alert::AlertTicks {
                partition: &input.partition,
                timestamp_us: &input.timestamp_us,
                instrument_token: &input.instrument_token,
                last_price: &input.last_price,
                change: &input.change,
                spread_bps: &input.spread_bps,
            };
            let bars = stockpipe_model::alert::AlertBars::default();
            std::hint::black_box(alerter.alert_batch(&rules, &view, &bars));
            for p in 0..3 {
                std::hint::black_box(alerter.export_state(p));
            }
        }
    });
    let per_100k = events as f64 * 100_000.0 / ticks.len() as f64;
    Ok((wasm, native, per_100k))
}

/// See [`super::bench::StageBreakdown::aggregate_wasm_ns`]: ns per tick, wasm and native, best of `rounds`.
pub(super) fn time_aggregate(
    sandbox: &Arc<Sandbox>,
    ticks: &[Tick],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    use crate::chain::aggregate::Aggregation;
    use crate::runtime::bindings::aggregate::AggregateInput;
    use stockpipe_guest_aggregate::logic::{AggregateConfig, Aggregator};
    let config = AggregateConfig::default();
    let inputs: Vec<AggregateInput> = ticks
        .chunks(batch)
        .map(|chunk| AggregateInput {
            partition: chunk.iter().map(partition_of).collect(),
            timestamp_us: chunk.iter().map(|t| t.timestamp_us).collect(),
            instrument_token: chunk.iter().map(|t| t.instrument_token).collect(),
            last_price: chunk.iter().map(|t| t.last_price).collect(),
            volume: chunk.iter().map(|t| t.volume.unwrap_or(-1)).collect(),
            mid_price: chunk.iter().map(|t| t.last_price + 0.025).collect(),
            spread: chunk.iter().map(|_| 0.05).collect(),
        })
        .collect();
    let component = embedded(sandbox, StageKind::Aggregate)?;
    let mut faulted = 0;
    // Timed by hand: each round gets its own copy of the inputs (the pipeline hands each batch's
    // over), made before the clock starts.
    let mut wasm = f64::INFINITY;
    for _ in 0..=rounds.max(1) {
        let owned = inputs.clone();
        let mut aggregation = Aggregation::new(sandbox.clone(), component.clone(), config);
        let start = Instant::now();
        for (i, input) in owned.into_iter().enumerate() {
            let out = aggregation.process(input, &consumed_after(i, batch));
            faulted += out.faulted.len();
            std::hint::black_box(out);
        }
        wasm = wasm.min(start.elapsed().as_secs_f64() * 1e9 / ticks.len() as f64);
    }
    anyhow::ensure!(
        faulted == 0,
        "the aggregate guest faulted during the benchmark"
    );
    let native = per_tick(ticks.len(), rounds, || {
        let mut aggregator = Aggregator::default();
        for input in &inputs {
            let view = stockpipe_model::aggregate::AggregateInput {
                partition: &input.partition,
                timestamp_us: &input.timestamp_us,
                instrument_token: &input.instrument_token,
                last_price: &input.last_price,
                volume: &input.volume,
                mid_price: &input.mid_price,
                spread: &input.spread,
            };
            std::hint::black_box(aggregator.aggregate_batch(&config, &view));
            for p in 0..3 {
                std::hint::black_box(aggregator.export_state(p));
            }
        }
    });
    Ok((wasm, native))
}
