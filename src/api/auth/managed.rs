//! Managed identity: the Azure host (VM, scale set, App Service, Functions,
//! Container Apps, Arc-less pods with the IMDS emulation) hands out tokens
//! for its system-assigned identity or a user-assigned one, over a local
//! endpoint that needs no secret from us.
//!
//! Four shapes of that endpoint exist:
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
//! - Azure Arc's agent on a server outside Azure: `IDENTITY_ENDPOINT` (with
//!   `IMDS_ENDPOINT` beside it) and `Metadata: true`, api-version
//!   2020-06-01. It answers a first request 401 with `WWW-Authenticate:
//!   Basic realm=<file>`, a `.key` file in the agent's token directory that
//!   only administrators can read; the request is sent again with
//!   `Authorization: Basic <its content>`. Proving that the caller may read
//!   that directory is the agent's guard, so the file is read only if it
//!   lies in that directory, ends in `.key` and holds at most 4,096 bytes
//!   (as the Azure SDKs check), never wherever the answer points.
//!
//! The IMDS documentation asks for retries of 404, 410, 429 and 5xx: those
//! answers are transient [`AuthError::Identity`] errors, retried by the call
//! engine with its stoppable back-off like any transient failure.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;
use reqwest::header::ACCEPT;

use super::endpoint::{Answer, exchange};
use super::error::AuthError;
use super::secret::{Secret, scrub};
use super::token::{FetchContext, Fetched, MAX_TOKEN_LIFETIME, lifetime_of, lifetime_until};
use crate::text::excerpt;

/// Where IMDS answers on every Azure VM.
pub const IMDS_DEFAULT_BASE: &str = "http://169.254.169.254";

/// The only address plain http is accepted for besides loopback.
const IMDS_ADDRESS: [u8; 4] = [169, 254, 169, 254];

/// The largest key file Azure Arc's challenge may name.
const ARC_KEY_MAX_BYTES: u64 = 4096;

/// Where Azure Arc's agent writes its key files on this platform: the
/// directory its challenge must point into. `program_data` is
/// `%ProgramData%` on Windows.
pub fn arc_key_dir(program_data: Option<&str>) -> PathBuf {
    if cfg!(windows) {
        Path::new(program_data.unwrap_or(r"C:\ProgramData"))
            .join("AzureConnectedMachine")
            .join("Tokens")
    } else {
        PathBuf::from("/var/opt/azcmagent/tokens")
    }
}

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
    /// Azure Arc's agent (`IDENTITY_ENDPOINT` with `IMDS_ENDPOINT`).
    Arc {
        /// The token URL itself.
        endpoint: String,
        /// The directory its key files must lie in ([`arc_key_dir`], or
        /// `MDEBULK_ARC_KEY_DIR`).
        key_dir: PathBuf,
    },
}

/// Which user-assigned identity to ask for: the three ids Azure gives one,
/// any of which the Azure SDKs let a caller name it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssigned {
    /// Its application (client) id.
    ClientId(String),
    /// Its service principal's object (principal) id.
    ObjectId(String),
    /// Its Azure resource id (`/subscriptions/.../userAssignedIdentities/NAME`).
    ResourceId(String),
}

impl UserAssigned {
    /// The query parameter that names it on `endpoint`: IMDS says
    /// `client_id`/`object_id`/`msi_res_id` (E-IMDS), App Service
    /// `client_id`/`principal_id`/`mi_res_id` (AZ-APPSVC), and its 2017
    /// shape knows `clientid` only.
    fn parameter(&self, endpoint: &IdentityEndpoint) -> Result<(&'static str, &str), String> {
        Ok(match (self, endpoint) {
            (_, IdentityEndpoint::Arc { .. }) => {
                return Err("Azure Arc has only the machine's system-assigned identity: leave out the user-assigned identity (--managed-identity-*, AZURE_CLIENT_ID)".to_string());
            }
            (UserAssigned::ClientId(id), IdentityEndpoint::Msi2017 { .. }) => ("clientid", id),
            (UserAssigned::ClientId(id), _) => ("client_id", id),
            (UserAssigned::ObjectId(id), IdentityEndpoint::Imds { .. }) => ("object_id", id),
            (UserAssigned::ObjectId(id), IdentityEndpoint::AppService { .. }) => {
                ("principal_id", id)
            }
            (UserAssigned::ResourceId(id), IdentityEndpoint::Imds { .. }) => ("msi_res_id", id),
            (UserAssigned::ResourceId(id), IdentityEndpoint::AppService { .. }) => {
                ("mi_res_id", id)
            }
            (_, IdentityEndpoint::Msi2017 { .. }) => {
                return Err("the 2017-09-01 endpoint (MSI_ENDPOINT) names a user-assigned identity by its client id only".to_string());
            }
        })
    }
}

