//! One row's journey: pace, send, classify the answer, retry as the policy
//! says, and settle on a [`ResultRow`].
//!
//! The policy (issue 3, "Retries"):
//! - 429: close the API's gate until Retry-After (seconds or HTTP-date; none
//!   → 60 s) and try again; this burns no error attempt.
//! - 500/502/503/504, timeouts, connection errors: exponential backoff with
//!   full jitter (at least any Retry-After), up to `max_attempts`, then `error`.
//! - 401: fetch a fresh token once and try again.
//! - A request that may have reached the server without an answer (timeout,
//!   connection dropped after sending) is *in doubt*: before sending again,
//!   look the action up; if the server has it, that is the row's answer.
//! - Other 4xx are final: `not_found`, `already_pending`, `rejected`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::journal::Journal;
use super::stop::Stop;
use super::transport::Transport;
use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError, ListQuery};
use crate::api::model::MachineAction;
use crate::api::route::Api;
use crate::api::time::{format_utc, parse_utc};
use crate::output::{ResultRow, Status};
use crate::pace::Pacer;

/// Retry-After assumed when a 429 carries none.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How far apart our clock and the server's may be when matching an action
/// the server created against the time we sent the request.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

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

/// A row ready to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// Input line, the row's identity in results and journal.
    pub line: u64,
    /// The target machine id (lowercase).
    pub machine_id: String,
    /// The action.
    pub action: ActionKind,
    /// The request body.
    pub body: ActionBody,
}

/// Shared context of the workers.
pub struct Ctx<T> {
    /// The API.
    pub transport: Arc<T>,
    /// Paces every call.
    pub pacer: Arc<Pacer>,
    /// Records intents and outcomes durably.
    pub journal: Option<Arc<Journal>>,
    /// Retry knobs.
    pub policy: RetryPolicy,
    /// Counts 429s seen, for the summary.
    pub throttled: std::sync::atomic::AtomicU64,
    /// Asked to stop: rows still waiting for their turn give up unsent.
    pub stop: Stop,
}

impl<T> Ctx<T> {
    /// Waits for a pacing slot, or gives up when a stop is asked for.
    async fn acquire_or_stop(&self, api: Api) -> Option<Instant> {
        tokio::select! {
            biased;
            () = self.stop.wait() => None,
            t = self.pacer.acquire(api) => Some(t),
        }
    }

    /// Sleeps, or gives up when a stop is asked for.
    async fn sleep_or_stop(&self, d: Duration) -> Option<()> {
        tokio::select! {
            biased;
            () = self.stop.wait() => None,
            () = tokio::time::sleep(d) => Some(()),
        }
    }
}

/// Classified answer of one attempt.
enum Next {
    /// The row is settled.
    Done(ResultRow),
    /// Try again after this delay (transient error; burns an attempt).
    Backoff(Option<Duration>),
    /// Try again when the gate opens, this long from now (429; free).
    Throttled(Duration),
    /// Fetch a token and try again (401; once).
    Reauth,
    /// The request may have been processed: look before sending again.
    InDoubt,
}

