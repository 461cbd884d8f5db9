//! The host as a running service, seen from outside: the dashboard in a real browser (Debian's
//! chromium, headless), `/metrics`, `/ready`, and the JSON logs it writes when stderr is not a
//! terminal. Each test starts the `stockpipe` binary with the embedded Kafka and a simulated feed.

use crate::emulators::free_port;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stockpipe::source::simulate::{SimulateOptions, Simulator};

const SEED: u64 = 77;

/// `stockpipe run --simulate …` on a free port; stderr to `logs`. Killed on drop.
struct Host {
    child: Child,
    base: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(lake: &Path, logs: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--simulate", "2000", "--simulate-instruments", "5"])
            .args(["--simulate-seed", &SEED.to_string()])
            .args(["--http", &format!("127.0.0.1:{port}"), "--lake"])
            .arg(lake)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,rdkafka=warn")
            .env_remove("STOCKPIPE_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(logs).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        reqwest::get(format!("{}{path}", self.base)).await.ok()
    }

    /// Waits until `check` holds for the JSON of `path`, or fails with the last answer.
    async fn wait_json(&mut self, path: &str, what: &str, check: impl Fn(u16, &Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the host exited: {status}");
            }
            if let Some(r) = self.get(path).await {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if check(status, &body) {
                    return;
                }
                last = Some((status, body));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{what}: not within 90 s; last {path}: {last:?}");
    }

    /// SIGINT, then the summary line it prints on the way out.
    fn stop(mut self) -> Value {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the host exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "the host did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut out).unwrap();
        serde_json::from_str(out.lines().last().expect("a summary line")).unwrap()
    }
}

/// Instruments the simulated market of `SEED` trades.
fn simulated_tokens() -> Vec<u64> {
    let mut simulator = Simulator::new(&SimulateOptions {
        instruments: 5,
        seed: SEED,
        ..Default::default()
    });
    let mut tokens: Vec<u64> = (0..500)
        .map(|_| simulator.next_tick().instrument_token)
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens
}

fn chromium() -> &'static str {
    const PATH: &str = "/usr/bin/chromium";
    assert!(
        Path::new(PATH).exists(),
        "{PATH} is missing: install Debian's chromium (scripts/test.sh does)"
    );
    PATH
}

/// The page's DOM after its scripts ran for a few (virtual) seconds.
fn dump_dom(url: &str, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The number in `attr="…"` of the element with `id`.
fn data_number(dom: &str, id: &str, attr: &str) -> u64 {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let tag = &dom[start..start + dom[start..].find('>').unwrap()];
    let Some(at) = tag.find(&format!("{attr}=\"")) else {
        panic!("#{id} has no {attr}: <{tag}>");
    };
    let value = &tag[at + attr.len() + 2..];
    value[..value.find('"').unwrap()].parse().unwrap()
}

/// The text of the table with `id`.
fn table<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("<table id=\"{id}\"")).unwrap();
    &dom[start..start + dom[start..].find("</table>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_live_prices_throughput_guests_and_forecasts_in_a_real_browser() {
    let _heavy = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let tokens = simulated_tokens();
    let forecast_token = tokens[0];
    // What `stockpipe ml forecast` would have left in the lake.
    let forecasts = dir.path().join("lake/forecasts/dt=2026-11-28");
    std::fs::create_dir_all(&forecasts).unwrap();
    let rows: String = (1..=3)
        .map(|step| {
            let row = json!({
                "instrument_token": forecast_token, "model": "ARIMA(1,1,0)", "horizon_step": step,
                "forecast_timestamp": format!("2099-01-01T00:0{step}:00Z"), "forecast_value": 100.0 + step as f64,
                "prediction_interval_lower_bound": 99.0, "prediction_interval_upper_bound": 105.0,
                "confidence_level": 0.9, "aic": 12.5, "generated_at": "2026-11-28T00:00:00Z"
            });
            format!("{row}\n")
        })
        .collect();
    std::fs::write(forecasts.join("1795000000000000.ndjson"), rows).unwrap();

    let logs = dir.path().join("host.log");
    let mut host = Host::start(&lake, &logs, &[], &[]);
    host.wait_json("/ready", "ready", |status, _| status == 200)
        .await;
    host.wait_json(
        "/api/live",
        "prices and forecasts in the live view",
        |_, live| {
            live["totals"]["accepted"].as_u64() > Some(1_000)
                && live["forecasts"].as_array().is_some_and(|f| f.len() == 3)
                // The default rules fire on the simulated market's 5 % moves.
                && live["alerts"].as_array().is_some_and(|a| !a.is_empty())
        },
    )
    .await;

    let page = dump_dom(&format!("{}/", host.base), &dir.path().join("profile-all"));
    assert!(
        data_number(&page, "prices", "data-points") > 20,
        "price lines drawn"
    );
    assert!(
        data_number(&page, "prices", "data-painted") > 500,
        "price canvas painted"
    );
    assert!(
        data_number(&page, "rates", "data-points") > 0,
        "throughput drawn"
    );
    assert!(
        data_number(&page, "rates", "data-painted") > 500,
        "throughput canvas painted"
    );
    let badge = &page[page.find("id=\"ready\"").expect("the badge")..];
    let badge = &badge[..badge.find("</span>").unwrap()];
    assert!(
        badge.contains("badge ok") && badge.ends_with(">ready"),
        "readiness badge: {badge}"
    );
    let guests = table(&page, "guests");
    // The chain's three and the alert stage (on by default).
    for stage in ["validate", "enrich", "route", "alert"] {
        assert!(guests.contains(&format!("<td>{stage}</td>")), "{guests}");
    }
    assert_eq!(guests.matches("sha256:").count(), 4, "{guests}");
    let alerts = table(&page, "alerts");
    assert!(
        alerts.contains("<td>firing</td>") && alerts.contains("<td>change_pct</td>"),
        "{alerts}"
    );
    let forecast_table = table(&page, "forecasts");
    assert!(
        forecast_table.contains(&forecast_token.to_string())
            && forecast_table.contains("ARIMA(1,1,0)"),
        "{forecast_table}"
    );
    let consumed: u64 = {
        let needle = "id=\"total-consumed\">";
        let at = page.find(needle).expect("totals") + needle.len();
        page[at..at + page[at..].find('<').unwrap()]
            .replace(',', "")
            .parse()
            .unwrap()
    };
    assert!(consumed > 1_000, "consumed {consumed}");

    // One instrument: its price line and its forecast on the same chart.
    let one = dump_dom(
        &format!("{}/?instrument={forecast_token}", host.base),
        &dir.path().join("profile-one"),
    );
    assert!(
        one.contains(&format!("<option value=\"{forecast_token}\" selected")) || {
            // Chromium serializes the selected state as a property, not always as an attribute.
            one.contains("Last price and the latest forecast (ARIMA(1,1,0))")
        }
    );
    // Price points plus 3 forecast values and their 6 interval bounds.
    assert!(
        data_number(&one, "prices", "data-points") > 9,
        "{}",
        table(&one, "forecasts")
    );

    // librdkafka's statistics of a consumer that keeps up.
    let metrics = host.get("/metrics").await.unwrap().text().await.unwrap();
    for partition in 0..3 {
        for family in ["consumer_lag", "uncommitted_messages"] {
            let series =
                format!("stockpipe_{family}{{topic=\"stock-stream\",partition=\"{partition}\"}}");
            assert!(metrics.contains(&series), "no {series} in\n{metrics}");
        }
    }

    let summary = host.stop();
    assert!(summary["consumed"].as_u64() > Some(1_000), "{summary}");
    assert_eq!(summary["rejected"], 0);

    // Not a terminal: one JSON object per line.
    let text = std::fs::read_to_string(&logs).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "HTTP API listening" && l["level"] == "INFO"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness_report_a_failing_elasticsearch() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let es = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex("^/_index_template/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&es)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/_bulk"))
        .respond_with(ResponseTemplate::new(503).set_body_string("unavailable"))
        .mount(&es)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("host.log");
    let mut host = Host::start(
        &dir.path().join("lake"),
        &logs,
        &["--es-url", &es.uri()],
        &[
            ("STOCKPIPE_ELASTICSEARCH_BULK_MAX_AGE_MS", "100"),
            ("STOCKPIPE_ELASTICSEARCH_RETRY_MAX_MS", "200"),
            ("STOCKPIPE_ELASTICSEARCH_SHUTDOWN_GRACE_MS", "1000"),
            ("STOCKPIPE_KAFKA_STATISTICS_INTERVAL_MS", "500"),
        ],
    );
    host.wait_json("/ready", "Elasticsearch reported down", |status, body| {
        status == 503
            && body["dependencies"]["elasticsearch"]["ready"] == false
            && body["dependencies"]["elasticsearch"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("503"))
            && body["dependencies"]["kafka"]["ready"] == true
            && body["dependencies"]["lake"]["ready"] == true
    })
    .await;

    // `/ready` turns on the first failed request; the retries follow it.
    let requests = r#"stockpipe_sink_request_seconds_count{sink="elasticsearch"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let response = host.get("/metrics").await.unwrap();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = response.text().await.unwrap();
        let done = text
            .lines()
            .find(|l| l.starts_with(requests))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .is_some_and(|n| n >= 2.0);
        if done || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("stockpipe_ticks_consumed_total ") > 0.0);
    assert!(value(r#"stockpipe_sink_retries_total{sink="elasticsearch",kind="request"}"#) >= 1.0);
    assert!(value(requests) >= 2.0);
    assert!(value(r#"stockpipe_guest_call_seconds_count{stage="validate"}"#) >= 1.0);
    assert_eq!(
        value(r#"stockpipe_guest_info{stage="route",version="sha256:"#),
        1.0
    );
    // Nothing reached Elasticsearch, so nothing was indexed; the run stops within its grace.
    assert!(
        !text.contains(r#"stockpipe_sink_written_total{sink="elasticsearch"}"#)
            || value(r#"stockpipe_sink_written_total{sink="elasticsearch"}"#) == 0.0
    );
    let summary = host.stop();
    assert_eq!(summary["indexed"], 0, "{summary}");
}

/// Elasticsearch down at start-up (in a compose stack it often is, for minutes): the host waits
/// for it with backoff, `/ready` says why meanwhile, then it indexes. (It gave up after nine
/// attempts, ~20 s, and exited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_waits_for_an_elasticsearch_that_is_down_at_start_up() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let es = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex("^/_index_template/"))
        .respond_with(ResponseTemplate::new(503).set_body_string("starting"))
        .up_to_n_times(40)
        .mount(&es)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/_index_template/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&es)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/_bulk"))
        .respond_with(crate::support::BulkCreated)
        .mount(&es)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("host.log");
    let mut host = Host::start(
        &dir.path().join("lake"),
        &logs,
        &["--es-url", &es.uri()],
        &[
            ("STOCKPIPE_ELASTICSEARCH_RETRY_INITIAL_MS", "20"),
            ("STOCKPIPE_ELASTICSEARCH_RETRY_MAX_MS", "150"),
            ("STOCKPIPE_ELASTICSEARCH_BULK_MAX_AGE_MS", "100"),
        ],
    );
    host.wait_json(
        "/ready",
        "start-up waiting on Elasticsearch",
        |status, body| {
            status == 503
                && body["dependencies"]["elasticsearch"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("waiting at start-up") && d.contains("503"))
        },
    )
    .await;
    host.wait_json("/api/live", "documents indexed", |_, body| {
        body["totals"]["indexed"].as_u64() > Some(0)
    })
    .await;
    host.wait_json("/ready", "ready once Elasticsearch is up", |status, _| {
        status == 200
    })
    .await;
    let summary = host.stop();
    assert!(summary["indexed"].as_u64() > Some(0), "{summary}");
    let text = std::fs::read_to_string(&logs).unwrap();
    assert!(
        text.contains("Elasticsearch is not ready; waiting for it"),
        "{text}"
    );
}

/// With the aggregate stage on (bars of a second), the live view carries each instrument's closed
/// bars and the dashboard draws the chosen instrument's candlesticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_bars_of_the_chosen_instrument_as_candlesticks() {
    let _heavy = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let logs = dir.path().join("host.log");
    let mut host = Host::start(
        &lake,
        &logs,
        &[],
        &[
            ("STOCKPIPE_AGGREGATE_ENABLED", "true"),
            ("STOCKPIPE_AGGREGATE_BAR_SECONDS", "1"),
            ("STOCKPIPE_AGGREGATE_ALLOWED_LATENESS_MS", "200"),
        ],
    );
    host.wait_json("/api/live", "closed bars in the live view", |_, live| {
        live["bars"].as_object().is_some_and(|all| {
            all.values()
                .any(|b| b.as_array().is_some_and(|b| b.len() >= 4))
        })
    })
    .await;
    let Some(response) = host.get("/api/live").await else {
        panic!("the live view went away");
    };
    let live: Value = response.json().await.unwrap();
    let (token, _) = live["bars"]
        .as_object()
        .unwrap()
        .iter()
        .max_by_key(|(_, b)| b.as_array().map_or(0, Vec::len))
        .unwrap();
    let token: u64 = token.parse().unwrap();
    assert!(simulated_tokens().contains(&token), "{token}");
    for candle in live["bars"][token.to_string()].as_array().unwrap() {
        let c: Vec<f64> = candle
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (open, high, low, close) = (c[1], c[2], c[3], c[4]);
        assert!(
            low <= open.min(close) && open.max(close) <= high,
            "{candle}"
        );
        assert_eq!(
            c[0].fract(),
            0.0,
            "a bar of a second starts on one: {candle}"
        );
    }
    let page = dump_dom(
        &format!("{}/?instrument={token}", host.base),
        &dir.path().join("profile-bars"),
    );
    assert!(
        !page.contains("id=\"bars-section\" hidden"),
        "the bars section is shown"
    );
    assert!(
        page.contains(&format!("instrument {token}</span>")),
        "the chosen instrument's bars"
    );
    assert!(data_number(&page, "bars", "data-candles") >= 4);
    assert!(
        data_number(&page, "bars", "data-candle-pixels") > 50,
        "candle bodies painted in their colours"
    );
}
