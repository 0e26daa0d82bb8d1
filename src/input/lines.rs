//! Plain lists of devices: one machine id, device name, IP address or Entra
//! device id per line, with no header (`hosts.txt`, a column pasted out of a
//! ticket). Each value is told apart by its shape
//! ([`super::plan::classify_device`]); the list is read as one column,
//! [`Role::Device`]. Blank lines and lines starting with `#` are skipped,
//! and line numbers are the file's physical lines (a line ends at `\n`,
//! `\r\n` or a lone `\r`). A first line that is a header name of a device
//! column (`hostname`, `DeviceId`, ...) is a header, not a device.
//!
//! A `.txt` may instead be Excel's "Unicode Text": a sheet saved
//! tab-separated with a header. [`looks_tabular`] tells the two apart by a
//! tab in the first line that is not blank or a comment.

use std::io::{BufReader, Read};
use std::sync::Arc;

use super::columns::Role;
use super::error::InputError;
use super::jsonl::Lines;
use super::record::Record;
use super::spool::Source;
use crate::results::dialect::{Dialect, skip_bom};

/// The first line that is neither blank nor a comment, trimmed; `None` when
/// there is none.
fn first_value(source: &Source, file: &str) -> Result<Option<(u64, Vec<u8>)>, InputError> {
    let mut lines = Lines::open(source, file)?;
    while let Some((line, bytes)) = lines.next_line(file)? {
        if !bytes.starts_with(b"#") {
            return Ok(Some((line, bytes.to_vec())));
        }
    }
    Ok(None)
}

/// True when the first line that is not blank or a comment holds a tab: a
/// tab-separated sheet with a header, not a list.
pub(crate) fn looks_tabular(source: &Source) -> bool {
    matches!(first_value(source, ""), Ok(Some((_, bytes))) if bytes.contains(&b'\t'))
}

/// Checks the list has a device on some line and returns the dialect its
/// results repeat: its line end, comma-separated.
pub(crate) fn inspect(source: &Source, file: &str) -> Result<Dialect, InputError> {
    let io_err = |error| InputError::Io { file: file.to_string(), error };
    let mut pass = LineRecords::new(source, vec![Role::Device.canonical().into()], file.into())?;
    if pass.next().transpose()?.is_none() {
        return Err(InputError::Empty {
            file: file.to_string(),
            expected: "no device on any line; blank lines and # comments are skipped",
        });
    }
    let mut r = BufReader::new(source.open().map_err(io_err)?);
    skip_bom(&mut r).map_err(io_err)?;
    let dialect = Dialect::sniff(&mut (&mut r).take(1 << 20)).map_err(io_err)?;
    Ok(dialect.with_delimiter(b','))
}

/// True when `value` is the header name of a device column.
fn is_header(value: &str) -> bool {
    Role::for_header(value).is_some_and(|r| Role::TARGETS.contains(&r))
}

/// One streaming pass over a list's records.
pub(crate) struct LineRecords {
    /// The lines of this pass's own file handle.
    lines: Lines,
    /// The one column name, for a UTF-8 error.
    names: Vec<String>,
    /// The input's display name, for errors.
    file: Arc<str>,
    /// Whether a value has been seen (a header can only come first).
    seen: bool,
    /// Set after an I/O error: the stream cannot be trusted any further.
    done: bool,
    /// Keeps a spooled stdin alive while this pass reads it.
    _source: Source,
}

impl LineRecords {
    /// Starts a pass from the top of the list.
    pub(crate) fn new(
        source: &Source,
        names: Vec<String>,
        file: Arc<str>,
    ) -> Result<LineRecords, InputError> {
        Ok(LineRecords {
            lines: Lines::open(source, &file)?,
            names,
            file,
            seen: false,
            done: false,
            _source: source.clone(),
        })
    }
}

impl Iterator for LineRecords {
    type Item = Result<Record, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (line, bytes) = match self.lines.next_line(&self.file) {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if bytes.starts_with(b"#") {
                continue;
            }
            let value = match std::str::from_utf8(bytes) {
                Ok(v) => v,
                Err(_) => {
                    return Some(Err(InputError::Utf8 {
                        file: self.file.to_string(),
                        line,
                        column: self.names[0].clone(),
                    }));
                }
            };
            let first = !std::mem::replace(&mut self.seen, true);
            if first && is_header(value) {
                continue;
            }
            return Some(Ok(Record {
                line,
                values: vec![value.to_string()],
                problems: Vec::new(),
            }));
        }
        None
    }
}
