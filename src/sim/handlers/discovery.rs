//! What OAuth and Entra libraries read before they log in, pointing back at
//! the simulator's own address and scheme:
//!
//! - OpenID Connect discovery, `GET /{tenant}/v2.0/.well-known/openid-configuration`
//!   and the v1 `GET /{tenant}/.well-known/openid-configuration`
//!   (`mde-api-addendum.md` §4.6, fixture `entra-oidc-discovery-v2-truncated.json`);
//!   an unknown tenant is the captured 400 `invalid_tenant` AADSTS90002
//!   (fixture `entra-error-90002-captured.json`).
//! - MSAL's instance discovery, `GET /common/discovery/instance` (§4.7):
//!   `tenant_discovery_endpoint` and `metadata[].aliases`; another host's
//!   authority is 400 `invalid_instance` (AADSTS50049).
//! - The signing keys, `GET /{tenant}/discovery/v2.0/keys` and
//!   `/{tenant}/discovery/keys`, that verify the tokens the simulator issues.
//!
//! `common`, `organizations` and `consumers` are served as Entra serves
//! them, with `{tenantid}` in the issuer. Decided where the sources are
//! silent: fields beyond the documented excerpt follow the live document's
//! well-known set; endpoints the simulator does not serve (authorize,
//! logout, device code) are listed as the live document lists them, under
//! the simulator's address.

use serde_json::{Value, json};

use super::mint::jwks;
use super::reply::{PLAIN_JSON, Reply, Request};
use crate::sim::state::State;

/// Which discovery document a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Document {
    /// `/{tenant}/v2.0/.well-known/openid-configuration`.
    OpenIdV2,
    /// `/{tenant}/.well-known/openid-configuration`.
    OpenIdV1,
    /// `/common/discovery/instance`.
    Instance,
    /// `/{tenant}/discovery/v2.0/keys` (or `/discovery/keys`).
    Keys,
}

/// Tenants that name no directory and are served with a placeholder issuer.
const MULTI_TENANT: [&str; 3] = ["common", "organizations", "consumers"];

impl State {
    /// Answers a discovery request for `tenant`.
    pub(super) fn discovery(&mut self, doc: Document, tenant: &str, req: &Request<'_>) -> Reply {
        self.count(|s| s.discovery_requests += 1);
        let multi = MULTI_TENANT.iter().any(|t| t.eq_ignore_ascii_case(tenant));
        if doc != Document::Instance
            && !multi
            && match &self.cfg.tenant {
                Some(want) => !want.eq_ignore_ascii_case(tenant),
                None => self.serving.is_none(),
            }
        {
            return Reply::entra(
                400,
                "invalid_tenant",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            );
        }
        let origin = req.origin();
        let tid = if multi { "{tenantid}".to_string() } else { self.tenant_id_of(tenant) };
        let body = match doc {
            Document::OpenIdV2 => open_id(&origin, tenant, &tid, true),
            Document::OpenIdV1 => open_id(&origin, tenant, &tid, false),
            Document::Keys => match jwks(&format!("{origin}/{tid}/v2.0")) {
                Ok(v) => v,
                Err(e) => return Reply::error(500, "InternalServerError", e.to_string()),
            },
            Document::Instance => return instance(&origin, req),
        };
        Reply::json(200, body.to_string(), PLAIN_JSON)
    }
}

/// The OpenID configuration of `tenant` (v2 or v1 endpoints).
fn open_id(origin: &str, tenant: &str, tid: &str, v2: bool) -> Value {
    let base = format!("{origin}/{tenant}");
    let (oauth, issuer, keys) = if v2 {
        (
            format!("{base}/oauth2/v2.0"),
            format!("{origin}/{tid}/v2.0"),
            format!("{base}/discovery/v2.0/keys"),
        )
    } else {
        (format!("{base}/oauth2"), format!("{origin}/{tid}/"), format!("{base}/discovery/keys"))
    };
    let mut doc = json!({
        "token_endpoint": format!("{oauth}/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": keys,
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{origin}/oidc/userinfo"),
        "authorization_endpoint": format!("{oauth}/authorize"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{oauth}/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "tid", "ver", "oid"],
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    if v2 {
        doc["device_authorization_endpoint"] = Value::String(format!("{oauth}/devicecode"));
        doc["kerberos_endpoint"] = Value::String(format!("{base}/kerberos"));
    } else {
        doc["check_session_iframe"] = Value::String(format!("{oauth}/checksession"));
    }
    doc
}

/// MSAL's instance discovery for the authority named by the
/// `authorization_endpoint` parameter.
fn instance(origin: &str, req: &Request<'_>) -> Reply {
    let endpoint = req.query_param("authorization_endpoint").unwrap_or_default();
    let host = req.host;
    // MSAL names the authority by host name alone (no port): the instance
    // is ours when its host name is the one this request reached.
    let hostname = |h: &str| {
        h.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h.to_string(), |(name, _)| name.to_string())
    };
    let authority = endpoint.strip_prefix("https://").or(endpoint.strip_prefix("http://"));
    let tenant = authority.and_then(|rest| {
        let (instance, path) = rest.split_once('/')?;
        let tenant = path.split('/').next().filter(|t| !t.is_empty())?;
        hostname(instance).eq_ignore_ascii_case(&hostname(host)).then_some(tenant)
    });
    let Some(tenant) = tenant else {
        return Reply::entra(400, "invalid_instance", 50049, "Unknown or invalid instance.");
    };
    let body = json!({
        "tenant_discovery_endpoint": format!("{origin}/{tenant}/v2.0/.well-known/openid-configuration"),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    });
    Reply::json(200, body.to_string(), PLAIN_JSON)
}
