//! The rest of the machine family (`mde-api-addendum.md` §1 and §2):
//! machines found by IP, by tag and by file, tags added and removed (one
//! machine or up to 500), a machine's log-on users, automated
//! investigations, and the link to a collected investigation package.
//!
//! Where the documentation is silent, the choices below are the service's
//! most plausible behaviour; each is stated on its handler and listed in
//! the README's simulator section:
//!
//! - Parameter errors of `findbyip` and `findbytag` (malformed, missing,
//!   out of range) are 400 `BadRequest`, the documentation's own words for
//!   the 30-day rule; no match is 200 with an empty `value`.
//! - Tags compare without regard to case (as the portal treats them):
//!   adding a tag the machine carries in any case, or removing one it does
//!   not carry, changes nothing and still answers 200.
//! - Tag bodies are validated like action bodies: InvalidRequestBody, then
//!   MissingRequiredParameter, then (batch) MaximumBatchSizeExceeded.
//! - A hash that is not a SHA-1 is 400 `InvalidHashValue`, naming MD5 or
//!   SHA-256 when it has their length, rather than a silent empty answer.
//! - Sub-resources (`tags`, `logonusers`, `startInvestigation`) take a
//!   machine id, as action POSTs do; an unknown one is 404 ResourceNotFound.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::reply::{ODATA_JSON, Reply, Request};
use crate::api::action::{ActionKind, is_sha1};
use crate::api::model::new_guid;
use crate::api::odata::decode_form;
use crate::api::time::{format_utc, parse_utc};
use crate::sim::fleet::REFERENCE_UNIX_SECS;
use crate::sim::lifecycle::Status;
use crate::sim::state::State;

/// The most machines one `AddOrRemoveTagForMultipleMachines` call may name
/// (addendum §1.4: "up to 500 machines per API call").
pub(crate) const MAX_TAG_BATCH: usize = 500;

/// `findbyip` finds machines seen this long before or after the timestamp.
const IP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// `findbyip` refuses timestamps older than this ("must be in the past 30 days").
const IP_LOOKBACK: Duration = Duration::from_secs(30 * 86_400);

/// A 400 `BadRequest`: the code of every parameter error of the look-ups.
fn bad_request(message: impl Into<String>) -> Reply {
    Reply::error(400, "BadRequest", message)
}

/// Reads the `findbyip(ip='IP',timestamp=TS)` segment (percent-decoded):
/// both parameters, once each, in either order; `ip` quoted as an OData
/// string, `timestamp` an unquoted ISO-8601 UTC literal as documented.
/// Parameter names are matched without regard to case, like the route.
fn parse_find_by_ip(seg: &str) -> Result<(IpAddr, SystemTime), String> {
    let inner = seg
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case("findbyip("))
        .and_then(|_| seg[9..].strip_suffix(')'))
        .ok_or_else(|| format!("'{seg}' is not findbyip(ip='IP',timestamp=TIMESTAMP)"))?;
    let (mut ip, mut ts) = (None, None);
    for part in inner.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("'{part}' is not name=value"))?;
        let (k, v) = (k.trim(), v.trim());
        let slot = if k.eq_ignore_ascii_case("ip") {
            &mut ip
        } else if k.eq_ignore_ascii_case("timestamp") {
            &mut ts
        } else {
            return Err(format!("unknown parameter '{k}' (findbyip takes ip and timestamp)"));
        };
        if slot.replace(v).is_some() {
            return Err(format!("parameter '{k}' is given twice"));
        }
    }
    let ip = ip.ok_or("parameter 'ip' is missing")?;
    let ts = ts.ok_or("parameter 'timestamp' is missing")?;
    let quoted = ip.strip_prefix('\'').and_then(|s| s.strip_suffix('\''));
    let ip = quoted
        .ok_or_else(|| format!("ip {ip} must be quoted: ip='10.0.0.1'"))?
        .parse::<IpAddr>()
        .map_err(|_| format!("'{ip}' is not an IP address"))?;
    let ts = parse_utc(ts).filter(|_| !ts.starts_with('\'')).ok_or_else(|| {
        format!("timestamp {ts} is not an unquoted UTC timestamp such as 2019-09-22T08:44:05Z")
    })?;
    Ok((ip, ts))
}

