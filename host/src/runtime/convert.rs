//! Conversions between the host's domain types and the WIT records. Columns are moved, not copied.

use super::bindings::{aggregate, alert, enrich, route, types};
use stockpipe_model as model;
use stockpipe_model::columns::{EnrichmentColumns, TickColumns};
use stockpipe_model::route::RouteInput;
use stockpipe_model::route::{RouteColumns, RoutePlan};

/// The WIT record of a batch's columns: one copy of each column.
pub fn tick_batch(c: &TickColumns) -> types::TickBatch {
    tick_batch_owned(c.clone())
}

/// [`tick_batch`] of columns no longer needed: moved, not copied.
pub fn tick_batch_owned(c: TickColumns) -> types::TickBatch {
    types::TickBatch {
        timestamp_us: c.timestamp_us,
        instrument_token: c.instrument_token,
        last_price: c.last_price,
        present: c.present,
        volume: c.volume,
        buy_quantity: c.buy_quantity,
        sell_quantity: c.sell_quantity,
        last_quantity: c.last_quantity,
        change: c.change,
        net_change: c.net_change,
        average_price: c.average_price,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        oi: c.oi,
        oi_day_high: c.oi_day_high,
        oi_day_low: c.oi_day_low,
        last_trade_time_us: c.last_trade_time_us,
        exchange_timestamp_us: c.exchange_timestamp_us,
        mode: c.mode,
        bid_count: c.bid_count,
        bid_price: c.bid_price,
        bid_orders: c.bid_orders,
        bid_quantity: c.bid_quantity,
        ask_count: c.ask_count,
        ask_price: c.ask_price,
        ask_orders: c.ask_orders,
        ask_quantity: c.ask_quantity,
    }
}

pub fn rejection_from_wit(r: types::Rejection) -> model::Rejection {
    use types::ReasonCode as W;
    let code = match r.code {
        W::NotFinite => model::ReasonCode::NotFinite,
        W::NonPositivePrice => model::ReasonCode::NonPositivePrice,
        W::NegativeQuantity => model::ReasonCode::NegativeQuantity,
        W::InvertedRange => model::ReasonCode::InvertedRange,
        W::UnsortedBook => model::ReasonCode::UnsortedBook,
        W::CrossedBook => model::ReasonCode::CrossedBook,
        W::BadTimestamp => model::ReasonCode::BadTimestamp,
        W::Other => model::ReasonCode::Other,
    };
    model::Rejection {
        code,
        message: r.message,
    }
}

pub fn enrichment_columns_from_wit(b: enrich::EnrichmentBatch) -> EnrichmentColumns {
    EnrichmentColumns {
        rejected: b
            .rejected
            .into_iter()
            .map(|r| r.map(rejection_from_wit))
            .collect(),
        present: b.present,
        mid_price: b.mid_price,
        spread: b.spread,
        spread_bps: b.spread_bps,
        book_imbalance: b.book_imbalance,
        notional: b.notional,
        deviation_bps: b.deviation_bps,
        hour: b.hour,
        minute: b.minute,
    }
}

pub fn route_batch(inputs: &[RouteInput]) -> route::RouteInputBatch {
    let c = RouteColumns::from_inputs(inputs);
    route::RouteInputBatch {
        timestamp_us: c.timestamp_us,
        instrument_token: c.instrument_token,
        change: c.change,
        spread_bps: c.spread_bps,
        rejected: c.rejected,
    }
}

pub fn route_plan_from_wit(p: route::RoutePlan) -> RoutePlan {
    RoutePlan {
        names: p.names,
        search_index: p.search_index,
        lake_partition: p.lake_partition,
        alert_topic: p.alert_topic,
        alert_reason: p.alert_reason,
        dead_letter_topic: p.dead_letter_topic,
    }
}

/// The guests' per-call configuration as WIT records (one mapping for the chain, the fixtures
/// runner and the benchmark).
pub fn validate_config(
    c: &stockpipe_model::validate::ValidateConfig,
) -> super::bindings::validate::ValidateConfig {
    super::bindings::validate::ValidateConfig {
        min_timestamp_us: c.min_timestamp_us,
        max_timestamp_us: c.max_timestamp_us,
    }
}

