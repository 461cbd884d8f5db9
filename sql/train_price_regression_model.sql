-- Linear regression of last_price on the tick's own numbers and the enriched order-book features.
-- The split is sequential on the timestamp (the newest 20 % evaluate), so the future never trains.
CREATE OR REPLACE MODEL `${project}.${dataset}.price_regression`
OPTIONS (
  model_type = 'LINEAR_REG',
  input_label_cols = ['last_price'],
  data_split_method = 'SEQ',
  data_split_eval_fraction = 0.2,
  data_split_col = 'ts',
  optimize_strategy = 'NORMAL_EQUATION',
  enable_global_explain = TRUE
) AS
SELECT
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
WHERE last_price IS NOT NULL;
