//! The whole pipeline over librdkafka's mock cluster: good ticks land in the lake exactly once, bad
//! ones in the dead-letter topic with their reason, and the committed offsets reach the end.

use crate::support::sample_payloads;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use stockpipe::chain::{ChainComponents, WasmChain};
use stockpipe::clock::unix_now_us;
use stockpipe::config::Config;
use stockpipe::pipeline::{Pipeline, RunSummary};
use stockpipe::runtime::sandbox::{Sandbox, SandboxLimits};
use stockpipe::sink::kafka::headers;
use stockpipe::source::kafka as kafka_source;
use stockpipe::source::replay::{Pace, produce_all};

fn bad_ticks() -> Vec<(Vec<u8>, &'static str)> {
    let good: serde_json::Value = serde_json::from_slice(&sample_payloads()[0]).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    vec![
        (
            b"{\"timestamp\": \"2017-06-20 07:35:05\", \"instrument_token\": ".to_vec(),
            "malformed-json",
        ),
        (
            with(&|v| drop(v.as_object_mut().unwrap().remove("last_price"))),
            "missing-field",
        ),
        (with(&|v| v["last_price"] = "NaN".into()), "wrong-type"),
        (
            with(&|v| v["last_price"] = (-12.5).into()),
            "non-positive-price",
        ),
        (
            with(&|v| {
                let ask = v["depth"]["sell"][0]["price"].as_f64().unwrap();
                v["depth"]["buy"] =
                    serde_json::json!([{"price": ask + 1.0, "orders": 1, "quantity": 10}]);
            }),
            "crossed-book",
        ),
    ]
}

pub(crate) async fn run_once(config: &Config, brokers: &str) -> RunSummary {
    run_once_with(config, brokers, |pipeline, _| pipeline).await
}

