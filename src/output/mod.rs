//! Results files written: one row per input row, the user's columns
//! followed by the runner's ([`crate::results::RUNNER_COLUMNS`]). The rows themselves live
//! on the ground floor ([`crate::results`]); this room only writes them.
//!
//! - [`csv`] and [`jsonl`]: the two writers behind [`ResultSink`].

pub(crate) mod csv;
pub(crate) mod jsonl;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use crate::results::ResultRow;
use crate::results::dialect::Dialect;

pub use self::csv::csv_sink;
pub use self::jsonl::jsonl_sink;

/// The format of a results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// Comma-separated, header row, RFC 4180 quoting, formulas neutralised:
    /// what a responder opens in a spreadsheet.
    Csv,
    /// One JSON object per line: what a script or a log pipeline reads.
    Jsonl,
}

impl ResultFormat {
    /// The format a results path asks for: `.jsonl`, `.ndjson` and
    /// `.json-lines` (any case) give JSONL; anything else, including `-` for
    /// stdout, gives CSV.
    pub fn for_path(path: &Path) -> ResultFormat {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json-lines" => ResultFormat::Jsonl,
            _ => ResultFormat::Csv,
        }
    }

    /// The usual file extension of the format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ResultFormat::Csv => "csv",
            ResultFormat::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for ResultFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// Where finished rows go. The runner writes rows in input order as they
/// finish; the sink only formats them.
pub trait ResultSink: Send {
    /// Writes one row: `user` holds the user's columns, aligned with the
    /// `user_columns` the sink was made with; `row` is the runner's half.
    /// A `user` slice of another length is refused with
    /// [`io::ErrorKind::InvalidInput`] rather than shifting columns.
    fn write_row(&mut self, user: &[String], row: &ResultRow) -> io::Result<()>;

    /// Pushes everything written so far to the underlying writer.
    fn flush(&mut self) -> io::Result<()>;
}

/// A sink of the given format over `w` (see [`csv_sink`] and [`jsonl_sink`]),
/// CSV in the default dialect ([`Dialect::COMMA`]).
pub fn sink<W: Write + Send + 'static>(
    format: ResultFormat,
    w: W,
    user_columns: &[String],
) -> Box<dyn ResultSink> {
    sink_in(format, Dialect::COMMA, w, user_columns)
}

/// A sink of the given format over `w`; a CSV one writes `dialect` (the
/// input's delimiter, line end and BOM), a JSONL one has no dialect.
pub fn sink_in<W: Write + Send + 'static>(
    format: ResultFormat,
    dialect: Dialect,
    w: W,
    user_columns: &[String],
) -> Box<dyn ResultSink> {
    match format {
        ResultFormat::Csv => csv_sink(w, dialect, user_columns),
        ResultFormat::Jsonl => jsonl_sink(w, user_columns),
    }
}

