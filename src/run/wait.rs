//! Following submitted actions to their final state, for `run --wait` and
//! `mdebulk status`.
//!
//! A poll lists the actions created in the rows' time window
//! (`GET machineactions?$filter=creationDateTimeUtc ge <first request − skew>
//! and creationDateTimeUtc le <last answer + skew>`, paged with `$skip` past
//! 10,000) and matches them to the rows by action id, so it costs one call per
//! 10,000 actions in the window whatever the number of rows — never one per
//! device. An action created outside the window (an `already_pending` row
//! points at someone else's earlier action) is looked up by id instead,
//! [`ID_CHUNK`] ids to a call; an id the service does not list at all is
//! logged and its rows stay as they were. Every call goes through the pacer,
//! under the quota of `GET machineactions`.
//!
//! Polls repeat every `poll_interval` until every action is final
//! (`Succeeded`, `Failed`, `TimeOut`, `Cancelled`) or `timeout` has passed;
//! a zero timeout makes exactly one poll.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::time::Instant;

use super::call::Ctx;
use super::stop::Stop;
use super::submit::{CLOCK_SKEW, list_all_actions};
use super::summary::Summary;
use super::summary::WaitStats;
use super::transport::Transport;
use super::{RunError, WaitOptions};
use crate::api::model::MachineAction;
use crate::api::odata::any_of;
use crate::api::route::Api;
use crate::api::time::{format_utc, parse_utc};
use crate::output::ResultFormat;
use crate::results::{ResultRow, Status, Timestamp};
use crate::run::rewrite::{Patch, RewriteError, rewrite_with};

/// Action ids per by-id look-up call (keeps the URL short).
pub const ID_CHUNK: usize = 40;

/// The runner's `error_code` that keeps an `already_pending` row marked as
/// such once tracking gives it a final status: its action was someone
/// else's, which `undo` must know.
pub const ALREADY_PENDING_CODE: &str = "AlreadyPending";

/// A row whose action is still open: what tracking needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The row's `line`: its identity in the results file.
    pub line: u64,
    /// The MachineAction id to follow.
    pub action_id: String,
    /// When the row's request first left: the action was created after this
    /// (give or take [`CLOCK_SKEW`]), which bounds the listing from below.
    pub requested_at: SystemTime,
    /// When the row got its answer: the action existed by then, which bounds
    /// the listing from above. `None`: no upper bound.
    pub answered_at: Option<SystemTime>,
}

impl Open {
    /// The open action of a result row: a row whose status is open
    /// (submitted, already pending, pending, in progress) and which has an
    /// action id. `fallback` stands in for a missing or unreadable
    /// `requested_at` (and `finished_at`).
    pub fn of(row: &ResultRow, fallback: SystemTime) -> Option<Open> {
        if !row.status.is_some_and(Status::is_open) || row.action_id.trim().is_empty() {
            return None;
        }
        let answered_at = row.finished_at.map(Timestamp::system_time);
        Some(Open {
            line: row.line,
            action_id: row.action_id.trim().to_string(),
            requested_at: row
                .requested_at
                .map(Timestamp::system_time)
                .or(answered_at)
                .unwrap_or(fallback),
            answered_at,
        })
    }
}

/// What tracking learnt about a row's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The row's new status: final (`succeeded`, `failed`, `timed_out`,
    /// `cancelled`) or, when waiting ended first, `pending`/`in_progress`.
    pub status: Status,
    /// The MachineAction's own status as last seen (`Succeeded`, ...).
    pub action_status: String,
    /// When the action last changed: the row's new `finished_at`.
    pub updated_at: Timestamp,
    /// Why the action did not succeed, for `failed`/`timed_out`/`cancelled`;
    /// empty otherwise.
    pub detail: String,
}

impl Tracked {
    /// The row update this stands for: status, action status and time, and
    /// for an action that did not succeed, the reason as the error message.
    pub fn patch(&self) -> Patch {
        Patch {
            status: Some(self.status),
            action_status: Some(self.action_status.clone()),
            error_message: (!self.detail.is_empty()).then(|| self.detail.clone()),
            finished_at: Some(self.updated_at),
            ..Patch::default()
        }
    }
}

