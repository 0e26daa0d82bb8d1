//! JSONL reading: one JSON object per line.
//!
//! Opening an input makes one pass over it that collects the union of keys
//! in first-seen order (these are the columns) and checks every non-blank
//! line is a JSON object. Each later pass turns a line into a [`Record`]
//! aligned with those columns: strings as they are, numbers and booleans as
//! their JSON text, null or absent as empty. A nested object or array is a
//! [`RowProblem`] for its key (its JSON text is kept as the value, so nothing
//! is lost in the results). Blank lines are skipped; line numbers stay
//! physical. Lines are read into a reused buffer, so memory does not grow
//! with the file.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::Record;
use super::error::InputError;
use super::format::BOM;
use super::plan::RowProblem;
use super::spool::Source;

/// Line by line reading of a JSONL source with physical line numbers.
struct Lines {
    /// The source, buffered.
    reader: BufReader<File>,
    /// The current line, reused.
    buf: Vec<u8>,
    /// Physical number of the line in `buf`.
    line: u64,
}

impl Lines {
    /// Starts reading the source from the top.
    fn open(source: &Source, file: &str) -> Result<Lines, InputError> {
        let f = source.open().map_err(|error| InputError::Io { file: file.to_string(), error })?;
        Ok(Lines { reader: BufReader::with_capacity(64 * 1024, f), buf: Vec::new(), line: 0 })
    }

    /// Advances to the next non-blank line and returns its number and bytes
    /// (without the line end or a leading BOM), or `None` at the end.
    fn next_line(&mut self, file: &str) -> Result<Option<(u64, &[u8])>, InputError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|error| InputError::Io { file: file.to_string(), error })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let bom = if self.line == 1 && self.buf.starts_with(BOM) { BOM.len() } else { 0 };
            let start =
                bom + self.buf[bom..].iter().take_while(|b| b.is_ascii_whitespace()).count();
            let end = self.buf.len()
                - self.buf[start..].iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
            if start < end {
                return Ok(Some((self.line, &self.buf[start..end])));
            }
        }
    }
}

/// The JSON parser's error as an [`InputError`] on physical line `line`.
fn json_error(file: &str, line: u64, e: serde_json::Error) -> InputError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = format!(
        "{} (each line must be one JSON object)",
        full.strip_suffix(&suffix).unwrap_or(&full)
    );
    // The parser reports column 0 when it fails before the first character.
    InputError::Json { file: file.to_string(), line, column: e.column().max(1), message }
}

/// The union of keys in first-seen order.
#[derive(Default)]
struct KeyUnion {
    /// The keys, in order.
    names: Vec<String>,
    /// The same keys, for membership tests without allocating.
    seen: HashSet<String>,
}

impl KeyUnion {
    /// Adds `key` unless already present.
    fn add(&mut self, key: &str) {
        if !self.seen.contains(key) {
            self.seen.insert(key.to_string());
            self.names.push(key.to_string());
        }
    }
}

/// Deserialises one line as an object, recording its keys and skipping its
/// values (no tree is built on this pass).
struct ObjectKeys<'a>(&'a mut KeyUnion);

impl<'de> DeserializeSeed<'de> for ObjectKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyName(&mut *self.0))?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Records one object key.
struct KeyName<'a>(&'a mut KeyUnion);

impl<'de> DeserializeSeed<'de> for KeyName<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyName<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        self.0.add(key);
        Ok(())
    }
}

/// The columns of a JSONL source: the union of its keys in first-seen order.
/// Fails on the first line that is not a JSON object, and on a source with
/// no object at all.
pub(crate) fn scan_keys(source: &Source, file: &str) -> Result<Vec<String>, InputError> {
    let mut lines = Lines::open(source, file)?;
    let mut keys = KeyUnion::default();
    let mut objects = 0u64;
    while let Some((line, text)) = lines.next_line(file)? {
        // Skipped values are not decoded, so check the encoding here: a bad
        // line must stop the input at open, not halfway through a run.
        if let Err(e) = std::str::from_utf8(text) {
            let column = String::from_utf8_lossy(&text[..e.valid_up_to()]).chars().count() + 1;
            let message = "not valid UTF-8 (save the file as UTF-8)".to_string();
            return Err(InputError::Json { file: file.to_string(), line, column, message });
        }
        let mut de = serde_json::Deserializer::from_slice(text);
        ObjectKeys(&mut keys).deserialize(&mut de).map_err(|e| json_error(file, line, e))?;
        de.end().map_err(|e| json_error(file, line, e))?;
        objects += 1;
    }
    if objects == 0 {
        return Err(InputError::Empty { file: file.to_string(), expected: "no JSON object" });
    }
    Ok(keys.names)
}

/// One streaming pass over a JSONL source's records.
pub(crate) struct JsonlRecords {
    /// The lines of this pass's own file handle.
    lines: Lines,
    /// Column names (the key union).
    names: Vec<String>,
    /// The input's display name, for errors.
    file: Arc<str>,
    /// Set after an I/O error: the stream cannot be trusted any further.
    done: bool,
    /// Keeps a spooled stdin alive while this pass reads it.
    _source: Source,
}

impl JsonlRecords {
    /// Starts a pass from the top of the source.
    pub(crate) fn new(
        source: &Source,
        names: Vec<String>,
        file: Arc<str>,
    ) -> Result<JsonlRecords, InputError> {
        let lines = Lines::open(source, &file)?;
        Ok(JsonlRecords { lines, names, file, done: false, _source: source.clone() })
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<Record, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (line, text) = match self.lines.next_line(&self.file) {
            Ok(Some(l)) => l,
            Ok(None) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let mut object: serde_json::Map<String, Value> = match serde_json::from_slice(text) {
            Ok(o) => o,
            Err(e) => return Some(Err(json_error(&self.file, line, e))),
        };
        let mut problems = Vec::new();
        let values = self
            .names
            .iter()
            .map(|name| match object.remove(name) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    let text = v.to_string();
                    problems.push(RowProblem {
                        line,
                        column: name.clone(),
                        value: text.clone(),
                        why: "nested objects and arrays are not supported; give a string, number or boolean"
                            .into(),
                    });
                    text
                }
            })
            .collect();
        Some(Ok(Record { line, values, problems }))
    }
}
