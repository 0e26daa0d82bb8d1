//! CSV and TSV reading: the one place that sets up the `csv` crate.
//!
//! Files are read as spreadsheets export them: an optional UTF-8 BOM, a
//! header row, a comma, semicolon or tab delimiter (sniffed from the header
//! line unless the format is TSV), `\n`, `\r\n` or `\r` line ends, and RFC
//! 4180 quoting with `""` escapes and fields spanning lines. Records are read
//! one at a time into a reused buffer, so memory does not grow with the file.
//!
//! A record whose cells are all blank (an empty line, or `;;;` left behind by
//! a spreadsheet) is not a row and is skipped. A record with more or fewer
//! fields than the header is still returned, padded or cut to the header's
//! width, with a [`RowProblem`] saying so.
//!
//! Line numbers are physical and exact: the parser's own position is taken
//! before the line ends and blank lines it skips at the start of a record,
//! so the bytes it consumes are counted here instead ([`Tap`]).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::Record;
use super::error::InputError;
use super::format::{InputFormat, skip_bom, sniff_delimiter};
use super::plan::RowProblem;
use super::spool::Source;
use crate::output::cell::restore_owned;

/// How to read a delimited file, found by [`inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The field delimiter.
    pub(crate) delimiter: u8,
    /// Byte offset of the header (past the BOM, if any).
    pub(crate) start: u64,
}

/// The file under the parser. It keeps the bytes the parser has read but
/// that are not yet accounted for, so the lines of each record can be
/// counted once the parser says where the record ended.
struct Tap {
    /// The file, read in the parser's buffer-sized chunks.
    file: File,
    /// Bytes read from the file; `pending[start..]` are not accounted for.
    pending: Vec<u8>,
    /// Index of the first byte not accounted for.
    start: usize,
}

impl Read for Tap {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(out)?;
        self.pending.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

impl Tap {
    /// Accounts for the next `len` bytes the parser consumed: returns the
    /// line ends before the first byte that is not `\r` or `\n` (what the
    /// parser skips before a record), and the line ends in all of them.
    fn account(&mut self, len: usize) -> (u64, u64) {
        let end = (self.start + len).min(self.pending.len());
        let bytes = &self.pending[self.start..end];
        let lead = bytes
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .filter(|&&b| b == b'\n')
            .count();
        let total = bytes.iter().filter(|&&b| b == b'\n').count();
        self.start = end;
        // Compact once the accounted prefix dominates: amortised O(1) a byte.
        if self.start >= 64 * 1024 && self.start * 2 >= self.pending.len() {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        (lead as u64, total as u64)
    }
}

/// The `csv` parser with exact physical line numbers.
struct LineReader {
    /// The parser, over the tapped file.
    reader: csv::Reader<Tap>,
    /// Stream offset the parser had consumed up to after the last record.
    consumed: u64,
    /// The physical line of the next unaccounted byte (1-based).
    line: u64,
}

impl LineReader {
    /// A parser over a fresh pass of the source, positioned at the header.
    fn open(source: &Source, layout: Layout) -> io::Result<LineReader> {
        let mut file = source.open()?;
        file.seek(SeekFrom::Start(layout.start))?;
        let tap = Tap { file, pending: Vec::with_capacity(128 * 1024), start: 0 };
        let reader = csv::ReaderBuilder::new()
            .delimiter(layout.delimiter)
            .has_headers(false)
            .flexible(true)
            .quoting(true)
            .double_quote(true)
            .escape(None)
            .comment(None)
            .trim(csv::Trim::None)
            .terminator(csv::Terminator::CRLF)
            .buffer_capacity(64 * 1024)
            .from_reader(tap);
        Ok(LineReader { reader, consumed: 0, line: 1 })
    }

    /// Reads the next record; returns the physical line it starts on, or
    /// `None` at the end.
    fn read(&mut self, record: &mut csv::ByteRecord) -> Result<Option<u64>, csv::Error> {
        if !self.reader.read_byte_record(record)? {
            return Ok(None);
        }
        let end = self.reader.position().byte();
        let len = (end - self.consumed) as usize;
        self.consumed = end;
        let (lead, total) = self.reader.get_mut().account(len);
        let start = self.line + lead;
        self.line += total;
        Ok(Some(start))
    }

    /// Reads the header: the first record with a non-blank cell (blank lines
    /// before it are skipped like blank rows). Returns its line, or `None`
    /// when there is no header at all.
    fn read_header(
        &mut self,
        record: &mut csv::ByteRecord,
        file: &str,
    ) -> Result<Option<u64>, InputError> {
        loop {
            match self.read(record).map_err(|e| csv_error(file, e, self.line))? {
                None => return Ok(None),
                Some(line) if !is_blank(record) => return Ok(Some(line)),
                Some(_) => {}
            }
        }
    }
}

/// True when every cell of the record is empty or whitespace.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|c| c.trim_ascii().is_empty())
}

/// A `csv` error as an [`InputError`] naming the line. With flexible field
/// counts and byte records, only I/O errors are expected.
fn csv_error(file: &str, e: csv::Error, line: u64) -> InputError {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(error) => InputError::Io { file: file.to_string(), error },
        _ => InputError::Csv { file: file.to_string(), line, message },
    }
}

