//! `mdebulk undo RESULTS`: reverses exactly what an earlier run did, and
//! nothing else in the tenant.
//!
//! Only rows that show the run's own action are touched: status submitted,
//! pending, in progress or succeeded, with an action id that the service
//! lists as created no earlier than the row's request (an `already_pending`
//! row reports someone else's action and is left alone). The current state of
//! every action is read first, with one paced list call per 10,000 actions
//! created since the run began. Then, per row:
//!
//! - an action still pending or in progress is cancelled (whatever its type:
//!   cancelling is the one undo the service offers for every action);
//! - a succeeded isolate is released, a succeeded restriction lifted —
//!   unless a later release already did it, or a later isolation by someone
//!   else is in force (releasing would end that one too);
//! - a succeeded offboard or stop-and-quarantine is refused, saying why
//!   (offboarding cannot be reversed by API; a quarantined file is restored
//!   from the Defender portal), as is a succeeded release (undo never
//!   isolates a device);
//! - everything else (failed, cancelled, rejected, ...) left no effect and
//!   is skipped, saying why.
//!
//! Releases go through [`submit::execute`](super::submit::execute), so they
//! are paced and retried exactly like a run; cancels through their own
//! paced path with the same care. The undo writes its own results file, one
//! row per row of the original, with the user's columns carried. Running it
//! again is safe: what was undone shows up as already released or cancelled.

use std::collections::{HashMap, HashSet};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::RunError;
use super::call::{Attempts, Ctx, Ended, RetryPolicy};
use super::status::ResultsLock;
use super::stop::Stop;
use super::submit::{CLOCK_SKEW, Job, execute, final_status, list_all_actions};
use super::summary::Summary;
use super::transport::Transport;
use super::wait::{ALREADY_PENDING_CODE, ID_CHUNK};
use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError};
use crate::api::model::MachineAction;
use crate::api::odata::any_of;
use crate::api::route::Api;
use crate::api::time::{format_utc, parse_utc};
use crate::output::{ResultFormat, sink_in};
use crate::pace::{Limit, Pacer};
use crate::results::{ResultRow, Status, Timestamp};
use crate::run::rewrite::{ResultsEntry, ResultsFile, RewriteError};

/// Everything `undo` needs, validated.
#[derive(Debug, Clone)]
pub struct UndoConfig {
    /// The results file of the run to undo.
    pub results: PathBuf,
    /// Where the undo's own results go.
    pub output: PathBuf,
    /// `--yes`: changing devices is confirmed.
    pub yes: bool,
    /// Whether a person can be asked (stdin and stderr are terminals).
    pub interactive: bool,
    /// The `Comment` of the releases and cancels (`None`: one naming the file).
    pub comment: Option<String>,
    /// Quotas per API; empty means no pacing.
    pub limits: Vec<Limit>,
    /// Safety margin added to every window (`None`: the pacer's default).
    pub pace_margin: Option<Duration>,
    /// Retry knobs for transient errors.
    pub policy: RetryPolicy,
    /// Rows in flight at once.
    pub concurrency: usize,
}

/// `hosts.results.csv` → `hosts.results.undo.csv`, beside it (JSONL results
/// give a JSONL undo file, a results workbook an undo workbook).
pub fn default_undo_path(results: &Path) -> PathBuf {
    let stem = results
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into());
    let ext = ResultFormat::for_path(results).extension();
    results.with_file_name(format!("{stem}.undo.{ext}"))
}

/// What undo will do with one row, decided from the row and the current
/// state of the actions.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Nothing to undo; why.
    Skip(String),
    /// Cannot be undone (by API, or without touching someone else's action); why.
    Refuse(String),
    /// Send the reverse action (`Unisolate`, `UnrestrictCodeExecution`) of
    /// the run's succeeded action.
    Release {
        /// The reverse action.
        reverse: ActionKind,
        /// The run's action being reversed.
        of: MachineAction,
    },
    /// Cancel the run's action, still pending or in progress.
    Cancel {
        /// The run's action.
        of: MachineAction,
    },
}

/// The actions created since the run began, by id and by machine.
#[derive(Debug, Default)]
struct Index {
    /// Every listed action.
    actions: Vec<MachineAction>,
    /// Lowercased action id → position.
    by_id: HashMap<String, usize>,
    /// Lowercased machine id → positions.
    by_machine: HashMap<String, Vec<usize>>,
}

impl Index {
    fn new(actions: Vec<MachineAction>) -> Index {
        let mut index = Index::default();
        for (i, a) in actions.iter().enumerate() {
            index.by_id.insert(a.id.to_ascii_lowercase(), i);
            index.by_machine.entry(a.machine_id.to_ascii_lowercase()).or_default().push(i);
        }
        index.actions = actions;
        index
    }

