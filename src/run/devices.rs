//! `mdebulk devices`: what is true now. The API has no field saying whether
//! a device is isolated or restricted; this derives it from each machine's
//! latest completed (`Succeeded`) isolate/unisolate and
//! restrict/unrestrict actions, read in one paged `GET machineactions`
//! listing (10,000 actions a call) beside the paged `GET machines` listing,
//! never a call per device.
//!
//! The report is a CSV whose `machine_id` column makes it a valid input (its
//! name column, `device_dns_name`, is no device-name alias, so a run
//! carries it rather than looking it up):
//! `mdebulk run isolated.csv --action unisolate ...` releases what it lists.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::RunError;
use super::call::{Ctx, RetryPolicy, read};
use super::stop::Stop;
use super::submit::{PAGE, list_all_actions, next_skip};
use super::transport::Transport;
use crate::api::action::ActionKind;
use crate::api::model::{Machine, MachineAction};
use crate::api::odata::{ListQuery, any_of};
use crate::api::route::Api;
use crate::api::time::parse_utc;
use crate::pace::{Limit, Pacer};
use crate::results::dialect::Dialect;

/// The report's columns, in order.
pub const COLUMNS: [&str; 16] = [
    "machine_id",
    "device_dns_name",
    "health_status",
    "os_platform",
    "rbac_group_name",
    "machine_tags",
    "isolated",
    "isolation_action_id",
    "isolated_at",
    "isolated_by",
    "isolation_comment",
    "restricted",
    "restriction_action_id",
    "restricted_at",
    "restricted_by",
    "restriction_comment",
];

/// Everything `devices` needs, validated.
#[derive(Debug, Clone)]
pub struct DevicesConfig {
    /// Where the report goes (`None`: standard output).
    pub output: Option<PathBuf>,
    /// Only devices isolated now.
    pub isolated: bool,
    /// Only devices whose code execution is restricted now.
    pub restricted: bool,
    /// Only devices carrying this tag (without regard to case).
    pub tag: Option<String>,
    /// Quotas per API; empty means no pacing.
    pub limits: Vec<Limit>,
    /// Safety margin added to every window.
    pub pace_margin: Option<Duration>,
    /// Retry knobs for the list calls.
    pub policy: RetryPolicy,
}

/// The latest completed action of one pair (isolate/unisolate or
/// restrict/unrestrict) on a machine: it says which state the machine is
/// in and who put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    /// Whether it was the containing action (isolate, restrict).
    pub on: bool,
    /// Its action id.
    pub action_id: String,
    /// When it completed (`lastUpdateDateTimeUtc`, else its creation).
    pub at: String,
    /// Who asked for it.
    pub requestor: String,
    /// Its comment.
    pub comment: String,
}

/// A machine's containment, as its actions tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Containment {
    /// From the latest completed isolate or unisolate.
    pub isolation: Option<Latest>,
    /// From the latest completed restrict or unrestrict.
    pub restriction: Option<Latest>,
}

impl Containment {
    /// Isolated now.
    pub fn isolated(&self) -> bool {
        self.isolation.as_ref().is_some_and(|l| l.on)
    }

    /// Code execution restricted now.
    pub fn restricted(&self) -> bool {
        self.restriction.as_ref().is_some_and(|l| l.on)
    }
}

/// What the report cost and held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicesReport {
    /// Machines in the tenant.
    pub machines: u64,
    /// Rows written (after the filters).
    pub listed: u64,
    /// Isolated machines among all.
    pub isolated: u64,
    /// Restricted machines among all.
    pub restricted: u64,
    /// Completed containment actions read.
    pub actions: u64,
}

/// The action types that decide containment (and that `--skip-satisfied`
/// can skip).
pub(crate) const TYPES: [ActionKind; 4] = [
    ActionKind::Isolate,
    ActionKind::Unisolate,
    ActionKind::RestrictCodeExecution,
    ActionKind::UnrestrictCodeExecution,
];

/// How actions of one pair on one machine are ordered: completion time,
/// then creation time, then id.
type Order = (Option<SystemTime>, Option<SystemTime>, String);