/// The row status a MachineAction status stands for: the four final
/// statuses, `Pending`, and anything else (`InProgress`, or a value the
/// documentation does not list) as still running.
pub fn row_status(action_status: &str) -> Status {
    match action_status {
        "Succeeded" => Status::Succeeded,
        "Failed" => Status::Failed,
        "TimeOut" => Status::TimedOut,
        "Cancelled" => Status::Cancelled,
        "Pending" => Status::Pending,
        _ => Status::InProgress,
    }
}

/// What a row learns from its action as last seen.
fn tracked(action: &MachineAction) -> Tracked {
    let status = row_status(&action.status);
    let detail = match status {
        Status::Failed => match action.error_h_result.filter(|h| *h != 0) {
            Some(h) => format!("the device reported a failure (errorHResult {h})"),
            None => "the device reported a failure".to_string(),
        },
        Status::TimedOut => {
            "the device did not pick the action up before the service gave up (TimeOut); it was probably offline".to_string()
        }
        Status::Cancelled => {
            let mut s = "the action was cancelled".to_string();
            if let Some(who) = action.cancellation_requestor.as_deref().filter(|w| !w.is_empty()) {
                s.push_str(&format!(" by {who}"));
            }
            if let Some(c) = action.cancellation_comment.as_deref().filter(|c| !c.is_empty()) {
                s.push_str(&format!(": {c}"));
            }
            s
        }
        _ => String::new(),
    };
    // Read here, so that the results file always gets a readable time.
    let updated_at = action
        .last_update_date_time_utc
        .as_deref()
        .or(action.creation_date_time_utc.as_deref())
        .and_then(Timestamp::parse)
        .unwrap_or_else(Timestamp::now);
    Tracked { status, action_status: action.status.clone(), updated_at, detail }
}

/// The creation-time window the rows' actions lie in.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Earliest request, less the clock skew.
    from: SystemTime,
    /// Latest answer, plus the clock skew; `None` when some row has no answer time.
    to: Option<SystemTime>,
}

impl Window {
    fn of(open: &[Open]) -> Window {
        let earliest = open.iter().map(|o| o.requested_at).min().unwrap_or_else(SystemTime::now);
        let latest = open.iter().map(|o| o.answered_at).collect::<Option<Vec<_>>>();
        Window {
            from: earliest.checked_sub(CLOCK_SKEW).unwrap_or(earliest),
            to: latest.and_then(|l| l.into_iter().max()).map(|t| t + CLOCK_SKEW),
        }
    }

    /// The `$filter` of a window listing.
    fn filter(&self) -> String {
        let mut f = format!("creationDateTimeUtc ge {}", format_utc(self.from));
        if let Some(to) = self.to {
            f.push_str(&format!(" and creationDateTimeUtc le {}", format_utc(to)));
        }
        f
    }

    /// Whether an action created at `created` is listed by the window.
    fn contains(&self, created: Option<&str>) -> bool {
        match created.and_then(parse_utc) {
            Some(t) => t >= self.from && self.to.is_none_or(|to| t <= to),
            None => false,
        }
    }
}

/// The state of one tracking session.
struct Tracker {
    /// Lowercased action id → the rows that reported it.
    lines: HashMap<String, Vec<u64>>,
    /// Where the actions should be.
    window: Window,
    /// Each action as last seen.
    last: HashMap<String, MachineAction>,
    /// Actions not final yet (and not given up on).
    open: HashSet<String>,
    /// Actions created outside the window: looked up by id only.
    outside: HashSet<String>,
}

