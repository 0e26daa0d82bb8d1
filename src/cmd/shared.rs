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

/// One transport per tenant of a run over many, each a client with its
/// own credentials and token cache, and the stop flag the signal handlers
/// raise for all of them.
pub(crate) fn connect_tenants(
    tenants: Vec<crate::cli::TenantEndpoint>,
) -> anyhow::Result<(Vec<crate::run::tenants::TenantSide<Client>>, Stop)> {
    let mut sides = Vec::with_capacity(tenants.len());
    for t in tenants {
        let api = t.client.api_base.clone();
        let client =
            Client::new(t.client).map_err(|e| anyhow::anyhow!("tenant {}: {e}", t.name))?;
        sides.push(crate::run::tenants::TenantSide {
            name: t.name,
            tenant_id: t.tenant_id,
            api,
            limits: t.limits,
            transport: Arc::new(client),
        });
    }
    let stop = Stop::new();
    crate::run::stop::install_signal_handlers(stop.clone());
    Ok((sides, stop))
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

/// The `--notify` webhook of a command, checked before anything is sent
/// (a bad URL is a usage error), with the API client's TLS and proxy
/// settings.
pub(crate) fn webhook(
    url: Option<&str>,
    config: &ClientConfig,
) -> anyhow::Result<Option<crate::api::webhook::Webhook>> {
    url.map(|u| crate::api::webhook::Webhook::new(u, config)).transpose().map_err(Into::into)
}

/// Posts the end-of-command message to the `--notify` webhook: the
/// summary as it is printed, headed by the command and followed by its
/// exit code. A receiver that cannot be reached costs one warning, and
/// the command's exit code stays as it was.
pub(crate) async fn notify(
    hook: Option<&crate::api::webhook::Webhook>,
    summary: &crate::run::Summary,
    code: u8,
) {
    if let Some(hook) = hook {
        let text = format!("mdebulk {}exit code {code}", summary.render());
        send(hook, &text).await;
    }
}

/// Posts `text` to the webhook; see [`notify`].
pub(crate) async fn send(hook: &crate::api::webhook::Webhook, text: &str) {
    match hook.post(text).await {
        Ok(attempts) => {
            tracing::info!(webhook = hook.shown(), attempts, "--notify: summary delivered")
        }
        Err(why) => tracing::warn!(
            webhook = hook.shown(),
            "--notify: the summary could not be delivered ({why}); the command's outcome is unchanged"
        ),
    }
}

/// The command that resumes a stopped run: the same arguments with
/// `--resume` (and without `--force`).
pub fn resume_command(args: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut hide_next = false;
    for a in args.iter().filter(|a| *a != "--force" && *a != "--resume") {
        // A webhook URL is a secret: the hint names it, never shows it.
        if std::mem::take(&mut hide_next) {
            out.push("\"$MDEBULK_NOTIFY_URL\"".into());
        } else if a == "--notify" {
            hide_next = true;
            out.push(a.clone());
        } else if a.starts_with("--notify=") {
            out.push("--notify=\"$MDEBULK_NOTIFY_URL\"".into());
        } else {
            out.push(shell_quote(a));
        }
    }
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

    #[test]
    fn the_resume_command_never_shows_a_webhook_url() {
        let args: Vec<String> = [
            "mdebulk",
            "run",
            "h.csv",
            "--notify",
            "https://hooks.example.com/SECRET",
            "--notify=https://hooks.example.com/SECRET2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let hint = resume_command(&args);
        assert!(!hint.contains("SECRET"), "{hint}");
        assert!(hint.contains("--notify \"$MDEBULK_NOTIFY_URL\""), "{hint}");
    }
}
