//! Look-ups and lists: `GET machines/{id-or-name}`, `GET machines`,
//! `GET machineactions/{id}` and `GET machineactions`, with `$filter`, `$top`
//! and `$skip` (parsed by [`crate::sim::odata`]) and `@odata.nextLink` paging,
//! `$select` projections (on look-ups too), and the `@odata.context` every
//! entity reply carries.

use std::borrow::Cow;

use serde_json::Value;
use tokio::time::Instant;

use super::reply::{ODATA_JSON, Reply, Request};
use crate::api::model::{Entity, MachineAction, ODataList};
use crate::api::odata::encode;
use crate::sim::fleet;
use crate::sim::odata::{self, MAX_TOP, Query};
use crate::sim::state::State;

/// Field values of a machine for `$filter`.
fn machine_field<'a>(m: &'a crate::api::model::Machine, name: &str) -> odata::Value<'a> {
    let opt = |v: &'a Option<String>| v.as_deref().map_or(odata::Value::Null, odata::Value::Str);
    match name {
        "id" => odata::Value::Str(&m.id),
        "computerDnsName" => opt(&m.computer_dns_name),
        "lastSeen" => opt(&m.last_seen),
        "osPlatform" => opt(&m.os_platform),
        "healthStatus" => opt(&m.health_status),
        "aadDeviceId" => opt(&m.aad_device_id),
        "lastIpAddress" => opt(&m.last_ip_address),
        other => m.extra.get(other).map_or(odata::Value::Null, json_field),
    }
}

/// A field a machine keeps only as JSON (fleet files may carry any), as a
/// filter sees it; objects compare as null, as the service cannot filter them.
fn json_field(v: &Value) -> odata::Value<'_> {
    match v {
        Value::String(s) => odata::Value::Str(s),
        Value::Number(n) => n.as_f64().map_or(odata::Value::Null, odata::Value::Num),
        Value::Bool(b) => odata::Value::Bool(*b),
        Value::Array(items) => odata::Value::List(items.iter().filter_map(Value::as_str).collect()),
        Value::Null | Value::Object(_) => odata::Value::Null,
    }
}

/// The `select`ed properties of an action, in the entity's order.
fn project_action(a: &MachineAction, select: &[&str]) -> serde_json::Map<String, Value> {
    match serde_json::to_value(a) {
        Ok(Value::Object(o)) => odata::project(o, select),
        // A MachineAction always serialises to an object (plain fields only).
        _ => serde_json::Map::new(),
    }
}

/// `@odata.nextLink` for the page after `page_len` entities.
fn next_link(req: &Request<'_>, q: &Query, page_len: usize) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &q.filter_text {
        parts.push(format!("$filter={}", encode(f)));
    }
    if let Some(sel) = &q.select_text {
        parts.push(format!("$select={}", encode(sel)));
    }
    if let Some(top) = q.top {
        parts.push(format!("$top={}", top - page_len));
    }
    parts.push(format!("$skip={}", q.skip + page_len));
    format!("{}{}?{}", req.origin(), req.path, parts.join("&"))
}

impl State {
    /// The `@odata.context` of a reply: the service names the entity set
    /// (`#Machines`, `#MachineActions/$entity`) under the host called.
    pub(super) fn context(req: &Request<'_>, fragment: &str) -> String {
        format!("{}/api/$metadata#{fragment}", req.origin())
    }

    /// One entity with its `@odata.context` first, as the service sends it;
    /// shared by look-ups and by action and cancel replies.
    pub(super) fn entity_reply<T: serde::Serialize>(
        status: u16,
        req: &Request<'_>,
        fragment: &str,
        value: T,
    ) -> Reply {
        let e = Entity { context: Some(State::context(req, fragment)), value };
        let body = serde_json::to_string(&e).unwrap_or_default();
        Reply::json(status, body, ODATA_JSON)
    }

    /// `GET machines/{id-or-name}`, with `$select`.
    pub(super) fn get_machine(&self, key: &str, req: &Request<'_>) -> Reply {
        let select = match odata::parse_select_only(req.query, &odata::MACHINES) {
            Ok(s) => s,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let Some(i) = self.machine_by_id_or_name(key) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {key} was not found"));
        };
        if let Some(sel) = &select {
            let fragment = format!("{}/$entity", odata::projected("Machines", Some(sel)));
            let entity = odata::project(fleet::render(&self.tenant().machines[i].machine), sel);
            return State::entity_reply(200, req, &fragment, entity);
        }
        let json = &self.tenant().machines[i].json;
        let ctx = Value::String(State::context(req, "Machines/$entity")).to_string();
        // The rendered machine is a non-empty JSON object: it always has an id.
        let body = format!("{{\"@odata.context\":{ctx},{}", &json[1..]);
        Reply::json(200, body, ODATA_JSON)
    }