/// Reads a tag body: `Value` and `Action` (`Add` or `Remove`, exact), and
/// `MachineIds` when `batch`. The errors are the action bodies' (reference
/// D3): InvalidRequestBody for malformed JSON, unknown or wrong-case keys and
/// wrong types or values; then MissingRequiredParameter (an empty `Value` or
/// `MachineIds` counts as missing); then MaximumBatchSizeExceeded above
/// [`MAX_TAG_BATCH`] ids (the common-errors table's batch code).
fn parse_tag_body(
    body: &[u8],
    batch: bool,
) -> Result<(String, bool, Vec<String>), (&'static str, String)> {
    let invalid = |why: String| ("InvalidRequestBody", format!("Request body is incorrect: {why}"));
    let missing = |name: &str| ("MissingRequiredParameter", format!("Parameter {name} is missing"));
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid("not valid JSON".into()))?;
    let Value::Object(obj) = v else { return Err(invalid("expected a JSON object".into())) };
    let allowed: &[&str] =
        if batch { &["Value", "Action", "MachineIds"] } else { &["Value", "Action"] };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown parameter '{k}' (parameters are case-sensitive; this API takes {})",
            allowed.join(", ")
        )));
    }
    let text = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("'{key}' must be a string"))),
    };
    let value = text("Value")?;
    let action = text("Action")?;
    let add = match action.as_deref() {
        None => None,
        Some("Add") => Some(true),
        Some("Remove") => Some(false),
        Some(other) => {
            return Err(invalid(format!("'{other}' is not a valid Action (Add or Remove)")));
        }
    };
    let ids = match obj.get("MachineIds") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| invalid("'MachineIds' must be a list of strings".into()))?,
        Some(_) => return Err(invalid("'MachineIds' must be a list of strings".into())),
    };
    let value = value.filter(|v| !v.trim().is_empty()).ok_or_else(|| missing("Value"))?;
    let add = add.ok_or_else(|| missing("Action"))?;
    if batch && ids.is_empty() {
        return Err(missing("MachineIds"));
    }
    if ids.len() > MAX_TAG_BATCH {
        return Err((
            "MaximumBatchSizeExceeded",
            format!(
                "MachineIds holds {} machines; at most {MAX_TAG_BATCH} may be tagged per call",
                ids.len()
            ),
        ));
    }
    Ok((value, add, ids))
}

/// Reads a `startInvestigation` body: `Comment`, required and non-empty.
fn parse_comment_body(body: &[u8]) -> Result<String, (&'static str, String)> {
    let invalid = |why: &str| ("InvalidRequestBody", format!("Request body is incorrect: {why}"));
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid("not valid JSON"))?;
    let Value::Object(obj) = v else { return Err(invalid("expected a JSON object")) };
    if let Some(k) = obj.keys().find(|k| *k != "Comment") {
        return Err(invalid(&format!(
            "unknown parameter '{k}' (parameters are case-sensitive; this API takes Comment)"
        )));
    }
    match obj.get("Comment") {
        Some(Value::String(c)) if !c.is_empty() => Ok(c.clone()),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            Err(("MissingRequiredParameter", "Parameter Comment is missing".to_string()))
        }
        Some(_) => Err(invalid("'Comment' must be a string")),
    }
}

/// A timestamp with whole seconds, as the log-on users example writes them.
fn whole_seconds(t: SystemTime) -> String {
    let full = format_utc(t);
    match full.find('.') {
        Some(dot) => format!("{}Z", &full[..dot]),
        None => full,
    }
}

impl State {
    /// A collection reply of machines (their rendered entities, in order).
    fn machines_reply(&self, req: &Request<'_>, idx: &[usize]) -> Reply {
        let ctx = Value::String(State::context(req, "Machines")).to_string();
        let items: Vec<&str> = idx.iter().map(|&i| &*self.tenant().machines[i].json).collect();
        Reply::json(
            200,
            format!("{{\"@odata.context\":{ctx},\"value\":[{}]}}", items.join(",")),
            ODATA_JSON,
        )
    }

