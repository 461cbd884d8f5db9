//! The alert stage as pure Rust: rules over event time, with a state per partition, instrument
//! and rule. The template an alert guest's author copies: change what a kind measures, or add a
//! kind, here; `lib.rs` only adapts the bindings.
//!
//! A rule's value, by kind (a value that is NaN — the tick has no change, no book; a bar kind
//! without enough bars — is not evaluated: the rule's state does not move):
//! - `change_pct`: the tick's percent change; `spread_bps`: the tick's spread in basis points;
//!   `price_cross`: the tick's last price.
//! - `volume_spike` (bars): the bar's traded quantity over the mean traded quantity of the
//!   instrument's previous `window_bars` bars (at least one; NaN while that mean is 0).
//! - `volatility` (bars): the sample standard deviation of the instrument's last `window_bars`
//!   log returns (at least two).
//!
//! A rule *meets* its threshold when the value is at or beyond it (`up`: ≥ threshold, `down`: ≤
//! threshold, `both`: |value| ≥ threshold) and *clears* when the value is past `clear` the other
//! way (`up`: < clear, `down`: > clear, `both`: |value| < clear). Per instrument, a rule is
//! - **idle**: when a value meets the threshold it becomes pending, since that value's time;
//! - **pending**: it fires — one `firing` event — at the first value that meets the threshold
//!   once `for_ms` of event time has passed since it became pending (at once with `for_ms` 0:
//!   a first tick already past the threshold fires) and `cooldown_ms` since its last firing; a
//!   value that does not meet the threshold sends it back to idle;
//! - **firing**: quiet, whatever the value, until a value clears: one `resolved` event, and idle
//!   again. A value between `clear` and the threshold (the hysteresis band) changes nothing, so
//!   a price flapping around the threshold fires once.
//!
//! Events come in the order of the batch: each tick's rules in rule order, then the bars that
//! tick closed. The state of a partition exports to versioned bytes ([`Alerter::export_state`])
//! and imports back exactly, so a partition resumed from a checkpoint raises the same events as
//! one never stopped. A rule's state is keyed by its name: rules renamed start idle.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use stockpipe_model::hash::FixedHash;
use stockpipe_model::state::{Reader, put_f64, put_i64, put_u32};

pub use stockpipe_model::alert::{
    AlertBars, AlertEvents, AlertRule, AlertState, AlertTicks, BAR_KINDS, Direction, KINDS,
};

/// The longest look-back a bar kind may ask for.
pub const MAX_WINDOW_BARS: u32 = 10_000;

/// Checks the rules before they are used: every error names the rule and the key.
pub fn check_rules(rules: &[AlertRule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        let name = &rule.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return Err(format!(
                "rule {i} ({name:?}): name must be 1 to 64 letters, digits, '_', '-' or '.'"
            ));
        }
        if rules[..i].iter().any(|r| r.name == *name) {
            return Err(format!("rule {name:?}: name is used by an earlier rule"));
        }
        let fail = |key: &str, why: String| Err(format!("rule {name:?}: {key} {why}"));
        if !KINDS.contains(&rule.kind.as_str()) {
            return fail(
                "kind",
                format!(
                    "{:?} is not a kind this guest knows ({})",
                    rule.kind,
                    KINDS.join(", ")
                ),
            );
        }
        if !rule.threshold.is_finite() {
            return fail("threshold", "must be a finite number".into());
        }
        if !rule.clear.is_finite() {
            return fail("clear", "must be a finite number".into());
        }
        let (t, c) = (rule.threshold, rule.clear);
        match rule.direction {
            Direction::Up if c > t => {
                return fail(
                    "clear",
                    format!("({c}) must be at or below the threshold ({t}) for direction \"up\""),
                );
            }
            Direction::Down if c < t => {
                return fail(
                    "clear",
                    format!("({c}) must be at or above the threshold ({t}) for direction \"down\""),
                );
            }
            Direction::Both if t < 0.0 => {
                return fail(
                    "threshold",
                    format!("({t}) is a magnitude for direction \"both\": it must be at least 0"),
                );
            }
            Direction::Both if !(0.0..=t).contains(&c) => {
                return fail(
                    "clear",
                    format!(
                        "({c}) must be between 0 and the threshold ({t}) for direction \"both\""
                    ),
                );
            }
            _ => {}
        }
        if rule.for_ms < 0 {
            return fail("for_ms", "must be at least 0".into());
        }
        if rule.cooldown_ms < 0 {
            return fail("cooldown_ms", "must be at least 0".into());
        }
        let least = match rule.kind.as_str() {
            "volume_spike" => 1,
            "volatility" => 2,
            _ => 0,
        };
        let w = rule.window_bars;
        if least == 0 && w != 0 {
            return fail(
                "window_bars",
                format!(
                    "({w}) is for the bar kinds; a {} rule reads ticks",
                    rule.kind
                ),
            );
        }
        if least > 0 && !(least..=MAX_WINDOW_BARS).contains(&w) {
            return fail(
                "window_bars",
                format!(
                    "({w}) must be between {least} and {MAX_WINDOW_BARS} for a {} rule",
                    rule.kind
                ),
            );
        }
    }
    Ok(())
}