pub fn enrich_config(c: &stockpipe_model::enrich::EnrichConfig) -> enrich::EnrichConfig {
    enrich::EnrichConfig {
        imbalance_levels: u32::try_from(c.imbalance_levels).unwrap_or(u32::MAX),
    }
}

pub fn route_config(c: &stockpipe_model::route::RouteConfig) -> route::RouteConfig {
    route::RouteConfig {
        search_index: c.search_index.clone(),
        alerts_topic: c.alerts_topic.clone(),
        dead_letter_topic: c.dead_letter_topic.clone(),
        change_alert_pct: c.change_alert_pct,
        spread_alert_bps: c.spread_alert_bps,
    }
}

/// An aggregate input with no ticks, to fill.
pub fn empty_aggregate_input() -> aggregate::AggregateInput {
    aggregate::AggregateInput {
        partition: Vec::new(),
        timestamp_us: Vec::new(),
        instrument_token: Vec::new(),
        last_price: Vec::new(),
        volume: Vec::new(),
        mid_price: Vec::new(),
        spread: Vec::new(),
    }
}

pub fn aggregate_config(
    c: &stockpipe_model::aggregate::AggregateConfig,
) -> aggregate::AggregateConfig {
    aggregate::AggregateConfig {
        bar_width_us: c.bar_width_us,
        allowed_lateness_us: c.allowed_lateness_us,
        volatility_bars: c.volatility_bars,
    }
}

/// The guest's answer, checked: every column as long as the bars, every index inside the batch
/// of `ticks`, late ticks in order.
pub fn aggregate_output_from_wit(
    o: aggregate::AggregateOutput,
    ticks: usize,
) -> Result<stockpipe_model::aggregate::AggregateOutput, String> {
    let b = o.bars;
    let bars = stockpipe_model::aggregate::BarColumns {
        partition: b.partition,
        instrument_token: b.instrument_token,
        start_us: b.start_us,
        open: b.open,
        high: b.high,
        low: b.low,
        close: b.close,
        traded_quantity: b.traded_quantity,
        tick_count: b.tick_count,
        vwap: b.vwap,
        last_mid_price: b.last_mid_price,
        last_spread: b.last_spread,
        log_return: b.log_return,
        volatility: b.volatility,
        closed_by: b.closed_by,
    };
    let n = bars.len();
    let lengths = [
        bars.partition.len(),
        bars.instrument_token.len(),
        bars.open.len(),
        bars.high.len(),
        bars.low.len(),
        bars.close.len(),
        bars.traded_quantity.len(),
        bars.tick_count.len(),
        bars.vwap.len(),
        bars.last_mid_price.len(),
        bars.last_spread.len(),
        bars.log_return.len(),
        bars.volatility.len(),
        bars.closed_by.len(),
    ];
    if lengths.iter().any(|&l| l != n) {
        return Err(format!(
            "bar columns of unequal lengths: {n} starts, {lengths:?}"
        ));
    }
    if let Some(i) = bars
        .closed_by
        .iter()
        .chain(&o.late)
        .find(|&&i| i as usize >= ticks)
    {
        return Err(format!("index {i} outside a batch of {ticks} ticks"));
    }
    if !o.late.is_sorted_by(|a, b| a < b) {
        return Err("late ticks not in ascending order".into());
    }
    if let Some(start) = bars
        .start_us
        .iter()
        .find(|s| !(0..=LATEST_BAR_START_US).contains(*s))
    {
        return Err(format!(
            "a bar starting at {start} µs, outside 1970-01-01..9999-12-31"
        ));
    }
    Ok(stockpipe_model::aggregate::AggregateOutput { late: o.late, bars })
}

/// The latest bar start the host takes from a guest, 9999-12-31T00:00:00Z: its documents' times
/// are RFC 3339 with four-digit years, and its lake partition a `dt=` date.
pub const LATEST_BAR_START_US: i64 = 253_402_214_400_000_000;

