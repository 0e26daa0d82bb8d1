//! A run, phase by phase, each a function of its own that [`run`] calls in
//! order: [`survey_input`] (read and validate everything once), [`set_up`]
//! (results target, credentials, journal and its parameters, the call
//! engine), [`settle_earlier`] (rows an earlier run left in doubt, looked
//! up), the look-ups of `resolve`, [`execute`] (send, record, write),
//! [`wait_for_outcomes`] (`--wait`) and [`finish`].
//!
//! Execution shape: a reader thread streams the input a second time and
//! turns each selected row into an [`Item`]: settled at once, or a [`Job`] to
//! send. Items flow through a bounded channel into `buffer_unordered`, where
//! jobs run as spawned tasks (so a slow row never stalls the others), and the
//! settled rows are put back in input order before they reach the results
//! file. Memory stays flat whatever the input size: the channel, the pool and
//! the reorder buffer are all bounded by the concurrency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::call::Ctx;
use super::identity::{RowKey, RunParams};
use super::journal::{Intent, Journal, Recovered, journal_path};
use super::plan::{Survey, plan_selected, survey_checking, survey_shares};
use super::progress::Progress;
use super::resolve::{self, Prepared};
use super::stop::{Stop, StopReason};
use super::submit::{Job, execute as execute_row, lookup_actions, pick_match};
use super::summary::Summary;
use super::transport::Transport;
use super::wait::{Open, finish_run};
use super::{Existing, ResultsTarget, RunConfig, RunError};
use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError};
use crate::api::time::format_utc;
use crate::input::{Columns, Input, Record, Role, RowPlan, RowProblem, Target};
use crate::output::{self, ResultFormat, ResultSink};
use crate::pace::Pacer;
use crate::results::{ResultRow, Status, Timestamp};

/// Longest time a settled row waits in the results writer's buffer.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// One row on its way to the results file.
enum Item {
    /// Decided without a request (or earlier): write as is.
    Settled {
        /// Position in the output.
        seq: u64,
        /// The user's columns.
        user: Vec<String>,
        /// The result.
        row: ResultRow,
        /// The identity to record it under in the journal (new decisions
        /// about the device only: nothing that the input alone decides).
        journal: Option<RowKey>,
    },
    /// To be sent.
    Send {
        /// Position in the output.
        seq: u64,
        /// The user's columns.
        user: Vec<String>,
        /// The request.
        job: Job,
    },
}

/// A row back from the pool, settled (or `not_sent`).
struct Done {
    seq: u64,
    user: Vec<String>,
    row: ResultRow,
}

