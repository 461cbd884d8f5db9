//! BigQuery ML: the statements of `sql/` (embedded, in the order they run), their rendering, and
//! their submission through the REST API (`jobs.insert`, then `jobs.get` until DONE, then
//! `jobs.getQueryResults` for the rows).
//!
//! Jobs get an id we make, so an insert whose answer was lost can be retried safely (409 = it
//! landed); every call carries the dataset's location; DONE is not success — `status.errorResult`
//! is checked and printed verbatim.

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The statements, in the order `bq submit` runs them. The last two read the aggregate stage's
/// bars (a lake written with `[aggregate] enabled = true`).
pub const STATEMENTS: [(&str, &str); 9] = [
    (
        "create_external_table",
        include_str!("../../../sql/create_external_table.sql"),
    ),
    (
        "train_price_regression_model",
        include_str!("../../../sql/train_price_regression_model.sql"),
    ),
    (
        "evaluate_price_regression_model",
        include_str!("../../../sql/evaluate_price_regression_model.sql"),
    ),
    (
        "predict_price",
        include_str!("../../../sql/predict_price.sql"),
    ),
    (
        "train_and_predict_timeseries",
        include_str!("../../../sql/train_and_predict_timeseries.sql"),
    ),
    (
        "train_and_predict_timeseries_multiseries",
        include_str!("../../../sql/train_and_predict_timeseries_multiseries.sql"),
    ),
    (
        "evaluate_timeseries",
        include_str!("../../../sql/evaluate_timeseries.sql"),
    ),
    (
        "create_bars_external_table",
        include_str!("../../../sql/create_bars_external_table.sql"),
    ),
    (
        "train_and_predict_bars_per_instrument",
        include_str!("../../../sql/train_and_predict_bars_per_instrument.sql"),
    ),
];

pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlParams {
    pub project: String,
    pub dataset: String,
    pub bucket: String,
    pub prefix: String,
    /// The lake's objects are gzipped (`lake.gzip = true`): the external table must say so (its
    /// `compression` defaults to none, and one table reads one kind).
    pub gzip: bool,
    /// The topic whose ticks the lake holds (`kafka.topic`): the ticks' folder.
    pub topic: String,
    /// The bars' folder (`aggregate.lake_prefix`).
    pub bars_prefix: String,
    /// The single-series ARIMA's instrument; `None` = the one with the most ticks.
    pub instrument: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BqError {
    #[error("{what} {value:?} is not valid: {rule}")]
    Param {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("{statement}: unknown placeholder ${{{name}}}")]
    Placeholder { statement: String, name: String },
    #[error("no statement named {0:?} (known: {1})")]
    UnknownStatement(String, String),
    #[error("{statement}: {message}")]
    Request { statement: String, message: String },
    /// The job ran and failed: BigQuery's own words.
    #[error("{statement}: job {job_id} failed: {message}")]
    JobFailed {
        statement: String,
        job_id: String,
        message: String,
    },
    #[error(
        "{statement}: job {job_id} did not finish within {seconds} s (it may still be running: bq show -j {job_id})"
    )]
    Timeout {
        statement: String,
        job_id: String,
        seconds: u64,
    },
}

impl SqlParams {
    pub fn check(&self) -> Result<(), BqError> {
        let bad = |what, value: &str, rule| {
            Err(BqError::Param {
                what,
                value: value.to_string(),
                rule,
            })
        };
        let ok = |s: &str, extra: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
        };
        if !ok(&self.project, "-.:") {
            return bad("project", &self.project, "letters, digits, - _ . :");
        }
        if !ok(&self.dataset, "") {
            return bad("dataset", &self.dataset, "letters, digits and _");
        }
        if !ok(&self.bucket, "-.") {
            return bad("bucket", &self.bucket, "lowercase letters, digits, - _ .");
        }
        if !ok(&self.prefix, "-./") || self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return bad(
                "prefix",
                &self.prefix,
                "non-empty, letters, digits, - _ . /, no leading or trailing /",
            );
        }
        if !ok(&self.topic, "-.") {
            return bad("topic", &self.topic, "letters, digits, - _ .");
        }
        if !ok(&self.bars_prefix, "-.") {
            return bad("bars prefix", &self.bars_prefix, "letters, digits, - _ .");
        }
        Ok(())
    }
}

