-- One series: the market's mean last price per minute, ARIMA_PLUS with automatic order selection,
-- then a 10-step forecast. ARIMA needs a TIMESTAMP column and one value per time step, so the
-- ticks are aggregated per minute (duplicates averaged) rather than fed as raw strings.
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
GROUP BY ts;

SELECT *
FROM ML.FORECAST(MODEL `${project}.${dataset}.price_arima`,
                 STRUCT(10 AS horizon, 0.9 AS confidence_level));
