//! Rebuilding the runner's half of a row ([`ResultRow`]) from a results file
//! read back, for replay (`--only`), resume and `status`.
//!
//! The reader hands over `(column name, cell)` pairs with formula
//! neutralisation already undone; names are matched against
//! [`RUNNER_COLUMNS`] with [`fold_name`], so `Machine ID` finds `machine_id`.
//! Runner columns a file lacks keep their empty default.

use std::fmt;

use super::row::{RUNNER_COLUMNS, ResultRow, Status};
use super::time::Timestamp;
use crate::api::action::fold_name;

/// A runner cell that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The column as the file names it.
    pub column: String,
    /// The offending cell.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {:?}: {}", self.column, self.value, self.why)
    }
}

/// Reads the runner's columns out of one results row. Every bad cell is
/// reported, not just the first. A runner column present twice is read from
/// its first occurrence.
pub fn parse_result_row<I, N, V>(cells: I) -> Result<ResultRow, Vec<FieldError>>
where
    I: IntoIterator<Item = (N, V)>,
    N: AsRef<str>,
    V: AsRef<str>,
{
    let cells: Vec<(N, V)> = cells.into_iter().collect();
    let index = RunnerColumns::of(cells.iter().map(|(n, _)| n.as_ref()));
    index.parse(cells.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
}

/// Which runner column (its index in [`RUNNER_COLUMNS`]) each column of a
/// header is: found once per file, so that reading a row back folds no
/// column name (a results file of a million rows is read back row by row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerColumns(Vec<Option<usize>>);

impl RunnerColumns {
    /// The runner columns of the header `names`, in order.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> RunnerColumns {
        let folded: Vec<String> = RUNNER_COLUMNS.iter().map(|c| fold_name(c)).collect();
        RunnerColumns(
            names
                .into_iter()
                .map(|n| {
                    let n = fold_name(n);
                    folded.iter().position(|c| *c == n)
                })
                .collect(),
        )
    }

    /// Reads the runner's columns out of one row of the header this was
    /// made of, as [`parse_result_row`] does: `cells` are the header's
    /// names with the row's values, in header order.
    pub fn parse<'a>(
        &self,
        cells: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ResultRow, Vec<FieldError>> {
        parse_cells(self.0.iter().copied().zip(cells))
    }
}

/// The reading of [`parse_result_row`], each cell with its runner column.
fn parse_cells<'a>(
    cells: impl Iterator<Item = (Option<usize>, (&'a str, &'a str))>,
) -> Result<ResultRow, Vec<FieldError>> {
    let mut seen = [false; RUNNER_COLUMNS.len()];
    let mut row = ResultRow::default();
    let mut errors = Vec::new();
    for (i, (name, value)) in cells {
        let Some(i) = i else { continue };
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        let mut fail = |why: String| {
            errors.push(FieldError { column: name.to_string(), value: value.to_string(), why })
        };
        let trimmed = value.trim();
        match RUNNER_COLUMNS[i] {
            "line" => match parse_number::<u64>(trimmed) {
                Ok(n) => row.line = n,
                Err(why) => fail(why),
            },
            "attempts" => match parse_number::<u32>(trimmed) {
                Ok(n) => row.attempts = n,
                Err(why) => fail(why),
            },
            "http_status" if trimmed.is_empty() => row.http_status = None,
            "http_status" => match trimmed.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => row.http_status = Some(n),
                _ => fail("http_status must be empty or an HTTP status code (100-599)".into()),
            },
            "status" if trimmed.is_empty() => row.status = None,
            "status" => match trimmed.parse::<Status>() {
                Ok(s) => row.status = Some(s),
                Err(why) => fail(why),
            },
            "requested_at" | "finished_at" => {
                // Empty is "no time"; anything else must read as one.
                let at = if trimmed.is_empty() {
                    Ok(None)
                } else {
                    trimmed.parse::<Timestamp>().map(Some)
                };
                match at {
                    Ok(at) if RUNNER_COLUMNS[i] == "requested_at" => row.requested_at = at,
                    Ok(at) => row.finished_at = at,
                    Err(e) => fail(e.to_string()),
                }
            }
            "machine_id" => row.machine_id = trimmed.to_string(),
            "device_name" => row.device_name = trimmed.to_string(),
            "action" => row.action = trimmed.to_string(),
            "action_id" => row.action_id = trimmed.to_string(),
            "action_status" => row.action_status = trimmed.to_string(),
            "error_code" => row.error_code = value.to_string(),
            "error_message" => row.error_message = value.to_string(),
            "tag_result" => row.tag_result = value.to_string(),
            // Invariant: the arms above cover every entry of RUNNER_COLUMNS
            // (checked by `every_runner_field_reads_back_from_its_text`).
            other => unreachable!("RUNNER_COLUMNS entry {other} has no parser"),
        }
    }
    if errors.is_empty() { Ok(row) } else { Err(errors) }
}

