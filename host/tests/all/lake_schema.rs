//! The lake as BigQuery's external table (`sql/create_external_table.sql`) declares it, read by an
//! independent engine: DuckDB's `read_ndjson` with Hive partitioning and the table's own column
//! types. The lake is written by `stockpipe run --once` over ticks that cross an hour, plain and
//! gzipped. BigQuery refuses a table whose partition keys are also columns of its files (it had
//! `hour` in both), and reads nothing a schema does not declare: the table and the documents must
//! name the same fields.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Splits `text` at `sep` outside `<…>`.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in text.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `name TYPE` → (name without backticks, TYPE).
fn name_and_type(column: &str) -> (String, String) {
    let (name, ty) = column.split_once(char::is_whitespace).unwrap();
    (name.trim_matches('`').to_string(), ty.trim().to_string())
}

/// A BigQuery type as DuckDB spells it (TIMESTAMP is an instant: DuckDB's TIMESTAMPTZ).
fn duckdb_type(bq: &str) -> String {
    if let Some(inner) = bq.strip_prefix("STRUCT<").and_then(|t| t.strip_suffix('>')) {
        let fields: Vec<String> = split_top(inner, ',')
            .iter()
            .map(|f| {
                let (name, ty) = name_and_type(f);
                format!("\"{name}\" {}", duckdb_type(&ty))
            })
            .collect();
        return format!("STRUCT({})", fields.join(", "));
    }
    if let Some(inner) = bq.strip_prefix("ARRAY<").and_then(|t| t.strip_suffix('>')) {
        return format!("{}[]", duckdb_type(inner));
    }
    match bq {
        "STRING" => "VARCHAR",
        "INT64" => "BIGINT",
        "FLOAT64" => "DOUBLE",
        "TIMESTAMP" => "TIMESTAMPTZ",
        "DATE" => "DATE",
        "BOOL" => "BOOLEAN",
        "JSON" => "JSON",
        other => panic!("no DuckDB type for BigQuery's {other}"),
    }
    .to_string()
}

/// The external table's columns and partition columns, as (name, BigQuery type).
type Columns = Vec<(String, String)>;

fn external_table() -> (Columns, Columns) {
    table_of("sql/create_external_table.sql")
}

fn table_of(file: &str) -> (Columns, Columns) {
    let sql = std::fs::read_to_string(crate::support::workspace().join(file)).unwrap();
    let sql: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let body = &sql[sql.find("EXTERNAL TABLE").unwrap()..];
    let columns =
        &body[body.find("(\n").unwrap() + 2..body.find("\n)\nWITH PARTITION COLUMNS").unwrap()];
    let partitions = &body[body.find("WITH PARTITION COLUMNS (").unwrap() + 24..];
    let partitions = &partitions[..partitions.find("\n)").unwrap()];
    let parse = |list: &str| -> Columns {
        split_top(list, ',')
            .iter()
            .map(|c| name_and_type(c))
            .collect()
    };
    (parse(columns), parse(partitions))
}

/// Ticks from 07:59 UTC for two minutes and more: the lake gets `hour=07` and `hour=08`.
fn write_input(path: &Path, ticks: usize) {
    use stockpipe::source::simulate::{SimulateOptions, render, simulate};
    let ticks = simulate(&SimulateOptions {
        instruments: 6,
        ticks,
        seed: 77,
        start_us: 1_497_945_540_000_000,
    });
    std::fs::write(path, render(&ticks, true)).unwrap();
}

fn run_once(input: &Path, lake: &Path, gzip: bool) {
    run_once_with(input, lake, gzip, false);
}

