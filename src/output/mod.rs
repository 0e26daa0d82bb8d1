//! Results files: one row per input row, the user's columns followed by the
//! runner's ([`row::RUNNER_COLUMNS`]).

pub mod row;

pub use row::{RUNNER_COLUMNS, ResultRow, Status};
