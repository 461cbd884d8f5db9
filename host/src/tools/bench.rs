//! `stockpipe bench guests`: the same ticks through the three components and through the same
//! `logic.rs` linked natively, batch by batch, printed as one JSON line. Numbers, not verdicts.

use super::timing::per_tick;
use crate::chain::{ChainComponents, NativeChain, StageChain, StageConfigs, WasmChain};
use crate::runtime::sandbox::{Sandbox, SandboxLimits};
use crate::source::simulate::{SimulateOptions, simulate};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use stockpipe_model::Tick;
use stockpipe_model::columns::TickColumns;

#[derive(Debug, Serialize)]
pub struct GuestBench {
    pub bench: &'static str,
    pub ticks: usize,
    pub batch: usize,
    pub rounds: usize,
    pub wasm_ticks_per_s: f64,
    pub native_ticks_per_s: f64,
    /// wasm time / native time (1.0 = as fast as native).
    pub wasm_over_native: f64,
    pub wasm_ns_per_tick: f64,
    pub native_ns_per_tick: f64,
    /// JSON decode as the pipeline does it (the tick scanner, straight into a batch's columns), per
    /// tick, best of `rounds`.
    pub decode_ns_per_tick: f64,
    /// The thorough decoder, in the same run: a serde_json `Value` per message read as any
    /// built-in shape into a `Tick`, then the columns built from them.
    pub decode_serde_ns_per_tick: f64,
    /// serde / scanner.
    pub decode_speedup: f64,
    /// The pipeline's decode (`decode_ticks_into`, with each tick's `extra`) of the same ticks in
    /// each built-in shape, ns per tick, best of `rounds`: the sample's (the scanner), KiteTicker's
    /// `ltp`, `quote` and `full` JSON, the quote API's, and `on_ticks` lists of ten full ticks.
    pub decode_shapes_ns_per_tick: std::collections::BTreeMap<&'static str, f64>,
    /// Where the wasm time goes, per tick.
    pub stages: StageBreakdown,
}

/// Per-stage cost, ns per tick, each stage timed alone over the same batches.
#[derive(Debug, Serialize)]
pub struct StageBreakdown {
    /// Host: the decoded batch's columns copied into the WIT record (once per batch in the chain;
    /// included in the stages' wasm figures).
    pub to_wit_ns: f64,
    /// The boundary alone: a validate call, columns already built, into a guest that reads only
    /// the token column and accepts every tick (the test suite's hostile guest, read from the
    /// build tree; `null` when the binary runs away from it). Validate and enrich each pay at
    /// least this, whatever their logic: the batch is copied into each sandbox's memory.
    pub boundary_floor_ns: Option<f64>,
    pub validate_wasm_ns: f64,
    pub validate_native_ns: f64,
    pub enrich_wasm_ns: f64,
    pub enrich_native_ns: f64,
    pub route_wasm_ns: f64,
    pub route_native_ns: f64,
    /// The stateful stage, on top of the chain (not in `wasm_ns_per_tick`): the call, the input
    /// columns, and each batch's export of the state of the partitions it touched (what the
    /// pipeline does). A fresh state each round: the same ticks again would all be late.
    pub aggregate_wasm_ns: f64,
    pub aggregate_native_ns: f64,
    /// The alert stage, on top of the chain: its call with the default rules (|change| >= 5 %,
    /// spread >= 50 bps) over each batch's ticks, and each batch's export of the state of the
    /// partitions it touched. A fresh state each round.
    pub alert_wasm_ns: f64,
    pub alert_native_ns: f64,
    /// Alert events the default rules raise per 100,000 of these ticks (once per crossing).
    pub alert_events_per_100k: f64,
    /// What the route stage raised on the same ticks before the alert stage (0.1.0): one alert
    /// per tick at or beyond a default threshold (|change| >= 5 % or spread >= 50 bps).
    pub route_alerts_per_100k_before: f64,
}

