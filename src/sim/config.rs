//! The simulator's settings ([`SimConfig`], the fleet it serves, the roles
//! it knows), its errors and the counters it serves at `/_sim/stats`: what
//! the server, the state and the command line share, in a file of its own
//! so that they share it without importing the module above them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fleet::FleetError;
use super::tls::{SimTls, TlsError};
use crate::api::model::Machine;
use crate::pace::limit::{Limit, LimitError};
use crate::pace::window::WindowModel;

/// The application permissions (`roles` claim) the simulator knows: the seven
/// action permissions, then the two machine read permissions, then the
/// permissions of the log-on users (`User.Read.All`) and investigation
/// (`Alert.ReadWrite.All`) APIs, and last Microsoft Graph's Advanced Hunting
/// permission (`ThreatHunting.Read.All`), which only Graph tokens carry. One
/// bit each in a `u16` roles mask, so at most sixteen; the defaults grant
/// the first eight and the Graph one.
pub const KNOWN_ROLES: [&str; 12] = [
    "Machine.Isolate",
    "Machine.StopAndQuarantine",
    "Machine.Offboard",
    "Machine.Scan",
    "Machine.CollectForensics",
    "Machine.RestrictExecution",
    "Machine.LiveResponse",
    "Machine.Read.All",
    "Machine.ReadWrite.All",
    "User.Read.All",
    "Alert.ReadWrite.All",
    GRAPH_HUNTING_ROLE,
];

/// The most tenants `--tenants` makes: their names keep two digits
/// (`tenant-01` … `tenant-99`), so they sort as they are numbered.
pub const MAX_TENANTS: usize = 99;

/// Microsoft Graph's application permission for `runHuntingQuery`.
pub(crate) const GRAPH_HUNTING_ROLE: &str = "ThreatHunting.Read.All";

/// The two services the simulator answers, each on its own listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The MDE API (`/api/...`), the login and the managed-identity endpoints.
    Mde,
    /// Microsoft Graph (`/v1.0/security/runHuntingQuery`).
    Graph,
}

/// The header value the App Service token endpoint demands when none is set.
pub const DEFAULT_IDENTITY_HEADER: &str = "sim-identity-header";

/// A federated identity credential of the app (workload identity federation):
/// tokens from `issuer` about `subject`, signed by the key of `certificate`,
/// are traded for access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// The `iss` the external token must carry.
    pub issuer: String,
    /// The `sub` the external token must carry.
    pub subject: String,
    /// DER certificate whose key signs the external tokens (the issuer's
    /// signing key, which Entra would find through the issuer's JWKS).
    pub certificate: Vec<u8>,
}

/// How apps and workloads prove who they are besides a client secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// DER certificates registered on the app: a client assertion signed by
    /// one of their keys and naming it by thumbprint logs the app in.
    pub client_certificates: Vec<Vec<u8>>,
    /// Federated credentials registered on the app.
    pub federated: Vec<FederatedCredential>,
    /// Client ids of the user-assigned managed identities of the simulated
    /// host; its system-assigned identity always exists.
    pub managed_identities: Vec<String>,
    /// The `X-IDENTITY-HEADER` value the App Service endpoint demands (its
    /// `IDENTITY_HEADER`, also the 2017 shape's `secret`).
    pub identity_header: String,
    /// When set, the IMDS path answers as Azure Arc's agent does: a first
    /// request is challenged with a key file written in this directory,
    /// and only a request carrying that file's content gets a token.
    pub arc_key_dir: Option<std::path::PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            client_certificates: Vec::new(),
            federated: Vec::new(),
            managed_identities: Vec::new(),
            identity_header: DEFAULT_IDENTITY_HEADER.to_string(),
            arc_key_dir: None,
        }
    }
}

/// Where the simulated tenant's machines come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetSpec {
    /// Generate this many records from the seed (see [`fleet`] for the layout).
    Generate {
        /// Number of machine records.
        machines: usize,
    },
    /// Use these machines, in this order (e.g. loaded with `--fleet`).
    Machines(Vec<Machine>),
}

