//! `stockpipe guest diff`: what a new version of a stage would have done to the history in the lake,
//! next to what the current version does, under the production limits.
//!
//! The lake holds the accepted ticks' documents; each document carries the tick it was made from
//! (every field of the Kite quote) and, for route, the enrichment route was given. Objects are read
//! one at a time (a lake object is at most `lake.roll_bytes`), their lines decoded back into ticks,
//! and batches of them run through both components: memory is bounded by one object and one batch,
//! whatever the length of the window.
//!
//! A tick differs when the two outcomes differ: another verdict or reason (validate, enrich), an
//! enriched number further apart than the tolerance or another event id or minute (enrich), another
//! destination (route), or a fault on one side only. Each difference is counted under a kind —
//! `accepted->rejected:crossed-book`, `enrich.mid_price`, `route.alert`, `fault:trap` … — with the
//! first few ticks of each kind as examples. Because the lake holds only what was accepted, a
//! validate diff over it shows accepted→rejected flips; refusals of the past are in the dead-letter
//! topic, not here.

use crate::chain::StageConfigs;
use crate::runtime::bindings::types;
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{
    ChainStage, EnrichStage, GuestComponent, GuestFault, RouteStage, StageInstance, StageKind,
    ValidateStage, call_isolated, convert,
};
use crate::sink::document::DocumentParts;
use crate::sink::store::LakeStore;
use crate::tools::guest_test::{enrich_outcome_json, route_outcome_json, validate_outcome_json};
use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use stockpipe_model::columns::TickColumns;
use stockpipe_model::route::{Destinations, RouteInput};
use stockpipe_model::{Enrichment, Rejection};

/// What to replay and how to compare.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Documents under `<topic>/` in the lake.
    pub topic: String,
    /// Only ticks stamped at or after this instant (UTC µs).
    pub from_us: Option<i64>,
    /// Only ticks stamped before this instant (UTC µs).
    pub to_us: Option<i64>,
    /// Enriched numbers closer than this (relative, or absolute below 1) are equal.
    pub tolerance: f64,
    /// Examples kept per kind of difference.
    pub examples: usize,
    /// Ticks per call, as the pipeline batches them.
    pub batch: usize,
}

/// One version's identity in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: String,
    pub source: String,
}

/// The diff's result: the JSON summary `guest diff` prints and `guest promote` hands the host.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub stage: &'static str,
    pub old: Version,
    pub new: Version,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tolerance: f64,
    /// Lake objects read (those whose hour lies outside the window are not).
    pub objects: u64,
    /// Ticks replayed through both versions.
    pub ticks: u64,
    /// Documents in the objects read but outside the window.
    pub outside_window: u64,
    /// Ticks with at least one difference.
    pub changed: u64,
    /// The differences by kind; examples: their event id, instrument, time and both outcomes.
    #[serde(flatten)]
    pub found: Found,
    /// For enrich: the largest absolute difference seen per field (beyond the tolerance or not).
    pub max_abs_difference: BTreeMap<&'static str, f64>,
    pub elapsed_seconds: f64,
    pub ticks_per_second: f64,
}

impl DiffReport {
    fn new(
        stage: StageKind,
        old: &GuestComponent,
        new: &GuestComponent,
        options: &DiffOptions,
    ) -> Self {
        let time = |us: Option<i64>| us.map(stockpipe_model::time::format_rfc3339_micros);
        Self {
            stage: stage.name(),
            old: Version {
                version: old.version.clone(),
                source: old.source_name.clone(),
            },
            new: Version {
                version: new.version.clone(),
                source: new.source_name.clone(),
            },
            from: time(options.from_us),
            to: time(options.to_us),
            tolerance: options.tolerance,
            objects: 0,
            ticks: 0,
            outside_window: 0,
            changed: 0,
            found: Found::default(),
            max_abs_difference: BTreeMap::new(),
            elapsed_seconds: 0.0,
            ticks_per_second: 0.0,
        }
    }

    /// A few lines for a terminal: the totals, then each kind of difference with its count.
    pub fn summary_text(&self) -> String {
        let mut out = format!(
            "{} {} -> {}: {} ticks from {} objects, {} changed ({:.0} ticks/s)\n",
            self.stage,
            self.old.version,
            self.new.version,
            self.ticks,
            self.objects,
            self.changed,
            self.ticks_per_second
        );
        self.found.summary_lines(&mut out);
        out
    }
}

