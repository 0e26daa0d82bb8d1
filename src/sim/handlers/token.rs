//! The login endpoint: `POST /{tenant}/oauth2/v2.0/token` (v2, `scope`)
//! and `/{tenant}/oauth2/token` (v1, `resource`), for a client secret (in
//! the body or a Basic header, RFC 6749 §2.3.1), a certificate assertion or
//! a federated token; with the refusals Entra ID gives for a wrong tenant,
//! grant, scope, client or credential, and the optional echo of the request
//! that some identity proxies add to their errors.
//!
//! Check order (Entra's own is not documented; this one answers each
//! mistake with the error that names it): tenant (90002) → grant (900144,
//! 70003) → a tenant-less authority (9001023) → client id (900144) →
//! resource or scope (900144, 70011, 1002012, 500011) → the app exists
//! (700016), and has not lost the tenant's consent (700016) → its credential (7000216, 7000215, the assertion codes) → the
//! secret's expiry (7000222, `max_tokens`).

use serde_json::{Value, json};
use tokio::time::Instant;

use super::assertion::JWT_BEARER;
use super::mint::{Proof, ScopeProblem, audience_of_resource, audience_of_scope};
use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::jwt::b64_std_decode;
use crate::api::odata::decode_form;
use crate::sim::state::State;

/// Tenants that name no directory: Entra refuses an app-only grant there.
const TENANTLESS: [&str; 3] = ["common", "organizations", "consumers"];

/// The body of a token request, decoded.
struct Form(Vec<(String, String)>);

impl Form {
    /// Decodes `application/x-www-form-urlencoded` text.
    fn parse(body: &[u8]) -> Form {
        let text = String::from_utf8_lossy(body);
        Form(
            text.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode_form(k), decode_form(v))
                })
                .collect(),
        )
    }

    /// A non-empty field.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// `client_id` and `client_secret` from an `Authorization: Basic` header
/// (each form-encoded before joining, RFC 6749 §2.3.1).
fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    let (scheme, value) = header?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(b64_std_decode(value.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((decode_form(id), decode_form(secret)))
}

/// The 900144 refusal of a request that lacks a parameter.
fn missing(name: &str) -> Reply {
    Reply::entra(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
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
    /// `POST /{tenant}/oauth2/v2.0/token` and `/{tenant}/oauth2/token`
    /// (references D7, P3; `mde-api-addendum.md` §4).
    pub(super) fn token(
        &mut self,
        tenant: &str,
        v2: bool,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        self.count(|s| s.token_requests += 1);
        let form = Form::parse(req.body);
        let tenantless = TENANTLESS.iter().any(|t| t.eq_ignore_ascii_case(tenant));
        let unknown = match &self.cfg.tenant {
            Some(want) => !want.eq_ignore_ascii_case(tenant),
            None => self.serving.is_none(),
        };
        if unknown && !tenantless {
            return Reply::entra(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            );
        }
        let Some(grant) = form.get("grant_type") else { return missing("grant_type") };
        if grant != "client_credentials" {
            return Reply::entra(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
            );
        }
        if tenantless {
            return Reply::entra(
                400,
                "invalid_request",
                9001023,
                "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
            );
        }
        let basic = basic_credentials(req.authorization);
        let Some(client_id) =
            form.get("client_id").map(str::to_string).or(basic.as_ref().map(|b| b.0.clone()))
        else {
            return missing("client_id");
        };
        let (audience, v1_resource) = if v2 {
            let Some(scope) = form.get("scope") else { return missing("scope") };
            match audience_of_scope(scope) {
                Ok(aud) => (aud, None),
                Err(ScopeProblem::NoDefault(aud)) => {
                    return Reply::entra(
                        400,
                        "invalid_scope",
                        1002012,
                        &format!(
                            "The provided value for scope {aud} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                        ),
                    );
                }
                Err(ScopeProblem::Invalid) => {
                    return Reply::entra(
                        400,
                        "invalid_scope",
                        70011,
                        &format!(
                            "The provided value for the input parameter 'scope' isn't valid. The scope {} isn't valid.",
                            scope.trim()
                        ),
                    );
                }
            }
        } else {
            let Some(res) = form.get("resource") else { return missing("resource") };
            match audience_of_resource(res) {
                Some(aud) => (aud, Some(res.to_string())),
                None => {
                    return Reply::entra(
                        400,
                        "invalid_resource",
                        500011,
                        &format!(
                            "The resource principal named {res} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                        ),
                    );
                }
            }
        };
        if self.cfg.client_id.as_deref().is_some_and(|want| want != client_id) {
            return app_not_found(&client_id, tenant);
        }
        // A tenant that withdrew its consent has no service principal of
        // the app left: Entra finds no such application there, whatever
        // the credential.
        if let Some(t) = self.serving
            && self.consent_withdrawn(t, &client_id)
        {
            return app_not_found(&client_id, tenant);
        }
        let proof = if let Some(assertion) = form.get("client_assertion") {
            if form.get("client_assertion_type") != Some(JWT_BEARER) {
                return missing("client_assertion_type");
            }
            let origin = req.origin();
            let v2_url = format!("{origin}/{tenant}/oauth2/v2.0/token");
            let v1_url = format!("{origin}/{tenant}/oauth2/token");
            if let Err(reply) = self.check_assertion(assertion, &client_id, &[&v2_url, &v1_url]) {
                return reply;
            }
            Proof::Assertion
        } else {
            let secret =
                form.get("client_secret").map(str::to_string).or(basic.map(|(_, secret)| secret));
            let Some(secret) = secret else {
                return Reply::entra(
                    401,
                    "invalid_client",
                    7000216,
                    "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
                );
            };
            if self.revoked.contains(&client_id.to_ascii_lowercase())
                || self.cfg.client_secret.as_deref().is_some_and(|want| want != secret)
            {
                // A revoked client's secret is gone: Entra answers as for a wrong one.
                return invalid_secret(&client_id);
            }
            Proof::Secret
        };
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
        let minted = match self.mint(req, &client_id, tenant, &audience, proof, now) {
            Ok(m) => m,
            Err(e) => return Reply::error(500, "InternalServerError", e.to_string()),
        };
        let body = match v1_resource {
            // v2 (E-CC): numbers as JSON numbers; `ext_expires_in` as the
            // service's own samples send it.
            None => json!({
                "token_type": "Bearer",
                "expires_in": minted.lifetime,
                "ext_expires_in": minted.lifetime,
                "access_token": minted.token,
            }),
            // v1 (AZ-V1): numbers as strings, `resource` as sent.
            Some(resource) => json!({
                "token_type": "Bearer",
                "expires_in": minted.lifetime.to_string(),
                "ext_expires_in": minted.lifetime.to_string(),
                "expires_on": minted.expires_on.to_string(),
                "not_before": minted.not_before.to_string(),
                "resource": resource,
                "access_token": minted.token,
            }),
        };
        Reply::json(200, body.to_string(), PLAIN_JSON)
    }
}

/// Entra's answer for an app the tenant has no service principal of (never
/// consented, or consent withdrawn): 400 `unauthorized_client`, AADSTS700016
/// (fixture `entra-token-error-700016-captured.json`).
fn app_not_found(client_id: &str, tenant: &str) -> Reply {
    Reply::entra(
        400,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
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
