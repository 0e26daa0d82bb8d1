//! Errors that stop an input from being used: every one names the file, and
//! the line, column and value when there are any.

use std::fmt;
use std::io;

use super::columns::Role;
use super::format::WideEncoding;
use super::plan::RowProblem;
use crate::text::{clip, quote};

/// The most line breaks one quoted field may hold: Excel's own limit per
/// cell ("line feeds per cell: 253"), so no spreadsheet export comes near it.
/// A quote still open after that many is a closing quote gone missing, and
/// refusing it here stops it swallowing the rest of the file into one cell.
pub(crate) const MAX_QUOTED_BREAKS: u64 = 253;

/// The most bytes one quoted field may hold: 128 KiB, above Excel's 32,767
/// characters per cell even at 4 UTF-8 bytes each. Also bounds the memory a
/// runaway quote can take before it is refused.
pub(crate) const MAX_QUOTED_BYTES: u64 = 128 * 1024;

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
        "{file}: cannot tell the input format ({}); use a .csv, .tsv, .jsonl, .txt or .xlsx file, or pass --input-format csv|tsv|jsonl|lines|workbook",
        match .extension { Some(e) => format!("extension .{e} is not one of csv, tsv, jsonl, ndjson, txt, xlsx, xlsm, xls, ods"), None => "no file extension".to_string() }
    )]
    UnknownFormat {
        /// The input as the user named it.
        file: String,
        /// The extension found, if any.
        extension: Option<String>,
    },

    /// The file is UTF-32, which no spreadsheet writes and mdebulk does not
    /// read.
    #[error(
        "{file}: the file is {encoding} ({}), which mdebulk does not read; save it as UTF-8 or UTF-16: in Excel, Save As \"CSV UTF-8 (Comma delimited)\"; in PowerShell, Get-Content IN | Set-Content -Encoding UTF8 OUT (or Export-Csv -Encoding UTF8)",
        if *.bom { "it starts with that encoding's byte order mark" } else { "judged by its NUL bytes; it has no byte order mark" }
    )]
    Encoding {
        /// The input as the user named it.
        file: String,
        /// The encoding found.
        encoding: WideEncoding,
        /// Whether a byte order mark said so (else the NUL bytes did).
        bom: bool,
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
        HeaderList(.header), accepted(Role::MachineId), accepted(Role::DeviceName)
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

    /// `--tenants` without a tenant column or `--tenant`: no row says
    /// which tenant it acts in.
    #[error(
        "{file}: no tenant column and no --tenant: with --tenants, say which tenant each row acts in, per row in a column {} (a profile name or tenant id), or for every row with --tenant NAME",
        accepted(Role::Tenant)
    )]
    NoTenantColumn {
        /// The input as the user named it.
        file: String,
    },

    /// A tenant column in a run without `--tenants`: the rows name tenants
    /// but would all act in the one tenant of the credentials.
    #[error(
        "{file}: column {column} names a tenant per row, but there is no --tenants file: every row would act in the one tenant of the credentials. Give --tenants FILE to act in each row's tenant, or --ignore-column {column} if the column means something else"
    )]
    TenantColumnWithoutProfiles {
        /// The input as the user named it.
        file: String,
        /// The column, quoted.
        column: String,
    },

    /// A flag value longer than the cell it stands for may be.
    #[error(
        "{flag} is {chars} characters long; mdebulk sends at most {limit} (used for every row of {file})"
    )]
    FlagTooLong {
        /// The input as the user named it.
        file: String,
        /// The flag.
        flag: &'static str,
        /// Its length in characters.
        chars: usize,
        /// The most allowed.
        limit: usize,
    },

    /// A JSONL line that is not a JSON object.
    #[error("{file}: line {line}, column {column}: {}", clip(.message).max(MESSAGE_CHARS))]
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

    /// A JSONL input with more distinct keys than it may have columns.
    #[error(
        "{file}: line {line}: key {} would be distinct key number {}; a JSONL input may have at most {limit} distinct keys, as each one becomes a column of every result row: give every line the same keys, and put what differs from line to line in the values",
        quote(.key), .limit + 1
    )]
    TooManyKeys {
        /// The input as the user named it.
        file: String,
        /// Physical line of the key past the limit.
        line: u64,
        /// That key.
        key: String,
        /// The most distinct keys allowed.
        limit: usize,
    },

    /// A CSV cell that is not UTF-8, in a file read as UTF-8 because
    /// `--encoding utf-8` said so.
    #[error(
        "{file}: line {line}, column {}: not valid UTF-8, the encoding --encoding gave (leave --encoding out to have Windows-1252 guessed, or name the file's encoding)",
        clip(.column)
    )]
    Utf8 {
        /// The input as the user named it.
        file: String,
        /// Physical line where the record starts, 1-based.
        line: u64,
        /// The column's name (or `#n` past the header's width).
        column: String,
    },

    /// Bytes that are not text in the encoding the file is read in (an
    /// unpaired UTF-16 surrogate, a file cut in half a code unit).
    #[error(
        "{file}: line {line}: not valid {encoding}, the encoding the file is read in ({}); save it again, or name its encoding with --encoding utf-8|utf-16le|utf-16be|windows-1252|latin1",
        if *.given { "as --encoding gave" } else { "judged by its byte order mark or NUL bytes" }
    )]
    Decode {
        /// The input as the user named it.
        file: String,
        /// Physical line of the bad bytes, 1-based.
        line: u64,
        /// The encoding the file was decoded in.
        encoding: super::encoding::TextEncoding,
        /// Whether `--encoding` chose it.
        given: bool,
    },

    /// A workbook that cannot be read (not a workbook, damaged, encrypted).
    #[error("{file}: {}", clip(.message).max(MESSAGE_CHARS))]
    Workbook {
        /// The input as the user named it.
        file: String,
        /// What the workbook reader said.
        message: String,
    },

    /// `--sheet` names no sheet of the workbook.
    #[error("{file}: no sheet {} (by name, or by position from 1); the workbook's sheets are [{}]", quote(.sheet), HeaderList(.sheets))]
    NoSuchSheet {
        /// The input as the user named it.
        file: String,
        /// The sheet asked for.
        sheet: String,
        /// The workbook's sheets, in order.
        sheets: Vec<String>,
    },

    /// A `--column` or `--ignore-column` naming a header the file lacks.
    #[error("{file}: {flag} names the column {}, but the header is [{}]", quote(.column), HeaderList(.header))]
    NoSuchColumn {
        /// The input as the user named it.
        file: String,
        /// The flag as given (`--column machine_id=Device Id`).
        flag: String,
        /// The header name it gives.
        column: String,
        /// The column names found.
        header: Vec<String>,
    },

    /// A CSV record that could not be read.
    #[error("{file}: line {line}: {}", clip(.message).max(MESSAGE_CHARS))]
    Csv {
        /// The input as the user named it.
        file: String,
        /// Physical line where the record starts, 1-based.
        line: u64,
        /// The parser's explanation.
        message: String,
    },

    /// A quoted CSV field that never closes (see [`Unclosed`]).
    #[error("{file}: line {line}, column {}: {}", clip(.column), .kind)]
    UnclosedQuote {
        /// The input as the user named it.
        file: String,
        /// Physical line of the opening quote, 1-based.
        line: u64,
        /// The column's name (or `#n` past the header's width, or in the header).
        column: String,
        /// How it was found out.
        kind: Unclosed,
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
            | InputError::Encoding { file, .. }
            | InputError::Empty { file, .. }
            | InputError::NoTargetColumn { file, .. }
            | InputError::NoActionColumn { file }
            | InputError::NoCommentColumn { file }
            | InputError::NoTenantColumn { file }
            | InputError::TenantColumnWithoutProfiles { file, .. }
            | InputError::FlagTooLong { file, .. }
            | InputError::Json { file, .. }
            | InputError::TooManyKeys { file, .. }
            | InputError::Utf8 { file, .. }
            | InputError::Decode { file, .. }
            | InputError::NoSuchColumn { file, .. }
            | InputError::Workbook { file, .. }
            | InputError::NoSuchSheet { file, .. }
            | InputError::Csv { file, .. }
            | InputError::UnclosedQuote { file, .. }
            | InputError::InvalidRows { file, .. } => file,
        }
    }
}

