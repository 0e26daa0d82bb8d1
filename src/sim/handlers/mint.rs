//! Access tokens as Entra ID issues them for the WindowsDefenderATP service
//! principal: which identifiers name that principal (with where each comes
//! from), the signed JWT itself, and the keys that verify it (JWKS). Every
//! way of logging in — secret, certificate, federated token, managed
//! identity — ends here, so every token has the same shape.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::reply::Request;
use crate::api::jwt::{Algorithm, JwtError, SigningKey, b64url};
use crate::api::model::new_guid;
use crate::sim::config::{GRAPH_HUNTING_ROLE, KNOWN_ROLES, Service};
use crate::sim::state::{State, TokenInfo};
use crate::sim::tenant::guid_of;

/// Every identifier of the WindowsDefenderATP service principal the login
/// accepts, as a v1 `resource` or (with `/.default`) a v2 `scope`, with its
/// source (reference `mde-api-addendum.md` §5). The token's `aud` is the
/// identifier the client asked for, spelt as it asked.
pub(crate) const AUDIENCES: [(&str, &str); 7] = [
    (
        "https://api.securitycenter.microsoft.com",
        "documented: the API's own pages (hello-world, web app) request it",
    ),
    (
        "https://securitycenter.onmicrosoft.com/windowsatpservice",
        "documented: the web-app and partner pages request it as a v2 scope",
    ),
    (
        "https://api.securitycenter.windows.com",
        "legacy: older Microsoft Threat Protection pages (v1 resource)",
    ),
    (
        "https://api.security.microsoft.com",
        "the newer API host, requested by clients in production; not documented as an audience",
    ),
    (
        "fc780465-2017-40d4-a0c5-307022471b92",
        "the principal's app id (display name WindowsDefenderATP), used by third-party scripts",
    ),
    (
        "https://api-gcc.securitycenter.microsoft.us",
        "GCC: the cloud's API host, as its pages name it (decision P1)",
    ),
    (
        "https://api-gov.securitycenter.microsoft.us",
        "GCC High and DoD: the cloud's API host (decision P1)",
    ),
];

/// Every identifier of Microsoft Graph the login accepts, with its source
/// (Graph's national cloud deployments page): a token for one of these is
/// a Graph token, which only the Graph listener accepts, carrying only the
/// Graph permission ([`GRAPH_HUNTING_ROLE`]).
pub(crate) const GRAPH_AUDIENCES: [(&str, &str); 4] = [
    ("https://graph.microsoft.com", "Graph, global service (and GCC)"),
    ("00000003-0000-0000-c000-000000000000", "Graph's app id (display name Microsoft Graph)"),
    ("https://graph.microsoft.us", "Graph for US Government L4 (GCC High)"),
    ("https://dod-graph.microsoft.us", "Graph for US Government L5 (DoD)"),
];

/// Which service a token for `audience` (one of [`AUDIENCES`] or
/// [`GRAPH_AUDIENCES`]) is for.
pub(crate) fn service_of(audience: &str) -> Service {
    if GRAPH_AUDIENCES.iter().any(|(a, _)| a.eq_ignore_ascii_case(audience)) {
        Service::Graph
    } else {
        Service::Mde
    }
}

/// The `/.default` suffix of a client-credentials scope.
const DEFAULT_SUFFIX: &str = "/.default";

/// The identifier `resource` names, spelt as sent but without a trailing
/// slash, if it is one of [`AUDIENCES`] or [`GRAPH_AUDIENCES`]
/// (case-insensitive, as Entra matches App ID URIs).
pub(crate) fn audience_of_resource(resource: &str) -> Option<String> {
    let trimmed = resource.trim().trim_end_matches('/');
    AUDIENCES
        .iter()
        .chain(GRAPH_AUDIENCES.iter())
        .any(|(a, _)| a.eq_ignore_ascii_case(trimmed))
        .then(|| trimmed.to_string())
}

/// How a v2 `scope` parameter falls short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScopeProblem {
    /// Names no known resource, or more than one.
    Invalid,
    /// Names a known resource without `/.default` (client credentials demand it).
    NoDefault(String),
}

/// The audience a v2 `scope` asks for. The OpenID scopes some libraries add
/// (`openid`, `profile`, `offline_access`, `email`) are ignored, as Entra
/// ignores them for an app-only token.
pub(crate) fn audience_of_scope(scope: &str) -> Result<String, ScopeProblem> {
    let wanted: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !["openid", "profile", "offline_access", "email"].contains(s))
        .collect();
    let [one] = wanted.as_slice() else { return Err(ScopeProblem::Invalid) };
    match one.len().checked_sub(DEFAULT_SUFFIX.len()).and_then(|cut| {
        one.get(cut..).filter(|tail| tail.eq_ignore_ascii_case(DEFAULT_SUFFIX)).map(|_| cut)
    }) {
        Some(cut) => audience_of_resource(&one[..cut]).ok_or(ScopeProblem::Invalid),
        None => match audience_of_resource(one) {
            Some(aud) => Err(ScopeProblem::NoDefault(aud)),
            None => Err(ScopeProblem::Invalid),
        },
    }
}

/// The simulator's token-signing key, made once per process: every
/// simulator of a process signs with it, and RSA key generation is the
/// slowest step of a start.
fn signing_key() -> Result<&'static SigningKey, JwtError> {
    static KEY: OnceLock<Result<SigningKey, JwtError>> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate).as_ref().map_err(Clone::clone)
}

