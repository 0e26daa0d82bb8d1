//! The text encoding of an input, and decoding it to UTF-8.
//!
//! Spreadsheets on Windows save text in more than UTF-8: Excel's plain
//! "CSV" is Windows-1252 on a Western system, its "Unicode Text" is UTF-16LE
//! with a byte order mark. The encoding is chosen once, at open
//! ([`detect`]): `--encoding` when given; else a byte order mark (UTF-8,
//! UTF-16LE, UTF-16BE); else UTF-16 judged by its NUL bytes; else UTF-8
//! when the whole file is valid UTF-8, and Windows-1252 otherwise (every
//! byte sequence is valid Windows-1252, so the guess is the caller's to
//! announce). An input that is not UTF-8 is decoded once into a private
//! UTF-8 spool ([`Transcode`]) that every pass then reads, so the readers
//! deal in UTF-8 only. Decoding maps each line end to the same line end, so
//! the physical line numbers of the decoded text are those of the file.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use crate::api::action::fold_name;

/// The encodings an input can be read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8, with or without a byte order mark.
    Utf8,
    /// UTF-16, little-endian: Excel's "Unicode Text", PowerShell 5's
    /// `Out-File`.
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
    /// Windows-1252: Excel's plain "CSV" on a Western Windows.
    Windows1252,
    /// ISO-8859-1: each byte is the code point of the same number.
    Latin1,
}

impl Detected {
    /// UTF-8 without a BOM, as told: what a workbook's cells are.
    pub const UTF8: Detected =
        Detected { encoding: TextEncoding::Utf8, bom_len: 0, guessed_at_line: None };
}

impl TextEncoding {
    /// The name `--encoding` takes and messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Utf16Le => "UTF-16LE",
            TextEncoding::Utf16Be => "UTF-16BE",
            TextEncoding::Windows1252 => "Windows-1252",
            TextEncoding::Latin1 => "Latin-1",
        }
    }

    /// The byte order mark of the encoding, if it has one.
    fn bom(self) -> Option<&'static [u8]> {
        match self {
            TextEncoding::Utf8 => Some(b"\xEF\xBB\xBF"),
            TextEncoding::Utf16Le => Some(b"\xFF\xFE"),
            TextEncoding::Utf16Be => Some(b"\xFE\xFF"),
            TextEncoding::Windows1252 | TextEncoding::Latin1 => None,
        }
    }
}

impl fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an `--encoding` value that names no encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?} (expected utf-8, utf-16le, utf-16be, windows-1252 or latin1)")]
pub struct UnknownEncoding(pub String);

impl FromStr for TextEncoding {
    type Err = UnknownEncoding;

    /// Accepts the usual spellings (`utf-8`, `utf8`, `UTF-16LE`, `cp1252`,
    /// `iso-8859-1`, ...), folded like every other name a user types.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_name(s).as_str() {
            "utf8" => Ok(TextEncoding::Utf8),
            "utf16le" | "unicode" => Ok(TextEncoding::Utf16Le),
            "utf16be" => Ok(TextEncoding::Utf16Be),
            "windows1252" | "cp1252" | "ansi" => Ok(TextEncoding::Windows1252),
            "latin1" | "iso88591" => Ok(TextEncoding::Latin1),
            _ => Err(UnknownEncoding(s.to_string())),
        }
    }
}

/// How an input's encoding was decided, for the warning and the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The encoding the input is read in.
    pub encoding: TextEncoding,
    /// Bytes of byte order mark at the start of the file (skipped).
    pub bom_len: u64,
    /// Set when the encoding is a guess: the file is not valid UTF-8 and no
    /// `--encoding` was given; the line of its first byte that is not.
    pub guessed_at_line: Option<u64>,
}

