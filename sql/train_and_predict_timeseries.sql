-- One series: one instrument's mean last price per minute (an average over instruments would jump
-- with the mix of instruments in each minute: prices of ~2,000 and ~180 in one mean), ARIMA_PLUS
-- with automatic order selection, then a 10-step forecast. The instrument is
-- `bq render --instrument TOKEN`, by default the one with the most ticks. ARIMA needs a TIMESTAMP
-- column and one value per time step, so the ticks are aggregated per minute (duplicates
-- averaged). Every instrument at once: train_and_predict_timeseries_multiseries.sql.
CREATE OR REPLACE MODEL `${project}.${dataset}.price_arima`
OPTIONS (
  model_type = 'ARIMA_PLUS',
  time_series_timestamp_col = 'ts',
  time_series_data_col = 'price',
  data_frequency = 'PER_MINUTE',
  auto_arima = TRUE,
  horizon = 10
) AS
SELECT
  TIMESTAMP_TRUNC(`timestamp`, MINUTE) AS ts,
  AVG(last_price) AS price
FROM `${project}.${dataset}.stock_ticks`
WHERE instrument_token = COALESCE(${instrument_token}, (
  SELECT instrument_token
  FROM `${project}.${dataset}.stock_ticks`
  GROUP BY instrument_token
  ORDER BY COUNT(*) DESC, instrument_token
  LIMIT 1
))
GROUP BY ts;

SELECT *
FROM ML.FORECAST(MODEL `${project}.${dataset}.price_arima`,
                 STRUCT(10 AS horizon, 0.9 AS confidence_level));
