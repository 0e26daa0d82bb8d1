//! The MDE API client: one method per call the tool makes, each making
//! exactly ONE attempt and reporting precisely what happened.
//!
//! Retries, pacing and the reaction to a 429 belong to the pipeline, which
//! must see and count every attempt; so this client never retries (reqwest's
//! own retry policy and redirects are switched off) and turns every outcome
//! into either a [`Reply`] or a [`CallError`].
//!
//! Every request carries `Authorization: Bearer <token>` (from the shared
//! [`TokenSource`]), `User-Agent: mdebulk/<version>` and
//! `Accept: application/json`; POSTs send `Content-Type: application/json`.
//! TLS is always verified (rustls with the platform verifier, plus any
//! extra CA roots of [`ClientConfig::extra_roots`]); plain
//! `http://` is accepted only for loopback hosts, which is how tests and the
//! simulator are reached. Calls are logged at debug level with method, path,
//! status, elapsed time and the error's `target`; never a header, token or
//! secret.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use super::action::{ActionKind, IsolationType, ScanType};
use super::auth::{AuthError, Credentials, Secret, TokenSource, error_chain, scrub};
use super::cloud::Cloud;
use super::model::{
    ApiErrorBody, ErrorEnvelope, HuntingQueryResults, Machine, MachineAction, MachineSummary,
    ODataList,
};
use super::odata::ListQuery;
use super::route::Api;
use crate::text::excerpt;

// The error types every caller of the client matches on, at the client's path.
pub use super::error::{CallError, ConfigError, TransportKind};
use super::error::{parse_retry_after, status_code_name};
use super::net::{transport_kind, transport_message};

/// `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("mdebulk/", env!("CARGO_PKG_VERSION"));

/// Default limit for a whole call (connect, send, answer).
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default limit for opening a connection.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest excerpt of a non-JSON error body kept in an error.
const EXCERPT_CHARS: usize = 200;

/// Everything the client needs to reach one tenant.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API host, with or without `/api` (or `/api/v1.0`) at the end.
    pub api_base: String,
    /// Entra ID login host (used with client credentials).
    pub login_base: String,
    /// OAuth2 scope of the token.
    pub scope: String,
    /// Client credentials or a static bearer token.
    pub credentials: Credentials,
    /// Limit for a whole call; a call that exceeds it is a
    /// [`TransportKind::Timeout`] that may have been delivered.
    pub request_timeout: Duration,
    /// Limit for opening a connection; exceeding it means nothing was sent.
    pub connect_timeout: Duration,
    /// CA certificates trusted in addition to the platform's roots
    /// (`--ca-cert`, `SSL_CERT_FILE`): a TLS-inspecting proxy's CA, or the
    /// simulator's. They add trust; verification itself stays on.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `--proxy`: every request (login and API, loopback included) goes
    /// through it, in place of the `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`
    /// environment. A [`Secret`] because its URL may carry a password.
    pub proxy: Option<Secret>,
    /// Where Microsoft Graph is, for Advanced Hunting queries
    /// (`--graph-url`, by `--cloud`); `None` when the command asks Graph
    /// nothing (the global host is then assumed, and never reached).
    pub graph: Option<GraphConfig>,
}

/// Microsoft Graph's host, token audience and, with a ready token
/// (`MDE_TOKEN`), the ready Graph token (`MDE_GRAPH_TOKEN`).
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Graph's base URL, with or without `/v1.0` at the end.
    pub base: String,
    /// The scope of Graph tokens (`https://graph.microsoft.com/.default`).
    pub scope: String,
    /// A ready Graph token, when the credentials are a ready token.
    pub ready_token: Option<Secret>,
}

impl ClientConfig {
    /// A configuration with the default timeouts.
    pub fn new(
        api_base: impl Into<String>,
        login_base: impl Into<String>,
        scope: impl Into<String>,
        credentials: Credentials,
    ) -> ClientConfig {
        ClientConfig {
            api_base: api_base.into(),
            login_base: login_base.into(),
            scope: scope.into(),
            credentials,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            extra_roots: Vec::new(),
            proxy: None,
            graph: None,
        }
    }

    /// The hosts and scope of `cloud`, with the default timeouts.
    pub fn for_cloud(cloud: Cloud, credentials: Credentials) -> ClientConfig {
        ClientConfig::new(cloud.api_base(), cloud.login_base(), cloud.scope(), credentials)
    }
}

/// The body of an action request. Serialised by [`ActionBody::to_json`] with
/// only the keys the action accepts, spelt exactly as the API matches them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionBody {
    /// `Comment`: required by every action, shown in the portal's history.
    pub comment: String,
    /// `IsolationType`, sent for isolate only; omitted means the API default.
    pub isolation_type: Option<IsolationType>,
    /// `Sha1` of the file to stop and quarantine, sent as given.
    pub sha1: Option<String>,
    /// `ScanType`, sent for antivirus scans only.
    pub scan_type: Option<ScanType>,
}

impl ActionBody {
    /// A body with only a comment.
    pub fn new(comment: impl Into<String>) -> ActionBody {
        ActionBody { comment: comment.into(), ..ActionBody::default() }
    }

    /// The JSON object for `action`: keys in the order of
    /// [`ActionKind::allowed_keys`], `Comment` always, the others only when
    /// set; values the action does not take are left out.
    pub(crate) fn to_json(&self, action: ActionKind) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for key in action.allowed_keys() {
            let value = match *key {
                "Comment" => Some(self.comment.clone()),
                "IsolationType" => self.isolation_type.map(|t| t.api_name().to_string()),
                "Sha1" => self.sha1.clone(),
                "ScanType" => self.scan_type.map(|t| t.api_name().to_string()),
                _ => None,
            };
            if let Some(v) = value {
                map.insert((*key).to_string(), serde_json::Value::String(v));
            }
        }
        serde_json::Value::Object(map)
    }

    /// The first required key `action` needs that this body lacks (an empty
    /// comment counts as missing), so a caller can refuse the row before
    /// spending a call on a certain 400.
    pub fn missing_parameter(&self, action: ActionKind) -> Option<&'static str> {
        if self.comment.trim().is_empty() {
            return Some("Comment");
        }
        match action {
            ActionKind::StopAndQuarantineFile if self.sha1.is_none() => Some("Sha1"),
            ActionKind::RunAntiVirusScan if self.scan_type.is_none() => Some("ScanType"),
            _ => None,
        }
    }
}

/// A successful reply: the 2xx status (200 and 201 both occur for actions)
/// and the decoded body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// HTTP status of the reply.
    pub status: u16,
    /// The decoded body.
    pub value: T,
}

/// The MDE API client. Cheap to clone: every clone shares one connection
/// pool and one token cache.
#[derive(Clone)]
pub struct Client {
    /// Shared state behind the clones.
    inner: Arc<Inner>,
}

/// What clones of a [`Client`] share.
struct Inner {
    /// The HTTP stack: timeouts, no redirects, no retries.
    http: reqwest::Client,
    /// API root, ending in `/api` or `/api/v1.0`.
    api: Url,
    /// Graph's root, ending in `/v1.0` (or `/beta`).
    graph: Url,
    /// The scope of Graph tokens.
    graph_scope: String,
    /// The token cache.
    tokens: TokenSource,
    /// The configured limit of one call (Graph's may be longer).
    request_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.inner.api.as_str())
            .field("tokens", &self.inner.tokens)
            .finish()
    }
}

