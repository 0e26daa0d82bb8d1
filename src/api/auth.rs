//! Credentials and bearer tokens: the secret wrapper that never prints, the
//! Entra ID client-credentials flow, and a token cache shared by every task
//! of a run.
//!
//! A run of thousands of devices lasts hours while a token lives about one,
//! so the cache refreshes ahead of expiry: once less than
//! `min(300 s, lifetime / 4)` remains, the next caller fetches a new token
//! while the others keep using the old one, which is still valid. Concurrent
//! callers that find no usable token wait for one shared fetch instead of
//! each asking the login endpoint. After the API answers 401, the client
//! invalidates the token it used, and the next caller fetches a fresh one.
//!
//! No message built here contains the client secret or a token: replies from
//! the login endpoint are scrubbed of both before they reach an error, and a
//! success reply that cannot be read is described by field names only.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::ACCEPT;
use tokio::time::Instant;

use super::model::TokenResponse;
use super::net::{TransportKind, transport_kind, transport_message};
use crate::text::excerpt;

/// The longest a token is refreshed ahead of its expiry.
pub(crate) const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The longest lifetime a token is trusted for, whatever its `expires_in`
/// says: Entra ID tokens live 60 to 90 minutes, at most a day. The value
/// comes from the server, so it is capped rather than added to the clock
/// as is (2^64 - 1 seconds would overflow it); a token that dies earlier
/// than announced is replaced after its first 401.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// After a failed refresh, while the old token is still valid, how long to
/// keep using it before trying the login endpoint again.
const REFRESH_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// Longest excerpt of a login reply kept in an error message.
const EXCERPT_CHARS: usize = 200;

/// A value that must never be printed: a client secret or a bearer token.
///
/// `Debug` and `Display` print `[redacted]`; [`Secret::expose`] hands out the
/// text only where it must go on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text, for the one place it belongs: a request header or form.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (a blank environment variable).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

/// How the tool proves who it is to the API.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An app registration's id and secret (OAuth2 client credentials grant),
    /// from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`.
    ClientSecret {
        /// Directory (tenant) id or a verified domain; part of the token URL.
        tenant_id: String,
        /// Application (client) id of the app registration.
        client_id: String,
        /// The app's client secret value.
        client_secret: Secret,
    },
    /// A ready bearer token (`MDE_TOKEN`): used as is, never refreshed.
    Bearer(Secret),
}

impl Credentials {
    /// The tenant the credentials act in (empty for a ready token: only
    /// its issuer knows).
    pub fn tenant(&self) -> &str {
        match self {
            Credentials::ClientSecret { tenant_id, .. } => tenant_id,
            Credentials::Bearer(_) => "",
        }
    }
}

/// Why no token could be had.
///
/// Messages never contain the client secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The login endpoint could not be reached, or its reply could not be read
    /// (DNS, connection, TLS, timeout).
    #[error("cannot reach the token endpoint {url}: {message}")]
    Unreachable {
        /// The token endpoint (it holds the tenant, never the secret).
        url: String,
        /// What went wrong on the way.
        message: String,
        /// Which network failure: TLS and DNS failures are not transient.
        kind: TransportKind,
    },
    /// The login endpoint refused the client id or secret (`invalid_client`).
    #[error(
        "the token endpoint refused the client id or secret (invalid_client): {description}; check AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the secret's value, not its id)"
    )]
    InvalidClient {
        /// The endpoint's `error_description`.
        description: String,
    },
    /// Any other OAuth2 error reply (`invalid_scope`, `unauthorized_client`,
    /// an unknown tenant, ...).
    #[error("the token endpoint answered HTTP {status} {error}: {description}")]
    OAuth {
        /// HTTP status of the reply.
        status: u16,
        /// The reply's `error` code.
        error: String,
        /// The reply's `error_description`.
        description: String,
    },
    /// The login endpoint answered something that is neither a token nor an
    /// OAuth2 error.
    #[error("the token endpoint answered HTTP {status} with an unreadable reply: {message}")]
    Malformed {
        /// HTTP status of the reply.
        status: u16,
        /// What is wrong with it (field names only for a 2xx reply).
        message: String,
    },
    /// The API rejected the static bearer token (`MDE_TOKEN`) with 401; it
    /// cannot be refreshed.
    #[error(
        "the API rejected the bearer token given in MDE_TOKEN (HTTP 401: missing permission, wrong tenant or expired); supply a new token or use client credentials"
    )]
    BearerRejected,
    /// The token endpoint URL cannot be built from the login base.
    #[error("cannot build the token endpoint from login URL {url:?}: {reason}")]
    InvalidEndpoint {
        /// The login base as configured.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
}

impl AuthError {
    /// Stable short code for results files and logs: the OAuth2 `error` code
    /// when the login endpoint gave one, else our own.
    pub fn code(&self) -> &str {
        match self {
            AuthError::Unreachable { .. } => "TokenEndpointUnreachable",
            AuthError::InvalidClient { .. } => "invalid_client",
            AuthError::OAuth { error, .. } => error,
            AuthError::Malformed { .. } => "TokenReplyMalformed",
            AuthError::BearerRejected => "BearerRejected",
            AuthError::InvalidEndpoint { .. } => "InvalidLoginUrl",
        }
    }

