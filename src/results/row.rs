//! The result of one input row: the runner's columns of a results file and
//! the vocabulary of row statuses.
//!
//! The same record is written to the results file (CSV or JSONL), appended to
//! the run's journal, and read back when a results file is replayed, so its
//! column names and status spellings are a stable, documented format.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::time::{self, Timestamp};

/// The runner's columns, in the order they follow the user's own columns.
/// Input columns with these names are replaced by the runner's, never
/// duplicated: an input's `device_name` (or `DeviceName`, which folds alike)
/// lives on in the runner's `device_name` (see [`ResultRow::device_name`]).
pub const RUNNER_COLUMNS: [&str; 14] = [
    "line",
    "machine_id",
    "device_name",
    "action",
    "status",
    "action_id",
    "action_status",
    "http_status",
    "error_code",
    "error_message",
    "attempts",
    "requested_at",
    "finished_at",
    "tag_result",
];

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Dry run: the row would be sent.
    Planned,
    /// The API accepted the action (201/200 with an action id).
    Submitted,
    /// The same action was already pending or in progress on the device.
    AlreadyPending,
    /// The protected-devices policy (`--protect`) guards the row's action
    /// and protects its device: never sent. A refusal by policy, not a
    /// failure of the API.
    Protected,
    /// `--skip-satisfied`: the device is already in the state the row asks
    /// for (isolated, released, restricted, unrestricted), as its latest
    /// completed action says; nothing was sent. `action_id` is that action.
    AlreadyDone,
    /// No such machine (404, or a name that matched nothing).
    NotFound,
    /// A device name that matched more than one machine.
    Ambiguous,
    /// The API refused the request (a 4xx other than 404/429).
    Rejected,
    /// The row itself is malformed (bad id, Sha1, isolation type, ...).
    Invalid,
    /// The row repeats an earlier row's machine + action + parameters.
    Duplicate,
    /// Retries exhausted on 5xx, timeouts or connection errors.
    Error,
    /// The request was sent but its answer is unknown and could not be
    /// reconciled with the server; the row must not be sent blindly again.
    InDoubt,
    /// A stop (interrupt, `--max-runtime`, lost credentials, a journal that
    /// cannot be written) came before the row was sent: nothing was done to
    /// the device, and `--resume` (or `--only not_sent`) sends it.
    NotSent,
    /// Waiting ended with the action still pending on the device.
    Pending,
    /// Waiting ended with the action still running.
    InProgress,
    /// The action completed on the device.
    Succeeded,
    /// The action failed on the device.
    Failed,
    /// The device never picked the action up in time.
    TimedOut,
    /// The action was cancelled.
    Cancelled,
    /// `undo`: nothing to do for the row (the run left no effect to
    /// reverse, or it was reversed already); `error_message` says why.
    Skipped,
    /// `undo`: the row's effect cannot be reversed through the API (offboard,
    /// a quarantined file) or not without touching someone else's action;
    /// `error_message` says why and what to do instead.
    Refused,
}

impl Status {
    /// Every status, in documentation order.
    pub const ALL: [Status; 21] = [
        Status::Planned,
        Status::Submitted,
        Status::AlreadyPending,
        Status::Protected,
        Status::AlreadyDone,
        Status::NotFound,
        Status::Ambiguous,
        Status::Rejected,
        Status::Invalid,
        Status::Duplicate,
        Status::Error,
        Status::InDoubt,
        Status::NotSent,
        Status::Pending,
        Status::InProgress,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::Skipped,
        Status::Refused,
    ];

    /// The spelling used in results files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Planned => "planned",
            Status::Submitted => "submitted",
            Status::AlreadyPending => "already_pending",
            Status::Protected => "protected",
            Status::AlreadyDone => "already_done",
            Status::NotFound => "not_found",
            Status::Ambiguous => "ambiguous",
            Status::Rejected => "rejected",
            Status::Invalid => "invalid",
            Status::Duplicate => "duplicate",
            Status::Error => "error",
            Status::InDoubt => "in_doubt",
            Status::NotSent => "not_sent",
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
            Status::Refused => "refused",
        }
    }

    /// True when the row counts as a failure for the exit code (1).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Status::NotFound
                | Status::Ambiguous
                | Status::Rejected
                | Status::Invalid
                | Status::Error
                | Status::InDoubt
                | Status::NotSent
                | Status::Failed
                | Status::TimedOut
                | Status::Cancelled
                | Status::Refused
        )
    }

    /// True while the device may still carry the action out: the row has an
    /// action id whose final state is not known yet.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Submitted | Status::AlreadyPending | Status::Pending | Status::InProgress
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded = crate::api::action::fold_name(s);
        Status::ALL
            .into_iter()
            .find(|st| crate::api::action::fold_name(st.as_str()) == folded)
            .ok_or_else(|| {
                let all: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status {s:?} (expected one of {})", all.join(", "))
            })
    }
}

