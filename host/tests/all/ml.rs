//! The offline models against reference numbers computed once with statsmodels
//! (`tests/fixtures/ml/make_reference.py`; the test itself needs no Python), and `stockpipe ml`
//! over a lake the pipeline wrote.

use crate::support::{last_json_line, stockpipe};
use serde_json::Value;
use stockpipe::tools::ml;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ml")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn ols_matches_statsmodels_to_1e_6() {
    let f = fixture("ols.json");
    let x: Vec<Vec<f64>> = f["x"].as_array().unwrap().iter().map(floats).collect();
    let y = floats(&f["y"]);
    let want = floats(&f["coefficients"]);
    let got = ml::ols(&x, &y).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "coefficient {i}: {g} vs statsmodels {w}"
        );
    }
}

#[test]
fn arima_forecast_matches_statsmodels_within_1_percent() {
    let f = fixture("arima.json");
    let series = floats(&f["series"]);
    let want = floats(&f["forecast"]);
    let got = ml::arima_forecast(&series, (1, 1, 1), want.len(), 0.9).unwrap();
    for (step, (g, w)) in got.values.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 0.01 * w.abs(),
            "step {}: {g} vs statsmodels {w}",
            step + 1
        );
    }
    // The interval holds the point forecast and widens with the horizon.
    for i in 0..want.len() {
        assert!(got.lower[i] <= got.values[i] && got.values[i] <= got.upper[i]);
    }
    assert!(got.upper[9] - got.lower[9] > got.upper[0] - got.lower[0]);
}

/// `stockpipe ml forecast --lake LAKE ARGS…` (off the runtime's threads), its JSON summary.
async fn ml_forecast(lake: &str, args: &[&str]) -> Value {
    let mut all = vec![
        "ml".to_string(),
        "forecast".into(),
        "--lake".into(),
        lake.into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        stockpipe(&all.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    last_json_line(&out)
}

/// The pipeline fills a lake offline; `ml train` and `ml forecast` read it back, the forecasts land
/// in the lake and in the stock-forecast index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ml_commands_over_a_lake_the_pipeline_wrote() {
    let noida = crate::emulators::NoidaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ticks.ndjson");
    let lake = dir.path().join("lake");
    let (input_s, lake_s) = (input.to_str().unwrap(), lake.to_str().unwrap());
    stockpipe(&[
        "simulate",
        "--instruments",
        "20",
        "--ticks",
        "4000",
        "--seed",
        "3",
        "--out",
        input_s,
    ]);
    let run = last_json_line(&stockpipe(&[
        "run", "--input", input_s, "--once", "--lake", lake_s,
    ]));
    assert_eq!(run["accepted"], 4000, "{run}");

    let train = last_json_line(&stockpipe(&["ml", "train", "--lake", lake_s]));
    assert_eq!(
        train["train_rows"].as_u64().unwrap() + train["eval_rows"].as_u64().unwrap(),
        4000
    );
    assert_eq!(train["eval_rows"], 800, "the newest 20 % evaluate");
    assert!(
        train["evaluation"]["r2_score"].as_f64().unwrap() > 0.9,
        "{train}"
    );
    assert_eq!(
        train["coefficients"].as_object().unwrap().len(),
        ml::FEATURES.len()
    );

    let forecast = ml_forecast(
        lake_s,
        &[
            "--horizon",
            "10",
            "--step-seconds",
            "5",
            "--es-url",
            &noida.es_url,
        ],
    )
    .await;
    assert_eq!(forecast["step_seconds"], 5, "{forecast}");
    assert_eq!(forecast["instruments"], 20, "{forecast}");
    assert_eq!(forecast["forecasts"], 200);
    assert_eq!(forecast["indexed"], 200);
    // Without --step-seconds the step is one the data supports (these ticks span a few
    // minutes: at 60 s no series had 12 points, and the command failed).
    let chosen = ml_forecast(lake_s, &["--horizon", "3"]).await;
    let step = chosen["step_seconds"].as_u64().unwrap();
    assert!(
        step < 60 && chosen["forecasts"].as_u64() > Some(0),
        "{chosen}"
    );
    let object = lake.join(forecast["lake_object"].as_str().unwrap());
    let rows: Vec<Value> = std::fs::read_to_string(&object)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 200);
    for r in &rows {
        let (lo, v, hi) = (
            r["prediction_interval_lower_bound"].as_f64().unwrap(),
            r["forecast_value"].as_f64().unwrap(),
            r["prediction_interval_upper_bound"].as_f64().unwrap(),
        );
        assert!(lo <= v && v <= hi && v > 0.0, "{r}");
        assert!(r["model"].as_str().unwrap().starts_with("ARIMA("));
    }
    let count: Value = reqwest::get(format!("{}/stock-forecast/_count", noida.es_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["count"], 200, "{count}");

    // One series is one instrument: the busiest in the lake (the single-series BigQuery model's
    // default), never the mean of every instrument's price.
    let mut ticks: std::collections::BTreeMap<u64, usize> = Default::default();
    for doc in crate::support::lake_documents(&lake.join("stock-stream")) {
        *ticks
            .entry(doc["instrument_token"].as_u64().unwrap())
            .or_default() += 1;
    }
    let most = ticks.values().max().unwrap();
    let busiest = ticks
        .iter()
        .find(|(_, n)| *n == most)
        .unwrap()
        .0
        .to_string();
    for (which, token) in [
        ("busiest", busiest.clone()),
        (busiest.as_str(), busiest.clone()),
    ] {
        let one = ml_forecast(lake_s, &["--horizon", "4", "--instrument", which]).await;
        assert_eq!(one["instruments"], 1, "{one}");
        assert_eq!(one["forecasts"], 4, "{one}");
        let object = lake.join(one["lake_object"].as_str().unwrap());
        for line in std::fs::read_to_string(&object).unwrap().lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["instrument_token"].to_string(), token, "{row}");
        }
    }
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(["ml", "forecast", "--lake", lake_s, "--instrument", "1"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("instrument 1 is not in the lake (20 instruments"),
        "{missing:?}"
    );
}
