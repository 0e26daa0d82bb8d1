//! The machine actions the API offers, with everything that differs between
//! them: URL segment, `type` value in the MachineAction entity, required
//! application permission, and which body keys each one takes.
//!
//! One table serves the client (which path to POST, how to name a row's
//! action) and the simulator (which roles to demand, which keys to accept),
//! so the two can never disagree on what an action is.

use std::fmt;
use std::str::FromStr;

/// A machine action the runner can send, in the API's own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    /// `POST machines/{id}/isolate`: cut the device off the network.
    Isolate,
    /// `POST machines/{id}/unisolate`: release it from isolation.
    Unisolate,
    /// `POST machines/{id}/StopAndQuarantineFile`: kill and quarantine a file by Sha1.
    StopAndQuarantineFile,
    /// `POST machines/{id}/offboard`: remove the device from MDE (irreversible by API).
    Offboard,
    /// `POST machines/{id}/runAntiVirusScan`: start a Quick or Full scan.
    RunAntiVirusScan,
    /// `POST machines/{id}/collectInvestigationPackage`: gather forensics.
    CollectInvestigationPackage,
    /// `POST machines/{id}/restrictCodeExecution`: allow only Microsoft-signed code.
    RestrictCodeExecution,
    /// `POST machines/{id}/unrestrictCodeExecution`: lift the restriction.
    UnrestrictCodeExecution,
}

impl ActionKind {
    /// Every action, in a stable order (used for help text and tables).
    pub const ALL: [ActionKind; 8] = [
        ActionKind::Isolate,
        ActionKind::Unisolate,
        ActionKind::StopAndQuarantineFile,
        ActionKind::Offboard,
        ActionKind::RunAntiVirusScan,
        ActionKind::CollectInvestigationPackage,
        ActionKind::RestrictCodeExecution,
        ActionKind::UnrestrictCodeExecution,
    ];

    /// The last path segment of the action's endpoint, exactly as the API spells it.
    pub fn path_segment(self) -> &'static str {
        match self {
            ActionKind::Isolate => "isolate",
            ActionKind::Unisolate => "unisolate",
            ActionKind::StopAndQuarantineFile => "StopAndQuarantineFile",
            ActionKind::Offboard => "offboard",
            ActionKind::RunAntiVirusScan => "runAntiVirusScan",
            ActionKind::CollectInvestigationPackage => "collectInvestigationPackage",
            ActionKind::RestrictCodeExecution => "restrictCodeExecution",
            ActionKind::UnrestrictCodeExecution => "unrestrictCodeExecution",
        }
    }

    /// The value of `type` in a MachineAction created by this action.
    pub fn type_name(self) -> &'static str {
        match self {
            ActionKind::Isolate => "Isolate",
            ActionKind::Unisolate => "Unisolate",
            ActionKind::StopAndQuarantineFile => "StopAndQuarantineFile",
            ActionKind::Offboard => "Offboard",
            ActionKind::RunAntiVirusScan => "RunAntiVirusScan",
            ActionKind::CollectInvestigationPackage => "CollectInvestigationPackage",
            ActionKind::RestrictCodeExecution => "RestrictCodeExecution",
            ActionKind::UnrestrictCodeExecution => "UnrestrictCodeExecution",
        }
    }

    /// Parses a MachineAction `type` value (exact spelling, as the API emits it).
    pub fn from_type_name(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|a| a.type_name() == s)
    }

    /// The short name users type and the results file records (`isolate`,
    /// `stop-and-quarantine`, ...).
    pub fn cli_name(self) -> &'static str {
        match self {
            ActionKind::Isolate => "isolate",
            ActionKind::Unisolate => "unisolate",
            ActionKind::StopAndQuarantineFile => "stop-and-quarantine",
            ActionKind::Offboard => "offboard",
            ActionKind::RunAntiVirusScan => "scan",
            ActionKind::CollectInvestigationPackage => "collect-investigation-package",
            ActionKind::RestrictCodeExecution => "restrict-code-execution",
            ActionKind::UnrestrictCodeExecution => "unrestrict-code-execution",
        }
    }

    /// The application permission (`roles` claim) the API demands for this action.
    pub fn permission(self) -> &'static str {
        match self {
            ActionKind::Isolate | ActionKind::Unisolate => "Machine.Isolate",
            ActionKind::StopAndQuarantineFile => "Machine.StopAndQuarantine",
            ActionKind::Offboard => "Machine.Offboard",
            ActionKind::RunAntiVirusScan => "Machine.Scan",
            ActionKind::CollectInvestigationPackage => "Machine.CollectForensics",
            ActionKind::RestrictCodeExecution | ActionKind::UnrestrictCodeExecution => {
                "Machine.RestrictExecution"
            }
        }
    }

    /// Body keys the action accepts (case-sensitive, PascalCase, as the API matches them).
    pub fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            ActionKind::Isolate => &["Comment", "IsolationType"],
            ActionKind::StopAndQuarantineFile => &["Comment", "Sha1"],
            ActionKind::RunAntiVirusScan => &["Comment", "ScanType"],
            _ => &["Comment"],
        }
    }

    /// Whether the API refuses this action on Linux and macOS devices.
    pub fn windows_only(self) -> bool {
        matches!(self, ActionKind::Offboard | ActionKind::StopAndQuarantineFile)
    }

    /// Whether the action cannot be undone through the API.
    pub fn irreversible(self) -> bool {
        matches!(self, ActionKind::Offboard)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// Error for an action name that matches no known action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action {0:?} (expected isolate, unisolate/release, stop-and-quarantine/StopAndQuarantineFile, offboard, scan, collect-investigation-package, restrict-code-execution or unrestrict-code-execution)"
)]
pub struct UnknownAction(pub String);