/// Where a rule stands for one instrument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// Meeting the threshold since this event time.
    Pending(i64),
    Firing,
}

/// One rule's state for one instrument.
#[derive(Debug, Clone, PartialEq)]
struct RuleState {
    phase: Phase,
    /// Event time of the last firing.
    last_fired_us: Option<i64>,
    /// The bar kinds' look-back: traded quantities (`volume_spike`) or log returns
    /// (`volatility`), oldest first.
    window: VecDeque<f64>,
}

impl Default for RuleState {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            last_fired_us: None,
            window: VecDeque::new(),
        }
    }
}

/// One rule's states in one partition, per instrument.
#[derive(Debug, Clone, Default, PartialEq)]
struct RuleStates {
    name: String,
    instruments: HashMap<u64, RuleState, FixedHash>,
}

/// The state of one partition: per rule name (a handful), then per instrument.
#[derive(Debug, Clone, Default, PartialEq)]
struct PartitionState {
    rules: Vec<RuleStates>,
}

impl PartitionState {
    /// The states of the rule named `name` (none yet: empty).
    fn rule(&mut self, name: &str) -> &mut RuleStates {
        let at = match self.rules.iter().position(|r| r.name == name) {
            Some(at) => at,
            None => {
                self.rules.push(RuleStates {
                    name: name.into(),
                    ..RuleStates::default()
                });
                self.rules.len() - 1
            }
        };
        &mut self.rules[at]
    }

    fn entries(&self) -> usize {
        self.rules.iter().map(|r| r.instruments.len()).sum()
    }
}

/// What a rule reads, decided once a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    ChangePct,
    SpreadBps,
    PriceCross,
    VolumeSpike,
    Volatility,
}

impl Kind {
    fn of(rule: &AlertRule) -> Kind {
        match rule.kind.as_str() {
            "change_pct" => Kind::ChangePct,
            "spread_bps" => Kind::SpreadBps,
            "price_cross" => Kind::PriceCross,
            "volume_spike" => Kind::VolumeSpike,
            _ => Kind::Volatility,
        }
    }

    fn reads_bars(self) -> bool {
        matches!(self, Kind::VolumeSpike | Kind::Volatility)
    }
}

/// The stage: every partition's state.
#[derive(Debug, Default)]
pub struct Alerter {
    partitions: HashMap<i32, PartitionState, FixedHash>,
}

fn meets(rule: &AlertRule, v: f64) -> bool {
    match rule.direction {
        Direction::Up => v >= rule.threshold,
        Direction::Down => v <= rule.threshold,
        Direction::Both => v.abs() >= rule.threshold,
    }
}

fn clears(rule: &AlertRule, v: f64) -> bool {
    match rule.direction {
        Direction::Up => v < rule.clear,
        Direction::Down => v > rule.clear,
        Direction::Both => v.abs() < rule.clear,
    }
}

/// Mean of the window's values.
fn mean(values: &VecDeque<f64>) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (mean first, then Σ (x − mean)² / (n − 1), oldest first).
fn sample_std(values: &VecDeque<f64>) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let m = mean(values);
    let ss: f64 = values.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

