//! Elasticsearch as production clusters hold it: data streams (`create`, `@timestamp`, a 409 as
//! stored), the lifecycle policy and templates put for the deployment, refusals of the cluster's
//! told from bad documents (waited out, never dead-lettered), the proxy the environment names,
//! several nodes, gzipped bodies — on scripted HTTP (wiremock) and the ES-API emulator.

use crate::emulators::{NoidaDb, free_port};
use serde_json::{Value, json};
use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use stockpipe::sink::SourceRef;
use stockpipe::sink::elasticsearch::{
    BulkItem, BulkShape, DeadLetters, Delivery, ElasticsearchSection, EsCompression, EsMode,
    EsSettings, EsSink, IlmSection, RetryPolicy,
};
use stockpipe::source::embedded::EmbeddedKafka;
use stockpipe::telemetry::{Dependency, Telemetry};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(5),
    max: Duration::from_millis(40),
};

fn settings(section: ElasticsearchSection) -> EsSettings {
    section.validate().unwrap();
    let mut settings = section.settings(|_| None).unwrap();
    settings.retry = RETRY;
    settings
}

fn section(url: &str) -> ElasticsearchSection {
    ElasticsearchSection {
        url: url.to_string(),
        bulk_max_docs: 4,
        bulk_max_age_ms: 50,
        ..ElasticsearchSection::default()
    }
}

/// `n` documents of partition 0 at offsets 0.., with what their dead letters would carry.
pub(crate) fn items(n: i64) -> Vec<BulkItem> {
    (0..n)
        .map(|offset| BulkItem {
            index: Arc::from("stock-stream"),
            document: json!({"timestamp": "2017-06-20T07:35:05.284824Z", "n": offset})
                .to_string()
                .into_bytes()
                .into(),
            source: SourceRef {
                topic: "stock-stream".into(),
                partition: 0,
                offset,
                tick: None,
            },
            key: None,
            payload: format!("payload-{offset}").into_bytes().into(),
            generation: 0,
            id: None,
            time_us: 1_497_944_105_284_824,
        })
        .collect()
}

/// A dead-letter topic on an embedded broker, and the producer the sink sends to it with.
pub(crate) struct Dlq {
    pub(crate) kafka: EmbeddedKafka,
    pub(crate) dead_letters: DeadLetters,
}

pub(crate) fn dlq() -> Dlq {
    let kafka = EmbeddedKafka::start(&[("stock-stream.dlq", 1)]).unwrap();
    let producer = stockpipe::source::kafka::producer(
        &stockpipe::source::kafka::Connection::plaintext(&kafka.bootstrap_servers()),
    )
    .unwrap();
    Dlq {
        kafka,
        dead_letters: DeadLetters {
            producer,
            topic: "stock-stream.dlq".into(),
        },
    }
}

fn delivery(settings: &EsSettings, d: &Dlq, telemetry: Arc<Telemetry>) -> Delivery {
    Delivery {
        client: stockpipe::sink::elasticsearch::client(settings).unwrap(),
        shape: BulkShape::of(&settings.templates),
        retry: RETRY,
        dead_letters: d.dead_letters.clone(),
        telemetry,
        give_up: None,
    }
}

/// The sample's first `n` ticks as an input file in `dir`.
fn sample_file(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let input = dir.join("ticks.ndjson");
    let lines: Vec<String> = crate::support::sample_payloads()
        .iter()
        .take(n)
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    input
}

/// No dead letter came of it.
pub(crate) async fn no_dead_letters(d: &Dlq) {
    let letters = crate::support::dead_letters(&d.kafka.bootstrap_servers()).await;
    assert!(letters.is_empty(), "{} dead letters", letters.len());
}

/// A bulk answer with one item per `(status, error)`, under `action`.
pub(crate) fn bulk_answer(action: &str, statuses: &[(u16, Option<Value>)]) -> ResponseTemplate {
    let items: Vec<Value> = statuses
        .iter()
        .map(|(status, error)| {
            let mut item = json!({"_index": "stock-stream", "status": status});
            if let Some(e) = error {
                item["error"] = e.clone();
            }
            json!({ action: item })
        })
        .collect();
    let errors = statuses.iter().any(|(s, _)| *s >= 300);
    ResponseTemplate::new(200).set_body_json(json!({"took": 1, "errors": errors, "items": items}))
}

