//! Tokens printed by a program: `MDE_TOKEN_COMMAND` (any command, the
//! general escape hatch, like git's credential helpers and kubectl's exec
//! plugins) and the Azure CLI's `az account get-access-token` (the signed-in
//! user's token).
//!
//! The program runs again whenever the cached token nears expiry. What it
//! prints on stdout is the token; what it prints on stderr may hold secrets
//! too, so it is never logged: a failure shows a bounded excerpt with
//! anything token-like removed. A program that does not finish within its
//! timeout is killed.

use std::process::Stdio;
use std::time::Duration;

use super::error::AuthError;
use super::secret::{Secret, scrub};
use super::token::{Fetched, MAX_TOKEN_LIFETIME, lifetime_of, lifetime_until};
use crate::text::excerpt;

/// How long a token program may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest excerpt of a program's stderr kept in an error.
const EXCERPT_CHARS: usize = 300;

/// Runs of token-like characters at least this long are redacted from a
/// program's stderr: tokens, keys and secrets are long and unbroken.
const TOKEN_RUN: usize = 24;

/// `MDE_TOKEN_COMMAND`: a shell command printing a bearer token, or JSON
/// with `access_token` and `expires_on` (Unix seconds or ISO 8601) or
/// `expires_in`.
#[derive(Debug, Clone)]
pub struct TokenCommand {
    /// The command line, run by `sh -c` (Unix) or `cmd /C` (Windows).
    pub command: String,
    /// How long it may run.
    pub timeout: Duration,
}

/// The Azure CLI's signed-in account.
#[derive(Debug, Clone)]
pub struct AzureCli {
    /// `--tenant` for `az`, when a tenant is set.
    pub tenant_id: Option<String>,
    /// How long `az` may run.
    pub timeout: Duration,
}

/// What a program printed, once it succeeded.
struct Output {
    /// Its stdout.
    stdout: Vec<u8>,
}

/// Redacts from `text` every run of at least [`TOKEN_RUN`] characters that
/// may belong to a token, a key or a secret (letters, digits, `-_.~+/=`),
/// and each of `secrets`.
pub(crate) fn scrub_tokens(text: &str, secrets: &[&str]) -> String {
    let text = scrub(text, secrets);
    let is_token = |c: char| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= TOKEN_RUN {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_token(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Runs `program args`, stdin closed, with `timeout`; `method` and `what`
/// name it in errors.
async fn run(
    method: &'static str,
    what: &str,
    mut command: tokio::process::Command,
    timeout: Duration,
) -> Result<Output, AuthError> {
    let fail =
        |message: String, transient: bool| AuthError::Credential { method, message, transient };
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound && method == "azure-cli" {
            ": the Azure CLI (az) was not found on PATH; install it, or choose another --auth"
        } else {
            ""
        };
        fail(format!("cannot start {what}: {e}{hint}"), false)
    })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(fail(format!("{what} failed: {e}"), true)),
        Err(_) => {
            return Err(fail(
                format!("{what} did not finish within {} s and was stopped", timeout.as_secs()),
                true,
            ));
        }
    };
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown = excerpt(&scrub_tokens(&stderr, &[stdout.trim()]), EXCERPT_CHARS);
        let code = output.status.code().map_or_else(|| "a signal".to_string(), |c| c.to_string());
        let mut message = format!("{what} exited with {code}");
        if !shown.trim().is_empty() {
            message.push_str(&format!(": {shown}"));
        }
        if method == "azure-cli" && stderr.contains("az login") {
            message.push_str(" (run az login, or az login --tenant <tenant> for this tenant)");
        }
        return Err(fail(message, false));
    }
    Ok(Output { stdout: output.stdout })
}

