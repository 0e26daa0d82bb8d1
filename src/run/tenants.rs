//! A run over many tenants (`--tenants`): one share per tenant, each a
//! whole run of its own — its credentials and token cache (its transport),
//! its quota's pacer, its pool of rows in flight, its journal and its
//! results file, kept in `RESULTS.tenants/` — all side by side; then the
//! results file: every selected row of the input, in input order, each
//! with its tenant, merged from the shares.
//!
//! Each share is an ordinary run over the rows of its tenant alone, so
//! everything a run guarantees holds per tenant: pacing at that tenant's
//! quota (a 429 pauses that tenant only), resume from its own journal with
//! no row sent twice, `--wait`, `--tag-result`, the look-ups and guards.
//! One slow or throttled tenant never stalls another: the shares share no
//! pacer and no pool. A tenant whose credentials fail stops alone: its rows
//! are written `not_sent` (those an earlier invocation settled, as they
//! were), the others finish, and the summary says which tenant stopped and
//! why. A stop of the whole run (Ctrl-C, `--max-runtime`) reaches every
//! share; a journal or results file that cannot be written stops them all,
//! as they share the disk.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::time::Instant;

use super::identity::RowKey;
use super::journal::{Journal, journal_path};
use super::pipeline::{invalid_row, is_plan, not_sent, refuse_existing, survey_input};
use super::plan::{Survey, plan_selected};
use super::rewrite::{ResultsEntry, ResultsFile};
use super::stop::{Stop, StopReason};
use super::summary::{Summary, TenantOutcome};
use super::transport::Transport;
use super::{Existing, ResultsTarget, RunConfig, RunError};
use crate::input::{Input, Role, TenantNames, row_tenant};
use crate::output::{ResultFormat, sink_in};
use crate::pace::Limit;
use crate::results::{ResultRow, Status};

/// One tenant of a run over many, as the run needs it.
pub struct TenantSide<T> {
    /// The profile name rows use.
    pub name: String,
    /// The tenant's id (a GUID or a domain), part of its share's identity.
    pub tenant_id: String,
    /// The API base URL its calls go to.
    pub api: String,
    /// Its quota per API: each tenant is paced on its own.
    pub limits: Vec<Limit>,
    /// Its calls, with its own credentials and token cache.
    pub transport: Arc<T>,
}

/// The folder of a run's shares: `RESULTS.tenants`.
pub fn shares_dir(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".tenants");
    PathBuf::from(name)
}

/// The results file of one tenant's share: `RESULTS.tenants/NAME.csv`
/// (CSV whatever the results' own format: it is read back to merge).
pub fn share_path(results: &Path, tenant: &str) -> PathBuf {
    shares_dir(results).join(format!("{tenant}.csv"))
}

/// The column a merged row carries its tenant in when the input has no
/// tenant column of its own (`--tenant`, or devices found by `--tag`).
pub const TENANT_COLUMN: &str = "tenant";

/// How one share ended.
struct Share {
    /// The profile name.
    name: String,
    /// Its results file.
    path: PathBuf,
    /// Its summary, or why it was refused.
    outcome: Result<Summary, RunError>,
}

