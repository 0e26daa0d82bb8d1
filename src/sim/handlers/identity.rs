//! The managed-identity token endpoints of the simulated host, in their own
//! shapes, on the simulator's own address (so no test ever calls the real
//! IMDS address):
//!
//! - Azure IMDS, `GET /metadata/identity/oauth2/token?api-version=...&resource=...`
//!   with `Metadata: true` (`mde-api-addendum.md` §6.1, fixture
//!   `imds-token-200.json`): every number a string, `refresh_token` empty.
//! - App Service and Functions, `GET /msi/token?api-version=2019-08-01&resource=...`
//!   with `X-IDENTITY-HEADER` (§6.2, fixture `appservice-token-200.json`),
//!   and its 2017-09-01 shape (header `secret`, `clientid`, `expires_on` as
//!   a date) that `MSI_ENDPOINT`/`MSI_SECRET` still reach.
//!
//! - Azure Arc's agent (`--arc-key-dir`), on the IMDS path with
//!   api-version 2020-06-01 (§6.3): a first request is answered 401 with
//!   `WWW-Authenticate: Basic realm=<DIR/NAME.key>`, a file the simulator
//!   writes (owner-only) holding a fresh key; the request sent again with
//!   `Authorization: Basic <that key>` gets the IMDS-shaped token. Arc has
//!   no user-assigned identities: naming one is a 400.
//!
//! The host has a system-assigned identity (its client id derived from the
//! seed) and the user-assigned ones configured; `client_id`, `object_id`
//! (`principal_id`) and `msi_res_id` (`mi_res_id`) pick one. IMDS error
//! bodies are `{"error","error_description"}` as §6.1's table gives them.
//! Decided where the sources are silent: an unknown user-assigned identity
//! is IMDS's 400 `invalid_request` "Identity not found"; App Service errors
//! are `{"statusCode","message","correlationId"}`, the shape its endpoint
//! answers with; a missing or wrong App Service header is its 401.

use serde_json::json;
use tokio::time::Instant;

use super::mint::{Proof, audience_of_resource};
use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::model::new_guid;
use crate::api::odata::decode_form;
use crate::sim::state::State;
use crate::sim::tenant::guid_of;

/// Which endpoint shape a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Azure Instance Metadata Service.
    Imds,
    /// App Service / Functions (`IDENTITY_ENDPOINT`, `MSI_ENDPOINT`).
    AppService,
}

/// One managed identity of the simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    /// Its application (client) id: the token's `appid`.
    client_id: String,
    /// Its service principal's object id.
    object_id: String,
    /// Its Azure resource id.
    resource_id: String,
}

impl Identity {
    /// The identity of `client_id`, its other ids derived from it.
    fn new(client_id: &str, name: &str) -> Identity {
        Identity {
            client_id: client_id.to_string(),
            object_id: guid_of(&format!("mi-object:{client_id}")),
            resource_id: format!(
                "/subscriptions/{}/resourcegroups/sim/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
                guid_of("sim-subscription")
            ),
        }
    }
}

/// The query string, decoded.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_form(k), decode_form(v))
        })
        .collect()
}

impl State {
    /// The host's system-assigned identity.
    fn system_identity(&self) -> Identity {
        Identity::new(&guid_of(&format!("mi-system:{}", self.cfg.seed)), "system")
    }

    /// The host's user-assigned identities, in the configured order.
    fn user_identities(&self) -> Vec<Identity> {
        self.cfg
            .identity
            .managed_identities
            .iter()
            .enumerate()
            .map(|(i, id)| Identity::new(id, &format!("sim-identity-{}", i + 1)))
            .collect()
    }

    /// Every managed identity of the host with its three ids
    /// (`GET /_sim/identities`), for tests that name one by object or
    /// resource id.
    pub(super) fn identities_json(&self) -> serde_json::Value {
        let show = |kind: &str, i: Identity| json!({"kind": kind, "client_id": i.client_id, "object_id": i.object_id, "resource_id": i.resource_id});
        let mut all = vec![show("system", self.system_identity())];
        all.extend(self.user_identities().into_iter().map(|i| show("user", i)));
        serde_json::Value::Array(all)
    }

    /// The identity a request selects, or `None` when it names one the host
    /// does not have.
    fn select_identity(&self, q: &[(String, String)]) -> Option<Identity> {
        let get = |names: &[&str]| {
            q.iter().find(|(k, _)| names.contains(&k.as_str())).map(|(_, v)| v.as_str())
        };
        let users = self.user_identities();
        if let Some(id) = get(&["client_id", "clientid"]) {
            return users.into_iter().find(|u| u.client_id.eq_ignore_ascii_case(id));
        }
        if let Some(id) = get(&["object_id", "principal_id"]) {
            return users.into_iter().find(|u| u.object_id.eq_ignore_ascii_case(id));
        }
        if let Some(id) = get(&["msi_res_id", "mi_res_id"]) {
            return users.into_iter().find(|u| u.resource_id.eq_ignore_ascii_case(id));
        }
        Some(self.system_identity())
    }