    /// True when no token will come of trying again: every failure that is
    /// not transient (the secret or id refused, an unknown tenant or scope, a
    /// rejected static token), and a TLS or DNS failure reaching the login
    /// endpoint. Every call of a run shares the token, so all of them would
    /// fail alike.
    pub fn is_fatal_for_run(&self) -> bool {
        !self.is_transient()
    }

    /// True when trying again later may succeed: the endpoint was unreachable,
    /// throttled (429) or failing (5xx, `temporarily_unavailable`).
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Unreachable { kind, .. } => kind.is_transient(),
            AuthError::OAuth { status, error, .. } => {
                *status == 429 || *status >= 500 || error == "temporarily_unavailable"
            }
            AuthError::Malformed { status, .. } => *status == 429 || *status >= 500,
            AuthError::InvalidClient { .. }
            | AuthError::BearerRejected
            | AuthError::InvalidEndpoint { .. } => false,
        }
    }
}

/// A token in the cache, with the two moments that matter.
struct Cached {
    /// The bearer token.
    token: Secret,
    /// From here on the next caller fetches a replacement.
    refresh_at: Instant,
    /// From here on the token is not presented at all.
    expires_at: Instant,
}

/// The cache's state, behind a short-lived std mutex (never held across an
/// await, so [`TokenSource::invalidate`] can stay synchronous).
#[derive(Default)]
struct State {
    /// The current token, if any.
    cached: Option<Cached>,
    /// Fetch attempts so far; lets waiters tell that a fetch happened while
    /// they queued.
    attempts: u64,
    /// Outcome of the last attempt when it failed, shared with the callers
    /// that queued behind it.
    last_error: Option<AuthError>,
    /// No refresh attempt before this moment (set after a failed refresh
    /// while the old token is still valid).
    refresh_paused_until: Option<Instant>,
    /// The API rejected the static bearer token.
    bearer_rejected: bool,
}

/// What the cache holds for a given moment.
enum Lookup {
    /// A token outside its refresh margin.
    Fresh(Secret),
    /// A token inside its refresh margin but not expired.
    Usable(Secret),
    /// Nothing that can be presented.
    Missing,
}

impl State {
    fn lookup(&self, now: Instant) -> Lookup {
        match &self.cached {
            Some(c) if now < c.refresh_at => Lookup::Fresh(c.token.clone()),
            Some(c) if now < c.expires_at => Lookup::Usable(c.token.clone()),
            _ => Lookup::Missing,
        }
    }
}

/// How long before expiry a token of this lifetime is refreshed:
/// `min(300 s, lifetime / 4)`.
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    MAX_REFRESH_MARGIN.min(lifetime / 4)
}

