//! A faithful local simulator of the Defender for Endpoint machine-actions
//! API (`mdebulk simulate`): token endpoint, action POSTs, look-ups and lists,
//! quotas in three window models, action lifecycle, duplicates, and injected
//! faults, following the team reference (`mde-api.md` §13–§14); and, on a
//! second listener, Microsoft Graph's Advanced Hunting (`runHuntingQuery`)
//! for a subset of KQL (addendum §3.1).
//!
//! Tests and benches start it in-process with [`Sim::start`]; the CLI runs it
//! with [`serve`]. The parts:
//!
//! - [`server`]: the HTTP/1.1 server (hyper), latency, dropped connections.
//! - [`tls`]: HTTPS (`--tls`): the generated or given certificate.
//! - [`handlers`]: every endpoint, in the service's check order.
//! - [`state`]: tenants, tokens, quotas and counters behind one lock.
//! - [`tenant`]: the tenants served (`--tenants`) and each one's fleet and actions.
//! - [`fleet`]: the deterministic generated fleet and fleet files.
//! - [`lifecycle`]: action status over time.
//! - [`quota`]: counters per app, tenant and API, and foreign load.
//! - [`odata`]: `$filter`, `$top` and `$skip`.
//! - [`kql`]: the subset of KQL that Graph's `runHuntingQuery` answers.
//! - [`faults`]: injected errors.
//! - [`config`]: the simulator's settings and counters.
//! - [`cli`]: the `simulate` subcommand.
//! - [`catalog`]: every endpoint served and its source (help and README).

pub(crate) mod catalog;
pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod faults;
pub mod fleet;
pub(crate) mod handlers;
pub(crate) mod kql;
pub(crate) mod lifecycle;
pub(crate) mod odata;
pub(crate) mod quota;
pub(crate) mod server;
pub(crate) mod state;
pub(crate) mod tenant;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use server::lock;

use crate::api::model::Machine;

pub use cli::{SimulateArgs, serve};
pub use config::{
    ApiStats, DEFAULT_IDENTITY_HEADER, FederatedCredential, FleetSpec, IdentityConfig, KNOWN_ROLES,
    MAX_TENANTS, Service, SimConfig, SimError, Stats,
};
pub use fleet::FleetError;
pub use tls::{SimTls, TlsError};

/// A tenant of a simulator started with `--tenants`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTenant {
    /// Its name, `tenant-01` …: what the token URL and `?tenant=` take.
    pub name: String,
    /// Its id, a GUID: the `tid` of its tokens, also accepted in their place.
    pub id: String,
}

/// A running simulator. Dropping it stops accepting connections; prefer
/// [`Sim::shutdown`], which also waits for the server task.
pub struct Sim {
    /// The bound address.
    addr: SocketAddr,
    /// The bound address of the Microsoft Graph listener.
    graph_addr: SocketAddr,
    /// State shared with the server task.
    shared: Arc<server::Shared>,
    /// Tells the server task to stop.
    stop: watch::Sender<bool>,
    /// The accept loops (the API's, then Graph's), awaited on shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// The generated CA's certificate (PEM), when serving TLS with one.
    ca_pem: Option<String>,
}

