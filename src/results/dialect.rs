//! The CSV dialect, in one place: what the readers accept and what the
//! results writer produces, and the only code that configures the `csv`
//! crate's `ReaderBuilder` and `WriterBuilder` (the input readers in
//! `input::delimited`, the results writer in `output::csv`).
//!
//! It lives on the ground floor because both sides need it and `output` may
//! stand on nothing but this room.
//!
//! Reading is lenient, as spreadsheets export: an optional UTF-8 BOM
//! ([`skip_bom`]), a comma, semicolon or tab delimiter ([`Dialect::sniff`]),
//! `\n`, `\r\n` or a lone `\r` line ends, RFC 4180 quoting with `""` and no
//! escape character, no comments, no trimming. Writing is strict: comma,
//! quotes only where needed, `""` inside them, `\n` line ends, no BOM.
//! Headers and record widths are the callers' business on both sides (the
//! readers report a short row with its line number, the writer checks it
//! before the record is formatted), so the crate's own handling is off.

use std::io::{self, BufRead, Write};

/// The UTF-8 byte order mark some spreadsheets write in front of CSV files.
/// Read past, never written.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A CSV dialect: the delimiter, which is all that differs between the files
/// read; the rest of the dialect is fixed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The field delimiter.
    delimiter: u8,
}

impl Dialect {
    /// Comma-separated: the results files, and a CSV input whose header line
    /// gives no other delimiter.
    pub const COMMA: Dialect = Dialect { delimiter: b',' };
    /// Tab-separated: TSV input, whatever its header line holds.
    pub const TAB: Dialect = Dialect { delimiter: b'\t' };
    /// The delimiters [`Dialect::sniff`] chooses from, in the order ties go.
    const SNIFFED: [u8; 3] = [b',', b';', b'\t'];

    /// The field delimiter.
    pub fn delimiter(self) -> u8 {
        self.delimiter
    }

    /// Sniffs the dialect of a CSV file from its header line: the delimiter
    /// of comma, semicolon and tab that occurs most often outside quotes
    /// (ties go to comma, then semicolon). Blank lines before the header are
    /// skipped; quoted fields may span lines; the header ends at `\n`,
    /// `\r\n` or a lone `\r`. A header with none of them (a single column) is
    /// comma separated.
    pub fn sniff(r: &mut impl BufRead) -> io::Result<Dialect> {
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
                    // A lone `\r` ends the line too (Excel's "CSV (Macintosh)").
                    b'\n' | b'\r' if started => break 'scan,
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
        let best = (0..3).fold(0, |best, i| if counts[i] > counts[best] { i } else { best });
        Ok(Dialect { delimiter: Dialect::SNIFFED[best] })
    }

    /// A reader builder for this dialect; the caller adds only what is not
    /// the dialect (the buffer size) and the source. Headers are read as
    /// ordinary records and widths are not enforced, so the caller can name
    /// the line of a header or a short row itself.
    pub fn reader(self) -> csv::ReaderBuilder {
        let mut b = csv::ReaderBuilder::new();
        b.delimiter(self.delimiter)
            .has_headers(false)
            .flexible(true)
            .quoting(true)
            .double_quote(true)
            .escape(None)
            .comment(None)
            .trim(csv::Trim::None)
            // `CRLF` reads `\r\n`, `\n` and a lone `\r` alike.
            .terminator(csv::Terminator::CRLF);
        b
    }

    /// A writer over `w` in this dialect: quotes only where needed, `""`
    /// inside them, `\n` line ends, no BOM. The header is written as an
    /// ordinary record, and a record of the wrong width is an error (the
    /// caller checks widths first, so that error never carries data).
    pub fn writer<W: Write>(self, w: W) -> csv::Writer<W> {
        csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .quote_style(csv::QuoteStyle::Necessary)
            .double_quote(true)
            .has_headers(false)
            .flexible(false)
            .from_writer(w)
    }
}

/// The most bytes scanned for the header line when sniffing. A header longer
/// than this is judged on its first megabyte.
const SNIFF_LIMIT: usize = 1 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(text: &str) -> u8 {
        Dialect::sniff(&mut text.as_bytes()).unwrap().delimiter()
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
        // A lone CR ends the header: the rows' delimiters do not count.
        assert_eq!(sniff("host;comment\ra,b,c,d\re,f,g,h\r"), b';');
        assert_eq!(sniff("\r\rhost\ra,b\r"), b',');
        assert_eq!(sniff("\r\rhost;x\ra,b,c\r"), b';');
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
