//! Stops: the first Ctrl-C/SIGTERM (or `--max-runtime`) asks the run to
//! stop taking rows; work already on the wire finishes; a second signal
//! exits at once. A fault that would make every later request fail or go
//! unrecorded (credentials that no longer work, a certificate the client
//! cannot trust, a journal that cannot be written) stops the run the same
//! way, so that rows not yet sent stay unsent and `--resume` continues once
//! the cause is fixed.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--max-runtime` elapsed.
    Deadline,
    /// The API refused our credentials and a fresh token did not cure it,
    /// or no token could be had any more.
    AuthLost,
    /// A failure no retry can cure for any row: the server's certificate is
    /// not trusted, TLS cannot be negotiated, the host name does not resolve.
    Connection,
    /// The journal or the results file could not be written (disk full,
    /// I/O error, file removed): nothing may be sent that cannot be recorded.
    Storage,
}

impl StopReason {
    /// A stable name for scripts (the `kind` of a JSON summary's `error`).
    pub fn kind(self) -> &'static str {
        match self {
            StopReason::Interrupted => "interrupted",
            StopReason::Deadline => "deadline",
            StopReason::AuthLost => "auth_lost",
            StopReason::Connection => "connection",
            StopReason::Storage => "storage",
        }
    }

    /// What happened, when the stop carries no detail of its own.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Interrupted => "interrupted",
            StopReason::Deadline => "stopped at --max-runtime",
            StopReason::AuthLost => "the credentials stopped working",
            StopReason::Connection => "the service cannot be reached safely",
            StopReason::Storage => "the journal or results could not be written",
        }
    }

    /// The process exit code of a run that stopped for this reason.
    pub fn exit_code(self) -> u8 {
        match self {
            StopReason::Interrupted => 130,
            StopReason::Deadline => 75,
            StopReason::AuthLost | StopReason::Connection => 2,
            // EX_IOERR of sysexits.h.
            StopReason::Storage => 74,
        }
    }

    fn code(self) -> u8 {
        match self {
            StopReason::Interrupted => 1,
            StopReason::Deadline => 2,
            StopReason::AuthLost => 3,
            StopReason::Connection => 4,
            StopReason::Storage => 5,
        }
    }

    fn from_code(code: u8) -> Option<StopReason> {
        Some(match code {
            1 => StopReason::Interrupted,
            2 => StopReason::Deadline,
            3 => StopReason::AuthLost,
            4 => StopReason::Connection,
            5 => StopReason::Storage,
            _ => return None,
        })
    }
}

/// A shared stop flag that tasks can poll or await.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    /// 0 = running, else [`StopReason::code`] of the first reason.
    state: AtomicU8,
    /// What failed, for the reasons that are faults (set before `state`).
    detail: Mutex<Option<String>>,
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
        self.set(reason, None);
    }

    /// Stops for a fault, saying what failed; the first reason given wins
    /// (a fault after an interrupt is only logged by its caller).
    pub fn fail(&self, reason: StopReason, detail: String) {
        self.set(reason, Some(detail));
    }

    fn set(&self, reason: StopReason, detail: Option<String>) {
        let mut slot = self.inner.detail.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .inner
            .state
            .compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            *slot = detail;
            drop(slot);
            self.inner.notify.notify_waiters();
        }
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        StopReason::from_code(self.inner.state.load(Ordering::SeqCst))
    }

    /// What failed, when the run stopped for a fault.
    pub fn detail(&self) -> Option<String> {
        self.inner.detail.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
        stop.fail(StopReason::Storage, "disk full".into());
        assert_eq!((stop.reason(), stop.detail()), (Some(StopReason::Deadline), None));
    }

    #[test]
    fn a_fault_keeps_its_detail_and_its_exit_code() {
        let stop = Stop::new();
        stop.fail(StopReason::AuthLost, "HTTP 401".into());
        stop.trigger(StopReason::Interrupted);
        assert_eq!(stop.reason(), Some(StopReason::AuthLost));
        assert_eq!(stop.detail().as_deref(), Some("HTTP 401"));
        assert_eq!(StopReason::AuthLost.exit_code(), 2);
        assert_eq!(StopReason::Storage.exit_code(), 74);
    }
}
