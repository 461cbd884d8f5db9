//! Failover across hosts on a broker that evicts a dead member: `stockpipe broker` (the mock
//! cluster in a process of its own), two `stockpipe run` hosts in one group writing to one
//! Elasticsearch endpoint and one lake; one host is killed with SIGKILL mid-stream. The survivor
//! takes the dead host's partitions, and the lake and Elasticsearch hold every tick once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::ResponseTemplate;

/// Kills the process on drop (a failed test leaves nothing running).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `stockpipe broker` with `partitions`, and its bootstrap address.
fn broker(partitions: i32) -> (Process, String) {
    let mut broker = Process(
        Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["broker", "--partitions", &partitions.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(broker.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&first).unwrap();
    let brokers = answer["bootstrap_servers"].as_str().unwrap().to_string();
    (broker, brokers)
}

fn host(brokers: &str, es: &str, lake: &Path, log: &Path) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--brokers", brokers, "--es-url", es, "--lake"])
            .arg(lake)
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("STOCKPIPE_LOG_FORMAT", "json")
            .env("STOCKPIPE_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("STOCKPIPE_LAKE_ROLL_SECONDS", "1")
            .env("STOCKPIPE_ELASTICSEARCH_BULK_MAX_AGE_MS", "100")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// (partition, offset) → how many lake lines hold it.
fn lake_positions(lake: &Path) -> BTreeMap<(i64, i64), usize> {
    let mut seen = BTreeMap::new();
    for doc in crate::support::lake_documents(lake) {
        let at = (
            doc["source"]["partition"].as_i64().unwrap(),
            doc["source"]["offset"].as_i64().unwrap(),
        );
        *seen.entry(at).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_s_partitions_move_to_the_survivor() {
    const TICKS: usize = 6_000;
    let (_broker, brokers) = broker(6);
    let es = crate::support::elasticsearch(crate::support::BulkCreated).await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let doomed = host(&brokers, &es.uri(), &lake, &dir.path().join("a.log"));
    let survivor = host(&brokers, &es.uri(), &lake, &dir.path().join("b.log"));
    // Both members in the group before the ticks come.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let producer = stockpipe::source::kafka::producer(&brokers).unwrap();
    let payloads = crate::support::simulated_payloads(TICKS, 11);
    let feed = tokio::spawn(async move {
        stockpipe::source::replay::produce_all(
            &producer,
            "stock-stream",
            &payloads,
            stockpipe::source::replay::Pace::Rate(1_500.0),
            |_| {},
        )
        .await
        .unwrap()
        .sent
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    drop(doomed); // SIGKILL
    assert_eq!(feed.await.unwrap(), TICKS as u64);
    // The survivor takes the dead host's partitions (after its session times out) and catches up.
    let deadline = Instant::now() + Duration::from_secs(120);
    while lake_positions(&lake).len() < TICKS {
        assert!(
            Instant::now() < deadline,
            "{} of {TICKS} ticks in the lake",
            lake_positions(&lake).len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let caught_up = killed_at.elapsed();
    let mut survivor = survivor;
    assert!(
        Command::new("kill")
            .args(["-TERM", &survivor.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = survivor.0.wait().unwrap();
    assert!(status.success(), "{status}");
    // Every tick once in the lake: each position one line, none missing.
    let positions = lake_positions(&lake);
    let twice: Vec<_> = positions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written twice: {twice:?}");
    assert_eq!(positions.len(), TICKS);
    let per_partition: BTreeSet<i64> = positions.keys().map(|(p, _)| *p).collect();
    assert_eq!(per_partition.len(), 6, "{per_partition:?}");
    // Every tick in Elasticsearch (ids are the ticks' positions: a re-sent one overwrites itself).
    let mut ids = BTreeSet::new();
    for request in es.received_requests().await.unwrap() {
        if request.url.path() != "/_bulk" {
            continue;
        }
        let body = String::from_utf8(request.body.clone()).unwrap();
        for action in body.lines().step_by(2) {
            let v: serde_json::Value = serde_json::from_str(action).unwrap();
            // The hosts' own counters go to stockpipe-metrics through the same endpoint.
            if v["index"]["_index"] == "stock-stream" {
                ids.insert(v["index"]["_id"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(ids.len(), TICKS);
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(caught_up < Duration::from_secs(90), "{caught_up:?}\n{log}");
}

/// `run --once` whose group holds partitions elsewhere (a member that cannot commit: its
/// Elasticsearch is down) says every few seconds which partitions it waits for and which member
/// holds them, instead of waiting without a word. The mock cluster cannot describe a group
/// (DescribeGroups is not among its APIs), so here the note says that instead of the member; the
/// decoding of a member's assignment is tested on its own (`source::kafka`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_names_the_member_it_waits_for() {
    let (_broker, brokers) = broker(2);
    let es = crate::support::elasticsearch(ResponseTemplate::new(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let producer = stockpipe::source::kafka::producer(&brokers).unwrap();
    let payloads = crate::support::simulated_payloads(400, 12);
    stockpipe::source::replay::produce_all(
        &producer,
        "stock-stream",
        &payloads,
        stockpipe::source::replay::Pace::Max,
        |_| {},
    )
    .await
    .unwrap();
    let stuck = host(
        &brokers,
        &es.uri(),
        &dir.path().join("lake-a"),
        &dir.path().join("a.log"),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = dir.path().join("b.log");
    let _once = Process(
        Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--once", "--brokers", &brokers, "--lake"])
            .arg(dir.path().join("lake-b"))
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("STOCKPIPE_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = format!("-{} (", stuck.0.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let note = text
            .lines()
            .find(|l| l.contains("waiting for partitions another member"));
        if let Some(note) = note {
            let v: serde_json::Value = serde_json::from_str(note).unwrap();
            let held_by = v["held_by"].as_str().unwrap();
            assert!(
                held_by.contains(&pid) || held_by.contains("could not be described"),
                "{note}"
            );
            // The partitions it does not hold (both, before its own assignment arrives).
            assert!(
                ["[0]", "[1]", "[0, 1]"].contains(&v["partitions"].as_str().unwrap()),
                "{note}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no note within 60 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
