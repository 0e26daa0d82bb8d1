//! The bulk runner: from an input file to one result row per input row.
//!
//! Phases, in order:
//! 1. **Survey** ([`plan`]): read the whole input once, validate every row,
//!    count actions. A file that fails here sends nothing.
//! 2. **Prepare**: confirm offboarding, open and lock the journal, reconcile
//!    requests an earlier run left in doubt, then ([`resolve`]) resolve
//!    device names, run the pre-flight and learn the OS of machines that
//!    Windows-only rows target — read calls only, a dry run makes them too.
//! 3. **Execute** ([`pipeline`]): stream the input again; each row is settled
//!    at once (invalid, duplicate, done earlier) or sent through the pacer by
//!    a bounded pool of tasks; results are written in input order as they
//!    settle.
//! 4. **Wait** (optional, [`wait`]): poll submitted actions to their final
//!    state and rewrite their rows.
//! 5. **Finish**: rename the results into place, print the summary.
//!
//! Beside a run: [`status`] follows the actions of an earlier results file,
//! and [`undo`] reverses what an earlier run did.

pub mod approval;
pub(crate) mod call;
pub(crate) mod devices;
pub mod identity;
pub mod journal;
pub mod pipeline;
pub(crate) mod plan;
pub(crate) mod progress;
pub mod protect;
pub(crate) mod resolve;
pub mod rewrite;
pub(crate) mod status;
pub(crate) mod stop;
pub(crate) mod submit;
pub(crate) mod summary;
pub(crate) mod tagging;
pub(crate) mod targets;
pub mod tenants;
pub(crate) mod transport;
pub(crate) mod undo;
pub(crate) mod wait;

use std::path::PathBuf;
use std::time::Duration;

use crate::input::{InputSpec, RowDefaults};
use crate::pace::Limit;
use crate::results::Status;

pub use call::RetryPolicy;
pub use stop::{Stop, StopReason};
pub use summary::Summary;
pub use tagging::check_tag;

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultsTarget {
    /// A file; written aside and renamed into place, with a journal beside it.
    File(PathBuf),
    /// Standard output, streamed; no journal, no resume.
    Stdout,
}

/// What to do when the results file (or its journal) already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse and touch nothing.
    Refuse,
    /// Start over, replacing it.
    Force,
    /// Continue the earlier run.
    Resume,
}

