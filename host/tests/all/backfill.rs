//! `run --input` of a file larger than the embedded cluster keeps (5 MiB a partition): streamed
//! beside the pipeline, every tick in the lake once; killed with SIGKILL halfway, the same command
//! resumes where the sinks had acknowledged (from the checkpoint beside the lake) instead of
//! starting over, and the lake still holds every tick once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TICKS: usize = 40_000;

fn run(input: &Path, lake: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockpipe"));
    command
        .args(["run", "--once", "--input"])
        .arg(input)
        .arg("--lake")
        .arg(lake)
        .env("RUST_LOG", "warn,rdkafka=off")
        // Three partitions: ~28 MB of ticks where the embedded broker keeps 5 MiB of each; a
        // resumed run must start every partition at its own committed offset.
        .env("STOCKPIPE_KAFKA_EMBEDDED_PARTITIONS", "3")
        // Segments of ~2 MB: offsets are committed (and checkpointed) as the run goes.
        .env("STOCKPIPE_LAKE_ROLL_BYTES", "2000000");
    command
}

/// (partition, offset) → lake lines holding it.
fn lake_positions(lake: &Path) -> BTreeMap<(i64, i64), usize> {
    let mut seen = BTreeMap::new();
    for doc in crate::support::lake_documents(&lake.join("stock-stream")) {
        let at = (
            doc["source"]["partition"].as_i64().unwrap(),
            doc["source"]["offset"].as_i64().unwrap(),
        );
        *seen.entry(at).or_default() += 1;
    }
    seen
}

/// The committed offsets in the run's checkpoint, summed.
fn checkpointed(lake: &Path) -> Option<i64> {
    let dir = lake.join("_checkpoints/stock-stream");
    // The checkpoint itself, not a temporary file a kill left beside it.
    let file = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })?;
    let checkpoint: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    Some(
        checkpoint["committed"]
            .as_object()?
            .values()
            .filter_map(serde_json::Value::as_i64)
            .sum(),
    )
}

#[test]
fn a_file_larger_than_the_broker_keeps_is_streamed_and_resumed_after_a_kill() {
    let _heavy = crate::support::HEAVY.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("day.ndjson");
    let payloads = crate::support::simulated_payloads(TICKS, 91);
    let mut text = payloads.join(&b'\n');
    text.push(b'\n');
    std::fs::write(&input, &text).unwrap();
    assert!(text.len() > 5 << 21, "{} bytes", text.len());

    // Whole, in one go.
    let whole = dir.path().join("whole");
    let out = run(&input, &whole).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = crate::support::last_json_line(&out);
    assert_eq!(summary["consumed"], TICKS, "{summary}");
    assert_eq!(summary["offsets_lost"], 0, "{summary}");
    let positions = lake_positions(&whole);
    assert_eq!(positions.len(), TICKS);
    assert!(positions.values().all(|&n| n == 1));

    // Killed once some of it is committed, then the same command again.
    let lake = dir.path().join("lake");
    let mut first = run(&input, &lake)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpointed(&lake).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        assert!(
            first.try_wait().unwrap().is_none(),
            "it finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let done = checkpointed(&lake).unwrap();
    assert!(done > 0 && done < TICKS as i64, "{done}");

    let out = run(&input, &lake).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = crate::support::last_json_line(&out);
    assert_eq!(
        summary["consumed"],
        TICKS as i64 - done,
        "it resumed at the checkpoint ({done}), not from the start: {summary}"
    );
    let positions = lake_positions(&lake);
    assert_eq!(positions.len(), TICKS);
    let twice: Vec<_> = positions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    assert_eq!(
        positions,
        lake_positions(&whole),
        "the same offsets as the run in one go"
    );
}
