//! HTTPS for the simulator (`simulate --tls`): the certificate it serves,
//! either made at start (a CA of its own and a server certificate that CA
//! signs, for `127.0.0.1`, `::1` and `localhost`) or read from PEM files,
//! and the rustls acceptor built from it.
//!
//! A client trusts the simulator by trusting the generated CA (written with
//! `--tls-ca-out`), exactly as it would trust a TLS-inspecting proxy's CA:
//! nothing on the client side turns verification off. The CA's key lives
//! only in memory and is dropped once the server certificate is signed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The names a generated server certificate is valid for: every way a
/// client on this machine reaches a loopback listener.
const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// Where the served certificate comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SimTls {
    /// Make a CA and a server certificate at start; the CA's PEM is then
    /// available from [`super::Sim::ca_pem`].
    Generate,
    /// Serve this certificate chain and key, read from PEM files.
    Files {
        /// The server certificate, optionally followed by intermediates.
        cert: PathBuf,
        /// The private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimTls::Generate => f.write_str("Generate"),
            SimTls::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", &cert.display())
                .field("key", &key.display())
                .finish(),
        }
    }
}

/// Why TLS could not be set up. Each renders as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read TLS {what} file {path}: {why}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file as given.
        path: String,
        /// Why, in a few words.
        why: String,
    },
    /// The certificate file holds no PEM certificate, or a malformed one.
    #[error("TLS certificate file {path} holds no valid PEM certificate{why}")]
    NoCertificate {
        /// The file as given.
        path: String,
        /// What the PEM reader said, if anything (`: ...`).
        why: String,
    },
    /// The key file holds no PEM private key, or a malformed one.
    #[error("TLS key file {path} holds no valid PEM private key{why}")]
    NoKey {
        /// The file as given.
        path: String,
        /// What the PEM reader said, if anything (`: ...`).
        why: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("cannot serve TLS with certificate {cert} and key {key}: {why}")]
    Rejected {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        why: String,
    },
    /// Making the certificates failed.
    #[error("cannot make the simulator's TLS certificates: {0}")]
    Generate(String),
}

/// What [`prepare`] hands the server: the acceptor and, for a generated
/// certificate, the CA a client must trust.
pub(crate) struct Prepared {
    /// Accepts TLS connections with the served certificate.
    pub(crate) acceptor: TlsAcceptor,
    /// The generated CA certificate (PEM); `None` for given files, whose
    /// issuer the simulator does not know.
    pub(crate) ca_pem: Option<String>,
}

/// Builds the acceptor for `setting`.
pub(crate) fn prepare(setting: &SimTls) -> Result<Prepared, TlsError> {
    match setting {
        SimTls::Generate => {
            let made = generate()?;
            let config = server_config(vec![made.cert], made.key)
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            Ok(Prepared { acceptor: TlsAcceptor::from(config), ca_pem: Some(made.ca_pem) })
        }
        SimTls::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let private = read_key(key)?;
            let config = server_config(chain, private).map_err(|e| TlsError::Rejected {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                why: e.to_string(),
            })?;
            Ok(Prepared { acceptor: TlsAcceptor::from(config), ca_pem: None })
        }
    }
}

/// A generated server certificate, its key, and the CA that signed it.
struct Generated {
    /// The server certificate (DER).
    cert: CertificateDer<'static>,
    /// Its private key.
    key: PrivateKeyDer<'static>,
    /// The CA certificate, PEM.
    ca_pem: String,
}

/// Makes a CA and a server certificate for `127.0.0.1`, `::1` and
/// `localhost`, signed by that CA. Keys are ECDSA P-256 (rcgen's default),
/// which every TLS client accepts.
fn generate() -> Result<Generated, TlsError> {
    let failed = |e: rcgen::Error| TlsError::Generate(e.to_string());

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.distinguished_name.push(DnType::CommonName, "mdebulk simulator CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(failed)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca, ca_key);

    // rcgen turns the names that parse as addresses into IP SANs.
    let names = SERVER_NAMES.map(String::from).to_vec();
    let mut server = CertificateParams::new(names).map_err(failed)?;
    server.distinguished_name.push(DnType::CommonName, "mdebulk simulator");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let server_key = KeyPair::generate().map_err(failed)?;
    let server_cert = server.signed_by(&server_key, &issuer).map_err(failed)?;

    let key = PrivateKeyDer::try_from(server_key.serialize_der())
        .map_err(|e| TlsError::Generate(format!("the generated key is not a private key: {e}")))?;
    Ok(Generated { cert: server_cert.der().clone(), key, ca_pem: ca_cert.pem() })
}

/// The rustls server configuration, with the aws-lc-rs provider that
/// reqwest already builds (never `ring`), HTTP/1.1 only.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the file's bytes, naming it on failure.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.display().to_string(),
        why: super::fleet::io_reason(&e),
    })
}

/// Every certificate of a PEM file, in order; at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read("certificate", path)?;
    let shown = || path.display().to_string();
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate { path: shown(), why: format!(": {e}") })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(), why: String::new() });
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            other => format!(": {other}"),
        };
        TlsError::NoKey { path: path.display().to_string(), why }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_generated_ca_signs_a_certificate_for_the_loopback_names() {
        let made = generate().unwrap();
        assert!(made.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{}", made.ca_pem);
        let ca = CertificateDer::from_pem_slice(made.ca_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in SERVER_NAMES {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&made.cert, &[], &name, &[], now).unwrap();
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&made.cert, &[], &other, &[], now).is_err());
        // Two starts make two CAs: trusting one simulator trusts no other.
        assert_ne!(generate().unwrap().ca_pem, made.ca_pem);
    }

    #[test]
    fn bad_files_give_one_line_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("mdebulk-sim-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a pem file\n").unwrap();
        let missing = dir.join("missing.pem");
        let files = |cert: &Path, key: &Path| SimTls::Files { cert: cert.into(), key: key.into() };
        for (setting, needle) in [
            (
                files(&missing, &junk),
                format!("cannot read TLS certificate file {}", missing.display()),
            ),
            (
                files(&junk, &junk),
                format!("TLS certificate file {} holds no valid PEM", junk.display()),
            ),
        ] {
            let e = prepare(&setting).err().unwrap().to_string();
            assert!(e.contains(&needle), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let made = generate().unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, made.ca_pem).unwrap();
        let e = prepare(&files(&cert, &junk)).err().unwrap().to_string();
        assert!(
            e.contains(&format!("TLS key file {} holds no valid PEM private key", junk.display())),
            "{e}"
        );
        let e = prepare(&files(&cert, &missing)).err().unwrap().to_string();
        assert!(e.contains(&format!("cannot read TLS key file {}", missing.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
