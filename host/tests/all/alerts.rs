//! The alert stage end to end: `run --once --input` of a 100,000-tick simulated file (the embedded
//! cluster, three partitions), with the aggregate stage and a rule of every kind, indexing into
//! noida-db's Elasticsearch API — killed with SIGKILL once some of it is committed, and run
//! again, resuming its state from the checkpoint at the committed offset. The index then holds
//! exactly the events — id, rule, state, instrument, value, threshold, time and source — that a
//! computation over the lake's tick and bar documents raises in one go, sharing no code with the
//! guest (`alerts_reference.py`): the killed run's events and the resumed run's, each id once,
//! none missing (a state lost at the kill would miss or repeat a firing), none new. `guest diff`
//! replays that lake under the same rules (the index's ids) and under another set (differing
//! from them as the reference under each set does).
//!
//! A rebalance: two hosts in a group on `stockpipe broker`; the partition that moves while its
//! rule is firing keeps its state (restored at the committed offset), so it does not fire again.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TICKS: usize = 100_000;

/// A rule of every kind; thresholds the simulated ticks cross several times.
const RULES: &str = r#"
[[alert.rules]]
name = "move"
kind = "change_pct"
threshold = 8.0
clear = 6.0
direction = "both"
cooldown_ms = 60000

[[alert.rules]]
name = "wide"
kind = "spread_bps"
threshold = 18.0
clear = 10.0
for_ms = 2000

[[alert.rules]]
name = "cross"
kind = "price_cross"
threshold = 1500.0
clear = 1495.0

[[alert.rules]]
name = "spike"
kind = "volume_spike"
threshold = 2.0
clear = 1.0
window_bars = 5

[[alert.rules]]
name = "turbulent"
kind = "volatility"
threshold = 0.002
clear = 0.001
window_bars = 5
"#;

/// `run --once --input` on the embedded cluster with the aggregate stage and [`RULES`], into
/// `lake` and the Elasticsearch API at `es`.
fn run(input: &Path, config: &Path, lake: &Path, es: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockpipe"));
    command
        .args(["run", "--once", "--input"])
        .arg(input)
        .arg("--config")
        .arg(config)
        .arg("--lake")
        .arg(lake)
        .env("STOCKPIPE_KAFKA_EMBEDDED_PARTITIONS", "3")
        .env("STOCKPIPE_ELASTICSEARCH_URL", es)
        .env("RUST_LOG", "warn,rdkafka=off")
        .env("STOCKPIPE_AGGREGATE_ENABLED", "true")
        .env("STOCKPIPE_AGGREGATE_CHECKPOINT_MS", "250")
        .env("STOCKPIPE_ALERT_CHECKPOINT_MS", "250")
        .env("STOCKPIPE_LAKE_ROLL_BYTES", "2000000")
        .env("STOCKPIPE_LAKE_ROLL_SECONDS", "1");
    command
}

/// The alert events in `index`, by id.
async fn events(es: &str, index: &str) -> BTreeMap<String, Value> {
    let hits = crate::support::es_search(es, index, 10_000).await;
    assert!(hits.len() < 10_000, "more events than one page");
    let mut by_id = BTreeMap::new();
    for hit in &hits {
        let event = hit["_source"].clone();
        let id = event["alert_id"].as_str().unwrap().to_string();
        assert_eq!(hit["_id"], id.as_str(), "_id is the alert id");
        assert!(
            by_id.insert(id, event).is_none(),
            "an id twice in the index"
        );
    }
    by_id
}

/// A number to 15 significant digits.
fn digits15(v: &Value) -> String {
    format!("{:.14e}", v.as_f64().expect("a number"))
}

