//! Every endpoint of the simulated service, as plain functions of the state:
//! routing, the token endpoint, bearer checks, quota, injected faults, action
//! validation and creation, cancel, look-ups and lists, and the `/_sim`
//! hooks. Nothing here does I/O; [`super::server`] feeds it requests.
//!
//! Check order of an API call (reference P9): route → 401 → 403 → 429 →
//! injected fault → body (InvalidRequestBody, then MissingRequiredParameter,
//! then InvalidHashValue) → 404 machine → OS → duplicate → 201. Calls refused
//! with 401/403/429 consume no quota; calls that fail later do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::faults::{self, Fault};
use super::lifecycle::{ActionRecord, Cancellation};
use super::odata::{self, MAX_TOP, Query};
use super::state::{State, TokenInfo, role_bit};
use crate::api::action::{ActionKind, is_sha1};
use crate::api::model::{Entity, ErrorEnvelope, ODataList, new_guid};
use crate::api::route::Api;
use crate::pace::limit::{Limit, format_timespan};

/// `Content-Type` of OData replies, as the service sends it.
pub const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8";
/// `Content-Type` of error, token and `/_sim` replies.
pub const PLAIN_JSON: &str = "application/json; charset=utf-8";

/// Scopes the v2 token endpoint accepts (reference P3).
const SCOPES: [&str; 2] = [
    "https://api.securitycenter.microsoft.com/.default",
    "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
];
/// Resource the v1 token endpoint accepts (reference P3).
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";
/// The newer audience, accepted only when configured.
const SECURITY_AUDIENCE: &str = "https://api.security.microsoft.com";

/// The parts of an HTTP request the handlers look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, still percent-encoded.
    pub path: &'a str,
    /// The raw query string.
    pub query: Option<&'a str>,
    /// The `Host` header (or the bound address), for `@odata.context` and links.
    pub host: &'a str,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The whole body.
    pub body: &'a [u8],
}

