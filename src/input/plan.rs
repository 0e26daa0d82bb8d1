//! Row validation: turning one record into what the runner will send
//! ([`RowPlan`]), or into every problem the row has ([`RowProblem`]).
//!
//! Per-row columns override the defaults from the flags; a blank cell means
//! "use the default". A parameter cell given for an action that does not
//! take it (a `SHA1` of an Advanced Hunting export on an isolate row) is not
//! sent: it stays in the results as the user's own column, and the input
//! warns once per such column ([`super::Input::column_warnings`]). Defaults from flags
//! apply only to the actions that take them, so one `--isolation-type`
//! serves a file that mixes isolate and unisolate rows. A scan row with no
//! scan type runs a Quick scan.
//!
//! Cells that are sent are bounded before anything is sent: a `Comment` of
//! at most [`MAX_COMMENT_CHARS`] characters, a device name of at most
//! [`MAX_NAME_CHARS`], an action or parameter word of at most
//! [`MAX_WORD_CHARS`]; machine ids, Sha1s, GUIDs and IP addresses are bounded
//! by their formats. A longer cell makes the row invalid (naming the line,
//! the column and an excerpt of the value) instead of a request the service
//! refuses, or a look-up filter megabytes long. The user's own columns are
//! never sent and are carried to the results whatever their size.

use std::fmt;
use std::net::IpAddr;

use super::columns::{Columns, Role};
use super::record::Record;
use super::tenant::TenantNames;
use crate::api::action::{ActionKind, IsolationType, ScanType, is_machine_id, is_sha1};
use crate::results::{ResultRow, Status};

/// Values from the command-line flags that apply to every row whose own cell
/// is blank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowDefaults {
    /// `--action`.
    pub action: Option<ActionKind>,
    /// `--comment`.
    pub comment: Option<String>,
    /// `--isolation-type` (isolate rows only).
    pub isolation_type: Option<IsolationType>,
    /// `--sha1` (stop-and-quarantine rows only).
    pub sha1: Option<String>,
    /// `--scan-type` (scan rows only).
    pub scan_type: Option<ScanType>,
    /// `--tenants`: the tenants rows may act in (each row names one), and
    /// which of them this run keeps. `None`: the one tenant of the
    /// credentials, and an input may not have a tenant column.
    pub tenants: Option<TenantNames>,
}

/// The device a row acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// An MDE machine id, lowercased.
    Id(String),
    /// A device name as given (trimmed), to be resolved to an id.
    Name(String),
    /// An Entra ID device id (a GUID, lowercased), to be resolved to an id;
    /// used when the row has neither a machine id nor a device name.
    AadDeviceId(String),
    /// An IP address (normalised), matched against the machines'
    /// `lastIpAddress`; used when the row has nothing more precise.
    Ip(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Id(s) | Target::Name(s) | Target::AadDeviceId(s) | Target::Ip(s) => {
                f.write_str(s)
            }
        }
    }
}

/// A valid row: everything needed to send its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    /// Physical line where the record starts (the results file's `line`).
    pub line: u64,
    /// The device.
    pub target: Target,
    /// The action.
    pub action: ActionKind,
    /// The `Comment` to send (never blank).
    pub comment: String,
    /// `IsolationType` for isolate rows that set one (the API defaults to Full).
    pub isolation_type: Option<IsolationType>,
    /// The Sha1 of a stop-and-quarantine row, lowercased.
    pub sha1: Option<String>,
    /// `ScanType` of a scan row (Quick when the row and the flags say nothing).
    pub scan_type: Option<ScanType>,
    /// The `status` column of a results file being replayed (for `--only`).
    pub previous_status: Option<Status>,
    /// The runner's columns of a results file being replayed or resumed:
    /// the earlier action id, request time and so on.
    pub previous: Option<ResultRow>,
    /// The device name a row gives beside its machine id (an Advanced
    /// Hunting export's `DeviceId` and `DeviceName`): the id is acted on,
    /// and only after the tenant confirms it is that machine, so a row whose
    /// two cells name different devices never acts on either.
    pub named: Option<String>,
    /// The device name the row itself gives: its name target, the name
    /// beside its id, or a results file's recorded `device_name`. The
    /// results carry it as `device_name` when the API never names the
    /// machine (a name not found, a row settled before its look-up).
    pub given_name: Option<String>,
    /// The tenant profile the row acts in (`--tenants`); `None` in a run
    /// over the one tenant of the credentials.
    pub tenant: Option<String>,
}

