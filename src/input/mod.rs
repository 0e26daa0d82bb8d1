//! Input files: CSV, TSV and JSONL readers, column aliases, row validation.
//!
//! One place owns all the reading set-up:
//!
//! - [`format`]: which format a file is (its CSV dialect, BOM and
//!   delimiter, is [`crate::results::dialect`]'s).
//! - [`columns`]: header names, their roles and aliases, the user columns.
//! - `delimited` and `jsonl`: the streaming readers behind [`Records`].
//! - [`plan`]: a record checked against the flags, into a [`RowPlan`] or
//!   every [`RowProblem`] it has.
//! - [`error`]: the file-level errors.
//!
//! An [`Input`] can be read any number of times ([`Input::records`] starts a
//! fresh pass), so the runner can validate every row before sending anything
//! and then stream the rows again; stdin is spooled to a temporary file for
//! that. Each pass reads one record at a time: memory does not grow with the
//! file.
//!
//! A results file from an earlier run is a valid input. Its CSV cells were
//! formula-neutralised when written ([`crate::output::cell`]); reading undoes
//! exactly that, so the user's columns come back byte for byte.

pub(crate) mod columns;
mod delimited;
pub(crate) mod encoding;
pub(crate) mod error;
pub(crate) mod format;
mod jsonl;
mod lines;
pub(crate) mod plan;
mod record;
mod spool;
pub(crate) mod tenant;
mod workbook;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

pub use columns::{ColumnChoices, Columns, Role};
pub use encoding::{TextEncoding, UnknownEncoding};
pub use error::InputError;
use format::WideEncoding;
pub use format::{InputFormat, UnknownInputFormat};
pub use plan::{
    MAX_COMMENT_CHARS, MAX_NAME_CHARS, MAX_WORD_CHARS, RowDefaults, RowPlan, RowProblem, Target,
    plan_row, row_tenant,
};
pub use record::Record;
pub use tenant::TenantNames;

use crate::results::dialect::{Dialect, LineEnd};
use delimited::{DelimitedRecords, Layout};
use encoding::{Detected, Transcode};
use jsonl::JsonlRecords;
use lines::LineRecords;
use spool::{Source, Spool};

/// What the user asked to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputSpec {
    /// The file; `None` (or `-`) reads stdin.
    pub path: Option<PathBuf>,
    /// `--input-format`: overrides the extension when given, and is required
    /// for stdin and files without a known extension.
    pub format: Option<InputFormat>,
    /// `--encoding`: overrides the detection (BOM, NUL bytes, UTF-8 or
    /// Windows-1252) when given.
    pub encoding: Option<TextEncoding>,
    /// `--column` and `--ignore-column`: the roles the user gives columns
    /// and takes from them, over the aliases.
    pub columns: ColumnChoices,
    /// `--sheet`: the sheet of a workbook to read, by name or by position
    /// from 1; the first when not given.
    pub sheet: Option<String>,
}

/// How the records of an input are laid out.
#[derive(Debug, Clone)]
enum Shape {
    /// CSV or TSV.
    Delimited(Layout),
    /// JSON lines.
    Jsonl,
    /// One device per line; the dialect holds the file's line end.
    Lines(Dialect),
    /// One sheet of a workbook, read whole at open.
    Workbook(Arc<workbook::Sheet>),
}

/// An opened input: format detected, header read and classified.
#[derive(Debug)]
pub struct Input {
    /// The path as given, or `<stdin>`.
    name: Arc<str>,
    /// Where the bytes are.
    source: Source,
    /// The format chosen at open.
    format: InputFormat,
    /// How records are laid out.
    layout: Shape,
    /// Column names and roles.
    columns: Columns,
    /// The encoding the file is in, and its byte order mark.
    detected: Detected,
}

/// The name stdin is reported under.
const STDIN_NAME: &str = "<stdin>";

impl Input {
    /// Opens the input: stdin is spooled to a temporary file first, so it can
    /// be read twice. The format is `spec.format` if given, else the file
    /// extension (`.csv`, `.tsv`, `.jsonl`, `.ndjson`, `.json-lines`); with
    /// neither it is an error. For CSV the delimiter is sniffed from the
    /// header line (TSV is always tab-separated), a UTF-8 BOM is skipped, and
    /// header names are mapped to roles. JSONL is read once here to collect
    /// the union of its keys and check every line is an object. A UTF-16 or
    /// UTF-32 input, and an input with no machine id or device name column,
    /// are refused here.
    pub fn open(spec: &InputSpec) -> Result<Input, InputError> {
        match &spec.path {
            Some(path) if path.as_os_str() != "-" => {
                let name: Arc<str> = path.display().to_string().into();
                let format =
                    spec.format.or_else(|| InputFormat::from_extension(path)).ok_or_else(|| {
                        InputError::UnknownFormat {
                            file: name.to_string(),
                            extension: path.extension().map(|e| e.to_string_lossy().into_owned()),
                        }
                    })?;
                Input::build(name, Source::File(path.clone()), format, spec)
            }
            _ => Input::from_reader_with(std::io::stdin().lock(), spec),
        }
    }

    /// Reads a stream (stdin, or any reader) to its end into a temporary
    /// file and opens that, under the name `<stdin>`. The format must be
    /// given; it is checked before anything is read.
    pub fn from_reader(
        reader: impl Read,
        format: Option<InputFormat>,
    ) -> Result<Input, InputError> {
        Input::from_reader_with(reader, &InputSpec { format, ..InputSpec::default() })
    }

    /// [`Input::from_reader`] with the rest of a spec (encoding, column
    /// choices); its path is not used.
    pub fn from_reader_with(reader: impl Read, spec: &InputSpec) -> Result<Input, InputError> {
        let name: Arc<str> = STDIN_NAME.into();
        let format = spec
            .format
            .ok_or_else(|| InputError::UnknownFormat { file: name.to_string(), extension: None })?;
        let spool = Spool::copy_from(reader)
            .map_err(|error| InputError::Io { file: name.to_string(), error })?;
        Input::build(name, Source::Spooled(Arc::new(spool)), format, spec)
    }

