//! The alert stage's contract as plain Rust (mirrors of the WIT `alert-rule`, `alert-ticks`,
//! `alert-bars` and `alert-events`): the rules as data, what the stage reads, and the events it
//! answers. Shared by the host (which feeds the stage and sends its events) and the alert guests.

/// Which way a value must move to meet its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// value ≥ threshold; clears when value < clear.
    Up,
    /// value ≤ threshold; clears when value > clear.
    Down,
    /// |value| ≥ threshold; clears when |value| < clear.
    Both,
}

impl Direction {
    pub const NAMES: [&'static str; 3] = ["up", "down", "both"];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "up" => Some(Direction::Up),
            "down" => Some(Direction::Down),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }
}

/// One rule, as the host passes it with every call.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Unique among the rules; names the rule's state.
    pub name: String,
    /// What the rule watches (the shipped guest's kinds: [`KINDS`]).
    pub kind: String,
    /// Inclusive.
    pub threshold: f64,
    /// The hysteresis level a firing rule must move past to resolve.
    pub clear: f64,
    pub direction: Direction,
    /// Event time the condition must hold before the rule fires.
    pub for_ms: i64,
    /// After firing, no new firing for this long (event time).
    pub cooldown_ms: i64,
    /// Bars a bar-based kind looks back over.
    pub window_bars: u32,
}

/// The kinds the shipped alert guest knows: three read ticks, two read closed bars.
pub const KINDS: [&str; 5] = [
    "change_pct",
    "spread_bps",
    "price_cross",
    "volume_spike",
    "volatility",
];

/// The kinds read from closed bars (they need the aggregate stage).
pub const BAR_KINDS: [&str; 2] = ["volume_spike", "volatility"];

/// The columns alert reads of each accepted tick, entry i of each for tick i.
#[derive(Debug, Clone, Copy)]
pub struct AlertTicks<'a> {
    pub partition: &'a [i32],
    pub timestamp_us: &'a [i64],
    pub instrument_token: &'a [u64],
    pub last_price: &'a [f64],
    /// NaN where the tick has none.
    pub change: &'a [f64],
    /// NaN where the tick has no book.
    pub spread_bps: &'a [f64],
}

impl AlertTicks<'_> {
    pub fn len(&self) -> usize {
        self.timestamp_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every column has the same length.
    pub fn is_consistent(&self) -> bool {
        let n = self.len();
        [
            self.partition.len(),
            self.instrument_token.len(),
            self.last_price.len(),
            self.change.len(),
            self.spread_bps.len(),
        ]
        .iter()
        .all(|&l| l == n)
    }
}

/// The bars closed in the same batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertBars<'a> {
    pub partition: &'a [i32],
    pub instrument_token: &'a [u64],
    pub end_us: &'a [i64],
    pub close: &'a [f64],
    pub traded_quantity: &'a [i64],
    pub log_return: &'a [f64],
    /// Index of the tick that closed the bar.
    pub closed_by: &'a [u32],
}

impl AlertBars<'_> {
    pub fn len(&self) -> usize {
        self.end_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every column has the same length and each bar's `closed_by` is a tick of `ticks`
    /// ticks, in order.
    pub fn is_consistent(&self, ticks: usize) -> bool {
        let n = self.len();
        [
            self.partition.len(),
            self.instrument_token.len(),
            self.close.len(),
            self.traded_quantity.len(),
            self.log_return.len(),
            self.closed_by.len(),
        ]
        .iter()
        .all(|&l| l == n)
            && self.closed_by.iter().all(|&i| (i as usize) < ticks)
            && self.closed_by.is_sorted()
    }
}

/// Whether a rule started or stopped holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn name(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// Alert events, one column per field, in the order they happened (the WIT `alert-events`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertEvents {
    /// Index into the call's rules.
    pub rule: Vec<u32>,
    pub state: Vec<AlertState>,
    /// The tick that caused it, or that closed the bar that did.
    pub tick: Vec<u32>,
    pub instrument_token: Vec<u64>,
    pub value: Vec<f64>,
    pub threshold: Vec<f64>,
    pub event_time_us: Vec<i64>,
}

impl AlertEvents {
    pub fn len(&self) -> usize {
        self.rule.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `other`'s events after these, their `tick` moved on by `shift`.
    pub fn append(&mut self, other: AlertEvents, shift: u32) {
        self.rule.extend(other.rule);
        self.state.extend(other.state);
        self.tick.extend(other.tick.into_iter().map(|i| i + shift));
        self.instrument_token.extend(other.instrument_token);
        self.value.extend(other.value);
        self.threshold.extend(other.threshold);
        self.event_time_us.extend(other.event_time_us);
    }
}

/// An alert event's id: FNV-1a of the rule's name, the instrument, the topic, partition and
/// offset of the message whose tick caused it (with the tick's place in a message of several),
/// and the state, as 16 hex digits. A re-delivered message raises the same events with the same
/// ids, so the alerts topic's consumers and the index deduplicate them.
pub fn alert_id(
    rule: &str,
    instrument_token: u64,
    topic: &str,
    partition: i32,
    offset: i64,
    tick: Option<u32>,
    state: AlertState,
) -> String {
    let mut h = crate::hash::Fnv64::default();
    h.write(rule.as_bytes()).write(&[0]);
    h.write_u64(instrument_token);
    h.write(topic.as_bytes()).write(&[0]);
    h.write(&partition.to_le_bytes());
    h.write(&offset.to_le_bytes());
    if let Some(k) = tick {
        h.write(&k.to_le_bytes());
    }
    h.write(state.name().as_bytes());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_id_changes_with_each_of_its_parts_and_nothing_else() {
        let id = |rule, token, topic, partition, offset, tick, state| {
            alert_id(rule, token, topic, partition, offset, tick, state)
        };
        let base = id("r", 7, "t", 0, 5, None, AlertState::Firing);
        assert_eq!(base.len(), 16);
        assert_eq!(base, id("r", 7, "t", 0, 5, None, AlertState::Firing));
        for other in [
            id("s", 7, "t", 0, 5, None, AlertState::Firing),
            id("r", 8, "t", 0, 5, None, AlertState::Firing),
            id("r", 7, "u", 0, 5, None, AlertState::Firing),
            id("r", 7, "t", 1, 5, None, AlertState::Firing),
            id("r", 7, "t", 0, 6, None, AlertState::Firing),
            id("r", 7, "t", 0, 5, Some(0), AlertState::Firing),
            id("r", 7, "t", 0, 5, None, AlertState::Resolved),
        ] {
            assert_ne!(other, base);
        }
    }
}
