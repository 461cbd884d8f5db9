//! The Elasticsearch sink's protocol against scripted HTTP (wiremock): every failure class of the
//! bulk API, and its wire compatibility with an ES-API emulator (noida-db).

use crate::emulators::{NoidaDb, free_port};
use crate::es_production::{Dlq, dlq};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use stockpipe::position::{Offset, Partition};
use stockpipe::sink::SourceRef;
use stockpipe::sink::elasticsearch::{
    BulkItem, BulkShape, DeadLetters, Delivery, ElasticsearchSection, EsAuth, EsError, EsSettings,
    EsSink, RetryPolicy,
};
use stockpipe::telemetry::Telemetry;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(5),
    max: Duration::from_millis(40),
};

fn settings(url: &str) -> EsSettings {
    let section = ElasticsearchSection {
        url: url.to_string(),
        bulk_max_docs: 4,
        bulk_max_bytes: 1 << 20,
        bulk_max_age_ms: 50,
        max_in_flight: 2,
        request_timeout_ms: 5000,
        ..ElasticsearchSection::default()
    };
    let mut settings = section.settings(|_| None).unwrap();
    settings.retry = RETRY;
    settings
}

/// How the sink delivers to `url` (plain indices; waiting however long unless `give_up`).
fn delivery(url: &str, dead_letters: &DeadLetters, give_up: Option<Duration>) -> Delivery {
    Delivery {
        client: client(url),
        shape: BulkShape::PLAIN,
        retry: RETRY,
        dead_letters: dead_letters.clone(),
        telemetry: Arc::new(Telemetry::new()),
        give_up,
    }
}

fn items(n: i64) -> Vec<BulkItem> {
    crate::es_production::items(n)
}

