//! `stockpipe guest test`: runs one compiled component, under the production sandbox limits, over
//! fixture cases and reports every mismatch — or, with `--record`, writes what it answers as the
//! cases' expected outputs.
//!
//! A fixtures directory holds `input.jsonl` and `expected.jsonl`, or subdirectories (one per case)
//! that do. Inputs are ticks in the pipeline's JSON format (route: route inputs,
//! `{"timestamp_us", "instrument_token", "change", "spread_bps", "rejected"}`). Each expected line is
//! a JSON object whose keys must match the outcome (numbers to 1e-9 relative); keys it leaves out
//! are not compared. Outcomes:
//! - validate: `{"verdict": "accepted"}` or `{"verdict": "rejected", "code": "crossed-book", "message": …}`
//! - enrich: the enrichment's fields (`event_id` as 16 hex digits), or a rejection as above
//! - route: `{"search_index", "lake_partition", "alert": {"topic", "reason"} | null, "dead_letter_topic"}`
//! - any stage: `{"fault": "trap" | "deadline-exceeded" | …}` when the call faulted.
//!
//! The aggregate stage keeps state, so its case is a sequence of batches through one instance
//! (each case starts empty), with the default `[aggregate]` settings (1-minute bars, 5 s of
//! lateness, 20 returns). Each input line is a batch, `{"ticks": [{"partition",
//! "timestamp_us", "instrument_token", "last_price", "volume", "mid_price", "spread"}, …]}`; each
//! expected line is what that batch did, `{"late": [tick indices], "bars": [{"partition",
//! "instrument_token", "start_us", "open", …, "volatility", "closed_by"}, …]}` (a float with no
//! value is null).
//!
//! The alert stage keeps state too: its case is a sequence of batches through one instance. Each
//! input line is a batch, `{"rules": [{"name", "kind", "threshold", "clear", "direction",
//! "for_ms", "cooldown_ms", "window_bars"}, …], "ticks": [{"partition", "timestamp_us",
//! "instrument_token", "last_price", "change", "spread_bps"}, …], "bars": [{"partition",
//! "instrument_token", "end_us", "close", "traded_quantity", "log_return", "closed_by"}, …]}`
//! (`rules` as `[[alert.rules]]` spells them, carried to the next lines until a line gives
//! others; `bars` may be left out; a missing `change` or `spread_bps` is null). Each expected line
//! is `{"events": [{"rule", "state", "tick", "instrument_token", "value", "threshold",
//! "event_time_us"}, …]}`, or `{"rules_refused": why}` when the guest refuses the rules.

use crate::chain::StageConfigs;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{
    AggregateStage, AlertStage, EnrichStage, GuestComponent, GuestFault, RouteStage, StageInstance,
    StageKind, ValidateStage, call_isolated, convert,
};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stockpipe_model::route::Destinations;
use stockpipe_model::{Enrichment, Rejection};

/// One line that did not match.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub case: String,
    pub line: usize,
    pub expected: Value,
    pub actual: Value,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} line {}:\n  expected {}\n  actual   {}",
            self.case, self.line, self.expected, self.actual
        )
    }
}

#[derive(Debug, Default)]
pub struct FixtureReport {
    pub cases: usize,
    pub lines: usize,
    pub mismatches: Vec<Mismatch>,
}

/// The cases under `dir`: itself if it holds `input.jsonl`, else each subdirectory that does.
pub fn find_cases(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("input.jsonl").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading fixtures directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.jsonl").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!(
            "{}: no input.jsonl here or in any subdirectory",
            dir.display()
        );
    }
    Ok(cases)
}

fn fault_json(f: &GuestFault) -> Value {
    json!({"fault": f.code, "message": f.message})
}

fn rejection_json(r: &Rejection) -> Value {
    json!({"verdict": "rejected", "code": r.code.as_str(), "message": r.message})
}

/// A validate outcome as the fixtures write it (`guest diff`'s examples use the same form).
pub fn validate_outcome_json(o: &Result<Option<Rejection>, GuestFault>) -> Value {
    match o {
        Ok(None) => json!({"verdict": "accepted"}),
        Ok(Some(r)) => rejection_json(r),
        Err(f) => fault_json(f),
    }
}

