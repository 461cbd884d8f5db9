//! The lake's layout: every name the host writes in the lake, and reads back, in one place.
//!
//! ```text
//! <topic>/dt=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.ndjson[.gz]   ticks (one segment)
//! <aggregate.lake_prefix>/dt=…/hour=…/<partition>-<first>-<last>.ndjson  bars (one segment)
//! _state/<stage>/<topic>/<partition>.json                                a stateful stage's checkpoint
//! _checkpoints/<topic>/input-<hash>.json                                 a replayed file's checkpoint
//! forecasts/dt=YYYY-MM-DD/<generated µs>.ndjson                          forecasts (`ml forecast`)
//! <segment's dir>/.<partition>-<n>.spool[.<run>]                         a spilled segment's first bytes
//! <object's dir>/.<file>.tmp                                             an object being written
//! ```
//!
//! The hour directory `dt=…/hour=…` is written by `stockpipe_model::time::Civil::lake_partition`
//! (route, a guest, names a tick's) and read by `stockpipe_model::time::lake_partition_start`,
//! side by side in the model crate the guests share; [`hour_start`] reads it from an object name.
//! The spool and temporary names start with a dot: no listing of segments takes them, and a
//! restart sweeps them ([`is_leftover`]).

/// A segment's object name: `<topic>/<hour dir>/<partition>-<first>-<last>.ndjson`.
pub fn segment(topic: &str, hour_dir: &str, partition: i32, first: &str, last: &str) -> String {
    format!("{topic}/{hour_dir}/{partition}-{first}-{last}.ndjson")
}

/// The name of a segment written gzipped.
pub fn gzipped(mut name: String) -> String {
    name.push_str(GZIP_SUFFIX);
    name
}

const SEGMENT_SUFFIX: &str = ".ndjson";
const GZIP_SUFFIX: &str = ".gz";

/// Whether `name` is a segment (plain or gzipped): what the readers of the lake read.
pub fn is_segment(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    !file.starts_with('.') && (file.ends_with(SEGMENT_SUFFIX) || file.ends_with(".ndjson.gz"))
}

/// Whether an object is gzipped (by its name).
pub fn is_gzipped(name: &str) -> bool {
    name.ends_with(GZIP_SUFFIX)
}

/// The (partition, first, last) a segment's name carries, if it is one of ours: the positions as
/// spelled (see `LakePosition`: a tick object's `offset[.k]`, a bar object's number).
pub fn parse_segment(name: &str) -> Option<(i32, &str, &str)> {
    let file = name.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ndjson.gz")
        .or_else(|| file.strip_suffix(SEGMENT_SUFFIX))?;
    let mut parts = stem.splitn(3, '-');
    let partition = parts.next()?.parse().ok()?;
    let first = parts.next()?;
    let last = parts.next()?;
    Some((partition, first, last))
}

/// The start (UTC µs) of the hour an object's path names, if it names one.
pub fn hour_start(name: &str) -> Option<i64> {
    let at = name.find("dt=")?;
    stockpipe_model::time::lake_partition_start(&name[at..])
}

/// Where a stateful stage (`aggregate`) keeps the checkpoints of `topic`'s partitions.
pub fn state_prefix(stage: &str, topic: &str) -> String {
    format!("_state/{stage}/{topic}/")
}

/// A partition's checkpoint of a stateful stage.
pub fn state_object(stage: &str, topic: &str, partition: i32) -> String {
    format!("{}{partition}.json", state_prefix(stage, topic))
}

/// Where the checkpoints of files replayed into `topic` live.
pub fn checkpoints_prefix(topic: &str) -> String {
    format!("_checkpoints/{topic}/")
}

/// A replayed file's checkpoint, by the hash of what identifies the replay.
pub fn input_checkpoint(topic: &str, hash: u64) -> String {
    format!("{}input-{hash:016x}.json", checkpoints_prefix(topic))
}

/// Where `ml forecast` writes its forecasts, and the dashboard reads the newest.
pub const FORECASTS_PREFIX: &str = "forecasts/";

/// One `ml forecast` run's object: under the day it ran, named by its instant.
pub fn forecasts(generated_at_us: i64) -> String {
    let day = stockpipe_model::time::Civil::from_micros(generated_at_us).day();
    format!("{FORECASTS_PREFIX}dt={day}/{generated_at_us}.ndjson")
}

/// The spool file of a segment that spilled: beside its object, the `n`-th this writer opened.
pub fn spool(topic: &str, hour_dir: &str, partition: i32, n: u64) -> String {
    format!("{topic}/{hour_dir}/.{partition}-{n}.spool")
}

/// A spool's file on disk, for one run of the store (a restart never appends to an old one).
pub fn spool_file(spool: &str, run: &str) -> String {
    format!("{spool}.{run}")
}

/// The temporary file an object is written to before it is renamed into place.
pub fn temp_file(file_name: &str) -> String {
    format!(".{file_name}.tmp")
}

/// A file a crashed run left behind: a temporary or a spool file.
pub fn is_leftover(file_name: &str) -> bool {
    file_name.starts_with('.') && (file_name.ends_with(".tmp") || file_name.contains(".spool."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_s_name_round_trips_and_says_what_it_is() {
        let name = segment("stock-stream", "dt=2017-06-20/hour=07", 2, "5", "16.2");
        assert_eq!(name, "stock-stream/dt=2017-06-20/hour=07/2-5-16.2.ndjson");
        assert_eq!(parse_segment(&name), Some((2, "5", "16.2")));
        assert!(is_segment(&name) && !is_gzipped(&name));
        let gz = gzipped(name);
        assert_eq!(parse_segment(&gz), Some((2, "5", "16.2")));
        assert!(is_segment(&gz) && is_gzipped(&gz));
        // The positions are the writer's to read (`LakeWriter` knows their spelling).
        assert_eq!(parse_segment("x/a-1-2.ndjson"), None);
        assert_eq!(parse_segment("x/1-2.ndjson"), None);
        assert!(!is_segment("x/README.md"));
    }

    #[test]
    fn the_hour_an_object_lies_in_is_read_from_its_path() {
        let name = segment("t", "dt=2017-06-20/hour=07", 0, "1", "9");
        // 2017-06-20T07:00:00Z
        assert_eq!(hour_start(&name), Some(1_497_942_000_000_000));
        assert_eq!(hour_start("t/x.ndjson"), None);
        assert_eq!(hour_start("t/dt=2017-06-20/hour=7x/0-1-1.ndjson"), None);
    }

    #[test]
    fn what_a_crash_leaves_is_hidden_from_every_listing_and_swept() {
        let spool = spool("t", "dt=2017-06-20/hour=07", 3, 1);
        let on_disk = spool_file(&spool, "00000000000000ab");
        let file = on_disk.rsplit('/').next().unwrap();
        assert!(is_leftover(file) && !is_segment(&on_disk));
        let tmp = temp_file("0-1-2.ndjson");
        assert!(is_leftover(&tmp) && !is_segment(&tmp));
        assert!(!is_leftover("0-1-2.ndjson"));
    }

    #[test]
    fn checkpoints_and_forecasts_have_their_own_places() {
        assert_eq!(
            state_object("aggregate", "s", 4),
            "_state/aggregate/s/4.json"
        );
        assert_eq!(
            input_checkpoint("s", 0xab),
            "_checkpoints/s/input-00000000000000ab.json"
        );
        assert_eq!(
            forecasts(1_497_942_000_000_000),
            "forecasts/dt=2017-06-20/1497942000000000.ndjson"
        );
    }
}
