//! `mdebulk status`: follows up the actions of an earlier results file.

use crate::cli::{StatusArgs, status_config};

use super::shared::{connect, finish, notify, webhook};

/// `mdebulk status`: follows up an earlier results file.
pub(crate) async fn status(
    args: &StatusArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, client_config) = status_config(args, env)?;
    let hook = webhook(args.notify.notify.as_deref(), &client_config)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::status::status(&config, client, stop).await?;
    let code = finish(&summary, false, json, || "run the same command again to continue".into());
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}