pub(crate) async fn requests_to(server: &MockServer, path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .collect()
}

/// Each class of the cluster's own refusals, on every item of a batch for its first two
/// requests: the batch waits and is then indexed; nothing goes to the dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_of_the_cluster_is_waited_out_and_nothing_is_dead_lettered() {
    let classes = [
        (
            403,
            "security_exception",
            "action [indices:data/write/bulk[s]] is unauthorized for API key id [k] of user [ingest] on indices [stock-stream]",
        ),
        (
            403,
            "cluster_block_exception",
            "index [stock-stream] blocked by: [FORBIDDEN/8/index write (api)];",
        ),
        (400, "index_closed_exception", "closed"),
        (
            404,
            "index_not_found_exception",
            "no such index [stock-stream] and [action.auto_create_index] ([false]) doesn't match",
        ),
        (
            400,
            "illegal_argument_exception",
            "no write index is defined for alias [stock-stream]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index",
        ),
    ];
    let d = dlq();
    for (status, kind, reason) in classes {
        let server = MockServer::start().await;
        let fault = json!({"type": kind, "reason": reason});
        Mock::given(method("POST"))
            .and(path("/_bulk"))
            .respond_with(bulk_answer("index", &vec![(status, Some(fault)); 3]))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/_bulk"))
            .respond_with(bulk_answer("index", &vec![(201, None); 3]))
            .with_priority(2)
            .mount(&server)
            .await;
        let s = settings(section(&server.uri()));
        let report = delivery(&s, &d, Arc::new(Telemetry::new()))
            .deliver(items(3))
            .await
            .unwrap();
        assert_eq!(
            (
                report.counts.indexed,
                report.counts.dead_lettered,
                report.counts.faults
            ),
            (3, 0, 2),
            "{kind}"
        );
        assert_eq!(requests_to(&server, "/_bulk").await.len(), 3, "{kind}");
    }
    no_dead_letters(&d).await;
}

