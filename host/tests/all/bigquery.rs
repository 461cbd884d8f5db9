//! `stockpipe bq submit`'s requests against scripted HTTP: their shape, job polling, a failed
//! job's error, a timeout, and the command line end to end.

use serde_json::{Value, json};
use std::time::Duration;
use stockpipe::tools::bigquery::{BqClient, BqError, STATEMENTS, SqlParams, render};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const JOBS: &str = "/bigquery/v2/projects/my-project/jobs";

fn client(server: &MockServer) -> BqClient {
    let mut c = BqClient::new("my-project", "EU", Some(&server.uri())).unwrap();
    c.poll_interval = Duration::from_millis(10);
    c.timeout = Duration::from_secs(10);
    c
}

/// Answers jobs.insert with the job it was given, in the given state.
struct EchoJob(&'static str);

impl Respond for EchoJob {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        ResponseTemplate::new(200).set_body_json(json!({
            "jobReference": body["jobReference"],
            "status": {"state": self.0},
            "statistics": {"query": {"totalBytesProcessed": "1234", "statementType": "SELECT"}},
        }))
    }
}

async fn mount_insert(server: &MockServer, state: &'static str) {
    Mock::given(method("POST"))
        .and(path(JOBS))
        .respond_with(EchoJob(state))
        .mount(server)
        .await;
}