/// A count column: empty means 0 (nothing happened yet).
fn parse_number<T: std::str::FromStr + Default>(s: &str) -> Result<T, String> {
    if s.is_empty() {
        return Ok(T::default());
    }
    s.parse().map_err(|_| "expected a whole number".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runner_field_reads_back_from_its_text() {
        let row = ResultRow {
            line: 12,
            machine_id: "1e5bc9d7e413ddd7902c2932e418702b84d0cc07".into(),
            device_name: "host-1.contoso.test".into(),
            action: "stop-and-quarantine".into(),
            status: Some(Status::AlreadyPending),
            action_id: "5382f7ea-7557-4ab7-9782-d50480024a4e".into(),
            action_status: "Pending".into(),
            http_status: Some(400),
            error_code: "ActiveRequestAlreadyExists".into(),
            error_message: "Action is already in progress".into(),
            attempts: 2,
            requested_at: Timestamp::parse("2024-05-01T08:00:00.0000000Z"),
            finished_at: Timestamp::parse("2024-05-01T08:00:00.5000000Z"),
            tag_result: "IR-42 isolated".into(),
        };
        let fields = row.to_fields();
        let back = parse_result_row(RUNNER_COLUMNS.iter().zip(fields.iter())).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn missing_and_empty_runner_columns_default_and_others_are_ignored() {
        let back =
            parse_result_row([("owner", "ann"), ("Status", ""), ("HTTP Status", "")]).unwrap();
        assert_eq!(back, ResultRow::default());
        let back = parse_result_row([("line", "7"), ("line", "x")]).unwrap();
        assert_eq!(back.line, 7);
    }

    /// A results file of an earlier version has no `device_name`: its rows
    /// read back with the name empty and everything else intact.
    #[test]
    fn a_row_without_device_name_reads_back_with_it_empty() {
        let old: Vec<&str> =
            RUNNER_COLUMNS.iter().copied().filter(|c| *c != "device_name").collect();
        let row = ResultRow {
            line: 3,
            machine_id: "ab".repeat(20),
            action: "isolate".into(),
            status: Some(Status::Failed),
            attempts: 1,
            ..ResultRow::default()
        };
        let fields: Vec<String> = row
            .to_fields()
            .into_iter()
            .zip(RUNNER_COLUMNS)
            .filter(|(_, c)| *c != "device_name")
            .map(|(f, _)| f)
            .collect();
        assert_eq!(parse_result_row(old.iter().zip(fields.iter())).unwrap(), row);
    }

    #[test]
    fn every_bad_cell_is_reported() {
        let errors = parse_result_row([
            ("line", "seven"),
            ("status", "great"),
            ("http_status", "42"),
            ("attempts", "-1"),
            ("requested_at", "yesterday"),
        ])
        .unwrap_err();
        let columns: Vec<&str> = errors.iter().map(|e| e.column.as_str()).collect();
        assert_eq!(columns, ["line", "status", "http_status", "attempts", "requested_at"]);
        assert!(errors[1].why.contains("unknown status"), "{}", errors[1]);
        assert_eq!(errors[0].to_string(), "column line: \"seven\": expected a whole number");
    }
}
