//! The call engine: how every API call of a command waits for its turn,
//! what an error answer means, and how often it is tried again.
//!
//! Two things are kept apart, as in cargo's and uv's retry code:
//! - [`verdict`] says what an error answer *means* (wait for the quota,
//!   back off, fetch a fresh token, stop the whole run, or accept it), from
//!   the answer alone;
//! - [`RetryState`] holds what one call has used up (transient attempts,
//!   its one re-authentication) and turns a verdict into the next [`Step`].
//!
//! Every wait in here — the pacer's slot, a `Retry-After` pause, a backoff —
//! races the run's [`Stop`]: after Ctrl-C, SIGTERM, `--max-runtime` or a
//! fault that stops the run, no call waits on, and none is sent. A call cut
//! short that way ends with [`CallError::Stopped`] (nothing was sent).
//!
//! [`read`] runs a read call (look-ups, lists, polls) to its end; the action
//! POST (`submit::execute`) and the cancel (`undo`) use the same pieces with
//! their own final answers, because an unanswered POST must be looked up
//! before it is sent again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::journal::Journal;
use super::stop::{Stop, StopReason};
use super::transport::Transport;
use crate::api::auth::AuthError;
use crate::api::client::{CallError, Reply};
use crate::api::route::Api;
use crate::api::time::format_utc;
use crate::pace::Pacer;

/// Retry-After assumed when a 429 carries none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Retry policy knobs.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts allowed for transient errors (5xx, timeouts, connection errors).
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt.
    pub backoff_base: Duration,
    /// Largest backoff step.
    pub backoff_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff before transient attempt `attempt` (1-based):
    /// uniform in `[0, min(cap, base·2^(attempt−1))]`, but never less than
    /// what the server asked for.
    pub fn backoff(&self, attempt: u32, server_asked: Option<Duration>) -> Duration {
        let step = self.backoff_base.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        let jittered = step.min(self.backoff_cap).mul_f64(fastrand::f64());
        jittered.max(server_asked.unwrap_or(Duration::ZERO))
    }
}

/// What every call of one command shares: the API, the pacer, the journal,
/// the retry knobs, the stop flag and the 429 bookkeeping.
pub struct Ctx<T> {
    /// The API.
    pub transport: Arc<T>,
    /// Paces every call.
    pub pacer: Arc<Pacer>,
    /// Records intents and outcomes durably (runs with a results file).
    pub journal: Option<Arc<Journal>>,
    /// Retry knobs.
    pub policy: RetryPolicy,
    /// Counts 429s seen, for the summary.
    pub throttled: AtomicU64,
    /// Asked to stop: calls still waiting for their turn give up unsent.
    pub stop: Stop,
    /// Until when each API's lane was last said to be paused, so that a
    /// burst of 429s logs one line per pause instead of one per answer.
    paused: Mutex<HashMap<Api, Instant>>,
}

