//! The run's journal: an append-only JSONL file beside the results that
//! makes a run crash-safe.
//!
//! - Before a request leaves, an *intent* record (line, machine, action,
//!   time) is written to the file, so it survives the process dying at any
//!   instant; when a row settles, its full result record is written and made
//!   durable (fsync) before the row counts as done. A line with an intent but
//!   no result after a crash was *in doubt*: sent, answer unknown.
//! - Records are appended to a queue in memory (encoded straight into it
//!   under a short lock) and leave for the file in batches, one `write`
//!   each, under the file's lock, so records never interleave. An intent's
//!   task yields once, letting the other requests leaving in the same
//!   scheduler pass append theirs, then writes the whole batch (unless
//!   another task already has) before its request is sent: about ten
//!   intents share a `write` at the default concurrency, where one `write`
//!   per request cost the runner a tenth to a fifth of its throughput.
//!   Settled rows ride along with the next batch.
//! - Durability uses group commit: a syncer thread gathers every waiter that
//!   arrives within [`LINGER`] of the first, writes what is queued, calls
//!   `fdatasync` once for all of them and wakes them. Under load a commit
//!   holds hundreds of rows, so fsync cost never limits throughput; while
//!   rows settle, commits are [`LINGER`] plus one `fdatasync` apart.
//! - An intent reaches the disk with the next commit, a few tens of
//!   milliseconds later. Only a power loss inside that window can lose one
//!   for a request already sent; a resumed run then finds that action still
//!   pending in its pre-flight look-up and records the row `already_pending`
//!   instead of sending it again.
//! - The file carries an OS lock (`flock`) for the life of the run, so two
//!   runs on the same results file cannot interleave; the OS drops it if the
//!   process dies.
//! - A torn last line (the process died mid-write) is cut off when the
//!   journal is reopened; it was never acknowledged. A line that is
//!   unreadable in the middle (a torn write that a later one joined) is
//!   split at its records, and any record that still cannot be read but
//!   names its row leaves that row *in doubt*: looked up before anything is
//!   sent for it again, never silently resent.
//! - Every record carries the row's identity ([`RowKey`]), never only its
//!   line, and the first record holds the run's parameters ([`RunParams`]).
//! - **The journal is the gate.** Once a write, a sync or the file itself
//!   fails (disk full, I/O error, the file removed under the run), every
//!   later [`Journal::intent`] fails, so no request leaves that the journal
//!   could not record; the run stops and `--resume` reconciles.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::identity::{RowKey, RunParams};
use crate::api::action::ActionKind;
use crate::results::encode::{self, push_str, push_str_fields, push_u64};
use crate::results::{ResultRow, Status, Timestamp};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The run's parameters: the first record.
    Run(RunParams),
    /// A request for this row is about to leave.
    Intent(Intent),
    /// The row settled with this result.
    Row(KeyedRow),
    /// A settled row's action was followed to a new state (`--wait`,
    /// `status`): it replaces the row that holds the same action id.
    Update(ResultRow),
    /// `--tag-result`: the service confirmed that these machines carry the
    /// tag now (one record per batch call), so a resume does not tag them
    /// again.
    Tagged(Tagged),
}

/// One confirmed `--tag-result` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tagged {
    /// The tag, as given.
    pub tag: String,
    /// The machines tagged, lowercased.
    pub machine_ids: Vec<String>,
}

/// A settled row and its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedRow {
    /// The row's [`RowKey`].
    pub key: String,
    /// Its result (the line it had when it settled).
    #[serde(flatten)]
    pub row: ResultRow,
}

/// A request about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The row's [`RowKey`].
    pub key: String,
    /// Input line of the row when it was sent (for messages).
    pub line: u64,
    /// Target machine.
    pub machine_id: String,
    /// Action, by CLI name.
    pub action: String,
    /// When the request left: the lower bound for looking the action up on
    /// the server. `None` (written as the empty string) when no time is
    /// known; the look-up then reaches back to the start.
    #[serde(with = "crate::results::time::or_empty")]
    pub at: Option<Timestamp>,
}

/// Errors opening or reading the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal is locked by another process.
    #[error(
        "{path} is in use by another mdebulk run (it holds the lock on the journal); wait for it to finish or stop it first"
    )]
    Locked {
        /// The journal path.
        path: PathBuf,
    },
    /// Any I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The journal path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The journal can no longer record: nothing more may be sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the journal {path} can no longer be written ({cause}); nothing more is sent: free space or fix the file system, then run again with --resume"
)]
pub struct JournalFailed {
    /// The journal path.
    pub path: PathBuf,
    /// What failed first.
    pub cause: String,
}