/// How a quoted CSV field that never closes was found out. Either way the
/// parser would have read the rest of the file (or the next few hundred
/// lines) into that one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclosed {
    /// The file ends inside the quoted field.
    AtEndOfFile,
    /// The field holds more line breaks than one spreadsheet cell can.
    TooManyLines,
    /// The field holds more bytes than one spreadsheet cell can.
    TooLong,
}

impl fmt::Display for Unclosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quote opens a field here and ")?;
        match self {
            Unclosed::AtEndOfFile => {
                f.write_str("is never closed: the field runs to the end of the file")
            }
            Unclosed::TooManyLines => write!(
                f,
                "is still open {MAX_QUOTED_BREAKS} line breaks later (more than a spreadsheet cell holds)"
            ),
            Unclosed::TooLong => write!(
                f,
                "is still open {} KiB later (more than a spreadsheet cell holds)",
                MAX_QUOTED_BYTES / 1024
            ),
        }?;
        f.write_str("; add the missing closing quote, or write a quote inside a field as \"\"")
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

/// The most characters of a parser's message shown: they can quote the
/// input (serde_json quotes a string that is not an object).
const MESSAGE_CHARS: usize = 400;

/// The most header names listed in a message; a header can have thousands.
const HEADER_NAMES_SHOWN: usize = 20;

/// A header's names, comma separated, each clipped, at most
/// [`HEADER_NAMES_SHOWN`] of them.
struct HeaderList<'a>(&'a [String]);

impl fmt::Display for HeaderList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().take(HEADER_NAMES_SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", clip(name).max(40))?;
        }
        if self.0.len() > HEADER_NAMES_SHOWN {
            write!(f, ", ... ({} columns in all)", self.0.len())?;
        }
        Ok(())
    }
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
