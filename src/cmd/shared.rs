//! What every command does at the edge: connect the client with the stop
//! flag its signal handlers raise, print the summary, say how to continue
//! after a stop, and turn the outcome into the exit code. Its own file so
//! that the commands share it without importing the dispatch that calls
//! them.

use std::sync::Arc;

use crate::api::client::{Client, ClientConfig};
use crate::run::{Stop, StopReason};

/// The client every API command uses, and the stop flag its signal
/// handlers raise.
pub(crate) fn connect(config: ClientConfig) -> anyhow::Result<(Arc<Client>, Stop)> {
    let client = Arc::new(Client::new(config)?);
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    Ok((client, stop))
}

/// Prints a command's summary (to stderr when stdout carries results),
/// says how to continue after a stop, and returns the exit code. `json`:
/// the summary, the stop and how to continue as one JSON object instead.
pub(crate) fn finish(
    summary: &crate::run::Summary,
    to_stderr: bool,
    json: bool,
    again: impl FnOnce() -> String,
) -> u8 {
    if json {
        let object = summary.to_json(summary.stopped.map(|_| again()));
        if to_stderr {
            eprintln!("{object}");
        } else {
            println!("{object}");
        }
        return summary.exit_code();
    }
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