/// Runs `config` over `sides`, one share per tenant with rows, side by
/// side, and merges their results. `config.defaults.tenants` names the
/// profiles (and `--tenant`'s restriction); `config.results` is a file.
pub async fn run<T: Transport>(
    config: &RunConfig,
    sides: Vec<TenantSide<T>>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let ResultsTarget::File(results) = &config.results else {
        return Err(RunError::Internal("a run over many tenants writes a results file".into()));
    };
    let Some(names) = config.defaults.tenants.clone() else {
        return Err(RunError::Internal("a run over many tenants needs its tenant names".into()));
    };
    check_existing(config, results)?;
    // The survey of the whole input: a row naming no tenant of the file
    // (or otherwise invalid) refuses the file before any share starts.
    let surveyed = match &config.targets {
        None => Some(survey_input(config, true).await?),
        Some(_) => None,
    };
    if let Some((_, survey)) = &surveyed {
        check_total(config, survey)?;
    }
    let dir = shares_dir(results);
    // A plan is a preview: the next dry run writes it afresh, shares and all.
    let fresh_plan = config.dry_run && is_plan(results);
    if (config.existing == Existing::Force || fresh_plan) && dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|source| RunError::Io { path: dir.clone(), source })?;
    }
    create_private_dir(&dir)?;
    let kept: Vec<TenantSide<T>> = sides
        .into_iter()
        .filter(|s| names.keeps(Some(&s.name)))
        .filter(|s| surveyed.as_ref().is_none_or(|(_, sv)| sv.shares.contains_key(&s.name)))
        .collect();
    tracing::info!(tenants = kept.len(), "a run over many tenants: one share each, side by side");
    if let Some(limit) = config.max_runtime {
        // One deadline for the whole run, reaching every share.
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            stop.trigger(StopReason::Deadline);
        });
    }
    let input = surveyed.as_ref().map(|(input, _)| input.clone());
    let mut share_surveys = surveyed.map(|(_, survey)| survey.shares).unwrap_or_default();
    let shares = side_by_side(kept, &stop, true, |side, own| {
        let surveyed = share_surveys
            .remove(&side.name)
            .and_then(|survey| input.as_ref().map(|input| (input.clone(), survey)));
        run_share(config, results, &names, side, surveyed, own)
    })
    .await;
    let (owned, merged_names) = (config.clone(), names.clone());
    let results_path = results.clone();
    tracing::debug!("shares ended: merging their results");
    let (shares, mut summary) = super::blocking(move || {
        let summary = merge(&owned, input.as_deref(), &merged_names, &shares, &results_path)?;
        Ok::<_, RunError>((shares, summary))
    })
    .await?;
    tracing::debug!("results merged");
    absorb_shares(&mut summary, shares);
    summary.stamp(started, &stop);
    if summary.stopped.is_none() {
        // The most severe stop of a share speaks for the run (its code and
        // its hint to resume), naming the tenant.
        if let Some((name, reason, detail)) = worst_stop(&summary.tenants) {
            summary.stopped = Some(reason);
            summary.stop_detail = Some(format!("tenant {name}: {detail}"));
        }
    }
    Ok(summary)
}

/// Refuses an existing run's files as one run over one tenant does, for the
/// results file and the shares' folder together.
fn check_existing(config: &RunConfig, results: &Path) -> Result<(), RunError> {
    if config.dry_run && is_plan(results) {
        return Ok(());
    }
    refuse_existing(config.existing, results, &shares_dir(results))
}

/// `--max-devices` over all tenants together (a mis-pasted list is as
/// dangerous spread over customers as in one); `--max-percent` is each
/// tenant's own, checked by its share.
fn check_total(config: &RunConfig, survey: &Survey) -> Result<(), RunError> {
    let guarded = survey.guarded();
    if guarded <= config.max_devices || config.dry_run {
        return Ok(());
    }
    let what = format!(
        "{guarded} rows over {} tenant(s) would isolate, restrict or offboard devices: more than --max-devices {}",
        survey.shares.len(),
        config.max_devices
    );
    if !config.allow_large {
        return Err(RunError::TooLarge(format!(
            "{what}; nothing was sent. Check the input (a mis-pasted list?), then add --allow-large to go on, or raise the cap"
        )));
    }
    if !config.interactive {
        return Ok(());
    }
    super::confirm_typed(
        true,
        &format!("About to act on {guarded} devices over {} tenants.", survey.shares.len()),
        &guarded.to_string(),
        format!("{what}; the count was not typed back"),
    )
}

/// The folder of the shares, owner-only: its files list devices.
fn create_private_dir(dir: &Path) -> Result<(), RunError> {
    let io = |source| RunError::Io { path: dir.to_path_buf(), source };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    // Elsewhere a folder in the user's profile inherits its owner-only ACL.
    #[cfg(not(unix))]
    builder.create(dir).map_err(io)?;
    Ok(())
}

