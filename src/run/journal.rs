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
//!   journal is reopened; it was never acknowledged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::api::action::ActionKind;
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
    fn write_out(&self, end: u64) {
        let mut writer = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_written(end) {
            return;
        }
        let Writer { file, spare } = &mut *writer;
        let upto = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut queue.bytes, spare);
            queue.appended
        };
        if !spare.is_empty()
            && let Err(e) = file.write_all(spare)
        {
            tracing::error!(error = %e, "journal write failed; the run can no longer be resumed exactly");
        }
        spare.clear();
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.written.store(upto, Ordering::Release);
    }

    /// Writes everything queued so far.
    fn write_all_queued(&self) {
        let end = self.queue.lock().unwrap_or_else(PoisonError::into_inner).appended;
        self.write_out(end);
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
        let mut file = crate::output::private::open(
            OpenOptions::new().read(true).append(true).create(true),
            path,
        )
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

    /// Records that a request for `line` is about to leave; `at` is when
    /// (ISO-8601 UTC, as [`crate::api::time::format_utc`] writes it). Returns once the record
    /// is in the file, so that it survives the process dying from then on;
    /// it is on disk with the next commit.
    ///
    /// The task lets the others that are ready run first, so the intents of
    /// requests leaving together are written together.
    pub async fn intent(&self, line: u64, machine_id: &str, action: ActionKind, at: &str) {
        let end =
            self.shared.append(|out| encode_intent(out, line, machine_id, action.cli_name(), at));
        tokio::task::yield_now().await;
        if !self.shared.is_written(end) {
            self.shared.write_out(end);
        }
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
        self.shared.append(|out| encode_row(out, row));
    }

    /// Waits until everything appended so far is durable.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if let Some(sync) = &self.sync
            && sync.send(ack).is_ok()
        {
            // An error means the syncer died; its failure is already logged.
            let _ = done.await;
        }
    }

    /// Flushes, stops the syncer and closes the file (releasing the lock).
    pub async fn close(self) {
        self.flush().await;
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
        self.shared.write_all_queued();
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
fn encode_intent(out: &mut Vec<u8>, line: u64, machine_id: &str, action: &str, at: &str) {
    out.extend_from_slice(b"{\"intent\":{\"line\":");
    push_u64(out, line);
    push_str_fields(out, &[("machine_id", machine_id), ("action", action), ("at", at)]);
    out.extend_from_slice(b"}}\n");
}

/// One journal line for a settled row: exactly what `serde_json` writes for
/// [`Record::Row`].
///
/// Written by hand because it runs for every row: `serde_json` checks
/// every byte of every string for escapes one at a time, and that made
/// encoding the journal's two records most of the runner's cost of
/// durability. A test holds the two encodings equal.
fn encode_row(out: &mut Vec<u8>, row: &ResultRow) {
    out.extend_from_slice(b"{\"row\":{\"line\":");
    push_u64(out, row.line);
    push_str_fields(out, &[("machine_id", &row.machine_id), ("action", &row.action)]);
    out.extend_from_slice(b",\"status\":");
    match row.status {
        Some(status) => push_str(out, status.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    push_str_fields(out, &[("action_id", &row.action_id), ("action_status", &row.action_status)]);
    out.extend_from_slice(b",\"http_status\":");
    match row.http_status {
        Some(code) => push_u64(out, u64::from(code)),
        None => out.extend_from_slice(b"null"),
    }
    push_str_fields(out, &[("error_code", &row.error_code), ("error_message", &row.error_message)]);
    out.extend_from_slice(b",\"attempts\":");
    push_u64(out, u64::from(row.attempts));
    push_str_fields(out, &[("requested_at", &row.requested_at), ("finished_at", &row.finished_at)]);
    out.extend_from_slice(b"}}\n");
}

/// Appends `,"key":"value"` for each field (keys are plain identifiers).
fn push_str_fields(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    for (key, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, value);
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `s` as a JSON string: as is between quotes when nothing in it
/// needs escaping (ids, names, times: nearly always), else as `serde_json`
/// escapes it.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Invariant: writing a string into a Vec cannot fail.
        serde_json::to_writer(&mut *out, s).expect("a string serialises");
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
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
        shared.write_all_queued();
        shared.commits.fetch_add(1, Ordering::Relaxed);
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
    use crate::api::time::format_utc;
    use crate::output::Status;
    use std::time::SystemTime;

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
            j.intent(2, "m2", ActionKind::Isolate, &format_utc(SystemTime::now())).await;
            j.row(&row(2, Status::Submitted)).await;
            j.intent(3, "m3", ActionKind::Isolate, &format_utc(SystemTime::now())).await;
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
                requested_at: pick(),
                finished_at: pick(),
            };
            let mut expected = serde_json::to_vec(&Record::Row(row.clone())).unwrap();
            expected.push(b'\n');
            let mut got = Vec::new();
            encode_row(&mut got, &row);
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected).unwrap());
            let intent = Intent { line: i, machine_id: pick(), action: pick(), at: pick() };
            let mut expected = serde_json::to_vec(&Record::Intent(intent.clone())).unwrap();
            expected.push(b'\n');
            let mut got = Vec::new();
            encode_intent(&mut got, intent.line, &intent.machine_id, &intent.action, &intent.at);
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
                    j.intent(i + 2, &id, ActionKind::Isolate, "2026-01-01T00:00:00.0000000Z").await;
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(text.contains(&id), "intent {i} not in the file on return");
                    // A settled row rides along with later batches.
                    j.row_nowait(&row(i + 2, Status::Submitted));
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let writes = j.shared.writes.load(Ordering::Relaxed);
        assert!(writes < 150, "300 intents took {writes} writes");
        j.flush().await;
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
