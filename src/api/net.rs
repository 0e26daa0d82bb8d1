//! What kind of network failure ended a call, told from reqwest's error:
//! the client (for API calls) and the login (for token requests) classify
//! their failures the same way, so TLS and DNS set-up problems are never
//! mistaken for passing faults; and the one place their messages pass, so
//! credentials in a URL (a proxy's) are masked there.

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

/// `text` with the user information of every URL in it (`scheme://user:pass@`)
/// replaced by `***`.
pub(crate) fn mask_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        let tail = &rest[authority_start..];
        // The authority ends at the path, query, fragment or any character
        // that cannot be in a URL (quotes, spaces, brackets around the URL).
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#') || c.is_whitespace() || "\"'<>()`".contains(c)
            })
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// The message of a transport failure of `kind`: `chain` (the error and its
/// sources, already scrubbed), and for TLS and DNS failures the host and
/// what to check, since those are set-up problems no retry cures.
///
/// Any `user:password@` in a URL of the chain (a proxy's, should the stack
/// quote it) is masked here, where every transport failure passes.
pub(crate) fn transport_message(e: &reqwest::Error, kind: TransportKind, chain: String) -> String {
    let chain = mask_url_credentials(&chain);
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
                 no request was sent: check the URL and the system clock; behind a \
                 TLS-inspecting proxy, trust its CA with --ca-cert FILE or SSL_CERT_FILE=FILE \
                 (PEM)"
            )
        }
        TransportKind::Dns => format!(
            "cannot resolve the host name of {host}: {chain}; check the URL and this machine's DNS"
        ),
        TransportKind::Timeout | TransportKind::Connect | TransportKind::Other => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        for (text, want) in [
            (
                "error connecting to proxy http://user:s3cret@proxy:3128/: refused",
                "error connecting to proxy http://***@proxy:3128/: refused",
            ),
            ("(http://u:p@h) and https://a:b@c:1", "(http://***@h) and https://***@c:1"),
            ("\"http://only-user@h\"", "\"http://***@h\""),
            ("https://api.example/path@not-userinfo", "https://api.example/path@not-userinfo"),
            ("no url: a@b", "no url: a@b"),
            ("http://p:a@ss@h:1 x", "http://***@h:1 x"),
            ("tail ://", "tail ://"),
        ] {
            assert_eq!(mask_url_credentials(text), want, "{text}");
        }
    }
}