/// What a diff found — differences by kind with the first examples of each, and the lines that
/// are not a document — the part every diff report shares (flattened into its JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    /// Differences by kind.
    pub differences: BTreeMap<String, u64>,
    /// Per kind, the first few (`--examples`).
    pub examples: BTreeMap<String, Vec<Value>>,
    /// Lines that are not a document (named in `undecodable_examples`).
    pub undecodable: u64,
    pub undecodable_examples: Vec<String>,
}

impl Found {
    pub(super) fn note(&mut self, kind: String, limit: usize, example: impl FnOnce() -> Value) {
        *self.differences.entry(kind.clone()).or_default() += 1;
        let kept = self.examples.entry(kind).or_default();
        if kept.len() < limit {
            kept.push(example());
        }
    }

    pub(super) fn undecodable(&mut self, limit: usize, what: impl FnOnce() -> String) {
        self.undecodable += 1;
        if self.undecodable_examples.len() < limit {
            self.undecodable_examples.push(what());
        }
    }

    /// Each kind with its count, then the lines skipped, a line each.
    pub(super) fn summary_lines(&self, out: &mut String) {
        for (kind, count) in &self.differences {
            out.push_str(&format!("  {count:>9}  {kind}\n"));
        }
        if self.undecodable > 0 {
            out.push_str(&format!(
                "  {:>9}  lines that are not a document (skipped)\n",
                self.undecodable
            ));
        }
    }
}

/// Refused when nothing was replayed, naming where it looked.
pub(super) fn ensure_replayed(
    ticks: u64,
    what: &str,
    topic: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let window = match (from, to) {
        (None, None) => String::new(),
        (from, to) => format!(
            " between {} and {}",
            from.unwrap_or("the start"),
            to.unwrap_or("the end")
        ),
    };
    anyhow::ensure!(
        ticks > 0,
        "no {what} under {topic}/ in the lake{window} — nothing to replay"
    );
    Ok(())
}

/// Ticks read back from the lake, laid out as the pipeline hands them to the guests, with what the
/// report and route need beside each: its event id and the enrichment's `spread_bps`.
struct Batch {
    columns: TickColumns,
    ids: Vec<[u8; 16]>,
    spread_bps: Vec<f64>,
    /// A document's tick rebuilt as a message, for the scanner.
    scratch: Vec<u8>,
}

impl Batch {
    fn new(capacity: usize) -> Self {
        Self {
            columns: TickColumns::with_capacity(capacity, capacity * 10),
            ids: Vec::with_capacity(capacity),
            spread_bps: Vec::with_capacity(capacity),
            scratch: Vec::with_capacity(2048),
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Adds a document's tick if it lies inside `window`: `Ok(true)` added, `Ok(false)` outside,
    /// `Err` not a tick's document. Our writer's documents are rebuilt as a message and scanned
    /// straight into the columns; any other layout is parsed whole.
    fn push(&mut self, line: &[u8], window: (Option<i64>, Option<i64>)) -> Result<bool, String> {
        let inside =
            |at: i64| window.0.is_none_or(|from| at >= from) && window.1.is_none_or(|to| at < to);
        if let Some(parts) = DocumentParts::split(line) {
            // The window first, from the timestamp alone: ticks outside it are not scanned.
            let value = parts.timestamp().ok_or("the timestamp is not closed")?;
            let at = stockpipe_model::time::parse_timestamp_bytes(value, 0)
                .map_err(|e| e.to_string())?;
            if !inside(at) {
                return Ok(false);
            }
            self.scratch.clear();
            self.scratch.push(b'{');
            self.scratch.extend_from_slice(parts.tick_fields);
            self.scratch.push(b'}');
            stockpipe_model::json::decode_into(&self.scratch, 0, &mut self.columns)
                .map_err(|e| e.to_string())?;
            self.ids.push(parts.event_id.try_into().expect("16 bytes"));
            self.spread_bps.push(parts.spread_bps().unwrap_or(f64::NAN));
            return Ok(true);
        }
        let tick = stockpipe_model::json::decode_tick(line, 0).map_err(|e| e.to_string())?;
        if !inside(tick.timestamp_us) {
            return Ok(false);
        }
        let doc: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let mut id = [b'0'; 16];
        let given = doc
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for (slot, b) in id.iter_mut().zip(given.bytes()) {
            *slot = b;
        }
        self.columns.push(&tick.view());
        self.ids.push(id);
        self.spread_bps.push(
            doc.get("spread_bps")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN),
        );
        Ok(true)
    }

    fn event_id(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.ids[i]).into_owned()
    }
}

