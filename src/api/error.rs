//! What can go wrong with one API call, told precisely enough for the
//! pipeline to decide what to do next: wait (429 and its `Retry-After`),
//! refresh the token (401), back off and retry (5xx, network), or record the
//! row as final (other 4xx). Also the configuration errors of the client.
//!
//! The client makes exactly one attempt per call; every outcome that is not a
//! 2xx with a readable body is one [`CallError`].

use std::time::{Duration, SystemTime};

use reqwest::header::{DATE, HeaderMap, RETRY_AFTER};

use super::auth::AuthError;
use super::model::ApiErrorBody;
pub use super::net::TransportKind;

/// Why one API call did not produce a reply value.
///
/// `Display` gives one line for logs and results; no variant ever holds a
/// token or the client secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// HTTP 429: the API's quota for this path is spent.
    #[error(
        "HTTP 429 {}{}",
        describe_body(.error.as_ref(), "TooManyRequests"),
        describe_retry_after(*.retry_after)
    )]
    Throttled {
        /// How long the server asks us to wait (`Retry-After`), when it said so.
        retry_after: Option<Duration>,
        /// The error envelope, when the reply had one.
        error: Option<ApiErrorBody>,
    },
    /// HTTP 401: the token was refused. The client has already invalidated
    /// the token it used, so a retry presents a fresh one.
    #[error("HTTP 401 {}", describe_body(.error.as_ref(), "Unauthorized"))]
    Unauthorized {
        /// The error envelope, when the reply had one (not to be relied on).
        error: Option<ApiErrorBody>,
    },
    /// Any other non-2xx reply.
    #[error(
        "HTTP {status} {}{}",
        describe_body(.error.as_ref(), status_code_name(*.status)),
        describe_retry_after(*.retry_after)
    )]
    Api {
        /// HTTP status of the reply.
        status: u16,
        /// The error envelope. A body that is not one is kept as a short
        /// excerpt in `message`, with our own `code` for the status
        /// ([`status_code_name`]) and no `target`.
        error: Option<ApiErrorBody>,
        /// `Retry-After` of the reply (sent with some 503s), when present.
        retry_after: Option<Duration>,
    },
    /// No HTTP reply: the network failed or the call timed out.
    #[error(
        "{}: {message}{}",
        transport_code(*.kind),
        if *.maybe_delivered { " (the request may have reached the server)" } else { " (the request was not sent)" }
    )]
    Transport {
        /// Timeout, connect failure or other.
        kind: TransportKind,
        /// The request may have reached the server: the call timed out after
        /// sending, or the connection broke while awaiting the answer. False
        /// only when it certainly never left (refused, DNS, TLS handshake).
        maybe_delivered: bool,
        /// What went wrong, from the network stack.
        message: String,
    },
    /// A 2xx reply whose body is not what the call returns. The action may
    /// well have been created.
    #[error("HTTP {status} with an unreadable body: {message}")]
    Decode {
        /// HTTP status of the reply.
        status: u16,
        /// Why the body could not be read.
        message: String,
    },
    /// No token to call with.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// The run was asked to stop while the call waited for its turn, a
    /// backoff or a `Retry-After`: it was never sent.
    #[error("stopped before the request was sent")]
    Stopped,
}

