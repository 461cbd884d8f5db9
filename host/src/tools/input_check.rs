//! `stockpipe input check`: how each of a file's first messages would be read — the shape
//! recognised, the event time and where it came from, the fields the tick carries — or why it
//! would be refused, field named. The decoder is the pipeline's own; nothing is written anywhere.

use serde::Serialize;
use serde_json::Value;
use stockpipe_model::json::shapes::Shape;
use stockpipe_model::json::{DecodeOptions, decode_object, elements, split_input_bytes};
use stockpipe_model::time::format_rfc3339_micros;
use stockpipe_model::{Fields, Tick};

/// What one tick of the file came to.
#[derive(Debug, Serialize, PartialEq)]
pub struct TickReport {
    /// The message's line (NDJSON) or element (a JSON array), from 1.
    pub message: usize,
    /// Where the tick is in a message of several (`[1]`, `data["NSE:INFY"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instrument_token: Option<u64>,
    /// The event time, UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `tick` (its own) or `kafka` (it has none: the record's time when consumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_source: Option<&'static str>,
    /// The optional fields it carries, by our names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
    /// Why it would be refused: `<code>: <reason>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The reports of the first `limit` messages of `bytes` (a JSON array or NDJSON), every tick of
/// each. `now_ms` stands in for the record time of ticks without their own.
pub fn check(
    bytes: &[u8],
    options: &DecodeOptions,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<TickReport>, String> {
    let mut reports = Vec::new();
    for (message, payload) in split_input_bytes(bytes)?.into_iter().take(limit) {
        let value: Value = match serde_json::from_slice(&payload) {
            Ok(v) => v,
            Err(e) => {
                reports.push(refused(message, None, format!("malformed-json: {e}")));
                continue;
            }
        };
        match elements(&value) {
            None => reports.push(one(message, None, &value, options, now_ms)),
            Some(ticks) => {
                for e in ticks {
                    reports.push(one(message, Some(e.at), e.value, options, now_ms));
                }
            }
        }
    }
    Ok(reports)
}

fn refused(message: usize, at: Option<String>, why: String) -> TickReport {
    TickReport {
        message,
        at,
        shape: None,
        instrument_token: None,
        timestamp: None,
        timestamp_source: None,
        fields: Vec::new(),
        refused: Some(why),
    }
}

fn one(
    message: usize,
    at: Option<String>,
    value: &Value,
    options: &DecodeOptions,
    now_ms: i64,
) -> TickReport {
    let Value::Object(obj) = value else {
        return refused(
            message,
            at,
            format!("wrong-type: a tick must be an object, got {value}"),
        );
    };
    let shape = match &options.mapping {
        Some(mapping) if mapping.applies(obj) => "the input mapping",
        _ => Shape::of(obj).as_str(),
    };
    match decode_object(obj, options, Some(now_ms)) {
        Err(e) => TickReport {
            shape: Some(shape),
            ..refused(message, at, e.to_string())
        },
        Ok((tick, _)) => TickReport {
            message,
            at,
            shape: Some(shape),
            instrument_token: Some(tick.instrument_token),
            timestamp: Some(format_rfc3339_micros(tick.timestamp_us)),
            timestamp_source: Some(if tick.timestamp_from_kafka {
                "kafka"
            } else {
                "tick"
            }),
            fields: names(&tick),
            refused: None,
        },
    }
}

fn names(tick: &Tick) -> Vec<&'static str> {
    let present = tick.view().fields();
    let mut names: Vec<&'static str> = Fields::NAMED
        .iter()
        .filter(|(bit, _)| present.has(*bit))
        .map(|(_, name)| *name)
        .collect();
    if tick.tradable.is_some() {
        names.push("tradable");
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tick_says_its_shape_its_time_and_its_fields_or_why_it_is_refused() {
        let file = concat!(
            r#"{"tradable": true, "mode": "ltp", "instrument_token": 408065, "last_price": 1573.15}"#,
            "\n",
            r#"[{"tradable": false, "mode": "ltp", "instrument_token": 256265, "last_price": 15175.3}, {"mode": "ltp", "instrument_token": 1}]"#,
            "\n",
            "{not json\n",
        );
        let reports = check(file.as_bytes(), &DecodeOptions::default(), 10, 1_000).unwrap();
        assert_eq!(reports.len(), 4);
        assert_eq!(reports[0].shape, Some("Kite ticker"));
        assert_eq!(reports[0].timestamp_source, Some("kafka"));
        assert_eq!(reports[0].fields, ["mode", "tradable"]);
        assert_eq!(reports[1].at.as_deref(), Some("[0]"));
        assert_eq!(reports[1].instrument_token, Some(256_265));
        assert_eq!(reports[2].at.as_deref(), Some("[1]"));
        let why = reports[2].refused.as_deref().unwrap();
        assert!(
            why.starts_with("missing-field") && why.contains("last_price"),
            "{why}"
        );
        assert!(
            reports[3]
                .refused
                .as_deref()
                .unwrap()
                .starts_with("malformed-json")
        );
        // The first messages only.
        assert_eq!(
            check(file.as_bytes(), &DecodeOptions::default(), 1, 0)
                .unwrap()
                .len(),
            1
        );
    }
}
