//! The tenant profiles file of a run over many tenants (`--tenants FILE`,
//! TOML): per tenant its id, how to log in, where its API is and its
//! quota. Read and checked here, whole, before anything is sent; the
//! commands make each profile a client of its own.
//!
//! Secrets are never in the file, only where to find them: an environment
//! variable (`client_secret_env`), a file (`client_secret_file`), a
//! certificate file, a federated token file or a command. A file that
//! holds one inline is refused without quoting it: such a file is copied,
//! mailed and checked in far more often than a secret should be.
//!
//! ```toml
//! [tenant.contoso]
//! tenant_id = "00000000-0000-0000-0000-000000000001"
//! auth = "secret"
//! client_id = "11111111-2222-3333-4444-555555555555"
//! client_secret_env = "CONTOSO_SECRET"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Deserialize;

use crate::api::cloud::Cloud;
use crate::pace::{Limit, parse_limits};

/// The largest profiles file read: thousands of tenants fit in far less.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The longest profile name: rows carry it, and it names the tenant's files.
const MAX_NAME_CHARS: usize = 64;

/// One tenant's profile, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The name rows use (`[tenant.NAME]`).
    pub name: String,
    /// The directory (tenant) id or a verified domain of it.
    pub tenant_id: String,
    /// How to log in: a `--auth` method name.
    pub auth: String,
    /// The app (client) id, for the methods that log in as an app.
    pub client_id: Option<String>,
    /// The environment variable that holds the client secret.
    pub client_secret_env: Option<String>,
    /// The file that holds the client secret (its first line).
    pub client_secret_file: Option<PathBuf>,
    /// The certificate (PEM or PFX) of `auth = "certificate"`.
    pub certificate_path: Option<PathBuf>,
    /// The environment variable that holds the certificate's password.
    pub certificate_password_env: Option<String>,
    /// Send the certificate's chain (`x5c`), for subject-name/issuer auth.
    pub send_certificate_chain: bool,
    /// The federated token file of `auth = "workload-identity"`.
    pub federated_token_file: Option<PathBuf>,
    /// The command of `auth = "token-command"` (it prints a token).
    pub token_command: Option<String>,
    /// The environment variable that holds a ready token (`auth = "token"`).
    pub token_env: Option<String>,
    /// A user-assigned managed identity by client id.
    pub managed_identity_client_id: Option<String>,
    /// A user-assigned managed identity by object id.
    pub managed_identity_object_id: Option<String>,
    /// A user-assigned managed identity by Azure resource id.
    pub managed_identity_resource_id: Option<String>,
    /// The tenant's cloud (its API and login hosts), when not the run's.
    pub cloud: Option<Cloud>,
    /// The API base URL, over the cloud's (a simulator, a proxy).
    pub api_url: Option<String>,
    /// The login base URL, over the cloud's.
    pub login_url: Option<String>,
    /// The tenant's quota per API, when not the run's `--limit`.
    pub limits: Option<Vec<Limit>>,
}

impl Profile {
    /// The tenant's quota: the profile's own, else the run's `--limit`.
    pub fn limits_or(&self, run: &[Limit]) -> Vec<Limit> {
        self.limits.clone().unwrap_or_else(|| run.to_vec())
    }
}

/// The methods a profile may name, as `--auth` spells them.
pub const METHODS: [&str; 7] = [
    "secret",
    "certificate",
    "managed-identity",
    "workload-identity",
    "azure-cli",
    "token-command",
    "token",
];

/// A profile as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    tenant_id: Option<toml::Spanned<String>>,
    auth: Option<toml::Spanned<String>>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    certificate_path: Option<PathBuf>,
    certificate_password_env: Option<String>,
    #[serde(default)]
    send_certificate_chain: bool,
    federated_token_file: Option<PathBuf>,
    token_command: Option<String>,
    token_env: Option<String>,
    managed_identity_client_id: Option<String>,
    managed_identity_object_id: Option<String>,
    managed_identity_resource_id: Option<String>,
    cloud: Option<toml::Spanned<String>>,
    api_url: Option<String>,
    login_url: Option<String>,
    limits: Option<toml::Spanned<Vec<String>>>,
    // Secrets written inline: accepted as any value, so that the parser
    // never quotes them in an error, then refused.
    client_secret: Option<serde::de::IgnoredAny>,
    certificate_password: Option<serde::de::IgnoredAny>,
    token: Option<serde::de::IgnoredAny>,
    password: Option<serde::de::IgnoredAny>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tenant: BTreeMap<String, toml::Spanned<RawProfile>>,
}

/// Reads and checks the profiles file at `path`: every profile, in name
/// order. An error names the file, line and column, never a secret.
pub fn read(path: &Path) -> anyhow::Result<Vec<Profile>> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--tenants {shown}: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("--tenants {shown}: {} bytes, more than a profiles file holds", meta.len());
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("--tenants {shown}: {e}"))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            let (line, column) = crate::text::line_column(&valid, at);
            bail!(
                "--tenants {shown}, line {line}, column {column}: not UTF-8 text (save it as UTF-8)"
            );
        }
    };
    parse(text.trim_start_matches('\u{feff}'), path)
}

