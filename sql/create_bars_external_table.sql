-- The aggregate stage's closed bars as a BigQuery external table (written when the host runs with
-- [aggregate] enabled = true): gs://${bucket}/${prefix}/${bars_prefix}/dt=YYYY-MM-DD/hour=HH/….ndjson,
-- one line per instrument and bar, Hive partitions dt/hour of the bar's start. A float with no
-- value (no quantity traded: vwap; an instrument's first bar: log_return; fewer than two returns:
-- volatility) is null.
CREATE OR REPLACE EXTERNAL TABLE `${project}.${dataset}.stock_bars`
(
  bar_id STRING,
  instrument_token INT64,
  bar_start TIMESTAMP,
  bar_end TIMESTAMP,
  bar_seconds INT64,
  open FLOAT64,
  high FLOAT64,
  low FLOAT64,
  close FLOAT64,
  traded_quantity INT64,
  tick_count INT64,
  vwap FLOAT64,
  last_mid_price FLOAT64,
  last_spread FLOAT64,
  log_return FLOAT64,
  volatility FLOAT64,
  source STRUCT<topic STRING, `partition` INT64, closed_by_offset INT64, closed_by_tick INT64>,
  guest_version STRING
)
WITH PARTITION COLUMNS (
  dt DATE,
  hour INT64
)
OPTIONS (
  format = 'NEWLINE_DELIMITED_JSON',
  uris = ['gs://${bucket}/${prefix}/${bars_prefix}/*'],
  hive_partition_uri_prefix = 'gs://${bucket}/${prefix}/${bars_prefix}',
  require_hive_partition_filter = false,
  ${compression_option}
  ignore_unknown_values = true
);
