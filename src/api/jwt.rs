//! JSON Web Tokens in compact form (RFC 7515, RFC 7519), RSA-signed: the one
//! home of base64url segments, `RS256`/`PS256` signatures and certificate
//! thumbprints. The client signs its certificate assertion with it; the
//! simulator signs the access tokens it issues and checks the assertions it
//! is sent with it, as Entra ID does.
//!
//! Only what Entra ID's client credentials use is here: RSA keys (Entra
//! accepts no other for certificate credentials), `RS256` (the older
//! documentation and the Azure SDKs) and `PS256` (the current documentation).
//! The crypto is aws-lc-rs, the provider rustls already builds, and X.509
//! parsing is webpki's, so nothing new is compiled for it.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};

/// Why a token could not be made, read or trusted. Messages never quote a
/// token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments of JSON objects.
    #[error("not a JSON Web Token: {0}")]
    Malformed(&'static str),
    /// `alg` is missing or not one of `RS256`, `PS256`.
    #[error("unsupported signing algorithm {0:?} (RS256 or PS256 are accepted)")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify with the key.
    #[error("the signature does not match the key")]
    BadSignature,
    /// A key or certificate could not be read or used.
    #[error("{0}")]
    Key(String),
}

/// A JWS signing algorithm Entra ID takes for a certificate credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
        }
    }

    /// The algorithm an `alg` header names (exactly, as RFC 7518 spells it).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "PS256" => Some(Algorithm::Ps256),
            _ => None,
        }
    }

    /// The padding used to sign.
    fn padding(self) -> &'static dyn signature::RsaEncoding {
        match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
            Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
        }
    }

    /// The verification of a signature made by a certificate's key.
    fn webpki(self) -> &'static dyn rustls_pki_types::SignatureVerificationAlgorithm {
        match self {
            Algorithm::Rs256 => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Ps256 => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        }
    }

    /// The verification of a signature made by a bare public key.
    fn bare(self) -> &'static signature::RsaParameters {
        match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        }
    }
}

/// base64url without padding: every JWT segment, `x5t` and JWKS numbers.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, with or without padding.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("a segment is not base64url"))
}

/// Standard base64 with padding: `x5c` certificates (RFC 7515 §4.1.6).
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64 (an `x5c` entry).
pub fn b64_std_decode(text: &str) -> Result<Vec<u8>, JwtError> {
    STANDARD.decode(text).map_err(|_| JwtError::Malformed("an x5c entry is not base64"))
}

/// `x5t`: base64url of the certificate's SHA-1 thumbprint.
pub fn x5t(cert_der: &[u8]) -> String {
    b64url(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der).as_ref())
}

/// `x5t#S256`: base64url of the certificate's SHA-256 thumbprint.
pub fn x5t_s256(cert_der: &[u8]) -> String {
    b64url(digest::digest(&digest::SHA256, cert_der).as_ref())
}

/// The SHA-1 thumbprint in upper-case hex, as the portal and Entra's
/// messages show a certificate.
pub fn thumbprint_hex(cert_der: &[u8]) -> String {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A DER certificate as PEM text (RFC 7468: base64 in 64-column lines).
pub fn pem_certificate(der: &[u8]) -> String {
    let body = b64_std(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        // base64 is ASCII: every chunk is valid UTF-8.
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// Every certificate in a PEM text, in order (leaf first, by convention).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, JwtError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| JwtError::Key(format!("unreadable certificate PEM: {e}")))?;
        out.push(cert.as_ref().to_vec());
    }
    Ok(out)
}

/// The modulus and exponent of a DER `RSAPublicKey` (RFC 8017 A.1.1:
/// `SEQUENCE { INTEGER n, INTEGER e }`), without their sign bytes.
fn rsa_public_numbers(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// One DER element: its tag, then its contents and what follows.
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    fn strip(int: &[u8]) -> &[u8] {
        let lead = int.iter().take_while(|b| **b == 0).count();
        &int[lead.min(int.len().saturating_sub(1))..]
    }
    let (0x30, body, _) = element(der)? else { return None };
    let (0x02, n, rest) = element(body)? else { return None };
    let (0x02, e, _) = element(rest)? else { return None };
    Some((strip(n), strip(e)))
}

/// An RSA private key that signs tokens.
#[derive(Debug)]
pub struct SigningKey {
    /// The key pair.
    key: RsaKeyPair,
}

impl SigningKey {
    /// A fresh 2048-bit key (the simulator's token-signing key).
    pub fn generate() -> Result<SigningKey, JwtError> {
        RsaKeyPair::generate(KeySize::Rsa2048)
            .map(|key| SigningKey { key })
            .map_err(|_| JwtError::Key("cannot generate an RSA key".into()))
    }

    /// A key from DER: PKCS#8, or PKCS#1 `RSAPrivateKey`.
    pub fn from_der(der: &[u8]) -> Result<SigningKey, JwtError> {
        RsaKeyPair::from_pkcs8(der)
            .or_else(|_| RsaKeyPair::from_der(der))
            .map(|key| SigningKey { key })
            .map_err(|e| JwtError::Key(format!("not an RSA private key: {e}")))
    }

    /// The first private key of a PEM text (`PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, JwtError> {
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| JwtError::Key(format!("no private key in the PEM text: {e}")))?;
        SigningKey::from_der(key.secret_der())
    }

    /// The public key as JWKS numbers: base64url of the modulus and exponent.
    pub fn public_jwk_numbers(&self) -> Result<(String, String), JwtError> {
        let (n, e) = rsa_public_numbers(self.key.public_key().as_ref())
            .ok_or_else(|| JwtError::Key("unreadable RSA public key".into()))?;
        Ok((b64url(n), b64url(e)))
    }

    /// The public key, DER `RSAPublicKey`, to verify with [`Jws::verify_with_public_key`].
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs `claims` under `header` (its `alg` set here) and returns the
    /// compact token `header.claims.signature`.
    pub fn sign(
        &self,
        alg: Algorithm,
        mut header: Map<String, Value>,
        claims: &Value,
    ) -> Result<String, JwtError> {
        header.insert("alg".into(), Value::String(alg.name().into()));
        let head = b64url(Value::Object(header).to_string().as_bytes());
        let body = b64url(claims.to_string().as_bytes());
        let input = format!("{head}.{body}");
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(alg.padding(), &SystemRandom::new(), input.as_bytes(), &mut sig)
            .map_err(|_| JwtError::Key("the RSA signature failed".into()))?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }
}