    /// Decides the encoding (decoding a non-UTF-8 input into a UTF-8 spool),
    /// reads the header (or the JSONL keys) and classifies the columns.
    fn build(
        name: Arc<str>,
        source: Source,
        format: InputFormat,
        spec: &InputSpec,
    ) -> Result<Input, InputError> {
        // A workbook is binary: it has no text encoding to decide.
        let (source, detected) = match format {
            InputFormat::Workbook => (source, Detected::UTF8),
            _ => decode(source, &name, spec.encoding)?,
        };
        let format = match format {
            // A `.txt` is a list of devices, or Excel's "Unicode Text": a
            // tab-separated sheet with a header.
            InputFormat::Lines if spec.format.is_none() && lines::looks_tabular(&source) => {
                InputFormat::Tsv
            }
            f => f,
        };
        let (layout, columns) = match format {
            InputFormat::Csv | InputFormat::Tsv => {
                let (layout, mut header) = delimited::inspect(&source, &name, format)?;
                if Columns::new(header.clone()).is_results_file() {
                    header.iter_mut().for_each(crate::results::cell::restore_owned);
                }
                (Shape::Delimited(layout), header)
            }
            InputFormat::Jsonl => (Shape::Jsonl, jsonl::scan_keys(&source, &name)?),
            InputFormat::Workbook => return Input::build_workbook(name, source, spec),
            InputFormat::Lines => {
                let dialect = lines::inspect(&source, &name)?;
                (Shape::Lines(dialect), vec![Role::Device.canonical().to_string()])
            }
        };
        let columns =
            Columns::with_choices(columns.clone(), &spec.columns).map_err(|(flag, column)| {
                InputError::NoSuchColumn { file: name.to_string(), flag, column, header: columns }
            })?;
        if !Role::TARGETS.into_iter().any(|r| columns.has(r)) {
            return Err(InputError::NoTargetColumn {
                file: name.to_string(),
                header: columns.names().to_vec(),
            });
        }
        Ok(Input { name, source, format, layout, columns, detected })
    }

