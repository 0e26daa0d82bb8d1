//! Column names and what they mean: the aliases people use for each role
//! (`MachineId`, `DeviceId`, `computerDnsName`, ...), the user's own choices
//! over them (`--column ROLE=HEADER`, `--ignore-column HEADER`), which input
//! columns are carried through to the results, and whether the input is
//! itself a results file. Every name is compared through [`fold_name`].
//!
//! Beside the English names, the headers of the localized exports
//! responders hand over are aliases: German (`Gerätename`, `Kommentar`,
//! `Geräte-ID`, `Aktion`, `IP-Adresse`), French (`Nom de l'appareil`,
//! `Commentaire`) and Spanish (`Nombre del dispositivo`, `Comentario`). An
//! Advanced Hunting `ActionType` is an event's type (`ProcessCreated`), not
//! the action to run, so it is no alias of [`Role::Action`].

use std::fmt;

use crate::api::action::fold_name;
use crate::results::RUNNER_COLUMNS;

/// What a column means to the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The MDE machine id (40 hex digits).
    MachineId,
    /// The device name (`computerDnsName`), resolved to an id before acting.
    DeviceName,
    /// The action to run on the row's device.
    Action,
    /// The `Comment` the API requires on every action.
    Comment,
    /// `IsolationType` of an isolate.
    IsolationType,
    /// The file hash of a stop-and-quarantine.
    Sha1,
    /// `ScanType` of an antivirus scan.
    ScanType,
    /// The row's status in a results file from an earlier run.
    Status,
    /// The Entra ID device id, resolved to a machine id (rows with neither
    /// a machine id nor a device name).
    AadDeviceId,
    /// The device's last IP address, matched against `lastIpAddress` (rows
    /// with nothing more precise).
    IpAddress,
    /// A device given by any of the above, told apart by its shape
    /// ([`super::plan::classify_device`]): the one column of a host list,
    /// or a `device` column.
    Device,
    /// The tenant the row acts in, by profile name or tenant id (a run
    /// over many tenants, `--tenants`).
    Tenant,
}

impl Role {
    /// Every role, in the order used for role tables.
    pub const ALL: [Role; 12] = [
        Role::MachineId,
        Role::DeviceName,
        Role::Action,
        Role::Comment,
        Role::IsolationType,
        Role::Sha1,
        Role::ScanType,
        Role::Status,
        Role::AadDeviceId,
        Role::IpAddress,
        Role::Device,
        Role::Tenant,
    ];

    /// The roles that name the device a row acts on, most precise first.
    pub const TARGETS: [Role; 5] =
        [Role::MachineId, Role::DeviceName, Role::Device, Role::AadDeviceId, Role::IpAddress];

    /// The preferred column name (the runner's own, where it has one).
    pub fn canonical(self) -> &'static str {
        self.aliases()[0]
    }

    /// The header names that take this role, as users write them; the first
    /// is [`Role::canonical`]. Matching folds case, spaces, `-` and `_`.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Role::MachineId => &[
                "machine_id",
                "DeviceId",
                "id",
                "mde_id",
                "mde_machine_id",
                "mde_device_id",
                "defender_id",
                "Geräte-ID",
                "Geraete-ID",
                "Computer-ID",
            ],
            Role::DeviceName => &[
                "device_name",
                "DeviceName",
                "computerDnsName",
                "computer_name",
                "computer",
                "hostname",
                "host",
                "host_name",
                "machine_name",
                "dns_name",
                "fqdn",
                "name",
                "Gerätename",
                "Geraetename",
                "Computername",
                "Hostname (FQDN)",
                "Nom de l'appareil",
                "Nombre del dispositivo",
            ],
            Role::Action => &["action", "Aktion"],
            Role::Comment => &[
                "comment",
                "requestor_comment",
                "requestorComment",
                "Kommentar",
                "Bemerkung",
                "Commentaire",
                "Comentario",
            ],
            Role::IsolationType => &["isolation_type", "isolation"],
            Role::Sha1 => &["sha1", "file_sha1", "sha1_hash"],
            Role::ScanType => &["scan_type"],
            Role::Status => &["status"],
            Role::AadDeviceId => {
                &["aad_device_id", "aadDeviceId", "entra_device_id", "azure_ad_device_id"]
            }
            Role::IpAddress => {
                &["ip", "ip_address", "lastIpAddress", "last_ip_address", "IP-Adresse"]
            }
            Role::Device => &["device"],
            Role::Tenant => &[
                "tenant",
                "tenant_id",
                "tenant_name",
                "customer",
                "customer_tenant",
                "client_tenant",
                "Mandant",
            ],
        }
    }

    /// The role a header name takes, if any.
    pub fn for_header(name: &str) -> Option<Role> {
        let folded = fold_name(name);
        Role::ALL.into_iter().find(|r| r.aliases().iter().any(|a| fold_name(a) == folded))
    }

    /// Position in [`Role::ALL`], for per-role tables.
    fn index(self) -> usize {
        self as usize
    }
}

