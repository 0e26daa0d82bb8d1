//! `mdebulk` runs Microsoft Defender for Endpoint machine actions in bulk:
//! isolate, release, stop and quarantine a file, offboard — for a whole fleet
//! listed in a spreadsheet, paced exactly at the API quota, with one result
//! row per device.
//!
//! The modules follow the data (read → plan → pace → call → record); what
//! each may import is the table of DEVELOPERS.md, checked by a test:
//!
//! - [`results`]: the ground floor: a result row, its statuses, its cells,
//!   the CSV dialect.
//! - [`input`]: CSV/TSV/JSONL readers, column aliases, row validation.
//! - [`output`]: the results writers.
//! - [`pace`]: quota windows and the pacer (shared with the simulator).
//! - [`api`]: the MDE API: actions, wire types, client, auth, clouds, OData.
//! - [`run`]: the engine: the call engine, identities, the journal, the
//!   pipeline's phases, waiting, status and undo.
//! - [`cmd`]: one file per command, above the engine; [`cli`] turns flags
//!   into validated configurations ([`run::RunConfig`]).
//! - [`sim`]: a faithful local simulator of the API, in its own wing.
//! - [`text`]: user text quoted in messages, bounded and escaped.
//! - [`private`]: the runner's files (results, journal, spool) made owner-only.
//!
//! The public surface is what the binary, the integration tests, the
//! benchmarks and a library user need: the configurations and
//! [`run::pipeline::run`], the client ([`api::client::Client`]) and its
//! types, the input reader ([`input::Input`]), the results types
//! ([`results::ResultRow`], [`results::Status`]), the journal's records
//! ([`run::journal`]) and the simulator ([`sim::Sim`]). The rest is
//! `pub(crate)`.

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
