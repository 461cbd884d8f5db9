//! `stockpipe guest diff --stage alert`: the alert events two rule sets — or two versions of the
//! alert guest — would have raised over the lake's history, side by side.
//!
//! The lake holds what the alert stage read: each accepted tick's document (`source` partition,
//! offset and place in its message; time, instrument, price, change, the enrichment's spread) and
//! each closed bar's (`source.closed_by_offset` / `closed_by_tick`: the tick that closed it). Per
//! partition, the ticks are replayed in their partition's order, each followed by the bars it
//! closed — the order the pipeline fed the stage — through both sides, each with its own rules and
//! its own state, starting empty at the lake's (or the window's) start.
//!
//! Events are matched by `alert_id` (rule name, instrument, the causing tick's place, state): an
//! event only one side raised is `only-old:<rule>:<state>` or `only-new:<rule>:<state>`; the same
//! id with another value or threshold (a rule of that name whose level moved, firing at the same
//! tick) is `changed:<rule>:<state>`. Over a lake written from the topic's start, the version and
//! the rules that ran raise exactly the ids the alerts index holds.
//!
//! Memory: a partition's bars, and the tick lines of segments that overlap (a message's ticks may
//! land in two hours' objects). Segments are read in the order of their first position; once one
//! is read, every line before the next one's first position is final ([`Sweep`]).

use crate::chain::alert::Alerting;
use crate::position::{LakePosition, Offset, Offsets, Partition};
use crate::runtime::bindings::alert as wit;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{GuestComponent, GuestFault, StageKind, convert};
use crate::sink::store::LakeStore;
mod lake;

use crate::tools::guest_diff::{Found, close_enough, ensure_replayed, object_outside_window};
use anyhow::Context;
use lake::{BarRow, Sweep, TickRow, read_lines, segments};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use stockpipe_model::alert::{AlertRule, AlertState, BAR_KINDS, alert_id};
use stockpipe_model::time::format_rfc3339_micros;

/// What to replay and how to compare.
#[derive(Debug, Clone)]
pub struct AlertDiffOptions {
    /// Tick documents under `<topic>/` in the lake.
    pub topic: String,
    /// Bar documents under `<bars_prefix>/` (`aggregate.lake_prefix`).
    pub bars_prefix: String,
    /// Only ticks stamped at or after this instant (UTC µs).
    pub from_us: Option<i64>,
    /// Only ticks stamped before this instant (UTC µs).
    pub to_us: Option<i64>,
    /// Values and thresholds closer than this (relative, or absolute below 1) are equal.
    pub tolerance: f64,
    /// Examples kept per kind of difference.
    pub examples: usize,
    /// Ticks per call, as the pipeline batches them.
    pub batch: usize,
}

/// One side of the comparison: a version of the alert guest and the rules it runs.
pub struct AlertSide {
    pub component: Arc<GuestComponent>,
    pub rules: Vec<AlertRule>,
    /// Where the rules came from (a config file, or the defaults), for the report.
    pub rules_from: String,
}

/// One side in the report: what ran, and what it raised.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    pub version: String,
    pub source: String,
    pub rules_from: String,
    pub rules: Vec<Value>,
    /// Events raised (fired and resolved).
    pub events: u64,
    /// Per rule, events by state.
    pub by_rule: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Ticks the guest faulted on, alone (the pipeline dead-letters them).
    pub faulted: u64,
}

impl SideReport {
    fn new(side: &AlertSide) -> Self {
        Self {
            version: side.component.version.clone(),
            source: side.component.source_name.clone(),
            rules_from: side.rules_from.clone(),
            rules: side.rules.iter().map(rule_json).collect(),
            events: 0,
            by_rule: side
                .rules
                .iter()
                .map(|r| (r.name.clone(), BTreeMap::new()))
                .collect(),
            faulted: 0,
        }
    }
}

fn rule_json(r: &AlertRule) -> Value {
    json!({
        "name": r.name, "kind": r.kind, "threshold": r.threshold, "clear": r.clear,
        "direction": r.direction.name(), "for_ms": r.for_ms, "cooldown_ms": r.cooldown_ms,
        "window_bars": r.window_bars,
    })
}

