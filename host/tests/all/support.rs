//! Shared helpers: sandboxes, components, ticks.

use std::path::PathBuf;
use std::sync::Arc;
use stockpipe::runtime::sandbox::{Sandbox, SandboxLimits};
use stockpipe::runtime::{GuestComponent, StageKind};

pub fn sandbox(limits: SandboxLimits) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(limits).expect("sandbox"))
}

/// Tight limits so that hostile guests are stopped quickly.
pub fn tight_limits() -> SandboxLimits {
    SandboxLimits {
        call_deadline: std::time::Duration::from_millis(100),
        memory_bytes: 32 << 20,
        epoch_tick: std::time::Duration::from_millis(5),
        fuel_per_call: None,
    }
}

pub fn hostile_component(sandbox: &Sandbox) -> Arc<GuestComponent> {
    let path =
        PathBuf::from(stockpipe::runtime::TEST_GUESTS_DIR).join("stockpipe_guest_hostile.wasm");
    let bytes = std::fs::read(&path).expect("the hostile guest is built by build.rs");
    Arc::new(
        GuestComponent::load(
            sandbox,
            StageKind::Validate,
            &bytes,
            path.display().to_string(),
        )
        .unwrap(),
    )
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The project's own sample (made by `stockpipe simulate`).
pub fn sample_payloads() -> Vec<Vec<u8>> {
    stockpipe::source::replay::read_input(&workspace().join("data/stock_data_sample.json"))
        .unwrap()
        .payloads
}

pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Every document in a lake directory.
pub fn lake_documents(dir: &std::path::Path) -> Vec<serde_json::Value> {
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .flat_map(|p| {
            std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A guests directory holding the built-in components, as `stockpipe run --guests` expects.
pub fn guests_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for kind in StageKind::ALL {
        std::fs::write(
            dir.path().join(kind.file_name()),
            stockpipe::runtime::embedded_component(kind),
        )
        .unwrap();
    }
    dir
}

pub fn hostile_bytes() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(stockpipe::runtime::TEST_GUESTS_DIR).join("stockpipe_guest_hostile.wasm"),
    )
    .unwrap()
}

/// Replaces a file the way a deployment should: write beside it, then rename over it.
pub fn install(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Ticks as NDJSON payloads, one per message.
pub fn simulated_payloads(ticks: usize, seed: u64) -> Vec<Vec<u8>> {
    use stockpipe::source::simulate::{SimulateOptions, render, simulate};
    let ticks = simulate(&SimulateOptions {
        instruments: 50,
        ticks,
        seed,
        ..Default::default()
    });
    render(&ticks, true)
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Logs to the test's output when RUST_LOG is set (e.g. `RUST_LOG=stockpipe=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Every message of the dead-letter topic: its payload and its headers.
pub async fn dead_letters(
    brokers: &str,
) -> Vec<(Vec<u8>, std::collections::HashMap<String, String>)> {
    topic_messages(brokers, "stock-stream.dlq").await
}

/// Every message of `topic` so far: its payload and headers.
pub async fn topic_messages(
    brokers: &str,
    topic: &str,
) -> Vec<(Vec<u8>, std::collections::HashMap<String, String>)> {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    let messages = tokio::task::spawn_blocking(move || {
        stockpipe::source::kafka::read_to_end(
            &stockpipe::source::kafka::Connection::plaintext(&brokers),
            &topic,
            std::time::Duration::from_secs(30),
        )
    })
    .await
    .unwrap()
    .unwrap();
    messages
        .iter()
        .map(|m| {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (m.payload().unwrap_or_default().to_vec(), headers)
        })
        .collect()
}

/// The same tick with another instrument token.
pub fn with_token(payload: &[u8], token: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["instrument_token"] = token.into();
    v.to_string().into_bytes()
}

/// The embedded cluster with the pipeline's topics: `partitions` for the input, one for the
/// dead-letter and alerts topics.
pub fn embedded_cluster(
    config: &stockpipe::config::Config,
    partitions: i32,
) -> stockpipe::source::embedded::EmbeddedKafka {
    stockpipe::source::embedded::EmbeddedKafka::for_pipeline(&config.kafka, partitions).unwrap()
}

/// A client for metadata and watermarks only: no group subscription, so dropping it never waits on
/// a rebalance (a subscribed consumer that is never polled can block in its drop).
pub fn probe(brokers: &str) -> rdkafka::consumer::BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap()
}

/// Runs the `stockpipe` binary and asserts that it succeeded.
pub fn stockpipe(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "stockpipe {args:?}: {out:?}");
    out
}

/// A run summary's committed offsets, summed over its partitions.
pub fn committed_total(summary: &serde_json::Value) -> i64 {
    summary["committed_offsets"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum()
}

/// The last line a command printed, as JSON (the commands end with a JSON summary).
pub fn last_json_line(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
}

/// A small deterministic generator (xorshift64) for the generated-input tests: a failure repeats.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Answers every bulk request with each of its items created (an Elasticsearch that works).
pub struct BulkCreated;

impl wiremock::Respond for BulkCreated {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let items = String::from_utf8_lossy(&request.body)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            / 2;
        let item = serde_json::json!({"index": {"_index": "stock-stream", "status": 201}});
        wiremock::ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"took": 1, "errors": false, "items": vec![item; items]}),
        )
    }
}

