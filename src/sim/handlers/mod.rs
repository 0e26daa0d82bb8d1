//! Every endpoint of the simulated service, as plain functions of the state.
//! This file holds the routing table ([`Route`], [`route`]) and the dispatch
//! that takes an API call through the service's checks in order. Each
//! concern has its own file:
//!
//! - [`reply`]: the request and reply types every handler shares.
//! - [`token`]: the login endpoint (`/{tenant}/oauth2/...`).
//! - [`assertion`]: client assertions (certificate and federated) at login.
//! - [`mint`]: the service principal's identifiers and the tokens issued.
//! - [`discovery`]: OpenID Connect and instance discovery, signing keys.
//! - [`identity`]: the managed-identity endpoints (IMDS, App Service).
//! - [`auth`]: the bearer check and the permission each API demands.
//! - [`throttle`]: CPU throttling and quota admission (the 429s).
//! - [`actions`]: action POSTs, their body validation, and cancel.
//! - [`lists`]: `machines` and `machineactions`, listed and looked up.
//! - [`machines`]: the rest of the machine family: look-ups by IP, tag and
//!   file, tags, log-on users, investigations and package links.
//! - [`graph`]: Microsoft Graph's `runHuntingQuery`, on the Graph listener.
//! - [`admin`]: the `/_sim` hooks.
//!
//! Injected faults are drawn by [`super::faults`]. Nothing here does I/O;
//! [`super::server`] feeds it requests.
//!
//! Check order of an API call (reference P9): route → 401 → 403 → 429 →
//! injected fault → body (InvalidRequestBody, then MissingRequiredParameter,
//! then InvalidHashValue) → 404 machine → OS → duplicate → 201. Calls refused
//! with 401/403/429 consume no quota; calls that fail later do.

// Private but `reply`: each adds `State` methods or helpers that only the
// dispatch below calls; the server builds requests and sends replies.
mod actions;
mod admin;
mod assertion;
mod auth;
mod discovery;
mod graph;
mod identity;
mod lists;
mod machines;
mod mint;
pub(crate) mod reply;
mod throttle;
mod token;

use hyper::Method;
use tokio::time::Instant;

use self::discovery::Document;
use self::identity::Shape;
use self::reply::{Disconnect, Reply, Request};
use super::faults::{self, Fault};
use super::state::State;
use crate::api::action::ActionKind;
use crate::api::odata::decode;
use crate::api::route::Api;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// The token endpoint: v2 (`scope`) or v1 (`resource`) form.
    Token {
        /// The tenant path segment.
        tenant: String,
        /// Whether this is `/oauth2/v2.0/token`.
        v2: bool,
    },
    /// A discovery document or the signing keys, for a tenant path segment.
    Discovery {
        /// Which document.
        doc: Document,
        /// The tenant path segment (`common` for instance discovery).
        tenant: String,
    },
    /// A managed-identity token endpoint.
    ManagedIdentity(Shape),
    /// An API call, with the id path segment (percent-decoded) when the route has one.
    Api(Api, Option<String>),
    /// A `/_sim` hook.
    Admin,
    /// Nothing matches.
    Unknown,
}