impl<T> Ctx<T> {
    /// A context for one command.
    pub fn new(
        transport: Arc<T>,
        pacer: Arc<Pacer>,
        journal: Option<Arc<Journal>>,
        policy: RetryPolicy,
        stop: Stop,
    ) -> Ctx<T> {
        Ctx {
            transport,
            pacer,
            journal,
            policy,
            throttled: AtomicU64::new(0),
            stop,
            paused: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a pacing slot, or gives up when a stop is asked for.
    pub(crate) async fn acquire_or_stop(&self, api: Api) -> Option<Instant> {
        if self.stop.is_set() {
            return None;
        }
        tokio::select! {
            biased;
            () = self.stop.wait() => None,
            t = self.pacer.acquire(api) => Some(t),
        }
    }

    /// Sleeps, or gives up when a stop is asked for.
    pub(crate) async fn sleep_or_stop(&self, d: Duration) -> Option<()> {
        tokio::select! {
            biased;
            () = self.stop.wait() => None,
            () = tokio::time::sleep(d) => Some(()),
        }
    }

    /// A 429: counts it and closes the API's lane for `wait` from now. The
    /// first 429 of a pause says so in the log (how long, until when); the
    /// others of the same burst only count.
    pub(crate) fn throttle(&self, api: Api, wait: Duration) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.pacer.pause_for(api, wait);
        let now = Instant::now();
        // The wait is capped where it is parsed; a clock that cannot hold it
        // at all holds the log's bookkeeping at now.
        let until = now.checked_add(wait).unwrap_or(now);
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        // A new pause, or one this answer extends by more than a second.
        let news = paused.get(&api).is_none_or(|&p| p <= now || until > p + Duration::from_secs(1));
        if news {
            paused.insert(api, until);
            drop(paused);
            let resume = SystemTime::now().checked_add(wait).map(format_utc).unwrap_or_default();
            tracing::info!(
                api = %api,
                wait_s = wait.as_secs(),
                until = %resume,
                "429 from the service: every call to this API waits for its Retry-After"
            );
        }
    }

    /// Stops the run for a fault every later call would hit too, with
    /// `err` as the detail; logs it once.
    pub(crate) fn fail_run(&self, reason: StopReason, err: &CallError) {
        if !self.stop.is_set() {
            tracing::error!(error = %err, "stopping: no further request can succeed");
        }
        self.stop.fail(reason, err.to_string());
    }
}

/// What an error answer means, from the answer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 429: every call to the API waits this long (free: no attempt used).
    Throttled(Duration),
    /// 5xx, timeouts, connection failures: back off (at least this long,
    /// when the server said) and try again, up to the policy's attempts.
    Transient(Option<Duration>),
    /// 401: the token was refused; a fresh one may cure it (once).
    Unauthorized,
    /// No call of this run can succeed any more: stop the run.
    Fatal(StopReason),
    /// The answer stands: no retry changes it.
    Final,
}