/// The diff's result: the JSON `guest diff --stage alert` prints and `guest promote` attaches.
#[derive(Debug, Clone, Serialize)]
pub struct AlertDiffReport {
    pub stage: &'static str,
    pub old: SideReport,
    pub new: SideReport,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tolerance: f64,
    /// Lake objects read (tick objects whose hour lies outside the window are not).
    pub objects: u64,
    /// Ticks replayed through both sides.
    pub ticks: u64,
    /// Closed bars replayed, each after the tick that closed it.
    pub bars: u64,
    /// Bars whose closing tick was not replayed (outside the window).
    pub bars_without_tick: u64,
    /// Tick documents in the objects read but outside the window.
    pub outside_window: u64,
    /// Lines read twice (the same lake position), replayed once.
    pub duplicates: u64,
    /// Events raised by one side only, or by both with another value or threshold.
    pub changed: u64,
    /// Differences by kind: `only-old:<rule>:<state>`, `only-new:…`, `changed:…`, `fault:old:<code>`.
    #[serde(flatten)]
    pub found: Found,
    pub elapsed_seconds: f64,
    pub ticks_per_second: f64,
}

impl AlertDiffReport {
    /// A few lines for a terminal: what ran, the totals, then each kind of difference.
    pub fn summary_text(&self) -> String {
        let side = |s: &SideReport| {
            format!(
                "{} with {} rules from {} ({} events)",
                s.version,
                s.rules.len(),
                s.rules_from,
                s.events
            )
        };
        let mut out = format!(
            "alert {} -> {}: {} ticks and {} bars from {} objects, {} events differ ({:.0} ticks/s)\n",
            side(&self.old),
            side(&self.new),
            self.ticks,
            self.bars,
            self.objects,
            self.changed,
            self.ticks_per_second
        );
        self.found.summary_lines(&mut out);
        out
    }
}

/// An event one side raised, ready to compare.
struct Raised {
    id: String,
    rule: String,
    state: AlertState,
    token: u64,
    value: f64,
    threshold: f64,
    time_us: i64,
    offset: i64,
    tick: Option<u32>,
}

impl Raised {
    fn json(&self) -> Value {
        json!({"value": self.value, "threshold": self.threshold,
               "event_time": format_rfc3339_micros(self.time_us)})
    }
}

/// A side while it runs: the stage (rules and state) and its part of the report.
struct Running {
    alerting: Alerting,
    report: SideReport,
}

impl Running {
    /// One batch of `partition`'s ticks (and the bars they closed) through this side.
    fn run(
        &mut self,
        topic: &str,
        partition: i32,
        batch: &Batch,
        faults: &mut Vec<(usize, GuestFault)>,
    ) -> Vec<Raised> {
        let consumed: Offsets = BTreeMap::from([(
            Partition(partition),
            Offset(batch.places.last().map_or(0, |p| p.0)).next(),
        )]);
        let out = self
            .alerting
            .process(batch.ticks.clone(), batch.bars.clone(), &consumed);
        self.report.faulted += out.faulted.len() as u64;
        faults.extend(out.faulted);
        let e = &out.events;
        let rules = self.alerting.rules();
        (0..e.len())
            .map(|k| {
                let (offset, tick) = batch.places[e.tick[k] as usize];
                let rule = &rules[e.rule[k] as usize];
                let state = e.state[k];
                self.report.events += 1;
                *self
                    .report
                    .by_rule
                    .entry(rule.name.clone())
                    .or_default()
                    .entry(state.name())
                    .or_default() += 1;
                Raised {
                    id: alert_id(
                        &rule.name,
                        e.instrument_token[k],
                        topic,
                        partition,
                        offset,
                        tick,
                        state,
                    ),
                    rule: rule.name.clone(),
                    state,
                    token: e.instrument_token[k],
                    value: e.value[k],
                    threshold: e.threshold[k],
                    time_us: e.event_time_us[k],
                    offset,
                    tick,
                }
            })
            .collect()
    }
}

/// One call's input, and each tick's (offset, place in its message).
struct Batch {
    ticks: wit::AlertTicks,
    bars: wit::AlertBars,
    places: Vec<(i64, Option<u32>)>,
}

