//! Deciding a row from what was learnt, with no request: which machine a
//! row plan acts on ([`Prepared::target`]), or the row settled before
//! anything is sent ([`Prepared::check`]): `not_found`, `ambiguous`,
//! `error` when the look-up failed, `rejected` when a row's machine id and
//! device name are different machines (`IdNameMismatch`) or by the OS check
//! (a Windows-only action on Linux or macOS), `already_pending`, and with
//! `--skip-satisfied` `already_done`.
//!
//! Apart from the look-ups because it runs on the reader thread, once per
//! row, against the finished maps: it reads them and never calls the API.

use super::Prepared;
use super::names::{MachineRef, Resolution, id_hash, name_matches};
use crate::api::action::ActionKind;
use crate::api::time::format_utc;
use crate::input::{RowPlan, Target};
use crate::results::{ResultRow, Status};

/// Candidates spelled out in an `ambiguous` row's message at most.
const MAX_CANDIDATES_LISTED: usize = 10;

impl Prepared {
    /// The machine a row acts on (with what is known of it), or the row
    /// settled when its device cannot be named: `not_found`, `ambiguous`,
    /// or `error` when the look-up failed.
    pub(crate) fn target<'a>(
        &'a self,
        plan: &RowPlan,
    ) -> Result<(String, Option<&'a MachineRef>), Box<ResultRow>> {
        let (map, key, what) = match &plan.target {
            Target::Id(id) => return Ok((id.clone(), self.found.os.get(id))),
            Target::Name(n) => (&self.found.names, n.to_lowercase(), "device name"),
            Target::AadDeviceId(a) => {
                (&self.found.aad_device_ids, a.to_ascii_lowercase(), "aadDeviceId")
            }
            Target::Ip(ip) => (&self.found.ips, ip.clone(), "IP address"),
        };
        let settle = |status, code: &str, message: String| {
            Box::new(settled(plan, String::new(), status, code, message))
        };
        match map.get(key.as_str()) {
            Some(Resolution::Found(m)) => Ok((m.id.lowercase(), Some(m))),
            Some(Resolution::NotFound) => Err(settle(
                Status::NotFound,
                "NotFound",
                match &plan.target {
                    Target::Name(n) => format!(
                        "no machine named {n:?} in the tenant (names match computerDnsName case-insensitively; a short name matches the first label of an FQDN, an FQDN only exactly); nothing was sent"
                    ),
                    Target::Ip(ip) => format!(
                        "no machine whose lastIpAddress is {ip} (the address each device last reported; it may have changed since); nothing was sent"
                    ),
                    other => format!(
                        "no machine with aadDeviceId {other} in the tenant; nothing was sent"
                    ),
                },
            )),
            Some(Resolution::Ambiguous(candidates)) => Err(settle(
                Status::Ambiguous,
                "Ambiguous",
                ambiguous_message(what, &plan.target, candidates),
            )),
            None => Err(match &self.lookup_error {
                Some(e) => settle(
                    Status::Error,
                    e.code(),
                    format!("looking the {what} up failed ({e}); nothing was sent"),
                ),
                None => settle(
                    Status::Error,
                    "NotLookedUp",
                    format!("the {what} was not looked up; nothing was sent"),
                ),
            }),
        }
    }

    /// Settles a row whose machine is known, before anything is sent: a
    /// machine id that is not in the tenant (`not_found`), a device name
    /// given beside the id that names another machine (`rejected`,
    /// `IdNameMismatch`), a Windows-only
    /// action on Linux or macOS (`rejected`, `OsPlatformNotSupported`), an
    /// action of the same type already open on the machine
    /// (`already_pending`). `None`: send it.
    pub(crate) fn check(
        &self,
        plan: &RowPlan,
        machine_id: &str,
        machine: Option<&MachineRef>,
    ) -> Option<ResultRow> {
        let by_id = matches!(plan.target, Target::Id(_));
        let guarded = self.protect.as_ref().is_some_and(|p| p.guards(plan.action));
        let absent_from_listing =
            self.found.fleet.as_ref().is_some_and(|f| !f.contains(&id_hash(machine_id)));
        let absent_from_os_lookup = self.os_known
            && (plan.action.windows_only()
                || self.ids_checked
                || plan.named.is_some()
                || (guarded && self.guarded_checked))
            && machine.is_none();
        if by_id && (absent_from_listing || absent_from_os_lookup) {
            return Some(settled(
                plan,
                machine_id.to_string(),
                Status::NotFound,
                "NotFound",
                "no machine with this id in the tenant; nothing was sent".to_string(),
            ));
        }
        if by_id && let Some(name) = &plan.named {
            if !self.os_known {
                let (code, why) = self.not_looked_up("machine id");
                return Some(settled(
                    plan,
                    machine_id.to_string(),
                    Status::Error,
                    code,
                    format!(
                        "{why}, so whether it is the device named {name:?} is unknown; nothing was sent"
                    ),
                ));
            }
            if let Some(dns) = self.found.dns_name(machine_id)
                && !name_matches(name, dns)
            {
                // Not the machine acted on: the row keeps the name it gave.
                return Some(ResultRow {
                    device_name: name.clone(),
                    ..settled(
                        plan,
                        machine_id.to_string(),
                        Status::Rejected,
                        "IdNameMismatch",
                        format!(
                            "the machine id {machine_id} is {dns:?} in the tenant, but the row names the device {name:?}: they are different machines; nothing was sent (correct one of them, or leave the name out with --ignore-column)"
                        ),
                    )
                });
            }
        }
        if guarded && let Some(row) = self.protected(plan, machine_id) {
            return Some(row);
        }
        if plan.action.windows_only()
            && let Some(m) = machine.filter(|m| m.is_linux_or_macos())
        {
            let os = m.os_platform().unwrap_or_default();
            return Some(settled(
                plan,
                machine_id.to_string(),
                Status::Rejected,
                "OsPlatformNotSupported",
                format!(
                    "{} is not supported on {os} devices: the API accepts it on Windows only; nothing was sent",
                    plan.action
                ),
            ));
        }
        let Some(pending) = self.pending.get(&(machine_id.to_ascii_lowercase(), plan.action))
        else {
            return self.satisfied_row(plan, machine_id);
        };
        let mut row = settled(
            plan,
            machine_id.to_string(),
            Status::AlreadyPending,
            "",
            format!(
                "a {} action is already {} on this device (created {}); nothing was sent",
                plan.action.type_name(),
                pending.status,
                pending.created.as_deref().unwrap_or("at an unknown time")
            ),
        );
        row.action_id = pending.id.clone();
        row.action_status = pending.status.clone();
        row.device_name = pending.device_name.clone().unwrap_or_default();
        Some(row)
    }
}