/// Gets the first token before anything is sent. A failure that may pass
/// is retried with the policy's back-off, each wait raced with the stop: a
/// managed identity endpoint still starting (IMDS answers 404 or 410 for a
/// while after a VM boots) or throttled (429), a login endpoint failing
/// (5xx), a token command that timed out. Anything else fails at once.
pub(crate) async fn first_token<T: Transport>(
    transport: &T,
    policy: &RetryPolicy,
    stop: &Stop,
) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match transport.authenticate().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && attempt + 1 < policy.max_attempts => {
                attempt += 1;
                let wait = policy.backoff(attempt, None);
                tracing::warn!(
                    error.code = e.code(),
                    "no token yet ({e}); trying again in {} ms",
                    wait.as_millis()
                );
                tokio::select! {
                    biased;
                    () = stop.wait() => return Err(format!("{e} (stopped before trying again)")),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Classifies an error answer.
pub(crate) fn verdict(err: &CallError) -> Verdict {
    match err {
        CallError::Throttled { retry_after, .. } => Verdict::Throttled(throttle_wait(*retry_after)),
        CallError::Unauthorized { .. } => Verdict::Unauthorized,
        // The certificate is not trusted, TLS cannot be negotiated, the
        // name does not resolve (the API's or the login endpoint's host):
        // every call would fail the same way.
        CallError::Transport { kind, .. } if kind.is_configuration() => {
            Verdict::Fatal(StopReason::Connection)
        }
        CallError::Auth(AuthError::Unreachable { kind, .. }) if kind.is_configuration() => {
            Verdict::Fatal(StopReason::Connection)
        }
        // No token could be had, and trying again will not change that.
        CallError::Auth(e) if e.is_fatal_for_run() => Verdict::Fatal(StopReason::AuthLost),
        e if e.is_transient() => Verdict::Transient(e.retry_after()),
        _ => Verdict::Final,
    }
}

/// How long a 429 holds its API: the server's Retry-After (at least 1 s),
/// or [`DEFAULT_RETRY_AFTER`] when it gave none.
pub(crate) fn throttle_wait(retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(DEFAULT_RETRY_AFTER).max(Duration::from_secs(1))
}

/// What one call has used up of its retries.
#[derive(Debug, Default)]
pub(crate) struct RetryState {
    /// Transient failures so far.
    pub(crate) transient: u32,
    /// Whether the one fresh token after a 401 was used.
    reauthed: bool,
}

/// The next step of a call after an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait for the API's lane to open again (a 429), then try again.
    Throttled(Duration),
    /// Sleep this long, then try again.
    Backoff(Duration),
    /// Try again at once (the client dropped the refused token: the next
    /// attempt fetches a fresh one).
    Reauth,
    /// Stop the run: no call can succeed.
    Fatal(StopReason),
    /// Give up: the error is the call's answer (final, or retries used up).
    GiveUp,
}

impl RetryState {
    /// Turns `err` into the next step, using up an attempt where it costs one.
    pub(crate) fn next(&mut self, err: &CallError, policy: &RetryPolicy) -> Step {
        match verdict(err) {
            Verdict::Throttled(wait) => Step::Throttled(wait),
            Verdict::Unauthorized if !self.reauthed => {
                self.reauthed = true;
                Step::Reauth
            }
            // A fresh token was refused too: the credentials no longer work.
            Verdict::Unauthorized => Step::Fatal(StopReason::AuthLost),
            Verdict::Fatal(reason) => Step::Fatal(reason),
            Verdict::Transient(asked) => {
                self.transient += 1;
                if self.transient >= policy.max_attempts {
                    Step::GiveUp
                } else {
                    Step::Backoff(policy.backoff(self.transient, asked))
                }
            }
            Verdict::Final => Step::GiveUp,
        }
    }
}

/// How a call ended without an answer its caller can use.
#[derive(Debug)]
pub(crate) enum Ended {
    /// A stop came while the call waited: nothing more was sent.
    Stopped,
    /// A fault no call can survive: the run is stopping (see [`Stop`]).
    Fatal(CallError),
    /// The error is the call's answer: final, or its retries used up.
    GaveUp(CallError),
}

impl Ended {
    /// The error to hand on ([`CallError::Stopped`] for a stop).
    pub(crate) fn into_error(self) -> CallError {
        match self {
            Ended::Stopped => CallError::Stopped,
            Ended::Fatal(e) | Ended::GaveUp(e) => e,
        }
    }
}

/// The one retry loop's state, for one call: every caller — reads, pages,
/// action POSTs, cancels — runs the same three steps per attempt:
///
/// ```text
/// loop {
///     let started = attempts.turn().await?;   // the pacer's slot, raced with the stop
///     let answer = send().await;
///     attempts.answered(started);             // frees the slot a window after now
///     match answer { Ok(v) => return v, Err(e) => attempts.after(e).await? }
/// }
/// ```
///
/// [`Attempts::after`] is where every error answer is decided and waited
/// out; a caller only adds what its own answers mean (an unanswered POST is
/// looked up before it is sent again, a refused cancel is looked up too).
pub(crate) struct Attempts<'c, T> {
    ctx: &'c Ctx<T>,
    api: Api,
    state: RetryState,
}