/// What an earlier run left in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The run's parameters (the first record), when there was one.
    pub params: Option<RunParams>,
    /// Whole records read.
    pub records: u64,
    /// Settled rows by identity (the latest record wins).
    pub rows: HashMap<RowKey, ResultRow>,
    /// Requests in doubt, by identity: intents without a settled row, rows
    /// settled as `in_doubt`, and unreadable records that name their row
    /// (the earliest time, which bounds the search for the action).
    pub in_doubt: HashMap<RowKey, Intent>,
    /// Records that could not be read at all.
    pub unreadable: u64,
    /// `--tag-result`: per tag (lowercased, as the service compares tags),
    /// the machines (lowercased) an earlier invocation tagged.
    pub tagged: HashMap<String, std::collections::HashSet<String>>,
    /// Action id (lowercase) → the row that holds it, for updates.
    by_action_id: HashMap<String, RowKey>,
}

/// How long the syncer waits for more rows to join a commit once one asks:
/// long enough that `fdatasync` runs a few dozen times a second at most,
/// well inside the ~100 ms a row may wait to be counted as done.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// An open, locked journal with its group-commit syncer.
#[derive(Debug)]
pub struct Journal {
    /// The records waiting to be written, and the file.
    shared: Arc<Shared>,
    /// Requests for durability, answered once everything appended before
    /// the request is on disk. `None` once the journal is closing.
    sync: Option<std_mpsc::Sender<oneshot::Sender<()>>>,
    /// Where it lives.
    path: PathBuf,
    /// The syncer thread, joined on close.
    syncer: Option<std::thread::JoinHandle<()>>,
}

/// What the appending tasks and the syncer share.
///
/// Records are appended to `queue` (a memory copy under a short lock) and
/// leave for the file in batches: whoever writes takes everything queued.
/// Intents that are appended while another task's write or the same
/// scheduler pass is under way share one `write` instead of one each.
#[derive(Debug)]
struct Shared {
    /// Whole records not yet written, in the order they were appended.
    queue: Mutex<Queue>,
    /// The file, held while a batch is taken from the queue and written, so
    /// batches reach the file in the order they were appended.
    file: Mutex<Writer>,
    /// How many bytes ever appended are in the file (see [`Queue::appended`]).
    written: AtomicU64,
    /// How many `write`s and commits were made (logged at close).
    writes: AtomicU64,
    commits: AtomicU64,
    /// The first failure of a write, a sync or the file; once set, the
    /// journal refuses every intent.
    failed: Mutex<Option<String>>,
    /// Where it lives (for messages).
    path: PathBuf,
}

/// Records appended and not yet written.
#[derive(Debug, Default)]
struct Queue {
    /// The records' bytes.
    bytes: Vec<u8>,
    /// Bytes ever appended: the position just past the last queued record.
    appended: u64,
}

/// The file and the spare buffer swapped with the queue's on each write, so
/// that neither side allocates per batch.
#[derive(Debug)]
struct Writer {
    file: File,
    spare: Vec<u8>,
}

