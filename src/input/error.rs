//! Errors that stop an input from being used: every one names the file, and
//! the line, column and value when there are any.

use std::fmt;
use std::io;

use super::columns::Role;
use super::plan::RowProblem;

/// Why an input cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or read (or stdin could not be spooled).
    #[error("{file}: {error}")]
    Io {
        /// The input as the user named it.
        file: String,
        /// What the operating system said.
        error: io::Error,
    },

    /// Neither the extension nor `--input-format` says what the file is.
    #[error(
        "{file}: cannot tell the input format ({}); use a .csv, .tsv or .jsonl file, or pass --input-format csv|tsv|jsonl",
        match .extension { Some(e) => format!("extension .{e} is not one of csv, tsv, jsonl, ndjson"), None => "no file extension".to_string() }
    )]
    UnknownFormat {
        /// The input as the user named it.
        file: String,
        /// The extension found, if any.
        extension: Option<String>,
    },

    /// Nothing to read: no header row, or no JSON object.
    #[error("{file}: the input is empty ({expected})")]
    Empty {
        /// The input as the user named it.
        file: String,
        /// What was expected, for the message.
        expected: &'static str,
    },

    /// No column identifies the device.
    #[error(
        "{file}: no machine id or device name column; the header is [{}]; name a column {} or {}",
        .header.join(", "), accepted(Role::MachineId), accepted(Role::DeviceName)
    )]
    NoTargetColumn {
        /// The input as the user named it.
        file: String,
        /// The column names found.
        header: Vec<String>,
    },

    /// No `action` column and no `--action` default.
    #[error(
        "{file}: no action column and no --action: say which action to run, per row in a column {} or for every row with --action",
        accepted(Role::Action)
    )]
    NoActionColumn {
        /// The input as the user named it.
        file: String,
    },

    /// No `comment` column and no `--comment` default.
    #[error(
        "{file}: no comment column and no --comment: the API requires a Comment on every action; add a column {} or pass --comment",
        accepted(Role::Comment)
    )]
    NoCommentColumn {
        /// The input as the user named it.
        file: String,
    },

    /// A JSONL line that is not a JSON object.
    #[error("{file}: line {line}, column {column}: {message}")]
    Json {
        /// The input as the user named it.
        file: String,
        /// Physical line, 1-based.
        line: u64,
        /// Character position in the line, 1-based, as the JSON parser reports it.
        column: usize,
        /// What is wrong there.
        message: String,
    },

    /// A CSV cell that is not UTF-8.
    #[error("{file}: line {line}, column {column}: not valid UTF-8 (save the file as UTF-8 CSV)")]
    Utf8 {
        /// The input as the user named it.
        file: String,
        /// Physical line where the record starts, 1-based.
        line: u64,
        /// The column's name (or `#n` past the header's width).
        column: String,
    },

    /// A CSV record that could not be read.
    #[error("{file}: line {line}: {message}")]
    Csv {
        /// The input as the user named it.
        file: String,
        /// Physical line where the record starts, 1-based.
        line: u64,
        /// The parser's explanation.
        message: String,
    },

    /// Rows that failed validation, every one listed.
    #[error("{file}: {} invalid row{}:\n{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, ProblemList(.problems))]
    InvalidRows {
        /// The input as the user named it.
        file: String,
        /// Every problem found, in line order.
        problems: Vec<RowProblem>,
    },
}

impl InputError {
    /// The input the error is about, as the user named it.
    pub fn file(&self) -> &str {
        match self {
            InputError::Io { file, .. }
            | InputError::UnknownFormat { file, .. }
            | InputError::Empty { file, .. }
            | InputError::NoTargetColumn { file, .. }
            | InputError::NoActionColumn { file }
            | InputError::NoCommentColumn { file }
            | InputError::Json { file, .. }
            | InputError::Utf8 { file, .. }
            | InputError::Csv { file, .. }
            | InputError::InvalidRows { file, .. } => file,
        }
    }
}

/// "machine_id (or DeviceId, id, ...)": a role's accepted header names.
fn accepted(role: Role) -> String {
    let aliases = role.aliases();
    if aliases.len() == 1 {
        return aliases[0].to_string();
    }
    format!("{} (or {})", aliases[0], aliases[1..].join(", "))
}

/// Problems, one per line, indented.
struct ProblemList<'a>(&'a [RowProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}