/// Does the object, by its `dt=…/hour=…` path, hold nothing inside the window?
pub(super) fn object_outside_window(name: &str, from_us: Option<i64>, to_us: Option<i64>) -> bool {
    let Some(hour_start) = crate::sink::layout::hour_start(name) else {
        return false;
    };
    let hour_end = hour_start + 3_600_000_000;
    from_us.is_some_and(|from| hour_end <= from) || to_us.is_some_and(|to| hour_start >= to)
}

/// The kind of a verdict change, or `None` when both sides agree.
fn verdict_change(old: Option<&Rejection>, new: Option<&Rejection>) -> Option<String> {
    match (old, new) {
        (None, None) => None,
        (None, Some(n)) => Some(format!("accepted->rejected:{}", n.code.as_str())),
        (Some(o), None) => Some(format!("rejected->accepted:{}", o.code.as_str())),
        (Some(o), Some(n)) if o.code != n.code => Some(format!(
            "rejected:{}->rejected:{}",
            o.code.as_str(),
            n.code.as_str()
        )),
        (Some(_), Some(_)) => None,
    }
}

/// Are two numbers equal within `tolerance` (relative, absolute below magnitude 1)?
pub fn close_enough(a: f64, b: f64, tolerance: f64) -> bool {
    a == b
        || (a.is_nan() && b.is_nan())
        || (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

/// Reads one enriched number (NaN where the feature is absent: two absent features agree).
type Field = fn(&Enrichment) -> f64;

/// The enrichment fields compared numerically, by name.
const ENRICHED_NUMBERS: [(&str, Field); 6] = [
    ("mid_price", |e| e.mid_price),
    ("spread", |e| e.spread.unwrap_or(f64::NAN)),
    ("spread_bps", |e| e.spread_bps.unwrap_or(f64::NAN)),
    ("book_imbalance", |e| e.book_imbalance.unwrap_or(f64::NAN)),
    ("notional", |e| e.notional.unwrap_or(f64::NAN)),
    ("deviation_bps", |e| e.deviation_bps.unwrap_or(f64::NAN)),
];

/// Compares one batch's outcomes and notes every difference.
struct Comparer<'a> {
    report: &'a mut DiffReport,
    limit: usize,
    tolerance: f64,
}

impl Comparer<'_> {
    fn example(batch: &Batch, i: usize, old: Value, new: Value) -> Value {
        json!({
            "event_id": batch.event_id(i),
            "instrument_token": batch.columns.instrument_token[i],
            "timestamp": stockpipe_model::time::format_rfc3339_micros(batch.columns.timestamp_us[i]),
            "old": old,
            "new": new,
        })
    }

    /// The kind of a fault on one side only, or of two different faults; `None` otherwise.
    fn faults<A, B>(old: &Result<A, GuestFault>, new: &Result<B, GuestFault>) -> Option<String> {
        match (old, new) {
            (Ok(_), Err(f)) => Some(format!("fault:{}", f.code)),
            (Err(f), Ok(_)) => Some(format!("fault-fixed:{}", f.code)),
            (Err(a), Err(b)) if a.code != b.code => Some(format!("fault:{}->{}", a.code, b.code)),
            _ => None,
        }
    }

    fn validate(
        &mut self,
        batch: &Batch,
        old: &[Result<Option<Rejection>, GuestFault>],
        new: &[Result<Option<Rejection>, GuestFault>],
    ) {
        let json = validate_outcome_json;
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let kind = Self::faults(o, n).or_else(|| match (o, n) {
                (Ok(o), Ok(n)) => verdict_change(o.as_ref(), n.as_ref()),
                _ => None,
            });
            if let Some(kind) = kind {
                self.report.changed += 1;
                self.report.found.note(kind, self.limit, || {
                    Self::example(batch, i, json(o), json(n))
                });
            }
        }
    }

    fn enrich(
        &mut self,
        batch: &Batch,
        old: &[Result<Result<Enrichment, Rejection>, GuestFault>],
        new: &[Result<Result<Enrichment, Rejection>, GuestFault>],
    ) {
        let json = enrich_outcome_json;
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let mut kinds = Vec::new();
            if let Some(kind) = Self::faults(o, n) {
                kinds.push(kind);
            }
            match (o, n) {
                (Ok(Ok(a)), Ok(Ok(b))) => {
                    for (field, get) in ENRICHED_NUMBERS {
                        let (x, y) = (get(a), get(b));
                        let gap = (x - y).abs();
                        if gap.is_finite() {
                            let max = self.report.max_abs_difference.entry(field).or_default();
                            *max = max.max(gap);
                        }
                        if !close_enough(x, y, self.tolerance) {
                            kinds.push(format!("enrich.{field}"));
                        }
                    }
                    if (a.hour, a.minute) != (b.hour, b.minute) {
                        kinds.push("enrich.hour_minute".into());
                    }
                }
                (Ok(a), Ok(b)) => {
                    if let Some(kind) = verdict_change(a.as_ref().err(), b.as_ref().err()) {
                        kinds.push(kind);
                    }
                }
                _ => {}
            }
            if !kinds.is_empty() {
                self.report.changed += 1;
                for kind in kinds {
                    self.report.found.note(kind, self.limit, || {
                        Self::example(batch, i, json(o), json(n))
                    });
                }
            }
        }
    }

    fn route(
        &mut self,
        batch: &Batch,
        old: &[Result<Destinations, GuestFault>],
        new: &[Result<Destinations, GuestFault>],
    ) {
        let json = route_outcome_json;
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let mut kinds = Vec::new();
            if let Some(kind) = Self::faults(o, n) {
                kinds.push(kind);
            }
            if let (Ok(a), Ok(b)) = (o, n) {
                if a.search_index != b.search_index {
                    kinds.push("route.search_index".to_string());
                }
                if a.lake_partition != b.lake_partition {
                    kinds.push("route.lake_partition".to_string());
                }
                if a.alert != b.alert {
                    kinds.push("route.alert".to_string());
                }
                if a.dead_letter_topic != b.dead_letter_topic {
                    kinds.push("route.dead_letter_topic".to_string());
                }
            }
            if !kinds.is_empty() {
                self.report.changed += 1;
                for kind in kinds {
                    self.report.found.note(kind, self.limit, || {
                        Self::example(batch, i, json(o), json(n))
                    });
                }
            }
        }
    }
}