fn stage_breakdown(
    sandbox: &Arc<Sandbox>,
    components: &ChainComponents,
    config: &StageConfigs,
    ticks: &[stockpipe_model::Tick],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<StageBreakdown> {
    use crate::runtime::{StageInstance, convert};
    use stockpipe_model::route::RouteInput;
    let n = ticks.len();
    let views: Vec<stockpipe_model::TickRef<'_>> =
        ticks.iter().map(stockpipe_model::Tick::view).collect();
    let columns: Vec<TickColumns> = views.chunks(batch).map(TickColumns::from_views).collect();
    let to_wit_ns = per_tick(n, rounds, || {
        for c in &columns {
            std::hint::black_box(convert::tick_batch(c));
        }
    });
    let mut v = StageInstance::new(sandbox.clone(), components.validate.clone());
    let mut e = StageInstance::new(sandbox.clone(), components.enrich.clone());
    let mut r = StageInstance::new(sandbox.clone(), components.route.clone());
    let vc = convert::validate_config(&config.validate);
    let ec = convert::enrich_config(&config.enrich);
    let rc = convert::route_config(&config.route);
    let inputs: Vec<RouteInput> = ticks
        .iter()
        .map(|t| RouteInput {
            timestamp_us: t.timestamp_us,
            instrument_token: t.instrument_token,
            change: t.change.unwrap_or(f64::NAN),
            spread_bps: 5.0,
            rejected: false,
        })
        .collect();
    let mut failed = None;
    let validate_wasm_ns = per_tick(n, rounds, || {
        for chunk in views.chunks(batch) {
            if let Err(f) = v.validate(&vc, chunk) {
                failed = Some(f);
            }
        }
    });
    let enrich_wasm_ns = per_tick(n, rounds, || {
        for chunk in views.chunks(batch) {
            if let Err(f) = e.enrich(&ec, chunk) {
                failed = Some(f);
            }
        }
    });
    let route_wasm_ns = per_tick(n, rounds, || {
        for chunk in inputs.chunks(batch) {
            if let Err(f) = r.route(&rc, chunk) {
                failed = Some(f);
            }
        }
    });
    let boundary_floor_ns = boundary_floor(sandbox, &vc, &views, batch, rounds)?;
    if let Some(f) = failed {
        anyhow::bail!("a guest faulted during the benchmark: {f}");
    }
    let validate_native_ns = per_tick(n, rounds, || {
        for chunk in views.chunks(batch) {
            std::hint::black_box(stockpipe_guest_validate::logic::validate_batch(
                &config.validate,
                chunk,
            ));
        }
    });
    let enrich_native_ns = per_tick(n, rounds, || {
        for chunk in views.chunks(batch) {
            std::hint::black_box(stockpipe_guest_enrich::logic::enrich_batch(
                &config.enrich,
                chunk,
            ));
        }
    });
    let route_native_ns = per_tick(n, rounds, || {
        for chunk in inputs.chunks(batch) {
            // Decoded too: the wasm figure includes turning the plan into destinations.
            let _ = std::hint::black_box(
                stockpipe_guest_route::logic::route_batch(&config.route, chunk).decode(),
            );
        }
    });
    use super::bench_stateful::{route_alerts_before, time_aggregate, time_alert};
    let (aggregate_wasm_ns, aggregate_native_ns) = time_aggregate(sandbox, ticks, batch, rounds)?;
    let (alert_wasm_ns, alert_native_ns, alert_events_per_100k) =
        time_alert(sandbox, ticks, batch, rounds)?;
    let route_alerts_per_100k_before = route_alerts_before(ticks);
    Ok(StageBreakdown {
        aggregate_wasm_ns,
        aggregate_native_ns,
        alert_wasm_ns,
        alert_native_ns,
        alert_events_per_100k,
        route_alerts_per_100k_before,
        to_wit_ns,
        boundary_floor_ns,
        validate_wasm_ns,
        validate_native_ns,
        enrich_wasm_ns,
        enrich_native_ns,
        route_wasm_ns,
        route_native_ns,
    })
}

/// See [`StageBreakdown::boundary_floor_ns`]: `None` when the test guests' build directory is gone.
fn boundary_floor(
    sandbox: &Arc<Sandbox>,
    config: &crate::runtime::bindings::validate::ValidateConfig,
    views: &[stockpipe_model::TickRef<'_>],
    batch: usize,
    rounds: usize,
) -> anyhow::Result<Option<f64>> {
    use crate::runtime::{GuestComponent, StageInstance, StageKind, TEST_GUESTS_DIR, convert};
    let path = std::path::Path::new(TEST_GUESTS_DIR).join("stockpipe_guest_hostile.wasm");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let noop = GuestComponent::load(
        sandbox,
        StageKind::Validate,
        &bytes,
        path.display().to_string(),
    )?;
    let mut noop = StageInstance::new(sandbox.clone(), Arc::new(noop));
    let batches: Vec<_> = views
        .chunks(batch)
        .map(|chunk| {
            let columns = TickColumns::from_views(chunk);
            (chunk.len(), convert::tick_batch_owned(columns))
        })
        .collect();
    let mut failed = None;
    let floor = per_tick(views.len(), rounds, || {
        for (len, columns) in &batches {
            match noop.validate_columns(config, columns, *len) {
                Ok(verdicts) => {
                    std::hint::black_box(verdicts);
                }
                Err(f) => failed = Some(f),
            }
        }
    });
    match failed {
        // The simulated market never uses the tokens that make the hostile guest misbehave.
        Some(f) => anyhow::bail!("the no-op guest faulted: {f}"),
        None => Ok(Some(floor)),
    }
}

/// Best time of each chain over `rounds` passes of `ticks`, the two chains alternating round by
/// round so that a slow spell of the (shared) machine hits both rather than one.
fn time_chains(
    mut chains: [&mut dyn StageChain; 2],
    ticks: &[stockpipe_model::Tick],
    batch: usize,
    rounds: usize,
) -> [f64; 2] {
    let mut best = [f64::INFINITY; 2];
    for chain in &mut chains {
        // Warm-up: instantiation, first-touch of guest memory.
        for chunk in ticks.chunks(batch).take(2) {
            std::hint::black_box(chain.process(chunk));
        }
    }
    for _ in 0..rounds {
        for (chain, best) in chains.iter_mut().zip(&mut best) {
            let start = Instant::now();
            for chunk in ticks.chunks(batch) {
                std::hint::black_box(chain.process(chunk));
            }
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    best
}

/// The pipeline's decoder and the serde reference over the same messages, batch by batch, rounds
/// alternating; best of `rounds` each, ns per tick.
fn time_decoders(payloads: &[String], batch: usize, rounds: usize) -> (f64, f64) {
    use stockpipe_model::json::{decode_into, decode_tick};
    let scan = || {
        for chunk in payloads.chunks(batch) {
            let mut columns = TickColumns::with_capacity(chunk.len(), 5);
            for p in chunk {
                std::hint::black_box(decode_into(p.as_bytes(), 0, &mut columns).ok());
            }
            std::hint::black_box(columns);
        }
    };
    let serde = || {
        for chunk in payloads.chunks(batch) {
            let ticks: Vec<_> = chunk
                .iter()
                .filter_map(|p| decode_tick(p.as_bytes(), 0).ok())
                .collect();
            std::hint::black_box(TickColumns::from_ticks(ticks.iter()));
        }
    };
    let (mut best_scan, mut best_serde) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds.max(1) {
        best_scan = best_scan.min(per_tick(payloads.len(), 1, scan));
        best_serde = best_serde.min(per_tick(payloads.len(), 1, serde));
    }
    (best_scan, best_serde)
}

/// The pipeline's decode of `ticks` written in each built-in shape (see
/// [`GuestBench::decode_shapes_ns_per_tick`]); the answers are checked first (every tick decodes).
fn time_shapes(
    ticks: &[Tick],
    batch: usize,
    rounds: usize,
) -> std::collections::BTreeMap<&'static str, f64> {
    use stockpipe_model::json::{DecodeOptions, MessageTicks, decode_ticks_into};
    type Writer = fn(&Tick) -> serde_json::Value;
    let shapes: [(&str, Writer); 5] = [
        ("sample", |t| {
            serde_json::Value::Object(stockpipe_model::json::encode_tick(t))
        }),
        ("ticker_ltp", |t| kite::ticker(t, "ltp")),
        ("ticker_quote", |t| kite::ticker(t, "quote")),
        ("ticker_full", |t| kite::ticker(t, "full")),
        ("quote_api", kite::quote_api),
    ];
    let options = DecodeOptions::default();
    let mut out = std::collections::BTreeMap::new();
    let mut time = |name: &'static str, messages: Vec<String>, per_message: usize| {
        let decode = || {
            for chunk in messages.chunks(batch) {
                let mut columns = TickColumns::with_capacity(chunk.len() * per_message, 5);
                let mut extras = Vec::with_capacity(chunk.len() * per_message);
                for m in chunk {
                    let got = decode_ticks_into(
                        m.as_bytes(),
                        &options,
                        Some(1_621_936_800_000),
                        &mut columns,
                        &mut extras,
                    );
                    std::hint::black_box(got);
                }
                std::hint::black_box(columns);
            }
        };
        let n = messages.len() * per_message;
        let best = (0..rounds.max(1))
            .map(|_| per_tick(n, 1, decode))
            .fold(f64::INFINITY, f64::min);
        out.insert(name, best);
        // Every tick of every shape decodes (a refusal would be timed as a cheap one).
        let mut columns = TickColumns::default();
        let mut extras = Vec::new();
        for m in &messages {
            let got = decode_ticks_into(m.as_bytes(), &options, Some(0), &mut columns, &mut extras);
            assert!(
                !matches!(got, MessageTicks::One(Err(_))),
                "{name}: {got:?}: {m}"
            );
        }
        assert_eq!(columns.len(), n, "{name}");
    };
    for (name, write) in shapes {
        time(
            name,
            ticks.iter().map(|t| write(t).to_string()).collect(),
            1,
        );
    }
    let lists: Vec<String> = ticks
        .chunks(10)
        .filter(|c| c.len() == 10)
        .map(|c| {
            serde_json::Value::Array(c.iter().map(|t| kite::ticker(t, "full")).collect())
                .to_string()
        })
        .collect();
    time("ticker_full_lists_of_10", lists, 10);
    // The mapping path: Angel One SmartAPI's SnapQuote by the README's mapping.
    let mapping = angel_one_mapping();
    let angel: Vec<String> = ticks
        .iter()
        .map(|t| kite::angel_one(t).to_string())
        .collect();
    let mapped = DecodeOptions {
        mapping: Some(Arc::new(mapping)),
        ..DecodeOptions::default()
    };
    let n = angel.len();
    let decode = || {
        for chunk in angel.chunks(batch) {
            let mut columns = TickColumns::with_capacity(chunk.len(), 5);
            let mut extras = Vec::with_capacity(chunk.len());
            for m in chunk {
                let got =
                    decode_ticks_into(m.as_bytes(), &mapped, Some(0), &mut columns, &mut extras);
                std::hint::black_box(got);
            }
            assert_eq!(columns.len(), chunk.len(), "every mapped tick decodes");
        }
    };
    let best = (0..rounds.max(1))
        .map(|_| per_tick(n, 1, decode))
        .fold(f64::INFINITY, f64::min);
    out.insert("mapped_angel_one_snapquote", best);
    out
}

/// The README's Angel One mapping (data/feeds/angel_one.toml).
fn angel_one_mapping() -> stockpipe_model::json::mapping::Mapping {
    use stockpipe_model::json::mapping::{Mapping, MappingConfig};
    let text = include_str!("../../../data/feeds/angel_one.toml");
    let table: toml::Table = toml::from_str(text).expect("the example parses");
    let section = |name: &str| table["input"].get(name).and_then(|v| v.as_table()).cloned();
    let strings = |t: Option<toml::Table>| -> std::collections::BTreeMap<String, String> {
        t.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect()
    };
    Mapping::new(&MappingConfig {
        fields: strings(section("fields")),
        scale: section("scale")
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_float().unwrap_or(1.0)))
            .collect(),
        depth_level: strings(section("depth_level")),
        tokens: Default::default(),
    })
    .expect("the README's mapping is valid")
}