/// Everything a run needs, validated. Built by `cli` from flags and
/// environment; library code sees only this.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The input file or stdin.
    pub input: InputSpec,
    /// Devices asked of the service instead of read from a file (`--tag`,
    /// `--has-file`, `--query`): written to a targets file beside the
    /// results, which becomes the input.
    pub targets: Option<Targets>,
    /// Where results go.
    pub results: ResultsTarget,
    /// Per-run defaults for rows (action, comment, parameters).
    pub defaults: RowDefaults,
    /// Quotas per API; empty means no pacing.
    pub limits: Vec<Limit>,
    /// Safety margin added to every window (`None`: 1%, at most 250 ms).
    pub pace_margin: Option<Duration>,
    /// Rows in flight at once.
    pub concurrency: usize,
    /// Retry knobs for transient errors.
    pub policy: RetryPolicy,
    /// Record malformed rows as `invalid` and go on, instead of refusing the file.
    pub skip_invalid: bool,
    /// What to do with an existing results file.
    pub existing: Existing,
    /// Only rows whose previous `status` is one of these (replaying a results file).
    pub only: Option<Vec<Status>>,
    /// Validate, resolve and plan, but send no action.
    pub dry_run: bool,
    /// `--yes`: irreversible actions are confirmed.
    pub yes: bool,
    /// Whether a person can be asked (stdin and stderr are terminals).
    pub interactive: bool,
    /// Draw a progress bar.
    pub progress: bool,
    /// Stop gracefully (resumable, exit 75) after this long.
    pub max_runtime: Option<Duration>,
    /// With several machines for one name, take the most recently seen.
    pub pick_latest: bool,
    /// `--max-devices`: more rows than this that isolate, restrict or
    /// offboard need `--allow-large`.
    pub max_devices: u64,
    /// `--max-percent`: more such rows than this share of the tenant's
    /// active devices need `--allow-large`.
    pub max_percent: Option<f64>,
    /// `--allow-large`: a run above the caps goes on (after the count is
    /// typed back, on a terminal).
    pub allow_large: bool,
    /// `--skip-satisfied`: rows whose device is already in the asked state
    /// (isolated, released, restricted, unrestricted) are `already_done`
    /// and cost no action call.
    pub skip_satisfied: bool,
    /// `--tag-result`: the tag written to every device the run acted on
    /// (checked with `tagging::check_tag`).
    pub tag_result: Option<String>,
    /// Wait for submitted actions to finish.
    pub wait: Option<WaitOptions>,
    /// How long a request may still be travelling after the process that
    /// sent it died: in-doubt rows are looked up only once this has passed
    /// since they were sent (the request timeout, at most 5 s).
    pub in_flight_grace: Duration,
    /// The command line that started the run, minus secrets, for the resume hint.
    pub command_line: Vec<String>,
    /// The API the run talks to (its base URL, or `simulated`): part of the
    /// run's identity, so a resume against another API is refused.
    pub api: String,
    /// The tenant the credentials act in (empty when unknown, as with a
    /// ready token): part of the run's identity too.
    pub tenant: String,
    /// The protected-devices policy (`--protect`, `MDEBULK_PROTECT`).
    pub protect: Option<std::sync::Arc<protect::Policy>>,
    /// `--skip-protected`: protected rows are recorded `protected` and the
    /// rest is sent, instead of refusing the run.
    pub skip_protected: bool,
    /// Who makes a dry run's plan (`--planner`): recorded beside the plan
    /// and covered by its digest.
    pub planner: String,
    /// `mdebulk apply`: the approved plan this run carries out; every row
    /// must still hit the machine the plan names.
    pub approval: Option<approval::Approval>,
    /// A first login that fails stops the run like credentials lost
    /// mid-run (every row written: those an earlier invocation settled as
    /// they were, the rest `not_sent`) instead of refusing it: one tenant's
    /// share of a run over many, whose rows the whole run must report
    /// while the other tenants go on.
    pub login_failure_stops: bool,
}

/// Where a run's devices come from when it has no input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// The machines with this tag (`GET machines/findbytag`), compared
    /// without regard to case; with `prefix`, every tag starting with it.
    Tag {
        /// The tag, or the start of one.
        tag: String,
        /// Match tags starting with `tag` (`useStartsWithFilter=true`).
        prefix: bool,
    },
    /// The machines that have seen the file with this SHA-1
    /// (`GET files/{sha1}/machines`).
    File {
        /// The file's SHA-1, lower case.
        sha1: String,
    },
    /// The devices of an Advanced Hunting query's result (Microsoft
    /// Graph's `POST security/runHuntingQuery`): its `DeviceId` column.
    Query {
        /// The KQL, as given (`--query`, or read from `--query-file`).
        kql: String,
        /// Each row's file comes from the result's `SHA1` column
        /// (stop-and-quarantine without `--sha1`).
        sha1_column: bool,
    },
}

impl Targets {
    /// The `found_by` cell of every row this target yields: `tag:T`,
    /// `tag-prefix:T`, `has-file:SHA1`, or `query:` and the first 12 hex
    /// digits of the query's SHA-256 (a query is long and may hold commas
    /// and line breaks; the digest names it in a cell, the same for the
    /// same text).
    pub fn found_by(&self) -> String {
        match self {
            Targets::Tag { tag, prefix: false } => format!("tag:{tag}"),
            Targets::Tag { tag, prefix: true } => format!("tag-prefix:{tag}"),
            Targets::File { sha1 } => format!("has-file:{sha1}"),
            Targets::Query { kql, .. } => format!("query:{}", query_digest(kql)),
        }
    }
}

/// The actions the blast-radius cap counts: those that cut a device off
/// or remove it.
pub const GUARDED_BY_CAP: [crate::api::action::ActionKind; 3] = [
    crate::api::action::ActionKind::Isolate,
    crate::api::action::ActionKind::RestrictCodeExecution,
    crate::api::action::ActionKind::Offboard,
];

/// The default of `--max-devices`.
pub const DEFAULT_MAX_DEVICES: u64 = 500;

