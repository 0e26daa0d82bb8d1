//! `mdebulk undo`: reverses exactly what an earlier run did.

use crate::cli::{UndoArgs, undo_config};

use super::shared::{connect, finish};

/// `mdebulk undo`: undoes what an earlier run did.
pub(crate) async fn undo(
    args: &UndoArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, client_config) = undo_config(args, env)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::undo::undo(&config, client, stop).await?;
    Ok(finish(&summary, false, json, || {
        "run the same undo again with --force to continue (what is already undone is skipped)"
            .into()
    }))
}
