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
                // Relaxed keeps the chain's other certificates as entries
                // of their own when the file does not link them to the key.
                p12_keystore::Pkcs12ImportPolicy::Relaxed,
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
            let mut certs: Vec<Vec<u8>> =
                chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
            for (_, entry) in store.entries() {
                if let p12_keystore::KeyStoreEntry::Certificate(c) = entry
                    && !certs.iter().any(|have| have.as_slice() == c.as_der())
                {
                    certs.push(c.as_der().to_vec());
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::jwt::certificates_from_pem;

    /// A CA and a leaf certificate it signed, RSA: the leaf's key as PKCS#8
    /// PEM and DER, and the two certificates (leaf first).
    struct Issued {
        key_pem: String,
        key_der: Vec<u8>,
        leaf: Vec<u8>,
        ca: Vec<u8>,
    }

    fn issue() -> Issued {
        let rsa = || rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let ca_key = rsa();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mdebulk test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rsa();
        let leaf = rcgen::CertificateParams::new(vec!["mdebulk-app".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Issued {
            key_pem: leaf_key.serialize_pem(),
            key_der: leaf_key.serialize_der(),
            leaf: leaf.der().to_vec(),
            ca: ca.der().to_vec(),
        }
    }

    fn pem_cert(der: &[u8]) -> String {
        crate::api::jwt::pem_certificate(der)
    }

    fn pfx(issued: &Issued, password: &str) -> Vec<u8> {
        let chain = p12_keystore::PrivateKeyChain::new(
            b"mdebulk".to_vec(),
            p12_keystore::PrivateKey::from_der(&issued.key_der).unwrap(),
            [
                p12_keystore::Certificate::from_der(&issued.leaf).unwrap(),
                p12_keystore::Certificate::from_der(&issued.ca).unwrap(),
            ],
        );
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("mdebulk", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().unwrap()
    }

    const AUD: &str = "https://login.example/contoso/oauth2/v2.0/token";

    #[test]
    fn pem_with_the_chain_in_any_order_signs_fresh_assertions() {
        let issued = issue();
        // The CA first: the leaf is found by its key, not its place.
        let pem = format!("{}{}{}", pem_cert(&issued.ca), issued.key_pem, pem_cert(&issued.leaf));
        assert_eq!(certificates_from_pem(pem.as_bytes()).unwrap().len(), 2);
        let cred =
            CertificateCredential::from_bytes("contoso", "app-1", pem.as_bytes(), None, true)
                .unwrap();
        assert_eq!(cred.thumbprint(), thumbprint_hex(&issued.leaf));
        let a = Jws::parse(&cred.assertion(AUD).unwrap()).unwrap();
        let b = Jws::parse(&cred.assertion(AUD).unwrap()).unwrap();
        a.verify_with_certificate(&issued.leaf).unwrap();
        assert_eq!(a.header_str("alg"), Some("RS256"));
        assert_eq!(a.header_str("x5t"), Some(x5t(&issued.leaf).as_str()));
        let x5c: Vec<&str> =
            a.header["x5c"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(x5c, [b64_std(&issued.leaf), b64_std(&issued.ca)]);
        for claim in ["iss", "sub"] {
            assert_eq!(a.claim_str(claim), Some("app-1"));
        }
        assert_eq!(a.claim_str("aud"), Some(AUD));
        let (nbf, exp) = (a.claim_time("nbf").unwrap(), a.claim_time("exp").unwrap());
        assert_eq!(exp - nbf, 600);
        assert!((nbf - epoch_now() as i64).abs() <= 2);
        assert_ne!(a.claim_str("jti"), b.claim_str("jti"));
        assert_eq!(a.claim_str("jti").unwrap().len(), 36);
    }

    #[test]
    fn without_the_chain_flag_there_is_no_x5c() {
        let issued = issue();
        let pem = format!("{}{}", issued.key_pem, pem_cert(&issued.leaf));
        let cred =
            CertificateCredential::from_bytes("t", "c", pem.as_bytes(), None, false).unwrap();
        let a = Jws::parse(&cred.assertion(AUD).unwrap()).unwrap();
        assert!(!a.header.contains_key("x5c"));
    }

    #[test]
    fn pfx_opens_with_its_password_only() {
        let issued = issue();
        let password = Secret::new("pfx-Pa55word!");
        let bytes = pfx(&issued, password.expose());
        let cred =
            CertificateCredential::from_bytes("t", "c", &bytes, Some(&password), true).unwrap();
        assert_eq!(cred.thumbprint(), thumbprint_hex(&issued.leaf));
        let a = Jws::parse(&cred.assertion(AUD).unwrap()).unwrap();
        a.verify_with_certificate(&issued.leaf).unwrap();
        assert_eq!(a.header["x5c"].as_array().unwrap().len(), 2);

        let wrong = Secret::new("not-the-password");
        let err = CertificateCredential::from_bytes("t", "c", &bytes, Some(&wrong), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"), "{err}");
        assert!(!err.contains("not-the-password") && !err.contains("pfx-Pa55word"), "{err}");
    }

    #[test]
    fn unusable_files_say_why() {
        let issued = issue();
        let only_key = issued.key_pem.clone();
        let err = CertificateCredential::from_bytes("t", "c", only_key.as_bytes(), None, false)
            .unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let other = issue();
        let mismatched = format!("{}{}", issued.key_pem, pem_cert(&other.leaf));
        let err = CertificateCredential::from_bytes("t", "c", mismatched.as_bytes(), None, false)
            .unwrap_err();
        assert!(err.to_string().contains("belongs to its private key"), "{err}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = CertificateCredential::from_bytes("t", "c", encrypted.as_bytes(), None, false)
            .unwrap_err();
        assert!(err.to_string().contains("encrypted"), "{err}");
        assert!(!err.is_transient());
        let cred = CertificateCredential::from_bytes(
            "t",
            "c",
            format!("{}{}", issued.key_pem, pem_cert(&issued.leaf)).as_bytes(),
            None,
            false,
        )
        .unwrap();
        assert!(!format!("{cred:?}").contains("PRIVATE"));
    }
}