/// One tenant's share: the run over its rows, with its own stop (see
/// [`side_by_side`]).
async fn run_share<T: Transport>(
    config: &RunConfig,
    results: &Path,
    names: &TenantNames,
    side: TenantSide<T>,
    surveyed: Option<(Arc<Input>, Survey)>,
    own: Stop,
) -> Share {
    let path = share_path(results, &side.name);
    let mut share = config.clone();
    share.defaults.tenants = match &config.targets {
        None => Some(names.only(&side.name)),
        // The devices the service found for this tenant are its own: the
        // targets file has no tenant column, every row takes the share's.
        Some(_) => names.restricted_to(&side.name),
    };
    share.results = ResultsTarget::File(path.clone());
    share.api = side.api.clone();
    share.tenant = side.tenant_id.clone();
    share.limits = side.limits.clone();
    // Asked once for the whole run, before any share started.
    share.yes = config.yes || config.targets.is_none();
    share.interactive = false;
    share.progress = false;
    share.max_runtime = None;
    if config.targets.is_none() {
        // Counted over every tenant already.
        share.max_devices = u64::MAX;
    }
    share.login_failure_stops = true;
    tracing::info!(tenant = %side.name, api = %side.api, "share started");
    let outcome = super::pipeline::run_surveyed(&share, side.transport, own, surveyed).await;
    match &outcome {
        Ok(s) => tracing::info!(tenant = %side.name, rows = s.rows(), "share ended"),
        Err(e) => tracing::warn!(tenant = %side.name, "share refused: {e}"),
    }
    Share { name: side.name, path, outcome }
}

/// The results file of the whole run, from the shares: in input order
/// with the input, else (devices found by `--tag` and the like) tenant
/// after tenant. A row whose share was refused, or that its share did not
/// write, is written from the share's journal when it holds the row, else
/// as `not_sent` with the share's error: every selected row has its line.
fn merge(
    config: &RunConfig,
    input: Option<&Input>,
    names: &TenantNames,
    shares: &[Share],
    results: &Path,
) -> Result<Summary, RunError> {
    let mut summary = Summary::new(Some(results.to_path_buf()), config.dry_run);
    let partial = super::partial_path(results);
    let format = ResultFormat::for_path(results);
    let io = |source| RunError::Io { path: partial.clone(), source };
    let by_name: HashMap<&str, &Share> = shares.iter().map(|s| (s.name.as_str(), s)).collect();
    let (mut user_columns, dialect) = match input {
        Some(input) => (input.columns().user_columns().to_vec(), input.results_dialect()),
        None => {
            let first = shares.iter().find_map(|s| ResultsFile::open(&s.path).ok());
            match first {
                Some(f) => (f.user_columns().to_vec(), f.dialect()),
                None => (
                    vec![Role::MachineId.canonical().to_string()],
                    crate::results::dialect::Dialect::COMMA,
                ),
            }
        }
    };
    let add_column = !user_columns.iter().any(|c| Role::for_header(c) == Some(Role::Tenant));
    if add_column {
        user_columns.insert(0, TENANT_COLUMN.to_string());
    }
    let file = crate::private::create(&partial).map_err(io)?;
    let mut sink =
        sink_in(format, dialect, BufWriter::with_capacity(256 * 1024, file), &user_columns);
    let mut write = |mut user: Vec<String>, tenant: &str, row: ResultRow| {
        if add_column {
            user.insert(0, tenant.to_string());
        }
        summary.count(&row);
        sink.write_row(&user, &row)
    };
    match input {
        Some(input) => {
            let columns = input.columns();
            let mut rows: HashMap<&str, ShareRows> = HashMap::new();
            for record in input.records()? {
                let record = record?;
                // The share of the row's tenant wrote it (so it was
                // selected): taken as it is, without planning it again.
                let tenant = row_tenant(&record, columns, &config.defaults);
                if let Some(share) = tenant.as_deref().and_then(|t| by_name.get(t)) {
                    let from =
                        rows.entry(share.name.as_str()).or_insert_with(|| ShareRows::open(share));
                    if let Some(row) = from.take(record.line)? {
                        let user = columns.user_values(&record.values);
                        write(user, &share.name, row).map_err(io)?;
                        continue;
                    }
                }
                let Ok(plan) =
                    plan_selected(&record, columns, &config.defaults, config.only.as_deref())
                else {
                    continue;
                };
                let user = columns.user_values(&record.values);
                let tenant = match &plan {
                    Ok(p) => p.tenant.clone(),
                    Err(_) => row_tenant(&record, columns, &config.defaults),
                };
                let (tenant, row) = match (tenant, &plan) {
                    (Some(t), _) if by_name.contains_key(t.as_str()) => {
                        let share = by_name[t.as_str()];
                        let from = rows
                            .entry(share.name.as_str())
                            .or_insert_with(|| ShareRows::open(share));
                        let row = match from.take(record.line)? {
                            Some(row) => row,
                            None => match &plan {
                                Ok(p) => from.fallback(share, p),
                                Err(problems) => invalid_row(columns, &record, problems),
                            },
                        };
                        (t, row)
                    }
                    (t, Err(problems)) => {
                        (t.unwrap_or_default(), invalid_row(columns, &record, problems))
                    }
                    // A valid row of a tenant that has no share: one this
                    // run does not keep, which `selection` left out.
                    (Some(t), Ok(p)) => {
                        return Err(RunError::Internal(format!(
                            "line {}: tenant {t:?} has rows but no share",
                            p.line
                        )));
                    }
                    (None, Ok(p)) => {
                        return Err(RunError::Internal(format!(
                            "line {}: a row with no tenant",
                            p.line
                        )));
                    }
                };
                write(user, &tenant, row).map_err(io)?;
            }
        }
        None => {
            for name in names.names() {
                let Some(share) = by_name.get(name.as_str()) else { continue };
                let Ok(file) = ResultsFile::open(&share.path) else { continue };
                for entry in file.entries()? {
                    let ResultsEntry { user, row } = entry?;
                    write(user, name, row).map_err(io)?;
                }
            }
        }
    }
    sink.finish().map_err(io)?;
    drop(sink);
    // Renamed into place as a run's own results are: what is durable is the
    // shares' journals, from which a resume writes this file again.
    std::fs::rename(&partial, results)
        .map_err(|source| RunError::Io { path: results.to_path_buf(), source })?;
    Ok(summary)
}