/// Error for a `--column` value that is not `ROLE=HEADER` with a known role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not ROLE=HEADER with ROLE one of machine_id, device_name, device, aad_device_id, ip, action, comment, isolation_type, sha1, scan_type, tenant (e.g. --column machine_id=\"Device Id\")"
)]
pub struct BadColumnChoice(pub String);

/// One `--column ROLE=HEADER`: the column named HEADER takes ROLE, and no
/// other column does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAssignment {
    /// The role given.
    pub role: Role,
    /// The header name as the user typed it.
    pub header: String,
}

impl std::str::FromStr for ColumnAssignment {
    type Err = BadColumnChoice;

    /// `ROLE=HEADER`; the role by any of its names (`machine_id`,
    /// `DeviceId`, ...), the header exactly as in the file (matched first
    /// verbatim, then folded).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadColumnChoice(s.to_string());
        let (role, header) = s.split_once('=').ok_or_else(bad)?;
        let role = Role::for_header(role).filter(|r| *r != Role::Status).ok_or_else(bad)?;
        if header.trim().is_empty() {
            return Err(bad());
        }
        Ok(ColumnAssignment { role, header: header.to_string() })
    }
}

/// The user's choices over the aliases: `--column` and `--ignore-column`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnChoices {
    /// `--column ROLE=HEADER`, in flag order (a later one for the same role
    /// wins).
    pub assigned: Vec<ColumnAssignment>,
    /// `--ignore-column HEADER`: columns that take no role (they are still
    /// carried to the results, as every user column is).
    pub ignored: Vec<String>,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical())
    }
}

/// The columns of an input: their names in order, the role each plays, and
/// which of them are carried through to the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Every column name, in input order (CSV header, or JSONL keys in
    /// first-seen order).
    names: Vec<String>,
    /// Indexes of the columns carried through to the results.
    user: Vec<usize>,
    /// Names of those columns, so callers can borrow them as one slice.
    user_names: Vec<String>,
    /// Per role (indexed like [`Role::ALL`]), the columns that take it, the
    /// preferred first: the one spelled like the canonical name, then the
    /// others in input order.
    roles: Vec<Vec<usize>>,
    /// The header has the runner's `line` and `status`: a results file.
    results_file: bool,
    /// In a results file, the runner's `device_name` column: a record of the
    /// name the API gave, not a device name to check beside the row's id, so
    /// it takes no role; it names the device only of a row with no machine
    /// id ([`Columns::recorded_name`]).
    recorded_name: Option<usize>,
    /// Which runner column each column is, for reading a results file's
    /// rows back without folding a name per row.
    runner: crate::results::RunnerColumns,
}

