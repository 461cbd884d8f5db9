//! `stockpipe bench guests`: the same ticks through the three components and through the same
//! `logic.rs` linked natively, batch by batch, printed as one JSON line. Numbers, not verdicts.

use crate::chain::{ChainComponents, NativeChain, StageChain, StageConfigs, WasmChain};
use crate::runtime::sandbox::{Sandbox, SandboxLimits};
use crate::simulate::{SimulateOptions, simulate};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

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
    /// JSON decode (the host's cost before the guests), per tick.
    pub decode_ns_per_tick: f64,
}

fn time_chain(
    chain: &mut dyn StageChain,
    ticks: &[stockpipe_model::Tick],
    batch: usize,
    rounds: usize,
) -> f64 {
    // Warm-up: instantiation, first-touch of guest memory.
    for chunk in ticks.chunks(batch).take(2) {
        std::hint::black_box(chain.process(chunk));
    }
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        for chunk in ticks.chunks(batch) {
            std::hint::black_box(chain.process(chunk));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
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
    let mut wasm = WasmChain::new(sandbox, components, config.clone());
    let mut native = NativeChain { config };
    // The two must agree before their speeds mean anything.
    let sample = &data[..data.len().min(batch)];
    anyhow::ensure!(
        wasm.process(sample) == native.process(sample),
        "wasm and native chains disagree"
    );
    let wasm_s = time_chain(&mut wasm, &data, batch, rounds);
    let native_s = time_chain(&mut native, &data, batch, rounds);
    let payloads: Vec<String> = data
        .iter()
        .map(|t| serde_json::Value::Object(stockpipe_model::json::encode_tick(t)).to_string())
        .collect();
    let start = Instant::now();
    for p in &payloads {
        std::hint::black_box(stockpipe_model::json::decode_tick(p.as_bytes(), 0).ok());
    }
    let decode_s = start.elapsed().as_secs_f64();
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
        decode_ns_per_tick: decode_s * 1e9 / n,
    })
}
