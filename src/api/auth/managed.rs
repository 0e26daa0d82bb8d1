//! Managed identity: the Azure host (VM, scale set, App Service, Functions,
//! Container Apps, Arc-less pods with the IMDS emulation) hands out tokens
//! for its system-assigned identity or a user-assigned one, over a local
//! endpoint that needs no secret from us.
//!
//! Three shapes of that endpoint exist:
//!
//! - IMDS, `GET http://169.254.169.254/metadata/identity/oauth2/token` with
//!   `Metadata: true` (api-version 2018-02-01). Link-local plain http by
//!   design: the one exception to the client's https-or-loopback rule, for
//!   exactly that address. Its base is replaced by
//!   `AZURE_POD_IDENTITY_AUTHORITY_HOST` or `--imds-url`.
//! - App Service and Functions: `IDENTITY_ENDPOINT` with the header
//!   `X-IDENTITY-HEADER: $IDENTITY_HEADER` (api-version 2019-08-01).
//! - The older App Service shape: `MSI_ENDPOINT` with the header
//!   `secret: $MSI_SECRET` (api-version 2017-09-01, `clientid`).
//!
//! The IMDS documentation asks for retries of 404, 410, 429 and 5xx: those
//! answers are transient [`AuthError::Identity`] errors, retried by the call
//! engine with its stoppable back-off like any transient failure.

use std::net::IpAddr;

use reqwest::Url;
use reqwest::header::ACCEPT;

use super::super::net::{transport_kind, transport_message};
use super::error::AuthError;
use super::secret::{Secret, error_chain, scrub};
use super::token::{FetchContext, Fetched, MAX_TOKEN_LIFETIME, lifetime_of, lifetime_until};
use crate::text::excerpt;

/// Where IMDS answers on every Azure VM.
pub const IMDS_DEFAULT_BASE: &str = "http://169.254.169.254";

/// The only address plain http is accepted for besides loopback.
const IMDS_ADDRESS: [u8; 4] = [169, 254, 169, 254];

/// Longest excerpt of an identity endpoint's reply kept in an error.
const EXCERPT_CHARS: usize = 200;

/// Which local endpoint hands out the tokens.
#[derive(Debug, Clone)]
pub enum IdentityEndpoint {
    /// The Instance Metadata Service, at this base URL.
    Imds {
        /// `http://169.254.169.254`, or its override.
        base: String,
    },
    /// App Service / Functions (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
    AppService {
        /// The token URL itself.
        endpoint: String,
        /// `X-IDENTITY-HEADER`: guards against request forgery; rotated by the host.
        header: Secret,
    },
    /// The 2017-09-01 App Service shape (`MSI_ENDPOINT`, `MSI_SECRET`).
    Msi2017 {
        /// The token URL itself.
        endpoint: String,
        /// The `secret` header.
        secret: Secret,
    },
}

/// A managed identity: where to ask, and which identity.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    /// The endpoint of this host.
    pub endpoint: IdentityEndpoint,
    /// A user-assigned identity's client id; `None` for the system-assigned one.
    pub client_id: Option<String>,
}