/// Every knob of the simulator. [`Default`] gives the documented defaults.
/// Its `Debug` output never shows the client secret.
#[derive(Clone)]
pub struct SimConfig {
    /// Address to bind, such as `127.0.0.1:8080`; port 0 picks a free one.
    pub listen: String,
    /// Address of the Microsoft Graph listener; `None`: a free port on the
    /// host of `listen`.
    pub graph_listen: Option<String>,
    /// The tenant's machines.
    pub fleet: FleetSpec,
    /// Quotas per app, tenant and API; empty means no quota at all.
    pub limits: Vec<Limit>,
    /// How calls are counted against the limits.
    pub window: WindowModel,
    /// Added to every request: half before it is counted, half before the reply.
    pub latency: Duration,
    /// Fraction of API calls (0 to 1) answered with an injected fault.
    pub error_rate: f64,
    /// Time from acceptance to the final status of an action on an online machine.
    pub settle: Duration,
    /// Fraction of actions (0 to 1) that end Failed instead of Succeeded.
    pub fail_rate: f64,
    /// Fraction of generated machines (0 to 1) that are offline.
    pub offline_rate: f64,
    /// How long an action on an offline machine stays Pending before TimeOut.
    pub action_timeout: Duration,
    /// Lifetime of issued tokens (`expires_in`).
    pub token_ttl: Duration,
    /// When set, the only client id the token endpoint accepts.
    pub client_id: Option<String>,
    /// When set, the only client secret the token endpoint accepts.
    pub client_secret: Option<String>,
    /// When set, the only tenant the token endpoint accepts.
    pub tenant: Option<String>,
    /// When set, serve this many tenants (`tenant-01` …), each with its own
    /// generated fleet, actions, quotas and counters, instead of one tenant
    /// answering to any name (1 to [`MAX_TENANTS`]).
    pub tenants: Option<usize>,
    /// When set, tokens issued after this many are refused with
    /// `invalid_client`: a client secret revoked in the middle of a run.
    pub max_tokens: Option<u64>,
    /// Whether the token endpoint's errors quote the request body back, raw
    /// and decoded as JSON, as some identity proxies do: the client must
    /// scrub its secret in every encoding.
    pub echo_token_requests: bool,
    /// Permissions granted to every token (`roles` claim).
    pub roles: Vec<String>,
    /// Fraction of every window (0 to 1) that another app of the tenant consumes.
    pub foreign_load: f64,
    /// Fraction of API calls (0 to 1) refused with 429 whatever the counts (CPU quota).
    pub cpu_throttle_rate: f64,
    /// When set, the `Retry-After` of every 429, verbatim, in place of the
    /// real wait: a faulty server or proxy (`18446744073709551615`, a date in
    /// the year 9999) that a client must survive.
    pub throttle_retry_after: Option<String>,
    /// The app's display name, reported as `requestor` of its actions.
    pub app_name: String,
    /// Entities per list reply before an `@odata.nextLink`; `None` never pages.
    pub page_size: Option<usize>,
    /// The credentials other than a secret that the login accepts:
    /// certificates, federated credentials, managed identities.
    pub identity: IdentityConfig,
    /// Seed of every random choice (fleet, failures, faults).
    pub seed: u64,
    /// When set, serve HTTPS with this certificate instead of plain HTTP:
    /// for testing a client's CA and proxy settings end to end.
    pub tls: Option<SimTls>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: "127.0.0.1:8080".to_string(),
            graph_listen: None,
            fleet: FleetSpec::Generate { machines: 1000 },
            limits: Limit::api_defaults(),
            window: WindowModel::Sliding,
            latency: Duration::ZERO,
            error_rate: 0.0,
            settle: Duration::from_secs(2),
            fail_rate: 0.0,
            offline_rate: 0.0,
            action_timeout: Duration::from_secs(60),
            token_ttl: Duration::from_secs(3599),
            client_id: None,
            client_secret: None,
            tenant: None,
            tenants: None,
            max_tokens: None,
            echo_token_requests: false,
            roles: KNOWN_ROLES[..8]
                .iter()
                .chain([&GRAPH_HUNTING_ROLE])
                .map(|s| s.to_string())
                .collect(),
            foreign_load: 0.0,
            cpu_throttle_rate: 0.0,
            throttle_retry_after: None,
            app_name: "mdebulk simulator".to_string(),
            page_size: None,
            identity: IdentityConfig::default(),
            seed: 1,
            tls: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("graph_listen", &self.graph_listen)
            .field("fleet", &self.fleet)
            .field("limits", &self.limits)
            .field("window", &self.window)
            .field("latency", &self.latency)
            .field("error_rate", &self.error_rate)
            .field("settle", &self.settle)
            .field("fail_rate", &self.fail_rate)
            .field("offline_rate", &self.offline_rate)
            .field("action_timeout", &self.action_timeout)
            .field("token_ttl", &self.token_ttl)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("tenant", &self.tenant)
            .field("tenants", &self.tenants)
            .field("max_tokens", &self.max_tokens)
            .field("echo_token_requests", &self.echo_token_requests)
            .field("roles", &self.roles)
            .field("foreign_load", &self.foreign_load)
            .field("cpu_throttle_rate", &self.cpu_throttle_rate)
            .field("throttle_retry_after", &self.throttle_retry_after)
            .field("app_name", &self.app_name)
            .field("page_size", &self.page_size)
            .field("identity", &self.identity)
            .field("seed", &self.seed)
            .field("tls", &self.tls)
            .finish()
    }
}