/// The rows of one share for the merge: its results file, read in step
/// with the input, and, for rows it did not write, its journal.
struct ShareRows {
    /// The share's results, when it ran and wrote them.
    entries: Option<std::iter::Peekable<super::rewrite::OwnedEntries>>,
    /// The share's journal's settled rows, read on the first row it lacks.
    journal: Option<HashMap<RowKey, ResultRow>>,
    /// Why the share wrote no row for this one.
    why: String,
}

impl ShareRows {
    fn open(share: &Share) -> ShareRows {
        let (entries, why) = match &share.outcome {
            Ok(_) => (
                ResultsFile::open(&share.path)
                    .and_then(ResultsFile::into_entries)
                    .ok()
                    .map(Iterator::peekable),
                "the tenant's share of the run did not write this row".to_string(),
            ),
            Err(e) => (None, format!("the tenant's share of the run was refused: {e}")),
        };
        ShareRows { entries, journal: None, why }
    }

    /// The share's row of input line `line`, when it wrote one. A share
    /// writes its rows in input order, one per selected row of its tenant.
    fn take(&mut self, line: u64) -> Result<Option<ResultRow>, RunError> {
        let Some(entries) = self.entries.as_mut() else { return Ok(None) };
        loop {
            match entries.peek() {
                Some(Ok(e)) if e.row.line < line => {
                    entries.next();
                }
                Some(Ok(e)) if e.row.line == line => {
                    return Ok(entries.next().and_then(Result::ok).map(|e| e.row));
                }
                Some(Ok(_)) | None => return Ok(None),
                Some(Err(_)) => {
                    return match entries.next() {
                        Some(Err(e)) => Err(e.into()),
                        _ => Ok(None),
                    };
                }
            }
        }
    }

    /// A row the share did not write: as its journal settled it, else
    /// `not_sent` (nothing went out for it in this invocation).
    fn fallback(&mut self, share: &Share, plan: &crate::input::RowPlan) -> ResultRow {
        let journal = self.journal.get_or_insert_with(|| journal_rows(&share.path));
        if let Some(row) = journal.get(&RowKey::of(plan)) {
            return ResultRow { line: plan.line, ..row.clone() };
        }
        let machine = match &plan.target {
            crate::input::Target::Id(id) => id.as_str(),
            _ => "",
        };
        let mut row = not_sent(plan.line, machine, plan.action.cli_name());
        row.device_name = plan.given_name.clone().unwrap_or_default();
        row.error_message =
            format!("{}; nothing was sent for this row: --resume sends it", self.why);
        row
    }
}

