//! `stockpipe bench pipeline`: Kafka → host → Elasticsearch, measured end to end.
//!
//! The broker is the embedded mock cluster, or with `--brokers` an external one (Tansu, Kafka):
//! each run then creates its own topics (a fresh suffix) and consumer group there, so runs never
//! see each other's messages or offsets. The Elasticsearch API is [`SinkEndpoint`], a minimal
//! scripted endpoint in this process that acknowledges every document at once and notes when it
//! arrived — so the figures are the host's, not an emulator's (noida-db indexes ~1–2k docs/s and
//! would be what is measured). Three figures, each one JSON line:
//! - `throughput`: a backlog of N ticks, `run --once` to the end: ticks/s;
//! - `paced`: the host as a child process, fed R ticks/s for D seconds by a simulated market in
//!   this process through the embedded broker (also here): produce → Elasticsearch latency
//!   p50/p99 (the tick's timestamp is the clock at produce time), the host's peak RSS and CPU;
//! - `python_baseline` (with `--python SCRIPT`): the original design's consumer (kafka-python, one
//!   `es.index` per message) against the same broker and the same endpoint.

use crate::config::Config;
use crate::source::embedded::{self, EmbeddedKafka};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the endpoint saw.
#[derive(Debug, Default)]
struct Seen {
    documents: u64,
    requests: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Seconds from each document's `timestamp` to its arrival.
    latencies: Vec<f64>,
}

/// An Elasticsearch-API endpoint that acknowledges everything: `_bulk`, `PUT/POST
/// /{index}/_doc/{id}` (what a per-document client sends), index templates, `GET /`.
#[derive(Clone, Default)]
pub struct SinkEndpoint {
    seen: Arc<Mutex<Seen>>,
}

fn es_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    // Elasticsearch's clients check that they talk to Elasticsearch.
    h.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn now_us() -> i64 {
    crate::clock::unix_now_us()
}

/// The µs timestamp of a document, read without parsing the document.
fn document_time_us(document: &[u8]) -> Option<i64> {
    crate::sink::document::DocumentParts::split(document)?.time_us()
}

impl SinkEndpoint {
    fn note(&self, documents: &[&[u8]]) {
        let arrived = now_us();
        let mut seen = self.seen.lock().expect("endpoint lock");
        let now = Instant::now();
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        seen.requests += 1;
        seen.documents += documents.len() as u64;
        for d in documents {
            if let Some(at) = document_time_us(d) {
                seen.latencies.push((arrived - at) as f64 / 1e6);
            }
        }
    }

    pub fn documents(&self) -> u64 {
        self.seen.lock().expect("endpoint lock").documents
    }

    fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().expect("endpoint lock"))
    }

    fn router(self) -> Router {
        Router::new()
            .route(
                "/",
                get(|| async {
                    (
                        es_headers(),
                        r#"{"name":"bench","cluster_name":"bench","version":{"number":"8.15.3","build_flavor":"default"},"tagline":"You Know, for Search"}"#,
                    )
                }),
            )
            .route("/_bulk", any(bulk))
            .route("/{index}/_bulk", any(bulk))
            .fallback(any(other))
            .with_state(self)
    }

    /// Serves on a free port of 127.0.0.1; returns the base URL.
    pub async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = self.clone().router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}"))
    }
}

