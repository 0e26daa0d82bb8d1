//! Extra CA roots the client trusts on top of the platform's (`--ca-cert`,
//! `SSL_CERT_FILE`): read from PEM files before anything is sent, so an
//! unreadable or non-PEM file is a configuration error that names the file
//! rather than a certificate failure at the first call.
//!
//! This is how a TLS-inspecting proxy's CA, or the simulator's generated CA,
//! is trusted: roots are only ever added, verification is never turned off.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::error::ConfigError;

/// What to do with a certificate of the file that cannot serve as a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Refuse the file: a CA named on purpose (`--ca-cert`) must work.
    Refuse,
    /// Leave it out with a warning, as the platform's loader does with the
    /// system bundle `SSL_CERT_FILE` usually names; the others still count.
    Skip,
}

/// Every certificate in the PEM file at `path` (a bundle may hold several)
/// that can serve as a root; at least one. `origin` says where the path
/// came from (`--ca-cert`, `SSL_CERT_FILE`) for the error message.
pub fn load_ca_file(
    origin: &'static str,
    path: &Path,
    unusable: Unusable,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError::CaFile {
        origin,
        path: shown(),
        why: format!("cannot read it: {}", io_reason(&e)),
    })?;
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| {
            ConfigError::CaFile { origin, path: shown(), why: format!("invalid PEM: {e}") }
        })?;
    if certs.is_empty() {
        return Err(ConfigError::CaFile {
            origin,
            path: shown(),
            why: "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".to_string(),
        });
    }
    // The verifier refuses the whole set for one certificate it cannot use
    // as a root; finding it here names the file and which one.
    let total = certs.len();
    let mut usable = Vec::with_capacity(total);
    for (i, cert) in certs.into_iter().enumerate() {
        match rustls::RootCertStore::empty().add(cert.clone()) {
            Ok(()) => usable.push(cert),
            Err(e) => {
                let why =
                    format!("certificate {} of {total} is not usable as a CA root: {e}", i + 1);
                if unusable == Unusable::Refuse {
                    return Err(ConfigError::CaFile { origin, path: shown(), why });
                }
                tracing::warn!("{origin} {}: {why}; left out", shown());
            }
        }
    }
    if usable.is_empty() {
        return Err(ConfigError::CaFile {
            origin,
            path: shown(),
            why: format!("none of its {total} certificates is usable as a CA root"),
        });
    }
    Ok(usable)
}

/// A few words for an I/O error, without the `(os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn a_bundle_gives_every_certificate() {
        let one =
            load_ca_file("--ca-cert", &fixture("selfsigned-cert.pem"), Unusable::Refuse).unwrap();
        assert_eq!(one.len(), 1);
        let text = std::fs::read_to_string(fixture("selfsigned-cert.pem")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("# two roots\n{text}\n{text}")).unwrap();
        assert_eq!(load_ca_file("--ca-cert", &bundle, Unusable::Refuse).unwrap().len(), 2);

        // One unusable certificate: refused for --ca-cert, left out of a bundle.
        let garbled = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&bundle, format!("{text}\n{garbled}")).unwrap();
        let e = load_ca_file("--ca-cert", &bundle, Unusable::Refuse).unwrap_err().to_string();
        assert!(e.contains("certificate 2 of 2 is not usable as a CA root"), "{e}");
        assert_eq!(load_ca_file("SSL_CERT_FILE", &bundle, Unusable::Skip).unwrap().len(), 1);
        std::fs::write(&bundle, garbled).unwrap();
        let e = load_ca_file("SSL_CERT_FILE", &bundle, Unusable::Skip).unwrap_err().to_string();
        assert!(e.contains("none of its 1 certificates is usable"), "{e}");
    }

    #[test]
    fn unreadable_or_non_pem_files_name_the_file_and_the_origin() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let key_only = dir.path().join("key.pem");
        std::fs::copy(fixture("selfsigned-key.pem"), &key_only).unwrap();
        let missing = dir.path().join("missing.pem");
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(&garbled, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        for (origin, path, needle) in [
            ("--ca-cert", &garbled, "certificate 1 of 1 is not usable as a CA root"),
            ("--ca-cert", &missing, "cannot read it: no such file"),
            ("SSL_CERT_FILE", &junk, "no PEM certificate"),
            ("--ca-cert", &key_only, "no PEM certificate"),
            ("--ca-cert", &dir.path().to_path_buf(), "cannot read it"),
        ] {
            let e = load_ca_file(origin, path, Unusable::Refuse).unwrap_err().to_string();
            assert!(e.contains(origin), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