/// While the cluster refuses, `/ready` says why; once it takes the batch, it is up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_shows_in_readiness_until_it_is_fixed() {
    let server = MockServer::start().await;
    let forbidden = json!({"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized"});
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(bulk_answer("index", &vec![(403, Some(forbidden)); 2]))
        .mount(&server)
        .await;
    let d = dlq();
    let telemetry = Arc::new(Telemetry::new());
    let s = settings(section(&server.uri()));
    let to = delivery(&s, &d, telemetry.clone());
    let delivering = tokio::spawn(async move { to.deliver(items(2)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!delivering.is_finished(), "the batch waits");
    let seen = telemetry.readiness(&[Dependency::Elasticsearch]);
    let es = &seen.dependencies[&Dependency::Elasticsearch];
    assert!(
        !seen.ready && es.detail.contains("security_exception"),
        "{es:?}"
    );
    assert!(es.detail.contains("not the documents' fault"), "{es:?}");
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(bulk_answer("index", &vec![(201, None); 2]))
        .mount(&server)
        .await;
    let report = tokio::time::timeout(Duration::from_secs(10), delivering)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((report.counts.indexed, report.counts.dead_lettered), (2, 0));
    assert!(report.counts.faults >= 1);
    assert!(telemetry.readiness(&[Dependency::Elasticsearch]).ready);
}

/// Data-stream mode on the ES-API emulator: the templates say `data_stream`, the bulk action is
/// `create` with `@timestamp`; the same batch again is answered 409 and counted as already stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_stream_takes_create_and_a_redelivery_is_already_stored() {
    let noida = NoidaDb::start();
    let d = dlq();
    let s = settings(ElasticsearchSection {
        mode: EsMode::DataStream,
        number_of_replicas: 0,
        ..section(&noida.es_url)
    });
    let mut sink = EsSink::connect(s, d.dead_letters.clone(), Arc::new(Telemetry::new()))
        .await
        .unwrap();
    for round in 0..2 {
        for item in items(5) {
            sink.push(item);
        }
        let report = sink.drain().await.unwrap();
        let expected = if round == 0 { (5, 0) } else { (0, 5) };
        assert_eq!(
            (report.counts.indexed, report.counts.already_stored),
            expected,
            "round {round}"
        );
        assert_eq!((report.counts.dead_lettered, report.acked.len()), (0, 5));
    }
    let http = reqwest::Client::new();
    let template: Value = http
        .get(format!("{}/_index_template/stock-stream", noida.es_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = &template["index_templates"][0]["index_template"];
    assert_eq!(put["data_stream"], json!({}), "{template}");
    let hits = crate::support::es_search(&noida.es_url, "stock-stream", 100).await;
    assert_eq!(hits.len(), 5, "{hits:?}");
    for hit in &hits {
        assert_eq!(hit["_source"]["@timestamp"], "2017-06-20T07:35:05.284824Z");
        assert_eq!(hit["_source"]["timestamp"], "2017-06-20T07:35:05.284824Z");
    }
}

/// The lifecycle policy goes first, then each template, naming it; shards and replicas as the
/// section says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_and_the_templates_are_put_for_the_deployment() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex("^/(_ilm/policy|_index_template)/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&server)
        .await;
    let d = dlq();
    let s = settings(ElasticsearchSection {
        mode: EsMode::DataStream,
        number_of_shards: 3,
        number_of_replicas: 2,
        ilm: Some(IlmSection {
            policy: "ticks".into(),
            rollover_max_age: "12h".into(),
            rollover_max_primary_shard_size: "10gb".into(),
            delete_after_days: 90,
        }),
        ..section(&server.uri())
    });
    EsSink::connect(s, d.dead_letters.clone(), Arc::new(Telemetry::new()))
        .await
        .unwrap();
    let puts: Vec<Request> = server.received_requests().await.unwrap();
    let paths: Vec<&str> = puts.iter().map(|r| r.url.path()).collect();
    assert_eq!(
        paths,
        [
            "/_ilm/policy/ticks",
            "/_index_template/stock-stream",
            "/_index_template/stock-forecast",
            "/_index_template/stock-bars",
            "/_index_template/stock-alerts",
            "/_index_template/stockpipe-metrics"
        ]
    );
    let policy: Value = serde_json::from_slice(&puts[0].body).unwrap();
    assert_eq!(
        policy["policy"]["phases"],
        json!({
            "hot": {"min_age": "0ms", "actions": {"rollover": {"max_age": "12h", "max_primary_shard_size": "10gb"}}},
            "delete": {"min_age": "90d", "actions": {"delete": {}}}
        })
    );
    for put in &puts[1..] {
        let body: Value = serde_json::from_slice(&put.body).unwrap();
        let settings = &body["template"]["settings"];
        assert_eq!(settings["number_of_shards"], 3);
        assert_eq!(settings["number_of_replicas"], 2);
        assert_eq!(settings["index.lifecycle.name"], "ticks");
        assert_eq!(body["data_stream"], json!({}));
        assert!(body["template"]["mappings"]["properties"]["@timestamp"].is_object());
    }
}

/// `compression = "gzip"`: the body goes gzipped, said in `Content-Encoding`, and the emulator
/// takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_sent_when_asked() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(bulk_answer("index", &vec![(201, None); 3]))
        .mount(&server)
        .await;
    let d = dlq();
    let gzip = |url: &str| {
        settings(ElasticsearchSection {
            compression: EsCompression::Gzip,
            ..section(url)
        })
    };
    let report = delivery(&gzip(&server.uri()), &d, Arc::new(Telemetry::new()))
        .deliver(items(3))
        .await
        .unwrap();
    assert_eq!(report.counts.indexed, 3);
    let request = &requests_to(&server, "/_bulk").await[0];
    assert_eq!(request.headers.get("content-encoding").unwrap(), "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&request.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(
        text.starts_with(
            "{\"index\":{\"_index\":\"stock-stream\",\"_id\":\"stock-stream-0-0\"}}\n"
        )
    );
    let noida = NoidaDb::start();
    let report = delivery(&gzip(&noida.es_url), &d, Arc::new(Telemetry::new()))
        .deliver(items(3))
        .await
        .unwrap();
    assert_eq!((report.counts.indexed, report.counts.dead_lettered), (3, 0));
}

