//! The workbook results writer (`NAME.results.xlsx`), with rust_xlsxwriter:
//! one sheet, `Results`, whose first row is the header (bold, frozen, with
//! an autofilter), the user's columns first, then the runner's
//! ([`RUNNER_COLUMNS`]), in the order the CSV results have them.
//!
//! Every cell is written as text except `line`, `http_status` and
//! `attempts`, which are numbers (a responder sorts and filters on them).
//! Ids, names and the user's own cells stay text whatever they look like: a
//! machine id of digits, a ticket `00123` or a 16-digit number would
//! otherwise become a float and lose digits or zeros. No formula
//! neutralisation is needed: a text cell is never evaluated, so `=cmd` is
//! written and read back as it is.
//!
//! One character cannot be kept: U+FFFE and U+FFFF are not allowed in XML
//! at all (Excel itself cannot store them), so they are written as U+FFFD,
//! the replacement character. Every other character, control characters
//! included, reads back exactly.
//!
//! A workbook is a zip written in one piece: it cannot be appended to row by
//! row like a CSV file. The rows accumulate in the worksheet in memory (a
//! few hundred bytes a row) and the file is written by
//! [`ResultSink::finish`], at the end of the run or of a rewrite. The run's
//! journal, written and made durable before a row counts as done, is what
//! survives a crash: `--resume` writes the whole workbook again from it.

use std::io::{self, Write};

use rust_xlsxwriter::{ColNum, Format, RowNum, Workbook, Worksheet, XlsxError};

use super::{ResultSink, width_mismatch};
use crate::results::{RUNNER_COLUMNS, ResultRow};

/// The name of the one sheet of a results workbook.
pub(crate) const SHEET_NAME: &str = "Results";

/// Rows a sheet holds at most, the header included (Excel's limit).
const MAX_ROWS: u64 = 1_048_576;

/// A [`ResultSink`] writing a workbook.
struct XlsxSink<W: Write> {
    /// Where the workbook goes once finished; `None` after that.
    out: Option<W>,
    /// The sheet, filled row by row.
    sheet: Worksheet,
    /// How many user columns each row must carry.
    user_width: usize,
    /// The next sheet row to write (0 is the header).
    next: RowNum,
    /// An error from writing the header, which [`xlsx_sink`] cannot return;
    /// reported by the next call instead of being lost.
    pending: Option<io::Error>,
}

/// A workbook sink over `w`. The header is laid out at once; nothing
/// reaches `w` before [`ResultSink::finish`].
pub fn xlsx_sink<W: Write + Send + 'static>(w: W, user_columns: &[String]) -> Box<dyn ResultSink> {
    let mut sheet = Worksheet::new();
    let bold = Format::new().set_bold();
    let header = user_columns.iter().map(String::as_str).chain(RUNNER_COLUMNS);
    let written = (|| {
        sheet.set_name(SHEET_NAME)?;
        for (col, name) in header.enumerate() {
            sheet.write_string_with_format(0, column(col)?, xml_text(name), &bold)?;
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok::<(), XlsxError>(())
    })();
    Box::new(XlsxSink {
        out: Some(w),
        sheet,
        user_width: user_columns.len(),
        next: 1,
        pending: written.err().map(xlsx_to_io),
    })
}

/// A column index as the sheet numbers them; past Excel's 16,384 columns it
/// is an error.
fn column(index: usize) -> Result<ColNum, XlsxError> {
    ColNum::try_from(index).map_err(|_| XlsxError::RowColumnLimitError)
}