impl Client {
    /// Checks the configuration and builds the client; nothing is sent yet.
    ///
    /// Both URLs must be `https://`, or `http://` to a loopback host
    /// (127.0.0.0/8, ::1, localhost). Trailing slashes are ignored, and the
    /// API base may or may not end in `/api` (or `/api/v1.0`).
    pub fn new(config: ClientConfig) -> Result<Client, ConfigError> {
        if config.request_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout { what: "request" });
        }
        if config.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout { what: "connect" });
        }
        config.credentials.check()?;
        let api = api_root(check_base_url("API", &config.api_base)?);
        let login = check_base_url("login", &config.login_base)?;
        let graph_base = config.graph.as_ref().map_or(Cloud::Global.graph_base(), |g| &g.base);
        let graph = graph_root(check_base_url("Graph", graph_base)?);
        // Graph is reached only when the command asks it something.
        let graph_used = config.graph.is_some();

        let roots = extra_roots(&config)?;
        let base = || http_builder(&config, &roots);
        let mut builder = base();
        let login_used = config.credentials.uses_login_endpoint();
        match &config.proxy {
            // An explicit proxy replaces the environment's, for every host.
            Some(proxy) => builder = builder.proxy(proxy_from(proxy.expose())?),
            // A proxy from the environment must not capture loopback traffic
            // to a local simulator.
            None if is_loopback(&api)
                && (!login_used || is_loopback(&login))
                && (!graph_used || is_loopback(&graph)) =>
            {
                builder = builder.no_proxy();
            }
            None => {}
        }
        let http = builder.build().map_err(|e| ConfigError::Http(error_chain(&e)))?;
        // A managed identity endpoint is on this host (link-local or
        // loopback): never through a proxy, whatever the API's traffic does.
        let token_http = if matches!(config.credentials, Credentials::ManagedIdentity(_)) {
            base().no_proxy().build().map_err(|e| ConfigError::Http(error_chain(&e)))?
        } else {
            http.clone()
        };
        let mut tokens =
            TokenSource::new(token_http, login.as_str(), &config.scope, config.credentials);
        let graph_scope = config
            .graph
            .as_ref()
            .map_or_else(|| Cloud::Global.graph_scope().to_string(), |g| g.scope.clone());
        if let Some(token) = config.graph.and_then(|g| g.ready_token) {
            tokens = tokens.with_ready_token(&graph_scope, token);
        }
        let request_timeout = config.request_timeout;
        Ok(Client {
            inner: Arc::new(Inner { http, api, graph, graph_scope, tokens, request_timeout }),
        })
    }

    /// The token cache (for its fetch count, or to share it).
    pub fn tokens(&self) -> &TokenSource {
        &self.inner.tokens
    }

    /// The API root every path is appended to (ends in `/api` or `/api/v1.0`).
    pub fn api_root(&self) -> &Url {
        &self.inner.api
    }

    /// `POST machines/{id}/{action}`. 200 and 201 are both success (the
    /// offboard page says 200, the real service answers 201).
    pub async fn submit(
        &self,
        machine_id: &str,
        action: ActionKind,
        body: &ActionBody,
    ) -> Result<Reply<MachineAction>, CallError> {
        let url = self.url(&["machines", machine_id, action.path_segment()], None);
        self.call(Api::Action(action), Method::POST, url, Some(body.to_json(action))).await
    }

    /// `GET machineactions` with OData options.
    pub async fn list_actions(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<MachineAction>>, CallError> {
        let url = self.url(&["machineactions"], query.to_query_string());
        self.call(Api::ListActions, Method::GET, url, None).await
    }

    /// `GET machines` with OData options.
    pub async fn list_machines(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<Machine>>, CallError> {
        let url = self.url(&["machines"], query.to_query_string());
        self.call(Api::ListMachines, Method::GET, url, None).await
    }

    /// `GET machines` with OData options, each entity read into the keys a
    /// device look-up uses (see [`MachineSummary`]).
    pub async fn list_machine_summaries(
        &self,
        query: &ListQuery,
    ) -> Result<Reply<ODataList<MachineSummary>>, CallError> {
        let url = self.url(&["machines"], query.to_query_string());
        self.call(Api::ListMachines, Method::GET, url, None).await
    }

    /// `GET machines/findbytag?tag=..&useStartsWithFilter=..`: the machines
    /// with the tag, or with a tag starting with it; one reply, no paging.
    pub async fn find_by_tag(
        &self,
        tag: &str,
        starts_with: bool,
    ) -> Result<Reply<ODataList<Machine>>, CallError> {
        let mut url = self.url(&["machines", "findbytag"], None);
        url.query_pairs_mut()
            .append_pair("tag", tag)
            .append_pair("useStartsWithFilter", if starts_with { "true" } else { "false" });
        self.call(Api::FindByTag, Method::GET, url, None).await
    }

    /// `GET files/{sha1}/machines`: the machines that have seen the file.
    pub async fn file_machines(&self, sha1: &str) -> Result<Reply<ODataList<Machine>>, CallError> {
        let url = self.url(&["files", sha1, "machines"], None);
        self.call(Api::FileMachines, Method::GET, url, None).await
    }

    /// `POST machines/AddOrRemoveTagForMultipleMachines`: adds (or, with
    /// `add` false, removes) the tag `value` on up to 500 machines. The
    /// updated machines in the reply are not read: the caller knows which
    /// machines it named.
    pub async fn tag_machines(
        &self,
        value: &str,
        add: bool,
        machine_ids: &[String],
    ) -> Result<Reply<serde::de::IgnoredAny>, CallError> {
        let url = self.url(&["machines", "AddOrRemoveTagForMultipleMachines"], None);
        let body = serde_json::json!({
            "Value": value,
            "Action": if add { "Add" } else { "Remove" },
            "MachineIds": machine_ids,
        });
        self.call(Api::MachinesTags, Method::POST, url, Some(body)).await
    }

    /// `GET machines/{id}`: by machine id or by computer name.
    pub async fn get_machine(&self, id_or_name: &str) -> Result<Reply<Machine>, CallError> {
        let url = self.url(&["machines", id_or_name], None);
        self.call(Api::GetMachine, Method::GET, url, None).await
    }

    /// `GET machineactions/{id}`.
    pub async fn get_action(&self, action_id: &str) -> Result<Reply<MachineAction>, CallError> {
        let url = self.url(&["machineactions", action_id], None);
        self.call(Api::GetAction, Method::GET, url, None).await
    }

    /// `POST machineactions/{id}/cancel`, with `{"Comment": ...}` or `{}`.
    pub async fn cancel_action(
        &self,
        action_id: &str,
        comment: Option<&str>,
    ) -> Result<Reply<MachineAction>, CallError> {
        let url = self.url(&["machineactions", action_id, "cancel"], None);
        let mut body = serde_json::Map::new();
        if let Some(c) = comment {
            body.insert("Comment".to_string(), serde_json::Value::String(c.to_string()));
        }
        self.call(Api::CancelAction, Method::POST, url, Some(serde_json::Value::Object(body))).await
    }

    /// Microsoft Graph's `POST security/runHuntingQuery` with
    /// `{"Query": query}`: the query's columns and rows. Presents a Graph
    /// token (its own audience, cached apart from the API's); waits up to
    /// [`HUNTING_TIMEOUT`] (or the request timeout, if longer) and reads at
    /// most [`MAX_HUNTING_REPLY`] bytes of the reply.
    pub async fn run_hunting_query(
        &self,
        query: &str,
    ) -> Result<Reply<HuntingQueryResults>, CallError> {
        let mut url = self.inner.graph.clone();
        // Invariant: `graph` is an http(s) URL (checked in `new`).
        url.path_segments_mut()
            .expect("http(s) URLs can be a base")
            .pop_if_empty()
            .extend(["security", "runHuntingQuery"]);
        let body = serde_json::json!({ "Query": query });
        let how = Exchange::Graph { timeout: HUNTING_TIMEOUT, cap: MAX_HUNTING_REPLY };
        self.call_as(Api::HuntingQuery, Method::POST, url, Some(body), how).await
    }

    /// The API root plus `segments` (each percent-encoded as one segment)
    /// and an already encoded query.
    fn url(&self, segments: &[&str], query: Option<String>) -> Url {
        let mut url = self.inner.api.clone();
        // Invariant: `api` is an http(s) URL (checked in `new`), and those
        // always have path segments.
        url.path_segments_mut()
            .expect("http(s) URLs can be a base")
            .pop_if_empty()
            .extend(segments);
        url.set_query(query.as_deref());
        url
    }

    /// One attempt of an MDE API call: token, request, reply classified.
    async fn call<T: DeserializeOwned>(
        &self,
        api: Api,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
    ) -> Result<Reply<T>, CallError> {
        self.call_as(api, method, url, body, Exchange::Mde).await
    }

    /// One attempt, with the token, time limit and size cap `how` says.
    async fn call_as<T: DeserializeOwned>(
        &self,
        api: Api,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        how: Exchange,
    ) -> Result<Reply<T>, CallError> {
        let token = match how {
            Exchange::Mde => self.inner.tokens.bearer().await,
            Exchange::Graph { .. } => self.inner.tokens.bearer_for(&self.inner.graph_scope).await,
        }
        .inspect_err(|e| {
            tracing::debug!(%method, path = url.path(), api = api.name(), error.code = e.code(), "no token: {e}");
        })?;
        let started = Instant::now();
        let mut request =
            self.inner.http.request(method.clone(), url.clone()).bearer_auth(token.expose());
        if let Some(body) = &body {
            request = request.header(CONTENT_TYPE, "application/json").json(body);
        }
        let cap = match how {
            Exchange::Mde => None,
            Exchange::Graph { timeout, cap } => {
                // The longer of Advanced Hunting's own limit and the user's.
                request = request.timeout(timeout.max(self.inner.request_timeout));
                Some(cap)
            }
        };

        let result = self.exchange(request, &token, cap).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let result = result.and_then(|(status, reply)| {
            if (200..300).contains(&status) {
                serde_json::from_slice::<T>(&reply.bytes)
                    .map(|value| Reply { status, value })
                    .map_err(|e| CallError::Decode {
                        status,
                        message: scrub(
                            &format!("{e} ({} bytes)", reply.bytes.len()),
                            &[token.expose()],
                        ),
                    })
            } else {
                Err(self.classify(status, &reply, &token))
            }
        });
        match &result {
            Ok(reply) => tracing::debug!(
                %method,
                path = url.path(),
                api = api.name(),
                status = reply.status,
                elapsed_ms,
                "MDE API call"
            ),
            Err(e) => tracing::debug!(
                %method,
                path = url.path(),
                api = api.name(),
                status = e.http_status(),
                elapsed_ms,
                error.code = e.code(),
                error.target = e.target(),
                "MDE API call failed: {e}"
            ),
        }
        result
    }

    /// Sends the request and reads the whole reply: at most `cap` bytes of
    /// it, when given (a longer reply is refused, not read on).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        token: &Secret,
        cap: Option<u64>,
    ) -> Result<(u16, Response), CallError> {
        let mut response = request.send().await.map_err(|e| transport_error(&e, false, token))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        // Chunk by chunk into one buffer sized from Content-Length: reading
        // the body whole would gather its chunks and then concatenate them
        // (and `to_vec` copy that again), holding a 10,000-machine listing
        // page two or three times over. The announced length only sizes the
        // first allocation, capped, so a hostile header cannot reserve more.
        let announced = response.content_length().unwrap_or(0).min(MAX_PREALLOCATED_BODY);
        let mut bytes = Vec::with_capacity(announced as usize);
        while let Some(chunk) =
            response.chunk().await.map_err(|e| transport_error(&e, true, token))?
        {
            bytes.extend_from_slice(&chunk);
            if let Some(cap) = cap
                && bytes.len() as u64 > cap
            {
                return Err(CallError::Decode {
                    status,
                    message: format!(
                        "the reply is larger than {} MB, the most read of a hunting query; narrow the query (project DeviceId, distinct, take)",
                        cap >> 20
                    ),
                });
            }
        }
        Ok((status, Response { headers, bytes }))
    }

    /// The error for a non-2xx reply. A 401 also invalidates the token used.
    fn classify(&self, status: u16, reply: &Response, token: &Secret) -> CallError {
        let error = error_body(status, &reply.bytes, token);
        match status {
            401 => {
                self.inner.tokens.invalidate(token);
                if self.inner.tokens.is_static() {
                    CallError::Auth(AuthError::BearerRejected)
                } else {
                    CallError::Unauthorized { error }
                }
            }
            429 => CallError::Throttled {
                retry_after: parse_retry_after(&reply.headers, SystemTime::now()),
                error,
            },
            _ => CallError::Api {
                status,
                error,
                retry_after: parse_retry_after(&reply.headers, SystemTime::now()),
            },
        }
    }
}

