//! The CSV results writer: one header row, then one record per row, in the
//! dialect it is given (the input's delimiter, line end and BOM; by default
//! [`Dialect::COMMA`]: comma-delimited, `\n` line ends, UTF-8 without BOM),
//! RFC 4180 quoting, every cell formula-neutralised
//! ([`crate::results::cell`]).

use std::borrow::Cow;
use std::io::{self, Write};

use super::{ResultSink, width_mismatch};
use crate::results::cell::neutralize;
use crate::results::dialect::Dialect;
use crate::results::{RUNNER_COLUMNS, ResultRow};

/// A [`ResultSink`] writing CSV.
struct CsvSink<W: Write> {
    /// The formatter; it buffers and quotes.
    writer: csv::Writer<W>,
    /// How many user columns each row must carry.
    user_width: usize,
    /// An error from writing the header in [`csv_sink`], which cannot return
    /// one; reported by the next call instead of being lost.
    pending: Option<io::Error>,
}

/// A CSV sink over `w` in `dialect`. The BOM (when the dialect has one) and
/// the header (user columns, then [`RUNNER_COLUMNS`]) are written and
/// flushed at once, so even a run that finishes no row leaves a valid
/// results file; a failure doing so is returned by the first `write_row` or
/// `flush`.
pub fn csv_sink<W: Write + Send + 'static>(
    mut w: W,
    dialect: Dialect,
    user_columns: &[String],
) -> Box<dyn ResultSink> {
    let bom = w.write_all(dialect.bom_bytes());
    let writer = dialect.writer(w);
    let mut sink = CsvSink { writer, user_width: user_columns.len(), pending: None };
    let header = user_columns
        .iter()
        .map(|c| cell_bytes(c))
        .chain(RUNNER_COLUMNS.iter().map(|c| cell_bytes(c)));
    let written = bom
        .and_then(|()| sink.writer.write_record(header).map_err(csv_to_io))
        .and_then(|()| sink.writer.flush());
    sink.pending = written.err();
    Box::new(sink)
}

impl<W: Write + Send> ResultSink for CsvSink<W> {
    fn write_row(&mut self, user: &[String], row: &ResultRow) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if user.len() != self.user_width {
            return Err(width_mismatch(self.user_width, user.len()));
        }
        let runner = row.to_fields();
        let cells = user.iter().map(|c| cell_bytes(c)).chain(runner.iter().map(|c| cell_bytes(c)));
        self.writer.write_record(cells).map_err(csv_to_io)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        self.writer.flush()
    }
}

/// A cell neutralised for spreadsheets, as the bytes the csv writer takes.
fn cell_bytes(cell: &str) -> Cow<'_, [u8]> {
    match neutralize(cell) {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    }
}

/// Unwraps the I/O error inside a csv error (the only kind a writer with
/// `flexible` off and no serde can produce besides length mismatches).
fn csv_to_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::SharedBuf;
    use super::*;
    use crate::results::Status;

    #[test]
    fn header_is_written_at_once_and_rows_are_quoted_and_neutralised() {
        let buf = SharedBuf::default();
        let mut sink = csv_sink(buf.clone(), Dialect::COMMA, &["owner".into(), "=note".into()]);
        assert_eq!(
            buf.text(),
            "owner,'=note,line,machine_id,action,status,action_id,action_status,http_status,\
             error_code,error_message,attempts,requested_at,finished_at,tag_result\n"
        );
        let row = ResultRow {
            line: 2,
            machine_id: "ab".repeat(20),
            action: "isolate".into(),
            status: Some(Status::Submitted),
            action_id: "5382f7ea-7557-4ab7-9782-d50480024a4e".into(),
            action_status: "Pending".into(),
            http_status: Some(201),
            attempts: 1,
            error_message: "-x".into(),
            ..ResultRow::default()
        };
        sink.write_row(&["Ann, \"SOC\"".into(), "line1\r\nline2".into()], &row).unwrap();
        sink.flush().unwrap();
        let text = buf.text();
        let body = text.split_once('\n').unwrap().1;
        assert_eq!(
            body,
            format!(
                "\"Ann, \"\"SOC\"\"\",\"line1\r\nline2\",2,{},isolate,submitted,\
                 5382f7ea-7557-4ab7-9782-d50480024a4e,Pending,201,,'-x,1,,,\n",
                "ab".repeat(20)
            )
        );
        assert!(!text.starts_with('\u{feff}'));
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused() {
        let mut sink = csv_sink(SharedBuf::default(), Dialect::COMMA, &["a".into()]);
        let e = sink.write_row(&[], &ResultRow::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// A writer that always fails, to check the header error is not lost.
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    #[test]
    fn a_header_that_cannot_be_written_is_reported_by_the_next_call() {
        let mut sink = csv_sink(Broken, Dialect::COMMA, &[]);
        let e = sink.flush().unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
