//! The login endpoint: `POST /{tenant}/oauth2/v2.0/token` (v2, `scope`)
//! and `/{tenant}/oauth2/token` (v1, `resource`), with the refusals Entra ID
//! gives for a wrong tenant, grant, scope, client or secret, and the optional
//! echo of the request that some identity proxies add to their errors.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::model::new_guid;
use crate::api::odata::decode_form;
use crate::api::time::format_utc;
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
    /// An error of the token endpoint as Entra ID writes it (reference:
    /// `mde-api-addendum.md` §4.3; fixtures `entra-token-error-*.json`):
    /// `error`, an `error_description` that starts `AADSTS<code>: ` and ends
    /// with its `Trace ID`, `Correlation ID` and `Timestamp` lines, and the
    /// same facts as fields (`error_codes`, `timestamp`, `trace_id`,
    /// `correlation_id`, `error_uri`). Clients are to branch on `error` only.
    fn entra(status: u16, error: &str, code: u32, message: &str) -> Reply {
        let (trace, correlation) = (new_guid(), new_guid());
        // `2026-12-01 21:33:07Z`: seconds, a space instead of the `T`.
        let now = format_utc(SystemTime::now());
        let timestamp = format!("{} {}Z", &now[..10], &now[11..19]);
        let description = format!(
            "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}"
        );
        let body = json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })
        .to_string();
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
    // Into the message's own line, before Entra's Trace ID / Correlation ID /
    // Timestamp lines, where a client shows it.
    let (message, ids) = described.split_once("\r\n").unwrap_or((&described, ""));
    let ids = if ids.is_empty() { String::new() } else { format!("\r\n{ids}") };
    v["error_description"] =
        Value::String(format!("{message} Request: {text} Fields: {}{ids}", Value::Object(fields)));
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
            Reply::entra(
                400,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{name}'."),
            )
        };
        if let Some(want) = &self.cfg.tenant
            && !want.eq_ignore_ascii_case(tenant)
        {
            return Reply::entra(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            );
        }
        let Some(grant) = field("grant_type") else { return must("grant_type") };
        if grant != "client_credentials" {
            return Reply::entra(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
            );
        }
        let Some(client_id) = field("client_id") else { return must("client_id") };
        let Some(secret) = field("client_secret") else {
            return Reply::entra(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
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
                return Reply::entra(
                    400,
                    "invalid_scope",
                    70011,
                    &format!(
                        "The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
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
                return Reply::entra(
                    400,
                    "invalid_resource",
                    500011,
                    &format!(
                        "The resource principal named {res} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                    ),
                );
            }
            Some(res.to_string())
        };
        if self.revoked.contains(&client_id.to_ascii_lowercase()) {
            // What Entra answers once the app's secret is deleted.
            return invalid_secret(client_id);
        }
        let id_ok = self.cfg.client_id.as_deref().is_none_or(|want| want == client_id);
        let secret_ok = self.cfg.client_secret.as_deref().is_none_or(|want| want == secret);
        if !id_ok {
            return Reply::entra(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            );
        }
        if !secret_ok {
            return invalid_secret(client_id);
        }
        if self.cfg.max_tokens.is_some_and(|max| self.stats.tokens_issued >= max) {
            return Reply::entra(
                401,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                ),
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
/// Entra's answer to a wrong (or deleted) client secret: 401 `invalid_client`,
/// AADSTS7000215 (fixture `entra-token-error-7000215-captured.json`).
fn invalid_secret(client_id: &str) -> Reply {
    Reply::entra(
        401,
        "invalid_client",
        7000215,
        &format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
        ),
    )
}
