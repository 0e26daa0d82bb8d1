//! What a row *is*, and what a run is, independent of where the row sits in
//! its file.
//!
//! A queue file is rewritten between runs (reordered, grown, shrunk,
//! replaced), so a row's line number says nothing about which device it
//! names. `--resume` therefore keys every journal record by the row's
//! [`RowKey`] — the device as the row names it, the action and the
//! parameters that change what happens to the device — and matches the
//! rows of the current input against those keys, never against lines.
//!
//! A run's [`RunParams`] are the settings that change what a row means (the
//! defaults a row falls back on and the tenant it acts in). They are the
//! journal's first record; a resume with different ones would mix two
//! meanings in one results file, so it is refused with the differences.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::input::{RowDefaults, RowPlan, Target};

/// A row's identity: `action|kind:device|isolation|sha1|scan`, the device
/// trimmed and lowercased as the row names it (a machine id, a device name,
/// an Entra ID device id or an IP address), headed by `tenant/` in a run
/// over many tenants (the same device id in two tenants is two devices).
/// The comment is not part of it: it does not change what happens to the
/// device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(String);

impl RowKey {
    /// The key of a valid row.
    pub fn of(plan: &RowPlan) -> RowKey {
        let (kind, device) = match &plan.target {
            Target::Id(s) => ("id", s),
            Target::Name(s) => ("name", s),
            Target::AadDeviceId(s) => ("aad", s),
            Target::Ip(s) => ("ip", s),
        };
        let mut key = String::with_capacity(64 + device.len());
        if let Some(tenant) = &plan.tenant {
            // A profile name never holds `/` or `|` (the profiles file is
            // checked), so the key splits back unambiguously.
            let _ = write!(key, "{}/", tenant.to_lowercase());
        }
        let _ = write!(
            key,
            "{}|{kind}:{}|{}|{}|{}",
            plan.action.cli_name(),
            device.trim().to_lowercase(),
            plan.isolation_type.map(|t| t.api_name()).unwrap_or_default(),
            plan.sha1.as_deref().map(str::to_ascii_lowercase).unwrap_or_default(),
            plan.scan_type.map(|t| t.api_name()).unwrap_or_default(),
        );
        RowKey(key)
    }

    /// A key read back from the journal.
    pub fn from_journal(key: String) -> RowKey {
        RowKey(key)
    }

    /// The key as the journal writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parts of the key: the tenant (`tenant/`, or empty), the action,
    /// `kind:device`, and the parameters (`iso|sha1|scan`). The
    /// parameters never hold a `|`, the device might (a hostile name), so
    /// the parameters are split off from the right.
    fn parts(&self) -> (&str, &str, &str, &str) {
        // The third `|` from the right ends the device.
        let mut cut = self.0.len();
        for _ in 0..3 {
            cut = self.0[..cut].rfind('|').unwrap_or(0);
        }
        let (head, params) = (&self.0[..cut], self.0.get(cut + 1..).unwrap_or_default());
        let (action, device) = head.split_once('|').unwrap_or((head, ""));
        let tenant_end = action.rfind('/').map_or(0, |i| i + 1);
        let (tenant, action) = action.split_at(tenant_end);
        (tenant, action, device, params)
    }

    /// The key the same row would have if it named `machine_id` by its id:
    /// what the row does to which machine, whatever way it named it.
    pub fn on_machine(&self, machine_id: &str) -> RowKey {
        let (tenant, action, _, params) = self.parts();
        RowKey(format!("{tenant}{action}|id:{}|{params}", machine_id.trim().to_ascii_lowercase()))
    }

    /// The machine id, when the row names its device by id.
    pub fn machine_id(&self) -> Option<&str> {
        self.parts().2.strip_prefix("id:")
    }

    /// The action's CLI name.
    pub fn action(&self) -> &str {
        self.parts().1
    }
}

/// The settings of a run that change what its rows mean: recorded once at
/// the head of the journal and compared on `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    /// Version of the journal's format.
    pub version: u32,
    /// When the run (its first invocation) started, ISO-8601 UTC: the lower
    /// bound for looking up requests whose records were torn.
    pub started_at: String,
    /// `--action` (empty: none).
    pub action: String,
    /// `--comment` (empty: none).
    pub comment: String,
    /// `--isolation-type` (empty: none).
    pub isolation_type: String,
    /// `--sha1` (empty: none).
    pub sha1: String,
    /// `--scan-type` (empty: none).
    pub scan_type: String,
    /// The API's base URL (`simulated` for `--simulate`).
    pub api: String,
    /// The tenant the credentials act in.
    pub tenant: String,
    /// `apply`: the digest of the plan applied (empty: not an apply).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_digest: String,
    /// `apply`: who made the plan.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub planner: String,
    /// `apply`: who approved it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approver: String,
}

/// The journal format [`RunParams::version`] names.
pub const JOURNAL_VERSION: u32 = 2;

impl RunParams {
    /// The parameters of a run with these defaults, against `api` in `tenant`.
    pub fn new(defaults: &RowDefaults, api: &str, tenant: &str, started_at: String) -> RunParams {
        RunParams {
            version: JOURNAL_VERSION,
            started_at,
            action: defaults.action.map(|a| a.cli_name().to_string()).unwrap_or_default(),
            comment: defaults.comment.clone().unwrap_or_default(),
            isolation_type: defaults
                .isolation_type
                .map(|t| t.api_name().to_string())
                .unwrap_or_default(),
            sha1: defaults.sha1.as_deref().map(str::to_ascii_lowercase).unwrap_or_default(),
            scan_type: defaults.scan_type.map(|t| t.api_name().to_string()).unwrap_or_default(),
            api: api.trim_end_matches('/').to_ascii_lowercase(),
            tenant: tenant.to_ascii_lowercase(),
            plan_digest: String::new(),
            planner: String::new(),
            approver: String::new(),
        }
    }

