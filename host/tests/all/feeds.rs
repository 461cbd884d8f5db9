//! Every built-in tick shape through the whole pipeline: Kite's ticker in its three modes (an
//! index among the ticks) and the quote API, from `data/kite/`, produced to the embedded cluster
//! with their record timestamps set, consumed by `run --once` with the aggregate stage on. The
//! lake's documents and bars are held to golden files (`host/tests/golden/feeds/`), guest versions
//! left out; `GOLDEN_UPDATE=1` rewrites them (review the diff).

use rdkafka::producer::FutureRecord;
use std::path::PathBuf;
use std::time::Duration;
use stockpipe::config::Config;
use stockpipe::source::kafka as kafka_source;

/// The records' timestamps: from 2021-05-25 10:00:00 UTC (15:30 IST, the close), 40 s apart (the
/// ticks without a time of their own close a one-minute bar).
const RECORD_MS: i64 = 1_621_936_800_000;

fn golden(name: &str) -> PathBuf {
    crate::support::workspace()
        .join("host/tests/golden/feeds")
        .join(format!("{name}.ndjson"))
}

/// The lake's lines under `prefix`, in (partition, offset or bar) order, without guest versions.
fn lake_lines(lake: &std::path::Path, prefix: &str) -> Vec<serde_json::Value> {
    let mut docs = Vec::new();
    let dir = lake.join(prefix);
    if !dir.exists() {
        return docs;
    }
    let mut files = crate::support::walk(&dir);
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let mut d: serde_json::Value = serde_json::from_str(line).unwrap();
            let o = d.as_object_mut().unwrap();
            o.remove("guest_versions");
            o.remove("guest_version");
            docs.push(d);
        }
    }
    docs
}

/// `run --once` in process, with the embedded aggregate guest.
async fn run_once_with_bars(config: &Config, brokers: &str) -> stockpipe::pipeline::RunSummary {
    use stockpipe::chain::aggregate::Aggregation;
    use stockpipe::runtime::{GuestComponent, StageKind, embedded_component};
    crate::e2e::run_once_with(config, brokers, |pipeline, sandbox| {
        let kind = StageKind::Aggregate;
        let aggregate =
            GuestComponent::load(&sandbox, kind, embedded_component(kind), "embedded").unwrap();
        pipeline.with_aggregation(Aggregation::new(
            sandbox,
            std::sync::Arc::new(aggregate),
            config.aggregate.guest_config(),
        ))
    })
    .await
}

