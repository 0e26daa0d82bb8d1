//! Quoting text that came from outside (input cells, headers, keys) in
//! messages meant for a terminal or a log.
//!
//! Input is hostile until proven otherwise: a cell can be megabytes long,
//! and it can hold escape sequences that recolour, retitle or clear the
//! user's terminal. So a message never prints such text as it is, but a
//! [`Clip`]: at most a bounded number of characters on one line, with
//! control characters written as escapes (`\x1b`, `\n`, `\u{9b}`) and a cut
//! marked with how much was left out (`…(11534320 more bytes)`). The same
//! escaping applies to the Unicode controls that reorder text (bidi
//! overrides and isolates) and to the line and paragraph separators.

use std::fmt::{self, Write as _};

/// How many characters of escaped text a [`Clip`] shows by default: enough to
/// recognise a value, short enough for a message per row.
pub const CLIP_CHARS: usize = 120;

/// Text from outside, shown bounded and escaped; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Clip<'a> {
    /// The text as found.
    text: &'a str,
    /// The most characters written (escapes count with their full width).
    max: usize,
    /// Wrap it in `"` (and escape `"` and `\` inside).
    quoted: bool,
}

/// `text` in double quotes, escaped and cut to [`CLIP_CHARS`]: for a value.
pub fn quote(text: &str) -> Clip<'_> {
    Clip { text, max: CLIP_CHARS, quoted: true }
}

/// `text` escaped and cut to [`CLIP_CHARS`], without quotes: for a name
/// (a column, a key) in running text.
pub fn clip(text: &str) -> Clip<'_> {
    Clip { text, max: CLIP_CHARS, quoted: false }
}

impl<'a> Clip<'a> {
    /// The same, cut to `max` characters instead.
    pub fn max(self, max: usize) -> Clip<'a> {
        Clip { max, ..self }
    }
}

/// The escape for `c`, or `None` when it can be shown as it is.
fn escape(c: char, quoted: bool) -> Option<String> {
    let s = match c {
        '\n' => "\\n".to_string(),
        '\r' => "\\r".to_string(),
        '\t' => "\\t".to_string(),
        '\0' => "\\0".to_string(),
        '"' if quoted => "\\\"".to_string(),
        '\\' if quoted => "\\\\".to_string(),
        // C0 and DEL: the bytes a terminal acts on (ESC starts a sequence).
        c if (c as u32) < 0x20 || c == '\u{7f}' => format!("\\x{:02x}", c as u32),
        // C1 (U+0080..U+009F: CSI, OSC, ... as single characters), bidi
        // embeddings, overrides and isolates, line and paragraph separators,
        // and the BOM/zero-width no-break space.
        c if c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}') =>
        {
            format!("\\u{{{:x}}}", c as u32)
        }
        _ => return None,
    };
    Some(s)
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            f.write_char('"')?;
        }
        let mut width = 0usize;
        let mut cut = None;
        for (i, c) in self.text.char_indices() {
            let escaped = escape(c, self.quoted);
            let w = escaped.as_ref().map_or(1, |e| e.chars().count());
            if width + w > self.max {
                cut = Some(i);
                break;
            }
            width += w;
            match escaped {
                Some(e) => f.write_str(&e)?,
                None => f.write_char(c)?,
            }
        }
        if self.quoted {
            f.write_char('"')?;
        }
        if let Some(i) = cut {
            let rest = self.text.len() - i;
            write!(f, "…({rest} more byte{})", if rest == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// At most `max` characters of `text` on one line: control characters and
/// runs of whitespace become one space, and a cut is marked with `...`.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() || c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        if count == max {
            return format!("{}...", out.trim_end());
        }
        last_space = c == ' ';
        out.push(c);
        count += 1;
    }
    out.trim_end().to_string()
}

/// The 1-based line and column (in characters) of byte `at` of `text`.
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_text_is_shown_as_it_is() {
        assert_eq!(quote("host-1").to_string(), "\"host-1\"");
        assert_eq!(clip("Zoë ünïcode").to_string(), "Zoë ünïcode");
        assert_eq!(quote("").to_string(), "\"\"");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            quote("\x1b[31mred\x07\n\r\t\0\x7f").to_string(),
            "\"\\x1b[31mred\\x07\\n\\r\\t\\0\\x7f\""
        );
        assert_eq!(
            clip("a\u{9b}2J\u{202e}b\u{2028}c\u{feff}").to_string(),
            "a\\u{9b}2J\\u{202e}b\\u{2028}c\\u{feff}"
        );
        // Quotes and backslashes are escaped only where they would be ambiguous.
        assert_eq!(quote("say \"hi\" \\o/").to_string(), "\"say \\\"hi\\\" \\\\o/\"");
        assert_eq!(clip("say \"hi\"").to_string(), "say \"hi\"");
    }

    #[test]
    fn long_text_is_cut_with_the_count_of_bytes_left_out() {
        let big = "x".repeat(11_000_000);
        let shown = quote(&big).to_string();
        assert_eq!(shown, format!("\"{}\"…(10999880 more bytes)", "x".repeat(120)));
        assert_eq!(clip("abcdef").max(3).to_string(), "abc…(3 more bytes)");
        // An escape is never split; multi-byte characters are counted once.
        assert_eq!(clip("ab\x1b").max(4).to_string(), "ab…(1 more byte)");
        assert_eq!(clip("ééé").max(2).to_string(), "éé…(2 more bytes)");
        // Escapes cannot make the result much wider than the limit.
        let escapes = "\x1b".repeat(10_000);
        assert!(clip(&escapes).to_string().len() < 200);
    }

    #[test]
    fn an_excerpt_is_one_line_and_marks_its_cut() {
        assert_eq!(excerpt("a\n\n b\tc  ", 10), "a b c");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcde...");
        assert_eq!(excerpt("ééééé", 3), "ééé...");
    }
}