impl Batch {
    fn new() -> Self {
        Self {
            ticks: convert::empty_alert_ticks(),
            bars: convert::empty_alert_bars(),
            places: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.places.len()
    }

    fn push_tick(&mut self, partition: i32, row: &TickRow) {
        let t = &mut self.ticks;
        t.partition.push(partition);
        t.timestamp_us.push(row.timestamp_us);
        t.instrument_token.push(row.token);
        t.last_price.push(row.last_price);
        t.change.push(row.change);
        t.spread_bps.push(row.spread_bps);
        self.places.push((row.offset, row.tick));
    }

    /// A bar closed by the tick pushed last.
    fn push_bar(&mut self, partition: i32, bar: &BarRow) {
        let b = &mut self.bars;
        b.partition.push(partition);
        b.instrument_token.push(bar.token);
        b.end_us.push(bar.end_us);
        b.close.push(bar.close);
        b.traded_quantity.push(bar.traded_quantity);
        b.log_return.push(bar.log_return);
        b.closed_by.push(self.places.len() as u32 - 1);
    }
}

/// The comparison in progress: both sides, the report, and the bars of the partition replayed.
struct Replay {
    old: Running,
    new: Running,
    report: AlertDiffReport,
    options: AlertDiffOptions,
    bars: Vec<BarRow>,
    next_bar: usize,
    batch: Batch,
    partition: i32,
}

impl Replay {
    /// Starts `partition`: its bars, in the order the stage read them.
    fn start_partition(&mut self, partition: i32, mut bars: Vec<BarRow>) {
        self.finish_partition();
        bars.sort_by_key(|b| (b.closed_by, b.end_us, b.token));
        self.bars = bars;
        self.next_bar = 0;
        self.partition = partition;
    }

    /// Runs what is left of the partition; its bars that no replayed tick closed are counted.
    fn finish_partition(&mut self) {
        self.flush();
        self.report.bars_without_tick += self.bars.len().saturating_sub(self.next_bar) as u64;
        self.bars.clear();
        self.next_bar = 0;
    }

    /// Ticks in position order, each followed by the bars it closed.
    fn ticks(&mut self, rows: Vec<TickRow>) {
        let window = (self.options.from_us, self.options.to_us);
        for row in rows {
            if window.0.is_some_and(|f| row.timestamp_us < f)
                || window.1.is_some_and(|t| row.timestamp_us >= t)
            {
                self.report.outside_window += 1;
                continue;
            }
            while self
                .bars
                .get(self.next_bar)
                .is_some_and(|b| b.closed_by < row.position)
            {
                self.report.bars_without_tick += 1;
                self.next_bar += 1;
            }
            self.batch.push_tick(self.partition, &row);
            while let Some(bar) = self
                .bars
                .get(self.next_bar)
                .filter(|b| b.closed_by == row.position)
            {
                self.batch.push_bar(self.partition, bar);
                self.next_bar += 1;
            }
            if self.batch.len() >= self.options.batch {
                self.flush();
            }
        }
    }

    /// Runs the batch through both sides and compares their events.
    fn flush(&mut self) {
        if self.batch.len() == 0 {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Batch::new());
        self.report.ticks += batch.len() as u64;
        self.report.bars += batch.bars.closed_by.len() as u64;
        let topic = self.options.topic.clone();
        let (mut old_faults, mut new_faults) = (Vec::new(), Vec::new());
        let (old, new) = tokio::task::block_in_place(|| {
            (
                self.old
                    .run(&topic, self.partition, &batch, &mut old_faults),
                self.new
                    .run(&topic, self.partition, &batch, &mut new_faults),
            )
        });
        let limit = self.options.examples;
        for (side, faults) in [("old", old_faults), ("new", new_faults)] {
            for (i, fault) in faults {
                let (offset, tick) = batch.places[i];
                let partition = self.partition;
                self.report
                    .found
                    .note(format!("fault:{side}:{}", fault.code), limit, || {
                        json!({"source": {"partition": partition, "offset": offset, "tick": tick},
                               "fault": fault.message})
                    });
            }
        }
        self.compare(old, new);
    }