/// Ticks written as Kite's clients write them (for the decode benchmark).
mod kite {
    use serde_json::{Value, json};
    use stockpipe_model::Tick;
    use stockpipe_model::time::format_sample_micros;

    fn depth(t: &Tick) -> Value {
        let side = |levels: &[stockpipe_model::DepthLevel]| -> Value {
            levels
                .iter()
                .map(|l| json!({"quantity": l.quantity, "price": l.price, "orders": l.orders}))
                .collect()
        };
        json!({"buy": side(&t.depth_buy), "sell": side(&t.depth_sell)})
    }

    fn ohlc(t: &Tick) -> Value {
        json!({"open": t.open, "high": t.high, "low": t.low, "close": t.close})
    }

    /// KiteTicker's tick of `mode`, its times as `str(datetime)` writes them (IST, zone-less).
    pub fn ticker(t: &Tick, mode: &str) -> Value {
        let ist = |us: i64| format_sample_micros(us + 330 * 60_000_000)[..19].to_string();
        let mut v = json!({"tradable": true, "mode": mode, "instrument_token": t.instrument_token,
            "last_price": t.last_price});
        if mode != "ltp" {
            let o = v.as_object_mut().expect("an object");
            o.insert("last_traded_quantity".into(), json!(t.last_quantity));
            o.insert("average_traded_price".into(), json!(t.average_price));
            o.insert("volume_traded".into(), json!(t.volume));
            o.insert("total_buy_quantity".into(), json!(t.sell_quantity));
            o.insert("total_sell_quantity".into(), json!(t.sell_quantity));
            o.insert("ohlc".into(), ohlc(t));
            o.insert("change".into(), json!(t.change));
        }
        if mode == "full" {
            let o = v.as_object_mut().expect("an object");
            o.insert("last_trade_time".into(), json!(ist(t.timestamp_us)));
            o.insert("oi".into(), json!(0));
            o.insert("oi_day_high".into(), json!(0));
            o.insert("oi_day_low".into(), json!(0));
            o.insert("exchange_timestamp".into(), json!(ist(t.timestamp_us)));
            o.insert("depth".into(), depth(t));
        }
        v
    }