/// The `_id`s of a bulk request body, in order.
fn ids(request: &Request) -> Vec<String> {
    let text = String::from_utf8(request.body.clone()).unwrap();
    text.lines()
        .step_by(2)
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let action = v.get("index").or(v.get("create")).unwrap();
            action["_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A bulk answer of `index` items, one per `(status, error)`.
fn bulk_answer(statuses: &[(u16, Option<Value>)]) -> ResponseTemplate {
    crate::es_production::bulk_answer("index", statuses)
}

fn all_ok(n: usize) -> ResponseTemplate {
    bulk_answer(&vec![(201, None); n])
}

async fn bulk_requests(server: &MockServer) -> Vec<Request> {
    crate::es_production::requests_to(server, "/_bulk").await
}

/// Answers `POST /_bulk` with `answer`: the first `times` requests (all when `None`), ahead of
/// mocks of a lower `priority` (a larger number).
async fn mount_bulk(
    server: &MockServer,
    answer: ResponseTemplate,
    times: Option<u64>,
    priority: u8,
) {
    let mut mock = Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(answer)
        .with_priority(priority);
    if let Some(n) = times {
        mock = mock.up_to_n_times(n);
    }
    mock.mount(server).await;
}

/// `n` items delivered to `server`, with the dead-letter topic they may go to.
async fn deliver_to(
    server: &MockServer,
    n: i64,
) -> (
    Dlq,
    Result<stockpipe::sink::elasticsearch::BulkReport, stockpipe::sink::elasticsearch::EsError>,
) {
    let d = dlq();
    let result = delivery(&server.uri(), &d.dead_letters, None)
        .deliver(items(n))
        .await;
    (d, result)
}

fn client(url: &str) -> elasticsearch::Elasticsearch {
    stockpipe::sink::elasticsearch::client(&settings(url)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_then_bulk_with_deterministic_ids() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/_index_template/stock-stream"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/_index_template/stock-forecast"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .expect(1)
        .mount(&server)
        .await;
    for template in ["stock-bars", "stock-alerts", "stockpipe-metrics"] {
        Mock::given(method("PUT"))
            .and(path(format!("/_index_template/{template}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
            .expect(1)
            .mount(&server)
            .await;
    }
    mount_bulk(&server, all_ok(4), None, 1).await;
    let d = dlq();
    let mut sink = EsSink::connect(
        settings(&server.uri()),
        d.dead_letters.clone(),
        Arc::new(Telemetry::new()),
    )
    .await
    .unwrap();
    for item in items(8) {
        sink.push(item);
    }
    let mut report = sink.flush_due(std::time::Instant::now()).await.unwrap();
    report.absorb(sink.drain().await.unwrap());
    assert_eq!(report.counts.indexed, 8);
    assert_eq!(report.acked.len(), 8);
    let requests = bulk_requests(&server).await;
    assert_eq!(requests.len(), 2, "8 documents at 4 per request");
    let mut all_ids: Vec<String> = requests.iter().flat_map(ids).collect();
    all_ids.sort();
    let mut expected: Vec<String> = (0..8).map(|o| format!("stock-stream-0-{o}")).collect();
    expected.sort();
    assert_eq!(all_ids, expected);
    assert_eq!(
        requests[0].headers.get("content-type").unwrap(),
        "application/x-ndjson"
    );
    // The template body is ours, with the date format that takes the sample's timestamps.
    let put = &server.received_requests().await.unwrap()[0];
    let template: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(
        template["template"]["mappings"]["properties"]["timestamp"]["type"],
        "date_nanos"
    );
    drop(d.kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_item_alone_is_retried() {
    let server = MockServer::start().await;
    let busy = json!({"type": "es_rejected_execution_exception", "reason": "queue full"});
    mount_bulk(
        &server,
        bulk_answer(&[(201, None), (201, None), (429, Some(busy)), (201, None)]),
        Some(1),
        1,
    )
    .await;
    mount_bulk(&server, all_ok(1), None, 2).await;
    let (_dlq, report) = deliver_to(&server, 4).await;
    let report = report.unwrap();
    assert_eq!(report.counts.indexed, 4);
    assert_eq!(report.counts.retried_items, 1);
    assert_eq!(report.counts.dead_lettered, 0);
    let requests = bulk_requests(&server).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(ids(&requests[1]), ["stock-stream-0-2"], "only item k again");
    let mut acked: Vec<i64> = report.acked.iter().map(|(s, _)| s.offset).collect();
    acked.sort_unstable();
    assert_eq!(acked, [0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_item_is_dead_lettered_with_the_error() {
    let server = MockServer::start().await;
    let bad = json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [volume] of type [long]"});
    mount_bulk(
        &server,
        bulk_answer(&[(201, None), (400, Some(bad)), (201, None)]),
        None,
        1,
    )
    .await;
    let (d, report) = deliver_to(&server, 3).await;
    let report = report.unwrap();
    assert_eq!((report.counts.indexed, report.counts.dead_lettered), (2, 1));
    assert_eq!(
        report.acked.len(),
        3,
        "indexed or dead-lettered: all settled"
    );
    assert_eq!(
        bulk_requests(&server).await.len(),
        1,
        "a 400 is not retried"
    );
    let letters = crate::support::dead_letters(&d.kafka.bootstrap_servers()).await;
    assert_eq!(letters.len(), 1);
    let (payload, headers) = &letters[0];
    assert_eq!(payload, b"payload-1", "the original message, untouched");
    assert_eq!(headers["stockpipe.stage"], "elasticsearch");
    assert_eq!(headers["stockpipe.reason.code"], "index-refused");
    assert!(
        headers["stockpipe.reason"].contains("mapper_parsing_exception"),
        "{headers:?}"
    );
    assert_eq!(headers["stockpipe.source.offset"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_is_retried_with_the_same_batch_in_order() {
    let server = MockServer::start().await;
    mount_bulk(
        &server,
        ResponseTemplate::new(503).set_body_string("unavailable"),
        Some(2),
        1,
    )
    .await;
    mount_bulk(&server, all_ok(5), None, 2).await;
    let (_dlq, report) = deliver_to(&server, 5).await;
    let report = report.unwrap();
    assert_eq!(report.counts.indexed, 5);
    assert_eq!(report.counts.retried_requests, 2);
    let requests = bulk_requests(&server).await;
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.body, requests[0].body, "the same batch, same order");
    }
}

/// A 200 whose body cannot be read as a bulk answer, or that answers for fewer documents than were
/// sent, says nothing about any document: the whole batch goes again, nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_bulk_answer_sends_the_batch_again() {
    let server = MockServer::start().await;
    mount_bulk(
        &server,
        ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"),
        Some(1),
        1,
    )
    .await;
    mount_bulk(&server, all_ok(2), Some(1), 2).await;
    mount_bulk(&server, all_ok(4), None, 3).await;
    let (_dlq, report) = deliver_to(&server, 4).await;
    let report = report.unwrap();
    assert_eq!((report.counts.indexed, report.counts.dead_lettered), (4, 0));
    assert_eq!(report.counts.retried_requests, 2);
    let requests = bulk_requests(&server).await;
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body == requests[0].body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_until_the_cluster_is_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let d = dlq();
    let to = delivery(&url, &d.dead_letters, None);
    let delivery = tokio::spawn(async move { to.deliver(items(3)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !delivery.is_finished(),
        "still retrying while nothing listens"
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let server = MockServer::builder().listener(listener).start().await;
    mount_bulk(&server, all_ok(3), None, 1).await;
    let report = tokio::time::timeout(Duration::from_secs(20), delivery)
        .await
        .expect("delivered once the cluster is up")
        .unwrap()
        .unwrap();
    assert_eq!(report.counts.indexed, 3);
    assert!(report.counts.retried_requests >= 1);
    assert_eq!(ids(&bulk_requests(&server).await[0]).len(), 3);
}

/// A 401 on the whole request is the deployment's to fix: waited out (nothing dead-lettered,
/// nothing acknowledged), until `run --once`'s give-up time ends it with the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_failure_is_waited_out_and_once_gives_up_naming_it() {
    let server = MockServer::start().await;
    mount_bulk(
        &server,
        ResponseTemplate::new(401).set_body_json(json!({"error": {"type": "security_exception", "reason": "missing authentication credentials for REST request [/_bulk]"}, "status": 401})),
        None,
        1,
    )
    .await;
    let d = dlq();
    let started = std::time::Instant::now();
    let err = delivery(
        &server.uri(),
        &d.dead_letters,
        Some(Duration::from_millis(400)),
    )
    .deliver(items(2))
    .await
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let text = err.to_string();
    assert!(matches!(err, EsError::GaveUp { .. }), "{text}");
    assert!(
        text.contains("401")
            && text.contains("security_exception: missing authentication credentials")
            && text.contains("elasticsearch.fault_give_up_ms"),
        "{text}"
    );
    assert!(bulk_requests(&server).await.len() >= 2, "asked again");
    crate::es_production::no_dead_letters(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent() {
    let server = MockServer::start().await;
    mount_bulk(&server, all_ok(1), None, 1).await;
    let d = dlq();
    let mut s = settings(&server.uri());
    s.auth = EsAuth::ApiKey("a2V5OnNlY3JldA==".into());
    let mut to = delivery(&server.uri(), &d.dead_letters, None);
    to.client = stockpipe::sink::elasticsearch::client(&s).unwrap();
    to.deliver(items(1)).await.unwrap();
    let r = &bulk_requests(&server).await[0];
    assert_eq!(
        r.headers.get("authorization").unwrap(),
        "ApiKey a2V5OnNlY3JldA=="
    );
}

/// The real client against an ES-API emulator: templates, bulk (twice: the same ids overwrite),
/// count and search.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_compatible_with_an_elasticsearch_api() {
    let noida = NoidaDb::start();
    let d = dlq();
    let mut sink = EsSink::connect(
        settings(&noida.es_url),
        d.dead_letters.clone(),
        Arc::new(Telemetry::new()),
    )
    .await
    .unwrap();
    let payloads = crate::support::sample_payloads();
    let docs: Vec<BulkItem> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tick = stockpipe_model::json::decode_tick(p, 0).unwrap();
            let mut doc = serde_json::Map::new();
            doc.insert(
                "timestamp".into(),
                stockpipe_model::time::format_rfc3339_micros(tick.timestamp_us).into(),
            );
            stockpipe_model::json::tick_fields(&tick, &mut doc);
            BulkItem {
                index: Arc::from("stock-stream-wire"),
                document: serde_json::to_vec(&doc).unwrap().into(),
                source: SourceRef {
                    topic: "stock-stream".into(),
                    partition: 0,
                    offset: i as i64,
                    tick: None,
                },
                key: None,
                payload: p.clone().into(),
                generation: 0,
                id: None,
                time_us: tick.timestamp_us,
            }
        })
        .collect();
    for round in 0..2 {
        for item in docs.clone() {
            sink.push(item);
        }
        let report = sink.drain().await.unwrap();
        assert_eq!(report.counts.indexed as usize, docs.len(), "round {round}");
        assert_eq!(report.counts.dead_lettered, 0);
    }
    let es = sink.client();
    es.indices()
        .refresh(elasticsearch::indices::IndicesRefreshParts::Index(&[
            "stock-stream-wire",
        ]))
        .send()
        .await
        .unwrap();
    let count: Value = es
        .count(elasticsearch::CountParts::Index(&["stock-stream-wire"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        count["count"].as_u64().unwrap() as usize,
        docs.len(),
        "re-sent ids overwrite: {count}"
    );
    let token = stockpipe_model::json::decode_tick(&payloads[0], 0)
        .unwrap()
        .instrument_token;
    let found: Value = es
        .search(elasticsearch::SearchParts::Index(&["stock-stream-wire"]))
        .body(json!({"query": {"term": {"instrument_token": token.to_string()}}, "size": 1000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = payloads
        .iter()
        .filter(|p| {
            stockpipe_model::json::decode_tick(p, 0)
                .unwrap()
                .instrument_token
                == token
        })
        .count();
    let hits = found["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), expected, "{found}");
    assert!(
        hits.iter()
            .all(|h| h["_source"]["instrument_token"].as_u64() == Some(token))
    );
    // The template is in place as we wrote it.
    let template: Value = es
        .indices()
        .get_index_template(elasticsearch::indices::IndicesGetIndexTemplateParts::Name(
            "stock-stream",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(template.to_string().contains("stock-stream*"), "{template}");
}

/// Elasticsearch down for good: the pipeline waits (nothing is committed past what the cluster
/// acknowledged), and a shutdown still ends the run after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_gets_through_while_elasticsearch_is_down() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&server)
        .await;
    mount_bulk(&server, ResponseTemplate::new(503), None, 1).await;
    let mut config = stockpipe::config::Config::default();
    config.elasticsearch.url = server.uri();
    config.elasticsearch.bulk_max_age_ms = 50;
    config.elasticsearch.retry_initial_ms = 10;
    config.elasticsearch.retry_max_ms = 50;
    config.elasticsearch.shutdown_grace_ms = 300;
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    let cluster = crate::support::embedded_cluster(&config, 1);
    let brokers = cluster.bootstrap_servers();
    let producer = stockpipe::source::kafka::producer(
        &stockpipe::source::kafka::Connection::plaintext(&brokers),
    )
    .unwrap();
    stockpipe::source::replay::produce_all(
        &producer,
        &config.kafka.topic,
        &crate::support::sample_payloads(),
        stockpipe::source::replay::Pace::Max,
        |_| {},
    )
    .await
    .unwrap();
    let registry = Arc::new(stockpipe::chain::swap::GuestRegistry::default());
    let started = std::time::Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        stockpipe::service::run(
            config,
            &brokers,
            false,
            registry.clone(),
            None,
            async move {
                // Once the guests have seen every tick, and the sink has had time to fail a few times.
                while registry
                    .processed
                    .load(std::sync::atomic::Ordering::Relaxed)
                    < 100
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
        ),
    )
    .await
    .expect("the run ends after the shutdown")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(summary.counts.consumed, 100);
    assert_eq!(summary.counts.indexed, 0);
    assert!(
        summary.counts.index_retried_requests == 0,
        "reported only when a request completes"
    );
    assert!(
        summary.committed_offsets.values().all(|o| o.0 == 0),
        "nothing committed past what Elasticsearch acknowledged: {summary:?}"
    );
    assert!(bulk_requests(&server).await.len() > 3, "it kept retrying");
}

/// 503 to every bulk until `until`, then each item created.
struct DownUntil(std::time::Instant);

impl wiremock::Respond for DownUntil {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if std::time::Instant::now() < self.0 {
            return ResponseTemplate::new(503).set_body_string("unavailable");
        }
        all_ok(ids(request).len())
    }
}

/// Elasticsearch down for longer than `max.poll.interval.ms` while the loop waits on it: the
/// partitions are paused and the consumer keeps polling, so it stays in its group — nothing is
/// revoked and nothing consumed twice. (It left the group, and every tick came again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_does_not_cost_the_group_membership() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"acknowledged": true})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(DownUntil(
            std::time::Instant::now() + Duration::from_secs(14),
        ))
        .mount(&server)
        .await;
    let mut config = stockpipe::config::Config::default();
    config.elasticsearch.url = server.uri();
    config.elasticsearch.bulk_max_age_ms = 50;
    // A full pipe: the loop waits inside the batch for the sink.
    config.elasticsearch.bulk_max_docs = 10;
    config.elasticsearch.max_in_flight = 1;
    config.elasticsearch.retry_initial_ms = 50;
    config.elasticsearch.retry_max_ms = 400;
    config.kafka.session_timeout_ms = 6_000;
    config.kafka.max_poll_interval_ms = 6_000;
    let lake = tempfile::tempdir().unwrap();
    config.lake.url = lake.path().display().to_string();
    let cluster = crate::support::embedded_cluster(&config, 1);
    let brokers = cluster.bootstrap_servers();
    let producer = stockpipe::source::kafka::producer(
        &stockpipe::source::kafka::Connection::plaintext(&brokers),
    )
    .unwrap();
    let payloads = crate::support::sample_payloads();
    cluster.replay(&producer, &payloads).await.unwrap();
    let registry = Arc::new(stockpipe::chain::swap::GuestRegistry::default());
    let summary = tokio::time::timeout(
        Duration::from_secs(120),
        stockpipe::service::run(config, &brokers, false, registry, None, async {
            // Past the outage (14 s) and past the rejoin a consumer that had left would make.
            tokio::time::sleep(Duration::from_secs(28)).await;
        }),
    )
    .await
    .expect("the run ends")
    .unwrap();
    assert_eq!(summary.counts.consumed, 100, "{summary:?}");
    assert_eq!(summary.counts.indexed, 100, "{summary:?}");
    assert_eq!(summary.counts.lake_lines, 100, "{summary:?}");
    assert_eq!(
        summary.committed_offsets.get(&Partition(0)),
        Some(&Offset(100)),
        "{summary:?}"
    );
}
