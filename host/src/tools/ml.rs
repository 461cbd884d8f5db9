//! The BigQuery ML models computed offline from the lake's NDJSON: the `last_price` linear
//! regression (ordinary least squares by SVD, nalgebra) with R², MAE and MSE on a sequential
//! held-out split, and ARIMA forecasts per instrument (anofox-forecast) with the order chosen by
//! AIC over a small grid, on series regularized to one value per time step.
//!
//! Mirrors `sql/train_price_regression_model.sql` and
//! `sql/train_and_predict_timeseries_multiseries.sql`; the forecasts go to the lake
//! (`forecasts/…ndjson`) and, when configured, to the `stock-forecast` index.

use anofox_forecast::models::Forecaster;
use anofox_forecast::models::arima::ARIMA;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The regression's features, in the order of its coefficients (after the intercept).
pub const FEATURES: [&str; 8] = [
    "volume",
    "average_price",
    "open",
    "high",
    "low",
    "close",
    "spread_bps",
    "book_imbalance",
];

/// What the models read of one lake document. A feature the tick lacks (an `ltp` tick has no
/// volume, an index no book) is `None`, as BigQuery's NULL.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LakeRow {
    pub timestamp: String,
    pub instrument_token: u64,
    pub last_price: f64,
    #[serde(default)]
    pub volume: Option<f64>,
    #[serde(default)]
    pub average_price: Option<f64>,
    #[serde(default)]
    pub open: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub close: Option<f64>,
    #[serde(default)]
    pub spread_bps: Option<f64>,
    #[serde(default)]
    pub book_imbalance: Option<f64>,
}

impl LakeRow {
    fn features(&self) -> [Option<f64>; 8] {
        [
            self.volume,
            self.average_price,
            self.open,
            self.high,
            self.low,
            self.close,
            self.spread_bps,
            self.book_imbalance,
        ]
    }
}

/// Each feature's mean over `rows` (0 where no row has it): what stands in for a feature a row
/// lacks, as BigQuery ML imputes a NULL numerical feature with its training mean.
fn feature_means(rows: &[(i64, LakeRow)]) -> [f64; 8] {
    let mut sums = [(0.0, 0_usize); 8];
    for (_, r) in rows {
        for (sum, x) in sums.iter_mut().zip(r.features()) {
            if let Some(x) = x {
                *sum = (sum.0 + x, sum.1 + 1);
            }
        }
    }
    sums.map(|(sum, n)| if n == 0 { 0.0 } else { sum / n as f64 })
}

/// A row's features, a missing one by its training mean.
fn imputed(r: &LakeRow, means: &[f64; 8]) -> Vec<f64> {
    r.features()
        .iter()
        .zip(means)
        .map(|(x, mean)| x.unwrap_or(*mean))
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MlError {
    #[error("{0}")]
    Data(String),
    #[error("least squares failed: {0}")]
    Solve(String),
}

/// Reads lake lines (NDJSON) into rows with their time in UTC µs.
pub fn parse_rows(ndjson: &[u8]) -> Result<Vec<(i64, LakeRow)>, MlError> {
    let mut rows = Vec::new();
    for (n, line) in ndjson.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row: LakeRow = serde_json::from_slice(line)
            .map_err(|e| MlError::Data(format!("line {}: {e}", n + 1)))?;
        let ts = stockpipe_model::time::parse_timestamp(&row.timestamp, 0)
            .map_err(|e| MlError::Data(format!("line {}: timestamp: {e:?}", n + 1)))?;
        rows.push((ts, row));
    }
    Ok(rows)
}

/// Least squares with an intercept: `y ≈ b0 + Σ bi·xi`, solved by SVD (no normal equations).
/// Returns `[b0, b1, …]`.
pub fn ols(x: &[Vec<f64>], y: &[f64]) -> Result<Vec<f64>, MlError> {
    let n = y.len();
    let k = x.first().map_or(0, Vec::len);
    if n <= k + 1 {
        return Err(MlError::Data(format!(
            "{n} rows cannot fit {} coefficients",
            k + 1
        )));
    }
    let design =
        nalgebra::DMatrix::from_fn(n, k + 1, |i, j| if j == 0 { 1.0 } else { x[i][j - 1] });
    let target = nalgebra::DVector::from_column_slice(y);
    let svd = design.svd(true, true);
    let solution = svd
        .solve(&target, 1e-12)
        .map_err(|e| MlError::Solve(e.to_string()))?;
    Ok(solution.iter().copied().collect())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub r2_score: f64,
    pub mean_absolute_error: f64,
    pub mean_squared_error: f64,
}