pub fn alert_rules(rules: &[model::alert::AlertRule]) -> Vec<alert::AlertRule> {
    rules
        .iter()
        .map(|r| alert::AlertRule {
            name: r.name.clone(),
            kind: r.kind.clone(),
            threshold: r.threshold,
            clear: r.clear,
            direction: match r.direction {
                model::alert::Direction::Up => alert::Direction::Up,
                model::alert::Direction::Down => alert::Direction::Down,
                model::alert::Direction::Both => alert::Direction::Both,
            },
            for_ms: r.for_ms,
            cooldown_ms: r.cooldown_ms,
            window_bars: r.window_bars,
        })
        .collect()
}

pub fn empty_alert_ticks() -> alert::AlertTicks {
    alert::AlertTicks {
        partition: Vec::new(),
        timestamp_us: Vec::new(),
        instrument_token: Vec::new(),
        last_price: Vec::new(),
        change: Vec::new(),
        spread_bps: Vec::new(),
    }
}

pub fn empty_alert_bars() -> alert::AlertBars {
    alert::AlertBars {
        partition: Vec::new(),
        instrument_token: Vec::new(),
        end_us: Vec::new(),
        close: Vec::new(),
        traded_quantity: Vec::new(),
        log_return: Vec::new(),
        closed_by: Vec::new(),
    }
}

/// The guest's events, checked: every column as long as the events, every rule one of the
/// call's `rules`, every tick inside the batch of `ticks`, in the batch's order.
pub fn alert_events_from_wit(
    o: alert::AlertEvents,
    ticks: usize,
    rules: usize,
) -> Result<model::alert::AlertEvents, String> {
    let n = o.rule.len();
    let lengths = [
        o.state.len(),
        o.tick.len(),
        o.instrument_token.len(),
        o.value.len(),
        o.threshold.len(),
        o.event_time_us.len(),
    ];
    if lengths.iter().any(|&l| l != n) {
        return Err(format!(
            "alert event columns of unequal lengths: {n} rules, {lengths:?}"
        ));
    }
    if let Some(r) = o.rule.iter().find(|&&r| r as usize >= rules) {
        return Err(format!("rule {r} outside the call's {rules} rules"));
    }
    if let Some(i) = o.tick.iter().find(|&&i| i as usize >= ticks) {
        return Err(format!("tick {i} outside a batch of {ticks} ticks"));
    }
    if !o.tick.is_sorted() {
        return Err("alert events not in the batch's order".into());
    }
    Ok(model::alert::AlertEvents {
        rule: o.rule,
        state: o
            .state
            .into_iter()
            .map(|s| match s {
                alert::AlertState::Firing => model::alert::AlertState::Firing,
                alert::AlertState::Resolved => model::alert::AlertState::Resolved,
            })
            .collect(),
        tick: o.tick,
        instrument_token: o.instrument_token,
        value: o.value,
        threshold: o.threshold,
        event_time_us: o.event_time_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_bar(start_us: i64, closed_by: u32) -> aggregate::AggregateOutput {
        aggregate::AggregateOutput {
            late: vec![],
            bars: aggregate::BarBatch {
                partition: vec![0],
                instrument_token: vec![7],
                start_us: vec![start_us],
                open: vec![1.0],
                high: vec![1.0],
                low: vec![1.0],
                close: vec![1.0],
                traded_quantity: vec![0],
                tick_count: vec![1],
                vwap: vec![f64::NAN],
                last_mid_price: vec![1.0],
                last_spread: vec![0.0],
                log_return: vec![f64::NAN],
                volatility: vec![f64::NAN],
                closed_by: vec![closed_by],
            },
        }
    }

    /// A guest's bars are taken only with starts the host can write as dates, and closing ticks
    /// of the batch it was given.
    #[test]
    fn bars_out_of_range_are_a_guest_fault() {
        assert!(aggregate_output_from_wit(one_bar(1_497_942_000_000_000, 0), 1).is_ok());
        assert!(aggregate_output_from_wit(one_bar(LATEST_BAR_START_US, 0), 1).is_ok());
        for start in [-1, LATEST_BAR_START_US + 1, i64::MAX, i64::MIN] {
            let e = aggregate_output_from_wit(one_bar(start, 0), 1).unwrap_err();
            assert!(e.contains(&start.to_string()), "{e}");
        }
        let e = aggregate_output_from_wit(one_bar(0, 1), 1).unwrap_err();
        assert!(e.contains("outside a batch of 1"), "{e}");
    }
}
