//! A file of ticks read one tick at a time, never held whole: newline-delimited JSON line by line,
//! or the elements of a JSON array (the sample's form) as the bytes go by.
//!
//! Invariant: the items, their positions and their bytes are exactly those of
//! [`stockpipe_model::json::split_input_bytes`] over the whole file — NDJSON lines byte for byte
//! (blank lines skipped, a trailing `\r` dropped), array elements re-serialized compactly — so a
//! file gives the same messages however it is read. A JSON array is checked whole (streaming, in
//! constant memory) before its first element is handed out: a broken file is refused before any of
//! it is replayed.

use anyhow::Context;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// A tick file being read.
pub struct InputReader {
    path: PathBuf,
    reader: BufReader<File>,
    array: bool,
    /// 1-based position of the last item handed out (line or element).
    position: usize,
    /// Lines read so far (NDJSON).
    lines: usize,
    bytes_read: u64,
    size: u64,
    /// An array's closing bracket was seen.
    done: bool,
    buf: Vec<u8>,
}

impl InputReader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let open = || File::open(path).with_context(|| format!("reading {}", path.display()));
        let file = open()?;
        let size = file.metadata().map_or(0, |m| m.len());
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let array = first_non_whitespace(&mut reader)? == Some(b'[');
        if array {
            // The whole file, streaming: `IgnoredAny` keeps nothing.
            let check = BufReader::with_capacity(1 << 20, open()?);
            let mut de = serde_json::Deserializer::from_reader(check);
            serde::de::Deserialize::deserialize(&mut de)
                .and_then(|serde::de::IgnoredAny| de.end())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: input looks like a JSON array but is not valid JSON: {e}",
                        path.display()
                    )
                })?;
        }
        reader.rewind()?;
        let mut input = Self {
            path: path.to_path_buf(),
            reader,
            array,
            position: 0,
            lines: 0,
            bytes_read: 0,
            size,
            done: false,
            buf: Vec::new(),
        };
        if array {
            input.skip_whitespace()?;
            input.take_byte()?; // the opening bracket
        }
        Ok(input)
    }

    /// What a position counts: `line` or `element`.
    pub fn unit(&self) -> &'static str {
        if self.array { "element" } else { "line" }
    }

    /// The file's size, and how much of it was read so far (for progress).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next tick and its 1-based position, or `None` at the end.
    pub fn next_item(&mut self) -> anyhow::Result<Option<(usize, Vec<u8>)>> {
        let item = if self.array {
            self.next_element()
        } else {
            self.next_line()
        };
        item.with_context(|| format!("reading {}", self.path.display()))
    }

    fn next_line(&mut self) -> anyhow::Result<Option<(usize, Vec<u8>)>> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes_read += n as u64;
            self.lines += 1;
            let mut line = self.buf.as_slice();
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.position = self.lines;
                return Ok(Some((self.lines, line.to_vec())));
            }
        }
    }

    fn next_element(&mut self) -> anyhow::Result<Option<(usize, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        self.skip_whitespace()?;
        if self.peek_byte()? == Some(b']') {
            self.take_byte()?;
            self.done = true;
            return Ok(None);
        }
        // The element's bytes: up to a `,` or `]` outside any string, object or array.
        self.buf.clear();
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let Some(b) = self.peek_byte()? else {
                anyhow::bail!("the JSON array ends early");
            };
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    // Saturating: the file was checked whole, but may have changed since.
                    b'}' => depth = depth.saturating_sub(1),
                    b']' if depth == 0 => {
                        self.done = true;
                        break;
                    }
                    b']' => depth = depth.saturating_sub(1),
                    b',' if depth == 0 => break,
                    _ => {}
                }
            }
            self.buf.push(b);
            self.take_byte()?;
        }
        self.take_byte()?; // the `,` or `]`
        let value: serde_json::Value = serde_json::from_slice(&self.buf)
            .with_context(|| format!("element {}", self.position + 1))?;
        self.position += 1;
        Ok(Some((self.position, value.to_string().into_bytes())))
    }

    fn peek_byte(&mut self) -> std::io::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn take_byte(&mut self) -> std::io::Result<()> {
        if !self.reader.fill_buf()?.is_empty() {
            self.reader.consume(1);
            self.bytes_read += 1;
        }
        Ok(())
    }

    fn skip_whitespace(&mut self) -> std::io::Result<()> {
        while self.peek_byte()?.is_some_and(|b| b.is_ascii_whitespace()) {
            self.take_byte()?;
        }
        Ok(())
    }
}