/// A number, or a string of digits.
fn whole(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An ISO 8601 UTC instant (`2026-12-01T10:00:00Z`, a fraction accepted)
/// as Unix seconds.
fn iso_epoch(text: &str) -> Option<u64> {
    let t = super::super::time::parse_utc(text)?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Reads a token command's stdout: JSON with `access_token` (and an expiry),
/// or the bare token. Never quotes the output.
pub(crate) fn parse_command_output(stdout: &[u8]) -> Result<Fetched, AuthError> {
    let fail = |message: &str| AuthError::Credential {
        method: "token-command",
        message: format!("MDE_TOKEN_COMMAND printed {message}"),
        transient: false,
    };
    let text = std::str::from_utf8(stdout).map_err(|_| fail("text that is not UTF-8"))?.trim();
    if text.is_empty() {
        return Err(fail("nothing"));
    }
    if text.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| fail("a JSON object that cannot be read"))?;
        let token = match value.get("access_token").or_else(|| value.get("accessToken")) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(fail("JSON without an access_token string")),
        };
        let lifetime = match value.get("expires_on").or_else(|| value.get("expiresOn")) {
            Some(v) if whole(v).is_some() => whole(v).map(lifetime_until),
            Some(serde_json::Value::String(s)) => match iso_epoch(s) {
                Some(on) => Some(lifetime_until(on)),
                None => {
                    return Err(fail("an expires_on that is neither Unix seconds nor ISO 8601"));
                }
            },
            Some(_) => return Err(fail("an expires_on that is neither Unix seconds nor ISO 8601")),
            None => None,
        };
        let lifetime = lifetime
            .or_else(|| {
                value
                    .get("expires_in")
                    .and_then(whole)
                    .map(|s| Duration::from_secs(s).min(MAX_TOKEN_LIFETIME))
            })
            .unwrap_or_else(|| lifetime_of(&token));
        return Ok(Fetched { token: Secret::new(token), lifetime });
    }
    if text.contains(char::is_whitespace) {
        return Err(fail("more than one word (a bearer token is one)"));
    }
    let token = text.strip_prefix("Bearer ").unwrap_or(text).to_string();
    let lifetime = lifetime_of(&token);
    Ok(Fetched { token: Secret::new(token), lifetime })
}

/// Reads `az account get-access-token --output json`: `accessToken`, and
/// `expires_on` (Unix seconds, az 2.54 and later), else the token's own
/// `exp` (older versions print only `expiresOn`, in local time without a
/// zone, which cannot be read reliably).
pub(crate) fn parse_az_output(stdout: &[u8]) -> Result<Fetched, AuthError> {
    let fail = |message: &str| AuthError::Credential {
        method: "azure-cli",
        message: format!("az account get-access-token printed {message}"),
        transient: false,
    };
    let value: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|_| fail("something that is not JSON"))?;
    let token = match value.get("accessToken") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(fail("JSON without an accessToken string")),
    };
    let lifetime =
        value.get("expires_on").and_then(whole).map_or_else(|| lifetime_of(&token), lifetime_until);
    Ok(Fetched { token: Secret::new(token), lifetime })
}

/// The shell that runs a token command.
fn shell(command: &str) -> tokio::process::Command {
    #[cfg(windows)]
    {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(command);
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    }
}

/// The Azure CLI program: `az` on PATH (`az.cmd` on Windows, a batch file).
fn az_program() -> &'static str {
    if cfg!(windows) { "az.cmd" } else { "az" }
}

/// The variables a token command finds in its environment, naming the
/// audience the token is for: the v2 scope and the v1 resource. A command
/// that serves one audience may ignore them; one run asks for the MDE API's
/// token and, with `--query`, for Microsoft Graph's.
pub const TOKEN_SCOPE_VARIABLE: &str = "MDE_TOKEN_SCOPE";
/// See [`TOKEN_SCOPE_VARIABLE`].
pub const TOKEN_RESOURCE_VARIABLE: &str = "MDE_TOKEN_RESOURCE";

impl TokenCommand {
    /// Runs the command for the audience of `scope` (named to it in
    /// [`TOKEN_SCOPE_VARIABLE`] and [`TOKEN_RESOURCE_VARIABLE`]) and reads
    /// the token it prints.
    pub(crate) async fn fetch(&self, scope: &str, resource: &str) -> Result<Fetched, AuthError> {
        let mut command = shell(&self.command);
        command.env(TOKEN_SCOPE_VARIABLE, scope).env(TOKEN_RESOURCE_VARIABLE, resource);
        let out = run("token-command", "MDE_TOKEN_COMMAND", command, self.timeout).await?;
        parse_command_output(&out.stdout)
    }
}