/// Runs the whole thing against `transport`: the phases below, in order.
pub async fn run<T: Transport>(
    config: &RunConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<Summary, RunError> {
    run_surveyed(config, transport, stop, None).await
}

/// [`run`], with the input already read and surveyed when `surveyed` is
/// given (one tenant's share of a run over many, whose survey the whole
/// run made in one pass for every tenant).
pub(super) async fn run_surveyed<T: Transport>(
    config: &RunConfig,
    transport: Arc<T>,
    stop: Stop,
    surveyed: Option<(Arc<Input>, Survey)>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let targeted;
    let config = match &config.targets {
        Some(targets) => {
            targeted = gather_targets(config, targets, &transport, &stop).await?;
            &targeted
        }
        None => config,
    };
    let (input, survey) = match surveyed {
        Some(surveyed) => surveyed,
        None => survey_input(config, false).await?,
    };
    let mut setup = set_up(config, transport, &stop, &survey).await?;
    let mut summary = Summary::new(setup.results.clone(), config.dry_run);
    summary.not_selected = survey.not_selected;
    let mut recovered = std::mem::take(&mut setup.recovered);
    let earlier_tags = std::mem::take(&mut recovered.tagged);
    let earlier = settle_earlier(&setup.ctx, recovered, &survey, config, &mut summary).await;
    // Look devices up, pre-flight, OS check (read calls only).
    let mut prepared = resolve::prepare(&setup.ctx, &survey.lookups, config.pick_latest).await;
    if config.skip_satisfied && survey.per_action.keys().any(|a| super::devices::TYPES.contains(a))
    {
        // Without the answer, satisfied rows would be sent again: stop
        // rather than send what the user asked to skip.
        let (states, actions) =
            super::devices::containment_now(&setup.ctx).await.map_err(RunError::Lookup)?;
        tracing::info!(actions, "--skip-satisfied: containment read");
        prepared.satisfied = Some(states);
    }
    let (prepared, earlier) = match refuse_rows(config, &input, prepared, earlier).await {
        Ok(kept) => kept,
        Err(e) => {
            abandon(config, setup).await;
            return Err(e);
        }
    };
    let executed =
        execute(config, &setup, input, &survey, prepared, earlier, &mut summary, started).await?;
    tag_results(config, &setup, &executed, earlier_tags, &mut summary).await?;
    wait_for_outcomes(config, &setup, executed.open, &mut summary).await?;
    finish(setup, executed.results_whole, &mut summary).await?;
    // A plan a stop cut short is not one to approve: no record, no digest.
    if config.dry_run
        && let Some(plan) = &summary.results
        && executed.results_whole
        && !stop.is_set()
    {
        let params = run_params(config);
        let plan = plan.clone();
        let planner = config.planner.clone();
        let columns = super::approval::PlanColumns::of(&config.input.columns);
        let record = super::blocking(move || {
            super::approval::write_record(&plan, params, &planner, columns)
        })
        .await?;
        summary.plan_digest = Some(record.digest);
    }
    summary.approval = config.approval.clone();
    summary.stamp(started, &stop);
    Ok(summary)
}

/// Phase 0, for a run without an input file: asks the service for its
/// targets and writes them to the targets file beside the results, which
/// becomes the run's input. An existing results file is refused first (as
/// the set-up would), so a refused run does not replace the targets of the
/// run that wrote it.
async fn gather_targets<T: Transport>(
    config: &RunConfig,
    targets: &super::Targets,
    transport: &Arc<T>,
    stop: &Stop,
) -> Result<RunConfig, RunError> {
    let ResultsTarget::File(results) = &config.results else {
        return Err(RunError::Internal(
            "a run over --tag or --has-file writes its targets beside a results file".into(),
        ));
    };
    check_existing(config, results)?;
    let path = super::targets::targets_path(results);
    super::targets::materialise(config, targets, transport.clone(), stop, &path).await?;
    let mut config = config.clone();
    config.input.path = Some(path);
    config.input.format = Some(crate::input::InputFormat::Csv);
    Ok(config)
}

/// Phase 1, the survey: reads the whole input once and validates every row
/// (a file with invalid rows sends nothing, unless `--skip-invalid`), then
/// asks for the confirmation irreversible actions need. With `shares`, each
/// tenant's share of the rows is surveyed too ([`Survey::shares`]).
pub(super) async fn survey_input(
    config: &RunConfig,
    shares: bool,
) -> Result<(Arc<Input>, Survey), RunError> {
    let input = Arc::new(Input::open(&config.input)?);
    let survey: Survey = {
        let (input, defaults, only) = (input.clone(), config.defaults.clone(), config.only.clone());
        // A dry run's plan, and an apply of one, know every id is in the
        // tenant before anything is sent.
        let seed = resolve::Lookups {
            check_ids: config.dry_run || config.approval.is_some(),
            protect: config.protect.clone(),
            ..resolve::Lookups::default()
        };
        super::blocking(move || match shares {
            true => survey_shares(&input, &defaults, only.as_deref(), seed),
            false => survey_checking(&input, &defaults, only.as_deref(), seed),
        })
        .await?
    };
    if !survey.problems.is_empty() && !config.skip_invalid {
        return Err(RunError::InvalidRows {
            file: input.display_name().to_string(),
            problems: survey.problems,
        });
    }
    confirm_irreversible(config, &survey)?;
    Ok((input, survey))
}

/// Refuses a run whose token, by its own claims, lacks the permission of
/// one of the actions to send: every such call would fail with 403
/// ("Missing application roles").
fn check_permissions(
    granted: &[String],
    actions: impl Iterator<Item = ActionKind>,
) -> Result<(), RunError> {
    let mut missing: Vec<String> = Vec::new();
    for action in actions {
        let need = action.permission();
        if !granted.iter().any(|g| g == need) && !missing.iter().any(|m| m.starts_with(need)) {
            missing.push(format!("{need} (for {})", action.cli_name()));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let has = if granted.is_empty() { "none".to_string() } else { granted.join(", ") };
    Err(RunError::MissingPermission(format!(
        "the token lacks the permission {}; it carries: {has}. Nothing was sent. Add the WindowsDefenderATP application permission to the app registration and grant admin consent (README, \"Registering the app\"); `mdebulk auth check` shows what a token allows",
        missing.join(", ")
    )))
}

/// Refuses a `--tag-result` run whose token, by its own claims, cannot
/// write tags: the actions would go out and every tag call then fail.
pub(crate) fn check_tag_permission(granted: &[String]) -> Result<(), RunError> {
    if granted.iter().any(|g| g == TAG_PERMISSION) {
        return Ok(());
    }
    let has = if granted.is_empty() { "none".to_string() } else { granted.join(", ") };
    Err(RunError::MissingPermission(format!(
        "the token lacks the permission {TAG_PERMISSION} (for --tag-result); it carries: {has}. Nothing was sent. Add the WindowsDefenderATP application permission to the app registration and grant admin consent (README, \"Registering the app\"), or run without --tag-result"
    )))
}

/// The permission `AddOrRemoveTagForMultipleMachines` needs.
const TAG_PERMISSION: &str = "Machine.ReadWrite.All";

/// What the phases after the set-up share.
struct Setup<T> {
    /// The call engine: transport, pacer, journal, retries, stop.
    ctx: Arc<Ctx<T>>,
    /// The run's journal (runs with a results file, not dry runs).
    journal: Option<Arc<Journal>>,
    /// What an earlier invocation left in the journal (taken by phase 2b).
    recovered: Recovered,
    /// The results file (`None`: stdout).
    results: Option<std::path::PathBuf>,
    /// Where the results are written until the run ends.
    partial: Option<std::path::PathBuf>,
}

/// Phase 2, the set-up: the results target, credentials, the journal and
/// its parameters — in that order, so a refused run leaves nothing behind
/// and sends nothing — then the pacer, the call engine and the deadline.
async fn set_up<T: Transport>(
    config: &RunConfig,
    transport: Arc<T>,
    stop: &Stop,
    survey: &Survey,
) -> Result<Setup<T>, RunError> {
    let (results, partial) = match &config.results {
        ResultsTarget::File(p) => (Some(p.clone()), Some(super::partial_path(p))),
        ResultsTarget::Stdout => (None, None),
    };
    if let Some(path) = &results {
        check_existing(config, path)?;
    }
    // A dry run makes the read calls too (look-ups, pre-flight).
    if let Err(e) = super::call::first_token(transport.as_ref(), &config.policy, stop).await {
        if !config.login_failure_stops {
            return Err(RunError::Auth(e));
        }
        // Nothing is sent from here on: every row is written, those an
        // earlier invocation settled as they were, the rest `not_sent`.
        stop.fail(StopReason::AuthLost, format!("no token: {e}"));
    }
    if let Some(granted) = transport.permissions().await {
        check_permissions(&granted, survey.per_action.keys().copied())?;
        if config.tag_result.is_some() && !config.dry_run {
            check_tag_permission(&granted)?;
        }
    }
    {
        // Before the journal, so a refused run leaves nothing behind.
        let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
        let ctx = Ctx::new(transport.clone(), pacer, None, config.policy.clone(), stop.clone());
        // A stopped run sends nothing: there is no radius to check.
        if !stop.is_set() {
            check_blast_radius(config, &ctx, survey).await?;
        }
    }
    let (journal, recovered) = match &results {
        Some(path) if !config.dry_run => {
            let (j, rec) = Journal::open(&journal_path(path), config.existing != Existing::Resume)?;
            check_params(config, &j, &rec).await?;
            (Some(Arc::new(j)), rec)
        }
        _ => (None, Recovered::default()),
    };
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx =
        Arc::new(Ctx::new(transport, pacer, journal.clone(), config.policy.clone(), stop.clone()));
    if let Some(limit) = config.max_runtime {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            stop.trigger(StopReason::Deadline);
        });
    }
    Ok(Setup { ctx, journal, recovered, results, partial })
}

/// What earlier invocations settled, with the rows they left in doubt
/// looked up first: the journal's, and those of a results file replayed.
struct EarlierRows {
    rows: Earlier,
    /// Rows in doubt a stop kept from being looked up: never sent.
    unsettled: HashSet<RowKey>,
}

/// Phase 2b: requests an earlier run (or the results file being replayed)
/// left in doubt are looked up before anything is sent for them.
async fn settle_earlier<T: Transport>(
    ctx: &Ctx<T>,
    recovered: Recovered,
    survey: &Survey,
    config: &RunConfig,
    summary: &mut Summary,
) -> EarlierRows {
    let mut rows = Earlier::new(recovered.rows);
    let mut in_doubt = recovered.in_doubt;
    for (key, intent) in &survey.replayed_in_doubt {
        in_doubt.entry(key.clone()).or_insert_with(|| intent.clone());
    }
    let settled = settle_in_doubt(ctx, in_doubt, config.in_flight_grace).await;
    summary.reconciled = settled.found;
    for (key, row) in settled.rows {
        rows.insert(key, row);
    }
    EarlierRows { rows, unsettled: settled.unsettled }
}

/// What execution leaves for the phases after it.
struct Executed {
    /// Rows whose actions `--wait` follows.
    open: Vec<Open>,
    /// `--tag-result`: the line and machine (lowercased) of every row the
    /// run acted on, in results order.
    to_tag: Vec<(u64, String)>,
    /// Whether every row reached the results file.
    results_whole: bool,
}

/// Phase 3, execution: streams the input again; each row is settled at
/// once (invalid, duplicate, done earlier) or sent through the pacer by a
/// bounded pool of tasks; results are written in input order as they
/// settle, each once its journal record is durable.
#[allow(clippy::too_many_arguments)]
async fn execute<T: Transport>(
    config: &RunConfig,
    setup: &Setup<T>,
    input: Arc<Input>,
    survey: &Survey,
    prepared: Prepared,
    earlier: EarlierRows,
    summary: &mut Summary,
    started: Instant,
) -> Result<Executed, RunError> {
    let ctx = &setup.ctx;
    let stop = &ctx.stop;
    let sink = open_sink(
        setup.partial.as_deref(),
        setup.results.as_deref(),
        input.columns(),
        input.results_dialect(),
    )?;
    let progress = Progress::new(survey.rows, config.progress, ctx.pacer.clone());

    let (tx, mut rx) = mpsc::channel::<Item>(config.concurrency * 2 + 16);
    let reader = {
        let input = input.clone();
        let config = config.clone();
        let stop = stop.clone();
        let valid_rows = survey.rows.saturating_sub(survey.invalid_rows) as usize;
        tokio::task::spawn_blocking(move || {
            let mut reader = Reader {
                config: &config,
                prepared: &prepared,
                earlier: earlier.rows,
                unsettled: earlier.unsettled,
                seen: HashMap::with_capacity(valid_rows),
            };
            reader.read(&input, &stop, &tx).map(|()| reader.earlier.left())
        })
    };
    let items = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let ctx2 = ctx.clone();
    let mut results = items
        .map(move |item| {
            let ctx = ctx2.clone();
            async move {
                match item {
                    Item::Settled { seq, user, row, journal } => {
                        if let (Some(key), Some(j)) = (journal, &ctx.journal) {
                            j.row_nowait(key.as_str(), &row);
                        }
                        Done { seq, user, row }
                    }
                    Item::Send { seq, user, job } => Done { seq, user, row: send(ctx, job).await },
                }
            }
        })
        .buffer_unordered(config.concurrency);

    let mut order = Reorder::default();
    let mut writer =
        Writer { sink, path: setup.partial.clone().unwrap_or_default(), failed: false };
    // Results reach the file promptly (a person may be watching it), but
    // without a flush per row when thousands settle each second.
    let mut last_flush = Instant::now();
    let mut open: Vec<Open> = Vec::new();
    let mut to_tag: Vec<(u64, String)> = Vec::new();
    let tagging = config.tag_result.is_some() && !config.dry_run;
    let run_began =
        SystemTime::now().checked_sub(started.elapsed()).unwrap_or(std::time::UNIX_EPOCH);
    // A row counts as done only once its journal record is durable. Rows
    // ready in order wait for one group commit together, while the pool keeps
    // taking and finishing rows: the commit is awaited beside the stream,
    // never in front of it.
    let mut ready: Vec<Settled> = Vec::new();
    let mut committing: Option<(Vec<Settled>, Commit)> = None;
    let mut stream_done = false;
    loop {
        if committing.is_none() && !ready.is_empty() {
            committing = Some((std::mem::take(&mut ready), commit(setup.journal.clone())));
        }
        if stream_done && committing.is_none() {
            break;
        }
        tokio::select! {
            done = results.next(), if !stream_done => match done {
                Some(done) => ready.extend(order.push(done)),
                None => {
                    stream_done = true;
                    ready.extend(order.drain());
                }
            },
            durable = async { match committing.as_mut() { Some((_, c)) => c.await, None => Ok(()) } }, if committing.is_some() => {
                if let Err(e) = durable {
                    stop.fail(StopReason::Storage, e.to_string());
                }
                let batch = committing.take().map(|(batch, _)| batch).unwrap_or_default();
                for (user, row) in batch {
                    summary.count(&row);
                    progress.row_done(&row);
                    writer.write(&user, &row, stop);
                    open.extend(config.wait.and_then(|_| Open::of(&row, run_began)));
                    if tagging && super::tagging::acted_on(&row) {
                        to_tag.push((row.line, row.machine_id.trim().to_ascii_lowercase()));
                    }
                }
                if last_flush.elapsed() >= FLUSH_EVERY {
                    writer.flush(stop);
                    last_flush = Instant::now();
                }
            }
        }
    }
    if config.dry_run {
        summary.estimate = Some(resolve::estimate(&ctx.pacer, summary.planned.values()));
    }
    summary.no_longer_in_input =
        reader.await.map_err(|e| RunError::Internal(e.to_string()))?? as u64;
    // A workbook is written now, whole (the journal holds every row).
    writer.finish(stop);
    progress.finish();
    Ok(Executed { open, to_tag, results_whole: !writer.failed })
}

/// Sends one row in a task of its own (so a slow row never stalls the
/// others) and journals its result; never loses the row: unsent, it is
/// `not_sent`; a task that failed records the cause.
async fn send<T: Transport>(ctx: Arc<Ctx<T>>, job: Job) -> ResultRow {
    let (line, machine_id, action) = (job.line, job.machine_id.clone(), job.action);
    let device_name = job.device_name.clone();
    let not_sent = move |line, machine_id: &str, action| ResultRow {
        device_name,
        ..not_sent(line, machine_id, action)
    };
    let task = tokio::spawn(async move {
        let row = execute_row(&ctx, &job).await;
        // Written now; made durable by the next group commit, before the
        // row is counted.
        if let (Some(row), Some(j)) = (&row, &ctx.journal) {
            j.row_nowait(&job.key, row);
        }
        row
    });
    match task.await {
        Ok(Some(row)) => row,
        Ok(None) => not_sent(line, &machine_id, action.cli_name()),
        // Not journaled: its intent, if any, has a resume look it up.
        Err(e) => {
            let mut row = not_sent(line, &machine_id, action.cli_name());
            row.status = Some(Status::Error);
            row.error_code = "InternalError".into();
            row.error_message = format!("the row's task failed: {e}");
            row
        }
    }
}

/// Phase 3b (`--tag-result`): tags every device the run acted on, in
/// batches, skipping those an earlier invocation of the run confirmed, and
/// records the tag in the rows' `tag_result` column. A failure to tag keeps
/// the results (they are written already): the summary reports it, and the
/// exit code is 1.
async fn tag_results<T: Transport>(
    config: &RunConfig,
    setup: &Setup<T>,
    executed: &Executed,
    mut earlier: HashMap<String, HashSet<String>>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let Some(tag) = config.tag_result.clone() else {
        return Ok(());
    };
    if config.dry_run {
        tracing::info!("--tag-result: a dry run writes no tag");
        return Ok(());
    }
    let already = earlier.remove(&tag.to_lowercase()).unwrap_or_default();
    let mut machines: Vec<String> = Vec::new();
    let mut named: HashSet<&str> = HashSet::new();
    for (_, m) in &executed.to_tag {
        if named.insert(m.as_str()) {
            machines.push(m.clone());
        }
    }
    let outcome = super::tagging::write_tags(
        &setup.ctx,
        &tag,
        true,
        &machines,
        &already,
        setup.journal.as_deref(),
    )
    .await;
    let lines: HashSet<u64> = executed
        .to_tag
        .iter()
        .filter(|(_, m)| outcome.done.contains(m))
        .map(|(line, _)| *line)
        .collect();
    if let (Some(partial), true) = (&setup.partial, executed.results_whole && !lines.is_empty()) {
        let format = setup.results.as_deref().map_or(ResultFormat::Csv, ResultFormat::for_path);
        let (partial, value) = (partial.clone(), tag.clone());
        super::blocking(move || {
            super::rewrite::rewrite_with(&partial, format, |row| {
                let mark = lines.contains(&row.line) && row.tag_result != value;
                if mark {
                    row.tag_result.clone_from(&value);
                }
                mark
            })
        })
        .await?;
    }
    summary.tagged = Some(super::summary::TagStats {
        tag,
        add: true,
        done: machines.iter().filter(|m| outcome.done.contains(*m)).count() as u64,
        not_done: outcome.not_done,
        calls: outcome.calls,
        error: outcome.error,
    });
    Ok(())
}

/// Phase 4 (`--wait`): follows the actions and rewrites their rows.
async fn wait_for_outcomes<T: Transport>(
    config: &RunConfig,
    setup: &Setup<T>,
    open: Vec<Open>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    if let (Some(options), Some(partial)) = (config.wait, &setup.partial)
        && !setup.ctx.stop.is_set()
        && !open.is_empty()
    {
        let format = setup.results.as_deref().map_or(ResultFormat::Csv, ResultFormat::for_path);
        let stop = setup.ctx.stop.clone();
        finish_run(&setup.ctx, open, options, &stop, partial, format, summary).await?;
    }
    Ok(())
}

/// Phase 5: renames the results into place and closes the journal (its
/// lock released once the last record is durable). A results file that
/// could not be written whole stays `.partial`: the journal knows what
/// happened, and a resume rewrites it.
async fn finish<T: Transport>(
    setup: Setup<T>,
    results_whole: bool,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let Setup { ctx, journal, results, partial, .. } = setup;
    if let (Some(results), Some(partial), true) = (&results, &partial, results_whole) {
        std::fs::rename(partial, results)
            .map_err(|source| RunError::Io { path: results.clone(), source })?;
    }
    summary.throttled = ctx.throttled.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(j) = journal {
        if let Err(e) = j.flush().await {
            ctx.stop.fail(StopReason::Storage, e.to_string());
        }
        // The engine holds the other reference; every row task has ended.
        drop(ctx);
        if let Ok(j) = Arc::try_unwrap(j) {
            j.close().await;
        }
    }
    Ok(())
}

/// The results writer of a run: after its first failure (disk full, I/O
/// error) the run stops like an interrupt, and nothing more is written.
struct Writer {
    sink: Box<dyn ResultSink>,
    path: std::path::PathBuf,
    failed: bool,
}

impl Writer {
    fn write(&mut self, user: &[String], row: &ResultRow, stop: &Stop) {
        if !self.failed
            && let Err(e) = self.sink.write_row(user, row)
        {
            self.fail(e, stop);
        }
    }

    fn flush(&mut self, stop: &Stop) {
        if !self.failed
            && let Err(e) = self.sink.flush()
        {
            self.fail(e, stop);
        }
    }

    /// Ends the file: a workbook is written whole here.
    fn finish(&mut self, stop: &Stop) {
        if !self.failed
            && let Err(e) = self.sink.finish()
        {
            self.fail(e, stop);
        }
    }

    fn fail(&mut self, e: std::io::Error, stop: &Stop) {
        self.failed = true;
        let message = format!(
            "the results file {} can no longer be written ({e}); nothing more is sent: free space, then run again with --resume",
            self.path.display()
        );
        tracing::error!("{message}");
        stop.fail(StopReason::Storage, message);
    }
}

/// The results row of a record that failed validation: every problem,
/// with the device and action as the row gave them.
pub(super) fn invalid_row(
    columns: &Columns,
    record: &Record,
    problems: &[RowProblem],
) -> ResultRow {
    let why: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.column, p.why)).collect();
    ResultRow {
        // As the row gave it, like its machine id: an input's own
        // device_name column lives on here.
        device_name: columns
            .cell(Role::DeviceName, &record.values)
            .map(|(_, v)| v)
            .or_else(|| columns.recorded_name(&record.values))
            .unwrap_or_default()
            .to_string(),
        ..ResultRow::settled(
            record.line,
            cell(columns, Role::MachineId, record),
            cell(columns, Role::Action, record),
            Status::Invalid,
            why.join("; "),
        )
        .with_code("InvalidRow")
    }
}

