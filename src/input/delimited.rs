//! CSV and TSV reading, in the dialect of [`crate::results::dialect`].
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
//! Line numbers are physical and exact, whatever the line ends (`\n`,
//! `\r\n`, a lone `\r` as Excel's "CSV (Macintosh)" writes, or a mix): the
//! parser's own position is taken before the line ends and blank lines it
//! skips at the start of a record, so the bytes it consumes are counted here
//! instead ([`Tap`]).
//!
//! A quote that opens a field and never closes would make the parser take
//! the rest of the file into that one cell, silently. The bytes are scanned
//! for quoting as they are read, and a quoted field is refused
//! ([`InputError::UnclosedQuote`], naming the line of the opening quote) when
//! the file ends inside it, or when it is still open after
//! [`MAX_QUOTED_BREAKS`] line breaks or [`MAX_QUOTED_BYTES`] bytes: Excel's
//! own limits for one cell (253 line feeds, 32,767 characters), so no
//! spreadsheet export reaches them, and a runaway is caught within a few
//! hundred lines instead of at the end of the file.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::error::{InputError, MAX_QUOTED_BREAKS, MAX_QUOTED_BYTES, Unclosed};
use super::format::InputFormat;
use super::plan::RowProblem;
use super::record::Record;
use super::spool::Source;
use crate::results::cell::restore_owned;
use crate::results::dialect::{Dialect, skip_bom};

/// How to read a delimited file, found by [`inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The dialect (its delimiter sniffed, or a tab for TSV).
    pub(crate) dialect: Dialect,
    /// Byte offset of the header (past the BOM, if any).
    pub(crate) start: u64,
}

/// Where the quote scan is within a record; the same states as the `csv`
/// parser's for RFC 4180 quoting with `""` escapes and no escape character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    /// At the start of a field: a `"` here opens a quoted field.
    StartField,
    /// In an unquoted field (a `"` there is an ordinary character).
    InField,
    /// In a quoted field.
    InQuoted,
    /// Just after a `"` in a quoted field: `""` is a literal quote, anything
    /// else closes the field.
    AfterQuote,
}

/// A quoted field that never closes, found by [`QuoteScan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Runaway {
    /// Physical line of the opening quote.
    line: u64,
    /// Index of the field in its record.
    field: usize,
    /// What gave it away.
    kind: Unclosed,
}

/// Follows the quoting of the raw bytes as they are read, ahead of the
/// parser, to catch a quote that is never closed: the parser would take the
/// rest of the file into that one field and say nothing.
#[derive(Debug)]
struct QuoteScan {
    /// The field delimiter.
    delimiter: u8,
    /// Where the scan is.
    state: QuoteState,
    /// Physical line of the next byte (1-based).
    line: u64,
    /// The last byte was `\r` (so a `\n` now ends no further line).
    after_cr: bool,
    /// Index of the current field in its record.
    field: usize,
    /// Line of the opening quote of the current quoted field.
    open_line: u64,
    /// Line breaks so far in the current quoted field.
    breaks: u64,
    /// Bytes so far in the current quoted field.
    bytes: u64,
}

impl QuoteScan {
    fn new(delimiter: u8) -> QuoteScan {
        QuoteScan {
            delimiter,
            state: QuoteState::StartField,
            line: 1,
            after_cr: false,
            field: 0,
            open_line: 0,
            breaks: 0,
            bytes: 0,
        }
    }

