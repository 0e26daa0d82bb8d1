//! Reading a results file back row by row, and rewriting it in place with
//! per-row changes to the runner's columns (`--wait`, `mdebulk status`).
//!
//! A results file is a valid input, so it is read with [`Input`], whose
//! reader undoes the CSV formula neutralisation; the rows are written again
//! with the same sinks that wrote them, so the user's columns come back byte
//! for byte, and a workbook is rewritten as a workbook. The new file is written beside the old one, made durable, and
//! renamed over it: a reader sees the old file or the new one, never a mix,
//! and a crash leaves the old file whole. A rewrite that changes no row
//! leaves the file untouched.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::input::{Input, InputError, InputFormat, InputSpec, Records};
use crate::output::{ResultFormat, sink_in};
use crate::results::{ResultRow, Status, Timestamp};

/// Why a results file could not be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The file cannot be opened or read as an input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The file lacks the runner's `line` and `status` columns.
    #[error("{file}: not a results file of mdebulk (it has no line and status columns)")]
    NotResults {
        /// The file as named.
        file: String,
    },
    /// A row whose runner columns cannot be read back.
    #[error("{file}, line {line}: {why}")]
    Row {
        /// The file as named.
        file: String,
        /// Physical line of the row in the file.
        line: u64,
        /// What is wrong with it.
        why: String,
    },
    /// Writing the new file or renaming it into place failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One row of a results file: the user's half and the runner's half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsEntry {
    /// The user's columns, aligned with [`ResultsFile::user_columns`].
    pub user: Vec<String>,
    /// The runner's columns.
    pub row: ResultRow,
}

/// A results file opened for reading: its format and columns are known;
/// [`ResultsFile::entries`] reads the rows, any number of times.
#[derive(Debug)]
pub struct ResultsFile {
    /// The reader; a results file is a valid input.
    input: Input,
    /// The format the file is written in.
    format: ResultFormat,
    /// Where it is.
    path: PathBuf,
}

impl ResultsFile {
    /// Opens `path` in the format its name asks for ([`ResultFormat::for_path`]).
    pub fn open(path: &Path) -> Result<ResultsFile, RewriteError> {
        ResultsFile::open_as(path, ResultFormat::for_path(path))
    }

    /// Opens `path` as a results file of `format` (for files whose name does
    /// not tell, such as a run's `.partial` file).
    pub fn open_as(path: &Path, format: ResultFormat) -> Result<ResultsFile, RewriteError> {
        let input_format = match format {
            ResultFormat::Csv => InputFormat::Csv,
            ResultFormat::Jsonl => InputFormat::Jsonl,
            ResultFormat::Xlsx => InputFormat::Workbook,
        };
        let input = Input::open(&InputSpec {
            path: Some(path.to_path_buf()),
            format: Some(input_format),
            ..InputSpec::default()
        })?;
        if !input.is_results_file() {
            return Err(RewriteError::NotResults { file: input.display_name().to_string() });
        }
        Ok(ResultsFile { input, format, path: path.to_path_buf() })
    }

    /// The format of the file.
    pub fn format(&self) -> ResultFormat {
        self.format
    }

    /// The CSV dialect the file is in (its delimiter, line end and BOM), for
    /// files written from it.
    pub fn dialect(&self) -> crate::results::dialect::Dialect {
        self.input.results_dialect()
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user's columns, in file order.
    pub fn user_columns(&self) -> &[String] {
        self.input.columns().user_columns()
    }

    /// A fresh pass over the rows, in file order. A row whose runner columns
    /// cannot be read back, or whose field count is wrong, is an error that
    /// names its line.
    pub fn entries(&self) -> Result<Entries<'_>, RewriteError> {
        Ok(Entries { file: self, records: self.input.records()? })
    }
}

/// A pass over the rows of a [`ResultsFile`].
pub struct Entries<'a> {
    /// The file, for its columns and name.
    file: &'a ResultsFile,
    /// The record reader.
    records: Records,
}

impl Iterator for Entries<'_> {
    type Item = Result<ResultsEntry, RewriteError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.records.next()?;
        Some(self.file.entry(record))
    }
}

/// A pass over the rows of a [`ResultsFile`] that owns the file (read
/// beside other files, as the merge of a run over many tenants does).
pub struct OwnedEntries {
    /// The file, for its columns and name.
    file: ResultsFile,
    /// The record reader.
    records: Records,
}

impl Iterator for OwnedEntries {
    type Item = Result<ResultsEntry, RewriteError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.records.next()?;
        Some(self.file.entry(record))
    }
}

impl ResultsFile {
    /// [`ResultsFile::entries`], owning the file.
    pub fn into_entries(self) -> Result<OwnedEntries, RewriteError> {
        let records = self.input.records()?;
        Ok(OwnedEntries { file: self, records })
    }

