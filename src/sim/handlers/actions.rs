//! Action POSTs and cancel: `POST machines/{id}/<action>` (body validation
//! in the service's order, 404, OS support, duplicate refusal, 201) and
//! `POST machineactions/{id}/cancel`.

use serde_json::Value;
use tokio::time::Instant;

use super::reply::{Reply, Request};
use crate::api::action::{ActionKind, is_sha1};
use crate::api::model::new_guid;
use crate::sim::lifecycle::{ActionRecord, Cancellation};
use crate::sim::state::State;

/// A validated action body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ActionBody {
    /// `Comment`.
    pub(super) comment: String,
    /// `scope` of the action: IsolationType (default `Full`) or ScanType.
    pub(super) scope: Option<String>,
    /// `Sha1` of a StopAndQuarantineFile, as sent.
    pub(super) sha1: Option<String>,
}

impl ActionBody {
    /// The parameters that make two submissions the same work (not the comment).
    pub(super) fn param(&self) -> Option<String> {
        self.sha1.as_ref().map(|s| s.to_ascii_lowercase()).or_else(|| self.scope.clone())
    }
}

/// Validates an action body (references D3 and P10): InvalidRequestBody for
/// anything malformed, unknown or wrong-case keys, wrong types and enum
/// values; then MissingRequiredParameter; then InvalidHashValue.
pub(super) fn parse_action_body(
    kind: ActionKind,
    body: &[u8],
) -> Result<ActionBody, (&'static str, String)> {
    let invalid = |why: String| ("InvalidRequestBody", format!("Request body is incorrect: {why}"));
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid("not valid JSON".into()))?;
    let Value::Object(obj) = v else {
        return Err(invalid("expected a JSON object".into()));
    };
    let allowed = kind.allowed_keys();
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown parameter '{k}' (parameters are case-sensitive; this action takes {})",
            allowed.join(", ")
        )));
    }
    let text = |key: &str| -> Result<Option<&str>, (&'static str, String)> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(format!("'{key}' must be a string"))),
        }
    };
    let comment = text("Comment")?;
    let isolation = text("IsolationType")?;
    let scan = text("ScanType")?;
    let sha1 = text("Sha1")?;
    if let Some(t) = isolation
        && !["Full", "Selective", "UnManagedDevice"].contains(&t)
    {
        return Err(invalid(format!(
            "'{t}' is not a valid IsolationType (Full, Selective or UnManagedDevice)"
        )));
    }
    if let Some(t) = scan
        && !["Quick", "Full"].contains(&t)
    {
        return Err(invalid(format!("'{t}' is not a valid ScanType (Quick or Full)")));
    }
    let missing = |name: &str| ("MissingRequiredParameter", format!("Parameter {name} is missing"));
    let comment = match comment {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => return Err(missing("Comment")),
    };
    let scope = match kind {
        ActionKind::Isolate => Some(isolation.unwrap_or("Full").to_string()),
        ActionKind::RunAntiVirusScan => Some(scan.ok_or_else(|| missing("ScanType"))?.to_string()),
        _ => None,
    };
    let sha1 = match kind {
        ActionKind::StopAndQuarantineFile => match sha1 {
            Some(h) if !h.is_empty() => {
                if !is_sha1(h) {
                    return Err((
                        "InvalidHashValue",
                        format!("Invalid Sha1 value '{h}': expected 40 hexadecimal characters"),
                    ));
                }
                Some(h.to_string())
            }
            _ => return Err(missing("Sha1")),
        },
        _ => None,
    };
    Ok(ActionBody { comment, scope, sha1 })
}

/// Reads the optional `Comment` of a cancel body (an empty body is fine).
fn parse_cancel_body(body: &[u8]) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| "not valid JSON".to_string())?;
    let Value::Object(obj) = v else { return Err("expected a JSON object".into()) };
    if let Some(k) = obj.keys().find(|k| *k != "Comment") {
        return Err(format!("unknown parameter '{k}' (cancel takes Comment)"));
    }
    match obj.get("Comment") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err("'Comment' must be a string".into()),
    }
}