impl Sim {
    /// Builds the fleet, binds `config.listen` (the API and the login) and
    /// `config.graph_listen` (Microsoft Graph; by default a free port on
    /// the same host) and serves both on the current tokio runtime: HTTPS
    /// when `config.tls` is set, plain HTTP otherwise.
    pub async fn start(config: SimConfig) -> Result<Sim, SimError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls::prepare).transpose()?;
        let (listener, addr) = bind(&config.listen).await?;
        let graph_listen = config.graph_listen.clone().unwrap_or_else(|| {
            // The host of `listen`, any free port.
            SocketAddr::new(addr.ip(), 0).to_string()
        });
        let (graph_listener, graph_addr) = bind(&graph_listen).await?;
        let shared = Arc::new(server::Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let (acceptor, ca_pem) = match tls {
            Some(t) => (Some(t.acceptor), t.ca_pem),
            None => (None, None),
        };
        let front =
            |service, at: SocketAddr| server::Front { service, local: at.to_string().into() };
        let tasks = vec![
            tokio::spawn(server::accept_loop(
                listener,
                shared.clone(),
                stopped.clone(),
                acceptor.clone(),
                front(Service::Mde, addr),
            )),
            tokio::spawn(server::accept_loop(
                graph_listener,
                shared.clone(),
                stopped,
                acceptor,
                front(Service::Graph, graph_addr),
            )),
        ];
        Ok(Sim { addr, graph_addr, shared, stop, tasks, ca_pem })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT` (`https://` when serving TLS): the API base is
    /// this plus `/api`, the token endpoint this plus
    /// `/{tenant}/oauth2/v2.0/token`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.shared.scheme, self.addr)
    }

    /// `http://HOST:PORT` of the Microsoft Graph listener (`https://` when
    /// serving TLS): `runHuntingQuery` is this plus
    /// `/v1.0/security/runHuntingQuery`; its tokens come from the login at
    /// [`Sim::url`] with the Graph scope.
    pub fn graph_url(&self) -> String {
        format!("{}://{}", self.shared.scheme, self.graph_addr)
    }

    /// The PEM certificate of the CA that signed the served certificate,
    /// when the simulator made it (TLS without given files): what a client
    /// must trust to reach it.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// The counters, as `GET /_sim/stats` serves them.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.state).stats()
    }

    /// The machines as they stand now (health changes through `/_sim` hooks
    /// included); with `--tenants`, the first tenant's (see [`Sim::tenant_fleet`]).
    pub fn fleet(&self) -> Vec<Machine> {
        lock(&self.shared.state).machines()
    }

    /// Accepted actions per (machine id, action type): what a run did to
    /// each device, for tests that no device was touched twice.
    pub fn action_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.shared.state).action_counts()
    }

    /// The tenants served with `--tenants` ([`SimConfig::tenants`]), in
    /// order: each one's name (`tenant-01`) and id (the `tid` of its
    /// tokens). Empty for a one-tenant simulator.
    pub fn tenants(&self) -> Vec<SimTenant> {
        let state = lock(&self.shared.state);
        if !state.multi_tenant() {
            return Vec::new();
        }
        state.tenants.iter().map(|t| SimTenant { name: t.name.clone(), id: t.id.clone() }).collect()
    }

    /// The machines of one tenant (by name or id) as they stand now, or
    /// `None` when the simulator serves no such tenant. A one-tenant
    /// simulator answers to any name with its fleet.
    pub fn tenant_fleet(&self, tenant: &str) -> Option<Vec<Machine>> {
        let state = lock(&self.shared.state);
        state.tenant_index(tenant).map(|t| state.tenants[t].machines())
    }

    /// Revokes a client's credentials in every tenant (as `POST
    /// /_sim/clients/{id}/revoke`).
    pub fn revoke_client(&self, client_id: &str) {
        lock(&self.shared.state).revoke_client(client_id, None);
    }

    /// Restores a revoked client (as `POST /_sim/clients/{id}/restore`).
    pub fn restore_client(&self, client_id: &str) {
        lock(&self.shared.state).restore_client(client_id, None);
    }

    /// Withdraws one tenant's consent to a client (as `POST
    /// /_sim/clients/{id}/revoke?tenant=`): that tenant refuses it, the
    /// others go on serving it. `false` when there is no such tenant.
    pub fn revoke_client_in(&self, client_id: &str, tenant: &str) -> bool {
        let mut state = lock(&self.shared.state);
        let Some(t) = state.tenant_index(tenant) else { return false };
        state.revoke_client(client_id, Some(t));
        true
    }

    /// Stops accepting connections, lets open ones finish their current
    /// request (for up to a second), and waits for the server to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

/// Binds a listener at `at`: it and its address (with the real port).
async fn bind(at: &str) -> Result<(tokio::net::TcpListener, SocketAddr), SimError> {
    let fail =
        |e: std::io::Error| SimError::Listen { addr: at.to_string(), why: fleet::io_reason(&e) };
    let listener = tokio::net::TcpListener::bind(at).await.map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    Ok((listener, addr))
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
