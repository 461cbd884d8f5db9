//! No input can panic the host: generated and mutated messages — depths, sizes, strings, numbers
//! and timestamps at their limits, flipped and cut bytes — through decode → the wasm chain (and the
//! same logic native) → the document. Every message ends accepted (its document valid JSON that
//! reads back) or refused with a code; a bounded, seeded count, so that a failure repeats.

use crate::support::{Rng, sandbox};
use stockpipe::chain::WasmChain;
use stockpipe::chain::{ChainComponents, GuestVersions, NativeChain, StageChain, StageOutcome};
use stockpipe::runtime::sandbox::SandboxLimits;
use stockpipe::sink::SourceRef;
use stockpipe::sink::document::AcceptedDocument;
use stockpipe::source::simulate::{SimulateOptions, simulate, tick_json};
use stockpipe_model::json::decode_tick;

/// A number in `0..n`.
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// Picks from `from`.
fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[below(rng, from.len())]
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "5e-324",
    "1e400",
    "-1e400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "0.1",
    "-253.95",
    "1.5",
    "\"NaN\"",
    "NaN",
    "Infinity",
    "null",
    "true",
    "\"12\"",
    "[]",
    "{}",
];

const TIMESTAMPS: &[&str] = &[
    "\"0000-01-01 00:00:00\"",
    "\"1900-01-01 00:00:00\"",
    "\"9999-12-31 23:59:59.999999\"",
    "\"2017-02-30 07:35:05\"",
    "\"2017-06-20 24:00:00\"",
    "\"2017-06-20T07:35:05.284824+23:59\"",
    "\"2017-06-20T07:35:05.2848241234567Z\"",
    "\"2017-06-20 07:35:05.\"",
    "\"\"",
    "\"\\u0000\"",
    "\"é𝄞\"",
    "9223372036854775807",
    "-9223372036854775808",
    "-1",
    "0",
    "1e30",
];

const FIELDS: &[&str] = &[
    "last_price",
    "volume",
    "sell_quantity",
    "last_quantity",
    "change",
    "average_price",
    "open",
    "high",
    "low",
    "close",
    "instrument_token",
];

