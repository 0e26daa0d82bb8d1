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
//! escape character, no comments, no trimming. Writing is strict: quotes
//! only where needed, `""` inside them, and the delimiter, line end and BOM
//! of the dialect: a results file repeats those of its input
//! ([`Dialect::sniff`] notes the line end and the caller the BOM), so the
//! spreadsheet that opened the input shows the results in columns too
//! (German Excel's `;`, a UTF-8 BOM so Excel does not take UTF-8 for its
//! own code page).
//! Headers and record widths are the callers' business on both sides (the
//! readers report a short row with its line number, the writer checks it
//! before the record is formatted), so the crate's own handling is off.

use std::io::{self, BufRead, Write};

/// The UTF-8 byte order mark some spreadsheets write in front of CSV files.
/// Read past; written when the dialect says so.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How lines end in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// `\n`: Unix, and the results of an input that does not say.
    Lf,
    /// `\r\n`: Windows, Excel.
    CrLf,
    /// A lone `\r`: Excel's "CSV (Macintosh)".
    Cr,
}

/// A CSV dialect: the delimiter, the line end and whether a UTF-8 BOM comes
/// first. Readers use only the delimiter (they accept every line end and
/// skip a BOM); writers use all three. The rest of the dialect is fixed (see
/// the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The field delimiter.
    delimiter: u8,
    /// The line end written.
    line_end: LineEnd,
    /// Whether a UTF-8 BOM is written first.
    bom: bool,
}

impl Dialect {
    /// Comma-separated, `\n`, no BOM: the results of an input that gives no
    /// dialect of its own, and a CSV input whose header line gives no other
    /// delimiter.
    pub const COMMA: Dialect = Dialect { delimiter: b',', line_end: LineEnd::Lf, bom: false };
    /// Tab-separated: TSV input, whatever its header line holds.
    pub const TAB: Dialect = Dialect { delimiter: b'\t', line_end: LineEnd::Lf, bom: false };
    /// The delimiters [`Dialect::sniff`] chooses from, in the order ties go.
    const SNIFFED: [u8; 3] = [b',', b';', b'\t'];

    /// The field delimiter.
    pub fn delimiter(self) -> u8 {
        self.delimiter
    }

    /// The line end written.
    pub fn line_end(self) -> LineEnd {
        self.line_end
    }

    /// Whether a UTF-8 BOM is written first.
    pub fn bom(self) -> bool {
        self.bom
    }

    /// The same dialect with another delimiter.
    pub fn with_delimiter(self, delimiter: u8) -> Dialect {
        Dialect { delimiter, ..self }
    }

    /// The same dialect with another line end.
    pub fn with_line_end(self, line_end: LineEnd) -> Dialect {
        Dialect { line_end, ..self }
    }

    /// The same dialect, with or without a BOM.
    pub fn with_bom(self, bom: bool) -> Dialect {
        Dialect { bom, ..self }
    }

    /// Sniffs the dialect of a CSV file from its header line: the delimiter
    /// of comma, semicolon and tab that occurs most often outside quotes
    /// (ties go to comma, then semicolon). Blank lines before the header are
    /// skipped; quoted fields may span lines; the header ends at `\n`,
    /// `\r\n` or a lone `\r`, and that line end is the dialect's (`\n` when
    /// the header is the whole file). A header with none of them (a single
    /// column) is comma separated. No BOM: that is the caller's to know.
    pub fn sniff(r: &mut impl BufRead) -> io::Result<Dialect> {
        let mut counts = [0usize; 3];
        let mut in_quotes = false;
        let mut started = false;
        let mut scanned = 0usize;
        let mut line_end = LineEnd::Lf;
        'scan: loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            for (i, &b) in buf.iter().enumerate() {
                scanned += 1;
                if in_quotes {
                    // `""` inside quotes closes and reopens: same effect.
                    in_quotes = b != b'"';
                    continue;
                }
                match b {
                    // A lone `\r` ends the line too (Excel's "CSV (Macintosh)").
                    b'\n' if started => break 'scan,
                    b'\r' if started => {
                        // Is the `\r` followed by a `\n`? The next byte may
                        // be in the next buffer.
                        let next = match buf.get(i + 1) {
                            Some(&next) => Some(next),
                            None => {
                                r.consume(n);
                                r.fill_buf()?.first().copied()
                            }
                        };
                        line_end = if next == Some(b'\n') { LineEnd::CrLf } else { LineEnd::Cr };
                        break 'scan;
                    }
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
        Ok(Dialect { delimiter: Dialect::SNIFFED[best], line_end, bom: false })
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
    /// inside them, the dialect's line end. The BOM, when the dialect has
    /// one, is the caller's to write first ([`Dialect::bom_bytes`]), as the
    /// header's write can fail and this cannot. The header is written as an
    /// ordinary record, and a record of the wrong width is an error (the
    /// caller checks widths first, so that error never carries data).
    pub fn writer<W: Write>(self, w: W) -> csv::Writer<W> {
        let terminator = match self.line_end {
            LineEnd::Lf => csv::Terminator::Any(b'\n'),
            LineEnd::CrLf => csv::Terminator::CRLF,
            LineEnd::Cr => csv::Terminator::Any(b'\r'),
        };
        csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(terminator)
            .quote_style(csv::QuoteStyle::Necessary)
            .double_quote(true)
            .has_headers(false)
            .flexible(false)
            .from_writer(w)
    }
}

impl Dialect {
    /// The bytes a file in this dialect starts with: the UTF-8 BOM or none.
    pub fn bom_bytes(self) -> &'static [u8] {
        if self.bom { BOM } else { b"" }
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
    fn the_header_line_gives_the_line_end() {
        let end = |t: &str| Dialect::sniff(&mut t.as_bytes()).unwrap().line_end();
        assert_eq!(end("a;b\r\nc;d\n"), LineEnd::CrLf);
        assert_eq!(end("a;b\rc;d\r\n"), LineEnd::Cr);
        assert_eq!(end("\r\n\na,b\nc\r\n"), LineEnd::Lf);
        assert_eq!(end("\"a\r\nb\",c\r\n"), LineEnd::CrLf);
        assert_eq!(end("a,b"), LineEnd::Lf);
        // A `\r\n` split between two buffers is still one line end.
        let mut split = io::BufReader::with_capacity(4, &b"a;b\r\nc"[..]);
        assert_eq!(Dialect::sniff(&mut split).unwrap().line_end(), LineEnd::CrLf);
        let mut split = io::BufReader::with_capacity(4, &b"a;b\rc;d"[..]);
        assert_eq!(Dialect::sniff(&mut split).unwrap().line_end(), LineEnd::Cr);
    }

    #[test]
    fn a_writer_repeats_delimiter_line_end_and_bom() {
        let d = Dialect::COMMA.with_delimiter(b';').with_line_end(LineEnd::CrLf).with_bom(true);
        let mut out = d.bom_bytes().to_vec();
        let mut w = d.writer(&mut out);
        w.write_record(["a", "b;c"]).unwrap();
        w.write_record(["é", ""]).unwrap();
        drop(w);
        assert_eq!(out, "\u{feff}a;\"b;c\"\r\né;\r\n".as_bytes());
        let mut out = Vec::new();
        Dialect::COMMA.with_line_end(LineEnd::Cr).writer(&mut out).write_record(["x"]).unwrap();
        assert_eq!(out, b"x\r");
        assert_eq!(Dialect::COMMA.bom_bytes(), b"");
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