/// What the reference says the lake's ticks and bars raise, by id.
fn reference(lake: &Path, rules: &Value) -> BTreeMap<String, Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/all/alerts_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(lake)
        .arg("stock-stream")
        .arg(rules.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_id = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let id = event["alert_id"].as_str().unwrap().to_string();
        assert!(
            by_id.insert(id, event).is_none(),
            "the reference raised an id twice"
        );
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_equal_an_independent_computation_and_keep_their_ids_across_a_kill() {
    let _heavy = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("day.ndjson");
    let mut text = crate::support::simulated_payloads(TICKS, 20).join(&b'\n');
    text.push(b'\n');
    std::fs::write(&input, &text).unwrap();
    let config = dir.path().join("stockpipe.toml");
    std::fs::write(&config, RULES).unwrap();
    let rules: Value = {
        let parsed: toml::Value = toml::from_str(RULES).unwrap();
        serde_json::to_value(&parsed["alert"]["rules"]).unwrap()
    };

    let noida = crate::emulators::NoidaDb::start();

    // Killed once some of it is committed, then the same command again: state and offsets
    // resume at the checkpoint.
    let lake = dir.path().join("lake");
    tokio::task::block_in_place(|| {
        crate::support::killed_once_committed_then_resumed(
            || run(&input, &config, &lake, &noida.es_url),
            &lake,
            TICKS as i64,
        )
    });
    let got = events(&noida.es_url, "stock-alerts").await;
    let want = reference(&lake, &rules);
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "the same events, each once, none missing, none new"
    );
    let mut per_rule: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (id, event) in &got {
        let expected = &want[id];
        for field in ["rule", "state", "instrument_token"] {
            assert_eq!(event[field], expected[field], "{id} {field}");
        }
        // noida-db keeps 15 significant digits of a double: compared at that precision.
        for field in ["value", "threshold"] {
            assert_eq!(
                digits15(&event[field]),
                digits15(&expected[field]),
                "{id} {field}"
            );
        }
        assert_eq!(
            event["event_time"],
            stockpipe_model::time::format_rfc3339_micros(
                expected["event_time_us"].as_i64().unwrap()
            ),
            "{id}"
        );
        assert_eq!(event["source"]["partition"], expected["partition"], "{id}");
        assert_eq!(event["source"]["offset"], expected["offset"], "{id}");
        *per_rule
            .entry((
                event["rule"].as_str().unwrap().into(),
                event["state"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    for rule in ["move", "wide", "cross", "spike", "turbulent"] {
        for state in ["firing", "resolved"] {
            assert!(
                per_rule
                    .get(&(rule.into(), state.into()))
                    .is_some_and(|&n| n > 0),
                "every rule fires and resolves: {per_rule:?}"
            );
        }
    }
    rule_sets_are_compared_over_the_lake(dir.path(), &lake, &config, &got, &want);
}

/// `guest diff --stage alert` over the lake, its JSON report.
fn guest_diff(lake: &Path, rules: &Path, new_rules: &Path, examples: usize) -> Value {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (lake, rules, new_rules) = (path(lake), path(rules), path(new_rules));
    let examples = examples.to_string();
    let out = crate::support::stockpipe(&[
        "guest",
        "diff",
        "alert",
        "alert",
        "--lake",
        &lake,
        "--rules",
        &rules,
        "--new-rules",
        &new_rules,
        "--examples",
        &examples,
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The kinds of difference between two sets of events by id, as `guest diff` names them.
fn differences(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    let kind = |what: &str, e: &Value| {
        format!(
            "{what}:{}:{}",
            e["rule"].as_str().unwrap(),
            e["state"].as_str().unwrap()
        )
    };
    for (id, o) in old {
        let what = match new.get(id) {
            None => "only-old",
            Some(n)
                if n["threshold"] != o["threshold"]
                    || digits15(&n["value"]) != digits15(&o["value"]) =>
            {
                "changed"
            }
            Some(_) => continue,
        };
        *kinds.entry(kind(what, o)).or_default() += 1;
    }
    for (id, n) in new {
        if !old.contains_key(id) {
            *kinds.entry(kind("only-new", n)).or_default() += 1;
        }
    }
    kinds
}

/// `guest diff` of two rule sets over the lake the killed and resumed run wrote: the rules that
/// ran raise exactly the index's ids, and a changed rule set differs from them exactly as the
/// reference computation under each set does.
fn rule_sets_are_compared_over_the_lake(
    dir: &Path,
    lake: &Path,
    config: &Path,
    indexed: &BTreeMap<String, Value>,
    want: &BTreeMap<String, Value>,
) {
    let none = dir.join("no-rules.toml");
    std::fs::write(&none, "[alert]\nrules = []\n").unwrap();
    let report = guest_diff(lake, config, &none, 1_000_000);
    let mut replayed = BTreeSet::new();
    for (kind, examples) in report["examples"].as_object().unwrap() {
        assert!(kind.starts_with("only-old:"), "{kind}");
        for e in examples.as_array().unwrap() {
            assert!(replayed.insert(e["alert_id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(report["ticks"], TICKS as u64, "every tick replayed once");
    assert!(report["bars"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["bars_without_tick"], 0, "each bar after its tick");
    assert_eq!(report["new"]["events"], 0);
    assert_eq!(
        replayed,
        indexed.keys().cloned().collect::<BTreeSet<_>>(),
        "the rules that ran, replayed, raise the index's ids"
    );

    // Another rule set: `move` and `spike` at other levels (a spike's firing at the same bar with
    // another threshold: changed), `wide` without its for_ms, `cross` gone, a rule of a new name.
    let changed = RULES
        .replace("threshold = 8.0", "threshold = 9.0")
        .replace("threshold = 2.0", "threshold = 2.1")
        .replace("for_ms = 2000", "for_ms = 0")
        .replace("name = \"cross\"", "name = \"cross_1490\"")
        .replace(
            "threshold = 1500.0\nclear = 1495.0",
            "threshold = 1490.0\nclear = 1485.0",
        );
    let candidate = dir.join("candidate.toml");
    std::fs::write(&candidate, &changed).unwrap();
    let rules: Value = {
        let parsed: toml::Value = toml::from_str(&changed).unwrap();
        serde_json::to_value(&parsed["alert"]["rules"]).unwrap()
    };
    let report = guest_diff(lake, config, &candidate, 1);
    let expected = differences(want, &reference(lake, &rules));
    let got: BTreeMap<String, u64> = serde_json::from_value(report["differences"].clone()).unwrap();
    assert_eq!(got, expected);
    for kind in [
        "only-old:move:firing",
        "changed:spike:firing",
        "only-new:wide:firing",
        "only-old:cross:firing",
        "only-new:cross_1490:firing",
    ] {
        assert!(got.contains_key(kind), "{kind} in {got:?}");
    }
    assert_eq!(
        report["changed"].as_u64().unwrap(),
        expected.values().sum::<u64>()
    );
}

/// One rule for the rebalance: |change| ≥ 5 fires, below 3 resolves.
const MOVE: &str = r#"
[[alert.rules]]
name = "move"
kind = "change_pct"
threshold = 5.0
clear = 3.0
direction = "both"
"#;

/// A `stockpipe run` host in the `stockpipe` group with [`MOVE`], logging JSON to `log`; its lake
/// rolls and its alert state is checkpointed within a second, so it commits soon after a batch.
fn alert_host(brokers: &str, es: &str, dir: &Path, log: &Path) -> crate::failover::Process {
    crate::failover::host_with(brokers, es, &dir.join("lake"), log, |command| {
        command
            .arg("--config")
            .arg(dir.join("move.toml"))
            .env("STOCKPIPE_LAKE_ROLL_SECONDS", "1")
            .env("STOCKPIPE_ALERT_CHECKPOINT_MS", "200");
    })
}

/// Produces, to each partition `p` of two, a tick of instrument `1000 + p` per `change`.
async fn produce_changes(brokers: &str, changes: &[f64]) {
    use rdkafka::producer::FutureRecord;
    let producer = stockpipe::source::kafka::producer(
        &stockpipe::source::kafka::Connection::plaintext(brokers),
    )
    .unwrap();
    let base: Value = serde_json::from_slice(&crate::support::sample_payloads()[0]).unwrap();
    for partition in 0..2 {
        for change in changes {
            let mut tick = base.clone();
            tick["instrument_token"] = (1000 + partition as u64).into();
            tick["change"] = (*change).into();
            let payload = tick.to_string();
            let key = (1000 + partition).to_string();
            producer
                .send(
                    FutureRecord::to("stock-stream")
                        .partition(partition)
                        .key(&key)
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }
}

/// The distinct alert events the hosts sent to Elasticsearch: id → (instrument, state, offset).
async fn sent_alerts(es: &wiremock::MockServer) -> BTreeMap<String, (u64, String, i64)> {
    let mut by_id = BTreeMap::new();
    for (meta, event) in crate::failover::bulk_documents(es, "stock-alerts").await {
        let id = event["alert_id"].as_str().unwrap().to_string();
        assert_eq!(meta["_id"], id.as_str());
        let state = event["state"].as_str().unwrap().to_string();
        let at = event["source"]["offset"].as_i64().unwrap();
        by_id.insert(id, (event["instrument_token"].as_u64().unwrap(), state, at));
    }
    by_id
}

/// A rule firing on both partitions of one host; a second host joins and takes one of them. The
/// newcomer restores that partition's alert state at the committed offset, so the next tick still
/// past the threshold raises nothing; the rule resolves and fires again on the newcomer with
/// the ids a single host would have given them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_by_a_rebalance_keeps_its_firing_alert() {
    use stockpipe::position::offsets;
    use stockpipe_model::alert::{AlertState, alert_id};
    let _heavy = crate::support::HEAVY.lock().await;
    let (_broker, brokers) = crate::failover::broker(2);
    let es = crate::support::elasticsearch(crate::support::BulkCreated).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("move.toml"), MOVE).unwrap();
    let (first_log, joiner_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let logs = || {
        [&first_log, &joiner_log]
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .join("\n----\n")
    };
    let first = alert_host(&brokers, &es.uri(), dir.path(), &first_log);

    // Offsets 0-3 of each partition: the rule fires at 1 and is still firing at 3.
    produce_changes(&brokers, &[1.0, 6.0, 7.0, 6.5]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = offsets([(0, 4), (1, 4)]);
    while crate::swap::stockpipe_group_committed(&brokers, &end).await != end {
        assert!(Instant::now() < deadline, "not committed: {}", logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        sent_alerts(&es).await.len(),
        2,
        "a firing on each partition"
    );

    let joiner = alert_host(&brokers, &es.uri(), dir.path(), &joiner_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let assigned =
            crate::failover::logged_partitions(&joiner_log, "partitions assigned").concat();
        if let [partition] = assigned[..] {
            break partition as i32;
        }
        assert!(assigned.is_empty(), "one partition each: {assigned:?}");
        assert!(Instant::now() < deadline, "no partition moved: {}", logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Offsets 4-8: still past the threshold at 4 and 5, resolved at 6, firing again at 8.
    produce_changes(&brokers, &[7.0, 6.0, 2.0, 1.0, -6.0]).await;
    let expected: BTreeMap<String, (u64, String, i64)> = (0..2)
        .flat_map(|partition: i32| {
            let token = 1000 + partition as u64;
            [
                (AlertState::Firing, 1),
                (AlertState::Resolved, 6),
                (AlertState::Firing, 8),
            ]
            .map(|(state, offset)| {
                let id = alert_id(
                    "move",
                    token,
                    "stock-stream",
                    partition,
                    offset,
                    None,
                    state,
                );
                (id, (token, state.name().to_string(), offset))
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = offsets([(0, 9), (1, 9)]);
    while crate::swap::stockpipe_group_committed(&brokers, &end).await != end {
        assert!(Instant::now() < deadline, "not committed: {}", logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    joiner.stop();
    first.stop();
    assert_eq!(
        sent_alerts(&es).await,
        expected,
        "each partition's events as one host raises them: no firing again after the move\n{}",
        logs()
    );
    let restored = std::fs::read_to_string(&joiner_log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|v| {
            v["message"] == "state restored from its checkpoint"
                && v["stage"] == "alert"
                && v["partition"] == moved
                && v["offset"] == 4
        });
    assert!(
        restored,
        "the joiner restored partition {moved} at 4: {}",
        logs()
    );
}
