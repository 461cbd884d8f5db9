//! The real sinks end to end: Cloud Storage (fake-gcs-server) as the lake, Elasticsearch (noida-db),
//! the `upload` command, re-delivery, and a crash (SIGKILL) in the middle of a run against a broker
//! that outlives the host.

use crate::emulators::{FakeGcs, NoidaDb};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use stockpipe::config::Config;
use stockpipe::sink::layout::parse_segment as parse_object_name;
use stockpipe::sink::store::{GcsOptions, LakeLocation, LakeStore};
use stockpipe::source::kafka as kafka_source;
use stockpipe::source::replay::{Pace, produce_all};

async fn gcs_store(gcs: &FakeGcs, bucket: &str, prefix: &str, threshold: usize) -> LakeStore {
    LakeStore::open(
        &LakeLocation::Gcs {
            bucket: bucket.into(),
            prefix: prefix.into(),
        },
        GcsOptions {
            endpoint: Some(gcs.endpoint.clone()),
            resumable_threshold: threshold,
        },
    )
    .await
    .unwrap()
}

/// Every line of every object under `topic`, with the object's name.
async fn lake_lines(store: &LakeStore, topic: &str) -> Vec<(String, Value)> {
    let mut lines = Vec::new();
    for name in store.list(topic).await.unwrap() {
        let bytes =
            stockpipe::sink::lake::object_lines(&name, store.get(&name).await.unwrap()).unwrap();
        for line in String::from_utf8(bytes).unwrap().lines() {
            lines.push((name.clone(), serde_json::from_str(line).unwrap()));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_objects_round_trip_byte_for_byte() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("lake").await;
    let store = gcs_store(&gcs, "lake", "prod/v1", 256 << 10).await;
    let small = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
    // Above the threshold: a resumable upload.
    let large: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxx\"}}\n").into_bytes())
        .collect();
    assert!(large.len() > 1 << 20);
    let a = "stock-stream/dt=2017-06-20/hour=07/0-0-1.ndjson";
    let b = "stock-stream/dt=2017-06-20/hour=08/0-2-40001.ndjson";
    store.put(a, small.clone()).await.unwrap();
    store.put(b, large.clone()).await.unwrap();
    // Re-delivery of the same range: the same name, overwritten, not doubled.
    store.put(a, small.clone()).await.unwrap();
    assert_eq!(store.list("stock-stream").await.unwrap(), [a, b]);
    assert_eq!(store.get(a).await.unwrap(), small);
    assert_eq!(store.get(b).await.unwrap(), large);
    // The prefix is where the objects really are.
    let root = gcs_store(&gcs, "lake", "", 0).await;
    assert_eq!(
        root.list("prod/v1/stock-stream/dt=2017-06-20/hour=07")
            .await
            .unwrap(),
        [format!("prod/v1/{a}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_turns_a_json_array_into_ndjson() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("raw").await;
    let file = crate::support::workspace().join("data/stock_data_sample.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.trim_start().starts_with('['),
        "the sample is a JSON array"
    );
    let report = stockpipe::tools::upload::upload(
        &file,
        "gs://raw/ticks/sample.ndjson",
        GcsOptions {
            endpoint: Some(gcs.endpoint.clone()),
            resumable_threshold: 0,
        },
    )
    .await
    .unwrap();
    assert!(report.converted_from_array);
    assert_eq!(report.lines, 100);
    let store = gcs_store(&gcs, "raw", "", 0).await;
    let text_back = String::from_utf8(store.get("ticks/sample.ndjson").await.unwrap()).unwrap();
    let array: Vec<Value> = serde_json::from_str(&text).unwrap();
    let lines: Vec<Value> = text_back
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, array);
    // The command line says what it did.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(["upload"])
        .arg(&file)
        .args([
            "gs://raw/ticks/again.ndjson",
            "--gcs-endpoint",
            &gcs.endpoint,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("converted to newline-delimited JSON"),
        "{stderr}"
    );
}

/// The sample (and bad ticks) through the embedded Kafka into GCS and an ES API; then the whole
/// topic again under a new group (a re-delivery): nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_elasticsearch_and_gcs_and_redelivery() {
    let _heavy = crate::support::HEAVY.lock().await;
    let noida = NoidaDb::start();
    let gcs = FakeGcs::start();
    gcs.create_bucket("lake").await;
    let mut config = Config::default();
    config.elasticsearch.url = noida.es_url.clone();
    config.elasticsearch.bulk_max_docs = 30;
    config.lake.url = "gs://lake/stockpipe".into();
    config.lake.gcs_endpoint = gcs.endpoint.clone();
    config.lake.roll_bytes = 16 << 10;
    config.lake.gzip = true;
    let k = config.kafka.clone();
    let cluster = crate::support::embedded_cluster(&config, 3);
    let brokers = cluster.bootstrap_servers();
    let mut payloads = crate::support::sample_payloads();
    payloads.insert(10, b"{\"not\": \"a tick\"}".to_vec());
    let producer = kafka_source::producer(&kafka_source::Connection::plaintext(&brokers)).unwrap();
    produce_all(&producer, &k.topic, &payloads, Pace::Max, |_| {})
        .await
        .unwrap();

    let summary = crate::e2e::run_once(&config, &brokers).await;
    assert_eq!(
        (
            summary.counts.consumed,
            summary.counts.accepted,
            summary.counts.rejected
        ),
        (101, 100, 1)
    );
    assert_eq!(summary.counts.indexed, 100, "{summary:?}");
    assert_eq!(summary.counts.lake_lines, 100);
    assert_eq!(
        summary.committed_offsets.values().map(|o| o.0).sum::<i64>(),
        101
    );
    assert_eq!(
        crate::support::es_count(&noida.es_url, "stock-stream").await,
        100
    );
    let store = gcs_store(&gcs, "lake", "stockpipe", 0).await;
    let lines = lake_lines(&store, "stock-stream").await;
    assert_eq!(lines.len(), 100);
    let objects_before = store.list("stock-stream").await.unwrap();
    assert!(
        objects_before.len() > 3,
        "rolled by size: {objects_before:?}"
    );
    assert!(
        objects_before.iter().all(|n| n.ends_with(".ndjson.gz")),
        "gzip objects: {objects_before:?}"
    );
    for (name, doc) in &lines {
        let (partition, first, last) = parse_object_name(name).unwrap();
        let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
        let offset = doc["source"]["offset"].as_i64().unwrap();
        assert_eq!(doc["source"]["partition"].as_i64(), Some(partition.into()));
        assert!((first..=last).contains(&offset), "{name}: {offset}");
        assert!(
            name.contains(&format!("dt={}", &doc["timestamp"].as_str().unwrap()[..10])),
            "{name}"
        );
    }

    // The same messages again (a new group starts at the beginning).
    config.kafka.group_id = "stockpipe-again".into();
    let again = crate::e2e::run_once(&config, &brokers).await;
    assert_eq!(again.counts.accepted, 100);
    assert_eq!(again.counts.lake_already_stored, 100, "{again:?}");
    assert_eq!(again.counts.lake_objects, 0);
    assert_eq!(store.list("stock-stream").await.unwrap(), objects_before);
    assert_eq!(
        crate::support::es_count(&noida.es_url, "stock-stream").await,
        100,
        "ids overwrite"
    );
}

fn write_config(dir: &std::path::Path, noida: &NoidaDb, gcs: &FakeGcs) -> std::path::PathBuf {
    let path = dir.join("stockpipe.toml");
    std::fs::write(
        &path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
batch_max = 500
# Static membership: the restarted host takes its partitions back without waiting for the
# killed one to time out (the emulated broker never evicts it).
group_instance_id = "crash-test-host"
# The emulated broker starts without the alert and dead-letter topics.
create_topics = true
topic_replication_factor = 1

[lake]
url = "gs://lake/crash"
gcs_endpoint = "{gcs}"
roll_bytes = 131072
roll_seconds = 1

[elasticsearch]
url = "{es}"
bulk_max_docs = 500
bulk_max_age_ms = 200
"#,
            brokers = noida.kafka,
            gcs = gcs.endpoint,
            es = noida.es_url,
        ),
    )
    .unwrap();
    path
}

/// 50,000 ticks; the host is killed (SIGKILL) in the middle and started again with `--once`.
/// Elasticsearch then holds each tick exactly once, the lake's objects cover every offset once
/// with no gap, and the group's offsets are at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_loses_nothing_and_doubles_nothing() {
    let _heavy = crate::support::HEAVY.lock().await;
    const TICKS: usize = 50_000;
    let noida = NoidaDb::start();
    let gcs = FakeGcs::start();
    gcs.create_bucket("lake").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &noida, &gcs);
    let payloads = crate::support::simulated_payloads(TICKS, 7);
    let producer =
        kafka_source::producer(&kafka_source::Connection::plaintext(&noida.kafka)).unwrap();
    produce_all(&producer, "stock-stream", &payloads, Pace::Max, |_| {})
        .await
        .unwrap();
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("RUST_LOG", "stockpipe=warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = run();
    let started = Instant::now();
    loop {
        let indexed = crate::support::es_count(&noida.es_url, "stock-stream").await;
        if indexed >= 5_000 {
            break;
        }
        if let Ok(Some(status)) = first.try_wait() {
            panic!("the first run ended before the crash: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no progress before the crash"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_crash = crate::support::es_count(&noida.es_url, "stock-stream").await;
    assert!(
        (at_crash as usize) < TICKS,
        "killed in the middle: {at_crash}"
    );

    let second = tokio::task::spawn_blocking(move || run().wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(second.status.success(), "{second:?}");
    let summary: Value = serde_json::from_str(
        String::from_utf8_lossy(&second.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert!(
        (summary["consumed"].as_u64().unwrap() as usize) < TICKS,
        "the restart resumed from the committed offsets: {summary}"
    );
    let committed: i64 = crate::support::committed_total(&summary);
    assert_eq!(
        committed as usize, TICKS,
        "offsets committed to the end: {summary}"
    );

    assert_eq!(
        crate::support::es_count(&noida.es_url, "stock-stream").await as usize,
        TICKS
    );
    let store = gcs_store(&gcs, "lake", "crash", 0).await;
    let mut offsets: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (name, doc) in lake_lines(&store, "stock-stream").await {
        let (partition, first, last) = parse_object_name(&name).unwrap();
        let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
        let offset = doc["source"]["offset"].as_i64().unwrap();
        assert!((first..=last).contains(&offset));
        offsets.entry(partition.into()).or_default().push(offset);
    }
    let mut total = 0;
    let mut last_offsets = BTreeMap::new();
    for (partition, mut seen) in offsets {
        seen.sort_unstable();
        let n = seen.len() as i64;
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "partition {partition}: every offset once, no gap"
        );
        total += seen.len();
        last_offsets.insert(partition, n - 1);
    }
    assert_eq!(total, TICKS);
    // A few ids, looked up directly: deterministic, one per offset.
    let client = reqwest::Client::new();
    let (partition, last) = (
        last_offsets.keys().next().unwrap(),
        last_offsets.values().next().unwrap(),
    );
    for offset in [0, last / 2, *last] {
        let r = client
            .get(format!(
                "{}/stock-stream/_doc/stock-stream-{partition}-{offset}",
                noida.es_url
            ))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap_or_default();
        assert_eq!(v["found"], true, "offset {offset}: {v}");
    }
}