/// The settled rows of a share's journal (none when it has none, or it
/// cannot be read: the row is then `not_sent`, which a resume corrects).
fn journal_rows(share: &Path) -> HashMap<RowKey, ResultRow> {
    let path = journal_path(share);
    if !path.exists() {
        return HashMap::new();
    }
    match Journal::open(&path, false) {
        Ok((journal, recovered)) => {
            drop(journal);
            let mut rows = recovered.rows;
            for (key, intent) in recovered.in_doubt {
                let mut row = not_sent(intent.line, &intent.machine_id, &intent.action);
                row.status = Some(Status::InDoubt);
                row.error_message = "sent by an earlier run, answer unknown: --resume looks it up before sending anything".into();
                rows.entry(key).or_insert(row);
            }
            rows
        }
        Err(e) => {
            tracing::warn!("{}: {e}", path.display());
            HashMap::new()
        }
    }
}

/// Each share's outcome into the run's summary, in profile order.
fn absorb_shares(summary: &mut Summary, shares: Vec<Share>) {
    for share in shares {
        let outcome = match share.outcome {
            Ok(s) => {
                summary.throttled += s.throttled;
                summary.reconciled += s.reconciled;
                summary.no_longer_in_input += s.no_longer_in_input;
                if let Some(e) = s.estimate {
                    // The shares run side by side: the slowest one sets the pace.
                    summary.estimate = Some(summary.estimate.map_or(e, |x| x.max(e)));
                }
                TenantOutcome { name: share.name, summary: Some(Box::new(s)), refused: None }
            }
            Err(e) => TenantOutcome {
                name: share.name,
                summary: None,
                refused: Some((e.kind(), e.to_string())),
            },
        };
        summary.tenants.push(outcome);
    }
}

/// The share stopped for the most severe reason, with its tenant and what
/// failed.
fn worst_stop(tenants: &[TenantOutcome]) -> Option<(String, StopReason, String)> {
    tenants
        .iter()
        .filter_map(|t| {
            let s = t.summary.as_ref()?;
            let reason = s.stopped?;
            let detail = s.stop_detail.clone().unwrap_or_else(|| reason.describe().to_string());
            Some((t.name.clone(), reason, detail))
        })
        .max_by_key(|(_, reason, _)| reason.exit_code())
}

/// The shares of the run over many tenants whose results file is
/// `results`, for a command that follows them up (`status`, `undo`): the
/// kept sides whose share file exists, each with it. A results file with
/// no shares beside it is not one of such a run's.
fn shares_of<T>(
    results: &Path,
    names: &TenantNames,
    sides: Vec<TenantSide<T>>,
) -> Result<Vec<(TenantSide<T>, PathBuf)>, RunError> {
    let dir = shares_dir(results);
    if !dir.is_dir() {
        return Err(RunError::NotManyTenants(results.to_path_buf()));
    }
    Ok(sides
        .into_iter()
        .filter(|s| names.keeps(Some(&s.name)))
        .filter_map(|s| {
            let path = share_path(results, &s.name);
            path.exists().then_some((s, path))
        })
        .collect())
}

/// Runs `start` for every item side by side, each with a stop of its own
/// that the whole command's stop reaches (Ctrl-C and the deadline reach
/// every tenant), and not the other way round: one tenant's fault stays
/// its own — but for a journal or results file that cannot be written
/// when `storage_up`: the tenants share the disk, so that stops them all.
async fn side_by_side<I, F, Fut>(
    items: Vec<I>,
    whole: &Stop,
    storage_up: bool,
    mut start: F,
) -> Vec<Fut::Output>
where
    F: FnMut(I, Stop) -> Fut,
    Fut: std::future::Future,
{
    futures::future::join_all(items.into_iter().map(|item| {
        let own = Stop::new();
        let (w, o) = (whole.clone(), own.clone());
        let link = tokio::spawn(async move {
            tokio::select! {
                () = w.wait() => {
                    if let Some(reason) = w.reason() {
                        match w.detail() {
                            Some(d) => o.fail(reason, d),
                            None => o.trigger(reason),
                        }
                    }
                }
                () = o.wait(), if storage_up => {
                    if o.reason() == Some(StopReason::Storage) {
                        w.fail(StopReason::Storage, o.detail().unwrap_or_default());
                    }
                }
            }
        });
        let work = start(item, own);
        async move {
            let done = work.await;
            link.abort();
            done
        }
    }))
    .await
}

