//! Phases 2–5 of a run (see the module above): prepare, execute, wait, finish.
//!
//! Execution shape: a reader thread streams the input a second time and
//! turns each selected row into an [`Item`]: settled at once, or a [`Job`] to
//! send. Items flow through a bounded channel into `buffer_unordered`, where
//! jobs run as spawned tasks (so a slow row never stalls the others), and the
//! settled rows are put back in input order before they reach the results
//! file. Memory stays flat whatever the input size: the channel, the pool and
//! the reorder buffer are all bounded by the concurrency.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::journal::{Journal, Recovered, journal_path};
use super::plan::{Survey, selected, survey};
use super::progress::Progress;
use super::resolve::{self, Prepared};
use super::stop::{Stop, StopReason};
use super::submit::{Ctx, Job, execute, lookup_actions, pick_match};
use super::summary::Summary;
use super::transport::Transport;
use super::wait::{Open, finish_run};
use super::{Existing, ResultsTarget, RunConfig, RunError};
use crate::api::action::ActionKind;
use crate::api::client::ActionBody;
use crate::api::time::{format_utc, parse_utc};
use crate::input::{Columns, Input, Record, Role, RowPlan, plan_row};
use crate::output::{self, ResultFormat, ResultRow, ResultSink, Status};
use crate::pace::Pacer;

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
        /// Whether the journal must learn of it (new decisions only).
        journal: bool,
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

/// A row back from the pool; `row` is `None` when a stop left it unsent.
struct Done {
    seq: u64,
    user: Vec<String>,
    row: Option<ResultRow>,
}

/// Runs the whole thing against `transport`.
pub async fn run<T: Transport>(
    config: &RunConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let input = Input::open(&config.input)?;
    let input = Arc::new(input);

    // Phase 1: survey.
    let survey: Survey = {
        let (input, defaults, only) = (input.clone(), config.defaults.clone(), config.only.clone());
        super::blocking(move || survey(&input, &defaults, only.as_deref())).await?
    };
    if !survey.problems.is_empty() && !config.skip_invalid {
        return Err(RunError::InvalidRows {
            file: input.display_name().to_string(),
            problems: survey.problems,
        });
    }
    confirm_irreversible(config, &survey)?;

    // Phase 2: results target, credentials, journal — in that order, so a
    // refused run leaves nothing behind and sends nothing.
    let (results_path, partial_path) = match &config.results {
        ResultsTarget::File(p) => (Some(p.clone()), Some(super::partial_path(p))),
        ResultsTarget::Stdout => (None, None),
    };
    if let Some(path) = &results_path {
        check_existing(config, path)?;
    }
    // A dry run makes the read calls too (look-ups, pre-flight).
    transport.authenticate().await.map_err(RunError::Auth)?;
    let (journal, recovered) = match &results_path {
        Some(path) if !config.dry_run => {
            let (j, rec) = Journal::open(&journal_path(path), config.existing != Existing::Resume)?;
            (Some(j), rec)
        }
        _ => (None, Recovered::default()),
    };
    let journal = journal.map(Arc::new);
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx = Arc::new(Ctx {
        transport,
        pacer: pacer.clone(),
        journal: journal.clone(),
        policy: config.policy.clone(),
        throttled: AtomicU64::new(0),
        stop: stop.clone(),
    });
    let mut summary = Summary::new(results_path.clone(), config.dry_run);
    summary.not_selected = survey.not_selected;

    let mut done_rows = recovered.rows;
    for row in settle_in_doubt(&ctx, recovered.in_doubt, config.in_flight_grace).await {
        summary.reconciled += 1;
        done_rows.insert(row.line, row);
    }
    if let Some(limit) = config.max_runtime {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            stop.trigger(StopReason::Deadline);
        });
    }

    // Phase 2b: look devices up, pre-flight, OS check (read calls only).
    let prepared = Arc::new(resolve::prepare(&ctx, &survey.lookups, config.pick_latest).await);

    // Phase 3: execute.
    let mut sink = open_sink(partial_path.as_deref(), results_path.as_deref(), input.columns())?;
    let progress = Progress::new(survey.rows, config.progress, pacer.clone());

    let (tx, mut rx) = mpsc::channel::<Item>(config.concurrency * 2 + 16);
    let reader = {
        let input = input.clone();
        let config = config.clone();
        let stop = stop.clone();
        let valid_rows = survey.rows.saturating_sub(survey.invalid_rows) as usize;
        tokio::task::spawn_blocking(move || {
            read_items(&input, &config, &prepared, done_rows, valid_rows, &stop, &tx)
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
                        if journal && let Some(j) = &ctx.journal {
                            j.row_nowait(&row);
                        }
                        Done { seq, user, row: Some(row) }
                    }
                    Item::Send { seq, user, job } => {
                        let task = tokio::spawn(async move {
                            let row = execute(&ctx, &job).await;
                            // Written now; made durable by the next group
                            // commit, before the row is counted (below).
                            if let (Some(row), Some(j)) = (&row, &ctx.journal) {
                                j.row_nowait(row);
                            }
                            row
                        });
                        let row = task.await.unwrap_or(None);
                        Done { seq, user, row }
                    }
                }
            }
        })
        .buffer_unordered(config.concurrency);

    let mut order = Reorder::default();
    let io_err = |source| RunError::Io { path: partial_path.clone().unwrap_or_default(), source };
    // Results reach the file promptly (a person may be watching it), but
    // without a flush per row when thousands settle each second.
    let mut last_flush = Instant::now();
    // Rows whose actions `--wait` follows (phase 4).
    let mut open: Vec<Open> = Vec::new();
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
            committing = Some((std::mem::take(&mut ready), commit(journal.clone())));
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
            () = async { if let Some((_, c)) = committing.as_mut() { c.await } }, if committing.is_some() => {
                let batch = committing.take().map(|(batch, _)| batch).unwrap_or_default();
                for (user, row) in batch {
                    summary.count(&row);
                    progress.row_done(&row);
                    sink.write_row(&user, &row).map_err(io_err)?;
                    open.extend(config.wait.and_then(|_| Open::of(&row, run_began)));
                }
                if last_flush.elapsed() >= FLUSH_EVERY {
                    sink.flush().map_err(io_err)?;
                    last_flush = Instant::now();
                }
            }
        }
    }
    summary.unsent = order.gaps;
    if config.dry_run {
        summary.estimate = Some(resolve::estimate(&pacer, summary.planned.values()));
    }
    let read = reader.await.map_err(|e| RunError::Internal(e.to_string()))?;
    read?;
    sink.flush().map_err(io_err)?;
    drop(sink);
    progress.finish();

    // Phase 4: wait for the actions and rewrite their rows (see `wait`).
    if let (Some(options), Some(partial)) = (config.wait, &partial_path)
        && !stop.is_set()
        && !open.is_empty()
    {
        let format = results_path.as_deref().map_or(ResultFormat::Csv, ResultFormat::for_path);
        finish_run(&ctx, open, options, &stop, partial, format, &mut summary).await?;
    }

    // Phase 5: finish.
    if let (Some(results), Some(partial)) = (&results_path, &partial_path) {
        std::fs::rename(partial, results)
            .map_err(|source| RunError::Io { path: results.clone(), source })?;
    }
    if let Some(j) = journal {
        j.flush().await;
        if let Ok(j) = Arc::try_unwrap(j) {
            j.close().await;
        }
    }
    summary.throttled = ctx.throttled.load(std::sync::atomic::Ordering::Relaxed);
    summary.stamp(started, &stop);
    Ok(summary)
}

