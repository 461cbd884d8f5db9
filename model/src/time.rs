//! Civil time without a calendar crate: the guests need the date of a timestamp and the host must
//! read the three timestamp forms the pipeline accepts.
//!
//! Accepted forms (see [`parse_timestamp`]):
//! - `YYYY-MM-DD HH:MM:SS[.f{1,9}]` — the sample's form; a wall-clock time in a configured fixed
//!   offset from UTC (default UTC);
//! - RFC 3339: `YYYY-MM-DDTHH:MM:SS[.f]` followed by `Z` or `±HH:MM`;
//! - epoch milliseconds, as a JSON integer (handled by the caller, see [`from_epoch_millis`]).

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl Civil {
    pub fn from_micros(us: i64) -> Self {
        let days = us.div_euclid(MICROS_PER_DAY);
        let rem = us.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = rem / MICROS_PER_SECOND;
        Self {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs / 60 % 60) as u32,
            second: (secs % 60) as u32,
            micros: (rem % MICROS_PER_SECOND) as u32,
        }
    }

    /// `YYYY.MM.DD`, the day of a dated Elasticsearch index (`stock-stream-2017.06.20`), the
    /// form ILM's `parse_origination_date` reads.
    pub fn index_day(&self) -> String {
        let mut out = Vec::with_capacity(10);
        self.write_index_day(&mut out);
        String::from_utf8(out).expect("ASCII")
    }

    /// [`Civil::index_day`] appended to `out` (digits in place for the years 0–9999).
    pub fn write_index_day(&self, out: &mut Vec<u8>) {
        let Ok(year @ 0..=9999) = u32::try_from(self.year) else {
            let text = format!("{:04}.{:02}.{:02}", self.year, self.month, self.day);
            out.extend_from_slice(text.as_bytes());
            return;
        };
        push_digits(out, year, 4);
        out.push(b'.');
        push_digits(out, self.month, 2);
        out.push(b'.');
        push_digits(out, self.day, 2);
    }

    /// `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `dt=YYYY-MM-DD/hour=HH`, the lake's Hive-style partition (read back by
    /// [`lake_partition_start`]).
    pub fn lake_partition(&self) -> String {
        format!(
            "dt={:04}-{:02}-{:02}/hour={:02}",
            self.year, self.month, self.day, self.hour
        )
    }
}

/// The start (UTC µs) of the hour a [`Civil::lake_partition`] names, read from the start of
/// `text` (`dt=YYYY-MM-DD/hour=HH…`).
pub fn lake_partition_start(text: &str) -> Option<i64> {
    let rest = text.strip_prefix("dt=")?;
    let day = rest.get(..10)?;
    let hour = rest.get(10..)?.strip_prefix("/hour=")?.get(..2)?;
    let hour: i64 = hour.parse().ok().filter(|h| (0..24).contains(h))?;
    let mut parts = day.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some((days_from_civil(year, month, day) * 24 + hour) * 3_600_000_000)
}

/// RFC 3339 in UTC with microseconds: `2017-06-20T07:35:05.284824Z` (what Elasticsearch's
/// `strict_date_optional_time_nanos` and BigQuery's TIMESTAMP both read).
pub fn format_rfc3339_micros(us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_rfc3339_micros(&mut out, us);
    String::from_utf8(out).expect("ASCII")
}

/// [`format_rfc3339_micros`] appended to `out`: digits written in place for the years 0–9999
/// (every timestamp validate lets through), `format!`'s padding otherwise.
pub fn write_rfc3339_micros(out: &mut Vec<u8>, us: i64) {
    let c = Civil::from_micros(us);
    let Ok(year @ 0..=9999) = u32::try_from(c.year) else {
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
        );
        out.extend_from_slice(text.as_bytes());
        return;
    };
    push_digits(out, year, 4);
    for (sep, value, width) in [
        (b'-', c.month, 2),
        (b'-', c.day, 2),
        (b'T', c.hour, 2),
        (b':', c.minute, 2),
        (b':', c.second, 2),
        (b'.', c.micros, 6),
    ] {
        out.push(sep);
        push_digits(out, value, width);
    }
    out.push(b'Z');
}

