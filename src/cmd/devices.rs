//! `mdebulk devices`: the tenant's devices with their containment now,
//! written as a report that is also a run input.

use crate::cli::{DevicesArgs, devices_config};

use super::shared::connect;

/// `mdebulk devices`.
pub(crate) async fn devices(
    args: &DevicesArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<u8> {
    let (config, client_config) = devices_config(args, env)?;
    let (client, stop) = connect(client_config)?;
    let r = crate::run::devices::devices(&config, client, stop).await?;
    eprintln!(
        "{} of {} devices listed; {} isolated, {} restricted now (from {} completed containment actions)",
        r.listed, r.machines, r.isolated, r.restricted, r.actions
    );
    Ok(0)
}