/// `mdebulk status --tenants`: each tenant's share followed up with its
/// own credentials, side by side, then the results file rewritten from
/// the shares, row for row.
pub async fn status<T: Transport>(
    config: &super::status::StatusConfig,
    names: &TenantNames,
    sides: Vec<TenantSide<T>>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let shares = shares_of(&config.results, names, sides)?;
    let outcomes = side_by_side(shares, &stop, false, |(side, path), own| {
        let share = super::status::StatusConfig {
            results: path.clone(),
            limits: side.limits.clone(),
            ..config.clone()
        };
        async move {
            let outcome = super::status::status(&share, side.transport, own).await;
            Share { name: side.name, path, outcome }
        }
    })
    .await;
    let (results, names_owned) = (config.results.clone(), names.clone());
    let (outcomes, mut summary) = super::blocking(move || {
        let sources: HashMap<String, PathBuf> = outcomes
            .iter()
            .filter(|s| s.outcome.is_ok())
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        let summary =
            follow_shares(&results, &names_owned, &sources, &results, |_, row| Some(row.clone()))?;
        Ok::<_, RunError>((outcomes, summary))
    })
    .await?;
    summary.heading = Some("status");
    summary.waited = None;
    absorb_shares(&mut summary, outcomes);
    summary.stamp(started, &stop);
    Ok(summary)
}

/// `mdebulk undo --tenants`: each tenant's share undone with its own
/// credentials and quota, side by side, after one confirmation for all;
/// the undo results follow the results file row for row.
pub async fn undo<T: Transport>(
    config: &super::undo::UndoConfig,
    names: &TenantNames,
    sides: Vec<TenantSide<T>>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let shares = shares_of(&config.results, names, sides)?;
    let own = {
        let paths: Vec<PathBuf> = shares.iter().map(|(_, p)| p.clone()).collect();
        super::blocking(move || {
            paths.iter().try_fold(0u64, |n, p| Ok::<_, RunError>(n + super::undo::survey(p)?.own))
        })
        .await?
    };
    super::undo::confirm(config, own)?;
    let outcomes = side_by_side(shares, &stop, false, |(side, path), own| {
        let output = shares_dir(&config.results).join(format!("{}.undo.csv", side.name));
        let share = super::undo::UndoConfig {
            results: path,
            output: output.clone(),
            yes: true,
            interactive: false,
            limits: side.limits.clone(),
            ..config.clone()
        };
        async move {
            let outcome = super::undo::undo(&share, side.transport, own).await;
            Share { name: side.name, path: output, outcome }
        }
    })
    .await;
    let (results, output, names_owned) =
        (config.results.clone(), config.output.clone(), names.clone());
    let (outcomes, mut summary) = super::blocking(move || {
        let sources: HashMap<String, PathBuf> = outcomes
            .iter()
            .filter(|s| s.outcome.is_ok())
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        let refused: HashMap<String, String> = outcomes
            .iter()
            .filter_map(|s| s.outcome.as_ref().err().map(|e| (s.name.clone(), e.to_string())))
            .collect();
        let summary = follow_shares(&results, &names_owned, &sources, &output, |tenant, row| {
            // A row of a tenant this undo did not reach: said so, in its place.
            let why = match refused.get(tenant) {
                Some(e) => format!("tenant {tenant}: the undo was refused: {e}; nothing was sent"),
                None => format!("tenant {tenant}: not part of this undo"),
            };
            let status = if refused.contains_key(tenant) { Status::Error } else { Status::Skipped };
            let mut skipped =
                ResultRow::settled(row.line, &row.machine_id, &row.action, status, why);
            skipped.device_name.clone_from(&row.device_name);
            Some(skipped)
        })?;
        Ok::<_, RunError>((outcomes, summary))
    })
    .await?;
    summary.heading = Some("undo");
    absorb_shares(&mut summary, outcomes);
    summary.stamp(started, &stop);
    Ok(summary)
}

