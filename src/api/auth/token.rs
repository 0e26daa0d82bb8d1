//! What every credential hands the cache: a token and how long it lives,
//! and what every credential needs to fetch one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::jwt::Jws;
use super::secret::Secret;

/// The longest lifetime a token is trusted for, whatever its source says:
/// Entra ID tokens live 60 to 90 minutes, at most a day. The value comes
/// from outside, so it is capped rather than added to the clock as is
/// (2^64 - 1 seconds would overflow it); a token that dies earlier than
/// announced is replaced after its first 401.
pub(crate) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// How long a token whose expiry nobody states is used before it is fetched
/// again (a token command printing an opaque token): short, since running
/// the command again is cheap and a 401 costs a retry.
pub(crate) const UNSTATED_LIFETIME: Duration = Duration::from_secs(600);

/// A token fresh from a credential.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The bearer token.
    pub(crate) token: Secret,
    /// How long it lives from the moment the request was sent.
    pub(crate) lifetime: Duration,
}

/// What a credential needs to fetch a token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchContext<'a> {
    /// HTTP client for the login and identity endpoints.
    pub(crate) http: &'a reqwest::Client,
    /// The Entra ID host (`--cloud`, `AZURE_AUTHORITY_HOST`, `--login-url`).
    pub(crate) login_base: &'a str,
    /// The v2 scope: the API's App ID URI with `/.default`.
    pub(crate) scope: &'a str,
}

impl FetchContext<'_> {
    /// The v1 resource (the App ID URI): managed identity and the Azure CLI
    /// ask for it instead of a scope.
    pub(crate) fn resource(&self) -> &str {
        self.scope.strip_suffix("/.default").unwrap_or(self.scope)
    }
}

/// Seconds since the Unix epoch now.
pub fn epoch_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The lifetime left until `expires_on` (Unix seconds), capped.
pub(crate) fn lifetime_until(expires_on: u64) -> Duration {
    Duration::from_secs(expires_on.saturating_sub(epoch_now())).min(MAX_TOKEN_LIFETIME)
}

/// The `exp` claim of a token that is a readable JWT (its signature is not
/// checked: only the API can tell whether it is valid).
pub(crate) fn jwt_expiry(token: &str) -> Option<u64> {
    let exp = Jws::parse(token).ok()?.claim_time("exp")?;
    u64::try_from(exp).ok()
}

/// How long `token` lives: its JWT `exp` when readable, else
/// [`UNSTATED_LIFETIME`].
pub(crate) fn lifetime_of(token: &str) -> Duration {
    jwt_expiry(token).map_or(UNSTATED_LIFETIME, lifetime_until)
}

/// The permissions a token carries, when it is a readable JWT: its `roles`
/// (application permissions) and its `scp` (delegated permissions, a
/// space-separated list), sorted. `None` when it is not a readable JWT: then
/// only the API can tell what it may do.
pub fn token_permissions(token: &str) -> Option<Vec<String>> {
    let jws = Jws::parse(token).ok()?;
    let mut out: Vec<String> = Vec::new();
    if let Some(roles) = jws.claims.get("roles").and_then(|r| r.as_array()) {
        out.extend(roles.iter().filter_map(|r| r.as_str()).map(str::to_string));
    }
    if let Some(scp) = jws.claim_str("scp") {
        out.extend(scp.split_whitespace().map(str::to_string));
    }
    out.sort();
    out.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::jwt::SigningKey;

    #[test]
    fn lifetimes_come_from_exp_or_the_default() {
        let key = SigningKey::generate().unwrap();
        let exp = epoch_now() + 1200;
        let jwt = key
            .sign(
                crate::api::jwt::Algorithm::Rs256,
                serde_json::Map::new(),
                &serde_json::json!({ "exp": exp }),
            )
            .unwrap();
        assert_eq!(jwt_expiry(&jwt), Some(exp));
        let life = lifetime_of(&jwt);
        assert!(life <= Duration::from_secs(1200) && life >= Duration::from_secs(1190));
        assert_eq!(lifetime_of("opaque-token"), UNSTATED_LIFETIME);
        assert_eq!(lifetime_until(0), Duration::ZERO);
        assert_eq!(lifetime_until(u64::MAX), MAX_TOKEN_LIFETIME);
    }

    #[test]
    fn permissions_come_from_roles_and_scp() {
        let key = SigningKey::generate().unwrap();
        let sign = |claims: serde_json::Value| {
            key.sign(crate::api::jwt::Algorithm::Rs256, serde_json::Map::new(), &claims).unwrap()
        };
        let app = sign(serde_json::json!({"roles": ["Machine.Read.All", "Machine.Isolate"]}));
        assert_eq!(token_permissions(&app).unwrap(), ["Machine.Isolate", "Machine.Read.All"]);
        let user = sign(serde_json::json!({"scp": "Machine.Isolate  Machine.Scan"}));
        assert_eq!(token_permissions(&user).unwrap(), ["Machine.Isolate", "Machine.Scan"]);
        assert_eq!(token_permissions(&sign(serde_json::json!({}))).unwrap(), Vec::<String>::new());
        assert_eq!(token_permissions("opaque"), None);
    }

    #[test]
    fn resource_drops_the_default_suffix() {
        let http = reqwest::Client::new();
        let ctx = FetchContext {
            http: &http,
            login_base: "https://login.microsoftonline.com",
            scope: "https://api.securitycenter.microsoft.com/.default",
        };
        assert_eq!(ctx.resource(), "https://api.securitycenter.microsoft.com");
    }
}