/// Checks the profiles text `text` read from `path`.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<Profile>> {
    let at = |span: Option<Range<usize>>| {
        let (line, column) = crate::text::line_column(text, span.map_or(0, |s| s.start));
        format!("--tenants {}, line {line}, column {column}", path.display())
    };
    let file: RawFile = toml::from_str(text).map_err(|e| {
        // The parser's message may quote a value: bounded and escaped.
        anyhow::anyhow!("{}: {}", at(e.span()), crate::text::clip(e.message().trim()).max(300))
    })?;
    if file.tenant.is_empty() {
        bail!(
            "{}: no tenant profile: add one [tenant.NAME] table per tenant (README, \"Many tenants in one run\")",
            at(None)
        );
    }
    let mut folded: BTreeMap<String, String> = BTreeMap::new();
    let mut profiles = Vec::with_capacity(file.tenant.len());
    for (name, raw) in file.tenant {
        let span = raw.span();
        let raw = raw.into_inner();
        let here = at(Some(span.clone()));
        check_name(&name).map_err(|why| {
            anyhow::anyhow!("{here}: tenant {}: {why}", crate::text::quote(&name))
        })?;
        if let Some(other) = folded.insert(name.to_lowercase(), name.clone()) {
            bail!(
                "{here}: tenants {other:?} and {name:?} differ only in case; rows could not tell them apart"
            );
        }
        profiles.push(profile(name, raw, &here)?);
    }
    Ok(profiles)
}