    /// One record read back as a row: an error that names its line when
    /// its runner columns cannot be read back or its field count is wrong.
    fn entry(
        &self,
        record: Result<crate::input::Record, InputError>,
    ) -> Result<ResultsEntry, RewriteError> {
        let record = record?;
        let columns = self.input.columns();
        let bad = |why: String| RewriteError::Row {
            file: self.input.display_name().to_string(),
            line: record.line,
            why,
        };
        if !record.problems.is_empty() {
            let why = record.problems.iter().map(|p| p.why.clone()).collect::<Vec<_>>().join("; ");
            return Err(bad(why));
        }
        let row = columns.runner_row(&record.values).map_err(|errors| {
            bad(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        })?;
        Ok(ResultsEntry { user: columns.user_values(&record.values), row })
    }
}

/// Changes to one row's runner columns; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch {
    /// New `status`.
    pub status: Option<Status>,
    /// New `action_status`.
    pub action_status: Option<String>,
    /// New `error_code`.
    pub error_code: Option<String>,
    /// New `error_message`.
    pub error_message: Option<String>,
    /// New `finished_at`.
    pub finished_at: Option<Timestamp>,
}

impl Patch {
    /// Applies the patch; true when some column actually changed.
    pub fn apply(&self, row: &mut ResultRow) -> bool {
        let before = row.clone();
        if let Some(s) = self.status {
            row.status = Some(s);
        }
        if let Some(t) = self.finished_at {
            row.finished_at = Some(t);
        }
        for (field, value) in [
            (&mut row.action_status, &self.action_status),
            (&mut row.error_code, &self.error_code),
            (&mut row.error_message, &self.error_message),
        ] {
            if let Some(v) = value {
                field.clone_from(v);
            }
        }
        *row != before
    }
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// Rows in the file.
    pub rows: u64,
    /// Rows the update changed (0: the file was left untouched).
    pub changed: u64,
}

/// Rewrites the results file at `path` (written in `format`): `update` sees
/// every row's runner columns in file order and returns true when it changed
/// them. The user's columns are carried unchanged. The new file replaces the
/// old one atomically; when no row changed, the old one is left as it was.
/// The `line` column is the row's identity and must not be changed.
pub fn rewrite_with<F>(
    path: &Path,
    format: ResultFormat,
    mut update: F,
) -> Result<Rewritten, RewriteError>
where
    F: FnMut(&mut ResultRow) -> bool,
{
    let file = ResultsFile::open_as(path, format)?;
    let aside = aside_path(path);
    let io = |source| RewriteError::Io { path: aside.clone(), source };
    let out = crate::private::create(&aside).map_err(io)?;
    let result = (|| {
        let durable = out.try_clone().map_err(io)?;
        // The file keeps its own dialect: the input's, as the run wrote it.
        let mut sink = sink_in(format, file.dialect(), out, file.user_columns());
        let mut done = Rewritten::default();
        for entry in file.entries()? {
            let ResultsEntry { user, mut row } = entry?;
            let line = row.line;
            if update(&mut row) {
                done.changed += 1;
            }
            row.line = line;
            sink.write_row(&user, &row).map_err(io)?;
            done.rows += 1;
        }
        // A workbook is written here, whole.
        sink.finish().map_err(io)?;
        drop(sink);
        durable.sync_all().map_err(io)?;
        Ok(done)
    })();
    let done = match result {
        Ok(done) if done.changed > 0 => done,
        other => {
            let _ = std::fs::remove_file(&aside);
            return other;
        }
    };
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the file's permissions: results may be shared on purpose.
        let _ = std::fs::set_permissions(&aside, meta.permissions());
    }
    std::fs::rename(&aside, path)
        .map_err(|source| RewriteError::Io { path: path.to_path_buf(), source })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        // Make the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(done)
}

/// [`rewrite_with`] applying a [`Patch`] per `line`.
pub fn apply_patches(
    path: &Path,
    format: ResultFormat,
    patches: &std::collections::HashMap<u64, Patch>,
) -> Result<Rewritten, RewriteError> {
    rewrite_with(path, format, |row| patches.get(&row.line).is_some_and(|p| p.apply(row)))
}