    /// `GET machines` with `$filter`, `$top`, `$skip` and `$select`, in fleet order.
    pub(super) fn list_machines(&self, req: &Request<'_>) -> Reply {
        let q = match odata::parse_query(req.query, &odata::MACHINES) {
            Ok(q) => q,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let top = q.top.unwrap_or(MAX_TOP);
        let page = self.cfg.page_size.unwrap_or(usize::MAX).min(top);
        let mut items = self
            .tenant()
            .machines
            .iter()
            .filter(|m| {
                q.filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&|name: &str| machine_field(&m.machine, name)))
            })
            .skip(q.skip)
            .take(top.min(page.saturating_add(1)))
            .map(|m| match &q.select {
                Some(sel) => Cow::Owned(
                    Value::Object(odata::project(fleet::render(&m.machine), sel)).to_string(),
                ),
                None => Cow::Borrowed(&*m.json),
            })
            .collect::<Vec<Cow<'_, str>>>();
        let next = if items.len() > page {
            items.truncate(page);
            let link = Value::String(next_link(req, &q, page)).to_string();
            format!(",\"@odata.nextLink\":{link}")
        } else {
            String::new()
        };
        let fragment = odata::projected("Machines", q.select.as_deref());
        let ctx = Value::String(State::context(req, &fragment)).to_string();
        let mut body = String::with_capacity(64 + items.iter().map(|s| s.len() + 1).sum::<usize>());
        body.push_str("{\"@odata.context\":");
        body.push_str(&ctx);
        body.push_str(",\"value\":[");
        body.push_str(&items.join(","));
        body.push(']');
        body.push_str(&next);
        body.push('}');
        Reply::json(200, body, ODATA_JSON)
    }

    /// `GET machineactions/{id}`, with `$select`.
    pub(super) fn get_action(&self, id: &str, req: &Request<'_>, now: Instant) -> Reply {
        let select = match odata::parse_select_only(req.query, &odata::MACHINE_ACTIONS) {
            Ok(s) => s,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let Some(idx) = self.action_by_id(id) else {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} was not found"),
            );
        };
        let entity =
            self.tenant().actions[idx].view(self.clock.offset(now), &self.timing, &self.clock);
        match &select {
            Some(sel) => {
                let fragment = format!("{}/$entity", odata::projected("MachineActions", Some(sel)));
                State::entity_reply(200, req, &fragment, project_action(&entity, sel))
            }
            None => State::entity_reply(200, req, "MachineActions/$entity", entity),
        }
    }

    /// `GET machineactions` with `$filter`, `$top`, `$skip` and `$select`, newest first.
    pub(super) fn list_actions(&self, req: &Request<'_>, now: Instant) -> Reply {
        let q = match odata::parse_query(req.query, &odata::MACHINE_ACTIONS) {
            Ok(q) => q,
            Err(e) => return Reply::error(400, "ODataError", e.0),
        };
        let offset = self.clock.offset(now);
        let top = q.top.unwrap_or(MAX_TOP);
        let page = self.cfg.page_size.unwrap_or(usize::MAX).min(top);
        let mut items: Vec<_> = self
            .tenant()
            .actions
            .iter()
            .rev()
            .filter(|a| {
                let Some(f) = &q.filter else { return true };
                let status = a.status_at(offset, &self.timing).0;
                let created = self.clock.tick_time(a.created);
                f.matches(&|name: &str| match name {
                    "id" => odata::Value::Str(&a.id),
                    "status" => odata::Value::Str(status.as_str()),
                    "machineId" => odata::Value::Str(&a.machine_id),
                    "type" => odata::Value::Str(a.kind.type_name()),
                    "requestor" => odata::Value::Str(&a.requestor),
                    "creationDateTimeUtc" => odata::Value::Time(created),
                    _ => odata::Value::Null,
                })
            })
            .skip(q.skip)
            .take(top.min(page.saturating_add(1)))
            .collect();
        let next_link = if items.len() > page {
            items.truncate(page);
            Some(next_link(req, &q, page))
        } else {
            None
        };
        let views = items.into_iter().map(|a| a.view(offset, &self.timing, &self.clock));
        let value: Vec<Value> = match &q.select {
            Some(sel) => views.map(|v| Value::Object(project_action(&v, sel))).collect(),
            None => views.map(|v| serde_json::to_value(v).unwrap_or_default()).collect(),
        };
        let fragment = odata::projected("MachineActions", q.select.as_deref());
        let list = ODataList { context: Some(State::context(req, &fragment)), value, next_link };
        Reply::json(200, serde_json::to_string(&list).unwrap_or_default(), ODATA_JSON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_splice_is_valid_json() {
        let cfg = crate::sim::SimConfig {
            fleet: crate::sim::FleetSpec::Generate { machines: 3 },
            ..Default::default()
        };
        let s = State::new(cfg, crate::sim::lifecycle::Clock::start());
        let req = Request {
            method: &hyper::Method::GET,
            path: "/api/machines/host-00001.contoso.test",
            query: None,
            scheme: "http",
            host: "h:1",
            authorization: None,
            body: b"",
            headers: &hyper::HeaderMap::new(),
            service: crate::sim::config::Service::Mde,
        };
        let r = s.get_machine("host-00001.contoso.test", &req);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys[0], "@odata.context");
        assert_eq!(keys[1], "id");
        assert_eq!(v["@odata.context"], "http://h:1/api/$metadata#Machines/$entity");
    }
}