impl Shared {
    /// Appends the whole records `encode` writes (straight into the queue,
    /// so no buffer is allocated per record); returns the position just
    /// past them.
    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let before = queue.bytes.len();
        encode(&mut queue.bytes);
        queue.appended += (queue.bytes.len() - before) as u64;
        queue.appended
    }

    /// Whether everything before position `end` is in the file.
    fn is_written(&self, end: u64) -> bool {
        self.written.load(Ordering::Acquire) >= end
    }

    /// Writes everything queued, in one `write`, unless what comes before
    /// `end` is already there (written by someone else while this waited).
    /// Fails once any write has failed: what was queued may be torn.
    fn write_out(&self, end: u64) -> Result<(), JournalFailed> {
        let mut writer = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        self.check()?;
        if self.is_written(end) {
            return Ok(());
        }
        let Writer { file, spare } = &mut *writer;
        let upto = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut queue.bytes, spare);
            queue.appended
        };
        let result = if spare.is_empty() { Ok(()) } else { file.write_all(spare) };
        spare.clear();
        self.writes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.written.store(upto, Ordering::Release);
                Ok(())
            }
            Err(e) => Err(self.fail(format!("write: {e}"))),
        }
    }

    /// Writes everything queued so far.
    fn write_all_queued(&self) -> Result<(), JournalFailed> {
        let end = self.queue.lock().unwrap_or_else(PoisonError::into_inner).appended;
        self.write_out(end)
    }

    /// The first failure, if the journal has failed.
    fn check(&self) -> Result<(), JournalFailed> {
        match &*self.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(cause) => Err(JournalFailed { path: self.path.clone(), cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Marks the journal failed (the first cause wins) and says so once.
    fn fail(&self, cause: String) -> JournalFailed {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() {
            tracing::error!(journal = %self.path.display(), cause = %cause, "the journal can no longer be written: no further request is sent");
            *failed = Some(cause);
        }
        JournalFailed { path: self.path.clone(), cause: failed.clone().unwrap_or_default() }
    }
}

/// The journal path for a results file: `<results>.journal`.
pub fn journal_path(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// The API base URL the run's parameters in the journal beside `results`
/// record (`simulated` for `run --simulate`); `None` when there is no
/// journal or its first record cannot be read.
pub fn recorded_api(results: &Path) -> Option<String> {
    let file = File::open(journal_path(results)).ok()?;
    let mut first = String::new();
    BufReader::new(file).read_line(&mut first).ok()?;
    match serde_json::from_str::<Record>(first.trim_end()).ok()? {
        Record::Run(params) => Some(params.api),
        _ => None,
    }
}

impl Journal {
    /// Opens (creating if needed) and locks the journal, returning what an
    /// earlier run recorded in it. `fresh` truncates it first (a forced new run).
    pub fn open(path: &Path, fresh: bool) -> Result<(Journal, Recovered), JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        let existed = path.exists();
        let mut file =
            crate::private::open(OpenOptions::new().read(true).append(true).create(true), path)
                .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked { path: path.to_path_buf() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        if fresh {
            file.set_len(0).map_err(io)?;
        }
        let recovered =
            if fresh { Recovered::default() } else { recover(&mut file).map_err(io)? };
        if recovered.unreadable > 0 {
            tracing::warn!(
                journal = %path.display(),
                records = recovered.unreadable,
                "unreadable journal records: the rows they name are looked up before anything is sent for them"
            );
        }
        if !existed {
            // Make the new directory entry itself durable.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
        }
        let sync_handle = file.try_clone().map_err(io)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { bytes: Vec::with_capacity(64 * 1024), appended: 0 }),
            file: Mutex::new(Writer { file, spare: Vec::with_capacity(64 * 1024) }),
            written: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed: Mutex::new(None),
            path: path.to_path_buf(),
        });
        let (tx, rx) = std_mpsc::channel();
        let syncer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || sync_loop(&shared, &sync_handle, &rx))
                .map_err(io)?
        };
        Ok((
            Journal { shared, sync: Some(tx), path: path.to_path_buf(), syncer: Some(syncer) },
            recovered,
        ))
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the run's parameters (the first record of a new journal),
    /// durably.
    pub async fn params(&self, params: &RunParams) -> Result<(), JournalFailed> {
        self.shared.append(|out| {
            // Invariant: serialising plain strings into a Vec cannot fail.
            serde_json::to_writer(&mut *out, &Record::Run(params.clone()))
                .expect("run parameters serialise");
            out.push(b'\n');
        });
        self.flush().await
    }

    /// Records that a request for the row `key` (now at `line`) is about to
    /// leave; `at` is when.
    /// Returns once the record is in the file, so that it survives the
    /// process dying from then on; it is on disk with the next commit. An
    /// error means the record is not in the file: the request must not leave.
    ///
    /// The task lets the others that are ready run first, so the intents of
    /// requests leaving together are written together.
    pub async fn intent(
        &self,
        key: &str,
        line: u64,
        machine_id: &str,
        action: ActionKind,
        at: Timestamp,
    ) -> Result<(), JournalFailed> {
        self.shared.check()?;
        let end = self
            .shared
            .append(|out| encode_intent(out, key, line, machine_id, action.cli_name(), Some(at)));
        tokio::task::yield_now().await;
        if self.shared.is_written(end) { Ok(()) } else { self.shared.write_out(end) }
    }

    /// Records, durably, that the row `key` settled.
    pub async fn row(&self, key: &str, row: &ResultRow) -> Result<(), JournalFailed> {
        self.row_nowait(key, row);
        self.flush().await
    }

    /// Records a settled row without waiting: it is written and made durable
    /// by the next commit ([`Journal::flush`]), which must come before the
    /// row is counted as done.
    pub fn row_nowait(&self, key: &str, row: &ResultRow) {
        self.shared.append(|out| encode_row(out, key, row));
    }

    /// Records, durably, that the service confirmed `tag` on `machine_ids`.
    pub async fn tagged(&self, tag: &str, machine_ids: &[String]) -> Result<(), JournalFailed> {
        let record =
            Record::Tagged(Tagged { tag: tag.to_string(), machine_ids: machine_ids.to_vec() });
        self.shared.append(|out| {
            // Invariant: serialising plain strings into a Vec cannot fail.
            serde_json::to_writer(&mut *out, &record).expect("a tag record serialises");
            out.push(b'\n');
        });
        self.flush().await
    }

    /// Records that a settled row's action reached a new state (the row
    /// with the same action id), without waiting (see [`Journal::row_nowait`]).
    pub fn update_nowait(&self, row: &ResultRow) {
        self.shared.append(|out| {
            // Invariant: serialising a row into a Vec cannot fail.
            serde_json::to_writer(&mut *out, &Record::Update(row.clone()))
                .expect("a row serialises");
            out.push(b'\n');
        });
    }

    /// Waits until everything appended so far is durable; fails when it
    /// cannot be (the journal failed, now or earlier).
    pub async fn flush(&self) -> Result<(), JournalFailed> {
        let (ack, done) = oneshot::channel();
        if let Some(sync) = &self.sync
            && sync.send(ack).is_ok()
        {
            // An error means the syncer died: nothing is durable any more.
            if done.await.is_err() {
                return Err(self.shared.fail("the journal's sync thread ended".into()));
            }
        }
        self.shared.check()
    }

    /// The journal's failure, if it has failed.
    pub fn failure(&self) -> Option<JournalFailed> {
        self.shared.check().err()
    }

    /// Flushes, stops the syncer and closes the file (releasing the lock).
    pub async fn close(self) {
        // A failure was already reported to whoever flushed last.
        let _ = self.flush().await;
        // Dropping joins the syncer, which may be finishing an fsync.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Drop for Journal {
    /// Writes what is still queued (durable only if a commit came after it)
    /// and waits for the syncer to end, so that the file and its lock are
    /// closed when the journal is gone.
    fn drop(&mut self) {
        self.sync = None;
        // A failure here is already logged (and stopped the run).
        let _ = self.shared.write_all_queued();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
        tracing::debug!(
            path = %self.path.display(),
            bytes = self.shared.written.load(Ordering::Relaxed),
            writes = self.shared.writes.load(Ordering::Relaxed),
            commits = self.shared.commits.load(Ordering::Relaxed),
            "journal closed"
        );
    }
}

