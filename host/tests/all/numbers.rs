//! Every number leaves as it came: a value read from a message is the same double (or integer) in
//! the decoded tick and in the document written to Elasticsearch and the lake. The reference is
//! Rust's `f64::from_str` / `i64::from_str` of the number's text as it stood in the message, read
//! here by a scanner of our own — not by the JSON parser under test.

use crate::support::Rng;
use std::collections::BTreeMap;
use stockpipe::chain::GuestVersions;
use stockpipe::sink::SourceRef;
use stockpipe::sink::document::AcceptedDocument;
use stockpipe_model::json::decode_tick;
use stockpipe_model::{Enrichment, Tick};

/// Every number literal of a JSON text, by path (`depth.buy[0].price`), as written.
fn number_literals(text: &str) -> BTreeMap<String, String> {
    fn value(b: &[u8], i: &mut usize, path: String, out: &mut BTreeMap<String, String>) {
        skip_ws(b, i);
        match b[*i] {
            b'{' => {
                *i += 1;
                loop {
                    skip_ws(b, i);
                    if b[*i] == b'}' {
                        *i += 1;
                        return;
                    }
                    let key = string(b, i);
                    skip_ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    let child = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    value(b, i, child, out);
                    skip_ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                }
            }
            b'[' => {
                *i += 1;
                let mut n = 0;
                loop {
                    skip_ws(b, i);
                    if b[*i] == b']' {
                        *i += 1;
                        return;
                    }
                    value(b, i, format!("{path}[{n}]"), out);
                    n += 1;
                    skip_ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                }
            }
            b'"' => {
                string(b, i);
            }
            b't' | b'n' => *i += 4,
            b'f' => *i += 5,
            _ => {
                let start = *i;
                while *i < b.len()
                    && matches!(b[*i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    *i += 1;
                }
                let literal = std::str::from_utf8(&b[start..*i]).unwrap().to_string();
                out.insert(path, literal);
            }
        }
    }
    fn skip_ws(b: &[u8], i: &mut usize) {
        while b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn string(b: &[u8], i: &mut usize) -> String {
        assert_eq!(b[*i], b'"');
        let start = *i + 1;
        *i += 1;
        while b[*i] != b'"' {
            *i += if b[*i] == b'\\' { 2 } else { 1 };
        }
        *i += 1;
        String::from_utf8(b[start..*i - 1].to_vec()).unwrap()
    }
    let mut out = BTreeMap::new();
    value(text.as_bytes(), &mut 0, String::new(), &mut out);
    out
}

const FLOAT_FIELDS: [&str; 7] = [
    "last_price",
    "change",
    "average_price",
    "open",
    "high",
    "low",
    "close",
];

/// A message with `float` in every price field and `int` in every quantity field.
fn message(float: &str, int: &str, token: &str) -> String {
    let level = format!(r#"{{"price": {float}, "orders": {int}, "quantity": {int}}}"#);
    let floats: String = FLOAT_FIELDS
        .iter()
        .map(|f| format!(r#""{f}": {float}, "#))
        .collect();
    format!(
        r#"{{"timestamp": "2017-06-20 07:35:05.284824", "instrument_token": {token}, {floats}"volume": {int}, "sell_quantity": {int}, "last_quantity": {int}, "depth": {{"buy": [{level}, {level}], "sell": [{level}]}}}}"#
    )
}

fn document(tick: &Tick, enrichment: &Enrichment) -> String {
    let source = SourceRef {
        topic: "stock-stream".into(),
        partition: 0,
        offset: 7,
        tick: None,
    };
    let versions: GuestVersions = vec![("validate", "v1".into())];
    let doc = AcceptedDocument::new(&tick.view(), enrichment, &source, &versions);
    serde_json::to_string(&doc).unwrap()
}

fn enrichment_of(x: f64) -> Enrichment {
    Enrichment {
        mid_price: x,
        spread: Some(x),
        spread_bps: Some(x),
        book_imbalance: Some(x),
        notional: Some(x),
        deviation_bps: Some(x),
        hour: 7,
        minute: 35,
    }
}

/// The bits of a literal as Rust's own correctly rounded parser reads it.
fn bits(literal: &str) -> u64 {
    literal
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{literal}: {e}"))
        .to_bits()
}

/// An integer literal's value; an integral float (`53611.0`, below 2^53) is that integer.
fn integer(literal: &str) -> i128 {
    literal.parse::<i128>().unwrap_or_else(|_| {
        let x: f64 = literal.parse().unwrap();
        assert!(x.fract() == 0.0 && x.abs() < 9e15, "{literal}");
        x as i128
    })
}

/// Checks that `text`'s numbers at `paths` read back the same from `doc`, and returns how many.
fn same_numbers(input: &str, doc: &str, float_paths: &[String], int_paths: &[String]) -> usize {
    let before = number_literals(input);
    let after = number_literals(doc);
    for path in float_paths {
        let (a, b) = (&before[path], &after[path]);
        assert_eq!(
            bits(a),
            bits(b),
            "{path}: {a} in the message, {b} in the document"
        );
    }
    for path in int_paths {
        let (a, b) = (&before[path], &after[path]);
        assert_eq!(
            integer(a),
            integer(b),
            "{path}: {a} in the message, {b} in the document"
        );
    }
    float_paths.len() + int_paths.len()
}

fn paths() -> (Vec<String>, Vec<String>) {
    let mut floats: Vec<String> = FLOAT_FIELDS.iter().map(|f| f.to_string()).collect();
    let mut ints: Vec<String> = [
        "instrument_token",
        "volume",
        "sell_quantity",
        "last_quantity",
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    for level in ["depth.buy[0]", "depth.buy[1]", "depth.sell[0]"] {
        floats.push(format!("{level}.price"));
        ints.push(format!("{level}.orders"));
        ints.push(format!("{level}.quantity"));
    }
    (floats, ints)
}

/// Float literals: 1 to 17 significant digits (and a few past 17) at every decimal exponent the
/// type holds, written as plain decimals and with exponents; shortest and long forms of random
/// bit patterns; the edges.
fn float_literals() -> Vec<String> {
    let mut out: Vec<String> = [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "5e-324",
        "4.9406564584124654e-324",
        "2.2250738585072011e-308",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1.7976931348623158e308",
        "9007199254740992",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "0.9705372616984441",
        "0.1000000000000000055511151231257827021181583404541015625",
        "1e22",
        "1e23",
        "8.98846567431158e307",
        "2.4703282292062327e-324",
        "2.4703282292062328e-324",
        "253.95",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for digits in 1..=19u32 {
        for _ in 0..300 {
            let mut mantissa = String::new();
            mantissa.push(char::from(b'1' + rng.below(9) as u8));
            for _ in 1..digits {
                mantissa.push(char::from(b'0' + rng.below(10) as u8));
            }
            let sign = if rng.below(4) == 0 { "-" } else { "" };
            let exp = rng.below(600) as i64 - 320;
            out.push(match mantissa.len() {
                1 => format!("{sign}{mantissa}e{exp}"),
                _ => format!("{sign}{}.{}e{exp}", &mantissa[..1], &mantissa[1..]),
            });
            // The same digits as a plain decimal: the point inside them, before them behind
            // zeros, or after them behind zeros.
            let m = &mantissa;
            let len = m.len();
            let cut = 1 + rng.below(len as u64) as usize;
            out.push(match rng.below(3) {
                0 if cut < len => format!("{sign}{}.{}", &m[..cut], &m[cut..]),
                0 => format!("{sign}{m}.0"),
                1 => format!("{sign}0.{}{m}", "0".repeat(rng.below(12) as usize)),
                _ => format!("{sign}{m}{}", "0".repeat(rng.below(12) as usize)),
            });
        }
    }
    for _ in 0..3000 {
        let x = f64::from_bits(rng.next());
        if x.is_finite() {
            out.push(format!("{x:e}"));
            out.push(format!("{x:.25e}"));
        }
        let small = rng.below(1 << 53) as f64 / 10f64.powi(rng.below(23) as i32);
        out.push(format!("{small}"));
    }
    out.retain(|s| s.parse::<f64>().is_ok_and(f64::is_finite));
    out
}

fn int_literals() -> Vec<String> {
    let mut out: Vec<String> = [
        "0",
        "1",
        "-1",
        "9007199254740991",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        out.push((rng.next() as i64 >> rng.below(63)).to_string());
    }
    out
}

#[test]
fn generated_numbers_reach_the_document_unchanged() {
    let (float_paths, int_paths) = paths();
    let floats = float_literals();
    let ints = int_literals();
    assert!(floats.len() > 15_000, "{} float cases", floats.len());
    let mut checked = 0;
    for (n, float) in floats.iter().enumerate() {
        let int = &ints[n % ints.len()];
        let token = if n % 2 == 0 {
            "18446744073709551615"
        } else {
            "136519172"
        };
        // The fast path, then the thorough one: an integral float as the volume refuses
        // the fast path (the thorough one takes it below 9e15, where it is an exact integer).
        let fast = message(float, int, token);
        let thorough = fast.replace(
            &format!(r#""volume": {int},"#),
            &format!(r#""volume": {int}.0,"#),
        );
        let integral = int.parse::<i64>().unwrap().unsigned_abs() < 9_000_000_000_000_000;
        for input in [Some(fast), integral.then_some(thorough)]
            .into_iter()
            .flatten()
        {
            let tick = decode_tick(input.as_bytes(), 0).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(tick.last_price.to_bits(), bits(float), "decode of {float}");
            assert_eq!(tick.depth_sell[0].price.to_bits(), bits(float), "{float}");
            assert_eq!(tick.volume.unwrap().to_string(), *int);
            let doc = document(&tick, &enrichment_of(tick.change.unwrap()));
            checked += same_numbers(&input, &doc, &float_paths, &int_paths);
            // What the enrichment computed leaves as it was computed.
            assert_eq!(
                bits(&number_literals(&doc)["notional"]),
                tick.change.unwrap().to_bits()
            );
        }
    }
    assert!(checked > 500_000, "{checked}");
}

#[test]
fn simulated_ticks_reach_the_document_unchanged() {
    let (float_paths, int_paths) = paths();
    let ticks =
        stockpipe::source::simulate::simulate(&stockpipe::source::simulate::SimulateOptions {
            ticks: 3000,
            ..Default::default()
        });
    let mut long_changes = 0;
    for tick in &ticks {
        let input = String::from_utf8(stockpipe::source::simulate::tick_json(tick)).unwrap();
        let decoded = decode_tick(input.as_bytes(), 0).unwrap();
        assert_eq!(&decoded, tick, "{input}");
        let doc = document(&decoded, &enrichment_of(decoded.change.unwrap()));
        let literals = number_literals(&input);
        let present = |p: &&String| literals.contains_key(*p);
        let floats: Vec<String> = float_paths.iter().filter(present).cloned().collect();
        let ints: Vec<String> = int_paths.iter().filter(present).cloned().collect();
        same_numbers(&input, &doc, &floats, &ints);
        if literals["change"].trim_start_matches(['-', '0', '.']).len() >= 16 {
            long_changes += 1;
        }
    }
    // The case the default parser got wrong: 16–17 significant digits.
    assert!(long_changes > 1000, "{long_changes}");
}