/// Decides the encoding of the bytes `open` gives (read from the start):
/// see the module documentation. `head` is the file's first bytes, for the
/// byte order mark and the NUL-byte sniff (`wide` says what that sniff
/// found: UTF-16 without a BOM).
pub fn detect(
    head: &[u8],
    wide: Option<TextEncoding>,
    given: Option<TextEncoding>,
    open: impl FnOnce() -> io::Result<Box<dyn Read>>,
) -> io::Result<Detected> {
    let bom_of =
        |e: TextEncoding| e.bom().filter(|b| head.starts_with(b)).map_or(0, |b| b.len() as u64);
    if let Some(encoding) = given {
        return Ok(Detected { encoding, bom_len: bom_of(encoding), guessed_at_line: None });
    }
    for encoding in [TextEncoding::Utf8, TextEncoding::Utf16Le, TextEncoding::Utf16Be] {
        if bom_of(encoding) > 0 {
            return Ok(Detected { encoding, bom_len: bom_of(encoding), guessed_at_line: None });
        }
    }
    if let Some(encoding) = wide {
        return Ok(Detected { encoding, bom_len: 0, guessed_at_line: None });
    }
    match first_invalid_utf8(open()?)? {
        None => Ok(Detected { encoding: TextEncoding::Utf8, bom_len: 0, guessed_at_line: None }),
        Some(line) => Ok(Detected {
            encoding: TextEncoding::Windows1252,
            bom_len: 0,
            guessed_at_line: Some(line),
        }),
    }
}

/// Counts physical lines as the readers do: `\n`, `\r\n` and a lone `\r`
/// each end one.
#[derive(Debug, Clone, Copy)]
struct LineCount {
    /// The line of the next byte (1-based).
    line: u64,
    /// The last byte was `\r`.
    after_cr: bool,
}

impl LineCount {
    fn new() -> LineCount {
        LineCount { line: 1, after_cr: false }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line += u64::from(b == b'\r' || (b == b'\n' && !self.after_cr));
            self.after_cr = b == b'\r';
        }
    }
}

