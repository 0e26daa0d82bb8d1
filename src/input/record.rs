//! One record of an input as the readers yield it: its line, its cells and
//! what was wrong with it on the way in. Its own file so that the readers
//! and the planner, which the module above them uses, can share it without
//! importing that module back.

use std::fmt;

use crate::text::{clip, quote};

/// One record of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based physical line where the record starts (the CSV header is line
    /// 1; blank lines count).
    pub line: u64,
    /// The cells, aligned with [`super::Columns::names`] (padded or cut to the
    /// header's width).
    pub values: Vec<String>,
    /// Problems found while reading the record (wrong field count, nested
    /// JSON); [`super::plan_row`] reports them with the others.
    pub problems: Vec<RowProblem>,
}

/// The most characters of a reason shown. Reasons are ours, but some quote
/// the value (an unknown action is named in its error), so they are bounded
/// and escaped like the value itself.
const WHY_CHARS: usize = 400;

/// One thing wrong with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    /// Physical line where the record starts.
    pub line: u64,
    /// The column as the file names it (or the flag, for a bad default);
    /// empty when the problem is the row as a whole.
    pub column: String,
    /// The offending cell, as found; messages show a bounded, escaped
    /// excerpt of it ([`crate::text::quote`]).
    pub value: String,
    /// What is wrong and, where it helps, what is accepted.
    pub why: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column.is_empty() {
            write!(f, "line {}: {}", self.line, clip(&self.why).max(WHY_CHARS))
        } else {
            write!(
                f,
                "line {}, column {}: {}: {}",
                self.line,
                clip(&self.column),
                quote(&self.value),
                clip(&self.why).max(WHY_CHARS)
            )
        }
    }
}
