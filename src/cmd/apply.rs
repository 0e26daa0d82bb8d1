//! `mdebulk apply PLAN --digest D`: carries out exactly a plan a dry run
//! wrote, once its digest is confirmed, as an ordinary run of the plan's
//! `planned` rows (journal, resume, results, wait and undo work as for
//! `run`); the pipeline refuses it before any action call if a row would
//! now hit another machine.

use crate::cli::{ApplyArgs, Endpoint, apply_config};

use super::shared::{connect, finish, notify, resume_command, send, webhook};

/// `mdebulk apply`.
pub(crate) async fn apply(
    args: &ApplyArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, endpoint) = apply_config(args, env)?;
    let Endpoint::Remote(client_config) = endpoint else {
        anyhow::bail!(
            "apply runs against the API the plan was made with, never a simulator started in-process"
        );
    };
    let hook = webhook(args.notify.notify.as_deref(), &client_config)?;
    let (client, stop) = connect(*client_config)?;
    let summary = match crate::run::pipeline::run(&config, client, stop).await {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(hook) = &hook {
                let kind = e.kind();
                send(hook, &format!("mdebulk apply refused or failed ({kind}, exit code 2): {e}"))
                    .await;
            }
            return Err(e.into());
        }
    };
    let code = finish(&summary, false, json, || {
        format!("to continue: {}", resume_command(&config.command_line))
    });
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}
