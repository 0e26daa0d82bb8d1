//! `mdebulk` runs Microsoft Defender for Endpoint machine actions in bulk.
//!
//! The data flows through the modules in this order:
//!
//! - [`input`]: CSV/TSV/JSONL readers, column aliases, row validation.
//! - [`pace`]: quota windows, shared by the runner and the simulator.
//! - [`api`]: the MDE API: actions, wire types, client, auth, clouds.
//! - [`output`]: result writers.
//!
//! Beside them, [`sim`] is a faithful local simulator of the API.

pub mod api;
pub mod output;
pub mod pace;