/// `--wait` knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Time between polls.
    pub poll_interval: Duration,
    /// Give up waiting after this long; open rows stay `pending`/`in_progress`.
    pub timeout: Duration,
}

/// Errors that stop a run before or outside the rows: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input cannot be used.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Rows failed validation and `--skip-invalid` was not given.
    #[error("{}", invalid_rows_message(.file, .problems))]
    InvalidRows {
        /// The input's display name.
        file: String,
        /// Every problem found.
        problems: Vec<crate::input::RowProblem>,
    },
    /// The results file exists and neither `--resume` nor `--force` was given.
    #[error(
        "{0} already exists: add --resume to continue that run, or --force to start over and replace it"
    )]
    ResultsExist(PathBuf),
    /// `--tenants` on a results file that is not one of a run over many
    /// tenants (no shares beside it, or no tenant column).
    #[error(
        "{0}: not the results of a run over many tenants (there is no folder of the tenants' shares beside it, FILE.tenants, or no tenant column); run the command without --tenants, or on the results file a run with --tenants wrote"
    )]
    NotManyTenants(PathBuf),
    /// `--resume` on a results file that no journal belongs to.
    #[error(
        "--resume: {0} exists but has no journal beside it, so what the run did cannot be known and it cannot be continued safely (rows would be sent twice); use another -o, or --force to start over and replace it"
    )]
    NothingToResume(PathBuf),
    /// `--resume` with parameters that change what the journal's rows mean.
    #[error("{}", params_changed_message(.journal, .changes))]
    ParamsChanged {
        /// The journal of the run being resumed.
        journal: PathBuf,
        /// Each difference: the flag, the journal's value, this invocation's.
        changes: Vec<(&'static str, String, String)>,
    },
    /// A journal this version cannot read the run's parameters from.
    #[error(
        "{0} was not written by this version of mdebulk (or is not a journal), so the run cannot be continued safely; finish it with the version that started it, or use another -o (or --force to start over)"
    )]
    UnknownJournal(PathBuf),
    /// The journal could not be written before any row was sent.
    #[error("{0}")]
    JournalFailed(String),
    /// More devices than the blast-radius cap, without `--allow-large`.
    #[error("{0}")]
    TooLarge(String),
    /// Rows would act on devices the protected-devices policy protects.
    #[error("{0}")]
    Protected(String),
    /// `apply`: the tenant's answer changed what rows of the plan would
    /// hit, or the plan cannot be carried out as approved.
    #[error("{0}")]
    PlanChanged(String),
    /// The plan's record could not be written or read.
    #[error(transparent)]
    Plan(#[from] approval::PlanError),
    /// Offboarding needs confirmation.
    #[error("{0}")]
    NotConfirmed(String),
    /// The journal could not be used (locked by another run, I/O).
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// Authentication failed before any row was sent.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The token lacks a permission the file's actions need; nothing sent.
    #[error("{0}")]
    MissingPermission(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A background task failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// A results file (`status`, `undo`, `--wait`) cannot be read or rewritten.
    #[error(transparent)]
    Results(#[from] crate::run::rewrite::RewriteError),
    /// Asking the service for the run's targets (`--tag`, `--has-file`)
    /// failed, so there is nothing to act on; nothing was sent.
    #[error("looking up the target devices failed; nothing was sent: {0}")]
    Targets(crate::api::client::CallError),
    /// The hunting query (`--query`) failed or was refused; nothing was sent.
    #[error("{}", hunting_failed_message(.0))]
    Hunting(crate::api::client::CallError),
    /// The hunting query's result cannot be acted on (no `DeviceId`
    /// column, no `SHA1` column for stop-and-quarantine); nothing was sent.
    #[error("{0}")]
    QueryResult(String),
    /// Looking the run's actions up failed, so nothing could be decided.
    #[error("looking up the actions failed: {0}")]
    Lookup(crate::api::client::CallError),
}

impl RunError {
    /// A stable name for scripts (the `kind` of a JSON error).
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Input(_) => "input",
            RunError::InvalidRows { .. } => "invalid_rows",
            RunError::ResultsExist(_) => "results_exist",
            RunError::NotManyTenants(_) => "not_many_tenants",
            RunError::NothingToResume(_) => "nothing_to_resume",
            RunError::ParamsChanged { .. } => "params_changed",
            RunError::UnknownJournal(_) => "unknown_journal",
            RunError::JournalFailed(_) | RunError::Journal(_) => "journal",
            RunError::NotConfirmed(_) => "not_confirmed",
            RunError::Auth(_) => "auth",
            RunError::MissingPermission(_) => "missing_permission",
            RunError::Io { .. } => "io",
            RunError::Internal(_) => "internal",
            RunError::Results(_) => "results",
            RunError::Lookup(_) => "lookup",
            RunError::Targets(_) => "targets",
            RunError::Hunting(_) => "hunting_query",
            RunError::QueryResult(_) => "query_result",
            RunError::TooLarge(_) => "too_large",
            RunError::Protected(_) => "protected",
            RunError::PlanChanged(_) => "plan_changed",
            RunError::Plan(_) => "plan",
        }
    }
}