impl RuleState {
    /// A value at `t_us`: the event it raises, if any, as (state, the level compared with).
    fn step(&mut self, rule: &AlertRule, v: f64, t_us: i64) -> Option<(AlertState, f64)> {
        if v.is_nan() {
            return None;
        }
        match self.phase {
            Phase::Firing => {
                if clears(rule, v) {
                    self.phase = Phase::Idle;
                    return Some((AlertState::Resolved, rule.clear));
                }
                None
            }
            Phase::Idle | Phase::Pending(_) => {
                if !meets(rule, v) {
                    self.phase = Phase::Idle;
                    return None;
                }
                let since = match self.phase {
                    Phase::Pending(since) => since,
                    _ => t_us,
                };
                let held = t_us.saturating_sub(since) >= rule.for_ms.saturating_mul(1_000);
                let cooled = self.last_fired_us.is_none_or(|last| {
                    t_us.saturating_sub(last) >= rule.cooldown_ms.saturating_mul(1_000)
                });
                if held && cooled {
                    self.phase = Phase::Firing;
                    self.last_fired_us = Some(t_us);
                    Some((AlertState::Firing, rule.threshold))
                } else {
                    self.phase = Phase::Pending(since);
                    None
                }
            }
        }
    }

    /// The bar kinds' value of a bar, and the bar into the window.
    fn bar_value(
        &mut self,
        rule: &AlertRule,
        kind: Kind,
        traded_quantity: i64,
        log_return: f64,
    ) -> f64 {
        let w = rule.window_bars as usize;
        let value = match kind {
            Kind::VolumeSpike => {
                let q = traded_quantity as f64;
                let v = match self.window.is_empty() {
                    true => f64::NAN,
                    false => {
                        let m = mean(&self.window);
                        if m > 0.0 { q / m } else { f64::NAN }
                    }
                };
                self.window.push_back(q);
                v
            }
            _ => {
                if log_return.is_finite() {
                    self.window.push_back(log_return);
                }
                while self.window.len() > w {
                    self.window.pop_front();
                }
                return match self.window.len() >= 2 {
                    true => sample_std(&self.window),
                    false => f64::NAN,
                };
            }
        };
        while self.window.len() > w {
            self.window.pop_front();
        }
        value
    }
}

impl Alerter {
    /// Reads a batch (see the module's notes). The rules must pass [`check_rules`].
    pub fn alert_batch(
        &mut self,
        rules: &[AlertRule],
        ticks: &AlertTicks<'_>,
        bars: &AlertBars<'_>,
    ) -> AlertEvents {
        let mut out = AlertEvents::default();
        let kinds: Vec<Kind> = rules.iter().map(Kind::of).collect();
        let mut next_bar = 0;
        for i in 0..ticks.len() {
            let token = ticks.instrument_token[i];
            let t_us = ticks.timestamp_us[i];
            let state = self.partitions.entry(ticks.partition[i]).or_default();
            for (r, (rule, kind)) in rules.iter().zip(&kinds).enumerate() {
                let v = match kind {
                    Kind::ChangePct => ticks.change[i],
                    Kind::SpreadBps => ticks.spread_bps[i],
                    Kind::PriceCross => ticks.last_price[i],
                    Kind::VolumeSpike | Kind::Volatility => continue,
                };
                // A missing value moves nothing, and makes no state.
                if v.is_nan() {
                    continue;
                }
                let rs = state.rule(&rule.name).instruments.entry(token).or_default();
                if let Some((s, level)) = rs.step(rule, v, t_us) {
                    push(&mut out, r, s, i, token, v, level, t_us);
                }
            }
            while next_bar < bars.len() && bars.closed_by[next_bar] as usize == i {
                let b = next_bar;
                next_bar += 1;
                let token = bars.instrument_token[b];
                let t_us = bars.end_us[b];
                let state = self.partitions.entry(bars.partition[b]).or_default();
                for (r, (rule, &kind)) in rules.iter().zip(&kinds).enumerate() {
                    if !kind.reads_bars() {
                        continue;
                    }
                    let rs = state.rule(&rule.name).instruments.entry(token).or_default();
                    let v = rs.bar_value(rule, kind, bars.traded_quantity[b], bars.log_return[b]);
                    if let Some((s, level)) = rs.step(rule, v, t_us) {
                        push(&mut out, r, s, i, token, v, level, t_us);
                    }
                }
            }
        }
        out
    }

