//! `stockpipe kibana import` against a scripted Kibana (wiremock): the request Kibana's saved
//! objects API expects, waiting while Kibana starts, and its refusals reported as they are.

use serde_json::json;
use std::time::Duration;
use stockpipe::sink::elasticsearch::EsAuth;
use stockpipe::tools::kibana::{ImportOptions, KibanaError, SAVED_OBJECTS, import};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn options(url: &str) -> ImportOptions {
    ImportOptions {
        url: url.into(),
        space: None,
        overwrite: true,
        wait: Duration::from_secs(5),
        auth: EsAuth::None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_kibana_then_imports_every_saved_object() {
    let kibana = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/saved_objects/_import"))
        .respond_with(ResponseTemplate::new(503).set_body_string("Kibana server is not ready yet"))
        .up_to_n_times(2)
        .mount(&kibana)
        .await;
    let lines = SAVED_OBJECTS.lines().count();
    Mock::given(method("POST"))
        .and(path("/api/saved_objects/_import"))
        .and(query_param("overwrite", "true"))
        .and(header("kbn-xsrf", "stockpipe"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true, "successCount": lines, "errors": []})),
        )
        .mount(&kibana)
        .await;
    let uri = kibana.uri();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args([
                "kibana",
                "import",
                "--kibana-url",
                &uri,
                "--wait-secs",
                "30",
            ])
            .env("STOCKPIPE_ES_USERNAME", "elastic")
            .env("STOCKPIPE_ES_PASSWORD", "changeme")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["imported"], lines);

    let requests = kibana.received_requests().await.unwrap();
    assert_eq!(
        requests.len(),
        3,
        "two refusals while starting, then the import"
    );
    let last = requests.last().unwrap();
    let content_type = last.headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .expect("a multipart form");
    assert_eq!(
        last.headers["authorization"].to_str().unwrap(),
        "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==",
        "credentials from the environment"
    );
    let body = String::from_utf8(last.body.clone()).unwrap();
    assert!(body.starts_with(&format!("--{boundary}\r\n")));
    assert!(body.contains("name=\"file\"; filename=\"stockpipe.ndjson\""));
    assert!(body.ends_with(&format!("--{boundary}--\r\n")));
    for line in SAVED_OBJECTS.lines() {
        assert!(body.contains(line), "every saved object is sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_objects_and_refused_requests_are_errors_with_kibanas_words() {
    let kibana = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/s/markets/api/saved_objects/_import"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": false, "successCount": 9,
            "errors": [{"type": "visualization", "id": "stockpipe-forecast",
                        "error": {"type": "unknown", "message": "Unsupported saved object type"}}]
        })))
        .mount(&kibana)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/saved_objects/_import"))
        .respond_with(ResponseTemplate::new(401).set_body_string("{\"message\":\"unauthorized\"}"))
        .mount(&kibana)
        .await;

    let partial = import(
        &ImportOptions {
            space: Some("markets".into()),
            ..options(&kibana.uri())
        },
        SAVED_OBJECTS.as_bytes(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&partial, KibanaError::Partial { imported: 9, errors } if errors == &["visualization/stockpipe-forecast: Unsupported saved object type"]),
        "{partial}"
    );

    let refused = import(&options(&kibana.uri()), SAVED_OBJECTS.as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, KibanaError::Refused { status: 401, body } if body.contains("unauthorized")),
        "{refused}"
    );
    // 401 is not retried.
    let posts = kibana.received_requests().await.unwrap();
    assert_eq!(posts.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kibana_that_never_comes_up_is_reported_after_the_wait() {
    let port = crate::emulators::free_port();
    let started = std::time::Instant::now();
    let error = import(
        &ImportOptions {
            wait: Duration::from_secs(1),
            ..options(&format!("http://127.0.0.1:{port}"))
        },
        b"{}\n",
    )
    .await
    .unwrap_err();
    assert!(matches!(error, KibanaError::Unavailable { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