    /// One machine with its `@odata.context` first.
    fn machine_reply(&self, req: &Request<'_>, i: usize) -> Reply {
        let ctx = Value::String(State::context(req, "Machines/$entity")).to_string();
        // The rendered machine is a non-empty JSON object: it always has an id.
        let body = format!("{{\"@odata.context\":{ctx},{}", &self.tenant().machines[i].json[1..]);
        Reply::json(200, body, ODATA_JSON)
    }

    /// `GET machines/findbyip(ip='IP',timestamp=TS)`: the machines that held
    /// the address at some moment within 15 minutes of the timestamp, in
    /// fleet order. A timestamp older than 30 days, or later than now (not
    /// "in the past"), is 400 `BadRequest`, as is a malformed segment.
    pub(super) fn find_by_ip(&self, seg: &str, req: &Request<'_>, now: Instant) -> Reply {
        let (ip, ts) = match parse_find_by_ip(seg) {
            Ok(v) => v,
            Err(why) => return bad_request(format!("Invalid findbyip request: {why}")),
        };
        let wall = self.clock.tick_time(self.clock.offset(now));
        let oldest = wall.checked_sub(IP_LOOKBACK).unwrap_or(std::time::UNIX_EPOCH);
        if ts > wall || ts < oldest {
            return bad_request(format!(
                "The timestamp {} must be in the past 30 days",
                format_utc(ts)
            ));
        }
        let lo = ts.checked_sub(IP_WINDOW).unwrap_or(std::time::UNIX_EPOCH);
        let hi = ts + IP_WINDOW;
        let found: Vec<usize> = (0..self.tenant().machines.len())
            .filter(|&i| {
                self.tenant().machines[i]
                    .sidecar
                    .ips
                    .iter()
                    .any(|s| s.ip == ip && s.overlaps(lo, hi))
            })
            .collect();
        self.machines_reply(req, &found)
    }