pub fn metrics(actual: &[f64], predicted: &[f64]) -> Metrics {
    let n = actual.len().max(1) as f64;
    let mean = actual.iter().sum::<f64>() / n;
    let ss_res: f64 = actual
        .iter()
        .zip(predicted)
        .map(|(a, p)| (a - p).powi(2))
        .sum();
    let ss_tot: f64 = actual.iter().map(|a| (a - mean).powi(2)).sum();
    Metrics {
        r2_score: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            f64::NAN
        },
        mean_absolute_error: actual
            .iter()
            .zip(predicted)
            .map(|(a, p)| (a - p).abs())
            .sum::<f64>()
            / n,
        mean_squared_error: ss_res / n,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionReport {
    pub model: &'static str,
    pub label: &'static str,
    pub intercept: f64,
    pub coefficients: BTreeMap<&'static str, f64>,
    pub train_rows: usize,
    pub eval_rows: usize,
    /// On the held-out newest `eval_fraction` of the rows (a sequential split, as
    /// `data_split_method = 'SEQ'`).
    pub evaluation: Metrics,
}

/// Trains the `last_price` regression on all but the newest `eval_fraction` of the rows.
pub fn train_regression(
    rows: &mut [(i64, LakeRow)],
    eval_fraction: f64,
) -> Result<RegressionReport, MlError> {
    rows.sort_by_key(|(ts, _)| *ts);
    let eval_rows = ((rows.len() as f64) * eval_fraction).round() as usize;
    let train_rows = rows.len() - eval_rows;
    let (train, eval) = rows.split_at(train_rows);
    let means = feature_means(train);
    let x: Vec<Vec<f64>> = train.iter().map(|(_, r)| imputed(r, &means)).collect();
    let y: Vec<f64> = train.iter().map(|(_, r)| r.last_price).collect();
    let beta = ols(&x, &y)?;
    let predict = |r: &LakeRow| {
        beta[0]
            + imputed(r, &means)
                .iter()
                .zip(&beta[1..])
                .map(|(x, b)| x * b)
                .sum::<f64>()
    };
    let held_out = if eval.is_empty() { train } else { eval };
    let actual: Vec<f64> = held_out.iter().map(|(_, r)| r.last_price).collect();
    let predicted: Vec<f64> = held_out.iter().map(|(_, r)| predict(r)).collect();
    Ok(RegressionReport {
        model: "LINEAR_REG",
        label: "last_price",
        intercept: beta[0],
        coefficients: FEATURES
            .iter()
            .copied()
            .zip(beta[1..].iter().copied())
            .collect(),
        train_rows,
        eval_rows: eval.len(),
        evaluation: metrics(&actual, &predicted),
    })
}

/// One value per `step_us`: the mean of the ticks in each step, gaps filled by linear
/// interpolation. Returns the first step's start (UTC µs) and the values.
pub fn regularize(points: &[(i64, f64)], step_us: i64) -> Option<(i64, Vec<f64>)> {
    let first = points.iter().map(|p| p.0).min()?.div_euclid(step_us);
    let last = points.iter().map(|p| p.0).max()?.div_euclid(step_us);
    let len = (last - first + 1) as usize;
    let mut sums = vec![(0.0, 0u32); len];
    for &(ts, v) in points {
        let slot = &mut sums[(ts.div_euclid(step_us) - first) as usize];
        slot.0 += v;
        slot.1 += 1;
    }
    let known: Vec<(usize, f64)> = sums
        .iter()
        .enumerate()
        .filter(|(_, s)| s.1 > 0)
        .map(|(i, s)| (i, s.0 / f64::from(s.1)))
        .collect();
    let mut values = vec![0.0; len];
    for pair in known.windows(2) {
        let ((i0, v0), (i1, v1)) = (pair[0], pair[1]);
        for (i, value) in values.iter_mut().enumerate().take(i1 + 1).skip(i0) {
            *value = v0 + (v1 - v0) * (i - i0) as f64 / (i1 - i0) as f64;
        }
    }
    if let [(i, v)] = known[..] {
        values[i] = v;
    }
    Some((first * step_us, values))
}

/// An ARIMA fit and its forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArimaForecast {
    pub order: (usize, usize, usize),
    pub aic: f64,
    pub values: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

/// Fits ARIMA(p, d, q) and forecasts `horizon` steps with a `level` interval.
pub fn arima_forecast(
    series: &[f64],
    order: (usize, usize, usize),
    horizon: usize,
    level: f64,
) -> Result<ArimaForecast, MlError> {
    let start = chrono::DateTime::<chrono::Utc>::from_timestamp(0, 0).expect("epoch");
    let stamps = (0..series.len())
        .map(|i| start + chrono::Duration::minutes(i as i64))
        .collect();
    let ts = anofox_forecast::core::TimeSeries::univariate(stamps, series.to_vec())
        .map_err(|e| MlError::Data(e.to_string()))?;
    let mut model = ARIMA::new(order.0, order.1, order.2);
    model.fit(&ts).map_err(|e| MlError::Solve(e.to_string()))?;
    let forecast = model
        .predict_with_intervals(horizon, level)
        .map_err(|e| MlError::Solve(e.to_string()))?;
    let values = forecast.primary().to_vec();
    let (lower, upper) = match (forecast.lower_series(0), forecast.upper_series(0)) {
        (Ok(l), Ok(u)) => (l.to_vec(), u.to_vec()),
        _ => (values.clone(), values.clone()),
    };
    if values.len() != horizon || values.iter().any(|v| !v.is_finite()) {
        return Err(MlError::Solve(format!(
            "ARIMA{order:?} gave no usable forecast"
        )));
    }
    Ok(ArimaForecast {
        order,
        aic: model.aic().unwrap_or(f64::INFINITY),
        values,
        lower,
        upper,
    })
}

/// Like `auto_arima`: the lowest-AIC order over p, q ≤ 2 and d ≤ 1.
pub fn auto_arima(series: &[f64], horizon: usize, level: f64) -> Result<ArimaForecast, MlError> {
    let mut best: Option<ArimaForecast> = None;
    let mut last_error = None;
    for d in 0..=1 {
        for p in 0..=2 {
            for q in 0..=2 {
                match arima_forecast(series, (p, d, q), horizon, level) {
                    Ok(f) if f.aic.is_finite() && best.as_ref().is_none_or(|b| f.aic < b.aic) => {
                        best = Some(f);
                    }
                    Ok(_) => {}
                    Err(e) => last_error = Some(e),
                }
            }
        }
    }
    best.ok_or_else(|| last_error.unwrap_or(MlError::Solve("no order fitted".into())))
}

/// One forecast row, as written to the lake and the `stock-forecast` index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastRow {
    pub instrument_token: u64,
    pub model: String,
    pub horizon_step: usize,
    pub forecast_timestamp: String,
    pub forecast_value: f64,
    pub prediction_interval_lower_bound: f64,
    pub prediction_interval_upper_bound: f64,
    pub confidence_level: f64,
    pub aic: f64,
    pub generated_at: String,
}