    pub fn export_state(&self, partition: i32) -> Vec<u8> {
        self.partitions
            .get(&partition)
            .map(encode_state)
            .unwrap_or_default()
    }

    pub fn import_state(&mut self, partition: i32, bytes: &[u8]) -> Result<(), String> {
        let state = decode_state(bytes)?;
        match bytes.is_empty() {
            // A partition never seen, as it exported.
            true => self.partitions.remove(&partition),
            false => self.partitions.insert(partition, state),
        };
        Ok(())
    }

    pub fn drop_state(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[expect(clippy::too_many_arguments, reason = "one event's columns")]
fn push(
    out: &mut AlertEvents,
    rule: usize,
    state: AlertState,
    tick: usize,
    token: u64,
    value: f64,
    level: f64,
    t_us: i64,
) {
    out.rule.push(rule as u32);
    out.state.push(state);
    out.tick.push(tick as u32);
    out.instrument_token.push(token);
    out.value.push(value);
    out.threshold.push(level);
    out.event_time_us.push(t_us);
}

const STATE_MAGIC: &[u8; 4] = b"SPAL";
/// The format this version writes and reads.
pub const STATE_FORMAT: u8 = 1;

/// Little endian; entries in (instrument, rule name) order, so one state has one encoding.
fn encode_state(state: &PartitionState) -> Vec<u8> {
    let mut entries: Vec<(u64, &str, &RuleState)> = Vec::with_capacity(state.entries());
    for r in &state.rules {
        entries.extend(r.instruments.iter().map(|(t, s)| (*t, r.name.as_str(), s)));
    }
    entries.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = Vec::with_capacity(9 + entries.len() * 48);
    out.extend_from_slice(STATE_MAGIC);
    out.push(STATE_FORMAT);
    put_u32(&mut out, entries.len());
    for (token, name, s) in entries {
        out.extend_from_slice(&token.to_le_bytes());
        put_u32(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        let (phase, since) = match s.phase {
            Phase::Idle => (0, 0),
            Phase::Pending(since) => (1, since),
            Phase::Firing => (2, 0),
        };
        out.push(phase);
        put_i64(&mut out, since);
        out.push(u8::from(s.last_fired_us.is_some()));
        put_i64(&mut out, s.last_fired_us.unwrap_or(0));
        put_u32(&mut out, s.window.len());
        for v in &s.window {
            put_f64(&mut out, *v);
        }
    }
    out
}

fn decode_state(bytes: &[u8]) -> Result<PartitionState, String> {
    let mut state = PartitionState::default();
    if bytes.is_empty() {
        return Ok(state);
    }
    let mut r = Reader::new(bytes);
    if &r.take::<4>()? != STATE_MAGIC {
        return Err("not an alert state (it does not start with SPAL)".into());
    }
    let format = r.u8()?;
    if format != STATE_FORMAT {
        return Err(format!(
            "state format {format}; this version reads format {STATE_FORMAT}"
        ));
    }
    // An entry: token, name length, phase, since, flag, last firing, window length.
    let entries = r.count(8 + 4 + 1 + 8 + 1 + 8 + 4)?;
    let mut previous: Option<(u64, String)> = None;
    for _ in 0..entries {
        let token = r.u64()?;
        let len = r.count(1)?;
        let name = std::str::from_utf8(r.bytes(len)?)
            .map_err(|_| "state holds a rule name that is not UTF-8".to_string())?
            .to_string();
        let phase = r.u8()?;
        let since = r.i64()?;
        let phase = match phase {
            0 => Phase::Idle,
            1 => Phase::Pending(since),
            2 => Phase::Firing,
            other => return Err(format!("state holds phase {other}, not 0, 1 or 2")),
        };
        let fired = r.flag()?;
        let last = r.i64()?;
        let n = r.count(8)?;
        let mut window = VecDeque::with_capacity(n);
        for _ in 0..n {
            window.push_back(r.f64()?);
        }
        let s = RuleState {
            phase,
            last_fired_us: fired.then_some(last),
            window,
        };
        // In the one order the encoding has: a repeat or a disorder is not a state we wrote.
        let key = (token, name);
        if previous.as_ref().is_some_and(|p| *p >= key) {
            return Err(format!(
                "state names rule {:?} of instrument {} out of order or twice",
                key.1, key.0
            ));
        }
        state.rule(&key.1).instruments.insert(token, s);
        previous = Some(key);
    }
    r.finish()?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, kind: &str, threshold: f64, clear: f64, direction: Direction) -> AlertRule {
        AlertRule {
            name: name.into(),
            kind: kind.into(),
            threshold,
            clear,
            direction,
            for_ms: 0,
            cooldown_ms: 0,
            window_bars: 0,
        }
    }

    /// Ticks of one instrument on partition 0: (seconds, last price, change).
    #[derive(Default)]
    struct Ticks {
        partition: Vec<i32>,
        timestamp_us: Vec<i64>,
        instrument_token: Vec<u64>,
        last_price: Vec<f64>,
        change: Vec<f64>,
        spread_bps: Vec<f64>,
    }

    impl Ticks {
        fn of(values: &[(i64, f64, f64)]) -> Self {
            let mut t = Ticks::default();
            for &(s, price, change) in values {
                t.partition.push(0);
                t.timestamp_us.push(s * 1_000_000);
                t.instrument_token.push(7);
                t.last_price.push(price);
                t.change.push(change);
                t.spread_bps.push(f64::NAN);
            }
            t
        }

        fn view(&self) -> AlertTicks<'_> {
            AlertTicks {
                partition: &self.partition,
                timestamp_us: &self.timestamp_us,
                instrument_token: &self.instrument_token,
                last_price: &self.last_price,
                change: &self.change,
                spread_bps: &self.spread_bps,
            }
        }
    }

    /// The events of `batches` (each a list of (seconds, change)), as (batch, tick, state).
    fn run(rules: &[AlertRule], batches: &[&[(i64, f64)]]) -> Vec<(usize, u32, &'static str)> {
        check_rules(rules).unwrap();
        let mut a = Alerter::default();
        let mut events = Vec::new();
        for (b, batch) in batches.iter().enumerate() {
            let values: Vec<_> = batch.iter().map(|&(s, c)| (s, 100.0, c)).collect();
            let t = Ticks::of(&values);
            let out = a.alert_batch(rules, &t.view(), &AlertBars::default());
            for k in 0..out.len() {
                events.push((b, out.tick[k], out.state[k].name()));
            }
        }
        events
    }

    fn change(threshold: f64, clear: f64) -> AlertRule {
        rule("move", "change_pct", threshold, clear, Direction::Both)
    }

    #[test]
    fn a_crossing_fires_once_and_the_first_tick_past_the_threshold_fires() {
        let events = run(
            &[change(5.0, 4.0)],
            &[&[(0, 5.0), (1, 6.0), (2, 7.5)], &[(3, 9.0), (4, -8.0)]],
        );
        assert_eq!(events, vec![(0, 0, "firing")]);
    }

    #[test]
    fn a_flap_inside_the_hysteresis_band_does_not_fire_again() {
        // 5 fires; 4.5 is between clear (4) and the threshold: still firing; back to 5.2: quiet.
        let events = run(
            &[change(5.0, 4.0)],
            &[&[(0, 5.1), (1, 4.5)], &[(2, 5.2), (3, 4.1), (4, 5.0)]],
        );
        assert_eq!(events, vec![(0, 0, "firing")]);
    }

    #[test]
    fn a_value_past_clear_resolves_and_a_later_crossing_fires_again() {
        let events = run(
            &[change(5.0, 4.0)],
            &[&[(0, 5.1), (1, 3.9)], &[(2, 2.0), (3, -5.0)]],
        );
        assert_eq!(
            events,
            vec![(0, 0, "firing"), (0, 1, "resolved"), (1, 1, "firing")]
        );
    }

    #[test]
    fn for_ms_not_met_does_not_fire_and_met_fires_once() {
        let mut r = change(5.0, 5.0);
        r.for_ms = 3_000;
        // Holds 0..2 s, drops (back to idle), holds again from 4 s: fires at 7 s, not before.
        let events = run(
            std::slice::from_ref(&r),
            &[
                &[(0, 6.0), (2, 6.0), (3, 1.0)],
                &[(4, 6.0), (6, 6.0), (7, 6.0), (8, 6.0)],
            ],
        );
        assert_eq!(events, vec![(1, 2, "firing")]);
    }

    #[test]
    fn a_cooldown_holds_a_new_firing_back_until_it_has_passed() {
        let mut r = change(5.0, 5.0);
        r.cooldown_ms = 60_000;
        let events = run(
            std::slice::from_ref(&r),
            &[
                &[(0, 6.0), (10, 1.0), (20, 6.0)],
                // Still within a minute of the firing at 0 s: pending, not firing.
                &[(59, 6.0)],
                // A minute on and still meeting the threshold: fires.
                &[(60, 6.0), (61, 1.0)],
            ],
        );
        assert_eq!(
            events,
            vec![
                (0, 0, "firing"),
                (0, 1, "resolved"),
                (2, 0, "firing"),
                (2, 1, "resolved")
            ]
        );
    }

    #[test]
    fn directions_up_and_down_compare_with_their_sign() {
        let up = rule("up", "price_cross", 100.0, 99.0, Direction::Up);
        let down = rule("down", "price_cross", 90.0, 91.0, Direction::Down);
        let mut a = Alerter::default();
        let t = Ticks::of(&[
            (0, 100.0, 0.0),
            (1, 99.5, 0.0),
            (2, 98.9, 0.0),
            (3, 90.0, 0.0),
            (4, 91.5, 0.0),
        ]);
        let out = a.alert_batch(&[up, down], &t.view(), &AlertBars::default());
        let got: Vec<_> = (0..out.len())
            .map(|k| {
                (
                    out.rule[k],
                    out.tick[k],
                    out.state[k].name(),
                    out.value[k],
                    out.threshold[k],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, "firing", 100.0, 100.0),
                (0, 2, "resolved", 98.9, 99.0),
                (1, 3, "firing", 90.0, 90.0),
                (1, 4, "resolved", 91.5, 91.0),
            ]
        );
    }

    #[test]
    fn a_missing_value_moves_nothing() {
        let events = run(&[change(5.0, 4.0)], &[&[(0, 6.0), (1, f64::NAN), (2, 1.0)]]);
        assert_eq!(events, vec![(0, 0, "firing"), (0, 2, "resolved")]);
    }

    /// Bars of instrument 7 closed by tick 0 of a one-tick batch each.
    fn bars_run(rule: &AlertRule, bars: &[(i64, f64)]) -> Vec<(&'static str, f64)> {
        check_rules(std::slice::from_ref(rule)).unwrap();
        let mut a = Alerter::default();
        let mut events = Vec::new();
        for (k, &(traded, log_return)) in bars.iter().enumerate() {
            let t = Ticks::of(&[(k as i64 * 60, 100.0, f64::NAN)]);
            let b = AlertBars {
                partition: &[0],
                instrument_token: &[7],
                end_us: &[k as i64 * 60_000_000],
                close: &[100.0],
                traded_quantity: &[traded],
                log_return: &[log_return],
                closed_by: &[0],
            };
            let out = a.alert_batch(std::slice::from_ref(rule), &t.view(), &b);
            for e in 0..out.len() {
                events.push((out.state[e].name(), out.value[e]));
            }
        }
        events
    }

    #[test]
    fn a_volume_spike_is_a_bar_s_quantity_over_the_mean_of_the_previous_bars() {
        let mut r = rule("spike", "volume_spike", 3.0, 1.5, Direction::Up);
        r.window_bars = 2;
        // Means of the previous two: -, 100, 100, 100 (400: 4.0 fires), 250 (100: 0.4 resolves).
        let got = bars_run(
            &r,
            &[
                (100, 0.0),
                (100, 0.0),
                (100, 0.0),
                (400, 0.0),
                (100, 0.0),
                (50, 0.0),
            ],
        );
        assert_eq!(got, vec![("firing", 4.0), ("resolved", 0.4)]);
    }

    #[test]
    fn volatility_is_the_sample_deviation_of_the_last_returns() {
        let mut r = rule("vol", "volatility", 0.01, 0.005, Direction::Up);
        r.window_bars = 2;
        // Windows: [0.0], [0.0, 0.02] (sd 0.01414: fires), [0.02, 0.02] (sd 0: resolves).
        let got = bars_run(&r, &[(1, f64::NAN), (1, 0.0), (1, 0.02), (1, 0.02)]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "firing");
        assert!((got[0].1 - 0.02_f64 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(got[1], ("resolved", 0.0));
    }

    #[test]
    fn state_round_trips_across_any_cut() {
        let mut r = change(5.0, 4.0);
        r.for_ms = 1_000;
        r.cooldown_ms = 5_000;
        let mut spike = rule("spike", "volume_spike", 2.0, 1.0, Direction::Up);
        spike.window_bars = 3;
        let rules = [r, spike];
        let values: Vec<(i64, f64, f64)> = (0..40)
            .map(|s| {
                (
                    s,
                    100.0 + s as f64,
                    [6.0, 4.5, 3.0, 7.0, f64::NAN][s as usize % 5],
                )
            })
            .collect();
        let t = Ticks::of(&values);
        let whole = Alerter::default().alert_batch(&rules, &t.view(), &AlertBars::default());
        assert!(whole.len() > 4, "{whole:?}");
        for cut in 0..values.len() {
            let (a, b) = (Ticks::of(&values[..cut]), Ticks::of(&values[cut..]));
            let mut first = Alerter::default();
            let mut out = first.alert_batch(&rules, &a.view(), &AlertBars::default());
            let state = first.export_state(0);
            let mut second = Alerter::default();
            second.import_state(0, &state).unwrap();
            assert_eq!(second.export_state(0), state, "one encoding per state");
            let rest = second.alert_batch(&rules, &b.view(), &AlertBars::default());
            out.append(rest, cut as u32);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn broken_state_is_refused_and_leaves_the_state_alone() {
        let mut a = Alerter::default();
        let t = Ticks::of(&[(0, 100.0, 6.0)]);
        a.alert_batch(&[change(5.0, 4.0)], &t.view(), &AlertBars::default());
        let good = a.export_state(0);
        for bad in [
            b"SPAG\x01".to_vec(),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            {
                let mut v = good.clone();
                v[4] = 9;
                v
            },
            {
                let mut v = good.clone();
                v[5] = 0xff;
                v
            },
        ] {
            let e = a.import_state(0, &bad).unwrap_err();
            assert!(!e.is_empty());
            assert_eq!(a.export_state(0), good, "unchanged after {e}");
        }
        assert_eq!(a.export_state(3), Vec::<u8>::new(), "never seen: empty");
        a.import_state(3, &[]).unwrap();
    }

    #[test]
    fn bad_rules_are_named_with_their_key() {
        let ok = change(5.0, 4.0);
        let cases: Vec<(AlertRule, &str)> = vec![
            (
                AlertRule {
                    name: "".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                AlertRule {
                    kind: "moon".into(),
                    ..ok.clone()
                },
                "kind",
            ),
            (
                AlertRule {
                    threshold: f64::NAN,
                    ..ok.clone()
                },
                "threshold",
            ),
            (
                AlertRule {
                    clear: 6.0,
                    ..ok.clone()
                },
                "clear",
            ),
            (
                AlertRule {
                    direction: Direction::Up,
                    clear: 5.5,
                    ..ok.clone()
                },
                "clear",
            ),
            (
                AlertRule {
                    direction: Direction::Down,
                    clear: 4.0,
                    ..ok.clone()
                },
                "clear",
            ),
            (
                AlertRule {
                    threshold: -1.0,
                    clear: -2.0,
                    ..ok.clone()
                },
                "threshold",
            ),
            (
                AlertRule {
                    for_ms: -1,
                    ..ok.clone()
                },
                "for_ms",
            ),
            (
                AlertRule {
                    cooldown_ms: -1,
                    ..ok.clone()
                },
                "cooldown_ms",
            ),
            (
                AlertRule {
                    window_bars: 3,
                    ..ok.clone()
                },
                "window_bars",
            ),
            (
                AlertRule {
                    kind: "volatility".into(),
                    window_bars: 1,
                    ..ok.clone()
                },
                "window_bars",
            ),
        ];
        for (rule, key) in cases {
            let e = check_rules(&[rule]).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = check_rules(&[ok.clone(), ok.clone()]).unwrap_err();
        assert!(e.contains("\"move\"") && e.contains("earlier"), "{e}");
        check_rules(&[ok]).unwrap();
    }
}