fn first_non_whitespace(reader: &mut impl Read) -> std::io::Result<Option<u8>> {
    let mut byte = [0u8];
    loop {
        if reader.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if !byte[0].is_ascii_whitespace() {
            return Ok(Some(byte[0]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> anyhow::Result<Vec<(usize, Vec<u8>)>> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        let mut input = InputReader::open(file.path())?;
        let mut items = Vec::new();
        while let Some(item) = input.next_item()? {
            items.push(item);
        }
        let read = input.bytes_read() as usize;
        assert!(
            (bytes.trim_ascii_end().len()..=bytes.len()).contains(&read),
            "every byte read once: {read}"
        );
        Ok(items)
    }

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A JSON value with strings full of brackets, quotes, escapes and commas.
    fn value(rng: &mut Rng, depth: u32) -> String {
        match rng.below(if depth > 2 { 4 } else { 6 }) {
            0 => format!("{}", rng.next() as i64 >> 20),
            1 => format!("{:.6}", (rng.next() % 100_000) as f64 / 7.0),
            2 => {
                let pieces = [
                    "a", ",", "]", "[", "{", "}", "\\\"", "\\\\", " ", "é", "\\n", "\\u00e9",
                ];
                let s: String = (0..rng.below(8))
                    .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
                    .collect();
                format!("\"{s}\"")
            }
            3 => ["true", "false", "null"][rng.below(3) as usize].to_string(),
            4 => {
                let items: Vec<String> = (0..rng.below(4)).map(|_| value(rng, depth + 1)).collect();
                format!("[ {} ]", items.join(" , "))
            }
            _ => {
                let fields: Vec<String> = (0..rng.below(4))
                    .map(|i| format!("\"k{i},]\" :\n {}", value(rng, depth + 1)))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    #[test]
    fn streams_exactly_what_the_whole_file_split_gives() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let values: Vec<String> = (0..rng.below(12)).map(|_| value(&mut rng, 0)).collect();
            let array = format!(" \n[{}]\n ", values.join(",\n  "));
            let expected = stockpipe_model::json::split_input_bytes(array.as_bytes()).unwrap();
            assert_eq!(
                read_all(array.as_bytes()).unwrap(),
                expected,
                "case {case}: {array}"
            );
            let mut ndjson = values.join("\n").replace("\n\n", "\n \n");
            if case % 3 == 0 {
                ndjson = ndjson.replace('\n', "\r\n");
            }
            if case % 2 == 0 {
                ndjson.push('\n');
            }
            // (A file whose first line starts with `[` is read as one array, by both.)
            match stockpipe_model::json::split_input_bytes(ndjson.as_bytes()) {
                Ok(expected) => {
                    assert_eq!(
                        read_all(ndjson.as_bytes()).unwrap(),
                        expected,
                        "case {case}"
                    );
                }
                Err(_) => assert!(read_all(ndjson.as_bytes()).is_err(), "case {case}"),
            }
        }
    }

    #[test]
    fn ndjson_lines_keep_their_bytes_and_positions() {
        let items = read_all(b"{\"a\":1}\n\n  \n\xff\xfe not json\r\n{\"b\":2}").unwrap();
        assert_eq!(
            items,
            vec![
                (1, b"{\"a\":1}".to_vec()),
                (4, b"\xff\xfe not json".to_vec()),
                (5, b"{\"b\":2}".to_vec())
            ]
        );
        assert!(read_all(b"").unwrap().is_empty());
    }

    #[test]
    fn a_broken_array_is_refused_before_any_element() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json");
        std::fs::write(&path, b"[{\"a\":1},{\"b\":").unwrap();
        let e = InputReader::open(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains("input looks like a JSON array but is not valid JSON"),
            "{e}"
        );
        assert_eq!(read_all(b"[]").unwrap(), vec![]);
        assert_eq!(read_all(b" [ 1 , \"x]\" ] ").unwrap().len(), 2);
    }
}
