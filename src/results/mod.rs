//! The ground floor: what one input row came to, as every other room sees
//! it. The runner's half of a result row and the status vocabulary
//! ([`row`]), formula neutralisation of cells and its exact inverse
//! ([`cell`]), reading a results row back ([`parse`]), the row's JSON
//! encoding the journal writes ([`encode`]), the row's timestamps
//! ([`time`]), and the CSV dialect inputs are read and results written in
//! ([`dialect`]).
//!
//! Input (a results file replayed), output (the writers), the run and its
//! journal all stand on this room; it stands on nothing of theirs (only on
//! the API's action names and timestamp format).

pub(crate) mod cell;
pub(crate) mod dialect;
pub(crate) mod encode;
pub(crate) mod parse;
pub(crate) mod row;
pub(crate) mod time;

pub use parse::{FieldError, RunnerColumns, parse_result_row};
pub use row::{RUNNER_COLUMNS, ResultRow, Status};
pub use time::{BadTimestamp, Timestamp};
