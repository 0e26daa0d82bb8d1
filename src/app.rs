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
    let env = |k: &str| std::env::var(k).ok();
    let outcome = match cli.command {
        Command::Run(args) => run(&args, &env).await,
        Command::Simulate(args) => crate::sim::serve(*args).await.map(|()| 0),
        Command::Status(args) => status(&args, &env).await,
        Command::Undo(args) => undo(&args, &env).await,
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

/// `mdebulk run`.
async fn run(args: &RunArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<u8> {
    let (config, endpoint) = run_config(args, env)?;
    // Keeps an in-process simulator alive for the whole run.
    let mut _simulator = None;
    let client_config = match endpoint {
        Endpoint::Remote(c) => c,
        Endpoint::Simulated { request_timeout } => {
            let sim_config = crate::sim::SimConfig {
                listen: "127.0.0.1:0".into(),
                ..crate::sim::SimConfig::default()
            };
            let sim = crate::sim::Sim::start(sim_config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the simulator: {e}"))?;
            tracing::info!(url = %sim.url(), "simulator started in-process");
            let c = simulated_client(&sim, request_timeout);
            _simulator = Some(sim);
            c
        }
    };
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::pipeline::run(&config, client, stop).await?;
    // The summary goes to stdout, unless the results do.
    let to_stderr = config.results == crate::run::ResultsTarget::Stdout;
    Ok(finish(&summary, to_stderr, || {
        format!("to continue: {}", resume_command(&config.command_line))
    }))
}

/// `mdebulk status`: follows up an earlier results file.
async fn status(args: &StatusArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<u8> {
    let (config, client_config) = status_config(args, env)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::status::status(&config, client, stop).await?;
    Ok(finish(&summary, false, || "run the same command again to continue".into()))
}

/// `mdebulk undo`: undoes what an earlier run did.
async fn undo(args: &UndoArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<u8> {
    let (config, client_config) = undo_config(args, env)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::undo::undo(&config, client, stop).await?;
    Ok(finish(&summary, false, || {
        "run the same undo again with --force to continue (what is already undone is skipped)"
            .into()
    }))
}

/// The client every API command uses, and the stop flag its signal
/// handlers raise.
fn connect(config: ClientConfig) -> anyhow::Result<(Arc<Client>, Stop)> {
    let client = Arc::new(Client::new(config)?);
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    Ok((client, stop))
}

/// Client settings for a simulator started in-process (it accepts any
/// credentials).
fn simulated_client(sim: &crate::sim::Sim, request_timeout: std::time::Duration) -> ClientConfig {
    ClientConfig {
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
    }
}

/// Prints a command's summary (to stderr when stdout carries results),
/// says how to continue after a stop, and returns the exit code.
fn finish(summary: &crate::run::Summary, to_stderr: bool, again: impl FnOnce() -> String) -> u8 {
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