/// One journal line for an intent: exactly what `serde_json` writes for
/// [`Record::Intent`] (the recovery reads it back with it).
fn encode_intent(
    out: &mut Vec<u8>,
    key: &str,
    line: u64,
    machine_id: &str,
    action: &str,
    at: Option<Timestamp>,
) {
    out.extend_from_slice(b"{\"intent\":{\"key\":");
    push_str(out, key);
    out.extend_from_slice(b",\"line\":");
    push_u64(out, line);
    let at = Timestamp::text_of(at);
    push_str_fields(out, &[("machine_id", machine_id), ("action", action), ("at", &at)]);
    out.extend_from_slice(b"}}\n");
}

/// One journal line for a settled row: exactly what `serde_json` writes for
/// [`Record::Row`] (the row's own fields are [`encode::row_fields`]).
fn encode_row(out: &mut Vec<u8>, key: &str, row: &ResultRow) {
    out.extend_from_slice(b"{\"row\":{\"key\":");
    push_str(out, key);
    out.push(b',');
    encode::row_fields(out, row);
    out.extend_from_slice(b"}}\n");
}

/// The syncer thread: group commit until the journal closes. Each commit
/// takes every request that arrives within [`LINGER`] of the first one,
/// writes what is queued and calls `fdatasync` once for all of them.
fn sync_loop(shared: &Shared, file: &File, rx: &std_mpsc::Receiver<oneshot::Sender<()>>) {
    let mut waiters = Vec::new();
    while let Ok(first) = rx.recv() {
        waiters.push(first);
        let deadline = std::time::Instant::now() + LINGER;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(w) => waiters.push(w),
                Err(_) => break,
            }
        }
        // A failure is recorded in `shared`, where the waiters find it.
        if shared.write_all_queued().is_ok() {
            shared.commits.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = file.sync_data() {
                shared.fail(format!("sync: {e}"));
            } else if removed(file, &shared.path) {
                shared.fail("the file was removed while the run was writing it".into());
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Whether the journal's file was removed (or replaced) under the run:
/// records written to it from then on would be lost with the process.
#[cfg(unix)]
fn removed(file: &File, _path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|m| m.nlink() == 0)
}

/// Whether the journal's file was removed under the run (Windows lets an
/// open file be deleted when it was opened with delete sharing, as Rust
/// opens files; the path is then gone).
#[cfg(not(unix))]
fn removed(_file: &File, path: &Path) -> bool {
    !path.exists()
}

/// Record starts, for splitting a line that two writes joined.
const RECORD_STARTS: [&[u8]; 4] = [b"{\"run\":", b"{\"intent\":", b"{\"row\":", b"{\"tagged\":"];

/// Reads an existing journal, cutting off a torn last line.
fn recover(file: &mut File) -> std::io::Result<Recovered> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&mut *file);
    let mut out = Recovered::default();
    let mut good_len = 0u64;
    let mut line = Vec::new();
    // Keys of unreadable records, settled later only by a readable row.
    let mut torn: Vec<String> = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        good_len += n as u64;
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) => out.apply(record),
            Err(_) => {
                for piece in split_records(&line) {
                    match serde_json::from_slice::<Record>(piece) {
                        Ok(record) => out.apply(record),
                        Err(_) => {
                            out.unreadable += 1;
                            torn.extend(key_of(piece));
                        }
                    }
                }
            }
        }
    }
    drop(reader);
    if file.metadata()?.len() != good_len {
        file.set_len(good_len)?;
    }
    // A torn record whose row never settled readably: in doubt.
    // The run's start bounds it; without the run's parameters, nothing does.
    let since = out
        .params
        .as_ref()
        .map_or(Some(Timestamp::from(std::time::UNIX_EPOCH)), |p| Timestamp::parse(&p.started_at));
    for key in torn {
        let key = RowKey::from_journal(key);
        if !out.rows.contains_key(&key) {
            out.in_doubt.entry(key.clone()).or_insert_with(|| Intent {
                key: key.as_str().to_string(),
                line: 0,
                // Known for rows that name their machine by id; for the
                // others only resolving the row again could tell.
                machine_id: key.machine_id().unwrap_or_default().to_string(),
                action: key.action().to_string(),
                at: since,
            });
        }
    }
    Ok(out)
}

