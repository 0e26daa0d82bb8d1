//! `mdebulk undo`: reverses exactly what an earlier run did.

use crate::cli::{UndoArgs, undo_config};

use super::shared::{connect, finish, notify, webhook};

/// `mdebulk undo`: undoes what an earlier run did.
pub(crate) async fn undo(
    args: &UndoArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, client_config) = undo_config(args, env)?;
    let hook = webhook(args.notify.notify.as_deref(), &client_config)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::undo::undo(&config, client, stop).await?;
    let code = finish(&summary, false, json, || {
        "run the same undo again with --force to continue (what is already undone is skipped)"
            .into()
    });
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}
