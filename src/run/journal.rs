//! The run's journal: an append-only JSONL file beside the results that
//! makes a run crash-safe.
//!
//! - Before a request leaves, an *intent* record (line, machine, action,
//!   time) is durable; when a row settles, its full result record is durable.
//!   A line with an intent but no result after a crash was *in doubt*: sent,
//!   answer unknown.
//! - Durability uses group commit: one writer thread writes whatever records
//!   are queued, calls `fdatasync` once for the batch, then acknowledges every
//!   record in it. Under load batches grow, so fsync cost bounds latency, not
//!   throughput.
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

/// Work for the writer thread.
enum Cmd {
    /// Append these bytes; acknowledge once durable.
    Append(Vec<u8>, Option<oneshot::Sender<()>>),
}

/// An open, locked journal with its group-commit writer.
#[derive(Debug)]
pub struct Journal {
    /// Queue to the writer thread.
    tx: std_mpsc::Sender<Cmd>,
    /// Where it lives.
    path: PathBuf,
    /// The writer thread, joined on close.
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
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
        let (tx, rx) = std_mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || write_loop(file, rx))
            .map_err(io)?;
        Ok((
            Journal { tx, path: path.to_path_buf(), writer: std::sync::Mutex::new(Some(writer)) },
            recovered,
        ))
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records, durably, that a request for `line` is about to leave.
    pub async fn intent(&self, line: u64, machine_id: &str, action: ActionKind, at: SystemTime) {
        let intent = Intent {
            line,
            machine_id: machine_id.to_string(),
            action: action.cli_name().to_string(),
            at: format_utc(at),
        };
        self.append(&Record::Intent(intent), true).await;
    }

    /// Records, durably, that a row settled.
    pub async fn row(&self, row: &ResultRow) {
        self.append(&Record::Row(row.clone()), true).await;
    }

    /// Queues a settled row without waiting for it to be durable (rows that
    /// cost no request: they are recomputed identically after a crash).
    pub fn row_nowait(&self, row: &ResultRow) {
        let _ = self.tx.send(Cmd::Append(encode(&Record::Row(row.clone())), None));
    }

    async fn append(&self, record: &Record, wait: bool) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Append(encode(record), wait.then_some(ack))).is_ok() && wait {
            // An error means the writer died; its failure is already logged.
            let _ = done.await;
        }
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Cmd::Append(Vec::new(), Some(ack))).is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes and stops the writer; the lock is released when the file closes.
    pub async fn close(self) {
        self.flush().await;
        drop(self.tx);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
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

/// The writer thread: group commit until the queue closes.
fn write_loop(mut file: File, rx: std_mpsc::Receiver<Cmd>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(Cmd::Append(bytes, ack)) = next {
            buf.extend_from_slice(&bytes);
            acks.extend(ack);
            next = if buf.len() < (1 << 20) { rx.try_recv().ok() } else { None };
        }
        if !buf.is_empty() {
            let res = file.write_all(&buf).and_then(|()| file.sync_data());
            if let Err(e) = res {
                tracing::error!(error = %e, "journal write failed; the run can no longer be resumed exactly");
            }
            buf.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
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
            j.intent(2, "m2", ActionKind::Isolate, SystemTime::now()).await;
            j.row(&row(2, Status::Submitted)).await;
            j.intent(3, "m3", ActionKind::Isolate, SystemTime::now()).await;
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