/// A managed identity: where to ask, and which identity.
#[derive(Debug, Clone)]
pub struct ManagedIdentity {
    /// The endpoint of this host.
    pub endpoint: IdentityEndpoint,
    /// A user-assigned identity; `None` for the system-assigned one.
    pub identity: Option<UserAssigned>,
}

impl ManagedIdentity {
    /// The endpoint's shape, for `auth check` and logs.
    pub fn shape(&self) -> &'static str {
        match self.endpoint {
            IdentityEndpoint::Imds { .. } => "IMDS",
            IdentityEndpoint::AppService { .. } => "App Service",
            IdentityEndpoint::Msi2017 { .. } => "App Service (2017-09-01)",
            IdentityEndpoint::Arc { .. } => "Azure Arc",
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
            IdentityEndpoint::Arc { endpoint, .. } => {
                if let Some(identity) = &self.identity {
                    return Err(identity.parameter(&self.endpoint).err().unwrap_or_default());
                }
                ("IDENTITY_ENDPOINT", endpoint.as_str(), false)
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
            IdentityEndpoint::Arc { endpoint, .. } => {
                (endpoint.trim().to_string(), vec![("api-version", "2020-06-01")])
            }
        };
        pairs.push(("resource", resource));
        if let Some(identity) = &self.identity {
            let (key, id) = identity.parameter(&self.endpoint).map_err(|e| invalid(&raw, e))?;
            let id = id.trim();
            if !id.is_empty() {
                pairs.push((key, id));
            }
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
            IdentityEndpoint::Arc { .. } => ("Metadata", "true"),
        };
        let request =
            || ctx.http.get(url.clone()).header(name, value).header(ACCEPT, "application/json");
        let mut secrets = vec![value.to_string()];
        let mut answer = exchange(request(), &shown, &[value]).await?;
        if let (IdentityEndpoint::Arc { key_dir, .. }, 401) = (&self.endpoint, answer.status) {
            let key = arc_key(answer.challenge.as_deref(), key_dir)?;
            secrets.push(key.expose().to_string());
            let authorization = format!("Basic {}", key.expose());
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            answer = exchange(
                request().header(reqwest::header::AUTHORIZATION, authorization),
                &shown,
                &secrets,
            )
            .await?;
        }
        let Answer { status, body, .. } = answer;
        if (200..300).contains(&status) {
            return parse_identity_reply(status, &body);
        }
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        Err(parse_identity_error(&shown, status, &body, &secrets))
    }
}

/// The key Azure Arc's `challenge` (`Basic realm=<file>`) names, read only
/// from a `.key` file of at most 4,096 bytes directly in `key_dir`.
fn arc_key(challenge: Option<&str>, key_dir: &Path) -> Result<Secret, AuthError> {
    let refuse = |message: String| AuthError::Credential {
        method: "managed-identity",
        message: format!("Azure Arc: {message}"),
        transient: false,
    };
    let realm = challenge
        .map(str::trim)
        .and_then(|c| c.get(..6).filter(|s| s.eq_ignore_ascii_case("basic ")).map(|_| &c[6..]))
        .and_then(|rest| rest.trim_start().strip_prefix("realm="))
        .map(|r| r.trim().trim_matches('"'))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            refuse("the agent answered 401 without a Basic realm naming its key file".to_string())
        })?;
    let file = Path::new(realm);
    let shown = crate::text::quote(realm);
    if file.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(refuse(format!("the challenge names {shown}, which is not a .key file")));
    }
    let dir_of = |p: &Path| std::fs::canonicalize(p).ok();
    let (Some(parent), Some(expected)) = (file.parent().and_then(dir_of), dir_of(key_dir)) else {
        return Err(refuse(format!(
            "the challenge names {shown}, outside the agent's key directory {} (or it is unreadable)",
            key_dir.display()
        )));
    };
    if parent != expected {
        return Err(refuse(format!(
            "the challenge names {shown}, outside the agent's key directory {}",
            key_dir.display()
        )));
    }
    let unreadable = |e: std::io::Error| {
        refuse(format!(
            "cannot read the key file {shown}: {e} (reading it needs the agent's group: himds on Linux, Administrators or \"Hybrid agent extension applications\" on Windows)"
        ))
    };
    let size = std::fs::metadata(file).map_err(unreadable)?.len();
    if size > ARC_KEY_MAX_BYTES {
        return Err(refuse(format!(
            "the key file {shown} holds {size} bytes, more than a key's {ARC_KEY_MAX_BYTES}"
        )));
    }
    let key = std::fs::read_to_string(file).map_err(unreadable)?;
    Ok(Secret::new(key.trim().to_string()))
}

