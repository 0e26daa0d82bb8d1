//! The run's journal: an append-only JSONL file beside the results that
//! makes a run crash-safe.
//!
//! - Before a request leaves, an *intent* record (line, machine, action,
//!   time) is written to the file, so it survives the process dying at any
//!   instant; when a row settles, its full result record is written and made
//!   durable (fsync) before the row counts as done. A line with an intent but
//!   no result after a crash was *in doubt*: sent, answer unknown.
//! - Intents are written at once; settled rows are buffered and written by
//!   the next commit; every `write` happens under one lock, so records never
//!   interleave. Durability uses group commit: a syncer thread gathers every
//!   waiter that arrives within [`LINGER`] of the first, writes the buffered
//!   rows, calls `fdatasync` once for all of them (which also syncs the
//!   intents written meanwhile) and wakes them. Under load a batch holds hundreds of rows, so fsync cost never
//!   limits throughput; commits are never more than a few milliseconds apart
//!   while rows settle.
//! - An intent reaches the disk with the next commit, a few milliseconds
//!   later. Only a power loss inside that window can lose one for a request
//!   already sent; a resumed run then finds that action still pending in its
//!   pre-flight look-up and records the row `already_pending` instead of
//!   sending it again.
//! - The file carries an OS lock (`flock`) for the life of the run, so two
//!   runs on the same results file cannot interleave; the OS drops it if the
//!   process dies.
//! - A torn last line (the process died mid-write) is cut off when the
//!   journal is reopened; it was never acknowledged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::api::action::ActionKind;
use crate::api::time::format_utc;
use crate::output::ResultRow;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A request for this row is about to leave.
    Intent(Intent),
    /// The row settled with this result.
    Row(ResultRow),
}

/// A request about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Input line of the row.
    pub line: u64,
    /// Target machine.
    pub machine_id: String,
    /// Action, by CLI name.
    pub action: String,
    /// When the request left (ISO-8601 UTC): the lower bound for looking the
    /// action up on the server.
    pub at: String,
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

/// What an earlier run left in the journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Settled rows by input line (the latest record wins).
    pub rows: HashMap<u64, ResultRow>,
    /// Intents without a settled row: requests in doubt, by input line
    /// (the earliest intent, which bounds the search for the action).
    pub in_doubt: HashMap<u64, Intent>,
}

/// How long the syncer waits for more rows to join a commit once one asks.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// An open, locked journal with its group-commit syncer.
#[derive(Debug)]
pub struct Journal {
    /// The file and the settled rows not yet written to it. Intents are
    /// written at once (with any rows waiting), rows at the next commit, each
    /// time in one `write` under the lock, so records never interleave.
    file: Arc<Mutex<Appender>>,
    /// Requests for durability, answered once everything written before the
    /// request is on disk.
    sync: std_mpsc::Sender<oneshot::Sender<()>>,
    /// Where it lives.
    path: PathBuf,
    /// The syncer thread, joined on close.
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The journal file and the bytes of settled rows waiting to be written.
#[derive(Debug)]
struct Appender {
    file: File,
    rows: Vec<u8>,
}

impl Appender {
    /// Writes the waiting rows and then `extra` in one `write`.
    fn write(&mut self, extra: &[u8]) {
        self.rows.extend_from_slice(extra);
        if self.rows.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&self.rows) {
            tracing::error!(error = %e, "journal write failed; the run can no longer be resumed exactly");
        }
        self.rows.clear();
    }
}