/// A row a stop left unsent: nothing was done to the device.
pub(super) fn not_sent(line: u64, machine_id: &str, action: &str) -> ResultRow {
    ResultRow::settled(
        line,
        machine_id,
        action,
        Status::NotSent,
        "the run stopped before this row was sent; --resume sends it",
    )
}

/// Checks the journal of a resumed run against this invocation (same
/// parameters, a journal this version wrote), or starts a new journal with
/// this run's parameters.
async fn check_params(
    config: &RunConfig,
    journal: &Journal,
    recovered: &Recovered,
) -> Result<(), RunError> {
    let now = run_params(config);
    match &recovered.params {
        Some(earlier) => {
            let changes = earlier.differences(&now);
            if changes.is_empty() {
                Ok(())
            } else {
                Err(RunError::ParamsChanged { journal: journal.path().to_path_buf(), changes })
            }
        }
        None if recovered.records == 0 && recovered.unreadable == 0 => {
            journal.params(&now).await.map_err(|e| RunError::JournalFailed(e.to_string()))
        }
        None => Err(RunError::UnknownJournal(journal.path().to_path_buf())),
    }
}

/// What looking up the rows in doubt settled.
#[derive(Default)]
struct InDoubtSettled {
    /// Rows now settled, by identity (made durable in the journal).
    rows: Vec<(RowKey, ResultRow)>,
    /// Of them, rows whose action was found on the server.
    found: u64,
    /// Rows still in doubt because a stop came before their look-up: they
    /// must not be sent, and stay in doubt in the journal.
    unsettled: HashSet<RowKey>,
}