/// The bearer token of a run: fetched once, shared by every task, refreshed
/// before it expires.
pub struct TokenSource {
    /// HTTP client for the login endpoint.
    http: reqwest::Client,
    /// `{login}/{tenant}/oauth2/v2.0/token`, or why it could not be built.
    token_url: Result<Url, AuthError>,
    /// Scope requested for the token.
    scope: String,
    /// The credentials to trade for tokens.
    credentials: Credentials,
    /// The cached token and fetch bookkeeping.
    state: Mutex<State>,
    /// Held for the duration of a fetch, so concurrent callers share one.
    gate: tokio::sync::Mutex<()>,
    /// Requests sent to the token endpoint.
    fetches: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url.as_ref().map(Url::as_str))
            .field("scope", &self.scope)
            .field("credentials", &self.credentials)
            .field("fetches", &self.token_fetches())
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `credentials`. `login_base` is the Entra ID host
    /// (`https://login.microsoftonline.com`, or a simulator's address); it is
    /// not checked for safety here: [`crate::api::client::Client::new`] does
    /// that for both of its URLs.
    pub fn new(
        http: reqwest::Client,
        login_base: &str,
        scope: &str,
        credentials: Credentials,
    ) -> TokenSource {
        let token_url = match &credentials {
            Credentials::ClientSecret { tenant_id, .. } => token_url(login_base, tenant_id),
            // Never used: a static bearer is not fetched.
            Credentials::Bearer(_) => Err(AuthError::InvalidEndpoint {
                url: login_base.to_string(),
                reason: "a static bearer token needs no token endpoint".to_string(),
            }),
        };
        TokenSource {
            http,
            token_url,
            scope: scope.to_string(),
            credentials,
            state: Mutex::new(State::default()),
            gate: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// The token endpoint, when the credentials use one.
    pub fn token_url(&self) -> Option<&Url> {
        self.token_url.as_ref().ok()
    }

    /// A token to present now.
    ///
    /// Cached; refreshed once less than `min(300 s, lifetime / 4)` of its
    /// lifetime remains. Callers arriving while a refresh is under way keep
    /// the old, still valid token; callers that find no usable token wait for
    /// one shared fetch, and share its error too if it fails.
    pub async fn bearer(&self) -> Result<Secret, AuthError> {
        if let Credentials::Bearer(token) = &self.credentials {
            if self.state().bearer_rejected {
                return Err(AuthError::BearerRejected);
            }
            return Ok(token.clone());
        }

        // Decide under the state lock, act after releasing it.
        let seen = {
            let st = self.state();
            let now = Instant::now();
            match st.lookup(now) {
                Lookup::Fresh(token) => return Ok(token),
                Lookup::Usable(token) if st.refresh_paused_until.is_some_and(|t| now < t) => {
                    return Ok(token);
                }
                Lookup::Usable(token) => Err(token),
                Lookup::Missing => Ok(st.attempts),
            }
        };
        let seen = match seen {
            Ok(attempts) => attempts,
            Err(old) => {
                // Due for refresh but still valid: one caller refreshes, the
                // others go on with the old token instead of waiting.
                let Ok(_guard) = self.gate.try_lock() else {
                    return Ok(old);
                };
                if let Lookup::Fresh(token) = self.state().lookup(Instant::now()) {
                    // Someone refreshed between our look and the lock.
                    return Ok(token);
                }
                return self.fetch_and_store().await;
            }
        };

        let _guard = self.gate.lock().await;
        {
            let st = self.state();
            match st.lookup(Instant::now()) {
                Lookup::Fresh(token) | Lookup::Usable(token) => return Ok(token),
                Lookup::Missing => {
                    if st.attempts != seen
                        && let Some(err) = &st.last_error
                    {
                        return Err(err.clone());
                    }
                }
            }
        }
        self.fetch_and_store().await
    }

    /// Forgets `token` after the API answered 401 to it, so the next
    /// [`TokenSource::bearer`] fetches a fresh one. Does nothing when the
    /// cache already holds another token (a concurrent caller got there
    /// first), so many tasks hitting the same 401 cause one fetch.
    ///
    /// For a static bearer, marks it rejected: later calls fail with
    /// [`AuthError::BearerRejected`].
    pub(crate) fn invalidate(&self, token: &Secret) {
        let mut st = self.state();
        match &self.credentials {
            Credentials::Bearer(own) => {
                if own == token {
                    st.bearer_rejected = true;
                }
            }
            Credentials::ClientSecret { .. } => {
                if st.cached.as_ref().is_some_and(|c| &c.token == token) {
                    st.cached = None;
                    st.refresh_paused_until = None;
                    tracing::debug!(
                        "bearer token invalidated after a 401; the next call fetches a new one"
                    );
                }
            }
        }
    }

    /// Requests sent to the token endpoint so far.
    pub(crate) fn token_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// True when the credentials are a static bearer token.
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.credentials, Credentials::Bearer(_))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a handful of plain assignments, consistent even if a
        // holder panicked, so a poisoned lock is taken over as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches a token and caches it. Must be called with `gate` held.
    async fn fetch_and_store(&self) -> Result<Secret, AuthError> {
        let started = Instant::now();
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch().await;
        let now = Instant::now();
        let mut st = self.state();
        st.attempts += 1;
        match result {
            Ok(reply) => {
                let lifetime = Duration::from_secs(reply.expires_in).min(MAX_TOKEN_LIFETIME);
                let token = Secret::new(reply.access_token);
                // Lifetime counts from the moment the request left, not from
                // the answer: errs on the early side.
                st.cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: started + lifetime - refresh_margin(lifetime),
                    expires_at: started + lifetime,
                });
                st.last_error = None;
                st.refresh_paused_until = None;
                tracing::debug!(
                    expires_in_s = reply.expires_in,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "bearer token fetched"
                );
                Ok(token)
            }
            Err(err) => {
                st.last_error = Some(err.clone());
                if let Lookup::Usable(old) | Lookup::Fresh(old) = st.lookup(now) {
                    st.refresh_paused_until = Some(now + REFRESH_RETRY_PAUSE);
                    tracing::warn!(
                        error.code = err.code(),
                        "token refresh failed ({err}); the current token is still valid and stays in use"
                    );
                    Ok(old)
                } else {
                    tracing::debug!(error.code = err.code(), "token fetch failed: {err}");
                    Err(err)
                }
            }
        }
    }

    /// One request to the token endpoint.
    async fn fetch(&self) -> Result<TokenResponse, AuthError> {
        let url = self.token_url.clone()?;
        let Credentials::ClientSecret { client_id, client_secret, .. } = &self.credentials else {
            // Only reached through `bearer()`, which answers static tokens itself.
            return Err(AuthError::InvalidEndpoint {
                url: url.to_string(),
                reason: "a static bearer token needs no token endpoint".to_string(),
            });
        };
        let secrets = [client_secret.expose()];
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let unreachable = |e: reqwest::Error, after_headers: bool| {
            let kind = transport_kind(&e, after_headers);
            AuthError::Unreachable {
                url: url.to_string(),
                message: transport_message(&e, kind, scrub(&error_chain(&e), &secrets)),
                kind,
            }
        };
        let response = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(e, false))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| unreachable(e, true))?;

        if (200..300).contains(&status) {
            return parse_token_reply(status, &body);
        }
        Err(parse_oauth_error(status, &body, &secrets))
    }
}