/// How one call is made: the API's way, or Graph's (its token audience,
/// its own time limit and reply size cap).
#[derive(Debug, Clone, Copy)]
enum Exchange {
    /// An MDE API call: the API's token, the request timeout, no cap.
    Mde,
    /// A Graph call.
    Graph {
        /// The least time the call may take.
        timeout: Duration,
        /// The most bytes of reply read.
        cap: u64,
    },
}

/// How long an Advanced Hunting query may run: the service's own limit is
/// about three minutes of running time per request.
pub const HUNTING_TIMEOUT: Duration = Duration::from_secs(180);

/// The most bytes of a hunting reply read: 50 MB, far above the device
/// list any action run needs.
pub const MAX_HUNTING_REPLY: u64 = 50 << 20;

/// Bytes of a reply body reserved up front from its Content-Length at most
/// (a listing page of 10,000 machines is about 8 MB); a longer body grows
/// the buffer as it arrives.
const MAX_PREALLOCATED_BODY: u64 = 32 << 20;

/// A reply read to the end.
struct Response {
    /// Its headers (for `Retry-After` and `Date`).
    headers: HeaderMap,
    /// Its body.
    bytes: Vec<u8>,
}

/// The error envelope of a reply; for a body that is not one, our code for
/// the status with an excerpt of the body as message; `None` for an empty
/// body.
fn error_body(status: u16, body: &[u8], token: &Secret) -> Option<ApiErrorBody> {
    let secrets = [token.expose()];
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let mut e = envelope.error;
        e.message = scrub(&e.message, &secrets);
        return Some(e);
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return None;
    }
    Some(ApiErrorBody {
        code: status_code_name(status).to_string(),
        message: format!(
            "reply is not an API error envelope: {}",
            excerpt(&scrub(&text, &secrets), EXCERPT_CHARS)
        ),
        target: None,
    })
}

/// Classifies a reqwest failure ([`transport_kind`]). `after_headers`: the
/// reply's status line had already arrived, so the request certainly
/// reached the server.
fn transport_error(e: &reqwest::Error, after_headers: bool, token: &Secret) -> CallError {
    let kind = transport_kind(e, after_headers);
    // Connect errors (refused, DNS, TLS handshake, connect timeout) and
    // requests that could not even be built never left this machine; any
    // other failure may have happened after the server got the request.
    let never_sent = !after_headers && (e.is_connect() || e.is_builder());
    CallError::Transport {
        kind,
        maybe_delivered: !never_sent,
        message: transport_message(e, kind, scrub(&error_chain(e), &[token.expose()])),
    }
}