/// The run's parameters as its journal (and a dry run's plan record)
/// keeps them, with the approval of an applied plan.
fn run_params(config: &RunConfig) -> RunParams {
    let mut params = RunParams::new(
        &config.defaults,
        &config.api,
        &config.tenant,
        format_utc(SystemTime::now()),
    );
    if let Some(a) = &config.approval {
        params.plan_digest = a.digest.clone();
        params.planner = a.planner.clone();
        params.approver = a.approver.clone();
    }
    params
}

/// Rows named in a refusal at most; the rest are counted.
const MAX_ROWS_NAMED: usize = 50;

/// Before any action call, with the look-ups done: refuses a run with rows
/// on devices the protected-devices policy protects (unless
/// `--skip-protected`, or a dry run, which record them `protected`), and
/// an `apply` whose rows would no longer hit the machines its plan names
/// (a machine gone, renamed, a name now resolving elsewhere) or whose
/// comment with the approval prefix would pass the comment cap. Reads the
/// input once more only when there is something to check; hands the
/// look-ups and the earlier rows back for execution.
async fn refuse_rows(
    config: &RunConfig,
    input: &Arc<Input>,
    prepared: Prepared,
    earlier: EarlierRows,
) -> Result<(Prepared, EarlierRows), RunError> {
    let protected =
        !prepared.found.protected.is_empty() && !config.dry_run && !config.skip_protected;
    if !protected && config.approval.is_none() {
        return Ok((prepared, earlier));
    }
    let (input, owned) = (input.clone(), config.clone());
    let (prepared, earlier, refused) = super::blocking(move || {
        let refused = scan_refusals(&owned, &input, &prepared, &earlier.rows, protected);
        refused.map(|r| (prepared, earlier, r))
    })
    .await?;
    let Refusals { protected: on_protected, changed, total_protected, total_changed } = refused;
    let list = |rows: &[String], total: usize| {
        let mut text: String = rows.iter().map(|r| format!("\n  {r}")).collect();
        if total > rows.len() {
            text.push_str(&format!("\n  ... and {} more", total - rows.len()));
        }
        text
    };
    if total_protected > 0 {
        let policy =
            config.protect.as_ref().map(|p| p.path().display().to_string()).unwrap_or_default();
        return Err(RunError::Protected(format!(
            "{total_protected} row(s) would act on devices the protected-devices policy {policy} protects; nothing was sent:{}\nRemove them from the input, or add --skip-protected to record them as `protected` and send the rest (--dry-run shows them in the plan)",
            list(&on_protected, total_protected)
        )));
    }
    if total_changed > 0 {
        return Err(RunError::PlanChanged(format!(
            "{total_changed} row(s) of the plan would not be carried out as approved; nothing was sent:{}\nThe tenant changed since the plan was made: make a new plan with `run --dry-run` and have it approved again",
            list(&changed, total_changed)
        )));
    }
    Ok((prepared, earlier))
}