impl Recovered {
    /// Takes one readable record into account, in file order.
    fn apply(&mut self, record: Record) {
        self.records += 1;
        match record {
            Record::Run(params) => {
                self.params.get_or_insert(params);
            }
            Record::Intent(i) => {
                // A request left after anything settled for this row: what
                // it did is unknown until it is looked up.
                let key = RowKey::from_journal(i.key.clone());
                self.rows.remove(&key);
                self.in_doubt.entry(key).or_insert(i);
            }
            Record::Row(KeyedRow { key, row }) => {
                let key = RowKey::from_journal(key);
                match row.status {
                    // Sent, answer unknown: looked up again on resume.
                    Some(Status::InDoubt) => {
                        self.rows.remove(&key);
                        let at = row.requested_at;
                        self.in_doubt.entry(key.clone()).or_insert(Intent {
                            key: key.as_str().to_string(),
                            line: row.line,
                            machine_id: row.machine_id.clone(),
                            action: row.action.clone(),
                            at,
                        });
                    }
                    // Nothing was done for the row: it is simply new.
                    Some(Status::NotSent) | None => {}
                    Some(_) => {
                        self.in_doubt.remove(&key);
                        if !row.action_id.is_empty() {
                            self.by_action_id
                                .insert(row.action_id.to_ascii_lowercase(), key.clone());
                        }
                        self.rows.insert(key, row);
                    }
                }
            }
            Record::Update(update) => {
                let held = self.by_action_id.get(&update.action_id.to_ascii_lowercase());
                if let Some(row) = held.and_then(|key| self.rows.get_mut(key))
                    && row.machine_id.eq_ignore_ascii_case(&update.machine_id)
                {
                    *row = ResultRow { line: row.line, ..update };
                }
            }
            Record::Tagged(Tagged { tag, machine_ids }) => {
                self.tagged.entry(tag.to_lowercase()).or_default().extend(machine_ids);
            }
        }
    }
}

/// The records of a line that two writes joined (a torn record followed by
/// a whole one): split before every record start but the first.
fn split_records(line: &[u8]) -> Vec<&[u8]> {
    let mut cuts = vec![0];
    for i in 1..line.len() {
        if RECORD_STARTS.iter().any(|start| line[i..].starts_with(start)) {
            cuts.push(i);
        }
    }
    cuts.push(line.len());
    cuts.windows(2).map(|w| &line[w[0]..w[1]]).collect()
}

