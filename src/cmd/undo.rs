//! `mdebulk undo`: reverses exactly what an earlier run did.

use crate::cli::{Clients, UndoArgs, undo_config};

use super::shared::{connect, connect_tenants, finish, notify, webhook};

/// `mdebulk undo`: undoes what an earlier run did.
pub(crate) async fn undo(
    args: &UndoArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, clients) = undo_config(args, env)?;
    let hook = match clients.first() {
        Some(c) => webhook(args.notify.notify.as_deref(), c)?,
        None => None,
    };
    let summary = match clients {
        Clients::One(client_config) => {
            let (client, stop) = connect(*client_config)?;
            crate::run::undo::undo(&config, client, stop).await?
        }
        Clients::Tenants(names, tenants) => {
            let (sides, stop) = connect_tenants(tenants)?;
            crate::run::tenants::undo(&config, &names, sides, stop).await?
        }
    };
    let code = finish(&summary, false, json, || {
        "run the same undo again with --force to continue (what is already undone is skipped)"
            .into()
    });
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}
