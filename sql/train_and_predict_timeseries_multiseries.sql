-- One series per instrument_token: last price per minute (averaged within the minute), ARIMA_PLUS
-- with auto_arima per series, horizon 10, then the forecasts of every instrument.
CREATE OR REPLACE MODEL `${project}.${dataset}.price_arima_per_instrument`
OPTIONS (
  model_type = 'ARIMA_PLUS',
  time_series_timestamp_col = 'ts',
  time_series_data_col = 'price',
  time_series_id_col = 'instrument_token',
  data_frequency = 'PER_MINUTE',
  auto_arima = TRUE,
  horizon = 10
) AS
SELECT
  instrument_token,
  TIMESTAMP_TRUNC(`timestamp`, MINUTE) AS ts,
  AVG(last_price) AS price
FROM `${project}.${dataset}.stock_ticks`
GROUP BY instrument_token, ts;

SELECT *
FROM ML.FORECAST(MODEL `${project}.${dataset}.price_arima_per_instrument`,
                 STRUCT(10 AS horizon, 0.9 AS confidence_level))
ORDER BY instrument_token, forecast_timestamp;
