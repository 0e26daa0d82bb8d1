//! The protected-devices policy (`--protect FILE`, `MDEBULK_PROTECT`): a
//! small TOML file naming devices that a run must never act on with the
//! actions it guards (by default the ones that cut a device off or remove
//! it), e.g. never isolate or offboard a domain controller.
//!
//! Every top-level key is an optional list:
//!
//! ```toml
//! machine_ids   = ["0a1b..."]          # exact, case-insensitive
//! names         = ["dc-*", "pki?.corp.example"] # globs on computerDnsName
//! tags          = ["DomainController"] # machineTags, case-insensitive
//! groups        = ["Domain Controllers"] # rbacGroupName, case-insensitive
//! os_platforms  = ["WindowsServer2022"]
//! device_values = ["High"]             # deviceValue
//! actions       = ["isolate", "offboard"] # default: isolate, restrict, offboard, stop-and-quarantine
//! ```
//!
//! The file is read whole and checked before anything else: an unknown key,
//! a value of the wrong type or an unknown action is refused with the
//! file, line and column. Matching is done on the facts the device look-ups
//! learn from the tenant ([`Facts`]), never on what an input row says.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::action::ActionKind;

/// The actions a policy guards when it does not say: those that cut a
/// device off (isolate, restrict), remove it (offboard) or kill processes
/// on it (stop-and-quarantine).
pub const DEFAULT_GUARDED: [ActionKind; 4] = [
    ActionKind::Isolate,
    ActionKind::RestrictCodeExecution,
    ActionKind::Offboard,
    ActionKind::StopAndQuarantineFile,
];

/// Largest policy file read, in bytes: a policy lists a few dozen devices
/// and patterns, so anything larger is not one.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("--protect {}: {source}", .path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a policy: bad TOML, an unknown key, a wrong type,
    /// an unknown action, an empty pattern.
    #[error("--protect {}:{line}:{column}: {message}; nothing was sent", .path.display())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// What is wrong, with the value quoted safely.
        message: String,
    },
}

/// The file as written: every key optional, nothing else allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    machine_ids: Vec<toml::Spanned<String>>,
    #[serde(default)]
    names: Vec<toml::Spanned<String>>,
    #[serde(default)]
    tags: Vec<toml::Spanned<String>>,
    #[serde(default)]
    groups: Vec<toml::Spanned<String>>,
    #[serde(default)]
    os_platforms: Vec<toml::Spanned<String>>,
    #[serde(default)]
    device_values: Vec<toml::Spanned<String>>,
    #[serde(default)]
    actions: Option<Vec<toml::Spanned<String>>>,
}

/// A checked policy: every value lowercased once, so matching a machine
/// allocates nothing but its lowercased name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file it was read from, for messages.
    path: PathBuf,
    /// Machine ids, lowercased.
    machine_ids: HashSet<String>,
    /// Name globs, lowercased, as written.
    names: Vec<String>,
    /// Tags, lowercased.
    tags: Vec<String>,
    /// RBAC group names, lowercased.
    groups: Vec<String>,
    /// OS platforms, lowercased.
    os_platforms: Vec<String>,
    /// Device values, lowercased.
    device_values: Vec<String>,
    /// The actions it guards.
    actions: BTreeSet<ActionKind>,
}

/// What the tenant says of a machine: all a policy matches on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The machine id.
    pub id: &'a str,
    /// `computerDnsName`.
    pub dns_name: Option<&'a str>,
    /// `machineTags`.
    pub tags: &'a [String],
    /// `rbacGroupName`.
    pub group: Option<&'a str>,
    /// `osPlatform`.
    pub os_platform: Option<&'a str>,
    /// `deviceValue`.
    pub device_value: Option<&'a str>,
}