/// Settles the rows an earlier run left in doubt (see [`reconcile`]), each
/// made durable in the journal. A request sent just before the crash may
/// still be on its way, so the look-up waits until it can no longer arrive.
async fn settle_in_doubt<T: Transport>(
    ctx: &Ctx<T>,
    in_doubt: HashMap<u64, super::journal::Intent>,
    grace: std::time::Duration,
) -> Vec<ResultRow> {
    if in_doubt.is_empty() {
        return Vec::new();
    }
    let latest = in_doubt.values().filter_map(|i| parse_utc(&i.at)).max();
    if let Some(wait) = latest.and_then(|t| (t + grace).duration_since(SystemTime::now()).ok()) {
        tracing::info!(
            rows = in_doubt.len(),
            wait_ms = wait.as_millis() as u64,
            "rows in doubt from the interrupted run; looking them up shortly"
        );
        tokio::time::sleep(wait).await;
    }
    let settled = reconcile(ctx, in_doubt).await;
    if let Some(j) = &ctx.journal {
        for row in &settled {
            j.row(row).await;
        }
    }
    settled
}

/// The results writer: the `.partial` file beside the results (or stdout),
/// in the results file's format, with the input's user columns.
fn open_sink(
    partial: Option<&Path>,
    results: Option<&Path>,
    columns: &Columns,
) -> Result<Box<dyn ResultSink>, RunError> {
    let target: Box<dyn Write + Send> = match partial {
        Some(p) => Box::new(BufWriter::with_capacity(
            256 * 1024,
            crate::output::private::create(p)
                .map_err(|source| RunError::Io { path: p.to_path_buf(), source })?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout())),
    };
    let format = results.map_or(ResultFormat::Csv, ResultFormat::for_path);
    Ok(output::sink(format, target, columns.user_columns()))
}

