//! Which reader a file needs: the input format from the extension or
//! `--input-format`, the UTF-8 BOM, and the delimiter of a CSV file sniffed
//! from its header line.

use std::fmt;
use std::io::{self, BufRead};
use std::path::Path;
use std::str::FromStr;

use crate::api::action::fold_name;

/// The formats an input can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Delimiter-separated values as spreadsheets export them; the delimiter
    /// (comma, semicolon or tab) is sniffed from the header line.
    Csv,
    /// Tab-separated values: like CSV, but the delimiter is always a tab.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl InputFormat {
    /// The format a file extension implies (`csv`, `tsv`, `jsonl`, `ndjson`,
    /// `json-lines`, any case), if any.
    pub fn from_extension(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(InputFormat::Csv),
            "tsv" | "tab" => Some(InputFormat::Tsv),
            "jsonl" | "ndjson" | "json-lines" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }

    /// The name `--input-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an `--input-format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown input format {0:?} (expected csv, tsv or jsonl)")]
pub struct UnknownInputFormat(pub String);

impl FromStr for InputFormat {
    type Err = UnknownInputFormat;

    /// Accepts `csv`, `tsv`, `jsonl`, `ndjson` and `json-lines`, folded like
    /// every other name a user types.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_name(s).as_str() {
            "csv" => Ok(InputFormat::Csv),
            "tsv" | "tab" => Ok(InputFormat::Tsv),
            "jsonl" | "ndjson" | "jsonlines" => Ok(InputFormat::Jsonl),
            _ => Err(UnknownInputFormat(s.to_string())),
        }
    }
}

/// The UTF-8 byte order mark some spreadsheets write in front of CSV files.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Consumes a leading UTF-8 BOM, if any, and returns how many bytes it took
/// (0 or 3).
pub fn skip_bom(r: &mut impl BufRead) -> io::Result<u64> {
    let head = r.fill_buf()?;
    if head.starts_with(BOM) {
        r.consume(BOM.len());
        return Ok(BOM.len() as u64);
    }
    // A buffer shorter than the BOM holds the whole file (or a pipe's first
    // bytes); a BOM split across reads is not worth handling for files.
    Ok(0)
}

/// The most bytes scanned for the header line when sniffing. A header longer
/// than this is judged on its first megabyte.
const SNIFF_LIMIT: usize = 1 << 20;

/// Sniffs the delimiter of a CSV file from its header line: the one of comma,
/// semicolon and tab that occurs most often outside quotes (ties go to comma,
/// then semicolon). Blank lines before the header are skipped; quoted fields
/// may span lines. A header with none of them (a single column) is comma
/// separated.
pub fn sniff_delimiter(r: &mut impl BufRead) -> io::Result<u8> {
    let mut counts = [0usize; 3];
    let mut in_quotes = false;
    let mut started = false;
    let mut scanned = 0usize;
    'scan: loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for &b in buf {
            scanned += 1;
            if in_quotes {
                // `""` inside quotes closes and reopens: same effect.
                in_quotes = b != b'"';
                continue;
            }
            match b {
                b'\n' if started => break 'scan,
                b'\n' | b'\r' | b' ' => {}
                b'"' => in_quotes = true,
                b',' => counts[0] += 1,
                b';' => counts[1] += 1,
                b'\t' => counts[2] += 1,
                _ => {}
            }
            if !matches!(b, b'\n' | b'\r' | b' ') {
                started = true;
            }
        }
        r.consume(n);
        if scanned >= SNIFF_LIMIT {
            break;
        }
    }
    let delimiters = [b',', b';', b'\t'];
    let best = (0..3).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
    Ok(delimiters[best])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(text: &str) -> u8 {
        sniff_delimiter(&mut text.as_bytes()).unwrap()
    }

    #[test]
    fn format_names_and_extensions() {
        for (s, f) in [
            ("csv", InputFormat::Csv),
            ("CSV", InputFormat::Csv),
            ("tsv", InputFormat::Tsv),
            ("jsonl", InputFormat::Jsonl),
            ("ndjson", InputFormat::Jsonl),
            ("json-lines", InputFormat::Jsonl),
        ] {
            assert_eq!(s.parse::<InputFormat>().unwrap(), f);
        }
        assert!(
            "xlsx".parse::<InputFormat>().unwrap_err().to_string().contains("csv, tsv or jsonl")
        );
        for (p, f) in [
            ("a.csv", Some(InputFormat::Csv)),
            ("A.CSV", Some(InputFormat::Csv)),
            ("dir.v2/a.tsv", Some(InputFormat::Tsv)),
            ("a.jsonl", Some(InputFormat::Jsonl)),
            ("a.ndjson", Some(InputFormat::Jsonl)),
            ("a.json-lines", Some(InputFormat::Jsonl)),
            ("a.xlsx", None),
            ("noext", None),
            ("-", None),
        ] {
            assert_eq!(InputFormat::from_extension(Path::new(p)), f, "{p}");
        }
    }

    #[test]
    fn delimiter_is_sniffed_from_the_header_line_only() {
        assert_eq!(sniff("machine_id,comment\nx;y;z;w\n"), b',');
        assert_eq!(sniff("machine_id;comment;owner\r\na,b,c,d,e\n"), b';');
        assert_eq!(sniff("machine_id\tcomment\n"), b'\t');
        assert_eq!(sniff("single\n"), b',');
        assert_eq!(sniff(""), b',');
        // Quoted delimiters do not count, even across lines.
        assert_eq!(sniff("\"a,b,c\nd,e\";x;y\n"), b';');
        // Blank lines before the header are skipped.
        assert_eq!(sniff("\r\n\nhost;comment\n"), b';');
        // Ties prefer comma.
        assert_eq!(sniff("a,b;c\n"), b',');
    }

    #[test]
    fn bom_is_skipped_once() {
        let data = b"\xEF\xBB\xBFa,b\n";
        let mut r = &data[..];
        assert_eq!(skip_bom(&mut r).unwrap(), 3);
        assert_eq!(r, b"a,b\n");
        let mut r = &b"a,b\n"[..];
        assert_eq!(skip_bom(&mut r).unwrap(), 0);
    }
}