/// `value` in `width` decimal digits, zero-padded (`value` < 10^width).
fn push_digits(out: &mut Vec<u8>, value: u32, width: u32) {
    for k in (0..width).rev() {
        out.push(b'0' + (value / 10u32.pow(k) % 10) as u8);
    }
}

/// The sample's own form, `2017-06-20 07:35:05.284824`, in UTC.
pub fn format_sample_micros(us: i64) -> String {
    let c = Civil::from_micros(us);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
    )
}

/// Epoch milliseconds to µs, refusing values that overflow.
pub fn from_epoch_millis(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
}

/// The unit of a timestamp written as an epoch number (`input.timestamp_unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl EpochUnit {
    /// The config's spelling: `s`, `ms`, `us`, `ns`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "s" => Some(Self::Seconds),
            "ms" => Some(Self::Millis),
            "us" => Some(Self::Micros),
            "ns" => Some(Self::Nanos),
            _ => None,
        }
    }

    /// The unit an epoch number of this size is read in when none is configured: below 10^11 it is
    /// seconds (10^11 s is the year 5138), below 10^14 milliseconds (10^11 ms is 1973), below
    /// 10^17 microseconds, else nanoseconds. Each unit covers 1973 to 5138 without overlap.
    pub fn of_magnitude(n: i64) -> Self {
        match n.unsigned_abs() {
            0..100_000_000_000 => Self::Seconds,
            100_000_000_000..100_000_000_000_000 => Self::Millis,
            100_000_000_000_000..100_000_000_000_000_000 => Self::Micros,
            _ => Self::Nanos,
        }
    }

    /// `n` of this unit in µs; `None` when it overflows.
    pub fn to_micros(self, n: i64) -> Option<i64> {
        match self {
            Self::Seconds => n.checked_mul(1_000_000),
            Self::Millis => n.checked_mul(1_000),
            Self::Micros => Some(n),
            Self::Nanos => Some(n.div_euclid(1_000)),
        }
    }
}

/// An epoch number in µs: in `unit`, or by its magnitude ([`EpochUnit::of_magnitude`]).
pub fn epoch_micros(n: i64, unit: Option<EpochUnit>) -> Option<i64> {
    unit.unwrap_or_else(|| EpochUnit::of_magnitude(n))
        .to_micros(n)
}

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(pub String);

impl std::fmt::Display for TimestampError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimestampError {}

/// Parses the sample's form, RFC 3339, or ISO 8601 without a zone into UTC µs.
/// `naive_offset_minutes` is the offset from UTC of wall-clock times that carry no zone (the
/// sample's form, a zone-less ISO time); RFC 3339 carries its own.
pub fn parse_timestamp(s: &str, naive_offset_minutes: i32) -> Result<i64, TimestampError> {
    parse_timestamp_bytes(s.as_bytes(), naive_offset_minutes)
}