/// The runner's half of a result row (the user's columns travel beside it).
/// Empty strings (and an empty time, `None`) stand for "nothing to say", so
/// CSV and JSONL agree.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResultRow {
    /// 1-based line of the row in the input file (the header is line 1 in CSV).
    pub line: u64,
    /// The machine acted on (resolved from a name when the row had none).
    pub machine_id: String,
    /// The machine's `computerDnsName` as the API reported it (in the
    /// action's reply, or when the run looked the machine up); when the API
    /// never named the machine (a name not found, an invalid row), the
    /// device name the row itself gave, so an input's own `device_name`
    /// column, which this one replaces, is never lost and a replay finds the
    /// same device. Empty when neither is known. Absent from the results
    /// and journals of earlier versions, which read back with it empty.
    #[serde(default)]
    pub device_name: String,
    /// The action, by its CLI name (`isolate`, `stop-and-quarantine`, ...).
    pub action: String,
    /// What happened; `None` only before the row is decided.
    pub status: Option<Status>,
    /// The MachineAction id the API returned (or the pending one it reported).
    pub action_id: String,
    /// The MachineAction's own status (`Pending`, `Succeeded`, ...), last seen.
    pub action_status: String,
    /// HTTP status of the last answer, if any answer came.
    pub http_status: Option<u16>,
    /// The API's error code (`InvalidRequestBody`, ...) or the runner's own
    /// (`InvalidMachineId`, `Timeout`, ...).
    pub error_code: String,
    /// Human explanation of the error.
    pub error_message: String,
    /// How many requests were sent for the row (retries included).
    pub attempts: u32,
    /// When the first request for the row left; `None` when none did.
    /// Written as ISO-8601 UTC text, the empty string for none.
    #[serde(with = "time::or_empty")]
    pub requested_at: Option<Timestamp>,
    /// When the row reached its status; `None` before it did.
    #[serde(with = "time::or_empty")]
    pub finished_at: Option<Timestamp>,
    /// `--tag-result`: the tag written to the device for this row (in an
    /// undo's results, the tag removed); empty when none was. Absent from
    /// files and journals written before the column existed.
    #[serde(default)]
    pub tag_result: String,
}

impl ResultRow {
    /// A row of `line` about to be decided: the machine and action it is
    /// for, nothing said yet.
    pub fn new(line: u64, machine_id: impl Into<String>, action: impl Into<String>) -> ResultRow {
        ResultRow {
            line,
            machine_id: machine_id.into(),
            action: action.into(),
            ..ResultRow::default()
        }
    }

    /// A row of `line` settled now, without a request, with `status` and
    /// why (`finished_at` stamped).
    pub fn settled(
        line: u64,
        machine_id: impl Into<String>,
        action: impl Into<String>,
        status: Status,
        why: impl Into<String>,
    ) -> ResultRow {
        ResultRow {
            status: Some(status),
            error_message: why.into(),
            ..ResultRow::new(line, machine_id, action)
        }
        .finished_now()
    }

    /// The same row with `error_code` set.
    pub fn with_code(mut self, code: impl Into<String>) -> ResultRow {
        self.error_code = code.into();
        self
    }

    /// The same row stamped as finished now.
    pub fn finished_now(mut self) -> ResultRow {
        self.finished_at = Some(Timestamp::now());
        self
    }

    /// The runner's columns as text, in [`RUNNER_COLUMNS`] order.
    pub fn to_fields(&self) -> [String; RUNNER_COLUMNS.len()] {
        [
            self.line.to_string(),
            self.machine_id.clone(),
            self.device_name.clone(),
            self.action.clone(),
            self.status.map(|s| s.as_str().to_string()).unwrap_or_default(),
            self.action_id.clone(),
            self.action_status.clone(),
            self.http_status.map(|s| s.to_string()).unwrap_or_default(),
            self.error_code.clone(),
            self.error_message.clone(),
            self.attempts.to_string(),
            Timestamp::text_of(self.requested_at),
            Timestamp::text_of(self.finished_at),
            self.tag_result.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal record of an earlier version has no `device_name`: it
    /// reads with the name empty.
    #[test]
    fn a_row_without_device_name_deserialises_with_it_empty() {
        let old = r#"{"line":2,"machine_id":"ab","action":"isolate","status":"submitted","action_id":"a-1","action_status":"Pending","http_status":201,"error_code":"","error_message":"","attempts":1,"requested_at":"","finished_at":""}"#;
        let row: ResultRow = serde_json::from_str(old).unwrap();
        assert_eq!(row.device_name, "");
        assert_eq!(
            (row.line, row.status, row.http_status),
            (2, Some(Status::Submitted), Some(201))
        );
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!("Already Pending".parse::<Status>().unwrap(), Status::AlreadyPending);
        assert!("great".parse::<Status>().is_err());
    }
}
