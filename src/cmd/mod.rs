//! The commands, one file each, above the engine of [`crate::run`]: a
//! command turns its flags into a configuration, connects, calls the engine
//! and prints the summary; this file dispatches a parsed command line to
//! them and maps the outcome to an exit code.
//!
//! - [`run`]: `mdebulk run` (and its in-process simulator).
//! - [`apply`]: `mdebulk apply`, an approved plan carried out.
//! - [`status`]: `mdebulk status`.
//! - [`undo`]: `mdebulk undo`.
//! - [`devices`]: `mdebulk devices`.
//! - [`simulate`]: `mdebulk simulate`.
//! - [`auth`]: `mdebulk auth check`.
//! - [`completions`]: `mdebulk completions SHELL`.
//! - [`man`]: `mdebulk man [SUBCOMMAND]`.
//! - [`shared`]: what every command does at the edge: connect, print the
//!   summary, say how to continue.

mod apply;
mod auth;
mod completions;
mod devices;
mod man;
mod run;
mod shared;
mod simulate;
mod status;
mod undo;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::run::RunError;

/// Exit code for usage, input, configuration and authentication errors.
pub const EXIT_USAGE: u8 = 2;

/// Runs a parsed command line to completion and returns the exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let json = cli.json_summary();
    let outcome = match cli.command {
        Command::Run(args) => run::run(&args, &env, json).await,
        Command::Simulate(args) => simulate::simulate(*args).await,
        Command::Status(args) => status::status(&args, &env, json).await,
        Command::Undo(args) => undo::undo(&args, &env, json).await,
        Command::Apply(args) => apply::apply(&args, &env, json).await,
        Command::Devices(args) => devices::devices(&args, &env, json).await,
        Command::Auth(crate::cli::AuthCommand::Check(args)) => auth::check(&args, &env).await,
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => man::man(&args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A run's own errors carry their context in their message; other
            // errors are chains of context.
            let (kind, message) = match e.downcast_ref::<RunError>() {
                Some(run_error) => (run_error.kind(), run_error.to_string()),
                None => ("usage", format!("{e:#}")),
            };
            if json {
                eprintln!("{}", error_json(kind, &message, EXIT_USAGE));
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A fatal error as one JSON line: `{"error": {"kind", "message"}, "exit_code"}`.
/// `kind` is stable: a [`RunError`]'s [`RunError::kind`], or `usage` for
/// flags, files, configuration and credentials refused before the command ran.
fn error_json(kind: &str, message: &str, exit_code: u8) -> serde_json::Value {
    serde_json::json!({ "error": { "kind": kind, "message": message }, "exit_code": exit_code })
}
