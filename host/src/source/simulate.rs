//! A tick simulator: realistic quotes in the sample's format, deterministic per seed.
//!
//! Each instrument walks from its own opening price (Gaussian steps, prices on a 0.05 grid); the
//! quote carries consistent OHLC (high/low bound every trade so far, close = the previous session's
//! close), the running volume-weighted average price, the cumulative volume, and a five-level book
//! around the last price with bids descending and asks ascending. Ticks interleave instruments in
//! time order.

use stockpipe_model::{DepthLevel, Tick};

/// SplitMix64: tiny, fast, and reproducible everywhere (no dependency on a PRNG crate's stability).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

const TICK_SIZE: f64 = 0.05;

fn on_grid(price: f64) -> f64 {
    ((price / TICK_SIZE).round() * TICK_SIZE * 100.0).round() / 100.0
}

#[derive(Debug, Clone)]
struct Instrument {
    token: u64,
    last: f64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: i64,
    turnover: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    pub instruments: usize,
    pub ticks: usize,
    pub seed: u64,
    /// UTC µs of the first tick.
    pub start_us: i64,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        // 2017-06-20 07:35:05 UTC, the sample's first second.
        Self {
            instruments: 50,
            ticks: 100,
            seed: 42,
            start_us: 1_497_944_105_000_000,
        }
    }
}

pub fn simulate(options: &SimulateOptions) -> Vec<Tick> {
    let mut simulator = Simulator::new(options);
    (0..options.ticks).map(|_| simulator.next_tick()).collect()
}

/// An endless simulated market: each [`Simulator::next_tick`] moves one random instrument.
pub struct Simulator {
    rng: SplitMix64,
    instruments: Vec<Instrument>,
    now: i64,
}

impl Simulator {
    pub fn new(options: &SimulateOptions) -> Self {
        let mut rng = SplitMix64::new(options.seed);
        let instruments: Vec<Instrument> = (0..options.instruments.max(1))
            .map(|i| {
                let close = on_grid(20.0 + rng.unit() * 2_000.0);
                let open = on_grid(close * (1.0 + rng.normal() * 0.01)).max(TICK_SIZE);
                Instrument {
                    token: 5_633 + i as u64 * 7_919 + rng.below(1_000),
                    last: open,
                    open,
                    high: open,
                    low: open,
                    close,
                    volume: 0,
                    turnover: 0.0,
                }
            })
            .collect();
        Self {
            rng,
            instruments,
            now: options.start_us,
        }
    }

    /// The next tick, stamped a random 0–80 ms after the previous one.
    pub fn next_tick(&mut self) -> Tick {
        let gap = 1 + self.rng.below(80_000) as i64;
        let at = self.now + gap;
        self.tick_at(at)
    }

    /// The next tick, stamped `at_us` (e.g. the wall clock, for a live feed); never earlier
    /// than the previous tick.
    pub fn tick_at(&mut self, at_us: i64) -> Tick {
        self.now = at_us.max(self.now + 1);
        let rng = &mut self.rng;
        let k = rng.below(self.instruments.len() as u64) as usize;
        let inst = &mut self.instruments[k];
        let step = on_grid(inst.last * rng.normal() * 0.0008);
        inst.last = on_grid((inst.last + step).max(TICK_SIZE));
        inst.high = inst.high.max(inst.last);
        inst.low = inst.low.min(inst.last);
        let last_quantity = 1 + rng.below(200) as i64;
        inst.volume += last_quantity;
        inst.turnover += inst.last * last_quantity as f64;
        let book = |rng: &mut SplitMix64, first: f64, direction: f64| -> Vec<DepthLevel> {
            (0..5)
                .map(|level| DepthLevel {
                    price: on_grid((first + direction * level as f64 * TICK_SIZE).max(TICK_SIZE)),
                    orders: 1 + rng.below(12) as i64,
                    quantity: 1 + rng.below(1_500) as i64,
                })
                .collect()
        };
        let gap = TICK_SIZE * (1 + rng.below(3)) as f64;
        let best_bid = on_grid((inst.last - gap).max(TICK_SIZE));
        let best_ask = on_grid(best_bid + gap.max(TICK_SIZE));
        let depth_buy = book(rng, best_bid, -1.0);
        let depth_sell = book(rng, best_ask, 1.0);
        // The sample's shape: every field of it present.
        Tick {
            volume: Some(inst.volume),
            sell_quantity: Some(
                depth_sell.iter().map(|l| l.quantity).sum::<i64>() * (10 + rng.below(90) as i64),
            ),
            last_quantity: Some(last_quantity),
            change: Some((inst.last - inst.close) / inst.close * 100.0),
            average_price: Some(((inst.turnover / inst.volume as f64) * 100.0).round() / 100.0),
            open: Some(inst.open),
            high: Some(inst.high),
            low: Some(inst.low),
            close: Some(inst.close),
            has_depth: true,
            depth_buy,
            depth_sell,
            ..Tick::bare(self.now, inst.token, inst.last)
        }
    }
}

