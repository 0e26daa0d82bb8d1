//! What kind of network failure ended a call, told from reqwest's error:
//! the client (for API calls) and the login (for token requests) classify
//! their failures the same way, so TLS and DNS set-up problems are never
//! mistaken for passing faults.

/// What kind of network failure ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The connection or the whole call ran out of time.
    Timeout,
    /// No connection could be made (refused, reset, unreachable network).
    Connect,
    /// The TLS handshake failed: the server's certificate was refused
    /// (unknown issuer, expired, another name) or the server does not speak
    /// TLS. A configuration problem (system clock, a TLS-inspecting proxy
    /// whose CA this machine does not trust, a wrong URL) that every call
    /// shares and no retry cures. Nothing was sent.
    Tls,
    /// The host name could not be resolved: a wrong URL or a broken DNS
    /// set-up, shared by every call. Nothing was sent.
    Dns,
    /// Anything else: connection reset or closed mid-exchange, a body that
    /// could not be read.
    Other,
}

impl TransportKind {
    /// True when trying again may succeed: timeouts, refused or broken
    /// connections. False for TLS and DNS failures, which are configuration.
    pub fn is_transient(self) -> bool {
        !self.is_configuration()
    }

    /// True for failures of this machine's set-up rather than of one
    /// call: TLS (certificates) and DNS. They fail every call alike.
    pub fn is_configuration(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Dns)
    }
}

/// Classifies a reqwest failure. `after_headers`: the reply's status line
/// had already arrived (a failure reading the body).
///
/// TLS is recognised by rustls's own error type in the chain of a connect
/// failure (a refused certificate, or a handshake with a server that does
/// not speak TLS), DNS by reqwest's marker for resolver errors; a timeout
/// during either stays a timeout. rustls errors after the handshake (a
/// corrupted record mid-exchange) are plain transport errors.
pub(crate) fn transport_kind(e: &reqwest::Error, after_headers: bool) -> TransportKind {
    if e.is_timeout() {
        TransportKind::Timeout
    } else if after_headers || !e.is_connect() {
        TransportKind::Other
    } else if e.is_dns() {
        TransportKind::Dns
    } else if tls_error(e).is_some() {
        TransportKind::Tls
    } else {
        TransportKind::Connect
    }
}

/// The rustls error in `err`'s chain, if any. An `io::Error`'s `source()`
/// skips the error it wraps (it returns that error's source), and TLS
/// errors reach reqwest wrapped in two of them, so each is looked inside.
fn tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The message of a transport failure of `kind`: `chain` (the error and its
/// sources, already scrubbed), and for TLS and DNS failures the host and
/// what to check, since those are set-up problems no retry cures.
pub(crate) fn transport_message(e: &reqwest::Error, kind: TransportKind, chain: String) -> String {
    let host = e.url().and_then(|u| {
        let host = u.host_str()?;
        Some(match u.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        })
    });
    let host = host.as_deref().unwrap_or("the server");
    match kind {
        TransportKind::Tls => {
            let what = match tls_error(e) {
                Some(rustls::Error::InvalidCertificate(_)) => "its certificate is not trusted",
                _ => "the TLS handshake failed",
            };
            format!(
                "certificate/TLS problem with {host} ({what}): {chain}; this is not transient and \
                 no request was sent: check the URL, the system clock, and any TLS-inspecting \
                 proxy (this machine must trust its CA)"
            )
        }
        TransportKind::Dns => format!(
            "cannot resolve the host name of {host}: {chain}; check the URL and this machine's DNS"
        ),
        TransportKind::Timeout | TransportKind::Connect | TransportKind::Other => chain,
    }
}