impl CallError {
    /// True for failures worth retrying with backoff: HTTP 500, 502, 503 and
    /// 504, transport failures other than TLS and DNS, and an auth failure
    /// that is itself transient (login endpoint unreachable or failing).
    ///
    /// 429 is not counted here: it has its own handling (wait for
    /// `Retry-After`, pause the whole API, no attempt burnt).
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Api { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            CallError::Transport { kind, .. } => kind.is_transient(),
            CallError::Auth(e) => e.is_transient(),
            CallError::Throttled { .. }
            | CallError::Unauthorized { .. }
            | CallError::Decode { .. }
            | CallError::Stopped => false,
        }
    }

    /// True when this failure will fail every other call of the run the
    /// same way, so the run should stop instead of spending retries on each
    /// row: a TLS/certificate or DNS failure (to the API or the token
    /// endpoint), and an authentication failure that a fresh token cannot
    /// cure (the client secret or id refused, an unknown tenant or scope,
    /// a rejected `MDE_TOKEN`, an unreadable token reply).
    ///
    /// A plain 401 ([`CallError::Unauthorized`]) is not: the client has
    /// dropped the token it used and the next call presents a fresh one. A
    /// 401 on that fresh token too is for the caller to judge, who knows it
    /// re-authenticated.
    pub fn is_fatal_for_run(&self) -> bool {
        match self {
            CallError::Transport { kind, .. } => kind.is_configuration(),
            CallError::Auth(e) => e.is_fatal_for_run(),
            CallError::Throttled { .. }
            | CallError::Unauthorized { .. }
            | CallError::Api { .. }
            | CallError::Decode { .. }
            | CallError::Stopped => false,
        }
    }

    /// Short code for results and logs: the API's error `code` when the reply
    /// had an envelope, else ours (`TooManyRequests`, `Unauthorized`, the
    /// status name, `Timeout`, `ConnectionFailed`, `TlsHandshakeFailed`,
    /// `NameNotResolved`, `TransportError`,
    /// `DecodeError`, or the auth error's code).
    pub fn code(&self) -> &str {
        match self {
            CallError::Throttled { error, .. } => body_code(error.as_ref(), "TooManyRequests"),
            CallError::Unauthorized { error } => body_code(error.as_ref(), "Unauthorized"),
            CallError::Api { status, error, .. } => {
                body_code(error.as_ref(), status_code_name(*status))
            }
            CallError::Transport { kind, .. } => transport_code(*kind),
            CallError::Decode { .. } => "DecodeError",
            CallError::Auth(e) => e.code(),
            CallError::Stopped => "Stopped",
        }
    }

    /// The API's HTTP status, when it answered; `None` for transport and auth
    /// failures (the login endpoint's status is not the API's).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            CallError::Throttled { .. } => Some(429),
            CallError::Unauthorized { .. } => Some(401),
            CallError::Api { status, .. } | CallError::Decode { status, .. } => Some(*status),
            CallError::Transport { .. } | CallError::Auth(_) | CallError::Stopped => None,
        }
    }

    /// The error envelope of the reply, when it had one.
    pub(crate) fn error_body(&self) -> Option<&ApiErrorBody> {
        match self {
            CallError::Throttled { error, .. }
            | CallError::Unauthorized { error }
            | CallError::Api { error, .. } => error.as_ref(),
            _ => None,
        }
    }

    /// The reply's error message (the envelope's, else this error's text).
    pub fn message(&self) -> String {
        match self.error_body() {
            Some(body) if !body.message.is_empty() => body.message.clone(),
            _ => self.to_string(),
        }
    }

    /// The correlation id (`error.target`) to quote to Microsoft support.
    pub fn target(&self) -> Option<&str> {
        self.error_body().and_then(|b| b.target.as_deref())
    }

    /// The reply's `Retry-After`, for 429s and other statuses that sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Throttled { retry_after, .. } | CallError::Api { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// True unless the request certainly never reached the server: only
    /// transport failures before sending and auth failures are false. A
    /// pipeline retrying an action it may have created checks this first.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            CallError::Transport { maybe_delivered, .. } => *maybe_delivered,
            CallError::Auth(_) | CallError::Stopped => false,
            _ => true,
        }
    }
}

/// Our code for a status whose reply had no error envelope: the API's code
/// for that status where the API documents one (§9), else the HTTP reason.
pub(crate) fn status_code_name(status: u16) -> &'static str {
    let exact = match status {
        400 => Some("BadRequest"),
        401 => Some("Unauthorized"),
        403 => Some("Forbidden"),
        404 => Some("NotFound"),
        405 => Some("MethodNotAllowed"),
        408 => Some("RequestTimeout"),
        409 => Some("Conflict"),
        413 => Some("PayloadTooLarge"),
        415 => Some("UnsupportedMediaType"),
        429 => Some("TooManyRequests"),
        500 => Some("InternalServerError"),
        501 => Some("NotImplemented"),
        502 => Some("BadGateway"),
        503 => Some("ServiceUnavailable"),
        504 => Some("GatewayTimeout"),
        _ => None,
    };
    exact.unwrap_or(match status / 100 {
        3 => "UnexpectedRedirect",
        4 => "ClientError",
        5 => "ServerError",
        _ => "UnexpectedStatus",
    })
}

fn transport_code(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Timeout => "Timeout",
        TransportKind::Connect => "ConnectionFailed",
        TransportKind::Tls => "TlsHandshakeFailed",
        TransportKind::Dns => "NameNotResolved",
        TransportKind::Other => "TransportError",
    }
}

fn body_code<'a>(body: Option<&'a ApiErrorBody>, fallback: &'a str) -> &'a str {
    match body {
        Some(b) if !b.code.is_empty() => &b.code,
        _ => fallback,
    }
}

fn describe_body(body: Option<&ApiErrorBody>, fallback: &str) -> String {
    let Some(b) = body else {
        return fallback.to_string();
    };
    let mut out = body_code(Some(b), fallback).to_string();
    if !b.message.is_empty() {
        out.push_str(": ");
        out.push_str(&b.message);
    }
    if let Some(t) = &b.target {
        out.push_str(" [target ");
        out.push_str(t);
        out.push(']');
    }
    out
}

fn describe_retry_after(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (Retry-After {} s)", d.as_secs()),
        None => String::new(),
    }
}