async fn bulk(State(endpoint): State<SinkEndpoint>, body: Bytes) -> Response {
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let documents: Vec<&[u8]> = lines.chunks(2).filter_map(|p| p.get(1).copied()).collect();
    endpoint.note(&documents);
    let mut answer = String::with_capacity(32 + documents.len() * 40);
    answer.push_str(r#"{"took":1,"errors":false,"items":["#);
    for i in 0..documents.len() {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str(r#"{"index":{"status":201,"result":"created"}}"#);
    }
    answer.push_str("]}");
    (es_headers(), answer).into_response()
}

async fn other(
    State(endpoint): State<SinkEndpoint>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path.starts_with("/_index_template/") {
        return (es_headers(), r#"{"acknowledged":true}"#).into_response();
    }
    if (method == axum::http::Method::PUT || method == axum::http::Method::POST)
        && (path.contains("/_doc") || path.contains("/_create"))
    {
        endpoint.note(&[&body]);
        let answer = r#"{"_index":"stock-stream","_id":"x","_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1}"#;
        return (StatusCode::CREATED, es_headers(), answer).into_response();
    }
    (
        StatusCode::NOT_FOUND,
        es_headers(),
        format!(r#"{{"error":"no {method} {path} here"}}"#),
    )
        .into_response()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[derive(Debug, Serialize)]
pub struct ThroughputBench {
    pub bench: &'static str,
    /// `embedded` (librdkafka's mock cluster, in this process) or `external`.
    pub broker: &'static str,
    pub ticks: usize,
    pub partitions: i32,
    /// From `run --once` starting (consumer join included) to every sink acknowledged.
    pub wall_seconds: f64,
    pub ticks_per_s: f64,
    /// From the first to the last document the endpoint received.
    pub sink_ticks_per_s: f64,
    pub bulk_requests: u64,
    pub indexed: u64,
    /// CPU time of this process during the run (the host, the embedded broker and the endpoint)
    /// per tick, and how many cores that kept busy on average.
    pub cpu_us_per_tick: f64,
    pub cores_busy: f64,
}

/// The broker one benchmark runs against, with the topic names and group it uses there.
pub struct BenchBroker {
    /// Kept alive for the run (the embedded cluster stops when dropped).
    embedded: Option<EmbeddedKafka>,
    pub brokers: String,
    pub kind: &'static str,
    pub topic: String,
    pub dead_letter_topic: String,
    pub alerts_topic: String,
    pub group_id: String,
}

impl BenchBroker {
    /// The embedded mock cluster (no `external`) with `partitions` for the tick topic, or an external
    /// broker where topics named `<configured>-bench-<random>` are created.
    pub async fn start(external: Option<&str>, partitions: i32) -> anyhow::Result<Self> {
        let k = Config::default().kafka;
        let Some(brokers) = external else {
            let embedded = EmbeddedKafka::for_pipeline(&k, partitions)?;
            return Ok(Self {
                brokers: embedded.bootstrap_servers(),
                embedded: Some(embedded),
                kind: "embedded",
                topic: k.topic,
                dead_letter_topic: k.dead_letter_topic,
                alerts_topic: k.alerts_topic,
                group_id: k.group_id,
            });
        };
        let suffix = format!("bench-{:08x}", crate::random_u64() as u32);
        let named = |t: &str| format!("{t}-{suffix}");
        let broker = Self {
            embedded: None,
            brokers: brokers.to_string(),
            kind: "external",
            topic: named(&k.topic),
            dead_letter_topic: named(&k.dead_letter_topic),
            alerts_topic: named(&k.alerts_topic),
            group_id: named(&k.group_id),
        };
        create_topics(
            brokers,
            &[
                (broker.topic.as_str(), partitions),
                (broker.dead_letter_topic.as_str(), 1),
                (broker.alerts_topic.as_str(), 1),
            ],
        )
        .await?;
        Ok(broker)
    }

    /// Deletes the topics this run created on an external broker (the embedded cluster goes with
    /// the run). A failure is only logged: the figures are already measured. A run that stops on an
    /// error leaves its `…-bench-<hex>` topics behind.
    pub async fn remove_topics(&self) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        if self.embedded.is_some() {
            return;
        }
        let admin: Result<AdminClient<DefaultClientContext>, _> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create();
        let topics = [
            self.topic.as_str(),
            self.dead_letter_topic.as_str(),
            self.alerts_topic.as_str(),
        ];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let outcome = match admin {
            Ok(admin) => admin
                .delete_topics(&topics, &options)
                .await
                .map_err(|e| e.to_string())
                .and_then(|results| {
                    let failed: Vec<String> = results
                        .into_iter()
                        .filter_map(|r| r.err().map(|(topic, code)| format!("{topic}: {code}")))
                        .collect();
                    if failed.is_empty() {
                        Ok(())
                    } else {
                        Err(failed.join(", "))
                    }
                }),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = outcome {
            tracing::warn!(brokers = %self.brokers, %why, "could not delete the benchmark's topics");
        }
    }

    /// `config` pointed at this broker's topics and group.
    pub fn configure(&self, config: &mut Config) {
        config.kafka.brokers = self.brokers.clone();
        config.kafka.topic = self.topic.clone();
        config.kafka.dead_letter_topic = self.dead_letter_topic.clone();
        config.kafka.alerts_topic = self.alerts_topic.clone();
        config.kafka.group_id = self.group_id.clone();
    }

    /// The same as environment overrides, for a host started as a child process.
    pub fn env(&self) -> [(&'static str, &str); 4] {
        [
            ("STOCKPIPE_KAFKA_TOPIC", &self.topic),
            ("STOCKPIPE_KAFKA_DEAD_LETTER_TOPIC", &self.dead_letter_topic),
            ("STOCKPIPE_KAFKA_ALERTS_TOPIC", &self.alerts_topic),
            ("STOCKPIPE_KAFKA_GROUP_ID", &self.group_id),
        ]
    }
}

/// Creates topics on an external broker (one replica each); a topic that exists already is fine.
async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    use anyhow::Context;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .with_context(|| format!("an admin client for {brokers}"))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .with_context(|| format!("creating the benchmark's topics on {brokers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic} on {brokers}: {code}"),
        }
    }
    Ok(())
}

/// A backlog of `ticks` simulated ticks through `run --once` into the endpoint.
pub async fn throughput(ticks: usize, external: Option<&str>) -> anyhow::Result<ThroughputBench> {
    let data = crate::source::simulate::simulate(&crate::source::simulate::SimulateOptions {
        instruments: 50,
        ticks,
        seed: 5,
        ..Default::default()
    });
    let payloads: Vec<Vec<u8>> = data
        .iter()
        .map(crate::source::simulate::tick_json)
        .collect();
    let mut config = Config::default();
    let partitions = embedded::partitions_for_replay(config.kafka.embedded_partitions, &payloads);
    let broker = BenchBroker::start(external, partitions).await?;
    broker.configure(&mut config);
    let brokers = broker.brokers.clone();
    let producer =
        crate::source::kafka::producer(&crate::source::kafka::Connection::plaintext(&brokers))?;
    match &broker.embedded {
        Some(cluster) => cluster.replay(&producer, &payloads).await?,
        None => {
            let max = crate::source::replay::Pace::Max;
            crate::source::replay::produce_all(&producer, &broker.topic, &payloads, max, |_| {})
                .await?
        }
    };
    let endpoint = SinkEndpoint::default();
    let lake = tempfile_dir()?;
    config.elasticsearch.url = endpoint.start().await?;
    config.lake.url = lake.display().to_string();
    let registry = Arc::new(crate::chain::swap::GuestRegistry::default());
    let started = Instant::now();
    let cpu_before = cpu_seconds("self");
    let summary = crate::service::run(
        config,
        &brokers,
        true,
        registry,
        None,
        std::future::pending(),
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu_before;
    let seen = endpoint.take();
    broker.remove_topics().await;
    let _ = std::fs::remove_dir_all(&lake);
    anyhow::ensure!(
        summary.counts.indexed == ticks as u64,
        "indexed {} of {ticks}",
        summary.counts.indexed
    );
    let sink_span = match (seen.first, seen.last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    Ok(ThroughputBench {
        bench: "pipeline_throughput",
        broker: broker.kind,
        ticks,
        partitions,
        wall_seconds: wall,
        ticks_per_s: ticks as f64 / wall,
        sink_ticks_per_s: seen.documents as f64 / sink_span,
        bulk_requests: seen.requests,
        indexed: summary.counts.indexed,
        cpu_us_per_tick: cpu / ticks as f64 * 1e6,
        cores_busy: cpu / wall,
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("stockpipe-bench-{:x}", crate::random_u64()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[derive(Debug, Serialize)]
pub struct PacedBench {
    pub bench: &'static str,
    pub broker: &'static str,
    pub rate: f64,
    pub seconds: f64,
    pub indexed_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Peak resident set of the host process (VmHWM); the broker and the simulated producer run
    /// in the benchmark's process, not the host's.
    pub peak_rss_mib: f64,
    /// Resident set at the end of the run.
    pub rss_mib: f64,
    /// Cores the host process kept busy on average (1.0 = one core).
    pub host_cores_busy: f64,
    /// The host's CPU per indexed tick, user + kernel.
    pub host_cpu_us_per_tick: f64,
    /// Of which in the kernel (the lake's file writes are most of it).
    pub host_kernel_us_per_tick: f64,
    pub bulk_max_age_ms: u64,
}

/// CPU seconds (user + system) the process has used, from /proc (clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// CPU seconds the process has used in user space and in the kernel.
fn cpu_split(pid: &str) -> (f64, f64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (f64::NAN, f64::NAN);
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = text[text.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user / 100.0, system / 100.0),
        _ => (f64::NAN, f64::NAN),
    }
}

fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `stockpipe run --simulate rate` as a child process for `seconds`, into the endpoint.
pub async fn paced(
    exe: &std::path::Path,
    rate: f64,
    seconds: f64,
    bulk_max_age_ms: u64,
    external: Option<&str>,
) -> anyhow::Result<PacedBench> {
    let endpoint = SinkEndpoint::default();
    let url = endpoint.start().await?;
    let lake = tempfile_dir()?;
    // The broker (unless external) and the simulated market live in this process, so the child
    // is the host alone.
    let broker = BenchBroker::start(external, Config::default().kafka.embedded_partitions).await?;
    let brokers = broker.brokers.clone();
    let feed = tokio::spawn(crate::source::replay::feed_simulated(
        crate::source::kafka::producer(&crate::source::kafka::Connection::plaintext(&brokers))?,
        broker.topic.clone(),
        rate,
        crate::source::simulate::SimulateOptions {
            instruments: 20,
            seed: 9,
            ..Default::default()
        },
    ));
    let mut child = tokio::process::Command::new(exe)
        .args(["run", "--brokers", &brokers, "--es-url", &url])
        .arg("--lake")
        .arg(&lake)
        .envs(broker.env())
        .env(
            "STOCKPIPE_ELASTICSEARCH_BULK_MAX_AGE_MS",
            bulk_max_age_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("a running child");
    // Start counting once the first documents arrive (the host is up, the group joined).
    let up = Instant::now();
    while endpoint.documents() == 0 {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(60),
            "no document reached the endpoint within 60 s"
        );
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the host exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    endpoint.take();
    let started = Instant::now();
    let before = cpu_split(&pid.to_string());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let seen = endpoint.take();
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu_split(&pid.to_string());
    let kernel = after.1 - before.1;
    let cpu = after.0 - before.0 + kernel;
    let per_tick = |s: f64| s * 1e6 / seen.documents.max(1) as f64;
    let peak = status_kib(pid, "VmHWM:").unwrap_or(f64::NAN) / 1024.0;
    let rss = status_kib(pid, "VmRSS:").unwrap_or(f64::NAN) / 1024.0;
    let _ = child.start_kill();
    let _ = child.wait().await;
    feed.abort();
    let fed = feed.await;
    broker.remove_topics().await;
    if let Ok(Err(e)) = fed {
        return Err(e.context("the simulated feed failed"));
    }
    let _ = std::fs::remove_dir_all(&lake);
    let mut latencies = seen.latencies;
    latencies.sort_by(f64::total_cmp);
    Ok(PacedBench {
        bench: "pipeline_paced",
        broker: broker.kind,
        rate,
        seconds: elapsed,
        indexed_per_s: seen.documents as f64 / elapsed,
        latency_p50_ms: quantile(&latencies, 0.5) * 1e3,
        latency_p99_ms: quantile(&latencies, 0.99) * 1e3,
        latency_max_ms: latencies.last().copied().unwrap_or(f64::NAN) * 1e3,
        peak_rss_mib: peak,
        rss_mib: rss,
        host_cores_busy: cpu / elapsed,
        host_cpu_us_per_tick: per_tick(cpu),
        host_kernel_us_per_tick: per_tick(kernel),
        bulk_max_age_ms,
    })
}

#[derive(Debug, Serialize)]
pub struct BaselineBench {
    pub bench: &'static str,
    pub broker: &'static str,
    pub script: String,
    pub messages: u64,
    pub seconds: f64,
    pub ticks_per_s: f64,
    /// The host's steady `pipeline_throughput` (sink_ticks_per_s) over this, same broker and endpoint.
    pub host_over_baseline: Option<f64>,
}

/// Runs the per-document Python consumer over `messages` ticks of a fresh backlog.
pub async fn python_baseline(
    script: &std::path::Path,
    messages: usize,
    host_ticks_per_s: Option<f64>,
    external: Option<&str>,
) -> anyhow::Result<BaselineBench> {
    let data = crate::source::simulate::simulate(&crate::source::simulate::SimulateOptions {
        instruments: 50,
        ticks: messages,
        seed: 5,
        ..Default::default()
    });
    let payloads: Vec<Vec<u8>> = data
        .iter()
        .map(crate::source::simulate::tick_json)
        .collect();
    let broker = BenchBroker::start(external, 3).await?;
    let brokers = broker.brokers.clone();
    let producer =
        crate::source::kafka::producer(&crate::source::kafka::Connection::plaintext(&brokers))?;
    crate::source::replay::produce_all(
        &producer,
        &broker.topic,
        &payloads,
        crate::source::replay::Pace::Max,
        |_| {},
    )
    .await?;
    let endpoint = SinkEndpoint::default();
    let url = endpoint.start().await?;
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            "--brokers",
            &brokers,
            "--es-url",
            &url,
            "--topic",
            &broker.topic,
        ])
        .args(["--count", &messages.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await;
    broker.remove_topics().await;
    let out = out?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        out.status
    );
    let report: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap_or_default(),
    )?;
    let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
    let indexed = endpoint.documents();
    anyhow::ensure!(
        indexed >= messages as u64,
        "the baseline indexed {indexed} of {messages}"
    );
    let rate = messages as f64 / seconds;
    Ok(BaselineBench {
        bench: "python_baseline",
        broker: broker.kind,
        script: script.display().to_string(),
        messages: messages as u64,
        seconds,
        ticks_per_s: rate,
        host_over_baseline: host_ticks_per_s.map(|h| h / rate),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documents_timestamp_is_read_in_place() {
        let doc = br#"{"event_id":"00000000000000ab","timestamp":"2026-11-28T10:00:00.000001Z","last_price":1.0,"mid_price":1.5}"#;
        assert_eq!(document_time_us(doc), Some(1_795_860_000_000_001));
        assert_eq!(document_time_us(b"{}"), None);
    }

    #[test]
    fn quantiles_of_sorted_samples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
