-- The lake as a BigQuery external table: newline-delimited JSON written by stockpipe under
-- gs://${bucket}/${prefix}/${topic}/dt=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.ndjson.
-- An explicit schema (autodetect samples a few hundred rows and guesses), Hive partitions dt/hour.
-- The partition keys must not be columns of the files too: the documents' UTC hour is
-- `hour_of_day`, and every field of a document is declared here. A field a tick lacks (an `ltp`
-- tick has no volume, an index no book) is absent from its line and NULL here.
-- A lake written with lake.gzip = true (….ndjson.gz) needs `bq render --gzip`: one table reads
-- one kind, and compression defaults to none.
CREATE OR REPLACE EXTERNAL TABLE `${project}.${dataset}.stock_ticks`
(
  event_id STRING,
  `timestamp` TIMESTAMP,
  instrument_token INT64,
  last_price FLOAT64,
  timestamp_source STRING,
  volume INT64,
  buy_quantity INT64,
  sell_quantity INT64,
  last_quantity INT64,
  change FLOAT64,
  net_change FLOAT64,
  average_price FLOAT64,
  open FLOAT64,
  high FLOAT64,
  low FLOAT64,
  close FLOAT64,
  oi INT64,
  oi_day_high INT64,
  oi_day_low INT64,
  last_trade_time TIMESTAMP,
  exchange_timestamp TIMESTAMP,
  mode STRING,
  tradable BOOL,
  -- The tick's fields no column takes (input.extra_max_bytes), as they came.
  extra JSON,
  depth STRUCT<
    buy ARRAY<STRUCT<price FLOAT64, orders INT64, quantity INT64>>,
    sell ARRAY<STRUCT<price FLOAT64, orders INT64, quantity INT64>>
  >,
  mid_price FLOAT64,
  spread FLOAT64,
  spread_bps FLOAT64,
  book_imbalance FLOAT64,
  notional FLOAT64,
  deviation_bps FLOAT64,
  hour_of_day INT64,
  minute INT64,
  source STRUCT<topic STRING, `partition` INT64, `offset` INT64, tick INT64>,
  guest_versions STRUCT<validate STRING, enrich STRING, route STRING>
)
WITH PARTITION COLUMNS (
  dt DATE,
  hour INT64
)
OPTIONS (
  format = 'NEWLINE_DELIMITED_JSON',
  uris = ['gs://${bucket}/${prefix}/${topic}/*'],
  hive_partition_uri_prefix = 'gs://${bucket}/${prefix}/${topic}',
  require_hive_partition_filter = false,
  ${compression_option}
  ignore_unknown_values = true
);
