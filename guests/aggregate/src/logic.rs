//! The aggregate stage as pure Rust: per-instrument bars over event time, kept per partition.
//!
//! Rules, in the order a tick meets them:
//! - **Late.** Each partition has a watermark: the newest timestamp it has seen minus the allowed
//!   lateness. A tick older than its partition's watermark is late: it is reported (the host sends
//!   it to the dead-letter topic with reason `late`) and counted in no bar. Late ticks do not move
//!   anything, not even the cumulative volume.
//! - **Traded quantity.** Kite's `volume` is the day's cumulative quantity, so a tick's traded
//!   quantity is the rise since the instrument's previous volume. The first tick seen of an
//!   instrument traded 0 (what came before it is unknown). A tick older than the previous volume's
//!   timestamp is out of order: it traded 0 (the newer tick already counted its quantity) and the
//!   previous volume stays. Otherwise a fall is a reset (a new session): the tick traded its whole
//!   volume. A gap (ticks lost upstream) puts the quantity traded meanwhile into the bar of the
//!   tick after the gap.
//! - **Bars.** A tick belongs to the bar `[start, start + width)` with `start` a whole multiple of
//!   the width. Open is the price of the earliest timestamp (the first to arrive on a tie), close,
//!   last mid price and last spread those of the newest (the last to arrive on a tie). VWAP is
//!   Σ price × traded quantity / Σ traded quantity, summed in arrival order, NaN when nothing
//!   traded. A minute without ticks has no bar.
//! - **Closing.** After each tick the watermark moves; every bar whose end it reached closes, in
//!   order of end, then instrument token. A closed bar gets the log return against the
//!   instrument's previous closed bar, ln(close / previous close), and the volatility: the sample
//!   standard deviation of the last `volatility_bars` log returns (mean first, then
//!   Σ (r − mean)² / (n − 1), both summed oldest first).
//!
//! The state of a partition exports to versioned bytes ([`Aggregator::export_state`]) and imports
//! back bit for bit, so a partition resumed from a checkpoint closes the same bars as one never
//! stopped.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use stockpipe_model::hash::FixedHash;
use stockpipe_model::state::{Reader, put_f64, put_i64, put_u32};

pub use stockpipe_model::aggregate::{
    AggregateConfig, AggregateInput, AggregateOutput, BarColumns,
};