impl FromStr for ActionKind {
    type Err = UnknownAction;

    /// Accepts the CLI names, the API path and type spellings, and common
    /// synonyms (`release` for unisolate), ignoring case, spaces, `-` and `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded = fold_name(s);
        let kind = match folded.as_str() {
            "isolate" | "isolation" | "contain" => ActionKind::Isolate,
            "unisolate" | "release" | "releasefromisolation" | "unisolation" => {
                ActionKind::Unisolate
            }
            "stopandquarantine" | "stopandquarantinefile" | "quarantine" | "saq" => {
                ActionKind::StopAndQuarantineFile
            }
            "offboard" | "offboarding" => ActionKind::Offboard,
            "scan" | "runantivirusscan" | "antivirusscan" | "avscan" => {
                ActionKind::RunAntiVirusScan
            }
            "collectinvestigationpackage" | "collect" | "collectpackage" => {
                ActionKind::CollectInvestigationPackage
            }
            "restrictcodeexecution" | "restrict" | "restrictappexecution" => {
                ActionKind::RestrictCodeExecution
            }
            "unrestrictcodeexecution" | "unrestrict" | "unrestrictappexecution" => {
                ActionKind::UnrestrictCodeExecution
            }
            _ => return Err(UnknownAction(s.to_string())),
        };
        Ok(kind)
    }
}

/// Lowercases and drops spaces, `-` and `_`: the folding used for every name a
/// user may type (actions, column headers, enum values).
pub fn fold_name(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\t'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `IsolationType` of an isolate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolationType {
    /// Complete network isolation of a managed device (the API default).
    Full,
    /// Partial isolation: Outlook, Teams and Skype keep working.
    Selective,
    /// Containment of an unmanaged device.
    UnManagedDevice,
}

impl IsolationType {
    /// The exact value the API expects in the body.
    pub fn api_name(self) -> &'static str {
        match self {
            IsolationType::Full => "Full",
            IsolationType::Selective => "Selective",
            IsolationType::UnManagedDevice => "UnManagedDevice",
        }
    }
}

impl FromStr for IsolationType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_name(s).as_str() {
            "full" => Ok(IsolationType::Full),
            "selective" => Ok(IsolationType::Selective),
            "unmanageddevice" | "unmanaged" => Ok(IsolationType::UnManagedDevice),
            _ => Err(format!(
                "unknown isolation type {s:?} (expected full, selective or unmanaged-device)"
            )),
        }
    }
}

/// `ScanType` of an antivirus scan request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanType {
    /// A quick scan of the usual malware locations.
    Quick,
    /// A full scan of every file.
    Full,
}

impl ScanType {
    /// The exact value the API expects in the body.
    pub fn api_name(self) -> &'static str {
        match self {
            ScanType::Quick => "Quick",
            ScanType::Full => "Full",
        }
    }
}

impl FromStr for ScanType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match fold_name(s).as_str() {
            "quick" => Ok(ScanType::Quick),
            "full" => Ok(ScanType::Full),
            _ => Err(format!("unknown scan type {s:?} (expected quick or full)")),
        }
    }
}

/// True when `s` is a machine id as MDE issues them: 40 hex digits (some
/// documentation examples show 32, which is accepted too).
pub fn is_machine_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 32) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True when `s` is a Sha1 as the API accepts it: exactly 40 hex digits, either case.
pub fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_users_and_the_api_use() {
        for (s, k) in [
            ("isolate", ActionKind::Isolate),
            ("ISOLATE", ActionKind::Isolate),
            ("release", ActionKind::Unisolate),
            ("Unisolate", ActionKind::Unisolate),
            ("StopAndQuarantineFile", ActionKind::StopAndQuarantineFile),
            ("stop-and-quarantine", ActionKind::StopAndQuarantineFile),
            ("stop_and_quarantine", ActionKind::StopAndQuarantineFile),
            ("Offboard", ActionKind::Offboard),
            ("runAntiVirusScan", ActionKind::RunAntiVirusScan),
        ] {
            assert_eq!(s.parse::<ActionKind>().unwrap(), k, "{s}");
        }
        assert!("nuke".parse::<ActionKind>().is_err());
        for a in ActionKind::ALL {
            assert_eq!(a.cli_name().parse::<ActionKind>().unwrap(), a);
            assert_eq!(a.path_segment().parse::<ActionKind>().unwrap(), a);
            assert_eq!(ActionKind::from_type_name(a.type_name()), Some(a));
        }
    }

    #[test]
    fn ids_and_hashes() {
        assert!(is_machine_id("1e5bc9d7e413ddd7902c2932e418702b84d0cc07"));
        assert!(!is_machine_id("1e5bc9d7e413ddd7902c2932e418702b84d0cc0"));
        assert!(!is_machine_id("host-00042.contoso.test"));
        assert!(is_sha1("A0C659857CCBE457FDAF5FE21D54EFDCBF6F6508"));
        assert!(!is_sha1("a0c659857ccbe457fdaf5fe21d54efdcbf6f650"));
        assert_eq!("unmanaged-device".parse(), Ok(IsolationType::UnManagedDevice));
    }
}