impl Prepared {
    /// `--skip-satisfied`: the row settled `already_done` when its device is
    /// already in the state its action asks for (a device with no completed
    /// containment action is neither isolated nor restricted). Actions other
    /// than isolate, unisolate, restrict and unrestrict are always sent.
    fn satisfied_row(&self, plan: &RowPlan, machine_id: &str) -> Option<ResultRow> {
        let states = self.satisfied.as_ref()?;
        let (isolation, want_on, state) = match plan.action {
            ActionKind::Isolate => (true, true, "isolated"),
            ActionKind::Unisolate => (true, false, "released from isolation"),
            ActionKind::RestrictCodeExecution => (false, true, "restricted"),
            ActionKind::UnrestrictCodeExecution => (false, false, "unrestricted"),
            _ => return None,
        };
        let c = states.get(&machine_id.to_ascii_lowercase());
        let latest =
            c.and_then(|c| if isolation { c.isolation.as_ref() } else { c.restriction.as_ref() });
        if latest.is_some_and(|l| l.on) != want_on {
            return None;
        }
        let why = match latest {
            Some(l) => format!(
                "the device is already {state}: action {} completed {}{}; nothing was sent (--skip-satisfied)",
                l.action_id,
                l.at,
                if l.requestor.is_empty() { String::new() } else { format!(" by {}", l.requestor) },
            ),
            None => format!(
                "the device is already {state}: no completed containment action on it; nothing was sent (--skip-satisfied)"
            ),
        };
        let mut row = settled(plan, machine_id.to_string(), Status::AlreadyDone, "", why);
        if let Some(l) = latest {
            row.action_id = l.action_id.clone();
            row.action_status = "Succeeded".into();
        }
        Some(row)
    }
}

