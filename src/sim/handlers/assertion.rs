//! Client assertions at the login endpoint (`client_assertion_type` =
//! jwt-bearer): a JWT the app signed with a registered certificate's key
//! (`iss` = `sub` = the client id), or a token from an external issuer that
//! a federated credential of the app trusts (workload identity federation).
//! Each refusal carries the AADSTS code Entra gives for it.
//!
//! Sources: `mde-api-addendum.md` §4.4 (700027 in its two captured
//! wordings), §4.5 (header and claims of a certificate assertion: `x5t`
//! with RS256, `x5t#S256` with PS256, `x5c`; `aud` the token URL; `iss` =
//! `sub` = client id; `exp`, `nbf`, `jti`), §6.5 (the federated exchange).
//! Entra's error reference names 50027 (invalid JWT: unexpected audience,
//! not within its valid time range, token format), 50048 (subject
//! mismatches issuer) and 700024 (assertion not within its valid time
//! range); 700211/700212/700213 are its runtime answers when no federated
//! credential matches the issuer, audience or subject. Decided where the
//! sources are silent: a clock skew of five minutes either side; a replayed
//! `jti` is refused with 50027; a federated token may be presented many
//! times (as Kubernetes projects one token for an hour).

use crate::api::jwt::{self, Jws};
use crate::api::time::format_utc;
use crate::sim::state::State;

use super::mint::unix_now;
use super::reply::Reply;

/// The only `client_assertion_type` Entra takes.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The audience a federated token must carry for Entra.
pub(crate) const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Clock skew allowed either side of `nbf` and `exp`, in seconds.
const SKEW: i64 = 300;

/// Where to read more, in 700211–700213 messages (as Entra links it).
const FEDERATION_DOC: &str =
    "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// `invalid_client` at 401, as Entra answers a credential it cannot accept.
fn refused(code: u32, message: &str) -> Reply {
    Reply::entra(401, "invalid_client", code, message)
}

/// Whether `aud` (a string or a list) holds `want`, compared as Entra
/// compares URLs (case-insensitive).
fn audience_has(jws: &Jws, want: &[&str]) -> bool {
    match jws.claims.get("aud") {
        Some(serde_json::Value::String(a)) => want.iter().any(|w| w.eq_ignore_ascii_case(a)),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str())
            .any(|a| want.iter().any(|w| w.eq_ignore_ascii_case(a))),
        _ => false,
    }
}