/// One tick as the sample's JSON object (one Kafka message), written without a value tree.
pub fn tick_json(tick: &Tick) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct SampleTick<'a> {
        timestamp: String,
        #[serde(flatten)]
        fields: crate::sink::document::TickFields<'a>,
    }
    serde_json::to_vec(&SampleTick {
        timestamp: stockpipe_model::time::format_sample_micros(tick.timestamp_us),
        fields: crate::sink::document::TickFields::of(&tick.view()),
    })
    .expect("serializable")
}

/// Renders ticks as the sample's JSON array (pretty) or as NDJSON.
pub fn render(ticks: &[Tick], ndjson: bool) -> String {
    let objects = ticks
        .iter()
        .map(|t| serde_json::Value::Object(stockpipe_model::json::encode_tick(t)));
    if ndjson {
        objects.map(|o| o.to_string() + "\n").collect()
    } else {
        let array = serde_json::Value::Array(objects.collect());
        serde_json::to_string_pretty(&array).expect("serializable") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed() {
        let a = simulate(&SimulateOptions {
            ticks: 500,
            ..Default::default()
        });
        let b = simulate(&SimulateOptions {
            ticks: 500,
            ..Default::default()
        });
        let c = simulate(&SimulateOptions {
            ticks: 500,
            seed: 7,
            ..Default::default()
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_simulated_tick_is_consistent() {
        let ticks = simulate(&SimulateOptions {
            instruments: 20,
            ticks: 5_000,
            seed: 3,
            ..Default::default()
        });
        let mut last_ts = 0;
        for t in &ticks {
            assert!(t.low.unwrap() <= t.last_price && t.last_price <= t.high.unwrap());
            assert!(t.low <= t.open && t.open <= t.high);
            assert_eq!((t.depth_buy.len(), t.depth_sell.len()), (5, 5));
            assert!(t.timestamp_us > last_ts);
            last_ts = t.timestamp_us;
        }
    }

    #[test]
    fn renders_the_input_format() {
        let ticks = simulate(&SimulateOptions {
            ticks: 3,
            ..Default::default()
        });
        let array = render(&ticks, false);
        let items = stockpipe_model::json::split_input(&array).unwrap();
        let back: Vec<_> = items
            .iter()
            .map(|b| stockpipe_model::json::decode_tick(b, 0).unwrap())
            .collect();
        assert_eq!(back, ticks);
        assert_eq!(render(&ticks, true).lines().count(), 3);
        // One message: the same object as the rendered file's.
        for t in &ticks {
            let direct: serde_json::Value = serde_json::from_slice(&tick_json(t)).unwrap();
            assert_eq!(
                direct,
                serde_json::Value::Object(stockpipe_model::json::encode_tick(t))
            );
        }
    }
}
