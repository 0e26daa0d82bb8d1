//! What the input needs looked up: the keys the survey collects from every
//! valid row, one entry per distinct key whatever the number of rows.
//!
//! A file of its own because both look-ups read it (the device look-up in
//! `names`, the pre-flight in `preflight`) and the survey fills it: kept
//! apart, it is imported by all of them and imports none, so no file of
//! `resolve` needs to import the one that imports it.

use std::collections::BTreeSet;

use crate::api::action::ActionKind;
use crate::input::{RowPlan, Target};

/// Machine ids a dry run checks by `$filter` at most; with more, the full
/// listing answers for all of them: one call per 10,000 machines, and one
/// hash per machine of the tenant to keep, where a million ids of an input
/// would otherwise keep a million strings.
pub(crate) const MAX_IDS_CHECKED_BY_FILTER: usize = 200;

/// What the input needs looked up, collected by the survey: one entry per
/// distinct key, whatever the number of rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lookups {
    /// Device names of rows without a machine id, lowercased.
    pub(crate) names: BTreeSet<String>,
    /// Entra ID device ids of rows with neither a machine id nor a name, lowercased.
    pub(crate) aad_device_ids: BTreeSet<String>,
    /// IP addresses of rows with nothing more precise, normalised.
    pub(crate) ips: BTreeSet<String>,
    /// Machine ids looked up by id: those of Windows-only rows, whose
    /// `osPlatform` decides whether the row can be sent, those of rows that
    /// give a device name too (the two must name one machine), and with
    /// [`check_ids`](Self::check_ids) every id, so an id that is not in the
    /// tenant is `not_found` before anything is sent.
    pub(crate) os_ids: BTreeSet<String>,
    /// Look every machine id up, not only those the OS check needs: a dry
    /// run sets it, so its plan says which ids do not exist (a real run
    /// leaves it to the API's 404, which costs no extra read call).
    pub(crate) check_ids: bool,
    /// Read the tenant's full machine listing whatever the cost rule says:
    /// set when [`check_ids`](Self::check_ids) meets more ids than
    /// [`MAX_IDS_CHECKED_BY_FILTER`]; the listing's set of ids then settles
    /// the ids not collected.
    pub(crate) list_fleet: bool,
    /// The actions the input asks for (the pre-flight looks for these).
    pub(crate) actions: BTreeSet<ActionKind>,
    /// The protected-devices policy (`--protect`): the machines of rows
    /// whose action it guards are looked up by id too (batched like
    /// [`check_ids`](Self::check_ids)), so each is matched against it
    /// before anything is sent.
    pub(crate) protect: Option<std::sync::Arc<crate::run::protect::Policy>>,
}

impl Lookups {
    /// Records what a valid row needs looked up.
    pub(crate) fn add(&mut self, plan: &RowPlan) {
        self.actions.insert(plan.action);
        match &plan.target {
            Target::Id(id) => {
                if self.os_ids.contains(id) {
                    return;
                }
                let guarded = self.protect.as_ref().is_some_and(|p| p.guards(plan.action));
                if plan.action.windows_only() || plan.named.is_some() {
                    self.os_ids.insert(id.clone());
                } else if (self.check_ids || guarded) && !self.list_fleet {
                    if self.os_ids.len() < MAX_IDS_CHECKED_BY_FILTER {
                        self.os_ids.insert(id.clone());
                    } else {
                        self.list_fleet = true;
                    }
                }
            }
            Target::Name(name) => {
                let name = name.to_lowercase();
                if !self.names.contains(&name) {
                    self.names.insert(name);
                }
            }
            Target::AadDeviceId(aad) => {
                let aad = aad.to_ascii_lowercase();
                if !self.aad_device_ids.contains(&aad) {
                    self.aad_device_ids.insert(aad);
                }
            }
            Target::Ip(ip) => {
                if !self.ips.contains(ip) {
                    self.ips.insert(ip.clone());
                }
            }
        }
    }

    /// True when no machine needs looking up.
    pub(crate) fn no_machines(&self) -> bool {
        self.names.is_empty()
            && self.aad_device_ids.is_empty()
            && self.ips.is_empty()
            && self.os_ids.is_empty()
    }
}