    /// Scans the next bytes of the stream; returns the index of the byte at
    /// which a quoted field went over a bound, if one did.
    fn feed(&mut self, bytes: &[u8]) -> Option<(usize, Runaway)> {
        for (i, &b) in bytes.iter().enumerate() {
            let line_end = b == b'\r' || (b == b'\n' && !self.after_cr);
            let terminator = matches!(b, b'\r' | b'\n');
            self.state = match self.state {
                QuoteState::InQuoted if b == b'"' => QuoteState::AfterQuote,
                QuoteState::InQuoted => {
                    self.bytes += 1;
                    self.breaks += u64::from(line_end);
                    let kind = if self.breaks > MAX_QUOTED_BREAKS {
                        Some(Unclosed::TooManyLines)
                    } else if self.bytes > MAX_QUOTED_BYTES {
                        Some(Unclosed::TooLong)
                    } else {
                        None
                    };
                    if let Some(kind) = kind {
                        return Some((i, self.runaway(kind)));
                    }
                    QuoteState::InQuoted
                }
                QuoteState::AfterQuote if b == b'"' => {
                    self.bytes += 1;
                    QuoteState::InQuoted
                }
                QuoteState::StartField if b == b'"' => {
                    self.open_line = self.line;
                    self.breaks = 0;
                    self.bytes = 0;
                    QuoteState::InQuoted
                }
                _ if b == self.delimiter => {
                    self.field += 1;
                    QuoteState::StartField
                }
                _ if terminator => {
                    self.field = 0;
                    QuoteState::StartField
                }
                _ => QuoteState::InField,
            };
            self.line += u64::from(line_end);
            self.after_cr = b == b'\r';
        }
        None
    }

    /// The stream has ended: a quoted field still open is a runaway.
    fn end(&self) -> Option<Runaway> {
        (self.state == QuoteState::InQuoted).then(|| self.runaway(Unclosed::AtEndOfFile))
    }

    fn runaway(&self, kind: Unclosed) -> Runaway {
        Runaway { line: self.open_line, field: self.field, kind }
    }
}

/// The file under the parser. It keeps the bytes the parser has read but
/// that are not yet accounted for, so the lines of each record can be
/// counted once the parser says where the record ended, and it refuses to
/// feed the parser past a quoted field that never closes.
struct Tap {
    /// The file, read in the parser's buffer-sized chunks.
    file: File,
    /// Bytes read from the file; `pending[start..]` are not accounted for.
    pending: Vec<u8>,
    /// Index of the first byte not accounted for.
    start: usize,
    /// The last byte accounted for was `\r`: a `\n` right after it is part
    /// of the same line end.
    after_cr: bool,
    /// The quoting of the bytes read so far.
    scan: QuoteScan,
    /// The runaway quoted field found, once found: every read fails after it.
    runaway: Option<Runaway>,
}

impl Read for Tap {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.runaway.is_some() {
            return Err(runaway_io_error());
        }
        let n = self.file.read(out)?;
        if n == 0 {
            // At the end the parser would close the open field itself and
            // return it as a complete record.
            self.runaway = self.scan.end();
            return if self.runaway.is_some() { Err(runaway_io_error()) } else { Ok(0) };
        }
        let n = match self.scan.feed(&out[..n]) {
            // The parser gets the bytes before the bound (the records before
            // the runaway field come out complete), then the error. It is
            // inside a quoted field, so it cannot end a record without
            // reading again.
            Some((at, runaway)) => {
                self.runaway = Some(runaway);
                if at == 0 {
                    return Err(runaway_io_error());
                }
                at
            }
            None => n,
        };
        self.pending.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

/// The I/O error a [`Tap`] fails with after a runaway quoted field; the
/// runaway itself is read back from the tap.
fn runaway_io_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "a quoted field is never closed")
}