impl SimConfig {
    /// Checks the ranges of the knobs: rates between 0 and 1, a page size of
    /// at least 1, known roles.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        for (flag, v) in [
            ("--error-rate", self.error_rate),
            ("--fail-rate", self.fail_rate),
            ("--offline-rate", self.offline_rate),
            ("--foreign-load", self.foreign_load),
            ("--cpu-throttle-rate", self.cpu_throttle_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SimError::Invalid {
                    flag,
                    why: format!("{v} is not a fraction between 0 and 1"),
                });
            }
        }
        if let Some(v) = &self.throttle_retry_after
            && (v.trim().is_empty() || !v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        {
            return Err(SimError::Invalid {
                flag: "--throttle-retry-after",
                why: format!("{v:?} is not a header value (printable ASCII)"),
            });
        }
        if let Some(n) = self.tenants {
            if !(1..=MAX_TENANTS).contains(&n) {
                return Err(SimError::Invalid {
                    flag: "--tenants",
                    why: format!("{n} is not between 1 and {MAX_TENANTS}"),
                });
            }
            if self.tenant.is_some() {
                return Err(SimError::Invalid {
                    flag: "--tenants",
                    why: "names its own tenants: it cannot be combined with --tenant".into(),
                });
            }
            if matches!(self.fleet, FleetSpec::Machines(_)) {
                return Err(SimError::Invalid {
                    flag: "--tenants",
                    why: "generates a fleet per tenant: it cannot be combined with --fleet".into(),
                });
            }
        }
        if self.page_size == Some(0) {
            return Err(SimError::Invalid {
                flag: "--page-size",
                why: "must be at least 1".into(),
            });
        }
        if let Some(bad) = self.roles.iter().find(|r| !KNOWN_ROLES.contains(&r.as_str())) {
            return Err(SimError::Invalid {
                flag: "--roles",
                why: format!("unknown role {bad:?} (known: {})", KNOWN_ROLES.join(", ")),
            });
        }
        Ok(())
    }
}

/// Why the simulator could not start. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {why}")]
    Listen {
        /// The address as configured.
        addr: String,
        /// Why, in a few words (`address in use`).
        why: String,
    },
    /// The fleet file is unreadable or invalid.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A `--limit` value is malformed.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The TLS certificate could not be made or read.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Another flag has a bad value.
    #[error("invalid {flag}: {why}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// Counters of one API (`by_api` in [`Stats`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ApiStats {
    /// Requests routed to this API, whatever the answer.
    pub calls: u64,
    /// Calls counted against the quota (passed authentication, authorization and quota).
    pub admitted: u64,
    /// Calls refused with 429.
    pub throttled: u64,
}

/// The simulator's counters, as served by `GET /_sim/stats`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Stats {
    /// Every request except `/_sim/*` ones (token requests and unknown routes included).
    pub requests: u64,
    /// 429 replies (quota and CPU-quota).
    pub throttled: u64,
    /// 429 replies drawn by `cpu_throttle_rate` (included in `throttled`).
    pub cpu_throttled: u64,
    /// 401 replies of the API (missing, unknown or expired bearer).
    pub unauthorized: u64,
    /// 403 replies (role missing).
    pub forbidden: u64,
    /// 404 replies (unknown route, machine or action).
    pub not_found: u64,
    /// 400 replies of the API (validation, duplicates, OData, final-state cancel).
    pub bad_request: u64,
    /// Faults injected by `error_rate`: the sum of the four counters below.
    pub errors_injected: u64,
    /// Injected 500 InternalServerError replies.
    pub injected_500: u64,
    /// Injected 503 replies.
    pub injected_503: u64,
    /// Connections dropped before the call was processed.
    pub dropped_before: u64,
    /// Connections dropped after the call was processed (the client never saw the answer).
    pub dropped_after: u64,
    /// Actions accepted (201).
    pub actions_created: u64,
    /// Action POSTs refused with ActiveRequestAlreadyExists.
    pub duplicates_refused: u64,
    /// Action POSTs for a machine + type + parameters (IsolationType, Sha1,
    /// ScanType; not Comment) that already had an accepted action earlier,
    /// whatever their own answer.
    pub duplicate_submissions: u64,
    /// Actions cancelled through the API.
    pub cancelled: u64,
    /// Requests to the token endpoint.
    pub token_requests: u64,
    /// Tokens issued (by the token endpoint and the managed-identity endpoints).
    pub tokens_issued: u64,
    /// Requests to the managed-identity endpoints (IMDS and App Service shapes).
    pub managed_identity_requests: u64,
    /// Requests for OpenID Connect discovery, instance discovery and signing keys.
    pub discovery_requests: u64,
    /// Per API (keyed by [`crate::api::route::Api::name`]): calls, admitted, throttled.
    pub by_api: BTreeMap<String, ApiStats>,
    /// With `--tenants`: the counters of the requests attributed to each
    /// tenant, by tenant name (their own `tenants` empty). Requests of no
    /// tenant (an unknown tenant's login, a token the simulator never
    /// issued, an unknown route) are counted in the totals only. Empty, and
    /// left out of `/_sim/stats`, for a one-tenant simulator.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, Stats>,
}
