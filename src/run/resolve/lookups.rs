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
    /// The actions the input asks for (the pre-flight looks for these).
    pub(crate) actions: BTreeSet<ActionKind>,
}

impl Lookups {
    /// Records what a valid row needs looked up.
    pub(crate) fn add(&mut self, plan: &RowPlan) {
        self.actions.insert(plan.action);
        match &plan.target {
            Target::Id(id) => {
                let wanted =
                    plan.action.windows_only() || self.check_ids || plan.named.is_some();
                if wanted && !self.os_ids.contains(id) {
                    self.os_ids.insert(id.clone());
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
