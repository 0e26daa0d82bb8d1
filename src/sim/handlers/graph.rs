//! Microsoft Graph on its own listener: `POST /v1.0/security/runHuntingQuery`
//! (addendum §3.1), answered for the subset of KQL that [`crate::sim::kql`]
//! reads, over tables built from the fleet as it stands.
//!
//! Check order, as for the API: route → 401 (no token, or one whose `aud`
//! is not Graph: an MDE token is refused here as a Graph token is refused
//! on the API) → 403 (no `ThreatHunting.Read.All`) → 429 (Advanced
//! Hunting's 45 calls a minute, per app and tenant, with `Retry-After`) →
//! body → query → 200. Every error is in Graph's envelope
//! (`{"error":{"code","message","innerError"}}`).
//!
//! Decided where the sources are silent: the tables hold what the fleet
//! knows (README, "The simulator's KQL"); `Timespan` is accepted and not
//! applied (every report is in range); there is no 100,000-row cut; the
//! 401 and 403 texts follow what Graph answers other APIs.

use hyper::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{PLAIN_JSON, Reply, Request};
use crate::api::model::ErrorEnvelope;
use crate::api::route::Api;
use crate::sim::config::GRAPH_HUNTING_ROLE;
use crate::sim::kql::{self, Cell, Kind, Table};
use crate::sim::state::{State, TokenInfo, role_bit};

/// A report of a device seen a day before its last report: `DeviceInfo`
/// holds two per device, as the real table holds many.
const EARLIER_REPORT: std::time::Duration = std::time::Duration::from_secs(86_400);

impl State {
    /// Answers one request to the Graph listener.
    pub(crate) fn graph(&mut self, req: &Request<'_>, now: Instant) -> Reply {
        let path = req.path.trim_end_matches('/');
        let lower = path.to_ascii_lowercase();
        if !matches!(
            lower.as_str(),
            "/v1.0/security/runhuntingquery" | "/beta/security/runhuntingquery"
        ) {
            self.count(|s| s.not_found += 1);
            let segment = path.rsplit('/').next().unwrap_or_default();
            return Reply::graph_error(
                400,
                "BadRequest",
                format!(
                    "Resource not found for the segment '{}'.",
                    crate::api::odata::decode(segment)
                ),
            );
        }
        if req.method != Method::POST {
            return Reply::graph_error(
                405,
                "BadRequest",
                format!("The method {} is not allowed on runHuntingQuery; use POST.", req.method),
            );
        }
        let api = Api::HuntingQuery;
        self.count_api(api, |s| s.calls += 1);
        let token = match self.graph_token(req.authorization, now) {
            Ok(t) => t,
            Err(reply) => {
                self.count(|s| s.unauthorized += 1);
                return reply;
            }
        };
        if token.roles & role_bit(GRAPH_HUNTING_ROLE) == 0 {
            self.count(|s| s.forbidden += 1);
            return Reply::graph_error(
                403,
                "Forbidden",
                format!(
                    "Missing role permissions on the request. API requires one of '{GRAPH_HUNTING_ROLE}'. Roles on the request '{}'.",
                    self.roles_text(token.roles)
                ),
            );
        }
        if let Err(mde) = self.throttle(api, token.principal, now) {
            let message = serde_json::from_str::<ErrorEnvelope>(&mde.body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| "Too many requests".to_string());
            let mut r = Reply::graph_error(429, "TooManyRequests", message);
            r.retry_after = mde.retry_after;
            r.retry_after_text = self.cfg.throttle_retry_after.clone();
            return r;
        }
        self.count_api(api, |s| s.admitted += 1);
        let query = match hunting_query(req.body) {
            Ok(q) => q,
            Err(why) => {
                self.count(|s| s.bad_request += 1);
                return Reply::graph_error(400, "BadRequest", why);
            }
        };
        let tables = self.hunting_tables();
        match kql::parse(&query, &tables) {
            Ok(q) => {
                let mut body = kql::run(&q, &tables);
                let context = format!(
                    "{}/v1.0/$metadata#microsoft.graph.security.huntingQueryResults",
                    req.origin()
                );
                body.insert("@odata.context".into(), json!(context));
                // `@odata.context` first, as Graph writes it.
                let mut ordered = serde_json::Map::new();
                if let Some(c) = body.remove("@odata.context") {
                    ordered.insert("@odata.context".into(), c);
                }
                ordered.extend(body);
                Reply::json(200, Value::Object(ordered).to_string(), PLAIN_JSON)
            }
            Err(e) => {
                self.count(|s| s.bad_request += 1);
                Reply::graph_error(400, "BadRequest", e.0)
            }
        }
    }

