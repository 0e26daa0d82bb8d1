//! Why no token could be had: one error type for every way of logging in.
//!
//! Messages never contain a secret or a token.

use super::super::net::TransportKind;

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
    /// The login endpoint refused the client id or its proof (`invalid_client`).
    #[error(
        "the token endpoint refused the client id or its credential (invalid_client): {description}; {check}"
    )]
    InvalidClient {
        /// The endpoint's `error_description`.
        description: String,
        /// What to check for the credential used (its environment variables).
        check: &'static str,
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
        "the API rejected the bearer token given in MDE_TOKEN (HTTP 401: missing permission, wrong tenant or expired); a ready token cannot be refreshed: for long runs use a refreshable method (MDE_TOKEN_COMMAND, --auth azure-cli, a certificate or a client secret)"
    )]
    BearerRejected,
    /// The static bearer token (`MDE_TOKEN`) reached the expiry its `exp`
    /// claim states; it cannot be refreshed.
    #[error(
        "the bearer token given in MDE_TOKEN has expired; a ready token cannot be refreshed: for runs longer than a token's life use a refreshable method (MDE_TOKEN_COMMAND, --auth azure-cli, a certificate or a client secret)"
    )]
    BearerExpired,
    /// A managed identity endpoint (IMDS, App Service) answered an error.
    #[error("the managed identity endpoint {url} answered HTTP {status} {error}: {description}")]
    Identity {
        /// The endpoint, without its query.
        url: String,
        /// HTTP status of the reply.
        status: u16,
        /// The reply's `error` code, or `http_<status>`.
        error: String,
        /// The reply's `error_description`, or a bounded excerpt.
        description: String,
    },
    /// The credential could not be used on this machine: a certificate file
    /// unreadable, a token command failing, `az` not signed in.
    #[error("{method} credential: {message}")]
    Credential {
        /// The `--auth` name of the method.
        method: &'static str,
        /// What went wrong; never a secret or a token.
        message: String,
        /// Whether trying again later may work (a command that timed out).
        transient: bool,
    },
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
            AuthError::BearerExpired => "BearerExpired",
            AuthError::Identity { error, .. } => error,
            AuthError::Credential { .. } => "CredentialUnavailable",
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
            // The IMDS documentation: 404 while it updates, 410 for up to
            // 70 s after start, 429 throttled, 5xx.
            AuthError::Identity { status, .. } => {
                matches!(*status, 404 | 410 | 429) || *status >= 500
            }
            AuthError::Credential { transient, .. } => *transient,
            AuthError::InvalidClient { .. }
            | AuthError::BearerRejected
            | AuthError::BearerExpired
            | AuthError::InvalidEndpoint { .. } => false,
        }
    }
}