/// Containment of every machine that has a completed containment action,
/// by lower-case machine id: for each pair, the action that completed last
/// wins (ties go to the later creation, then the larger id, so the answer
/// never depends on listing order).
pub fn containment(actions: &[MachineAction]) -> HashMap<String, Containment> {
    let mut out: HashMap<String, Containment> = HashMap::new();
    let mut keys: HashMap<(String, bool), Order> = HashMap::new();
    for a in actions {
        let Some(kind) = ActionKind::from_type_name(&a.kind) else { continue };
        let (isolation, on) = match kind {
            ActionKind::Isolate => (true, true),
            ActionKind::Unisolate => (true, false),
            ActionKind::RestrictCodeExecution => (false, true),
            ActionKind::UnrestrictCodeExecution => (false, false),
            _ => continue,
        };
        let at = a.last_update_date_time_utc.as_deref().or(a.creation_date_time_utc.as_deref());
        let key = (
            at.and_then(parse_utc),
            a.creation_date_time_utc.as_deref().and_then(parse_utc),
            a.id.clone(),
        );
        let machine = a.machine_id.to_ascii_lowercase();
        let slot = keys.entry((machine.clone(), isolation)).or_insert((None, None, String::new()));
        if !slot.2.is_empty() && key <= *slot {
            continue;
        }
        *slot = key;
        let latest = Latest {
            on,
            action_id: a.id.clone(),
            at: at.unwrap_or_default().to_string(),
            requestor: a.requestor.clone().unwrap_or_default(),
            comment: a.requestor_comment.clone().unwrap_or_default(),
        };
        let c = out.entry(machine).or_default();
        if isolation {
            c.isolation = Some(latest);
        } else {
            c.restriction = Some(latest);
        }
    }
    out
}

/// Every machine's containment now, from one paged listing of the
/// tenant's completed containment actions; and how many actions it read.
pub(crate) async fn containment_now<T: Transport>(
    ctx: &Ctx<T>,
) -> Result<(HashMap<String, Containment>, u64), crate::api::client::CallError> {
    let filter = format!(
        "({}) and status eq 'Succeeded'",
        any_of("type", TYPES.iter().map(|k| k.type_name()))
    );
    let actions = list_all_actions(ctx, &filter).await?;
    Ok((containment(&actions), actions.len() as u64))
}

/// How many of the tenant's machines are active (`healthStatus` Active),
/// from the paged machine listing.
pub(crate) async fn active_devices<T: Transport>(
    ctx: &Ctx<T>,
) -> Result<u64, crate::api::client::CallError> {
    let all = all_machines(ctx).await?;
    Ok(all.iter().filter(|m| m.health_status.as_deref() == Some("Active")).count() as u64)
}