/// An enrich outcome as the fixtures write it.
pub fn enrich_outcome_json(o: &Result<Result<Enrichment, Rejection>, GuestFault>) -> Value {
    match o {
        Ok(Ok(e)) => {
            // An absent feature is left out, as in the documents.
            let mut m = serde_json::Map::new();
            m.insert("mid_price".into(), e.mid_price.into());
            for (name, value) in [
                ("spread", e.spread),
                ("spread_bps", e.spread_bps),
                ("book_imbalance", e.book_imbalance),
                ("notional", e.notional),
                ("deviation_bps", e.deviation_bps),
            ] {
                if let Some(v) = value {
                    m.insert(name.into(), v.into());
                }
            }
            m.insert("hour".into(), e.hour.into());
            m.insert("minute".into(), e.minute.into());
            Value::Object(m)
        }
        Ok(Err(r)) => rejection_json(r),
        Err(f) => fault_json(f),
    }
}

/// A route outcome as the fixtures write it.
pub fn route_outcome_json(o: &Result<Destinations, GuestFault>) -> Value {
    match o {
        Ok(d) => json!({
            "search_index": d.search_index.as_deref(),
            "lake_partition": d.lake_partition.as_deref(),
            "alert": d.alert.as_ref().map(|a| json!({"topic": &*a.topic, "reason": a.reason})),
            "dead_letter_topic": d.dead_letter_topic.as_deref(),
        }),
        Err(f) => fault_json(f),
    }
}

/// An aggregate fixture's batch line.
fn aggregate_batch(
    line: &str,
) -> anyhow::Result<crate::runtime::bindings::aggregate::AggregateInput> {
    let v: Value = serde_json::from_str(line)?;
    let ticks = v
        .get("ticks")
        .and_then(Value::as_array)
        .context("`ticks`: a list of ticks")?;
    let mut input = convert::empty_aggregate_input();
    for (j, t) in ticks.iter().enumerate() {
        let int = |k: &str| {
            t.get(k)
                .and_then(Value::as_i64)
                .with_context(|| format!("tick {j}: `{k}`, an integer"))
        };
        let num = |k: &str| {
            t.get(k)
                .and_then(Value::as_f64)
                .with_context(|| format!("tick {j}: `{k}`, a number"))
        };
        input.partition.push(
            i32::try_from(t.get("partition").and_then(Value::as_i64).unwrap_or(0))
                .with_context(|| format!("tick {j}: `partition`"))?,
        );
        input.timestamp_us.push(int("timestamp_us")?);
        input.instrument_token.push(
            t.get("instrument_token")
                .and_then(Value::as_u64)
                .with_context(|| format!("tick {j}: `instrument_token`"))?,
        );
        input.last_price.push(num("last_price")?);
        input.volume.push(int("volume")?);
        input.mid_price.push(num("mid_price")?);
        input.spread.push(num("spread")?);
    }
    Ok(input)
}