/// A series that could not be forecast, and why (as ML.ARIMA_EVALUATE's `error_message`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub instrument_token: u64,
    pub error_message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastOptions {
    pub horizon: usize,
    pub step_us: i64,
    pub level: f64,
    /// Series shorter than this (after regularizing) are skipped.
    pub min_points: usize,
}

/// The steps `ml forecast` tries when none is given, coarsest first (60 s is the BigQuery model's).
pub const STEPS_SECONDS: [u64; 7] = [60, 30, 15, 10, 5, 2, 1];

/// The coarsest of [`STEPS_SECONDS`] at which the longest instrument's series holds `min_points`
/// values (a short lake — minutes of ticks — still gets a forecast); 1 s when none does.
pub fn choose_step_seconds(rows: &[(i64, LakeRow)], min_points: usize) -> u64 {
    let mut spans: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
    for (ts, r) in rows {
        let span = spans.entry(r.instrument_token).or_insert((*ts, *ts));
        span.0 = span.0.min(*ts);
        span.1 = span.1.max(*ts);
    }
    let longest = spans.values().map(|(a, b)| b - a).max().unwrap_or(0);
    STEPS_SECONDS
        .into_iter()
        .find(|&s| longest / (s as i64 * 1_000_000) + 1 >= min_points as i64)
        .unwrap_or(1)
}