impl AzureCli {
    /// `az account get-access-token --resource R --output json [--tenant T]`.
    pub(crate) async fn fetch(&self, resource: &str) -> Result<Fetched, AuthError> {
        let mut command = tokio::process::Command::new(az_program());
        command.args(["account", "get-access-token", "--resource", resource, "--output", "json"]);
        if let Some(t) = self.tenant_id.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            command.args(["--tenant", t]);
        }
        let out = run("azure-cli", "az account get-access-token", command, self.timeout).await?;
        parse_az_output(&out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_shapes() {
        let f = parse_command_output(b"  opaque-token-1\n").unwrap();
        assert_eq!(f.token.expose(), "opaque-token-1");
        assert_eq!(f.lifetime, super::super::token::UNSTATED_LIFETIME);
        let f = parse_command_output(br#"{"access_token":"tok","expires_in":120}"#).unwrap();
        assert_eq!((f.token.expose(), f.lifetime), ("tok", Duration::from_secs(120)));
        let on = super::super::token::epoch_now() + 900;
        for body in [
            format!(r#"{{"access_token":"tok","expires_on":{on}}}"#),
            format!(r#"{{"access_token":"tok","expires_on":"{on}"}}"#),
        ] {
            let f = parse_command_output(body.as_bytes()).unwrap();
            assert!(
                f.lifetime <= Duration::from_secs(900) && f.lifetime >= Duration::from_secs(890)
            );
        }
        let f =
            parse_command_output(br#"{"access_token":"tok","expires_on":"2000-01-01T00:00:00Z"}"#)
                .unwrap();
        assert_eq!(f.lifetime, Duration::ZERO);
        for bad in [
            &b""[..],
            b"two words",
            br#"{"token":"x"}"#,
            br#"{"access_token":"x","expires_on":"soon"}"#,
        ] {
            let err = parse_command_output(bad).unwrap_err();
            assert!(!err.is_transient(), "{err}");
        }
        let err = parse_command_output(br#"{"access_token":"leaky-value","expires_on":"soon"}"#)
            .unwrap_err();
        assert!(!err.to_string().contains("leaky"), "{err}");
    }

    #[test]
    fn az_output_shapes() {
        let on = super::super::token::epoch_now() + 3000;
        let body = format!(
            r#"{{"accessToken":"az-tok","expiresOn":"2026-12-01 23:59:00.000000","expires_on":{on},"subscription":"s","tenant":"t","tokenType":"Bearer"}}"#
        );
        let f = parse_az_output(body.as_bytes()).unwrap();
        assert_eq!(f.token.expose(), "az-tok");
        assert!(f.lifetime >= Duration::from_secs(2990));
        let f = parse_az_output(
            br#"{"accessToken":"az-tok","expiresOn":"2026-12-01 23:59:00.000000"}"#,
        )
        .unwrap();
        assert_eq!(f.lifetime, super::super::token::UNSTATED_LIFETIME);
        assert!(parse_az_output(b"ERROR: Please run 'az login'").is_err());
    }

    #[test]
    fn stderr_excerpts_lose_anything_token_like() {
        let text = "error: refresh failed for eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig-part and s3cr3t\n";
        let out = scrub_tokens(text, &["s3cr3t"]);
        assert_eq!(out, "error: refresh failed for [redacted] and [redacted]\n");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_command_runs_fails_and_times_out() {
        let ok =
            TokenCommand { command: "printf 'tok-%s' 7".into(), timeout: Duration::from_secs(10) };
        let (scope, resource) = ("https://api.securitycenter.microsoft.com/.default", "r");
        assert_eq!(ok.fetch(scope, resource).await.unwrap().token.expose(), "tok-7");
        // The command learns the audience asked for.
        let aware = TokenCommand {
            command: "printf '%s|%s' \"$MDE_TOKEN_SCOPE\" \"$MDE_TOKEN_RESOURCE\"".into(),
            timeout: Duration::from_secs(10),
        };
        let printed = aware
            .fetch("https://graph.microsoft.com/.default", "https://graph.microsoft.com")
            .await
            .unwrap();
        assert_eq!(
            printed.token.expose(),
            "https://graph.microsoft.com/.default|https://graph.microsoft.com"
        );
        let failing = TokenCommand {
            command: "echo 'no luck: AbCdEfGhIjKlMnOpQrStUvWxYz0123456789' >&2; exit 3".into(),
            timeout: Duration::from_secs(10),
        };
        let err = failing.fetch(scope, resource).await.unwrap_err().to_string();
        assert!(err.contains("exited with 3") && err.contains("no luck: [redacted]"), "{err}");
        let slow = TokenCommand { command: "sleep 30".into(), timeout: Duration::from_millis(200) };
        let err = slow.fetch(scope, resource).await.unwrap_err();
        assert!(err.is_transient() && err.to_string().contains("did not finish"), "{err}");
    }
}