/// Finds the layout of a delimited file and reads its header.
pub(crate) fn inspect(
    source: &Source,
    file: &str,
    format: InputFormat,
) -> Result<(Layout, Vec<String>), InputError> {
    let io_err = |error| InputError::Io { file: file.to_string(), error };
    let mut r = BufReader::new(source.open().map_err(io_err)?);
    let start = skip_bom(&mut r).map_err(io_err)?;
    let delimiter = match format {
        InputFormat::Tsv => b'\t',
        _ => sniff_delimiter(&mut r).map_err(io_err)?,
    };
    let layout = Layout { delimiter, start };
    let mut reader = LineReader::open(source, layout).map_err(io_err)?;
    let mut record = csv::ByteRecord::new();
    let Some(line) = reader.read_header(&mut record, file)? else {
        return Err(InputError::Empty { file: file.to_string(), expected: "no header row" });
    };
    let header = record
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            String::from_utf8(cell.to_vec()).map_err(|_| InputError::Utf8 {
                file: file.to_string(),
                line,
                column: format!("#{}", i + 1),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((layout, header))
}

/// One streaming pass over a delimited file's records.
pub(crate) struct DelimitedRecords {
    /// The parser over this pass's own file handle.
    reader: LineReader,
    /// Reused record buffer: the only per-row storage besides the output.
    record: csv::ByteRecord,
    /// Column names, for naming the cell of a UTF-8 error.
    names: Vec<String>,
    /// Undo formula neutralisation (results files only).
    restore: bool,
    /// The input's display name, for errors.
    file: Arc<str>,
    /// Set at the end, or after an I/O error (the stream cannot be trusted
    /// any further).
    done: bool,
    /// Keeps a spooled stdin alive while this pass reads it.
    _source: Source,
}

impl DelimitedRecords {
    /// Starts a pass: reopens the source and skips the header.
    pub(crate) fn new(
        source: &Source,
        layout: Layout,
        names: Vec<String>,
        restore: bool,
        file: Arc<str>,
    ) -> Result<DelimitedRecords, InputError> {
        let mut reader = LineReader::open(source, layout)
            .map_err(|error| InputError::Io { file: file.to_string(), error })?;
        let mut record = csv::ByteRecord::new();
        reader.read_header(&mut record, &file)?;
        Ok(DelimitedRecords {
            reader,
            record,
            names,
            restore,
            file,
            done: false,
            _source: source.clone(),
        })
    }

    /// Turns the current record, which starts on `line`, into a [`Record`].
    fn convert(&self, line: u64) -> Result<Record, InputError> {
        let width = self.names.len();
        let found = self.record.len();
        let mut values = Vec::with_capacity(width);
        for (i, cell) in self.record.iter().take(width).enumerate() {
            let mut value = std::str::from_utf8(cell)
                .map_err(|_| InputError::Utf8 {
                    file: self.file.to_string(),
                    line,
                    column: self.names[i].clone(),
                })?
                .to_string();
            if self.restore {
                restore_owned(&mut value);
            }
            values.push(value);
        }
        values.resize(width, String::new());
        let mut problems = Vec::new();
        if found != width {
            problems.push(RowProblem {
                line,
                column: String::new(),
                value: String::new(),
                why: format!(
                    "the header has {width} column{} but this row has {found} field{} (a delimiter or quote out of place?)",
                    if width == 1 { "" } else { "s" },
                    if found == 1 { "" } else { "s" },
                ),
            });
        }
        Ok(Record { line, values, problems })
    }
}

impl Iterator for DelimitedRecords {
    type Item = Result<Record, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.reader.read(&mut self.record) {
                Ok(None) => self.done = true,
                Ok(Some(_)) if is_blank(&self.record) => {}
                Ok(Some(line)) => return Some(self.convert(line)),
                Err(e) => {
                    self.done = matches!(e.kind(), csv::ErrorKind::Io(_));
                    return Some(Err(csv_error(&self.file, e, self.reader.line)));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::spool::Spool;

    /// (line, first cell) of every record after the header.
    fn lines(text: &[u8]) -> Vec<(u64, String)> {
        let source = Source::Spooled(Arc::new(Spool::copy_from(text).unwrap()));
        let (layout, names) = inspect(&source, "t", InputFormat::Csv).unwrap();
        DelimitedRecords::new(&source, layout, names, false, "t".into())
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.line, r.values[0].clone())
            })
            .collect()
    }

    #[test]
    fn lines_are_exact_for_every_line_end_style() {
        let expected = vec![(2, "a".to_string()), (3, "b".to_string()), (5, "c".to_string())];
        assert_eq!(lines(b"h\na\nb\n\nc\n"), expected);
        assert_eq!(lines(b"h\r\na\r\nb\r\n\r\nc\r\n"), expected);
        assert_eq!(lines(b"h\ra\rb\r\rc"), vec![(1, "a".into()), (1, "b".into()), (1, "c".into())]);
        assert_eq!(lines(b"\n\nh\na"), vec![(4, "a".to_string())]);
        assert_eq!(
            lines(b"h\n\"x\ny\"\n\"\r\nq\"\nz"),
            vec![(2, "x\ny".into()), (4, "\r\nq".into()), (6, "z".into())]
        );
    }

    #[test]
    fn line_numbers_stay_exact_past_the_compaction_threshold() {
        let mut text = b"h\r\n".to_vec();
        for i in 0..30_000 {
            text.extend_from_slice(format!("\"row\n{i}\"\r\n\r\n").as_bytes());
        }
        let got = lines(&text);
        assert_eq!(got.len(), 30_000);
        for (i, (line, value)) in got.iter().enumerate() {
            assert_eq!(*line, 2 + 3 * i as u64);
            assert_eq!(value, &format!("row\n{i}"));
        }
    }
}
