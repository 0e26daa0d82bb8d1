//! What a person watching the run sees: on a terminal, two lines (the bar
//! with rows done, ok/failed and the ETA under the quota; below it why the
//! run is waiting and until when), each cut to the terminal's width, which
//! is read again at every redraw so a resize is followed; or a log line
//! every minute when stderr is not a terminal or escape codes are off
//! (`--color never`, `NO_COLOR`, `TERM=dumb`: the live display redraws
//! itself with cursor movements, which are escape codes too).

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
    /// a terminal, or escape codes off) draws no bar and no escape codes.
    pub fn new(total: u64, enabled: bool, pacer: Arc<Pacer>) -> Progress {
        let counts = Arc::new(Counts::default());
        counts.total.store(total, Ordering::Relaxed);
        let draw = enabled && std::io::stderr().is_terminal() && crate::logging::ansi();
        let bar = draw.then(|| {
            let bar = crate::logging::bars().add(ProgressBar::new(total));
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            // The bar takes what the counts and ETA leave of the first line;
            // the reason fills the second and is cut at its end.
            // Invariant: the template is a constant known to parse.
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} {prefix}\n  {wide_msg}",
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
                    let state = || {
                        let remaining = counts
                            .total
                            .load(Ordering::Relaxed)
                            .saturating_sub(counts.done.load(Ordering::Relaxed));
                        let holds = pacer.holds();
                        let eta = eta(&holds, pacer.schedule(remaining.min(ETA_HORIZON)));
                        (holds.first().copied(), eta, remaining > ETA_HORIZON)
                    };
                    match &bar {
                        Some(b) => {
                            let (hold, eta, more) = state();
                            let failed = counts.failed.load(Ordering::Relaxed);
                            let ok = counts.done.load(Ordering::Relaxed).saturating_sub(failed);
                            b.set_prefix(format!(
                                "ok {ok} failed {failed} eta {}{}",
                                if more { ">" } else { "" },
                                human(eta)
                            ));
                            b.set_message(
                                reason(hold.as_ref())
                                    .unwrap_or_else(|| "sending at the quota's pace".into()),
                            );
                        }
                        None if last_log.elapsed() >= LOG_EVERY => {
                            last_log = Instant::now();
                            let (hold, eta, more) = state();
                            let msg = describe(hold.as_ref(), eta, more);
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

/// The time left: the schedule under the quota, after the longest pause a
/// server's `Retry-After` imposes (nothing is sent before it ends).
fn eta(holds: &[Hold], schedule: Duration) -> Duration {
    let now = Instant::now();
    let pause = holds
        .iter()
        .filter(|h| matches!(h.reason, WaitReason::RetryAfter))
        .map(|h| h.until.saturating_duration_since(now))
        .max()
        .unwrap_or_default();
    pause + schedule
}

/// Why calls are held and until when, if they are.
fn reason(hold: Option<&Hold>) -> Option<String> {
    let h = hold?;
    let left = h.until.saturating_duration_since(Instant::now());
    let until = format_utc(SystemTime::now() + left);
    let until = until.get(11..19).unwrap_or(&until).to_string();
    Some(match h.reason {
        WaitReason::Quota(l) => {
            format!("{}: quota {l} full, next call at {until} UTC (in {})", h.api, human(left))
        }
        WaitReason::RetryAfter => {
            format!("{}: server said 429, waiting until {until} UTC (in {})", h.api, human(left))
        }
    })
}

/// The off-terminal progress message: why calls are held and until when,
/// plus the ETA.
fn describe(hold: Option<&Hold>, eta: Duration, more: bool) -> String {
    let eta = format!("eta {}{} under the quota", if more { "over " } else { "" }, human(eta));
    match reason(hold) {
        None => eta,
        Some(r) => format!("{r}; {eta}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_eta_waits_out_a_known_retry_after_first() {
        let now = Instant::now();
        let api = crate::api::route::Api::CancelAction;
        let holds = [
            Hold {
                api,
                until: now + Duration::from_secs(5),
                reason: WaitReason::Quota(crate::pace::Limit {
                    calls: 100,
                    window: Duration::from_secs(60),
                }),
            },
            Hold { api, until: now + Duration::from_secs(30), reason: WaitReason::RetryAfter },
        ];
        assert_eq!(eta(&holds, Duration::from_secs(60)), Duration::from_secs(90));
        assert_eq!(eta(&holds[..1], Duration::from_secs(60)), Duration::from_secs(60));
        let text = reason(Some(&holds[1])).unwrap();
        assert!(text.contains("server said 429") && text.contains("(in 30.0s)"), "{text}");
    }
}
