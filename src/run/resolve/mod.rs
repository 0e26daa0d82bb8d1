//! What a run learns from the API before it sends any action, with read
//! calls only (so a dry run makes them too), and the in-memory maps the
//! reader thread decides rows from. This file is what the rest of the
//! engine calls: [`prepare`] runs the look-ups, [`Prepared`] holds their
//! outcome, [`estimate`] times the plan; the survey fills [`Lookups`].
//!
//! One concern a file:
//!
//! - `lookups`: the keys the input needs looked up ([`Lookups`]).
//! - `names`: device names, Entra ID device ids and IP addresses become
//!   machines, by the full listing or batched `$filter`s, whichever costs
//!   fewer calls; the compact answers ([`Resolution`](names::Resolution)).
//! - `preflight`: the actions already pending or in progress.
//! - `decide`: a row plan turned into a target, or into a row settled
//!   without a request (not found, ambiguous, the OS check, already pending).
//!
//! [`Prepared`] holds the outcome: name → resolution, (machine id, action)
//! → pending action, machine id → machine (for its OS), and, after a full
//! listing, the set of the tenant's machine ids.
//!
//! Imports run one way, so no two files import each other: this file
//! imports `lookups`, `names` and `preflight`, which import nothing of it;
//! `decide` imports [`Prepared`] from here, and this file only declares
//! `decide` (`mod decide;`), importing nothing of it: the methods it adds
//! to [`Prepared`] are called without an import.

mod decide;
mod lookups;
mod names;
mod preflight;

use std::time::Duration;

pub(crate) use lookups::Lookups;
use names::{Found, Resolution, look_up};
use preflight::{PendingMap, pending_actions};

use crate::api::client::CallError;
use crate::pace::Pacer;
use crate::run::call::Ctx;
use crate::run::transport::Transport;

/// Everything learnt before sending; the reader thread decides rows from it.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Device look-ups.
    pub(crate) found: Found,
    /// Why the device look-up failed, if it did: rows that needed it are
    /// settled `error` (nothing is guessed), the OS check is skipped.
    pub(crate) lookup_error: Option<CallError>,
    /// Whether [`Found::os`] answers for every id of [`Lookups::os_ids`].
    pub(crate) os_known: bool,
    /// Whether every machine id of the input was looked up
    /// ([`Lookups::check_ids`]), so one absent from [`Found::os`] is not in
    /// the tenant whatever its action.
    pub(crate) ids_checked: bool,
    /// Open actions by machine and type (empty when the pre-flight failed:
    /// the API itself then refuses a repeat with `ActiveRequestAlreadyExists`).
    pub(crate) pending: PendingMap,
    /// `--skip-satisfied`: every machine's containment now, by lower-case
    /// machine id, from its latest completed containment actions (`None`:
    /// not asked for, every row is sent).
    pub(crate) satisfied:
        Option<std::collections::HashMap<String, crate::run::devices::Containment>>,
    /// The protected-devices policy (`--protect`), if any: rows whose
    /// action it guards are `protected` when their machine is in
    /// [`Found::protected`], and are never sent unchecked.
    pub(crate) protect: Option<std::sync::Arc<crate::run::protect::Policy>>,
    /// Whether every machine id of a row the policy guards was looked up
    /// by filter, so one absent from [`Found::os`] is not in the tenant
    /// (past the filter cap the listing's set of ids says so instead).
    pub(crate) guarded_checked: bool,
}