    /// Angel One SmartAPI's SnapQuote of the tick (prices in paise).
    pub fn angel_one(t: &Tick) -> Value {
        let paise = |x: Option<f64>| (x.unwrap_or(0.0) * 100.0).round() as i64;
        let side = |levels: &[stockpipe_model::DepthLevel]| -> Value {
            levels
                .iter()
                .map(|l| {
                    json!({"flag": 1, "quantity": l.quantity,
                    "price": (l.price * 100.0).round() as i64, "no of orders": l.orders})
                })
                .collect()
        };
        json!({"subscription_mode": 3, "exchange_type": 1, "token": t.instrument_token.to_string(),
            "sequence_number": 1, "exchange_timestamp": t.timestamp_us / 1000,
            "last_traded_price": paise(Some(t.last_price)), "subscription_mode_val": "SNAP_QUOTE",
            "last_traded_quantity": t.last_quantity, "average_traded_price": paise(t.average_price),
            "volume_trade_for_the_day": t.volume, "total_buy_quantity": t.sell_quantity,
            "total_sell_quantity": t.sell_quantity, "open_price_of_the_day": paise(t.open),
            "high_price_of_the_day": paise(t.high), "low_price_of_the_day": paise(t.low),
            "closed_price": paise(t.close), "last_traded_timestamp": t.timestamp_us / 1_000_000,
            "open_interest": 0, "upper_circuit_limit": 1, "lower_circuit_limit": 1,
            "best_5_buy_data": side(&t.depth_buy), "best_5_sell_data": side(&t.depth_sell)})
    }