impl Tracker {
    /// One poll: the window listing (unless every open action lies outside
    /// it), then by-id look-ups for open actions the listing did not show.
    async fn poll<T: Transport>(&mut self, ctx: &Ctx<T>) {
        let mut seen = HashSet::new();
        if self.open.iter().any(|id| !self.outside.contains(id)) {
            match list_all_actions(ctx, &self.window.filter()).await {
                Ok(actions) => {
                    for a in actions {
                        let id = a.id.to_ascii_lowercase();
                        if self.lines.contains_key(&id) {
                            seen.insert(id.clone());
                            self.last.insert(id, a);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing the actions failed; trying again at the next poll");
                    return;
                }
            }
        }
        let mut missing: Vec<String> =
            self.open.iter().filter(|id| !seen.contains(*id)).cloned().collect();
        missing.sort();
        for chunk in missing.chunks(ID_CHUNK) {
            let actions = match list_all_actions(ctx, &any_of("id", chunk)).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "looking actions up by id failed; trying again at the next poll");
                    continue;
                }
            };
            let mut found = HashSet::new();
            for a in actions {
                let id = a.id.to_ascii_lowercase();
                if self.lines.contains_key(&id) {
                    if !self.window.contains(a.creation_date_time_utc.as_deref()) {
                        self.outside.insert(id.clone());
                    }
                    found.insert(id.clone());
                    self.last.insert(id, a);
                }
            }
            for id in chunk.iter().filter(|id| !found.contains(*id)) {
                tracing::warn!(
                    action_id = %id,
                    lines = ?self.lines.get(id).cloned().unwrap_or_default(),
                    "the service does not list this action; its rows stay as they were"
                );
                self.open.remove(id);
            }
        }
        let last = &self.last;
        self.open.retain(|id| !last.get(id).is_some_and(MachineAction::is_final));
    }
}

/// Follows the actions of `open` until all are final, `options.timeout` has
/// passed, or a stop is asked for. Returns, per row `line`, what was learnt
/// (a row whose action was never listed is absent: it stays as it was), and
/// the facts of the wait for the summary.
pub async fn follow<T: Transport>(
    ctx: &Ctx<T>,
    open: &[Open],
    options: WaitOptions,
    stop: &Stop,
) -> (HashMap<u64, Tracked>, WaitStats) {
    let started = Instant::now();
    let calls_before = ctx.pacer.started(Api::ListActions);
    let mut lines: HashMap<String, Vec<u64>> = HashMap::new();
    for o in open {
        lines.entry(o.action_id.to_ascii_lowercase()).or_default().push(o.line);
    }
    let mut stats = WaitStats { rows: open.len() as u64, ..WaitStats::default() };
    if lines.is_empty() {
        return (HashMap::new(), stats);
    }
    let mut tracker = Tracker {
        open: lines.keys().cloned().collect(),
        lines,
        window: Window::of(open),
        last: HashMap::new(),
        outside: HashSet::new(),
    };
    let deadline = started + options.timeout;
    tracing::info!(
        rows = open.len(),
        actions = tracker.lines.len(),
        "waiting for the actions to finish"
    );
    loop {
        stats.polls += 1;
        tracker.poll(ctx).await;
        tracing::info!(
            poll = stats.polls,
            open = tracker.open.len(),
            of = tracker.lines.len(),
            "actions still open"
        );
        if tracker.open.is_empty() || stop.is_set() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let nap = options.poll_interval.min(deadline - now);
        tokio::select! {
            biased;
            () = stop.wait() => break,
            () = tokio::time::sleep(nap) => {}
        }
    }
    let mut out = HashMap::new();
    for (id, rows) in &tracker.lines {
        match tracker.last.get(id) {
            Some(a) => {
                let t = tracked(a);
                for line in rows {
                    out.insert(*line, t.clone());
                }
            }
            None => stats.unseen += rows.len() as u64,
        }
    }
    stats.still_open =
        out.values().filter(|t| matches!(t.status, Status::Pending | Status::InProgress)).count()
            as u64;
    stats.list_calls = ctx.pacer.started(Api::ListActions).saturating_sub(calls_before);
    stats.elapsed = started.elapsed();
    (out, stats)
}

