//! JSONL reading: one JSON object per line.
//!
//! Opening an input makes one pass over it that collects the union of keys
//! in first-seen order (these are the columns) and checks every non-blank
//! line is a JSON object. Each later pass turns a line into a [`Record`]
//! aligned with those columns: strings as they are, numbers and booleans as
//! their JSON text, null or absent as empty. A nested object or array is a
//! [`RowProblem`] for its key (its JSON text is kept as the value, so nothing
//! is lost in the results). Blank lines are skipped; line numbers stay
//! physical: a line ends at `\n`, `\r\n` or a lone `\r` (a raw CR cannot be
//! inside a JSON string, so it only ever ends a line). Lines are read into a
//! reused buffer, so memory does not grow with the file.
//!
//! The key union is bounded: at most [`MAX_JSONL_COLUMNS`] distinct keys.
//! Every key becomes a column of every result row, so keys that differ from
//! line to line (data in key position, `{"host-00042": "isolate"}`) would
//! make the results grow as lines times keys: 20,000 lines with a key each
//! came to 400 MB. Such a file is refused at open, naming the line and the
//! key past the limit, rather than folded into some catch-all column: the
//! shape of the results would then depend on the order of the lines, and the
//! mistake in whatever wrote the file would go unnoticed. (A CSV file needs
//! no such bound: its columns are its header, and a row that does not fit
//! the header is already a row problem.)

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::error::InputError;
use super::plan::RowProblem;
use super::record::Record;
use super::spool::Source;
use crate::results::dialect::BOM;
use crate::text::clip;

/// The most distinct keys a JSONL input may have (its columns): far more
/// than any inventory export, few enough that results stay proportionate to
/// the input. See the module docs.
pub const MAX_JSONL_COLUMNS: usize = 256;

/// Line by line reading of a source with physical line numbers (JSONL, and
/// the lists of [`super::lines`]).
pub(super) struct Lines {
    /// The source, buffered.
    reader: BufReader<File>,
    /// The current line, reused.
    buf: Vec<u8>,
    /// Physical number of the line in `buf`.
    line: u64,
    /// The last line ended with `\r`: a `\n` right after it belongs to that
    /// line end.
    after_cr: bool,
}

impl Lines {
    /// Starts reading the source from the top.
    pub(super) fn open(source: &Source, file: &str) -> Result<Lines, InputError> {
        let f = source.open().map_err(|error| InputError::Io { file: file.to_string(), error })?;
        Ok(Lines {
            reader: BufReader::with_capacity(64 * 1024, f),
            buf: Vec::new(),
            line: 0,
            after_cr: false,
        })
    }

    /// Reads the next physical line into `buf`, without its line end.
    /// Returns false at the end of the source.
    fn read_line(&mut self) -> std::io::Result<bool> {
        self.buf.clear();
        let mut any = false;
        loop {
            let avail = self.reader.fill_buf()?;
            if avail.is_empty() {
                return Ok(any);
            }
            if std::mem::take(&mut self.after_cr) && avail[0] == b'\n' {
                self.reader.consume(1);
                continue;
            }
            any = true;
            match avail.iter().position(|&b| matches!(b, b'\r' | b'\n')) {
                Some(i) => {
                    self.buf.extend_from_slice(&avail[..i]);
                    self.after_cr = avail[i] == b'\r';
                    self.reader.consume(i + 1);
                    return Ok(true);
                }
                None => {
                    let n = avail.len();
                    self.buf.extend_from_slice(avail);
                    self.reader.consume(n);
                }
            }
        }
    }

    /// Advances to the next non-blank line and returns its number and bytes
    /// (without the line end or a leading BOM), or `None` at the end.
    pub(super) fn next_line(&mut self, file: &str) -> Result<Option<(u64, &[u8])>, InputError> {
        loop {
            let more = self
                .read_line()
                .map_err(|error| InputError::Io { file: file.to_string(), error })?;
            if !more {
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
    // The parser's message can quote the line (a string that is not an
    // object): keep it short so the explanation after it survives.
    let message = format!(
        "{} (each line must be one JSON object)",
        clip(full.strip_suffix(&suffix).unwrap_or(&full)).max(200)
    );
    // The parser reports column 0 when it fails before the first character.
    InputError::Json { file: file.to_string(), line, column: e.column().max(1), message }
}

/// The union of keys in first-seen order, up to [`MAX_JSONL_COLUMNS`].
#[derive(Default)]
struct KeyUnion {
    /// The keys, in order.
    names: Vec<String>,
    /// The same keys, for membership tests without allocating.
    seen: HashSet<String>,
    /// The first key past the limit, once one is seen.
    overflow: Option<String>,
}

impl KeyUnion {
    /// Adds `key` unless already present; past the limit it is kept aside
    /// as the overflow instead.
    fn add(&mut self, key: &str) {
        if self.seen.contains(key) || self.overflow.is_some() {
            return;
        }
        if self.names.len() == MAX_JSONL_COLUMNS {
            self.overflow = Some(key.to_string());
            return;
        }
        self.seen.insert(key.to_string());
        self.names.push(key.to_string());
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
/// Fails on the first line that is not a JSON object, on the line that
/// brings a key past [`MAX_JSONL_COLUMNS`], and on a source with no object
/// at all.
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
        if let Some(key) = keys.overflow.take() {
            return Err(InputError::TooManyKeys {
                file: file.to_string(),
                line,
                key,
                limit: MAX_JSONL_COLUMNS,
            });
        }
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