/// [`parse_timestamp`] over bytes (a JSON string's, not yet checked to be UTF-8: every accepted
/// form is ASCII).
pub fn parse_timestamp_bytes(b: &[u8], naive_offset_minutes: i32) -> Result<i64, TimestampError> {
    let err =
        |why: &str| TimestampError(format!("timestamp {:?}: {why}", String::from_utf8_lossy(b)));
    if let Some((civil, micros)) = sample_form(b) {
        check_civil(civil).map_err(err)?;
        return Ok(civil_micros(civil, micros, i64::from(naive_offset_minutes)));
    }
    if b.len() < 19 {
        return Err(err(
            "too short; expected YYYY-MM-DD HH:MM:SS[.ffffff] or RFC 3339",
        ));
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, TimestampError> {
        let part = &b[range];
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
        } else {
            Err(err("expected digits"))
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(err("expected YYYY-MM-DD HH:MM:SS"));
    }
    let rfc3339 = match b[10] {
        b' ' => false,
        b'T' | b't' => true,
        _ => return Err(err("expected ' ' or 'T' between date and time")),
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    check_civil([year, month, day, hour, minute, second]).map_err(err)?;
    let mut i = 19;
    let mut micros = 0u32;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &b[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return Err(err("fraction of a second must have 1 to 9 digits"));
        }
        for k in 0..6 {
            micros = micros * 10 + digits.get(k).map_or(0, |d| u32::from(d - b'0'));
        }
    }
    let offset_minutes: i64 = if rfc3339 {
        match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if h > 23 || m > 59 {
                    return Err(err("no such UTC offset"));
                }
                let v = i64::from(h * 60 + m);
                if *sign == b'-' { -v } else { v }
            }
            // ISO 8601 without a zone: a wall-clock time, like the sample's form.
            None => i64::from(naive_offset_minutes),
            _ => return Err(err("a zone is 'Z' or ±HH:MM")),
        }
    } else {
        if i != b.len() {
            return Err(err("unexpected characters after the time"));
        }
        i64::from(naive_offset_minutes)
    };
    Ok(civil_micros(
        [year, month, day, hour, minute, second],
        micros,
        offset_minutes,
    ))
}

/// The sample's form exactly, `YYYY-MM-DD HH:MM:SS.ffffff` — what nearly every tick carries — read
/// in one pass over fixed positions: `[year, month, day, hour, minute, second]` and the micros.
/// `None` for anything else, which the general parser reads (and refuses with a reason).
fn sample_form(b: &[u8]) -> Option<([u32; 6], u32)> {
    let b: &[u8; 26] = b.try_into().ok()?;
    // Every byte checked without a branch: a digit where one belongs, the separator elsewhere.
    const FORM: &[u8; 26] = b"0000-00-00 00:00:00.000000";
    let mut d = [0u32; 26];
    let mut bad = false;
    for i in 0..26 {
        let v = b[i].wrapping_sub(b'0');
        d[i] = u32::from(v);
        bad |= if FORM[i] == b'0' {
            v > 9
        } else {
            b[i] != FORM[i]
        };
    }
    if bad {
        return None;
    }
    let two = |i: usize| d[i] * 10 + d[i + 1];
    let micros = two(20) * 10_000 + two(22) * 100 + two(24);
    Some((
        [
            two(0) * 100 + two(2),
            two(5),
            two(8),
            two(11),
            two(14),
            two(17),
        ],
        micros,
    ))
}

/// Refuses a date or time of day that does not exist (a leap second, :60, is let through).
fn check_civil([year, month, day, hour, minute, second]: [u32; 6]) -> Result<(), &'static str> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    Ok(())
}