/// Parses a base URL and applies the safety rules: `https`, or `http` to a
/// loopback host; no credentials, query or fragment.
fn check_base_url(what: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let shown = mask_userinfo(raw.trim());
    let url = Url::parse(raw.trim()).map_err(|e| ConfigError::InvalidUrl {
        what,
        url: shown.clone(),
        reason: e.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::CredentialsInUrl { what });
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback(&url) {
                return Err(ConfigError::InsecureUrl { what, url: shown });
            }
        }
        other => {
            return Err(ConfigError::UnsupportedScheme {
                what,
                url: shown,
                scheme: other.to_string(),
            });
        }
    }
    if url.host().is_none() {
        return Err(ConfigError::InvalidUrl { what, url: shown, reason: "no host".to_string() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::QueryInUrl { what, url: shown });
    }
    Ok(url)
}

/// The CA roots of [`ClientConfig::extra_roots`], as reqwest takes them.
fn extra_roots(config: &ClientConfig) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    config
        .extra_roots
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Http(error_chain(&e)))
}

/// The HTTP stack of every request this tool makes: its user agent, JSON
/// accepted, the configured timeouts, no redirects (a redirect could carry
/// a bearer to another host), no retries of reqwest's own (the callers
/// count every attempt), and TLS verified against the platform's roots
/// plus `roots`. The proxy is the caller's choice.
fn http_builder(config: &ClientConfig, roots: &[reqwest::Certificate]) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(HeaderMap::from_iter([(
            ACCEPT,
            HeaderValue::from_static("application/json"),
        )]))
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never());
    // Merged with the platform verifier's roots, not in their place.
    if roots.is_empty() { builder } else { builder.tls_certs_merge(roots.to_vec()) }
}

/// An HTTP client for a URL other than the API's (the `--notify`
/// webhook), with the API client's TLS trust, timeouts and proxy rules:
/// `--proxy` when given, else the environment's proxy, never for a
/// loopback `target`.
pub(crate) fn http_client_for(
    config: &ClientConfig,
    target: &Url,
) -> Result<reqwest::Client, ConfigError> {
    let roots = extra_roots(config)?;
    let mut builder = http_builder(config, &roots);
    match &config.proxy {
        Some(proxy) => builder = builder.proxy(proxy_from(proxy.expose())?),
        None if is_loopback(target) => builder = builder.no_proxy(),
        None => {}
    }
    builder.build().map_err(|e| ConfigError::Http(error_chain(&e)))
}

/// True when the URL's host is a loopback address (see [`is_loopback`]).
pub(crate) fn is_loopback_url(url: &Url) -> bool {
    is_loopback(url)
}

/// The `--proxy` URL as reqwest's proxy: `http://` or `https://`, with a
/// host, optionally `user:password@` (sent to the proxy as Basic
/// credentials). Errors show the URL with its credentials masked.
fn proxy_from(raw: &str) -> Result<reqwest::Proxy, ConfigError> {
    let raw = raw.trim();
    let invalid = |reason: String| ConfigError::InvalidProxy { url: mask_userinfo(raw), reason };
    let url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "unsupported scheme {:?}; use http://HOST:PORT",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".to_string()));
    }
    // reqwest's error would quote the URL, credentials and all.
    reqwest::Proxy::all(url.as_str()).map_err(|_| invalid("not usable as a proxy".to_string()))
}

/// True when the URL's host is a loopback address: 127.0.0.0/8, ::1 (also
/// IPv4-mapped), or the name `localhost`.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Graph's root: the base without trailing slashes, with `/v1.0` appended
/// unless it already ends in `/v1.0` or `/beta`.
fn graph_root(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_string();
    let root = if path.ends_with("/v1.0") || path.ends_with("/beta") {
        path
    } else {
        format!("{path}/v1.0")
    };
    url.set_path(&root);
    url
}

/// The API root: the base without trailing slashes, with `/api` appended
/// unless it already ends in `/api` or `/api/v1.0`.
fn api_root(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_string();
    let root = if path.ends_with("/api") || path.ends_with("/api/v1.0") {
        path
    } else {
        format!("{path}/api")
    };
    url.set_path(&root);
    url
}

