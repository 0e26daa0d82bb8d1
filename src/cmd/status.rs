//! `mdebulk status`: follows up the actions of an earlier results file.

use crate::cli::{Clients, StatusArgs, status_config};

use super::shared::{connect, connect_tenants, finish, notify, webhook};

/// `mdebulk status`: follows up an earlier results file.
pub(crate) async fn status(
    args: &StatusArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, clients) = status_config(args, env)?;
    let hook = match clients.first() {
        Some(c) => webhook(args.notify.notify.as_deref(), c)?,
        None => None,
    };
    let summary = match clients {
        Clients::One(client_config) => {
            let (client, stop) = connect(*client_config)?;
            crate::run::status::status(&config, client, stop).await?
        }
        Clients::Tenants(names, tenants) => {
            let (sides, stop) = connect_tenants(tenants)?;
            crate::run::tenants::status(&config, &names, sides, stop).await?
        }
    };
    let code = finish(&summary, false, json, || "run the same command again to continue".into());
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}