impl Columns {
    /// Classifies a list of column names.
    pub fn new(names: Vec<String>) -> Columns {
        let runner: Vec<String> = RUNNER_COLUMNS.iter().map(|c| fold_name(c)).collect();
        let folded: Vec<String> = names.iter().map(|n| fold_name(n)).collect();
        let user: Vec<usize> = (0..names.len()).filter(|&i| !runner.contains(&folded[i])).collect();
        let user_names = user.iter().map(|&i| names[i].clone()).collect();
        let mut roles = vec![Vec::new(); Role::ALL.len()];
        for (i, name) in names.iter().enumerate() {
            if let Some(role) = Role::for_header(name) {
                roles[role.index()].push(i);
            }
        }
        for role in Role::ALL {
            let canonical = fold_name(role.canonical());
            // Stable sort: canonical spellings first, input order otherwise.
            roles[role.index()].sort_by_key(|&i| folded[i] != canonical);
        }
        let has = |c: &str| folded.iter().any(|f| *f == fold_name(c));
        let results_file = has("line") && has("status");
        let recorded_name = results_file
            .then(|| {
                let device_name = fold_name(RECORDED_NAME);
                names
                    .iter()
                    .position(|n| n == RECORDED_NAME)
                    .or_else(|| folded.iter().rposition(|f| *f == device_name))
            })
            .flatten();
        if let Some(i) = recorded_name {
            roles[Role::DeviceName.index()].retain(|&c| c != i);
        }
        let runner = crate::results::RunnerColumns::of(names.iter().map(String::as_str));
        Columns { names, user, user_names, roles, results_file, recorded_name, runner }
    }

    /// Classifies a list of column names, then applies the user's choices:
    /// an ignored column takes no role, an assigned one takes its role
    /// alone. A choice naming a column the header lacks is an error: the
    /// flag as the user wrote it and the header name.
    pub fn with_choices(
        names: Vec<String>,
        choices: &ColumnChoices,
    ) -> Result<Columns, (String, String)> {
        let mut columns = Columns::new(names);
        let find = |names: &[String], header: &str| {
            names.iter().position(|n| n == header).or_else(|| {
                let folded = fold_name(header);
                names.iter().position(|n| fold_name(n) == folded)
            })
        };
        for header in &choices.ignored {
            let i = find(&columns.names, header)
                .ok_or_else(|| (format!("--ignore-column {header}"), header.clone()))?;
            columns.roles.iter_mut().for_each(|r| r.retain(|&c| c != i));
        }
        for a in &choices.assigned {
            let i = find(&columns.names, &a.header).ok_or_else(|| {
                (format!("--column {}={}", a.role.canonical(), a.header), a.header.clone())
            })?;
            columns.roles.iter_mut().for_each(|r| r.retain(|&c| c != i));
            columns.roles[a.role.index()] = vec![i];
        }
        Ok(columns)
    }

    /// Every column name, in input order; [`Record::values`](super::Record)
    /// are aligned with it.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many columns there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there is no column at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The columns carried through to the results: every input column except
    /// those named like a runner column (`line`, `machine_id`, `action`,
    /// `status`, ...), which the runner's own replace.
    pub fn user_columns(&self) -> &[String] {
        &self.user_names
    }

    /// The values of [`Columns::user_columns`] out of a record's values.
    pub fn user_values(&self, values: &[String]) -> Vec<String> {
        self.user.iter().map(|&i| values.get(i).cloned().unwrap_or_default()).collect()
    }

    /// True when some column takes `role`.
    pub fn has(&self, role: Role) -> bool {
        !self.roles[role.index()].is_empty()
    }

    /// The columns that take `role`, preferred first.
    pub fn role_columns(&self, role: Role) -> &[usize] {
        &self.roles[role.index()]
    }

    /// The name of the preferred column for `role`, if any.
    pub fn role_name(&self, role: Role) -> Option<&str> {
        self.roles[role.index()].first().map(|&i| self.names[i].as_str())
    }

