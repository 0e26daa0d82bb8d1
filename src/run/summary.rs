//! The end-of-run summary and the exit code it implies.
//!
//! Exit codes: 0 every row ok; 1 some rows failed; 2 usage, input or auth
//! error (returned before any summary exists); 75 stopped by
//! `--max-runtime` (resumable); 130 interrupted (resumable).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::progress::human;
use super::stop::StopReason;
use crate::output::{ResultRow, Status};

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
    /// Rows a stop left unsent (a resume sends them).
    pub unsent: u64,
    /// 429 answers seen.
    pub throttled: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// Estimated time to send the planned rows under the quota (dry run).
    pub estimate: Option<Duration>,
    /// `planned` rows per action (CLI name), for the dry-run summary.
    pub planned: BTreeMap<String, u64>,
}

impl Summary {
    /// An empty summary for a run writing to `results`.
    pub fn new(results: Option<PathBuf>, dry_run: bool) -> Summary {
        Summary { results, dry_run, ..Summary::default() }
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
        match self.stopped {
            Some(StopReason::Interrupted) => 130,
            Some(StopReason::Deadline) => 75,
            None if self.failed() > 0 => 1,
            None => 0,
        }
    }

    /// The summary as printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run { "dry run" } else { "run" };
        let _ = writeln!(
            out,
            "{verb}: {} row(s) in {}{}",
            self.rows(),
            human(self.elapsed),
            match self.stopped {
                Some(StopReason::Interrupted) => ", interrupted",
                Some(StopReason::Deadline) => ", stopped at --max-runtime",
                None => "",
            }
        );
        for (s, n) in Status::ALL.iter().zip(self.by_status) {
            if n > 0 {
                let _ = writeln!(out, "  {:<16}{n}", s.as_str());
            }
        }
        if !self.planned.is_empty() {
            let per: Vec<String> = self.planned.iter().map(|(a, n)| format!("{a} {n}")).collect();
            let _ = writeln!(out, "  planned per action: {}", per.join(", "));
        }
        if self.not_selected > 0 {
            let _ = writeln!(out, "  not selected by --only: {}", self.not_selected);
        }
        if self.reconciled > 0 {
            let _ =
                writeln!(out, "  found on the server after an interruption: {}", self.reconciled);
        }
        if self.unsent > 0 {
            let _ = writeln!(out, "  not sent yet: {}", self.unsent);
        }
        if let Some(e) = self.estimate {
            let _ = writeln!(out, "  estimated time under the quota: {}", human(e));
        }
        let _ = writeln!(out, "  429 answers: {}", self.throttled);
        match &self.results {
            Some(p) => {
                let _ = writeln!(out, "  results: {}", p.display());
            }
            None => {
                let _ = writeln!(out, "  results: standard output");
            }
        }
        out
    }
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
}