/// Sends one row and returns its result. Never panics, never loses the row:
/// `None` only when a stop came while the row waited for its turn or a
/// retry (its journal then shows whether anything was sent).
pub async fn execute<T: Transport>(ctx: &Ctx<T>, job: &Job) -> Option<ResultRow> {
    let api = Api::Action(job.action);
    let mut row = ResultRow {
        line: job.line,
        machine_id: job.machine_id.clone(),
        action: job.action.cli_name().to_string(),
        ..ResultRow::default()
    };
    let mut transient_failures = 0u32;
    let mut reauthed = false;
    // Earliest send time of this row: the window in which an in-doubt
    // request could have created an action.
    let mut first_sent: Option<SystemTime> = None;
    loop {
        ctx.acquire_or_stop(api).await?;
        let sent_at = SystemTime::now();
        if let Some(j) = &ctx.journal {
            // The intent is durable before the request leaves.
            j.intent(job.line, &job.machine_id, job.action, sent_at).await;
        }
        first_sent.get_or_insert(sent_at);
        if row.requested_at.is_empty() {
            row.requested_at = format_utc(sent_at);
        }
        row.attempts += 1;
        let result = ctx.transport.submit(&job.machine_id, job.action, &job.body).await;
        let next = classify(&mut row, result, sent_at, &mut reauthed);
        match next {
            Next::Done(r) => return Some(finish(r)),
            Next::Throttled(wait) => {
                ctx.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.pacer.pause(api, Instant::now() + wait);
                tracing::info!(line = job.line, api = %api, wait_s = wait.as_secs(), "429: pausing this API");
            }
            // The client already dropped the rejected token; the next
            // attempt fetches a fresh one.
            Next::Reauth => {}
            Next::Backoff(server_asked) => {
                transient_failures += 1;
                if transient_failures >= ctx.policy.max_attempts {
                    row.status = Some(Status::Error);
                    return Some(finish(row));
                }
                let wait = ctx.policy.backoff(transient_failures, server_asked);
                tracing::debug!(
                    line = job.line,
                    attempt = row.attempts,
                    wait_ms = wait.as_millis() as u64,
                    "transient error, backing off"
                );
                ctx.sleep_or_stop(wait).await?;
            }
            Next::InDoubt => {
                transient_failures += 1;
                let since = first_sent.unwrap_or(sent_at);
                match reconcile_one(ctx, job, since).await {
                    Ok(Some(found)) => {
                        record_action(&mut row, &found);
                        row.status = Some(Status::Submitted);
                        row.error_code.clear();
                        row.error_message.clear();
                        return Some(finish(row));
                    }
                    Ok(None) if transient_failures < ctx.policy.max_attempts => {
                        // The server never got it: sending again is safe.
                        let wait = ctx.policy.backoff(transient_failures, None);
                        ctx.sleep_or_stop(wait).await?;
                    }
                    Ok(None) => {
                        row.status = Some(Status::Error);
                        return Some(finish(row));
                    }
                    Err(e) => {
                        row.status = Some(Status::InDoubt);
                        row.error_message = format!(
                            "{}; looking the action up failed too ({e}); check the device before sending again",
                            row.error_message
                        );
                        return Some(finish(row));
                    }
                }
            }
        }
    }
}

/// Stamps the row as finished now.
fn finish(mut row: ResultRow) -> ResultRow {
    row.finished_at = format_utc(SystemTime::now());
    row
}

/// How long a 429 holds its API: the server's Retry-After (at least 1 s),
/// or [`DEFAULT_RETRY_AFTER`] when it gave none.
fn throttle_wait(retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or(DEFAULT_RETRY_AFTER).max(Duration::from_secs(1))
}

/// Copies a MachineAction's identity into the row.
fn record_action(row: &mut ResultRow, action: &MachineAction) {
    row.action_id = action.id.clone();
    row.action_status = action.status.clone();
}

/// Turns one attempt's outcome into the next step, filling the row's
/// answer fields.
fn classify(
    row: &mut ResultRow,
    result: Result<crate::api::client::Reply<MachineAction>, CallError>,
    sent_at: SystemTime,
    reauthed: &mut bool,
) -> Next {
    match result {
        Ok(reply) => {
            row.http_status = Some(reply.status);
            row.error_code.clear();
            row.error_message.clear();
            record_action(row, &reply.value);
            // The API may hand back the action already pending instead of a 400.
            let created = reply.value.creation_date_time_utc.as_deref().and_then(parse_utc);
            let predates = created.is_some_and(|c| c + CLOCK_SKEW < sent_at);
            row.status = Some(if predates { Status::AlreadyPending } else { Status::Submitted });
            Next::Done(row.clone())
        }
        Err(err) => {
            row.http_status = err.http_status();
            row.error_code = err.code().to_string();
            row.error_message = err.to_string();
            match err {
                CallError::Throttled { retry_after, .. } => {
                    Next::Throttled(throttle_wait(retry_after))
                }
                CallError::Unauthorized { .. } if !*reauthed => {
                    *reauthed = true;
                    Next::Reauth
                }
                CallError::Unauthorized { .. } => {
                    row.status = Some(Status::Rejected);
                    Next::Done(row.clone())
                }
                CallError::Api { status: 404, .. } => {
                    row.status = Some(Status::NotFound);
                    Next::Done(row.clone())
                }
                CallError::Api { status: 400, ref error, .. }
                    if error.as_ref().is_some_and(|e| e.code == "ActiveRequestAlreadyExists") =>
                {
                    row.status = Some(Status::AlreadyPending);
                    row.error_code.clear();
                    row.error_message =
                        "the same action is already pending on this device".to_string();
                    Next::Done(row.clone())
                }
                CallError::Api { status: 500 | 502 | 503 | 504, retry_after, .. } => {
                    Next::Backoff(retry_after)
                }
                CallError::Api { .. } | CallError::Decode { .. } => {
                    row.status = Some(Status::Rejected);
                    Next::Done(row.clone())
                }
                CallError::Transport { maybe_delivered: true, .. } => Next::InDoubt,
                CallError::Transport { maybe_delivered: false, .. } => Next::Backoff(None),
                CallError::Auth(ref e) if e.is_transient() => Next::Backoff(None),
                CallError::Auth(_) => {
                    row.status = Some(Status::Rejected);
                    Next::Done(row.clone())
                }
            }
        }
    }
}

