-- Predicted last_price beside the actual one, for the latest hour of ticks.
SELECT
  instrument_token,
  ts,
  last_price,
  predicted_last_price,
  predicted_last_price - last_price AS residual
FROM ML.PREDICT(
  MODEL `${project}.${dataset}.price_regression`,
  (
    SELECT
      instrument_token,
      `timestamp` AS ts,
      last_price,
      CAST(volume AS FLOAT64) AS volume,
      average_price,
      open,
      high,
      low,
      close,
      CAST(hour_of_day AS STRING) AS hour_of_day,
      spread_bps,
      book_imbalance
    FROM `${project}.${dataset}.stock_ticks`
    WHERE `timestamp` >= TIMESTAMP_SUB(
      (SELECT MAX(`timestamp`) FROM `${project}.${dataset}.stock_ticks`), INTERVAL 1 HOUR)
  )
)
ORDER BY instrument_token, ts;
