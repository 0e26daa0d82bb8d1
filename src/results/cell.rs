//! Formula neutralisation of results-file cells.
//!
//! Responders open results files in Excel, which runs any cell starting with
//! `=`, `+`, `-` or `@` (and, after a tab or carriage return, often the rest)
//! as a formula. A user column or an API error message must never turn into
//! one, so the CSV writer prefixes such cells with `'`. To keep the change
//! reversible, a cell that already starts with `'` is prefixed as well; the
//! reader of a results file then strips exactly one leading `'` from every
//! cell that has one, and every cell comes back byte for byte.
//!
//! Both directions live here so they can never drift apart.

use std::borrow::Cow;

/// The prefix added in front of a cell a spreadsheet would evaluate.
pub const GUARD: char = '\'';

/// True when the cell must be prefixed with [`GUARD`] on the way out: it
/// starts with a formula trigger (`=`, `+`, `-`, `@`, tab, CR) or with the
/// guard itself.
pub fn needs_guard(cell: &str) -> bool {
    matches!(cell.as_bytes().first(), Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\''))
}

/// The cell as written to a CSV results file: unchanged, or with a leading `'`.
pub fn neutralize(cell: &str) -> Cow<'_, str> {
    if needs_guard(cell) {
        let mut s = String::with_capacity(cell.len() + 1);
        s.push(GUARD);
        s.push_str(cell);
        Cow::Owned(s)
    } else {
        Cow::Borrowed(cell)
    }
}

/// Undoes [`neutralize`] in place: strips exactly one leading `'`, if there
/// is one.
pub fn restore_owned(cell: &mut String) {
    if cell.starts_with(GUARD) {
        cell.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restore(cell: &str) -> String {
        let mut owned = cell.to_string();
        restore_owned(&mut owned);
        owned
    }

    #[test]
    fn formula_triggers_and_the_guard_itself_are_prefixed() {
        for (raw, written) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'quoted", "''quoted"),
            ("''", "'''"),
            ("plain", "plain"),
            ("", ""),
            ("a=b", "a=b"),
            (" =x", " =x"),
            ("é=", "é="),
        ] {
            assert_eq!(neutralize(raw), written, "{raw:?}");
            assert_eq!(restore(&neutralize(raw)), raw, "{raw:?}");
            let mut owned = neutralize(raw).into_owned();
            restore_owned(&mut owned);
            assert_eq!(owned, raw);
        }
    }

    #[test]
    fn restore_strips_exactly_one_guard() {
        assert_eq!(restore("'''x"), "''x");
        assert_eq!(restore("x'"), "x'");
        assert_eq!(restore(""), "");
    }
}