/// Writes `output` in the order and with the user's columns of the
/// results file `order`, each row taken from its tenant's file in
/// `sources` (the row of the same line), or, for tenants without one,
/// made by `missing` from the results file's own row (`None`: left out).
fn follow_shares(
    order: &Path,
    names: &TenantNames,
    sources: &HashMap<String, PathBuf>,
    output: &Path,
    missing: impl Fn(&str, &ResultRow) -> Option<ResultRow>,
) -> Result<Summary, RunError> {
    let file = ResultsFile::open(order)?;
    let tenant_column = file
        .user_columns()
        .iter()
        .position(|c| Role::for_header(c) == Some(Role::Tenant))
        .ok_or_else(|| RunError::NotManyTenants(order.to_path_buf()))?;
    let mut readers: HashMap<&str, std::iter::Peekable<super::rewrite::OwnedEntries>> =
        HashMap::new();
    for (name, path) in sources {
        readers.insert(name.as_str(), ResultsFile::open(path)?.into_entries()?.peekable());
    }
    let partial = super::partial_path(output);
    let io = |source| RunError::Io { path: partial.clone(), source };
    let out = crate::private::create(&partial).map_err(io)?;
    let mut sink = sink_in(
        ResultFormat::for_path(output),
        file.dialect(),
        BufWriter::with_capacity(256 * 1024, out),
        file.user_columns(),
    );
    let mut summary = Summary::new(Some(output.to_path_buf()), false);
    for entry in file.entries()? {
        let ResultsEntry { user, row } = entry?;
        let cell = user.get(tenant_column).map(String::as_str).unwrap_or_default();
        let tenant = names.resolve(cell).ok().map(str::to_string);
        let from_share = match tenant.as_deref().and_then(|t| readers.get_mut(t)) {
            Some(reader) => {
                while reader.peek().is_some_and(|e| e.as_ref().is_ok_and(|e| e.row.line < row.line))
                {
                    reader.next();
                }
                match reader.next_if(|e| e.as_ref().map_or(true, |e| e.row.line == row.line)) {
                    Some(e) => Some(e?.row),
                    None => None,
                }
            }
            None => None,
        };
        let written = match from_share {
            Some(r) => Some(r),
            None => match &tenant {
                Some(t) if names.keeps(Some(t)) => missing(t, &row),
                // Another tenant's row (`--tenant`), or one naming none.
                _ => (output == order).then(|| row.clone()),
            },
        };
        if let Some(r) = written {
            summary.count(&r);
            sink.write_row(&user, &r).map_err(io)?;
        }
    }
    sink.finish().map_err(io)?;
    drop(sink);
    crate::private::open(std::fs::OpenOptions::new().write(true), &partial)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&partial, output)
        .map_err(|source| RunError::Io { path: output.to_path_buf(), source })?;
    Ok(summary)
}

/// `mdebulk devices --tenants`: every tenant's devices and containment,
/// read side by side with each tenant's own credentials, in one report
/// headed by a `tenant` column (a run input with `--tenants` as it is).
/// Returns the counts over all tenants, and each tenant that could not be
/// read with why; the report holds the others.
pub async fn devices<T: Transport>(
    config: &super::devices::DevicesConfig,
    sides: Vec<TenantSide<T>>,
    stop: Stop,
) -> Result<(super::devices::DevicesReport, Vec<(String, String)>), RunError> {
    let listed = side_by_side(sides, &stop, false, |side, own| {
        let share = super::devices::DevicesConfig { limits: side.limits.clone(), ..config.clone() };
        async move {
            let listed = super::devices::listed(&share, side.transport, own).await;
            (side.name, listed)
        }
    })
    .await;
    let mut total = super::devices::DevicesReport::default();
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for (name, listed) in listed {
        match listed {
            Ok((report, tenant_rows)) => {
                total.machines += report.machines;
                total.listed += report.listed;
                total.isolated += report.isolated;
                total.restricted += report.restricted;
                total.actions += report.actions;
                rows.extend(tenant_rows.into_iter().map(|mut r| {
                    r.insert(0, name.clone());
                    r
                }));
            }
            Err(e) => failed.push((name, e.to_string())),
        }
    }
    let mut header = vec![TENANT_COLUMN];
    header.extend(super::devices::COLUMNS);
    super::devices::write(config.output.as_deref(), &header, &rows).map_err(|source| {
        RunError::Io { path: config.output.clone().unwrap_or_else(|| PathBuf::from("-")), source }
    })?;
    Ok((total, failed))
}