impl Policy {
    /// Reads and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        use std::io::Read;
        let read = |source| PolicyError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut bytes = Vec::new();
        file.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("larger than {MAX_POLICY_BYTES} bytes: not a policy file"),
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
            let (line, column) = crate::text::line_column(&valid, at);
            PolicyError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message: "not UTF-8 text (save the policy as UTF-8)".into(),
            }
        })?;
        Policy::parse(&text, path)
    }

    /// Checks the policy text `text` read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = crate::text::line_column(text, span.map_or(0, |s| s.start));
            PolicyError::Invalid { path: path.to_path_buf(), line, column, message }
        };
        let file: PolicyFile = toml::from_str(text)
            // The parser's message quotes the value: bounded and escaped.
            .map_err(|e| {
                invalid(e.span(), crate::text::clip(e.message().trim()).max(300).to_string())
            })?;
        let lower =
            |items: Vec<toml::Spanned<String>>, key: &str| -> Result<Vec<String>, PolicyError> {
                items
                    .into_iter()
                    .map(|item| {
                        let span = item.span();
                        let value = item.into_inner();
                        if value.trim().is_empty() {
                            return Err(invalid(
                                Some(span),
                                format!("{key}: an empty value protects nothing"),
                            ));
                        }
                        Ok(value.trim().to_lowercase())
                    })
                    .collect()
            };
        let actions = match file.actions {
            None => DEFAULT_GUARDED.into_iter().collect(),
            Some(items) => {
                let mut actions = BTreeSet::new();
                for item in items {
                    let span = item.span();
                    let action = item
                        .get_ref()
                        .parse::<ActionKind>()
                        .map_err(|e| invalid(Some(span), format!("actions: {e}")))?;
                    actions.insert(action);
                }
                actions
            }
        };
        Ok(Policy {
            path: path.to_path_buf(),
            machine_ids: lower(file.machine_ids, "machine_ids")?.into_iter().collect(),
            names: lower(file.names, "names")?,
            tags: lower(file.tags, "tags")?,
            groups: lower(file.groups, "groups")?,
            os_platforms: lower(file.os_platforms, "os_platforms")?,
            device_values: lower(file.device_values, "device_values")?,
            actions,
        })
    }

    /// The policy file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when rows with this action are checked against the policy.
    pub fn guards(&self, action: ActionKind) -> bool {
        self.actions.contains(&action)
    }

    /// The actions the policy guards, in a stable order.
    pub fn actions(&self) -> impl Iterator<Item = ActionKind> + '_ {
        self.actions.iter().copied()
    }

    /// Why the policy protects this machine (the first entry that matches,
    /// as `tag "DomainController"`), or `None`.
    pub fn protects(&self, m: &Facts<'_>) -> Option<String> {
        if self.machine_ids.contains(&m.id.to_ascii_lowercase()) {
            return Some("machine_ids".to_string());
        }
        if let Some(dns) = m.dns_name {
            let dns = dns.to_lowercase();
            if let Some(p) = self.names.iter().find(|p| name_matches(p, &dns)) {
                return Some(format!("names {p:?}"));
            }
        }
        fn any<'w>(wanted: &'w [String], have: Option<&str>) -> Option<&'w String> {
            let have = have?.to_lowercase();
            wanted.iter().find(|w| **w == have)
        }
        for tag in m.tags {
            if let Some(t) = any(&self.tags, Some(tag)) {
                return Some(format!("tags {t:?}"));
            }
        }
        if let Some(g) = any(&self.groups, m.group) {
            return Some(format!("groups {g:?}"));
        }
        if let Some(o) = any(&self.os_platforms, m.os_platform) {
            return Some(format!("os_platforms {o:?}"));
        }
        if let Some(v) = any(&self.device_values, m.device_value) {
            return Some(format!("device_values {v:?}"));
        }
        None
    }
}

/// True when the name glob `pattern` matches `dns` (both lowercased): the
/// whole name, or, for a pattern without a dot, its first label, as device
/// names are looked up (`dc-*` matches `dc-01` and `dc-01.corp.example`).
fn name_matches(pattern: &str, dns: &str) -> bool {
    glob(pattern, dns)
        || (!pattern.contains('.')
            && dns.split_once('.').is_some_and(|(first, _)| glob(pattern, first)))
}

