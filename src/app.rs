//! The program's entry point behind `main`: dispatches a parsed command
//! line to the runner or the simulator and maps the outcome to an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use crate::api::auth::{Credentials, Secret};
use crate::api::client::{Client, ClientConfig};
use crate::cli::{
    Cli, Command, Endpoint, RunArgs, StatusArgs, UndoArgs, run_config, status_config, undo_config,
};
use crate::run::{RunError, Stop, StopReason};

/// Exit code for usage, input, configuration and authentication errors.
pub const EXIT_USAGE: u8 = 2;

/// Runs a parsed command line to completion and returns the exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run(args) => run(&args).await,
        Command::Simulate(args) => match crate::sim::serve(*args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_USAGE
            }
        },
        Command::Status(args) => status(&args).await,
        Command::Undo(args) => undo(&args).await,
    };
    ExitCode::from(code)
}

async fn run(args: &RunArgs) -> u8 {
    let env = |k: &str| std::env::var(k).ok();
    let (config, endpoint) = match run_config(args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_USAGE;
        }
    };
    // Keeps an in-process simulator alive for the whole run.
    let mut _simulator = None;
    let client_config = match endpoint {
        Endpoint::Remote(c) => c,
        Endpoint::Simulated { request_timeout } => {
            let sim_config = crate::sim::SimConfig {
                listen: "127.0.0.1:0".into(),
                ..crate::sim::SimConfig::default()
            };
            match crate::sim::Sim::start(sim_config).await {
                Ok(sim) => {
                    tracing::info!(url = %sim.url(), "simulator started in-process");
                    let c = ClientConfig {
                        api_base: sim.url(),
                        login_base: sim.url(),
                        scope: crate::api::cloud::Cloud::Global.scope().to_string(),
                        credentials: Credentials::ClientSecret {
                            tenant_id: "simulated-tenant".into(),
                            client_id: "mdebulk".into(),
                            client_secret: Secret::new("simulated".to_string()),
                        },
                        request_timeout,
                        connect_timeout: std::time::Duration::from_secs(5),
                    };
                    _simulator = Some(sim);
                    c
                }
                Err(e) => {
                    eprintln!("error: cannot start the simulator: {e}");
                    return EXIT_USAGE;
                }
            }
        }
    };
    let client = match Client::new(client_config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    match crate::run::pipeline::run(&config, client, stop).await {
        Ok(summary) => {
            let text = summary.render();
            // The summary goes to stdout unless results do.
            if config.results == crate::run::ResultsTarget::Stdout {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            if let Some(reason) = summary.stopped {
                let verb = match reason {
                    StopReason::Interrupted => "interrupted",
                    StopReason::Deadline => "stopped at --max-runtime",
                };
                eprintln!("{verb}; to continue: {}", resume_command(&config.command_line));
            }
            summary.exit_code()
        }
        Err(e) => {
            report(&e);
            EXIT_USAGE
        }
    }
}

/// `mdebulk status`: follows up an earlier results file.
async fn status(args: &StatusArgs) -> u8 {
    let env = |k: &str| std::env::var(k).ok();
    let (config, client_config) = match status_config(args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_USAGE;
        }
    };
    let client = match Client::new(client_config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    finish(
        crate::run::status::status(&config, client, stop).await,
        "run the same command again to continue",
    )
}

/// `mdebulk undo`: undoes what an earlier run did.
async fn undo(args: &UndoArgs) -> u8 {
    let env = |k: &str| std::env::var(k).ok();
    let (config, client_config) = match undo_config(args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return EXIT_USAGE;
        }
    };
    let client = match Client::new(client_config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    finish(
        crate::run::undo::undo(&config, client, stop).await,
        "run the same undo again with --force to continue (what is already undone is skipped)",
    )
}

/// Prints the summary of `status` or `undo` (or the error) and returns the
/// exit code; `again` says how to continue after a stop.
fn finish(outcome: Result<crate::run::Summary, RunError>, again: &str) -> u8 {
    match outcome {
        Ok(summary) => {
            print!("{}", summary.render());
            if summary.stopped.is_some() {
                eprintln!("stopped early; {again}");
            }
            summary.exit_code()
        }
        Err(e) => {
            report(&e);
            EXIT_USAGE
        }
    }
}

fn report(e: &RunError) {
    eprintln!("error: {e}");
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