/// The line of the first byte sequence that is not UTF-8, or `None` when the
/// whole stream is valid UTF-8. Reads in fixed chunks: memory does not grow
/// with the file.
pub fn first_invalid_utf8(mut r: impl Read) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of a character split across two reads, moved to the front.
    let mut carry = 0usize;
    let mut lines = LineCount::new();
    loop {
        let n = match r.read(&mut buf[carry..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = carry + n;
        match std::str::from_utf8(&buf[..end]) {
            Ok(_) if n == 0 => return Ok(None),
            Ok(_) => {
                lines.feed(&buf[..end]);
                carry = 0;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                lines.feed(&buf[..valid]);
                // An incomplete sequence at the end of a read may complete
                // with the next one; at the end of the stream it cannot.
                if e.error_len().is_some() || n == 0 {
                    return Ok(Some(lines.line));
                }
                buf.copy_within(valid..end, 0);
                carry = end - valid;
            }
        }
    }
}

/// A decoding failure: bytes that are not text in the input's encoding
/// (an unpaired UTF-16 surrogate, a file cut in half a code unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not valid {encoding} at line {line}")]
pub struct Malformed {
    /// The encoding the bytes were decoded in.
    pub encoding: TextEncoding,
    /// The physical line of the bad bytes.
    pub line: u64,
}

/// A reader of UTF-8 decoded from `inner` in a given encoding (its byte
/// order mark already skipped). A decoding failure is an
/// [`io::ErrorKind::InvalidData`] error carrying a [`Malformed`].
pub struct Transcode<R> {
    /// The undecoded bytes.
    inner: R,
    /// The encoding_rs decoder; `None` for Latin-1, decoded by hand.
    decoder: Option<encoding_rs::Decoder>,
    /// The encoding, for errors and Latin-1.
    encoding: TextEncoding,
    /// Undecoded bytes read from `inner`: `input[start..end]`.
    input: Vec<u8>,
    /// First undecoded byte in `input`.
    start: usize,
    /// End of the bytes read into `input`.
    end: usize,
    /// `inner` is at its end.
    eof: bool,
    /// Decoded bytes not yet handed out: `output[out_start..out_end]`.
    output: Vec<u8>,
    /// First decoded byte not yet handed out.
    out_start: usize,
    /// End of the decoded bytes.
    out_end: usize,
    /// Lines of the decoded text so far, for errors.
    lines: LineCount,
    /// The decoder has seen the last byte.
    done: bool,
}

impl<R: Read> Transcode<R> {
    /// Decodes `inner` from `encoding` (a UTF-8 stream is passed through).
    pub fn new(inner: R, encoding: TextEncoding) -> Transcode<R> {
        let decoder = match encoding {
            TextEncoding::Utf8 => Some(encoding_rs::UTF_8),
            TextEncoding::Utf16Le => Some(encoding_rs::UTF_16LE),
            TextEncoding::Utf16Be => Some(encoding_rs::UTF_16BE),
            TextEncoding::Windows1252 => Some(encoding_rs::WINDOWS_1252),
            TextEncoding::Latin1 => None,
        }
        .map(|e| e.new_decoder_without_bom_handling());
        Transcode {
            inner,
            decoder,
            encoding,
            input: vec![0; 32 * 1024],
            start: 0,
            end: 0,
            eof: false,
            // Windows-1252 and Latin-1 take at most 3 UTF-8 bytes a byte,
            // UTF-16 at most 3 per 2-byte unit (4 per surrogate pair).
            output: vec![0; 3 * 32 * 1024 + 16],
            out_start: 0,
            out_end: 0,
            lines: LineCount::new(),
            done: false,
        }
    }

    /// Decodes the next chunk into `output`; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        while !self.done {
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = loop {
                    match self.inner.read(&mut self.input) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                };
                self.eof = self.end == 0;
            }
            let src = &self.input[self.start..self.end];
            let (read, written) = match &mut self.decoder {
                None => {
                    let mut w = 0;
                    for &b in src {
                        w += char::from(b).encode_utf8(&mut self.output[w..]).len();
                    }
                    self.done = self.eof;
                    (src.len(), w)
                }
                Some(decoder) => {
                    let (result, read, written) =
                        decoder.decode_to_utf8_without_replacement(src, &mut self.output, self.eof);
                    match result {
                        encoding_rs::DecoderResult::Malformed(_, _) => {
                            self.lines.feed(&self.output[..written]);
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                Malformed { encoding: self.encoding, line: self.lines.line },
                            ));
                        }
                        encoding_rs::DecoderResult::InputEmpty => self.done = self.eof,
                        encoding_rs::DecoderResult::OutputFull => {}
                    }
                    (read, written)
                }
            };
            self.start += read;
            self.lines.feed(&self.output[..written]);
            self.out_start = 0;
            self.out_end = written;
            if written > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<R: Read> Read for Transcode<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.out_start == self.out_end && !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.out_end - self.out_start);
        out[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
        self.out_start += n;
        Ok(n)
    }
}