/// The journal path for a results file: `<results>.journal`.
pub fn journal_path(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

impl Journal {
    /// Opens (creating if needed) and locks the journal, returning what an
    /// earlier run recorded in it. `fresh` truncates it first (a forced new run).
    pub fn open(path: &Path, fresh: bool) -> Result<(Journal, Recovered), JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        let existed = path.exists();
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
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
        if !existed {
            // Make the new directory entry itself durable.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
        }
        let sync_handle = file.try_clone().map_err(io)?;
        let appender = Arc::new(Mutex::new(Appender { file, rows: Vec::with_capacity(64 * 1024) }));
        let (tx, rx) = std_mpsc::channel();
        let syncer = {
            let appender = appender.clone();
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || sync_loop(&appender, &sync_handle, &rx))
                .map_err(io)?
        };
        Ok((
            Journal {
                file: appender,
                sync: tx,
                path: path.to_path_buf(),
                syncer: Mutex::new(Some(syncer)),
            },
            recovered,
        ))
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that a request for `line` is about to leave (written to the
    /// file before the request is sent; on disk with the next commit).
    pub fn intent(&self, line: u64, machine_id: &str, action: ActionKind, at: SystemTime) {
        let intent = Intent {
            line,
            machine_id: machine_id.to_string(),
            action: action.cli_name().to_string(),
            at: format_utc(at),
        };
        self.appender().write(&encode(&Record::Intent(intent)));
    }

    /// Records, durably, that a row settled.
    pub async fn row(&self, row: &ResultRow) {
        self.row_nowait(row);
        self.flush().await;
    }

    /// Records a settled row without waiting: it is written and made durable
    /// by the next commit ([`Journal::flush`]), which must come before the
    /// row is counted as done.
    pub fn row_nowait(&self, row: &ResultRow) {
        let bytes = encode(&Record::Row(row.clone()));
        self.appender().rows.extend_from_slice(&bytes);
    }

    fn appender(&self) -> std::sync::MutexGuard<'_, Appender> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.sync.send(ack).is_ok() {
            // An error means the syncer died; its failure is already logged.
            let _ = done.await;
        }
    }

    /// Flushes and stops the syncer; the lock is released when the file closes.
    pub async fn close(self) {
        self.flush().await;
        drop(self.sync);
        let handle = self.syncer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn encode(record: &Record) -> Vec<u8> {
    // Invariant: these types always serialise (plain strings and numbers).
    let mut line = serde_json::to_vec(record).expect("journal records serialise");
    line.push(b'\n');
    line
}

/// The syncer thread: group commit until the journal closes. Each commit
/// takes every request that arrives within [`LINGER`] of the first one.
fn sync_loop(
    appender: &Mutex<Appender>,
    file: &File,
    rx: &std_mpsc::Receiver<oneshot::Sender<()>>,
) {
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
        appender.lock().unwrap_or_else(PoisonError::into_inner).write(&[]);
        if let Err(e) = file.sync_data() {
            tracing::error!(error = %e, "journal sync failed; the run can no longer be resumed exactly");
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Reads an existing journal, cutting off a torn last line.
fn recover(file: &mut File) -> std::io::Result<Recovered> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&mut *file);
    let mut out = Recovered::default();
    let mut good_len = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        good_len += n as u64;
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Intent(i)) => {
                if !out.rows.contains_key(&i.line) {
                    out.in_doubt.entry(i.line).or_insert(i);
                }
            }
            Ok(Record::Row(r)) => {
                out.in_doubt.remove(&r.line);
                out.rows.insert(r.line, r);
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable journal line"),
        }
    }
    drop(reader);
    if file.metadata()?.len() != good_len {
        file.set_len(good_len)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Status;

    /// A journal path in a fresh directory, removed when the guard drops.
    struct Temp(PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp(name: &str) -> Temp {
        let dir =
            std::env::temp_dir().join(format!("mdebulk-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir.join("r.csv.journal"))
    }

    fn row(line: u64, status: Status) -> ResultRow {
        ResultRow {
            line,
            status: Some(status),
            machine_id: "ab".repeat(20),
            ..ResultRow::default()
        }
    }

    #[tokio::test]
    async fn recovers_rows_and_in_doubt_intents_and_cuts_a_torn_tail() {
        let temp = temp("recover");
        let path = &temp.0;
        {
            let (j, rec) = Journal::open(path, false).unwrap();
            assert!(rec.rows.is_empty());
            j.intent(2, "m2", ActionKind::Isolate, SystemTime::now());
            j.row(&row(2, Status::Submitted)).await;
            j.intent(3, "m3", ActionKind::Isolate, SystemTime::now());
            j.row_nowait(&row(4, Status::Invalid));
            j.close().await;
        }
        // Simulate a crash mid-write.
        OpenOptions::new().append(true).open(path).unwrap().write_all(b"{\"row\":{\"li").unwrap();
        let (j, rec) = Journal::open(path, false).unwrap();
        assert_eq!(rec.rows.len(), 2);
        assert_eq!(rec.rows[&2].status, Some(Status::Submitted));
        assert_eq!(rec.in_doubt.keys().copied().collect::<Vec<_>>(), vec![3]);
        // The torn tail is gone, so new records start on a fresh line.
        j.row(&row(3, Status::Submitted)).await;
        j.close().await;
        let (_j, rec) = Journal::open(path, false).unwrap();
        assert!(rec.in_doubt.is_empty());
        assert_eq!(rec.rows.len(), 3);
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

    #[tokio::test]
    async fn concurrent_appends_are_all_durable_and_whole() {
        let temp = temp("concurrent");
        let path = &temp.0;
        let (j, _) = Journal::open(path, false).unwrap();
        let j = std::sync::Arc::new(j);
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move { j.row(&row(i + 2, Status::Submitted)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 200);
        assert!(text.lines().all(|l| serde_json::from_str::<Record>(l).is_ok()));
    }
}