/// Routes a request, under `/api/` or `/api/v1.0/`; one trailing slash is
/// tolerated.
///
/// The literal segments (`api`, `v1.0`, `machines`, `machineactions`, an
/// action's name, `cancel`; the login's `oauth2`, `v2.0`, `token`, the
/// discovery paths and the managed-identity paths) are
/// matched without regard to case, as ASP.NET's routing (the service's) and
/// Entra's endpoints match them: clients in production send
/// `stopAndQuarantineFile` as well as `StopAndQuarantineFile`, and the
/// service's own pages mix `getPackageUri` with `GetPackageUri`. The id
/// segments are values, passed on as sent (percent-decoded); the machine
/// look-up itself ignores case. `/_sim` is ours and matched exactly.
pub(crate) fn route(method: &Method, path: &str) -> Route {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segs: Vec<&str> = trimmed.split('/').collect();
    if segs.first() == Some(&"_sim") {
        return Route::Admin;
    }
    let folded: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = folded.iter().map(String::as_str).collect();
    let post = method == Method::POST;
    let get = method == Method::GET;
    match lower.as_slice() {
        [_, "oauth2", "v2.0", "token"] if post && !segs[0].is_empty() => {
            return Route::Token { tenant: decode(segs[0]), v2: true };
        }
        [_, "oauth2", "token"] if post && !segs[0].is_empty() => {
            return Route::Token { tenant: decode(segs[0]), v2: false };
        }
        [_, "v2.0", ".well-known", "openid-configuration"] if get && !segs[0].is_empty() => {
            return Route::Discovery { doc: Document::OpenIdV2, tenant: decode(segs[0]) };
        }
        [_, ".well-known", "openid-configuration"] if get && !segs[0].is_empty() => {
            return Route::Discovery { doc: Document::OpenIdV1, tenant: decode(segs[0]) };
        }
        ["common", "discovery", "instance"] if get => {
            return Route::Discovery { doc: Document::Instance, tenant: "common".into() };
        }
        [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"]
            if get && !segs[0].is_empty() =>
        {
            return Route::Discovery { doc: Document::Keys, tenant: decode(segs[0]) };
        }
        ["metadata", "identity", "oauth2", "token"] if get => {
            return Route::ManagedIdentity(Shape::Imds);
        }
        ["msi", "token"] if get => return Route::ManagedIdentity(Shape::AppService),
        _ => {}
    }
    let skip = match lower.as_slice() {
        ["api", "v1.0", ..] => 2,
        ["api", ..] => 1,
        _ => return Route::Unknown,
    };
    let (rest, raw) = (&lower[skip..], &segs[skip..]);
    let id = |i: usize| Some(decode(raw[i]));
    match rest {
        ["machines"] if get => Route::Api(Api::ListMachines, None),
        ["machines", "findbytag"] if get => Route::Api(Api::FindByTag, None),
        ["machines", m] if get && m.starts_with("findbyip(") => Route::Api(Api::FindByIp, id(1)),
        ["machines", "addorremovetagformultiplemachines"] if post => {
            Route::Api(Api::MachinesTags, None)
        }
        ["machines", m, "tags"] if post && !m.is_empty() => Route::Api(Api::MachineTags, id(1)),
        ["machines", m, "startinvestigation"] if post && !m.is_empty() => {
            Route::Api(Api::StartInvestigation, id(1))
        }
        ["machines", m, "logonusers"] if get && !m.is_empty() => Route::Api(Api::LogonUsers, id(1)),
        ["files", f, "machines"] if get && !f.is_empty() => Route::Api(Api::FileMachines, id(1)),
        ["machineactions", a, "getpackageuri"] if get && !a.is_empty() => {
            Route::Api(Api::GetPackageUri, id(1))
        }
        ["machines", m] if get && !m.is_empty() => Route::Api(Api::GetMachine, id(1)),
        ["machines", m, seg] if post && !m.is_empty() => {
            match ActionKind::ALL.into_iter().find(|k| k.path_segment().eq_ignore_ascii_case(seg)) {
                Some(kind) => Route::Api(Api::Action(kind), id(1)),
                None => Route::Unknown,
            }
        }
        ["machineactions"] if get => Route::Api(Api::ListActions, None),
        ["machineactions", a] if get && !a.is_empty() => Route::Api(Api::GetAction, id(1)),
        ["machineactions", a, "cancel"] if post && !a.is_empty() => {
            Route::Api(Api::CancelAction, id(1))
        }
        _ => Route::Unknown,
    }
}

impl State {
    /// Answers one request at `now` (taken under the lock, so calls are
    /// counted in the order they are served).
    pub(crate) fn handle(&mut self, req: &Request<'_>, now: Instant) -> Reply {
        if req.service == crate::sim::config::Service::Graph {
            // Graph, like the API, serves the tenant of the bearer token.
            self.serving = if self.multi_tenant() {
                req.authorization
                    .and_then(auth::bearer)
                    .and_then(|b| self.tokens.get(b))
                    .map(|t| t.tenant)
            } else {
                Some(0)
            };
            self.count(|s| s.requests += 1);
            return self.graph(req, now);
        }
        let route = route(req.method, req.path);
        if route == Route::Admin {
            return self.admin(req, now);
        }
        self.serving = self.attribute(&route, req);
        self.count(|s| s.requests += 1);
        match route {
            Route::Token { tenant, v2 } => {
                let reply = self.token(&tenant, v2, req, now);
                if self.cfg.echo_token_requests && reply.status >= 400 {
                    token::echo_request(reply, req.body)
                } else {
                    reply
                }
            }
            Route::Discovery { doc, tenant } => self.discovery(doc, &tenant, req),
            Route::ManagedIdentity(shape) => self.managed_identity(shape, req, now),
            Route::Api(api, id) => {
                let mut reply = self.api_call(api, id.unwrap_or_default(), req, now);
                if reply.status == 429 {
                    reply.retry_after_text = self.cfg.throttle_retry_after.clone();
                }
                reply
            }
            Route::Admin | Route::Unknown => {
                self.count(|s| s.not_found += 1);
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

    /// The tenant a request is attributed to, before anything is counted:
    /// the tenant of the token URL (or discovery URL) named by name or id;
    /// the tenant of the bearer token on the API; the host's own tenant (the
    /// first) for a managed identity. A one-tenant simulator attributes
    /// every request to its tenant; with `--tenants`, a request naming no
    /// tenant of the simulator is attributed to none.
    fn attribute(&self, route: &Route, req: &Request<'_>) -> Option<usize> {
        match route {
            Route::Token { tenant, .. } | Route::Discovery { tenant, .. } => {
                self.tenant_index(tenant)
            }
            Route::ManagedIdentity(_) => Some(0),
            Route::Api(..) if self.multi_tenant() => {
                let bearer = req.authorization.and_then(auth::bearer)?;
                self.tokens.get(bearer).map(|t| t.tenant)
            }
            Route::Api(..) => Some(0),
            Route::Admin | Route::Unknown => (!self.multi_tenant()).then_some(0),
        }
    }

    /// One API call, through every check in the reference's order.
    fn api_call(&mut self, api: Api, id: String, req: &Request<'_>, now: Instant) -> Reply {
        self.count_api(api, |s| s.calls += 1);
        // Action bodies are read once: for duplicate-submission accounting
        // (whatever the answer) and, later, for validation.
        let action = match api {
            Api::Action(kind) => {
                let body = actions::parse_action_body(kind, req.body);
                if let (Ok(b), Some(_)) = (&body, self.serving)
                    && let Some(m) = self.machine_by_id(&id)
                    && self.tenant().accepted.contains(&(m, kind, b.param()))
                {
                    self.count(|s| s.duplicate_submissions += 1);
                }
                Some((kind, body))
            }
            _ => None,
        };
        let token = match self.authorize(api, req.authorization, now) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.throttle(api, token.principal, now) {
            return reply;
        }
        self.count_api(api, |s| s.admitted += 1);
        let fault = faults::draw(&mut self.fault_rng, self.cfg.error_rate);
        if fault.is_some() {
            self.count(|s| s.errors_injected += 1);
        }
        match fault {
            Some(Fault::InternalError) => {
                self.count(|s| s.injected_500 += 1);
                return Reply::error(500, "InternalServerError", "An unexpected error occurred");
            }
            Some(Fault::Unavailable { retry_after }) => {
                self.count(|s| s.injected_503 += 1);
                let mut r = Reply::error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable; retry later",
                );
                r.retry_after = retry_after;
                return r;
            }
            Some(Fault::DropBefore) => {
                self.count(|s| s.dropped_before += 1);
                let mut r = Reply::error(500, "InternalServerError", "connection dropped");
                r.drop = Some(Disconnect::Before);
                return r;
            }
            Some(Fault::DropAfter) => self.count(|s| s.dropped_after += 1),
            None => {}
        }
        let mut reply = match (api, action) {
            (Api::Action(_), Some((kind, body))) => self.create_action(kind, &id, body, req, now),
            (Api::CancelAction, _) => self.cancel(&id, req, now),
            (Api::GetMachine, _) => self.get_machine(&id, req),
            (Api::ListMachines, _) => self.list_machines(req),
            (Api::GetAction, _) => self.get_action(&id, req, now),
            (Api::ListActions, _) => self.list_actions(req, now),
            (Api::FindByIp, _) => self.find_by_ip(&id, req, now),
            (Api::FindByTag, _) => self.find_by_tag(req),
            (Api::MachineTags, _) => self.tag_machine(&id, req),
            (Api::MachinesTags, _) => self.tag_machines(req),
            (Api::FileMachines, _) => self.file_machines(&id, req),
            (Api::LogonUsers, _) => self.logon_users(&id, req),
            (Api::StartInvestigation, _) => self.start_investigation(&id, req, now),
            (Api::GetPackageUri, _) => self.package_uri(&id, req, now),
            // Action calls always carry their parsed body (built above).
            (Api::Action(_), None) => Reply::error(500, "InternalServerError", "unreachable"),
            // Graph's API is served on the Graph listener; `route` never
            // yields it here.
            (Api::HuntingQuery, _) => Reply::error(404, "NotFound", "Not an MDE API"),
        };
        match reply.status {
            400 => self.count(|s| s.bad_request += 1),
            404 => self.count(|s| s.not_found += 1),
            _ => {}
        }
        if fault == Some(Fault::DropAfter) {
            reply.drop = Some(Disconnect::After);
        }
        reply
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
        // Literal segments in any case, ids as sent.
        assert_eq!(
            route(p, &format!("/API/Machines/{m}/Isolate")),
            Route::Api(Api::Action(ActionKind::Isolate), Some(m.into()))
        );
        assert_eq!(
            route(p, &format!("/api/V1.0/machines/{m}/stopandquarantinefile")),
            Route::Api(Api::Action(ActionKind::StopAndQuarantineFile), Some(m.into()))
        );
        assert_eq!(
            route(p, "/api/MachineActions/AbC/Cancel"),
            Route::Api(Api::CancelAction, Some("AbC".into()))
        );
        assert_eq!(
            route(p, "/T1/OAuth2/V2.0/Token"),
            Route::Token { tenant: "T1".into(), v2: true }
        );
        assert_eq!(route(g, "/_SIM/stats"), Route::Unknown);
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
        // The rest of the machine family, before `machines/{id}` and the actions.
        let ip = "findbyip(ip='10.1.1.1',timestamp=2026-11-30T08:00:00Z)";
        assert_eq!(
            route(g, &format!("/api/machines/{ip}")),
            Route::Api(Api::FindByIp, Some(ip.into()))
        );
        assert_eq!(
            route(g, "/api/machines/FindByIp(ip=%2710.1.1.1%27,timestamp=x)"),
            Route::Api(Api::FindByIp, Some("FindByIp(ip='10.1.1.1',timestamp=x)".into()))
        );
        assert_eq!(route(g, "/api/machines/FindByTag"), Route::Api(Api::FindByTag, None));
        assert_eq!(
            route(p, "/api/machines/addOrRemoveTagForMultipleMachines"),
            Route::Api(Api::MachinesTags, None)
        );
        assert_eq!(
            route(p, &format!("/api/machines/{m}/Tags")),
            Route::Api(Api::MachineTags, Some(m.into()))
        );
        assert_eq!(
            route(p, &format!("/api/machines/{m}/startInvestigation")),
            Route::Api(Api::StartInvestigation, Some(m.into()))
        );
        assert_eq!(
            route(g, &format!("/api/machines/{m}/logonusers")),
            Route::Api(Api::LogonUsers, Some(m.into()))
        );
        assert_eq!(route(p, &format!("/api/machines/{m}/logonusers")), Route::Unknown);
        assert_eq!(
            route(g, &format!("/api/files/{m}/machines")),
            Route::Api(Api::FileMachines, Some(m.into()))
        );
        for seg in ["GetPackageUri", "getPackageUri", "getpackageuri"] {
            assert_eq!(
                route(g, &format!("/api/machineactions/abc/{seg}")),
                Route::Api(Api::GetPackageUri, Some("abc".into()))
            );
        }
        assert_eq!(route(p, "/api/machineactions/abc/GetPackageUri"), Route::Unknown);
    }
}