/// The `kid` (and `x5t`) of the signing key: a SHA-1 thumbprint of its
/// public key, as Entra names its keys by thumbprint.
fn key_id(key: &SigningKey) -> String {
    crate::api::jwt::x5t(&key.public_key_der())
}

/// The JSON Web Key Set that verifies the simulator's tokens
/// (`/{tenant}/discovery/v2.0/keys`).
pub(crate) fn jwks(issuer: &str) -> Result<Value, JwtError> {
    let key = signing_key()?;
    let (n, e) = key.public_jwk_numbers()?;
    let kid = key_id(key);
    Ok(json!({"keys": [{
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "x5t": kid,
        "n": n,
        "e": e,
        "issuer": issuer,
    }]}))
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// How the caller proved who it is: the token's `appidacr` (0 none, 1
/// secret, 2 certificate or federated assertion; managed identities are 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    /// A client secret.
    Secret,
    /// A signed assertion: certificate, federated token, managed identity.
    Assertion,
}

/// A token that was issued: what the reply tells about it.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    /// The JWT.
    pub(crate) token: String,
    /// Its lifetime in whole seconds.
    pub(crate) lifetime: u64,
    /// `nbf`, seconds since the epoch.
    pub(crate) not_before: u64,
    /// `exp`, seconds since the epoch.
    pub(crate) expires_on: u64,
}

impl State {
    /// Issues a token to `client_id` of `tenant` for `audience`: a v1-format
    /// access token (as Entra issues for this resource from either
    /// endpoint), RS256-signed, with the configured roles of that service
    /// (a Graph token carries the Graph permission only, an MDE token every
    /// other), recorded so that service accepts it until it expires or the
    /// client is revoked.
    pub(crate) fn mint(
        &mut self,
        req: &Request<'_>,
        client_id: &str,
        tenant: &str,
        audience: &str,
        proof: Proof,
        now: Instant,
    ) -> Result<Minted, JwtError> {
        let key = signing_key()?;
        let tid = self.tenant_id_of(tenant);
        let issuer = format!("{}/{tid}/", req.origin());
        let ttl = self.cfg.token_ttl;
        let lifetime = ttl.as_secs();
        let iat = unix_now();
        let oid = guid_of(&format!("sp:{client_id}"));
        let service = service_of(audience);
        let of_service = |r: &str| (r == GRAPH_HUNTING_ROLE) == (service == Service::Graph);
        let roles: Vec<&str> = KNOWN_ROLES
            .iter()
            .enumerate()
            .filter(|(i, r)| self.roles_mask & (1 << i) != 0 && of_service(r))
            .map(|(_, r)| *r)
            .collect();
        let mask = roles.iter().fold(0, |m, r| m | crate::sim::state::role_bit(r));
        let mut claims = json!({
            "aud": audience,
            "iss": issuer,
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime,
            "aio": b64url(new_guid().as_bytes()),
            "appid": client_id,
            "appidacr": match proof { Proof::Secret => "1", Proof::Assertion => "2" },
            "idp": issuer,
            "idtyp": "app",
            "oid": oid,
            "rh": b64url(new_guid().as_bytes()),
            "sub": oid,
            "tid": tid,
            "uti": b64url(new_guid().as_bytes()),
            "ver": "1.0",
        });
        // Entra leaves `roles` out when none is granted.
        if !roles.is_empty() {
            claims["roles"] = json!(roles);
        }
        let kid = key_id(key);
        let mut header = Map::new();
        header.insert("typ".into(), Value::String("JWT".into()));
        header.insert("x5t".into(), Value::String(kid.clone()));
        header.insert("kid".into(), Value::String(kid));
        let token = key.sign(Algorithm::Rs256, header, &claims)?;
        let principal = self.principal(client_id, &tid);
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                principal,
                // Every login attributes its request to the tenant it mints for.
                tenant: self.serving.unwrap_or(0),
                roles: mask,
                expires: now + ttl,
                service,
            },
        );
        self.count(|s| s.tokens_issued += 1);
        Ok(Minted { token, lifetime, not_before: iat, expires_on: iat + lifetime })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_is_an_audience_in_both_forms() {
        for (id, _) in AUDIENCES {
            assert_eq!(audience_of_resource(id).as_deref(), Some(id));
            assert_eq!(audience_of_resource(&format!("{id}/")).as_deref(), Some(id));
            assert_eq!(audience_of_scope(&format!("{id}/.default")).as_deref(), Ok(id));
            let upper = id.to_ascii_uppercase();
            assert_eq!(audience_of_scope(&format!("{upper}/.DEFAULT")), Ok(upper.clone()));
            assert_eq!(audience_of_scope(id), Err(ScopeProblem::NoDefault(id.to_string())));
            assert_eq!(
                audience_of_scope(&format!("openid {id}/.default offline_access")).as_deref(),
                Ok(id)
            );
        }
        for (id, _) in GRAPH_AUDIENCES {
            assert_eq!(audience_of_scope(&format!("{id}/.default")).as_deref(), Ok(id));
            assert_eq!(service_of(id), Service::Graph);
        }
        assert_eq!(service_of("https://api.securitycenter.microsoft.com"), Service::Mde);
        assert_eq!(
            audience_of_scope("https://management.azure.com/.default"),
            Err(ScopeProblem::Invalid)
        );
        assert_eq!(
            audience_of_scope(
                "https://api.securitycenter.microsoft.com/.default https://api.security.microsoft.com/.default"
            ),
            Err(ScopeProblem::Invalid)
        );
        assert_eq!(audience_of_scope(""), Err(ScopeProblem::Invalid));
        assert_eq!(audience_of_resource("https://vault.azure.net"), None);
    }
}