    /// Graph's bearer check: 401 `InvalidAuthenticationToken` for a missing
    /// or unknown token, an expired one, or one issued for another audience.
    fn graph_token(&self, header: Option<&str>, now: Instant) -> Result<TokenInfo, Reply> {
        let unauthorized = |msg: &str| {
            let mut r = Reply::graph_error(401, "InvalidAuthenticationToken", msg);
            r.www_authenticate = Some("Bearer".to_string());
            r
        };
        let token = header
            .map(str::trim)
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
            .map(|(_, t)| t.trim());
        let Some(token) = token else {
            return Err(unauthorized("Access token is empty."));
        };
        let Some(info) = self.tokens.get(token) else {
            return Err(unauthorized("Access token validation failure."));
        };
        if now >= info.expires {
            return Err(unauthorized("Lifetime validation failed, the token is expired."));
        }
        if info.service != crate::sim::config::Service::Graph {
            return Err(unauthorized("Access token validation failure. Invalid audience."));
        }
        Ok(*info)
    }

    /// The roles of a mask, comma-separated, for the 403's text.
    fn roles_text(&self, mask: u16) -> String {
        let roles: Vec<&str> = crate::sim::config::KNOWN_ROLES
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, r)| *r)
            .collect();
        roles.join(" ")
    }

    /// The hunting tables, built from the fleet as it stands now (tags and
    /// health changed through the hooks included).
    pub(crate) fn hunting_tables(&self) -> Vec<Table> {
        vec![self.device_info(), self.device_file_events()]
    }

    /// `DeviceInfo`: two reports per device (its last one and one a day
    /// earlier), with the columns the fleet can fill.
    fn device_info(&self) -> Table {
        let s = |n: &str| (n.to_string(), Kind::String);
        let columns = vec![
            ("Timestamp".to_string(), Kind::DateTime),
            s("DeviceId"),
            s("DeviceName"),
            s("ClientVersion"),
            s("PublicIP"),
            s("OSArchitecture"),
            s("OSPlatform"),
            ("OSBuild".to_string(), Kind::Long),
            ("IsAzureADJoined".to_string(), Kind::Bool),
            s("AadDeviceId"),
            s("MachineGroup"),
            s("OSVersion"),
            s("OnboardingStatus"),
            s("SensorHealthState"),
            s("ExposureLevel"),
            s("AssetValue"),
            s("DeviceManualTags"),
        ];
        let mut rows = Vec::with_capacity(self.tenant().machines.len() * 2);
        for entry in &self.tenant().machines {
            let m = &entry.machine;
            let extra = |k: &str| match m.extra.get(k) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let text = |v: &Option<String>| Cell::Text(v.clone().unwrap_or_default());
            let last = m.last_seen.clone().unwrap_or_default();
            let earlier = crate::api::time::parse_utc(&last)
                .and_then(|t| t.checked_sub(EARLIER_REPORT))
                .map(crate::api::time::format_utc)
                .unwrap_or_else(|| last.clone());
            let build =
                m.extra.get("osBuild").and_then(Value::as_i64).map_or(Cell::Null, Cell::Long);
            let aad = m.extra.get("isAadJoined").and_then(Value::as_bool).unwrap_or(false);
            let tags = Value::from(entry.tags()).to_string();
            let rest = vec![
                Cell::Text(m.id.clone()),
                text(&m.computer_dns_name),
                Cell::Text(extra("agentVersion")),
                Cell::Text(extra("lastExternalIpAddress")),
                Cell::Text(extra("osArchitecture")),
                text(&m.os_platform),
                build,
                Cell::Bool(aad),
                text(&m.aad_device_id),
                Cell::Text(extra("rbacGroupName")),
                Cell::Text(extra("version")),
                Cell::Text(extra("onboardingStatus")),
                text(&m.health_status),
                Cell::Text(extra("exposureLevel")),
                Cell::Text(extra("deviceValue")),
                Cell::Text(tags),
            ];
            for at in [earlier, last] {
                let mut row = vec![Cell::Text(at)];
                row.extend(rest.iter().cloned());
                rows.push(row);
            }
        }
        Table { name: "DeviceInfo", columns, rows }
    }

    /// `DeviceFileEvents`: one `FileCreated` event per file a device has
    /// seen (the fleet's `files`), at its last report; the file's name and
    /// folder are made up from its hash and the device's platform.
    fn device_file_events(&self) -> Table {
        let s = |n: &str| (n.to_string(), Kind::String);
        let columns = vec![
            ("Timestamp".to_string(), Kind::DateTime),
            s("DeviceId"),
            s("DeviceName"),
            s("ActionType"),
            s("FileName"),
            s("FolderPath"),
            s("SHA1"),
        ];
        let mut rows = Vec::new();
        for entry in &self.tenant().machines {
            let m = &entry.machine;
            let folder =
                if m.is_linux_or_macos() { "/tmp/" } else { "C:\\Users\\Public\\Downloads\\" };
            for sha1 in &entry.sidecar.files {
                let name = format!("{}.exe", sha1.get(..8).unwrap_or(sha1));
                rows.push(vec![
                    Cell::Text(m.last_seen.clone().unwrap_or_default()),
                    Cell::Text(m.id.clone()),
                    Cell::Text(m.computer_dns_name.clone().unwrap_or_default()),
                    Cell::Text("FileCreated".into()),
                    Cell::Text(name.clone()),
                    Cell::Text(format!("{folder}{name}")),
                    Cell::Text(sha1.clone()),
                ]);
            }
        }
        Table { name: "DeviceFileEvents", columns, rows }
    }
}