/// The audience as sent, for messages.
fn audience_text(jws: &Jws) -> String {
    match jws.claims.get("aud") {
        Some(serde_json::Value::String(a)) => a.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// A NumericDate as Entra's messages write it.
fn when(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
    format_utc(t)
}

/// The `nbf`/`exp` check shared by both kinds of assertion (700024).
fn check_times(jws: &Jws) -> Result<i64, Reply> {
    let Some(exp) = jws.claim_time("exp") else {
        return Err(refused(50027, "Invalid JWT token. The token has no 'exp' claim."));
    };
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let nbf = jws.claim_time("nbf");
    if now > exp + SKEW || nbf.is_some_and(|nbf| now + SKEW < nbf) {
        let from = nbf.map(when).unwrap_or_else(|| "(not given)".into());
        return Err(refused(
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {from}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                when(now),
                when(exp)
            ),
        ));
    }
    Ok(exp)
}

impl State {
    /// Checks a client assertion sent for `client_id` to one of `token_urls`
    /// (the v1 and v2 token endpoints of the tenant as this simulator is
    /// reached). `Ok` when it proves the client.
    pub(super) fn check_assertion(
        &mut self,
        assertion: &str,
        client_id: &str,
        token_urls: &[&str],
    ) -> Result<(), Reply> {
        let jws = Jws::parse(assertion)
            .map_err(|_| refused(50027, "Invalid JWT token. Token format not valid."))?;
        let issuer = jws.claim_str("iss").unwrap_or("");
        if issuer.eq_ignore_ascii_case(client_id) {
            self.check_certificate_assertion(&jws, client_id, token_urls)
        } else {
            self.check_federated_token(&jws, client_id)
        }
    }

    /// An assertion the app signed itself with a certificate's key.
    fn check_certificate_assertion(
        &mut self,
        jws: &Jws,
        client_id: &str,
        token_urls: &[&str],
    ) -> Result<(), Reply> {
        if !jws.claim_str("sub").is_some_and(|s| s.eq_ignore_ascii_case(client_id)) {
            return Err(refused(50048, "Subject mismatches Issuer claim in the client assertion."));
        }
        if !audience_has(jws, token_urls) {
            return Err(refused(
                50027,
                &format!(
                    "Invalid JWT token. The token has an unexpected audience '{}'.",
                    audience_text(jws)
                ),
            ));
        }
        let exp = check_times(jws)?;
        let Some(jti) = jws.claim_str("jti").filter(|j| !j.is_empty()) else {
            return Err(refused(50027, "Invalid JWT token. The token has no 'jti' claim."));
        };
        // Which registered certificate the client says it used.
        let named = jws
            .header_str("x5t#S256")
            .map(|t| (t, true))
            .or(jws.header_str("x5t").map(|t| (t, false)));
        let chain_leaf = jws
            .header
            .get("x5c")
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .and_then(|b| jwt::b64_std_decode(b).ok());
        let registered = &self.cfg.identity.client_certificates;
        let revoked = self.revoked.contains(&client_id.to_ascii_lowercase());
        let cert = match (named, &chain_leaf) {
            // Compared as bytes: MSAL pads its base64url thumbprints with
            // `=`, and Entra takes them.
            (Some((thumb, sha256)), _) => registered.iter().find(|c| {
                let own = if sha256 { jwt::x5t_s256(c) } else { jwt::x5t(c) };
                jwt::b64url_decode(thumb).ok() == jwt::b64url_decode(&own).ok()
            }),
            (None, Some(leaf)) => registered.iter().find(|c| *c == leaf),
            (None, None) => None,
        }
        .filter(|_| !revoked);
        let Some(cert) = cert else {
            let used = match (named, &chain_leaf) {
                (Some((thumb, _)), _) => jwt::b64url_decode(thumb)
                    .map(|b| b.iter().map(|x| format!("{x:02X}")).collect::<String>())
                    .unwrap_or_default(),
                (None, Some(leaf)) => jwt::thumbprint_hex(leaf),
                (None, None) => String::new(),
            };
            return Err(refused(
                700027,
                &format!(
                    "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{used}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/{client_id}']"
                ),
            ));
        };
        if jws.verify_with_certificate(cert).is_err() {
            return Err(refused(
                700027,
                &format!(
                    "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{}', Found key 'Start=, End='.]",
                    jwt::thumbprint_hex(cert)
                ),
            ));
        }
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        self.used_assertions.retain(|_, exp| *exp + SKEW >= now);
        let key = (client_id.to_ascii_lowercase(), jti.to_string());
        if self.used_assertions.contains_key(&key) {
            return Err(refused(
                50027,
                &format!(
                    "Invalid JWT token. The assertion with jti '{jti}' has already been used."
                ),
            ));
        }
        self.used_assertions.insert(key, exp);
        Ok(())
    }

    /// A token from an external issuer, traded under a federated credential.
    fn check_federated_token(&mut self, jws: &Jws, client_id: &str) -> Result<(), Reply> {
        let issuer = jws.claim_str("iss").unwrap_or("");
        let subject = jws.claim_str("sub").unwrap_or("");
        let no_match = |code: u32, what: &str, value: &str| {
            Reply::entra(
                400,
                "invalid_request",
                code,
                &format!(
                    "No matching federated identity record found for presented assertion {what} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FEDERATION_DOC}"
                ),
            )
        };
        let revoked = self.revoked.contains(&client_id.to_ascii_lowercase());
        let creds: Vec<_> = self
            .cfg
            .identity
            .federated
            .iter()
            .filter(|c| !revoked && c.issuer == issuer)
            .cloned()
            .collect();
        if creds.is_empty() {
            return Err(no_match(700211, "issuer", issuer));
        }
        let Some(cred) = creds.iter().find(|c| c.subject == subject) else {
            return Err(no_match(700213, "subject", subject));
        };
        if !audience_has(jws, &[EXCHANGE_AUDIENCE]) {
            return Err(no_match(700212, "audience", &audience_text(jws)));
        }
        check_times(jws)?;
        if jws.verify_with_certificate(&cred.certificate).is_err() {
            return Err(refused(
                50027,
                &format!(
                    "Invalid JWT token. The token from issuer '{issuer}' failed signature verification."
                ),
            ));
        }
        Ok(())
    }
}