impl Prepared {
    /// The error code and reason of a row whose machine (`what`: "machine"
    /// or "machine id") the look-ups did not learn: the look-up's failure,
    /// or `NotLookedUp`.
    fn not_looked_up(&self, what: &str) -> (&str, String) {
        match &self.lookup_error {
            Some(e) => (e.code(), format!("looking the {what} up failed ({e})")),
            None => ("NotLookedUp", format!("the {what} was not looked up")),
        }
    }

    /// A row the protected-devices policy guards, settled `protected` when
    /// its machine is protected, or `error` when the machines could not be
    /// looked up (a guarded row is never sent unchecked). `None`: the
    /// policy lets it through.
    fn protected(&self, plan: &RowPlan, machine_id: &str) -> Option<ResultRow> {
        let policy = self.protect.as_ref()?;
        if !self.os_known {
            let (code, why) = self.not_looked_up("machine");
            return Some(settled(
                plan,
                machine_id.to_string(),
                Status::Error,
                code,
                format!(
                    "{why}, so whether the protected-devices policy {} protects it is unknown; nothing was sent",
                    policy.path().display()
                ),
            ));
        }
        let why = self.found.protected.get(&machine_id.to_ascii_lowercase())?;
        Some(settled(
            plan,
            machine_id.to_string(),
            Status::Protected,
            "Protected",
            format!(
                "protected by {} ({why}): {} is never sent to this device; nothing was sent",
                policy.path().display(),
                plan.action.cli_name()
            ),
        ))
    }
}

/// A row decided without a request.
fn settled(
    plan: &RowPlan,
    machine_id: String,
    status: Status,
    code: &str,
    message: String,
) -> ResultRow {
    ResultRow::settled(plan.line, machine_id, plan.action.cli_name(), status, message)
        .with_code(code)
}

