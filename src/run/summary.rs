//! The end-of-run summary and the exit code it implies.
//!
//! Exit codes: 0 every row ok; 1 some rows failed; 2 usage, input or auth
//! error (before any row was sent, or credentials / TLS lost mid-run:
//! resumable); 74 the journal or results file could not be written
//! (resumable once fixed); 75 stopped by `--max-runtime` (resumable); 130
//! interrupted (resumable).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::progress::human;
use super::stop::StopReason;
use crate::results::{ResultRow, Status};

/// Counts and facts of a finished (or stopped) run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Where results were written (`None`: stdout).
    pub results: Option<PathBuf>,
    /// A dry run sent no action.
    pub dry_run: bool,
    /// Rows per status, indexed like [`Status::ALL`].
    pub by_status: [u64; Status::ALL.len()],
    /// Rows left out by `--only`.
    pub not_selected: u64,
    /// In-doubt rows of an earlier run found on the server.
    pub reconciled: u64,
    /// Rows an earlier invocation settled whose identity no row of this
    /// input names any more (left out of the results file).
    pub no_longer_in_input: u64,
    /// 429 answers seen.
    pub throttled: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// What failed, when a fault stopped the run.
    pub stop_detail: Option<String>,
    /// Estimated time to send the planned rows under the quota (dry run).
    pub estimate: Option<Duration>,
    /// `planned` rows per action (CLI name), for the dry-run summary.
    pub planned: BTreeMap<String, u64>,
    /// What the first line calls the command (`None`: run or dry run).
    pub heading: Option<&'static str>,
    /// The wait for final states (`--wait`, `status`), when there was one.
    pub waited: Option<WaitStats>,
    /// The first few `protected` rows (line, action, machine), for the summary.
    pub protected: Vec<String>,
    /// A dry run's plan digest (its record is beside the plan).
    pub plan_digest: Option<String>,
    /// `apply`: the plan carried out, who made it and who approved it.
    pub approval: Option<super::approval::Approval>,
    /// `--tag-result` (and its removal by `undo`), when asked for.
    pub tagged: Option<TagStats>,
    /// A run over many tenants: each tenant's share, in profile order.
    pub tenants: Vec<TenantOutcome>,
}

/// One tenant's share of a run over many, for the summary.
#[derive(Debug, Clone)]
pub struct TenantOutcome {
    /// The profile name.
    pub name: String,
    /// The share's own summary, when it ran.
    pub summary: Option<Box<Summary>>,
    /// Why the share was refused before it wrote any row (the error's
    /// kind and message), when it was.
    pub refused: Option<(&'static str, String)>,
}

impl TenantOutcome {
    /// The exit code of this tenant's share on its own: 2 when refused.
    pub fn exit_code(&self) -> u8 {
        match (&self.summary, &self.refused) {
            (_, Some(_)) => 2,
            (Some(s), None) => s.exit_code(),
            (None, None) => 0,
        }
    }

    /// One line: the tenant's counts per status and 429s, or why it was
    /// refused, or why it stopped.
    fn line(&self) -> String {
        if let Some((_, why)) = &self.refused {
            return format!("{}: refused, nothing sent: {why}", self.name);
        }
        let Some(s) = &self.summary else { return format!("{}: no rows", self.name) };
        let counts: Vec<String> = Status::ALL
            .iter()
            .zip(s.by_status)
            .filter(|(_, n)| *n > 0)
            .map(|(st, n)| format!("{} {n}", st.as_str()))
            .collect();
        let mut line = format!(
            "{}: {} row(s){}{}; 429 answers {}",
            self.name,
            s.rows(),
            if counts.is_empty() { "" } else { ": " },
            counts.join(", "),
            s.throttled
        );
        if let Some(reason) = s.stopped {
            let detail = s.stop_detail.clone().unwrap_or_else(|| reason.describe().to_string());
            let _ = write!(line, "; stopped: {detail}");
        }
        line
    }