/// Which instruments `ml forecast` forecasts: every one (as ARIMA_PLUS per `instrument_token`),
/// or one series — a given instrument, or the busiest (the one with the most ticks, the lowest
/// token on a tie, as `sql/train_and_predict_timeseries.sql` picks it). Never an average over
/// instruments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruments {
    All,
    Busiest,
    One(u64),
}

impl std::str::FromStr for Instruments {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "busiest" => Ok(Self::Busiest),
            token => token
                .parse()
                .map(Self::One)
                .map_err(|_| format!("{token:?} is not all, busiest or an instrument token")),
        }
    }
}

/// Keeps the rows of the instruments `which` names; an error when that is none.
pub fn select_instruments(
    mut rows: Vec<(i64, LakeRow)>,
    which: Instruments,
) -> Result<Vec<(i64, LakeRow)>, String> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, r) in &rows {
        *counts.entry(r.instrument_token).or_default() += 1;
    }
    let token = match which {
        Instruments::All => return Ok(rows),
        // Most ticks first; BTreeMap order makes the lowest token win a tie.
        Instruments::Busiest => counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(&t, _)| t)
            .ok_or("the lake holds no ticks")?,
        Instruments::One(token) if counts.contains_key(&token) => token,
        Instruments::One(token) => {
            let known: Vec<String> = counts.keys().take(10).map(u64::to_string).collect();
            return Err(format!(
                "instrument {token} is not in the lake ({} instruments: {}{})",
                counts.len(),
                known.join(", "),
                if counts.len() > 10 { ", …" } else { "" }
            ));
        }
    };
    rows.retain(|(_, r)| r.instrument_token == token);
    Ok(rows)
}

/// Forecasts every instrument's last price.
pub fn forecast_all(
    rows: &[(i64, LakeRow)],
    options: ForecastOptions,
    generated_at_us: i64,
) -> (Vec<ForecastRow>, Vec<Skipped>) {
    use stockpipe_model::time::format_rfc3339_micros;
    let mut series: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
    for (ts, r) in rows {
        series
            .entry(r.instrument_token)
            .or_default()
            .push((*ts, r.last_price));
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (token, points) in series {
        let Some((start, values)) = regularize(&points, options.step_us) else {
            continue;
        };
        if values.len() < options.min_points {
            skipped.push(Skipped {
                instrument_token: token,
                error_message: format!(
                    "{} points at {} s steps (need {}): use a shorter --step-seconds or more data",
                    values.len(),
                    options.step_us / 1_000_000,
                    options.min_points
                ),
            });
            continue;
        }
        match auto_arima(&values, options.horizon, options.level) {
            Ok(f) => {
                let (p, d, q) = f.order;
                for step in 0..options.horizon {
                    let at = start + (values.len() + step) as i64 * options.step_us;
                    out.push(ForecastRow {
                        instrument_token: token,
                        model: format!("ARIMA({p},{d},{q})"),
                        horizon_step: step + 1,
                        forecast_timestamp: format_rfc3339_micros(at),
                        forecast_value: f.values[step],
                        prediction_interval_lower_bound: f.lower[step],
                        prediction_interval_upper_bound: f.upper[step],
                        confidence_level: options.level,
                        aic: f.aic,
                        generated_at: format_rfc3339_micros(generated_at_us),
                    });
                }
            }
            Err(e) => skipped.push(Skipped {
                instrument_token: token,
                error_message: e.to_string(),
            }),
        }
    }
    (out, skipped)
}

/// What the forecast reads of one closed bar (the aggregate stage's lake, `stock-bars/`).
#[derive(Debug, Deserialize)]
struct BarRow {
    bar_start: String,
    instrument_token: u64,
    close: f64,
}

/// Reads bar lines (NDJSON) as rows whose price is the bar's close, at the bar's start: the series
/// `sql/train_and_predict_bars_per_instrument.sql` forecasts.
pub fn parse_bar_rows(ndjson: &[u8]) -> Result<Vec<(i64, LakeRow)>, MlError> {
    let mut rows = Vec::new();
    for (n, line) in ndjson.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bar: BarRow = serde_json::from_slice(line)
            .map_err(|e| MlError::Data(format!("line {}: {e}", n + 1)))?;
        let ts = stockpipe_model::time::parse_timestamp(&bar.bar_start, 0)
            .map_err(|e| MlError::Data(format!("line {}: bar_start: {e:?}", n + 1)))?;
        rows.push((
            ts,
            LakeRow {
                timestamp: bar.bar_start,
                instrument_token: bar.instrument_token,
                last_price: bar.close,
                ..LakeRow::default()
            },
        ));
    }
    Ok(rows)
}