/// The longest `Comment` sent, in characters. Microsoft documents no limit
/// for the machine actions' `Comment` (the pages only mark it required), so
/// this is our own cap: far above any ticket reference and sentence a
/// responder writes, far below a size a service refuses (an 11 MB comment
/// gets 413), and the classic bound of a text column (`nvarchar(4000)`).
pub const MAX_COMMENT_CHARS: usize = 4000;

/// The longest device name looked up, in characters: a DNS name is at most
/// 253 (RFC 1035), so a longer cell is not a name, and would otherwise go
/// whole into a look-up filter.
pub const MAX_NAME_CHARS: usize = 255;

/// The longest action, isolation type or scan type cell parsed, in
/// characters: every accepted spelling is far shorter.
pub const MAX_WORD_CHARS: usize = 64;

impl RowPlan {
    /// A plan of `line` for `action` on `target`, with a comment and no
    /// parameters: what tests of the rooms above build their rows from.
    #[cfg(test)]
    pub(crate) fn sample(line: u64, target: Target, action: ActionKind) -> RowPlan {
        RowPlan {
            line,
            target,
            action,
            comment: "c".into(),
            isolation_type: None,
            sha1: None,
            scan_type: None,
            previous_status: None,
            previous: None,
            named: None,
            given_name: None,
            tenant: None,
        }
    }
}

pub use super::record::RowProblem;

/// The parameter columns and the one action each applies to.
pub(crate) const PARAMETERS: [(Role, ActionKind); 3] = [
    (Role::IsolationType, ActionKind::Isolate),
    (Role::Sha1, ActionKind::StopAndQuarantineFile),
    (Role::ScanType, ActionKind::RunAntiVirusScan),
];

/// The device a bare value names, judged by its shape: the one place a value
/// that is not in a column of its own kind (a line of a host list, a
/// `device` column) is classified. 40 (or 32) hex digits are a machine id, a
/// GUID an Entra device id, an IPv4 or IPv6 address an IP, anything else a
/// device name.
pub fn classify_device(value: &str) -> Result<Target, String> {
    if is_machine_id(value) {
        Ok(Target::Id(value.to_ascii_lowercase()))
    } else if is_guid(value) {
        Ok(Target::AadDeviceId(value.to_ascii_lowercase()))
    } else if let Ok(ip) = value.parse::<IpAddr>() {
        Ok(Target::Ip(ip.to_string()))
    } else {
        device_name(value)
    }
}

/// A device name, bounded.
fn device_name(name: &str) -> Result<Target, String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        Err(format!(
            "a device name is at most {MAX_NAME_CHARS} characters (a DNS name is at most 253); this cell has {chars}"
        ))
    } else {
        Ok(Target::Name(name.to_string()))
    }
}

