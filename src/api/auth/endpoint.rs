//! The Entra ID token endpoint: its URL, the client-credentials form (with a
//! secret or a signed assertion), and reading its replies. Shared by the
//! secret, certificate and workload identity credentials.

use std::time::Duration;

use super::token::{Fetched, MAX_TOKEN_LIFETIME};
use reqwest::Url;
use reqwest::header::ACCEPT;

use super::super::model::TokenResponse;
use super::super::net::{transport_kind, transport_message};
use super::error::AuthError;
use super::secret::{Secret, error_chain, scrub};
use crate::text::excerpt;

/// Longest excerpt of a login reply kept in an error message.
const EXCERPT_CHARS: usize = 200;

/// `client_assertion_type` of a signed JWT standing in for a secret
/// (RFC 7523): a certificate's assertion or a federated token.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// One client-credentials request to `url`: `grant_type`, `client_id`,
/// then `proof` (the secret, or the assertion and its type), then `scope`.
/// `secrets` are scrubbed from every error; `check` says what to look at
/// when the endpoint answers `invalid_client`.
pub(crate) async fn request_token(
    http: &reqwest::Client,
    url: &Url,
    client_id: &str,
    proof: &[(&str, &str)],
    scope: &str,
    secrets: &[&str],
    check: &'static str,
) -> Result<Fetched, AuthError> {
    let mut form = vec![("grant_type", "client_credentials"), ("client_id", client_id)];
    form.extend_from_slice(proof);
    form.push(("scope", scope));
    let request = http.post(url.clone()).header(ACCEPT, "application/json").form(&form);
    let Answer { status, body, .. } = exchange(request, url.as_str(), secrets).await?;
    if (200..300).contains(&status) {
        let reply = parse_token_reply(status, &body)?;
        return Ok(Fetched {
            token: Secret::new(reply.access_token),
            lifetime: Duration::from_secs(reply.expires_in).min(MAX_TOKEN_LIFETIME),
        });
    }
    Err(parse_oauth_error(status, &body, secrets, check))
}

/// Sends one request to a login or identity endpoint and reads its whole
/// answer, whatever its status: the callers parse success and error bodies
/// each in their own shape. A transport failure names `shown` (the URL
/// without a query that may carry an identity's id) and is scrubbed of
/// `secrets`.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    shown: &str,
    secrets: &[&str],
) -> Result<Answer, AuthError> {
    let unreachable = |e: reqwest::Error, after_headers: bool| {
        let kind = transport_kind(&e, after_headers);
        AuthError::Unreachable {
            url: shown.to_string(),
            message: transport_message(&e, kind, scrub(&error_chain(&e), secrets)),
            kind,
        }
    };
    let response = request.send().await.map_err(|e| unreachable(e, false))?;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.map_err(|e| unreachable(e, true))?.to_vec();
    Ok(Answer { status, challenge, body })
}

/// A login or identity endpoint's whole answer.
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: u16,
    /// `WWW-Authenticate`, which Azure Arc's agent uses to name its key file.
    pub(crate) challenge: Option<String>,
    /// The body, read whole (login replies are small).
    pub(crate) body: Vec<u8>,
}

/// `{login_base}/{tenant}/oauth2/v2.0/token`, the tenant percent-encoded as
/// one path segment.
pub(crate) fn token_url(login_base: &str, tenant_id: &str) -> Result<Url, AuthError> {
    let invalid =
        |reason: String| AuthError::InvalidEndpoint { url: login_base.to_string(), reason };
    if tenant_id.trim().is_empty() {
        return Err(invalid("the tenant id is empty".to_string()));
    }
    let mut url = Url::parse(login_base.trim()).map_err(|e| invalid(e.to_string()))?;
    if url.cannot_be_a_base() {
        return Err(invalid("not a base URL".to_string()));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    url.set_path(&base_path);
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| invalid("not a base URL".to_string()))?
        .pop_if_empty()
        .extend([tenant_id.trim(), "oauth2", "v2.0", "token"]);
    Ok(url)
}

/// Reads a 2xx reply of the token endpoint. On failure, the message names
/// fields only: the body may hold a token.
pub(crate) fn parse_token_reply(status: u16, body: &[u8]) -> Result<TokenResponse, AuthError> {
    let malformed = |message: &str| AuthError::Malformed { status, message: message.to_string() };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| malformed(&format!("not JSON ({} bytes)", body.len())))?;
    let Some(obj) = value.as_object() else {
        return Err(malformed("not a JSON object"));
    };
    match obj.get("access_token") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => {}
        Some(serde_json::Value::String(_)) => return Err(malformed("access_token is empty")),
        Some(_) => return Err(malformed("access_token is not a string")),
        None => return Err(malformed("no access_token")),
    }
    match obj.get("expires_in") {
        None => return Err(malformed("no expires_in")),
        Some(serde_json::Value::Number(n)) if n.is_u64() => {}
        Some(serde_json::Value::String(s)) if s.trim().parse::<u64>().is_ok() => {}
        Some(_) => return Err(malformed("expires_in is not a whole number of seconds")),
    }
    if let Some(t) = obj.get("token_type")
        && !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(malformed("token_type is not Bearer"));
    }
    serde_json::from_value(value).map_err(|_| malformed("fields of unexpected types"))
}

/// Reads a non-2xx reply of the token endpoint: the OAuth2 error shape
/// `{"error","error_description"}` when present, else an excerpt.
pub(crate) fn parse_oauth_error(
    status: u16,
    body: &[u8],
    secrets: &[&str],
    check: &'static str,
) -> AuthError {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
        #[serde(default)]
        trace_id: Option<String>,
        #[serde(default)]
        correlation_id: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<OAuthError>(body) {
        let description = one_line_description(
            e.error_description.as_deref().unwrap_or("no description given"),
            e.trace_id.as_deref(),
            e.correlation_id.as_deref(),
        );
        let description = scrub(&description, secrets);
        let error = scrub(&e.error, secrets);
        if error == "invalid_client" {
            return AuthError::InvalidClient { description, check };
        }
        return AuthError::OAuth { status, error, description };
    }
    let text = String::from_utf8_lossy(body);
    let message = if text.trim().is_empty() {
        "empty body".to_string()
    } else {
        format!("not an OAuth2 error reply: {}", excerpt(&scrub(&text, secrets), EXCERPT_CHARS))
    };
    AuthError::Malformed { status, message }
}

/// Entra's `error_description` on one line: its first line (`AADSTS<n>:
/// <message>`, without the `Trace ID`, `Correlation ID` and `Timestamp`
/// lines it appends), then the two ids Microsoft support asks for, when the
/// reply has them.
fn one_line_description(
    description: &str,
    trace: Option<&str>,
    correlation: Option<&str>,
) -> String {
    let first = description.split(['\r', '\n']).next().unwrap_or("").trim();
    let ids: Vec<String> = [("trace id", trace), ("correlation id", correlation)]
        .into_iter()
        .filter_map(|(what, id)| {
            id.filter(|i| !i.trim().is_empty()).map(|i| format!("{what} {}", i.trim()))
        })
        .collect();
    if ids.is_empty() { first.to_string() } else { format!("{first} ({})", ids.join(", ")) }
}
