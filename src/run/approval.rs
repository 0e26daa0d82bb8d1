//! Plan and apply: the digest of a dry run's plan, the record of the plan's
//! parameters kept beside it (`PLAN.params.json`), and the approval an
//! `mdebulk apply` carries into each action's comment and the journal.
//!
//! The digest is SHA-256 over the run's parameters (action defaults,
//! comment, isolation type, sha1, scan type, API URL, tenant, planner, the
//! column choices the plan is read back with),
//! each written as a JSON string on a line of its own so no value can pass
//! for another, followed by the plan file's bytes, which hold every
//! resolved row: the machine id it would hit, its action and parameters,
//! its status. Any change to either, even re-saving the plan, changes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::RunParams;

/// Hex digits of a digest's short form: what a comment carries.
pub const SHORT_DIGEST: usize = 12;

/// Longest planner or approver name, in characters.
pub const MAX_PERSON_CHARS: usize = 64;

/// Version of [`PlanRecord`]'s format.
const PLAN_RECORD_VERSION: u32 = 1;

/// What a dry run records beside its plan: the parameters the plan was
/// made with, who made it, and the digest of both with the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRecord {
    /// Version of this format.
    pub version: u32,
    /// SHA-256 of the parameters and the plan, 64 lowercase hex digits.
    pub digest: String,
    /// Who made the plan (`--planner`, default the OS user).
    pub planner: String,
    /// The run's parameters: what `apply` runs the plan with.
    pub params: RunParams,
    /// How `apply` reads the plan's columns: the dry run's own choices.
    #[serde(default)]
    pub columns: PlanColumns,
}

/// The column choices of the input a plan was made from (`--column`,
/// `--ignore-column`), so `apply` reads the plan's columns as the dry run
/// read the input's: a column left out there (a `name` that is not the
/// device's) is left out again. An assignment of the machine id is not
/// kept: the plan's own `machine_id` column is what each row hits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanColumns {
    /// `--column ROLE=HEADER`, as `ROLE=HEADER` with the role's canonical name.
    pub assigned: Vec<String>,
    /// `--ignore-column HEADER`.
    pub ignored: Vec<String>,
}

impl PlanColumns {
    /// The choices of a dry run's input.
    pub fn of(choices: &crate::input::ColumnChoices) -> PlanColumns {
        PlanColumns {
            assigned: choices
                .assigned
                .iter()
                .filter(|a| a.role != crate::input::Role::MachineId)
                .map(|a| format!("{}={}", a.role.canonical(), a.header))
                .collect(),
            ignored: choices.ignored.clone(),
        }
    }
}

/// An approved plan being applied: what goes into each action's comment
/// prefix and the journal's run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The plan's full digest.
    pub digest: String,
    /// Who made the plan.
    pub planner: String,
    /// Who approved it (`--approver`, default the OS user).
    pub approver: String,
}

impl Approval {
    /// The comment prefix: `[plan 1a2b3c4d5e6f by alice, approved by bob]`.
    pub fn prefix(&self) -> String {
        format!(
            "[plan {} by {}, approved by {}]",
            &self.digest[..SHORT_DIGEST.min(self.digest.len())],
            self.planner,
            self.approver
        )
    }

    /// The comment sent for a row of the plan whose own comment is `comment`.
    pub fn comment(&self, comment: &str) -> String {
        format!("{} {comment}", self.prefix())
    }
}