/// `{login_base}/{tenant}/oauth2/v2.0/token`, the tenant percent-encoded as
/// one path segment.
fn token_url(login_base: &str, tenant_id: &str) -> Result<Url, AuthError> {
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
fn parse_token_reply(status: u16, body: &[u8]) -> Result<TokenResponse, AuthError> {
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
fn parse_oauth_error(status: u16, body: &[u8], secrets: &[&str]) -> AuthError {
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
            return AuthError::InvalidClient { description };
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

/// Replaces each non-empty secret in `text` with `[redacted]`, in every
/// encoding it travels in, since a server echoing a request quotes it as
/// sent, not as we hold it:
///
/// - raw, and URL or form encoded: `%7E` or `%7e` for `~`, `+` or `%20` for
///   a space, in any mix of escaped and literal characters;
/// - JSON-escaped: `\"`, `\\`, `\/`, `\u0022` and the other escapes;
/// - base64, standard and URL-safe, at any offset (as inside
///   `Basic base64(client_id:secret)`): the whole base64 run around it goes.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let bytes = text.as_bytes();
    let mut redact: Vec<(usize, usize)> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        find_all(bytes, secret.as_bytes(), false, &mut redact);
        for core in base64_cores(secret.as_bytes()) {
            find_all(bytes, &core, true, &mut redact);
        }
    }
    if redact.is_empty() {
        return text.to_string();
    }
    redact.sort_unstable();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for (start, end) in redact {
        if end <= at {
            continue;
        }
        if start >= at {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(b"[redacted]");
        }
        at = end;
    }
    out.extend_from_slice(&bytes[at..]);
    // Matches begin and end on character boundaries (a secret is whole
    // characters, escapes are ASCII), so this is UTF-8; lossy just in case.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Adds to `found` every span of `text` that spells `needle` in any of the
/// encodings [`scrub`] knows; `base64` also widens each span to the whole
/// run of base64 characters around it.
fn find_all(text: &[u8], needle: &[u8], base64: bool, found: &mut Vec<(usize, usize)>) {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    let mut i = 0;
    while i < text.len() {
        match spelled_at(text, i, needle) {
            Some(end) => {
                let (mut start, mut end) = (i, end);
                if base64 {
                    while start > 0 && is_b64(text[start - 1]) {
                        start -= 1;
                    }
                    while end < text.len() && (is_b64(text[end]) || text[end] == b'=') {
                        end += 1;
                    }
                }
                found.push((start, end));
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
}

/// Where `needle`, spelt from `text[at..]` one byte at a time literally or
/// escaped (URL, form or JSON), ends.
fn spelled_at(text: &[u8], at: usize, needle: &[u8]) -> Option<usize> {
    let Some((&want, rest)) = needle.split_first() else {
        return Some(at);
    };
    let hex = |from: usize, len: usize| -> Option<u32> {
        let digits = text.get(from..from + len)?;
        let digits = std::str::from_utf8(digits).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    };
    let first = *text.get(at)?;
    // Every way this byte may be spelt here, as the length it takes.
    let mut ways: [Option<usize>; 3] = [None; 3];
    if first == want {
        ways[0] = Some(1);
    }
    match first {
        b'+' if want == b' ' => ways[1] = Some(1),
        b'%' if hex(at + 1, 2) == Some(u32::from(want)) => ways[1] = Some(3),
        b'\\' => {
            let escaped = match text.get(at + 1) {
                Some(b'u') if want.is_ascii() && hex(at + 2, 4) == Some(u32::from(want)) => Some(6),
                Some(b'n') if want == b'\n' => Some(2),
                Some(b't') if want == b'\t' => Some(2),
                Some(b'r') if want == b'\r' => Some(2),
                Some(b'b') if want == 0x08 => Some(2),
                Some(b'f') if want == 0x0c => Some(2),
                Some(&c) if c == want && matches!(c, b'"' | b'\\' | b'/') => Some(2),
                _ => None,
            };
            ways[2] = escaped;
        }
        _ => {}
    }
    ways.into_iter().flatten().find_map(|len| spelled_at(text, at + len, rest))
}

/// The parts of the base64 encodings (standard and URL-safe) of `secret`
/// that do not depend on what surrounds it: for each of the three offsets
/// it can start at inside a longer encoded text, the characters made of
/// the secret's bits alone. Shorter than four characters, a part would
/// match ordinary words, so none is made for tiny secrets.
fn base64_cores(secret: &[u8]) -> Vec<Vec<u8>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut cores = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        // Character i holds bits 6i..6i+6; keep those inside the secret's
        // bits 8 * offset .. 8 * (offset + len).
        let first = (8 * offset).div_ceil(6);
        let last = 8 * (offset + secret.len()) / 6;
        if last < first + 4 {
            continue;
        }
        let core: Vec<u8> = (first..last)
            .map(|i| {
                let bit = 6 * i;
                let (byte, shift) = (bit / 8, bit % 8);
                let hi = u16::from(padded[byte]) << 8;
                let lo = u16::from(padded.get(byte + 1).copied().unwrap_or(0));
                STD[usize::from(((hi | lo) >> (10 - shift)) & 0x3f)]
            })
            .collect();
        let url_safe: Vec<u8> = core
            .iter()
            .map(|&c| match c {
                b'+' => b'-',
                b'/' => b'_',
                c => c,
            })
            .collect();
        if url_safe != core {
            cores.push(url_safe);
        }
        cores.push(core);
    }
    cores
}

/// A reqwest error and its sources, joined with `: ` (reqwest's own
/// `Display` stops at the outermost layer, which rarely says what failed).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use axum::Router;
    use axum::extract::{Form, Path, State as AxState};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;

    const SECRET: &str = "s3cr3t-Value~with.special";

    /// Tenant and form fields of one token request.
    type TokenRequest = (String, Vec<(String, String)>);

    /// A token endpoint: counts requests, checks the form, answers with a
    /// numbered token after `delay`.
    #[derive(Clone)]
    struct Login {
        count: Arc<AtomicUsize>,
        delay: Duration,
        expires_in: serde_json::Value,
        forms: Arc<Mutex<Vec<TokenRequest>>>,
    }

    async fn token(
        AxState(login): AxState<Login>,
        Path(tenant): Path<String>,
        Form(form): Form<Vec<(String, String)>>,
    ) -> Response {
        let n = login.count.fetch_add(1, Ordering::SeqCst) + 1;
        login.forms.lock().unwrap().push((tenant, form.clone()));
        tokio::time::sleep(login.delay).await;
        let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        if get("client_secret") != Some(SECRET) {
            let body = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided: {}", get("client_secret").unwrap_or("")),
            });
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        if get("grant_type") != Some("client_credentials") {
            return (StatusCode::BAD_REQUEST, "bad grant").into_response();
        }
        let body = serde_json::json!({
            "token_type": "Bearer",
            "expires_in": login.expires_in,
            "ext_expires_in": 0,
            "access_token": format!("token-{n}"),
        });
        axum::Json(body).into_response()
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    async fn login_server(delay: Duration, expires_in: serde_json::Value) -> (String, Login) {
        let login = Login {
            count: Arc::new(AtomicUsize::new(0)),
            delay,
            expires_in,
            forms: Arc::new(Mutex::new(Vec::new())),
        };
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(login.clone());
        (serve(router).await, login)
    }

    fn creds(secret: &str) -> Credentials {
        Credentials::ClientSecret {
            tenant_id: "contoso.onmicrosoft.com".to_string(),
            client_id: "11111111-2222-3333-4444-555555555555".to_string(),
            client_secret: Secret::new(secret),
        }
    }

    fn source(base: &str, secret: &str) -> TokenSource {
        TokenSource::new(
            reqwest::Client::new(),
            base,
            "https://api.securitycenter.microsoft.com/.default",
            creds(secret),
        )
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(SECRET);
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), SECRET);
        let c = creds(SECRET);
        assert!(!format!("{c:?}").contains(SECRET));
        let b = Credentials::Bearer(Secret::new(SECRET));
        assert!(!format!("{b:?}").contains(SECRET));
        let ts = source("https://login.microsoftonline.com", SECRET);
        assert!(!format!("{ts:?}").contains(SECRET));
    }

    #[test]
    fn builds_the_v2_token_url() {
        for base in [
            "https://login.microsoftonline.com",
            "https://login.microsoftonline.com/",
            "https://login.microsoftonline.com//",
        ] {
            let url = token_url(base, "contoso.onmicrosoft.com").unwrap();
            assert_eq!(
                url.as_str(),
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
            );
        }
        let url = token_url("http://127.0.0.1:9/login/", "a b/c").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9/login/a%20b%2Fc/oauth2/v2.0/token");
        assert!(matches!(token_url("not a url", "t"), Err(AuthError::InvalidEndpoint { .. })));
        assert!(matches!(
            token_url("https://login.microsoftonline.com", " "),
            Err(AuthError::InvalidEndpoint { .. })
        ));
    }

    #[test]
    fn refresh_margin_is_min_of_300s_and_a_quarter() {
        assert_eq!(refresh_margin(Duration::from_secs(3599)), Duration::from_secs(300));
        assert_eq!(refresh_margin(Duration::from_secs(600)), Duration::from_secs(150));
        assert_eq!(refresh_margin(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(refresh_margin(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn sends_the_client_credentials_form_and_caches() {
        let (base, login) = login_server(Duration::ZERO, serde_json::json!(3599)).await;
        let ts = source(&base, SECRET);
        let t1 = ts.bearer().await.unwrap();
        assert_eq!(t1.expose(), "token-1");
        for _ in 0..10 {
            assert_eq!(ts.bearer().await.unwrap(), t1);
        }
        assert_eq!(ts.token_fetches(), 1);
        assert_eq!(login.count.load(Ordering::SeqCst), 1);
        let forms = login.forms.lock().unwrap();
        let (tenant, form) = &forms[0];
        assert_eq!(tenant, "contoso.onmicrosoft.com");
        let keys: Vec<_> = form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["grant_type", "client_id", "client_secret", "scope"]);
        assert_eq!(form[0].1, "client_credentials");
        assert_eq!(form[1].1, "11111111-2222-3333-4444-555555555555");
        assert_eq!(form[2].1, SECRET);
        assert_eq!(form[3].1, "https://api.securitycenter.microsoft.com/.default");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let (base, login) = login_server(Duration::from_millis(100), serde_json::json!(3599)).await;
        let ts = Arc::new(source(&base, SECRET));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let ts = ts.clone();
                tokio::spawn(async move { ts.bearer().await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "token-1");
        }
        assert_eq!(ts.token_fetches(), 1);
        assert_eq!(login.count.load(Ordering::SeqCst), 1);
    }

    /// An absurd `expires_in` (2^64 - 1 s) is capped at a day instead of
    /// overflowing the clock.
    #[tokio::test]
    async fn a_huge_expires_in_is_capped_not_an_overflow() {
        for huge in [serde_json::json!(u64::MAX), serde_json::json!(u64::MAX.to_string())] {
            let (base, login) = login_server(Duration::ZERO, huge).await;
            let ts = source(&base, SECRET);
            assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
            assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
            assert_eq!(login.count.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn accepts_expires_in_as_a_string() {
        let (base, _login) = login_server(Duration::ZERO, serde_json::json!("3599")).await;
        let ts = source(&base, SECRET);
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        assert_eq!(ts.token_fetches(), 1);
    }

    #[tokio::test]
    async fn reads_the_documented_token_reply() {
        async fn documented() -> Response {
            let path = format!("{}/tests/fixtures/token-response.json", env!("CARGO_MANIFEST_DIR"));
            let body = std::fs::read_to_string(path).unwrap();
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        let router = Router::new().route("/{tenant}/oauth2/v2.0/token", post(documented));
        let base = serve(router).await;
        let ts = source(&base, SECRET);
        assert_eq!(ts.bearer().await.unwrap().expose(), "eyJ0eXAi...");
        assert_eq!(ts.bearer().await.unwrap().expose(), "eyJ0eXAi...");
        assert_eq!(ts.token_fetches(), 1);
    }

    #[tokio::test]
    async fn refreshes_before_expiry() {
        // Lifetime 2 s: margin 500 ms, so the token is replaced from 1.5 s on,
        // before it expires at 2 s.
        let (base, login) = login_server(Duration::ZERO, serde_json::json!(2)).await;
        let ts = source(&base, SECRET);
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // 1.7 s: inside the margin, not yet expired: this caller refreshes.
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-2");
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-2");
        assert_eq!(login.count.load(Ordering::SeqCst), 2);
        assert_eq!(ts.token_fetches(), 2);
    }

    #[tokio::test]
    async fn others_keep_the_old_token_while_one_refreshes() {
        // Each fetch takes 600 ms; lifetime 2 s counted from the request, so
        // token-1 is due for refresh at 1.5 s and expires at 2 s.
        let (base, login) = login_server(Duration::from_millis(600), serde_json::json!(2)).await;
        let ts = Arc::new(source(&base, SECRET));
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        tokio::time::sleep(Duration::from_millis(950)).await;
        let refresher = {
            let ts = ts.clone();
            tokio::spawn(async move { ts.bearer().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The refresh is under way: this caller does not wait for it.
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-1");
        assert_eq!(refresher.await.unwrap().unwrap().expose(), "token-2");
        assert_eq!(login.count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalidate_fetches_anew_exactly_once() {
        let (base, login) = login_server(Duration::from_millis(50), serde_json::json!(3599)).await;
        let ts = Arc::new(source(&base, SECRET));
        let first = ts.bearer().await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let ts = ts.clone();
                let first = first.clone();
                tokio::spawn(async move {
                    ts.invalidate(&first);
                    ts.bearer().await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "token-2");
        }
        // A late invalidator holding the old token changes nothing.
        ts.invalidate(&first);
        assert_eq!(ts.bearer().await.unwrap().expose(), "token-2");
        assert_eq!(ts.token_fetches(), 2);
        assert_eq!(login.count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn invalid_client_is_reported_without_the_secret() {
        let wrong = "wr0ng-secret-value-1234";
        let (base, login) = login_server(Duration::from_millis(50), serde_json::json!(3599)).await;
        let ts = Arc::new(source(&base, wrong));
        // Concurrent callers share the failed attempt too.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let ts = ts.clone();
                tokio::spawn(async move { ts.bearer().await })
            })
            .collect();
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert!(matches!(err, AuthError::InvalidClient { .. }), "{err:?}");
            assert_eq!(err.code(), "invalid_client");
            assert!(!err.is_transient());
            let text = format!("{err} {err:?}");
            assert!(text.contains("AADSTS7000215"), "{text}");
            assert!(!text.contains(wrong), "{text}");
        }
        assert_eq!(login.count.load(Ordering::SeqCst), 1);
        // A later call tries again.
        assert!(ts.bearer().await.is_err());
        assert_eq!(login.count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unreachable_and_malformed_endpoints() {
        // Nothing listens on this port once the listener is dropped.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let ts = source(&format!("http://127.0.0.1:{port}"), SECRET);
        let err = ts.bearer().await.unwrap_err();
        assert!(matches!(err, AuthError::Unreachable { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(!format!("{err} {err:?}").contains(SECRET));

        async fn garbage() -> Response {
            (StatusCode::OK, "{\"access_token\":\"leaky-token-value\",\"expires_in\":\"soon\"}")
                .into_response()
        }
        async fn html() -> Response {
            (StatusCode::BAD_GATEWAY, "<html><body>Bad   gateway\n\n</body></html>").into_response()
        }
        async fn other() -> Response {
            let body = serde_json::json!({"error":"invalid_scope","error_description":"AADSTS70011: bad scope"});
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
        let router = Router::new()
            .route("/garbage/oauth2/v2.0/token", post(garbage))
            .route("/html/oauth2/v2.0/token", post(html))
            .route("/other/oauth2/v2.0/token", post(other));
        let base = serve(router).await;
        let with_tenant = |t: &str| Credentials::ClientSecret {
            tenant_id: t.to_string(),
            client_id: "c".to_string(),
            client_secret: Secret::new(SECRET),
        };
        let ts = TokenSource::new(reqwest::Client::new(), &base, "s", with_tenant("garbage"));
        let err = ts.bearer().await.unwrap_err();
        assert_eq!(
            err,
            AuthError::Malformed {
                status: 200,
                message: "expires_in is not a whole number of seconds".to_string()
            }
        );
        assert!(!format!("{err:?}").contains("leaky"));

        let ts = TokenSource::new(reqwest::Client::new(), &base, "s", with_tenant("html"));
        let err = ts.bearer().await.unwrap_err();
        assert!(matches!(err, AuthError::Malformed { status: 502, .. }), "{err:?}");
        assert!(err.to_string().contains("<html><body>Bad gateway </body></html>"), "{err}");
        assert!(err.is_transient());

        let ts = TokenSource::new(reqwest::Client::new(), &base, "s", with_tenant("other"));
        let err = ts.bearer().await.unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        assert!(matches!(err, AuthError::OAuth { status: 400, .. }));
        assert!(err.to_string().contains("AADSTS70011"));
    }

    #[tokio::test]
    async fn static_bearer_is_used_as_is_until_rejected() {
        let token = Secret::new("static-token-value");
        let ts = TokenSource::new(
            reqwest::Client::new(),
            "https://login.microsoftonline.com",
            "s",
            Credentials::Bearer(token.clone()),
        );
        assert!(ts.is_static());
        assert_eq!(ts.bearer().await.unwrap(), token);
        ts.invalidate(&Secret::new("some-other-token"));
        assert_eq!(ts.bearer().await.unwrap(), token);
        ts.invalidate(&token);
        assert_eq!(ts.bearer().await.unwrap_err(), AuthError::BearerRejected);
        assert_eq!(ts.token_fetches(), 0);
    }

    #[test]
    fn every_auth_error_hides_the_secret() {
        // Build each variant the way the code does, from text that contains
        // the secret, and check that none prints it.
        let secrets = [SECRET];
        let errs = [
            AuthError::Unreachable {
                url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".to_string(),
                message: scrub(&format!("connection reset while sending {SECRET}"), &secrets),
                kind: TransportKind::Other,
            },
            parse_oauth_error(
                401,
                format!(r#"{{"error":"invalid_client","error_description":"bad {SECRET}"}}"#)
                    .as_bytes(),
                &secrets,
            ),
            parse_oauth_error(
                400,
                format!(r#"{{"error":"invalid_request","error_description":"{SECRET}"}}"#)
                    .as_bytes(),
                &secrets,
            ),
            parse_oauth_error(500, format!("oops client_secret={SECRET}").as_bytes(), &secrets),
            parse_token_reply(200, format!(r#"{{"access_token":"{SECRET}"}}"#).as_bytes())
                .unwrap_err(),
            parse_token_reply(
                200,
                format!(r#"{{"access_token":{{"{SECRET}":1}},"expires_in":1}}"#).as_bytes(),
            )
            .unwrap_err(),
            parse_token_reply(200, SECRET.as_bytes()).unwrap_err(),
            AuthError::BearerRejected,
            token_url("::", "t").unwrap_err(),
        ];
        for e in &errs {
            let text = format!("{e} | {e:?} | {}", e.code());
            assert!(!text.contains(SECRET), "{text}");
        }
    }

    /// A secret with the characters that encodings change: `~` (form
    /// encoders escape it), `+`, `/`, `"`, `\\` and a space.
    const TRICKY: &str = "Ab3~Xy8+Qz/9\"Lm 0p\\Rs~Tu.Vw_42";

    /// Every way `secret` may be quoted back: form and URL encoded (upper
    /// and lower hex, `+` or `%20` for the space), JSON-escaped, base64 of
    /// the secret and of a Basic credential (standard, URL-safe, padded).
    fn encodings(secret: &str) -> Vec<String> {
        let form = |lower: bool| {
            let mut out = String::new();
            for b in secret.bytes() {
                match b {
                    b' ' => out.push('+'),
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') => {
                        out.push(b as char)
                    }
                    b if lower => out.push_str(&format!("%{b:02x}")),
                    b => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        let json = serde_json::to_string(secret).unwrap();
        let json = json[1..json.len() - 1].to_string();
        let basic = format!("11111111-2222-3333-4444-555555555555:{secret}");
        let mut all = vec![
            secret.to_string(),
            form(false),
            form(true),
            crate::api::odata::encode(secret),
            json.clone(),
            json.replace('/', "\\/"),
        ];
        for raw in [secret, basic.as_str()] {
            let std = base64_padded(raw.as_bytes());
            all.push(std.replace('+', "-").replace('/', "_").trim_end_matches('=').to_string());
            all.push(std);
        }
        all
    }

    /// Plain base64 with padding, for the tests (checked against RFC 4648).
    fn base64_padded(bytes: &[u8]) -> String {
        const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(STD[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn scrub_removes_the_secret_in_every_encoding() {
        assert_eq!(base64_padded(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_padded(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_padded(b"foob"), "Zm9vYg==");
        let all = encodings(TRICKY);
        assert!(all.iter().any(|e| e.contains("%7E")) && all.iter().any(|e| e.contains("%7e")));
        assert!(all.iter().any(|e| e.contains("\\\"")));
        for e in &all {
            for text in [
                e.clone(),
                format!("client_secret={e}&scope=x"),
                format!("Authorization: Basic {e}\r\n"),
                format!("{{\"error_description\":\"bad {e}\"}}"),
                format!("é{e}é"),
            ] {
                let out = scrub(&text, &[TRICKY]);
                assert!(out.contains("[redacted]"), "{e:?} not found in {text:?}: {out}");
                for other in &all {
                    assert!(!out.contains(other.as_str()), "{other:?} left in {out:?}");
                }
            }
        }
        // A mix of escaped and literal characters is still the secret.
        let mixed = "Ab3%7eXy8%2BQz%2F9\"Lm+0p\\Rs~Tu.Vw_42";
        assert_eq!(scrub(&format!("x {mixed} y"), &[TRICKY]), "x [redacted] y");
        // The whole Basic credential goes, not only the secret's part of it.
        let basic = base64_padded(format!("app:{TRICKY}").as_bytes());
        assert_eq!(scrub(&format!("Basic {basic};"), &[TRICKY]), "Basic [redacted];");
        // Text without the secret is left alone.
        let plain = "HTTP 401 invalid_client: AADSTS7000215 100% sure \\u0041 %zz + Zm9v";
        assert_eq!(scrub(plain, &[TRICKY, "tok-1"]), plain);
    }

    /// A token endpoint that quotes the request back in its error, raw
    /// (form-encoded) and as JSON: neither copy survives in the error.
    #[tokio::test]
    async fn an_echoing_token_endpoint_never_gets_the_secret_printed() {
        async fn echo(body: String) -> Response {
            let quoted = serde_json::json!({ "client_secret": TRICKY });
            let b = serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: bad request {body}; as JSON {quoted}"),
            });
            (StatusCode::UNAUTHORIZED, axum::Json(b)).into_response()
        }
        let router = Router::new().route("/{tenant}/oauth2/v2.0/token", post(echo));
        let base = serve(router).await;
        let err = source(&base, TRICKY).bearer().await.unwrap_err();
        let text = format!("{err} | {err:?}");
        assert!(matches!(err, AuthError::InvalidClient { .. }), "{text}");
        assert!(text.contains("client_secret=[redacted]&scope="), "{text}");
        assert!(
            text.contains(r#"{\"client_secret\":\"[redacted]\"}"#)
                || text.contains(r#"{"client_secret":"[redacted]"}"#),
            "{text}"
        );
        for e in encodings(TRICKY) {
            assert!(!text.contains(&e), "{e:?} in {text}");
        }
    }

    #[test]
    fn scrub_replaces_every_secret() {
        assert_eq!(scrub("x=abc;y=abc", &["abc", ""]), "x=[redacted];y=[redacted]");
    }

    /// Entra's multi-line description becomes one line that keeps the
    /// AADSTS message and the ids for support (fixture
    /// `entra-token-error-7000215-captured.json`).
    #[test]
    fn entra_error_descriptions_are_one_line_with_their_ids() {
        let body = std::fs::read(format!(
            "{}/tests/fixtures/entra-token-error-7000215-captured.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let AuthError::InvalidClient { description } = parse_oauth_error(401, &body, &[]) else {
            panic!("invalid_client")
        };
        assert!(!description.contains('\n') && !description.contains('\r'), "{description}");
        assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(
            description.ends_with(
                "(trace id 6bad8289-db4a-49da-8609-0848d8d71700, correlation id 63b8bb61-5ca6-4ae3-8224-15a4de11cd87)"
            ),
            "{description}"
        );
    }
}