/// Validates one record against the columns and the defaults. Every problem
/// of the row is returned, not just the first, starting with those found
/// while reading it (field count, nested JSON).
pub fn plan_row(
    record: &Record,
    columns: &Columns,
    defaults: &RowDefaults,
) -> Result<RowPlan, Vec<RowProblem>> {
    let mut problems = record.problems.clone();
    let line = record.line;
    let values = &record.values;
    let cell = |role| columns.cell(role, values);
    let label = |role: Role| columns.role_name(role).unwrap_or(role.canonical()).to_string();
    let mut bad = |column: &str, value: &str, why: String| {
        problems.push(RowProblem {
            line,
            column: column.to_string(),
            value: value.to_string(),
            why,
        })
    };

    let mut named = None;
    let target = match (cell(Role::MachineId), cell(Role::DeviceName)) {
        (Some((column, id)), name) => {
            if let Some((name_column, name)) = name {
                match device_name(name) {
                    Ok(_) => named = Some(name.to_string()),
                    Err(why) => bad(name_column, name, why),
                }
            }
            if is_machine_id(id) {
                Some(Target::Id(id.to_ascii_lowercase()))
            } else {
                bad(
                    column,
                    id,
                    "a machine id is 40 hex digits (MDE's device id); put device names in a device_name column"
                        .into(),
                );
                None
            }
        }
        (None, Some((column, name))) => {
            device_name(name).map_err(|why| bad(column, name, why)).ok()
        }
        (None, None) if cell(Role::Device).is_some() => {
            let (column, value) = cell(Role::Device).unwrap_or_default();
            classify_device(value).map_err(|why| bad(column, value, why)).ok()
        }
        // A results file's row that never matched a machine: the name it
        // gave then, recorded in the runner's device_name.
        (None, None) if columns.recorded_name(values).is_some() => {
            let name = columns.recorded_name(values).unwrap_or_default();
            device_name(name).map_err(|why| bad("device_name", name, why)).ok()
        }
        (None, None) => match (cell(Role::AadDeviceId), cell(Role::IpAddress)) {
            (Some((column, aad)), _) => {
                if is_guid(aad) {
                    Some(Target::AadDeviceId(aad.to_ascii_lowercase()))
                } else {
                    bad(column, aad, "an aadDeviceId is a GUID (8-4-4-4-12 hex digits)".into());
                    None
                }
            }
            (None, Some((column, ip))) => match ip.parse::<IpAddr>() {
                Ok(ip) => Some(Target::Ip(ip.to_string())),
                Err(_) => {
                    bad(column, ip, "not an IPv4 or IPv6 address".into());
                    None
                }
            },
            (None, None) => {
                let column = Role::TARGETS
                    .into_iter()
                    .find_map(|r| columns.role_name(r))
                    .unwrap_or(Role::MachineId.canonical());
                bad(
                    column,
                    "",
                    "the row has neither a machine id nor a device name (nor an aadDeviceId or IP address)"
                        .into(),
                );
                None
            }
        },
    };

    let action = match cell(Role::Action) {
        Some((column, value)) if value.chars().count() > MAX_WORD_CHARS => {
            bad(column, value, too_long("an action"));
            None
        }
        Some((column, value)) => match value.parse::<ActionKind>() {
            Ok(a) => Some(a),
            Err(e) => {
                bad(column, value, e.to_string());
                None
            }
        },
        None if defaults.action.is_some() => defaults.action,
        None => {
            bad(&label(Role::Action), "", "the row has no action and there is no --action".into());
            None
        }
    };

    let comment = match cell(Role::Comment) {
        Some((column, c)) if c.chars().count() > MAX_COMMENT_CHARS => {
            bad(
                column,
                c,
                format!(
                    "the comment is {} characters; mdebulk sends at most {MAX_COMMENT_CHARS}",
                    c.chars().count()
                ),
            );
            None
        }
        Some((_, c)) => Some(c.to_string()),
        None => match defaults.comment.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => Some(c.to_string()),
            _ => {
                bad(
                    &label(Role::Comment),
                    "",
                    "the comment is empty and there is no --comment; the API requires a Comment"
                        .into(),
                );
                None
            }
        },
    };

    let isolation_type = match parameter(
        cell(Role::IsolationType),
        ActionKind::Isolate,
        action,
        |v| v.parse::<IsolationType>(),
        &mut bad,
    ) {
        Param::Given(t) => Some(t),
        Param::Blank if action == Some(ActionKind::Isolate) => defaults.isolation_type,
        _ => None,
    };

    let sha1 = match parameter(
        cell(Role::Sha1),
        ActionKind::StopAndQuarantineFile,
        action,
        parse_sha1,
        &mut bad,
    ) {
        Param::Given(s) => Some(s),
        Param::Blank if action == Some(ActionKind::StopAndQuarantineFile) => {
            match defaults.sha1.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                Some(d) => parse_sha1(d).map_err(|why| bad("--sha1", d, why)).ok(),
                None => {
                    bad(
                        &label(Role::Sha1),
                        "",
                        "stop-and-quarantine needs the file's Sha1 (a sha1 column or --sha1)"
                            .into(),
                    );
                    None
                }
            }
        }
        _ => None,
    };

    let scan_type = match parameter(
        cell(Role::ScanType),
        ActionKind::RunAntiVirusScan,
        action,
        |v| v.parse::<ScanType>(),
        &mut bad,
    ) {
        Param::Given(t) => Some(t),
        Param::Blank if action == Some(ActionKind::RunAntiVirusScan) => {
            Some(defaults.scan_type.unwrap_or(ScanType::Quick))
        }
        _ => None,
    };

    let previous = if columns.is_results_file() {
        match columns.runner_row(values) {
            Ok(row) => Some(row),
            Err(errors) => {
                for e in errors {
                    bad(&e.column, &e.value, e.why);
                }
                None
            }
        }
    } else {
        None
    };

    let tenant = match &defaults.tenants {
        None => None,
        Some(tenants) => {
            let cell = cell(Role::Tenant);
            match tenants.of_cell(cell.map(|(_, v)| v)) {
                Ok(t) => Some(t.to_string()),
                Err(why) => {
                    let (column, value) = cell.unwrap_or_default();
                    let column =
                        if column.is_empty() { label(Role::Tenant) } else { column.to_string() };
                    bad(&column, value, why);
                    None
                }
            }
        }
    };

    let given_name = match &target {
        Some(Target::Name(n)) => Some(n.clone()),
        _ => named.clone().or_else(|| columns.recorded_name(values).map(str::to_string)),
    };
    match (target, action, comment) {
        (Some(target), Some(action), Some(comment)) if problems.is_empty() => Ok(RowPlan {
            line,
            target,
            action,
            comment,
            isolation_type,
            sha1,
            scan_type,
            previous_status: previous.as_ref().and_then(|p| p.status),
            previous,
            named,
            given_name,
            tenant,
        }),
        _ => Err(problems),
    }
}

