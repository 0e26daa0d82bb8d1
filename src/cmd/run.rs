//! `mdebulk run`: the flags become a [`crate::run::RunConfig`], the client
//! connects (to a simulator started in-process with `--simulate`), the
//! pipeline runs, and the summary says how it ended and how to continue.

use crate::api::auth::{Credentials, Secret};
use crate::api::client::{ClientConfig, GraphConfig};
use crate::cli::{Endpoint, RunArgs, TenantEndpoint, run_config};

use super::shared::{connect, connect_tenants, finish, notify, resume_command, send, webhook};

/// `mdebulk run`.
pub(crate) async fn run(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let (config, endpoint) = run_config(args, env)?;
    // Keeps an in-process simulator alive for the whole run.
    let mut _simulator = None;
    let client_config = match endpoint {
        Endpoint::Tenants(tenants) => return run_tenants(args, &config, tenants, json).await,
        Endpoint::SimulatedTenants { request_timeout, tenants } => {
            let sim_config = crate::sim::SimConfig {
                listen: "127.0.0.1:0".into(),
                tenants: Some(tenants.len()),
                ..crate::sim::SimConfig::default()
            };
            let sim = crate::sim::Sim::start(sim_config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the simulator: {e}"))?;
            tracing::info!(url = %sim.url(), tenants = tenants.len(), "simulator started in-process");
            // Profile n rehearses in the simulator's tenant n.
            let endpoints = sim
                .tenants()
                .into_iter()
                .zip(tenants)
                .map(|(t, (name, limits))| {
                    let mut client = simulated_client(&sim, request_timeout);
                    if let Credentials::ClientSecret { tenant_id, .. } = &mut client.credentials {
                        tenant_id.clone_from(&t.name);
                    }
                    TenantEndpoint { name, tenant_id: t.name, client, limits }
                })
                .collect();
            let code = run_tenants(args, &config, endpoints, json).await;
            drop(sim);
            return code;
        }
        Endpoint::Remote(c) => *c,
        Endpoint::Simulated { request_timeout } => {
            let mut sim_config = crate::sim::SimConfig {
                listen: "127.0.0.1:0".into(),
                ..crate::sim::SimConfig::default()
            };
            if config.tag_result.is_some() {
                // A rehearsal may write the tags it is asked to.
                sim_config.roles.push("Machine.ReadWrite.All".into());
            }
            let sim = crate::sim::Sim::start(sim_config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the simulator: {e}"))?;
            tracing::info!(url = %sim.url(), "simulator started in-process");
            let c = simulated_client(&sim, request_timeout);
            _simulator = Some(sim);
            c
        }
    };
    let hook = webhook(args.notify.notify.as_deref(), &client_config)?;
    let (client, stop) = connect(client_config)?;
    let summary = match crate::run::pipeline::run(&config, client, stop).await {
        Ok(summary) => summary,
        Err(e) => return Err(refused(hook.as_ref(), e).await),
    };
    // The summary goes to stdout, unless the results do.
    let to_stderr = config.results == crate::run::ResultsTarget::Stdout;
    let code = finish(&summary, to_stderr, json, || {
        format!("to continue: {}", resume_command(&config.command_line))
    });
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}

/// `mdebulk run --tenants`: one client per tenant, one share of the run
/// each, side by side, and one summary.
async fn run_tenants(
    args: &RunArgs,
    config: &crate::run::RunConfig,
    tenants: Vec<TenantEndpoint>,
    json: bool,
) -> anyhow::Result<u8> {
    let hook = match tenants.first() {
        Some(t) => webhook(args.notify.notify.as_deref(), &t.client)?,
        None => None,
    };
    let (sides, stop) = connect_tenants(tenants)?;
    let summary = match crate::run::tenants::run(config, sides, stop).await {
        Ok(summary) => summary,
        Err(e) => return Err(refused(hook.as_ref(), e).await),
    };
    let code = finish(&summary, false, json, || {
        format!("to continue: {}", resume_command(&config.command_line))
    });
    notify(hook.as_ref(), &summary, code).await;
    Ok(code)
}

/// A run refused or failed before its summary: said to the `--notify`
/// webhook, and returned as the command's error (exit code 2).
async fn refused(
    hook: Option<&crate::api::webhook::Webhook>,
    e: crate::run::RunError,
) -> anyhow::Error {
    if let Some(hook) = hook {
        let kind = e.kind();
        send(hook, &format!("mdebulk run refused or failed ({kind}, exit code 2): {e}")).await;
    }
    e.into()
}

/// Client settings for a simulator started in-process (it accepts any
/// credentials).
fn simulated_client(sim: &crate::sim::Sim, request_timeout: std::time::Duration) -> ClientConfig {
    ClientConfig {
        api_base: sim.url(),
        login_base: sim.url(),
        scope: crate::api::cloud::Cloud::Global.scope().to_string(),
        credentials: Credentials::ClientSecret {
            tenant_id: "simulated-tenant".into(),
            client_id: "mdebulk".into(),
            client_secret: Secret::new("simulated".to_string()),
        },
        request_timeout,
        connect_timeout: std::time::Duration::from_secs(5),
        extra_roots: Vec::new(),
        proxy: None,
        graph: Some(GraphConfig {
            base: sim.graph_url(),
            scope: crate::api::cloud::Cloud::Global.graph_scope().to_string(),
            ready_token: None,
        }),
    }
}
