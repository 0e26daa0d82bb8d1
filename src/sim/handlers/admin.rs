//! The `/_sim` hooks a test drives the simulator with: stats, taking
//! machines online or offline, and revoking or restoring a client's
//! credentials.

use hyper::Method;
use serde_json::json;
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::odata::decode;
use crate::sim::state::State;

impl State {
    /// The `/_sim` hooks: stats, taking machines online or offline, and
    /// revoking or restoring a client's credentials. No authentication, not
    /// counted.
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