    /// `GET machines/findbytag?tag=T&useStartsWithFilter=B`: machines with a
    /// tag equal to `T`, or starting with it when `B` is true, both without
    /// regard to case; fleet order. Parameter names are matched without
    /// regard to case (as ASP.NET binds query parameters); a missing or empty
    /// `tag` or a `useStartsWithFilter` other than true/false is 400 BadRequest.
    pub(super) fn find_by_tag(&self, req: &Request<'_>) -> Reply {
        let (mut tag, mut starts) = (None, None);
        for pair in req.query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode_form(k), decode_form(v));
            if k.eq_ignore_ascii_case("tag") {
                tag = Some(v);
            } else if k.eq_ignore_ascii_case("useStartsWithFilter") {
                starts = Some(v);
            }
        }
        let Some(tag) = tag.filter(|t| !t.is_empty()) else {
            return bad_request("The tag parameter is required");
        };
        let starts = match starts.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return bad_request(format!(
                    "useStartsWithFilter must be true or false, not '{}'",
                    starts.unwrap_or_default()
                ));
            }
        };
        let want = tag.to_lowercase();
        let found: Vec<usize> = (0..self.tenant().machines.len())
            .filter(|&i| {
                self.tenant().machines[i].tags().iter().any(|t| {
                    let t = t.to_lowercase();
                    if starts { t.starts_with(&want) } else { t == want }
                })
            })
            .collect();
        self.machines_reply(req, &found)
    }

    /// Adds or removes `value` on machine `i`; tags compare without regard
    /// to case, so a present tag is not added twice.
    fn apply_tag(&mut self, i: usize, value: &str, add: bool) {
        let entry = &mut self.tenant_mut().machines[i];
        let mut tags = entry.tags();
        let has = |t: &String| t.to_lowercase() == value.to_lowercase();
        let before = tags.len();
        if add {
            if !tags.iter().any(has) {
                tags.push(value.to_string());
            }
        } else {
            tags.retain(|t| !has(t));
        }
        if tags.len() != before {
            entry.set_tags(tags);
        }
    }

    /// `POST machines/{id}/tags`: 200 with the updated machine.
    pub(super) fn tag_machine(&mut self, id: &str, req: &Request<'_>) -> Reply {
        let (value, add, _) = match parse_tag_body(req.body, false) {
            Ok(b) => b,
            Err((code, msg)) => return Reply::error(400, code, msg),
        };
        let Some(i) = self.machine_by_id(id) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {id} was not found"));
        };
        self.apply_tag(i, &value, add);
        self.machine_reply(req, i)
    }

    /// `POST machines/AddOrRemoveTagForMultipleMachines`: 200 with the
    /// updated machines, in the order named, each once. Ids the tenant does
    /// not know are passed over (a batch is not failed for one stale id).
    pub(super) fn tag_machines(&mut self, req: &Request<'_>) -> Reply {
        let (value, add, ids) = match parse_tag_body(req.body, true) {
            Ok(b) => b,
            Err((code, msg)) => return Reply::error(400, code, msg),
        };
        let mut found: Vec<usize> = Vec::with_capacity(ids.len());
        for i in ids.iter().filter_map(|id| self.machine_by_id(id)) {
            if !found.contains(&i) {
                found.push(i);
            }
        }
        for &i in &found {
            self.apply_tag(i, &value, add);
        }
        self.machines_reply(req, &found)
    }

    /// `GET files/{sha1}/machines`: the machines that have seen the file, in
    /// fleet order; an unknown file is 200 with an empty `value`, as
    /// documented. Only SHA-1 is supported: any other hash is 400.
    pub(super) fn file_machines(&self, hash: &str, req: &Request<'_>) -> Reply {
        if !is_sha1(hash) {
            let hex = hash.bytes().all(|b| b.is_ascii_hexdigit());
            let kind = match hash.len() {
                32 if hex => "an MD5 hash",
                64 if hex => "a SHA-256 hash",
                _ => "not a hash",
            };
            return Reply::error(
                400,
                "InvalidHashValue",
                format!("'{hash}' is {kind}: only SHA-1 (40 hexadecimal digits) is supported"),
            );
        }
        let want = hash.to_ascii_lowercase();
        let found: Vec<usize> = (0..self.tenant().machines.len())
            .filter(|&i| self.tenant().machines[i].sidecar.files.contains(&want))
            .collect();
        self.machines_reply(req, &found)
    }

    /// `GET machines/{id}/logonusers`: one to three users of the `contoso`
    /// domain, drawn from the seed and the machine's id (the same machine
    /// always has the same users), seen before the machine's `lastSeen`; the
    /// documented example's shape, with whole-second timestamps.
    pub(super) fn logon_users(&self, id: &str, req: &Request<'_>) -> Reply {
        let Some(i) = self.machine_by_id(id) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {id} was not found"));
        };
        let m = &self.tenant().machines[i];
        let salt =
            m.machine.id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut rng = fastrand::Rng::with_seed(self.cfg.seed ^ salt);
        let last =
            m.last_seen.unwrap_or(std::time::UNIX_EPOCH + Duration::from_secs(REFERENCE_UNIX_SECS));
        let count = rng.usize(1..=3);
        let mut names: Vec<u32> = Vec::with_capacity(count);
        while names.len() < count {
            let n = rng.u32(1..=200);
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let users: Vec<Value> = names
            .into_iter()
            .map(|n| {
                let types = ["Interactive", "Interactive", "RemoteInteractive", "Network"];
                let logon = types[rng.usize(0..types.len())];
                // A fleet file may date `lastSeen` anywhere: never step off the clock.
                let back = |t: SystemTime, secs: u64| {
                    t.checked_sub(Duration::from_secs(secs)).unwrap_or(t)
                };
                let seen = back(last, rng.u64(0..3 * 86_400));
                let first = back(seen, rng.u64(86_400..60 * 86_400));
                json!({
                    "id": format!("contoso\\user{n}"),
                    "accountName": format!("user{n}"),
                    "accountDomain": "contoso",
                    "firstSeen": whole_seconds(first),
                    "lastSeen": whole_seconds(seen),
                    "logonTypes": logon,
                    "isDomainAdmin": rng.u8(0..10) == 0,
                    "isOnlyNetworkUser": logon == "Network",
                })
            })
            .collect();
        let body = json!({ "@odata.context": State::context(req, "Users"), "value": users });
        Reply::json(200, body.to_string(), ODATA_JSON)
    }

    /// `POST machines/{id}/startInvestigation`: 201 with an Investigation
    /// entity (the fields of the service's Investigation entity: id,
    /// startTime, endTime, state, cancelledBy, statusDetails, machineId,
    /// computerDnsName, triggeringAlertId). Decided: the id is a number
    /// (as the entity's examples show) counting up from 60001; the state is
    /// `Running` with `endTime` null; `triggeringAlertId` is null, as no
    /// alert triggered it; Linux and macOS devices are refused with
    /// `OsPlatformNotSupported` (the page lists only Windows); every call
    /// starts a new investigation.
    pub(super) fn start_investigation(
        &mut self,
        id: &str,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        if let Err((code, msg)) = parse_comment_body(req.body) {
            return Reply::error(400, code, msg);
        }
        let Some(i) = self.machine_by_id(id) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {id} was not found"));
        };
        let m = &self.tenant().machines[i].machine;
        if m.is_linux_or_macos() {
            return Reply::error(
                400,
                "OsPlatformNotSupported",
                format!(
                    "Automated investigation is not supported on os platform {}",
                    m.os_platform.as_deref().unwrap_or("unknown")
                ),
            );
        }
        let (machine_id, computer_dns_name) = (m.id.clone(), m.computer_dns_name.clone());
        self.tenant_mut().investigations += 1;
        let mut entity = Map::new();
        entity
            .insert("@odata.context".into(), json!(State::context(req, "Investigations/$entity")));
        entity.insert("id".into(), json!((60_000 + self.tenant().investigations).to_string()));
        entity.insert("startTime".into(), json!(self.clock.stamp(self.clock.offset(now))));
        entity.insert("endTime".into(), Value::Null);
        entity.insert("state".into(), json!("Running"));
        entity.insert("cancelledBy".into(), Value::Null);
        entity.insert("statusDetails".into(), Value::Null);
        entity.insert("machineId".into(), json!(machine_id));
        entity.insert("computerDnsName".into(), json!(computer_dns_name));
        entity.insert("triggeringAlertId".into(), Value::Null);
        Reply::json(201, Value::Object(entity).to_string(), ODATA_JSON)
    }

    /// `GET machineactions/{id}/GetPackageUri`: once a
    /// CollectInvestigationPackage action has Succeeded, 200 with the link
    /// in the documented shape (an `Edm.String` whose text carries literal
    /// quotes). The link points at the simulator (`/_sim/packages/{id}.zip`,
    /// which serves an empty zip). Decided: an action that exists but has
    /// not succeeded (pending, in progress, failed, timed out, cancelled),
    /// an action of another type and an unknown id are all 404
    /// ResourceNotFound, as there is no package to link to.
    pub(super) fn package_uri(&self, id: &str, req: &Request<'_>, now: Instant) -> Reply {
        let Some(idx) = self.action_by_id(id) else {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} was not found"),
            );
        };
        let a = &self.tenant().actions[idx];
        if a.kind != ActionKind::CollectInvestigationPackage {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} did not collect an investigation package"),
            );
        }
        if a.status_at(self.clock.offset(now), &self.timing).0 != Status::Succeeded {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("The investigation package of machine action {id} is not ready"),
            );
        }
        let link = format!("{}/_sim/packages/{}.zip?token={}", req.origin(), a.id, new_guid());
        let body = json!({
            "@odata.context": State::context(req, "Edm.String"),
            "value": format!("\"{link}\""),
        });
        Reply::json(200, body.to_string(), ODATA_JSON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_by_ip_segments() {
        let (ip, ts) =
            parse_find_by_ip("findbyip(ip='10.248.240.38',timestamp=2019-09-22T08:44:05Z)")
                .unwrap();
        assert_eq!(ip.to_string(), "10.248.240.38");
        assert_eq!(format_utc(ts), "2019-09-22T08:44:05.0000000Z");
        let (ip, _) =
            parse_find_by_ip("FindByIp(Timestamp=2019-09-22T08:44:05Z, IP='fe80::1')").unwrap();
        assert_eq!(ip.to_string(), "fe80::1");
        for bad in [
            "findbyip(ip=10.1.1.1,timestamp=2019-09-22T08:44:05Z)",
            "findbyip(ip='10.1.1',timestamp=2019-09-22T08:44:05Z)",
            "findbyip(ip='10.1.1.1',timestamp='2019-09-22T08:44:05Z')",
            "findbyip(ip='10.1.1.1',timestamp=yesterday)",
            "findbyip(ip='10.1.1.1')",
            "findbyip(ip='10.1.1.1',ip='10.1.1.2',timestamp=2019-09-22T08:44:05Z)",
            "findbyip(ip='10.1.1.1',timestamp=2019-09-22T08:44:05Z,x=1)",
            "findbyip(ip='10.1.1.1',timestamp=2019-09-22T08:44:05Z",
        ] {
            assert!(parse_find_by_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_bodies_in_the_documented_order() {
        let code = |b: &str, batch| parse_tag_body(b.as_bytes(), batch).unwrap_err().0;
        assert_eq!(
            parse_tag_body(br#"{"Value":"test Tag 2","Action":"Add"}"#, false).unwrap(),
            ("test Tag 2".to_string(), true, Vec::new())
        );
        assert_eq!(code("[]", false), "InvalidRequestBody");
        assert_eq!(code(r#"{"value":"x","Action":"Add"}"#, false), "InvalidRequestBody");
        assert_eq!(code(r#"{"Value":"x","Action":"add"}"#, false), "InvalidRequestBody");
        assert_eq!(code(r#"{"Value":1,"Action":"Add"}"#, false), "InvalidRequestBody");
        assert_eq!(
            code(r#"{"Value":"x","Action":"Add","MachineIds":[]}"#, false),
            "InvalidRequestBody"
        );
        assert_eq!(code(r#"{"Value":" ","Action":"Add"}"#, false), "MissingRequiredParameter");
        assert_eq!(code(r#"{"Value":"x"}"#, false), "MissingRequiredParameter");
        assert_eq!(code(r#"{"Value":"x","Action":"Add"}"#, true), "MissingRequiredParameter");
        assert_eq!(
            code(r#"{"Value":"x","Action":"Add","MachineIds":[1]}"#, true),
            "InvalidRequestBody"
        );
        let many: Vec<String> = (0..=MAX_TAG_BATCH).map(|i| format!("{i:040x}")).collect();
        let body = json!({"Value": "x", "Action": "Remove", "MachineIds": many}).to_string();
        assert_eq!(code(&body, true), "MaximumBatchSizeExceeded");
        let ok: Vec<String> = many[..MAX_TAG_BATCH].to_vec();
        let body = json!({"Value": "x", "Action": "Remove", "MachineIds": ok}).to_string();
        assert_eq!(parse_tag_body(body.as_bytes(), true).unwrap().2.len(), MAX_TAG_BATCH);
    }

    #[test]
    fn comment_bodies() {
        assert_eq!(
            parse_comment_body(br#"{"Comment":"Test investigation"}"#).unwrap(),
            "Test investigation"
        );
        assert_eq!(parse_comment_body(b"{}").unwrap_err().0, "MissingRequiredParameter");
        assert_eq!(
            parse_comment_body(br#"{"Comment":""}"#).unwrap_err().0,
            "MissingRequiredParameter"
        );
        assert_eq!(parse_comment_body(br#"{"comment":"x"}"#).unwrap_err().0, "InvalidRequestBody");
        assert_eq!(parse_comment_body(b"nope").unwrap_err().0, "InvalidRequestBody");
    }
}