/// Every row of the lake's documents under `topic/`.
pub async fn load_lake(
    store: &crate::sink::store::LakeStore,
    topic: &str,
) -> anyhow::Result<Vec<(i64, LakeRow)>> {
    load_lake_with(store, topic, parse_rows).await
}

/// Every closed bar under `prefix/` (see [`parse_bar_rows`]).
pub async fn load_bars(
    store: &crate::sink::store::LakeStore,
    prefix: &str,
) -> anyhow::Result<Vec<(i64, LakeRow)>> {
    load_lake_with(store, prefix, parse_bar_rows).await
}

/// Rows of one object's lines, with their time in UTC µs.
type ParseRows = fn(&[u8]) -> Result<Vec<(i64, LakeRow)>, MlError>;

async fn load_lake_with(
    store: &crate::sink::store::LakeStore,
    topic: &str,
    parse: ParseRows,
) -> anyhow::Result<Vec<(i64, LakeRow)>> {
    use anyhow::Context;
    let mut rows = Vec::new();
    let names = store.list(topic).await?;
    for name in names.iter().filter(|n| crate::sink::layout::is_segment(n)) {
        let bytes = crate::sink::lake::object_lines(name, store.get(name).await?)
            .with_context(|| format!("gunzipping {name}"))?;
        rows.extend(parse(&bytes).with_context(|| format!("reading {name}"))?);
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "no documents under {topic}/ in the lake (run the pipeline first)"
    );
    Ok(rows)
}

/// Writes the forecasts to the lake as NDJSON: `forecasts/dt=YYYY-MM-DD/<generated µs>.ndjson`.
pub async fn store_forecasts(
    store: &crate::sink::store::LakeStore,
    rows: &[ForecastRow],
    generated_at_us: i64,
) -> anyhow::Result<String> {
    let name = crate::sink::layout::forecasts(generated_at_us);
    let mut bytes = Vec::new();
    for row in rows {
        serde_json::to_writer(&mut bytes, row)?;
        bytes.push(b'\n');
    }
    store.put(&name, bytes).await?;
    Ok(name)
}