/// Replaces `${project}`, `${dataset}`, `${bucket}`, `${prefix}`, `${compression_option}`
/// (`compression = 'GZIP',` for a gzipped lake, else nothing) and `${instrument_token}` (the
/// instrument, or `NULL` for the statement's default); any other `${…}` is an error.
pub fn render(statement: &str, sql: &str, params: &SqlParams) -> Result<String, BqError> {
    params.check()?;
    let instrument = params
        .instrument
        .map_or_else(|| "NULL".to_string(), |t| t.to_string());
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or_else(|| BqError::Placeholder {
            statement: statement.into(),
            name: after.chars().take(20).collect(),
        })?;
        let name = &after[..end];
        out.push_str(match name {
            "project" => &params.project,
            "dataset" => &params.dataset,
            "bucket" => &params.bucket,
            "prefix" => &params.prefix,
            "topic" => &params.topic,
            "bars_prefix" => &params.bars_prefix,
            "compression_option" if params.gzip => "compression = 'GZIP',",
            "compression_option" => "",
            "instrument_token" => &instrument,
            _ => {
                return Err(BqError::Placeholder {
                    statement: statement.into(),
                    name: name.into(),
                });
            }
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The statements to run: all, or those named in `only` (in the canonical order).
pub fn select(only: &[String]) -> Result<Vec<(&'static str, &'static str)>, BqError> {
    let known = || {
        STATEMENTS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in only {
        if !STATEMENTS.iter().any(|(n, _)| n == name) {
            return Err(BqError::UnknownStatement(name.clone(), known()));
        }
    }
    Ok(STATEMENTS
        .iter()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n))
        .copied()
        .collect())
}

/// What a job came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    pub statement: String,
    pub job_id: String,
    pub dry_run: bool,
    pub total_bytes_processed: Option<String>,
    pub statement_type: Option<String>,
    /// Result rows (for statements that return some), as objects keyed by column name.
    pub rows: Vec<BTreeMap<String, Value>>,
    pub seconds: f64,
}

pub struct BqClient {
    http: reqwest::Client,
    endpoint: String,
    project: String,
    location: String,
    credentials: google_cloud_auth::credentials::Credentials,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub max_rows: usize,
}

impl BqClient {
    /// `endpoint`: none for Google's (with Application Default Credentials); a local one (tests, an
    /// emulator) is reached without credentials.
    pub fn new(project: &str, location: &str, endpoint: Option<&str>) -> Result<Self, BqError> {
        let credentials = match endpoint {
            Some(_) => google_cloud_auth::credentials::anonymous::Builder::new().build(),
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| BqError::Request {
                    statement: "credentials".into(),
                    message: format!(
                        "Application Default Credentials: {e} (gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS)"
                    ),
                })?,
        };
        Ok(Self {
            http: reqwest::Client::new(),
            endpoint: endpoint
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            project: project.to_string(),
            location: location.to_string(),
            credentials,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(900),
            max_rows: 1000,
        })
    }

    fn jobs_url(&self) -> String {
        format!(
            "{}/bigquery/v2/projects/{}/jobs",
            self.endpoint, self.project
        )
    }

    async fn call(
        &self,
        statement: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), BqError> {
        use google_cloud_auth::credentials::CacheableResource;
        let err = |message: String| BqError::Request {
            statement: statement.into(),
            message,
        };
        let headers = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => reqwest::header::HeaderMap::new(),
            Err(e) => return Err(err(format!("credentials: {e}"))),
        };
        let response = request
            .headers(headers)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| err(e.to_string()))?;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }

    /// Makes sure `dataset` exists: found, or created in this client's location (unless `create`
    /// is false: then its absence is an error naming it). Returns whether it was created.
    pub async fn ensure_dataset(&self, dataset: &str, create: bool) -> Result<bool, BqError> {
        let datasets = format!(
            "{}/bigquery/v2/projects/{}/datasets",
            self.endpoint, self.project
        );
        let err = |message: String| BqError::Request {
            statement: "dataset".into(),
            message,
        };
        let (status, answer) = self
            .call("dataset", self.http.get(format!("{datasets}/{dataset}")))
            .await?;
        match status {
            200 => return Ok(false),
            404 if !create => {
                return Err(err(format!(
                    "the dataset {}:{dataset} does not exist (create it with `bq mk --location {} {}:{dataset}`, or leave out --no-create-dataset)",
                    self.project, self.location, self.project
                )));
            }
            404 => {}
            _ => {
                return Err(err(format!(
                    "datasets.get {}:{dataset} answered {status}: {}",
                    self.project,
                    error_text(&answer)
                )));
            }
        }
        let body = json!({
            "datasetReference": {"projectId": self.project, "datasetId": dataset},
            "location": self.location,
            "labels": {"tool": "stockpipe"},
        });
        let (status, answer) = self
            .call("dataset", self.http.post(&datasets).json(&body))
            .await?;
        match status {
            200 => Ok(true),
            // Created meanwhile by someone else.
            409 => Ok(false),
            _ => Err(err(format!(
                "creating the dataset {}:{dataset} in {} answered {status}: {}",
                self.project,
                self.location,
                error_text(&answer)
            ))),
        }
    }

    /// Runs one statement to the end (or validates it, with `dry_run`).
    pub async fn run(
        &self,
        statement: &str,
        sql: &str,
        dry_run: bool,
    ) -> Result<JobReport, BqError> {
        let started = Instant::now();
        let job_id = new_job_id(statement);
        let body = json!({
            "jobReference": {"projectId": self.project, "jobId": job_id, "location": self.location},
            "configuration": {
                "dryRun": dry_run,
                "query": {"query": sql, "useLegacySql": false},
                "labels": {"tool": "stockpipe", "statement": statement},
            },
        });
        let mut attempts = 0;
        let mut job = loop {
            attempts += 1;
            let sent = self
                .call(statement, self.http.post(self.jobs_url()).json(&body))
                .await;
            match sent {
                Ok((200, job)) => break job,
                // Our id already exists: an earlier attempt landed.
                Ok((409, _)) if attempts > 1 => break self.get_job(statement, &job_id).await?,
                Ok((status, answer)) if status == 429 || status >= 500 => {
                    if attempts >= 5 {
                        return Err(BqError::Request {
                            statement: statement.into(),
                            message: format!("jobs.insert answered {status}: {answer}"),
                        });
                    }
                }
                Ok((status, answer)) => {
                    return Err(BqError::Request {
                        statement: statement.into(),
                        message: format!("jobs.insert answered {status}: {}", error_text(&answer)),
                    });
                }
                Err(e) if attempts >= 5 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "jobs.insert failed; retrying with the same job id")
                }
            }
            tokio::time::sleep(self.poll_interval * attempts).await;
        };
        if !dry_run {
            while job["status"]["state"] != "DONE" {
                if started.elapsed() >= self.timeout {
                    return Err(BqError::Timeout {
                        statement: statement.into(),
                        job_id,
                        seconds: self.timeout.as_secs(),
                    });
                }
                tokio::time::sleep(self.poll_interval).await;
                job = self.get_job(statement, &job_id).await?;
            }
        }
        if let Some(error) = job["status"].get("errorResult") {
            let mut message = error_text(&json!({"error": error}));
            if let Some(all) = job["status"]["errors"].as_array()
                && all.len() > 1
            {
                for e in &all[1..] {
                    message.push_str("; ");
                    message.push_str(e["message"].as_str().unwrap_or_default());
                }
            }
            return Err(BqError::JobFailed {
                statement: statement.into(),
                job_id,
                message,
            });
        }
        let stats = &job["statistics"]["query"];
        let rows = if dry_run {
            Vec::new()
        } else {
            self.results(statement, &job_id).await?
        };
        Ok(JobReport {
            statement: statement.into(),
            job_id,
            dry_run,
            total_bytes_processed: stats["totalBytesProcessed"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    job["statistics"]["totalBytesProcessed"]
                        .as_str()
                        .map(str::to_string)
                }),
            statement_type: stats["statementType"].as_str().map(str::to_string),
            rows,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn get_job(&self, statement: &str, job_id: &str) -> Result<Value, BqError> {
        let url = format!("{}/{job_id}", self.jobs_url());
        let request = self
            .http
            .get(url)
            .query(&[("location", self.location.as_str())]);
        match self.call(statement, request).await? {
            (200, job) => Ok(job),
            (status, answer) => Err(BqError::Request {
                statement: statement.into(),
                message: format!("jobs.get answered {status}: {}", error_text(&answer)),
            }),
        }
    }

    /// The job's rows (up to `max_rows`), each as {column: value}.
    async fn results(
        &self,
        statement: &str,
        job_id: &str,
    ) -> Result<Vec<BTreeMap<String, Value>>, BqError> {
        let url = format!(
            "{}/bigquery/v2/projects/{}/queries/{job_id}",
            self.endpoint, self.project
        );
        let request = self.http.get(url).query(&[
            ("location", self.location.as_str()),
            ("maxResults", &self.max_rows.to_string()),
        ]);
        let answer = match self.call(statement, request).await? {
            (200, answer) => answer,
            (status, answer) => {
                return Err(BqError::Request {
                    statement: statement.into(),
                    message: format!("getQueryResults answered {status}: {}", error_text(&answer)),
                });
            }
        };
        Ok(rows_of(&answer))
    }
}

