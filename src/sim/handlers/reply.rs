//! What the handlers read and write: the parts of a request they look at,
//! the reply they build (status, body, the headers that vary), and what to do
//! with the connection instead. Its own file so that every handler can use
//! these without importing the dispatch that calls it.

use hyper::{HeaderMap, Method};

use std::time::SystemTime;

use serde_json::json;

use crate::api::model::{ErrorEnvelope, GraphErrorEnvelope, new_guid};
use crate::api::odata::decode_form;
use crate::api::time::format_utc;
use crate::sim::config::Service;

/// `Content-Type` of OData replies, as the service sends it.
pub(crate) const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8";
/// `Content-Type` of error, token and `/_sim` replies.
pub(crate) const PLAIN_JSON: &str = "application/json; charset=utf-8";

/// The parts of an HTTP request the handlers look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The method.
    pub(crate) method: &'a Method,
    /// The path, still percent-encoded.
    pub(crate) path: &'a str,
    /// The raw query string.
    pub(crate) query: Option<&'a str>,
    /// `http` or `https`: how the simulator is served, for links that point
    /// back at it (`@odata.context`, discovery documents).
    pub(crate) scheme: &'a str,
    /// The `Host` header (or the bound address), for `@odata.context` and links.
    pub(crate) host: &'a str,
    /// The `Authorization` header.
    pub(crate) authorization: Option<&'a str>,
    /// The whole body.
    pub(crate) body: &'a [u8],
    /// Every header, for the few endpoints that demand one of their own
    /// (`Metadata: true`, `X-IDENTITY-HEADER`).
    pub(crate) headers: &'a HeaderMap,
    /// Which listener it came to: the MDE API and login, or Graph.
    pub(crate) service: Service,
}

impl Request<'_> {
    /// A header's value as text, if present and visible ASCII.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first value of a query parameter, form-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| decode_form(k) == name)
            .map(|(_, v)| decode_form(v))
    }

    /// `scheme://host`: the simulator's own address as the client reached it.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// A value from the request as a message quotes it: at most 64
/// characters, control characters escaped, in single quotes.
pub(crate) fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(64).flat_map(char::escape_default).collect();
    format!("'{cut}'")
}

/// What to do with a connection instead of answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// Close it at once: the call was not processed.
    Before,
    /// Close it after the latency: the call was processed.
    After,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// JSON body.
    pub(crate) body: String,
    /// `Content-Type`.
    pub(crate) content_type: &'static str,
    /// `Retry-After` in whole seconds, on 429s and some 503s.
    pub(crate) retry_after: Option<u64>,
    /// A `Retry-After` sent verbatim in place of `retry_after` (the
    /// `throttle_retry_after` fault).
    pub(crate) retry_after_text: Option<String>,
    /// A `WWW-Authenticate` challenge to send: `Bearer` on the API's 401s,
    /// `Basic realm=<key file>` on Azure Arc's first answer.
    pub(crate) www_authenticate: Option<String>,
    /// Set when the client must see a closed connection instead of this reply.
    pub(crate) drop: Option<Disconnect>,
}

impl Reply {
    /// A reply with only a status and a body: no `Retry-After`, no
    /// challenge, no dropped connection; the other fields are set by the
    /// few replies that need them.
    pub(crate) fn json(status: u16, body: String, content_type: &'static str) -> Reply {
        Reply {
            status,
            body,
            content_type,
            retry_after: None,
            retry_after_text: None,
            www_authenticate: None,
            drop: None,
        }
    }

    /// An error in Microsoft Graph's envelope (`code`, `message`,
    /// `innerError` with the date and a fresh request id).
    pub(crate) fn graph_error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        let now = format_utc(SystemTime::now());
        // Graph dates its errors to the second: `2026-12-02T00:35:25`.
        let date = now.get(..19).unwrap_or(&now).to_string();
        let body = serde_json::to_string(&GraphErrorEnvelope::new(code, message, date))
            .unwrap_or_else(|_| String::from("{}"));
        Reply::json(status, body, PLAIN_JSON)
    }

    /// An error in the API's envelope, with a fresh `target`.
    pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        let body = serde_json::to_string(&ErrorEnvelope::new(code, message))
            .unwrap_or_else(|_| String::from("{}"));
        Reply::json(status, body, PLAIN_JSON)
    }
}

impl Reply {
    /// An error of the token endpoint as Entra ID writes it (reference:
    /// `mde-api-addendum.md` §4.3; fixtures `entra-token-error-*.json`):
    /// `error`, an `error_description` that starts `AADSTS<code>: ` and ends
    /// with its `Trace ID`, `Correlation ID` and `Timestamp` lines, and the
    /// same facts as fields (`error_codes`, `timestamp`, `trace_id`,
    /// `correlation_id`, `error_uri`). Clients are to branch on `error` only.
    pub(crate) fn entra(status: u16, error: &str, code: u32, message: &str) -> Reply {
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
