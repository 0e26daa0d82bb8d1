//! `mdebulk status`: follows up the actions of an earlier results file.

use crate::cli::{StatusArgs, status_config};

use super::shared::{connect, finish};

/// `mdebulk status`: follows up an earlier results file.
pub(crate) async fn status(
    args: &StatusArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, client_config) = status_config(args, env)?;
    let (client, stop) = connect(client_config)?;
    let summary = crate::run::status::status(&config, client, stop).await?;
    Ok(finish(&summary, false, json, || "run the same command again to continue".into()))
}