/// One alert batch of a case: its rules (a line without `rules` keeps the case's last ones),
/// ticks and bars.
fn alert_batch(
    line: &str,
    rules: &mut Vec<stockpipe_model::alert::AlertRule>,
) -> anyhow::Result<(
    crate::runtime::bindings::alert::AlertTicks,
    crate::runtime::bindings::alert::AlertBars,
)> {
    let v: Value = serde_json::from_str(line)?;
    if let Some(given) = v.get("rules") {
        let section = crate::chain::alert::AlertSection {
            rules: Some(serde_json::from_value(given.clone()).context("`rules`")?),
            ..Default::default()
        };
        *rules = section.resolved_rules(None, None)?;
    }
    let list = |key: &str| -> anyhow::Result<Vec<Value>> {
        match v.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => bail!("`{key}`: a list"),
        }
    };
    let field = |item: &Value, j: usize, k: &str| -> anyhow::Result<Value> {
        item.get(k)
            .cloned()
            .with_context(|| format!("{j}: `{k}` missing"))
    };
    let int = |item: &Value, j: usize, k: &str| -> anyhow::Result<i64> {
        field(item, j, k)?
            .as_i64()
            .with_context(|| format!("{j}: `{k}`, an integer"))
    };
    // A float column: null (or absent, for the optional ones) is NaN.
    let num = |item: &Value, j: usize, k: &str, optional: bool| -> anyhow::Result<f64> {
        match item.get(k) {
            None | Some(Value::Null) if optional => Ok(f64::NAN),
            Some(Value::Null) => Ok(f64::NAN),
            Some(n) => n
                .as_f64()
                .with_context(|| format!("{j}: `{k}`, a number or null")),
            None => bail!("{j}: `{k}` missing"),
        }
    };
    let partition = |item: &Value, j: usize| -> anyhow::Result<i32> {
        i32::try_from(item.get("partition").and_then(Value::as_i64).unwrap_or(0))
            .with_context(|| format!("{j}: `partition`"))
    };
    let token = |item: &Value, j: usize| -> anyhow::Result<u64> {
        field(item, j, "instrument_token")?
            .as_u64()
            .with_context(|| format!("{j}: `instrument_token`"))
    };
    let mut ticks = convert::empty_alert_ticks();
    for (j, t) in list("ticks")?.iter().enumerate() {
        let at = |e: anyhow::Error| e.context(format!("tick {j}"));
        ticks.partition.push(partition(t, j).map_err(at)?);
        ticks
            .timestamp_us
            .push(int(t, j, "timestamp_us").map_err(at)?);
        ticks.instrument_token.push(token(t, j).map_err(at)?);
        ticks
            .last_price
            .push(num(t, j, "last_price", false).map_err(at)?);
        ticks.change.push(num(t, j, "change", true).map_err(at)?);
        ticks
            .spread_bps
            .push(num(t, j, "spread_bps", true).map_err(at)?);
    }
    let mut bars = convert::empty_alert_bars();
    for (j, b) in list("bars")?.iter().enumerate() {
        let at = |e: anyhow::Error| e.context(format!("bar {j}"));
        bars.partition.push(partition(b, j).map_err(at)?);
        bars.instrument_token.push(token(b, j).map_err(at)?);
        bars.end_us.push(int(b, j, "end_us").map_err(at)?);
        bars.close.push(num(b, j, "close", false).map_err(at)?);
        bars.traded_quantity
            .push(int(b, j, "traded_quantity").map_err(at)?);
        bars.log_return
            .push(num(b, j, "log_return", true).map_err(at)?);
        bars.closed_by.push(
            u32::try_from(int(b, j, "closed_by").map_err(at)?)
                .map_err(|_| anyhow::anyhow!("bar {j}: `closed_by`, a tick's index"))?,
        );
    }
    Ok((ticks, bars))
}

/// A float as the fixtures write it: NaN (no value) as null.
fn float(x: f64) -> Value {
    if x.is_nan() { Value::Null } else { json!(x) }
}

/// What an alert batch raised, as the fixtures write it.
pub fn alert_outcome_json(
    events: &stockpipe_model::alert::AlertEvents,
    rules: &[stockpipe_model::alert::AlertRule],
) -> Value {
    let events: Vec<Value> = (0..events.len())
        .map(|k| {
            json!({
                "rule": rules[events.rule[k] as usize].name,
                "state": events.state[k].name(),
                "tick": events.tick[k],
                "instrument_token": events.instrument_token[k],
                "value": float(events.value[k]),
                "threshold": float(events.threshold[k]),
                "event_time_us": events.event_time_us[k],
            })
        })
        .collect();
    json!({ "events": events })
}