    /// What differs between the journal's parameters (`self`) and this
    /// invocation's: the flag (or setting), the journal's value, the new one.
    pub fn differences(&self, now: &RunParams) -> Vec<(&'static str, String, String)> {
        let fields: [(&'static str, &String, &String); 8] = [
            ("--action", &self.action, &now.action),
            ("--comment", &self.comment, &now.comment),
            ("--isolation-type", &self.isolation_type, &now.isolation_type),
            ("--sha1", &self.sha1, &now.sha1),
            ("--scan-type", &self.scan_type, &now.scan_type),
            ("--api-url", &self.api, &now.api),
            ("the tenant (AZURE_TENANT_ID)", &self.tenant, &now.tenant),
            ("the plan applied (--digest)", &self.plan_digest, &now.plan_digest),
        ];
        fields
            .into_iter()
            // A ready token does not say its tenant: unknown is no difference.
            .filter(|(flag, a, b)| {
                a != b && !(flag.starts_with("the tenant") && (a.is_empty() || b.is_empty()))
            })
            .map(|(flag, a, b)| (flag, a.clone(), b.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::action::{ActionKind, IsolationType};

    fn plan(target: Target, action: ActionKind) -> RowPlan {
        RowPlan::sample(7, target, action)
    }

    #[test]
    fn a_key_names_the_device_the_action_and_its_parameters_not_the_line() {
        let a = plan(Target::Name(" Host01.Contoso.com ".into()), ActionKind::Isolate);
        let mut b = plan(Target::Name("host01.contoso.com".into()), ActionKind::Isolate);
        b.line = 900;
        b.comment = "another comment".into();
        assert_eq!(RowKey::of(&a), RowKey::of(&b));
        b.isolation_type = Some(IsolationType::Selective);
        assert_ne!(RowKey::of(&a), RowKey::of(&b));
        let id = plan(Target::Id("ab".repeat(20)), ActionKind::Isolate);
        let ip = plan(Target::Ip("10.0.0.1".into()), ActionKind::Isolate);
        let release = plan(Target::Id("ab".repeat(20)), ActionKind::Unisolate);
        let keys = [RowKey::of(&a), RowKey::of(&id), RowKey::of(&ip), RowKey::of(&release)];
        for (i, k) in keys.iter().enumerate() {
            for other in &keys[i + 1..] {
                assert_ne!(k, other);
            }
        }
        assert_eq!(RowKey::of(&id).as_str(), format!("isolate|id:{}|||", "ab".repeat(20)));
    }

    #[test]
    fn a_key_on_its_machine_is_the_key_of_the_same_row_by_id() {
        let mut by_name =
            plan(Target::Name("we|ird|host".into()), ActionKind::StopAndQuarantineFile);
        by_name.sha1 = Some("A".repeat(40));
        let mut by_id = plan(Target::Id("cd".repeat(20)), ActionKind::StopAndQuarantineFile);
        by_id.sha1 = Some("a".repeat(40));
        let (name_key, id_key) = (RowKey::of(&by_name), RowKey::of(&by_id));
        assert_eq!(name_key.on_machine(&"CD".repeat(20)), id_key);
        assert_eq!(id_key.on_machine(&"cd".repeat(20)), id_key);
        assert_eq!(id_key.machine_id(), Some("cd".repeat(20).as_str()));
        assert_eq!(name_key.machine_id(), None);
        assert_eq!(name_key.action(), "stop-and-quarantine");
    }

    #[test]
    fn the_tenant_heads_the_key_so_one_device_in_two_tenants_is_two_rows() {
        let mut a = plan(Target::Id("ab".repeat(20)), ActionKind::Isolate);
        let mut b = a.clone();
        a.tenant = Some("Contoso".into());
        b.tenant = Some("fabrikam".into());
        let (ka, kb) = (RowKey::of(&a), RowKey::of(&b));
        assert_ne!(ka, kb);
        assert_eq!(ka.as_str(), format!("contoso/isolate|id:{}|||", "ab".repeat(20)));
        assert_eq!(ka.action(), "isolate");
        assert_eq!(ka.machine_id(), Some("ab".repeat(20).as_str()));
        let mut by_name = plan(Target::Name("a/b|c".into()), ActionKind::Isolate);
        by_name.tenant = Some("contoso".into());
        assert_eq!(RowKey::of(&by_name).on_machine(&"AB".repeat(20)), ka);
        assert_eq!(RowKey::of(&by_name).action(), "isolate");
        // Without a tenant the key is as it always was.
        a.tenant = None;
        assert_eq!(RowKey::of(&a).as_str(), format!("isolate|id:{}|||", "ab".repeat(20)));
    }

    #[test]
    fn differences_name_each_changed_setting_with_both_values() {
        let defaults = RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("IR-7".into()),
            ..RowDefaults::default()
        };
        let old = RunParams::new(&defaults, "http://127.0.0.1:1/", "T1", "t0".into());
        let same = RunParams::new(&defaults, "HTTP://127.0.0.1:1", "t1", "t1".into());
        assert!(old.differences(&same).is_empty());
        let changed = RowDefaults {
            action: Some(ActionKind::Unisolate),
            comment: Some("IR-8".into()),
            ..RowDefaults::default()
        };
        let new = RunParams::new(&changed, "http://127.0.0.1:2", "t1", "t1".into());
        let diffs = old.differences(&new);
        let flags: Vec<&str> = diffs.iter().map(|d| d.0).collect();
        assert_eq!(flags, ["--action", "--comment", "--api-url"]);
        assert_eq!(diffs[0], ("--action", "isolate".to_string(), "unisolate".to_string()));
    }
}