/// A workbook error as the I/O error the sinks report, saying what to do
/// when it is one of the sheet's limits.
fn xlsx_to_io(e: XlsxError) -> io::Error {
    match e {
        XlsxError::MaxStringLengthExceeded => io::Error::other(
            "a cell is longer than the 32,767 characters a workbook cell holds; write the results as CSV (-o NAME.results.csv)",
        ),
        XlsxError::RowColumnLimitError => io::Error::other(
            "more rows or columns than a workbook sheet holds (1,048,576 rows, 16,384 columns); write the results as CSV (-o NAME.results.csv)",
        ),
        XlsxError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// `s` with the two characters XML cannot hold (U+FFFE, U+FFFF) replaced
/// by U+FFFD; anything else is kept.
pub(crate) fn xml_text(s: &str) -> String {
    s.replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}")
}

impl<W: Write + Send> XlsxSink<W> {
    /// Writes one row's cells at the next sheet row.
    fn put(&mut self, user: &[String], row: &ResultRow) -> Result<(), XlsxError> {
        if u64::from(self.next) >= MAX_ROWS {
            return Err(XlsxError::RowColumnLimitError);
        }
        let r = self.next;
        for (col, value) in user.iter().enumerate() {
            self.sheet.write_string(r, column(col)?, xml_text(value))?;
        }
        let numbers = [
            ("line", Some(row.line as f64)),
            ("http_status", row.http_status.map(f64::from)),
            ("attempts", Some(f64::from(row.attempts))),
        ];
        for (i, (name, text)) in RUNNER_COLUMNS.iter().zip(row.to_fields()).enumerate() {
            let col = column(user.len() + i)?;
            match numbers.iter().find(|(n, _)| n == name) {
                Some((_, Some(n))) => self.sheet.write_number(r, col, *n)?,
                // An empty number (no HTTP answer) is an empty cell.
                Some((_, None)) => continue,
                None if text.is_empty() => continue,
                None => self.sheet.write_string(r, col, xml_text(&text))?,
            };
        }
        self.next += 1;
        Ok(())
    }
}

impl<W: Write + Send> ResultSink for XlsxSink<W> {
    fn write_row(&mut self, user: &[String], row: &ResultRow) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if self.out.is_none() {
            return Err(io::Error::other("the results workbook is already written"));
        }
        if user.len() != self.user_width {
            return Err(width_mismatch(self.user_width, user.len()));
        }
        self.put(user, row).map_err(xlsx_to_io)
    }

    /// Nothing to push: a workbook is written whole by [`ResultSink::finish`].
    fn flush(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let Some(mut out) = self.out.take() else { return Ok(()) };
        let width = self.user_width + RUNNER_COLUMNS.len();
        let last_col = column(width.saturating_sub(1)).map_err(xlsx_to_io)?;
        self.sheet.autofilter(0, 0, self.next - 1, last_col).map_err(xlsx_to_io)?;
        let mut book = Workbook::new();
        book.push_worksheet(std::mem::replace(&mut self.sheet, Worksheet::new()));
        let bytes = book.save_to_buffer().map_err(xlsx_to_io)?;
        out.write_all(&bytes)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::SharedBuf;
    use super::*;
    use crate::results::{Status, Timestamp};
    use calamine::{Data, Reader};

    fn read_back(bytes: Vec<u8>) -> (String, Vec<Vec<Data>>) {
        let mut book = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes)).unwrap();
        let name = book.sheet_names()[0].clone();
        let range = book.worksheet_range(&name).unwrap();
        (name, range.rows().map(|r| r.to_vec()).collect())
    }

    #[test]
    fn nothing_is_written_before_finish_and_cells_keep_their_types() {
        let buf = SharedBuf::default();
        let mut sink = xlsx_sink(buf.clone(), &["owner".into(), "ticket".into()]);
        let row = ResultRow {
            line: 2,
            machine_id: "1".repeat(40),
            device_name: "host-1.contoso.test".into(),
            action: "isolate".into(),
            status: Some(Status::Submitted),
            http_status: Some(201),
            attempts: 1,
            requested_at: Timestamp::parse("2024-05-01T08:00:00.0000000Z"),
            ..ResultRow::default()
        };
        sink.write_row(&["=cmd|' /C calc'!A0".into(), "00123".into()], &row).unwrap();
        sink.flush().unwrap();
        assert!(buf.0.lock().unwrap().is_empty(), "a workbook is written whole at the end");
        sink.finish().unwrap();
        sink.finish().unwrap();
        assert!(sink.write_row(&["a".into(), "b".into()], &row).is_err());
        let (name, rows) = read_back(buf.0.lock().unwrap().clone());
        assert_eq!(name, SHEET_NAME);
        let header: Vec<String> = rows[0].iter().map(|c| c.to_string()).collect();
        let want: Vec<&str> = ["owner", "ticket"].into_iter().chain(RUNNER_COLUMNS).collect();
        assert_eq!(header, want);
        let cells = &rows[1];
        assert_eq!(cells[0], Data::String("=cmd|' /C calc'!A0".into()));
        assert_eq!(cells[1], Data::String("00123".into()));
        assert_eq!(cells[2], Data::Float(2.0), "line is a number");
        assert_eq!(cells[3], Data::String("1".repeat(40)), "an id of digits stays text");
        assert_eq!(cells[4], Data::String("host-1.contoso.test".into()));
        let at = |c: &str| 2 + RUNNER_COLUMNS.iter().position(|r| *r == c).unwrap();
        assert_eq!(cells[at("http_status")], Data::Float(201.0));
        assert_eq!(cells[at("error_code")], Data::Empty);
        assert_eq!(cells[at("requested_at")], Data::String("2024-05-01T08:00:00.0000000Z".into()));
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused_and_an_oversized_cell_says_what_to_do() {
        let mut sink = xlsx_sink(SharedBuf::default(), &["a".into()]);
        let e = sink.write_row(&[], &ResultRow::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = sink.write_row(&["x".repeat(40_000)], &ResultRow::default()).unwrap_err();
        assert!(e.to_string().contains("32,767 characters"), "{e}");
        assert!(e.to_string().contains("-o NAME.results.csv"), "{e}");
    }
}