/// `run --once` in process with the embedded guests, the pipeline shaped by `shape` (given the
/// sandbox) before it runs.
pub(crate) async fn run_once_with(
    config: &Config,
    brokers: &str,
    shape: impl FnOnce(Pipeline, std::sync::Arc<Sandbox>) -> Pipeline,
) -> RunSummary {
    let sandbox = std::sync::Arc::new(Sandbox::new(SandboxLimits::default()).unwrap());
    let components = ChainComponents::embedded(&sandbox).unwrap();
    let chain = WasmChain::new(
        sandbox.clone(),
        components,
        config.stage_configs(unix_now_us()),
    );
    let telemetry = std::sync::Arc::new(stockpipe::telemetry::Telemetry::new());
    let mut pipeline = Pipeline::new(config.clone(), brokers, chain, telemetry)
        .await
        .unwrap();
    // The alert stage, as `run` has it.
    if let Some(alerting) = stockpipe::service::load_alerting(&sandbox, config).unwrap() {
        pipeline = pipeline.with_alerting(alerting);
    }
    let pipeline = shape(pipeline, sandbox);
    tokio::time::timeout(
        Duration::from_secs(120),
        pipeline.run(true, std::future::pending()),
    )
    .await
    .expect("run --once finishes")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_and_bad_ticks_end_to_end() {
    let mut config = Config::default();
    config.route.change_alert_pct = Some(0.5);
    let k = config.kafka.clone();
    let cluster = crate::support::embedded_cluster(&config, 3);
    let brokers = cluster.bootstrap_servers();
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();

    let good = sample_payloads();
    assert_eq!(good.len(), 100);
    let bad = bad_ticks();
    let mut payloads = good.clone();
    for (i, (payload, _)) in bad.iter().enumerate() {
        payloads.insert(i * 20 + 7, payload.clone());
    }
    let producer = kafka_source::producer(&kafka_source::Connection::plaintext(&brokers)).unwrap();
    produce_all(&producer, &k.topic, &payloads, Pace::Max, |_| {})
        .await
        .unwrap();

    let summary = run_once(&config, &brokers).await;
    assert_eq!(
        (
            summary.counts.consumed,
            summary.counts.accepted,
            summary.counts.rejected
        ),
        (105, 100, 5),
        "{summary:?}"
    );
    assert_eq!(summary.counts.dead_lettered, 5);

    // The lake: every good tick exactly once, NDJSON, RFC 3339 UTC timestamps.
    let mut docs = Vec::new();
    // (`_state/` holds the stateful stages' checkpoints: the alert stage's here.)
    let state = lake.path().join("_state");
    for entry in crate::support::walk(lake.path()) {
        if entry.starts_with(&state) {
            continue;
        }
        assert!(
            entry.extension().is_some_and(|e| e == "ndjson"),
            "unexpected file {}",
            entry.display()
        );
        let rel = entry
            .strip_prefix(lake.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            rel.starts_with("stock-stream/dt=2017-06-20/hour=07/"),
            "{rel}"
        );
        for line in std::fs::read_to_string(&entry).unwrap().lines() {
            docs.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
        }
    }
    assert_eq!(docs.len(), 100);
    assert_eq!(summary.counts.lake_lines, 100);
    let positions: BTreeSet<(i64, i64)> = docs
        .iter()
        .map(|d| {
            (
                d["source"]["partition"].as_i64().unwrap(),
                d["source"]["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions.len(), 100, "no tick twice");
    let ids: BTreeSet<&str> = docs
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    let tokens_in: BTreeMap<u64, usize> = good.iter().fold(BTreeMap::new(), |mut m, p| {
        let v: serde_json::Value = serde_json::from_slice(p).unwrap();
        *m.entry(v["instrument_token"].as_u64().unwrap())
            .or_default() += 1;
        m
    });
    let tokens_out: BTreeMap<u64, usize> = docs.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d["instrument_token"].as_u64().unwrap())
            .or_default() += 1;
        m
    });
    assert_eq!(tokens_in, tokens_out);
    for d in &docs {
        let ts = d["timestamp"].as_str().unwrap();
        assert!(
            ts.starts_with("2017-06-20T07:") && ts.ends_with('Z') && ts.len() == 27,
            "{ts}"
        );
        assert!(
            d["guest_versions"]["validate"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert!(d["spread_bps"].as_f64().unwrap() >= 0.0);
    }

    // The dead-letter topic: the original bytes, with the reason.
    let dead = crate::support::dead_letters(&brokers).await;
    assert_eq!(dead.len(), 5);
    let expected: HashMap<&[u8], &str> = bad.iter().map(|(p, c)| (p.as_slice(), *c)).collect();
    for (payload, hdrs) in &dead {
        let code = expected
            .get(payload.as_slice())
            .unwrap_or_else(|| panic!("unexpected dead letter {payload:?}"));
        assert_eq!(hdrs[headers::REASON_CODE], *code, "{hdrs:?}");
        assert!(!hdrs[headers::REASON].is_empty());
        assert_eq!(hdrs[headers::SOURCE_TOPIC], "stock-stream");
        let stage = &hdrs[headers::STAGE];
        if stage == "decode" {
            assert_eq!(hdrs[headers::GUEST_VERSION], "host");
        } else {
            assert_eq!(stage, "validate");
            assert!(hdrs[headers::GUEST_VERSION].starts_with("sha256:"));
        }
        hdrs[headers::SOURCE_OFFSET].parse::<i64>().unwrap();
    }

    // Alerts: events, once per crossing, per partition and instrument, in offset order: the
    // rule `route.change_alert_pct` (|change| >= 0.5 %, the deprecated key) and the default
    // `spread_bps` (spread >= 50 bps), each resolving once its value is back under.
    let mut ordered: Vec<&serde_json::Value> = docs.iter().collect();
    ordered.sort_by_key(|d| {
        (
            d["source"]["partition"].as_i64().unwrap(),
            d["source"]["offset"].as_i64().unwrap(),
        )
    });
    let mut firing: BTreeMap<(i64, u64, &str), bool> = BTreeMap::new();
    let mut expected_events = Vec::new();
    for d in ordered {
        let key = |rule| {
            (
                d["source"]["partition"].as_i64().unwrap(),
                d["instrument_token"].as_u64().unwrap(),
                rule,
            )
        };
        for (rule, value, threshold) in [
            (
                "route.change_alert_pct",
                d["change"].as_f64().unwrap().abs(),
                0.5,
            ),
            ("spread_bps", d["spread_bps"].as_f64().unwrap(), 50.0),
        ] {
            let now = value >= threshold;
            let was = firing.insert(key(rule), now).unwrap_or(false);
            if now != was {
                let state = if now { "firing" } else { "resolved" };
                expected_events.push((
                    rule.to_string(),
                    d["source"]["offset"].as_i64().unwrap(),
                    state,
                ));
            }
        }
    }
    assert!(
        expected_events.iter().any(|e| e.2 == "resolved"),
        "the sample should cross 0.5 % both ways: {expected_events:?}"
    );
    assert_eq!(summary.counts.alerts, expected_events.len() as u64);
    let mut events: Vec<(String, i64, &str)> = Vec::new();
    let alerts = crate::support::topic_messages(&brokers, "stock-alerts").await;
    let mut ids = BTreeSet::new();
    for (payload, hdrs) in &alerts {
        let e: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            hdrs[headers::ALERT_ID],
            e["alert_id"].as_str().unwrap(),
            "{e}"
        );
        assert!(
            ids.insert(e["alert_id"].as_str().unwrap().to_string()),
            "one id per event"
        );
        assert_eq!(e["source"]["topic"], "stock-stream");
        let state = if e["state"] == "firing" {
            "firing"
        } else {
            "resolved"
        };
        events.push((
            e["rule"].as_str().unwrap().to_string(),
            e["source"]["offset"].as_i64().unwrap(),
            state,
        ));
    }
    events.sort();
    expected_events.sort();
    assert_eq!(events, expected_events);

    // Offsets: committed to the end of every partition.
    let consumer = crate::support::probe(&brokers);
    let high = tokio::task::block_in_place(|| {
        kafka_source::high_watermarks(&consumer, &k.topic, Duration::from_secs(10))
    })
    .unwrap();
    assert_eq!(summary.committed_offsets, high);
    assert_eq!(high.values().map(|o| o.0).sum::<i64>(), 105);

    // A second run of the same group finds nothing left to do.
    let again = run_once(&config, &brokers).await;
    assert_eq!(again.counts.consumed, 0, "{again:?}");
    assert_eq!(again.committed_offsets, high);
}

#[test]
fn the_example_config_is_complete_and_valid() {
    let path = crate::support::workspace().join("stockpipe.example.toml");
    let config = Config::load(&path).unwrap();
    config.validate().unwrap();
    assert_eq!(
        config,
        Config::default(),
        "the example documents the defaults"
    );
}

/// The container's configuration (docker/stockpipe.toml, mounted by docker-compose.yml) is valid
/// and points at the compose stack's services.
#[test]
fn the_container_config_is_valid_and_names_the_compose_services() {
    let root = crate::support::workspace();
    let config = Config::load(&root.join("docker/stockpipe.toml")).unwrap();
    config.validate().unwrap();
    assert_eq!(config.kafka.brokers, "kafka:9092");
    assert_eq!(config.elasticsearch.url, "http://elasticsearch:9200");
    assert_eq!(config.elasticsearch.number_of_replicas, 1);
    assert_eq!(config.http.listen, "0.0.0.0:8080");
    // The image's config is safe for a real cluster: no emulator, no group instance id shared by
    // every replica, no topics created with a guessed replication.
    assert_eq!(config.lake.gcs_endpoint, "");
    assert_eq!(config.kafka.group_instance_id, "");
    assert!(!config.kafka.create_topics);
    // The compose stack sets the demo's values over it.
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let env: Vec<(String, String)> = [
        "STOCKPIPE_LAKE_GCS_ENDPOINT",
        "STOCKPIPE_KAFKA_GROUP_INSTANCE_ID",
        "STOCKPIPE_KAFKA_CREATE_TOPICS",
        "STOCKPIPE_KAFKA_TOPIC_REPLICATION_FACTOR",
        "STOCKPIPE_ELASTICSEARCH_NUMBER_OF_REPLICAS",
    ]
    .iter()
    .map(|name| {
        let line = compose
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("docker-compose.yml sets {name}"));
        let value = line.split_once(':').unwrap().1.trim().trim_matches('"');
        ((*name).to_string(), value.to_string())
    })
    .collect();
    let demo = Config::load_with_env(Some(&root.join("docker/stockpipe.toml")), env).unwrap();
    demo.validate().unwrap();
    assert_eq!(demo.lake.gcs_endpoint, "http://gcs");
    assert_eq!(demo.kafka.group_instance_id, "stockpipe-1");
    assert!(demo.kafka.create_topics);
    assert_eq!(demo.elasticsearch.number_of_replicas, 0, "one node");
    // The guests directory the config names is the one the image fills and compose mounts.
    let guests = config.guests.dir.unwrap();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("/out/guests {}", guests.display())));
    assert!(compose.contains(&format!("guests:{}", guests.display())));
    // Beyond loopback the admin API needs a token: compose passes one, and requires it.
    let listen: std::net::SocketAddr = config.http.listen.parse().unwrap();
    assert!(matches!(
        stockpipe::http::admin_access(listen, |_| None),
        stockpipe::http::AdminAccess::Closed { .. }
    ));
    assert!(compose.contains("STOCKPIPE_ADMIN_TOKEN: ${STOCKPIPE_ADMIN_TOKEN:?"));
}

