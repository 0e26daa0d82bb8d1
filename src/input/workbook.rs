//! Workbooks (`.xlsx`, `.xlsm`, `.xls`, `.ods`), read with calamine.
//!
//! One sheet is read: the first, or the one `--sheet` names (by name, or by
//! its position counted from 1). Its header is the first row with a
//! non-blank cell; rows whose cells are all blank are skipped, and a row's
//! line number is the sheet's own row number, so a message points at the row
//! the user sees in Excel. The input is named `FILE, sheet NAME` in messages.
//!
//! Cells become the text a person sees: whole numbers without `.0` and never
//! in exponent form (a machine id or phone number stored as a number is not
//! `1.2E+15`), other numbers in their shortest exact form, dates and times as
//! ISO 8601 text (`2026-11-30`, `2026-11-30T08:12:44`), booleans as `TRUE` and
//! `FALSE`, error cells as Excel shows them (`#N/A`).
//!
//! A workbook is a zip of XML (or, for `.xls`, a compound file) that cannot
//! be streamed row by row: it is read whole, once, at open, and every pass
//! then reads the sheet's cells from memory. The memory is the sheet's text,
//! about twice the size of the cells' text while reading.

use calamine::{Data, Reader};

use super::error::InputError;
use super::plan::RowProblem;
use super::record::Record;

/// One sheet of a workbook, read whole: its header and its non-blank rows.
#[derive(Debug)]
pub(crate) struct Sheet {
    /// The sheet's name, for messages.
    pub(crate) name: String,
    /// The header's cells (trailing blank cells left out).
    pub(crate) header: Vec<String>,
    /// The rows below the header that have a non-blank cell: the sheet's
    /// row number (1-based) and the cells' text, as wide as the header.
    rows: Vec<(u64, Vec<String>)>,
    /// Rows with non-blank cells right of the header's last column: their
    /// index in `rows` and how many cells they have.
    wide: Vec<(usize, usize)>,
}

impl Sheet {
    /// The record at `index` of the rows, if any.
    pub(crate) fn record(&self, index: usize) -> Option<Record> {
        let (line, values) = self.rows.get(index)?;
        let mut problems = Vec::new();
        if let Some(&(_, found)) = self.wide.iter().find(|(i, _)| *i == index) {
            let width = self.header.len();
            problems.push(RowProblem {
                line: *line,
                column: String::new(),
                value: String::new(),
                why: format!(
                    "the header has {width} column{} but this row has cells up to column {found}",
                    if width == 1 { "" } else { "s" }
                ),
            });
        }
        Some(Record { line: *line, values: values.clone(), problems })
    }
}

/// Reads the chosen sheet of the workbook in `bytes`; `file` names it in
/// errors.
pub(crate) fn read(bytes: Vec<u8>, file: &str, choice: Option<&str>) -> Result<Sheet, InputError> {
    let bad = |message: String| InputError::Workbook { file: file.to_string(), message };
    let mut book = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("cannot read it as a workbook ({e})")))?;
    let names = book.sheet_names();
    let name = match choice {
        None => names.first().cloned(),
        Some(c) => names.iter().find(|n| *n == c).cloned().or_else(|| {
            let index: usize = c.trim().parse().ok()?;
            names.get(index.checked_sub(1)?).cloned()
        }),
    }
    .ok_or_else(|| InputError::NoSuchSheet {
        file: file.to_string(),
        sheet: choice.unwrap_or_default().to_string(),
        sheets: names.clone(),
    })?;
    let range = book
        .worksheet_range(&name)
        .map_err(|e| bad(format!("cannot read sheet {name:?} ({e})")))?;
    let first_row = u64::from(range.start().map_or(0, |(row, _)| row)) + 1;
    let mut rows = range
        .rows()
        .enumerate()
        .map(|(i, cells)| (first_row + i as u64, cells))
        .filter(|(_, cells)| cells.iter().any(|c| !cell_text(c).trim().is_empty()));
    let Some((_, header_cells)) = rows.next() else {
        return Err(InputError::Empty {
            file: format!("{file}, sheet {name}"),
            expected: "no header row",
        });
    };
    let mut header: Vec<String> = header_cells.iter().map(cell_text).collect();
    while header.last().is_some_and(|h| h.trim().is_empty()) {
        header.pop();
    }
    let width = header.len();
    let mut sheet = Sheet { name, header, rows: Vec::new(), wide: Vec::new() };
    for (line, cells) in rows {
        let mut values: Vec<String> = cells.iter().map(cell_text).collect();
        let used = values.iter().rposition(|v| !v.trim().is_empty()).map_or(0, |i| i + 1);
        if used > width {
            sheet.wide.push((sheet.rows.len(), used));
        }
        values.resize(width, String::new());
        sheet.rows.push((line, values));
    }
    Ok(sheet)
}

/// The text a person sees in a cell (see the module documentation).
pub fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number_text(*f),
        Data::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).to_string(),
        Data::DateTime(dt) if dt.is_datetime() => {
            let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
            let date = format!("{y:04}-{mo:02}-{d:02}");
            let time = match ms {
                0 => format!("{h:02}:{mi:02}:{s:02}"),
                _ => format!("{h:02}:{mi:02}:{s:02}.{ms:03}"),
            };
            match (dt.as_f64() < 1.0, (h, mi, s, ms) == (0, 0, 0, 0)) {
                (true, _) => time,
                (false, true) => date,
                (false, false) => format!("{date}T{time}"),
            }
        }
        Data::DateTime(dt) => number_text(dt.as_f64()),
        Data::Error(e) => e.to_string(),
    }
}

/// A number as a person reads it: a whole number as an integer (not
/// `1.2E+15`, not `42.0`), any other in its shortest exact decimal form.
fn number_text(f: f64) -> String {
    // Below 2^53 every whole f64 is an exact integer.
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{CellErrorType, ExcelDateTime, ExcelDateTimeType};

    #[test]
    fn cells_read_as_a_person_sees_them() {
        let dt = |v| Data::DateTime(ExcelDateTime::new(v, ExcelDateTimeType::DateTime, false));
        for (cell, want) in [
            (Data::Float(1.2e15), "1200000000000000"),
            (Data::Float(42.0), "42"),
            (Data::Float(-3.0), "-3"),
            (Data::Float(0.1), "0.1"),
            (Data::Float(1e20), "100000000000000000000"),
            (Data::Int(7), "7"),
            (Data::Bool(true), "TRUE"),
            (Data::String(" host-1 ".into()), " host-1 "),
            (dt(45943.0), "2025-10-13"),
            (dt(45943.5), "2025-10-13T12:00:00"),
            (dt(0.25), "06:00:00"),
            (Data::Error(CellErrorType::NA), "#N/A"),
            (Data::Empty, ""),
        ] {
            assert_eq!(cell_text(&cell), want, "{cell:?}");
        }
    }

    #[test]
    fn a_file_that_is_no_workbook_is_refused_naming_it() {
        let e = read(b"machine_id\nx\n".to_vec(), "fake.xlsx", None).unwrap_err();
        assert!(e.to_string().starts_with("fake.xlsx: cannot read it as a workbook"), "{e}");
    }
}