/// Produces `payloads` to the input topic, the `i`-th with the record time `at(i)`.
async fn produce_at(
    config: &Config,
    brokers: &str,
    payloads: &[Vec<u8>],
    at: impl Fn(usize) -> i64,
) {
    let producer = kafka_source::producer(&kafka_source::Connection::plaintext(brokers)).unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        producer
            .send(
                FutureRecord::<(), _>::to(&config.kafka.topic)
                    .payload(payload)
                    .timestamp(at(i)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

async fn through_the_pipeline(name: &str) {
    let payloads: Vec<Vec<u8>> = std::fs::read(
        crate::support::workspace()
            .join("data/kite")
            .join(format!("{name}.ndjson")),
    )
    .unwrap()
    .split(|&b| b == b'\n')
    .filter(|l| !l.is_empty())
    .map(<[u8]>::to_vec)
    .collect();
    let mut config = Config::default();
    config.aggregate.enabled = true;
    // The ticks are from 2021; the bars close as the watermark passes them.
    config.aggregate.allowed_lateness_ms = 0;
    let cluster = crate::support::embedded_cluster(&config, 1);
    let brokers = cluster.bootstrap_servers();
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    produce_at(&config, &brokers, &payloads, |i| {
        RECORD_MS + 40_000 * i as i64
    })
    .await;
    let summary = run_once_with_bars(&config, &brokers).await;
    assert_eq!(
        summary.counts.consumed,
        payloads.len() as u64,
        "{summary:?}"
    );
    assert_eq!(
        summary.counts.accepted,
        payloads.len() as u64,
        "every tick of a built-in shape is accepted: {summary:?}"
    );
    let mut lines = lake_lines(lake.path(), "stock-stream");
    assert_eq!(lines.len(), payloads.len());
    let bars = lake_lines(lake.path(), "stock-bars");
    assert!(
        !bars.is_empty(),
        "{name}: the ticks close a bar; the lake holds {:?}; {summary:?}",
        crate::support::walk(lake.path())
    );
    lines.extend(bars);
    let text: String = lines.iter().map(|d| format!("{d}\n")).collect();
    let path = golden(name);
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GOLDEN_UPDATE=1 writes it)", path.display()));
    assert_eq!(
        text,
        want,
        "{name}: the lake differs from {}",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_ticker_ltp_ticks_take_their_record_time() {
    through_the_pipeline("ticker_ltp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_ticker_quote_ticks() {
    through_the_pipeline("ticker_quote").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_ticker_full_ticks_with_every_timestamp_form() {
    through_the_pipeline("ticker_full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_quote_api_ticks() {
    through_the_pipeline("quote_api").await;
}

/// Several ticks in one message — KiteTicker's `on_ticks` list, the quote API's `data` map — are
/// split: each its own document (`_id` and `source.tick` with its place), its own lake line
/// (`offset.k`); a bad one is dead-lettered alone, its own JSON with its place in a header and the
/// field named, and the good ticks of the same message are kept. The offsets are committed to the
/// end once every tick is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ticks_in_one_message_are_split_and_a_bad_one_refused_alone() {
    use stockpipe::sink::kafka::headers;
    let ticker: Vec<serde_json::Value> =
        std::fs::read_to_string(crate::support::workspace().join("data/kite/ticker_full.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let mut bad = ticker[1].clone();
    bad.as_object_mut().unwrap().remove("last_price");
    let list = serde_json::json!([ticker[0], bad, ticker[2]]);
    let quotes: Vec<serde_json::Value> =
        std::fs::read_to_string(crate::support::workspace().join("data/kite/quote_api.ndjson"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let answer = serde_json::json!({"status": "success",
        "data": {"NSE:INFY": quotes[0], "NSE:NIFTY 50": quotes[1]}});
    let single = &ticker[3];
    let payloads: Vec<Vec<u8>> = [&list, &answer, single]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    let mut config = Config::default();
    let cluster = crate::support::embedded_cluster(&config, 1);
    let brokers = cluster.bootstrap_servers();
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    produce_at(&config, &brokers, &payloads, |_| RECORD_MS).await;
    let summary = crate::e2e::run_once(&config, &brokers).await;
    assert_eq!(
        (
            summary.counts.consumed,
            summary.counts.accepted,
            summary.counts.rejected
        ),
        (3, 5, 1),
        "messages consumed; ticks accepted and refused: {summary:?}"
    );
    assert_eq!(
        summary.committed_offsets,
        stockpipe::position::offsets([(0, 3)]),
        "committed to the end once every tick is stored"
    );
    let docs = crate::support::lake_documents(lake.path());
    let places: std::collections::BTreeSet<(i64, Option<i64>)> = docs
        .iter()
        .map(|d| {
            (
                d["source"]["offset"].as_i64().unwrap(),
                d["source"]["tick"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            (0, Some(0)),
            (0, Some(2)),
            (1, Some(0)),
            (1, Some(1)),
            (2, None)
        ]
        .into(),
        "each tick its place; a one-tick message none"
    );
    let names: Vec<String> = crate::support::walk(&lake.path().join("stock-stream"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("0-0-") && n.contains(".ndjson")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains("-2.ndjson")), "{names:?}");
    let dead = crate::support::dead_letters(&brokers).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (payload, hdrs) = &dead[0];
    assert_eq!(hdrs[headers::SOURCE_OFFSET], "0");
    assert_eq!(hdrs[headers::SOURCE_TICK], "1");
    assert_eq!(hdrs[headers::REASON_CODE], "missing-field");
    assert!(
        hdrs[headers::REASON].contains("[1]: field `last_price`"),
        "{hdrs:?}"
    );
    let refused: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(refused, bad, "the refused tick's own JSON");
    // The quote API's keys, and its fields no column takes, are kept in `extra`.
    let infy = docs
        .iter()
        .find(|d| d["extra"]["data_key"] == "NSE:INFY")
        .expect("the quote's key kept");
    assert_eq!(infy["extra"]["upper_circuit_limit"], 1528.6);
}

/// `stockpipe input check` says, tick by tick, how a file is read: the shape, the time and its
/// source, the fields — or why the decoder refuses a tick.
#[test]
fn input_check_tells_how_each_tick_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.ndjson");
    let ltp =
        std::fs::read_to_string(crate::support::workspace().join("data/kite/ticker_ltp.ndjson"))
            .unwrap();
    let first = ltp.lines().next().unwrap();
    std::fs::write(
        &file,
        format!(
            "{first}\n[{first}, {{\"mode\": \"ltp\", \"instrument_token\": 7}}]\n{{\"timestamp\": 1621936800, \"instrument_token\": 5, \"last_price\": 1.5}}\n"
        ),
    )
    .unwrap();
    let out = crate::support::stockpipe(&["input", "check", file.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["shape"], "Kite ticker");
    assert_eq!(lines[0]["timestamp_source"], "kafka");
    assert_eq!(lines[2]["at"], "[1]");
    assert!(
        lines[2]["refused"]
            .as_str()
            .unwrap()
            .contains("field `last_price` is missing"),
        "{lines:?}"
    );
    assert_eq!(lines[3]["shape"], "flat (the sample's)");
    assert_eq!(
        lines[3]["timestamp"], "2021-05-25T10:00:00.000000Z",
        "epoch seconds"
    );
    assert_eq!(lines[3]["timestamp_source"], "tick");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("4 ticks") && stderr.contains("1 refused"),
        "{stderr}"
    );
}

/// `stockpipe run --once` over `input` (relative to the workspace) with `config`, into `lake`:
/// the run's summary.
fn run_mapped(config: &str, input: &str, lake: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .current_dir(crate::support::workspace())
        .args([
            "run", "--once", "--config", config, "--input", input, "--lake",
        ])
        .arg(lake)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    crate::support::last_json_line(&out)
}

/// The README's mapping for Angel One SmartAPI (`data/feeds/angel_one.toml`): paise scaled to
/// rupees, the string token read, epoch milliseconds and seconds by magnitude, the book's
/// `no of orders`, and what no column takes kept in `extra`.
#[test]
fn angel_one_smartapi_ticks_are_read_by_the_readme_s_mapping() {
    let lake = tempfile::tempdir().unwrap();
    let summary = run_mapped(
        "data/feeds/angel_one.toml",
        "data/feeds/angel_one_snapquote.ndjson",
        lake.path(),
    );
    assert_eq!(summary["accepted"], 2, "{summary}");
    let docs = crate::support::lake_documents(lake.path());
    let snap = docs.iter().find(|d| d["instrument_token"] == 2885).unwrap();
    assert_eq!(snap["last_price"], 2450.3);
    assert_eq!(snap["close"], 2445.0);
    assert_eq!(snap["volume"], 1_234_567);
    assert_eq!(snap["buy_quantity"], 12_345);
    assert_eq!(snap["timestamp"], "2023-11-16T07:45:00.000000Z");
    assert_eq!(snap["last_trade_time"], "2023-11-16T07:44:59.000000Z");
    assert_eq!(snap["depth"]["buy"][0]["price"], 2450.25);
    assert_eq!(snap["depth"]["buy"][0]["orders"], 5);
    assert_eq!(snap["extra"]["upper_circuit_limit"], 268_950);
    assert_eq!(snap["extra"]["subscription_mode_val"], "SNAP_QUOTE");
    let ltp = docs.iter().find(|d| d["instrument_token"] == 1594).unwrap();
    assert_eq!(ltp["last_price"], 1412.55);
    assert!(
        ltp.get("volume").is_none() && ltp.get("depth").is_none(),
        "{ltp}"
    );
}

/// The README's mapping for a generic trade/quote feed (`data/feeds/trades.toml`): symbols through
/// the token table, numeric strings, one-level bid and ask; a symbol the table lacks is refused.
#[test]
fn a_generic_trade_feed_is_read_by_the_readme_s_mapping() {
    let lake = tempfile::tempdir().unwrap();
    let summary = run_mapped(
        "data/feeds/trades.toml",
        "data/feeds/trades.ndjson",
        lake.path(),
    );
    assert_eq!(
        (&summary["accepted"], &summary["rejected"]),
        (&2.into(), &1.into()),
        "{summary}"
    );
    let docs = crate::support::lake_documents(lake.path());
    let aapl = docs
        .iter()
        .find(|d| d["instrument_token"] == 265_598)
        .unwrap();
    assert_eq!(aapl["last_price"], 187.52);
    assert_eq!(aapl["last_quantity"], 100);
    assert_eq!(aapl["timestamp"], "2024-01-02T14:30:00.125000Z");
    assert_eq!(aapl["depth"]["sell"][0]["price"], 187.53);
    assert_eq!(
        aapl["spread"].as_f64().map(|s| (s * 100.0).round()),
        Some(2.0)
    );
    assert_eq!(aapl["extra"]["venue"], "XNAS");
    let msft = docs
        .iter()
        .find(|d| d["instrument_token"] == 272_093)
        .unwrap();
    assert_eq!(msft["last_quantity"], 25, "a numeric string");
    // The refusal, as `input check` shows it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .current_dir(crate::support::workspace())
        .args(["input", "check", "data/feeds/trades.ndjson"])
        .args(["--config", "data/feeds/trades.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let tsla: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert!(
        tsla["refused"]
            .as_str()
            .unwrap()
            .starts_with("unknown-symbol"),
        "{tsla}"
    );
}

/// A mapping that cannot work stops the start, naming the key.
#[test]
fn a_broken_mapping_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.ndjson");
    std::fs::write(&input, "{}\n").unwrap();
    for (toml, key) in [
        (
            "[input.fields]\ninstrument_token = \"token\"\n",
            "input.fields.last_price",
        ),
        (
            "[input.fields]\ninstrument_token = \"t\"\nlast_price = \"p\"\nbid = \"b\"\n",
            "input.fields.bid",
        ),
        (
            "[input]\ntokens = \"/no/such/tokens.csv\"\n[input.fields]\ninstrument_token = \"t\"\nlast_price = \"p\"\n",
            "input.tokens",
        ),
        ("[input]\nbuiltin_shapes = false\n", "input.builtin_shapes"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["input", "check"])
            .arg(&input)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(key),
            "{toml}: {stderr}"
        );
    }
}