/// `urls`: the nodes take the requests in turn; one of them down, the batch goes to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_nodes_are_used_in_turn() {
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    for server in [&a, &b] {
        Mock::given(method("POST"))
            .and(path("/_bulk"))
            .respond_with(bulk_answer("index", &vec![(201, None); 1]))
            .mount(server)
            .await;
    }
    let down = format!("http://127.0.0.1:{}", free_port());
    let d = dlq();
    let s = settings(ElasticsearchSection {
        url: String::new(),
        urls: vec![a.uri(), down, b.uri()],
        ..section("")
    });
    let to = delivery(&s, &d, Arc::new(Telemetry::new()));
    for n in 0..6 {
        let report = to.deliver(items(1)).await.unwrap();
        assert_eq!(report.counts.indexed, 1, "batch {n}");
    }
    let (to_a, to_b) = (
        requests_to(&a, "/_bulk").await.len(),
        requests_to(&b, "/_bulk").await.len(),
    );
    assert_eq!(to_a + to_b, 6);
    assert!(to_a >= 2 && to_b >= 2, "{to_a} and {to_b}");
}

/// `HTTP_PROXY` is honoured (the cluster's name resolves nowhere but at the proxy, which counts
/// what it is asked) and `NO_PROXY` goes around it: `stockpipe check` in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_the_environment_names_is_used() {
    let (proxy, direct) = (MockServer::start().await, MockServer::start().await);
    for server in [&proxy, &direct] {
        Mock::given(method("GET"))
            .and(path("/"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"version": {"number": "8.15.3"}})),
            )
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path("/_security/user/_has_privileges"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(server)
            .await;
    }
    let lake = tempfile::tempdir().unwrap();
    let check = |es_url: &str, no_proxy: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["check", "--json", "--timeout-secs", "2"])
            .args(["--brokers", &format!("127.0.0.1:{}", free_port())])
            .env("STOCKPIPE_ELASTICSEARCH_URL", es_url)
            .env("STOCKPIPE_LAKE_URL", lake.path())
            .env("HTTP_PROXY", proxy.uri())
            .env("http_proxy", proxy.uri())
            .env("NO_PROXY", no_proxy)
            .env("no_proxy", no_proxy)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let report = crate::support::last_json_line(&out);
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "elasticsearch")
            .cloned()
            .unwrap()
    };
    let through = tokio::task::block_in_place(|| check("http://es.example.invalid:9200", ""));
    assert_eq!(through["ok"], true, "{through}");
    let asked = proxy.received_requests().await.unwrap();
    assert!(
        asked
            .iter()
            .any(|r| r.url.path() == "/"
                && r.headers.get("host").unwrap() == "es.example.invalid:9200"),
        "{asked:?}"
    );
    let before = asked.len();
    let around = tokio::task::block_in_place(|| check(&direct.uri(), "127.0.0.1"));
    assert_eq!(around["ok"], true, "{around}");
    assert_eq!(proxy.received_requests().await.unwrap().len(), before);
    assert!(!direct.received_requests().await.unwrap().is_empty());
}

