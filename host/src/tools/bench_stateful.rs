//! `bench guests`' figures of the stateful stages (aggregate, alert): each timed in wasm and
//! natively over the simulated ticks, and the alerts their rules raise against the route stage's
//! per-tick alerts before.

use super::timing::per_tick;
use crate::runtime::sandbox::Sandbox;
use std::sync::Arc;
use std::time::Instant;

/// See [`super::bench::StageBreakdown::route_alerts_per_100k_before`].
pub(super) fn route_alerts_before(ticks: &[stockpipe_model::Tick]) -> f64 {
    let alerted = ticks
        .iter()
        .filter(|t| {
            let spread = match (t.depth_buy.first(), t.depth_sell.first()) {
                (Some(b), Some(a)) => (a.price - b.price) / ((a.price + b.price) / 2.0) * 1e4,
                _ => f64::NAN,
            };
            t.change.is_some_and(|c| c.abs() >= 5.0) || spread >= 50.0
        })
        .count();
    alerted as f64 * 100_000.0 / ticks.len() as f64
}

/// See [`super::bench::StageBreakdown::alert_wasm_ns`]: ns per tick, wasm and native, best of `rounds`, and
/// the events per 100,000 ticks.
pub(super) fn time_alert(
    sandbox: &Arc<Sandbox>,
    ticks: &[stockpipe_model::Tick],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    use crate::chain::alert::{AlertSection, Alerting};
    use crate::runtime::bindings::alert::AlertTicks;
    use stockpipe_guest_alert::logic::Alerter;
    let rules = AlertSection::default().resolved_rules(None, None)?;
    let spread_bps = |t: &stockpipe_model::Tick| match (t.depth_buy.first(), t.depth_sell.first()) {
        (Some(b), Some(a)) => (a.price - b.price) / ((a.price + b.price) / 2.0) * 1e4,
        _ => f64::NAN,
    };
    let inputs: Vec<AlertTicks> = ticks
        .chunks(batch)
        .map(|chunk| AlertTicks {
            partition: chunk
                .iter()
                .map(|t| (t.instrument_token % 3) as i32)
                .collect(),
            timestamp_us: chunk.iter().map(|t| t.timestamp_us).collect(),
            instrument_token: chunk.iter().map(|t| t.instrument_token).collect(),
            last_price: chunk.iter().map(|t| t.last_price).collect(),
            change: chunk.iter().map(|t| t.change.unwrap_or(f64::NAN)).collect(),
            spread_bps: chunk.iter().map(spread_bps).collect(),
        })
        .collect();
    let kind = crate::runtime::StageKind::Alert;
    let component = Arc::new(crate::runtime::GuestComponent::load(
        sandbox,
        kind,
        crate::runtime::embedded_component(kind),
        "embedded",
    )?);
    let (mut faulted, mut events) = (0, 0);
    let mut wasm = f64::INFINITY;
    for _ in 0..=rounds.max(1) {
        let owned = inputs.clone();
        let mut alerting = Alerting::new(sandbox.clone(), component.clone(), rules.clone())?;
        let mut next = crate::position::Offsets::new();
        events = 0;
        let start = Instant::now();
        for (i, input) in owned.into_iter().enumerate() {
            for p in 0..3 {
                use crate::position::{Offset, Partition};
                next.insert(Partition(p), Offset((i * batch) as i64));
            }
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
    ticks: &[stockpipe_model::Tick],
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
            partition: chunk
                .iter()
                .map(|t| (t.instrument_token % 3) as i32)
                .collect(),
            timestamp_us: chunk.iter().map(|t| t.timestamp_us).collect(),
            instrument_token: chunk.iter().map(|t| t.instrument_token).collect(),
            last_price: chunk.iter().map(|t| t.last_price).collect(),
            volume: chunk.iter().map(|t| t.volume.unwrap_or(-1)).collect(),
            mid_price: chunk.iter().map(|t| t.last_price + 0.025).collect(),
            spread: chunk.iter().map(|_| 0.05).collect(),
        })
        .collect();
    let kind = crate::runtime::StageKind::Aggregate;
    let component = Arc::new(crate::runtime::GuestComponent::load(
        sandbox,
        kind,
        crate::runtime::embedded_component(kind),
        "embedded",
    )?);
    let mut faulted = 0;
    // Timed by hand: each round gets its own copy of the inputs (the pipeline hands each batch's
    // over), made before the clock starts.
    let mut wasm = f64::INFINITY;
    for _ in 0..=rounds.max(1) {
        let owned = inputs.clone();
        let mut aggregation = Aggregation::new(sandbox.clone(), component.clone(), config);
        let mut next = crate::position::Offsets::new();
        let start = Instant::now();
        for (i, input) in owned.into_iter().enumerate() {
            for p in 0..3 {
                use crate::position::{Offset, Partition};
                next.insert(Partition(p), Offset((i * batch) as i64));
            }
            let out = aggregation.process(input, &next);
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
