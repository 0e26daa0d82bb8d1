//! The login endpoint: `POST /{tenant}/oauth2/v2.0/token` (v2, `scope`)
//! and `/{tenant}/oauth2/token` (v1, `resource`), with the refusals Entra ID
//! gives for a wrong tenant, grant, scope, client or secret, and the optional
//! echo of the request that some identity proxies add to their errors.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::odata::decode_form;
use crate::sim::state::{State, TokenInfo};

/// Scopes the v2 token endpoint accepts (reference P3).
const SCOPES: [&str; 2] = [
    "https://api.securitycenter.microsoft.com/.default",
    "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
];
/// Resource the v1 token endpoint accepts (reference P3).
const RESOURCE: &str = "https://api.securitycenter.microsoft.com";
/// The newer audience, accepted only when configured.
const SECURITY_AUDIENCE: &str = "https://api.security.microsoft.com";

impl Reply {
    /// An OAuth2 error of the token endpoint: `{"error","error_description"}`.
    fn oauth(status: u16, error: &str, description: &str) -> Reply {
        let body = json!({ "error": error, "error_description": description }).to_string();
        Reply::json(status, body, PLAIN_JSON)
    }
}

/// An OAuth2 error reply with the request quoted back in its
/// `error_description`: the body as sent (form-encoded) and its fields
/// decoded, as JSON (so a secret appears escaped both ways).
pub(super) fn echo_request(mut reply: Reply, body: &[u8]) -> Reply {
    let Ok(mut v) = serde_json::from_str::<Value>(&reply.body) else {
        return reply;
    };
    let text = String::from_utf8_lossy(body);
    let fields: serde_json::Map<String, Value> = text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_form(k), Value::String(decode_form(v)))
        })
        .collect();
    let described = v.get("error_description").and_then(Value::as_str).unwrap_or("").to_string();
    v["error_description"] =
        Value::String(format!("{described} Request: {text} Fields: {}", Value::Object(fields)));
    reply.body = v.to_string();
    reply
}

impl State {
    /// `POST /{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token` (references D7, P3).
    pub(super) fn token(
        &mut self,
        tenant: &str,
        v2: bool,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        self.stats.token_requests += 1;
        let text = String::from_utf8_lossy(req.body);
        let mut form: Vec<(String, String)> = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            form.push((decode_form(k), decode_form(v)));
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
}