    /// The share as JSON: its counts and exit code, or its refusal.
    fn to_json(&self) -> serde_json::Value {
        match (&self.summary, &self.refused) {
            (_, Some((kind, message))) => serde_json::json!({
                "exit_code": self.exit_code(),
                "error": { "kind": kind, "message": message },
            }),
            (Some(s), None) => s.to_json(None),
            (None, None) => serde_json::json!({ "rows": 0 }),
        }
    }
}

/// What `--tag-result` (or `undo` taking the tag off) did, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagStats {
    /// The tag.
    pub tag: String,
    /// True for adding it (`run`), false for removing it (`undo`).
    pub add: bool,
    /// Devices that carry it now (removing: no longer), this invocation's
    /// calls and earlier ones' together.
    pub done: u64,
    /// Devices it should be on (or off) that are not confirmed.
    pub not_done: u64,
    /// Batch calls this invocation made.
    pub calls: u64,
    /// Why devices were left without it, when a call failed (not a stop).
    pub error: Option<String>,
}

impl TagStats {
    /// Whether writing the tag failed for some device (exit code 1): not
    /// when only a stop cut the work short (the stop's code stands).
    pub fn failed(&self) -> bool {
        self.not_done > 0 && self.error.is_some()
    }
}

/// `protected` rows the summary names at most.
const PROTECTED_LISTED: usize = 5;

impl Summary {
    /// An empty summary for a run writing to `results`.
    pub fn new(results: Option<PathBuf>, dry_run: bool) -> Summary {
        Summary { results, dry_run, ..Summary::default() }
    }

    /// Records how long the command took and whether a stop cut it short.
    pub fn stamp(&mut self, started: tokio::time::Instant, stop: &super::Stop) {
        self.elapsed = started.elapsed();
        self.stopped = stop.reason();
        self.stop_detail = stop.detail();
    }

    /// Counts one settled row.
    pub fn count(&mut self, row: &ResultRow) {
        if let Some(s) = row.status
            && let Some(i) = Status::ALL.iter().position(|x| *x == s)
        {
            self.by_status[i] += 1;
        }
        if row.status == Some(Status::Planned) {
            *self.planned.entry(row.action.clone()).or_default() += 1;
        }
        if row.status == Some(Status::Protected) && self.protected.len() < PROTECTED_LISTED {
            self.protected.push(format!("line {}: {} {}", row.line, row.action, row.machine_id));
        }
    }

    /// Moves one row's count from status `from` to status `to` (a row
    /// updated after it was counted, e.g. by `--wait`).
    pub fn moved(&mut self, from: Option<Status>, to: Option<Status>) {
        let index = |s: Option<Status>| s.and_then(|s| Status::ALL.iter().position(|x| *x == s));
        if let Some(i) = index(from) {
            self.by_status[i] = self.by_status[i].saturating_sub(1);
        }
        if let Some(i) = index(to) {
            self.by_status[i] += 1;
        }
    }

    /// Rows with status `s`.
    pub fn get(&self, s: Status) -> u64 {
        Status::ALL.iter().position(|x| *x == s).map_or(0, |i| self.by_status[i])
    }

    /// Rows settled.
    pub fn rows(&self) -> u64 {
        self.by_status.iter().sum()
    }

    /// Rows that failed.
    pub fn failed(&self) -> u64 {
        Status::ALL.iter().zip(self.by_status).filter(|(s, _)| s.is_failure()).map(|(_, n)| n).sum()
    }

    /// The process exit code this run implies.
    pub fn exit_code(&self) -> u8 {
        let own = match self.stopped {
            Some(reason) => return reason.exit_code(),
            None if self.failed() > 0 => 1,
            None if self.tagged.as_ref().is_some_and(TagStats::failed) => 1,
            None => 0,
        };
        // A run over many tenants ends as its worst share: a refused or
        // stopped tenant outweighs failed rows.
        self.tenants.iter().map(TenantOutcome::exit_code).fold(own, u8::max)
    }