/// One stage call over the whole batch as a single copy of its columns; after a fault, parts of
/// it (down to single ticks) get columns of their own, as in the pipeline.
fn call_columns<O>(
    columns: &TickColumns,
    whole: &types::TickBatch,
    mut call: impl FnMut(&types::TickBatch, usize) -> Result<Vec<O>, GuestFault>,
) -> Vec<Result<O, GuestFault>> {
    let every: Vec<usize> = (0..columns.len()).collect();
    call_isolated(&every, |indices| {
        if indices.len() == every.len() {
            call(whole, indices.len())
        } else {
            call(
                &convert::tick_batch_owned(columns.gather(indices)),
                indices.len(),
            )
        }
    })
}

/// The two versions of the stage compared, each in its own instance.
enum Versions {
    Validate(StageInstance<ValidateStage>, StageInstance<ValidateStage>),
    Enrich(StageInstance<EnrichStage>, StageInstance<EnrichStage>),
    Route(StageInstance<RouteStage>, StageInstance<RouteStage>),
}

impl Versions {
    fn new(
        sandbox: &Arc<Sandbox>,
        stage: ChainStage,
        old: Arc<GuestComponent>,
        new: Arc<GuestComponent>,
    ) -> Self {
        let (s, o, n) = (sandbox, old, new);
        match stage {
            ChainStage::Validate => Self::Validate(
                StageInstance::new(s.clone(), o),
                StageInstance::new(s.clone(), n),
            ),
            ChainStage::Enrich => Self::Enrich(
                StageInstance::new(s.clone(), o),
                StageInstance::new(s.clone(), n),
            ),
            ChainStage::Route => Self::Route(
                StageInstance::new(s.clone(), o),
                StageInstance::new(s.clone(), n),
            ),
        }
    }
}

