//! The certificate credential: a private key and its certificate (PEM, or
//! PFX/PKCS#12 with a password) prove the app's identity with a signed
//! client assertion (RFC 7523) instead of a secret, as tenants that forbid
//! client secrets require.
//!
//! Each token request carries a fresh assertion: a new `jti` (Entra refuses
//! one it has seen), `nbf` now and `exp` ten minutes on. The header names
//! the certificate by its SHA-1 thumbprint (`x5t`), and with
//! `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` carries the chain (`x5c`) for
//! subject-name/issuer authentication.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use reqwest::Url;
use serde_json::{Map, Value};

use super::super::jwt::{
    Algorithm, Jws, SigningKey, b64_std, certificates_from_pem, thumbprint_hex, x5t,
};
use super::endpoint::{JWT_BEARER, request_token};
use super::error::AuthError;
use super::secret::Secret;
use super::token::{FetchContext, Fetched, epoch_now};

/// How long an assertion is valid: what the Azure SDKs use.
const ASSERTION_LIFETIME_SECS: u64 = 600;

/// What to check when Entra refuses the assertion.
const CHECK: &str = "check AZURE_CLIENT_ID and that the certificate in AZURE_CLIENT_CERTIFICATE_PATH is uploaded to that app registration (Certificates & secrets) and not expired";

/// An app registration's certificate credential.
#[derive(Clone)]
pub struct CertificateCredential {
    /// Directory (tenant) id or verified domain: part of the token URL.
    pub tenant_id: String,
    /// Application (client) id: `iss` and `sub` of the assertion.
    pub client_id: String,
    /// The private key that signs the assertions (shared by clones).
    key: Arc<SigningKey>,
    /// The certificates, the key's own first, then the rest of the chain.
    chain: Vec<Vec<u8>>,
    /// Whether the assertion carries the chain (`x5c`).
    pub send_chain: bool,
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("thumbprint", &self.thumbprint())
            .field("send_chain", &self.send_chain)
            .finish_non_exhaustive()
    }
}

/// A load failure, worded for the user.
fn unusable(message: String) -> AuthError {
    AuthError::Credential { method: "certificate", message, transient: false }
}

impl CertificateCredential {
    /// Reads `path`: PEM with a private key and its certificate (the chain
    /// may follow), or PFX/PKCS#12 opened with `password` (empty when none).
    pub fn from_file(
        tenant_id: &str,
        client_id: &str,
        path: &Path,
        password: Option<&Secret>,
        send_chain: bool,
    ) -> Result<CertificateCredential, AuthError> {
        let bytes = std::fs::read(path).map_err(|e| {
            unusable(format!("cannot read AZURE_CLIENT_CERTIFICATE_PATH {}: {e}", path.display()))
        })?;
        Self::from_bytes(tenant_id, client_id, &bytes, password, send_chain).map_err(|e| match e {
            AuthError::Credential { method, message, transient } => AuthError::Credential {
                method,
                message: format!("{}: {message}", path.display()),
                transient,
            },
            other => other,
        })
    }

    /// As [`CertificateCredential::from_file`], from the file's bytes.
    pub fn from_bytes(
        tenant_id: &str,
        client_id: &str,
        bytes: &[u8],
        password: Option<&Secret>,
        send_chain: bool,
    ) -> Result<CertificateCredential, AuthError> {
        let (key, certs) = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            if bytes.windows(21).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
                return Err(unusable(
                    "the PEM private key is encrypted; decrypt it (openssl pkey) or use a PFX file with AZURE_CLIENT_CERTIFICATE_PASSWORD".to_string(),
                ));
            }
            let key = SigningKey::from_pem(bytes).map_err(|e| unusable(format!("{e}")))?;
            let certs = certificates_from_pem(bytes).map_err(|e| unusable(format!("{e}")))?;
            (key, certs)
        } else {
            let password = password.map_or("", Secret::expose);
            let store = p12_keystore::KeyStore::from_pkcs12(
                bytes,
                password,
                p12_keystore::Pkcs12ImportPolicy::Strict,
            )
            .map_err(|e| {
                unusable(format!(
                    "not a PEM file, and not a PFX/PKCS#12 file this password opens ({e}); check AZURE_CLIENT_CERTIFICATE_PASSWORD"
                ))
            })?;
            let Some((_, chain)) = store.private_key_chain() else {
                return Err(unusable(
                    "the PFX file holds no private key with its certificate".into(),
                ));
            };
            let key =
                SigningKey::from_der(chain.key().as_der()).map_err(|e| unusable(format!("{e}")))?;
            let certs = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
            (key, certs)
        };
        let chain = leaf_first(&key, certs)?;
        Ok(CertificateCredential {
            tenant_id: tenant_id.trim().to_string(),
            client_id: client_id.trim().to_string(),
            key: Arc::new(key),
            chain,
            send_chain,
        })
    }

    /// The certificate's SHA-1 thumbprint in hex, as the portal shows it.
    pub fn thumbprint(&self) -> String {
        self.chain.first().map(|c| thumbprint_hex(c)).unwrap_or_default()
    }

    /// A fresh assertion for the token endpoint `aud`.
    pub(crate) fn assertion(&self, aud: &str) -> Result<String, AuthError> {
        let now = epoch_now();
        let mut header = Map::new();
        header.insert("typ".into(), Value::String("JWT".into()));
        header.insert("x5t".into(), Value::String(x5t(&self.chain[0])));
        if self.send_chain {
            let x5c = self.chain.iter().map(|c| Value::String(b64_std(c))).collect();
            header.insert("x5c".into(), Value::Array(x5c));
        }
        let claims = serde_json::json!({
            "aud": aud,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": new_jti(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        self.key
            .sign(Algorithm::Rs256, header, &claims)
            .map_err(|e| unusable(format!("cannot sign the client assertion: {e}")))
    }

    /// One token request with a fresh assertion.
    pub(crate) async fn fetch(
        &self,
        ctx: FetchContext<'_>,
        url: &Url,
    ) -> Result<Fetched, AuthError> {
        let assertion = self.assertion(url.as_str())?;
        let proof = [("client_assertion_type", JWT_BEARER), ("client_assertion", &assertion)];
        request_token(ctx.http, url, &self.client_id, &proof, ctx.scope, &[&assertion], CHECK).await
    }
}

/// The certificates with the one whose key is `key` first: a PEM file may
/// list its chain in any order. Refuses a file without that certificate.
fn leaf_first(key: &SigningKey, certs: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, AuthError> {
    if certs.is_empty() {
        return Err(unusable("no certificate beside the private key".into()));
    }
    let probe = key
        .sign(Algorithm::Rs256, Map::new(), &serde_json::json!({ "probe": true }))
        .map_err(|e| unusable(format!("{e}")))?;
    let probe = Jws::parse(&probe).map_err(|e| unusable(format!("{e}")))?;
    let Some(at) = certs.iter().position(|c| probe.verify_with_certificate(c).is_ok()) else {
        return Err(unusable("none of its certificates belongs to its private key".into()));
    };
    let mut certs = certs;
    let leaf = certs.remove(at);
    certs.insert(0, leaf);
    Ok(certs)
}

/// A random UUID (version 4): a `jti` never used before.
fn new_jti() -> String {
    let mut b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
