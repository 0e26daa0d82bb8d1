//! Which reader a file needs: the input format from the extension or
//! `--input-format`, and UTF-16 and UTF-32 recognised by their NUL bytes
//! (UTF-16 is decoded, [`super::encoding`]; UTF-32 is refused with a
//! message saying so instead of "no id column"). The CSV dialect itself
//! (the UTF-8 BOM, the delimiter sniffed from the header line) is
//! [`crate::results::dialect`]'s.

use std::fmt;
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
    /// One device per line, no header (`hosts.txt`); a `.txt` whose first
    /// line holds a tab is read as TSV instead (Excel's "Unicode Text").
    Lines,
    /// A workbook: `.xlsx`, `.xlsm`, `.xls` or `.ods`, one sheet of it.
    Workbook,
}

impl InputFormat {
    /// The format a file extension implies (`csv`, `tsv`, `jsonl`, `ndjson`,
    /// `json-lines`, `txt`, `list`, `xlsx`, `xlsm`, `xlsb`, `xls`, `ods`,
    /// any case), if any.
    pub fn from_extension(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(InputFormat::Csv),
            "tsv" | "tab" => Some(InputFormat::Tsv),
            "jsonl" | "ndjson" | "json-lines" => Some(InputFormat::Jsonl),
            "txt" | "list" => Some(InputFormat::Lines),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(InputFormat::Workbook),
            _ => None,
        }
    }

    /// The name `--input-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Lines => "lines",
            InputFormat::Workbook => "workbook",
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
#[error("unknown input format {0:?} (expected csv, tsv, jsonl, lines or workbook)")]
pub struct UnknownInputFormat(pub String);

impl FromStr for InputFormat {
    type Err = UnknownInputFormat;

    /// Accepts `csv`, `tsv`, `jsonl`, `ndjson`, `json-lines`, `lines` and
    /// `txt`, folded like
    /// every other name a user types.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_name(s).as_str() {
            "csv" => Ok(InputFormat::Csv),
            "tsv" | "tab" => Ok(InputFormat::Tsv),
            "jsonl" | "ndjson" | "jsonlines" => Ok(InputFormat::Jsonl),
            "lines" | "txt" | "list" => Ok(InputFormat::Lines),
            "workbook" | "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Ok(InputFormat::Workbook),
            _ => Err(UnknownInputFormat(s.to_string())),
        }
    }
}

/// A Unicode encoding other than UTF-8 recognised by its NUL bytes or BOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WideEncoding {
    /// UTF-16, little-endian: Windows' "Unicode" (PowerShell 5's `Out-File`,
    /// Excel's "Unicode Text").
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
    /// UTF-32, little-endian.
    Utf32Le,
    /// UTF-32, big-endian.
    Utf32Be,
}

impl fmt::Display for WideEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WideEncoding::Utf16Le => "UTF-16LE",
            WideEncoding::Utf16Be => "UTF-16BE",
            WideEncoding::Utf32Le => "UTF-32LE",
            WideEncoding::Utf32Be => "UTF-32BE",
        })
    }
}

/// How many leading bytes [`sniff_wide_encoding`] looks at.
pub const ENCODING_SNIFF_BYTES: usize = 1024;