/// Looks for an action the server created for this row since `since`
/// (one paced `GET machineactions` call).
async fn reconcile_one<T: Transport>(
    ctx: &Ctx<T>,
    job: &Job,
    since: SystemTime,
) -> Result<Option<MachineAction>, CallError> {
    let found = lookup_actions(ctx, job.action, &[job.machine_id.as_str()], since).await?;
    Ok(pick_match(&found, &job.machine_id, Some(&job.body.comment)))
}

/// Picks the action that most likely answers our request: same machine,
/// the same comment preferred (when known), newest first.
pub fn pick_match<'a>(
    actions: &'a [MachineAction],
    machine_id: &str,
    comment: Option<&str>,
) -> Option<MachineAction> {
    let mut candidates: Vec<&'a MachineAction> =
        actions.iter().filter(|a| a.machine_id.eq_ignore_ascii_case(machine_id)).collect();
    candidates.sort_by(|a, b| b.creation_date_time_utc.cmp(&a.creation_date_time_utc));
    candidates
        .iter()
        .find(|a| comment.is_some() && a.requestor_comment.as_deref() == comment)
        .or(candidates.first())
        .map(|a| (*a).clone())
}

/// Lists actions of one type created since `since − skew` on the given
/// machines, paging as needed; every page goes through the pacer and is
/// retried on 429 and transient errors.
pub async fn lookup_actions<T: Transport>(
    ctx: &Ctx<T>,
    action: ActionKind,
    machine_ids: &[&str],
    since: SystemTime,
) -> Result<Vec<MachineAction>, CallError> {
    let after = since.checked_sub(CLOCK_SKEW).unwrap_or(since);
    let mut filter = format!(
        "type eq '{}' and creationDateTimeUtc ge {}",
        action.type_name(),
        format_utc(after)
    );
    if !machine_ids.is_empty() {
        let ors: Vec<String> = machine_ids.iter().map(|m| format!("machineId eq '{m}'")).collect();
        filter = format!("{filter} and ({})", ors.join(" or "));
    }
    list_all_actions(ctx, &filter).await
}

/// Page size for list calls: the API's maximum.
pub const PAGE: u32 = 10_000;

/// Runs a `GET machineactions` filter to the last page: pages of `$top`
/// 10,000, and on while a page is full or carries `@odata.nextLink`.
pub async fn list_all_actions<T: Transport>(
    ctx: &Ctx<T>,
    filter: &str,
) -> Result<Vec<MachineAction>, CallError> {
    let mut all = Vec::new();
    let mut skip = 0u32;
    loop {
        let query =
            ListQuery { filter: Some(filter.to_string()), top: Some(PAGE), skip: Some(skip) };
        let page = paced_call(ctx, Api::ListActions, || ctx.transport.list_actions(&query)).await?;
        let n = page.value.len() as u32;
        // A service that pages below `$top` says so with a next link.
        let more = n == PAGE || (n > 0 && page.next_link.is_some());
        all.extend(page.value);
        if !more {
            return Ok(all);
        }
        skip += n;
    }
}

/// Makes one read call through the pacer, retrying 429s (free), 401 (once)
/// and transient errors (up to the policy's attempts). Reads are safe to
/// repeat, so an unanswered one is simply sent again.
pub async fn paced_call<T, R, F, Fut>(ctx: &Ctx<T>, api: Api, mut call: F) -> Result<R, CallError>
where
    T: Transport,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<crate::api::client::Reply<R>, CallError>>,
{
    let mut failures = 0u32;
    let mut reauthed = false;
    loop {
        ctx.pacer.acquire(api).await;
        match call().await {
            Ok(reply) => return Ok(reply.value),
            Err(CallError::Throttled { retry_after, .. }) => {
                ctx.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.pacer.pause(api, Instant::now() + throttle_wait(retry_after));
            }
            Err(CallError::Unauthorized { .. }) if !reauthed => reauthed = true,
            Err(e) if e.is_transient() => {
                failures += 1;
                if failures >= ctx.policy.max_attempts {
                    return Err(e);
                }
                let asked = match &e {
                    CallError::Api { retry_after, .. } => *retry_after,
                    _ => None,
                };
                tokio::time::sleep(ctx.policy.backoff(failures, asked)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
