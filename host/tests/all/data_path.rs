//! The data path's golden tests: the pipeline decodes with the tick scanner and encodes documents
//! by hand (`DocumentWriter`), and both are held to the reference they replaced — serde_json's
//! typed decoder and serde's `AcceptedDocument` — byte for byte, over the shipped sample and a
//! simulated 10,000-tick file: once in process over the chain, once end to end through
//! `run --once --input` and the lake.

use std::collections::HashMap;
use stockpipe::chain::{
    ChainComponents, GuestVersions, NativeChain, StageChain, StageConfigs, StageOutcome, WasmChain,
};
use stockpipe::runtime::sandbox::SandboxLimits;
use stockpipe::sink::SourceRef;
use stockpipe::sink::document::{AcceptedDocument, DocumentWriter};
use stockpipe_model::columns::TickColumns;
use stockpipe_model::json::{decode_into, decode_tick};
use stockpipe_model::{Enrichment, Tick, TickRef};

/// The sample's ticks and 10,000 simulated ones, as Kafka messages.
fn payloads() -> Vec<Vec<u8>> {
    let mut all = crate::support::sample_payloads();
    all.extend(crate::support::simulated_payloads(10_000, 7));
    all
}

/// The reference: serde_json's typed decoder, one `Tick` per message.
fn reference_ticks(payloads: &[Vec<u8>]) -> Vec<Tick> {
    payloads
        .iter()
        .map(|p| decode_tick(p, 0).unwrap())
        .collect()
}

#[test]
fn the_scanner_decodes_what_serde_decodes() {
    let payloads = payloads();
    let expected = TickColumns::from_ticks(reference_ticks(&payloads).iter());
    let mut columns = TickColumns::default();
    for p in &payloads {
        decode_into(p, 0, &mut columns).unwrap();
    }
    // Bit for bit (`-0.0` is not `0.0` here): floats' Debug is their shortest round trip.
    assert_eq!(format!("{columns:?}"), format!("{expected:?}"));
}

/// Every accepted tick's document, through the wasm chain, written both ways.
#[test]
fn documents_are_the_bytes_serde_writes() {
    let ticks = reference_ticks(&payloads());
    let sandbox = crate::support::sandbox(SandboxLimits::default());
    let components = ChainComponents::embedded(&sandbox).unwrap();
    let mut chain = WasmChain::new(sandbox, components, StageConfigs::default());
    let outcomes = chain.process(&ticks);
    let versions: GuestVersions = vec![
        ("validate", "sha256:ab\"c".into()),
        ("enrich", "embedded".into()),
        ("route", "v\u{1}2 é".into()),
    ];
    let writer = DocumentWriter::new(&versions);
    let mut out = Vec::new();
    let mut check = |tick: &TickRef<'_>, e: &Enrichment, offset: i64, reason: Option<&str>| {
        let source = SourceRef {
            topic: "stock-stream".into(),
            partition: 3,
            offset,
            tick: None,
        };
        let mut doc = AcceptedDocument::new(tick, e, &source, &versions);
        doc.alert_reason = reason;
        out.clear();
        writer.write(&mut out, tick, e, &source);
        if let Some(reason) = reason {
            out = DocumentWriter::with_alert(&out, reason);
        }
        let expected = serde_json::to_vec(&doc).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
    };
    let mut compared = 0;
    for (i, (tick, outcome)) in ticks.iter().zip(&outcomes).enumerate() {
        if let StageOutcome::Accepted { enrichment, .. } = outcome {
            check(&tick.view(), enrichment, i as i64, None);
            compared += 1;
        }
    }
    assert!(compared > 9_000, "{compared} accepted");
    // The values serde writes its own way: non-finite floats (null), -0.0, the extremes.
    let mut odd = stockpipe_model::example::tick();
    odd.instrument_token = u64::MAX;
    odd.volume = Some(i64::MIN);
    odd.change = Some(-0.0);
    odd.open = Some(1e300);
    odd.high = Some(5e-324);
    odd.close = None;
    odd.oi = Some(i64::MAX);
    odd.tradable = Some(true);
    odd.depth_sell.clear();
    let e = Enrichment {
        mid_price: f64::NAN,
        spread: Some(f64::INFINITY),
        spread_bps: Some(f64::NEG_INFINITY),
        book_imbalance: Some(-0.0),
        notional: Some(123_456_789_012_345_680_000.0),
        deviation_bps: None,
        hour: 23,
        minute: 59,
    };
    for reason in [
        None,
        Some("spread 51.2 bps"),
        Some("quote \" back\\ \n\u{7f}"),
    ] {
        check(&odd.view(), &e, i64::MAX, reason);
    }
}

/// End to end: the lake `run --once --input` writes holds, line for line, what the reference
/// decoder, the same logic and serde's document give for the input's ticks.
#[test]
fn the_lake_holds_the_reference_documents() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = payloads();
    let input = dir.path().join("ticks.ndjson");
    let mut text = Vec::new();
    for p in &payloads {
        text.extend_from_slice(p);
        text.push(b'\n');
    }
    std::fs::write(&input, text).unwrap();
    let lake = dir.path().join("lake");
    crate::support::stockpipe(&[
        "run",
        "--once",
        "--input",
        input.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    // The reference outcome of every tick, by event id (a content hash: equal ticks, equal
    // documents).
    let ticks = reference_ticks(&payloads);
    let outcomes = NativeChain::default().process(&ticks);
    let expected: HashMap<String, (&Tick, Enrichment)> = ticks
        .iter()
        .zip(&outcomes)
        .filter_map(|(t, o)| match o {
            StageOutcome::Accepted { enrichment, .. } => Some((
                format!("{:016x}", stockpipe_model::event_id(&t.view())),
                (t, *enrichment),
            )),
            StageOutcome::Refused { .. } => None,
        })
        .collect();
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, StageOutcome::Accepted { .. }))
        .count();
    let mut lines = 0;
    for file in crate::support::walk(&lake.join("stock-stream")) {
        if file.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            lines += 1;
            let doc: serde_json::Value = serde_json::from_str(line).unwrap();
            let (tick, enrichment) = expected[doc["event_id"].as_str().unwrap()];
            let source = SourceRef {
                topic: doc["source"]["topic"].as_str().unwrap().into(),
                partition: doc["source"]["partition"].as_i64().unwrap() as i32,
                offset: doc["source"]["offset"].as_i64().unwrap(),
                tick: None,
            };
            let versions: GuestVersions = ["validate", "enrich", "route"]
                .into_iter()
                .map(|stage| (stage, doc["guest_versions"][stage].as_str().unwrap().into()))
                .collect();
            let reference = AcceptedDocument::new(&tick.view(), &enrichment, &source, &versions);
            assert_eq!(line, serde_json::to_string(&reference).unwrap());
        }
    }
    assert_eq!(lines, accepted);
}
