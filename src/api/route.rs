//! The APIs the service counts quota for, one per method + route template
//! (all machine and action ids share their template's counter). The runner
//! paces per [`Api`] and the simulator counts per [`Api`], under the same names.

use std::fmt;

use super::action::ActionKind;

/// One rate-limited API of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// `POST machines/{id}/<action>`: one API per action.
    Action(ActionKind),
    /// `POST machineactions/{id}/cancel`.
    CancelAction,
    /// `GET machines`.
    ListMachines,
    /// `GET machines/{id}`.
    GetMachine,
    /// `GET machineactions`.
    ListActions,
    /// `GET machineactions/{id}`.
    GetAction,
    /// `GET machines/findbyip(ip='..',timestamp=..)`.
    FindByIp,
    /// `GET machines/findbytag?tag=..`.
    FindByTag,
    /// `POST machines/{id}/tags`.
    MachineTags,
    /// `POST machines/AddOrRemoveTagForMultipleMachines`.
    MachinesTags,
    /// `GET files/{sha1}/machines`.
    FileMachines,
    /// `GET machines/{id}/logonusers`.
    LogonUsers,
    /// `POST machines/{id}/startInvestigation`.
    StartInvestigation,
    /// `GET machineactions/{id}/GetPackageUri`.
    GetPackageUri,
    /// Microsoft Graph's `POST security/runHuntingQuery`: an Advanced
    /// Hunting query, on its own host and quota.
    HuntingQuery,
}

impl Api {
    /// Stable name used in logs, `/_sim/stats` `by_api` keys and pacing
    /// reports: the action's path segment for action POSTs, `GET machines`,
    /// `GET machines/{id}`, `GET machineactions`, `GET machineactions/{id}`
    /// and `POST machineactions/{id}/cancel`, and the method and route
    /// template (documented casing) of every other API.
    pub fn name(self) -> &'static str {
        match self {
            Api::Action(a) => a.path_segment(),
            Api::CancelAction => "POST machineactions/{id}/cancel",
            Api::ListMachines => "GET machines",
            Api::GetMachine => "GET machines/{id}",
            Api::ListActions => "GET machineactions",
            Api::GetAction => "GET machineactions/{id}",
            Api::FindByIp => "GET machines/findbyip",
            Api::FindByTag => "GET machines/findbytag",
            Api::MachineTags => "POST machines/{id}/tags",
            Api::MachinesTags => "POST machines/AddOrRemoveTagForMultipleMachines",
            Api::FileMachines => "GET files/{id}/machines",
            Api::LogonUsers => "GET machines/{id}/logonusers",
            Api::StartInvestigation => "POST machines/{id}/startInvestigation",
            Api::GetPackageUri => "GET machineactions/{id}/GetPackageUri",
            Api::HuntingQuery => "POST security/runHuntingQuery",
        }
    }

    /// Every API, in a stable order.
    pub fn all() -> impl Iterator<Item = Api> {
        ActionKind::ALL.into_iter().map(Api::Action).chain([
            Api::CancelAction,
            Api::ListMachines,
            Api::GetMachine,
            Api::ListActions,
            Api::GetAction,
            Api::FindByIp,
            Api::FindByTag,
            Api::MachineTags,
            Api::MachinesTags,
            Api::FileMachines,
            Api::LogonUsers,
            Api::StartInvestigation,
            Api::GetPackageUri,
            Api::HuntingQuery,
        ])
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Api::all().map(Api::name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