/// A settled row with the user's columns, in input order.
type Settled = (Vec<String>, ResultRow);

/// A pending group commit of the journal (immediate without a journal).
type Commit = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Makes everything written to the journal so far durable.
fn commit(journal: Option<Arc<Journal>>) -> Commit {
    Box::pin(async move {
        if let Some(j) = journal {
            j.flush().await;
        }
    })
}

/// Applies `--resume`/`--force` to an existing results file: without either,
/// an existing results file (or its journal) is never touched.
fn check_existing(config: &RunConfig, results: &Path) -> Result<(), RunError> {
    let jpath = journal_path(results);
    match config.existing {
        Existing::Refuse if results.exists() || jpath.exists() => {
            Err(RunError::ResultsExist(results.to_path_buf()))
        }
        Existing::Resume if results.exists() && !jpath.exists() => {
            Err(RunError::NothingToResume(results.to_path_buf()))
        }
        _ => Ok(()),
    }
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
    /// Rows a stop left unsent.
    gaps: u64,
}

impl Reorder {
    fn push(&mut self, done: Done) -> Vec<Settled> {
        self.pending.insert(done.seq, done);
        let mut out = Vec::new();
        while let Some(d) = self.pending.remove(&self.next) {
            self.next += 1;
            match d.row {
                Some(row) => out.push((d.user, row)),
                None => self.gaps += 1,
            }
        }
        out
    }

    /// Whatever is left (only after a stop, when some rows never settled).
    fn drain(&mut self) -> Vec<Settled> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        for (_, d) in pending {
            match d.row {
                Some(row) => out.push((d.user, row)),
                None => self.gaps += 1,
            }
        }
        out
    }
}

/// The reader thread: streams the input again and decides each row.
/// `valid_rows` (from the survey) sizes the duplicate map once: growing it
/// would briefly hold the old and the new table, half as much again at peak.
fn read_items(
    input: &Input,
    config: &RunConfig,
    prepared: &Prepared,
    mut done_rows: HashMap<u64, ResultRow>,
    valid_rows: usize,
    stop: &Stop,
    tx: &mpsc::Sender<Item>,
) -> Result<(), RunError> {
    let columns = input.columns();
    let mut seen: HashMap<[u64; 2], u64> = HashMap::with_capacity(valid_rows);
    let mut seq = 0u64;
    for record in input.records()? {
        if stop.is_set() {
            break;
        }
        let record = record?;
        let user = columns.user_values(&record.values);
        let plan = plan_row(&record, columns, &config.defaults);
        let previous = match &plan {
            Ok(p) => p.previous_status,
            Err(_) => previous_status(columns, &record),
        };
        if !selected(previous, config.only.as_deref()) {
            continue;
        }
        let item = match plan {
            Err(problems) => {
                let row = ResultRow {
                    line: record.line,
                    machine_id: cell(columns, Role::MachineId, &record),
                    action: cell(columns, Role::Action, &record),
                    status: Some(Status::Invalid),
                    error_code: "InvalidRow".to_string(),
                    error_message: problems
                        .iter()
                        .map(|p| format!("{}: {}", p.column, p.why))
                        .collect::<Vec<_>>()
                        .join("; "),
                    finished_at: format_utc(SystemTime::now()),
                    ..ResultRow::default()
                };
                Item::Settled { seq, user, row, journal: true }
            }
            Ok(plan) => {
                if let Some(row) = done_rows.remove(&plan.line) {
                    Item::Settled { seq, user, row, journal: false }
                } else {
                    decide(plan, config, prepared, &mut seen, seq, user)
                }
            }
        };
        seq += 1;
        if tx.blocking_send(item).is_err() {
            break;
        }
    }
    Ok(())
}

/// A role's cell of a record, as text (empty when absent).
fn cell(columns: &Columns, role: Role, record: &Record) -> String {
    columns.cell(role, &record.values).map(|(_, v)| v.to_string()).unwrap_or_default()
}

/// The earlier `status` of a row of a results file, even when the row is
/// otherwise invalid.
pub fn previous_status(columns: &Columns, record: &Record) -> Option<Status> {
    columns.cell(Role::Status, &record.values).and_then(|(_, v)| v.parse().ok())
}