/// What to do with a connection instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Close it at once: the call was not processed.
    Before,
    /// Close it after the latency: the call was processed.
    After,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Retry-After` in whole seconds, on 429s and some 503s.
    pub retry_after: Option<u64>,
    /// A `Retry-After` sent verbatim in place of `retry_after` (the
    /// `throttle_retry_after` fault).
    pub retry_after_text: Option<String>,
    /// Whether to send `WWW-Authenticate: Bearer` (401s).
    pub www_authenticate: bool,
    /// Set when the client must see a closed connection instead of this reply.
    pub drop: Option<Disconnect>,
}

impl Reply {
    fn json(status: u16, body: String, content_type: &'static str) -> Reply {
        Reply {
            status,
            body,
            content_type,
            retry_after: None,
            retry_after_text: None,
            www_authenticate: false,
            drop: None,
        }
    }

    /// An error in the API's envelope, with a fresh `target`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        let body = serde_json::to_string(&ErrorEnvelope::new(code, message))
            .unwrap_or_else(|_| String::from("{}"));
        Reply::json(status, body, PLAIN_JSON)
    }

    /// An OAuth2 error of the token endpoint: `{"error","error_description"}`.
    fn oauth(status: u16, error: &str, description: &str) -> Reply {
        let body = json!({ "error": error, "error_description": description }).to_string();
        Reply::json(status, body, PLAIN_JSON)
    }

    /// A 429 naming the blocking limit.
    fn too_many(limit: Limit, retry_after: u64) -> Reply {
        let mut r = Reply::error(
            429,
            "TooManyRequests",
            format!(
                "API calls quota exceeded! maximum allowed {} per {}",
                limit.calls,
                format_timespan(limit.window)
            ),
        );
        r.retry_after = Some(retry_after);
        r
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The token endpoint: v2 (`scope`) or v1 (`resource`) form.
    Token {
        /// The tenant path segment.
        tenant: String,
        /// Whether this is `/oauth2/v2.0/token`.
        v2: bool,
    },
    /// An API call, with the id path segment (percent-decoded) when the route has one.
    Api(Api, Option<String>),
    /// A `/_sim` hook.
    Admin,
    /// Nothing matches.
    Unknown,
}

/// Routes a request. Path segments are matched exactly (reference P2), under
/// `/api/` or `/api/v1.0/`; one trailing slash is tolerated.
pub fn route(method: &Method, path: &str) -> Route {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segs: Vec<&str> = trimmed.split('/').collect();
    if segs.first() == Some(&"_sim") {
        return Route::Admin;
    }
    let post = method == Method::POST;
    let get = method == Method::GET;
    match segs.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] if post && !tenant.is_empty() => {
            return Route::Token { tenant: odata::percent_decode(tenant, false), v2: true };
        }
        [tenant, "oauth2", "token"] if post && !tenant.is_empty() => {
            return Route::Token { tenant: odata::percent_decode(tenant, false), v2: false };
        }
        _ => {}
    }
    let rest = match segs.as_slice() {
        ["api", "v1.0", rest @ ..] => rest,
        ["api", rest @ ..] => rest,
        _ => return Route::Unknown,
    };
    let id = |s: &str| Some(odata::percent_decode(s, false));
    match rest {
        ["machines"] if get => Route::Api(Api::ListMachines, None),
        ["machines", m] if get && !m.is_empty() => Route::Api(Api::GetMachine, id(m)),
        ["machines", m, seg] if post && !m.is_empty() => {
            match ActionKind::ALL.into_iter().find(|k| k.path_segment() == *seg) {
                Some(kind) => Route::Api(Api::Action(kind), id(m)),
                None => Route::Unknown,
            }
        }
        ["machineactions"] if get => Route::Api(Api::ListActions, None),
        ["machineactions", a] if get && !a.is_empty() => Route::Api(Api::GetAction, id(a)),
        ["machineactions", a, "cancel"] if post && !a.is_empty() => {
            Route::Api(Api::CancelAction, id(a))
        }
        _ => Route::Unknown,
    }
}

/// A validated action body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionBody {
    /// `Comment`.
    pub comment: String,
    /// `scope` of the action: IsolationType (default `Full`) or ScanType.
    pub scope: Option<String>,
    /// `Sha1` of a StopAndQuarantineFile, as sent.
    pub sha1: Option<String>,
}

impl ActionBody {
    /// The parameters that make two submissions the same work (not the comment).
    fn param(&self) -> Option<String> {
        self.sha1.as_ref().map(|s| s.to_ascii_lowercase()).or_else(|| self.scope.clone())
    }
}

/// Validates an action body (references D3 and P10): InvalidRequestBody for
/// anything malformed, unknown or wrong-case keys, wrong types and enum
/// values; then MissingRequiredParameter; then InvalidHashValue.
pub fn parse_action_body(
    kind: ActionKind,
    body: &[u8],
) -> Result<ActionBody, (&'static str, String)> {
    let invalid = |why: String| ("InvalidRequestBody", format!("Request body is incorrect: {why}"));
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid("not valid JSON".into()))?;
    let Value::Object(obj) = v else {
        return Err(invalid("expected a JSON object".into()));
    };
    let allowed = kind.allowed_keys();
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown parameter '{k}' (parameters are case-sensitive; this action takes {})",
            allowed.join(", ")
        )));
    }
    let text = |key: &str| -> Result<Option<&str>, (&'static str, String)> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(format!("'{key}' must be a string"))),
        }
    };
    let comment = text("Comment")?;
    let isolation = text("IsolationType")?;
    let scan = text("ScanType")?;
    let sha1 = text("Sha1")?;
    if let Some(t) = isolation
        && !["Full", "Selective", "UnManagedDevice"].contains(&t)
    {
        return Err(invalid(format!(
            "'{t}' is not a valid IsolationType (Full, Selective or UnManagedDevice)"
        )));
    }
    if let Some(t) = scan
        && !["Quick", "Full"].contains(&t)
    {
        return Err(invalid(format!("'{t}' is not a valid ScanType (Quick or Full)")));
    }
    let missing = |name: &str| ("MissingRequiredParameter", format!("Parameter {name} is missing"));
    let comment = match comment {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => return Err(missing("Comment")),
    };
    let scope = match kind {
        ActionKind::Isolate => Some(isolation.unwrap_or("Full").to_string()),
        ActionKind::RunAntiVirusScan => Some(scan.ok_or_else(|| missing("ScanType"))?.to_string()),
        _ => None,
    };
    let sha1 = match kind {
        ActionKind::StopAndQuarantineFile => match sha1 {
            Some(h) if !h.is_empty() => {
                if !is_sha1(h) {
                    return Err((
                        "InvalidHashValue",
                        format!("Invalid Sha1 value '{h}': expected 40 hexadecimal characters"),
                    ));
                }
                Some(h.to_string())
            }
            _ => return Err(missing("Sha1")),
        },
        _ => None,
    };
    Ok(ActionBody { comment, scope, sha1 })
}

/// Reads the optional `Comment` of a cancel body (an empty body is fine).
fn parse_cancel_body(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| "not valid JSON".to_string())?;
    let Value::Object(obj) = v else { return Err("expected a JSON object".into()) };
    if let Some(k) = obj.keys().find(|k| *k != "Comment") {
        return Err(format!("unknown parameter '{k}' (cancel takes Comment)"));
    }
    match obj.get("Comment") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("'Comment' must be a string".into()),
    }
}

/// An OAuth2 error reply with the request quoted back in its
/// `error_description`: the body as sent (form-encoded) and its fields
/// decoded, as JSON (so a secret appears escaped both ways).
fn echo_request(mut reply: Reply, body: &[u8]) -> Reply {
    let Ok(mut v) = serde_json::from_str::<Value>(&reply.body) else {
        return reply;
    };
    let text = String::from_utf8_lossy(body);
    let fields: serde_json::Map<String, Value> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (odata::percent_decode(k, true), Value::String(odata::percent_decode(v, true)))
        })
        .collect();
    let described = v.get("error_description").and_then(Value::as_str).unwrap_or("").to_string();
    v["error_description"] =
        Value::String(format!("{described} Request: {text} Fields: {}", Value::Object(fields)));
    reply.body = v.to_string();
    reply
}

/// Whole seconds to wait, rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(1_000_000_000) as u64).max(1)
}

/// The permissions (any one suffices) an API demands (reference §4, D3).
fn required_roles(api: Api) -> u16 {
    match api {
        Api::Action(kind) => role_bit(kind.permission()),
        // Any of the seven action permissions.
        Api::CancelAction => (1 << 7) - 1,
        _ => role_bit("Machine.Read.All") | role_bit("Machine.ReadWrite.All"),
    }
}

fn required_roles_text(api: Api) -> String {
    match api {
        Api::Action(kind) => kind.permission().to_string(),
        Api::CancelAction => "one of the machine action permissions".to_string(),
        _ => "Machine.Read.All or Machine.ReadWrite.All".to_string(),
    }
}

/// Field values of a machine for `$filter`.
fn machine_field<'a>(m: &'a crate::api::model::Machine, name: &str) -> odata::Value<'a> {
    let opt = |v: &'a Option<String>| v.as_deref().map_or(odata::Value::Null, odata::Value::Str);
    match name {
        "id" => odata::Value::Str(&m.id),
        "computerDnsName" => opt(&m.computer_dns_name),
        "lastSeen" => opt(&m.last_seen),
        "osPlatform" => opt(&m.os_platform),
        "healthStatus" => opt(&m.health_status),
        "aadDeviceId" => opt(&m.aad_device_id),
        "lastIpAddress" => opt(&m.last_ip_address),
        other => m.extra.get(other).map_or(odata::Value::Null, json_field),
    }
}

fn json_field(v: &Value) -> odata::Value<'_> {
    match v {
        Value::String(s) => odata::Value::Str(s),
        Value::Number(n) => n.as_f64().map_or(odata::Value::Null, odata::Value::Num),
        Value::Bool(b) => odata::Value::Bool(*b),
        Value::Array(items) => odata::Value::List(items.iter().filter_map(Value::as_str).collect()),
        Value::Null | Value::Object(_) => odata::Value::Null,
    }
}

/// `@odata.nextLink` for the page after `page_len` entities.
fn next_link(req: &Request<'_>, q: &Query, page_len: usize) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &q.filter_text {
        parts.push(format!("$filter={}", odata::percent_encode(f)));
    }
    if let Some(top) = q.top {
        parts.push(format!("$top={}", top - page_len));
    }
    parts.push(format!("$skip={}", q.skip + page_len));
    format!("http://{}{}?{}", req.host, req.path, parts.join("&"))
}

impl State {
    /// Answers one request at `now` (taken under the lock, so calls are
    /// counted in the order they are served).
    pub fn handle(&mut self, req: &Request<'_>, now: Instant) -> Reply {
        let route = route(req.method, req.path);
        if route == Route::Admin {
            return self.admin(req, now);
        }
        self.stats.requests += 1;
        match route {
            Route::Token { tenant, v2 } => {
                let reply = self.token(&tenant, v2, req, now);
                if self.cfg.echo_token_requests && reply.status >= 400 {
                    echo_request(reply, req.body)
                } else {
                    reply
                }
            }
            Route::Api(api, id) => {
                let mut reply = self.api_call(api, id.unwrap_or_default(), req, now);
                if reply.status == 429 {
                    reply.retry_after_text = self.cfg.throttle_retry_after.clone();
                }
                reply
            }
            Route::Admin | Route::Unknown => {
                self.stats.not_found += 1;
                Reply::error(
                    404,
                    "NotFound",
                    format!(
                        "No HTTP resource was found that matches the request URI '{}'.",
                        req.path
                    ),
                )
            }
        }
    }

    /// The `/_sim` hooks: stats, taking machines online or offline, and
    /// revoking or restoring a client's credentials. No authentication, not
    /// counted.
    fn admin(&mut self, req: &Request<'_>, now: Instant) -> Reply {
        let trimmed = req.path.trim_matches('/');
        let segs: Vec<&str> = trimmed.split('/').collect();
        match (req.method.clone(), segs.as_slice()) {
            (Method::GET, ["_sim", "stats"]) => {
                let body = serde_json::to_string(&self.stats()).unwrap_or_default();
                Reply::json(200, body, PLAIN_JSON)
            }
            (Method::POST, ["_sim", "machines", key, state @ ("online" | "offline")]) => {
                let key = odata::percent_decode(key, false);
                match self.machine_by_id_or_name(&key) {
                    Some(i) => {
                        self.set_online(i, *state == "online", now);
                        Reply::json(200, self.machines[i].json.to_string(), PLAIN_JSON)
                    }
                    None => Reply::error(
                        404,
                        "ResourceNotFound",
                        format!("Machine {key} was not found"),
                    ),
                }
            }
            (Method::POST, ["_sim", "clients", client, verb @ ("revoke" | "restore")]) => {
                let client = odata::percent_decode(client, false);
                if *verb == "revoke" {
                    self.revoke_client(&client);
                } else {
                    self.restore_client(&client);
                }
                Reply::json(
                    200,
                    json!({ "client_id": client, "revoked": *verb == "revoke" }).to_string(),
                    PLAIN_JSON,
                )
            }
            _ => {
                Reply::error(404, "NotFound", format!("No simulator hook matches '{}'.", req.path))
            }
        }
    }

    /// `POST /{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token` (references D7, P3).
    fn token(&mut self, tenant: &str, v2: bool, req: &Request<'_>, now: Instant) -> Reply {
        self.stats.token_requests += 1;
        let text = String::from_utf8_lossy(req.body);
        let mut form: Vec<(String, String)> = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            form.push((odata::percent_decode(k, true), odata::percent_decode(v, true)));
        }
        let field = |name: &str| {
            form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
        };
        let must = |name: &str| {
            Reply::oauth(
                400,
                "invalid_request",
                &format!("The request body must contain the following parameter: '{name}'."),
            )
        };
        if let Some(want) = &self.cfg.tenant
            && !want.eq_ignore_ascii_case(tenant)
        {
            return Reply::oauth(400, "invalid_request", &format!("Tenant '{tenant}' not found."));
        }
        let Some(grant) = field("grant_type") else { return must("grant_type") };
        if grant != "client_credentials" {
            return Reply::oauth(
                400,
                "unsupported_grant_type",
                &format!("The grant type '{grant}' is not supported; use client_credentials."),
            );
        }
        let Some(client_id) = field("client_id") else { return must("client_id") };
        let Some(secret) = field("client_secret") else {
            return Reply::oauth(
                401,
                "invalid_client",
                "'client_secret' is required for the 'client_credentials' grant type.",
            );
        };
        let extra = if self.cfg.accept_security_audience { Some(SECURITY_AUDIENCE) } else { None };
        let resource = if v2 {
            let Some(scope) = field("scope") else { return must("scope") };
            let scope = scope.trim();
            let extra_scope = extra.map(|a| format!("{a}/.default"));
            let known = SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope))
                || extra_scope.is_some_and(|s| s.eq_ignore_ascii_case(scope));
            if !known {
                return Reply::oauth(
                    400,
                    "invalid_scope",
                    &format!(
                        "The provided value for the input parameter 'scope' is not valid: '{scope}'."
                    ),
                );
            }
            None
        } else {
            let Some(res) = field("resource") else { return must("resource") };
            let trimmed = res.trim().trim_end_matches('/');
            let known = trimmed.eq_ignore_ascii_case(RESOURCE)
                || extra.is_some_and(|a| trimmed.eq_ignore_ascii_case(a));
            if !known {
                return Reply::oauth(
                    400,
                    "invalid_resource",
                    &format!("The resource principal named {res} was not found in the tenant."),
                );
            }
            Some(res.to_string())
        };
        if self.revoked.contains(&client_id.to_ascii_lowercase()) {
            // What Entra answers once the app's secret is deleted.
            return Reply::oauth(
                401,
                "invalid_client",
                &format!(
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            );
        }
        let id_ok = self.cfg.client_id.as_deref().is_none_or(|want| want == client_id);
        let secret_ok = self.cfg.client_secret.as_deref().is_none_or(|want| want == secret);
        if !id_ok || !secret_ok {
            return Reply::oauth(
                401,
                "invalid_client",
                "Invalid client credentials: unknown client id or wrong client secret.",
            );
        }
        if self.cfg.max_tokens.is_some_and(|max| self.stats.tokens_issued >= max) {
            return Reply::oauth(
                401,
                "invalid_client",
                "AADSTS7000222: The provided client secret keys for app are expired or revoked.",
            );
        }
        let principal = self.principal(client_id, tenant);
        let token = format!("sim.{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
        let ttl = self.cfg.token_ttl;
        self.tokens.insert(
            token.clone(),
            TokenInfo { principal, roles: self.roles_mask, expires: now + ttl },
        );
        self.stats.tokens_issued += 1;
        let secs = ttl.as_secs();
        let body = match resource {
            None => json!({
                "token_type": "Bearer",
                "expires_in": secs,
                "ext_expires_in": secs,
                "access_token": token,
            }),
            Some(resource) => {
                let unix =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                json!({
                    "token_type": "Bearer",
                    "expires_in": secs.to_string(),
                    "ext_expires_in": secs.to_string(),
                    "expires_on": (unix + secs).to_string(),
                    "not_before": unix.to_string(),
                    "resource": resource,
                    "access_token": token,
                })
            }
        };
        Reply::json(200, body.to_string(), PLAIN_JSON)
    }

    /// The bearer check (reference D3): 401 for a missing header, another
    /// scheme, an unknown token or an expired one.
    fn authenticate(&self, header: Option<&str>, now: Instant) -> Result<TokenInfo, Reply> {
        let unauthorized = |msg: &str| {
            let mut r = Reply::error(401, "Unauthorized", msg);
            r.www_authenticate = true;
            r
        };
        let Some(h) = header else {
            return Err(unauthorized("Authorization header is missing"));
        };
        let (scheme, token) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(unauthorized("Authorization header is not a Bearer token"));
        }
        let Some(info) = self.tokens.get(token.trim()) else {
            return Err(unauthorized("The access token is invalid"));
        };
        if now >= info.expires {
            return Err(unauthorized("The access token has expired"));
        }
        Ok(*info)
    }

    /// One API call, through every check in the reference's order.
    fn api_call(&mut self, api: Api, id: String, req: &Request<'_>, now: Instant) -> Reply {
        self.api(api).calls += 1;
        // Action bodies are read once: for duplicate-submission accounting
        // (whatever the answer) and, later, for validation.
        let action = match api {
            Api::Action(kind) => {
                let body = parse_action_body(kind, req.body);
                if let (Ok(b), Some(m)) = (&body, self.machine_by_id(&id))
                    && self.accepted.contains(&(m, kind, b.param()))
                {
                    self.stats.duplicate_submissions += 1;
                }
                Some((kind, body))
            }
            _ => None,
        };
        let token = match self.authenticate(req.authorization, now) {
            Ok(t) => t,
            Err(reply) => {
                self.stats.unauthorized += 1;
                return reply;
            }
        };
        if token.roles & required_roles(api) == 0 {
            self.stats.forbidden += 1;
            return Reply::error(
                403,
                "Forbidden",
                format!(
                    "The application does not have the permission this API requires: {}",
                    required_roles_text(api)
                ),
            );
        }
        if let Some(secs) = faults::draw_cpu_throttle(&mut self.cpu_rng, self.cfg.cpu_throttle_rate)
        {
            let limit = self.cfg.limits.first().copied().unwrap_or(Limit::PER_MINUTE);
            self.stats.throttled += 1;
            self.stats.cpu_throttled += 1;
            self.api(api).throttled += 1;
            return Reply::too_many(limit, secs);
        }
        if let Err(t) = self.quotas.admit(token.principal, api, now) {
            self.stats.throttled += 1;
            self.api(api).throttled += 1;
            return Reply::too_many(t.limit, whole_seconds(t.wait));
        }
        self.api(api).admitted += 1;
        let fault = faults::draw(&mut self.fault_rng, self.cfg.error_rate);
        if fault.is_some() {
            self.stats.errors_injected += 1;
        }
        match fault {
            Some(Fault::InternalError) => {
                self.stats.injected_500 += 1;
                return Reply::error(500, "InternalServerError", "An unexpected error occurred");
            }
            Some(Fault::Unavailable { retry_after }) => {
                self.stats.injected_503 += 1;
                let mut r = Reply::error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable; retry later",
                );
                r.retry_after = retry_after;
                return r;
            }
            Some(Fault::DropBefore) => {
                self.stats.dropped_before += 1;
                let mut r = Reply::error(500, "InternalServerError", "connection dropped");
                r.drop = Some(Disconnect::Before);
                return r;
            }
            Some(Fault::DropAfter) => self.stats.dropped_after += 1,
            None => {}
        }
        let mut reply = match (api, action) {
            (Api::Action(_), Some((kind, body))) => self.create_action(kind, &id, body, req, now),
            (Api::CancelAction, _) => self.cancel(&id, req, now),
            (Api::GetMachine, _) => self.get_machine(&id, req),
            (Api::ListMachines, _) => self.list_machines(req),
            (Api::GetAction, _) => self.get_action(&id, req, now),
            (Api::ListActions, _) => self.list_actions(req, now),
            // Action calls always carry their parsed body (built above).
            (Api::Action(_), None) => Reply::error(500, "InternalServerError", "unreachable"),
        };
        match reply.status {
            400 => self.stats.bad_request += 1,
            404 => self.stats.not_found += 1,
            _ => {}
        }
        if fault == Some(Fault::DropAfter) {
            reply.drop = Some(Disconnect::After);
        }
        reply
    }

    fn context(req: &Request<'_>, fragment: &str) -> String {
        format!("http://{}/api/$metadata#{fragment}", req.host)
    }

    fn entity_reply<T: serde::Serialize>(
        status: u16,
        req: &Request<'_>,
        fragment: &str,
        value: T,
    ) -> Reply {
        let e = Entity { context: Some(State::context(req, fragment)), value };
        let body = serde_json::to_string(&e).unwrap_or_default();
        Reply::json(status, body, ODATA_JSON)
    }

    /// `POST machines/{id}/<action>`: validation, 404, OS, duplicate, 201.
    fn create_action(
        &mut self,
        kind: ActionKind,
        id: &str,
        body: Result<ActionBody, (&'static str, String)>,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        let body = match body {
            Ok(b) => b,
            Err((code, msg)) => return Reply::error(400, code, msg),
        };
        let Some(m) = self.machine_by_id(id) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {id} was not found"));
        };
        let entry = &self.machines[m];
        if kind.windows_only() && entry.machine.is_linux_or_macos() {
            return Reply::error(
                400,
                "OsPlatformNotSupported",
                format!(
                    "{} is not supported on os platform {}",
                    kind.type_name(),
                    entry.machine.os_platform.as_deref().unwrap_or("unknown")
                ),
            );
        }
        let offset = self.clock.offset(now);
        if let Some(&prev) = self.latest.get(&(m, kind))
            && !self.actions[prev].status_at(offset, &self.timing).0.is_final()
        {
            self.stats.duplicates_refused += 1;
            return Reply::error(
                400,
                "ActiveRequestAlreadyExists",
                "Action is already in progress",
            );
        }
        let fails = self.cfg.fail_rate > 0.0 && self.fail_rng.f64() < self.cfg.fail_rate;
        let record = ActionRecord {
            id: new_guid(),
            kind,
            machine: m,
            machine_id: entry.machine.id.clone(),
            computer_dns_name: entry.machine.computer_dns_name.clone(),
            requestor: self.cfg.app_name.clone(),
            comment: body.comment.clone(),
            scope: body.scope.clone(),
            sha1: body.sha1.clone(),
            created: offset,
            fails,
            settle_from: (!entry.offline).then_some(offset),
            cancel: None,
        };
        self.accepted.insert((m, kind, body.param()));
        let idx = self.push_action(record);
        self.stats.actions_created += 1;
        let entity = self.actions[idx].as_created(&self.clock);
        State::entity_reply(201, req, "MachineActions/$entity", entity)
    }

    /// `POST machineactions/{id}/cancel` (references D5, P12).
    fn cancel(&mut self, id: &str, req: &Request<'_>, now: Instant) -> Reply {
        let comment = match parse_cancel_body(req.body) {
            Ok(c) => c,
            Err(why) => {
                return Reply::error(
                    400,
                    "InvalidRequestBody",
                    format!("Request body is incorrect: {why}"),
                );
            }
        };
        let Some(idx) = self.action_by_id(id) else {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} was not found"),
            );
        };
        let offset = self.clock.offset(now);
        let (status, _) = self.actions[idx].status_at(offset, &self.timing);
        if status.is_final() {
            return Reply::error(
                400,
                "BadRequest",
                format!(
                    "Machine action {id} cannot be cancelled: its status is already {}",
                    status.as_str()
                ),
            );
        }
        self.actions[idx].cancel =
            Some(Cancellation { at: offset, requestor: self.cfg.app_name.clone(), comment });
        self.stats.cancelled += 1;
        let entity = self.actions[idx].view(offset, &self.timing, &self.clock);
        State::entity_reply(200, req, "MachineActions/$entity", entity)
    }

    /// `GET machines/{id-or-name}`.
    fn get_machine(&self, key: &str, req: &Request<'_>) -> Reply {
        let Some(i) = self.machine_by_id_or_name(key) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {key} was not found"));
        };
        let json = &self.machines[i].json;
        let ctx = Value::String(State::context(req, "Machines/$entity")).to_string();
        // The rendered machine is a non-empty JSON object: it always has an id.
        let body = format!("{{\"@odata.context\":{ctx},{}", &json[1..]);
        Reply::json(200, body, ODATA_JSON)
    }

    /// `GET machines` with `$filter`, `$top` and `$skip`, in fleet order.
    fn list_machines(&self, req: &Request<'_>) -> Reply {
        let q = match odata::parse_query(req.query, &odata::MACHINES) {
            Ok(q) => q,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let top = q.top.unwrap_or(MAX_TOP);
        let page = self.cfg.page_size.unwrap_or(usize::MAX).min(top);
        let mut items = self
            .machines
            .iter()
            .filter(|m| {
                q.filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&|name: &str| machine_field(&m.machine, name)))
            })
            .skip(q.skip)
            .take(top.min(page.saturating_add(1)))
            .map(|m| &*m.json)
            .collect::<Vec<&str>>();
        let next = if items.len() > page {
            items.truncate(page);
            let link = Value::String(next_link(req, &q, page)).to_string();
            format!(",\"@odata.nextLink\":{link}")
        } else {
            String::new()
        };
        let ctx = Value::String(State::context(req, "Machines")).to_string();
        let mut body = String::with_capacity(64 + items.iter().map(|s| s.len() + 1).sum::<usize>());
        body.push_str("{\"@odata.context\":");
        body.push_str(&ctx);
        body.push_str(",\"value\":[");
        body.push_str(&items.join(","));
        body.push(']');
        body.push_str(&next);
        body.push('}');
        Reply::json(200, body, ODATA_JSON)
    }

    /// `GET machineactions/{id}`.
    fn get_action(&self, id: &str, req: &Request<'_>, now: Instant) -> Reply {
        let Some(idx) = self.action_by_id(id) else {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} was not found"),
            );
        };
        let entity = self.actions[idx].view(self.clock.offset(now), &self.timing, &self.clock);
        State::entity_reply(200, req, "MachineActions/$entity", entity)
    }

    /// `GET machineactions` with `$filter`, `$top` and `$skip`, newest first.
    fn list_actions(&self, req: &Request<'_>, now: Instant) -> Reply {
        let q = match odata::parse_query(req.query, &odata::MACHINE_ACTIONS) {
            Ok(q) => q,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let offset = self.clock.offset(now);
        let top = q.top.unwrap_or(MAX_TOP);
        let page = self.cfg.page_size.unwrap_or(usize::MAX).min(top);
        let mut items: Vec<_> = self
            .actions
            .iter()
            .rev()
            .filter(|a| {
                let Some(f) = &q.filter else { return true };
                let status = a.status_at(offset, &self.timing).0;
                let created = self.clock.tick_time(a.created);
                f.matches(&|name: &str| match name {
                    "id" => odata::Value::Str(&a.id),
                    "status" => odata::Value::Str(status.as_str()),
                    "machineId" => odata::Value::Str(&a.machine_id),
                    "type" => odata::Value::Str(a.kind.type_name()),
                    "requestor" => odata::Value::Str(&a.requestor),
                    "creationDateTimeUtc" => odata::Value::Time(created),
                    _ => odata::Value::Null,
                })
            })
            .skip(q.skip)
            .take(top.min(page.saturating_add(1)))
            .collect();
        let next_link = if items.len() > page {
            items.truncate(page);
            Some(next_link(req, &q, page))
        } else {
            None
        };
        let list = ODataList {
            context: Some(State::context(req, "MachineActions")),
            value: items.into_iter().map(|a| a.view(offset, &self.timing, &self.clock)).collect(),
            next_link,
        };
        Reply::json(200, serde_json::to_string(&list).unwrap_or_default(), ODATA_JSON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let g = &Method::GET;
        let p = &Method::POST;
        let m = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";
        assert_eq!(route(g, "/api/machines"), Route::Api(Api::ListMachines, None));
        assert_eq!(route(g, "/api/v1.0/machines/"), Route::Api(Api::ListMachines, None));
        assert_eq!(
            route(g, &format!("/api/machines/{m}")),
            Route::Api(Api::GetMachine, Some(m.into()))
        );
        assert_eq!(
            route(g, "/api/machines/host%2D1.contoso.test"),
            Route::Api(Api::GetMachine, Some("host-1.contoso.test".into()))
        );
        for k in ActionKind::ALL {
            let path = format!("/api/machines/{m}/{}", k.path_segment());
            assert_eq!(route(p, &path), Route::Api(Api::Action(k), Some(m.into())));
            assert_eq!(route(g, &path), Route::Unknown);
        }
        assert_eq!(route(p, &format!("/api/machines/{m}/Isolate")), Route::Unknown);
        assert_eq!(route(p, &format!("/api/machines/{m}/runliveresponse")), Route::Unknown);
        assert_eq!(
            route(p, "/api/machineactions/abc/cancel"),
            Route::Api(Api::CancelAction, Some("abc".into()))
        );
        assert_eq!(
            route(g, "/api/machineactions/abc"),
            Route::Api(Api::GetAction, Some("abc".into()))
        );
        assert_eq!(route(g, "/api/v2.0/machines"), Route::Unknown);
        assert_eq!(route(g, "/machines"), Route::Unknown);
        assert_eq!(
            route(p, "/t1/oauth2/v2.0/token"),
            Route::Token { tenant: "t1".into(), v2: true }
        );
        assert_eq!(route(p, "/t1/oauth2/token"), Route::Token { tenant: "t1".into(), v2: false });
        assert_eq!(route(g, "/t1/oauth2/token"), Route::Unknown);
        assert_eq!(route(g, "/_sim/stats"), Route::Admin);
    }

    #[test]
    fn action_bodies_in_the_documented_order() {
        let p = |k, s: &str| parse_action_body(k, s.as_bytes()).map_err(|e| e.0);
        use ActionKind::*;
        assert_eq!(p(Isolate, r#"{"Comment":"x"}"#).unwrap().scope.as_deref(), Some("Full"));
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","IsolationType":"UnManagedDevice"}"#)
                .unwrap()
                .scope
                .as_deref(),
            Some("UnManagedDevice")
        );
        assert_eq!(p(Isolate, r#"{"comment":"x"}"#), Err("InvalidRequestBody"));
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","isolationType":"Full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","IsolationType":"full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(Isolate, r#"{"Comment":5}"#), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "not json"), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "[]"), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, ""), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "{}"), Err("MissingRequiredParameter"));
        assert_eq!(p(Isolate, r#"{"Comment":""}"#), Err("MissingRequiredParameter"));
        assert_eq!(p(Isolate, r#"{"Comment":null}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(Offboard, r#"{"Comment":"x","IsolationType":"Full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(RunAntiVirusScan, r#"{"Comment":"x"}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(RunAntiVirusScan, r#"{"Comment":"x","ScanType":"Deep"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(RunAntiVirusScan, r#"{"ScanType":"Deep"}"#), Err("InvalidRequestBody"));
        assert_eq!(p(StopAndQuarantineFile, r#"{"Comment":"x"}"#), Err("MissingRequiredParameter"));
        assert_eq!(p(StopAndQuarantineFile, r#"{"Sha1":"abc"}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(StopAndQuarantineFile, r#"{"Comment":"x","Sha1":"abc"}"#),
            Err("InvalidHashValue")
        );
        let ok = p(
            StopAndQuarantineFile,
            r#"{"Comment":"x","Sha1":"A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508"}"#,
        )
        .unwrap();
        assert_eq!(ok.param().as_deref(), Some("a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"));
    }

    #[test]
    fn cancel_bodies() {
        assert_eq!(parse_cancel_body(b""), Ok(None));
        assert_eq!(parse_cancel_body(br#"{"Comment":"why"}"#), Ok(Some("why".into())));
        assert!(parse_cancel_body(br#"{"comment":"why"}"#).is_err());
        assert!(parse_cancel_body(b"nope").is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn machine_splice_is_valid_json() {
        let cfg = super::super::SimConfig {
            fleet: super::super::FleetSpec::Generate { machines: 3 },
            ..Default::default()
        };
        let s = State::new(cfg, super::super::lifecycle::Clock::start());
        let req = Request {
            method: &Method::GET,
            path: "/api/machines/host-00001.contoso.test",
            query: None,
            host: "h:1",
            authorization: None,
            body: b"",
        };
        let r = s.get_machine("host-00001.contoso.test", &req);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "@odata.context");
        assert_eq!(keys[1], "id");
        assert_eq!(v["@odata.context"], "http://h:1/api/$metadata#Machines/$entity");
    }
}