/// The first 12 hex digits of the SHA-256 of a query's text: its name in
/// `found_by`.
fn query_digest(kql: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, kql.as_bytes());
    d.as_ref().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The message of a failed hunting query, with what to do about the usual
/// refusals.
fn hunting_failed_message(e: &crate::api::client::CallError) -> String {
    let hint = match e.http_status() {
        Some(400) => {
            "; the service refused the query as written: fix it and run again (README, \"Targets: a hunting query\")"
        }
        Some(401) => {
            "; Microsoft Graph refused the token: it must be a Graph token (audience https://graph.microsoft.com, or the cloud's Graph host)"
        }
        Some(403) => {
            "; the app needs Microsoft Graph's ThreatHunting.Read.All application permission, with admin consent (README, \"Registering the app\")"
        }
        _ => "",
    };
    format!("the hunting query failed; nothing was sent: {e}{hint}")
}

fn params_changed_message(
    journal: &std::path::Path,
    changes: &[(&'static str, String, String)],
) -> String {
    let mut msg = format!(
        "--resume: this invocation's parameters differ from those of the run recorded in {}; nothing was sent:",
        journal.display()
    );
    for (flag, was, now) in changes {
        let show = |v: &str| if v.is_empty() { "(none)".to_string() } else { format!("{v:?}") };
        msg.push_str(&format!(
            "\n  {flag}: the run used {}, this invocation gives {}",
            show(was),
            show(now)
        ));
    }
    msg.push_str("\nTo continue that run, repeat its parameters; for a new run, give another -o (or --force to replace that run's results).");
    msg
}

fn invalid_rows_message(file: &str, problems: &[crate::input::RowProblem]) -> String {
    let mut msg = format!(
        "{file}: {} problem{} found; nothing was sent (fix the rows, or add --skip-invalid to record them as invalid and go on):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(200) {
        msg.push_str(&format!("\n  {file}: {p}"));
    }
    if problems.len() > 200 {
        msg.push_str(&format!("\n  ... and {} more", problems.len() - 200));
    }
    msg
}

/// Runs blocking file work (reading or rewriting a whole file) off the async
/// threads and brings its error home.
pub(crate) async fn blocking<R, E>(
    work: impl FnOnce() -> Result<R, E> + Send + 'static,
) -> Result<R, RunError>
where
    R: Send + 'static,
    E: Into<RunError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RunError::Internal(e.to_string()))?
        .map_err(Into::into)
}

/// `<file>.partial`: where a results file is written until its command
/// ends, then renamed into place.
pub(crate) fn partial_path(file: &std::path::Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Asks a person to type `expected` before something that changes devices;
/// refuses with `refuse` when nobody can be asked (no terminal) or the
/// answer differs. `--yes` is the caller's business.
pub(crate) fn confirm_typed(
    interactive: bool,
    prompt: &str,
    expected: &str,
    refuse: String,
) -> Result<(), RunError> {
    use std::io::{IsTerminal, Write};
    if !interactive || !std::io::stdin().is_terminal() {
        return Err(RunError::NotConfirmed(refuse));
    }
    eprint!("{prompt}\nType '{expected}' to continue: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != expected {
        return Err(RunError::NotConfirmed(format!("not confirmed; nothing was sent ({refuse})")));
    }
    Ok(())
}