/// Runs the look-ups and the pre-flight (concurrently: they are separate
/// APIs with separate quotas). Failures are kept in the result, never
/// fatal: rows that cannot be decided without them are settled `error`.
/// Returns at once, with nothing learnt, when a stop is asked for.
pub(crate) async fn prepare<T: Transport>(
    ctx: &Ctx<T>,
    lookups: &Lookups,
    pick_latest: bool,
) -> Prepared {
    let work = async {
        let (found, pending) = tokio::join!(
            look_up(ctx, lookups, pick_latest),
            pending_actions(ctx, &lookups.actions)
        );
        let mut prepared = Prepared { protect: lookups.protect.clone(), ..Prepared::default() };
        match found {
            Ok(found) => {
                if !lookups.no_machines() {
                    let mut counts = [0usize; 3];
                    for r in found
                        .names
                        .values()
                        .chain(found.aad_device_ids.values())
                        .chain(found.ips.values())
                    {
                        counts[match r {
                            Resolution::Found(_) => 0,
                            Resolution::NotFound => 1,
                            Resolution::Ambiguous(_) => 2,
                        }] += 1;
                    }
                    tracing::info!(
                        calls = found.calls,
                        found = counts[0],
                        not_found = counts[1],
                        ambiguous = counts[2],
                        os_checked = found.os.len(),
                        listing = found.fleet.is_some(),
                        "devices looked up"
                    );
                }
                prepared.os_known = true;
                // Past the cap only the listing's set of ids knows them all.
                prepared.ids_checked = lookups.check_ids && !lookups.list_fleet;
                prepared.guarded_checked = lookups.protect.is_some() && !lookups.list_fleet;
                if lookups.protect.is_some() {
                    tracing::info!(
                        protected = found.protected.len(),
                        "machines looked up matched against the protected-devices policy"
                    );
                }
                prepared.found = found;
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking devices up failed; rows that name a device without its id are settled as errors");
                prepared.lookup_error = Some(e);
            }
        }
        match pending {
            Ok(pending) => {
                if !lookups.actions.is_empty() {
                    tracing::info!(
                        open = pending.len(),
                        "pre-flight: actions already pending or in progress"
                    );
                }
                prepared.pending = pending;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pre-flight failed; going on without it (the API refuses repeats itself)")
            }
        }
        prepared
    };
    tokio::select! {
        biased;
        () = ctx.stop.wait() => Prepared { protect: lookups.protect.clone(), ..Prepared::default() },
        p = work => p,
    }
}

/// How long sending `per_action` rows takes under the quota: the exact
/// schedule the pacer follows for each action's API; the APIs have separate
/// quotas and run concurrently, so the longest one decides.
pub(crate) fn estimate<'a>(
    pacer: &Pacer,
    per_action: impl IntoIterator<Item = &'a u64>,
) -> Duration {
    per_action.into_iter().map(|&n| pacer.schedule(n)).max().unwrap_or(Duration::ZERO)
}

/// What the tests of the three files share: an in-memory tenant behind the
/// transport seam, and helpers to build keys, rows and actions.
#[cfg(test)]
mod test_support {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::api::action::ActionKind;
    use crate::api::client::{ActionBody, Reply};
    use crate::api::model::{Machine, MachineAction, ODataList};
    use crate::api::odata::ListQuery;
    use crate::input::{RowPlan, Target};
    use crate::run::{RetryPolicy, Stop};
    use crate::sim::odata::{self, MACHINE_ACTIONS, MACHINES, parse_filter};

    /// An in-memory tenant that answers list calls like the service
    /// (filters evaluated by the simulator's OData parser) and records them.
    pub(super) struct Tenant {
        /// The tenant's machines, as `GET machines` lists them.
        pub(super) machines: Vec<Machine>,
        /// The tenant's actions, as `GET machineactions` lists them.
        pub(super) actions: Vec<MachineAction>,
        /// Entities per reply before an `@odata.nextLink`.
        pub(super) page_size: Option<usize>,
        /// Every list call: (api, query).
        calls: Mutex<Vec<(&'static str, ListQuery)>>,
        /// Status of every `GET machines` answer instead of a list.
        pub(super) machines_status: Option<u16>,
    }

    impl Tenant {
        /// A tenant of these machines, with no action, answering in full pages.
        pub(super) fn new(machines: Vec<Machine>) -> Tenant {
            Tenant {
                machines,
                actions: Vec::new(),
                page_size: None,
                calls: Mutex::new(Vec::new()),
                machines_status: None,
            }
        }

        /// The queries of every list call made to `api` so far, in order.
        pub(super) fn calls(&self, api: &str) -> Vec<ListQuery> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(a, _)| *a == api)
                .map(|(_, q)| q.clone())
                .collect()
        }