/// Runs one batch through both versions and compares.
fn diff_batch(
    versions: &mut Versions,
    configs: &StageConfigs,
    batch: &Batch,
    comparer: &mut Comparer<'_>,
) {
    match versions {
        Versions::Validate(old, new) => {
            let config = convert::validate_config(&configs.validate);
            let whole = convert::tick_batch(&batch.columns);
            let a = call_columns(&batch.columns, &whole, |b, n| {
                old.validate_columns(&config, b, n)
            });
            let b = call_columns(&batch.columns, &whole, |b, n| {
                new.validate_columns(&config, b, n)
            });
            comparer.validate(batch, &a, &b);
        }
        Versions::Enrich(old, new) => {
            let config = convert::enrich_config(&configs.enrich);
            let whole = convert::tick_batch(&batch.columns);
            let a = call_columns(&batch.columns, &whole, |b, n| {
                old.enrich_columns(&config, b, n)
            });
            let b = call_columns(&batch.columns, &whole, |b, n| {
                new.enrich_columns(&config, b, n)
            });
            comparer.enrich(batch, &a, &b);
        }
        Versions::Route(old, new) => {
            let config = convert::route_config(&configs.route);
            let c = &batch.columns;
            let inputs: Vec<RouteInput> = (0..batch.len())
                .map(|i| RouteInput {
                    timestamp_us: c.timestamp_us[i],
                    instrument_token: c.instrument_token[i],
                    change: c.change[i],
                    spread_bps: batch.spread_bps[i],
                    rejected: false,
                })
                .collect();
            let a = call_isolated(&inputs, |b| old.route(&config, b));
            let b = call_isolated(&inputs, |b| new.route(&config, b));
            comparer.route(batch, &a, &b);
        }
    }
}

fn run_batch(
    versions: &mut Versions,
    configs: &StageConfigs,
    batch: &Batch,
    report: &mut DiffReport,
    options: &DiffOptions,
) {
    report.ticks += batch.len() as u64;
    let mut comparer = Comparer {
        report,
        limit: options.examples,
        tolerance: options.tolerance,
    };
    diff_batch(versions, configs, batch, &mut comparer);
}

/// Reads the lake's objects under the topic, one at a time, skipping those whose hour lies
/// outside the window, and sends their ticks on in batches; counts what it read and skipped.
async fn read_lake(
    store: &LakeStore,
    options: &DiffOptions,
    report: &mut DiffReport,
    batches: &std::sync::mpsc::SyncSender<Batch>,
) -> anyhow::Result<()> {
    let prefix = format!("{}/", options.topic);
    let mut names = store.list(&prefix).await?;
    names.retain(|n| crate::sink::layout::is_segment(n));
    names.sort();
    let window = (options.from_us, options.to_us);
    let send = |batch: Batch| {
        tokio::task::block_in_place(|| batches.send(batch).is_ok())
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("the diff's worker thread stopped"))
    };
    let mut batch = Batch::new(options.batch);
    for name in names {
        if object_outside_window(&name, options.from_us, options.to_us) {
            continue;
        }
        let bytes = crate::sink::lake::object_lines(&name, store.get(&name).await?)
            .with_context(|| format!("gunzipping {name}"))?;
        report.objects += 1;
        let mut start = 0;
        for (i, end) in memchr::memchr_iter(b'\n', &bytes)
            .chain(std::iter::once(bytes.len()))
            .enumerate()
        {
            let line = &bytes[start..end];
            start = end + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match batch.push(line, window) {
                Ok(true) => {}
                Ok(false) => report.outside_window += 1,
                Err(e) => report
                    .found
                    .undecodable(options.examples, || format!("{name} line {}: {e}", i + 1)),
            }
            if batch.len() == options.batch {
                send(std::mem::replace(&mut batch, Batch::new(options.batch)))?;
            }
        }
    }
    if batch.len() > 0 {
        send(batch)?;
    }
    Ok(())
}

