//! The `/_sim` hooks a test drives the simulator with: stats, taking
//! machines online or offline, renaming a machine, setting its tags, IP history and
//! files, the files the generated fleet has seen, the investigation
//! packages `GetPackageUri` links to, the host's managed identities with
//! their ids, and revoking or restoring a client's credentials.

use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request};
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
        match (req.method.clone(), segs.as_slice()) {
            (Method::GET, ["_sim", "stats"]) => {
                let body = serde_json::to_string(&self.stats()).unwrap_or_default();
                Reply::json(200, body, PLAIN_JSON)
            }
            (Method::POST, ["_sim", "machines", key, state @ ("online" | "offline")]) => {
                let key = decode(key);
                match self.machine_by_id_or_name(&key) {
                    Some(i) => {
                        self.set_online(i, *state == "online", now);
                        Reply::json(200, self.machines[i].json.to_string(), PLAIN_JSON)
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
                let e = &self.machines[i];
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
                        Reply::json(200, self.machines[i].json.to_string(), PLAIN_JSON)
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
                        let ids =
                            self.machines.iter().filter(|m| m.sidecar.files.iter().any(|f| f == h));
                        (h.to_string(), json!(ids.map(|m| &m.machine.id).collect::<Vec<_>>()))
                    })
                    .collect();
                Reply::json(200, Value::Object(files).to_string(), PLAIN_JSON)
            }
            (Method::GET, ["_sim", "packages", file]) => {
                match file.strip_suffix(".zip").and_then(|id| self.action_by_id(id)) {
                    Some(_) => Reply::json(200, EMPTY_ZIP.to_string(), "application/zip"),
                    None => Reply::error(404, "NotFound", format!("No package '{file}'")),
                }
            }
            (Method::POST, ["_sim", "clients", client, verb @ ("revoke" | "restore")]) => {
                let client = decode(client);
                if *verb == "revoke" {
                    self.revoke_client(&client);
                } else {
                    self.restore_client(&client);
                }
                Reply::json(
                    200,
                    json!({ "client_id": client, "revoked": *verb == "revoke" }).to_string(),
                    PLAIN_JSON,
                )
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
        let entry = &mut self.machines[i];
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