/// Recognises UTF-16 and UTF-32 from the first bytes of a file: by their
/// byte order mark (the `bool` is true), or without one by where the NUL
/// bytes are. In those encodings every ASCII character (delimiters, line
/// ends, most header names) carries one (UTF-16) or three (UTF-32) NUL bytes
/// at fixed places, which UTF-8 text practically never has: `h\0o\0` is
/// UTF-16LE. The verdict takes a majority of the code units, so a few
/// non-ASCII characters do not hide it.
pub fn sniff_wide_encoding(head: &[u8]) -> Option<(WideEncoding, bool)> {
    // UTF-32LE's BOM begins with UTF-16LE's: test the longer one first.
    for (bom, enc) in [
        (&b"\xFF\xFE\0\0"[..], WideEncoding::Utf32Le),
        (b"\0\0\xFE\xFF", WideEncoding::Utf32Be),
        (b"\xFF\xFE", WideEncoding::Utf16Le),
        (b"\xFE\xFF", WideEncoding::Utf16Be),
    ] {
        if head.starts_with(bom) {
            return Some((enc, true));
        }
    }
    let majority = |units: usize, hits: usize| units > 0 && hits * 2 > units;
    let quads: Vec<&[u8]> = head.chunks_exact(4).collect();
    let le32 = quads.iter().filter(|q| q[0] != 0 && q[1..] == [0, 0, 0]).count();
    let be32 = quads.iter().filter(|q| q[..3] == [0, 0, 0] && q[3] != 0).count();
    if majority(quads.len(), le32) {
        return Some((WideEncoding::Utf32Le, false));
    }
    if majority(quads.len(), be32) {
        return Some((WideEncoding::Utf32Be, false));
    }
    let pairs: Vec<&[u8]> = head.chunks_exact(2).collect();
    let le16 = pairs.iter().filter(|p| p[0] != 0 && p[1] == 0).count();
    let be16 = pairs.iter().filter(|p| p[0] == 0 && p[1] != 0).count();
    // At least two code units: a lone `x\0` is too little to go on.
    if pairs.len() >= 2 && majority(pairs.len(), le16) {
        return Some((WideEncoding::Utf16Le, false));
    }
    if pairs.len() >= 2 && majority(pairs.len(), be16) {
        return Some((WideEncoding::Utf16Be, false));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "docx"
                .parse::<InputFormat>()
                .unwrap_err()
                .to_string()
                .contains("csv, tsv, jsonl, lines or workbook")
        );
        for (p, f) in [
            ("a.csv", Some(InputFormat::Csv)),
            ("A.CSV", Some(InputFormat::Csv)),
            ("dir.v2/a.tsv", Some(InputFormat::Tsv)),
            ("a.jsonl", Some(InputFormat::Jsonl)),
            ("a.ndjson", Some(InputFormat::Jsonl)),
            ("a.json-lines", Some(InputFormat::Jsonl)),
            ("hosts.txt", Some(InputFormat::Lines)),
            ("a.XLSX", Some(InputFormat::Workbook)),
            ("a.ods", Some(InputFormat::Workbook)),
            ("a.docx", None),
            ("noext", None),
            ("-", None),
        ] {
            assert_eq!(InputFormat::from_extension(Path::new(p)), f, "{p}");
        }
    }

    #[test]
    fn utf16_and_utf32_are_recognised_with_or_without_bom() {
        fn encode16(s: &str, be: bool) -> Vec<u8> {
            s.encode_utf16()
                .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() })
                .collect()
        }
        fn encode32(s: &str, be: bool) -> Vec<u8> {
            s.chars()
                .flat_map(|c| if be { (c as u32).to_be_bytes() } else { (c as u32).to_le_bytes() })
                .collect()
        }
        let text = "machine_id,comment\r\nZoë,ü\r\n";
        for (bytes, want) in [
            (encode16(text, false), WideEncoding::Utf16Le),
            (encode16(text, true), WideEncoding::Utf16Be),
            (encode32(text, false), WideEncoding::Utf32Le),
            (encode32(text, true), WideEncoding::Utf32Be),
        ] {
            assert_eq!(sniff_wide_encoding(&bytes), Some((want, false)), "{want}");
            let bom = if matches!(want, WideEncoding::Utf16Le | WideEncoding::Utf16Be) {
                encode16("\u{feff}", want == WideEncoding::Utf16Be)
            } else {
                encode32("\u{feff}", want == WideEncoding::Utf32Be)
            };
            let with_bom = [bom, bytes].concat();
            assert_eq!(sniff_wide_encoding(&with_bom), Some((want, true)), "{want} with BOM");
        }
        // UTF-8, with or without BOM, with the odd NUL, is none of them.
        for utf8 in [
            &b"machine_id,comment\n"[..],
            b"\xEF\xBB\xBFhost\n",
            b"host,note\nh,a\0b\n",
            b"",
            b"h\0",
            "Zoë,ü\n".as_bytes(),
        ] {
            assert_eq!(sniff_wide_encoding(utf8), None, "{utf8:?}");
        }
    }
}