/// The tags of a machine (`machineTags`).
fn tags(m: &Machine) -> Vec<String> {
    m.extra
        .get("machineTags")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A string field of the machine's other properties.
fn extra(m: &Machine, key: &str) -> String {
    m.extra.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

/// Reads every machine and every completed containment action, and writes
/// the report.
pub async fn devices<T: Transport>(
    config: &DevicesConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<DevicesReport, RunError> {
    let (report, rows) = listed(config, transport, stop).await?;
    write(config.output.as_deref(), &COLUMNS, &rows).map_err(|source| RunError::Io {
        path: config.output.clone().unwrap_or_else(|| PathBuf::from("-")),
        source,
    })?;
    Ok(report)
}

/// Reads every machine and every completed containment action: the counts,
/// and the report's rows (in [`COLUMNS`] order) that the filters keep.
pub(crate) async fn listed<T: Transport>(
    config: &DevicesConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<(DevicesReport, Vec<Vec<String>>), RunError> {
    super::call::first_token(transport.as_ref(), &config.policy, &stop)
        .await
        .map_err(RunError::Auth)?;
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx = Ctx::new(transport, pacer, None, config.policy.clone(), stop);
    let machines = all_machines(&ctx).await.map_err(RunError::Lookup)?;
    let (states, actions) = containment_now(&ctx).await.map_err(RunError::Lookup)?;
    let mut report =
        DevicesReport { machines: machines.len() as u64, actions, ..DevicesReport::default() };
    let none = Containment::default();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for m in &machines {
        let c = states.get(&m.id.to_ascii_lowercase()).unwrap_or(&none);
        report.isolated += u64::from(c.isolated());
        report.restricted += u64::from(c.restricted());
        let tags = tags(m);
        let keep = (!config.isolated || c.isolated())
            && (!config.restricted || c.restricted())
            && config.tag.as_deref().is_none_or(|want| {
                let want = want.to_lowercase();
                tags.iter().any(|t| t.to_lowercase() == want)
            });
        if keep {
            rows.push(row(m, &tags, c));
        }
    }
    report.listed = rows.len() as u64;
    Ok((report, rows))
}

/// Every machine, paged (`$top` 10,000).
async fn all_machines<T: Transport>(
    ctx: &Ctx<T>,
) -> Result<Vec<Machine>, crate::api::client::CallError> {
    let mut all = Vec::new();
    let mut skip = 0u32;
    loop {
        let query = ListQuery { filter: None, top: Some(PAGE), skip: (skip > 0).then_some(skip) };
        let page = read(ctx, Api::ListMachines, || ctx.transport.list_machines(&query)).await?;
        let next = next_skip(&page, skip);
        all.extend(page.value);
        match next {
            Some(s) => skip = s,
            None => return Ok(all),
        }
    }
}

/// One report row, in [`COLUMNS`] order.
fn row(m: &Machine, tags: &[String], c: &Containment) -> Vec<String> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut r = vec![
        m.id.clone(),
        m.computer_dns_name.clone().unwrap_or_default(),
        m.health_status.clone().unwrap_or_default(),
        m.os_platform.clone().unwrap_or_default(),
        extra(m, "rbacGroupName"),
        tags.join(";"),
    ];
    for (state, latest) in [(c.isolated(), &c.isolation), (c.restricted(), &c.restriction)] {
        r.push(yes_no(state));
        match latest {
            Some(l) => {
                r.extend([l.action_id.clone(), l.at.clone(), l.requestor.clone()]);
                r.push(l.comment.clone());
            }
            None => r.extend(std::iter::repeat_n(String::new(), 4)),
        }
    }
    r
}

/// Writes the report (owner-only when a file: it names devices and people).
pub(crate) fn write(
    path: Option<&std::path::Path>,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let sink: Box<dyn Write> = match path {
        Some(p) => Box::new(crate::private::create(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = Dialect::COMMA.writer(std::io::BufWriter::new(sink));
    w.write_record(header)?;
    for r in rows {
        w.write_record(r.iter().map(|c| crate::results::cell::neutralize(c).into_owned()))?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(id: &str, kind: &str, machine: &str, done: &str) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "status": "Succeeded", "machineId": machine,
            "requestor": "soc@contoso.com", "requestorComment": format!("c-{id}"),
            "creationDateTimeUtc": "2026-11-30T10:00:00Z", "lastUpdateDateTimeUtc": done,
        }))
        .unwrap()
    }

    #[test]
    fn the_action_that_completed_last_decides_whatever_the_order() {
        let mut actions = vec![
            action("a1", "Isolate", "M1", "2026-11-30T10:05:00Z"),
            action("a2", "Unisolate", "m1", "2026-11-30T11:00:00.5Z"),
            action("a3", "Isolate", "m2", "2026-11-30T10:05:00Z"),
            action("a4", "RestrictCodeExecution", "m2", "2026-11-30T10:06:00Z"),
            action("a5", "Isolate", "m1", "2026-11-30T11:00:00.25Z"),
        ];
        for _ in 0..2 {
            let s = containment(&actions);
            assert!(!s["m1"].isolated(), "the release completed last");
            assert_eq!(s["m1"].isolation.as_ref().unwrap().action_id, "a2");
            assert!(s["m2"].isolated() && s["m2"].restricted());
            let r = s["m2"].restriction.as_ref().unwrap();
            assert_eq!((r.requestor.as_str(), r.comment.as_str()), ("soc@contoso.com", "c-a4"));
            assert!(s["m1"].restriction.is_none());
            actions.reverse();
        }
    }
}