    /// The row's value for `role` with the name of the column it came from:
    /// the first non-blank cell among the role's columns, preferred first,
    /// trimmed. `None` when every such cell is blank (meaning "use the
    /// default").
    pub fn cell<'c, 'v>(&'c self, role: Role, values: &'v [String]) -> Option<(&'c str, &'v str)> {
        self.roles[role.index()].iter().find_map(|&i| {
            let v = values.get(i)?.trim();
            (!v.is_empty()).then(|| (self.names[i].as_str(), v))
        })
    }

    /// The runner's columns of a row of this header (a results file's).
    pub fn runner_row(
        &self,
        values: &[String],
    ) -> Result<crate::results::ResultRow, Vec<crate::results::FieldError>> {
        self.runner
            .parse(self.names.iter().map(String::as_str).zip(values.iter().map(String::as_str)))
    }

    /// True when the header carries the runner's `line` and `status`
    /// columns: a results file from an earlier run.
    pub fn is_results_file(&self) -> bool {
        self.results_file
    }

    /// A results file's recorded `device_name` of a row, trimmed, when not
    /// blank: the name the API gave the machine, or the name the row gave
    /// when the API never matched it.
    pub fn recorded_name<'v>(&self, values: &'v [String]) -> Option<&'v str> {
        let v = values.get(self.recorded_name?)?.trim();
        (!v.is_empty()).then_some(v)
    }
}