/// Glob matching with `*` (any run of characters, dots included) and `?`
/// (one character); everything else matches itself. Linear backtracking on
/// the last `*`, so no pattern can make it slow.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("protect.toml"))
    }

    fn facts<'a>(id: &'a str, dns: &'a str, tags: &'a [String]) -> Facts<'a> {
        Facts { id, dns_name: Some(dns), tags, ..Facts::default() }
    }

    #[test]
    fn globs_match_whole_names_or_the_first_label() {
        assert!(glob("dc-*", "dc-01.corp.example"));
        assert!(glob("dc-??", "dc-01"));
        assert!(!glob("dc-??", "dc-001"));
        assert!(glob("*.corp.example", "pki.corp.example"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("*", ""));
        assert!(name_matches("dc01", "dc01.corp.example"));
        assert!(!name_matches("dc01.corp", "dc01.corp.example"));
        assert!(!name_matches("dc-*", "web-dc-1"));
    }

    #[test]
    fn every_key_protects_case_insensitively_and_says_why() {
        let p = parse(
            "machine_ids = [\"AB12\"]\nnames = [\"DC-*\"]\ntags = [\"DomainController\"]\ngroups = [\"Tier 0\"]\nos_platforms = [\"WindowsServer2022\"]\ndevice_values = [\"High\"]\n",
        )
        .unwrap();
        let none: Vec<String> = Vec::new();
        assert_eq!(p.protects(&facts("ab12", "x", &none)).as_deref(), Some("machine_ids"));
        assert_eq!(p.protects(&facts("1", "dc-7.corp", &none)).as_deref(), Some("names \"dc-*\""));
        let tags = vec!["domaincontroller".to_string()];
        assert_eq!(
            p.protects(&facts("1", "ws", &tags)).as_deref(),
            Some("tags \"domaincontroller\"")
        );
        let group = Facts { id: "1", group: Some("TIER 0"), ..Facts::default() };
        assert!(p.protects(&group).is_some());
        let os = Facts { id: "1", os_platform: Some("WindowsServer2022"), ..Facts::default() };
        assert!(p.protects(&os).is_some());
        let value = Facts { id: "1", device_value: Some("high"), ..Facts::default() };
        assert!(p.protects(&value).is_some());
        assert_eq!(p.protects(&facts("2", "ws-1.corp", &none)), None);
        assert!(p.guards(ActionKind::Isolate) && p.guards(ActionKind::StopAndQuarantineFile));
        assert!(!p.guards(ActionKind::Unisolate) && !p.guards(ActionKind::RunAntiVirusScan));
    }

    #[test]
    fn actions_limit_what_is_guarded() {
        let p = parse("tags = [\"x\"]\nactions = [\"offboard\", \"restrict\"]\n").unwrap();
        assert_eq!(
            p.actions().collect::<Vec<_>>(),
            vec![ActionKind::Offboard, ActionKind::RestrictCodeExecution]
        );
        assert!(!p.guards(ActionKind::Isolate));
    }

    #[test]
    fn an_empty_file_is_a_policy_that_protects_nothing() {
        let p = parse("").unwrap();
        assert_eq!(p.protects(&facts("1", "dc-1", &[])), None);
    }

    fn problem(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(PolicyError::Invalid { line, column, message, .. }) => (line, column, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_wrong_types_and_unknown_actions_name_line_and_column() {
        let (line, column, message) = problem("tags = [\"a\"]\nname = [\"dc-*\"]\n");
        assert_eq!((line, column), (2, 1), "{message}");
        assert!(message.contains("unknown field") && message.contains("names"), "{message}");
        let (line, column, message) = problem("# policy\ntags = \"DomainController\"\n");
        assert_eq!((line, column), (2, 8), "{message}");
        let (line, column, message) = problem("actions = [\"isolate\", \"nuke\"]\n");
        assert_eq!((line, column), (1, 23), "{message}");
        assert!(message.contains("nuke"), "{message}");
        let (line, _, message) = problem("\n\nnames = [\"dc-*\"\n");
        assert_eq!(line, 3, "{message}");
        let (line, column, message) = problem("groups = [\"ok\", \"  \"]");
        assert_eq!((line, column), (1, 17), "{message}");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(crate::text::line_column("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(crate::text::line_column("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(crate::text::line_column("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(crate::text::line_column("ab\ncdé\nf", 7), (2, 4));
    }
}