/// The tenant profile a record names, whether or not the rest of it is
/// valid (`None`: a run over one tenant, or a cell naming no profile):
/// which tenant's share of a run an invalid row belongs to.
pub fn row_tenant(record: &Record, columns: &Columns, defaults: &RowDefaults) -> Option<String> {
    let tenants = defaults.tenants.as_ref()?;
    let cell = columns.cell(Role::Tenant, &record.values).map(|(_, v)| v);
    tenants.of_cell(cell).ok().map(str::to_string)
}

/// What a row says about an action parameter.
enum Param<T> {
    /// The cell is blank (or there is no such column): use the default.
    Blank,
    /// A valid value for an action that takes it.
    Given(T),
    /// A bad value, or a value for an action that does not take it; the
    /// problem is already recorded.
    Refused,
}

/// Reads the parameter in `cell`, which only action `takes` accepts: left
/// unsent (as blank) when the row's action is another one, refused when the
/// value is too long or does not parse.
fn parameter<T>(
    cell: Option<(&str, &str)>,
    takes: ActionKind,
    action: Option<ActionKind>,
    parse: impl Fn(&str) -> Result<T, String>,
    bad: &mut impl FnMut(&str, &str, String),
) -> Param<T> {
    let Some((column, value)) = cell else { return Param::Blank };
    if action.is_some_and(|a| a != takes) {
        return Param::Blank;
    }
    let name = Role::for_header(column).map_or(column, |r| r.canonical());
    if value.chars().count() > MAX_WORD_CHARS {
        bad(column, value, too_long(name));
        return Param::Refused;
    }
    match parse(value) {
        Ok(v) => Param::Given(v),
        Err(why) => {
            bad(column, value, why);
            Param::Refused
        }
    }
}

/// The reason for a word cell over [`MAX_WORD_CHARS`]: not parsed, so
/// that no error quotes it whole.
fn too_long(what: &str) -> String {
    format!("too long for {what} (at most {MAX_WORD_CHARS} characters)")
}