impl State {
    /// `POST machines/{id}/<action>`: validation, 404, OS, duplicate, 201.
    pub(super) fn create_action(
        &mut self,
        kind: ActionKind,
        id: &str,
        body: Result<ActionBody, (&'static str, String)>,
        req: &Request<'_>,
        now: Instant,
    ) -> Reply {
        let body = match body {
            Ok(b) => b,
            Err((code, msg)) => return Reply::error(400, code, msg),
        };
        let Some(m) = self.machine_by_id(id) else {
            return Reply::error(404, "ResourceNotFound", format!("Machine {id} was not found"));
        };
        let entry = &self.tenant().machines[m];
        if kind.windows_only() && entry.machine.is_linux_or_macos() {
            return Reply::error(
                400,
                "OsPlatformNotSupported",
                format!(
                    "{} is not supported on os platform {}",
                    kind.type_name(),
                    entry.machine.os_platform.as_deref().unwrap_or("unknown")
                ),
            );
        }
        let (machine_id, computer_dns_name, offline) =
            (entry.machine.id.clone(), entry.machine.computer_dns_name.clone(), entry.offline);
        let offset = self.clock.offset(now);
        if let Some(&prev) = self.tenant().latest.get(&(m, kind))
            && !self.tenant().actions[prev].status_at(offset, &self.timing).0.is_final()
        {
            self.count(|s| s.duplicates_refused += 1);
            return Reply::error(
                400,
                "ActiveRequestAlreadyExists",
                "Action is already in progress",
            );
        }
        let fails = self.cfg.fail_rate > 0.0 && self.fail_rng.f64() < self.cfg.fail_rate;
        let record = ActionRecord {
            id: new_guid(),
            kind,
            machine: m,
            machine_id,
            computer_dns_name,
            requestor: self.cfg.app_name.clone(),
            comment: body.comment.clone(),
            scope: body.scope.clone(),
            sha1: body.sha1.clone(),
            created: offset,
            fails,
            settle_from: (!offline).then_some(offset),
            cancel: None,
        };
        self.tenant_mut().accepted.insert((m, kind, body.param()));
        let idx = self.tenant_mut().push_action(record);
        self.count(|s| s.actions_created += 1);
        let entity = self.tenant().actions[idx].as_created(&self.clock);
        State::entity_reply(201, req, "MachineActions/$entity", entity)
    }

    /// `POST machineactions/{id}/cancel` (references D5, P12).
    pub(super) fn cancel(&mut self, id: &str, req: &Request<'_>, now: Instant) -> Reply {
        let comment = match parse_cancel_body(req.body) {
            Ok(c) => c,
            Err(why) => {
                return Reply::error(
                    400,
                    "InvalidRequestBody",
                    format!("Request body is incorrect: {why}"),
                );
            }
        };
        let Some(idx) = self.action_by_id(id) else {
            return Reply::error(
                404,
                "ResourceNotFound",
                format!("Machine action {id} was not found"),
            );
        };
        let offset = self.clock.offset(now);
        let (status, _) = self.tenant().actions[idx].status_at(offset, &self.timing);
        if status.is_final() {
            return Reply::error(
                400,
                "BadRequest",
                format!(
                    "Machine action {id} cannot be cancelled: its status is already {}",
                    status.as_str()
                ),
            );
        }
        self.tenant_mut().actions[idx].cancel =
            Some(Cancellation { at: offset, requestor: self.cfg.app_name.clone(), comment });
        self.count(|s| s.cancelled += 1);
        let entity = self.tenant().actions[idx].view(offset, &self.timing, &self.clock);
        State::entity_reply(200, req, "MachineActions/$entity", entity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_bodies_in_the_documented_order() {
        let p = |k, s: &str| parse_action_body(k, s.as_bytes()).map_err(|e| e.0);
        use ActionKind::*;
        assert_eq!(p(Isolate, r#"{"Comment":"x"}"#).unwrap().scope.as_deref(), Some("Full"));
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","IsolationType":"UnManagedDevice"}"#)
                .unwrap()
                .scope
                .as_deref(),
            Some("UnManagedDevice")
        );
        assert_eq!(p(Isolate, r#"{"comment":"x"}"#), Err("InvalidRequestBody"));
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","isolationType":"Full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(
            p(Isolate, r#"{"Comment":"x","IsolationType":"full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(Isolate, r#"{"Comment":5}"#), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "not json"), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "[]"), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, ""), Err("InvalidRequestBody"));
        assert_eq!(p(Isolate, "{}"), Err("MissingRequiredParameter"));
        assert_eq!(p(Isolate, r#"{"Comment":""}"#), Err("MissingRequiredParameter"));
        assert_eq!(p(Isolate, r#"{"Comment":null}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(Offboard, r#"{"Comment":"x","IsolationType":"Full"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(RunAntiVirusScan, r#"{"Comment":"x"}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(RunAntiVirusScan, r#"{"Comment":"x","ScanType":"Deep"}"#),
            Err("InvalidRequestBody")
        );
        assert_eq!(p(RunAntiVirusScan, r#"{"ScanType":"Deep"}"#), Err("InvalidRequestBody"));
        assert_eq!(p(StopAndQuarantineFile, r#"{"Comment":"x"}"#), Err("MissingRequiredParameter"));
        assert_eq!(p(StopAndQuarantineFile, r#"{"Sha1":"abc"}"#), Err("MissingRequiredParameter"));
        assert_eq!(
            p(StopAndQuarantineFile, r#"{"Comment":"x","Sha1":"abc"}"#),
            Err("InvalidHashValue")
        );
        let ok = p(
            StopAndQuarantineFile,
            r#"{"Comment":"x","Sha1":"A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508"}"#,
        )
        .unwrap();
        assert_eq!(ok.param().as_deref(), Some("a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"));
    }

    #[test]
    fn cancel_bodies() {
        assert_eq!(parse_cancel_body(b""), Ok(None));
        assert_eq!(parse_cancel_body(br#"{"Comment":"why"}"#), Ok(Some("why".into())));
        assert!(parse_cancel_body(br#"{"comment":"why"}"#).is_err());
        assert!(parse_cancel_body(b"nope").is_err());
    }
}