impl Tap {
    /// Accounts for the next `len` bytes the parser consumed: returns the
    /// line ends before the first byte that is not `\r` or `\n` (what the
    /// parser skips before a record), and the line ends in all of them. A
    /// line end is `\n`, `\r\n` or a lone `\r` (old Mac and Excel's "CSV
    /// (Macintosh)"), also when a `\r\n` is split between two records.
    fn account(&mut self, len: usize) -> (u64, u64) {
        let end = (self.start + len).min(self.pending.len());
        let (mut lead, mut total, mut leading) = (0u64, 0u64, true);
        for &b in &self.pending[self.start..end] {
            let line_end = b == b'\r' || (b == b'\n' && !self.after_cr);
            self.after_cr = b == b'\r';
            total += u64::from(line_end);
            leading &= matches!(b, b'\r' | b'\n');
            lead += u64::from(line_end && leading);
        }
        self.start = end;
        // Compact once the accounted prefix dominates: amortised O(1) a byte.
        if self.start >= 64 * 1024 && self.start * 2 >= self.pending.len() {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        (lead, total)
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
        let tap = Tap {
            file,
            pending: Vec::with_capacity(128 * 1024),
            start: 0,
            after_cr: false,
            scan: QuoteScan::new(layout.dialect.delimiter()),
            runaway: None,
        };
        let reader = layout.dialect.reader().buffer_capacity(64 * 1024).from_reader(tap);
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

    /// A parser error as an [`InputError`]; `names` name the fields for a
    /// runaway quoted field (`#n` past them, or for the header itself).
    fn error(&self, e: csv::Error, file: &str, names: &[String]) -> InputError {
        match self.reader.get_ref().runaway {
            Some(r) => InputError::UnclosedQuote {
                file: file.to_string(),
                line: r.line,
                column: names.get(r.field).cloned().unwrap_or_else(|| format!("#{}", r.field + 1)),
                kind: r.kind,
            },
            None => csv_error(file, e, self.line),
        }
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
            match self.read(record).map_err(|e| self.error(e, file, &[]))? {
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
    let sniffed = Dialect::sniff(&mut r).map_err(io_err)?;
    let dialect = match format {
        InputFormat::Tsv => sniffed.with_delimiter(Dialect::TAB.delimiter()),
        _ => sniffed,
    };
    let layout = Layout { dialect, start };
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
                    return Some(Err(self.reader.error(e, &self.file, &self.names)));
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

    /// Every item of a pass after the header: (line, first cell) or the error.
    fn items(text: &[u8]) -> Vec<Result<(u64, String), InputError>> {
        let source = Source::Spooled(Arc::new(Spool::copy_from(text).unwrap()));
        let (layout, names) = inspect(&source, "t.csv", InputFormat::Csv).unwrap();
        DelimitedRecords::new(&source, layout, names, false, "t.csv".into())
            .unwrap()
            .map(|r| r.map(|r| (r.line, r.values[0].clone())))
            .collect()
    }

    #[test]
    fn a_quote_left_open_to_the_end_of_the_file_is_an_error_at_its_line() {
        for text in [
            &b"hostname,note\nh1,ok\nh2,\"oops\nh3,x\nh4,y\n"[..],
            b"hostname,note\r\nh1,ok\r\nh2,\"oops\r\nh3,x\r\nh4,y",
            b"hostname,note\rh1,ok\rh2,\"oops\rh3,x\rh4,y\r",
            // `""` inside is a literal quote, not the end of the field.
            b"hostname,note\nh1,ok\nh2,\"say \"\"hi\"\"\nh3,x\n",
        ] {
            let got = items(text);
            assert_eq!(got.len(), 2, "{got:?}");
            assert_eq!(got[0].as_ref().unwrap(), &(2, "h1".to_string()));
            let e = got[1].as_ref().unwrap_err();
            assert!(
                matches!(e, InputError::UnclosedQuote { line: 3, kind: Unclosed::AtEndOfFile, .. }),
                "{e:?}"
            );
            assert!(
                e.to_string().starts_with(
                    "t.csv: line 3, column note: a quote opens a field here and is never closed"
                ),
                "{e}"
            );
        }
        // In the first column, past the header's width, and in the header.
        let e = items(b"h\n\"a\n").remove(0).unwrap_err();
        assert!(e.to_string().starts_with("t.csv: line 2, column h: "), "{e}");
        let e = items(b"h\nx,\"a\n").remove(0).unwrap_err();
        assert!(e.to_string().starts_with("t.csv: line 2, column #2: "), "{e}");
        let source =
            Source::Spooled(Arc::new(Spool::copy_from(&b"\n\nhost,\"note\nh,x\n"[..]).unwrap()));
        let e = inspect(&source, "t.csv", InputFormat::Csv).unwrap_err();
        assert!(e.to_string().starts_with("t.csv: line 3, column #2: a quote opens"), "{e}");
    }

    #[test]
    fn quotes_that_close_and_quotes_inside_unquoted_fields_are_fine() {
        assert_eq!(
            items(b"h,n\n\"a\"\"b\",x\nab\"c,\"\"\n\"q\"tail,\"\"\"\"\n")
                .into_iter()
                .map(Result::unwrap)
                .collect::<Vec<_>>(),
            vec![(2, "a\"b".into()), (3, "ab\"c".into()), (4, "qtail".into())]
        );
    }

    #[test]
    fn a_quoted_field_is_bounded_in_lines_and_bytes() {
        let rows_after = "h9,y\n".repeat(400);
        // 253 line breaks in a field is the most a spreadsheet cell holds: fine.
        let most = format!("h,n\nh1,\"{}\"\n{rows_after}", "l\r\n".repeat(253));
        let got = items(most.as_bytes());
        assert!(got.iter().all(Result::is_ok));
        assert_eq!(got.len(), 401);
        assert_eq!(got[1].as_ref().unwrap().0, 2 + 253 + 1);
        // One more, and the quote is taken for a missing one, wherever the
        // file ends (here, the next quote is hundreds of lines further).
        let over = format!("h,n\nh0,ok\nh1,\"{}\"\n{rows_after}h2,\"x\"\n", "l\n".repeat(254));
        let got = items(over.as_bytes());
        assert_eq!(got.len(), 2, "{:?}", got.last());
        let e = got[1].as_ref().unwrap_err();
        assert!(
            matches!(e, InputError::UnclosedQuote { line: 3, kind: Unclosed::TooManyLines, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("still open 253 line breaks later"), "{e}");
        // Bytes: a 128 KiB field passes, one byte more does not.
        let fits = format!("h,n\nh1,\"{}\"\nh2,x\n", "b".repeat(MAX_QUOTED_BYTES as usize));
        assert!(items(fits.as_bytes()).iter().all(Result::is_ok));
        let long = format!("h,n\nh1,\"{}\"\nh2,x\n", "b".repeat(MAX_QUOTED_BYTES as usize + 1));
        let got = items(long.as_bytes());
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().unwrap_err();
        assert!(
            matches!(e, InputError::UnclosedQuote { line: 2, kind: Unclosed::TooLong, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("still open 128 KiB later"), "{e}");
    }

    #[test]
    fn lines_are_exact_for_every_line_end_style() {
        let expected = vec![(2, "a".to_string()), (3, "b".to_string()), (5, "c".to_string())];
        assert_eq!(lines(b"h\na\nb\n\nc\n"), expected);
        assert_eq!(lines(b"h\r\na\r\nb\r\n\r\nc\r\n"), expected);
        assert_eq!(lines(b"h\ra\rb\r\rc"), expected);
        assert_eq!(lines(b"h\ra\rb\r\rc\r"), expected);
        // Mixed, as files edited on several systems end up.
        assert_eq!(lines(b"h\r\na\rb\n\r\nc"), expected);
        assert_eq!(lines(b"h\na\r\nb\r\rc\n"), expected);
        assert_eq!(lines(b"\n\nh\na"), vec![(4, "a".to_string())]);
        assert_eq!(
            lines(b"h\n\"x\ny\"\n\"\r\nq\"\nz"),
            vec![(2, "x\ny".into()), (4, "\r\nq".into()), (6, "z".into())]
        );
        // Line ends inside quoted fields count the same way.
        assert_eq!(
            lines(b"h\r\"x\ry\"\r\"\r\nq\r\"\rz"),
            vec![(2, "x\ry".into()), (4, "\r\nq\r".into()), (7, "z".into())]
        );
        assert_eq!(lines(b"\r\rh\ra"), vec![(4, "a".to_string())]);
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