/// `<path>.rewrite`: where the new file is written before the rename.
fn aside_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// User cells that stress quoting, neutralisation and encodings.
    fn nasty() -> Vec<&'static str> {
        vec![
            "=HYPERLINK(\"http://x\")",
            "'already quoted",
            "two\nlines",
            "crlf\r\nline",
            "comma, \"quote\"",
            "-2",
            "\ttab",
            "Zürich 🔥",
            "",
            " spaced ",
        ]
    }

    fn row(line: u64, status: Status) -> ResultRow {
        ResultRow {
            line,
            machine_id: "ab".repeat(20),
            action: "isolate".into(),
            status: Some(status),
            action_id: format!("00000000-0000-0000-0000-{line:012}"),
            action_status: "Pending".into(),
            http_status: Some(201),
            error_message: "-starts like a formula".into(),
            attempts: 1,
            requested_at: Timestamp::parse("2024-05-01T08:00:00.0000000Z"),
            finished_at: Timestamp::parse("2024-05-01T08:00:01.0000000Z"),
            ..ResultRow::default()
        }
    }

    /// Writes a results file of `format` with two user columns of nasty
    /// cells, one row per cell.
    fn write_results(path: &Path, format: ResultFormat) -> Vec<(Vec<String>, ResultRow)> {
        let columns = vec!["note =x".to_string(), "owner".to_string()];
        let mut s = crate::output::sink(format, File::create(path).unwrap(), &columns);
        let mut rows = Vec::new();
        for (i, cell) in nasty().into_iter().enumerate() {
            let user = vec![cell.to_string(), format!("owner-{i}")];
            let r = row(i as u64 + 2, Status::Submitted);
            s.write_row(&user, &r).unwrap();
            rows.push((user, r));
        }
        s.flush().unwrap();
        rows
    }

    fn read_back(path: &Path, format: ResultFormat) -> Vec<(Vec<String>, ResultRow)> {
        let file = ResultsFile::open_as(path, format).unwrap();
        file.entries().unwrap().map(|e| e.unwrap()).map(|e| (e.user, e.row)).collect()
    }

    fn check_patched(format: ResultFormat) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("r.{}", format.extension()));
        let written = write_results(&path, format);
        let mut patches = HashMap::new();
        patches.insert(
            3,
            Patch {
                status: Some(Status::Succeeded),
                action_status: Some("Succeeded".into()),
                finished_at: Timestamp::parse("2024-05-01T08:05:00.0000000Z"),
                ..Patch::default()
            },
        );
        patches.insert(
            5,
            Patch {
                status: Some(Status::Failed),
                action_status: Some("Failed".into()),
                error_message: Some("=the device reported a failure".into()),
                ..Patch::default()
            },
        );
        patches.insert(999, Patch { status: Some(Status::Failed), ..Patch::default() });
        let done = apply_patches(&path, format, &patches).unwrap();
        assert_eq!(done, Rewritten { rows: written.len() as u64, changed: 2 });
        let back = read_back(&path, format);
        assert_eq!(back.len(), written.len());
        for ((user, before), (user_after, after)) in written.iter().zip(&back) {
            assert_eq!(user, user_after, "user columns survive byte for byte");
            let mut expected = before.clone();
            if let Some(p) = patches.get(&before.line) {
                p.apply(&mut expected);
            }
            assert_eq!(&expected, after);
        }
        assert_eq!(back[1].1.status, Some(Status::Succeeded));
        assert_eq!(back[3].1.error_message, "=the device reported a failure");
        assert!(!aside_path(&path).exists(), "nothing is left beside the file");
    }

    #[test]
    fn csv_rows_are_patched_and_user_columns_kept() {
        check_patched(ResultFormat::Csv);
    }

    #[test]
    fn jsonl_rows_are_patched_and_user_columns_kept() {
        check_patched(ResultFormat::Jsonl);
    }

    #[test]
    fn a_rewrite_without_changes_leaves_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        write_results(&path, ResultFormat::Csv);
        let before = std::fs::read(&path).unwrap();
        let done = rewrite_with(&path, ResultFormat::Csv, |_| false).unwrap();
        assert_eq!(done.changed, 0);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!aside_path(&path).exists());
    }

    #[test]
    fn the_line_column_cannot_be_changed_by_an_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let written = write_results(&path, ResultFormat::Csv);
        rewrite_with(&path, ResultFormat::Csv, |r| {
            r.line += 100;
            r.attempts = 9;
            true
        })
        .unwrap();
        let back = read_back(&path, ResultFormat::Csv);
        let lines: Vec<u64> = back.iter().map(|(_, r)| r.line).collect();
        let expected: Vec<u64> = written.iter().map(|(_, r)| r.line).collect();
        assert_eq!(lines, expected);
        assert!(back.iter().all(|(_, r)| r.attempts == 9));
    }

    #[test]
    fn a_file_that_is_not_results_or_has_a_bad_row_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("in.csv");
        std::fs::write(&plain, "machine_id,comment\nab,c\n").unwrap();
        let e = rewrite_with(&plain, ResultFormat::Csv, |_| true).unwrap_err();
        assert!(matches!(e, RewriteError::NotResults { .. }), "{e}");

        let bad = dir.path().join("bad.csv");
        let text = "machine_id,line,status,action_id\nab,2,submitted,x\nab,3,great,y\n";
        std::fs::write(&bad, text).unwrap();
        let e = rewrite_with(&bad, ResultFormat::Csv, |_| true).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3") && msg.contains("unknown status"), "{msg}");
        assert_eq!(
            std::fs::read_to_string(&bad).unwrap(),
            text,
            "a failed rewrite changes nothing"
        );
        assert!(!aside_path(&bad).exists());
    }
}
