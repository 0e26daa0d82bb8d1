//! The pre-flight: one paged `GET machineactions` call lists the actions
//! already `Pending` or `InProgress` of the types the input asks for; a row
//! whose machine has one is settled `already_pending` and is not sent, so a
//! re-run never stacks a second request behind an open one.
//!
//! Kept apart from the device look-ups: it is a separate API with its own
//! quota, run concurrently with them, and shares nothing with them but the
//! list of actions asked for.

use std::collections::{BTreeSet, HashMap};

use crate::api::action::ActionKind;
use crate::api::client::CallError;
use crate::api::model::is_final_status;
use crate::api::odata::odata_string;
use crate::run::call::Ctx;
use crate::run::submit::list_all_actions;
use crate::run::transport::Transport;

/// An action already pending or in progress, found by the pre-flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingAction {
    /// The MachineAction id.
    pub(crate) id: String,
    /// `Pending` or `InProgress`.
    pub(crate) status: String,
    /// When it was created, as the API wrote it.
    pub(crate) created: Option<String>,
    /// The machine's `computerDnsName`, as the action names it: the row's
    /// `device_name` when the run never looked the machine up.
    pub(crate) device_name: Option<String>,
}

/// (machine id lowercased, action) → the newest action of that type still open on it.
pub(crate) type PendingMap = HashMap<(String, ActionKind), PendingAction>;

/// The pre-flight: every action of the given types still `Pending` or
/// `InProgress`, in one paged `GET machineactions` call.
pub(super) async fn pending_actions<T: Transport>(
    ctx: &Ctx<T>,
    actions: &BTreeSet<ActionKind>,
) -> Result<PendingMap, CallError> {
    let mut open = PendingMap::new();
    if actions.is_empty() {
        return Ok(open);
    }
    let types: Vec<String> =
        actions.iter().map(|a| format!("type eq {}", odata_string(a.type_name()))).collect();
    let filter =
        format!("(status eq 'Pending' or status eq 'InProgress') and ({})", types.join(" or "));
    for a in list_all_actions(ctx, &filter).await? {
        let Some(kind) = ActionKind::from_type_name(&a.kind) else { continue };
        if !actions.contains(&kind) || is_final_status(&a.status) {
            continue;
        }
        // Newest first: the first one seen per machine and type is kept.
        open.entry((a.machine_id.to_ascii_lowercase(), kind)).or_insert(PendingAction {
            id: a.id,
            status: a.status,
            created: a.creation_date_time_utc,
            device_name: a.computer_dns_name,
        });
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::resolve::test_support::{Tenant, action, ctx};

    #[tokio::test]
    async fn the_pre_flight_keeps_open_actions_of_the_asked_types_newest_first() {
        let mut tenant = Tenant::new(Vec::new());
        tenant.actions = vec![
            action("new", "Isolate", "Pending", "AAA"),
            action("old", "Isolate", "InProgress", "aaa"),
            action("done", "Isolate", "Succeeded", "bbb"),
            action("off", "Offboard", "Pending", "ccc"),
            action("scan", "RunAntiVirusScan", "Pending", "ddd"),
        ];
        let c = ctx(tenant);
        let asked = [ActionKind::Isolate, ActionKind::Offboard].into_iter().collect();
        let open = pending_actions(&c, &asked).await.unwrap();
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[&("aaa".to_string(), ActionKind::Isolate)].id, "new");
        assert_eq!(open[&("ccc".to_string(), ActionKind::Offboard)].status, "Pending");
        let calls = c.transport.calls("GET machineactions");
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].filter.as_deref(),
            Some(
                "(status eq 'Pending' or status eq 'InProgress') and (type eq 'Isolate' or type eq 'Offboard')"
            )
        );
        assert!(pending_actions(&c, &BTreeSet::new()).await.unwrap().is_empty());
        assert_eq!(c.transport.calls("GET machineactions").len(), 1, "nothing asked, no call");
    }
}
