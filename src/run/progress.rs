//! What a person watching the run sees: an indicatif bar on a terminal
//! (rows done, ok/failed, why the run is waiting and until when, ETA under
//! the quota), or a log line every minute when stderr is not a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::time::format_utc;
use crate::pace::{Hold, Pacer, WaitReason};
use crate::results::ResultRow;

/// How often the off-terminal progress line is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Rows beyond this are left out of the ETA: at the API's quota they are
/// weeks away, and the schedule costs time per row.
const ETA_HORIZON: u64 = 50_000;

/// The run's progress display.
pub struct Progress {
    /// The bar, when drawing one.
    bar: Option<ProgressBar>,
    /// Refreshes the wait message or logs progress lines.
    ticker: Option<JoinHandle<()>>,
    /// Counters shared with the ticker.
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    failed: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// Starts the display for `total` rows. `enabled` false (or stderr not
    /// a terminal) draws no bar and no escape codes.
    pub fn new(total: u64, enabled: bool, pacer: Arc<Pacer>) -> Progress {
        let counts = Arc::new(Counts::default());
        counts.total.store(total, Ordering::Relaxed);
        let draw = enabled && std::io::stderr().is_terminal();
        let bar = draw.then(|| {
            let bar = crate::logging::bars().add(ProgressBar::new(total));
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            // Invariant: the template is a constant known to parse.
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} {prefix} {msg}",
            )
            .expect("valid progress template");
            bar.set_style(style.progress_chars("=> "));
            bar
        });
        let ticker = {
            let (bar, counts, pacer) = (bar.clone(), counts.clone(), pacer.clone());
            Some(tokio::spawn(async move {
                let mut last_log = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    // The message costs a schedule computation: build it only
                    // when it will be shown.
                    let message = || {
                        let remaining = counts
                            .total
                            .load(Ordering::Relaxed)
                            .saturating_sub(counts.done.load(Ordering::Relaxed));
                        let eta = pacer.schedule(remaining.min(ETA_HORIZON));
                        describe(pacer.holds().first(), eta, remaining > ETA_HORIZON)
                    };
                    match &bar {
                        Some(b) => b.set_message(message()),
                        None if last_log.elapsed() >= LOG_EVERY => {
                            last_log = Instant::now();
                            let msg = message();
                            tracing::info!(
                                done = counts.done.load(Ordering::Relaxed),
                                total = counts.total.load(Ordering::Relaxed),
                                failed = counts.failed.load(Ordering::Relaxed),
                                "progress: {msg}"
                            );
                        }
                        None => {}
                    }
                }
            }))
        };
        Progress { bar, ticker, counts }
    }

    /// Counts a settled row.
    pub fn row_done(&self, row: &ResultRow) {
        self.counts.done.fetch_add(1, Ordering::Relaxed);
        if row.status.is_some_and(|s| s.is_failure()) {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(b) = &self.bar {
            b.inc(1);
            let failed = self.counts.failed.load(Ordering::Relaxed);
            let ok = self.counts.done.load(Ordering::Relaxed) - failed;
            b.set_prefix(format!("ok {ok} failed {failed}"));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The wait message: why calls are held and until when, plus the ETA.
fn describe(hold: Option<&Hold>, eta: Duration, more: bool) -> String {
    let eta = format!("eta {}{} under the quota", if more { "over " } else { "" }, human(eta));
    match hold {
        None => eta,
        Some(h) => {
            let left = h.until.saturating_duration_since(Instant::now());
            let until = format_utc(SystemTime::now() + left);
            let until = until.get(11..19).unwrap_or(&until).to_string();
            match h.reason {
                WaitReason::Quota(l) => format!(
                    "{}: quota {l} full, next call at {until} UTC (in {}); {eta}",
                    h.api,
                    human(left)
                ),
                WaitReason::RetryAfter => format!(
                    "{}: server said 429, waiting until {until} UTC (in {}); {eta}",
                    h.api,
                    human(left)
                ),
            }
        }
    }
}

/// `1h02m`, `4m10s`, `12s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    }
}