    fn compare(&mut self, old: Vec<Raised>, new: Vec<Raised>) {
        let tolerance = self.options.tolerance;
        let limit = self.options.examples;
        let partition = self.partition;
        let example = |e: &Raised, o: Option<&Raised>, n: Option<&Raised>| {
            json!({
                "alert_id": e.id, "rule": e.rule, "state": e.state.name(),
                "instrument_token": e.token,
                "source": {"partition": partition, "offset": e.offset, "tick": e.tick},
                "old": o.map(Raised::json), "new": n.map(Raised::json),
            })
        };
        let mut theirs: HashMap<&str, &Raised> = new.iter().map(|e| (e.id.as_str(), e)).collect();
        for o in &old {
            let kind = match theirs.remove(o.id.as_str()) {
                None => Some(("only-old", None)),
                Some(n) => {
                    let same = close_enough(o.value, n.value, tolerance)
                        && close_enough(o.threshold, n.threshold, tolerance)
                        && o.time_us == n.time_us;
                    (!same).then_some(("changed", Some(n)))
                }
            };
            if let Some((what, n)) = kind {
                self.report.changed += 1;
                let kind = format!("{what}:{}:{}", o.rule, o.state.name());
                self.report
                    .found
                    .note(kind, limit, || example(o, Some(o), n));
            }
        }
        for n in new.iter().filter(|n| theirs.contains_key(n.id.as_str())) {
            self.report.changed += 1;
            let kind = format!("only-new:{}:{}", n.rule, n.state.name());
            self.report
                .found
                .note(kind, limit, || example(n, None, Some(n)));
        }
    }
}

/// Replays the lake's ticks (and bars) within the window through both sides and reports every
/// event they disagree on.
pub async fn diff(
    sandbox: Arc<Sandbox>,
    old: AlertSide,
    new: AlertSide,
    store: &LakeStore,
    options: &AlertDiffOptions,
) -> anyhow::Result<AlertDiffReport> {
    for side in [&old, &new] {
        anyhow::ensure!(
            side.component.kind == StageKind::Alert,
            "{} is a {} component: diff --stage alert compares alert guests",
            side.component.source_name,
            side.component.kind.name()
        );
    }
    let started = Instant::now();
    let time = |us: Option<i64>| us.map(format_rfc3339_micros);
    let report = AlertDiffReport {
        stage: "alert",
        old: SideReport::new(&old),
        new: SideReport::new(&new),
        from: time(options.from_us),
        to: time(options.to_us),
        tolerance: options.tolerance,
        objects: 0,
        ticks: 0,
        bars: 0,
        bars_without_tick: 0,
        outside_window: 0,
        duplicates: 0,
        changed: 0,
        found: Found::default(),
        elapsed_seconds: 0.0,
        ticks_per_second: 0.0,
    };
    let bar_rule = old
        .rules
        .iter()
        .chain(&new.rules)
        .find(|r| BAR_KINDS.contains(&r.kind.as_str()))
        .map(|r| format!("{} ({})", r.name, r.kind));
    let mut replay = Replay {
        old: Running {
            alerting: Alerting::new(sandbox.clone(), old.component, old.rules)
                .with_context(|| format!("the old side's rules ({})", old.rules_from))?,
            report: report.old.clone(),
        },
        new: Running {
            alerting: Alerting::new(sandbox, new.component, new.rules)
                .with_context(|| format!("the new side's rules ({})", new.rules_from))?,
            report: report.new.clone(),
        },
        report,
        options: options.clone(),
        bars: Vec::new(),
        next_bar: 0,
        batch: Batch::new(),
        partition: 0,
    };
    let limit = options.examples;
    let tick_position = |first: &str| LakePosition::from_tick_name(first);
    let bar_position = |first: &str| first.parse().ok().map(LakePosition::from_name);
    let r = &mut replay.report;
    let ticks = segments(store, &options.topic, tick_position, &mut r.found, limit).await?;
    let bars = segments(
        store,
        &options.bars_prefix,
        bar_position,
        &mut r.found,
        limit,
    )
    .await?;
    if let Some(rule) = &bar_rule {
        anyhow::ensure!(
            !bars.is_empty(),
            "rule {rule} reads closed bars, and the lake has none under {}/ (was [aggregate] enabled when it was written? its lake_prefix names where bars go)",
            options.bars_prefix
        );
    }
    for (&partition, segments) in &ticks {
        let mut partition_bars = Vec::new();
        for (_, name) in bars.get(&partition).into_iter().flatten() {
            let found = &mut replay.report.found;
            let parse = |l: &[u8]| BarRow::parse(l, partition);
            partition_bars.extend(read_lines(store, name, found, limit, parse).await?);
            replay.report.objects += 1;
        }
        replay.start_partition(partition, partition_bars);
        let mut sweep = Sweep::default();
        for (k, (_, name)) in segments.iter().enumerate() {
            if !object_outside_window(name, options.from_us, options.to_us) {
                let found = &mut replay.report.found;
                let parse = |l: &[u8]| TickRow::parse(l, partition);
                sweep.add(read_lines(store, name, found, limit, parse).await?);
                replay.report.objects += 1;
            }
            let next = segments.get(k + 1).map(|(first, _)| *first);
            replay.ticks(sweep.release(next));
        }
        replay.report.duplicates += sweep.duplicates;
    }
    replay.finish_partition();
    let mut report = replay.report;
    report.old = replay.old.report;
    report.new = replay.new.report;
    let (from, to) = (report.from.as_deref(), report.to.as_deref());
    ensure_replayed(report.ticks, "tick documents", &options.topic, from, to)?;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.ticks_per_second = report.ticks as f64 / report.elapsed_seconds.max(1e-9);
    Ok(report)
}
