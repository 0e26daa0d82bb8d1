//! The end-of-command webhook (`--notify URL`): one message, `{"text":
//! "..."}`, POSTed to a chat's incoming webhook when a command ends.
//!
//! That body is what Slack incoming webhooks take, and what Microsoft
//! Teams takes too (Office 365 connector webhooks read `text`, as do the
//! Workflows webhooks built from the "post to a channel when a webhook
//! request is received" template); one shape for both keeps the receiver
//! the user's choice.
//!
//! A webhook URL is a bearer secret (whoever has it can post to the
//! channel), so it is never logged or shown whole: messages name only its
//! scheme and host ([`Webhook::shown`]), and reqwest's errors are stripped
//! of the URL. Requests use the API client's TLS trust, timeouts and proxy
//! rules ([`super::client::http_client_for`]). Failures are retried a few
//! times with backoff inside a bounded time, and never fail the command.

use std::time::{Duration, Instant};

use reqwest::Url;

use super::auth::error_chain;
use super::client::{ClientConfig, ConfigError, http_client_for, is_loopback_url};

/// Attempts per message.
const ATTEMPTS: u32 = 3;

/// First wait between attempts; doubles after each.
const BACKOFF: Duration = Duration::from_secs(1);

/// The longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest the whole message may take, retries included: the command
/// has finished its work and only waits for this.
pub const BUDGET: Duration = Duration::from_secs(30);

/// Why a `--notify` URL is refused before the command starts.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Not a URL this tool posts to.
    #[error("--notify {shown}: {why}")]
    Invalid {
        /// The URL as far as it can be shown (scheme and host).
        shown: String,
        /// What is wrong.
        why: String,
    },
    /// The HTTP stack could not be built (a CA file, a proxy).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A checked webhook and the client that posts to it.
#[derive(Clone)]
pub struct Webhook {
    http: reqwest::Client,
    url: Url,
    shown: String,
}

impl std::fmt::Debug for Webhook {
    /// Only the shown form: the URL itself is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.shown).finish()
    }
}

impl Webhook {
    /// Checks `url`: `https://`, or `http://` to a loopback host (a local
    /// relay, tests), with a host and no user name or password in it.
    pub fn new(url: &str, config: &ClientConfig) -> Result<Webhook, WebhookError> {
        let parsed = Url::parse(url.trim()).map_err(|e| WebhookError::Invalid {
            shown: "(the URL given)".into(),
            why: format!("not a URL ({e})"),
        })?;
        let shown = shown(&parsed);
        let invalid = |why: &str| WebhookError::Invalid { shown: shown.clone(), why: why.into() };
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback_url(&parsed) => {}
            "http" => return Err(invalid("plain http is only for loopback hosts; use https://")),
            _ => return Err(invalid("only https:// webhooks are supported")),
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("a user name or password in the URL is not supported"));
        }
        let http = http_client_for(config, &parsed)?;
        Ok(Webhook { http, url: parsed, shown })
    }

    /// The URL as it may be shown: scheme, host and port, the rest (the
    /// secret part) elided.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Posts `{"text": text}`: up to [`ATTEMPTS`] attempts inside
    /// [`BUDGET`], retrying connection failures, timeouts, 429 (after its
    /// Retry-After, when that fits) and 5xx. `Ok(attempts)` once a 2xx
    /// answers; the error says what the last attempt got, without the URL.
    pub async fn post(&self, text: &str) -> Result<u32, String> {
        let body = serde_json::json!({ "text": text });
        let began = Instant::now();
        let mut wait = BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = BUDGET.saturating_sub(began.elapsed());
            let answer = self
                .http
                .post(self.url.clone())
                .timeout(ATTEMPT_TIMEOUT.min(left))
                .json(&body)
                .send()
                .await;
            let (why, asked) = match answer {
                Ok(r) if r.status().is_success() => return Ok(attempt),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let asked = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let why = format!("HTTP {status}");
                    if status != 429 && status < 500 {
                        // The receiver refused the message: another try
                        // would be refused the same way.
                        return Err(why);
                    }
                    (why, asked)
                }
                Err(e) => (error_chain(&e.without_url()), None),
            };
            let pause = asked.unwrap_or(wait).max(wait);
            if attempt >= ATTEMPTS || began.elapsed() + pause >= BUDGET {
                return Err(format!("{why} after {attempt} attempt(s)"));
            }
            tokio::time::sleep(pause).await;
            wait *= 2;
        }
    }
}

/// `https://hooks.example.com/…`: the scheme, host and port of a URL.
fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{Credentials, Secret};

    fn config() -> ClientConfig {
        ClientConfig::new(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            "s",
            Credentials::Bearer(Secret::new("t".to_string())),
        )
    }

    #[test]
    fn urls_are_checked_and_never_shown_whole() {
        let secret = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";
        let hook = Webhook::new(secret, &config()).unwrap();
        assert_eq!(hook.shown(), "https://hooks.slack.com/…");
        for (url, why) in [
            ("http://hooks.example.com/secret-path", "loopback"),
            ("ftp://hooks.example.com/secret-path", "https"),
            ("https://user:pw@hooks.example.com/secret-path", "password"),
            ("not a url secret-path", "not a URL"),
        ] {
            let err = Webhook::new(url, &config()).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secret-path") && !err.contains("pw"), "{err}");
        }
        let local = Webhook::new("http://127.0.0.1:9/hook-secret", &config()).unwrap();
        assert!(!format!("{local:?}").contains("hook-secret"));
    }
}