    /// The summary as printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = match self.heading {
            Some(h) => h,
            None if self.dry_run => "dry run",
            None => "run",
        };
        let _ = writeln!(
            out,
            "{verb}: {} row(s) in {}{}",
            self.rows(),
            human(self.elapsed),
            match self.stopped {
                Some(StopReason::Interrupted) => ", interrupted",
                Some(StopReason::Deadline) => ", stopped at --max-runtime",
                Some(StopReason::AuthLost) => ", stopped: the credentials stopped working",
                Some(StopReason::Connection) => ", stopped: the service cannot be reached safely",
                Some(StopReason::Storage) =>
                    ", stopped: the journal or results could not be written",
                None => "",
            }
        );
        for (s, n) in Status::ALL.iter().zip(self.by_status) {
            if n > 0 {
                let _ = writeln!(out, "  {:<16}{n}", s.as_str());
            }
        }
        if self.rows() == 0 {
            // A header-only file is a normal, empty queue (exit 0): say so.
            let _ = writeln!(out, "  no rows to act on");
        }
        if !self.planned.is_empty() {
            let per: Vec<String> = self.planned.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let _ = writeln!(out, "  planned per action: {}", per.join(", "));
        }
        let protected = self.get(Status::Protected);
        if protected > 0 {
            let more = protected.saturating_sub(self.protected.len() as u64);
            let _ = writeln!(
                out,
                "  protected by policy, not sent: {}{}",
                self.protected.join("; "),
                if more > 0 { format!("; and {more} more") } else { String::new() }
            );
        }
        if let Some(a) = &self.approval {
            let _ =
                writeln!(out, "  plan {} by {}, approved by {}", a.digest, a.planner, a.approver);
        }
        if !self.tenants.is_empty() {
            let _ = writeln!(out, "  per tenant:");
            for t in &self.tenants {
                let _ = writeln!(out, "    {}", t.line());
            }
        }
        if self.not_selected > 0 {
            let _ = writeln!(out, "  not selected by --only: {}", self.not_selected);
        }
        if self.reconciled > 0 {
            let _ =
                writeln!(out, "  found on the server after an interruption: {}", self.reconciled);
        }
        if self.no_longer_in_input > 0 {
            let _ = writeln!(
                out,
                "  settled earlier, no longer in the input: {}",
                self.no_longer_in_input
            );
        }
        if let Some(w) = &self.waited {
            render_wait(&mut out, w, self.results.as_deref());
        }
        if let Some(t) = &self.tagged {
            render_tags(&mut out, t);
        }
        if let Some(e) = self.estimate {
            let _ = writeln!(out, "  estimated time under the quota: {}", human(e));
        }
        let _ = writeln!(out, "  429 answers: {}", self.throttled);
        let label = if self.dry_run { "plan" } else { "results" };
        match &self.results {
            Some(p) => {
                let _ = writeln!(out, "  {label}: {}", p.display());
            }
            None => {
                let _ = writeln!(out, "  {label}: standard output");
            }
        }
        if let (Some(d), Some(p)) = (&self.plan_digest, &self.results) {
            let _ = writeln!(out, "  plan digest: {d}");
            let _ = writeln!(
                out,
                "  to carry out exactly this plan after approval: mdebulk apply {} --digest {d}",
                p.display()
            );
        }
        if self.dry_run && self.heading.is_none() {
            let _ = writeln!(
                out,
                "  nothing was sent; to run it for real: the same command without --dry-run (the plan does not block it)"
            );
        }
        out
    }
}

impl Summary {
    /// The summary as one JSON object (`--summary json`, JSON logs): the
    /// command, counts per status (every status, zeros included, so a
    /// script need not guess keys), elapsed seconds, 429 answers, the
    /// results path (`null`: standard output), the exit code, and, when a
    /// stop cut the command short, `error` with a stable `kind` and what to
    /// do `next`.
    pub fn to_json(&self, next: Option<String>) -> serde_json::Value {
        let verb = match self.heading {
            Some(h) => h,
            None if self.dry_run => "dry run",
            None => "run",
        };
        let by_status: serde_json::Map<String, serde_json::Value> = Status::ALL
            .iter()
            .zip(self.by_status)
            .map(|(s, n)| (s.as_str().to_string(), n.into()))
            .collect();
        let mut out = serde_json::json!({
            "command": verb,
            "rows": self.rows(),
            "by_status": by_status,
            "failed": self.failed(),
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "throttled_429": self.throttled,
            "results": self.results.as_ref().map(|p| p.display().to_string()),
            "exit_code": self.exit_code(),
        });
        let extra = [
            ("not_selected", self.not_selected),
            ("reconciled", self.reconciled),
            ("no_longer_in_input", self.no_longer_in_input),
        ];
        for (key, n) in extra {
            if n > 0 {
                out[key] = n.into();
            }
        }
        if !self.planned.is_empty() {
            out["planned_per_action"] = serde_json::json!(self.planned);
        }
        if let Some(e) = self.estimate {
            out["estimate_seconds"] = e.as_secs_f64().into();
        }
        if !self.protected.is_empty() {
            out["protected_rows"] = serde_json::json!(self.protected);
        }
        if let Some(d) = &self.plan_digest {
            out["plan_digest"] = d.clone().into();
        }
        if let Some(a) = &self.approval {
            out["plan"] = serde_json::json!({
                "digest": a.digest, "planner": a.planner, "approver": a.approver
            });
        }
        if let Some(w) = &self.waited {
            out["waited"] = serde_json::json!({
                "rows": w.rows,
                "polls": w.polls,
                "list_calls": w.list_calls,
                "still_open": w.still_open,
                "unseen": w.unseen,
                "elapsed_seconds": w.elapsed.as_secs_f64(),
            });
        }
        if let Some(t) = &self.tagged {
            out["tag_result"] = serde_json::json!({
                "tag": t.tag,
                "action": if t.add { "add" } else { "remove" },
                "done": t.done,
                "not_done": t.not_done,
                "calls": t.calls,
                "error": t.error,
            });
        }
        if !self.tenants.is_empty() {
            let per: serde_json::Map<String, serde_json::Value> =
                self.tenants.iter().map(|t| (t.name.clone(), t.to_json())).collect();
            out["tenants"] = per.into();
        }
        if let Some(reason) = self.stopped {
            let message = match &self.stop_detail {
                Some(d) if !d.is_empty() => d.clone(),
                _ => reason.describe().to_string(),
            };
            out["error"] = serde_json::json!({ "kind": reason.kind(), "message": message });
        }
        if let Some(next) = next {
            out["next"] = next.into();
        }
        out
    }
}

