//! The commands, one file each, above the engine of [`crate::run`]: a
//! command turns its flags into a configuration, connects, calls the engine
//! and prints the summary; this file dispatches a parsed command line to
//! them and maps the outcome to an exit code.
//!
//! - [`run`]: `mdebulk run` (and its in-process simulator).
//! - [`status`]: `mdebulk status`.
//! - [`undo`]: `mdebulk undo`.
//! - [`simulate`]: `mdebulk simulate`.

mod run;
mod simulate;
mod status;
mod undo;

use std::process::ExitCode;
use std::sync::Arc;

use crate::api::client::{Client, ClientConfig};
use crate::cli::{Cli, Command};
use crate::run::{RunError, Stop, StopReason};

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

/// The client every API command uses, and the stop flag its signal
/// handlers raise.
pub(crate) fn connect(config: ClientConfig) -> anyhow::Result<(Arc<Client>, Stop)> {
    let client = Arc::new(Client::new(config)?);
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    Ok((client, stop))
}

/// Prints a command's summary (to stderr when stdout carries results),
/// says how to continue after a stop, and returns the exit code.
pub(crate) fn finish(
    summary: &crate::run::Summary,
    to_stderr: bool,
    again: impl FnOnce() -> String,
) -> u8 {
    let text = summary.render();
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(reason) = summary.stopped {
        let detail = summary.stop_detail.as_deref().unwrap_or("");
        match reason {
            StopReason::Interrupted => eprintln!("interrupted; {}", again()),
            StopReason::Deadline => eprintln!("stopped at --max-runtime; {}", again()),
            StopReason::AuthLost => eprintln!(
                "error: authentication failed mid-run ({detail}); rows not sent stay unsent. Once the credentials work again (a fresh MDE_TOKEN, a valid secret, consent granted): {}",
                again()
            ),
            StopReason::Connection => eprintln!(
                "error: the service cannot be reached safely ({detail}); nothing more was sent. Once fixed: {}",
                again()
            ),
            StopReason::Storage => eprintln!("error: {detail}. Then: {}", again()),
        }
    }
    summary.exit_code()
}

/// The command that resumes a stopped run: the same arguments with
/// `--resume` (and without `--force`).
pub fn resume_command(args: &[String]) -> String {
    let mut out: Vec<String> = args
        .iter()
        .filter(|a| *a != "--force" && *a != "--resume")
        .map(|a| shell_quote(a))
        .collect();
    out.push("--resume".into());
    out.join(" ")
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_command_keeps_arguments_and_adds_resume() {
        let args: Vec<String> =
            ["mdebulk", "run", "my hosts.csv", "--force", "--comment", "IR-42 it's bad"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(
            resume_command(&args),
            "mdebulk run 'my hosts.csv' --comment 'IR-42 it'\\''s bad' --resume"
        );
    }
}