    /// The quote API's quote of one instrument (full mode).
    pub fn quote_api(t: &Tick) -> Value {
        let ist = format_sample_micros(t.timestamp_us + 330 * 60_000_000)[..19].to_string();
        json!({"instrument_token": t.instrument_token, "timestamp": ist, "last_trade_time": ist,
            "last_price": t.last_price, "last_quantity": t.last_quantity,
            "buy_quantity": t.sell_quantity, "sell_quantity": t.sell_quantity, "volume": t.volume,
            "average_price": t.average_price, "oi": 0, "oi_day_high": 0, "oi_day_low": 0,
            "net_change": 0.5, "lower_circuit_limit": 1.0, "upper_circuit_limit": 9999.0,
            "ohlc": ohlc(t), "depth": depth(t)})
    }
}

pub fn guests(ticks: usize, batch: usize, rounds: usize) -> anyhow::Result<GuestBench> {
    let data = simulate(&SimulateOptions {
        instruments: 50,
        ticks,
        seed: 1,
        ..Default::default()
    });
    let config = StageConfigs::default();
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::default())?);
    let components = ChainComponents::embedded(&sandbox)?;
    let stages = stage_breakdown(&sandbox, &components, &config, &data, batch, rounds)?;
    let mut wasm = WasmChain::new(sandbox, components, config.clone());
    let mut native = NativeChain { config };
    // The two must agree before their speeds mean anything.
    let sample = &data[..data.len().min(batch)];
    anyhow::ensure!(
        wasm.process(sample) == native.process(sample),
        "wasm and native chains disagree"
    );
    let [wasm_s, native_s] = time_chains([&mut wasm, &mut native], &data, batch, rounds);
    let payloads: Vec<String> = data
        .iter()
        .map(|t| serde_json::Value::Object(stockpipe_model::json::encode_tick(t)).to_string())
        .collect();
    let (decode_ns, decode_serde_ns) = time_decoders(&payloads, batch, rounds);
    let decode_shapes_ns_per_tick = time_shapes(&data, batch, rounds);
    let n = data.len() as f64;
    Ok(GuestBench {
        bench: "guests",
        ticks: data.len(),
        batch,
        rounds,
        wasm_ticks_per_s: n / wasm_s,
        native_ticks_per_s: n / native_s,
        wasm_over_native: wasm_s / native_s,
        wasm_ns_per_tick: wasm_s * 1e9 / n,
        native_ns_per_tick: native_s * 1e9 / n,
        decode_ns_per_tick: decode_ns,
        decode_serde_ns_per_tick: decode_serde_ns,
        decode_speedup: decode_serde_ns / decode_ns,
        decode_shapes_ns_per_tick,
        stages,
    })
}