/// A bar still open.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    end_us: i64,
    open: f64,
    open_us: i64,
    high: f64,
    low: f64,
    close: f64,
    close_us: i64,
    traded: i64,
    ticks: u32,
    /// Σ price × traded quantity.
    notional: f64,
    last_mid: f64,
    last_spread: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Instrument {
    /// The last cumulative volume and its timestamp.
    volume: Option<(i64, i64)>,
    /// Open bars by start (usually one; two around a bar's end within the allowed lateness).
    bars: BTreeMap<i64, Bar>,
    previous_close: Option<f64>,
    /// The last log returns, oldest first.
    returns: VecDeque<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct PartitionState {
    newest_us: Option<i64>,
    /// Fixed hash keys: no randomness asked of the host, and the same layout every run.
    instruments: HashMap<u64, Instrument, FixedHash>,
    /// (end, instrument) of every open bar: what the watermark closes next.
    closing: BTreeSet<(i64, u64)>,
}

/// Every partition's state.
#[derive(Debug, Default)]
pub struct Aggregator {
    partitions: HashMap<i32, PartitionState, FixedHash>,
}

impl Aggregator {
    /// Runs a batch (columns of equal length; see [`AggregateInput::is_consistent`]).
    pub fn aggregate_batch(
        &mut self,
        config: &AggregateConfig,
        input: &AggregateInput<'_>,
    ) -> AggregateOutput {
        let mut out = AggregateOutput::default();
        let width = config.bar_width_us.max(1);
        let lateness = config.allowed_lateness_us.max(0);
        let keep = config.volatility_bars.max(2) as usize;
        // Consecutive ticks mostly share a partition: look it up once per run of them.
        let mut current: Option<(i32, &mut PartitionState)> = None;
        for i in 0..input.len() {
            let partition = input.partition[i];
            let state = match current.take() {
                Some((p, state)) if p == partition => state,
                _ => self.partitions.entry(partition).or_default(),
            };
            let closed_by = u32::try_from(i).expect("a batch holds < 2^32 ticks");
            let ts = input.timestamp_us[i];
            if state
                .newest_us
                .is_some_and(|newest| ts < newest.saturating_sub(lateness))
            {
                out.late.push(closed_by);
            } else {
                state.add(
                    width,
                    Tick {
                        ts,
                        token: input.instrument_token[i],
                        price: input.last_price[i],
                        // The contract's -1: a tick without a volume (an index).
                        volume: (input.volume[i] >= 0).then_some(input.volume[i]),
                        mid: input.mid_price[i],
                        spread: input.spread[i],
                    },
                );
                let newest = state.newest_us.map_or(ts, |n| n.max(ts));
                state.newest_us = Some(newest);
                state.close_until(
                    newest.saturating_sub(lateness),
                    keep,
                    partition,
                    closed_by,
                    &mut out.bars,
                );
            }
            current = Some((partition, state));
        }
        out
    }

    /// One partition's state as versioned bytes.
    pub fn export_state(&self, partition: i32) -> Vec<u8> {
        let empty = PartitionState::default();
        encode_state(self.partitions.get(&partition).unwrap_or(&empty))
    }

    /// Replaces one partition's state; on an error the state is left as it was.
    pub fn import_state(&mut self, partition: i32, bytes: &[u8]) -> Result<(), String> {
        let state = decode_state(bytes)?;
        self.partitions.insert(partition, state);
        Ok(())
    }

    pub fn drop_state(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

struct Tick {
    ts: i64,
    token: u64,
    price: f64,
    /// None: the tick carried no volume; it trades nothing and leaves the last volume as it was.
    volume: Option<i64>,
    mid: f64,
    spread: f64,
}

impl PartitionState {
    fn add(&mut self, width: i64, t: Tick) {
        let instrument = self.instruments.entry(t.token).or_default();
        let traded = match (instrument.volume, t.volume) {
            (_, None) => 0,
            // Older than the volume already counted: that tick's quantity is in it.
            (Some((_, last_us)), _) if t.ts < last_us => 0,
            (Some((last, _)), Some(volume)) if volume >= last => volume - last,
            // A fall: a new session's volume.
            (Some(_), Some(volume)) => volume,
            (None, Some(_)) => 0,
        };
        if let Some(volume) = t.volume
            && instrument.volume.is_none_or(|(_, last_us)| t.ts >= last_us)
        {
            instrument.volume = Some((volume, t.ts));
        }
        let start = t.ts.div_euclid(width) * width;
        match instrument.bars.get_mut(&start) {
            Some(bar) => {
                if t.ts < bar.open_us {
                    bar.open = t.price;
                    bar.open_us = t.ts;
                }
                if t.ts >= bar.close_us {
                    bar.close = t.price;
                    bar.close_us = t.ts;
                    bar.last_mid = t.mid;
                    bar.last_spread = t.spread;
                }
                bar.high = bar.high.max(t.price);
                bar.low = bar.low.min(t.price);
                bar.traded += traded;
                bar.ticks += 1;
                bar.notional += t.price * traded as f64;
            }
            None => {
                let end_us = start.saturating_add(width);
                instrument.bars.insert(
                    start,
                    Bar {
                        end_us,
                        open: t.price,
                        open_us: t.ts,
                        high: t.price,
                        low: t.price,
                        close: t.price,
                        close_us: t.ts,
                        traded,
                        ticks: 1,
                        notional: t.price * traded as f64,
                        last_mid: t.mid,
                        last_spread: t.spread,
                    },
                );
                self.closing.insert((end_us, t.token));
            }
        }
    }

    /// Closes every bar whose end is at or before `watermark`.
    fn close_until(
        &mut self,
        watermark: i64,
        keep: usize,
        partition: i32,
        closed_by: u32,
        out: &mut BarColumns,
    ) {
        while let Some(&(end, token)) = self.closing.first() {
            if end > watermark {
                break;
            }
            self.closing.pop_first();
            let instrument = self
                .instruments
                .get_mut(&token)
                .expect("a closing entry has its instrument");
            let (start, bar) = instrument
                .bars
                .pop_first()
                .expect("a closing entry has its bar");
            debug_assert_eq!(bar.end_us, end);
            let log_return = match instrument.previous_close {
                Some(previous) => (bar.close / previous).ln(),
                None => f64::NAN,
            };
            instrument.previous_close = Some(bar.close);
            if !log_return.is_nan() {
                if instrument.returns.len() == keep {
                    instrument.returns.pop_front();
                }
                instrument.returns.push_back(log_return);
            }
            out.partition.push(partition);
            out.instrument_token.push(token);
            out.start_us.push(start);
            out.open.push(bar.open);
            out.high.push(bar.high);
            out.low.push(bar.low);
            out.close.push(bar.close);
            out.traded_quantity.push(bar.traded);
            out.tick_count.push(bar.ticks);
            out.vwap.push(if bar.traded > 0 {
                bar.notional / bar.traded as f64
            } else {
                f64::NAN
            });
            out.last_mid_price.push(bar.last_mid);
            out.last_spread.push(bar.last_spread);
            out.log_return.push(log_return);
            out.volatility.push(sample_std(&instrument.returns));
            out.closed_by.push(closed_by);
        }
    }
}

/// Sample standard deviation, NaN below two values.
fn sample_std(values: &VecDeque<f64>) -> f64 {
    let n = values.len();
    if n < 2 {
        return f64::NAN;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let squares: f64 = values.iter().map(|r| (r - mean) * (r - mean)).sum();
    (squares / (n - 1) as f64).sqrt()
}

/// The state's bytes start with this, then the format version.
const STATE_MAGIC: &[u8; 4] = b"SPAG";
/// The format this version writes and reads.
pub const STATE_FORMAT: u8 = 1;

/// Little endian throughout; instruments in token order and bars in start order, so one state has
/// exactly one encoding.
fn encode_state(state: &PartitionState) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + state.instruments.len() * 160);
    out.extend_from_slice(STATE_MAGIC);
    out.push(STATE_FORMAT);
    put_i64(&mut out, state.newest_us.unwrap_or(i64::MIN));
    out.push(u8::from(state.newest_us.is_some()));
    let mut tokens: Vec<&u64> = state.instruments.keys().collect();
    tokens.sort_unstable();
    put_u32(&mut out, tokens.len());
    for token in tokens {
        let i = &state.instruments[token];
        out.extend_from_slice(&token.to_le_bytes());
        out.push(u8::from(i.volume.is_some()));
        let (volume, volume_us) = i.volume.unwrap_or((0, 0));
        put_i64(&mut out, volume);
        put_i64(&mut out, volume_us);
        out.push(u8::from(i.previous_close.is_some()));
        put_f64(&mut out, i.previous_close.unwrap_or(0.0));
        put_u32(&mut out, i.returns.len());
        for r in &i.returns {
            put_f64(&mut out, *r);
        }
        put_u32(&mut out, i.bars.len());
        for (start, b) in &i.bars {
            put_i64(&mut out, *start);
            put_i64(&mut out, b.end_us);
            put_f64(&mut out, b.open);
            put_i64(&mut out, b.open_us);
            put_f64(&mut out, b.high);
            put_f64(&mut out, b.low);
            put_f64(&mut out, b.close);
            put_i64(&mut out, b.close_us);
            put_i64(&mut out, b.traded);
            out.extend_from_slice(&b.ticks.to_le_bytes());
            put_f64(&mut out, b.notional);
            put_f64(&mut out, b.last_mid);
            put_f64(&mut out, b.last_spread);
        }
    }
    out
}

fn decode_state(bytes: &[u8]) -> Result<PartitionState, String> {
    if bytes.is_empty() {
        return Ok(PartitionState::default());
    }
    let mut r = Reader::new(bytes);
    if &r.take::<4>()? != STATE_MAGIC {
        return Err("not an aggregate state (it does not start with SPAG)".into());
    }
    let format = r.u8()?;
    if format != STATE_FORMAT {
        return Err(format!(
            "state format {format}; this version reads format {STATE_FORMAT}"
        ));
    }
    let mut state = PartitionState::default();
    let newest = r.i64()?;
    state.newest_us = r.flag()?.then_some(newest);
    let instruments = r.count(42)?;
    for _ in 0..instruments {
        let token = r.u64()?;
        let has_volume = r.flag()?;
        let volume = (r.i64()?, r.i64()?);
        let has_close = r.flag()?;
        let close = r.f64()?;
        let mut i = Instrument {
            volume: has_volume.then_some(volume),
            previous_close: has_close.then_some(close),
            ..Instrument::default()
        };
        for _ in 0..r.count(8)? {
            i.returns.push_back(r.f64()?);
        }
        for _ in 0..r.count(100)? {
            let start = r.i64()?;
            let bar = Bar {
                end_us: r.i64()?,
                open: r.f64()?,
                open_us: r.i64()?,
                high: r.f64()?,
                low: r.f64()?,
                close: r.f64()?,
                close_us: r.i64()?,
                traded: r.i64()?,
                ticks: u32::from_le_bytes(r.take()?),
                notional: r.f64()?,
                last_mid: r.f64()?,
                last_spread: r.f64()?,
            };
            state.closing.insert((bar.end_us, token));
            i.bars.insert(start, bar);
        }
        if state.instruments.insert(token, i).is_some() {
            return Err(format!("state names instrument {token} twice"));
        }
    }
    r.finish()?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;
    const SEC: i64 = 1_000_000;

    /// Ticks of (partition, µs, token, price, volume); mid = price, spread = 0.1.
    #[derive(Default)]
    struct Feed {
        partition: Vec<i32>,
        ts: Vec<i64>,
        token: Vec<u64>,
        price: Vec<f64>,
        volume: Vec<i64>,
        mid: Vec<f64>,
        spread: Vec<f64>,
    }

    impl Feed {
        fn tick(mut self, partition: i32, ts: i64, token: u64, price: f64, volume: i64) -> Self {
            self.partition.push(partition);
            self.ts.push(ts);
            self.token.push(token);
            self.price.push(price);
            self.volume.push(volume);
            self.mid.push(price + 0.05);
            self.spread.push(0.1);
            self
        }

        fn input(&self) -> AggregateInput<'_> {
            AggregateInput {
                partition: &self.partition,
                timestamp_us: &self.ts,
                instrument_token: &self.token,
                last_price: &self.price,
                volume: &self.volume,
                mid_price: &self.mid,
                spread: &self.spread,
            }
        }
    }

    fn config() -> AggregateConfig {
        AggregateConfig {
            bar_width_us: MIN,
            allowed_lateness_us: 5 * SEC,
            volatility_bars: 3,
        }
    }

    #[test]
    fn a_bar_closes_when_the_watermark_passes_its_end() {
        let feed = Feed::default()
            .tick(0, 10 * SEC, 7, 100.0, 1_000)
            .tick(0, 20 * SEC, 7, 102.0, 1_010)
            .tick(0, 30 * SEC, 7, 99.0, 1_040)
            .tick(0, 50 * SEC, 7, 101.0, 1_050)
            // Next bar, but the watermark (62 s − 5 s) has not passed 60 s yet.
            .tick(0, 62 * SEC, 7, 103.0, 1_060)
            .tick(0, 65 * SEC, 7, 104.0, 1_070);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert!(out.late.is_empty());
        let b = &out.bars;
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b.closed_by, [5], "65 s − 5 s reaches the end at 60 s");
        assert_eq!((b.start_us[0], b.instrument_token[0]), (0, 7));
        assert_eq!(
            (b.open[0], b.high[0], b.low[0], b.close[0]),
            (100.0, 102.0, 99.0, 101.0)
        );
        // The first tick traded 0 (nothing known before it), then 10 + 30 + 10.
        assert_eq!(b.traded_quantity[0], 50);
        assert_eq!(b.tick_count[0], 4);
        let vwap = (102.0 * 10.0 + 99.0 * 30.0 + 101.0 * 10.0) / 50.0;
        assert_eq!(b.vwap[0], vwap);
        assert_eq!((b.last_mid_price[0], b.last_spread[0]), (101.05, 0.1));
        assert!(b.log_return[0].is_nan() && b.volatility[0].is_nan());
    }

    /// An index: no volume (the contract's -1) and no book (NaN spread). Its bars have prices and
    /// counts, trade nothing, and a volume seen later starts from nothing known.
    #[test]
    fn ticks_without_a_volume_trade_nothing_and_keep_the_last_volume() {
        let mut feed = Feed::default()
            .tick(0, 10 * SEC, 9, 100.0, -1)
            .tick(0, 20 * SEC, 9, 101.0, -1)
            .tick(0, 30 * SEC, 9, 102.0, 500)
            .tick(0, 40 * SEC, 9, 103.0, -1)
            .tick(0, 50 * SEC, 9, 104.0, 520)
            .tick(0, 70 * SEC, 9, 105.0, -1);
        feed.spread[0] = f64::NAN;
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        let b = &out.bars;
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b.tick_count[0], 5);
        assert_eq!((b.open[0], b.close[0]), (100.0, 104.0));
        // 500 is the first volume seen (traded 0); 520 follows it, past the tick without one.
        assert_eq!(b.traded_quantity[0], 20);
        assert_eq!(b.vwap[0], 104.0);
    }

    #[test]
    fn a_tick_older_than_the_watermark_is_late_and_changes_nothing() {
        let feed = Feed::default()
            .tick(0, 40 * SEC, 7, 100.0, 1_000)
            .tick(0, 58 * SEC, 7, 101.0, 1_010)
            .tick(0, 52 * SEC, 7, 90.0, 1_005) // 58 − 5 = 53 > 52: late
            .tick(0, 54 * SEC, 7, 99.0, 1_010) // not late; out of order, traded 0
            .tick(0, 70 * SEC, 7, 100.0, 1_020);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert_eq!(out.late, [2]);
        let b = &out.bars;
        assert_eq!(b.len(), 1);
        assert_eq!(b.low[0], 99.0, "the late tick's 90 is not in the bar");
        assert_eq!(b.close[0], 101.0, "close is the newest timestamp's price");
        assert_eq!((b.traded_quantity[0], b.tick_count[0]), (10, 3));
    }

    #[test]
    fn open_and_close_follow_event_time_not_arrival() {
        let feed = Feed::default()
            .tick(0, 30 * SEC, 7, 100.0, 0)
            .tick(0, 28 * SEC, 7, 98.0, 0)
            .tick(0, 30 * SEC, 7, 101.0, 0) // a tie with the newest: the later arrival closes
            .tick(0, 90 * SEC, 7, 1.0, 0);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        let b = &out.bars;
        assert_eq!((b.open[0], b.close[0]), (98.0, 101.0));
        assert!(b.vwap[0].is_nan(), "nothing traded: no VWAP");
    }

    #[test]
    fn volume_resets_and_out_of_order_ticks() {
        let feed = Feed::default()
            .tick(0, SEC, 7, 10.0, 500)
            .tick(0, 2 * SEC, 7, 10.0, 520) // +20
            .tick(0, 3 * SEC, 7, 10.0, 30) // reset: a new session traded 30
            .tick(0, 2 * SEC + 500_000, 7, 10.0, 510) // older and lower: out of order, 0
            .tick(0, 4 * SEC, 7, 10.0, 45) // +15 over the reset's 30
            .tick(0, 99 * SEC, 7, 10.0, 45);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert_eq!(out.bars.traded_quantity[0], 20 + 30 + 15);
    }

    #[test]
    fn returns_and_volatility_over_the_last_bars() {
        let closes = [100.0, 110.0, 99.0, 105.0, 104.0];
        let mut feed = Feed::default();
        for (m, close) in closes.iter().enumerate() {
            feed = feed.tick(0, m as i64 * MIN + SEC, 7, *close, 0);
        }
        feed = feed.tick(0, 10 * MIN, 7, 1.0, 0);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        let b = &out.bars;
        assert_eq!(b.len(), 5);
        let r: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        assert!(b.log_return[0].is_nan());
        assert_eq!(&b.log_return[1..], &r[..]);
        assert!(b.volatility[1].is_nan(), "one return: no deviation");
        let std = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        };
        assert_eq!(b.volatility[2], std(&r[..2]));
        assert_eq!(b.volatility[3], std(&r[..3]));
        assert_eq!(b.volatility[4], std(&r[1..4]), "only the last 3 returns");
        assert_eq!(b.start_us, [0, MIN, 2 * MIN, 3 * MIN, 4 * MIN]);
    }

    #[test]
    fn partitions_keep_their_own_watermark() {
        let feed = Feed::default()
            .tick(0, 10 * SEC, 7, 100.0, 0)
            .tick(1, 10 * SEC, 8, 50.0, 0)
            .tick(0, 200 * SEC, 7, 100.0, 0) // closes partition 0's bar only
            .tick(1, 20 * SEC, 8, 51.0, 0); // not late: partition 1 is still at 10 s
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert!(out.late.is_empty());
        assert_eq!(out.bars.instrument_token, [7]);
        assert_eq!(out.bars.partition, [0]);
        assert_eq!(out.bars.closed_by, [2]);
    }

    #[test]
    fn bars_close_in_order_of_end_then_token() {
        let feed = Feed::default()
            .tick(0, 10 * SEC, 9, 1.0, 0)
            .tick(0, 11 * SEC, 3, 1.0, 0)
            .tick(0, 70 * SEC, 5, 1.0, 0)
            .tick(0, 300 * SEC, 5, 1.0, 0);
        let out = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert_eq!(out.bars.instrument_token, [3, 9, 5]);
        assert_eq!(out.bars.start_us, [0, 0, MIN]);
    }

    /// Any cut of a feed into batches, with the state exported and imported into a fresh
    /// aggregator at the cut, closes the same bars bit for bit as one run.
    #[test]
    fn state_round_trips_across_any_cut() {
        let mut feed = Feed::default();
        let mut x = 12_345_u64;
        for i in 0..400_i64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let jitter = (x >> 33) as i64 % (8 * SEC);
            let token = 1 + (x >> 20) % 4;
            let partition = ((x >> 40) % 2) as i32;
            let price = 100.0 + ((x >> 24) % 1000) as f64 / 100.0;
            feed = feed.tick(
                partition,
                i * 2 * SEC - jitter,
                token,
                price,
                i * 3 - (i % 5),
            );
        }
        let all = Aggregator::default().aggregate_batch(&config(), &feed.input());
        assert!(
            all.bars.len() > 20 && !all.late.is_empty(),
            "{}",
            all.bars.len()
        );
        for cut in [1, 57, 200, 399] {
            let input = feed.input();
            let part = |lo: usize, hi: usize| AggregateInput {
                partition: &input.partition[lo..hi],
                timestamp_us: &input.timestamp_us[lo..hi],
                instrument_token: &input.instrument_token[lo..hi],
                last_price: &input.last_price[lo..hi],
                volume: &input.volume[lo..hi],
                mid_price: &input.mid_price[lo..hi],
                spread: &input.spread[lo..hi],
            };
            let mut first = Aggregator::default();
            let a = first.aggregate_batch(&config(), &part(0, cut));
            let mut second = Aggregator::default();
            for p in [0, 1] {
                second.import_state(p, &first.export_state(p)).unwrap();
                assert_eq!(second.export_state(p), first.export_state(p));
            }
            let b = second.aggregate_batch(&config(), &part(cut, 400));
            let mut joined = a.bars.clone();
            joined.append(b.bars.clone(), cut as u32);
            // Bit for bit, NaNs included: compare through the bits.
            let bits = |c: &BarColumns| -> Vec<u64> {
                [
                    &c.open,
                    &c.high,
                    &c.low,
                    &c.close,
                    &c.vwap,
                    &c.last_mid_price,
                    &c.last_spread,
                    &c.log_return,
                    &c.volatility,
                ]
                .iter()
                .flat_map(|col| col.iter().map(|f| f.to_bits()))
                .collect()
            };
            assert_eq!(bits(&joined), bits(&all.bars), "cut at {cut}");
            assert_eq!(
                (
                    &joined.partition,
                    &joined.instrument_token,
                    &joined.start_us
                ),
                (
                    &all.bars.partition,
                    &all.bars.instrument_token,
                    &all.bars.start_us
                )
            );
            assert_eq!(
                (
                    &joined.traded_quantity,
                    &joined.tick_count,
                    &joined.closed_by
                ),
                (
                    &all.bars.traded_quantity,
                    &all.bars.tick_count,
                    &all.bars.closed_by
                )
            );
            let late: Vec<u32> = a
                .late
                .iter()
                .copied()
                .chain(b.late.iter().map(|&i| i + cut as u32))
                .collect();
            assert_eq!(late, all.late, "cut at {cut}");
        }
    }

    #[test]
    fn broken_state_is_refused_and_leaves_the_state_alone() {
        let mut a = Aggregator::default();
        let feed = Feed::default().tick(3, SEC, 7, 1.0, 5);
        a.aggregate_batch(&config(), &feed.input());
        let good = a.export_state(3);
        let mut newer = good.clone();
        newer[4] = 2;
        assert_eq!(
            a.import_state(3, &newer).unwrap_err(),
            "state format 2; this version reads format 1"
        );
        assert!(a.import_state(3, b"XXXX\x01").unwrap_err().contains("SPAG"));
        for cut in 5..good.len() {
            assert!(a.import_state(3, &good[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(a.import_state(3, &huge).unwrap_err().contains("entries"));
        assert_eq!(
            a.export_state(3),
            good,
            "the failed imports changed nothing"
        );
        a.import_state(3, &[]).unwrap();
        assert_eq!(a.export_state(3), Aggregator::default().export_state(3));
    }
}