/// `run --once` against a cluster that refuses every write: it gives up after
/// `elasticsearch.fault_give_up_ms`, failing with the cluster's reason, and dead-letters
/// nothing; the same run with the fault fixed after two requests finishes, every tick indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_gives_up_on_a_lasting_fault_and_names_it() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&server)
        .await;
    let forbidden = json!({"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized for user [ingest]"});
    let refuse_all = move |req: &Request| {
        let n = String::from_utf8_lossy(&req.body).lines().count() / 2;
        bulk_answer("index", &vec![(403, Some(forbidden.clone())); n])
    };
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(refuse_all.clone())
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let input = sample_file(dir.path(), 20);
    let run = |lake: &str| {
        Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--once", "--input"])
            .arg(&input)
            .args(["--lake", lake, "--es-url", &server.uri()])
            .env("STOCKPIPE_ELASTICSEARCH_FAULT_GIVE_UP_MS", "1500")
            .env("STOCKPIPE_ELASTICSEARCH_RETRY_MAX_MS", "200")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let lake = dir.path().join("lake");
    let out = tokio::task::block_in_place(|| run(lake.to_str().unwrap()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("gave up after")
            && stderr.contains("security_exception")
            && stderr.contains("elasticsearch.fault_give_up_ms = 1500"),
        "{stderr}"
    );
    assert!(!stderr.contains("dead-lettering"), "{stderr}");
    // Fixed after two refused requests: the run finishes, nothing dead-lettered.
    server.reset().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(refuse_all)
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    let accept_all = |req: &Request| {
        let n = String::from_utf8_lossy(&req.body).lines().count() / 2;
        bulk_answer("index", &vec![(201, None); n])
    };
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(accept_all)
        .with_priority(2)
        .mount(&server)
        .await;
    let lake = dir.path().join("lake-2");
    let out = tokio::task::block_in_place(|| run(lake.to_str().unwrap()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = crate::support::last_json_line(&out);
    assert_eq!(summary["indexed"], 20, "{summary}");
    assert_eq!(summary["index_dead_lettered"], 0, "{summary}");
    assert!(summary["index_faults"].as_u64().unwrap() >= 1, "{summary}");
}

/// Every body the host can put — each template and the lifecycle policy, in both modes, dated
/// or not, with a lifecycle or not — type-checked (TypeScript, `--strict`) against the request
/// types of Elastic's own client, `@elastic/elasticsearch`: an unknown or misspelt key, a wrong
/// type or a mapping parameter a field type does not have fails. A body known to be wrong must
/// fail, so the check is known to check. `scripts/test.sh` installs the checker
/// (`ES_REQUEST_TYPES_DIR`: a directory with TypeScript and the client in its node_modules).
#[test]
fn the_bodies_we_put_type_check_against_elastic_s_published_request_types() {
    use stockpipe::sink::elasticsearch::{TEMPLATES, TemplateSettings, lifecycle_policy, render};
    let types = std::env::var("ES_REQUEST_TYPES_DIR").expect(
        "ES_REQUEST_TYPES_DIR: a directory with typescript and @elastic/elasticsearch installed \
         (scripts/test.sh sets it up)",
    );
    let types = std::path::PathBuf::from(types);
    let ilm = IlmSection {
        delete_after_days: 30,
        ..IlmSection::default()
    };
    let deployments = [
        (EsMode::Index, false, None),
        (EsMode::Index, true, Some(ilm.clone())),
        (EsMode::DataStream, false, None),
        (EsMode::DataStream, false, Some(ilm)),
    ];
    let mut good = String::from("import type { estypes } from '@elastic/elasticsearch';\n");
    let mut checked = 0;
    for (d, (mode, dated_indices, ilm)) in deployments.into_iter().enumerate() {
        let settings = TemplateSettings {
            mode,
            dated_indices,
            number_of_shards: 1,
            number_of_replicas: 1,
            ilm,
        };
        for (t, template) in TEMPLATES.iter().enumerate() {
            let mut body = render(template, &settings);
            body["name"] = template.name.into();
            good.push_str(&format!(
                "export const template_{d}_{t}: estypes.IndicesPutIndexTemplateRequest = {body};\n"
            ));
            checked += 1;
        }
        if let Some((name, mut policy)) = lifecycle_policy(&settings) {
            policy["name"] = name.into();
            good.push_str(&format!(
                "export const policy_{d}: estypes.IlmPutLifecycleRequest = {policy};\n"
            ));
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * TEMPLATES.len() + 2);
    let mut wrong = render(
        &TEMPLATES[0],
        &TemplateSettings {
            mode: EsMode::DataStream,
            dated_indices: false,
            number_of_shards: 1,
            number_of_replicas: 1,
            ilm: None,
        },
    );
    wrong["name"] = "stock-stream".into();
    wrong["template"]["mappings"]["properties"]["@timestamp"]["fromat"] = "epoch_millis".into();
    let bad = format!(
        "import type {{ estypes }} from '@elastic/elasticsearch';\n\
         export const wrong: estypes.IndicesPutIndexTemplateRequest = {wrong};\n"
    );
    // Beside the checker's node_modules, where the import resolves.
    let dir = tempfile::tempdir_in(&types).unwrap();
    let tsc = |source: &str, name: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, source).unwrap();
        let out = Command::new("node")
            .arg(types.join("node_modules/typescript/bin/tsc"))
            .args([
                "--noEmit",
                "--strict",
                "--skipLibCheck",
                "--target",
                "es2020",
            ])
            .args(["--moduleResolution", "node"])
            .arg(&file)
            .output()
            .expect("node runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, said) = tsc(&good, "bodies.ts");
    assert!(ok, "{said}");
    let (ok, said) = tsc(&bad, "wrong.ts");
    assert!(
        !ok && said.contains("fromat"),
        "a misspelt key must fail: {said}"
    );
}

/// A connection or TLS failure is reported with its whole cause chain, not only "error sending
/// request": what `/ready` and `run --once`'s error say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_failure_is_reported_with_its_cause() {
    let d = dlq();
    let plain = MockServer::start().await;
    let refused = format!("http://127.0.0.1:{}", free_port());
    let tls_to_plain = plain.uri().replace("http://", "https://");
    for (url, cause) in [
        (refused, "Connection refused"),
        (tls_to_plain, "client error (Connect): "),
    ] {
        let telemetry = Arc::new(Telemetry::new());
        let mut to = delivery(&settings(section(&url)), &d, telemetry.clone());
        to.give_up = Some(Duration::from_millis(300));
        let err = to.deliver(items(1)).await.unwrap_err().to_string();
        assert!(
            err.contains("error sending request") && err.contains(cause),
            "{err}"
        );
        let after = &err[err.find(cause).unwrap() + cause.len()..];
        assert!(!after.trim().is_empty(), "a cause after {cause:?}: {err}");
        let seen = telemetry.readiness(&[Dependency::Elasticsearch]);
        let detail = &seen.dependencies[&Dependency::Elasticsearch].detail;
        assert!(detail.contains(cause), "{detail}");
    }
}

/// The whole path in data-stream mode: `run --once --input` twice over the same file into the
/// ES-API emulator. The first run creates every document; the second re-delivers the same
/// positions, every `create` is answered 409, and the summary counts them as already stored —
/// nothing dead-lettered, nothing indexed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_file_into_data_streams_is_stored_once() {
    let noida = NoidaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let input = sample_file(dir.path(), 30);
    let run = |lake: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["run", "--once", "--input"])
            .arg(&input)
            .args(["--lake", lake, "--es-url", &noida.es_url])
            .env("STOCKPIPE_ELASTICSEARCH_MODE", "data_stream")
            .env("STOCKPIPE_ELASTICSEARCH_NUMBER_OF_REPLICAS", "0")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        crate::support::last_json_line(&out)
    };
    let first = tokio::task::block_in_place(|| run(dir.path().join("a").to_str().unwrap()));
    assert_eq!(first["indexed"], 30, "{first}");
    assert!(first.get("index_already_stored").is_none(), "{first}");
    let again = tokio::task::block_in_place(|| run(dir.path().join("b").to_str().unwrap()));
    assert_eq!(again["indexed"], 0, "{again}");
    assert_eq!(again["index_already_stored"], 30, "{again}");
    assert_eq!(again["index_dead_lettered"], 0, "{again}");
    assert_eq!(
        crate::support::es_count(&noida.es_url, "stock-stream").await,
        30
    );
}