/// Replays the lake's documents within the window through `old` and `new` (the same stage) and
/// reports every difference.
pub async fn diff(
    sandbox: Arc<Sandbox>,
    old: Arc<GuestComponent>,
    new: Arc<GuestComponent>,
    configs: &StageConfigs,
    store: &LakeStore,
    options: &DiffOptions,
) -> anyhow::Result<DiffReport> {
    anyhow::ensure!(
        old.kind == new.kind,
        "{} is a {} component and {} a {} one: diff two versions of one stage",
        old.source_name,
        old.kind.name(),
        new.source_name,
        new.kind.name()
    );
    let stage = old.kind.chain_stage().ok_or_else(|| {
        anyhow::anyhow!(
            "{} is an aggregate component: guest diff compares the chain's stages (validate, enrich, route)",
            old.source_name
        )
    })?;
    let started = Instant::now();
    let mut report = DiffReport::new(old.kind, &old, &new, options);
    // Two threads: this one reads and decodes the lake into batches, a worker runs them through
    // both versions. At most two batches wait between them, and one object is in hand: memory
    // stays bounded whatever the window.
    let (batches, decoded) = std::sync::mpsc::sync_channel::<Batch>(2);
    let worker = {
        let (configs, options) = (configs.clone(), options.clone());
        let mut compared = report.clone();
        std::thread::Builder::new()
            .name("guest-diff".into())
            .spawn(move || {
                let mut versions = Versions::new(&sandbox, stage, old, new);
                for batch in decoded {
                    run_batch(&mut versions, &configs, &batch, &mut compared, &options);
                }
                compared
            })
            .context("starting the diff's worker thread")?
    };
    let read = read_lake(store, options, &mut report, &batches).await;
    drop(batches);
    let compared = tokio::task::block_in_place(|| worker.join())
        .map_err(|_| anyhow::anyhow!("the diff's worker thread panicked"))?;
    read?;
    report.ticks = compared.ticks;
    report.changed = compared.changed;
    report.found.differences = compared.found.differences;
    report.found.examples = compared.found.examples;
    report.max_abs_difference = compared.max_abs_difference;
    let (from, to) = (report.from.as_deref(), report.to.as_deref());
    ensure_replayed(report.ticks, "documents", &options.topic, from, to)?;
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.ticks_per_second = report.ticks as f64 / report.elapsed_seconds.max(1e-9);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockpipe_model::ReasonCode;

    fn rejection(code: ReasonCode) -> Rejection {
        Rejection {
            code,
            message: "m".into(),
        }
    }

    #[test]
    fn verdict_changes_are_named_by_the_reason_that_decided() {
        let crossed = rejection(ReasonCode::CrossedBook);
        let other = rejection(ReasonCode::Other);
        assert_eq!(verdict_change(None, None), None);
        assert_eq!(
            verdict_change(None, Some(&crossed)).as_deref(),
            Some("accepted->rejected:crossed-book")
        );
        assert_eq!(
            verdict_change(Some(&crossed), None).as_deref(),
            Some("rejected->accepted:crossed-book")
        );
        assert_eq!(
            verdict_change(Some(&crossed), Some(&other)).as_deref(),
            Some("rejected:crossed-book->rejected:other")
        );
        // Only the message changed: the same verdict.
        let reworded = Rejection {
            message: "other words".into(),
            ..crossed.clone()
        };
        assert_eq!(verdict_change(Some(&crossed), Some(&reworded)), None);
    }

    #[test]
    fn numbers_are_compared_relative_above_one_and_absolute_below() {
        assert!(close_enough(100.0, 100.0 + 1e-8, 1e-9));
        assert!(!close_enough(100.0, 100.0 + 1e-6, 1e-9));
        assert!(close_enough(1e-12, 2e-12, 1e-9));
        assert!(close_enough(f64::NAN, f64::NAN, 0.0));
        assert!(!close_enough(f64::NAN, 1.0, 1.0));
        assert!(close_enough(f64::INFINITY, f64::INFINITY, 0.0));
    }

    #[test]
    fn lines_that_only_look_like_our_documents_are_not_split() {
        let ours = br#"{"event_id":"00000000000000ff","timestamp":"2017-06-20T07:00:00Z","instrument_token":1,"depth":{}},"mid_price":1}"#;
        assert!(DocumentParts::split(ours).is_some());
        // The key split on sits inside the id: no fields between, not our layout.
        let inside = br#"{"event_id":"x,"mid_price":xx","timestamp":"2017"}"#;
        assert!(DocumentParts::split(inside).is_none());
        // No cut of a document panics: it is split and scanned, or refused.
        for cut in 0..ours.len() {
            let _ = DocumentParts::split(&ours[..cut]);
            let mut batch = Batch::new(4);
            let _ = batch.push(&ours[..cut], (None, None));
        }
    }

    #[test]
    fn objects_outside_the_window_are_skipped_by_their_hour() {
        let name = "stock-stream/dt=2017-06-20/hour=07/0-1-9.ndjson";
        let seven = stockpipe_model::time::parse_timestamp("2017-06-20T07:00:00Z", 0).unwrap();
        let hour = 3_600_000_000;
        assert_eq!(crate::sink::layout::hour_start(name), Some(seven));
        assert!(!object_outside_window(name, None, None));
        assert!(!object_outside_window(name, Some(seven + hour - 1), None));
        assert!(object_outside_window(name, Some(seven + hour), None));
        assert!(object_outside_window(name, None, Some(seven)));
        assert!(!object_outside_window(name, None, Some(seven + 1)));
        // A name without partitions is always read.
        assert!(!object_outside_window(
            "stock-stream/x.ndjson",
            Some(i64::MAX),
            None
        ));
    }
}