/// What [`scan_refusals`] found: the rows named, and how many in all.
#[derive(Default)]
struct Refusals {
    protected: Vec<String>,
    changed: Vec<String>,
    total_protected: usize,
    total_changed: usize,
}

/// The pass of [`refuse_rows`] over the input (on a blocking thread): the
/// same decisions the reader makes, without settling anything.
fn scan_refusals(
    config: &RunConfig,
    input: &Input,
    prepared: &Prepared,
    earlier: &Earlier,
    protected: bool,
) -> Result<Refusals, RunError> {
    let mut out = Refusals::default();
    let columns = input.columns();
    let push = |list: &mut Vec<String>, total: &mut usize, text: String| {
        *total += 1;
        if list.len() < MAX_ROWS_NAMED {
            list.push(text);
        }
    };
    for record in input.records()? {
        let record = record?;
        let Ok(Ok(plan)) =
            plan_selected(&record, columns, &config.defaults, config.only.as_deref())
        else {
            continue;
        };
        let key = RowKey::of(&plan);
        if earlier.rows.contains_key(&key) {
            continue;
        }
        let device = crate::text::quote(&plan.target.to_string()).to_string();
        let at = format!("line {}: {} {device}", plan.line, plan.action.cli_name());
        let (machine_id, machine) = match prepared.target(&plan) {
            Ok(target) => target,
            Err(row) => {
                if config.approval.is_some() {
                    push(
                        &mut out.changed,
                        &mut out.total_changed,
                        format!("{at}: {}", row.error_message),
                    );
                }
                continue;
            }
        };
        if earlier.by_machine.contains_key(&key.on_machine(&machine_id)) {
            continue;
        }
        let settled = prepared.check(&plan, &machine_id, machine);
        if let Some(row) = &settled
            && row.status == Some(Status::Protected)
            && protected
        {
            push(
                &mut out.protected,
                &mut out.total_protected,
                format!("{at}: {}", row.error_message),
            );
            continue;
        }
        let Some(approval) = &config.approval else { continue };
        let planned = plan.previous.as_ref().map(|p| p.machine_id.as_str()).unwrap_or_default();
        let why = match &settled {
            Some(row)
                if row.status == Some(Status::NotFound) || row.error_code == "IdNameMismatch" =>
            {
                Some(row.error_message.clone())
            }
            _ if !planned.eq_ignore_ascii_case(&machine_id) => Some(format!(
                "the plan acts on machine {planned:?}, the tenant now names {machine_id:?}"
            )),
            // The name the plan showed its approver for the machine, against
            // the name the tenant gives it now: a renamed or re-imaged device
            // is not the one that was approved.
            _ if let (Some(seen), Some(now)) = (
                plan.previous.as_ref().map(|p| p.device_name.as_str()).filter(|n| !n.is_empty()),
                prepared.found.dns_name(&machine_id),
            ) && !seen.eq_ignore_ascii_case(now) =>
            {
                Some(format!(
                    "the plan showed machine {machine_id} as {seen:?}, the tenant now names it {now:?}"
                ))
            }
            _ if approval.comment(&plan.comment).chars().count()
                > crate::input::MAX_COMMENT_CHARS =>
            {
                Some(format!(
                    "the comment with the approval prefix {:?} is longer than {} characters",
                    approval.prefix(),
                    crate::input::MAX_COMMENT_CHARS
                ))
            }
            _ => None,
        };
        if let Some(why) = why {
            push(&mut out.changed, &mut out.total_changed, format!("{at}: {why}"));
        }
    }
    Ok(out)
}