    fn get(&self, id: &str) -> Option<&MachineAction> {
        self.by_id.get(&id.to_ascii_lowercase()).map(|&i| &self.actions[i])
    }

    fn on_machine<'a>(&'a self, machine_id: &str) -> impl Iterator<Item = &'a MachineAction> {
        self.by_machine
            .get(&machine_id.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .map(|&i| &self.actions[i])
    }
}

/// When an action was created, if it says.
fn created(a: &MachineAction) -> Option<SystemTime> {
    a.creation_date_time_utc.as_deref().and_then(parse_utc)
}

/// "by X" for an action's requestor, when known.
fn by(a: &MachineAction) -> String {
    a.requestor.as_deref().filter(|r| !r.is_empty()).map_or(String::new(), |r| format!(" by {r}"))
}

/// Whether a row's status shows an action of the run itself.
fn is_own(status: Status) -> bool {
    matches!(status, Status::Submitted | Status::Pending | Status::InProgress | Status::Succeeded)
}

/// Decides a row from its results-file columns and the listed actions.
fn decide(row: &ResultRow, index: &Index) -> Step {
    let Some(status) = row.status else {
        return Step::Skip("the row has no status: the run never settled it".into());
    };
    let what = row.action.parse::<ActionKind>().ok();
    let name = what.map_or("action", ActionKind::cli_name);
    let someone_elses = Step::Skip(
        "the action was already pending before the run: it is someone else's, not this run's to undo"
            .into(),
    );
    if row.error_code == ALREADY_PENDING_CODE || row.error_code == "ActiveRequestAlreadyExists" {
        // An already_pending row that `--wait` or `status` followed to its end.
        return someone_elses;
    }
    match status {
        Status::AlreadyPending => someone_elses,
        Status::AlreadyDone => Step::Skip(
            "the device was already in the state the run asked for: the run sent nothing to undo"
                .into(),
        ),
        Status::Planned
        | Status::Protected
        | Status::NotFound
        | Status::Ambiguous
        | Status::Rejected
        | Status::Invalid
        | Status::Duplicate
        | Status::NotSent
        | Status::Error => Step::Skip(format!("the run did nothing on this device ({status})")),
        Status::InDoubt => Step::Refuse(
            "the run's request may have reached the device but was never confirmed: check the device in the Defender portal and undo it there if needed"
                .into(),
        ),
        Status::Failed | Status::TimedOut | Status::Cancelled => {
            Step::Skip(format!("the {name} never took effect ({status})"))
        }
        Status::Skipped | Status::Refused => {
            Step::Skip(format!("a row of an undo ({status}): nothing of a run to undo"))
        }
        Status::Submitted | Status::Pending | Status::InProgress | Status::Succeeded => {
            let Some(kind) = what else {
                return Step::Refuse(format!("unknown action {:?}: cannot tell how to undo it", row.action));
            };
            let id = row.action_id.trim();
            if id.is_empty() {
                return Step::Skip("no action id was recorded for the row: nothing to undo".into());
            }
            let Some(ours) = index.get(id) else {
                return Step::Refuse(format!(
                    "action {id} is not among the actions created since the run: check the device before undoing anything by hand"
                ));
            };
            if !ours.machine_id.eq_ignore_ascii_case(&row.machine_id) {
                return Step::Refuse(format!(
                    "action {id} is on another device ({}) than the row's: left alone",
                    ours.machine_id
                ));
            }
            let requested = row.requested_at.map(Timestamp::system_time);
            if let (Some(r), Some(c)) = (requested, created(ours))
                && c + CLOCK_SKEW < r
            {
                return Step::Skip(format!(
                    "action {id} was created before the run's request: it was someone else's, already pending"
                ));
            }
            decide_state(kind, ours, index)
        }
    }
}