/// The row key an unreadable record names, if its `"key"` field is whole.
fn key_of(piece: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(piece);
    let at = text.find("\"key\":")? + "\"key\":".len();
    let mut stream = serde_json::Deserializer::from_str(&text[at..]).into_iter::<String>();
    stream.next()?.ok().filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal path in a fresh directory; the directory (the second
    /// field) is removed when the guard drops.
    struct Temp(PathBuf, #[allow(dead_code)] tempfile::TempDir);

    fn temp(name: &str) -> Temp {
        let dir =
            tempfile::Builder::new().prefix(&format!("mdebulk-journal-{name}-")).tempdir().unwrap();
        Temp(dir.path().join("r.csv.journal"), dir)
    }

    fn row(line: u64, status: Status) -> ResultRow {
        ResultRow {
            line,
            status: Some(status),
            machine_id: "ab".repeat(20),
            ..ResultRow::default()
        }
    }

    /// The key of the row for device `n`.
    fn k(n: u64) -> String {
        format!("isolate|id:{n:040x}|||")
    }

    fn key(n: u64) -> RowKey {
        RowKey::from_journal(k(n))
    }

    fn now() -> Timestamp {
        Timestamp::now()
    }

    #[tokio::test]
    async fn confirmed_tags_are_recovered_per_tag_and_survive_a_joined_line() {
        let temp = temp("tagged");
        {
            let (j, _) = Journal::open(&temp.0, true).unwrap();
            j.tagged("IR-42 Isolated", &["a".repeat(40), "b".repeat(40)]).await.unwrap();
            j.tagged("other", &["c".repeat(40)]).await.unwrap();
            j.close().await;
        }
        // A torn record that a whole tag record joined on one line.
        let mut bytes = std::fs::read(&temp.0).unwrap();
        bytes.extend_from_slice(b"{\"row\":{\"key\":\"isol");
        bytes.extend_from_slice(br#"{"tagged":{"tag":"ir-42 isolated","machine_ids":["dddd"]}}"#);
        bytes.push(b'\n');
        std::fs::write(&temp.0, bytes).unwrap();
        let (_j, rec) = Journal::open(&temp.0, false).unwrap();
        let ir = &rec.tagged["ir-42 isolated"];
        assert_eq!(ir.len(), 3, "{ir:?}");
        assert!(ir.contains(&"a".repeat(40)) && ir.contains("dddd"));
        assert_eq!(rec.tagged["other"].len(), 1);
    }

    #[tokio::test]
    async fn recovers_rows_and_in_doubt_intents_by_identity_and_cuts_a_torn_tail() {
        let temp = temp("recover");
        let path = &temp.0;
        {
            let (j, rec) = Journal::open(path, false).unwrap();
            assert!(rec.rows.is_empty() && rec.params.is_none());
            j.intent(&k(2), 2, "m2", ActionKind::Isolate, now()).await.unwrap();
            j.row(&k(2), &row(2, Status::Submitted)).await.unwrap();
            j.intent(&k(3), 3, "m3", ActionKind::Isolate, now()).await.unwrap();
            j.row_nowait(&k(4), &row(4, Status::NotFound));
            // A row a stop left unsent is no settlement at all.
            j.row_nowait(&k(5), &row(5, Status::NotSent));
            j.close().await;
        }
        // Simulate a crash mid-write.
        OpenOptions::new().append(true).open(path).unwrap().write_all(b"{\"row\":{\"li").unwrap();
        let (j, rec) = Journal::open(path, false).unwrap();
        assert_eq!(rec.rows.len(), 2);
        assert_eq!(rec.rows[&key(2)].status, Some(Status::Submitted));
        assert_eq!(rec.in_doubt.keys().cloned().collect::<Vec<_>>(), vec![key(3)]);
        assert_eq!(rec.unreadable, 0);
        // The torn tail is gone, so new records start on a fresh line.
        j.row(&k(3), &row(3, Status::Submitted)).await.unwrap();
        j.close().await;
        let (_j, rec) = Journal::open(path, false).unwrap();
        assert!(rec.in_doubt.is_empty());
        assert_eq!(rec.rows.len(), 3);
    }

    #[tokio::test]
    async fn an_update_replaces_the_row_holding_its_action() {
        let temp = temp("update");
        let path = &temp.0;
        {
            let (j, _) = Journal::open(path, false).unwrap();
            let mut sent = row(2, Status::Submitted);
            sent.action_id = "A-1".into();
            j.row_nowait(&k(2), &sent);
            let mut done = row(7, Status::Succeeded);
            done.action_id = "a-1".into();
            j.update_nowait(&done);
            let mut stray = row(8, Status::Failed);
            stray.action_id = "b-2".into();
            j.update_nowait(&stray);
            j.close().await;
        }
        let (_j, rec) = Journal::open(path, false).unwrap();
        assert_eq!(rec.rows.len(), 1);
        assert_eq!(rec.rows[&key(2)].status, Some(Status::Succeeded));
        assert_eq!(rec.rows[&key(2)].line, 2);
    }

    #[tokio::test]
    async fn a_row_settled_in_doubt_is_looked_up_again_and_the_params_come_first() {
        let temp = temp("params");
        let path = &temp.0;
        let params = RunParams::new(
            &crate::input::RowDefaults::default(),
            "http://127.0.0.1:1",
            "t",
            now().to_string(),
        );
        {
            let (j, _) = Journal::open(path, false).unwrap();
            j.params(&params).await.unwrap();
            let mut doubt = row(2, Status::InDoubt);
            doubt.requested_at = Timestamp::parse("2026-01-01T00:00:00Z");
            j.row(&k(2), &doubt).await.unwrap();
            j.close().await;
        }
        let (_j, rec) = Journal::open(path, false).unwrap();
        assert_eq!(rec.params, Some(params));
        assert!(rec.rows.is_empty());
        assert_eq!(rec.in_doubt[&key(2)].at, Timestamp::parse("2026-01-01T00:00:00Z"));
    }

    /// A torn intent that a later write joined on the same line: the whole
    /// row record after it still counts, and a torn intent whose row never
    /// settled leaves that row in doubt instead of forgetting it.
    #[tokio::test]
    async fn records_joined_to_a_torn_one_are_read_and_the_torn_row_stays_in_doubt() {
        let temp = temp("joined");
        let path = &temp.0;
        let whole_row = {
            let mut v = Vec::new();
            encode_row(&mut v, &k(2), &row(2, Status::Submitted));
            v
        };
        let mut intent = Vec::new();
        encode_intent(&mut intent, &k(3), 3, "m3", "isolate", Some(now()));
        let mut text = Vec::new();
        text.extend_from_slice(format!("{{\"intent\":{{\"key\":\"{}\",\"li", k(2)).as_bytes());
        text.extend_from_slice(&whole_row);
        // Torn after its key: the row it names was sent, answer unknown.
        text.extend_from_slice(&intent[..intent.len() - 20]);
        text.extend_from_slice(b"\n");
        std::fs::write(path, &text).unwrap();
        let (_j, rec) = Journal::open(path, false).unwrap();
        assert_eq!(rec.rows[&key(2)].status, Some(Status::Submitted));
        assert_eq!(rec.in_doubt.keys().cloned().collect::<Vec<_>>(), vec![key(3)]);
        assert_eq!(rec.unreadable, 2);
    }

    /// Once a write fails, no intent is accepted any more: a request whose
    /// intent is not in the file must never leave.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_refuses_every_later_intent() {
        let temp = temp("full");
        let path = &temp.0;
        let (j, _) = Journal::open(path, false).unwrap();
        j.intent(&k(2), 2, "m2", ActionKind::Isolate, now()).await.unwrap();
        // Every write to /dev/full fails with ENOSPC, as on a full disk.
        j.shared.file.lock().unwrap().file =
            OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = j.intent(&k(3), 3, "m3", ActionKind::Isolate, now()).await.unwrap_err();
        assert!(err.to_string().contains("--resume"), "{err}");
        assert!(j.intent(&k(4), 4, "m4", ActionKind::Isolate, now()).await.is_err());
        assert!(j.flush().await.is_err());
        assert!(j.failure().is_some());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_journal_removed_under_the_run_fails_at_the_next_commit() {
        let temp = temp("removed");
        let path = &temp.0;
        let (j, _) = Journal::open(path, false).unwrap();
        j.row(&k(2), &row(2, Status::Submitted)).await.unwrap();
        std::fs::remove_file(path).unwrap();
        let err = j.row(&k(3), &row(3, Status::Submitted)).await.unwrap_err();
        assert!(err.to_string().contains("removed"), "{err}");
        assert!(j.intent(&k(4), 4, "m4", ActionKind::Isolate, now()).await.is_err());
    }

    /// A time is journalled as exactly the service's text and none as the
    /// empty string, by the hand-written encoders and serde alike: the
    /// bytes the string fields used to carry.
    #[test]
    fn times_are_journalled_as_their_text_and_none_as_empty() {
        let at = Timestamp::parse("2024-05-01T08:00:00.5Z");
        let row = ResultRow { requested_at: at, ..row(2, Status::Submitted) };
        let mut got = Vec::new();
        encode_row(&mut got, &k(2), &row);
        let text = String::from_utf8(got).unwrap();
        assert!(
            text.ends_with(
                "\"attempts\":0,\"requested_at\":\"2024-05-01T08:00:00.5000000Z\",\"finished_at\":\"\",\"tag_result\":\"\"}}\n"
            ),
            "{text}"
        );
        let serde = serde_json::to_string(&Record::Row(KeyedRow { key: k(2), row })).unwrap();
        assert_eq!(format!("{serde}\n"), text);
        for (at, want) in [(at, "2024-05-01T08:00:00.5000000Z"), (None, "")] {
            let mut got = Vec::new();
            encode_intent(&mut got, &k(2), 2, "m2", "isolate", at);
            let text = String::from_utf8(got).unwrap();
            assert!(text.ends_with(&format!(",\"at\":\"{want}\"}}}}\n")), "{text}");
            let back: Record = serde_json::from_str(&text).unwrap();
            let Record::Intent(intent) = back else { panic!("{text} is not an intent") };
            assert_eq!(intent.at, at);
        }
    }

    /// The hand-written encodings are byte for byte what `serde_json`
    /// writes for [`Record`], for plain and hostile text alike.
    #[test]
    fn records_encode_exactly_as_serde_json_does() {
        let texts = [
            "",
            "plain",
            "quote \" and backslash \\ inside",
            "control \u{1} \u{1f} tab\tnew\nline\r",
            "Zoë 東京 🚀",
            "=cmd|' /C calc'!A0",
            "\u{7f} delete",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        let mut pick = || texts[rng.usize(..texts.len())].to_string();
        // Times: none (the empty string), or any instant the format can say,
        // sub-tick nanoseconds included (cut to the tick on the way in).
        let mut clock = fastrand::Rng::with_seed(12);
        let mut stamp = || {
            (clock.u8(..4) != 0).then(|| {
                Timestamp::from(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::new(
                            clock.u64(0..253_402_300_800),
                            clock.u32(..1_000_000_000),
                        ),
                )
            })
        };
        for i in 0..500u64 {
            let row = ResultRow {
                line: if i == 0 { u64::MAX } else { i },
                machine_id: pick(),
                action: pick(),
                status: if i % 7 == 0 {
                    None
                } else {
                    Some(Status::ALL[i as usize % Status::ALL.len()])
                },
                action_id: pick(),
                action_status: pick(),
                http_status: if i % 3 == 0 { None } else { Some(i as u16 * 7) },
                error_code: pick(),
                error_message: pick(),
                attempts: i as u32,
                requested_at: stamp(),
                finished_at: stamp(),
                tag_result: pick(),
            };
            let key = pick();
            let keyed = KeyedRow { key: key.clone(), row: row.clone() };
            let mut expected = serde_json::to_vec(&Record::Row(keyed.clone())).unwrap();
            expected.push(b'\n');
            let mut got = Vec::new();
            encode_row(&mut got, &key, &row);
            assert_eq!(
                String::from_utf8(got.clone()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            assert_eq!(serde_json::from_slice::<Record>(&got).unwrap(), Record::Row(keyed));
            let intent =
                Intent { key: pick(), line: i, machine_id: pick(), action: pick(), at: stamp() };
            let mut expected = serde_json::to_vec(&Record::Intent(intent.clone())).unwrap();
            expected.push(b'\n');
            let mut got = Vec::new();
            encode_intent(
                &mut got,
                &intent.key,
                intent.line,
                &intent.machine_id,
                &intent.action,
                intent.at,
            );
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    #[tokio::test]
    async fn a_second_open_is_refused_while_locked() {
        let temp = temp("lock");
        let path = &temp.0;
        let (j, _) = Journal::open(path, false).unwrap();
        assert!(matches!(Journal::open(path, false), Err(JournalError::Locked { .. })));
        j.close().await;
        assert!(Journal::open(path, false).is_ok());
    }

    /// Every intent is in the file when `intent` returns, and intents of
    /// requests leaving together share a `write`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn intents_are_in_the_file_on_return_and_share_writes() {
        let temp = temp("intents");
        let path = temp.0.clone();
        let (j, _) = Journal::open(&path, false).unwrap();
        let j = Arc::new(j);
        let tasks: Vec<_> = (0..300u64)
            .map(|i| {
                let (j, path) = (j.clone(), path.clone());
                tokio::spawn(async move {
                    let id = format!("{i:040x}");
                    j.intent(
                        &k(i),
                        i + 2,
                        &id,
                        ActionKind::Isolate,
                        Timestamp::parse("2026-01-01T00:00:00.0000000Z").unwrap(),
                    )
                    .await
                    .unwrap();
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(text.contains(&id), "intent {i} not in the file on return");
                    // A settled row rides along with later batches.
                    j.row_nowait(&k(i), &row(i + 2, Status::Submitted));
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let writes = j.shared.writes.load(Ordering::Relaxed);
        assert!(writes < 150, "300 intents took {writes} writes");
        j.flush().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 600);
        assert!(text.lines().all(|l| serde_json::from_str::<Record>(l).is_ok()));
        drop(j);
        let (_j, rec) = Journal::open(&path, false).unwrap();
        assert_eq!((rec.rows.len(), rec.in_doubt.len()), (300, 0));
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_durable_and_whole() {
        let temp = temp("concurrent");
        let path = &temp.0;
        let (j, _) = Journal::open(path, false).unwrap();
        let j = std::sync::Arc::new(j);
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move { j.row(&k(i), &row(i + 2, Status::Submitted)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert!(text.lines().all(|l| serde_json::from_str::<Record>(l).is_ok()));
    }
}