/// A number or a string of digits.
fn whole(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads a token reply: `access_token`, and its expiry from `expires_in`,
/// `expires_on` (Unix seconds, a string on IMDS and App Service), or the
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
    // `expires_in` first: relative, so a skewed clock does not matter.
    let lifetime = if let Some(secs) = value.get("expires_in").and_then(whole) {
        std::time::Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME)
    } else if let Some(on) = value.get("expires_on").and_then(whole) {
        lifetime_until(on)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    const RESOURCE: &str = "https://api.securitycenter.microsoft.com";

    fn imds(base: &str, client_id: Option<&str>) -> ManagedIdentity {
        ManagedIdentity {
            endpoint: IdentityEndpoint::Imds { base: base.to_string() },
            identity: client_id.map(|c| UserAssigned::ClientId(c.to_string())),
        }
    }

    #[test]
    fn the_default_imds_address_is_the_link_local_one() {
        assert_eq!(IMDS_DEFAULT_BASE, "http://169.254.169.254");
        // Building its URL sends nothing.
        let url = imds(IMDS_DEFAULT_BASE, None).url(RESOURCE).unwrap();
        assert_eq!(
            url.as_str(),
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.securitycenter.microsoft.com"
        );
    }

    #[test]
    fn user_assigned_identities_by_each_id_use_each_shapes_parameter() {
        let imds = |identity| ManagedIdentity {
            endpoint: IdentityEndpoint::Imds { base: "http://127.0.0.1:9".into() },
            identity: Some(identity),
        };
        let app = |identity| ManagedIdentity {
            endpoint: IdentityEndpoint::AppService {
                endpoint: "http://127.0.0.1:9/msi/token".into(),
                header: Secret::new("h"),
            },
            identity: Some(identity),
        };
        let old = |identity| ManagedIdentity {
            endpoint: IdentityEndpoint::Msi2017 {
                endpoint: "http://127.0.0.1:9/msi/token".into(),
                secret: Secret::new("s"),
            },
            identity: Some(identity),
        };
        let query = |m: ManagedIdentity| m.url("r").map(|u| u.query().unwrap_or("").to_string());
        let id = || UserAssigned::ObjectId("o-1".into());
        let res = || UserAssigned::ResourceId("/subscriptions/s/rg/x".into());
        assert!(query(imds(id())).unwrap().ends_with("&object_id=o-1"));
        assert!(query(imds(res())).unwrap().ends_with("&msi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fx"));
        assert!(query(app(id())).unwrap().ends_with("&principal_id=o-1"));
        assert!(query(app(res())).unwrap().contains("&mi_res_id="));
        assert!(query(old(UserAssigned::ClientId("c".into()))).unwrap().ends_with("&clientid=c"));
        assert!(matches!(query(old(id())), Err(AuthError::InvalidEndpoint { .. })));
    }

    #[test]
    fn arc_reads_only_a_small_key_file_in_the_agents_directory() {
        let agent = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let write = |dir: &Path, name: &str, content: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            path.display().to_string()
        };
        let good = write(agent.path(), "a1.key", b"k3y-value\n");
        let read = |challenge: &str| arc_key(Some(challenge), agent.path());
        assert_eq!(read(&format!("Basic realm={good}")).unwrap().expose(), "k3y-value");
        assert_eq!(read(&format!("basic realm=\"{good}\"")).unwrap().expose(), "k3y-value");

        let refused = |challenge: Option<&str>| match arc_key(challenge, agent.path()) {
            Err(AuthError::Credential {
                method: "managed-identity",
                message,
                transient: false,
            }) => message,
            other => panic!("{challenge:?}: {other:?}"),
        };
        assert!(refused(None).contains("without a Basic realm"));
        assert!(refused(Some(&format!("Bearer realm={good}"))).contains("without a Basic realm"));
        let not_key = write(agent.path(), "a1.txt", b"k");
        assert!(refused(Some(&format!("Basic realm={not_key}"))).contains("not a .key file"));
        let outside = write(elsewhere.path(), "a2.key", b"k");
        assert!(refused(Some(&format!("Basic realm={outside}"))).contains("outside the agent's"));
        // `agent/../<elsewhere>/a2.key`: a path that starts in the agent's
        // directory and climbs out of it.
        let sibling = elsewhere.path().file_name().unwrap();
        let climbing = agent.path().join("..").join(sibling).join("a2.key").display().to_string();
        assert!(refused(Some(&format!("Basic realm={climbing}"))).contains("outside the agent's"));
        let big = write(agent.path(), "big.key", &[b'k'; 4097]);
        assert!(refused(Some(&format!("Basic realm={big}"))).contains("4097 bytes"));
        let missing = agent.path().join("gone.key").display().to_string();
        assert!(refused(Some(&format!("Basic realm={missing}"))).contains("cannot read"));
    }

    #[test]
    fn arc_asks_with_its_own_api_version_and_has_no_user_assigned_identity() {
        let arc = |identity| ManagedIdentity {
            endpoint: IdentityEndpoint::Arc {
                endpoint: "http://localhost:40342/metadata/identity/oauth2/token".into(),
                key_dir: PathBuf::from("/var/opt/azcmagent/tokens"),
            },
            identity,
        };
        let url = arc(None).url(RESOURCE).unwrap();
        assert!(url.query().unwrap().starts_with("api-version=2020-06-01&resource="), "{url}");
        assert!(arc(None).check().is_ok());
        let user = arc(Some(UserAssigned::ClientId("c".into())));
        assert!(user.check().unwrap_err().contains("only the machine's system-assigned identity"));
        assert_eq!(
            arc_key_dir(None),
            PathBuf::from(if cfg!(windows) {
                r"C:\ProgramData\AzureConnectedMachine\Tokens"
            } else {
                "/var/opt/azcmagent/tokens"
            })
        );
    }

    #[test]
    fn urls_of_each_shape() {
        let url = imds("http://127.0.0.1:9/", Some("uai-1")).url(RESOURCE).unwrap();
        assert_eq!(url.path(), "/metadata/identity/oauth2/token");
        assert!(url.query().unwrap().ends_with("&client_id=uai-1"), "{url}");
        let app = ManagedIdentity {
            endpoint: IdentityEndpoint::AppService {
                endpoint: "http://127.0.0.1:41741/msi/token".into(),
                header: Secret::new("h"),
            },
            identity: Some(UserAssigned::ClientId("uai-2".into())),
        };
        let url = app.url(RESOURCE).unwrap();
        assert_eq!(url.path(), "/msi/token");
        assert!(url.query().unwrap().starts_with("api-version=2019-08-01&resource="));
        assert!(url.query().unwrap().ends_with("&client_id=uai-2"));
        let old = ManagedIdentity {
            endpoint: IdentityEndpoint::Msi2017 {
                endpoint: "http://localhost:8081/msi/token".into(),
                secret: Secret::new("s"),
            },
            identity: Some(UserAssigned::ClientId("uai-3".into())),
        };
        let url = old.url(RESOURCE).unwrap();
        assert!(url.query().unwrap().starts_with("api-version=2017-09-01&"));
        assert!(url.query().unwrap().ends_with("&clientid=uai-3"));
    }

    #[test]
    fn plain_http_only_to_loopback_and_for_imds_its_address() {
        for ok in [
            "http://169.254.169.254",
            "http://127.0.0.1:8080",
            "http://localhost",
            "https://imds.example",
        ] {
            assert!(imds(ok, None).check().is_ok(), "{ok}");
        }
        for bad in [
            "http://169.254.169.253",
            "http://10.0.0.1",
            "http://imds.example",
            "http://u:p@127.0.0.1",
            "ftp://127.0.0.1",
        ] {
            assert!(imds(bad, None).check().is_err(), "{bad}");
        }
        let app = |endpoint: &str| ManagedIdentity {
            endpoint: IdentityEndpoint::AppService {
                endpoint: endpoint.into(),
                header: Secret::new("h"),
            },
            identity: None,
        };
        assert!(app("http://127.0.0.1:41741/msi/token").check().is_ok());
        // The IMDS exception is for IMDS only.
        assert!(app("http://169.254.169.254/msi/token").check().is_err());
        let no_header = ManagedIdentity {
            endpoint: IdentityEndpoint::AppService {
                endpoint: "http://127.0.0.1:1/msi/token".into(),
                header: Secret::new(""),
            },
            identity: None,
        };
        assert!(no_header.check().unwrap_err().contains("IDENTITY_HEADER"));
    }

    #[test]
    fn reads_the_documented_replies() {
        for name in ["imds-token-200.json", "appservice-token-200.json"] {
            let body =
                std::fs::read(format!("/work/shared/fixtures/addendum/{name}")).or_else(|_| {
                    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
                });
            let Ok(body) = body else { continue };
            let f = parse_identity_reply(200, &body).unwrap();
            assert!(f.token.expose().starts_with("eyJ0eXAi"), "{name}");
        }
        let f = parse_identity_reply(
            200,
            br#"{"access_token":"t","expires_in":"3599","expires_on":"1"}"#,
        )
        .unwrap();
        assert_eq!(f.lifetime, Duration::from_secs(3599));
        let err = parse_identity_reply(200, br#"{"access_token":""}"#).unwrap_err();
        assert!(matches!(err, AuthError::Malformed { .. }));
    }

    /// Requests seen: query and the two headers that matter.
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

    async fn endpoint(status: StatusCode) -> (String, Seen) {
        let seen: Seen = Arc::default();
        async fn answer(
            State((seen, status)): State<(Seen, StatusCode)>,
            RawQuery(q): RawQuery,
            headers: HeaderMap,
        ) -> Response {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            seen.lock().unwrap().push((
                q.unwrap_or_default(),
                h("metadata"),
                h("x-identity-header"),
            ));
            if status != StatusCode::OK {
                let body = serde_json::json!({"error": "invalid_resource", "error_description": "AADSTS50001: no such app; header was hdr-s3cret"});
                return (status, axum::Json(body)).into_response();
            }
            let body = serde_json::json!({"access_token": "mi-token", "expires_in": "3599", "token_type": "Bearer"});
            axum::Json(body).into_response()
        }
        let router = Router::new()
            .route("/metadata/identity/oauth2/token", get(answer))
            .route("/msi/token", get(answer))
            .with_state((seen.clone(), status));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn ctx(http: &reqwest::Client) -> FetchContext<'_> {
        FetchContext {
            http,
            login_base: "unused",
            scope: "https://api.securitycenter.microsoft.com/.default",
        }
    }

    #[tokio::test]
    async fn asks_with_the_right_header_and_identity() {
        let http = reqwest::Client::new();
        let (base, seen) = endpoint(StatusCode::OK).await;
        let f = imds(&base, Some("uai-1")).fetch(ctx(&http)).await.unwrap();
        assert_eq!((f.token.expose(), f.lifetime), ("mi-token", Duration::from_secs(3599)));
        let app = ManagedIdentity {
            endpoint: IdentityEndpoint::AppService {
                endpoint: format!("{base}/msi/token"),
                header: Secret::new("hdr-s3cret"),
            },
            identity: None,
        };
        app.fetch(ctx(&http)).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "api-version=2018-02-01&resource=https%3A%2F%2Fapi.securitycenter.microsoft.com&client_id=uai-1"
        );
        assert_eq!(seen[0].1.as_deref(), Some("true"));
        assert_eq!(seen[1].2.as_deref(), Some("hdr-s3cret"));
        assert!(seen[1].0.starts_with("api-version=2019-08-01&resource="));
        assert!(!seen[1].0.contains("client_id"));
    }

    #[tokio::test]
    async fn errors_are_transient_as_documented_and_hide_the_header() {
        let http = reqwest::Client::new();
        for (status, transient) in [
            (404, true),
            (410, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (401, false),
            (403, false),
        ] {
            let (base, _) = endpoint(StatusCode::from_u16(status).unwrap()).await;
            let app = ManagedIdentity {
                endpoint: IdentityEndpoint::AppService {
                    endpoint: format!("{base}/msi/token"),
                    header: Secret::new("hdr-s3cret"),
                },
                identity: None,
            };
            let err = app.fetch(ctx(&http)).await.unwrap_err();
            assert_eq!(err.is_transient(), transient, "{status}: {err}");
            let text = format!("{err} {err:?}");
            assert!(text.contains("AADSTS50001") && !text.contains("hdr-s3cret"), "{text}");
            assert_eq!(err.code(), "invalid_resource");
        }
    }
}