/// Decides from the current state of the run's own action `ours` (of kind `kind`).
fn decide_state(kind: ActionKind, ours: &MachineAction, index: &Index) -> Step {
    let id = &ours.id;
    match ours.status.as_str() {
        "Pending" | "InProgress" => Step::Cancel { of: ours.clone() },
        "Failed" | "TimeOut" => {
            Step::Skip(format!("the {kind} never took effect (action {id} is {})", ours.status))
        }
        "Cancelled" => Step::Skip(format!("action {id} is already cancelled")),
        "Succeeded" => match kind {
            ActionKind::Isolate => release(ActionKind::Unisolate, ours, index),
            ActionKind::RestrictCodeExecution => {
                release(ActionKind::UnrestrictCodeExecution, ours, index)
            }
            ActionKind::Offboard => Step::Refuse(
                "offboarding cannot be undone through the API: onboard the device again with the onboarding package from the Defender portal"
                    .into(),
            ),
            ActionKind::StopAndQuarantineFile => Step::Refuse(
                "a quarantined file cannot be restored through the API: restore it from the Defender portal (Action center, or the file's page)"
                    .into(),
            ),
            ActionKind::RunAntiVirusScan => {
                Step::Skip("the scan has finished: a scan leaves nothing to undo".into())
            }
            ActionKind::CollectInvestigationPackage => {
                Step::Skip("the package has been collected: nothing to undo".into())
            }
            ActionKind::Unisolate | ActionKind::UnrestrictCodeExecution => Step::Refuse(format!(
                "the {kind} went through; undo never isolates or restricts a device again: run that action on purpose if it is wanted"
            )),
        },
        other => Step::Refuse(format!(
            "action {id} has status {other:?}, which undo does not know: check the device"
        )),
    }
}

/// Releases the run's succeeded `ours` with `reverse`, unless a later
/// action on the device already did (or is doing) it, or a later action of
/// the same type by someone else is in force.
fn release(reverse: ActionKind, ours: &MachineAction, index: &Index) -> Step {
    let Some(since) = created(ours) else {
        return Step::Refuse(format!(
            "action {} has no creation time: cannot tell what happened on the device since",
            ours.id
        ));
    };
    let later = index
        .on_machine(&ours.machine_id)
        .filter(|b| b.id != ours.id && created(b).is_some_and(|c| c > since))
        .filter(|b| {
            (b.kind == reverse.type_name()
                && matches!(b.status.as_str(), "Pending" | "InProgress" | "Succeeded"))
                || (b.kind == ours.kind && b.status == "Succeeded")
        })
        .max_by_key(|b| created(b));
    match later {
        Some(b) if b.kind == reverse.type_name() => Step::Skip(format!(
            "already done: {} action {}{} ({})",
            reverse.cli_name(),
            b.id,
            by(b),
            b.status
        )),
        Some(b) => Step::Refuse(format!(
            "the device got another {} later (action {}{}): releasing it would undo that one too",
            b.kind,
            b.id,
            by(b)
        )),
        None => Step::Release { reverse, of: ours.clone() },
    }
}

/// What the first pass over the results file found.
pub(super) struct Survey {
    /// The user's columns.
    user_columns: Vec<String>,
    /// The file's format.
    format: ResultFormat,
    /// The file's CSV dialect, which the undo results repeat.
    dialect: crate::results::dialect::Dialect,
    /// Rows that show an action of the run: the most undo may change.
    pub(super) own: u64,
    /// Their action ids (lowercased).
    ids: Vec<String>,
    /// Earliest request time among them.
    since: Option<SystemTime>,
}

pub(super) fn survey(path: &Path) -> Result<Survey, RunError> {
    let file = ResultsFile::open(path)?;
    let mut s = Survey {
        user_columns: file.user_columns().to_vec(),
        format: file.format(),
        dialect: file.dialect(),
        own: 0,
        ids: Vec::new(),
        since: None,
    };
    for entry in file.entries()? {
        let row = entry?.row;
        if row.status.is_some_and(is_own) && !row.action_id.trim().is_empty() {
            s.own += 1;
            s.ids.push(row.action_id.trim().to_ascii_lowercase());
            if let Some(t) = row.requested_at.or(row.finished_at).map(Timestamp::system_time) {
                s.since = Some(s.since.map_or(t, |e: SystemTime| e.min(t)));
            }
        }
    }
    Ok(s)
}

/// Undo changes devices: it needs `--yes` or a typed confirmation.
pub(super) fn confirm(config: &UndoConfig, own: u64) -> Result<(), RunError> {
    if own == 0 || config.yes {
        return Ok(());
    }
    let file = config.results.display();
    let refuse = format!(
        "undo changes devices (up to {own} row(s) of {file} may be released or cancelled): add --yes to confirm"
    );
    super::confirm_typed(
        config.interactive,
        &format!(
            "About to undo what {file} did on up to {own} device(s): release isolations, lift app restrictions, cancel actions still pending."
        ),
        &format!("undo {own}"),
        refuse,
    )
}

/// Undoes what the run behind `config.results` did and writes the undo's
/// own results to `config.output`.
pub async fn undo<T: Transport>(
    config: &UndoConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let path = config.results.clone();
    let first = {
        let path = path.clone();
        super::blocking(move || survey(&path)).await?
    };
    confirm(config, first.own)?;
    // Hold the run's journal lock: no run or `status` may rewrite the file
    // while it is being undone, and two undos cannot race.
    let lock = ResultsLock::take(&path)?;
    let result = undo_locked(config, transport, &stop, first).await;
    lock.release().await;
    let mut summary = result?;
    summary.stamp(started, &stop);
    Ok(summary)
}