    /// Reads the chosen sheet of a workbook whole and classifies its header;
    /// the input is named after the file and the sheet from here on.
    fn build_workbook(
        name: Arc<str>,
        source: Source,
        spec: &InputSpec,
    ) -> Result<Input, InputError> {
        let mut bytes = Vec::new();
        source
            .open()
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|error| InputError::Io { file: name.to_string(), error })?;
        let sheet = workbook::read(bytes, &name, spec.sheet.as_deref())?;
        let name: Arc<str> = format!("{name}, sheet {}", sheet.name).into();
        let header = sheet.header.clone();
        let columns =
            Columns::with_choices(header.clone(), &spec.columns).map_err(|(flag, column)| {
                InputError::NoSuchColumn { file: name.to_string(), flag, column, header }
            })?;
        if !Role::TARGETS.into_iter().any(|r| columns.has(r)) {
            return Err(InputError::NoTargetColumn {
                file: name.to_string(),
                header: columns.names().to_vec(),
            });
        }
        let layout = Shape::Workbook(Arc::new(sheet));
        Ok(Input {
            name,
            source,
            format: InputFormat::Workbook,
            layout,
            columns,
            detected: Detected::UTF8,
        })
    }

    /// The input as the user named it, or `<stdin>`.
    pub fn display_name(&self) -> &str {
        &self.name
    }

    /// The format the input is read as.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// The encoding the input is read in.
    pub fn encoding(&self) -> TextEncoding {
        self.detected.encoding
    }

    /// The dialect a CSV results file of this input is written in, so the
    /// spreadsheet that opened the input opens the results alike: the
    /// input's delimiter (a comma for JSONL and lists) and line end, and a
    /// UTF-8 BOM when the input had a BOM or was not UTF-8 (without one,
    /// Excel reads UTF-8 in its own code page and shows accents garbled).
    pub fn results_dialect(&self) -> Dialect {
        let dialect = match &self.layout {
            Shape::Delimited(layout) => layout.dialect,
            Shape::Lines(dialect) => *dialect,
            Shape::Jsonl => Dialect::COMMA,
            // Excel opens a comma-separated UTF-8 file with a BOM and CRLF
            // in columns (in the locales whose list separator is a comma).
            Shape::Workbook(_) => {
                return Dialect::COMMA.with_line_end(LineEnd::CrLf).with_bom(true);
            }
        };
        dialect.with_bom(self.detected.bom_len > 0 || self.detected.encoding != TextEncoding::Utf8)
    }

    /// The columns: names in order (for JSONL, the union of keys in
    /// first-seen order), roles, and the user columns carried to the results.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// True when the input is a results file from an earlier run (its header
    /// has the runner's `line` and `status` columns).
    pub fn is_results_file(&self) -> bool {
        self.columns.is_results_file()
    }

    /// The file-level checks that need the flags: an action and a comment
    /// must come from a column or a default, and a `--comment` must not be
    /// longer than a comment cell may be.
    ///
    /// A parameter column that some rows' action may not take (a `SHA1` in
    /// an Advanced Hunting export run with `--action isolate`) is not an
    /// error: on those rows it is carried to the results as the user's own
    /// column, and one warning per column says so
    /// ([`Input::column_warnings`]).
    pub fn check_columns(&self, defaults: &RowDefaults) -> Result<(), InputError> {
        for warning in self.column_warnings(defaults) {
            tracing::warn!("{}: {warning}", self.name);
        }
        if defaults.action.is_none() && !self.columns.has(Role::Action) {
            return Err(InputError::NoActionColumn { file: self.name.to_string() });
        }
        let default_comment = defaults.comment.as_deref().map(str::trim).unwrap_or_default();
        let chars = default_comment.chars().count();
        if chars > plan::MAX_COMMENT_CHARS {
            return Err(InputError::FlagTooLong {
                file: self.name.to_string(),
                flag: "--comment",
                chars,
                limit: plan::MAX_COMMENT_CHARS,
            });
        }
        let has_default_comment = !default_comment.is_empty();
        if !has_default_comment && !self.columns.has(Role::Comment) {
            return Err(InputError::NoCommentColumn { file: self.name.to_string() });
        }
        match &defaults.tenants {
            Some(t) if t.fallback().is_none() && !self.columns.has(Role::Tenant) => {
                return Err(InputError::NoTenantColumn { file: self.name.to_string() });
            }
            None if self.columns.has(Role::Tenant) => {
                let column = self.columns.role_name(Role::Tenant).unwrap_or_default();
                return Err(InputError::TenantColumnWithoutProfiles {
                    file: self.name.to_string(),
                    column: crate::text::quote(column).to_string(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// One line per parameter column the rows' action may not take: with
    /// no action column, one the `--action` does not take; with one, every
    /// parameter column (it applies to the rows of its own action only).
    pub fn column_warnings(&self, defaults: &RowDefaults) -> Vec<String> {
        let per_row = self.columns.has(Role::Action);
        plan::PARAMETERS
            .into_iter()
            .filter(|(role, takes)| {
                self.columns.has(*role) && (per_row || defaults.action.is_some_and(|a| a != *takes))
            })
            .filter_map(|(role, takes)| {
                let column = crate::text::quote(self.columns.role_name(role)?);
                Some(if per_row {
                    format!(
                        "column {column} is a parameter of {takes} only; on rows of other actions it is not sent, only carried to the results"
                    )
                } else {
                    format!(
                        "column {column} holds a parameter {} does not take; it is not sent, only carried to the results as your own column",
                        defaults.action.map_or_else(String::new, |a| a.to_string())
                    )
                })
            })
            .collect()
    }

    /// A fresh streaming pass over the records, from the first one. Can be
    /// called any number of times; each pass has its own file handle.
    pub fn records(&self) -> Result<Records, InputError> {
        let names = self.columns.names().to_vec();
        let inner = match &self.layout {
            Shape::Delimited(layout) => RecordsInner::Delimited(DelimitedRecords::new(
                &self.source,
                *layout,
                names,
                self.is_results_file(),
                self.name.clone(),
            )?),
            Shape::Jsonl => {
                RecordsInner::Jsonl(JsonlRecords::new(&self.source, names, self.name.clone())?)
            }
            Shape::Lines(_) => {
                RecordsInner::Lines(LineRecords::new(&self.source, names, self.name.clone())?)
            }
            Shape::Workbook(sheet) => RecordsInner::Workbook(sheet.clone(), 0),
        };
        Ok(Records { inner })
    }
}

/// Decides the encoding of an input (see [`encoding`]) and, when it is not
/// UTF-8, decodes it once into a private UTF-8 spool that every pass reads
/// instead (its BOM left behind). A UTF-32 input is refused: no spreadsheet
/// writes it. A guessed Windows-1252 is announced with one warning.
fn decode(
    source: Source,
    name: &str,
    given: Option<TextEncoding>,
) -> Result<(Source, Detected), InputError> {
    let io_err = |error| InputError::Io { file: name.to_string(), error };
    let mut head = Vec::with_capacity(format::ENCODING_SNIFF_BYTES);
    source
        .open()
        .map_err(io_err)?
        .take(format::ENCODING_SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    let wide = match format::sniff_wide_encoding(&head) {
        Some((encoding @ (WideEncoding::Utf32Le | WideEncoding::Utf32Be), bom))
            if given.is_none() =>
        {
            return Err(InputError::Encoding { file: name.to_string(), encoding, bom });
        }
        Some((WideEncoding::Utf16Le, _)) => Some(TextEncoding::Utf16Le),
        Some((WideEncoding::Utf16Be, _)) => Some(TextEncoding::Utf16Be),
        _ => None,
    };
    let detected = encoding::detect(&head, wide, given, || {
        source.open().map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn Read>)
    })
    .map_err(io_err)?;
    if let Some(line) = detected.guessed_at_line {
        tracing::warn!(
            "{name}: not valid UTF-8 (first at line {line}); reading it as Windows-1252, the encoding of Excel's \"CSV\" on a Western Windows; if that is wrong, name the encoding with --encoding"
        );
    }
    if detected.encoding == TextEncoding::Utf8 {
        return Ok((source, detected));
    }
    let mut raw = source.open().map_err(io_err)?;
    std::io::copy(&mut (&mut raw).take(detected.bom_len), &mut std::io::sink()).map_err(io_err)?;
    let spool = Spool::copy_from(Transcode::new(std::io::BufReader::new(raw), detected.encoding))
        .map_err(|error| match encoding::malformed(&error) {
        Some(m) => InputError::Decode {
            file: name.to_string(),
            line: m.line,
            encoding: m.encoding,
            given: given.is_some(),
        },
        None => io_err(error),
    })?;
    Ok((Source::Spooled(Arc::new(spool)), detected))
}

/// A streaming pass over an input's records, in file order. An error names
/// the file and line; the pass can go on after a row-level error (bad
/// UTF-8, bad JSON) but ends after an I/O error.
pub struct Records {
    /// The reader for the input's format.
    inner: RecordsInner,
}

/// The two readers behind [`Records`].
enum RecordsInner {
    /// CSV or TSV.
    Delimited(DelimitedRecords),
    /// JSON lines.
    Jsonl(JsonlRecords),
    /// One device per line.
    Lines(LineRecords),
    /// The rows of a sheet, from memory: the sheet and the next row.
    Workbook(Arc<workbook::Sheet>, usize),
}

impl Iterator for Records {
    type Item = Result<Record, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            RecordsInner::Delimited(r) => r.next(),
            RecordsInner::Jsonl(r) => r.next(),
            RecordsInner::Lines(r) => r.next(),
            RecordsInner::Workbook(sheet, next) => {
                let record = sheet.record(*next)?;
                *next += 1;
                Some(Ok(record))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::action::ActionKind;
    use std::io::Write;
    use std::path::Path;

    /// A scratch directory removed at the end of the test.
    struct TestDir(tempfile::TempDir);

    impl TestDir {
        fn new() -> TestDir {
            TestDir(tempfile::Builder::new().prefix("mdebulk-input-test-").tempdir().unwrap())
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.path(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    fn open_path(path: &Path, format: Option<InputFormat>) -> Result<Input, InputError> {
        Input::open(&InputSpec { path: Some(path.to_path_buf()), format, ..InputSpec::default() })
    }

    /// Opens `bytes` saved as `name` in a fresh directory, which is removed
    /// again at once: for checks made at open time only.
    fn open_bytes(name: &str, bytes: &[u8]) -> Result<Input, InputError> {
        let dir = TestDir::new();
        let input = open_path(&dir.file(name, bytes), None);
        drop(dir);
        input
    }

    /// Like [`open_bytes`], but keeps the directory (returned) for passes.
    fn open_bytes_kept(name: &str, bytes: &[u8]) -> (Input, TestDir) {
        let dir = TestDir::new();
        let input = open_path(&dir.file(name, bytes), None).unwrap();
        (input, dir)
    }

    fn rows(input: &Input) -> Vec<Record> {
        input.records().unwrap().map(|r| r.unwrap()).collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const ID: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

    #[test]
    fn inputs_and_passes_can_move_to_other_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        fn is_send<T: Send>() {}
        is_send_sync::<Input>();
        is_send::<Records>();
        let input = Input::from_reader(&b"hostname\nh\n"[..], Some(InputFormat::Csv)).unwrap();
        let pass = input.records().unwrap();
        let n = std::thread::spawn(move || pass.count()).join().unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn excel_export_with_bom_semicolons_and_crlf() {
        let dir = TestDir::new();
        let p = dir.file(
            "export.csv",
            "\u{feff}DeviceName;Comment;Owner\r\nhost-1;contain;Zoë\r\nhost-2;\"a;b\";\r\n"
                .as_bytes(),
        );
        let input = open_path(&p, None).unwrap();
        assert_eq!(input.format(), InputFormat::Csv);
        assert_eq!(input.display_name(), p.display().to_string());
        assert_eq!(input.columns().names(), strings(&["DeviceName", "Comment", "Owner"]));
        let r = rows(&input);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].line, r[0].values.clone()), (2, strings(&["host-1", "contain", "Zoë"])));
        assert_eq!((r[1].line, r[1].values.clone()), (3, strings(&["host-2", "a;b", ""])));
        assert!(r.iter().all(|r| r.problems.is_empty()));
    }

    #[test]
    fn tab_delimiter_is_detected_and_tsv_is_always_tab() {
        let dir = TestDir::new();
        let p = dir.file("tabs.csv", b"machine_id\tcomment\tnote, with comma\n1\t2\t3\n");
        let input = open_path(&p, None).unwrap();
        assert_eq!(
            input.columns().names(),
            strings(&["machine_id", "comment", "note, with comma"])
        );
        assert_eq!(rows(&input)[0].values, strings(&["1", "2", "3"]));
        let p = dir.file("t.tsv", b"hostname\tnote\na,b,c\td\n");
        let input = open_path(&p, None).unwrap();
        assert_eq!(input.format(), InputFormat::Tsv);
        assert_eq!(rows(&input)[0].values, strings(&["a,b,c", "d"]));
    }

    #[test]
    fn quoted_fields_span_lines_and_line_numbers_stay_physical() {
        let dir = TestDir::new();
        let p = dir.file(
            "q.csv",
            b"hostname,note\r\n\r\nh1,\"two\r\nlines\"\r\nh2,\"say \"\"hi\"\"\nand bye\"\n\n,,\n ,\nh3,last",
        );
        let input = open_path(&p, None).unwrap();
        let r = rows(&input);
        let got: Vec<(u64, Vec<String>)> = r.iter().map(|r| (r.line, r.values.clone())).collect();
        assert_eq!(
            got,
            vec![
                (3, strings(&["h1", "two\r\nlines"])),
                (5, strings(&["h2", "say \"hi\"\nand bye"])),
                (10, strings(&["h3", "last"])),
            ]
        );
        // Whitespace-only rows (`,,`, ` ,`) are skipped like blank lines;
        // the `,,` row has a field too many, yet is not an error.
        assert!(r.iter().all(|r| r.problems.is_empty()));
    }

    #[test]
    fn records_can_be_read_more_than_once() {
        let dir = TestDir::new();
        let p = dir.file("twice.csv", b"hostname\na\nb\n");
        let input = open_path(&p, None).unwrap();
        let first = rows(&input);
        let mut pass_a = input.records().unwrap();
        let mut pass_b = input.records().unwrap();
        assert_eq!(pass_a.next().unwrap().unwrap(), first[0]);
        assert_eq!(pass_b.next().unwrap().unwrap(), first[0]);
        assert_eq!(pass_a.next().unwrap().unwrap(), first[1]);
        assert!(pass_a.next().is_none());
        assert_eq!(rows(&input), first);
    }

    #[test]
    fn stdin_is_spooled_and_needs_a_format() {
        let input =
            Input::from_reader(&b"hostname,comment\nh1,c\n"[..], Some(InputFormat::Csv)).unwrap();
        assert_eq!(input.display_name(), "<stdin>");
        assert_eq!(rows(&input), rows(&input));
        assert_eq!(rows(&input)[0].values, strings(&["h1", "c"]));
        let e = Input::from_reader(&b"hostname\nh1\n"[..], None).unwrap_err();
        assert!(matches!(e, InputError::UnknownFormat { extension: None, .. }), "{e}");
        assert!(
            e.to_string().starts_with("<stdin>: cannot tell the input format (no file extension)"),
            "{e}"
        );
        let jsonl =
            Input::from_reader(&b"{\"hostname\":\"h\"}\n"[..], Some(InputFormat::Jsonl)).unwrap();
        assert_eq!(rows(&jsonl)[0].values, strings(&["h"]));
    }

    #[test]
    fn format_comes_from_the_flag_else_the_extension_else_an_error() {
        let dir = TestDir::new();
        let docx = dir.file("devices.docx", b"hostname\nh\n");
        let e = open_path(&docx, None).unwrap_err();
        assert!(e.to_string().contains("extension .docx is not one of csv"), "{e}");
        assert!(e.to_string().contains("--input-format"), "{e}");
        assert_eq!(e.file(), docx.display().to_string());
        // A CSV saved under a workbook's name is refused as no workbook.
        let fake = dir.file("devices.xlsx", b"hostname\nh\n");
        let e = open_path(&fake, None).unwrap_err();
        assert!(e.to_string().contains("cannot read it as a workbook"), "{e}");
        let bare = dir.file("devices", b"hostname\nh\n");
        assert!(open_path(&bare, None).unwrap_err().to_string().contains("no file extension"));
        assert_eq!(open_path(&bare, Some(InputFormat::Csv)).unwrap().format(), InputFormat::Csv);
        let jsonl_named_csv = dir.file("a.csv", b"{\"hostname\":\"h\"}\n");
        let input = open_path(&jsonl_named_csv, Some(InputFormat::Jsonl)).unwrap();
        assert_eq!(rows(&input)[0].values, strings(&["h"]));
    }

    #[test]
    fn missing_empty_and_headerless_inputs_are_file_errors() {
        let dir = TestDir::new();
        let missing = dir.path("nope.csv");
        let e = open_path(&missing, None).unwrap_err();
        assert!(matches!(e, InputError::Io { .. }), "{e}");
        assert!(e.to_string().starts_with(&missing.display().to_string()), "{e}");
        for (name, bytes) in [
            ("empty.csv", &b""[..]),
            ("bom.csv", b"\xEF\xBB\xBF"),
            ("blank.csv", b"\r\n\n  \n"),
            ("empty.jsonl", b""),
            ("blank.jsonl", b"\n  \r\n"),
        ] {
            let e = open_path(&dir.file(name, bytes), None).unwrap_err();
            assert!(matches!(e, InputError::Empty { .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn an_input_without_id_or_name_column_lists_its_header_and_the_accepted_names() {
        let e = open_bytes("x.csv", b"owner,ticket\nann,1\n").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, InputError::NoTargetColumn { .. }));
        assert!(msg.contains("x.csv: no machine id or device name column"), "{msg}");
        assert!(msg.contains("[owner, ticket]"), "{msg}");
        for alias in ["machine_id", "DeviceId", "device_name", "computerDnsName", "hostname"] {
            assert!(msg.contains(alias), "{alias} missing from {msg}");
        }
        let e = open_bytes("x.jsonl", b"{}\n{\"owner\":1}\n").unwrap_err();
        assert!(e.to_string().contains("[owner]"), "{e}");
        // An Entra ID device id or an IP address column identifies devices too.
        assert!(open_bytes("a.csv", b"aadDeviceId,owner\nx,ann\n").is_ok());
        assert!(open_bytes("i.csv", b"owner,ip_address\nann,10.0.0.1\n").is_ok());
    }

    #[test]
    fn header_aliases_are_recognised_through_open() {
        for (header, role) in [
            ("MachineId", Role::MachineId),
            ("DeviceId", Role::MachineId),
            ("Machine ID", Role::MachineId),
            ("computerDnsName", Role::DeviceName),
            ("DeviceName", Role::DeviceName),
            ("host_name", Role::DeviceName),
        ] {
            let input = open_bytes("a.csv", format!("{header},Comment\nx,y\n").as_bytes()).unwrap();
            assert_eq!(input.columns().role_name(role), Some(header), "{header}");
            assert_eq!(input.columns().role_name(Role::Comment), Some("Comment"));
        }
    }

    #[test]
    fn action_and_comment_must_come_from_a_column_or_a_flag() {
        let input = open_bytes("a.csv", b"machine_id\nx\n").unwrap();
        let none = RowDefaults::default();
        let e = input.check_columns(&none).unwrap_err();
        assert!(matches!(e, InputError::NoActionColumn { .. }));
        assert!(e.to_string().contains("no action column and no --action"), "{e}");
        let with_action = RowDefaults { action: Some(ActionKind::Isolate), ..none.clone() };
        let e = input.check_columns(&with_action).unwrap_err();
        assert!(matches!(e, InputError::NoCommentColumn { .. }));
        assert!(e.to_string().contains("requires a Comment"), "{e}");
        let blank_comment = RowDefaults { comment: Some("  ".into()), ..with_action.clone() };
        assert!(input.check_columns(&blank_comment).is_err());
        let both = RowDefaults { comment: Some("IR-1".into()), ..with_action };
        assert!(input.check_columns(&both).is_ok());
        let input = open_bytes("b.csv", b"machine_id,Action,Comment\nx,isolate,c\n").unwrap();
        assert!(input.check_columns(&none).is_ok());
    }

    #[test]
    fn a_row_with_the_wrong_field_count_is_a_row_problem() {
        let dir = TestDir::new();
        let p = dir.file("n.csv", b"hostname,comment,owner\nh1,c\nh2,c,o,extra,more\nh3,c,o\n");
        let input = open_path(&p, None).unwrap();
        let r = rows(&input);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].values, strings(&["h1", "c", ""]));
        assert_eq!(
            r[0].problems[0].to_string(),
            "line 2: the header has 3 columns but this row has 2 fields (a delimiter or quote out of place?)"
        );
        assert_eq!(r[1].values, strings(&["h2", "c", "o"]));
        assert_eq!(r[1].problems[0].line, 3);
        assert!(r[1].problems[0].why.contains("has 5 fields"));
        assert!(r[2].problems.is_empty());
        let defaults = RowDefaults { action: Some(ActionKind::Isolate), ..RowDefaults::default() };
        let problems = plan_row(&r[0], input.columns(), &defaults).unwrap_err();
        assert_eq!(problems[0], r[0].problems[0]);
    }

    #[test]
    fn invalid_utf8_is_read_as_windows_1252_unless_utf8_is_given() {
        let dir = TestDir::new();
        let p = dir.file("latin1.csv", b"hostname,owner\nh1,ok\nh2,Zo\xEB \x80\nh3,ok\n");
        let input = open_path(&p, None).unwrap();
        assert_eq!(input.encoding(), TextEncoding::Windows1252);
        let got: Vec<_> = rows(&input).into_iter().map(|r| (r.line, r.values[1].clone())).collect();
        assert_eq!(got, [(2, "ok".into()), (3, "Zoë €".into()), (4, "ok".into())]);
        // Results of a file that was not UTF-8 carry a BOM, so Excel reads
        // them as UTF-8.
        assert!(input.results_dialect().bom());
        let told = InputSpec {
            path: Some(p.clone()),
            encoding: Some(TextEncoding::Utf8),
            ..InputSpec::default()
        };
        let input = Input::open(&told).unwrap();
        let got: Vec<_> = input.records().unwrap().collect();
        assert_eq!(got.len(), 3);
        assert!(got[0].is_ok() && got[2].is_ok());
        let e = got[1].as_ref().unwrap_err();
        assert!(matches!(e, InputError::Utf8 { line: 3, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 3, column owner: not valid UTF-8, the encoding --encoding gave (leave --encoding out to have Windows-1252 guessed, or name the file's encoding)",
                p.display()
            )
        );
        let p = dir.file("badheader.csv", b"host\xFF\nh\n");
        let e = Input::open(&InputSpec { path: Some(p), ..told }).unwrap_err();
        assert!(matches!(e, InputError::Utf8 { line: 1, .. }), "{e}");
    }

    #[test]
    fn jsonl_columns_are_the_union_of_keys_in_first_seen_order() {
        let dir = TestDir::new();
        let p = dir.file(
            "d.jsonl",
            "\u{feff}{\"hostname\":\"h1\",\"owner\":\"ann\"}\r\n\n{\"ticket\":42,\"hostname\":\"h2\",\"urgent\":true}\n   \n{\"owner\":null,\"hostname\":\"h3\",\"ratio\":1.5,\"escaped \\\"key\\\"\":\"v\"}"
                .as_bytes(),
        );
        let input = open_path(&p, None).unwrap();
        assert_eq!(
            input.columns().names(),
            strings(&["hostname", "owner", "ticket", "urgent", "ratio", "escaped \"key\""])
        );
        let got: Vec<(u64, Vec<String>)> =
            rows(&input).into_iter().map(|r| (r.line, r.values)).collect();
        assert_eq!(
            got,
            vec![
                (1, strings(&["h1", "ann", "", "", "", ""])),
                (3, strings(&["h2", "", "42", "true", "", ""])),
                (5, strings(&["h3", "", "", "", "1.5", "v"])),
            ]
        );
    }

    #[test]
    fn jsonl_nested_values_are_row_problems_for_their_key() {
        let dir = TestDir::new();
        let p = dir
            .file("n.jsonl", b"{\"hostname\":\"h\",\"tags\":[\"a\",1],\"meta\":{\"k\":\"v\"}}\n");
        let input = open_path(&p, None).unwrap();
        let r = rows(&input);
        assert_eq!(r[0].values, strings(&["h", "[\"a\",1]", "{\"k\":\"v\"}"]));
        let cols: Vec<&str> = r[0].problems.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, ["tags", "meta"]);
        assert_eq!(
            r[0].problems[0].to_string(),
            "line 1, column tags: \"[\\\"a\\\",1]\": nested objects and arrays are not supported; give a string, number or boolean"
        );
    }

    #[test]
    fn a_jsonl_line_that_is_not_an_object_names_line_and_column() {
        for (text, line, column, what) in [
            (
                &b"{\"hostname\":\"h\"}\n\n[1,2]\n"[..],
                3,
                1,
                "invalid type: sequence, expected a JSON object",
            ),
            (b"{\"hostname\":\"h\"}\n{\"hostname\": h2}\n", 2, 14, "expected value"),
            (b"{\"hostname\":\"h\"} x\n", 1, 18, "trailing characters"),
            (b"\"just a string\"\n", 1, 15, "expected a JSON object"),
            (b"{\"hostname\":\"\xFF\"}\n", 1, 14, "not valid UTF-8"),
            (b"{\"h\":\"\xC3\xA9\xFF\"}\n", 1, 8, "not valid UTF-8"),
        ] {
            // Told it is UTF-8, so bad bytes are not taken for Windows-1252.
            let spec = InputSpec {
                format: Some(InputFormat::Jsonl),
                encoding: Some(TextEncoding::Utf8),
                ..InputSpec::default()
            };
            let e = Input::from_reader_with(text, &spec).unwrap_err();
            match &e {
                InputError::Json { line: l, column: c, message, .. } => {
                    assert_eq!((*l, *c), (line, column), "{e}");
                    assert!(message.contains(what), "{e}");
                    assert!(!message.contains(" at line "), "{e}");
                }
                other => panic!("expected a JSON error, got {other}"),
            }
            assert!(
                e.to_string().contains(&format!("<stdin>: line {line}, column {column}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn utf16_inputs_are_decoded_and_utf32_refused_naming_the_encoding() {
        let utf16le = |s: &str| s.encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<u8>>();
        let text = format!("machine_id,comment\r\n{ID},Zoë\r\n\r\n{ID},x\r\n");
        for (name, bytes, encoding) in [
            ("ps.csv", utf16le(&text), TextEncoding::Utf16Le),
            ("bom.csv", [&b"\xFF\xFE"[..], &utf16le(&text)].concat(), TextEncoding::Utf16Le),
            (
                "be.csv",
                [
                    &b"\xFE\xFF"[..],
                    &text.encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<_>>(),
                ]
                .concat(),
                TextEncoding::Utf16Be,
            ),
        ] {
            let (input, _dir) = open_bytes_kept(name, &bytes);
            assert_eq!(input.encoding(), encoding, "{name}");
            assert_eq!(input.columns().names(), strings(&["machine_id", "comment"]));
            let got: Vec<(u64, String)> =
                rows(&input).into_iter().map(|r| (r.line, r.values[1].clone())).collect();
            assert_eq!(got, [(2, "Zoë".to_string()), (4, "x".to_string())], "{name}");
            let d = input.results_dialect();
            assert!(d.bom() && d.line_end() == crate::results::dialect::LineEnd::CrLf);
        }
        let (input, _dir) =
            open_bytes_kept("wide.jsonl", &utf16le(&format!("{{\"machine_id\":\"{ID}\"}}\n")));
        assert_eq!(rows(&input)[0].values, strings(&[ID]));
        let input = Input::from_reader(&utf16le(&text)[..], Some(InputFormat::Csv)).unwrap();
        assert_eq!(rows(&input).len(), 2);
        // An unpaired surrogate names the encoding and the line.
        let mut bad = utf16le("hostname\nh1\n");
        bad.extend_from_slice(&[0x00, 0xD8, b'\n', 0]);
        let e = open_bytes("bad.csv", &[&b"\xFF\xFE"[..], &bad].concat()).unwrap_err();
        assert!(matches!(e, InputError::Decode { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("line 3: not valid UTF-16LE"), "{e}");
        let utf32: Vec<u8> = text.chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
        let e = open_bytes("x.csv", &utf32).unwrap_err();
        assert!(matches!(e, InputError::Encoding { .. }), "{e}");
        assert!(e.to_string().contains("x.csv: the file is UTF-32LE"), "{e}");
    }

    #[test]
    fn a_list_of_devices_is_one_classified_column() {
        let text = "# hosts to contain\r\nhostname\r\n\r\nHOST-1.corp.example\r\n  1E5BC9D7E413DDD7902C2932E418702B84D0CC07 \r\n10.0.0.7\r\n# done\r\nb3a5f6a0-1c2d-4e5f-8a9b-0c1d2e3f4a5b\r\n";
        let (input, _dir) = open_bytes_kept("hosts.txt", text.as_bytes());
        assert_eq!(input.format(), InputFormat::Lines);
        assert_eq!(input.columns().names(), strings(&["device"]));
        assert_eq!(input.results_dialect().line_end(), crate::results::dialect::LineEnd::CrLf);
        let r = rows(&input);
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [4, 5, 6, 8]);
        let defaults = RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("c".into()),
            ..RowDefaults::default()
        };
        let targets: Vec<Target> =
            r.iter().map(|r| plan_row(r, input.columns(), &defaults).unwrap().target).collect();
        assert_eq!(
            targets,
            [
                Target::Name("HOST-1.corp.example".into()),
                Target::Id(ID.into()),
                Target::Ip("10.0.0.7".into()),
                Target::AadDeviceId("b3a5f6a0-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()),
            ]
        );
        // Excel's "Unicode Text" .txt is a sheet: tab-separated, a header.
        let sheet: Vec<u8> = "\u{feff}DeviceName\tKommentar\r\nh1\tfür\r\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let (input, _dir) = open_bytes_kept("export.txt", &sheet);
        assert_eq!(input.format(), InputFormat::Tsv);
        assert_eq!(rows(&input)[0].values, strings(&["h1", "für"]));
        let e = open_bytes("empty.txt", b"# nothing\n\n").unwrap_err();
        assert!(e.to_string().contains("no device on any line"), "{e}");
    }

    #[test]
    fn cr_only_and_mixed_line_ends_keep_physical_lines_in_csv_and_jsonl() {
        let lines = |name: &str, text: &[u8]| -> Vec<u64> {
            rows(&open_bytes_kept(name, text).0).iter().map(|r| r.line).collect()
        };
        for text in [&b"hostname\rh1\rh2\r\rh4\r"[..], b"hostname\r\nh1\nh2\r\n\rh4"] {
            assert_eq!(lines("mac.csv", text), [2, 3, 5]);
        }
        for text in [
            &b"{\"hostname\":\"h1\"}\r{\"hostname\":\"h2\"}\r\r{\"hostname\":\"h4\"}\r"[..],
            b"{\"hostname\":\"h1\"}\r\n{\"hostname\":\"h2\"}\n\r{\"hostname\":\"h4\"}",
        ] {
            assert_eq!(lines("mac.jsonl", text), [1, 2, 4]);
        }
        // A bad value is reported on its own line, not line 1 or 2.
        let (input, _dir) =
            open_bytes_kept("mac.csv", format!("machine_id\r{ID}\rnot-hex\r").as_bytes());
        let r = rows(&input);
        let defaults = RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("c".into()),
            ..RowDefaults::default()
        };
        let problems = plan_row(&r[1], input.columns(), &defaults).unwrap_err();
        assert_eq!(problems[0].to_string().split(',').next(), Some("line 3"));
        let e =
            open_bytes("bad.jsonl", b"{\"hostname\":\"h1\"}\r\r{\"hostname\": h}\r").unwrap_err();
        assert!(e.to_string().contains("bad.jsonl: line 3, column 14:"), "{e}");
    }

    #[test]
    fn a_jsonl_input_is_bounded_in_distinct_keys() {
        let mut text = String::new();
        for i in 0..255 {
            text.push_str(&format!("{{\"hostname\":\"h{i}\",\"k{i}\":1}}\n"));
        }
        // The header's worth: hostname and 255 more keys.
        let input = open_bytes("wide.jsonl", text.as_bytes()).unwrap();
        assert_eq!(input.columns().len(), jsonl::MAX_JSONL_COLUMNS);
        text.push_str(
            "{\"hostname\":\"h\",\"k0\":2}\n\n{\"hostname\":\"x\",\"\\u001b[31mone too many\":1}\n",
        );
        let e = open_bytes("wide.jsonl", text.as_bytes()).unwrap_err();
        assert!(matches!(e, InputError::TooManyKeys { line: 258, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("wide.jsonl: line 258: key \"\\x1b[31mone too many\" would be distinct key number 257; a JSONL input may have at most 256 distinct keys"),
            "{msg}"
        );
    }

    #[test]
    fn a_comment_flag_is_bounded_like_a_comment_cell() {
        let input = open_bytes("a.csv", b"machine_id\nx\n").unwrap();
        let long = RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("c".repeat(MAX_COMMENT_CHARS + 1)),
            ..RowDefaults::default()
        };
        let e = input.check_columns(&long).unwrap_err();
        assert!(matches!(e, InputError::FlagTooLong { chars: 4001, limit: 4000, .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("--comment is 4001 characters long; mdebulk sends at most 4000"),
            "{e}"
        );
        let fits =
            RowDefaults { comment: Some(format!("  {}  ", "c".repeat(MAX_COMMENT_CHARS))), ..long };
        assert!(input.check_columns(&fits).is_ok());
    }

    #[test]
    fn header_lists_in_messages_are_bounded() {
        let header: Vec<String> = (0..5000).map(|i| format!("col{i}")).collect();
        let text = format!("{}\n", header.join(","));
        let e = open_bytes("wide.csv", text.as_bytes()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("[col0, col1, "), "{msg}");
        assert!(msg.contains("col19, ... (5000 columns in all)]"), "{msg}");
        assert!(msg.len() < 1024, "{msg}");
        let e = open_bytes("esc.csv", "\x1b[2J,\u{9b}31m\n".as_bytes()).unwrap_err();
        assert!(e.to_string().contains("[\\x1b[2J, \\u{9b}31m]"), "{e}");
    }

    #[test]
    fn a_csv_results_file_is_recognised_and_its_cells_restored() {
        let text = "owner,'=note,line,machine_id,action,status\n''quoted,'-1,2,x,isolate,error\n";
        let input = Input::from_reader(text.as_bytes(), Some(InputFormat::Csv)).unwrap();
        assert!(input.is_results_file());
        assert_eq!(input.columns().user_columns(), strings(&["owner", "=note"]));
        let r = rows(&input);
        assert_eq!(r[0].values, strings(&["'quoted", "-1", "2", "x", "isolate", "error"]));
        // An ordinary file is read verbatim.
        let plain =
            Input::from_reader(&b"hostname,note\nh,'=x\n"[..], Some(InputFormat::Csv)).unwrap();
        assert!(!plain.is_results_file());
        assert_eq!(rows(&plain)[0].values, strings(&["h", "'=x"]));
        // A JSONL results file is never neutralised, so never restored.
        let jsonl = Input::from_reader(
            &b"{\"hostname\":\"h\",\"note\":\"'=x\",\"line\":2,\"status\":\"error\"}\n"[..],
            Some(InputFormat::Jsonl),
        )
        .unwrap();
        assert!(jsonl.is_results_file());
        assert_eq!(rows(&jsonl)[0].values, strings(&["h", "'=x", "2", "error"]));
    }

    #[test]
    fn every_pass_plans_rows_from_a_mixed_file() {
        let text = format!(
            "MachineId;Action;Comment;Sha1;Ticket\r\n{ID};isolate;IR-1;;T1\r\n{};StopAndQuarantineFile;IR-2;{};T2\r\n",
            ID.to_uppercase(),
            "A".repeat(40)
        );
        let input = Input::from_reader(text.as_bytes(), Some(InputFormat::Csv)).unwrap();
        input.check_columns(&RowDefaults::default()).unwrap();
        assert_eq!(input.columns().user_columns(), strings(&["Comment", "Sha1", "Ticket"]));
        let plans: Vec<RowPlan> = input
            .records()
            .unwrap()
            .map(|r| plan_row(&r.unwrap(), input.columns(), &RowDefaults::default()).unwrap())
            .collect();
        assert_eq!(plans[0].target, Target::Id(ID.into()));
        assert_eq!(plans[0].action, ActionKind::Isolate);
        assert_eq!(plans[1].target, Target::Id(ID.into()));
        assert_eq!(plans[1].sha1.as_deref(), Some("a".repeat(40).as_str()));
        assert_eq!(plans[1].line, 3);
    }

    /// Counts live heap bytes per thread, to prove a pass streams.
    mod alloc_probe {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
        }

        fn add(n: isize) {
            let _ = LIVE.try_with(|c| c.set(c.get() + n));
        }

        /// Net bytes allocated minus freed on the current thread.
        pub fn live() -> isize {
            LIVE.with(|c| c.get())
        }

        /// The system allocator, with per-thread accounting.
        pub struct Probe;

        // SAFETY: every call is forwarded unchanged to the system allocator.
        unsafe impl GlobalAlloc for Probe {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Probe = Probe;
    }

    /// Streams `input` and returns (records, largest growth of live heap
    /// bytes on this thread while doing so).
    fn stream_peak(input: &Input) -> (u64, isize) {
        let base = alloc_probe::live();
        let mut peak = 0;
        let mut n = 0u64;
        for rec in input.records().unwrap() {
            let rec = rec.unwrap();
            assert!(rec.problems.is_empty());
            n += 1;
            peak = peak.max(alloc_probe::live() - base);
        }
        (n, peak)
    }

    #[test]
    fn a_200k_row_file_streams_in_constant_memory() {
        const ROWS: u64 = 200_000;
        let dir = TestDir::new();
        let csv_path = dir.path("big.csv");
        let jsonl_path = dir.path("big.jsonl");
        {
            let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path).unwrap());
            let mut jsonl = std::io::BufWriter::new(std::fs::File::create(&jsonl_path).unwrap());
            writeln!(csv, "machine_id,comment,owner,note").unwrap();
            for i in 0..ROWS {
                let id = format!("{i:040x}");
                writeln!(csv, "{id},IR-{i},owner-{i},\"note, {i}\"").unwrap();
                writeln!(
                    jsonl,
                    r#"{{"machine_id":"{id}","comment":"IR-{i}","owner":"owner-{i}","n":{i}}}"#
                )
                .unwrap();
            }
        }
        let size = std::fs::metadata(&csv_path).unwrap().len() as isize;
        assert!(size > 14_000_000, "{size}");
        for path in [&csv_path, &jsonl_path] {
            let input = open_path(path, None).unwrap();
            let (n, peak) = stream_peak(&input);
            assert_eq!(n, ROWS);
            // The pass holds its read buffer and one record; the file is
            // over 14 MB, a pass must stay under 1 MB.
            assert!(
                peak < 1_000_000,
                "{}: peak growth {peak} bytes for a {size}-byte file",
                path.display()
            );
        }
        // The probe itself sees growth when rows are kept.
        let input = open_path(&csv_path, None).unwrap();
        let base = alloc_probe::live();
        let kept: Vec<Record> = input.records().unwrap().take(20_000).map(|r| r.unwrap()).collect();
        assert!(alloc_probe::live() - base > 1_000_000);
        drop(kept);
    }
}
