//! Graceful stops: the first Ctrl-C/SIGTERM (or `--max-runtime`) asks the
//! run to stop taking rows; work already on the wire finishes; a second
//! signal exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--max-runtime` elapsed.
    Deadline,
}

/// A shared stop flag that tasks can poll or await.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    /// 0 = running, 1 = interrupted, 2 = deadline.
    state: AtomicU8,
    /// Wakes tasks waiting in [`Stop::wait`].
    notify: Notify,
}

impl Stop {
    /// A flag that is not set.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks everything to stop; the first reason given wins.
    pub fn trigger(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Interrupted => 1,
            StopReason::Deadline => 2,
        };
        if self.inner.state.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.inner.notify.notify_waiters();
        }
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        match self.inner.state.load(Ordering::SeqCst) {
            1 => Some(StopReason::Interrupted),
            2 => Some(StopReason::Deadline),
            _ => None,
        }
    }

    /// True once a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.reason().is_some()
    }

    /// Completes when a stop is asked for.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Installs the signal handlers: the first SIGINT/SIGTERM triggers `stop`,
/// a second exits the process at once with 130 (the journal is consistent at
/// any instant, so nothing is corrupted).
pub fn install_signal_handlers(stop: Stop) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count == 1 {
                tracing::warn!(
                    "interrupted: finishing requests already sent; press Ctrl-C again to quit at once"
                );
                stop.trigger(StopReason::Interrupted);
            } else {
                eprintln!("interrupted twice: exiting now; --resume will pick up from the journal");
                std::process::exit(130);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins_and_waiters_wake() {
        let stop = Stop::new();
        let s = stop.clone();
        let waiter = tokio::spawn(async move { s.wait().await });
        stop.trigger(StopReason::Deadline);
        stop.trigger(StopReason::Interrupted);
        waiter.await.unwrap();
        assert_eq!(stop.reason(), Some(StopReason::Deadline));
    }
}