/// The forecasts as `stock-forecast` documents, one id per instrument and forecast time (a new
/// run replaces the old forecast for the same time).
pub fn forecast_documents(
    index: &str,
    rows: &[ForecastRow],
) -> Vec<crate::sink::elasticsearch::OwnDocument> {
    rows.iter()
        .map(|r| crate::sink::elasticsearch::OwnDocument {
            index: index.to_string(),
            id: format!("{}-{}", r.instrument_token, r.forecast_timestamp),
            time_us: stockpipe_model::time::parse_timestamp(&r.forecast_timestamp, 0)
                .unwrap_or_default(),
            body: serde_json::to_vec(r).expect("a forecast row serializes"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_series_is_one_instrument_the_busiest_by_default() {
        let row = |token| LakeRow {
            instrument_token: token,
            ..Default::default()
        };
        let rows: Vec<(i64, LakeRow)> = [5, 9, 9, 3, 3, 7]
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i as i64, row(t)))
            .collect();
        let tokens = |which| -> Vec<u64> {
            select_instruments(rows.clone(), which)
                .unwrap()
                .iter()
                .map(|(_, r)| r.instrument_token)
                .collect()
        };
        assert_eq!(tokens(Instruments::All), [5, 9, 9, 3, 3, 7]);
        assert_eq!(
            tokens(Instruments::Busiest),
            [3, 3],
            "a tie: the lowest token"
        );
        assert_eq!(tokens(Instruments::One(7)), [7]);
        let missing = select_instruments(rows.clone(), Instruments::One(4)).unwrap_err();
        assert!(
            missing.contains("instrument 4 is not in the lake (4 instruments: 3, 5, 7, 9)"),
            "{missing}"
        );
        assert_eq!("busiest".parse(), Ok(Instruments::Busiest));
        assert_eq!("408065".parse(), Ok(Instruments::One(408065)));
        assert!("most".parse::<Instruments>().is_err());
    }

    /// Ticks without a volume or a book (an `ltp` tick, an index) are read, their missing
    /// features standing in as the training mean (BigQuery's imputation of NULL).
    #[test]
    fn rows_lacking_features_are_read_and_imputed_with_the_mean() {
        let rows = parse_rows(
            concat!(
                r#"{"timestamp":"2021-05-25T10:00:00.000000Z","instrument_token":1,"last_price":10.0,"volume":100,"open":9.0}"#,
                "\n",
                r#"{"timestamp":"2021-05-25T10:00:01.000000Z","instrument_token":1,"last_price":11.0}"#,
                "\n",
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].1.volume, rows[1].1.spread_bps), (None, None));
        let means = feature_means(&rows);
        assert_eq!((means[0], means[2], means[6]), (100.0, 9.0, 0.0));
        assert_eq!(imputed(&rows[1].1, &means)[0], 100.0);
    }

    #[test]
    fn a_short_lake_gets_a_step_it_supports() {
        let row = |token| LakeRow {
            instrument_token: token,
            ..LakeRow::default()
        };
        // 3,000 ticks over two minutes: 60 s gives 3 points, 10 s gives 13.
        let two_minutes: Vec<(i64, LakeRow)> = (0..3000)
            .map(|i| (i * 40_000, row(1 + i as u64 % 3)))
            .collect();
        assert_eq!(choose_step_seconds(&two_minutes, 12), 10);
        // An hour: the BigQuery model's minute.
        let hour: Vec<(i64, LakeRow)> = (0..3600).map(|i| (i * 1_000_000, row(1))).collect();
        assert_eq!(choose_step_seconds(&hour, 12), 60);
        assert_eq!(choose_step_seconds(&[], 12), 1);
    }

    #[test]
    fn ols_recovers_an_exact_linear_relation() {
        let x: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![f64::from(i), f64::from(i * i % 7)])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 3.0 + 2.0 * r[0] - 0.5 * r[1]).collect();
        let b = ols(&x, &y).unwrap();
        for (got, want) in b.iter().zip([3.0, 2.0, -0.5]) {
            assert!((got - want).abs() < 1e-9, "{b:?}");
        }
        assert!(ols(&x[..2], &y[..2]).is_err());
    }

    #[test]
    fn metrics_match_their_definitions() {
        let m = metrics(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!((m.mean_absolute_error - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.mean_squared_error - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.r2_score - 0.5).abs() < 1e-12);
    }

    #[test]
    fn series_are_averaged_per_step_and_gaps_interpolated() {
        let s = 1_000_000;
        let (start, values) = regularize(
            &[(10 * s, 1.0), (12 * s, 3.0), (75 * s, 5.0), (190 * s, 11.0)],
            60 * s,
        )
        .unwrap();
        assert_eq!(start, 0);
        // Step 0: mean of 1 and 3; step 1: 5; step 2: interpolated; step 3: 11.
        assert_eq!(values, vec![2.0, 5.0, 8.0, 11.0]);
    }
}
