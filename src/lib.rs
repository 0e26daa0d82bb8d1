//! `mdebulk` runs Microsoft Defender for Endpoint machine actions in bulk:
//! isolate, release, stop and quarantine a file, offboard — for a whole fleet
//! listed in a spreadsheet, paced exactly at the API quota, with one result
//! row per device.
//!
//! The modules follow the data:
//!
//! - [`input`]: CSV/TSV/JSONL readers, column aliases, row validation.
//! - [`pace`]: quota windows and the pacer (shared with the simulator).
//! - [`api`]: the MDE API: actions, wire types, client, auth, clouds.
//! - [`run`]: the pipeline: survey, journal, execution, retries, summary.
//! - [`results`]: the ground floor: a result row, its statuses, its cells.
//! - [`output`]: the results writers.
//! - [`sim`]: a faithful local simulator of the API, beside the rest.
//! - [`text`]: user text quoted in messages, bounded and escaped.
//! - [`private`]: the runner's files (results, journal, spool) made owner-only.
//!
//! [`cli`] turns flags into a validated [`run::RunConfig`]; [`cmd`] holds
//! one file per command above the engine, and the entry point `main` calls.

pub mod api;
pub mod cli;
pub mod cmd;
pub mod input;
pub mod logging;
pub mod output;
pub mod pace;
pub mod private;
pub mod results;
pub mod run;
pub mod sim;
pub mod text;