/// `check-jsonschema` (PyPI; scripts/test.sh installs it) on `file` with `schema_args`.
fn check_jsonschema(schema_args: &[&str], file: &std::path::Path) -> std::process::Output {
    std::process::Command::new("check-jsonschema")
        .args(schema_args)
        .arg(file)
        .output()
        .expect("check-jsonschema runs (pip install check-jsonschema; scripts/test.sh does)")
}

/// No Docker engine here: docker-compose.yml is checked against the Compose specification's JSON
/// schema, then against ours (docker/compose-requirements.schema.json: the services, KRaft,
/// health checks and `service_healthy` dependencies, ports, the guests volume, the one-shot
/// Kibana import). A copy with a dependency loosened or a health check removed must fail.
#[test]
fn the_compose_file_follows_the_compose_spec_and_our_requirements() {
    let root = crate::support::workspace();
    let compose = root.join("docker-compose.yml");
    let requirements = root.join("docker/compose-requirements.schema.json");
    let requirements = requirements.to_str().unwrap();
    for args in [
        &["--builtin-schema", "vendor.compose-spec"][..],
        &["--schemafile", requirements][..],
    ] {
        let out = check_jsonschema(args, &compose);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let text = std::fs::read_to_string(&compose).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = [
        (
            "the one-shot import no longer waits for a healthy Kibana",
            text.replacen(
                "      kibana:\n        condition: service_healthy",
                "      kibana:\n        condition: service_started",
                1,
            ),
        ),
        (
            "the host has no health check",
            text.replacen(
                "      test: [\"CMD-SHELL\", \"curl -fsS http://127.0.0.1:8080/ready > /dev/null\"]",
                "",
                1,
            )
            .replacen("    healthcheck:\n      # Ready", "    x-healthcheck:\n      # Ready", 1),
        ),
        (
            "the guests are not on a volume",
            text.replace("guests:/opt/stockpipe/guests", "./guests:/opt/stockpipe/guests"),
        ),
    ];
    for (what, yaml) in broken {
        assert_ne!(yaml, text, "{what}: the edit applies");
        let file = dir.path().join("docker-compose.yml");
        std::fs::write(&file, yaml).unwrap();
        let out = check_jsonschema(&["--schemafile", requirements], &file);
        assert!(!out.status.success(), "{what}: accepted");
    }
}

/// `stockpipe bench pipeline` end to end on a small scale: both figures printed, every tick
/// indexed, the paced run reaching the endpoint at about its rate.
#[test]
fn the_pipeline_benchmark_prints_its_figures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(["bench", "pipeline", "--ticks", "3000", "--rate", "1000"])
        .args(["--seconds", "2"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["bench"], "pipeline_throughput");
    assert_eq!(lines[0]["indexed"], 3000);
    assert!(lines[0]["sink_ticks_per_s"].as_f64() > Some(0.0));
    let paced = &lines[1];
    assert_eq!(paced["bench"], "pipeline_paced");
    let rate = paced["indexed_per_s"].as_f64().unwrap();
    assert!((500.0..1500.0).contains(&rate), "{paced}");
    let p50 = paced["latency_p50_ms"].as_f64().unwrap();
    let p99 = paced["latency_p99_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99, "{paced}");
    assert!(paced["peak_rss_mib"].as_f64() > Some(1.0), "{paced}");
}

/// `stockpipe bench guests` on a small scale: the chains agree (the command refuses to time them
/// otherwise), every figure is there, and the boundary floor (a no-op guest) sits below the real
/// validate call over the same batches.
#[test]
fn the_guest_benchmark_prints_its_figures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args([
            "bench", "guests", "--ticks", "4000", "--batch", "500", "--rounds", "3",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["bench"], "guests");
    assert_eq!(line["ticks"], 4000);
    for figure in [
        "wasm_ns_per_tick",
        "native_ns_per_tick",
        "decode_ns_per_tick",
    ] {
        assert!(line[figure].as_f64() > Some(0.0), "{figure}: {line}");
    }
    let stages = &line["stages"];
    let floor = stages["boundary_floor_ns"]
        .as_f64()
        .expect("the test guests are built");
    let validate = stages["validate_wasm_ns"].as_f64().unwrap();
    assert!(0.0 < floor && floor < validate, "{stages}");
}

/// Offline on embedded defaults, a 72 MB input of 100,000 ticks over 50 instruments fits: the
/// embedded topic is sized by where the producer's partitioner puts each instrument (it refused
/// this input when sized by an even share: one partition drew four instruments).
#[test]
fn a_large_input_runs_offline() {
    use crate::support::{last_json_line, stockpipe};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ticks.ndjson");
    let lake = dir.path().join("lake");
    let input_s = input.to_str().unwrap();
    stockpipe(&[
        "simulate", "--ticks", "100000", "--seed", "7", "--out", input_s,
    ]);
    let out = stockpipe(&[
        "run",
        "--input",
        input_s,
        "--once",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let summary = last_json_line(&out);
    assert_eq!(summary["consumed"], 100_000, "{summary}");
    assert_eq!(summary["lake_lines"], 100_000, "{summary}");
}

/// Brokers that do not answer: the error names where it looked.
#[test]
fn unreachable_brokers_are_named() {
    let port = crate::emulators::free_port();
    let lake = tempfile::tempdir().unwrap();
    let brokers = format!("127.0.0.1:{port}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(["run", "--once", "--brokers", &brokers, "--lake"])
        .arg(lake.path())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // The brokers are named, and why they did not answer (librdkafka's own words).
    assert!(
        stderr.contains(&format!("from {brokers}")) && stderr.contains("Connection refused"),
        "{stderr}"
    );
}

/// `--input` with a line too large for any message and a line of invalid UTF-8: the run goes on;
/// the invalid line is dead-lettered like any tick that does not decode, the oversized one is
/// reported with its line number and size. (The run stopped at either.)
#[test]
fn bad_input_lines_do_not_stop_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = crate::support::sample_payloads();
    let mut huge: serde_json::Value = serde_json::from_slice(&payloads[1]).unwrap();
    huge["note"] = "x".repeat(2 << 20).into();
    let mut file = Vec::new();
    for line in [
        payloads[0].clone(),
        huge.to_string().into_bytes(),
        b"{\"timestamp\": \"\xff\xfe\"}".to_vec(),
        payloads[2].clone(),
    ] {
        file.extend_from_slice(&line);
        file.push(b'\n');
    }
    let input = dir.path().join("bad.ndjson");
    std::fs::write(&input, file).unwrap();
    let lake = dir.path().join("lake");
    let out = crate::support::stockpipe(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--once",
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let summary = crate::support::last_json_line(&out);
    assert_eq!(summary["consumed"], 3, "{summary}");
    assert_eq!(summary["accepted"], 2, "{summary}");
    assert_eq!(summary["dead_lettered"], 1, "{summary}");
    let refused = &summary["input_refused"];
    assert_eq!(refused.as_array().map(Vec::len), Some(1), "{summary}");
    assert_eq!(refused[0]["at"], "line 2");
    assert!(refused[0]["bytes"].as_u64() > Some(2 << 20));
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too large")),
        "{summary}"
    );
}