/// A run refused after its set-up: closes its journal, and removes it when
/// this invocation created it, so the corrected run starts afresh (a
/// resumed run's journal is kept).
async fn abandon<T: Transport>(config: &RunConfig, setup: Setup<T>) {
    let Setup { ctx, journal, .. } = setup;
    drop(ctx);
    if let Some(j) = journal {
        let path = j.path().to_path_buf();
        if let Ok(j) = Arc::try_unwrap(j) {
            j.close().await;
        }
        if config.existing != Existing::Resume {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Settles the rows an earlier run left in doubt (see [`reconcile`]), each
/// made durable in the journal. A request sent just before the crash may
/// still be on its way, so the look-up waits until it can no longer arrive
/// (or a stop comes).
async fn settle_in_doubt<T: Transport>(
    ctx: &Ctx<T>,
    in_doubt: HashMap<RowKey, Intent>,
    grace: std::time::Duration,
) -> InDoubtSettled {
    let mut out = InDoubtSettled::default();
    if in_doubt.is_empty() {
        return out;
    }
    let latest = in_doubt.values().filter_map(|i| i.at).max().map(Timestamp::system_time);
    if let Some(wait) = latest.and_then(|t| (t + grace).duration_since(SystemTime::now()).ok()) {
        tracing::info!(
            rows = in_doubt.len(),
            wait_ms = wait.as_millis() as u64,
            "rows in doubt from the interrupted run; looking them up shortly"
        );
        if ctx.sleep_or_stop(wait).await.is_none() {
            out.unsettled = in_doubt.into_keys().collect();
            return out;
        }
    }
    let (rows, unsettled) = reconcile(ctx, in_doubt).await;
    out.unsettled = unsettled;
    if let Some(j) = &ctx.journal {
        for (key, row) in &rows {
            j.row_nowait(key.as_str(), row);
        }
        if let Err(e) = j.flush().await {
            ctx.stop.fail(StopReason::Storage, e.to_string());
        }
    }
    out.found = rows.iter().filter(|(_, r)| r.status == Some(Status::Submitted)).count() as u64;
    out.rows = rows;
    out
}

/// The results writer: the `.partial` file beside the results (or stdout),
/// in the results file's format, with the input's user columns; CSV in the
/// input's dialect (delimiter, line end, BOM), so it opens where the input
/// did.
fn open_sink(
    partial: Option<&Path>,
    results: Option<&Path>,
    columns: &Columns,
    dialect: crate::results::dialect::Dialect,
) -> Result<Box<dyn ResultSink>, RunError> {
    let target: Box<dyn Write + Send> = match partial {
        Some(p) => Box::new(BufWriter::with_capacity(
            256 * 1024,
            crate::private::create(p)
                .map_err(|source| RunError::Io { path: p.to_path_buf(), source })?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let format = results.map_or(ResultFormat::Csv, ResultFormat::for_path);
    Ok(output::sink_in(format, dialect, target, columns.user_columns()))
}

/// A settled row with the user's columns, in input order.
type Settled = (Vec<String>, ResultRow);

/// A pending group commit of the journal (immediate without a journal).
type Commit = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), super::journal::JournalFailed>> + Send>,
>;

/// Makes everything written to the journal so far durable.
fn commit(journal: Option<Arc<Journal>>) -> Commit {
    Box::pin(async move {
        match journal {
            Some(j) => j.flush().await,
            None => Ok(()),
        }
    })
}

/// Applies `--resume`/`--force` to an existing results file: without either,
/// an existing results file (or its journal, or a `.partial` a stopped run
/// left) is never touched; a resume needs the journal of what it continues.
/// A dry run rewrites its own plan, which nothing else depends on.
fn check_existing(config: &RunConfig, results: &Path) -> Result<(), RunError> {
    if config.dry_run && is_plan(results) {
        // A plan is a preview with no journal behind it: the next dry run
        // writes it afresh.
        return Ok(());
    }
    refuse_existing(config.existing, results, &journal_path(results))
}

/// Without `--resume` or `--force`, refuses `results` when it, its
/// `.partial` or `record` (what a resume continues from: its journal, or
/// the folder of a run's tenants' shares) exists; with `--resume`, refuses
/// a results file whose `record` is gone.
pub(super) fn refuse_existing(
    existing: Existing,
    results: &Path,
    record: &Path,
) -> Result<(), RunError> {
    let partial = super::partial_path(results);
    match existing {
        Existing::Refuse => match [results, record, &partial].into_iter().find(|p| p.exists()) {
            Some(p) => Err(RunError::ResultsExist(p.to_path_buf())),
            None => Ok(()),
        },
        Existing::Resume if !record.exists() => {
            match [results, &partial].into_iter().find(|p| p.exists()) {
                Some(p) => Err(RunError::NothingToResume(p.to_path_buf())),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The blast-radius cap, before any action call: more guarded rows
/// (isolate, restrict, offboard) than `--max-devices`, or than
/// `--max-percent` of the tenant's active devices, need `--allow-large`
/// (and, on a terminal, the count typed back). A dry run only warns.
async fn check_blast_radius<T: Transport>(
    config: &RunConfig,
    ctx: &Ctx<T>,
    survey: &Survey,
) -> Result<(), RunError> {
    let guarded = survey.guarded();
    if guarded == 0 {
        return Ok(());
    }
    let mut over = Vec::new();
    if guarded > config.max_devices {
        over.push(format!("more than --max-devices {}", config.max_devices));
    }
    if let Some(percent) = config.max_percent {
        let active = super::devices::active_devices(ctx).await.map_err(RunError::Lookup)?;
        let cap = (active as f64 * percent / 100.0).floor() as u64;
        if guarded > cap {
            over.push(format!(
                "more than --max-percent {percent}% of the tenant's {active} active devices ({cap})"
            ));
        }
    }
    if over.is_empty() {
        return Ok(());
    }
    let per_action: Vec<String> = survey
        .per_action
        .iter()
        .filter(|(a, _)| super::GUARDED_BY_CAP.contains(a))
        .map(|(a, n)| format!("{n} {}", a.cli_name()))
        .collect();
    let what = format!(
        "{guarded} rows would isolate, restrict or offboard devices ({}): {}",
        per_action.join(", "),
        over.join(" and ")
    );
    if config.dry_run {
        tracing::warn!("{what}: the run will need --allow-large");
        return Ok(());
    }
    if !config.allow_large {
        return Err(RunError::TooLarge(format!(
            "{what}; nothing was sent. Check the input (a mis-pasted list?), then add --allow-large to go on, or raise the cap"
        )));
    }
    if config.interactive {
        return super::confirm_typed(
            true,
            &format!("About to act on {guarded} devices ({}).", over.join(" and ")),
            &guarded.to_string(),
            format!("{what}; the count was not typed back"),
        );
    }
    Ok(())
}

/// True when `path` names a dry run's plan (`NAME.plan.csv`, `.plan.jsonl`).
pub(super) fn is_plan(path: &Path) -> bool {
    path.file_stem().is_some_and(|s| s.to_string_lossy().to_ascii_lowercase().ends_with(".plan"))
}

/// Offboarding cannot be undone: it needs `--yes` or a typed confirmation.
fn confirm_irreversible(config: &RunConfig, survey: &Survey) -> Result<(), RunError> {
    let n = survey.irreversible();
    if n == 0 || config.yes || config.dry_run {
        return Ok(());
    }
    let refuse = format!(
        "{n} row(s) would OFFBOARD devices, which cannot be undone through the API: add --yes to confirm"
    );
    super::confirm_typed(
        config.interactive,
        &format!("About to OFFBOARD {n} device(s). Offboarding cannot be undone through the API."),
        &format!("offboard {n}"),
        refuse,
    )
}

/// Puts rows back in input order. Holds only rows that finished ahead of
/// an earlier one.
#[derive(Default)]
struct Reorder {
    next: u64,
    pending: BTreeMap<u64, Done>,
}

impl Reorder {
    fn push(&mut self, done: Done) -> Vec<Settled> {
        self.pending.insert(done.seq, done);
        let mut out = Vec::new();
        while let Some(d) = self.pending.remove(&self.next) {
            self.next += 1;
            out.push((d.user, d.row));
        }
        out
    }

    /// Whatever is left (the stream ended; every row is here).
    fn drain(&mut self) -> Vec<Settled> {
        std::mem::take(&mut self.pending).into_values().map(|d| (d.user, d.row)).collect()
    }
}

/// The rows an earlier run settled, by identity, and by the machine they
/// hit: a row that now names the same device another way (its name instead
/// of its id) still finds what was done to it, so no device is touched twice.
struct Earlier {
    rows: HashMap<RowKey, ResultRow>,
    /// [`RowKey::on_machine`] → the key the row was settled under.
    by_machine: HashMap<RowKey, RowKey>,
}

impl Earlier {
    fn new(rows: HashMap<RowKey, ResultRow>) -> Earlier {
        let mut earlier = Earlier { rows: HashMap::new(), by_machine: HashMap::new() };
        for (key, row) in rows {
            earlier.insert(key, row);
        }
        earlier
    }

    fn insert(&mut self, key: RowKey, row: ResultRow) {
        if !row.machine_id.is_empty() {
            self.by_machine.insert(key.on_machine(&row.machine_id), key.clone());
        }
        self.rows.insert(key, row);
    }

    /// Takes the row settled under `key`.
    fn take(&mut self, key: &RowKey) -> Option<ResultRow> {
        let row = self.rows.remove(key)?;
        if !row.machine_id.is_empty() {
            self.by_machine.remove(&key.on_machine(&row.machine_id));
        }
        Some(row)
    }

    /// Takes the row settled for the same device, action and parameters.
    fn take_machine(&mut self, on_machine: &RowKey) -> Option<ResultRow> {
        let key = self.by_machine.remove(on_machine)?;
        self.rows.remove(&key)
    }

    /// Rows settled earlier that no row of this input named.
    fn left(&self) -> usize {
        self.rows.len()
    }
}

/// The reader thread: streams the input again and decides each row.
struct Reader<'a> {
    config: &'a RunConfig,
    prepared: &'a Prepared,
    /// What earlier runs settled; taken as the rows come.
    earlier: Earlier,
    /// Rows in doubt whose look-up a stop cut short: never sent.
    unsettled: HashSet<RowKey>,
    /// Device + action + parameters of the rows so far (duplicates), sized
    /// once from the survey: growing it would briefly hold the old and the
    /// new table, half as much again at peak.
    seen: HashMap<[u64; 2], u64>,
}

impl Reader<'_> {
    /// Every selected row of the input becomes exactly one item, so the
    /// results file has a row for each; after a stop, rows not settled
    /// earlier are `not_sent`.
    fn read(
        &mut self,
        input: &Input,
        stop: &Stop,
        tx: &mpsc::Sender<Item>,
    ) -> Result<(), RunError> {
        let columns = input.columns();
        let mut seq = 0u64;
        for record in input.records()? {
            let record = record?;
            let user = columns.user_values(&record.values);
            let only = self.config.only.as_deref();
            let Ok(plan) = plan_selected(&record, columns, &self.config.defaults, only) else {
                continue;
            };
            let item = match plan {
                Err(problems) => {
                    let row = invalid_row(columns, &record, &problems);
                    // Validation is redone on every run: no journal record.
                    Item::Settled { seq, user, row, journal: None }
                }
                Ok(plan) => self.decide(plan, stop, seq, user),
            };
            seq += 1;
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Settles a valid row at once (settled earlier, device not found or
    /// ambiguous, duplicate, unsupported OS, already pending, dry run, a
    /// stop) or makes it a job. Every row leaves with the best
    /// `device_name` known: the API's name of its machine when a look-up or
    /// an answer gave one, else the name the row gave.
    fn decide(&mut self, plan: RowPlan, stop: &Stop, seq: u64, user: Vec<String>) -> Item {
        let given = plan.given_name.clone().unwrap_or_default();
        // A name that resolved and left no other spelling matched the
        // machine's name exactly: its lowercase key is that name.
        let key = match &plan.target {
            Target::Name(n) => Some(n.to_lowercase()),
            _ => None,
        };
        let item = self.decide_row(plan, stop, seq, user);
        let found = &self.prepared.found;
        let known = |id: &str| match id {
            "" => None,
            id => found.dns_name(id).map(str::to_string).or_else(|| key.clone()),
        };
        match item {
            Item::Settled { seq, user, mut row, journal } => {
                if row.device_name.is_empty() {
                    row.device_name = known(&row.machine_id).unwrap_or(given);
                }
                Item::Settled { seq, user, row, journal }
            }
            Item::Send { seq, user, mut job } => {
                job.device_name = known(&job.machine_id).unwrap_or(given);
                Item::Send { seq, user, job }
            }
        }
    }

    /// [`Reader::decide`] before the device name is filled in.
    fn decide_row(&mut self, plan: RowPlan, stop: &Stop, seq: u64, user: Vec<String>) -> Item {
        let key = RowKey::of(&plan);
        if let Some(row) = self.earlier.take(&key) {
            return self.restored(&key, plan.line, row, seq, user);
        }
        let named_id = key.machine_id().unwrap_or_default();
        if self.unsettled.contains(&key) {
            let mut row = not_sent(plan.line, named_id, plan.action.cli_name());
            row.status = Some(Status::InDoubt);
            row.error_message = "sent by an earlier run, answer unknown, not looked up yet: --resume looks it up before sending anything; check the device before sending it any other way".into();
            return Item::Settled { seq, user, row, journal: None };
        }
        if stop.is_set() {
            let row = not_sent(plan.line, named_id, plan.action.cli_name());
            return Item::Settled { seq, user, row, journal: None };
        }
        let (machine_id, machine) = match self.prepared.target(&plan) {
            Ok(target) => target,
            Err(row) => return Item::Settled { seq, user, row: *row, journal: Some(key) },
        };
        let on_machine = key.on_machine(&machine_id);
        if let Some(row) = self.earlier.take_machine(&on_machine) {
            return self.restored(&key, plan.line, row, seq, user);
        }
        let mut row = ResultRow::new(plan.line, machine_id.clone(), plan.action.cli_name());
        let dedupe = dedupe_key(&on_machine);
        if let Some(first) = self.seen.get(&dedupe) {
            let why = format!("same machine, action and parameters as line {first}; sent once");
            let row =
                ResultRow::settled(row.line, row.machine_id, row.action, Status::Duplicate, why);
            return Item::Settled { seq, user, row, journal: None };
        }
        self.seen.insert(dedupe, plan.line);
        if let Some(row) = self.prepared.check(&plan, &machine_id, machine) {
            return Item::Settled { seq, user, row, journal: Some(key) };
        }
        if self.config.dry_run {
            row.status = Some(Status::Planned);
            return Item::Settled { seq, user, row, journal: None };
        }
        let comment = match &self.config.approval {
            Some(a) => a.comment(&plan.comment),
            None => plan.comment,
        };
        let body = ActionBody {
            comment,
            isolation_type: plan.isolation_type,
            sha1: plan.sha1,
            scan_type: plan.scan_type,
        };
        let job = Job {
            key: key.as_str().to_string(),
            line: plan.line,
            machine_id,
            device_name: String::new(),
            action: plan.action,
            body,
        };
        Item::Send { seq, user, job }
    }

    /// A row settled earlier, at its current line and with its current
    /// columns; later rows for the same device and action are duplicates.
    fn restored(
        &mut self,
        key: &RowKey,
        line: u64,
        mut row: ResultRow,
        seq: u64,
        user: Vec<String>,
    ) -> Item {
        row.line = line;
        if !row.machine_id.is_empty() {
            self.seen.entry(dedupe_key(&key.on_machine(&row.machine_id))).or_insert(line);
        }
        Item::Settled { seq, user, row, journal: None }
    }
}

/// A role's cell of a record, as text (empty when absent).
fn cell(columns: &Columns, role: Role, record: &Record) -> String {
    columns.cell(role, &record.values).map(|(_, v)| v.to_string()).unwrap_or_default()
}

/// 128-bit hash of a row's key on its machine (machine + action +
/// parameters; the comment is not part of it). Two `u64` halves rather than
/// a `u128`: the map holds one entry per row, and a `u128`'s 16-byte
/// alignment pads each entry from 24 to 32 bytes.
fn dedupe_key(on_machine: &RowKey) -> [u64; 2] {
    let mut halves = [0u64; 2];
    for (salt, half) in halves.iter_mut().enumerate() {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        on_machine.as_str().hash(&mut h);
        *half = h.finish();
    }
    halves
}

/// Settles rows in doubt: each is looked up on the server (one list call
/// per action type and batch of machines); rows whose action exists are
/// recorded as submitted, rows whose look-up failed stay `in_doubt`, the
/// others will be sent again. Returns the settled rows and the keys a stop
/// left unlooked.
async fn reconcile<T: Transport>(
    ctx: &Ctx<T>,
    in_doubt: HashMap<RowKey, Intent>,
) -> (Vec<(RowKey, ResultRow)>, HashSet<RowKey>) {
    let mut by_action: BTreeMap<ActionKind, Vec<(RowKey, Intent)>> = BTreeMap::new();
    let mut unsettled = HashSet::new();
    for (key, intent) in in_doubt {
        match intent.action.parse::<ActionKind>() {
            Ok(a) if !intent.machine_id.is_empty() => {
                by_action.entry(a).or_default().push((key, intent))
            }
            // A torn record that names its row but not its machine: the
            // device is not known until the row is resolved, so the row
            // is not sent; it stays in doubt for a person to check.
            _ => {
                unsettled.insert(key);
            }
        }
    }
    let mut settled = Vec::new();
    for (action, intents) in by_action {
        for chunk in intents.chunks(20) {
            if ctx.stop.is_set() {
                unsettled.extend(chunk.iter().map(|(k, _)| k.clone()));
                continue;
            }
            let since = chunk
                .iter()
                .filter_map(|(_, i)| i.at)
                .min()
                .map_or(std::time::UNIX_EPOCH, Timestamp::system_time);
            let machines: Vec<&str> = chunk.iter().map(|(_, i)| i.machine_id.as_str()).collect();
            match lookup_actions(ctx, action, &machines, since).await {
                Ok(found) => {
                    for (key, intent) in chunk {
                        if let Some(a) = pick_match(&found, &intent.machine_id, None) {
                            let row = ResultRow {
                                action_id: a.id.clone(),
                                action_status: a.status.clone(),
                                device_name: a.computer_dns_name.clone().unwrap_or_default(),
                                attempts: 1,
                                requested_at: intent.at,
                                ..ResultRow::settled(
                                    intent.line,
                                    intent.machine_id.clone(),
                                    action.cli_name(),
                                    Status::Submitted,
                                    "found on the server after an interrupted run",
                                )
                            };
                            settled.push((key.clone(), row));
                        }
                    }
                }
                Err(CallError::Stopped) => {
                    unsettled.extend(chunk.iter().map(|(k, _)| k.clone()));
                }
                Err(e) => {
                    for (key, intent) in chunk {
                        let why = format!(
                            "sent by an interrupted run, and looking it up failed ({e}); --resume looks again; check the device before sending it any other way"
                        );
                        let row = ResultRow {
                            requested_at: intent.at,
                            ..ResultRow::settled(
                                intent.line,
                                intent.machine_id.clone(),
                                action.cli_name(),
                                Status::InDoubt,
                                why,
                            )
                            .with_code(e.code())
                        };
                        settled.push((key.clone(), row));
                    }
                }
            }
        }
    }
    (settled, unsettled)
}