/// What an aggregate batch did, as the fixtures write it.
pub fn aggregate_outcome_json(o: &stockpipe_model::aggregate::AggregateOutput) -> Value {
    let b = &o.bars;
    let bars: Vec<Value> = (0..b.len())
        .map(|i| {
            json!({
                "partition": b.partition[i],
                "instrument_token": b.instrument_token[i],
                "start_us": b.start_us[i],
                "open": b.open[i],
                "high": b.high[i],
                "low": b.low[i],
                "close": b.close[i],
                "traded_quantity": b.traded_quantity[i],
                "tick_count": b.tick_count[i],
                "vwap": float(b.vwap[i]),
                "last_mid_price": b.last_mid_price[i],
                "last_spread": b.last_spread[i],
                "log_return": float(b.log_return[i]),
                "volatility": float(b.volatility[i]),
                "closed_by": b.closed_by[i],
            })
        })
        .collect();
    json!({"late": o.late, "bars": bars})
}

/// Runs one case's inputs through a fresh instance of the component (a stateful stage's state
/// starts empty in each case) and returns one outcome per input line.
fn run_case(
    sandbox: &Arc<Sandbox>,
    component: &Arc<GuestComponent>,
    configs: &StageConfigs,
    lines: &[String],
) -> anyhow::Result<Vec<Value>> {
    let (sandbox, component) = (sandbox.clone(), component.clone());
    match component.kind {
        StageKind::Alert => {
            let mut instance = StageInstance::<AlertStage>::new(sandbox, component);
            let mut rules = Vec::new();
            let mut outcomes = Vec::with_capacity(lines.len());
            for (i, l) in lines.iter().enumerate() {
                let (ticks, bars) =
                    alert_batch(l, &mut rules).with_context(|| format!("input line {}", i + 1))?;
                let wit_rules = convert::alert_rules(&rules);
                outcomes.push(match instance.check_rules(&wit_rules) {
                    Ok(Err(why)) => json!({ "rules_refused": why }),
                    Err(f) => fault_json(&f),
                    Ok(Ok(())) => match instance.alert(&wit_rules, &ticks, &bars) {
                        Ok(events) => alert_outcome_json(&events, &rules),
                        Err(f) => fault_json(&f),
                    },
                });
            }
            Ok(outcomes)
        }
        StageKind::Aggregate => {
            let mut instance = StageInstance::<AggregateStage>::new(sandbox, component);
            let instance = &mut instance;
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let input =
                        aggregate_batch(l).with_context(|| format!("input line {}", i + 1))?;
                    let config = convert::aggregate_config(
                        &stockpipe_model::aggregate::AggregateConfig::default(),
                    );
                    Ok(match instance.aggregate(&config, &input) {
                        Ok(out) => aggregate_outcome_json(&out),
                        Err(f) => fault_json(&f),
                    })
                })
                .collect()
        }
        StageKind::Route => {
            let mut instance = StageInstance::<RouteStage>::new(sandbox, component);
            let inputs = lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let v: Value =
                        serde_json::from_str(l).with_context(|| format!("input line {}", i + 1))?;
                    let num = |k: &str| {
                        v.get(k)
                            .and_then(Value::as_f64)
                            .with_context(|| format!("input line {}: `{k}`", i + 1))
                    };
                    Ok(stockpipe_model::route::RouteInput {
                        timestamp_us: num("timestamp_us")? as i64,
                        instrument_token: num("instrument_token")? as u64,
                        change: num("change")?,
                        spread_bps: num("spread_bps")?,
                        rejected: v.get("rejected").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let config = convert::route_config(&configs.route);
            Ok(call_isolated(&inputs, |b| instance.route(&config, b))
                .iter()
                .map(route_outcome_json)
                .collect())
        }
        StageKind::Validate => {
            let mut instance = StageInstance::<ValidateStage>::new(sandbox, component);
            let owned = decode_lines(lines)?;
            let ticks: Vec<_> = owned.iter().map(stockpipe_model::Tick::view).collect();
            let config = convert::validate_config(&configs.validate);
            Ok(call_isolated(&ticks, |b| instance.validate(&config, b))
                .iter()
                .map(validate_outcome_json)
                .collect())
        }
        StageKind::Enrich => {
            let mut instance = StageInstance::<EnrichStage>::new(sandbox, component);
            let owned = decode_lines(lines)?;
            let ticks: Vec<_> = owned.iter().map(stockpipe_model::Tick::view).collect();
            let config = convert::enrich_config(&configs.enrich);
            Ok(call_isolated(&ticks, |b| instance.enrich(&config, b))
                .iter()
                .map(enrich_outcome_json)
                .collect())
        }
    }
}