/// A scripted Elasticsearch: index templates acknowledged, every bulk answered by `bulk`.
pub async fn elasticsearch(bulk: impl wiremock::Respond + 'static) -> wiremock::MockServer {
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex("^/_index_template/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"acknowledged": true})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(bulk)
        .mount(&server)
        .await;
    server
}

/// Held by the tests that are timing-sensitive group protocol (rebalances, kills) and by the
/// heaviest others (the 100k-tick runs, the guest crates' cargo builds, chromium): on 2 cores,
/// two of them at once starve a revoking host, whose commit then meets the next rebalance. Async
/// tests `.lock().await` it; a plain test takes it with `blocking_lock()`.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The documents of `index` once refreshed (0 when the count cannot be read).
/// The hits of a match-all search of `index` (refreshed first), at most `size` of them.
pub async fn es_search(url: &str, index: &str, size: usize) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    client
        .post(format!("{url}/{index}/_refresh"))
        .send()
        .await
        .unwrap();
    let found: serde_json::Value = client
        .post(format!("{url}/{index}/_search"))
        .json(&serde_json::json!({"query": {"match_all": {}}, "size": size}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    found["hits"]["hits"].as_array().expect("hits").clone()
}

pub async fn es_count(url: &str, index: &str) -> u64 {
    let client = reqwest::Client::new();
    let _ = client
        .post(format!("{url}/{index}/_refresh"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = client
        .get(format!("{url}/{index}/_count"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    v["count"].as_u64().unwrap_or(0)
}

/// The committed offsets in the replay's checkpoint, summed.
fn checkpointed(lake: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(lake.join("_checkpoints/stock-stream")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).ok()?).ok())
        .map(|c| {
            c["committed"].as_object().map_or(0, |m| {
                m.values().filter_map(serde_json::Value::as_i64).sum()
            })
        })
        .sum()
}

/// Runs the `run --once --input` command `run` makes (writing into `lake`), kills it with
/// SIGKILL once the group has committed some of it, and runs it again. The second run must
/// resume every stateful stage's state at the committed offsets and read only what lies past
/// them (of `ticks` in all): its summary.
pub fn killed_once_committed_then_resumed(
    run: impl Fn() -> std::process::Command,
    lake: &std::path::Path,
    ticks: i64,
) -> serde_json::Value {
    let mut first = run()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while checkpointed(lake) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 90 s"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "it finished before the kill"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let done = checkpointed(lake);
    assert!(done > 0 && done < ticks, "{done}");
    let out = run().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("starts with an empty state"),
        "every partition resumed its state: {stderr}"
    );
    let summary = crate::support::last_json_line(&out);
    // It resumed at the checkpoint and read nothing below it: every partition's ticks below its
    // committed offset were in the topic before the consumer started.
    assert_eq!(
        summary["consumed"].as_i64().unwrap(),
        ticks - done,
        "resumed at {done}: {summary}"
    );
    summary
}