/// The `Query` of a request body (`{"Query": "...", "Timespan": "..."}`,
/// keys read without regard to case, as Graph reads them).
fn hunting_query(body: &[u8]) -> Result<String, String> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err("The request body must be a JSON object with a Query property.".into());
    };
    match map.iter().find(|(k, _)| k.eq_ignore_ascii_case("query")).map(|(_, v)| v) {
        Some(Value::String(q)) if !q.trim().is_empty() => Ok(q.clone()),
        Some(Value::String(_)) | None => {
            Err("The Query property is required and must not be empty.".into())
        }
        Some(_) => Err("The Query property must be a string.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_needs_a_query_string() {
        assert_eq!(hunting_query(br#"{"Query":"DeviceInfo"}"#).as_deref(), Ok("DeviceInfo"));
        assert_eq!(
            hunting_query(br#"{"query":"DeviceInfo","Timespan":"P1D"}"#).as_deref(),
            Ok("DeviceInfo")
        );
        assert!(hunting_query(br#"{"Query":" "}"#).unwrap_err().contains("required"));
        assert!(hunting_query(br#"{"Query":1}"#).unwrap_err().contains("string"));
        assert!(hunting_query(b"[]").unwrap_err().contains("JSON object"));
    }

    #[test]
    fn device_info_has_two_reports_per_device_and_file_events_the_fleet_files() {
        let cfg = crate::sim::SimConfig {
            fleet: crate::sim::FleetSpec::Generate { machines: 30 },
            ..crate::sim::SimConfig::default()
        };
        let state = State::new(cfg, crate::sim::lifecycle::Clock::start());
        let tables = state.hunting_tables();
        assert_eq!(tables[0].rows.len(), 60);
        let q = kql::parse("DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId", &tables)
            .unwrap();
        let reply = kql::run(&q, &tables);
        let rows = reply["results"].as_array().unwrap();
        assert_eq!(rows.len(), 30);
        for (row, m) in rows.iter().zip(state.machines()) {
            assert_eq!(row["DeviceId"], m.id.as_str());
            assert_eq!(row["Timestamp"], m.last_seen.clone().unwrap().as_str(), "the last report");
            assert_eq!(row["DeviceName"], m.computer_dns_name.clone().unwrap().as_str());
        }
        let files: usize = state.tenant().machines.iter().map(|e| e.sidecar.files.len()).sum();
        assert_eq!(tables[1].rows.len(), files);
        assert!(files > 0, "the generated fleet has seen files");
    }
}