/// The runner's column that records the device name of a row.
const RECORDED_NAME: &str = "device_name";

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Columns {
        Columns::new(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn aliases_are_unambiguous() {
        // Several spellings of one role may fold alike (they are listed for
        // the error message); across roles they must not.
        let mut seen = std::collections::HashMap::new();
        for role in Role::ALL {
            for a in role.aliases() {
                if let Some(other) = seen.insert(fold_name(a), role) {
                    assert_eq!(other, role, "{a} is an alias of both {other} and {role}");
                }
            }
            assert_eq!(Role::for_header(role.canonical()), Some(role));
        }
    }

    #[test]
    fn header_aliases_map_to_roles_whatever_the_spelling() {
        for (h, r) in [
            ("machine_id", Role::MachineId),
            ("MachineId", Role::MachineId),
            ("Machine ID", Role::MachineId),
            ("machine-id", Role::MachineId),
            ("DeviceId", Role::MachineId),
            ("ID", Role::MachineId),
            ("mde_id", Role::MachineId),
            ("DeviceName", Role::DeviceName),
            ("computerDnsName", Role::DeviceName),
            ("Computer Name", Role::DeviceName),
            ("HOSTNAME", Role::DeviceName),
            ("host", Role::DeviceName),
            ("Name", Role::DeviceName),
            ("Action", Role::Action),
            ("Comment", Role::Comment),
            ("Isolation Type", Role::IsolationType),
            ("SHA1", Role::Sha1),
            ("scanType", Role::ScanType),
            ("Status", Role::Status),
            ("aadDeviceId", Role::AadDeviceId),
            ("lastIpAddress", Role::IpAddress),
            ("IP", Role::IpAddress),
        ] {
            assert_eq!(Role::for_header(h), Some(r), "{h}");
        }
        assert_eq!(Role::for_header("owner"), None);
        assert_eq!(Role::for_header(""), None);
        // An Advanced Hunting event's ActionType is not the action to run.
        assert_eq!(Role::for_header("ActionType"), None);
        for (h, r) in [
            ("Gerätename", Role::DeviceName),
            ("Kommentar", Role::Comment),
            ("Geräte-ID", Role::MachineId),
            ("IP-Adresse", Role::IpAddress),
            ("Commentaire", Role::Comment),
            ("device", Role::Device),
        ] {
            assert_eq!(Role::for_header(h), Some(r), "{h}");
        }
    }

    #[test]
    fn the_runner_spelling_wins_else_the_first_column() {
        let c = cols(&["DeviceId", "owner", "machine_id", "hostname", "host"]);
        assert_eq!(c.role_name(Role::MachineId), Some("machine_id"));
        assert_eq!(c.role_columns(Role::MachineId), &[2, 0]);
        assert_eq!(c.role_name(Role::DeviceName), Some("hostname"));
        assert_eq!(c.role_columns(Role::DeviceName), &[3, 4]);
        let c = cols(&["hostname", "DeviceName"]);
        assert_eq!(c.role_name(Role::DeviceName), Some("DeviceName"));
        let c = cols(&["host", "device_name"]);
        assert_eq!(c.role_name(Role::DeviceName), Some("device_name"));
    }

    #[test]
    fn a_blank_preferred_cell_falls_back_to_the_next_column_of_the_role() {
        let c = cols(&["DeviceId", "machine_id"]);
        let v = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        assert_eq!(c.cell(Role::MachineId, &v("aa", " bb ")), Some(("machine_id", "bb")));
        assert_eq!(c.cell(Role::MachineId, &v("aa", "  ")), Some(("DeviceId", "aa")));
        assert_eq!(c.cell(Role::MachineId, &v("", "")), None);
        assert_eq!(c.cell(Role::Comment, &v("aa", "bb")), None);
    }

    #[test]
    fn column_choices_override_the_aliases() {
        let names: Vec<String> =
            ["DeviceId", "Device Id", "Kommentar", "Notiz", "DeviceName"].map(String::from).into();
        let choices = ColumnChoices {
            assigned: vec![
                "machine_id=Device Id".parse().unwrap(),
                "comment=notiz".parse().unwrap(),
            ],
            ignored: vec!["DeviceName".into()],
        };
        let c = Columns::with_choices(names.clone(), &choices).unwrap();
        assert_eq!(c.role_columns(Role::MachineId), &[1]);
        assert_eq!(c.role_columns(Role::Comment), &[3]);
        assert!(!c.has(Role::DeviceName));
        // Every column is still carried to the results, but DeviceName,
        // which the runner's device_name replaces.
        assert_eq!(c.user_columns(), &names[..4]);
        let missing = ColumnChoices { ignored: vec!["Owner".into()], ..ColumnChoices::default() };
        assert_eq!(
            Columns::with_choices(names, &missing).unwrap_err(),
            ("--ignore-column Owner".to_string(), "Owner".to_string())
        );
        for bad in ["machine_id", "nope=x", "status=x", "comment=", "=x"] {
            assert!(bad.parse::<ColumnAssignment>().is_err(), "{bad}");
        }
        let e = "nope=x".parse::<ColumnAssignment>().unwrap_err();
        assert!(e.to_string().contains("ROLE one of machine_id"), "{e}");
    }

    #[test]
    fn runner_columns_are_not_user_columns_and_mark_results_files() {
        let c =
            cols(&["owner", "MachineId", "DeviceId", "Line", "ticket", "status", "error message"]);
        assert_eq!(c.user_columns(), &["owner", "DeviceId", "ticket"]);
        assert!(c.is_results_file());
        let values: Vec<String> = (0..7).map(|i| i.to_string()).collect();
        assert_eq!(c.user_values(&values), ["0", "2", "4"]);
        assert!(!cols(&["owner", "status"]).is_results_file());
        // A results file's device_name is a record, not a name to check
        // beside the id; a plain input's device_name is a name like any.
        let c = cols(&["hostname", "line", "machine_id", "device_name", "status"]);
        assert_eq!(c.user_columns(), &["hostname"]);
        assert_eq!(c.role_columns(Role::DeviceName), &[0]);
        let v: Vec<String> = ["h", "2", "", " host-1 ", "not_found"].map(String::from).into();
        assert_eq!(c.recorded_name(&v), Some("host-1"));
        let c = cols(&["DeviceName", "comment"]);
        assert_eq!(c.user_columns(), &["comment"], "DeviceName folds like device_name");
        assert_eq!(c.role_columns(Role::DeviceName), &[0]);
        assert_eq!(c.recorded_name(&["x".into(), "y".into()]), None);
        assert!(!cols(&["line", "hostname"]).is_results_file());
        assert!(cols(&[]).is_empty());
    }
}