/// A plan record that cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record beside the plan is not one this version wrote.
    #[error(
        "{}: not a plan record of this version of mdebulk ({why}); make the plan again with `run --dry-run`",
        .path.display()
    )]
    Unreadable {
        /// The record.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// `hosts.plan.csv` → `hosts.plan.csv.params.json`.
pub fn record_path(plan: &Path) -> PathBuf {
    let mut name = plan.as_os_str().to_owned();
    name.push(".params.json");
    PathBuf::from(name)
}

/// The digest of a plan made by `planner` with `params`, read with
/// `columns`, whose file holds `plan` (its bytes).
pub fn digest(params: &RunParams, planner: &str, columns: &PlanColumns, plan: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::from("mdebulk plan 1\n");
    let fields: [(&str, &str); 8] = [
        ("planner", planner),
        ("action", &params.action),
        ("comment", &params.comment),
        ("isolation_type", &params.isolation_type),
        ("sha1", &params.sha1),
        ("scan_type", &params.scan_type),
        ("api", &params.api),
        ("tenant", &params.tenant),
    ];
    for (key, value) in fields {
        // A JSON string has no raw line break: one value cannot end early.
        let _ = writeln!(text, "{key}: {}", serde_json::Value::from(value));
    }
    for (key, values) in [("column", &columns.assigned), ("ignore_column", &columns.ignored)] {
        for value in values {
            let _ = writeln!(text, "{key}: {}", serde_json::Value::from(value.as_str()));
        }
    }
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(plan);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the record of the plan at `plan` (already in place), readable
/// by its owner only, and returns it.
pub fn write_record(
    plan: &Path,
    params: RunParams,
    planner: &str,
    columns: PlanColumns,
) -> Result<PlanRecord, PlanError> {
    use std::io::Write;
    let bytes =
        std::fs::read(plan).map_err(|source| PlanError::Io { path: plan.into(), source })?;
    let record = PlanRecord {
        version: PLAN_RECORD_VERSION,
        digest: digest(&params, planner, &columns, &bytes),
        planner: planner.to_string(),
        params,
        columns,
    };
    let path = record_path(plan);
    let io = |source| PlanError::Io { path: path.clone(), source };
    let mut text = serde_json::to_string_pretty(&record).map_err(|e| io(e.into()))?;
    text.push('\n');
    let mut file = crate::private::create(&path).map_err(io)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    Ok(record)
}

/// Reads the record beside the plan at `plan`.
pub fn read_record(plan: &Path) -> Result<PlanRecord, PlanError> {
    let path = record_path(plan);
    let text = std::fs::read_to_string(&path)
        .map_err(|source| PlanError::Io { path: path.clone(), source })?;
    let record: PlanRecord = serde_json::from_str(&text)
        .map_err(|e| PlanError::Unreadable { path: path.clone(), why: e.to_string() })?;
    if record.version != PLAN_RECORD_VERSION {
        return Err(PlanError::Unreadable {
            path,
            why: format!("format version {}", record.version),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RowDefaults;

    fn none() -> PlanColumns {
        PlanColumns::default()
    }

    fn params(comment: &str) -> RunParams {
        let defaults = RowDefaults { comment: Some(comment.into()), ..RowDefaults::default() };
        RunParams::new(&defaults, "http://127.0.0.1:1", "t1", "2026-01-01T00:00:00Z".into())
    }

    #[test]
    fn the_digest_covers_the_parameters_the_planner_and_every_byte_of_the_plan() {
        let base = digest(&params("IR-7"), "alice", &none(), b"line,machine_id\n2,ab\n");
        assert_eq!(base.len(), 64);
        assert_eq!(base, digest(&params("IR-7"), "alice", &none(), b"line,machine_id\n2,ab\n"));
        assert_ne!(base, digest(&params("IR-8"), "alice", &none(), b"line,machine_id\n2,ab\n"));
        assert_ne!(base, digest(&params("IR-7"), "bob", &none(), b"line,machine_id\n2,ab\n"));
        assert_ne!(base, digest(&params("IR-7"), "alice", &none(), b"line,machine_id\n2,ac\n"));
        // A value cannot spill into the next field.
        let mut shifted = params("IR-7\"\naction: \"offboard");
        shifted.action = String::new();
        assert_ne!(
            digest(&shifted, "alice", &none(), b""),
            digest(&params("IR-7"), "alice", &none(), b"")
        );
    }

    #[test]
    fn the_prefix_carries_the_short_digest_planner_and_approver() {
        let a = Approval {
            digest: "0123456789abcdef".repeat(4),
            planner: "alice".into(),
            approver: "bob".into(),
        };
        assert_eq!(a.prefix(), "[plan 0123456789ab by alice, approved by bob]");
        assert_eq!(a.comment("IR-7"), "[plan 0123456789ab by alice, approved by bob] IR-7");
    }

    #[test]
    fn a_record_round_trips_beside_its_plan() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("hosts.plan.csv");
        std::fs::write(&plan, "line,machine_id\n2,ab\n").unwrap();
        let columns = PlanColumns {
            assigned: vec!["device_name=Server".into()],
            ignored: vec!["name".into()],
        };
        let written = write_record(&plan, params("IR-7"), "alice", columns.clone()).unwrap();
        assert_eq!(read_record(&plan).unwrap(), written);
        assert_eq!(
            written.digest,
            digest(&params("IR-7"), "alice", &columns, b"line,machine_id\n2,ab\n")
        );
        assert_ne!(
            written.digest,
            digest(&params("IR-7"), "alice", &none(), b"line,machine_id\n2,ab\n")
        );
        std::fs::write(record_path(&plan), "{\"version\": 1}").unwrap();
        assert!(matches!(read_record(&plan), Err(PlanError::Unreadable { .. })));
    }
}
