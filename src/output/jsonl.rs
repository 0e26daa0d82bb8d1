//! The JSONL results writer: one JSON object per line, the user's columns as
//! strings in their input order, then the runner's fields, with `line`,
//! `attempts` and `http_status` as numbers (`http_status` null when no answer
//! came). No formula neutralisation: JSON is not opened in spreadsheets.

use std::io::{self, BufWriter, Write};

use super::{ResultSink, width_mismatch};
use crate::results::{RUNNER_COLUMNS, ResultRow, Timestamp};

/// A [`ResultSink`] writing JSON lines.
struct JsonlSink<W: Write> {
    /// The destination, buffered.
    out: BufWriter<W>,
    /// The user's column names, each already encoded as a JSON string.
    keys: Vec<String>,
    /// [`RUNNER_COLUMNS`], encoded the same way.
    runner_keys: Vec<String>,
    /// One line is built here, then written in one go.
    line: Vec<u8>,
}

/// A JSONL sink over `w`. JSONL has no header: each line names its keys.
pub fn jsonl_sink<W: Write + Send + 'static>(w: W, user_columns: &[String]) -> Box<dyn ResultSink> {
    let keys = user_columns.iter().map(|c| json_string(c)).collect();
    let runner_keys = RUNNER_COLUMNS.iter().map(|c| json_string(c)).collect();
    Box::new(JsonlSink { out: BufWriter::new(w), keys, runner_keys, line: Vec::with_capacity(512) })
}

/// Appends `,` (unless the object was just opened), the encoded key and `:`.
fn push_key(line: &mut Vec<u8>, key: &str) {
    if line.last() != Some(&b'{') {
        line.push(b',');
    }
    line.extend_from_slice(key.as_bytes());
    line.push(b':');
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl<W: Write + Send> ResultSink for JsonlSink<W> {
    fn write_row(&mut self, user: &[String], row: &ResultRow) -> io::Result<()> {
        use serde_json::Value;
        if user.len() != self.keys.len() {
            return Err(width_mismatch(self.keys.len(), user.len()));
        }
        let runner: [Value; RUNNER_COLUMNS.len()] = [
            row.line.into(),
            row.machine_id.as_str().into(),
            row.action.as_str().into(),
            row.status.map(|s| s.as_str()).unwrap_or("").into(),
            row.action_id.as_str().into(),
            row.action_status.as_str().into(),
            row.http_status.map_or(Value::Null, Value::from),
            row.error_code.as_str().into(),
            row.error_message.as_str().into(),
            row.attempts.into(),
            Timestamp::text_of(row.requested_at).into(),
            Timestamp::text_of(row.finished_at).into(),
            row.tag_result.as_str().into(),
        ];
        let line = &mut self.line;
        line.clear();
        line.push(b'{');
        for (key, value) in self.keys.iter().zip(user) {
            push_key(line, key);
            serde_json::to_writer(&mut *line, value)?;
        }
        for (key, value) in self.runner_keys.iter().zip(&runner) {
            push_key(line, key);
            serde_json::to_writer(&mut *line, value)?;
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::SharedBuf;
    use super::*;
    use crate::results::Status;

    #[test]
    fn one_object_per_line_with_numbers_and_null() {
        let buf = SharedBuf::default();
        let mut sink = jsonl_sink(buf.clone(), &["ticket".into(), "note \"x\"".into()]);
        let row = ResultRow {
            line: 3,
            machine_id: "ab".repeat(20),
            action: "offboard".into(),
            status: Some(Status::Error),
            error_code: "Timeout".into(),
            error_message: "=no answer\nafter 30s".into(),
            attempts: 5,
            ..ResultRow::default()
        };
        sink.write_row(&["IR-1".into(), "é🔥".into()], &row).unwrap();
        sink.write_row(
            &["IR-2".into(), String::new()],
            &ResultRow { http_status: Some(503), ..row.clone() },
        )
        .unwrap();
        sink.flush().unwrap();
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            format!(
                r#"{{"ticket":"IR-1","note \"x\"":"é🔥","line":3,"machine_id":"{}","action":"offboard","status":"error","action_id":"","action_status":"","http_status":null,"error_code":"Timeout","error_message":"=no answer\nafter 30s","attempts":5,"requested_at":"","finished_at":"","tag_result":""}}"#,
                "ab".repeat(20)
            )
        );
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["http_status"], 503);
        assert_eq!(v["attempts"], 5);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2 + RUNNER_COLUMNS.len());
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused() {
        let mut sink = jsonl_sink(SharedBuf::default(), &[]);
        let e = sink.write_row(&["x".into()], &ResultRow::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