/// The URL text with anything between `://` and `@` replaced, for messages.
fn mask_userinfo(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(start), Some(at)) if at > start + 3 => {
            let host_start = start + 3;
            // Only mask when the `@` is in the authority part.
            let authority_end = raw[host_start..].find('/').map_or(raw.len(), |i| host_start + i);
            if at < authority_end {
                format!("{}***@{}", &raw[..host_start], &raw[at + 1..])
            } else {
                raw.to_string()
            }
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap as AxHeaders, Method as AxMethod, StatusCode, Uri};
    use axum::response::{IntoResponse, Response as AxResponse};

    const SECRET: &str = "Cl13nt~S3cret.Value_xyz";
    const MACHINE: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        query: Option<String>,
        params: HashMap<String, String>,
        authorization: Option<String>,
        user_agent: Option<String>,
        accept: Option<String>,
        content_type: Option<String>,
        body: String,
    }

    #[derive(Clone, Default)]
    struct Server {
        seen: Arc<Mutex<Vec<Seen>>>,
        token_fetches: Arc<AtomicUsize>,
    }

    fn json(status: StatusCode, body: String) -> AxResponse {
        (status, [("content-type", "application/json")], body).into_response()
    }

    fn envelope(status: StatusCode, code: &str, message: &str) -> AxResponse {
        json(status, serde_json::to_string(&ErrorEnvelope::new(code, message)).unwrap())
    }

    /// A minimal stand-in for the login endpoint and the API, answering by
    /// machine id so each test can pick the reply it needs.
    async fn handle(
        State(server): State<Server>,
        method: AxMethod,
        uri: Uri,
        headers: AxHeaders,
        body: Bytes,
    ) -> AxResponse {
        let header = |k: &str| headers.get(k).map(|v| v.to_str().unwrap().to_string());
        let path = uri.path().to_string();
        if path.ends_with("/oauth2/v2.0/token") {
            let n = server.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let as_uri: Uri = format!("/?{}", String::from_utf8_lossy(&body)).parse().unwrap();
            let form = Query::<HashMap<String, String>>::try_from_uri(&as_uri).unwrap().0;
            if form.get("client_secret").map(String::as_str) != Some(SECRET) {
                let e = serde_json::json!({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."});
                return json(StatusCode::UNAUTHORIZED, e.to_string());
            }
            let t = serde_json::json!({"token_type":"Bearer","expires_in":3599,"ext_expires_in":0,"access_token":format!("tok-{n}")});
            return json(StatusCode::OK, t.to_string());
        }
        let params =
            Query::<HashMap<String, String>>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
        let auth = header("authorization");
        server.seen.lock().unwrap().push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().map(str::to_string),
            params,
            authorization: auth.clone(),
            user_agent: header("user-agent"),
            accept: header("accept"),
            content_type: header("content-type"),
            body: String::from_utf8_lossy(&body).to_string(),
        });
        let rest =
            path.strip_prefix("/api/v1.0/").or_else(|| path.strip_prefix("/api/")).unwrap_or("");
        let segs: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("POST", ["machines", id, _action]) => match *id {
                "m200" => json(StatusCode::OK, fixture("machineaction-offboard-201.json")),
                "m400" => json(StatusCode::BAD_REQUEST, fixture("error-invalidrequestbody.json")),
                "m404" => json(StatusCode::NOT_FOUND, fixture("error-resourcenotfound.json")),
                "m401" => StatusCode::UNAUTHORIZED.into_response(),
                "m401once" if auth.as_deref() == Some("Bearer tok-1") => {
                    envelope(StatusCode::UNAUTHORIZED, "Unauthorized", "token expired")
                }
                "m429" => {
                    let mut r = envelope(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "API calls quota exceeded! maximum allowed 100 per 00:01:00",
                    );
                    r.headers_mut().insert("retry-after", "7".parse().unwrap());
                    r
                }
                "m429bare" => StatusCode::TOO_MANY_REQUESTS.into_response(),
                "m500" => {
                    envelope(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "boom")
                }
                "m503" => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "5"), ("content-type", "text/html")],
                    "<html>\n  <h1>Service   Unavailable</h1>\n</html>",
                )
                    .into_response(),
                "mbad" => (StatusCode::CREATED, "this is not json").into_response(),
                // A misbehaving front end that echoes the request's token.
                "mecho" => envelope(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("rejected {}", auth.as_deref().unwrap_or("")),
                ),
                "mechohtml" => (
                    StatusCode::BAD_GATEWAY,
                    format!("<pre>Authorization: {}</pre>", auth.as_deref().unwrap_or("")),
                )
                    .into_response(),
                "mslow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    json(StatusCode::CREATED, fixture("machineaction-offboard-201.json"))
                }
                _ => json(StatusCode::CREATED, fixture("machineaction-offboard-201.json")),
            },
            ("POST", ["machineactions", _id, "cancel"]) => {
                let mut a: serde_json::Value =
                    serde_json::from_str(&fixture("machineaction-offboard-201.json")).unwrap();
                a["status"] = "Cancelled".into();
                json(StatusCode::OK, a.to_string())
            }
            ("GET", ["machineactions"]) => {
                json(StatusCode::OK, fixture("machineactions-list.json"))
            }
            ("GET", ["machineactions", "unknown"]) => {
                envelope(StatusCode::NOT_FOUND, "ResourceNotFound", "Action unknown was not found")
            }
            ("GET", ["machineactions", _id]) => {
                json(StatusCode::OK, fixture("machineaction-doc-example.json"))
            }
            ("GET", ["machines"]) => json(StatusCode::OK, fixture("machines-list.json")),
            ("GET", ["machines", _id]) => {
                let list: serde_json::Value =
                    serde_json::from_str(&fixture("machines-list.json")).unwrap();
                json(StatusCode::OK, list["value"][0].to_string())
            }
            _ => envelope(StatusCode::NOT_FOUND, "NotFound", "no such route"),
        }
    }

    async fn serve(server: Server) -> String {
        let router = Router::new().fallback(handle).with_state(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn secret_creds(secret: &str) -> Credentials {
        Credentials::ClientSecret {
            tenant_id: "00000000-0000-0000-0000-00000000000a".to_string(),
            client_id: "app-id".to_string(),
            client_secret: Secret::new(secret),
        }
    }

    async fn client_with(api_suffix: &str, credentials: Credentials) -> (Client, Server) {
        let server = Server::default();
        let base = serve(server.clone()).await;
        let config = ClientConfig::new(
            format!("{base}{api_suffix}"),
            format!("{base}/"),
            "https://api.securitycenter.microsoft.com/.default",
            credentials,
        );
        (Client::new(config).unwrap(), server)
    }

    async fn client() -> (Client, Server) {
        client_with("", secret_creds(SECRET)).await
    }

    fn last(server: &Server) -> Seen {
        server.seen.lock().unwrap().last().unwrap().clone()
    }

    fn bearer_config(api: &str) -> ClientConfig {
        ClientConfig::new(
            api,
            "https://login.microsoftonline.com",
            "s",
            Credentials::Bearer(Secret::new("t")),
        )
    }

    #[test]
    fn proxy_urls_are_checked_and_their_credentials_never_shown() {
        assert!(proxy_from("http://proxy.example:3128").is_ok());
        assert!(proxy_from("https://user:pw@proxy.example").is_ok());
        for (raw, reason) in [
            ("proxy.example:3128", "unsupported scheme"),
            ("socks5://user:hunter2@proxy.example:1080", "unsupported scheme"),
            ("not a url", "relative URL without a base"),
            ("http://user:hunter2@:3128", "empty host"),
        ] {
            let e = proxy_from(raw).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("--proxy "), "{text}");
            assert!(text.contains(reason), "{raw}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let mut config = bearer_config("https://api.example");
        config.proxy = Some(Secret::new("ftp://u:hunter2@p:21"));
        let e = Client::new(config.clone()).unwrap_err().to_string();
        assert!(e.contains("ftp://***@p:21") && !e.contains("hunter2"), "{e}");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn url_safety() {
        for ok in [
            "https://api.security.microsoft.com",
            "https://api.security.microsoft.com/",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:3000/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(Client::new(bearer_config(ok)).is_ok(), "{ok}");
        }
        for bad in
            ["http://example.com", "http://10.0.0.1", "http://localhost.evil.com", "http://[::2]"]
        {
            let err = Client::new(bearer_config(bad)).unwrap_err();
            assert!(matches!(err, ConfigError::InsecureUrl { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("https://"), "{err}");
        }
        assert!(matches!(
            Client::new(bearer_config("ftp://127.0.0.1")).unwrap_err(),
            ConfigError::UnsupportedScheme { .. }
        ));
        assert!(matches!(
            Client::new(bearer_config("not a url")).unwrap_err(),
            ConfigError::InvalidUrl { .. }
        ));
        let err = Client::new(bearer_config("https://user:hunter2@api.example")).unwrap_err();
        assert_eq!(err, ConfigError::CredentialsInUrl { what: "API" });
        assert!(!err.to_string().contains("hunter2"));
        let err = check_base_url("API", "https://user:hunter2@:bad").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(matches!(
            Client::new(bearer_config("https://api.example/?x=1")).unwrap_err(),
            ConfigError::QueryInUrl { .. }
        ));
        // The login URL follows the same rules.
        let mut config = bearer_config("https://api.security.microsoft.com");
        config.login_base = "http://login.example".to_string();
        assert!(matches!(
            Client::new(config).unwrap_err(),
            ConfigError::InsecureUrl { what: "login", .. }
        ));
        let mut config = bearer_config("https://api.security.microsoft.com");
        config.request_timeout = Duration::ZERO;
        assert_eq!(Client::new(config).unwrap_err(), ConfigError::ZeroTimeout { what: "request" });
        let config = ClientConfig::for_cloud(Cloud::Global, secret_creds(" "));
        assert!(matches!(Client::new(config).unwrap_err(), ConfigError::MissingCredentials(_)));
    }

    #[test]
    fn api_root_with_or_without_api_suffix() {
        for (base, root) in [
            ("https://api.security.microsoft.com", "https://api.security.microsoft.com/api"),
            ("https://api.security.microsoft.com/", "https://api.security.microsoft.com/api"),
            ("https://api.security.microsoft.com/api", "https://api.security.microsoft.com/api"),
            ("https://api.security.microsoft.com/api//", "https://api.security.microsoft.com/api"),
            (
                "https://api.security.microsoft.com/api/v1.0/",
                "https://api.security.microsoft.com/api/v1.0",
            ),
            ("http://127.0.0.1:9/sim", "http://127.0.0.1:9/sim/api"),
        ] {
            let c = Client::new(bearer_config(base)).unwrap();
            assert_eq!(c.api_root().as_str(), root, "{base}");
        }
        let c = Client::new(bearer_config("https://api.security.microsoft.com/api")).unwrap();
        assert_eq!(
            c.url(&["machines", "a b/c?d", "isolate"], None).as_str(),
            "https://api.security.microsoft.com/api/machines/a%20b%2Fc%3Fd/isolate"
        );
    }

    #[test]
    fn action_bodies_carry_exactly_the_allowed_keys() {
        let full = ActionBody {
            comment: "IR-42 contain host".to_string(),
            isolation_type: Some(IsolationType::Selective),
            sha1: Some("a0c659857ccbe457fdaf5fe21d54efdcbf6f6508".to_string()),
            scan_type: Some(ScanType::Quick),
        };
        let as_text = |a| serde_json::to_string(&full.to_json(a)).unwrap();
        assert_eq!(
            as_text(ActionKind::Isolate),
            r#"{"Comment":"IR-42 contain host","IsolationType":"Selective"}"#
        );
        assert_eq!(
            as_text(ActionKind::StopAndQuarantineFile),
            r#"{"Comment":"IR-42 contain host","Sha1":"a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"}"#
        );
        assert_eq!(
            as_text(ActionKind::RunAntiVirusScan),
            r#"{"Comment":"IR-42 contain host","ScanType":"Quick"}"#
        );
        for a in [
            ActionKind::Unisolate,
            ActionKind::Offboard,
            ActionKind::CollectInvestigationPackage,
            ActionKind::RestrictCodeExecution,
            ActionKind::UnrestrictCodeExecution,
        ] {
            assert_eq!(as_text(a), r#"{"Comment":"IR-42 contain host"}"#, "{a}");
        }
        for a in ActionKind::ALL {
            let v = full.to_json(a);
            let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, a.allowed_keys(), "{a}");
        }
        // Optional values left out when unset; the Sha1 is sent as given.
        let plain = ActionBody::new("x");
        assert_eq!(
            serde_json::to_string(&plain.to_json(ActionKind::Isolate)).unwrap(),
            r#"{"Comment":"x"}"#
        );
        let upper = ActionBody {
            sha1: Some("A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508".into()),
            ..plain.clone()
        };
        assert_eq!(
            upper.to_json(ActionKind::StopAndQuarantineFile)["Sha1"],
            "A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508"
        );
        let unmanaged =
            ActionBody { isolation_type: Some(IsolationType::UnManagedDevice), ..plain.clone() };
        assert_eq!(unmanaged.to_json(ActionKind::Isolate)["IsolationType"], "UnManagedDevice");
        assert_eq!(plain.missing_parameter(ActionKind::Isolate), None);
        assert_eq!(plain.missing_parameter(ActionKind::StopAndQuarantineFile), Some("Sha1"));
        assert_eq!(plain.missing_parameter(ActionKind::RunAntiVirusScan), Some("ScanType"));
        assert_eq!(ActionBody::new(" ").missing_parameter(ActionKind::Offboard), Some("Comment"));
    }

    #[tokio::test]
    async fn submit_sends_the_exact_request_and_reads_201_and_200() {
        let (c, server) = client().await;
        let body = ActionBody {
            comment: "IR-42 contain host".to_string(),
            isolation_type: Some(IsolationType::Full),
            ..ActionBody::default()
        };
        let reply = c.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.value.id, "cd46c651-f570-4e32-abdb-a02a9e022a92");
        assert_eq!(reply.value.status, "Pending");
        let seen = last(&server);
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, format!("/api/machines/{MACHINE}/isolate"));
        assert_eq!(seen.authorization.as_deref(), Some("Bearer tok-1"));
        assert_eq!(seen.user_agent.as_deref(), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("mdebulk/"));
        assert_eq!(seen.accept.as_deref(), Some("application/json"));
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert_eq!(seen.body, r#"{"Comment":"IR-42 contain host","IsolationType":"Full"}"#);

        let reply = c.submit("m200", ActionKind::Offboard, &ActionBody::new("bye")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.value.kind, "Offboard");
        let seen = last(&server);
        assert_eq!(seen.path, "/api/machines/m200/offboard");
        assert_eq!(seen.body, r#"{"Comment":"bye"}"#);
        // One token for both calls.
        assert_eq!(c.tokens().token_fetches(), 1);
        assert_eq!(server.token_fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reads_every_fixture_reply() {
        let (c, server) = client_with("/api/v1.0/", secret_creds(SECRET)).await;
        let q = ListQuery {
            filter: Some(format!("machineId eq '{MACHINE}'")),
            top: Some(2),
            skip: None,
        };
        let list = c.list_actions(&q).await.unwrap();
        assert_eq!(list.status, 200);
        assert_eq!(list.value.value.len(), 2);
        assert_eq!(
            list.value.value[1].related_file_info.as_ref().unwrap().file_identifier_type,
            "Sha1"
        );
        let seen = last(&server);
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.path, "/api/v1.0/machineactions");
        assert_eq!(
            seen.query.as_deref(),
            Some(format!("$filter=machineId%20eq%20%27{MACHINE}%27&$top=2").as_str())
        );
        assert_eq!(seen.params["$filter"], format!("machineId eq '{MACHINE}'"));
        assert_eq!(seen.params["$top"], "2");
        assert_eq!(seen.content_type, None);
        assert_eq!(seen.accept.as_deref(), Some("application/json"));

        let machines = c
            .list_machines(&ListQuery::filter("computerDnsName eq 'mymachine1.contoso.com'"))
            .await
            .unwrap();
        assert_eq!(machines.value.value[0].id, MACHINE);
        assert_eq!(last(&server).params["$filter"], "computerDnsName eq 'mymachine1.contoso.com'");
        let all = c.list_machines(&ListQuery::default()).await.unwrap();
        assert_eq!(all.value.value.len(), 1);
        assert_eq!(last(&server).query, None);

        let m = c.get_machine("mymachine1.contoso.com").await.unwrap();
        assert_eq!(m.value.os_platform.as_deref(), Some("Windows10"));
        assert_eq!(last(&server).path, "/api/v1.0/machines/mymachine1.contoso.com");

        let a = c.get_action("5382f7ea-7557-4ab7-9782-d50480024a4e").await.unwrap();
        assert_eq!(a.value.scope.as_deref(), Some("Selective"));
        assert!(a.value.is_final());
        let err = c.get_action("unknown").await.unwrap_err();
        assert_eq!(err.code(), "ResourceNotFound");
        assert_eq!(err.http_status(), Some(404));

        let cancelled =
            c.cancel_action("cd46c651-f570-4e32-abdb-a02a9e022a92", Some("oops")).await.unwrap();
        assert_eq!(cancelled.status, 200);
        assert_eq!(cancelled.value.status, "Cancelled");
        let seen = last(&server);
        assert_eq!(
            seen.path,
            "/api/v1.0/machineactions/cd46c651-f570-4e32-abdb-a02a9e022a92/cancel"
        );
        assert_eq!(seen.body, r#"{"Comment":"oops"}"#);
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        c.cancel_action("x", None).await.unwrap();
        assert_eq!(last(&server).body, "{}");
    }

    #[tokio::test]
    async fn classifies_error_replies() {
        let (c, _server) = client().await;
        let body = ActionBody::new("c");
        let submit = |id: &'static str| {
            let c = c.clone();
            let body = body.clone();
            async move { c.submit(id, ActionKind::Isolate, &body).await.unwrap_err() }
        };

        let e = submit("m400").await;
        assert!(matches!(&e, CallError::Api { status: 400, error: Some(b), retry_after: None }
            if b.code == "InvalidRequestBody" && b.target.as_deref() == Some("1fa66c0f-18bd-4133-b378-36d76f3a2ba0")));
        assert!(!e.is_transient());
        assert_eq!(e.target(), Some("1fa66c0f-18bd-4133-b378-36d76f3a2ba0"));

        let e = submit("m404").await;
        assert_eq!((e.http_status(), e.code()), (Some(404), "ResourceNotFound"));
        assert_eq!(e.message(), "Machine 123123123 was not found");

        let e = submit("m429").await;
        assert!(matches!(&e, CallError::Throttled { retry_after: Some(d), error: Some(b) }
            if *d == Duration::from_secs(7) && b.code == "TooManyRequests"));
        assert!(!e.is_transient());

        let e = submit("m429bare").await;
        assert!(matches!(e, CallError::Throttled { retry_after: None, error: None }));
        assert_eq!(e.code(), "TooManyRequests");

        let e = submit("m500").await;
        assert!(
            matches!(&e, CallError::Api { status: 500, error: Some(b), .. } if b.code == "InternalServerError")
        );
        assert!(e.is_transient());

        let e = submit("m503").await;
        assert!(
            matches!(e, CallError::Api { status: 503, retry_after: Some(d), .. } if d == Duration::from_secs(5))
        );
        assert!(e.is_transient());
        assert_eq!(e.code(), "ServiceUnavailable");
        assert!(
            e.message().contains("<html> <h1>Service Unavailable</h1> </html>"),
            "{}",
            e.message()
        );
        assert_eq!(e.target(), None);

        let e = submit("mbad").await;
        assert!(matches!(&e, CallError::Decode { status: 201, .. }), "{e:?}");
        assert!(!e.is_transient());
        assert_eq!(e.code(), "DecodeError");
    }

    #[tokio::test]
    async fn unauthorized_invalidates_the_token_and_the_retry_gets_a_fresh_one() {
        let (c, server) = client().await;
        let body = ActionBody::new("c");
        let e = c.submit("m401once", ActionKind::Isolate, &body).await.unwrap_err();
        assert!(
            matches!(&e, CallError::Unauthorized { error: Some(b) } if b.message == "token expired")
        );
        assert_eq!(e.http_status(), Some(401));
        assert!(!e.is_transient());
        let ok = c.submit("m401once", ActionKind::Isolate, &body).await.unwrap();
        assert_eq!(ok.status, 201);
        assert_eq!(last(&server).authorization.as_deref(), Some("Bearer tok-2"));
        assert_eq!(c.tokens().token_fetches(), 2);

        // Concurrent 401s on the same token cause one new fetch.
        let (c, server) = client().await;
        c.tokens().bearer().await.unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let c = c.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    // What the pipeline does: on 401, retry once.
                    match c.submit("m401once", ActionKind::Isolate, &body).await {
                        Err(CallError::Unauthorized { .. }) => {
                            c.submit("m401once", ActionKind::Isolate, &body).await
                        }
                        other => other,
                    }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().status, 201);
        }
        assert_eq!(server.token_fetches.load(Ordering::SeqCst), 2);
        let auths: Vec<_> =
            server.seen.lock().unwrap().iter().map(|s| s.authorization.clone().unwrap()).collect();
        assert_eq!(auths.iter().filter(|a| *a == "Bearer tok-1").count(), 10);
        assert_eq!(auths.iter().filter(|a| *a == "Bearer tok-2").count(), 10);
    }

    #[tokio::test]
    async fn a_rejected_static_bearer_is_an_auth_error() {
        let (c, server) = client_with("", Credentials::Bearer(Secret::new("static-tok"))).await;
        let body = ActionBody::new("c");
        c.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap();
        assert_eq!(last(&server).authorization.as_deref(), Some("Bearer static-tok"));
        let e = c.submit("m401", ActionKind::Isolate, &body).await.unwrap_err();
        assert!(matches!(e, CallError::Auth(AuthError::BearerRejected)), "{e:?}");
        let calls = server.seen.lock().unwrap().len();
        let e = c.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap_err();
        assert!(matches!(e, CallError::Auth(AuthError::BearerRejected)));
        assert_eq!(server.seen.lock().unwrap().len(), calls, "nothing sent once rejected");
        assert_eq!(server.token_fetches.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn bad_client_secret_is_an_auth_error_and_nothing_reaches_the_api() {
        let (c, server) = client_with("", secret_creds("wrong-secret-456")).await;
        let e = c.submit(MACHINE, ActionKind::Isolate, &ActionBody::new("c")).await.unwrap_err();
        assert!(matches!(&e, CallError::Auth(AuthError::InvalidClient { .. })), "{e:?}");
        assert_eq!(e.code(), "invalid_client");
        assert!(!e.is_transient());
        assert!(!e.maybe_delivered());
        assert!(server.seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn connection_refused_is_never_delivered() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut config = bearer_config(&format!("http://127.0.0.1:{port}"));
        config.credentials = Credentials::Bearer(Secret::new("tok-refused"));
        let c = Client::new(config).unwrap();
        let e = c.submit(MACHINE, ActionKind::Isolate, &ActionBody::new("c")).await.unwrap_err();
        assert!(
            matches!(
                &e,
                CallError::Transport { kind: TransportKind::Connect, maybe_delivered: false, .. }
            ),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert!(!e.is_fatal_for_run(), "a refused connection may be a restart");
        assert_eq!(e.code(), "ConnectionFailed");
        assert!(!e.to_string().contains("tok-refused"));
    }

    /// A TLS server on loopback with the self-signed certificate of
    /// tests/fixtures, which no client trusts. Returns `https://127.0.0.1:PORT`.
    async fn untrusted_tls_server() -> String {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
        let cert = CertificateDer::from_pem_file(format!("{dir}/selfsigned-cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/selfsigned-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                // The client aborts the handshake; the server side just ends.
                tokio::spawn(async move { drop(acceptor.accept(socket).await) });
            }
        });
        format!("https://{addr}")
    }

    /// A loopback listener that answers anything with bytes that are not TLS.
    async fn garbage_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"\x00\x01garbage, not a TLS record\r\n\r\n").await;
                let _ = socket.shutdown().await;
            }
        });
        format!("https://{addr}")
    }

    #[track_caller]
    fn assert_tls(e: &CallError, host: &str, what: &str) {
        assert!(
            matches!(
                e,
                CallError::Transport { kind: TransportKind::Tls, maybe_delivered: false, .. }
            ),
            "{e:?}"
        );
        assert!(!e.is_transient(), "{e}");
        assert!(e.is_fatal_for_run(), "{e}");
        assert_eq!(e.code(), "TlsHandshakeFailed");
        let text = e.to_string();
        assert!(text.contains(&format!("certificate/TLS problem with {host} ({what})")), "{text}");
        assert!(text.contains("not transient"), "{text}");
    }

    /// `MDE_TOKEN` against a server whose certificate is refused, or that
    /// does not speak TLS at all: a TLS error, not transient, fatal for the
    /// run, naming the host; not the five retries of a network fault.
    #[tokio::test]
    async fn tls_failures_are_configuration_errors_not_transient_ones() {
        let body = ActionBody::new("c");

        let base = untrusted_tls_server().await;
        let c = Client::new(bearer_config(&base)).unwrap();
        let e = c.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap_err();
        let host = base.trim_start_matches("https://");
        assert_tls(&e, host, "its certificate is not trusted");
        assert!(e.to_string().contains("certificate"), "{e}");

        // A plain HTTP server on an https:// URL.
        let plain = serve(Server::default()).await.replace("http://", "https://");
        let c = Client::new(bearer_config(&plain)).unwrap();
        let e = c.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap_err();
        assert_tls(&e, plain.trim_start_matches("https://"), "the TLS handshake failed");

        let garbage = garbage_server().await;
        let c = Client::new(bearer_config(&garbage)).unwrap();
        let e = c.list_actions(&ListQuery::default()).await.unwrap_err();
        assert_tls(&e, garbage.trim_start_matches("https://"), "the TLS handshake failed");

        // The same at the token endpoint: an auth error that no retry cures.
        let plain_login = serve(Server::default()).await.replace("http://", "https://");
        let config = ClientConfig::new(&base, &plain_login, "s", secret_creds(SECRET));
        let e = Client::new(config)
            .unwrap()
            .submit(MACHINE, ActionKind::Isolate, &body)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, CallError::Auth(AuthError::Unreachable { kind: TransportKind::Tls, .. })),
            "{e:?}"
        );
        assert!(!e.is_transient() && e.is_fatal_for_run(), "{e}");
        assert!(e.to_string().contains("certificate/TLS problem with 127.0.0.1:"), "{e}");
        assert!(!e.to_string().contains(SECRET));
    }

    /// A resolver that knows no name, so DNS failures are tested without
    /// sending a query anywhere.
    struct NoNames;

    impl reqwest::dns::Resolve for NoNames {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let err = std::io::Error::other(format!("no such host: {}", name.as_str()));
            Box::pin(std::future::ready(Err(err.into())))
        }
    }

    #[tokio::test]
    async fn dns_failures_are_configuration_errors_not_transient_ones() {
        let http = reqwest::Client::builder().dns_resolver(Arc::new(NoNames)).build().unwrap();
        let e = http.get("https://mde.invalid/api/machines").send().await.unwrap_err();
        let e = transport_error(&e, false, &Secret::new("tok-dns"));
        assert!(
            matches!(
                &e,
                CallError::Transport { kind: TransportKind::Dns, maybe_delivered: false, .. }
            ),
            "{e:?}"
        );
        assert!(!e.is_transient() && e.is_fatal_for_run(), "{e}");
        assert_eq!(e.code(), "NameNotResolved");
        assert!(e.to_string().contains("cannot resolve the host name of mde.invalid:443"), "{e}");
    }

    #[test]
    fn which_errors_stop_the_run() {
        let transport =
            |kind| CallError::Transport { kind, maybe_delivered: false, message: "m".into() };
        assert!(transport(TransportKind::Tls).is_fatal_for_run());
        assert!(transport(TransportKind::Dns).is_fatal_for_run());
        for kind in [TransportKind::Timeout, TransportKind::Connect, TransportKind::Other] {
            assert!(
                !transport(kind).is_fatal_for_run() && transport(kind).is_transient(),
                "{kind:?}"
            );
        }
        let unreachable =
            |kind| AuthError::Unreachable { url: "u".into(), message: "m".into(), kind };
        assert!(CallError::Auth(unreachable(TransportKind::Tls)).is_fatal_for_run());
        assert!(CallError::Auth(unreachable(TransportKind::Dns)).is_fatal_for_run());
        assert!(!CallError::Auth(unreachable(TransportKind::Connect)).is_fatal_for_run());
        for fatal in [
            AuthError::BearerRejected,
            AuthError::InvalidClient { description: "d".into(), check: "" },
            AuthError::OAuth {
                status: 400,
                error: "invalid_scope".into(),
                description: "d".into(),
            },
            AuthError::Malformed { status: 200, message: "m".into() },
            AuthError::InvalidEndpoint { url: "u".into(), reason: "r".into() },
        ] {
            assert!(CallError::Auth(fatal.clone()).is_fatal_for_run(), "{fatal:?}");
        }
        for passing in [
            AuthError::OAuth { status: 503, error: "x".into(), description: "d".into() },
            AuthError::OAuth {
                status: 400,
                error: "temporarily_unavailable".into(),
                description: "d".into(),
            },
            AuthError::Malformed { status: 502, message: "m".into() },
        ] {
            assert!(!CallError::Auth(passing.clone()).is_fatal_for_run(), "{passing:?}");
        }
        assert!(
            !CallError::Unauthorized { error: None }.is_fatal_for_run(),
            "a fresh token may cure it"
        );
        assert!(!CallError::Throttled { retry_after: None, error: None }.is_fatal_for_run());
        let api = |status| CallError::Api { status, error: None, retry_after: None };
        assert!(!api(503).is_fatal_for_run() && !api(403).is_fatal_for_run());
    }

    #[tokio::test]
    async fn timeout_after_sending_may_have_been_delivered() {
        let server = Server::default();
        let base = serve(server.clone()).await;
        let mut config = ClientConfig::new(&base, &base, "s", secret_creds(SECRET));
        config.request_timeout = Duration::from_millis(300);
        let c = Client::new(config).unwrap();
        let e = c.submit("mslow", ActionKind::Isolate, &ActionBody::new("c")).await.unwrap_err();
        assert!(
            matches!(
                &e,
                CallError::Transport { kind: TransportKind::Timeout, maybe_delivered: true, .. }
            ),
            "{e:?}"
        );
        assert!(e.is_transient());
        assert_eq!(e.code(), "Timeout");
        assert_eq!(e.http_status(), None);
        // The server did get it.
        assert_eq!(last(&server).path, "/api/machines/mslow/isolate");
    }

    #[tokio::test]
    async fn connection_closed_while_awaiting_the_answer_may_have_been_delivered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // Hang up without answering.
        });
        let c = Client::new(bearer_config(&format!("http://{addr}"))).unwrap();
        let e = c.submit(MACHINE, ActionKind::Isolate, &ActionBody::new("c")).await.unwrap_err();
        assert!(
            matches!(
                &e,
                CallError::Transport { kind: TransportKind::Other, maybe_delivered: true, .. }
            ),
            "{e:?}"
        );
        assert_eq!(e.code(), "TransportError");
    }

    /// A log sink for the test below.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn secrets_and_tokens_never_reach_logs_or_errors() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        // tracing caches per call site whether anyone listens. With a single
        // registered dispatcher it asks only the registering thread's
        // default, so a call site first reached by a parallel test (no
        // subscriber) would stay muted for this one. A second live
        // dispatcher makes it ask every registered dispatcher instead.
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let dispatch = tracing::Dispatch::new(subscriber);
        let _guard = tracing::dispatcher::set_default(&dispatch);
        tracing::callsite::rebuild_interest_cache();

        let (c, _server) = client().await;
        let body = ActionBody::new("c");
        let mut errors = Vec::new();
        for id in ["m401once", "m401once", "m400", "m429", "m503", "mbad", "mecho", "mechohtml"] {
            if let Err(e) = c.submit(id, ActionKind::Isolate, &body).await {
                errors.push(e);
            }
        }
        let (bad, _s) = client_with("", secret_creds("an0ther-Secret-789")).await;
        errors.push(bad.submit(MACHINE, ActionKind::Isolate, &body).await.unwrap_err());
        errors.push(CallError::Auth(AuthError::BearerRejected));
        errors.push(CallError::Auth(AuthError::Unreachable {
            url: "u".into(),
            message: "m".into(),
            kind: TransportKind::Connect,
        }));
        errors.push(CallError::Transport {
            kind: TransportKind::Timeout,
            maybe_delivered: true,
            message: "m".into(),
        });
        assert_eq!(errors.len(), 11);
        assert_eq!(errors[5].message(), "rejected Bearer [redacted]");
        assert!(
            errors[6].message().contains("Authorization: Bearer [redacted]"),
            "{}",
            errors[6].message()
        );
        drop(_guard);

        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("MDE API call"), "{logs}");
        assert!(
            logs.contains("error.target=\"1fa66c0f-18bd-4133-b378-36d76f3a2ba0\"")
                || logs.contains("error.target=1fa66c0f-18bd-4133-b378-36d76f3a2ba0"),
            "{logs}"
        );
        for needle in [SECRET, "an0ther-Secret-789", "tok-1", "tok-2", "Bearer tok"] {
            assert!(!logs.contains(needle), "{needle} in logs:\n{logs}");
            for e in &errors {
                let text = format!("{e} | {e:?} | {}", e.message());
                assert!(!text.contains(needle), "{needle} in {text}");
            }
        }
        let config = ClientConfig::for_cloud(Cloud::Gcc, secret_creds(SECRET));
        assert!(!format!("{config:?}").contains(SECRET));
        let c = Client::new(config).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
    }
}