#[derive(Debug, Serialize)]
pub struct SwapBench {
    pub bench: &'static str,
    pub rounds: usize,
    pub batch: usize,
    /// Compile + world check + trial instance of a candidate (off the hot path).
    pub prepare_ms_p50: f64,
    /// Old and new chains side by side over the shadow ticks (off the hot path).
    pub shadow_ms_p50: f64,
    pub shadow_ticks: usize,
    /// What the pipeline loop loses at the batch boundary: the exchange itself plus the first
    /// batch's extra cost (a fresh instance) over a steady batch.
    pub pause_us_p50: f64,
    pub pause_us_max: f64,
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `stockpipe bench swap`: what a hot swap costs, and what part of it the loop feels.
pub fn swap(rounds: usize, batch: usize, shadow_ticks: usize) -> anyhow::Result<SwapBench> {
    use crate::chain::swap::ShadowReport;
    use crate::runtime::{GuestComponent, StageKind, embedded_component};
    let rounds = rounds.max(1);
    let data = simulate(&SimulateOptions {
        instruments: 50,
        ticks: batch.max(shadow_ticks) * 2,
        seed: 2,
        ..Default::default()
    });
    let config = StageConfigs::default();
    let sandbox = Arc::new(Sandbox::new(SandboxLimits::default())?);
    let components = ChainComponents::embedded(&sandbox)?;
    let mut chain = WasmChain::new(sandbox.clone(), components.clone(), config.clone());
    let (mut prepare, mut shadow, mut pauses) = (Vec::new(), Vec::new(), Vec::new());
    let batch_ticks = &data[..batch];
    for _ in 0..rounds {
        let started = Instant::now();
        let candidate = Arc::new(GuestComponent::load(
            &sandbox,
            StageKind::Validate,
            embedded_component(StageKind::Validate),
            "bench",
        )?);
        prepare.push(started.elapsed().as_secs_f64() * 1e3);

        let started = Instant::now();
        let shadow_set = &data[..shadow_ticks];
        let mut before = WasmChain::new(sandbox.clone(), components.clone(), config.clone());
        let mut after = WasmChain::new(
            sandbox.clone(),
            components.clone().with(candidate.clone()),
            config.clone(),
        );
        let (mut b, mut a) = (Vec::new(), Vec::new());
        for chunk in shadow_set.chunks(batch) {
            b.extend(before.process(chunk));
            a.extend(after.process(chunk));
        }
        std::hint::black_box(ShadowReport::compare(&b, &a));
        shadow.push(started.elapsed().as_secs_f64() * 1e3);

        // Steady batch, then exchange + first batch on the fresh instance.
        std::hint::black_box(chain.process(batch_ticks));
        let started = Instant::now();
        std::hint::black_box(chain.process(batch_ticks));
        let steady = started.elapsed();
        let started = Instant::now();
        chain.replace(candidate);
        std::hint::black_box(chain.process(batch_ticks));
        let with_swap = started.elapsed();
        pauses.push(with_swap.saturating_sub(steady).as_secs_f64() * 1e6);
    }
    let pause_max = pauses.iter().copied().fold(0.0, f64::max);
    Ok(SwapBench {
        bench: "swap",
        rounds,
        batch,
        prepare_ms_p50: p50(prepare),
        shadow_ms_p50: p50(shadow),
        shadow_ticks,
        pause_us_p50: p50(pauses),
        pause_us_max: pause_max,
    })
}
