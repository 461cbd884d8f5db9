//! The aggregate stage end to end: `run --once --input` of a 100,000-tick simulated file with
//! `[aggregate] enabled`, whose bars equal, to the last digit of every field, a computation that
//! shares no code with the guest (DuckDB over the lake's tick documents, `bars_reference.py`);
//! and the same run killed with SIGKILL halfway and started again, whose bars are byte for byte
//! those of the run in one go (state restored from its checkpoint at the committed offset: no
//! tick counted twice, none lost).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const TICKS: usize = 100_000;

/// `run --once --input` with the aggregate stage, on an embedded cluster of `partitions`.
fn run(input: &Path, lake: &Path, partitions: u32) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockpipe"));
    command
        .env(
            "STOCKPIPE_KAFKA_EMBEDDED_PARTITIONS",
            partitions.to_string(),
        )
        .args(["run", "--once", "--input"])
        .arg(input)
        .arg("--lake")
        .arg(lake)
        .env("RUST_LOG", "warn,rdkafka=off")
        .env("STOCKPIPE_AGGREGATE_ENABLED", "true")
        .env("STOCKPIPE_AGGREGATE_CHECKPOINT_MS", "250")
        // Segments of ~2 MB or 1 s (bars fill theirs slowly): offsets are committed (and
        // checkpointed) as the run goes.
        .env("STOCKPIPE_LAKE_ROLL_BYTES", "2000000")
        .env("STOCKPIPE_LAKE_ROLL_SECONDS", "1");
    command
}

/// Every bar line of the lake, keyed by its id; a bar stored twice fails.
fn bar_lines(lake: &Path) -> BTreeMap<String, String> {
    let mut bars = BTreeMap::new();
    for file in crate::support::walk(&lake.join("stock-bars")) {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let doc: Value = serde_json::from_str(line).unwrap();
            let id = doc["bar_id"].as_str().unwrap().to_string();
            let again = bars.insert(id.clone(), line.to_string());
            assert!(again.is_none(), "bar {id} stored twice");
        }
    }
    bars
}