fn run_once_with(input: &Path, lake: &Path, gzip: bool, bars: bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_stockpipe"))
        .args(["run", "--once", "--input"])
        .arg(input)
        .arg("--lake")
        .arg(lake)
        .env("RUST_LOG", "warn")
        .env("STOCKPIPE_LAKE_GZIP", gzip.to_string())
        .env("STOCKPIPE_AGGREGATE_ENABLED", bars.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// DuckDB's answer to `query` over the lake objects matching `glob`, read with the table's columns
/// and its partition columns' types, as JSON rows.
fn duckdb(glob: &str, columns: &Columns, partitions: &Columns, query: &str) -> serde_json::Value {
    let to_struct = |cols: &Columns| -> String {
        let fields: Vec<String> = cols
            .iter()
            .map(|(name, ty)| format!("'{name}': '{}'", duckdb_type(ty).replace('\'', "''")))
            .collect();
        format!("{{{}}}", fields.join(", "))
    };
    let source = format!(
        "read_ndjson('{glob}', columns = {}, hive_partitioning = true, hive_types = {})",
        to_struct(columns),
        to_struct(partitions)
    );
    let script = r#"
import duckdb, json, sys
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
source, query = sys.argv[1], sys.argv[2]
rows = con.execute(query.replace("LAKE", source)).fetchall()
names = [d[0] for d in con.description]
print(json.dumps([dict(zip(names, r)) for r in rows], default=str))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &source, query])
        .output()
        .expect("python3 with duckdb (pip install duckdb; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "DuckDB refused the lake:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn duckdb_reads_the_lake_with_the_external_table_s_schema() {
    const TICKS: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ticks.ndjson");
    write_input(&input, TICKS);
    let (columns, partitions) = external_table();
    let partition_keys: BTreeSet<&str> = partitions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(partition_keys, BTreeSet::from(["dt", "hour"]));
    let declared: BTreeSet<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        declared.is_disjoint(&partition_keys),
        "BigQuery refuses partition keys that are columns too: {declared:?}"
    );

    let lake = dir.path().join("lake");
    run_once(&input, &lake, false);
    // Every field of every document is a declared column, and none is a partition key.
    let docs = crate::support::lake_documents(&lake);
    assert_eq!(docs.len(), TICKS);
    let written: BTreeSet<&str> = docs
        .iter()
        .flat_map(|d| d.as_object().unwrap().keys().map(String::as_str))
        .collect();
    // The sample's shape has every column but those of Kite's other shapes (see the next test).
    let sample_fields: BTreeSet<&str> = declared.difference(&KITE_ONLY.into()).copied().collect();
    assert_eq!(
        written, sample_fields,
        "the table and the documents name the same fields"
    );
    for doc in &docs {
        let keys: BTreeSet<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert!(
            keys.is_subset(&declared),
            "undeclared: {:?}",
            keys.difference(&declared).collect::<Vec<_>>()
        );
        assert!(
            keys.is_disjoint(&partition_keys),
            "a partition key in the file: {keys:?}"
        );
    }

    let query = "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, \
        count(*) FILTER (WHERE hour = hour_of_day AND hour = hour(\"timestamp\") \
            AND dt = CAST(\"timestamp\" AS DATE)) AS consistent, \
        list(DISTINCT hour ORDER BY hour) AS hours, min(dt) AS first_day, \
        count(*) FILTER (WHERE len(depth.buy) = 5 AND depth.sell[1].price > 0 \
            AND source.\"offset\" >= 0 AND guest_versions.validate LIKE 'sha256:%') AS nested \
        FROM LAKE";
    for (glob, gzip) in [("*.ndjson", false), ("*.ndjson.gz", true)] {
        let lake = if gzip {
            let lake = dir.path().join("lake-gz");
            run_once(&input, &lake, true);
            lake
        } else {
            lake.clone()
        };
        let pattern = format!("{}/stock-stream/*/*/{glob}", lake.display());
        let rows = duckdb(&pattern, &columns, &partitions, query);
        let row = &rows[0];
        assert_eq!(row["n"], TICKS, "{rows}");
        assert_eq!(row["ids"], TICKS, "{rows}");
        assert_eq!(row["consistent"], TICKS, "{rows}");
        assert_eq!(row["nested"], TICKS, "{rows}");
        assert_eq!(row["hours"], serde_json::json!([7, 8]), "{rows}");
        assert_eq!(row["first_day"], "2017-06-20", "{rows}");
    }
}

/// The columns only Kite's ticker and quote API fill (and `timestamp_source`, written for a tick
/// that took its record's time).
const KITE_ONLY: [&str; 11] = [
    "extra",
    "timestamp_source",
    "buy_quantity",
    "net_change",
    "oi",
    "oi_day_high",
    "oi_day_low",
    "last_trade_time",
    "exchange_timestamp",
    "mode",
    "tradable",
];

/// Every built-in Kite shape (`data/kite/`) in the lake, read by DuckDB with the table's schema:
/// each new column with its declared type, absent fields NULL.
#[test]
fn duckdb_reads_kite_ticks_with_the_external_table_s_schema() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kite.ndjson");
    let mut text = Vec::new();
    for name in ["ticker_ltp", "ticker_quote", "ticker_full", "quote_api"] {
        let path = crate::support::workspace().join(format!("data/kite/{name}.ndjson"));
        text.extend(std::fs::read(path).unwrap());
    }
    std::fs::write(&input, &text).unwrap();
    let ticks = text.iter().filter(|&&b| b == b'\n').count();
    let (columns, partitions) = external_table();
    let declared: BTreeSet<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let lake = dir.path().join("lake");
    run_once(&input, &lake, false);
    let docs = crate::support::lake_documents(&lake);
    assert_eq!(docs.len(), ticks);
    let written: BTreeSet<&str> = docs
        .iter()
        .flat_map(|d| d.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert!(written.is_subset(&declared), "{written:?}");
    assert!(
        written.is_superset(&KITE_ONLY.into()),
        "the Kite files fill every Kite column: {written:?}"
    );
    let query = "SELECT count(*) AS n, \
        count(*) FILTER (WHERE timestamp_source = 'kafka') AS kafka_timed, \
        count(*) FILTER (WHERE tradable = false) AS indices, \
        count(*) FILTER (WHERE mode = 'full' AND depth IS NOT NULL) AS full_with_book, \
        count(*) FILTER (WHERE volume IS NULL AND depth IS NULL) AS no_volume_no_book, \
        max(oi) AS max_oi, count(*) FILTER (WHERE net_change IS NOT NULL) AS quotes, \
        count(*) FILTER (WHERE exchange_timestamp = \"timestamp\") AS exchange_timed, \
        CAST(min(last_trade_time) AS VARCHAR) AS first_trade, \
        max(CAST(json_extract(extra, '$.upper_circuit_limit') AS DOUBLE)) AS circuit \
        FROM LAKE";
    let pattern = format!("{}/stock-stream/*/*/*.ndjson", lake.display());
    let rows = duckdb(&pattern, &columns, &partitions, query);
    let row = &rows[0];
    assert_eq!(row["n"], ticks, "{rows}");
    assert_eq!(row["kafka_timed"], 8, "ltp and quote ticks: {rows}");
    assert_eq!(row["indices"], 3, "{rows}");
    assert_eq!(row["full_with_book"], 4, "{rows}");
    assert_eq!(row["no_volume_no_book"], 7, "ltp ticks and indices: {rows}");
    assert_eq!(row["max_oi"], 1_231_200, "{rows}");
    assert_eq!(row["quotes"], 3, "{rows}");
    assert_eq!(row["exchange_timed"], 5, "{rows}");
    assert_eq!(row["first_trade"], "2021-05-25 09:59:58+00", "{rows}");
    assert_eq!(
        row["circuit"], 1528.6,
        "the quote API's circuit limit kept in extra: {rows}"
    );
}

/// The bars (`[aggregate] enabled`) as `sql/create_bars_external_table.sql` declares them.
#[test]
fn duckdb_reads_the_bars_with_their_external_table_s_schema() {
    const TICKS: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ticks.ndjson");
    write_input(&input, TICKS);
    let (columns, partitions) = table_of("sql/create_bars_external_table.sql");
    let declared: BTreeSet<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let lake = dir.path().join("lake");
    run_once_with(&input, &lake, false, true);
    let docs = crate::support::lake_documents(&lake.join("stock-bars"));
    assert!(docs.len() > 6, "{} bars", docs.len());
    for doc in &docs {
        let keys: BTreeSet<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys, declared,
            "the table and the bars name the same fields"
        );
    }
    let query = "SELECT count(*) AS n, count(DISTINCT bar_id) AS ids, \
        count(*) FILTER (WHERE hour = hour(bar_start) AND dt = CAST(bar_start AS DATE) \
            AND bar_end - bar_start = INTERVAL 60 SECOND AND low <= open AND open <= high \
            AND low <= close AND close <= high AND source.closed_by_offset >= 0) AS consistent, \
        count(*) FILTER (WHERE log_return IS NULL) AS firsts, \
        list(DISTINCT hour ORDER BY hour) AS hours \
        FROM LAKE";
    let pattern = format!("{}/stock-bars/*/*/*.ndjson", lake.display());
    let rows = duckdb(&pattern, &columns, &partitions, query);
    let row = &rows[0];
    assert_eq!(row["n"], docs.len(), "{rows}");
    assert_eq!(row["ids"], docs.len(), "{rows}");
    assert_eq!(row["consistent"], docs.len(), "{rows}");
    assert_eq!(
        row["firsts"], 6,
        "each instrument's first bar has no return: {rows}"
    );
    assert_eq!(row["hours"], serde_json::json!([7, 8]), "{rows}");
}