/// The error both sinks return for a `user` slice that does not match the
/// header: a caller bug, reported instead of writing a shifted row.
fn width_mismatch(expected: usize, got: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "result row has {got} user values but the results file has {expected} user columns"
        ),
    )
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A writer whose bytes the test can read after handing it to a sink.

    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    /// A cloneable in-memory writer.
    #[derive(Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        /// Everything written so far, as text.
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::SharedBuf;
    use super::*;
    use crate::api::action::ActionKind;
    use crate::input::{Input, InputFormat, RowDefaults, Target, plan_row};
    use crate::results::{RUNNER_COLUMNS, Status, parse_result_row};

    #[test]
    fn format_follows_the_extension() {
        for (p, f) in [
            ("out.jsonl", ResultFormat::Jsonl),
            ("OUT.NDJSON", ResultFormat::Jsonl),
            ("a.json-lines", ResultFormat::Jsonl),
            ("a.csv", ResultFormat::Csv),
            ("a.results.csv", ResultFormat::Csv),
            ("-", ResultFormat::Csv),
            ("noext", ResultFormat::Csv),
        ] {
            assert_eq!(ResultFormat::for_path(Path::new(p)), f, "{p}");
        }
    }

    /// Cells that stress every layer: delimiters, quotes, newlines of both
    /// kinds, formula triggers, the guard itself, non-ASCII text and emoji.
    fn nasty_cells() -> Vec<String> {
        [
            "plain",
            "comma, inside",
            "semi;colon",
            "say \"hi\"",
            "two\nlines",
            "crlf\r\nline",
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "'already quoted",
            "''double",
            "\ttabbed",
            "\rcarriage",
            "Zürich – 東京 – Ωmega",
            "🔥 incident 🚨",
            "",
            " spaced ",
            "trailing'",
            "\"",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn sample_row(line: u64) -> ResultRow {
        ResultRow {
            line,
            machine_id: "1e5bc9d7e413ddd7902c2932e418702b84d0cc07".into(),
            action: "isolate".into(),
            status: Some(Status::Rejected),
            action_id: String::new(),
            action_status: String::new(),
            http_status: Some(400),
            error_code: "InvalidRequestBody".into(),
            error_message: "-bad, \"body\"\nsecond line".into(),
            attempts: 1,
            requested_at: crate::results::Timestamp::parse("2024-05-01T08:00:00.0000000Z"),
            finished_at: crate::results::Timestamp::parse("2024-05-01T08:00:01.1234567Z"),
            tag_result: String::new(),
        }
    }

    /// A time is written as exactly the service's text and none as an empty
    /// cell, in both formats: the bytes the string fields used to carry.
    #[test]
    fn times_are_written_as_their_text_and_none_as_empty() {
        let row = ResultRow { finished_at: None, ..sample_row(2) };
        let buf = SharedBuf::default();
        let mut csv = sink(ResultFormat::Csv, buf.clone(), &[]);
        csv.write_row(&[], &row).unwrap();
        csv.flush().unwrap();
        assert!(buf.text().ends_with(",1,2024-05-01T08:00:00.0000000Z,,\n"), "{}", buf.text());
        let buf = SharedBuf::default();
        let mut jsonl = sink(ResultFormat::Jsonl, buf.clone(), &[]);
        jsonl.write_row(&[], &sample_row(2)).unwrap();
        jsonl.write_row(&[], &row).unwrap();
        jsonl.flush().unwrap();
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(
                r#""requested_at":"2024-05-01T08:00:00.0000000Z","finished_at":"2024-05-01T08:00:01.1234567Z","tag_result":""}"#
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(
                r#""requested_at":"2024-05-01T08:00:00.0000000Z","finished_at":"","tag_result":""}"#
            ),
            "{}",
            lines[1]
        );
    }

    /// Writes one input (given as text) through a sink of `format`, reads the
    /// results back, and checks user columns and runner fields survive.
    fn round_trip(input_text: &str, input_format: InputFormat, out: ResultFormat) {
        let input =
            Input::from_reader(input_text.as_bytes(), Some(input_format)).expect("input opens");
        let user_columns = input.columns().user_columns().to_vec();
        let buf = SharedBuf::default();
        let mut sink = sink(out, buf.clone(), &user_columns);
        let mut originals = Vec::new();
        for rec in input.records().unwrap() {
            let rec = rec.unwrap();
            let user = input.columns().user_values(&rec.values);
            let row = sample_row(rec.line);
            sink.write_row(&user, &row).unwrap();
            originals.push((user, row));
        }
        sink.flush().unwrap();
        assert!(!originals.is_empty());

        let back_format = match out {
            ResultFormat::Csv => InputFormat::Csv,
            ResultFormat::Jsonl => InputFormat::Jsonl,
        };
        let text = buf.text();
        let back = Input::from_reader(text.as_bytes(), Some(back_format)).expect("results open");
        assert!(back.is_results_file());
        assert_eq!(back.columns().user_columns(), &user_columns[..]);
        let defaults = RowDefaults { comment: Some("replay".into()), ..RowDefaults::default() };
        let mut n = 0;
        for (rec, (user, row)) in back.records().unwrap().zip(&originals) {
            let rec = rec.unwrap();
            assert_eq!(&back.columns().user_values(&rec.values), user);
            let names = back.columns().names();
            let parsed =
                parse_result_row(names.iter().zip(rec.values.iter())).expect("runner fields parse");
            assert_eq!(&parsed, row);
            // Replaying the results file plans the same device and action,
            // with the earlier outcome attached.
            let plan = plan_row(&rec, back.columns(), &defaults).expect("replayed row plans");
            assert_eq!(plan.target, Target::Id(row.machine_id.clone()));
            assert_eq!(plan.action, ActionKind::Isolate);
            assert_eq!(plan.previous_status, Some(Status::Rejected));
            assert_eq!(plan.previous.as_ref(), Some(row));
            n += 1;
        }
        assert_eq!(n, originals.len());
    }

    fn nasty_csv() -> String {
        let cells = nasty_cells();
        let mut w =
            ::csv::WriterBuilder::new().terminator(::csv::Terminator::CRLF).from_writer(vec![]);
        let header: Vec<String> =
            (0..cells.len()).map(|i| format!("col {i}")).chain(["hostname".into()]).collect();
        w.write_record(&header).unwrap();
        for shift in 0..3 {
            let mut rec: Vec<String> =
                cells.iter().cycle().skip(shift).take(cells.len()).cloned().collect();
            rec.push(format!("host-{shift}"));
            w.write_record(&rec).unwrap();
        }
        String::from_utf8(w.into_inner().unwrap()).unwrap()
    }

    fn nasty_jsonl() -> String {
        let cells = nasty_cells();
        let mut out = String::new();
        for shift in 0..3 {
            let mut obj = serde_json::Map::new();
            for (i, c) in cells.iter().cycle().skip(shift).take(cells.len()).enumerate() {
                obj.insert(format!("col {i}"), serde_json::Value::String(c.clone()));
            }
            obj.insert("hostname".into(), format!("host-{shift}").into());
            out.push_str(&serde_json::to_string(&obj).unwrap());
            out.push('\n');
        }
        out
    }

    #[test]
    fn csv_user_columns_survive_a_results_round_trip() {
        round_trip(&nasty_csv(), InputFormat::Csv, ResultFormat::Csv);
    }

    #[test]
    fn jsonl_user_columns_survive_a_results_round_trip() {
        round_trip(&nasty_jsonl(), InputFormat::Jsonl, ResultFormat::Jsonl);
    }

    #[test]
    fn csv_input_to_jsonl_results_and_back() {
        round_trip(&nasty_csv(), InputFormat::Csv, ResultFormat::Jsonl);
    }

    #[test]
    fn jsonl_input_to_csv_results_and_back() {
        round_trip(&nasty_jsonl(), InputFormat::Jsonl, ResultFormat::Csv);
    }

    #[test]
    fn a_results_file_replayed_twice_keeps_user_columns_and_runner_columns_once() {
        let first = nasty_csv();
        let input = Input::from_reader(first.as_bytes(), Some(InputFormat::Csv)).unwrap();
        let user_columns = input.columns().user_columns().to_vec();
        let mut text = String::new();
        let mut source = input;
        for _ in 0..2 {
            let buf = SharedBuf::default();
            let mut s = csv_sink(buf.clone(), Dialect::COMMA, &user_columns);
            for rec in source.records().unwrap() {
                let rec = rec.unwrap();
                s.write_row(&source.columns().user_values(&rec.values), &sample_row(rec.line))
                    .unwrap();
            }
            s.flush().unwrap();
            text = buf.text();
            source = Input::from_reader(text.as_bytes(), Some(InputFormat::Csv)).unwrap();
            assert_eq!(source.columns().user_columns(), &user_columns[..]);
            assert_eq!(source.columns().names().len(), user_columns.len() + RUNNER_COLUMNS.len());
        }
        assert!(text.starts_with("col 0,"));
    }
}