/// True when `s` is a GUID in its usual text form (8-4-4-4-12 hex digits),
/// as Entra ID writes device ids.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Sha1 as the API takes it, lowercased.
fn parse_sha1(value: &str) -> Result<String, String> {
    if is_sha1(value) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err("Sha1 must be exactly 40 hex digits".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";
    const SHA: &str = "A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508";

    fn columns(names: &[&str]) -> Columns {
        Columns::new(names.iter().map(|s| s.to_string()).collect())
    }

    fn record(line: u64, values: &[&str]) -> Record {
        Record {
            line,
            values: values.iter().map(|s| s.to_string()).collect(),
            problems: Vec::new(),
        }
    }

    fn plan(
        names: &[&str],
        values: &[&str],
        defaults: &RowDefaults,
    ) -> Result<RowPlan, Vec<RowProblem>> {
        plan_row(&record(7, values), &columns(names), defaults)
    }

    /// (column, value, a piece of the reason) of each problem.
    fn problems(
        names: &[&str],
        values: &[&str],
        defaults: &RowDefaults,
    ) -> Vec<(String, String, String)> {
        let problems = plan(names, values, defaults).expect_err("row should be refused");
        assert!(problems.iter().all(|p| p.line == 7));
        problems.into_iter().map(|p| (p.column, p.value, p.why)).collect()
    }

    fn assert_problems(
        names: &[&str],
        values: &[&str],
        defaults: &RowDefaults,
        want: &[(&str, &str, &str)],
    ) {
        let got = problems(names, values, defaults);
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((c, v, why), (wc, wv, wwhy)) in got.iter().zip(want) {
            assert_eq!((c.as_str(), v.as_str()), (*wc, *wv), "{got:?}");
            assert!(why.contains(wwhy), "{why:?} should contain {wwhy:?}");
        }
    }

    fn isolate() -> RowDefaults {
        RowDefaults {
            action: Some(ActionKind::Isolate),
            comment: Some("IR-42".into()),
            ..RowDefaults::default()
        }
    }

    #[test]
    fn problems_display_with_line_column_and_value() {
        let p = RowProblem {
            line: 7,
            column: "sha1".into(),
            value: "abc".into(),
            why: "Sha1 must be exactly 40 hex digits".into(),
        };
        assert_eq!(
            p.to_string(),
            "line 7, column sha1: \"abc\": Sha1 must be exactly 40 hex digits"
        );
        let p = RowProblem {
            line: 3,
            column: String::new(),
            value: String::new(),
            why: "bad row".into(),
        };
        assert_eq!(p.to_string(), "line 3: bad row");
    }

    #[test]
    fn problems_quote_a_bounded_escaped_excerpt_of_values_names_and_reasons() {
        let big = format!("\x1b]0;pwned\x07{}", "A".repeat(11_000_000));
        let p = RowProblem {
            line: 2,
            column: "\x1b[2Jnote".into(),
            value: big.clone(),
            why: format!("unknown action {big:?}"),
        };
        let shown = p.to_string();
        assert!(shown.len() < 1024, "{} bytes", shown.len());
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(
            shown.starts_with("line 2, column \\x1b[2Jnote: \"\\x1b]0;pwned\\x07AAA"),
            "{shown}"
        );
        assert!(shown.contains("…(10999896 more bytes)"), "{shown}");
    }

    #[test]
    fn cells_that_are_sent_are_bounded() {
        let names = ["hostname", "action", "comment", "isolation_type"];
        let at_most = "c".repeat(MAX_COMMENT_CHARS);
        let p = plan(&names, &["h", "isolate", &at_most, ""], &isolate()).unwrap();
        assert_eq!(p.comment.chars().count(), MAX_COMMENT_CHARS);
        // Characters, not bytes: 4000 'é' are 8000 bytes and fine.
        let accents = "é".repeat(MAX_COMMENT_CHARS);
        assert!(plan(&names, &["h", "isolate", &accents, ""], &isolate()).is_ok());
        let over = format!("{at_most}c");
        assert_problems(
            &names,
            &["h", "isolate", &over, ""],
            &isolate(),
            &[("comment", &over, "the comment is 4001 characters; mdebulk sends at most 4000")],
        );
        let name = "n".repeat(MAX_NAME_CHARS + 1);
        assert_problems(
            &names,
            &[&name, "isolate", "c", ""],
            &isolate(),
            &[("hostname", &name, "a device name is at most 255 characters")],
        );
        assert!(plan(&names, &[&name[1..], "isolate", "c", ""], &isolate()).is_ok());
        let word = "x".repeat(MAX_WORD_CHARS + 1);
        for (i, column) in [(1, "action"), (3, "isolation_type")] {
            let mut values = ["h", "isolate", "c", ""];
            values[i] = &word;
            let got = problems(&names, &values, &isolate());
            assert_eq!((got[0].0.as_str(), got[0].1.as_str()), (column, word.as_str()));
            assert!(got[0].2.starts_with("too long for"), "{got:?}");
            assert!(!got[0].2.contains(&word), "the reason quotes the value: {got:?}");
        }
    }

    #[test]
    fn a_good_row_is_planned_with_ids_lowercased_and_names_trimmed() {
        let names = ["MachineId", "Action", "Comment", "Isolation Type", "owner"];
        let p = plan(
            &names,
            &[&ID.to_uppercase(), "Isolate", " IR-1 ", "selective", "ann"],
            &RowDefaults::default(),
        )
        .unwrap();
        assert_eq!(p.line, 7);
        assert_eq!(p.target, Target::Id(ID.into()));
        assert_eq!(p.action, ActionKind::Isolate);
        assert_eq!(p.comment, "IR-1");
        assert_eq!(p.isolation_type, Some(IsolationType::Selective));
        assert_eq!((p.sha1, p.scan_type, p.previous_status, p.previous), (None, None, None, None));
        let p = plan(&["hostname"], &["  host-1.contoso.test "], &isolate()).unwrap();
        assert_eq!(p.target, Target::Name("host-1.contoso.test".into()));
        assert_eq!(p.target.to_string(), "host-1.contoso.test");
        // A 32-digit id, as in one documentation example, is accepted too.
        let p = plan(&["id"], &[&ID[..32]], &isolate()).unwrap();
        assert_eq!(p.target, Target::Id(ID[..32].into()));
    }

    #[test]
    fn the_id_wins_over_the_name_and_a_bad_id_is_not_replaced_by_the_name() {
        let p = plan(&["DeviceName", "DeviceId"], &["host-1", ID], &isolate()).unwrap();
        assert_eq!(p.target, Target::Id(ID.into()));
        assert_problems(
            &["DeviceName", "DeviceId"],
            &["host-1", "host-1"],
            &isolate(),
            &[("DeviceId", "host-1", "a machine id is 40 hex digits")],
        );
        assert_problems(
            &["machine_id", "hostname"],
            &["", " "],
            &isolate(),
            &[("machine_id", "", "neither a machine id nor a device name")],
        );
    }

    #[test]
    fn an_aad_device_id_or_an_ip_is_a_target_when_nothing_more_precise_is_given() {
        const AAD: &str = "80FE68DB-7F05-4D3B-9BE5-3B8E1C6F4A21";
        let names = ["aadDeviceId", "ip"];
        let p = plan(&names, &[AAD, "10.0.0.1"], &isolate()).unwrap();
        assert_eq!(p.target, Target::AadDeviceId(AAD.to_ascii_lowercase()));
        let p = plan(&names, &["", " 10.0.0.1 "], &isolate()).unwrap();
        assert_eq!(p.target, Target::Ip("10.0.0.1".into()));
        let p = plan(&["ip_address"], &["FE80:0:0:0:0:0:0:1"], &isolate()).unwrap();
        assert_eq!(p.target, Target::Ip("fe80::1".into()));
        let p = plan(&["hostname", "aadDeviceId"], &["host-1", AAD], &isolate()).unwrap();
        assert_eq!(p.target, Target::Name("host-1".into()));
        assert_problems(
            &names,
            &["not-a-guid", "10.0.0.1"],
            &isolate(),
            &[("aadDeviceId", "not-a-guid", "GUID")],
        );
        assert_problems(&names, &["", "10.0.0.300"], &isolate(), &[("ip", "10.0.0.300", "IPv4")]);
        assert_problems(&names, &["", ""], &isolate(), &[("aadDeviceId", "", "aadDeviceId or IP")]);
    }

    #[test]
    fn per_row_cells_override_defaults_and_blank_cells_use_them() {
        let names = ["machine_id", "action", "comment"];
        let p = plan(&names, &[ID, "release", ""], &isolate()).unwrap();
        assert_eq!((p.action, p.comment.as_str()), (ActionKind::Unisolate, "IR-42"));
        let p = plan(&names, &[ID, "  ", "own comment"], &isolate()).unwrap();
        assert_eq!((p.action, p.comment.as_str()), (ActionKind::Isolate, "own comment"));
        // Defaults for parameters apply only to the actions that take them.
        let defaults = RowDefaults {
            isolation_type: Some(IsolationType::Full),
            sha1: Some(SHA.into()),
            scan_type: Some(ScanType::Full),
            ..isolate()
        };
        let p = plan(&names, &[ID, "unisolate", ""], &defaults).unwrap();
        assert_eq!((p.isolation_type, p.sha1, p.scan_type), (None, None, None));
        let p = plan(&names, &[ID, "isolate", ""], &defaults).unwrap();
        assert_eq!(
            (p.isolation_type, p.sha1.clone(), p.scan_type),
            (Some(IsolationType::Full), None, None)
        );
        let p = plan(&names, &[ID, "StopAndQuarantineFile", ""], &defaults).unwrap();
        assert_eq!(p.sha1, Some(SHA.to_ascii_lowercase()));
        let p = plan(&names, &[ID, "runAntiVirusScan", ""], &defaults).unwrap();
        assert_eq!(p.scan_type, Some(ScanType::Full));
    }

    #[test]
    fn action_problems() {
        let problems = problems(&["machine_id", "Action"], &[ID, "nuke"], &isolate());
        assert_eq!(problems.len(), 1);
        assert_eq!((problems[0].0.as_str(), problems[0].1.as_str()), ("Action", "nuke"));
        for accepted in
            ["isolate", "unisolate", "release", "stop-and-quarantine", "offboard", "scan"]
        {
            assert!(problems[0].2.contains(accepted), "{}", problems[0].2);
        }
        let no_action = RowDefaults { action: None, ..isolate() };
        assert_problems(
            &["machine_id", "action"],
            &[ID, ""],
            &no_action,
            &[("action", "", "no action and there is no --action")],
        );
        assert_problems(&["machine_id"], &[ID], &no_action, &[("action", "", "no --action")]);
    }

    #[test]
    fn comment_problems() {
        let no_comment = RowDefaults { comment: None, ..isolate() };
        assert_problems(
            &["machine_id", "Comment"],
            &[ID, "  "],
            &no_comment,
            &[("Comment", "", "requires a Comment")],
        );
        let blank = RowDefaults { comment: Some(" ".into()), ..isolate() };
        assert_problems(
            &["machine_id"],
            &[ID],
            &blank,
            &[("comment", "", "there is no --comment")],
        );
    }

    #[test]
    fn sha1_problems() {
        let names = ["machine_id", "action", "sha1"];
        assert_problems(
            &names,
            &[ID, "stop-and-quarantine", "abc"],
            &isolate(),
            &[("sha1", "abc", "Sha1 must be exactly 40 hex digits")],
        );
        assert_problems(
            &names,
            &[ID, "stop-and-quarantine", ""],
            &isolate(),
            &[("sha1", "", "needs the file's Sha1")],
        );
        assert_problems(
            &["machine_id", "action"],
            &[ID, "quarantine"],
            &isolate(),
            &[("sha1", "", "a sha1 column or --sha1")],
        );
        // A Sha1 on an isolate row is not sent (it stays a user column).
        let p = plan(&names, &[ID, "isolate", SHA], &isolate()).unwrap();
        assert_eq!((p.action, p.sha1), (ActionKind::Isolate, None));
        let p = plan(&names, &[ID, "isolate", "not-a-sha1"], &isolate()).unwrap();
        assert_eq!(p.sha1, None);
        let bad_default = RowDefaults { sha1: Some("xyz".into()), ..isolate() };
        assert_problems(
            &names,
            &[ID, "stop-and-quarantine", ""],
            &bad_default,
            &[("--sha1", "xyz", "40 hex digits")],
        );
        let p = plan(&names, &[ID, "stop-and-quarantine", SHA], &bad_default).unwrap();
        assert_eq!(p.sha1, Some(SHA.to_ascii_lowercase()));
    }

    #[test]
    fn isolation_type_problems() {
        let names = ["machine_id", "action", "IsolationType"];
        assert_problems(
            &names,
            &[ID, "isolate", "partial"],
            &isolate(),
            &[("IsolationType", "partial", "unknown isolation type")],
        );
        let p = plan(&names, &[ID, "unisolate", "full"], &isolate()).unwrap();
        assert_eq!(p.isolation_type, None);
        let p = plan(&names, &[ID, "isolate", "Unmanaged-Device"], &isolate()).unwrap();
        assert_eq!(p.isolation_type, Some(IsolationType::UnManagedDevice));
        let p = plan(&names, &[ID, "isolate", ""], &isolate()).unwrap();
        assert_eq!(p.isolation_type, None);
    }

    #[test]
    fn scan_type_problems_and_the_quick_default() {
        let names = ["machine_id", "action", "scan_type"];
        assert_problems(
            &names,
            &[ID, "scan", "slow"],
            &isolate(),
            &[("scan_type", "slow", "unknown scan type")],
        );
        let p = plan(&names, &[ID, "offboard", "full"], &isolate()).unwrap();
        assert_eq!(p.scan_type, None);
        let p = plan(&names, &[ID, "scan", ""], &isolate()).unwrap();
        assert_eq!(p.scan_type, Some(ScanType::Quick));
        let p = plan(&names, &[ID, "scan", "FULL"], &isolate()).unwrap();
        assert_eq!(p.scan_type, Some(ScanType::Full));
    }

    #[test]
    fn every_problem_of_a_row_is_listed_at_once() {
        let names = ["DeviceId", "action", "comment", "sha1", "scan_type", "isolation_type"];
        let no_comment = RowDefaults { comment: None, ..isolate() };
        assert_problems(
            &names,
            &["host-1", "isolate", "", "abc", "slow", "partial"],
            &no_comment,
            &[
                ("DeviceId", "host-1", "40 hex digits"),
                ("comment", "", "requires a Comment"),
                ("isolation_type", "partial", "unknown isolation type"),
            ],
        );
        // With an unknown action, parameters are still checked for format.
        assert_problems(
            &names,
            &[ID, "zap", "c", "abc", "", ""],
            &no_comment,
            &[("action", "zap", "unknown action"), ("sha1", "abc", "40 hex digits")],
        );
    }

    #[test]
    fn problems_found_while_reading_come_first() {
        let mut rec = record(9, &[ID]);
        let read = RowProblem {
            line: 9,
            column: "tags".into(),
            value: "[1]".into(),
            why: "nested".into(),
        };
        rec.problems.push(read.clone());
        let problems = plan_row(&rec, &columns(&["machine_id"]), &isolate()).unwrap_err();
        assert_eq!(problems, vec![read]);
    }

    #[test]
    fn a_results_row_carries_its_previous_outcome() {
        let names = [
            "owner",
            "line",
            "machine_id",
            "action",
            "status",
            "action_id",
            "http_status",
            "requested_at",
        ];
        let values =
            ["ann", "4", ID, "isolate", "error", "", "503", "2024-05-01T08:00:00.0000000Z"];
        let cols = columns(&names);
        assert!(cols.is_results_file());
        let p = plan_row(&record(7, &values), &cols, &isolate()).unwrap();
        assert_eq!(p.line, 7);
        assert_eq!(p.previous_status, Some(Status::Error));
        let prev = p.previous.unwrap();
        assert_eq!(
            (
                prev.line,
                prev.http_status,
                crate::results::Timestamp::text_of(prev.requested_at).as_str()
            ),
            (4, Some(503), values[7])
        );
        let mut bad = values;
        bad[4] = "great";
        bad[6] = "x";
        let problems = plan_row(&record(7, &bad), &cols, &isolate()).unwrap_err();
        let cols: Vec<&str> = problems.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, ["status", "http_status"]);
        // Outside a results file, a `status` column means nothing.
        let p = plan(&["machine_id", "status"], &[ID, "great"], &isolate()).unwrap();
        assert_eq!(p.previous_status, None);
    }
}
