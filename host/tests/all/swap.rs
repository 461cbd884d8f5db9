//! Hot swap and hostile guests, through the whole service over the mock cluster.

use crate::support::{
    guests_dir, hostile_bytes, install, lake_documents, sample_payloads, simulated_payloads,
    with_token,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stockpipe::chain::swap::GuestRegistry;
use stockpipe::config::Config;
use stockpipe::pipeline::RunSummary;
use stockpipe::position::Offsets;
use stockpipe::runtime::{StageKind, component_version, embedded_component};
use stockpipe::sink::kafka::headers;
use stockpipe::source::embedded::EmbeddedKafka;
use stockpipe::source::kafka as kafka_source;
use stockpipe::source::replay::{Pace, produce_all};

struct Running {
    _cluster: EmbeddedKafka,
    brokers: String,
    registry: Arc<GuestRegistry>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<RunSummary>>>,
}

impl Running {
    fn start(config: Config) -> Self {
        Self::start_with(config, None)
    }

    fn start_with(config: Config, http: Option<tokio::net::TcpListener>) -> Self {
        crate::support::init_logging();
        // librdkafka's mock broker keeps at most 5 MiB per partition: six partitions and a paced
        // producer keep the whole stream within reach of the consumer.
        let cluster = crate::support::embedded_cluster(&config, 6);
        let brokers = cluster.bootstrap_servers();
        let registry = Arc::new(GuestRegistry::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (b, r) = (brokers.clone(), registry.clone());
        let task = tokio::spawn(async move {
            stockpipe::service::run(config, &b, false, r, http, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            _cluster: cluster,
            brokers,
            registry,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Waits for `done`, failing at once (with the service's error) if the service stops first.
    async fn wait(&mut self, what: &str, secs: u64, mut done: impl FnMut(&Self) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            if self.task.as_ref().unwrap().is_finished() {
                let result = self.task.take().unwrap().await.unwrap();
                panic!("the service stopped while waiting for {what}: {result:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what} ({} ticks processed; {:#?})",
                self.processed(),
                self.registry.view().history
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn processed(&self) -> u64 {
        self.registry.processed.load(Ordering::Relaxed)
    }

    async fn produce(&self, payloads: Vec<Vec<u8>>, pace: Pace) -> tokio::task::JoinHandle<u64> {
        let producer =
            kafka_source::producer(&kafka_source::Connection::plaintext(&self.brokers)).unwrap();
        tokio::spawn(async move {
            produce_all(&producer, "stock-stream", &payloads, pace, |_| {})
                .await
                .unwrap()
                .sent
        })
    }

    /// Stops the service (the broker stays up for inspection).
    async fn stop(&mut self) -> RunSummary {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap()
    }

    fn events(&self, outcome: &str) -> Vec<stockpipe::chain::swap::SwapEvent> {
        self.registry
            .view()
            .history
            .into_iter()
            .filter(|e| e.outcome == outcome)
            .collect()
    }
}

fn config(guests: &std::path::Path, lake: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.guests.dir = Some(guests.to_path_buf());
    config.lake.url = lake.display().to_string();
    config.kafka.batch_max = 500;
    config.kafka.batch_wait_ms = 20;
    config.route.change_alert_pct = Some(0.0);
    config.route.spread_alert_bps = Some(0.0);
    config
}

fn validate_versions(docs: &[serde_json::Value]) -> BTreeMap<(i64, i64), String> {
    docs.iter()
        .map(|d| {
            (
                (
                    d["source"]["partition"].as_i64().unwrap(),
                    d["source"]["offset"].as_i64().unwrap(),
                ),
                d["guest_versions"]["validate"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_a_continuous_stream_processes_every_tick_once_with_one_version() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut running = Running::start(config(guests.path(), lake.path()));
    let total = 100_000u64;
    let producer = running
        .produce(simulated_payloads(total as usize, 11), Pace::Rate(10_000.0))
        .await;
    running
        .wait("20,000 ticks processed", 120, |running| {
            running.processed() >= 20_000
        })
        .await;
    install(guests.path(), "validate.wasm", &hostile_bytes());
    running
        .wait("all ticks processed", 180, |running| {
            running.processed() >= total
        })
        .await;
    assert_eq!(producer.await.unwrap(), total);
    let swapped = running.events("swapped");
    let summary = running.stop().await;

    let old = component_version(embedded_component(StageKind::Validate));
    let new = component_version(&hostile_bytes());
    assert_eq!(swapped.len(), 1, "{swapped:#?}");
    assert_eq!(
        (swapped[0].stage, swapped[0].trigger.as_str()),
        ("validate", "watch")
    );
    assert_eq!(swapped[0].to_version.as_deref(), Some(new.as_str()));
    assert_eq!(
        (summary.counts.consumed, summary.counts.accepted),
        (total, total),
        "{summary:?}"
    );

    let docs = lake_documents(lake.path());
    assert_eq!(docs.len() as u64, total);
    let versions = validate_versions(&docs);
    assert_eq!(versions.len() as u64, total, "every tick exactly once");
    let old_count = versions.values().filter(|v| **v == old).count();
    let new_count = versions.values().filter(|v| **v == new).count();
    assert_eq!(
        old_count + new_count,
        total as usize,
        "every tick stamped with one of the two versions"
    );
    assert!(
        old_count >= 20_000 && new_count > 0,
        "old {old_count}, new {new_count}"
    );
    // Within a partition the versions never interleave: old, then new.
    let mut last: HashMap<i64, &str> = HashMap::new();
    for ((partition, _), version) in &versions {
        let before = last.insert(*partition, version.as_str());
        assert!(
            !(before == Some(new.as_str()) && version == &old),
            "old version after the swap in partition {partition}"
        );
    }
    assert_eq!(
        summary.committed_offsets.values().map(|o| o.0).sum::<i64>() as u64,
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_the_wrong_world_is_refused_and_the_old_one_keeps_serving() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut running = Running::start(config(guests.path(), lake.path()));
    let total = 3_000u64;
    let producer = running
        .produce(simulated_payloads(total as usize, 12), Pace::Rate(3_000.0))
        .await;
    running
        .wait("500 ticks processed", 60, |running| {
            running.processed() >= 500
        })
        .await;
    install(
        guests.path(),
        "validate.wasm",
        embedded_component(StageKind::Enrich),
    );
    running
        .wait("the refusal", 60, |running| {
            !running.events("refused").is_empty()
        })
        .await;
    running
        .wait("all ticks processed", 60, |running| {
            running.processed() >= total
        })
        .await;
    producer.await.unwrap();
    let refused = running.events("refused");
    assert!(running.events("swapped").is_empty());
    let summary = running.stop().await;
    assert!(
        refused[0]
            .reason
            .contains("does not implement stockpipe:pipeline/validate@0.2.0"),
        "{refused:#?}"
    );
    let old = component_version(embedded_component(StageKind::Validate));
    let docs = lake_documents(lake.path());
    assert_eq!((docs.len() as u64, summary.counts.accepted), (total, total));
    assert!(validate_versions(&docs).values().all(|v| *v == old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_that_keeps_faulting_is_rolled_back() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.kafka.batch_max = 100;
    config.guests.rollback_after_faults = 2;
    let mut running = Running::start(config);
    // Swap while nothing flows: the shadow run has nothing to compare, so the candidate passes.
    running
        .wait("the service to start", 60, |r| {
            r.registry.started.load(Ordering::Acquire)
        })
        .await;
    install(guests.path(), "validate.wasm", &hostile_bytes());
    running
        .wait("the swap", 60, |running| {
            !running.events("swapped").is_empty()
        })
        .await;
    // Clean ticks first, then ticks the new version traps on (instrument 13) in every batch.
    let mut payloads = simulated_payloads(2_000, 13);
    for (i, p) in payloads.iter_mut().enumerate().skip(500) {
        if i % 50 == 0 {
            *p = with_token(p, 13);
        }
    }
    let poisoned = (500..2_000).filter(|i| i % 50 == 0).count() as u64;
    let producer = running.produce(payloads, Pace::Max).await;
    running
        .wait("the rollback", 60, |running| {
            !running.events("rolled-back").is_empty()
        })
        .await;
    running
        .wait("all ticks processed", 60, |running| {
            running.processed() >= 2_000
        })
        .await;
    producer.await.unwrap();
    let rolled = running.events("rolled-back");
    let brokers = running.brokers.clone();
    let summary = running.stop().await;

    let old = component_version(embedded_component(StageKind::Validate));
    let new = component_version(&hostile_bytes());
    assert_eq!(rolled.len(), 1, "{rolled:#?}");
    assert_eq!(
        (
            rolled[0].from_version.as_str(),
            rolled[0].to_version.as_deref()
        ),
        (new.as_str(), Some(old.as_str()))
    );
    assert!(
        rolled[0].reason.contains("faulted in 3 batches"),
        "{}",
        rolled[0].reason
    );
    // Every tick exactly once: in the lake, or dead-lettered by the failing version.
    assert_eq!(summary.counts.consumed, 2_000);
    assert_eq!(summary.counts.accepted + summary.counts.rejected, 2_000);
    assert!(
        (3..poisoned).contains(&summary.counts.rejected),
        "{summary:?}"
    );
    let docs = lake_documents(lake.path());
    let versions = validate_versions(&docs);
    assert_eq!(versions.len() as u64, summary.counts.accepted);
    assert!(versions.values().any(|v| *v == new) && versions.values().any(|v| *v == old));
    let dead = crate::support::dead_letters(&brokers).await;
    assert_eq!(dead.len() as u64, summary.counts.rejected);
    for (_, hdrs) in &dead {
        assert_eq!(hdrs[headers::REASON_CODE], "trap", "{hdrs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_lose_only_their_own_ticks() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    install(guests.path(), "validate.wasm", &hostile_bytes());
    let mut config = config(guests.path(), lake.path());
    config.guests.call_deadline_ms = 200;
    config.guests.memory_mib = 32;
    let mut running = Running::start(config);
    let mut payloads = sample_payloads();
    let expected = [
        (13u64, "trap"),
        (14, "deadline-exceeded"),
        (15, "memory-exhausted"),
        (16, "broken-contract"),
        (17, "other"),
    ];
    for (i, (token, _)) in expected.iter().enumerate() {
        let hostile = with_token(&payloads[i], *token);
        payloads.insert(i * 17 + 3, hostile);
    }
    let producer = running.produce(payloads, Pace::Max).await;
    producer.await.unwrap();
    running
        .wait("all ticks processed", 60, |running| {
            running.processed() >= 105
        })
        .await;
    let brokers = running.brokers.clone();
    let summary = running.stop().await;
    assert_eq!(
        (
            summary.counts.consumed,
            summary.counts.accepted,
            summary.counts.rejected,
            summary.counts.dead_lettered
        ),
        (105, 100, 5, 5)
    );
    assert_eq!(lake_documents(lake.path()).len(), 100);
    let dead = crate::support::dead_letters(&brokers).await;
    let mut codes = BTreeSet::new();
    for (payload, hdrs) in &dead {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let token = v["instrument_token"].as_u64().unwrap();
        let want = expected.iter().find(|(t, _)| *t == token).unwrap().1;
        assert_eq!(hdrs[headers::REASON_CODE], want, "token {token}: {hdrs:?}");
        assert_eq!(
            hdrs[headers::GUEST_VERSION],
            component_version(&hostile_bytes())
        );
        if token == 17 {
            // The guest tried the environment, a file and a socket: all refused.
            let reason = &hdrs[headers::REASON];
            assert!(
                reason.contains("env=Err(")
                    && reason.contains("file=Err(")
                    && reason.contains("net=Err("),
                "{reason}"
            );
        }
        codes.insert(want);
    }
    assert_eq!(codes.len(), 5);
}

/// A bare HTTP/1.1 exchange: (status, JSON body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_lists_guests_and_reloads_on_request() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.guests.watch = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut running = Running::start_with(config, Some(listener));
    running
        .wait("the service to start", 60, |r| {
            r.registry.started.load(Ordering::Acquire)
        })
        .await;

    assert_eq!(
        http(addr, "GET", "/health").await,
        (200, serde_json::Value::String("ok".into()))
    );
    let (status, listing) = http(addr, "GET", "/guests").await;
    assert_eq!(status, 200);
    let old = component_version(embedded_component(StageKind::Validate));
    assert_eq!(listing["guests"][0]["stage"], "validate");
    assert_eq!(listing["guests"][0]["version"], old.as_str());

    let (status, body) = http(addr, "POST", "/guests/nonsense/reload").await;
    assert_eq!(status, 404, "{body}");
    // Nothing changed on disk: nothing to do.
    let (status, body) = http(addr, "POST", "/guests/validate/reload").await;
    assert_eq!(
        (status, body["events"].as_array().unwrap().len()),
        (200, 0),
        "{body}"
    );
    // A component of the wrong world: refused, with the reason.
    std::fs::write(
        guests.path().join("validate.wasm"),
        embedded_component(StageKind::Route),
    )
    .unwrap();
    let (status, body) = http(addr, "POST", "/guests/validate/reload").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["events"][0]["outcome"], "refused");
    // A good one (watching is off: only the request swaps it).
    std::fs::write(guests.path().join("validate.wasm"), hostile_bytes()).unwrap();
    let (status, body) = http(addr, "POST", "/guests/validate/reload").await;
    assert_eq!(
        (status, &body["events"][0]["outcome"]),
        (200, &serde_json::json!("swapped")),
        "{body}"
    );
    let new = component_version(&hostile_bytes());
    running
        .wait("the swap to apply", 30, |r| {
            r.registry.view().guests[0].version == new
        })
        .await;
    let (_, listing) = http(addr, "GET", "/guests").await;
    let outcomes: Vec<&str> = listing["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["refused", "swapped"]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_rejects_what_the_current_version_accepts_is_refused_unless_forced() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.guests.watch = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut running = Running::start_with(config, Some(listener));
    running
        .wait("the service to start", 60, |r| {
            r.registry.started.load(Ordering::Acquire)
        })
        .await;
    // Ticks of instrument 13 are fine for the real validate, fatal for the hostile one.
    let payloads: Vec<Vec<u8>> = simulated_payloads(400, 14)
        .into_iter()
        .enumerate()
        .map(|(i, p)| if i % 4 == 0 { with_token(&p, 13) } else { p })
        .collect();
    running.produce(payloads, Pace::Max).await.await.unwrap();
    running
        .wait("the ticks to be processed", 60, |r| r.processed() >= 400)
        .await;
    std::fs::write(guests.path().join("validate.wasm"), hostile_bytes()).unwrap();

    let (status, body) = http(addr, "POST", "/guests/validate/reload").await;
    assert_eq!(status, 409, "{body}");
    let event = &body["events"][0];
    assert_eq!(event["outcome"], "refused");
    assert_eq!(event["shadow"]["ticks"], 400);
    assert_eq!(event["shadow"]["accepted_before"], 400);
    assert_eq!(event["shadow"]["newly_rejected"], 100);
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("rejects 100 of the 400"),
        "{event}"
    );

    let (status, body) = http(addr, "POST", "/guests/validate/reload?force=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["outcome"], "swapped");
    assert!(
        body["events"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("forced despite"),
        "{body}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_of_the_group_takes_partitions_without_losing_a_tick() {
    let _heavy = crate::support::HEAVY.lock().await;
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.lake.roll_seconds = 1;
    // The mock cluster waits the session timeout less a second for members to rejoin, and an
    // incremental rebalance takes two rounds: the ticks keep coming for longer than that.
    config.kafka.session_timeout_ms = 6_000;
    let mut first = Running::start(config.clone());
    first
        .wait("the first member to start", 60, |r| {
            r.registry.started.load(Ordering::Acquire)
        })
        .await;
    let total = 20_000u64;
    let producer = first
        .produce(simulated_payloads(total as usize, 15), Pace::Rate(1_000.0))
        .await;
    first
        .wait("2,000 ticks processed", 60, |r| r.processed() >= 2_000)
        .await;
    // A second member joins the same group on the same broker: a rebalance splits the partitions.
    let registry = Arc::new(GuestRegistry::default());
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    let (b, r, c) = (first.brokers.clone(), registry.clone(), config.clone());
    let second = tokio::spawn(async move {
        stockpipe::service::run(c, &b, false, r, None, async {
            let _ = stopped.await;
        })
        .await
    });
    assert_eq!(producer.await.unwrap(), total);
    // Done when the group has committed every offset.
    let brokers = first.brokers.clone();
    let probe = crate::support::probe(&brokers);
    let high = tokio::task::block_in_place(|| {
        kafka_source::high_watermarks(&probe, "stock-stream", Duration::from_secs(10))
    })
    .unwrap();
    assert_eq!(high.values().map(|o| o.0).sum::<i64>() as u64, total);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let group = stockpipe_group_committed(&brokers, &high).await;
        if group == high {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the group never committed to the end: {group:?} vs {high:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop_second.send(());
    let second_summary = second.await.unwrap().unwrap();
    let first_summary = first.stop().await;
    assert!(
        second_summary.counts.consumed > 0,
        "the second member got partitions: {second_summary:?}"
    );
    assert!(first_summary.counts.consumed > 0);
    // At least once: every offset of the topic is in the lake (re-delivered ranges may repeat).
    let docs = lake_documents(lake.path());
    let offsets: BTreeSet<(i64, i64)> = docs
        .iter()
        .map(|d| {
            (
                d["source"]["partition"].as_i64().unwrap(),
                d["source"]["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets.len() as u64, total);
}

/// The `stockpipe` group's committed offsets, read by a throw-away member of that group.
pub(crate) async fn stockpipe_group_committed(brokers: &str, high: &Offsets) -> Offsets {
    let (brokers, partitions) = (
        brokers.to_string(),
        high.keys().copied().collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "stockpipe")
            .create()
            .unwrap();
        kafka_source::committed_offsets(
            &reader,
            "stock-stream",
            partitions,
            Duration::from_secs(10),
        )
        .unwrap()
    })
    .await
    .unwrap()
}

/// A component with a custom section appended: the same code, another version.
fn rebuilt(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut payload = vec![tag.len() as u8];
    payload.extend_from_slice(tag.as_bytes());
    payload.extend_from_slice(b"a new build");
    let mut out = bytes.to_vec();
    out.push(0); // a custom section
    assert!(payload.len() < 128, "one LEB byte");
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

/// The bars in the lake: (instrument, start) -> the bar's document.
fn lake_bars(lake: &std::path::Path) -> BTreeMap<(u64, i64), serde_json::Value> {
    let mut bars = BTreeMap::new();
    for doc in lake_documents(&lake.join("stock-bars")) {
        let start = doc["bar_id"].as_str().unwrap().split('-').nth(1).unwrap();
        let key = (
            doc["instrument_token"].as_u64().unwrap(),
            start.parse().unwrap(),
        );
        assert!(bars.insert(key, doc).is_none(), "bar {key:?} stored twice");
    }
    bars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_state_is_handed_to_a_new_version_and_a_version_that_cannot_read_it_is_refused()
 {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.aggregate.enabled = true;
    config.lake.roll_seconds = 1;
    config.guests.watch = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut running = Running::start_with(config, Some(listener));
    let old = component_version(embedded_component(StageKind::Aggregate));
    let (_, listing) = {
        running
            .wait("the service to start", 60, |r| {
                r.registry.started.load(Ordering::Acquire)
            })
            .await;
        http(addr, "GET", "/guests").await
    };
    assert_eq!(listing["guests"][3]["stage"], "aggregate", "{listing}");
    assert_eq!(listing["guests"][3]["version"], old.as_str());
    // Eight minutes of market: a first half, then the swaps, then the second half.
    let total = 12_000_u64;
    let mut payloads = simulated_payloads(total as usize, 16);
    let second = payloads.split_off(total as usize / 2);
    let producer = running.produce(payloads, Pace::Rate(4_000.0)).await;
    assert_eq!(producer.await.unwrap(), total / 2);
    running
        .wait("the first half", 60, |r| r.processed() >= total / 2)
        .await;

    // The same logic built again: the state goes over, the shadow run finds no difference.
    let new_bytes = rebuilt(embedded_component(StageKind::Aggregate), "stockpipe-test");
    let new = component_version(&new_bytes);
    install(guests.path(), "aggregate.wasm", &new_bytes);
    let (status, body) = http(addr, "POST", "/guests/aggregate/reload").await;
    assert_eq!(status, 200, "{body}");
    let event = &body["events"][0];
    assert_eq!(event["outcome"], "swapped", "{body}");
    assert_eq!(event["to_version"], new.as_str());
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("partitions handed over"),
        "{body}"
    );
    assert_eq!(event["bars_shadow"]["bars_differing"], 0, "{body}");
    assert!(
        event["bars_shadow"]["ticks"].as_u64().unwrap() > 0,
        "{body}"
    );

    // A version that reads no state: refused, and the new version keeps serving.
    install(guests.path(), "aggregate.wasm", &hostile_bytes());
    let (status, body) = http(addr, "POST", "/guests/aggregate/reload").await;
    assert_eq!(status, 409, "{body}");
    let reason = body["events"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot read the state") && reason.contains(&new),
        "{body}"
    );
    let (_, listing) = http(addr, "GET", "/guests").await;
    assert_eq!(listing["guests"][3]["version"], new.as_str());

    let producer = running.produce(second, Pace::Rate(4_000.0)).await;
    assert_eq!(producer.await.unwrap(), total / 2);
    running
        .wait("the whole stream", 60, |r| r.processed() >= total)
        .await;
    // Forced: it serves, and the event says which partitions start empty.
    let (status, body) = http(addr, "POST", "/guests/aggregate/reload?force=true").await;
    assert_eq!(status, 200, "{body}");
    let reason = body["events"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("forced despite") && reason.contains("start with an empty state"),
        "{body}"
    );
    running.stop().await;

    // Every instrument's bars: the first closed by the rebuilt version continues the state of
    // the first one (it has a log return: the previous close came over with the state).
    let bars = lake_bars(lake.path());
    let mut first_new: BTreeMap<u64, &serde_json::Value> = BTreeMap::new();
    for ((token, _), bar) in &bars {
        if bar["guest_version"] == new.as_str() {
            first_new.entry(*token).or_insert(bar);
        }
    }
    let versions: BTreeSet<&str> = bars
        .values()
        .map(|b| b["guest_version"].as_str().unwrap())
        .collect();
    assert_eq!(
        first_new.len(),
        50,
        "every instrument closed bars after the swap: {} bars of {versions:?} (old {old}, new {new})",
        bars.len()
    );
    for (token, bar) in &first_new {
        assert!(
            bar["log_return"].is_number(),
            "instrument {token}'s first bar after the swap lost the previous close: {bar}"
        );
    }
    assert!(bars.values().any(|b| b["guest_version"] == old.as_str()));
}

/// A new alert guest takes the rules' state over: a rule firing before the swap does not fire
/// again after it (a fresh state would: a first tick past the threshold fires), and resolves
/// under the new version. A version that cannot read the state is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_state_is_handed_to_a_new_version_so_a_firing_rule_does_not_fire_again() {
    let (guests, lake) = (guests_dir(), tempfile::tempdir().unwrap());
    let mut config = config(guests.path(), lake.path());
    config.guests.watch = false;
    config.alert.rules = Some(vec![stockpipe::chain::alert::RuleConfig {
        name: "cross".into(),
        kind: "price_cross".into(),
        threshold: 100.0,
        clear: Some(90.0),
        direction: "up".into(),
        for_ms: 0,
        cooldown_ms: 0,
        window_bars: 0,
    }]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut running = Running::start_with(config, Some(listener));
    running
        .wait("the service to start", 60, |r| {
            r.registry.started.load(Ordering::Acquire)
        })
        .await;
    let old = component_version(embedded_component(StageKind::Alert));
    // One instrument (so one partition), its price in a row.
    let tick = |price: f64| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&crate::support::sample_payloads()[0]).unwrap();
        v["instrument_token"] = 7.into();
        v["last_price"] = price.into();
        serde_json::to_vec(&v).unwrap()
    };
    let producer = running
        .produce(vec![tick(120.0), tick(130.0), tick(125.0)], Pace::Max)
        .await;
    assert_eq!(producer.await.unwrap(), 3);
    running
        .wait("the first ticks", 60, |r| r.processed() >= 3)
        .await;

    let new_bytes = rebuilt(embedded_component(StageKind::Alert), "stockpipe-test");
    let new = component_version(&new_bytes);
    install(guests.path(), "alert.wasm", &new_bytes);
    let (status, body) = http(addr, "POST", "/guests/alert/reload").await;
    assert_eq!(status, 200, "{body}");
    let event = &body["events"][0];
    assert_eq!(event["outcome"], "swapped", "{body}");
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("partitions handed over"),
        "{body}"
    );
    // One that reads no state: refused, the new version keeps serving.
    install(guests.path(), "alert.wasm", &hostile_bytes());
    let (status, body) = http(addr, "POST", "/guests/alert/reload").await;
    assert_eq!(status, 409, "{body}");
    let (_, listing) = http(addr, "GET", "/guests").await;
    let serving: Vec<&serde_json::Value> = listing["guests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["stage"] == "alert")
        .collect();
    assert_eq!(serving.len(), 1, "{listing}");
    assert_eq!(serving[0]["version"], new.as_str(), "{listing}");

    let producer = running
        .produce(vec![tick(140.0), tick(95.0), tick(80.0)], Pace::Max)
        .await;
    assert_eq!(producer.await.unwrap(), 3);
    running
        .wait("the last ticks", 60, |r| r.processed() >= 6)
        .await;
    running.stop().await;

    let events: Vec<(String, f64, String)> =
        crate::support::topic_messages(&running.brokers, "stock-alerts")
            .await
            .iter()
            .map(|(payload, _)| {
                let e: serde_json::Value = serde_json::from_slice(payload).unwrap();
                (
                    e["state"].as_str().unwrap().to_string(),
                    e["value"].as_f64().unwrap(),
                    e["guest_version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    assert_eq!(
        events,
        vec![
            ("firing".into(), 120.0, old.clone()),
            ("resolved".into(), 80.0, new.clone()),
        ],
        "fired once, before the swap; resolved by the new version (95 is inside the band)"
    );
}