impl ManagedIdentity {
    /// The endpoint's shape, for `auth check` and logs.
    pub fn shape(&self) -> &'static str {
        match self.endpoint {
            IdentityEndpoint::Imds { .. } => "IMDS",
            IdentityEndpoint::AppService { .. } => "App Service",
            IdentityEndpoint::Msi2017 { .. } => "App Service (2017-09-01)",
        }
    }

    /// Applies the URL rules: https anywhere, plain http to loopback, and to
    /// 169.254.169.254 for IMDS only; no credentials in the URL.
    pub fn check(&self) -> Result<(), String> {
        let (what, raw, imds) = match &self.endpoint {
            IdentityEndpoint::Imds { base } => ("IMDS", base.as_str(), true),
            IdentityEndpoint::AppService { endpoint, header } => {
                if header.is_empty() {
                    return Err("IDENTITY_HEADER is empty".to_string());
                }
                ("IDENTITY_ENDPOINT", endpoint.as_str(), false)
            }
            IdentityEndpoint::Msi2017 { endpoint, secret } => {
                if secret.is_empty() {
                    return Err("MSI_SECRET is empty".to_string());
                }
                ("MSI_ENDPOINT", endpoint.as_str(), false)
            }
        };
        let url = Url::parse(raw.trim()).map_err(|e| format!("{what} URL {raw:?}: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("the {what} URL must not hold credentials"));
        }
        let Some(host) = url.host_str() else {
            return Err(format!("the {what} URL {raw:?} has no host"));
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::from([127, 0, 0, 1]))
        } else {
            host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok()
        };
        match url.scheme() {
            "https" => Ok(()),
            "http" if ip.is_some_and(|ip| ip.is_loopback()) => Ok(()),
            "http" if imds && ip == Some(IpAddr::from(IMDS_ADDRESS)) => Ok(()),
            _ => Err(format!(
                "the {what} URL {raw:?} must be https, or http to a loopback address{}",
                if imds { " or 169.254.169.254" } else { "" }
            )),
        }
    }

    /// The token request URL for `resource`.
    pub(crate) fn url(&self, resource: &str) -> Result<Url, AuthError> {
        let invalid =
            |url: &str, reason: String| AuthError::InvalidEndpoint { url: url.to_string(), reason };
        let id = self.client_id.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let (raw, mut pairs) = match &self.endpoint {
            IdentityEndpoint::Imds { base } => {
                let base = base.trim().trim_end_matches('/');
                (
                    format!("{base}/metadata/identity/oauth2/token"),
                    vec![("api-version", "2018-02-01")],
                )
            }
            IdentityEndpoint::AppService { endpoint, .. } => {
                (endpoint.trim().to_string(), vec![("api-version", "2019-08-01")])
            }
            IdentityEndpoint::Msi2017 { endpoint, .. } => {
                (endpoint.trim().to_string(), vec![("api-version", "2017-09-01")])
            }
        };
        pairs.push(("resource", resource));
        if let Some(id) = id {
            let key = if matches!(self.endpoint, IdentityEndpoint::Msi2017 { .. }) {
                "clientid"
            } else {
                "client_id"
            };
            pairs.push((key, id));
        }
        let mut url = Url::parse(&raw).map_err(|e| invalid(&raw, e.to_string()))?;
        url.query_pairs_mut().extend_pairs(pairs);
        Ok(url)
    }

    /// One request to the identity endpoint.
    pub(crate) async fn fetch(&self, ctx: FetchContext<'_>) -> Result<Fetched, AuthError> {
        let url = self.url(ctx.resource())?;
        let shown = {
            let mut u = url.clone();
            u.set_query(None);
            u.to_string()
        };
        let (name, value) = match &self.endpoint {
            IdentityEndpoint::Imds { .. } => ("Metadata", "true"),
            IdentityEndpoint::AppService { header, .. } => ("X-IDENTITY-HEADER", header.expose()),
            IdentityEndpoint::Msi2017 { secret, .. } => ("secret", secret.expose()),
        };
        let secrets = [value];
        let unreachable = |e: reqwest::Error, after_headers: bool| {
            let kind = transport_kind(&e, after_headers);
            AuthError::Unreachable {
                url: shown.clone(),
                message: transport_message(&e, kind, scrub(&error_chain(&e), &secrets)),
                kind,
            }
        };
        let response = ctx
            .http
            .get(url.clone())
            .header(name, value)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unreachable(e, false))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| unreachable(e, true))?;
        if (200..300).contains(&status) {
            return parse_identity_reply(status, &body);
        }
        Err(parse_identity_error(&shown, status, &body, &secrets))
    }
}

/// A number or a string of digits.
fn whole(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a token reply: `access_token`, and its expiry from `expires_on`
/// (Unix seconds, a string on IMDS and App Service), `expires_in`, or the
/// token's own `exp` (the 2017 shape writes `expires_on` as a date). The
/// message names fields only: the body holds a token.
pub(crate) fn parse_identity_reply(status: u16, body: &[u8]) -> Result<Fetched, AuthError> {
    let malformed = |message: &str| AuthError::Malformed { status, message: message.to_string() };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| malformed(&format!("not JSON ({} bytes)", body.len())))?;
    let token = match value.get("access_token") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(malformed("access_token is empty or not a string")),
        None => return Err(malformed("no access_token")),
    };
    let lifetime = if let Some(on) = value.get("expires_on").and_then(whole) {
        lifetime_until(on)
    } else if let Some(secs) = value.get("expires_in").and_then(whole) {
        std::time::Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME)
    } else {
        lifetime_of(&token)
    };
    Ok(Fetched { token: Secret::new(token), lifetime })
}

/// Reads an error reply: `{"error","error_description"}` when present,
/// else a bounded excerpt; `secrets` scrubbed from both.
fn parse_identity_error(url: &str, status: u16, body: &[u8], secrets: &[&str]) -> AuthError {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| value.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str());
    let error = field("error").map_or_else(|| format!("http_{status}"), |e| scrub(e, secrets));
    let description = match field("error_description").or_else(|| field("message")) {
        Some(d) => scrub(d.split(['\r', '\n']).next().unwrap_or(""), secrets),
        None => {
            let text = String::from_utf8_lossy(body);
            if text.trim().is_empty() {
                "empty body".to_string()
            } else {
                excerpt(&scrub(&text, secrets), EXCERPT_CHARS)
            }
        }
    };
    AuthError::Identity { url: url.to_string(), status, error, description }
}