/// UTC µs of a checked civil time at `offset_minutes` from UTC.
fn civil_micros(
    [year, month, day, hour, minute, second]: [u32; 6],
    micros: u32,
    offset_minutes: i64,
) -> i64 {
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    secs * MICROS_PER_SECOND + i64::from(micros)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_over_four_centuries() {
        for days in (-200_000..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn parses_the_sample_form_as_utc() {
        let us = parse_timestamp("2017-06-20 07:35:05.284824", 0).unwrap();
        // 2017-06-20T07:35:05Z is 1497944105 s.
        assert_eq!(us, 1_497_944_105_284_824);
        assert_eq!(format_rfc3339_micros(us), "2017-06-20T07:35:05.284824Z");
        // The digits written in place are format!'s, in and out of the four-digit years.
        for us in [
            0,
            -1,
            951_782_400_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            -62_135_596_800_000_001,
            us,
        ] {
            let c = Civil::from_micros(us);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
            );
            assert_eq!(format_rfc3339_micros(us), expected, "{us}");
        }
        assert_eq!(format_sample_micros(us), "2017-06-20 07:35:05.284824");
        assert_eq!(
            Civil::from_micros(us).lake_partition(),
            "dt=2017-06-20/hour=07"
        );
    }

    #[test]
    fn applies_configured_offset_to_naive_times_only() {
        let ist = parse_timestamp("2017-06-20 13:05:05", 330).unwrap();
        assert_eq!(ist, 1_497_944_105_000_000);
        let rfc = parse_timestamp("2017-06-20T13:05:05+05:30", 0).unwrap();
        assert_eq!(rfc, ist);
        assert_eq!(parse_timestamp("2017-06-20T07:35:05Z", 330).unwrap(), ist);
        // ISO 8601 without a zone (Python's isoformat() of a naive datetime) is wall-clock too.
        assert_eq!(parse_timestamp("2017-06-20T13:05:05", 330).unwrap(), ist);
        assert_eq!(
            parse_timestamp("2017-06-20T13:05:05.000", 330).unwrap(),
            ist
        );
    }

    #[test]
    fn epoch_numbers_are_read_by_their_unit_or_magnitude() {
        let us = 1_497_944_105_284_824_i64;
        for (n, unit) in [
            (us / 1_000_000, EpochUnit::Seconds),
            (us / 1_000, EpochUnit::Millis),
            (us, EpochUnit::Micros),
            (us * 1_000, EpochUnit::Nanos),
        ] {
            assert_eq!(EpochUnit::of_magnitude(n), unit, "{n}");
            let want = match unit {
                EpochUnit::Seconds => us / 1_000_000 * 1_000_000,
                EpochUnit::Millis => us / 1_000 * 1_000,
                _ => us,
            };
            assert_eq!(epoch_micros(n, None), Some(want));
            assert_eq!(epoch_micros(n, Some(unit)), Some(want));
        }
        // The boundaries: 10^11 s would be the year 5138; 10^11 ms is 1973.
        assert_eq!(EpochUnit::of_magnitude(99_999_999_999), EpochUnit::Seconds);
        assert_eq!(EpochUnit::of_magnitude(100_000_000_000), EpochUnit::Millis);
        // A configured unit overrides the magnitude; an overflow is refused.
        assert_eq!(
            epoch_micros(1_000, Some(EpochUnit::Millis)),
            Some(1_000_000)
        );
        assert_eq!(epoch_micros(i64::MAX / 10, Some(EpochUnit::Seconds)), None);
        for text in ["s", "ms", "us", "ns"] {
            assert!(EpochUnit::parse(text).is_some());
        }
        assert_eq!(EpochUnit::parse("sec"), None);
    }

    #[test]
    fn fractions_are_scaled_to_micros() {
        let base = parse_timestamp("2017-06-20 07:35:05", 0).unwrap();
        assert_eq!(
            parse_timestamp("2017-06-20 07:35:05.5", 0).unwrap(),
            base + 500_000
        );
        assert_eq!(
            parse_timestamp("2017-06-20 07:35:05.123456789", 0).unwrap(),
            base + 123_456
        );
    }

    #[test]
    fn refuses_malformed_timestamps_with_a_reason() {
        for bad in [
            "",
            "2017-06-20",
            "2017-13-20 07:35:05",
            "2017-02-30 07:35:05",
            "2017-06-20 25:35:05",
            "2017-06-20X07:35:05",
            "2017-06-20T07:35:05+0530",
            "2017-06-20 07:35:05.",
            "2017-06-20 07:35:05Z",
            "2017-06-20 07:35:05 junk",
            "20x7-06-20 07:35:05",
        ] {
            let e = parse_timestamp(bad, 0).unwrap_err();
            // (ISO 8601 without a zone is a wall-clock time: see the next test.)
            assert!(e.0.contains("timestamp"), "{bad}: {e}");
        }
    }
}