fn reference(lake: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/bars_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(lake)
        .args(["60", "5000", "20"])
        .output()
        .expect("python3 with duckdb (pip install duckdb; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A JSON number or null as the f64 bits it reads as (null: NaN's), so that equality is exact.
fn bits(v: &Value) -> Option<u64> {
    match v {
        Value::Null => None,
        v => Some(v.as_f64().expect("a number").to_bits()),
    }
}

#[test]
fn bars_equal_an_independent_computation_and_survive_a_kill() {
    let _heavy = crate::support::HEAVY.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("day.ndjson");
    let mut text = crate::support::simulated_payloads(TICKS, 20).join(&b'\n');
    text.push(b'\n');
    std::fs::write(&input, &text).unwrap();

    // In one go, over three partitions (three watermarks).
    let whole = dir.path().join("whole");
    let out = run(&input, &whole, 3).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = crate::support::last_json_line(&out);
    assert_eq!(summary["consumed"], TICKS, "{summary}");
    let bars = bar_lines(&whole);
    assert_eq!(summary["bars_closed"], bars.len(), "{summary}");
    assert_eq!(
        summary["dead_lettered"], 0,
        "the simulator's ticks are in order: none late"
    );

    let expected = reference(&whole);
    assert!(expected.len() > 3_000, "{} bars", expected.len());
    assert_eq!(expected.len(), bars.len());
    let floats = [
        "open",
        "high",
        "low",
        "close",
        "vwap",
        "last_mid_price",
        "last_spread",
        "log_return",
        "volatility",
    ];
    let mut nulls = BTreeMap::<&str, usize>::new();
    for want in &expected {
        let id = format!("{}-{}", want["instrument_token"], want["start_us"]);
        let got: Value = serde_json::from_str(
            bars.get(&id)
                .unwrap_or_else(|| panic!("bar {id} is missing")),
        )
        .unwrap();
        assert_eq!(got["source"]["partition"], want["partition"], "{id}");
        assert_eq!(got["traded_quantity"], want["traded_quantity"], "{id}");
        assert_eq!(got["tick_count"], want["tick_count"], "{id}");
        for field in floats {
            assert_eq!(
                bits(&got[field]),
                bits(&want[field]),
                "{id} {field}: {} against the reference's {}",
                got[field],
                want[field]
            );
            if got[field].is_null() {
                *nulls.entry(field).or_default() += 1;
            }
        }
    }
    // Every instrument's first bar has no return, its second no volatility; nothing else is null.
    assert_eq!(nulls.get("log_return"), Some(&50), "{nulls:?}");
    assert_eq!(nulls.get("volatility"), Some(&100), "{nulls:?}");
    assert_eq!(nulls.len(), 2, "{nulls:?}");

    // The offline forecast reads the bars: a bar-wide step, the next bar after the last closed.
    let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "ml",
            "forecast",
            "--bars",
            "--instrument",
            "busiest",
            "--lake",
        ])
        .arg(&whole)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = crate::support::last_json_line(&out);
    assert_eq!(report["step_seconds"], 60, "{report}");
    assert_eq!(report["forecasts"], 10, "{report}");
    let object = whole.join(report["lake_object"].as_str().unwrap());
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(object)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let token = first["instrument_token"].as_u64().unwrap();
    let last_start = expected
        .iter()
        .filter(|b| b["instrument_token"] == token)
        .map(|b| b["start_us"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(
        first["forecast_timestamp"],
        stockpipe_model::time::format_rfc3339_micros(last_start + 60_000_000),
        "{first}"
    );

    // Killed once some of it is committed, then the same command again, over the same three
    // partitions. The reference is the run in one go.
    let bars = bar_lines(&whole);
    let lake = dir.path().join("lake");
    let summary = crate::support::killed_once_committed_then_resumed(
        || run(&input, &lake, 3),
        &lake,
        TICKS as i64,
    );
    assert_eq!(summary["dead_lettered"], 0, "none late: {summary}");
    let resumed = bar_lines(&lake);
    assert_eq!(resumed.len(), bars.len());
    for (id, line) in &bars {
        assert_eq!(resumed.get(id), Some(line), "bar {id}");
    }
}

/// The aggregate stage's fault path end to end: an aggregate guest that traps on instrument 13
/// (the hostile test guest) costs only those ticks. Each trap restores every partition's snapshot
/// into a fresh instance and retries the batch tick by tick, so only the poison ticks go to the
/// dead-letter topic; every tick still reaches the lake, and the run completes.
#[test]
fn a_faulting_aggregate_guest_costs_only_its_poison_ticks() {
    let _heavy = crate::support::HEAVY.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 3_000;
    let payloads: Vec<Vec<u8>> = crate::support::simulated_payloads(N, 33)
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            if i % 97 != 5 {
                return payload;
            }
            let mut tick: Value = serde_json::from_slice(&payload).unwrap();
            tick["instrument_token"] = 13.into();
            serde_json::to_vec(&tick).unwrap()
        })
        .collect();
    let poisoned = (0..N).filter(|i| i % 97 == 5).count();
    let input = dir.path().join("poisoned.ndjson");
    let mut text = payloads.join(&b'\n');
    text.push(b'\n');
    std::fs::write(&input, &text).unwrap();
    let guests = crate::support::guests_dir();
    crate::support::install(
        guests.path(),
        "aggregate.wasm",
        &crate::support::hostile_bytes(),
    );
    let lake = dir.path().join("lake");
    let out = run(&input, &lake, 3)
        .arg("--guests")
        .arg(guests.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = crate::support::last_json_line(&out);
    assert_eq!(summary["consumed"], N, "{summary}");
    assert_eq!(summary["dead_lettered"], poisoned, "{summary}");
    assert_eq!(
        summary["bars_closed"].as_u64().unwrap_or(0),
        0,
        "the hostile guest closes none: {summary}"
    );
    assert!(
        stderr.contains(
            "the aggregate guest faulted on a batch; restoring its state and retrying tick by tick"
        ),
        "{stderr}"
    );
    assert_eq!(
        crate::support::lake_documents(&lake.join("stock-stream")).len(),
        N,
        "every tick in the lake"
    );
}