    /// `GET` on a managed-identity endpoint.
    pub(super) fn managed_identity(
        &mut self,
        shape: Shape,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        self.count(|s| s.managed_identity_requests += 1);
        let q = query_pairs(req.query);
        let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let api_version = get("api-version").unwrap_or("");
        let legacy = shape == Shape::AppService && api_version == "2017-09-01";
        let error = |status: u16, code: &str, description: &str| match shape {
            Shape::Imds => Reply::json(
                status,
                json!({"error": code, "error_description": description}).to_string(),
                PLAIN_JSON,
            ),
            Shape::AppService => Reply::json(
                status,
                json!({"statusCode": status, "message": description, "correlationId": new_guid()})
                    .to_string(),
                PLAIN_JSON,
            ),
        };
        match shape {
            Shape::Imds => {
                if req.header("metadata") != Some("true") {
                    return error(400, "bad_request_102", "Required metadata header not specified");
                }
                if let Some(dir) = self.cfg.identity.arc_key_dir.clone() {
                    let named = ["client_id", "object_id", "msi_res_id", "mi_res_id"];
                    if q.iter().any(|(k, _)| named.contains(&k.as_str())) {
                        return error(
                            400,
                            "invalid_request",
                            "User assigned identity is not supported on Azure Arc",
                        );
                    }
                    if let Err(challenge) = self.arc_challenge(&dir, req) {
                        return challenge;
                    }
                }
            }
            Shape::AppService => {
                let (name, want) = if legacy {
                    ("secret", &self.cfg.identity.identity_header)
                } else {
                    ("x-identity-header", &self.cfg.identity.identity_header)
                };
                if req.header(name) != Some(want.as_str()) {
                    return error(
                        401,
                        "unauthorized",
                        &format!("The {name} header is missing or does not match."),
                    );
                }
            }
        }
        if api_version.is_empty() {
            return error(
                400,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            );
        }
        let Some(resource) = get("resource").filter(|r| !r.is_empty()) else {
            return error(400, "invalid_request", "Required query variable 'resource' is missing");
        };
        // A managed identity lives in its host's tenant alone: with
        // `--tenants`, the first; it never reaches another tenant.
        let tenant = match self.cfg.tenant.clone() {
            Some(t) => t,
            None if self.multi_tenant() => self.tenants[0].name.clone(),
            None => "sim-tenant".to_string(),
        };
        let Some(audience) = audience_of_resource(resource) else {
            return error(
                400,
                "invalid_resource",
                &format!(
                    "AADSTS50001: The application named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                ),
            );
        };
        let Some(identity) = self.select_identity(&q) else {
            return error(400, "invalid_request", "Identity not found");
        };
        if self.revoked.contains(&identity.client_id.to_ascii_lowercase())
            || self.consent_withdrawn(0, &identity.client_id)
        {
            return error(400, "invalid_request", "Identity not found");
        }
        let minted =
            match self.mint(req, &identity.client_id, &tenant, &audience, Proof::Assertion, now) {
                Ok(m) => m,
                Err(e) => return error(500, "unknown", &e.to_string()),
            };
        let body = match shape {
            Shape::Imds => json!({
                "access_token": minted.token,
                "refresh_token": "",
                "expires_in": minted.lifetime.to_string(),
                "expires_on": minted.expires_on.to_string(),
                "not_before": minted.not_before.to_string(),
                "resource": resource,
                "token_type": "Bearer",
            }),
            Shape::AppService if legacy => json!({
                "access_token": minted.token,
                "expires_on": legacy_date(minted.expires_on),
                "resource": resource,
                "token_type": "Bearer",
            }),
            Shape::AppService => json!({
                "access_token": minted.token,
                "expires_on": minted.expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            }),
        };
        Reply::json(200, body.to_string(), PLAIN_JSON)
    }
}

impl State {
    /// Azure Arc's challenge: lets in a request whose `Authorization: Basic`
    /// is the content of a key file handed out earlier; any other gets a
    /// 401 naming a new key file in `dir`.
    fn arc_challenge(&mut self, dir: &std::path::Path, req: &Request<'_>) -> Result<(), Reply> {
        let sent = req.header("authorization").and_then(|h| h.strip_prefix("Basic "));
        if sent.is_some_and(|key| self.arc_keys.contains(key.trim())) {
            return Ok(());
        }
        let key = new_guid().replace('-', "");
        let path = dir.join(format!("{}.key", new_guid()));
        let refuse = |description: &str| {
            Reply::json(
                401,
                json!({"error": "unauthorized", "error_description": description}).to_string(),
                PLAIN_JSON,
            )
        };
        if let Err(e) = write_owner_only(&path, key.as_bytes()) {
            return Err(Reply::json(
                500,
                json!({"error": "unknown", "error_description": format!("cannot write the key file: {e}")})
                    .to_string(),
                PLAIN_JSON,
            ));
        }
        self.arc_keys.insert(key);
        let mut challenge = refuse("Send the content of the key file named by the challenge");
        challenge.www_authenticate = Some(format!("Basic realm={}", path.display()));
        Err(challenge)
    }
}

/// Writes a key file only its owner may read, as the Arc agent keeps its
/// keys readable by its administrators only.
fn write_owner_only(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // On Windows the file inherits the directory's ACL, which on an Arc
    // host is the agent's administrators-only token directory.
    options.open(path)?.write_all(content)
}

/// `expires_on` of the 2017-09-01 shape: "a timestamp format" (AZ-APPSVC),
/// `MM/dd/yyyy hh:mm:ss tt +00:00` as the .NET host writes it.
fn legacy_date(epoch: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let iso = crate::api::time::format_utc(t);
    // `2026-12-01T22:50:07.0000000Z`
    let (y, mo, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let (h, mi, s) = (&iso[11..13], &iso[14..16], &iso[17..19]);
    let hour: u32 = h.parse().unwrap_or(0);
    let (h12, ampm) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    format!("{mo}/{d}/{y} {h12:02}:{mi}:{s} {ampm} +00:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_dates_read_as_dotnet_writes_them() {
        // 2017-09-14T12:30:05Z
        assert_eq!(legacy_date(1505392205), "09/14/2017 12:30:05 PM +00:00");
        // 2017-09-14T00:00:00Z
        assert_eq!(legacy_date(1505347200), "09/14/2017 12:00:00 AM +00:00");
        assert_eq!(legacy_date(1505347200 + 13 * 3600), "09/14/2017 01:00:00 PM +00:00");
    }
}