/// A compact token taken apart; nothing in it is trusted until one of the
/// `verify` methods says so.
#[derive(Debug, Clone)]
pub struct Jws {
    /// The decoded header.
    pub header: Map<String, Value>,
    /// The decoded claims.
    pub claims: Map<String, Value>,
    /// `header.claims` as sent: what the signature covers.
    signing_input: String,
    /// The decoded signature.
    signature: Vec<u8>,
}

impl Jws {
    /// Splits and decodes a compact token.
    pub fn parse(token: &str) -> Result<Jws, JwtError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("it does not have three segments"));
        };
        let object = |seg: &str, what: &'static str| -> Result<Map<String, Value>, JwtError> {
            match serde_json::from_slice(&b64url_decode(seg)?) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(JwtError::Malformed(what)),
            }
        };
        Ok(Jws {
            header: object(h, "the header is not a JSON object")?,
            claims: object(c, "the claims are not a JSON object")?,
            signing_input: format!("{h}.{c}"),
            signature: b64url_decode(s)?,
        })
    }

    /// A header field as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// A claim as text.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (`exp`, `nbf`, `iat`), whole seconds.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        let v = self.claims.get(name)?;
        v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
    }

    /// The algorithm the header names, if supported.
    pub fn algorithm(&self) -> Result<Algorithm, JwtError> {
        let name = self.header_str("alg").unwrap_or("");
        Algorithm::from_name(name).ok_or_else(|| JwtError::UnsupportedAlgorithm(name.to_string()))
    }

    /// Checks the signature against a certificate's key (DER X.509).
    pub fn verify_with_certificate(&self, cert_der: &[u8]) -> Result<(), JwtError> {
        let alg = self.algorithm()?;
        let der = CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| JwtError::Key(format!("unreadable certificate: {e}")))?;
        cert.verify_signature(alg.webpki(), self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }

    /// Checks the signature against a bare RSA public key (DER `RSAPublicKey`).
    pub fn verify_with_public_key(&self, public_der: &[u8]) -> Result<(), JwtError> {
        let alg = self.algorithm()?;
        signature::UnparsedPublicKey::new(alg.bare(), public_der)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signs_and_verifies_both_algorithms() {
        let key = SigningKey::generate().unwrap();
        for alg in [Algorithm::Rs256, Algorithm::Ps256] {
            let mut header = Map::new();
            header.insert("typ".into(), "JWT".into());
            let token = key.sign(alg, header, &json!({"aud": "a", "exp": 5})).unwrap();
            let jws = Jws::parse(&token).unwrap();
            assert_eq!(jws.header_str("alg"), Some(alg.name()));
            assert_eq!(jws.claim_str("aud"), Some("a"));
            assert_eq!(jws.claim_time("exp"), Some(5));
            jws.verify_with_public_key(&key.public_key_der()).unwrap();
            let (n, e) = key.public_jwk_numbers().unwrap();
            assert_eq!(e, "AQAB");
            assert_eq!(b64url_decode(&n).unwrap().len(), 256);
            let other = SigningKey::generate().unwrap();
            assert_eq!(
                jws.verify_with_public_key(&other.public_key_der()),
                Err(JwtError::BadSignature)
            );
            // A changed claim breaks the signature.
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = b64url(br#"{"aud":"b","exp":5}"#);
            parts[1] = &forged;
            let jws = Jws::parse(&parts.join(".")).unwrap();
            assert_eq!(
                jws.verify_with_public_key(&key.public_key_der()),
                Err(JwtError::BadSignature)
            );
        }
    }

    #[test]
    fn certificates_round_trip_through_pem() {
        let der: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let pem = pem_certificate(&der);
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        // Not a parseable certificate, but PEM framing is all that is read here.
        assert_eq!(certificates_from_pem(pem.as_bytes()).unwrap(), vec![der]);
    }

    #[test]
    fn refuses_what_is_not_a_token() {
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.e30", "e30.W10.e30"] {
            assert!(matches!(Jws::parse(bad), Err(JwtError::Malformed(_))), "{bad}");
        }
        let unsigned = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), b64url(b"{}"));
        let jws = Jws::parse(&unsigned).unwrap();
        assert_eq!(jws.algorithm(), Err(JwtError::UnsupportedAlgorithm("none".into())));
    }

    #[test]
    fn thumbprints_match_the_documented_example() {
        // E-CERT-OLD: hex 84E05C1D98BCE3A5421D225B140B36E86A3D5534 is x5t
        // hOBcHZi846VCHSJbFAs26Go9VTQ; the same bytes through base64url.
        let hex = "84E05C1D98BCE3A5421D225B140B36E86A3D5534";
        let bytes: Vec<u8> =
            (0..20).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        assert_eq!(b64url(&bytes), "hOBcHZi846VCHSJbFAs26Go9VTQ");
        assert_eq!(b64url_decode("hOBcHZi846VCHSJbFAs26Go9VTQ").unwrap(), bytes);
    }
}
