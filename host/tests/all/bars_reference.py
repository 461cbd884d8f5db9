"""The reference for the aggregate stage's bars: computed from the lake's tick documents without any
of stockpipe's code. DuckDB reads and groups the ticks (open and close by timestamp then offset,
high, low, counts, traded quantity from the cumulative volume); Python sums what the guest sums in
arrival order (VWAP, the volatility's mean and squares), so that floats are added in the same
order. Prints one JSON line per closed bar: a bar is closed when its partition's newest timestamp
minus the allowed lateness reaches its end.

Usage: bars_reference.py LAKE BAR_SECONDS ALLOWED_LATENESS_MS VOLATILITY_BARS"""
import duckdb, json, math, sys

lake, width_s, lateness_ms, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
width = width_s * 1_000_000
con = duckdb.connect()
con.execute(f"""
CREATE TABLE t AS SELECT
  source.partition AS p, source."offset" AS o,
  epoch_us(CAST(timestamp AS TIMESTAMP)) AS ts,
  instrument_token AS token, last_price AS price, volume, mid_price AS mid, spread
FROM read_ndjson('{lake}/stock-stream/**/*.ndjson*', columns={{
  'source': 'STRUCT(topic VARCHAR, "partition" INTEGER, "offset" BIGINT)',
  'timestamp': 'VARCHAR', 'instrument_token': 'UBIGINT', 'last_price': 'DOUBLE',
  'volume': 'BIGINT', 'mid_price': 'DOUBLE', 'spread': 'DOUBLE'}})
""")
# The reference below assumes what the simulator makes: per instrument, timestamps never go back.
back = con.execute("""SELECT count(*) FROM (SELECT ts < lag(ts) OVER (PARTITION BY token ORDER BY p, o) AS b FROM t) WHERE b""").fetchone()[0]
assert back == 0, f"{back} ticks go back in time: the reference assumes none"
rows = con.execute(f"""
WITH q AS (
  SELECT *, CASE WHEN lag(volume) OVER w IS NULL THEN 0
                 WHEN volume >= lag(volume) OVER w THEN volume - lag(volume) OVER w
                 ELSE volume END AS traded,
         (ts // {width}) * {width} AS start
  FROM t WINDOW w AS (PARTITION BY token ORDER BY o)
), closing AS (
  SELECT p, max(ts) - {lateness_ms * 1000} AS watermark FROM t GROUP BY p
)
SELECT q.p, token, start,
  arg_min(price, struct_pack(ts, o)) AS open, max(price) AS high, min(price) AS low,
  arg_max(price, struct_pack(ts, o)) AS close,
  sum(traded) AS traded, count(*) AS ticks,
  list(price ORDER BY o) AS prices, list(traded ORDER BY o) AS quantities,
  arg_max(mid, struct_pack(ts, o)) AS last_mid, arg_max(spread, struct_pack(ts, o)) AS last_spread
FROM q JOIN closing USING (p)
GROUP BY q.p, token, start, closing.watermark
HAVING start + {width} <= closing.watermark
ORDER BY token, start
""").fetchall()
previous, returns = {}, {}
for (p, token, start, open_, high, low, close, traded, ticks, prices, quantities, last_mid, last_spread) in rows:
    notional = 0.0
    for price, q in zip(prices, quantities):
        notional += price * float(q)
    vwap = notional / float(traded) if traded > 0 else None
    r = math.log(close / previous[token]) if token in previous else None
    previous[token] = close
    rs = returns.setdefault(token, [])
    if r is not None:
        rs.append(r)
        del rs[:-keep]
    vol = None
    if len(rs) >= 2:
        mean = 0.0
        for x in rs: mean += x
        mean /= len(rs)
        sq = 0.0
        for x in rs: sq += (x - mean) * (x - mean)
        vol = math.sqrt(sq / (len(rs) - 1))
    print(json.dumps({"partition": p, "instrument_token": token, "start_us": start, "open": open_, "high": high,
        "low": low, "close": close, "traded_quantity": int(traded), "tick_count": ticks, "vwap": vwap,
        "last_mid_price": last_mid, "last_spread": last_spread, "log_return": r, "volatility": vol}))