fn inserts(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == JOBS)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_the_rendered_sql_with_location_and_dry_run() {
    let server = MockServer::start().await;
    mount_insert(&server, "DONE").await;
    let params = SqlParams {
        project: "my-project".into(),
        dataset: "market".into(),
        bucket: "lake".into(),
        prefix: "p".into(),
        gzip: false,
        topic: "stock-stream".into(),
        bars_prefix: "stock-bars".into(),
        instrument: None,
    };
    let (name, sql) = STATEMENTS[0];
    let text = render(name, sql, &params).unwrap();
    let report = client(&server).run(name, &text, true).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.total_bytes_processed.as_deref(), Some("1234"));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "a dry run is not polled");
    let body = &inserts(&requests)[0];
    assert_eq!(body["configuration"]["dryRun"], true);
    assert_eq!(body["configuration"]["query"]["useLegacySql"], false);
    assert_eq!(body["configuration"]["query"]["query"], text.as_str());
    assert_eq!(body["jobReference"]["location"], "EU");
    assert_eq!(body["jobReference"]["projectId"], "my-project");
    assert!(
        body["jobReference"]["jobId"]
            .as_str()
            .unwrap()
            .starts_with("stockpipe_create_external_table_")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_polled_until_done_then_its_rows_are_read() {
    let server = MockServer::start().await;
    mount_insert(&server, "PENDING").await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/bigquery/v2/projects/my-project/jobs/stockpipe_.*",
        ))
        .and(query_param("location", "EU"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": {"state": "RUNNING"}})),
        )
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/bigquery/v2/projects/my-project/jobs/stockpipe_.*",
        ))
        .and(query_param("location", "EU"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": {"state": "DONE"},
            "statistics": {"query": {"statementType": "SELECT"}},
        })))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/bigquery/v2/projects/my-project/queries/stockpipe_.*",
        ))
        .and(query_param("location", "EU"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobComplete": true,
            "schema": {"fields": [{"name": "mean_absolute_error"}, {"name": "r2_score"}]},
            "rows": [{"f": [{"v": "0.42"}, {"v": "0.98"}]}],
        })))
        .mount(&server)
        .await;
    let report = client(&server)
        .run("evaluate_price_regression_model", "SELECT 1", false)
        .await
        .unwrap();
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0]["r2_score"], "0.98");
    let requests = server.received_requests().await.unwrap();
    let polls = requests
        .iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path().contains("/jobs/"))
        .count();
    assert_eq!(polls, 3, "RUNNING, RUNNING, DONE");
    // Every poll asks about the job we inserted.
    let job_id = inserts(&requests)[0]["jobReference"]["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "GET")
            .all(|r| r.url.path().ends_with(&job_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_surfaces_bigquerys_error_verbatim() {
    let server = MockServer::start().await;
    mount_insert(&server, "RUNNING").await;
    Mock::given(method("GET"))
        .and(path_regex(r"/jobs/stockpipe_"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": {
                "state": "DONE",
                "errorResult": {"reason": "invalidQuery", "message": "Unrecognized name: last_prize at [12:3]"},
                "errors": [{"reason": "invalidQuery", "message": "Unrecognized name: last_prize at [12:3]"}],
            }
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .run("train_price_regression_model", "SELECT last_prize", false)
        .await
        .unwrap_err();
    match &err {
        BqError::JobFailed { message, .. } => {
            assert_eq!(
                message,
                "invalidQuery: Unrecognized name: last_prize at [12:3]"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("train_price_regression_model: job stockpipe_")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_never_finishes_times_out() {
    let server = MockServer::start().await;
    mount_insert(&server, "RUNNING").await;
    Mock::given(method("GET"))
        .and(path_regex(r"/jobs/stockpipe_"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": {"state": "RUNNING"}})),
        )
        .mount(&server)
        .await;
    let mut c = client(&server);
    c.timeout = Duration::from_millis(150);
    let err = c.run("predict_price", "SELECT 1", false).await.unwrap_err();
    assert!(matches!(err, BqError::Timeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("bq show -j stockpipe_predict_price_")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_refused_up_front_is_an_error_with_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(JOBS))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Access Denied: Project my-project"}
        })))
        .mount(&server)
        .await;
    let err = client(&server)
        .run("predict_price", "SELECT 1", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403") && err.contains("Access Denied: Project my-project"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_submits_every_statement_in_order() {
    let server = MockServer::start().await;
    mount_insert(&server, "DONE").await;
    Mock::given(method("GET"))
        .and(path("/bigquery/v2/projects/my-project/datasets/market"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "my-project:market"})))
        .mount(&server)
        .await;
    let uri = server.uri();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .args(["bq", "submit", "--dry-run", "--project", "my-project"])
            .args(["--dataset", "market", "--bucket", "lake", "--prefix", "p"])
            .args(["--endpoint", &uri])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let requests = server.received_requests().await.unwrap();
    let names: Vec<String> = inserts(&requests)
        .iter()
        .map(|b| {
            b["configuration"]["labels"]["statement"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<&str> = STATEMENTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        STATEMENTS.len()
    );
}

/// `--config`: the lake's bucket, prefix and gzip, the topic and the bars' folder come from the
/// pipeline's own config (a flag still wins); a dataset that does not exist is created in the
/// location asked for before the first statement, or — with --no-create-dataset — named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statements_follow_the_pipeline_s_config_and_the_dataset_is_created() {
    let server = MockServer::start().await;
    mount_insert(&server, "DONE").await;
    Mock::given(method("POST"))
        .and(path("/bigquery/v2/projects/my-project/datasets"))
        .respond_with(|r: &Request| ResponseTemplate::new(200).set_body_bytes(r.body.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/bigquery/v2/projects/my-project/queries/stockpipe_.*",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobComplete": true, "schema": {"fields": []}, "rows": [], "totalRows": "0"
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stockpipe.toml");
    std::fs::write(
        &config,
        "[kafka]\ntopic = \"nse-ticks\"\n[lake]\nurl = \"gs://prod-lake/markets/v1\"\ngzip = true\n\
         [aggregate]\nlake_prefix = \"nse-bars\"\n",
    )
    .unwrap();
    let bq = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
            .arg("bq")
            .args(args)
            .arg("--config")
            .arg(&config)
            .args(["--project", "my-project", "--dataset", "market"])
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| bq(&["render"]));
    assert!(out.status.success(), "{out:?}");
    let sql = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "uris = ['gs://prod-lake/markets/v1/nse-ticks/*']",
        "hive_partition_uri_prefix = 'gs://prod-lake/markets/v1/nse-ticks'",
        "uris = ['gs://prod-lake/markets/v1/nse-bars/*']",
        "compression = 'GZIP',",
    ] {
        assert!(sql.contains(expected), "{expected}: {sql}");
    }
    assert!(
        !sql.contains("stock-stream") && !sql.contains("stockpipe-lake"),
        "{sql}"
    );
    let out = tokio::task::block_in_place(|| bq(&["render", "--topic", "bse-ticks"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/markets/v1/bse-ticks/*"));
    let uri = server.uri();
    let submit = |more: &[&str]| {
        let mut args = vec!["submit", "--location", "asia-south1", "--endpoint", &uri];
        args.extend_from_slice(more);
        tokio::task::block_in_place(|| bq(&args))
    };
    let out = submit(&["--only", "create_external_table", "--no-create-dataset"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("my-project:market does not exist") && stderr.contains("bq mk"),
        "{stderr}"
    );
    let out = submit(&["--only", "create_external_table"]);
    assert!(out.status.success(), "{out:?}");
    let requests = server.received_requests().await.unwrap();
    let created: Vec<Value> = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/datasets"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["datasetReference"]["datasetId"], "market");
    assert_eq!(created[0]["location"], "asia-south1");
    let job = inserts(&requests).pop().unwrap();
    let query = job["configuration"]["query"]["query"].as_str().unwrap();
    assert!(
        query.contains("gs://prod-lake/markets/v1/nse-ticks/*"),
        "{query}"
    );
}