/// A message: a simulated tick, then one of a few kinds of damage.
fn message(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(base).unwrap();
    let text_of = |v: &serde_json::Value| v.to_string();
    match below(rng, 8) {
        // A number field at a limit (or of the wrong type).
        0 | 1 => {
            let field = pick(rng, FIELDS);
            let text = text_of(&v).replacen(
                &format!("\"{field}\":{}", v[field]),
                &format!("\"{field}\":{}", pick(rng, NUMBERS)),
                1,
            );
            return text.into_bytes();
        }
        // A book of any depth, its levels' numbers at limits now and then.
        2 => {
            let depth = [0, 1, 5, 254, 255, 256, 257, 1000, 5000][below(rng, 9)];
            let price = if below(rng, 4) == 0 {
                pick(rng, NUMBERS)
            } else {
                "100.5"
            };
            let level = format!(r#"{{"price":{price},"orders":1,"quantity":2}}"#);
            let side = format!("[{}]", vec![level.as_str(); depth].join(","));
            let text = text_of(&v);
            let at = text.find("\"depth\":").unwrap();
            let key = if below(rng, 2) == 0 { "buy" } else { "sell" };
            let other = if key == "buy" { "sell" } else { "buy" };
            let depth_json = format!(r#""depth":{{"{key}":{side},"{other}":[]}}}}"#);
            return format!("{}{depth_json}", &text[..at]).into_bytes();
        }
        // A timestamp at a limit or malformed.
        3 => {
            let text = text_of(&v).replacen(
                &format!("\"timestamp\":{}", v["timestamp"]),
                &format!("\"timestamp\":{}", pick(rng, TIMESTAMPS)),
                1,
            );
            return text.into_bytes();
        }
        // Long strings where numbers go, extra fields, a huge key.
        4 => {
            let long = "x".repeat([10, 10_000, 1_000_000][below(rng, 3)]);
            v[pick(rng, FIELDS)] = long.clone().into();
            v[long] = 1.into();
        }
        // Depth of the wrong shape.
        5 => {
            v["depth"] = [
                serde_json::json!(null),
                serde_json::json!([]),
                serde_json::json!({"buy": {}, "sell": []}),
                serde_json::json!({"buy": [1, 2], "sell": []}),
                serde_json::json!({"buy": [{"price": 1}], "sell": []}),
            ][below(rng, 5)]
            .clone();
        }
        _ => {}
    }
    let mut bytes = v.to_string().into_bytes();
    // Byte damage: flips, cuts, invalid UTF-8, NULs.
    for _ in 0..below(rng, 4) {
        if bytes.is_empty() {
            break;
        }
        let at = below(rng, bytes.len());
        match below(rng, 4) {
            0 => bytes[at] ^= 1 << below(rng, 8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, [0xff, 0xc3, 0x00, b'"'][below(rng, 4)]),
            _ => {
                let end = (at + below(rng, 50)).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                bytes.splice(at..at, piece);
            }
        }
    }
    bytes
}

#[test]
fn no_generated_or_mutated_message_panics_the_host() {
    let configs =
        stockpipe::config::Config::default().stage_configs(stockpipe::clock::unix_now_us());
    let sandbox = sandbox(SandboxLimits::default());
    let mut wasm = WasmChain::new(
        sandbox.clone(),
        ChainComponents::embedded(&sandbox).unwrap(),
        configs.clone(),
    );
    let mut native = NativeChain { config: configs };
    let bases: Vec<Vec<u8>> = simulate(&SimulateOptions {
        ticks: 200,
        ..Default::default()
    })
    .iter()
    .map(tick_json)
    .collect();
    let source = SourceRef {
        topic: "stock-stream".into(),
        partition: 0,
        offset: 0,
        tick: None,
    };
    let versions: GuestVersions = vec![("validate", "v".into())];
    let mut rng = Rng(0x5eed_0f17);
    let (mut accepted, mut refused, mut undecodable) = (0, 0, 0);
    let mut codes = std::collections::BTreeSet::new();
    for _batch in 0..40 {
        let messages: Vec<Vec<u8>> = (0..250)
            .map(|i| message(&mut rng, &bases[i % bases.len()]))
            .collect();
        let mut ticks = Vec::new();
        for m in &messages {
            match decode_tick(m, 0) {
                Ok(t) => ticks.push(t),
                Err(e) => {
                    assert!(!e.code.is_empty() && !e.message.is_empty());
                    codes.insert(e.code);
                    undecodable += 1;
                }
            }
        }
        let outcomes = wasm.process(&ticks);
        assert_eq!(outcomes.len(), ticks.len());
        assert_eq!(native.process(&ticks).len(), ticks.len());
        for (tick, outcome) in ticks.iter().zip(outcomes) {
            match outcome {
                StageOutcome::Accepted { enrichment, .. } => {
                    accepted += 1;
                    let doc = AcceptedDocument::new(&tick.view(), &enrichment, &source, &versions);
                    let bytes = serde_json::to_vec(&doc).unwrap();
                    let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(back["instrument_token"], tick.instrument_token);
                }
                StageOutcome::Refused { refusal, .. } => {
                    assert!(!refusal.code.is_empty());
                    refused += 1;
                }
            }
        }
    }
    // The generator reaches every outcome, and the refusals the issue named.
    assert!(
        accepted > 500 && refused > 100 && undecodable > 2_000,
        "{accepted} {refused} {undecodable}"
    );
    for code in [
        "malformed-json",
        "wrong-type",
        "too-deep",
        "bad-timestamp",
        "missing-field",
    ] {
        assert!(codes.contains(code), "{code} never seen: {codes:?}");
    }
}