        /// One page of `items`, as the service pages them (`$top`, `$skip`).
        fn page<T: Clone>(&self, items: Vec<&T>, q: &ListQuery) -> ODataList<T> {
            let top = q.top.unwrap_or(10_000) as usize;
            let page = self.page_size.unwrap_or(usize::MAX).min(top);
            let rest: Vec<&T> = items.into_iter().skip(q.skip.unwrap_or(0) as usize).collect();
            ODataList {
                context: None,
                value: rest.iter().take(page).map(|t| (*t).clone()).collect(),
                next_link: (rest.len() > page && page < top).then(|| "next".to_string()),
            }
        }
    }

    /// A machine's field as the simulator's filter evaluator reads it.
    fn machine_field<'a>(m: &'a Machine, name: &str) -> odata::Value<'a> {
        let opt =
            |v: &'a Option<String>| v.as_deref().map_or(odata::Value::Null, odata::Value::Str);
        match name {
            "id" => odata::Value::Str(&m.id),
            "computerDnsName" => opt(&m.computer_dns_name),
            "aadDeviceId" => opt(&m.aad_device_id),
            "lastIpAddress" => opt(&m.last_ip_address),
            "osPlatform" => opt(&m.os_platform),
            _ => odata::Value::Null,
        }
    }

    impl Transport for Tenant {
        async fn authenticate(&self) -> Result<(), crate::api::auth::AuthError> {
            Ok(())
        }

        async fn submit(
            &self,
            _: &str,
            _: ActionKind,
            _: &ActionBody,
        ) -> Result<Reply<MachineAction>, CallError> {
            panic!("a look-up must never send an action")
        }

        async fn list_actions(
            &self,
            q: &ListQuery,
        ) -> Result<Reply<ODataList<MachineAction>>, CallError> {
            self.calls.lock().unwrap().push(("GET machineactions", q.clone()));
            let f = parse_filter(q.filter.as_deref().unwrap(), &MACHINE_ACTIONS).unwrap();
            let items: Vec<&MachineAction> = self
                .actions
                .iter()
                .filter(|a| {
                    f.matches(&|name: &str| match name {
                        "status" => odata::Value::Str(&a.status),
                        "type" => odata::Value::Str(&a.kind),
                        "machineId" => odata::Value::Str(&a.machine_id),
                        _ => odata::Value::Null,
                    })
                })
                .collect();
            Ok(Reply { status: 200, value: self.page(items, q) })
        }

        async fn list_machines(
            &self,
            q: &ListQuery,
        ) -> Result<Reply<ODataList<Machine>>, CallError> {
            self.calls.lock().unwrap().push(("GET machines", q.clone()));
            if let Some(status) = self.machines_status {
                return Err(CallError::Api { status, error: None, retry_after: None });
            }
            let f = q.filter.as_deref().map(|f| parse_filter(f, &MACHINES).unwrap());
            let items: Vec<&Machine> = self
                .machines
                .iter()
                .filter(|m| f.as_ref().is_none_or(|f| f.matches(&|n: &str| machine_field(m, n))))
                .collect();
            Ok(Reply { status: 200, value: self.page(items, q) })
        }

        async fn find_by_tag(
            &self,
            _: &str,
            _: bool,
        ) -> Result<Reply<ODataList<Machine>>, CallError> {
            panic!("targets are gathered before the look-ups, never by them")
        }

        async fn file_machines(&self, _: &str) -> Result<Reply<ODataList<Machine>>, CallError> {
            panic!("targets are gathered before the look-ups, never by them")
        }

        async fn hunting_query(
            &self,
            _: &str,
        ) -> Result<Reply<crate::api::model::HuntingQueryResults>, CallError> {
            panic!("targets are gathered before the look-ups, never by them")
        }

        async fn tag_machines(
            &self,
            _: &str,
            _: bool,
            _: &[String],
        ) -> Result<Reply<serde::de::IgnoredAny>, CallError> {
            panic!("a look-up must never tag a device")
        }

        async fn cancel_action(
            &self,
            _: &str,
            _: Option<&str>,
        ) -> Result<Reply<MachineAction>, CallError> {
            panic!("a look-up must never cancel an action")
        }
    }

    /// A call context over `tenant`: no pacing, default retries, no stop.
    pub(super) fn ctx(tenant: Tenant) -> Ctx<Tenant> {
        Ctx::new(
            Arc::new(tenant),
            Arc::new(Pacer::new(&[], None)),
            None,
            RetryPolicy::default(),
            Stop::new(),
        )
    }

    /// A set of keys.
    pub(super) fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The id of the one machine `r` found; panics otherwise.
    pub(super) fn found_id(r: &Resolution) -> String {
        match r {
            Resolution::Found(m) => m.id.to_string(),
            other => panic!("expected a machine, got {other:?}"),
        }
    }

    /// An action as the API lists it, created 2025-06-01T08:00Z.
    pub(super) fn action(id: &str, kind: &str, status: &str, machine: &str) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "status": status, "machineId": machine,
            "creationDateTimeUtc": "2025-06-01T08:00:00.0000000Z"
        }))
        .unwrap()
    }

    /// A valid row plan of line 4.
    pub(super) fn plan(target: Target, action: ActionKind) -> RowPlan {
        RowPlan::sample(4, target, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pace::Limit;

    #[test]
    fn the_estimate_is_the_longest_action_schedule() {
        let pacer =
            Pacer::new(&[Limit::new(20, Duration::from_secs(1)).unwrap()], Some(Duration::ZERO));
        assert_eq!(estimate(&pacer, &[100, 5]), Duration::from_secs(4));
        assert_eq!(estimate(&pacer, &[20, 20]), Duration::ZERO);
        assert_eq!(estimate(&pacer, &[]), Duration::ZERO);
    }
}