/// Settles a valid row at once (device not found or ambiguous, duplicate,
/// unknown id, unsupported OS, already pending, dry run) or makes it a job.
fn decide(
    plan: RowPlan,
    config: &RunConfig,
    prepared: &Prepared,
    seen: &mut HashMap<[u64; 2], u64>,
    seq: u64,
    user: Vec<String>,
) -> Item {
    let (machine_id, machine) = match prepared.target(&plan) {
        Ok(target) => target,
        Err(row) => return Item::Settled { seq, user, row: *row, journal: true },
    };
    let mut row = ResultRow {
        line: plan.line,
        machine_id: machine_id.clone(),
        action: plan.action.cli_name().to_string(),
        ..ResultRow::default()
    };
    let key = dedupe_key(&machine_id, &plan);
    if let Some(first) = seen.get(&key) {
        row.status = Some(Status::Duplicate);
        row.error_message =
            format!("same machine, action and parameters as line {first}; sent once");
        row.finished_at = format_utc(SystemTime::now());
        return Item::Settled { seq, user, row, journal: true };
    }
    seen.insert(key, plan.line);
    if let Some(row) = prepared.check(&plan, &machine_id, machine) {
        return Item::Settled { seq, user, row, journal: true };
    }
    if config.dry_run {
        row.status = Some(Status::Planned);
        return Item::Settled { seq, user, row, journal: false };
    }
    let body = ActionBody {
        comment: plan.comment,
        isolation_type: plan.isolation_type,
        sha1: plan.sha1,
        scan_type: plan.scan_type,
    };
    Item::Send { seq, user, job: Job { line: plan.line, machine_id, action: plan.action, body } }
}

/// 128-bit key of machine + action + parameters (comment excluded: it does
/// not change what happens to the device). Two `u64` halves rather than a
/// `u128`: the map holds one entry per row, and a `u128`'s 16-byte alignment
/// pads each entry from 24 to 32 bytes.
fn dedupe_key(machine_id: &str, plan: &RowPlan) -> [u64; 2] {
    let mut halves = [0u64; 2];
    for (salt, half) in halves.iter_mut().enumerate() {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        machine_id.to_ascii_lowercase().hash(&mut h);
        plan.action.hash(&mut h);
        plan.isolation_type.hash(&mut h);
        plan.sha1.as_deref().map(str::to_ascii_lowercase).hash(&mut h);
        plan.scan_type.hash(&mut h);
        *half = h.finish();
    }
    halves
}

/// Settles the rows an earlier run left in doubt: each is looked up on the
/// server (one list call per action type and batch of machines); rows whose
/// action exists are recorded as submitted, the others will be sent again.
async fn reconcile<T: Transport>(
    ctx: &Ctx<T>,
    in_doubt: HashMap<u64, super::journal::Intent>,
) -> Vec<ResultRow> {
    let mut by_action: BTreeMap<ActionKind, Vec<super::journal::Intent>> = BTreeMap::new();
    for (_, intent) in in_doubt {
        if let Ok(a) = intent.action.parse::<ActionKind>() {
            by_action.entry(a).or_default().push(intent);
        }
    }
    let mut settled = Vec::new();
    for (action, intents) in by_action {
        for chunk in intents.chunks(20) {
            let since =
                chunk.iter().filter_map(|i| parse_utc(&i.at)).min().unwrap_or_else(SystemTime::now);
            let machines: Vec<&str> = chunk.iter().map(|i| i.machine_id.as_str()).collect();
            match lookup_actions(ctx, action, &machines, since).await {
                Ok(found) => {
                    for intent in chunk {
                        if let Some(a) = pick_match(&found, &intent.machine_id, None) {
                            settled.push(ResultRow {
                                line: intent.line,
                                machine_id: intent.machine_id.clone(),
                                action: action.cli_name().to_string(),
                                status: Some(Status::Submitted),
                                action_id: a.id.clone(),
                                action_status: a.status.clone(),
                                attempts: 1,
                                requested_at: intent.at.clone(),
                                finished_at: format_utc(SystemTime::now()),
                                error_message: "found on the server after an interrupted run"
                                    .to_string(),
                                ..ResultRow::default()
                            });
                        }
                    }
                }
                Err(e) => {
                    for intent in chunk {
                        settled.push(ResultRow {
                            line: intent.line,
                            machine_id: intent.machine_id.clone(),
                            action: action.cli_name().to_string(),
                            status: Some(Status::InDoubt),
                            requested_at: intent.at.clone(),
                            finished_at: format_utc(SystemTime::now()),
                            error_code: e.code().to_string(),
                            error_message: format!(
                                "sent by an interrupted run, and looking it up failed ({e}); check the device before sending again"
                            ),
                            ..ResultRow::default()
                        });
                    }
                }
            }
        }
    }
    settled
}