/// `{schema: {fields: [{name}]}, rows: [{f: [{v}]}]}` → [{name: v}] (values as BigQuery sends
/// them: strings, nested records as they come).
pub fn rows_of(answer: &Value) -> Vec<BTreeMap<String, Value>> {
    let names: Vec<&str> = answer["schema"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["name"].as_str().unwrap_or(""))
        .collect();
    answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            names
                .iter()
                .zip(row["f"].as_array().into_iter().flatten())
                .map(|(name, cell)| ((*name).to_string(), cell["v"].clone()))
                .collect()
        })
        .collect()
}

fn error_text(answer: &Value) -> String {
    match answer.get("error") {
        Some(e) => {
            let message = e["message"].as_str().unwrap_or_default();
            match e["reason"].as_str().or(e["status"].as_str()) {
                Some(reason) => format!("{reason}: {message}"),
                None => message.to_string(),
            }
        }
        None => answer.to_string(),
    }
}

fn new_job_id(statement: &str) -> String {
    let nanos = crate::clock::unix_now_nanos();
    format!("stockpipe_{statement}_{nanos}_{:016x}", crate::random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SqlParams {
        SqlParams {
            project: "my-project".into(),
            dataset: "market".into(),
            bucket: "ticks-lake".into(),
            prefix: "prod/stockpipe".into(),
            gzip: false,
            topic: "stock-stream".into(),
            bars_prefix: "stock-bars".into(),
            instrument: None,
        }
    }

    /// The single series is one instrument: the one asked for, else the busiest — never the mean
    /// of every instrument's price.
    #[test]
    fn the_single_series_is_one_instrument() {
        let (name, sql) = *STATEMENTS
            .iter()
            .find(|(n, _)| *n == "train_and_predict_timeseries")
            .unwrap();
        let busiest = render(name, sql, &params()).unwrap();
        assert!(
            busiest.contains("WHERE instrument_token = COALESCE(NULL, (\n  SELECT instrument_token\n  FROM `my-project.market.stock_ticks`\n  GROUP BY instrument_token\n  ORDER BY COUNT(*) DESC"),
            "{busiest}"
        );
        let chosen = render(
            name,
            sql,
            &SqlParams {
                instrument: Some(408065),
                ..params()
            },
        )
        .unwrap();
        assert!(chosen.contains("COALESCE(408065, ("), "{chosen}");
        let model = &busiest[..busiest.find("SELECT *").unwrap()];
        let outer_where = model.find("WHERE instrument_token").unwrap();
        assert!(outer_where < model.rfind("GROUP BY ts").unwrap(), "{model}");
    }

    /// A gzipped lake gets a table that reads GZIP; a plain one a table that reads it plain.
    #[test]
    fn the_table_reads_the_lake_s_compression() {
        let (name, sql) = STATEMENTS[0];
        let plain = render(name, sql, &params()).unwrap();
        assert!(!plain.contains("compression ="), "{plain}");
        let gzip = render(
            name,
            sql,
            &SqlParams {
                gzip: true,
                ..params()
            },
        )
        .unwrap();
        assert!(gzip.contains("  compression = 'GZIP',\n"), "{gzip}");
        let options = &gzip[gzip.find("OPTIONS (").unwrap()..];
        assert!(
            options.contains("format = 'NEWLINE_DELIMITED_JSON'"),
            "{options}"
        );
    }

    #[test]
    fn every_statement_renders_with_no_placeholder_left() {
        for (name, sql) in STATEMENTS {
            let out = render(name, sql, &params()).unwrap();
            assert!(!out.contains("${"), "{name}");
            assert!(out.contains("`my-project.market."), "{name}");
        }
        let table = render(STATEMENTS[0].0, STATEMENTS[0].1, &params()).unwrap();
        assert!(table.contains("uris = ['gs://ticks-lake/prod/stockpipe/stock-stream/*']"));
        assert!(table.contains("format = 'NEWLINE_DELIMITED_JSON'"));
    }

    #[test]
    fn the_statements_follow_the_bigquery_rules_we_rely_on() {
        let text = |n: &str| STATEMENTS.iter().find(|(s, _)| *s == n).unwrap().1;
        let table = text("create_external_table");
        assert!(table.contains("WITH PARTITION COLUMNS"));
        assert!(table.contains("depth STRUCT<"));
        assert!(table.contains("`timestamp` TIMESTAMP"));
        let multi = text("train_and_predict_timeseries_multiseries");
        assert!(multi.contains("time_series_id_col = 'instrument_token'"));
        assert!(multi.contains("horizon = 10"));
        assert!(multi.contains("auto_arima = TRUE"));
        // One value per timestamp per series: aggregated, on a TIMESTAMP column.
        assert!(multi.contains("TIMESTAMP_TRUNC(`timestamp`, MINUTE) AS ts"));
        assert!(multi.contains("GROUP BY instrument_token, ts"));
        assert!(text("train_price_regression_model").contains("model_type = 'LINEAR_REG'"));
        assert!(text("evaluate_timeseries").contains("ML.ARIMA_EVALUATE"));
    }

    #[test]
    fn unknown_placeholders_and_bad_names_are_refused() {
        assert_eq!(
            render("x", "SELECT ${tabel}", &params()),
            Err(BqError::Placeholder {
                statement: "x".into(),
                name: "tabel".into()
            })
        );
        let mut p = params();
        p.dataset = "market`; DROP".into();
        assert!(matches!(
            render("x", "SELECT 1", &p),
            Err(BqError::Param {
                what: "dataset",
                ..
            })
        ));
        p = params();
        p.prefix = "/lead".into();
        assert!(render("x", "SELECT 1", &p).is_err());
    }

    #[test]
    fn selection_keeps_the_order_and_names_unknown_statements() {
        let picked = select(&["predict_price".into(), "create_external_table".into()]).unwrap();
        assert_eq!(
            picked.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["create_external_table", "predict_price"]
        );
        let err = select(&["predict".into()]).unwrap_err().to_string();
        assert!(err.contains("predict_price"), "{err}");
        assert_eq!(select(&[]).unwrap().len(), STATEMENTS.len());
    }

    #[test]
    fn result_rows_are_keyed_by_column() {
        let answer = json!({
            "schema": {"fields": [{"name": "r2_score"}, {"name": "mean_absolute_error"}]},
            "rows": [{"f": [{"v": "0.97"}, {"v": "0.12"}]}],
        });
        let rows = rows_of(&answer);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["r2_score"], "0.97");
    }
}