/// The summary lines of `--tag-result` (or of `undo` removing the tag).
fn render_tags(out: &mut String, t: &TagStats) {
    let tag = crate::text::quote(&t.tag);
    let (done, not_done, again) = if t.add {
        (format!("tagged {tag}"), "not tagged", "`--resume` tags the rest")
    } else {
        (format!("tag {tag} removed"), "tag not removed", "running undo again removes it")
    };
    let _ = writeln!(out, "  {done}: {} device(s), {} call(s)", t.done, t.calls);
    if t.not_done > 0 {
        let why = t.error.as_deref().unwrap_or("the command stopped first");
        let _ = writeln!(out, "  {not_done}: {} device(s) ({why}); {again}", t.not_done);
    }
}

/// The summary lines of a wait.
fn render_wait(out: &mut String, w: &WaitStats, results: Option<&std::path::Path>) {
    let _ = writeln!(
        out,
        "  followed {} action(s) for {}: {} poll(s), {} list call(s)",
        w.rows,
        human(w.elapsed),
        w.polls,
        w.list_calls
    );
    if w.still_open > 0 {
        let again = match results {
            Some(p) => format!("mdebulk status {} --wait", p.display()),
            None => "mdebulk status RESULTS --wait".to_string(),
        };
        let _ = writeln!(
            out,
            "  still open when waiting ended: {} (not failures; `{again}` follows them on)",
            w.still_open
        );
    }
    if w.unseen > 0 {
        let _ = writeln!(
            out,
            "  not in the service's action list: {} (left as they were; see the log)",
            w.unseen
        );
    }
}