/// The [`Malformed`] inside an I/O error from a [`Transcode`], if it is one.
pub fn malformed(e: &io::Error) -> Option<Malformed> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Malformed>()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], e: TextEncoding) -> io::Result<String> {
        let mut s = String::new();
        Transcode::new(bytes, e).read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn names_parse_in_their_usual_spellings() {
        for (s, e) in [
            ("utf-8", TextEncoding::Utf8),
            ("UTF8", TextEncoding::Utf8),
            ("utf-16le", TextEncoding::Utf16Le),
            ("UTF-16BE", TextEncoding::Utf16Be),
            ("windows-1252", TextEncoding::Windows1252),
            ("cp1252", TextEncoding::Windows1252),
            ("latin1", TextEncoding::Latin1),
            ("ISO-8859-1", TextEncoding::Latin1),
        ] {
            assert_eq!(s.parse::<TextEncoding>(), Ok(e), "{s}");
        }
        let e = "ebcdic".parse::<TextEncoding>().unwrap_err();
        assert!(e.to_string().contains("utf-8, utf-16le, utf-16be, windows-1252 or latin1"));
    }

    #[test]
    fn each_encoding_decodes_and_keeps_line_ends() {
        let text = "Gerätename;Kommentar\r\nhöst-é;ü €\rx\n";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let (cp, _, lossy) = encoding_rs::WINDOWS_1252.encode(text);
        assert!(!lossy);
        assert_eq!(decode(&le, TextEncoding::Utf16Le).unwrap(), text);
        assert_eq!(decode(&be, TextEncoding::Utf16Be).unwrap(), text);
        assert_eq!(decode(&cp, TextEncoding::Windows1252).unwrap(), text);
        assert_eq!(decode(text.as_bytes(), TextEncoding::Utf8).unwrap(), text);
        // Latin-1 is byte = code point: 0x80 is a C1 control, not the euro.
        assert_eq!(decode(b"\xe9\x80", TextEncoding::Latin1).unwrap(), "é\u{80}");
        assert_eq!(decode(b"\xe9\x80", TextEncoding::Windows1252).unwrap(), "é€");
        // Larger than one chunk, with a character split across chunks.
        let big = "ä".repeat(70_000);
        let le: Vec<u8> = big.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode(&le, TextEncoding::Utf16Le).unwrap(), big);
    }

    #[test]
    fn a_malformed_input_names_the_encoding_and_line() {
        // An unpaired high surrogate on line 3.
        let mut le: Vec<u8> = "a\nb\r\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        le.extend_from_slice(&[0x00, 0xD8, b'x', 0]);
        let e = decode(&le, TextEncoding::Utf16Le).unwrap_err();
        assert_eq!(malformed(&e), Some(Malformed { encoding: TextEncoding::Utf16Le, line: 3 }));
        assert_eq!(malformed(&e).unwrap().to_string(), "not valid UTF-16LE at line 3");
        // A file cut in half a code unit.
        let e = decode(b"a\0b", TextEncoding::Utf16Le).unwrap_err();
        assert_eq!(malformed(&e).map(|m| m.line), Some(1));
    }

    #[test]
    fn utf8_validity_is_judged_over_the_whole_stream() {
        assert_eq!(first_invalid_utf8(&b""[..]).unwrap(), None);
        assert_eq!(first_invalid_utf8("a\nü\n".as_bytes()).unwrap(), None);
        assert_eq!(first_invalid_utf8(&b"a\r\nb\rc\n\xe9\n"[..]).unwrap(), Some(4));
        // A truncated sequence at the very end is invalid too.
        assert_eq!(first_invalid_utf8(&b"ok\n\xc3"[..]).unwrap(), Some(2));
        // A valid character across a chunk boundary is not.
        let mut big = "a".repeat(64 * 1024 - 1).into_bytes();
        big.extend_from_slice("é\n".as_bytes());
        assert_eq!(first_invalid_utf8(&big[..]).unwrap(), None);
        big.extend_from_slice(b"\xff");
        assert_eq!(first_invalid_utf8(&big[..]).unwrap(), Some(2));
    }

    #[test]
    fn detection_prefers_the_flag_then_the_bom_then_utf8_then_1252() {
        let open = |b: &'static [u8]| move || Ok(Box::new(b) as Box<dyn Read>);
        let d = |head: &'static [u8], given| detect(head, None, given, open(head)).unwrap();
        assert_eq!(d(b"\xEF\xBB\xBFa", None).encoding, TextEncoding::Utf8);
        assert_eq!(d(b"\xEF\xBB\xBFa", None).bom_len, 3);
        assert_eq!(d(b"\xFF\xFEa\0", None).encoding, TextEncoding::Utf16Le);
        assert_eq!(d(b"\xFE\xFF\0a", None).bom_len, 2);
        assert_eq!(d("é".as_bytes(), None).encoding, TextEncoding::Utf8);
        let guess = d(b"a\n\xe9", None);
        assert_eq!((guess.encoding, guess.guessed_at_line), (TextEncoding::Windows1252, Some(2)));
        let told = d(b"a\n\xe9", Some(TextEncoding::Latin1));
        assert_eq!((told.encoding, told.guessed_at_line), (TextEncoding::Latin1, None));
        let told = d(b"\xFF\xFEa\0", Some(TextEncoding::Utf16Le));
        assert_eq!(told.bom_len, 2);
    }
}
