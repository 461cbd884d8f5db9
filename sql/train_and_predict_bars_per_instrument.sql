-- One series per instrument on the pipeline's own bars: each bar's close at its start, ARIMA_PLUS
-- with auto_arima per series, horizon 10 bars, then the forecasts of every instrument. Unlike
-- train_and_predict_timeseries_multiseries (which averages ticks per minute in SQL), the bars come
-- from the aggregate stage: event time, late ticks excluded, and one row per bar.
-- data_frequency AUTO_FREQUENCY: the bar width is the host's aggregate.bar_seconds.
CREATE OR REPLACE MODEL `${project}.${dataset}.bar_close_arima_per_instrument`
OPTIONS (
  model_type = 'ARIMA_PLUS',
  time_series_timestamp_col = 'bar_start',
  time_series_data_col = 'close',
  time_series_id_col = 'instrument_token',
  data_frequency = 'AUTO_FREQUENCY',
  auto_arima = TRUE,
  horizon = 10
) AS
SELECT instrument_token, bar_start, close
FROM `${project}.${dataset}.stock_bars`;

SELECT *
FROM ML.FORECAST(MODEL `${project}.${dataset}.bar_close_arima_per_instrument`,
                 STRUCT(10 AS horizon, 0.9 AS confidence_level))
ORDER BY instrument_token, forecast_timestamp;
