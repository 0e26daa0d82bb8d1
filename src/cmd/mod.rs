//! The commands, one file each, above the engine of [`crate::run`]: a
//! command turns its flags into a configuration, connects, calls the engine
//! and prints the summary; this file dispatches a parsed command line to
//! them and maps the outcome to an exit code.
//!
//! - [`run`]: `mdebulk run` (and its in-process simulator).
//! - [`status`]: `mdebulk status`.
//! - [`undo`]: `mdebulk undo`.
//! - [`devices`]: `mdebulk devices`.
//! - [`simulate`]: `mdebulk simulate`.
//! - [`auth`]: `mdebulk auth check`.
//! - [`shared`]: what every command does at the edge: connect, print the
//!   summary, say how to continue.

mod auth;
mod devices;
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
    let outcome = match cli.command {
        Command::Run(args) => run::run(&args, &env).await,
        Command::Simulate(args) => simulate::simulate(*args).await,
        Command::Status(args) => status::status(&args, &env).await,
        Command::Undo(args) => undo::undo(&args, &env).await,
        Command::Devices(args) => devices::devices(&args, &env).await,
        Command::Auth(crate::cli::AuthCommand::Check(args)) => auth::check(&args, &env).await,
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A run's own errors carry their context in their message; other
            // errors are chains of context.
            match e.downcast_ref::<RunError>() {
                Some(run_error) => eprintln!("error: {run_error}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