/// The work done under the journal's lock.
async fn undo_locked<T: Transport>(
    config: &UndoConfig,
    transport: Arc<T>,
    stop: &Stop,
    first: Survey,
) -> Result<Summary, RunError> {
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx = Ctx::new(transport, pacer, None, config.policy.clone(), stop.clone());
    let index = if first.own > 0 {
        super::call::first_token(ctx.transport.as_ref(), &config.policy, stop)
            .await
            .map_err(RunError::Auth)?;
        Index::new(lookup(&ctx, &first).await.map_err(RunError::Lookup)?)
    } else {
        Index::default()
    };
    let comment = config.comment.clone().unwrap_or_else(|| {
        let name = config.results.file_name().map_or_else(
            || config.results.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("mdebulk undo of {name}")
    });

    let partial = super::partial_path(&config.output);
    let io = |source| RunError::Io { path: partial.clone(), source };
    let out = crate::private::create(&partial).map_err(io)?;
    let format = ResultFormat::for_path(&config.output);
    let mut sink = sink_in(
        format,
        first.dialect,
        BufWriter::with_capacity(256 * 1024, out),
        &first.user_columns,
    );

    let (tx, mut rx) =
        mpsc::channel::<Result<ResultsEntry, RewriteError>>(config.concurrency * 2 + 16);
    let reader = {
        let (path, format) = (config.results.clone(), first.format);
        tokio::task::spawn_blocking(move || -> Result<(), RewriteError> {
            let file = ResultsFile::open_as(&path, format)?;
            for entry in file.entries()? {
                if tx.blocking_send(entry).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    let entries = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (ctx_ref, index_ref, comment_ref) = (&ctx, &index, comment.as_str());
    let mut rows = entries
        .map(move |entry| async move {
            let entry = entry?;
            let row = undo_row(ctx_ref, index_ref, &entry.row, comment_ref).await;
            Ok::<_, RewriteError>((entry.user, row, entry.row.tag_result))
        })
        .buffered(config.concurrency.max(1));
    let mut summary = Summary::new(Some(config.output.clone()), false);
    summary.heading = Some("undo");
    // `--tag-result` of the run: tag → (line, machine) of the rows whose
    // effect is gone now, so the tag comes off.
    let mut untag: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
    while let Some(next) = rows.next().await {
        let (user, row, tag) = next?;
        summary.count(&row);
        if !tag.is_empty() && takes_the_tag_off(&row) {
            untag.entry(tag).or_default().push((row.line, row.machine_id.to_ascii_lowercase()));
        }
        sink.write_row(&user, &row).map_err(io)?;
    }
    drop(rows);
    reader.await.map_err(|e| RunError::Internal(e.to_string()))??;
    sink.finish().map_err(io)?;
    drop(sink);
    std::fs::rename(&partial, &config.output)
        .map_err(|source| RunError::Io { path: config.output.clone(), source })?;
    remove_tags(&ctx, config, untag, &mut summary).await?;
    summary.throttled = ctx.throttled.load(Ordering::Relaxed);
    Ok(summary)
}

/// Whether an undo row leaves the run's effect gone from the device, so
/// that the run's `--tag-result` tag comes off too: the reverse action or
/// the cancel went through (or one is pending already), or there was
/// nothing left to undo (released already, never took effect). Not when
/// the undo was refused, failed or stopped: the device stays as the run
/// left it, and so does its tag.
fn takes_the_tag_off(row: &ResultRow) -> bool {
    matches!(
        row.status,
        Some(Status::Submitted | Status::Succeeded | Status::AlreadyPending | Status::Skipped)
    ) && !row.machine_id.is_empty()
}

/// Takes the run's `--tag-result` tag off the devices whose rows undo
/// reversed (the same batched call, `Action: Remove`), then records it in
/// the undo results' `tag_result` column.
async fn remove_tags<T: Transport>(
    ctx: &Ctx<T>,
    config: &UndoConfig,
    untag: std::collections::BTreeMap<String, Vec<(u64, String)>>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let mut stats: Option<super::summary::TagStats> = None;
    let mut marks: HashMap<u64, String> = HashMap::new();
    for (tag, rows) in untag {
        let mut machines: Vec<String> = Vec::new();
        for (_, m) in &rows {
            if !machines.contains(m) {
                machines.push(m.clone());
            }
        }
        let out =
            super::tagging::write_tags(ctx, &tag, false, &machines, &HashSet::new(), None).await;
        for (line, m) in &rows {
            if out.done.contains(m) {
                marks.insert(*line, tag.clone());
            }
        }
        let s = stats.get_or_insert_with(|| super::summary::TagStats {
            tag: tag.clone(),
            add: false,
            ..Default::default()
        });
        if s.tag != tag {
            // Rows of one run carry one tag; a file merged from runs may
            // carry several: the summary names them together.
            s.tag = format!("{}, {tag}", s.tag);
        }
        s.done += out.done.len() as u64;
        s.not_done += out.not_done;
        s.calls += out.calls;
        if s.error.is_none() {
            s.error = out.error;
        }
    }
    if !marks.is_empty() {
        let (path, format) = (config.output.clone(), ResultFormat::for_path(&config.output));
        super::blocking(move || {
            crate::run::rewrite::rewrite_with(&path, format, |row| match marks.get(&row.line) {
                Some(tag) if row.tag_result != *tag => {
                    row.tag_result.clone_from(tag);
                    true
                }
                _ => false,
            })
        })
        .await?;
    }
    summary.tagged = stats;
    Ok(())
}

/// The current state of every action created since the run began (one
/// paced list call per 10,000), plus, looked up by id, the rows' actions
/// created before it (an already pending action of someone else's that a
/// wait gave a final status).
async fn lookup<T: Transport>(
    ctx: &Ctx<T>,
    first: &Survey,
) -> Result<Vec<MachineAction>, CallError> {
    let mut actions = match first.since {
        Some(since) => {
            let from = since.checked_sub(CLOCK_SKEW).unwrap_or(since);
            list_all_actions(ctx, &format!("creationDateTimeUtc ge {}", format_utc(from))).await?
        }
        None => Vec::new(),
    };
    let listed: HashSet<String> = actions.iter().map(|a| a.id.to_ascii_lowercase()).collect();
    let mut missing: Vec<&String> = first.ids.iter().filter(|id| !listed.contains(*id)).collect();
    missing.sort();
    missing.dedup();
    for chunk in missing.chunks(ID_CHUNK) {
        actions.extend(list_all_actions(ctx, &any_of("id", chunk)).await?);
    }
    Ok(actions)
}

/// Undoes one row and returns the undo's result row for it.
async fn undo_row<T: Transport>(
    ctx: &Ctx<T>,
    index: &Index,
    original: &ResultRow,
    comment: &str,
) -> ResultRow {
    let mut step = decide(original, index);
    // A cancel may find the action final by then; decide once more from its
    // fresh state (a succeeded isolate is then released instead).
    for round in 0..2 {
        match step {
            Step::Skip(why) => return settled(original, Status::Skipped, why),
            Step::Refuse(why) => return settled(original, Status::Refused, why),
            Step::Release { reverse, of } => {
                return release_row(ctx, original, reverse, &of, comment).await;
            }
            Step::Cancel { of } => match cancel(ctx, original, &of, comment).await {
                Cancel::Done(row) => return *row,
                Cancel::Final(now) if now.status == "Cancelled" => {
                    // Cancelled meanwhile, by us (an unanswered attempt) or
                    // by someone else: the run's action is off either way.
                    let mut row = cancel_row(original, &now);
                    row.status = Some(Status::Succeeded);
                    row.action_status = now.status.clone();
                    row.error_message =
                        format!("action {} was cancelled{}", now.id, by_cancel(&now));
                    return finish(row);
                }
                Cancel::Final(now) if round == 0 => {
                    let kind = original.action.parse::<ActionKind>().ok();
                    step = match kind {
                        Some(kind) => decide_state(kind, &now, index),
                        None => Step::Refuse(format!("unknown action {:?}", original.action)),
                    };
                }
                Cancel::Final(now) => {
                    return settled(
                        original,
                        Status::Error,
                        format!(
                            "action {} changed while it was being undone ({}); run undo again",
                            now.id, now.status
                        ),
                    );
                }
            },
        }
    }
    settled(
        original,
        Status::Error,
        "the action kept changing while it was being undone; run undo again".into(),
    )
}

/// "by X" for whoever cancelled an action, when known.
fn by_cancel(a: &MachineAction) -> String {
    a.cancellation_requestor
        .as_deref()
        .filter(|r| !r.is_empty())
        .map_or(String::new(), |r| format!(" by {r}"))
}

/// An undo row settled without a request.
fn settled(original: &ResultRow, status: Status, why: String) -> ResultRow {
    ResultRow {
        device_name: original.device_name.clone(),
        ..ResultRow::settled(original.line, original.machine_id.clone(), "", status, why)
    }
}

/// Stamps the row as finished now.
fn finish(mut row: ResultRow) -> ResultRow {
    row.finished_at = Some(Timestamp::now());
    row
}

/// Sends the reverse action through the run's own per-row path.
async fn release_row<T: Transport>(
    ctx: &Ctx<T>,
    original: &ResultRow,
    reverse: ActionKind,
    of: &MachineAction,
    comment: &str,
) -> ResultRow {
    let job = Job {
        // Undo keeps no journal: the key is only the row's name.
        key: format!("undo:{}", of.id.to_ascii_lowercase()),
        line: original.line,
        machine_id: of.machine_id.to_ascii_lowercase(),
        device_name: of.computer_dns_name.clone().unwrap_or_else(|| original.device_name.clone()),
        action: reverse,
        body: ActionBody::new(comment),
    };
    match execute(ctx, &job).await {
        Some(mut row) => {
            if row.status == Some(Status::AlreadyPending) {
                row.error_message = format!(
                    "a {} is already pending on the device: the isolation of action {} is being lifted",
                    reverse.cli_name(),
                    of.id
                );
            }
            row
        }
        None => interrupted(original),
    }
}

/// The row of a step a stop left undone.
fn interrupted(original: &ResultRow) -> ResultRow {
    let mut row = settled(
        original,
        Status::NotSent,
        "the undo was stopped before this row: run it again (what is already undone is skipped)"
            .into(),
    );
    row.error_code = "Interrupted".into();
    row
}

/// How a cancel ended.
enum Cancel {
    /// Settled: cancelled, refused, failed.
    Done(Box<ResultRow>),
    /// The service refused to cancel because the action is final now (or a
    /// cancel of ours went through unanswered): its fresh state.
    Final(Box<MachineAction>),
}

/// The undo row of a cancel of `of`.
fn cancel_row(original: &ResultRow, of: &MachineAction) -> ResultRow {
    ResultRow {
        action_id: of.id.clone(),
        device_name: of.computer_dns_name.clone().unwrap_or_else(|| original.device_name.clone()),
        ..ResultRow::new(original.line, original.machine_id.clone(), "cancel")
    }
}

/// Cancels the run's action `of`: paced under the cancel API's quota,
/// 429s wait for Retry-After (free), a 401 fetches a fresh token once,
/// transient errors back off up to the policy's attempts. Cancelling is
/// safe to repeat: a repeat of a cancel that went through is refused with
/// 400, and the action is then looked up to see where it stands.
async fn cancel<T: Transport>(
    ctx: &Ctx<T>,
    original: &ResultRow,
    of: &MachineAction,
    comment: &str,
) -> Cancel {
    let api = Api::CancelAction;
    let mut row = cancel_row(original, of);
    let mut attempts = Attempts::new(ctx, api);
    loop {
        let Ok(started) = attempts.turn().await else {
            return Cancel::Done(Box::new(interrupted(original)));
        };
        row.requested_at.get_or_insert_with(Timestamp::now);
        row.attempts += 1;
        let result = ctx.transport.cancel_action(&of.id, Some(comment)).await;
        attempts.answered(started);
        let err = match result {
            Ok(reply) => {
                row.http_status = Some(reply.status);
                row.action_status = reply.value.status.clone();
                row.error_code.clear();
                row.error_message.clear();
                row.status = Some(if reply.value.status == "Cancelled" {
                    Status::Succeeded
                } else {
                    row.error_message = format!(
                        "the service accepted the cancel but the action is {}",
                        reply.value.status
                    );
                    Status::Error
                });
                return Cancel::Done(Box::new(finish(row)));
            }
            Err(e) => e,
        };
        row.http_status = err.http_status();
        row.error_code = err.code().to_string();
        row.error_message = err.to_string();
        if let CallError::Api { status: 400, .. } = err {
            return refused_cancel(ctx, original, of, row).await;
        }
        match attempts.after(err).await {
            Ok(()) => {}
            Err(Ended::Stopped | Ended::Fatal(_)) => {
                return Cancel::Done(Box::new(interrupted(original)));
            }
            Err(Ended::GaveUp(err)) => {
                row.status = Some(final_status(&err));
                return Cancel::Done(Box::new(finish(row)));
            }
        }
    }
}

/// A cancel the service refused (400): a repeat of a cancel that went
/// through, or an action already final. The action is looked up to see
/// where it stands.
async fn refused_cancel<T: Transport>(
    ctx: &Ctx<T>,
    original: &ResultRow,
    of: &MachineAction,
    mut row: ResultRow,
) -> Cancel {
    let filter = any_of("id", [&of.id]);
    match list_all_actions(ctx, &filter).await {
        Ok(found) => match found.into_iter().find(|a| a.id.eq_ignore_ascii_case(&of.id)) {
            Some(now) if now.is_final() => Cancel::Final(Box::new(now)),
            _ => {
                row.status = Some(Status::Rejected);
                Cancel::Done(Box::new(finish(row)))
            }
        },
        Err(CallError::Stopped) => Cancel::Done(Box::new(interrupted(original))),
        Err(e) => {
            row.status = Some(Status::Error);
            row.error_message =
                format!("{}; looking the action up failed too ({e})", row.error_message);
            Cancel::Done(Box::new(finish(row)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::transport::scripted::Scripted;

    const M1: &str = "1111111111111111111111111111111111111111";
    const M2: &str = "2222222222222222222222222222222222222222";
    const T0: &str = "2025-06-01T08:00:00.0000000Z";

    /// An action `secs` seconds after [`T0`].
    fn action(id: &str, machine: &str, kind: &str, status: &str, secs: u64) -> MachineAction {
        let at = parse_utc(T0).unwrap() + Duration::from_secs(secs);
        serde_json::from_value(serde_json::json!({
            "id": id,
            "type": kind,
            "status": status,
            "machineId": machine,
            "requestor": "someone",
            "creationDateTimeUtc": format_utc(at),
        }))
        .unwrap()
    }

    /// A row of the run: `action` on M1 with action id `a-1`, requested at T0.
    fn row(action: &str, status: Status) -> ResultRow {
        ResultRow {
            line: 2,
            machine_id: M1.into(),
            action: action.into(),
            status: Some(status),
            action_id: "a-1".into(),
            requested_at: Timestamp::parse(T0),
            ..ResultRow::default()
        }
    }

    fn is_skip(step: &Step, text: &str) -> bool {
        matches!(step, Step::Skip(why) if why.contains(text))
    }

    fn is_refuse(step: &Step, text: &str) -> bool {
        matches!(step, Step::Refuse(why) if why.contains(text))
    }

    #[test]
    fn a_succeeded_isolate_is_released_and_a_pending_one_cancelled() {
        let index = Index::new(vec![action("a-1", M1, "Isolate", "Succeeded", 1)]);
        let step = decide(&row("isolate", Status::Succeeded), &index);
        assert!(
            matches!(&step, Step::Release { reverse: ActionKind::Unisolate, of } if of.id == "a-1"),
            "{step:?}"
        );
        // The row's status may be stale: the server's state decides.
        let step = decide(&row("isolate", Status::Submitted), &index);
        assert!(matches!(step, Step::Release { .. }), "{step:?}");
        let index = Index::new(vec![action("a-1", M1, "RestrictCodeExecution", "Succeeded", 1)]);
        let step = decide(&row("restrict-code-execution", Status::Succeeded), &index);
        assert!(
            matches!(step, Step::Release { reverse: ActionKind::UnrestrictCodeExecution, .. }),
            "{step:?}"
        );
        for kind in ["Isolate", "Offboard", "StopAndQuarantineFile", "RunAntiVirusScan"] {
            for status in ["Pending", "InProgress"] {
                let index = Index::new(vec![action("a-1", M1, kind, status, 1)]);
                let cli = ActionKind::from_type_name(kind).unwrap().cli_name();
                let step = decide(&row(cli, Status::Submitted), &index);
                assert!(matches!(step, Step::Cancel { .. }), "{kind} {status}: {step:?}");
            }
        }
    }

    #[test]
    fn later_actions_on_the_device_are_respected() {
        let ours = action("a-1", M1, "Isolate", "Succeeded", 1);
        let index = Index::new(vec![
            ours.clone(),
            action("b", M1, "Unisolate", "Succeeded", 5),
            action("old", M1, "Unisolate", "Succeeded", 0),
        ]);
        let step = decide(&row("isolate", Status::Succeeded), &index);
        assert!(is_skip(&step, "already done: unisolate action b"), "{step:?}");

        let index = Index::new(vec![
            ours.clone(),
            action("b", M1, "Unisolate", "Succeeded", 5),
            action("c", M1, "Isolate", "Succeeded", 9),
        ]);
        let step = decide(&row("isolate", Status::Succeeded), &index);
        assert!(is_refuse(&step, "releasing it would undo that one too"), "{step:?}");

        // A later isolate still pending, a failed release, and actions on
        // other devices do not count.
        let index = Index::new(vec![
            ours,
            action("c", M1, "Isolate", "Pending", 9),
            action("d", M1, "Unisolate", "Failed", 7),
            action("e", M2, "Unisolate", "Succeeded", 8),
        ]);
        let step = decide(&row("isolate", Status::Succeeded), &index);
        assert!(matches!(step, Step::Release { .. }), "{step:?}");
    }

    #[test]
    fn what_cannot_be_reversed_is_refused_and_what_left_no_effect_skipped() {
        for (kind, cli, text) in [
            ("Offboard", "offboard", "offboarding cannot be undone"),
            ("StopAndQuarantineFile", "stop-and-quarantine", "Defender portal"),
            ("Unisolate", "unisolate", "never isolates"),
        ] {
            let index = Index::new(vec![action("a-1", M1, kind, "Succeeded", 1)]);
            let step = decide(&row(cli, Status::Succeeded), &index);
            assert!(is_refuse(&step, text), "{kind}: {step:?}");
        }
        for (kind, cli, text) in [
            ("RunAntiVirusScan", "scan", "scan leaves nothing"),
            ("CollectInvestigationPackage", "collect-investigation-package", "collected"),
        ] {
            let index = Index::new(vec![action("a-1", M1, kind, "Succeeded", 1)]);
            let step = decide(&row(cli, Status::Succeeded), &index);
            assert!(is_skip(&step, text), "{kind}: {step:?}");
        }
        for status in ["Failed", "TimeOut"] {
            let index = Index::new(vec![action("a-1", M1, "Isolate", status, 1)]);
            let step = decide(&row("isolate", Status::Submitted), &index);
            assert!(is_skip(&step, "never took effect"), "{status}: {step:?}");
        }
        let index = Index::new(vec![action("a-1", M1, "Isolate", "Cancelled", 1)]);
        assert!(is_skip(&decide(&row("isolate", Status::Pending), &index), "already cancelled"));
    }

    #[test]
    fn only_the_runs_own_actions_are_touched() {
        let index = Index::new(vec![action("a-1", M1, "Isolate", "Pending", 1)]);
        for status in [Status::AlreadyPending, Status::Rejected, Status::Duplicate, Status::Error] {
            let step = decide(&row("isolate", status), &index);
            assert!(matches!(step, Step::Skip(_)), "{status}: {step:?}");
        }
        // An already pending row that a wait gave a final status.
        let mut r = row("isolate", Status::Succeeded);
        r.error_code = ALREADY_PENDING_CODE.into();
        assert!(is_skip(&decide(&r, &index), "someone else's"));
        // An action created well before the request is not the run's.
        let index = Index::new(vec![action("a-1", M1, "Isolate", "Succeeded", 0)]);
        let mut r = row("isolate", Status::Succeeded);
        r.requested_at = Some(Timestamp::from(parse_utc(T0).unwrap() + Duration::from_secs(3600)));
        assert!(is_skip(&decide(&r, &index), "created before the run's request"));
        // An action on another device, or one the service does not list.
        let index = Index::new(vec![action("a-1", M2, "Isolate", "Succeeded", 1)]);
        assert!(is_refuse(&decide(&row("isolate", Status::Succeeded), &index), "another device"));
        let index = Index::default();
        assert!(is_refuse(&decide(&row("isolate", Status::Succeeded), &index), "not among"));
        // In doubt: someone must look.
        assert!(matches!(decide(&row("isolate", Status::InDoubt), &index), Step::Refuse(_)));
    }

    #[test]
    fn the_default_undo_path_sits_beside_the_results() {
        assert_eq!(
            default_undo_path(Path::new("d/hosts.results.csv")),
            PathBuf::from("d/hosts.results.undo.csv")
        );
        assert_eq!(default_undo_path(Path::new("run.jsonl")), PathBuf::from("run.undo.jsonl"));
    }

    /// A cancel waiting out a one-hour Retry-After, or a transient error's
    /// backoff, ends at the stop: the undo row says it was not sent.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_cancel_in_its_retry_after_or_its_backoff() {
        let answers: [fn() -> CallError; 2] = [
            || CallError::Throttled { retry_after: Some(Duration::from_secs(3600)), error: None },
            || CallError::Api {
                status: 503,
                error: None,
                retry_after: Some(Duration::from_secs(600)),
            },
        ];
        for answer in answers {
            let service = Scripted::new().on_cancel(move |_| Err(answer()));
            let ctx = Ctx::new(
                std::sync::Arc::new(service),
                std::sync::Arc::new(crate::pace::Pacer::new(&[], None)),
                None,
                RetryPolicy::default(),
                Stop::new(),
            );
            let stop = ctx.stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                stop.trigger(crate::run::StopReason::Interrupted);
            });
            let original = row("isolate", Status::Submitted);
            let of = action("a1", M1, "Isolate", "Pending", 0);
            let t0 = tokio::time::Instant::now();
            let Cancel::Done(done) = cancel(&ctx, &original, &of, "undo").await else {
                panic!("a cancel cut short is settled")
            };
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            assert_eq!(done.status, Some(Status::NotSent));
            assert_eq!(ctx.transport.count("cancel"), 1);
        }
    }
}