impl<'c, T> Attempts<'c, T> {
    /// A call to `api` through `ctx`, nothing used up yet.
    pub(crate) fn new(ctx: &'c Ctx<T>, api: Api) -> Attempts<'c, T> {
        Attempts { ctx, api, state: RetryState::default() }
    }

    /// Waits for the next attempt's turn under the quota.
    pub(crate) async fn turn(&self) -> Result<Instant, Ended> {
        self.ctx.acquire_or_stop(self.api).await.ok_or(Ended::Stopped)
    }

    /// The attempt that started at `started` got its answer now.
    pub(crate) fn answered(&self, started: Instant) {
        self.ctx.pacer.finished(self.api, started);
    }

    /// Decides on an error answer and waits what it asks (a 429's
    /// Retry-After closes the API's lane; a transient error backs off);
    /// `Ok` means try again.
    pub(crate) async fn after(&mut self, err: CallError) -> Result<(), Ended> {
        match self.state.next(&err, &self.ctx.policy) {
            Step::Throttled(wait) => self.ctx.throttle(self.api, wait),
            // The client already dropped the refused token; the next
            // attempt fetches a fresh one.
            Step::Reauth => {}
            Step::Backoff(wait) => {
                tracing::debug!(
                    api = %self.api,
                    failures = self.state.transient,
                    wait_ms = wait.as_millis() as u64,
                    "transient error, backing off"
                );
                self.ctx.sleep_or_stop(wait).await.ok_or(Ended::Stopped)?;
            }
            Step::Fatal(reason) => {
                self.ctx.fail_run(reason, &err);
                return Err(Ended::Fatal(err));
            }
            Step::GiveUp => return Err(Ended::GaveUp(err)),
        }
        Ok(())
    }

    /// An attempt went unanswered (it may have reached the service): counts
    /// it as a transient failure and waits its backoff, giving a request
    /// still being processed time to land before the caller looks it up.
    /// `Ok(true)` while the policy allows another attempt.
    pub(crate) async fn unanswered(&mut self) -> Result<bool, Ended> {
        self.state.transient += 1;
        let wait = self.ctx.policy.backoff(self.state.transient, None);
        self.ctx.sleep_or_stop(wait).await.ok_or(Ended::Stopped)?;
        Ok(self.state.transient < self.ctx.policy.max_attempts)
    }
}

/// Makes one read call through the pacer to its end: 429s wait for their
/// Retry-After (free), a 401 fetches a fresh token once, transient errors
/// back off up to the policy's attempts. Reads are safe to repeat, so an
/// unanswered one is simply sent again. A stop ends every wait at once
/// ([`CallError::Stopped`]); a fault that no call can survive stops the run.
pub async fn read<T, R, F, Fut>(ctx: &Ctx<T>, api: Api, mut call: F) -> Result<R, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Reply<R>, CallError>>,
{
    let mut attempts = Attempts::new(ctx, api);
    loop {
        let started = attempts.turn().await.map_err(Ended::into_error)?;
        let answer = call().await;
        attempts.answered(started);
        match answer {
            Ok(reply) => return Ok(reply.value),
            Err(e) => attempts.after(e).await.map_err(Ended::into_error)?,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine in paused time: a stop ends every kind of wait at once.

    use super::*;
    use crate::pace::Limit;

    /// An identity endpoint still starting, throttled, then failing:
    /// IMDS's answers the documentation says to retry.
    fn starting(status: u16) -> AuthError {
        AuthError::Identity {
            url: "http://127.0.0.1:1/metadata/identity/oauth2/token".into(),
            status,
            error: format!("http_{status}"),
            description: "not yet".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_is_retried_while_the_endpoint_starts_and_the_wait_is_stoppable() {
        use crate::run::transport::scripted::Scripted;
        let policy = RetryPolicy::default();
        let stop = Stop::new();
        let t = Scripted::new().failing_auth([starting(410), starting(404), starting(429)]);
        first_token(&t, &policy, &stop).await.unwrap();
        assert_eq!(t.count("authenticate"), 4);

        // What will not pass fails at once.
        let t = Scripted::new().failing_auth([starting(400)]);
        let err = first_token(&t, &policy, &stop).await.unwrap_err();
        assert!(err.contains("HTTP 400"), "{err}");
        assert_eq!(t.count("authenticate"), 1);

        // Attempts are bounded by the policy.
        let t = Scripted::new().failing_auth((0..20).map(|_| starting(503)));
        assert!(first_token(&t, &policy, &stop).await.is_err());
        assert_eq!(t.count("authenticate"), u64::from(policy.max_attempts));

        // A stop ends the wait between two attempts.
        let t = Scripted::new().failing_auth((0..20).map(|_| starting(500)));
        let stopper = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                stop.trigger(StopReason::Interrupted);
            })
        };
        let err = first_token(&t, &policy, &stop).await.unwrap_err();
        stopper.await.unwrap();
        assert!(err.contains("stopped"), "{err}");
        assert_eq!(t.count("authenticate"), 1);
    }

    fn ctx(limits: &[Limit]) -> Ctx<()> {
        Ctx::new(
            Arc::new(()),
            Arc::new(Pacer::new(limits, Some(Duration::ZERO))),
            None,
            RetryPolicy::default(),
            Stop::new(),
        )
    }

    /// Runs `read` with answers from `answers` (then `Ok`) while a stop
    /// comes after `stop_after`; returns the result, the calls made and how
    /// long the read took.
    async fn read_with_stop(
        ctx: &Ctx<()>,
        answers: Vec<CallError>,
        stop_after: Duration,
    ) -> (Result<u32, CallError>, usize, Duration) {
        let answers = Mutex::new(answers.into_iter());
        let calls = AtomicU64::new(0);
        let stop = ctx.stop.clone();
        let began = Instant::now();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(stop_after).await;
            stop.trigger(StopReason::Interrupted);
        });
        let result = read(ctx, Api::ListMachines, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = answers.lock().unwrap().next();
            async move {
                match next {
                    Some(e) => Err(e),
                    None => Ok(Reply { status: 200, value: 7u32 }),
                }
            }
        })
        .await;
        stopper.abort();
        (result, calls.load(Ordering::SeqCst) as usize, began.elapsed())
    }

    fn throttled(secs: u64) -> CallError {
        CallError::Throttled { retry_after: Some(Duration::from_secs(secs)), error: None }
    }

    fn unavailable() -> CallError {
        CallError::Api { status: 503, error: None, retry_after: Some(Duration::from_secs(600)) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_pacer_wait() {
        let ctx = ctx(&[Limit::new(1, Duration::from_secs(3600)).unwrap()]);
        let (first, _, _) = read_with_stop(&ctx, vec![], Duration::from_secs(7200)).await;
        assert!(matches!(first, Ok(7)));
        // The next slot is an hour away; the stop comes after a second.
        let (second, calls, took) = read_with_stop(&ctx, vec![], Duration::from_secs(1)).await;
        assert!(matches!(second, Err(CallError::Stopped)), "{second:?}");
        assert_eq!(calls, 0);
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_retry_after_pause() {
        let ctx = ctx(&[Limit::new(100, Duration::from_secs(60)).unwrap()]);
        let (result, calls, took) =
            read_with_stop(&ctx, vec![throttled(3600)], Duration::from_secs(1)).await;
        assert!(matches!(result, Err(CallError::Stopped)), "{result:?}");
        assert_eq!((calls, ctx.throttled.load(Ordering::Relaxed)), (1, 1));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_backoff() {
        let ctx = ctx(&[]);
        let (result, calls, took) =
            read_with_stop(&ctx, vec![unavailable()], Duration::from_secs(1)).await;
        assert!(matches!(result, Err(CallError::Stopped)), "{result:?}");
        assert_eq!(calls, 1);
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stop_the_read_waits_and_succeeds() {
        let ctx = ctx(&[]);
        let (result, calls, took) =
            read_with_stop(&ctx, vec![throttled(30), unavailable()], Duration::from_secs(86400))
                .await;
        assert!(matches!(result, Ok(7)), "{result:?}");
        assert_eq!(calls, 3);
        assert!(took >= Duration::from_secs(630), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_refused_twice_stops_the_run() {
        let ctx = ctx(&[]);
        let refused = || CallError::Unauthorized { error: None };
        let (result, calls, _) =
            read_with_stop(&ctx, vec![refused(), refused()], Duration::from_secs(86400)).await;
        assert!(matches!(result, Err(CallError::Unauthorized { .. })), "{result:?}");
        assert_eq!(calls, 2);
        assert_eq!(ctx.stop.reason(), Some(StopReason::AuthLost));
    }

    #[test]
    fn retries_are_counted_apart_from_what_an_answer_means() {
        let policy = RetryPolicy { max_attempts: 2, ..RetryPolicy::default() };
        let mut state = RetryState::default();
        assert_eq!(state.next(&throttled(5), &policy), Step::Throttled(Duration::from_secs(5)));
        assert!(matches!(state.next(&unavailable(), &policy), Step::Backoff(_)));
        assert_eq!(state.next(&unavailable(), &policy), Step::GiveUp);
        let not_found = CallError::Api { status: 404, error: None, retry_after: None };
        assert_eq!(RetryState::default().next(&not_found, &policy), Step::GiveUp);
    }
}