/// A case's input lines as ticks, each decoded as the host decodes a message.
fn decode_lines(lines: &[String]) -> anyhow::Result<Vec<stockpipe_model::Tick>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            stockpipe_model::json::decode_tick(l.as_bytes(), 0)
                .map_err(|e| anyhow::anyhow!("input line {} does not decode: {e}", i + 1))
        })
        .collect()
}

/// Does `actual` have every key of `expected`, with equal values (numbers to 1e-9 relative)?
pub fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| matches(ev, av))),
        (Value::Number(e), Value::Number(a)) => {
            let (e, a) = (
                e.as_f64().unwrap_or(f64::NAN),
                a.as_f64().unwrap_or(f64::NAN),
            );
            e == a || (e - a).abs() <= 1e-9 * e.abs().max(a.abs())
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        _ => expected == actual,
    }
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// Runs each case's inputs through the component and hands `each` the case's directory, its name
/// and one outcome per input line.
fn answer_cases(
    sandbox: Arc<Sandbox>,
    component: Arc<GuestComponent>,
    configs: &StageConfigs,
    dir: &Path,
    mut each: impl FnMut(&Path, &str, Vec<Value>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for case in find_cases(dir)? {
        let inputs = read_lines(&case.join("input.jsonl"))?;
        let name = case.display().to_string();
        let outcomes =
            run_case(&sandbox, &component, configs, &inputs).with_context(|| name.clone())?;
        each(&case, &name, outcomes)?;
    }
    Ok(())
}

/// Writes each case's `expected.jsonl` from what the component answers: the full outcome of every
/// input line (`guest test --record`, with a known-good build).
pub fn record_fixtures(
    sandbox: Arc<Sandbox>,
    component: Arc<GuestComponent>,
    configs: &StageConfigs,
    dir: &Path,
) -> anyhow::Result<FixtureReport> {
    let mut report = FixtureReport::default();
    answer_cases(sandbox, component, configs, dir, |case, _, outcomes| {
        let text: String = outcomes.iter().map(|o| format!("{o}\n")).collect();
        let path = case.join("expected.jsonl");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        report.cases += 1;
        report.lines += outcomes.len();
        Ok(())
    })?;
    Ok(report)
}

/// Runs each case and reports every line whose outcome does not match the expected one.
pub fn run_fixtures(
    sandbox: Arc<Sandbox>,
    component: Arc<GuestComponent>,
    configs: &StageConfigs,
    dir: &Path,
) -> anyhow::Result<FixtureReport> {
    let mut report = FixtureReport::default();
    answer_cases(sandbox, component, configs, dir, |case, name, actual| {
        let expected = read_lines(&case.join("expected.jsonl"))?;
        if actual.len() != expected.len() {
            bail!(
                "{name}: {} input lines but {} expected lines",
                actual.len(),
                expected.len()
            );
        }
        report.cases += 1;
        for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
            report.lines += 1;
            let e: Value = serde_json::from_str(e)
                .with_context(|| format!("{name}: expected line {}", i + 1))?;
            if !matches(&e, &a) {
                report.mismatches.push(Mismatch {
                    case: name.to_string(),
                    line: i + 1,
                    expected: e,
                    actual: a,
                });
            }
        }
        Ok(())
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_is_by_subset_with_float_tolerance() {
        assert!(matches(
            &json!({"a": 1.0}),
            &json!({"a": 1.0000000000001, "b": 2})
        ));
        assert!(!matches(&json!({"a": 1.0}), &json!({"a": 1.001})));
        assert!(!matches(&json!({"c": 1}), &json!({"a": 1})));
        assert!(matches(&json!({"x": null}), &json!({"x": null})));
        assert!(!matches(&json!({"x": "s"}), &json!({"x": null})));
    }
}
