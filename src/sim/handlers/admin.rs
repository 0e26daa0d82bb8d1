//! The `/_sim` hooks a test drives the simulator with: stats, taking
//! machines online or offline, renaming a machine, setting its tags, IP history and
//! files, the files the generated fleet has seen, the investigation
//! packages `GetPackageUri` links to, the host's managed identities with
//! their ids, the tenants served, and revoking or restoring a client's
//! credentials. With `--tenants`, a hook takes its tenant as `?tenant=`
//! (name or id): the hooks on machines and files demand one, the stats
//! and the clients' credentials take one to narrow to that tenant.

use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request, quoted};
use crate::api::odata::decode;
use crate::sim::fleet::{self, WELL_KNOWN_FILES};
use crate::sim::state::State;

/// An empty zip archive (its end-of-central-directory record alone): what
/// the package links of `GetPackageUri` download.
const EMPTY_ZIP: &str = "PK\u{5}\u{6}\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

impl State {
    /// The `/_sim` hooks (listed in the module documentation and the
    /// README). No authentication, not counted.
    pub(super) fn admin(&mut self, req: &Request<'_>, now: Instant) -> Reply {
        let trimmed = req.path.trim_matches('/');
        let segs: Vec<&str> = trimmed.split('/').collect();
        let named = match req.query_param("tenant") {
            Some(key) => match self.tenant_index(&key) {
                Some(t) => Some(t),
                None => {
                    let names: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
                    return Reply::error(
                        404,
                        "NotFound",
                        format!(
                            "No tenant {} in this simulator (it serves {})",
                            quoted(&key),
                            names.join(", ")
                        ),
                    );
                }
            },
            None => None,
        };
        // Tenant data: the named tenant, the only one of a one-tenant
        // simulator, or none (refused below where one is needed).
        self.serving = named.or((!self.multi_tenant()).then_some(0));
        let needs_tenant = matches!(segs.as_slice(), ["_sim", "machines", ..] | ["_sim", "files"]);
        if needs_tenant && self.serving.is_none() {
            return Reply::error(
                400,
                "BadRequest",
                format!(
                    "This simulator serves {} tenants: name one with ?tenant=NAME",
                    self.tenants.len()
                ),
            );
        }
        match (req.method.clone(), segs.as_slice()) {
            (Method::GET, ["_sim", "stats"]) => {
                let stats = match named {
                    Some(t) if self.multi_tenant() => self.tenants[t].stats(),
                    _ => self.stats(),
                };
                let body = serde_json::to_string(&stats).unwrap_or_default();
                Reply::json(200, body, PLAIN_JSON)
            }
            (Method::GET, ["_sim", "tenants"]) => {
                let tenants: Vec<Value> = if self.multi_tenant() {
                    self.tenants
                        .iter()
                        .map(|t| json!({"name": t.name, "id": t.id, "machines": t.machines.len()}))
                        .collect()
                } else {
                    Vec::new()
                };
                Reply::json(200, Value::Array(tenants).to_string(), PLAIN_JSON)
            }
            (Method::POST, ["_sim", "machines", key, state @ ("online" | "offline")]) => {
                let key = decode(key);
                match self.machine_by_id_or_name(&key) {
                    Some(i) => {
                        self.set_online(i, *state == "online", now);
                        Reply::json(200, self.tenant().machines[i].json.to_string(), PLAIN_JSON)
                    }
                    None => Reply::error(
                        404,
                        "ResourceNotFound",
                        format!("Machine {key} was not found"),
                    ),
                }
            }
            (
                method @ (Method::GET | Method::POST),
                ["_sim", "machines", key, what @ ("tags" | "ips" | "files")],
            ) => {
                let key = decode(key);
                let Some(i) = self.machine_by_id_or_name(&key) else {
                    return Reply::error(
                        404,
                        "ResourceNotFound",
                        format!("Machine {key} was not found"),
                    );
                };
                if method == Method::POST
                    && let Err(why) = self.set_sidecar(i, what, req.body)
                {
                    return Reply::error(400, "InvalidRequestBody", why);
                }
                let e = &self.tenant().machines[i];
                let body = match *what {
                    "tags" => json!(e.tags()),
                    "ips" => Value::Array(e.sidecar.ips.iter().map(|s| s.to_json()).collect()),
                    _ => json!(e.sidecar.files),
                };
                Reply::json(200, body.to_string(), PLAIN_JSON)
            }
            (Method::POST, ["_sim", "machines", key, "name"]) => {
                let key = decode(key);
                let Some(i) = self.machine_by_id_or_name(&key) else {
                    return Reply::error(
                        404,
                        "ResourceNotFound",
                        format!("Machine {key} was not found"),
                    );
                };
                match serde_json::from_slice::<String>(req.body) {
                    Ok(name) if !name.trim().is_empty() => {
                        self.rename_machine(i, name.trim().to_string());
                        Reply::json(200, self.tenant().machines[i].json.to_string(), PLAIN_JSON)
                    }
                    _ => Reply::error(
                        400,
                        "InvalidRequestBody",
                        "the new computerDnsName, as a JSON string".to_string(),
                    ),
                }
            }
            (Method::GET, ["_sim", "identities"]) => {
                Reply::json(200, self.identities_json().to_string(), PLAIN_JSON)
            }
            (Method::GET, ["_sim", "files"]) => {
                let files: serde_json::Map<String, Value> = WELL_KNOWN_FILES
                    .iter()
                    .map(|h| {
                        let ids = self
                            .tenant()
                            .machines
                            .iter()
                            .filter(|m| m.sidecar.files.iter().any(|f| f == h));
                        (h.to_string(), json!(ids.map(|m| &m.machine.id).collect::<Vec<_>>()))
                    })
                    .collect();
                Reply::json(200, Value::Object(files).to_string(), PLAIN_JSON)
            }
            (Method::GET, ["_sim", "packages", file]) => {
                // Action ids are unique across tenants: the link needs no tenant.
                let id = file.strip_suffix(".zip");
                match id.filter(|id| self.tenants.iter().any(|t| t.action_by_id(id).is_some())) {
                    Some(_) => Reply::json(200, EMPTY_ZIP.to_string(), "application/zip"),
                    None => Reply::error(404, "NotFound", format!("No package '{file}'")),
                }
            }
            (Method::POST, ["_sim", "clients", client, verb @ ("revoke" | "restore")]) => {
                let client = decode(client);
                // In a one-tenant simulator a named tenant is the only one:
                // its consent, as with --tenants.
                if *verb == "revoke" {
                    self.revoke_client(&client, named);
                } else {
                    self.restore_client(&client, named);
                }
                let mut body = json!({ "client_id": client, "revoked": *verb == "revoke" });
                if let Some(t) = named.filter(|_| self.multi_tenant()) {
                    body["tenant"] = json!(self.tenants[t].name);
                }
                Reply::json(200, body.to_string(), PLAIN_JSON)
            }
            _ => {
                Reply::error(404, "NotFound", format!("No simulator hook matches '{}'.", req.path))
            }
        }
    }
}

impl State {
    /// Replaces machine `i`'s tags (a JSON list of strings), IP history (a
    /// list of `{ipAddress, from, to}`, the fleet file's `ipHistory`) or
    /// files (a list of SHA-1 hashes). A new IP history also sets
    /// `lastIpAddress` to the address of its last entry.
    fn set_sidecar(&mut self, i: usize, what: &str, body: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(body).map_err(|_| "not valid JSON".to_string())?;
        let entry = &mut self.tenant_mut().machines[i];
        match what {
            "tags" => {
                let tags = v
                    .as_array()
                    .and_then(|items| {
                        items.iter().map(|t| t.as_str().map(str::to_string)).collect()
                    })
                    .ok_or("tags must be a list of strings")?;
                entry.set_tags(tags);
            }
            "ips" => {
                let ips = fleet::parse_ip_history(&v)?;
                if let Some(last) = ips.last() {
                    entry.machine.last_ip_address = Some(last.ip.to_string());
                }
                entry.sidecar.ips = ips;
                entry.rerender();
            }
            _ => entry.sidecar.files = fleet::parse_files(&v)?,
        }
        Ok(())
    }
}