/// Errors in the client's configuration, found before any call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse, or cannot serve as a base.
    #[error("{what} URL {url:?} is not a valid URL: {reason}")]
    InvalidUrl {
        /// Which URL: `API` or `login`.
        what: &'static str,
        /// The URL as given (credentials in it are masked).
        url: String,
        /// Why it is not valid.
        reason: String,
    },
    /// Plain `http://` to a host that is not a loopback address.
    #[error(
        "{what} URL {url} uses plain http:// to a non-loopback host; use https:// (plain http is accepted only for 127.0.0.0/8, ::1 and localhost)"
    )]
    InsecureUrl {
        /// Which URL: `API` or `login`.
        what: &'static str,
        /// The URL as given.
        url: String,
    },
    /// A scheme other than `https` or `http`.
    #[error("{what} URL {url} has unsupported scheme {scheme:?}; use https://")]
    UnsupportedScheme {
        /// Which URL: `API` or `login`.
        what: &'static str,
        /// The URL as given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// A user name or password inside the URL.
    #[error("{what} URL must not contain a user name or password")]
    CredentialsInUrl {
        /// Which URL: `API` or `login`.
        what: &'static str,
    },
    /// A query string or fragment in a base URL.
    #[error("{what} URL {url} must not contain a query or fragment")]
    QueryInUrl {
        /// Which URL: `API` or `login`.
        what: &'static str,
        /// The URL as given.
        url: String,
    },
    /// A zero timeout, which would fail every call.
    #[error("the {what} timeout must be greater than zero")]
    ZeroTimeout {
        /// Which timeout: `request` or `connect`.
        what: &'static str,
    },
    /// Credentials that cannot work (an empty tenant, client id, secret or token).
    #[error("missing credentials: {0}")]
    MissingCredentials(&'static str),
    /// Credentials that cannot work as configured (an identity endpoint
    /// breaking the URL rules, an empty token command).
    #[error("unusable credentials: {0}")]
    UnusableCredentials(String),
    /// A CA file to trust cannot be read or holds no PEM certificate.
    #[error("{origin} {path}: {why}")]
    CaFile {
        /// Where the path came from: `--ca-cert` or `SSL_CERT_FILE`.
        origin: &'static str,
        /// The file as given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The `--proxy` URL is not an `http://` or `https://` URL with a host.
    #[error("--proxy {url} is not a proxy URL: {reason}")]
    InvalidProxy {
        /// The URL as given, with any user name and password masked.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The HTTP stack could not be set up (TLS roots, ...).
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

/// The longest wait a `Retry-After` is obeyed for: the longest default quota
/// window (1500 calls per 3600 s) plus five minutes.
///
/// A 429 from the quota never needs more: once the hour has passed, the
/// calls that filled the window have left it. A larger value is a server or
/// proxy fault, and obeying it would stall the run silently for days, or
/// overflow the clock (`2^64 - 1` seconds). Waiting this long and asking
/// again is always safe: a quota still spent simply answers another 429.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600 + 300);

/// The wait a reply asks for in its `Retry-After` header: delta-seconds, or
/// an HTTP-date taken relative to the reply's `Date` header when present
/// (server clocks differ from ours), else to `now`. A date in the past gives
/// zero; an absent or unreadable header gives `None` (a negative or
/// fractional number is unreadable). A wait longer than
/// [`MAX_RETRY_AFTER`] (including numbers too large for any clock) gives
/// [`MAX_RETRY_AFTER`], with a warning.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let asked = requested_wait(headers, raw, now)?;
    if asked <= MAX_RETRY_AFTER {
        return Some(asked);
    }
    tracing::warn!(
        capped_s = MAX_RETRY_AFTER.as_secs(),
        "the server asked to wait longer than any quota window (Retry-After: {}); waiting {} s instead, then asking again",
        crate::text::excerpt(raw, 40),
        MAX_RETRY_AFTER.as_secs()
    );
    Some(MAX_RETRY_AFTER)
}

/// The wait `raw` (a `Retry-After` value) asks for, uncapped; a number too
/// large for a `u64` gives `Duration::MAX`.
fn requested_wait(headers: &HeaderMap, raw: &str, now: SystemTime) -> Option<Duration> {
    if raw.is_empty() {
        return None;
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only way to fail is overflow: "very long".
        return Some(raw.parse::<u64>().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    let reference = headers
        .get(DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or(now);
    Some(at.duration_since(reference).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_seconds_dates_and_garbage() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", "12")]), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after(&headers(&[("Retry-After", " 0 ")]), now),
            Some(Duration::ZERO)
        );
        // HTTP-date, relative to now when there is no Date header.
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &later)]), now),
            Some(Duration::from_secs(90))
        );
        // Relative to the reply's Date header when there is one (its clock is 30 s ahead of ours).
        let server_now = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &later), ("date", &server_now)]), now),
            Some(Duration::from_secs(60))
        );
        // A Date header that does not parse falls back to now.
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &later), ("date", "someday")]), now),
            Some(Duration::from_secs(90))
        );
        // In the past: zero.
        let past = httpdate::fmt_http_date(now - Duration::from_secs(3600));
        assert_eq!(
            parse_retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        for garbage in ["soon", "-5", "-18446744073709551615", "1.5", "+5", "", "Mon, 99 Foo 2024"]
        {
            assert_eq!(
                parse_retry_after(&headers(&[("retry-after", garbage)]), now),
                None,
                "{garbage:?}"
            );
        }
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    /// Values a faulty server or proxy may send are capped, never obeyed
    /// for days and never an overflow: 2^63, 2^64 - 1, numbers past any
    /// integer type, a day, a year, the year 9999.
    #[test]
    fn retry_after_is_capped_at_the_longest_window_plus_a_margin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parse = |v: &str| parse_retry_after(&headers(&[("retry-after", v)]), now);
        assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(3900));
        assert_eq!(parse("3900"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("3899"), Some(Duration::from_secs(3899)));
        for huge in [
            "3901",
            "86400",
            "31536000",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999999",
        ] {
            assert_eq!(parse(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        let in_a_day = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        assert_eq!(parse(&in_a_day), Some(MAX_RETRY_AFTER));
        for far in ["Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 2099 00:00:00 GMT"] {
            assert_eq!(parse(far), Some(MAX_RETRY_AFTER), "{far}");
            // Even against a server clock far in the past.
            let with_date =
                headers(&[("retry-after", far), ("date", "Thu, 01 Jan 1970 00:00:00 GMT")]);
            assert_eq!(parse_retry_after(&with_date, now), Some(MAX_RETRY_AFTER), "{far}");
        }
        // Past dates, however far, mean "now".
        for past in ["Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse(past), Some(Duration::ZERO), "{past}");
        }
        let far_date = headers(&[
            ("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("date", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ]);
        assert_eq!(parse_retry_after(&far_date, now), Some(Duration::ZERO));
        // The cap holds for every status that carries the header.
        let e =
            CallError::Api { status: 503, error: None, retry_after: parse("18446744073709551615") };
        assert_eq!(e.retry_after(), Some(MAX_RETRY_AFTER));
        assert!(e.to_string().ends_with("(Retry-After 3900 s)"), "{e}");
    }

    fn body(code: &str) -> ApiErrorBody {
        ApiErrorBody {
            code: code.to_string(),
            message: "msg".to_string(),
            target: Some("t-1".to_string()),
        }
    }

    #[test]
    fn classification() {
        let api = |status| CallError::Api { status, error: None, retry_after: None };
        for s in [500, 502, 503, 504] {
            assert!(api(s).is_transient(), "{s}");
        }
        for s in [400, 403, 404, 409, 501, 505] {
            assert!(!api(s).is_transient(), "{s}");
        }
        assert_eq!(api(502).code(), "BadGateway");
        assert_eq!(api(418).code(), "ClientError");
        let throttled = CallError::Throttled {
            retry_after: Some(Duration::from_secs(7)),
            error: Some(body("TooManyRequests")),
        };
        assert!(!throttled.is_transient());
        assert_eq!(throttled.http_status(), Some(429));
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(throttled.target(), Some("t-1"));
        assert_eq!(
            throttled.to_string(),
            "HTTP 429 TooManyRequests: msg [target t-1] (Retry-After 7 s)"
        );
        let dup = CallError::Api {
            status: 400,
            error: Some(body("ActiveRequestAlreadyExists")),
            retry_after: None,
        };
        assert_eq!(dup.code(), "ActiveRequestAlreadyExists");
        assert_eq!(dup.message(), "msg");
        let timeout = CallError::Transport {
            kind: TransportKind::Timeout,
            maybe_delivered: true,
            message: "x".into(),
        };
        assert!(timeout.is_transient() && timeout.maybe_delivered());
        assert_eq!(timeout.code(), "Timeout");
        assert_eq!(timeout.http_status(), None);
        let refused = CallError::Transport {
            kind: TransportKind::Connect,
            maybe_delivered: false,
            message: "x".into(),
        };
        assert_eq!(refused.code(), "ConnectionFailed");
        assert!(!refused.maybe_delivered());
        let unreachable = CallError::Auth(AuthError::Unreachable {
            url: "u".into(),
            message: "m".into(),
            kind: TransportKind::Connect,
        });
        assert!(unreachable.is_transient());
        assert!(!CallError::Auth(AuthError::BearerRejected).is_transient());
        assert_eq!(CallError::Unauthorized { error: None }.code(), "Unauthorized");
    }
}