/// The message of an `ambiguous` row: every candidate (id, lastSeen,
/// healthStatus), most recently seen first, and the ways out.
fn ambiguous_message(what: &str, target: &Target, candidates: &[MachineRef]) -> String {
    let listed: Vec<String> = candidates
        .iter()
        .take(MAX_CANDIDATES_LISTED)
        .map(|m| {
            format!(
                "{} (lastSeen {}, {})",
                m.id,
                m.last_seen.map_or_else(|| "unknown".to_string(), format_utc),
                m.health_status().unwrap_or("health unknown")
            )
        })
        .collect();
    let more = candidates.len().saturating_sub(MAX_CANDIDATES_LISTED);
    format!(
        "{} machines match the {what} {:?}: {}{}; give the machine_id of the right one, or pass --pick latest to take the most recently seen",
        candidates.len(),
        target.to_string(),
        listed.join("; "),
        if more > 0 { format!("; and {more} more") } else { String::new() }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::action::ActionKind;
    use crate::run::resolve::lookups::MAX_IDS_CHECKED_BY_FILTER;
    use crate::run::resolve::test_support::{Tenant, action, ctx, plan};
    use crate::run::resolve::{Lookups, prepare};
    use crate::sim::fleet::{generate, host_name, twin_of};

    #[tokio::test]
    async fn rows_are_settled_from_what_was_learnt() {
        let fleet = generate(1000, 11, 0.0);
        let twin = host_name(twin_of(1000, 0));
        let (linux, windows) = (&fleet[7], &fleet[1]);
        let mut tenant = Tenant::new(fleet.clone());
        tenant.actions = vec![action("act-1", "Isolate", "Pending", &windows.id)];
        let c = ctx(tenant);
        let rows = [
            plan(Target::Name("HOST-00001".into()), ActionKind::Isolate),
            plan(Target::Name(twin.clone()), ActionKind::Isolate),
            plan(Target::Name("ghost".into()), ActionKind::Isolate),
            plan(Target::Id(linux.id.clone()), ActionKind::Offboard),
            plan(
                Target::Name(linux.computer_dns_name.clone().unwrap()),
                ActionKind::StopAndQuarantineFile,
            ),
            plan(Target::Id("f".repeat(40)), ActionKind::Offboard),
            plan(Target::Id(windows.id.clone()), ActionKind::Unisolate),
            plan(Target::Ip("192.0.2.1".into()), ActionKind::Isolate),
        ];
        let mut lookups = Lookups::default();
        rows.iter().for_each(|r| lookups.add(r));
        let prepared = prepare(&c, &lookups, false).await;
        let outcome = |p: &RowPlan| match prepared.target(p) {
            Err(row) => *row,
            Ok((id, m)) => prepared
                .check(p, &id, m)
                .unwrap_or(ResultRow { machine_id: id, ..ResultRow::default() }),
        };
        let r = outcome(&rows[0]);
        assert_eq!(
            (r.status, r.machine_id.as_str(), r.action_id.as_str()),
            (Some(Status::AlreadyPending), windows.id.as_str(), "act-1")
        );
        assert_eq!(r.action_status, "Pending");
        let r = outcome(&rows[1]);
        assert_eq!(r.status, Some(Status::Ambiguous));
        assert!(r.machine_id.is_empty());
        assert!(
            r.error_message.starts_with(&format!("2 machines match the device name {twin:?}: ")),
            "{}",
            r.error_message
        );
        assert!(
            r.error_message.contains("lastSeen")
                && r.error_message.contains("Inactive")
                && r.error_message.contains("--pick latest")
        );
        let r = outcome(&rows[2]);
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::NotFound), "NotFound"));
        assert!(r.error_message.contains("no machine named \"ghost\""), "{}", r.error_message);
        for row in &rows[3..5] {
            let r = outcome(row);
            assert_eq!(
                (r.status, r.error_code.as_str()),
                (Some(Status::Rejected), "OsPlatformNotSupported")
            );
            assert_eq!(r.machine_id, linux.id);
            assert!(
                r.error_message.contains("not supported on Linux devices"),
                "{}",
                r.error_message
            );
        }
        let r = outcome(&rows[5]);
        assert_eq!(
            (r.status, r.machine_id.as_str()),
            (Some(Status::NotFound), "f".repeat(40).as_str())
        );
        let r = outcome(&rows[6]);
        assert_eq!(
            (r.status, r.machine_id.as_str()),
            (None, windows.id.as_str()),
            "unisolate is not blocked by an isolate"
        );
        let r = outcome(&rows[7]);
        assert!(r.error_message.contains("lastIpAddress"), "{}", r.error_message);
        // Seven keys: one machine filter; one pre-flight call.
        assert_eq!(c.transport.calls("GET machines").len(), 1);
        assert_eq!(c.transport.calls("GET machineactions").len(), 1);
        // With --pick latest the twin resolves to its newest record.
        let prepared = prepare(&c, &lookups, true).await;
        let (id, _) = prepared.target(&rows[1]).unwrap();
        assert_eq!(id, fleet[twin_of(1000, 0)].id);
    }

    #[tokio::test]
    async fn after_a_full_listing_unknown_ids_are_not_found_and_failures_settle_rows_as_errors() {
        let fleet = generate(1000, 13, 0.0);
        let c = ctx(Tenant::new(fleet.clone()));
        let names: Vec<RowPlan> =
            (0..50).map(|i| plan(Target::Name(host_name(i)), ActionKind::Isolate)).collect();
        let mut lookups = Lookups::default();
        names.iter().for_each(|r| lookups.add(r));
        let prepared = prepare(&c, &lookups, false).await;
        assert!(prepared.found.fleet.is_some(), "50 names: the listing is cheaper");
        let unknown = plan(Target::Id("e".repeat(40)), ActionKind::Isolate);
        let r = prepared.check(&unknown, &"e".repeat(40), None).unwrap();
        assert_eq!(r.status, Some(Status::NotFound));
        let known = plan(Target::Id(fleet[3].id.clone()), ActionKind::Isolate);
        assert_eq!(prepared.check(&known, &fleet[3].id, None), None);

        let mut tenant = Tenant::new(Vec::new());
        tenant.machines_status = Some(403);
        let c = ctx(tenant);
        let prepared = prepare(&c, &lookups, false).await;
        let r = prepared.target(&names[0]).unwrap_err();
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::Error), "Forbidden"));
        assert!(
            r.error_message.contains("looking the device name up failed"),
            "{}",
            r.error_message
        );
        // Without the look-up nothing is known of ids: they are sent.
        let offboard = plan(Target::Id(fleet[7].id.clone()), ActionKind::Offboard);
        assert_eq!(prepared.check(&offboard, &fleet[7].id, None), None);
        // Unless the row names its device too: whether both are one machine is unknown.
        let mut both = plan(Target::Id(fleet[7].id.clone()), ActionKind::Isolate);
        both.named = Some(host_name(7));
        let r = prepared.check(&both, &fleet[7].id, None).unwrap();
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::Error), "Forbidden"));
    }

    #[tokio::test]
    async fn an_id_and_a_name_of_different_machines_are_rejected_and_a_dry_run_checks_every_id() {
        let fleet = generate(1000, 17, 0.0);
        let c = ctx(Tenant::new(fleet.clone()));
        let dns = |i: usize| fleet[i].computer_dns_name.clone().unwrap();
        let named = |i: usize, name: String| {
            let mut p = plan(Target::Id(fleet[i].id.clone()), ActionKind::Isolate);
            p.named = Some(name);
            p
        };
        let short = dns(3).split('.').next().unwrap().to_uppercase();
        let rows = [
            named(1, dns(1)),
            named(2, dns(5)),
            named(3, short),
            named(4, format!("{}.fabrikam.test", dns(4).split('.').next().unwrap())),
            plan(Target::Id("e".repeat(40)), ActionKind::Isolate),
        ];
        let mut lookups = Lookups::default();
        rows.iter().for_each(|r| lookups.add(r));
        assert_eq!(lookups.os_ids.len(), 4, "ids with a name are looked up, others are not");
        let prepared = prepare(&c, &lookups, false).await;
        let outcome = |p: &RowPlan| {
            let (id, m) = prepared.target(p).unwrap();
            prepared.check(p, &id, m)
        };
        assert_eq!(outcome(&rows[0]), None, "the same machine");
        let r = outcome(&rows[1]).unwrap();
        assert_eq!((r.status, r.error_code.as_str()), (Some(Status::Rejected), "IdNameMismatch"));
        assert!(r.error_message.contains(&dns(2)) && r.error_message.contains(&dns(5)));
        assert_eq!(outcome(&rows[2]), None, "a short name matches the first label, any case");
        let r = outcome(&rows[3]).unwrap();
        assert_eq!(r.error_code, "IdNameMismatch", "an FQDN matches only exactly");
        assert_eq!(outcome(&rows[4]), None, "a real run leaves an unknown id to the API");
        assert_eq!(c.transport.calls("GET machines").len(), 1);

        let mut lookups = Lookups { check_ids: true, ..Lookups::default() };
        rows.iter().for_each(|r| lookups.add(r));
        let prepared = prepare(&c, &lookups, false).await;
        let ghost = &rows[4];
        let r = prepared.check(ghost, &"e".repeat(40), None).unwrap();
        assert_eq!(r.status, Some(Status::NotFound), "a dry run knows the id does not exist");
        let known = plan(Target::Id(fleet[9].id.clone()), ActionKind::Isolate);
        let mut lookups = Lookups { check_ids: true, ..Lookups::default() };
        lookups.add(&known);
        let prepared = prepare(&c, &lookups, false).await;
        let (id, m) = prepared.target(&known).unwrap();
        assert_eq!(prepared.check(&known, &id, m), None);

        // Past the cap the ids are not collected: the full listing knows them.
        let mut lookups = Lookups { check_ids: true, ..Lookups::default() };
        lookups.add(&known);
        let ghosts: Vec<RowPlan> = (0..MAX_IDS_CHECKED_BY_FILTER + 50)
            .map(|i| plan(Target::Id(format!("{i:040x}")), ActionKind::Isolate))
            .collect();
        ghosts.iter().for_each(|g| lookups.add(g));
        assert!(lookups.list_fleet);
        assert_eq!(lookups.os_ids.len(), MAX_IDS_CHECKED_BY_FILTER);
        let before = c.transport.calls("GET machines").len();
        let prepared = prepare(&c, &lookups, false).await;
        assert!(prepared.found.fleet.is_some());
        assert_eq!(c.transport.calls("GET machines").len(), before + 1, "one listing page");
        for g in [&ghosts[0], ghosts.last().unwrap()] {
            let (id, m) = prepared.target(g).unwrap();
            assert_eq!(prepared.check(g, &id, m).unwrap().status, Some(Status::NotFound));
        }
        let (id, m) = prepared.target(&known).unwrap();
        assert_eq!(prepared.check(&known, &id, m), None);
    }

    #[tokio::test]
    async fn the_policy_protects_rows_by_id_batched_by_filter_or_by_the_listing_past_the_cap() {
        use crate::run::protect::Policy;
        let fleet = generate(1000, 5, 0.0);
        let policy =
            Policy::parse("tags = [\"tier0\"]\nnames = [\"host-00003\"]\n", "p.toml".as_ref())
                .unwrap();
        let c = ctx(Tenant::new(fleet.clone()));
        let settle = |prepared: &super::Prepared, p: &RowPlan| {
            let (id, m) = prepared.target(p).unwrap();
            prepared.check(p, &id, m).and_then(|r| r.status)
        };
        // A few rows by id: their machines come in one filter, matched there.
        let protect = Some(std::sync::Arc::new(policy));
        let mut lookups = Lookups { protect: protect.clone(), ..Lookups::default() };
        let rows: Vec<RowPlan> =
            (0..6).map(|i| plan(Target::Id(fleet[i].id.clone()), ActionKind::Isolate)).collect();
        rows.iter().for_each(|r| lookups.add(r));
        let scan = plan(Target::Id(fleet[0].id.clone()), ActionKind::RunAntiVirusScan);
        lookups.add(&scan);
        let prepared = prepare(&c, &lookups, false).await;
        assert_eq!(c.transport.calls("GET machines").len(), 1, "one filter for six ids");
        let got: Vec<Option<Status>> = rows.iter().map(|r| settle(&prepared, r)).collect();
        let p = Some(Status::Protected);
        assert_eq!(got, vec![p, None, None, p, None, None], "Tier0 on 0, the name of 3");
        assert_eq!(settle(&prepared, &scan), None, "scans are not guarded");

        // Past the filter cap, the listing matches every machine.
        let mut lookups = Lookups { protect, ..Lookups::default() };
        let many: Vec<RowPlan> = (0..MAX_IDS_CHECKED_BY_FILTER + 50)
            .map(|i| plan(Target::Id(fleet[i].id.clone()), ActionKind::Isolate))
            .collect();
        many.iter().for_each(|r| lookups.add(r));
        assert!(lookups.list_fleet);
        let prepared = prepare(&c, &lookups, false).await;
        assert_eq!(c.transport.calls("GET machines").len(), 2, "one listing page");
        let protected: Vec<usize> = (0..many.len())
            .filter(|&i| settle(&prepared, &many[i]) == Some(Status::Protected))
            .collect();
        assert_eq!(protected, vec![0, 3, 50, 100, 150, 200]);
    }
}