/// A profile name: letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit (it names the tenant's files and heads its rows' keys).
fn check_name(name: &str) -> Result<(), String> {
    let ok = name.chars().count() <= MAX_NAME_CHARS
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a profile name is 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

/// One profile, checked: its tenant, a known method with what it needs, no
/// inline secret.
fn profile(name: String, raw: RawProfile, here: &str) -> anyhow::Result<Profile> {
    let inline = [
        (
            "client_secret",
            raw.client_secret.is_some(),
            "client_secret_env = \"VAR\" or client_secret_file = \"PATH\"",
        ),
        (
            "certificate_password",
            raw.certificate_password.is_some(),
            "certificate_password_env = \"VAR\"",
        ),
        ("token", raw.token.is_some(), "token_env = \"VAR\", or auth = \"token-command\""),
        ("password", raw.password.is_some(), "an environment variable"),
    ];
    for (key, given, instead) in inline {
        if given {
            bail!(
                "{here}: tenant {name}: {key} is refused: secrets are never written in the profiles file (it gets copied, mailed and checked in); name where it is instead: {instead}"
            );
        }
    }
    let text = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let Some(tenant_id) =
        raw.tenant_id.map(|t| t.into_inner().trim().to_string()).filter(|t| !t.is_empty())
    else {
        bail!(
            "{here}: tenant {name}: tenant_id is missing (the directory id, or a verified domain)"
        );
    };
    let id_ok = tenant_id.len() <= 256
        && tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    if !id_ok {
        bail!(
            "{here}: tenant {name}: tenant_id {} is not a tenant id (a GUID) or domain",
            crate::text::quote(&tenant_id)
        );
    }
    let Some(auth) = raw.auth.map(|a| a.into_inner().trim().to_ascii_lowercase()) else {
        bail!("{here}: tenant {name}: auth is missing: one of {}", METHODS.join(", "));
    };
    if !METHODS.contains(&auth.as_str()) {
        bail!(
            "{here}: tenant {name}: auth {} is not one of {}",
            crate::text::quote(&auth),
            METHODS.join(", ")
        );
    }
    let cloud = match raw.cloud {
        Some(c) => Some(
            c.get_ref()
                .parse::<Cloud>()
                .map_err(|e| anyhow::anyhow!("{here}: tenant {name}: cloud: {e}"))?,
        ),
        None => None,
    };
    let limits = match raw.limits {
        Some(l) => Some(
            parse_limits(l.get_ref())
                .map_err(|e| anyhow::anyhow!("{here}: tenant {name}: limits: {e}"))?,
        ),
        None => None,
    };
    let p = Profile {
        name,
        tenant_id,
        auth,
        client_id: text(raw.client_id),
        client_secret_env: text(raw.client_secret_env),
        client_secret_file: raw.client_secret_file,
        certificate_path: raw.certificate_path,
        certificate_password_env: text(raw.certificate_password_env),
        send_certificate_chain: raw.send_certificate_chain,
        federated_token_file: raw.federated_token_file,
        token_command: text(raw.token_command),
        token_env: text(raw.token_env),
        managed_identity_client_id: text(raw.managed_identity_client_id),
        managed_identity_object_id: text(raw.managed_identity_object_id),
        managed_identity_resource_id: text(raw.managed_identity_resource_id),
        cloud,
        api_url: text(raw.api_url),
        login_url: text(raw.login_url),
        limits,
    };
    let need = |what: &str, has: bool| -> anyhow::Result<()> {
        if has {
            Ok(())
        } else {
            bail!("{here}: tenant {}: auth = \"{}\" needs {what}", p.name, p.auth)
        }
    };
    match p.auth.as_str() {
        "secret" => {
            need("client_id", p.client_id.is_some())?;
            need(
                "client_secret_env or client_secret_file (one of them)",
                p.client_secret_env.is_some() != p.client_secret_file.is_some(),
            )?;
        }
        "certificate" => {
            need("client_id", p.client_id.is_some())?;
            need("certificate_path", p.certificate_path.is_some())?;
        }
        "workload-identity" => {
            need("client_id", p.client_id.is_some())?;
            need("federated_token_file", p.federated_token_file.is_some())?;
        }
        "token-command" => need("token_command", p.token_command.is_some())?,
        "token" => need("token_env", p.token_env.is_some())?,
        _ => {}
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> anyhow::Result<Vec<Profile>> {
        parse(text, Path::new("tenants.toml"))
    }

    #[test]
    fn every_method_reads_with_its_settings_in_name_order() {
        let profiles = parsed(
            r#"
[tenant.fabrikam]
tenant_id = "fabrikam.onmicrosoft.com"
auth = "certificate"
client_id = "c2"
certificate_path = "fabrikam.pem"
cloud = "gcc-high"
limits = ["50/60s"]

[tenant.contoso]
tenant_id = "00000000-0000-0000-0000-000000000001"
auth = "secret"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "CONTOSO_SECRET"
api_url = "http://127.0.0.1:8080"

[tenant.northwind]
tenant_id = "22222222-0000-0000-0000-000000000002"
auth = "managed-identity"
managed_identity_client_id = "mi-client"
"#,
        )
        .unwrap();
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["contoso", "fabrikam", "northwind"]);
        assert_eq!(profiles[0].client_secret_env.as_deref(), Some("CONTOSO_SECRET"));
        assert_eq!(profiles[0].api_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(profiles[1].cloud, Some(Cloud::GccHigh));
        assert_eq!(profiles[1].limits.as_ref().map(Vec::len), Some(1));
        assert_eq!(profiles[2].managed_identity_client_id.as_deref(), Some("mi-client"));
    }

    #[test]
    fn an_inline_secret_is_refused_without_being_quoted() {
        let err = parsed(
            "[tenant.contoso]\ntenant_id = \"t\"\nauth = \"secret\"\nclient_id = \"c\"\nclient_secret = \"Sup3r-s3cret~value\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client_secret is refused"), "{err}");
        assert!(err.contains(", line "), "{err}");
        assert!(!err.contains("Sup3r"), "{err}");
        // Not even as a value of the wrong type, or unquoted.
        for bad in ["client_secret = 12345", "token = { a = \"Sup3r\" }"] {
            let text = format!("[tenant.c]\ntenant_id = \"t\"\nauth = \"azure-cli\"\n{bad}\n");
            let err = parsed(&text).unwrap_err().to_string();
            assert!(!err.contains("Sup3r") && !err.contains("12345"), "{err}");
        }
    }

    #[test]
    fn missing_and_unknown_settings_name_the_tenant_the_line_and_what_is_needed() {
        let cases = [
            ("[tenant.a]\nauth = \"secret\"\n", "tenant_id is missing"),
            ("[tenant.a]\ntenant_id = \"t\"\n", "auth is missing"),
            ("[tenant.a]\ntenant_id = \"t\"\nauth = \"magic\"\n", "is not one of"),
            (
                "[tenant.a]\ntenant_id = \"t\"\nauth = \"secret\"\nclient_id = \"c\"\n",
                "client_secret_env or client_secret_file",
            ),
            ("[tenant.a]\ntenant_id = \"t\"\nauth = \"token-command\"\n", "needs token_command"),
            (
                "[tenant.a]\ntenant_id = \"t\"\nauth = \"azure-cli\"\nclient_scret_env = \"X\"\n",
                "unknown field",
            ),
            ("[tenant.\"a/b\"]\ntenant_id = \"t\"\nauth = \"azure-cli\"\n", "a profile name is"),
            (
                "[tenant.A]\ntenant_id = \"t\"\nauth = \"azure-cli\"\n[tenant.a]\ntenant_id = \"u\"\nauth = \"azure-cli\"\n",
                "differ only in case",
            ),
            ("[tenant.a]\ntenant_id = \"t t\"\nauth = \"azure-cli\"\n", "is not a tenant id"),
            (
                "[tenant.a]\ntenant_id = \"t\"\nauth = \"azure-cli\"\nlimits = [\"ten/s\"]\n",
                "limits",
            ),
            ("", "no tenant profile"),
        ];
        for (text, expected) in cases {
            let err = parsed(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.starts_with("--tenants tenants.toml, line "), "{err}");
        }
    }
}