/// What [`apply_tracked`] did to a results file.
#[derive(Debug, Default)]
pub struct Applied {
    /// Each changed row as it now reads, with its status before.
    pub changed: Vec<(Option<Status>, ResultRow)>,
    /// Every row of the file counted by its (new) status.
    pub counts: Summary,
}

/// Writes what tracking learnt into the results file at `path` (in
/// `format`), atomically; rows absent from `tracked` are kept as they are.
/// An `already_pending` row that gets a new status keeps that fact in its
/// `error_code` ([`ALREADY_PENDING_CODE`]).
pub fn apply_tracked(
    path: &Path,
    format: ResultFormat,
    tracked: &HashMap<u64, Tracked>,
) -> Result<Applied, RewriteError> {
    let mut applied = Applied::default();
    rewrite_with(path, format, |row| {
        let before = row.status;
        let changed = tracked.get(&row.line).is_some_and(|t| {
            let mut patch = t.patch();
            if before == Some(Status::AlreadyPending) && row.error_code.is_empty() {
                patch.error_code = Some(ALREADY_PENDING_CODE.to_string());
                if patch.error_message.is_none() && row.error_message.is_empty() {
                    patch.error_message = Some(
                        "the action was already pending before the run: someone else's".into(),
                    );
                }
            }
            patch.apply(row)
        });
        applied.counts.count(row);
        if changed {
            applied.changed.push((before, row.clone()));
        }
        changed
    })?;
    Ok(applied)
}

