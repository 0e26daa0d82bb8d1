//! `mdebulk status RESULTS [--wait]`: follows the actions of an earlier
//! results file (a cron job that submits, a later one that checks).
//!
//! Every row whose status is open (submitted, already pending, pending, in
//! progress) and which has an action id is looked up — once, or until final
//! with `--wait` — with the same list calls as `run --wait` ([`super::wait`]).
//! The file is updated in place, atomically, with the user's columns kept;
//! the journal beside it learns the new rows and is locked meanwhile
//! ([`ResultsLock`]), so a run or another `status` cannot write the same
//! file at the same time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::call::{Ctx, RetryPolicy};
use super::journal::{Journal, journal_path};
use super::stop::Stop;
use super::summary::Summary;
use super::transport::Transport;
use super::wait::{Open, apply_tracked, follow};
use super::{RunError, WaitOptions};
use crate::pace::{Limit, Pacer};
use crate::results::ResultRow;
use crate::run::rewrite::ResultsFile;

/// Everything `status` needs, validated.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The results file to follow up.
    pub results: PathBuf,
    /// `--wait`: poll until final or the timeout; `None` polls once.
    pub wait: Option<WaitOptions>,
    /// Quotas per API; empty means no pacing.
    pub limits: Vec<Limit>,
    /// Safety margin added to every window (`None`: the pacer's default).
    pub pace_margin: Option<Duration>,
    /// Retry knobs for the list calls.
    pub policy: RetryPolicy,
}

/// The lock on a results file: its run's journal, held open (and locked)
/// while `status` or `undo` work on the file, so that no run, `status` or
/// `undo` can work on it at the same time.
///
/// A results file without a journal gets one for the time of the lock only:
/// it is removed again on release, so that a later `run --resume` never
/// mistakes it for the record of a run.
pub struct ResultsLock {
    /// The open, locked journal.
    journal: Journal,
    /// Where it is.
    path: PathBuf,
    /// Whether the journal was created for the lock (and goes away with it).
    created: bool,
}

impl ResultsLock {
    /// Locks the journal of `results`, creating it if needed; refused while
    /// another process holds it.
    pub fn take(results: &Path) -> Result<ResultsLock, RunError> {
        let path = journal_path(results);
        let created = !path.exists();
        let (journal, _) = Journal::open(&path, false)?;
        Ok(ResultsLock { journal, path, created })
    }

    /// Appends updated rows to the journal (a run's journal only), durably,
    /// so that a later `--resume` carries them instead of older versions.
    pub async fn record<'a>(&self, rows: impl IntoIterator<Item = &'a ResultRow>) {
        if self.created {
            return;
        }
        for row in rows {
            self.journal.update_nowait(row);
        }
        if let Err(e) = self.journal.flush().await {
            tracing::warn!(error = %e, "the updated rows are in the results file but not in the journal");
        }
    }

    /// Releases the lock (removing a journal made only for it).
    pub async fn release(self) {
        if self.created {
            // Removed while still locked: no other process can have it open.
            let _ = std::fs::remove_file(&self.path);
        }
        self.journal.close().await;
    }
}

/// Follows the open actions of `config.results` and updates the file.
pub async fn status<T: Transport>(
    config: &StatusConfig,
    transport: Arc<T>,
    stop: Stop,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let path = config.results.clone();
    // Refuse anything that is not a results file before creating a journal
    // beside it.
    let format = {
        let path = path.clone();
        super::blocking(move || ResultsFile::open(&path).map(|f| f.format())).await?
    };
    let lock = ResultsLock::take(&path)?;
    let result = follow_up(config, transport, &stop, format, &lock).await;
    lock.release().await;
    let mut summary = result?;
    summary.stamp(started, &stop);
    Ok(summary)
}

/// The work done under the journal's lock.
async fn follow_up<T: Transport>(
    config: &StatusConfig,
    transport: Arc<T>,
    stop: &Stop,
    format: crate::output::ResultFormat,
    lock: &ResultsLock,
) -> Result<Summary, RunError> {
    let path = config.results.clone();
    let open: Vec<Open> = {
        let path = path.clone();
        super::blocking(move || -> Result<Vec<Open>, RunError> {
            let file = ResultsFile::open_as(&path, format)?;
            let now = SystemTime::now();
            let mut open = Vec::new();
            for entry in file.entries()? {
                if let Some(o) = Open::of(&entry?.row, now) {
                    open.push(o);
                }
            }
            Ok(open)
        })
        .await?
    };
    let mut summary = Summary::new(Some(path.clone()), false);
    summary.heading = Some("status");
    let mut tracked = std::collections::HashMap::new();
    let pacer = Arc::new(Pacer::new(&config.limits, config.pace_margin));
    let ctx = Ctx::new(transport, pacer, None, config.policy.clone(), stop.clone());
    if !open.is_empty() {
        super::call::first_token(ctx.transport.as_ref(), &config.policy, stop)
            .await
            .map_err(RunError::Auth)?;
        let options = config
            .wait
            .unwrap_or(WaitOptions { poll_interval: Duration::ZERO, timeout: Duration::ZERO });
        let (found, stats) = follow(&ctx, &open, options, stop).await;
        tracked = found;
        summary.waited = Some(stats);
    }
    let applied = super::blocking(move || apply_tracked(&path, format, &tracked)).await?;
    lock.record(applied.changed.iter().map(|(_, row)| row)).await;
    summary.by_status = applied.counts.by_status;
    summary.throttled = ctx.throttled.load(std::sync::atomic::Ordering::Relaxed);
    Ok(summary)
}