/// Facts about a wait, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Rows tracked.
    pub rows: u64,
    /// Polls made.
    pub polls: u32,
    /// `GET machineactions` calls made (pages and by-id look-ups, retries included).
    pub list_calls: u64,
    /// Rows whose action was still pending or in progress when waiting ended.
    pub still_open: u64,
    /// Rows whose action the service never listed (left as they were).
    pub unseen: u64,
    /// Time spent waiting.
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(statuses: &[Status]) -> Summary {
        let mut s = Summary::default();
        for st in statuses {
            s.count(&ResultRow { status: Some(*st), ..ResultRow::default() });
        }
        s
    }

    #[test]
    fn planned_rows_are_counted_per_action_and_rendered_with_the_estimate() {
        let mut s = Summary::new(None, true);
        for action in ["offboard", "isolate", "isolate"] {
            s.count(&ResultRow {
                status: Some(Status::Planned),
                action: action.into(),
                ..ResultRow::default()
            });
        }
        s.count(&ResultRow {
            status: Some(Status::NotFound),
            action: "scan".into(),
            ..ResultRow::default()
        });
        s.estimate = Some(Duration::from_millis(4400));
        let text = s.render();
        assert!(text.starts_with("dry run: 4 row(s)"), "{text}");
        assert!(text.contains("\n  planned per action: isolate 2, offboard 1\n"), "{text}");
        assert!(text.contains("\n  estimated time under the quota: 4.4s\n"), "{text}");
        assert_eq!(s.exit_code(), 1);
    }

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(with(&[Status::Submitted, Status::Duplicate]).exit_code(), 0);
        assert_eq!(with(&[Status::Submitted, Status::Rejected]).exit_code(), 1);
        let mut s = with(&[Status::Submitted]);
        s.stopped = Some(StopReason::Interrupted);
        assert_eq!(s.exit_code(), 130);
        s.stopped = Some(StopReason::Deadline);
        assert_eq!(s.exit_code(), 75);
    }

    #[test]
    fn the_json_summary_counts_every_status_and_names_a_stop() {
        let mut s = with(&[Status::Submitted, Status::Submitted, Status::Rejected]);
        s.throttled = 3;
        s.results = Some(PathBuf::from("r.csv"));
        let v = s.to_json(None);
        assert_eq!(v["rows"], 3);
        assert_eq!(v["by_status"]["submitted"], 2);
        assert_eq!(v["by_status"]["rejected"], 1);
        assert_eq!(v["by_status"]["succeeded"], 0);
        assert_eq!(v["throttled_429"], 3);
        assert_eq!(v["results"], "r.csv");
        assert_eq!(v["exit_code"], 1);
        assert!(v.get("error").is_none(), "{v}");
        s.stopped = Some(StopReason::Deadline);
        let v = s.to_json(Some("to continue: mdebulk run x --resume".into()));
        assert_eq!(v["error"]["kind"], "deadline");
        assert_eq!(v["exit_code"], 75);
        assert_eq!(v["next"], "to continue: mdebulk run x --resume");
    }

    #[test]
    fn a_tag_that_could_not_be_written_fails_the_run_but_a_stop_keeps_its_code() {
        let mut s = with(&[Status::Submitted, Status::Submitted]);
        s.tagged = Some(TagStats {
            tag: "IR-42".into(),
            add: true,
            done: 1,
            not_done: 1,
            calls: 2,
            error: Some("HTTP 403 Forbidden".into()),
        });
        assert_eq!(s.exit_code(), 1);
        let text = s.render();
        assert!(text.contains("  tagged \"IR-42\": 1 device(s), 2 call(s)\n"), "{text}");
        assert!(
            text.contains("  not tagged: 1 device(s) (HTTP 403 Forbidden); `--resume`"),
            "{text}"
        );
        let v = s.to_json(None);
        assert_eq!(v["tag_result"]["not_done"], 1);
        assert_eq!(v["tag_result"]["action"], "add");
        assert_eq!(v["exit_code"], 1);
        // Cut short by a stop, without an error: the stop's code.
        if let Some(t) = s.tagged.as_mut() {
            t.error = None;
        }
        s.stopped = Some(StopReason::Interrupted);
        assert_eq!(s.exit_code(), 130);
        assert!(s.render().contains("not tagged: 1 device(s) (the command stopped first)"));
    }

    #[test]
    fn a_wait_moves_counts_and_open_rows_are_not_failures() {
        let mut s = with(&[Status::Submitted, Status::Submitted, Status::AlreadyPending]);
        s.moved(Some(Status::Submitted), Some(Status::Succeeded));
        s.moved(Some(Status::Submitted), Some(Status::InProgress));
        s.moved(Some(Status::AlreadyPending), Some(Status::Pending));
        assert_eq!(s.rows(), 3);
        assert_eq!(s.get(Status::Submitted), 0);
        assert_eq!(s.exit_code(), 0);
        s.waited = Some(super::WaitStats {
            rows: 3,
            polls: 2,
            list_calls: 2,
            still_open: 2,
            ..Default::default()
        });
        s.results = Some(PathBuf::from("r.csv"));
        let text = s.render();
        assert!(text.contains("2 poll(s), 2 list call(s)"), "{text}");
        assert!(text.contains("still open when waiting ended: 2"), "{text}");
        assert!(text.contains("mdebulk status r.csv --wait"), "{text}");
        s.moved(Some(Status::Pending), Some(Status::TimedOut));
        assert_eq!(s.exit_code(), 1);
    }
}