/// Phase 4 of a run: follows the open rows' actions, then rewrites the
/// results written so far (at `partial`, in `format`) with their outcome,
/// journals the changed rows and moves their counts in `summary`.
pub async fn finish_run<T: Transport>(
    ctx: &Ctx<T>,
    open: Vec<Open>,
    options: WaitOptions,
    stop: &Stop,
    partial: &Path,
    format: ResultFormat,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let (tracked, stats) = follow(ctx, &open, options, stop).await;
    let path: PathBuf = partial.to_path_buf();
    let applied = super::blocking(move || apply_tracked(&path, format, &tracked)).await?;
    for (before, row) in &applied.changed {
        summary.moved(*before, row.status);
        if let Some(j) = &ctx.journal {
            j.update_nowait(row);
        }
    }
    if let Some(j) = &ctx.journal
        && let Err(e) = j.flush().await
    {
        ctx.stop.fail(super::StopReason::Storage, e.to_string());
    }
    summary.waited = Some(stats);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use crate::api::client::{CallError, Reply};
    use crate::api::model::ODataList;
    use crate::api::odata::ListQuery;
    use crate::pace::{Limit, Pacer};
    use crate::run::RetryPolicy;
    use crate::run::transport::scripted::Scripted;

    /// The scripted service's actions, whose status follows a schedule of
    /// (seconds since start, status) steps, listed like the real list call.
    struct Timeline {
        start: Instant,
        actions: Vec<(MachineAction, Vec<(u64, &'static str)>)>,
        fail_next: AtomicU64,
    }

    fn action(id: &str, created: SystemTime) -> MachineAction {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "type": "Isolate",
            "status": "Pending",
            "machineId": "ab".repeat(20),
            "creationDateTimeUtc": format_utc(created),
            "lastUpdateDateTimeUtc": format_utc(created),
        }))
        .unwrap()
    }

    impl Timeline {
        fn view(&self, i: usize) -> MachineAction {
            let (a, steps) = &self.actions[i];
            let t = self.start.elapsed().as_secs();
            let mut a = a.clone();
            for (at, s) in steps {
                if t >= *at {
                    a.status = s.to_string();
                    if *s == "Failed" {
                        a.error_h_result = Some(-2147467259);
                    }
                }
            }
            a
        }

        /// A tiny evaluator of the two filter shapes tracking sends.
        fn matches(&self, filter: &str, a: &MachineAction) -> bool {
            if filter.starts_with("id eq") {
                return filter.split(" or ").any(|c| c == format!("id eq '{}'", a.id));
            }
            let created = parse_utc(a.creation_date_time_utc.as_deref().unwrap()).unwrap();
            let mut parts = filter.split(" and ");
            let ge = parts.next().unwrap().strip_prefix("creationDateTimeUtc ge ").unwrap();
            let ok_from = created >= parse_utc(ge).unwrap();
            let ok_to = parts.next().is_none_or(|p| {
                created <= parse_utc(p.strip_prefix("creationDateTimeUtc le ").unwrap()).unwrap()
            });
            ok_from && ok_to
        }
    }

    impl Timeline {
        /// The list call: the actions the filter selects, as they stand now.
        fn list(&self, query: &ListQuery) -> Result<Reply<ODataList<MachineAction>>, CallError> {
            let filter = query.filter.clone().unwrap_or_default();
            if self.fail_next.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                return Err(CallError::Api { status: 400, error: None, retry_after: None });
            }
            let skip = query.skip.unwrap_or(0) as usize;
            let top = query.top.unwrap_or(10_000) as usize;
            let value: Vec<MachineAction> = (0..self.actions.len())
                .map(|i| self.view(i))
                .filter(|a| self.matches(&filter, a))
                .skip(skip)
                .take(top)
                .collect();
            Ok(Reply { status: 200, value: ODataList { context: None, value, next_link: None } })
        }
    }

    fn ctx(timeline: Timeline) -> Ctx<Scripted> {
        let service = Scripted::new().on_list_actions(move |q| timeline.list(&q));
        Ctx::new(
            std::sync::Arc::new(service),
            std::sync::Arc::new(Pacer::new(
                &[Limit::new(100, Duration::from_secs(60)).unwrap()],
                None,
            )),
            None,
            RetryPolicy::default(),
            Stop::new(),
        )
    }

    fn opts(interval: u64, timeout: u64) -> WaitOptions {
        WaitOptions {
            poll_interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
        }
    }

    #[test]
    fn action_statuses_map_to_row_statuses() {
        for (a, s) in [
            ("Succeeded", Status::Succeeded),
            ("Failed", Status::Failed),
            ("TimeOut", Status::TimedOut),
            ("Cancelled", Status::Cancelled),
            ("Pending", Status::Pending),
            ("InProgress", Status::InProgress),
            ("SomethingNew", Status::InProgress),
        ] {
            assert_eq!(row_status(a), s, "{a}");
        }
    }

    #[test]
    fn only_open_rows_with_an_action_id_are_followed() {
        let now = SystemTime::now();
        let mut row = ResultRow {
            line: 7,
            status: Some(Status::Submitted),
            action_id: "a-1".into(),
            requested_at: Some(Timestamp::from(now - Duration::from_secs(60))),
            finished_at: Some(Timestamp::from(now)),
            ..ResultRow::default()
        };
        let open = Open::of(&row, now).unwrap();
        assert_eq!(open.line, 7);
        assert_eq!(open.answered_at.map(format_utc), Some(format_utc(now)));
        for s in [Status::AlreadyPending, Status::Pending, Status::InProgress] {
            row.status = Some(s);
            assert!(Open::of(&row, now).is_some(), "{s}");
        }
        for s in [Status::Succeeded, Status::Rejected, Status::Duplicate, Status::Failed] {
            row.status = Some(s);
            assert!(Open::of(&row, now).is_none(), "{s}");
        }
        row.status = Some(Status::Submitted);
        row.action_id.clear();
        assert!(Open::of(&row, now).is_none());
    }

    #[test]
    fn tracked_outcomes_are_written_and_already_pending_rows_stay_marked() {
        let dir = tempfile::Builder::new().prefix("mdebulk-wait-apply-").tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let rows = [
            (Status::Submitted, "a-1", ""),
            (Status::AlreadyPending, "a-2", ""),
            (Status::Rejected, "", "InvalidRequestBody"),
        ];
        {
            let mut sink = crate::output::csv_sink(
                std::fs::File::create(&path).unwrap(),
                crate::results::dialect::Dialect::COMMA,
                &["owner".to_string()],
            );
            for (i, (status, id, code)) in rows.iter().enumerate() {
                let row = ResultRow {
                    line: i as u64 + 2,
                    machine_id: "ab".repeat(20),
                    action: "isolate".into(),
                    status: Some(*status),
                    action_id: id.to_string(),
                    error_code: code.to_string(),
                    ..ResultRow::default()
                };
                sink.write_row(&[format!("=owner {i}")], &row).unwrap();
            }
            sink.flush().unwrap();
        }
        let t0 = SystemTime::now();
        let mut done = action("a-1", t0);
        done.status = "Succeeded".into();
        let mut failed = action("a-2", t0);
        failed.status = "Failed".into();
        let tracked: HashMap<u64, Tracked> = [(2, tracked(&done)), (3, tracked(&failed))].into();
        let applied = apply_tracked(&path, ResultFormat::Csv, &tracked).unwrap();
        assert_eq!(applied.changed.len(), 2);
        assert_eq!(applied.changed[1].0, Some(Status::AlreadyPending));
        assert_eq!(applied.counts.get(Status::Succeeded), 1);
        assert_eq!(applied.counts.get(Status::Failed), 1);
        assert_eq!(applied.counts.get(Status::Rejected), 1);
        let file = crate::run::rewrite::ResultsFile::open(&path).unwrap();
        let back: Vec<_> = file.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(back[0].row.status, Some(Status::Succeeded));
        assert_eq!(
            Timestamp::text_of(back[0].row.finished_at),
            format_utc(parse_utc(&format_utc(t0)).unwrap())
        );
        assert_eq!(back[1].row.status, Some(Status::Failed));
        assert_eq!(back[1].row.error_code, ALREADY_PENDING_CODE);
        assert_eq!(back[1].row.error_message, "the device reported a failure");
        assert_eq!(back[2].row.error_code, "InvalidRequestBody");
        assert_eq!(back[2].user, ["=owner 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_with_one_list_call_until_every_action_is_final() {
        let t0 = SystemTime::now();
        let service = Timeline {
            start: Instant::now(),
            actions: (0..300)
                .map(|i| {
                    let steps = match i % 3 {
                        0 => vec![(10, "InProgress"), (20, "Succeeded")],
                        1 => vec![(5, "Failed")],
                        _ => vec![(35, "Cancelled")],
                    };
                    (action(&format!("id-{i}"), t0), steps)
                })
                .collect(),
            fail_next: AtomicU64::new(0),
        };
        let ctx = ctx(service);
        let open: Vec<Open> = (0..300)
            .map(|i| Open {
                line: i + 2,
                action_id: format!("id-{i}"),
                requested_at: t0,
                answered_at: Some(t0),
            })
            .collect();
        let (got, stats) = follow(&ctx, &open, opts(10, 600), &Stop::new()).await;
        assert_eq!(got.len(), 300);
        assert_eq!(got[&2].status, Status::Succeeded);
        assert_eq!(got[&3].status, Status::Failed);
        assert!(got[&3].detail.contains("-2147467259"), "{}", got[&3].detail);
        assert_eq!(got[&4].status, Status::Cancelled);
        // Polls at 0, 10, 20, 30, 40 s: the last action ends at 35 s.
        assert_eq!(stats.polls, 5);
        assert_eq!(stats.list_calls, 5, "one call per poll whatever the number of rows");
        assert_eq!((stats.still_open, stats.unseen), (0, 0));
        let queries = ctx.transport.filters("list_actions");
        assert!(queries.iter().all(|q| q.starts_with("creationDateTimeUtc ge ")), "{queries:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_leaves_rows_pending_or_in_progress() {
        let t0 = SystemTime::now();
        let service = Timeline {
            start: Instant::now(),
            actions: vec![
                (action("slow", t0), vec![(100, "InProgress")]),
                (action("running", t0), vec![(1, "InProgress")]),
                (action("done", t0), vec![(1, "Succeeded")]),
            ],
            fail_next: AtomicU64::new(0),
        };
        let ctx = ctx(service);
        let open: Vec<Open> = ["slow", "running", "done"]
            .iter()
            .enumerate()
            .map(|(i, id)| Open {
                line: i as u64 + 2,
                action_id: id.to_string(),
                requested_at: t0,
                answered_at: None,
            })
            .collect();
        let started = Instant::now();
        let (got, stats) = follow(&ctx, &open, opts(4, 10), &Stop::new()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10), "the last poll is at the timeout");
        assert_eq!(stats.polls, 4, "0, 4, 8 and 10 s");
        assert_eq!(got[&2].status, Status::Pending);
        assert_eq!(got[&3].status, Status::InProgress);
        assert_eq!(got[&4].status, Status::Succeeded);
        assert_eq!(stats.still_open, 2);
        let first = ctx.transport.filters("list_actions")[0].clone();
        assert!(!first.contains(" le "), "no upper bound without answer times");

        // A zero timeout makes exactly one poll.
        let (_, stats) = follow(&ctx, &open, opts(4, 0), &Stop::new()).await;
        assert_eq!(stats.polls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn older_actions_are_looked_up_by_id_and_unknown_ones_left_alone() {
        let t0 = SystemTime::now();
        let week_ago = t0 - Duration::from_secs(7 * 86_400);
        let service = Timeline {
            start: Instant::now(),
            actions: vec![
                (action("ours", t0), vec![(3, "Succeeded")]),
                (action("theirs", week_ago), vec![(6, "Succeeded")]),
            ],
            fail_next: AtomicU64::new(1),
        };
        let ctx = ctx(service);
        let open = vec![
            Open { line: 2, action_id: "ours".into(), requested_at: t0, answered_at: Some(t0) },
            Open { line: 3, action_id: "theirs".into(), requested_at: t0, answered_at: Some(t0) },
            Open { line: 4, action_id: "ghost".into(), requested_at: t0, answered_at: Some(t0) },
            Open { line: 5, action_id: "OURS".into(), requested_at: t0, answered_at: Some(t0) },
        ];
        let (got, stats) = follow(&ctx, &open, opts(2, 60), &Stop::new()).await;
        assert_eq!(got[&2].status, Status::Succeeded);
        assert_eq!(got[&5].status, Status::Succeeded, "ids match whatever their case");
        assert_eq!(got[&3].status, Status::Succeeded);
        assert!(!got.contains_key(&4), "an unknown action leaves its row as it was");
        assert_eq!(stats.unseen, 1);
        let queries = ctx.transport.filters("list_actions");
        // Poll 1 (0 s): the window listing fails, the poll is skipped.
        // Poll 2 (2 s): window, then a by-id look-up of the two it does not
        // show; "ghost" is given up on. Poll 3 (4 s): window ("ours" is now
        // final) and "theirs" by id. Poll 4 (6 s): only "theirs" is open and
        // it lies outside the window: by id only, and it is final.
        assert_eq!(queries.len(), 1 + 2 + 2 + 1, "{queries:#?}");
        assert_eq!(queries[2], "id eq 'ghost' or id eq 'theirs'");
        assert!(queries[3].starts_with("creationDateTimeUtc ge "), "{}", queries[3]);
        assert_eq!(&queries[4..], ["id eq 'theirs'", "id eq 'theirs'"]);
        assert_eq!(stats.polls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_at_once() {
        let t0 = SystemTime::now();
        let service = Timeline {
            start: Instant::now(),
            actions: vec![(action("a", t0), vec![])],
            fail_next: AtomicU64::new(0),
        };
        let ctx = ctx(service);
        let open =
            vec![Open { line: 2, action_id: "a".into(), requested_at: t0, answered_at: None }];
        let stop = Stop::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            s2.trigger(crate::run::StopReason::Interrupted);
        });
        let started = Instant::now();
        let (got, stats) = follow(&ctx, &open, opts(30, 3600), &stop).await;
        assert_eq!(started.elapsed(), Duration::from_secs(45));
        assert_eq!(stats.polls, 2);
        assert_eq!(got[&2].status, Status::Pending);
    }
}
