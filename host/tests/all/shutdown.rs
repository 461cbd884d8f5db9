//! Stopping: SIGTERM is a graceful stop like Ctrl-C; the whole stop takes one grace period, not
//! one per step; a stop requested while start-up waits on a silent Elasticsearch gets through.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::ResponseTemplate;

/// `docker stop` and Kubernetes send SIGTERM: the binary flushes the lake, commits and prints its
/// summary, exit code 0.
#[test]
fn sigterm_stops_the_binary_gracefully() {
    let lake = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "run",
            "--simulate",
            "400",
            "--simulate-seed",
            "3",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--lake")
        .arg(lake.path())
        .env("RUST_LOG", "info")
        .env("STOCKPIPE_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the HTTP API, then until the live view shows ticks accepted.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let started = Instant::now();
    let addr = loop {
        let line = lines.next().expect("the host exited early").unwrap();
        if line.contains("HTTP API listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["addr"].as_str().unwrap().to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never started");
    };
    let logs = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    while live_accepted(&addr) < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "nothing accepted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let logs = logs.join().unwrap().join("\n");
    assert!(out.status.success(), "{:?}\n{logs}", out.status);
    assert!(logs.contains("SIGTERM"), "{logs}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let accepted = summary["accepted"].as_u64().unwrap();
    assert!(accepted > 100, "{summary}");
    // What was buffered for the lake was stored before the exit, not dropped.
    assert_eq!(summary["lake_lines"].as_u64(), Some(accepted), "{summary}");
    assert_eq!(
        crate::support::lake_documents(lake.path()).len() as u64,
        accepted
    );
}

/// `totals.accepted` of the live view at `addr` (0 while it does not answer).
fn live_accepted(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let request = format!("GET /api/live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut answer).is_err()
    {
        return 0;
    }
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["totals"]["accepted"].as_u64())
        .unwrap_or(0)
}

/// An Elasticsearch that takes bulks and never answers: the stop ends one grace period after it
/// was asked for (the batch in hand, the sinks' last acknowledgements and the final commit share
/// it), not one grace per step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stop_takes_one_grace_period() {
    let server = crate::support::elasticsearch(
        ResponseTemplate::new(200).set_delay(Duration::from_secs(120)),
    )
    .await;
    let grace = Duration::from_secs(3);
    let mut config = stockpipe::config::Config::default();
    config.elasticsearch.url = server.uri();
    config.elasticsearch.bulk_max_age_ms = 50;
    // A full pipe: the loop waits inside the batch's step when the stop comes.
    config.elasticsearch.bulk_max_docs = 10;
    config.elasticsearch.max_in_flight = 1;
    config.elasticsearch.shutdown_grace_ms = grace.as_millis() as u64;
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    let cluster = crate::support::embedded_cluster(&config, 1);
    let brokers = cluster.bootstrap_servers();
    let producer = stockpipe::source::kafka::producer(
        &stockpipe::source::kafka::Connection::plaintext(&brokers),
    )
    .unwrap();
    cluster
        .replay(&producer, &crate::support::sample_payloads())
        .await
        .unwrap();
    let registry = Arc::new(stockpipe::chain::swap::GuestRegistry::default());
    let asked = Arc::new(std::sync::Mutex::new(None));
    let asked_at = asked.clone();
    let watched = registry.clone();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        stockpipe::service::run(config, &brokers, false, registry, None, async move {
            while watched.processed.load(std::sync::atomic::Ordering::Relaxed) < 100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            *asked_at.lock().unwrap() = Some(Instant::now());
        }),
    )
    .await
    .expect("the run ends after the stop")
    .unwrap();
    let took = asked.lock().unwrap().unwrap().elapsed();
    assert!(
        took < grace + grace / 2,
        "the stop took {took:?} for a grace of {grace:?}"
    );
    assert_eq!(summary.counts.indexed, 0);
    assert!(
        summary.committed_offsets.values().all(|o| o.0 == 0),
        "{summary:?}"
    );
}

/// Start-up puts the index templates; an Elasticsearch that accepts the connection and never
/// answers held a stop for 90 s. The stop gets through at once and the run ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_start_up_gets_through() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let mut config = stockpipe::config::Config::default();
    config.elasticsearch.url = url;
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    let cluster = crate::support::embedded_cluster(&config, 1);
    let registry = Arc::new(stockpipe::chain::swap::GuestRegistry::default());
    let started = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        stockpipe::service::run(
            config,
            &cluster.bootstrap_servers(),
            false,
            registry.clone(),
            None,
            tokio::time::sleep(Duration::from_secs(1)),
        ),
    )
    .await
    .expect("the stop got through")
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!registry.started.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(summary.counts.consumed, 0);
    drop(silent);
}
