//! `run --input` of a file larger than the embedded cluster keeps (5 MiB a partition): streamed
//! beside the pipeline, every tick in the lake once; killed with SIGKILL halfway, the same command
//! resumes where the sinks had acknowledged (from the checkpoint beside the lake) instead of
//! starting over, and the lake still holds every tick once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

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
    crate::support::killed_once_committed_then_resumed(|| run(&input, &lake), &lake, TICKS as i64);
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
