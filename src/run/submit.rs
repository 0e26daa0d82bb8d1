//! One row's journey: pace, record the intent, send, classify the answer,
//! retry as the call engine ([`super::call`]) says, and settle on a
//! [`ResultRow`].
//!
//! The policy:
//! - 429: close the API's gate until Retry-After (seconds or HTTP-date; none
//!   → 60 s) and try again; this burns no error attempt.
//! - 500/502/503/504, timeouts, connection errors: exponential backoff with
//!   full jitter (at least any Retry-After), up to `max_attempts`, then `error`.
//! - 401: fetch a fresh token once and try again; refused again (or no token
//!   to be had), the credentials no longer work: the run stops, and the row
//!   stays unsent (a 401 did nothing to the device).
//! - A request that may have reached the server without an answer (timeout,
//!   connection dropped after sending) is *in doubt*: before sending again,
//!   look the action up; if the server has it, that is the row's answer.
//! - Other 4xx are final: `not_found`, `already_pending`, `rejected`.

use std::time::{Duration, SystemTime};

use super::call::{Attempts, Ctx, Ended, read};
use super::transport::Transport;
use crate::api::action::ActionKind;
use crate::api::client::{ActionBody, CallError};
use crate::api::model::{MachineAction, ODataList};
use crate::api::odata::{ListQuery, any_of};
use crate::api::route::Api;
use crate::api::time::{format_utc, parse_utc};
use crate::results::{ResultRow, Status, Timestamp};

/// How far apart our clock and the server's may be when matching an action
/// the server created against the time we sent the request.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// A row ready to send.
#[derive(Debug, Clone)]
pub struct Job {
    /// What the row is ([`super::identity::RowKey`]): its key in the journal.
    pub key: String,
    /// Input line, for the results and the log.
    pub line: u64,
    /// The target machine id (lowercase).
    pub machine_id: String,
    /// The machine's name as far as the run knows it (looked up, or as the
    /// row gave it; empty when unknown): the row's `device_name` until an
    /// answer names the machine.
    pub device_name: String,
    /// The action.
    pub action: ActionKind,
    /// The request body.
    pub body: ActionBody,
}

/// Classified answer of one attempt.
enum Next {
    /// The row is settled.
    Done(ResultRow),
    /// The request may have been processed: look before sending again.
    InDoubt,
    /// Any other error: the call engine decides ([`Attempts::after`]).
    Engine(CallError),
}

/// Sends one row and returns its result. Never panics, never loses the row:
/// `None` only when the row was not sent — a stop came while it waited for
/// its turn or a retry, the journal could not record its intent, or the
/// credentials stopped working (its journal then shows whether anything was
/// sent, and `--resume` looks before sending again).
pub async fn execute<T: Transport>(ctx: &Ctx<T>, job: &Job) -> Option<ResultRow> {
    let api = Api::Action(job.action);
    let mut row = ResultRow::new(job.line, job.machine_id.clone(), job.action.cli_name());
    row.device_name.clone_from(&job.device_name);
    let mut attempts = Attempts::new(ctx, api);
    // Earliest send time of this row: the window in which an in-doubt
    // request could have created an action.
    let mut first_sent: Option<SystemTime> = None;
    loop {
        let started = attempts.turn().await.ok()?;
        let sent_at = SystemTime::now();
        let stamp = Timestamp::from(sent_at);
        if let Some(j) = &ctx.journal {
            // The journal is the gate: no request leaves whose intent is
            // not in the file.
            if let Err(e) = j.intent(&job.key, job.line, &job.machine_id, job.action, stamp).await {
                attempts.answered(started);
                ctx.stop.fail(super::StopReason::Storage, e.to_string());
                return None;
            }
        }
        first_sent.get_or_insert(sent_at);
        row.requested_at.get_or_insert(stamp);
        row.attempts += 1;
        let result = ctx.transport.submit(&job.machine_id, job.action, &job.body).await;
        attempts.answered(started);
        let err = match classify(&mut row, result, sent_at) {
            Next::Done(r) => return Some(finish(r)),
            Next::Engine(err) => err,
            Next::InDoubt => {
                let may_retry = attempts.unanswered().await.ok()?;
                let since = first_sent.unwrap_or(sent_at);
                match reconcile_one(ctx, job, since).await {
                    Ok(Some(found)) => {
                        record_action(&mut row, &found);
                        row.status = Some(Status::Submitted);
                        row.error_code.clear();
                        row.error_message.clear();
                        return Some(finish(row));
                    }
                    // The server never got it: sending again is safe.
                    Ok(None) if may_retry => continue,
                    Ok(None) => {
                        row.status = Some(Status::Error);
                        return Some(finish(row));
                    }
                    // A journal's in-doubt row is looked up again on
                    // resume, so a stop cutting the look-up short loses nothing.
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
        };
        match attempts.after(err).await {
            Ok(()) => {}
            // Stopped while waiting, or the server refused the request (or
            // no request could be made) for a fault that stops the run:
            // nothing happened to the device, and the row is not sent.
            Err(Ended::Stopped | Ended::Fatal(_)) => return None,
            Err(Ended::GaveUp(err)) => {
                row.status = Some(final_status(&err));
                return Some(finish(row));
            }
        }
    }
}

/// The status of a row whose last answer was `err` and no retry is left
/// (an action POST, or `undo`'s cancel).
pub(crate) fn final_status(err: &CallError) -> Status {
    match err {
        CallError::Api { status: 404, .. } => Status::NotFound,
        e if e.is_transient() => Status::Error,
        _ => Status::Rejected,
    }
}

/// Stamps the row as finished now.
fn finish(row: ResultRow) -> ResultRow {
    row.finished_now()
}

/// Copies a MachineAction's identity into the row, and the name the API
/// gives its machine: the authority on `device_name`.
pub(crate) fn record_action(row: &mut ResultRow, action: &MachineAction) {
    row.action_id = action.id.clone();
    row.action_status = action.status.clone();
    if let Some(name) = action.computer_dns_name.as_deref().filter(|n| !n.is_empty()) {
        row.device_name = name.to_string();
    }
}

/// Turns one attempt's outcome into the next step, filling the row's
/// answer fields; what is not the row's own final answer (or an unanswered
/// request) goes to the call engine.
fn classify(
    row: &mut ResultRow,
    result: Result<crate::api::client::Reply<MachineAction>, CallError>,
    sent_at: SystemTime,
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
                CallError::Api { status: 400, ref error, .. }
                    if error.as_ref().is_some_and(|e| e.code == "ActiveRequestAlreadyExists") =>
                {
                    row.status = Some(Status::AlreadyPending);
                    row.error_code.clear();
                    row.error_message =
                        "the same action is already pending on this device".to_string();
                    Next::Done(row.clone())
                }
                CallError::Transport { maybe_delivered: true, .. } => Next::InDoubt,
                other => Next::Engine(other),
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
        filter = format!("{filter} and ({})", any_of("machineId", machine_ids));
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
        let query = ListQuery {
            filter: Some(filter.to_string()),
            top: Some(PAGE),
            skip: (skip > 0).then_some(skip),
        };
        let page = read(ctx, Api::ListActions, || ctx.transport.list_actions(&query)).await?;
        let next = next_skip(&page, skip);
        all.extend(page.value);
        match next {
            Some(s) => skip = s,
            None => return Ok(all),
        }
    }
}

/// The `$skip` of the page after `page`, or `None` when it was the last: a
/// full page, or a shorter one with an `@odata.nextLink` (a service that
/// pages below `$top`), has a successor.
pub fn next_skip<T>(page: &ODataList<T>, skip: u32) -> Option<u32> {
    let n = page.value.len() as u32;
    (n > 0 && (n >= PAGE || page.next_link.is_some())).then_some(skip + n)
}

#[cfg(test)]
mod tests {
    //! The retry policy in paused time, through the `Transport` seam with a
    //! scripted server: no sockets, virtual hours in milliseconds.

    use std::collections::VecDeque;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;
    use crate::api::client::{Reply, TransportKind};
    use crate::api::model::{ApiErrorBody, ODataList};
    use crate::pace::Limit;
    use crate::pace::Pacer;
    use crate::run::transport::scripted::{Scripted, page};
    use crate::run::{RetryPolicy, Stop, StopReason};

    /// What the scripted server answers to the next submit.
    enum Answer {
        Ok,
        Status(u16, &'static str, Option<u64>),
        Throttle(Option<u64>),
        Unauthorized,
        /// The connection dropped; `processed` says whether the action exists.
        Dropped {
            processed: bool,
        },
        /// A 201 whose action was created long before the request.
        OldAction,
    }

    /// What the scripted server has done: the actions it created, and how
    /// many list calls it still answers 429 (Retry-After one hour).
    #[derive(Default)]
    struct Server {
        answers: Mutex<VecDeque<Answer>>,
        created: Mutex<Vec<MachineAction>>,
        lists_throttled: AtomicU64,
    }

    fn action(created: SystemTime) -> MachineAction {
        MachineAction {
            id: crate::api::model::new_guid(),
            kind: "Isolate".into(),
            title: None,
            requestor: None,
            requestor_comment: Some("c".into()),
            status: "Pending".into(),
            machine_id: "ab".repeat(20),
            computer_dns_name: None,
            creation_date_time_utc: Some(format_utc(created)),
            last_update_date_time_utc: None,
            cancellation_requestor: None,
            cancellation_comment: None,
            cancellation_date_time_utc: None,
            error_h_result: Some(0),
            scope: None,
            external_id: None,
            request_source: None,
            related_file_info: None,
            commands: None,
            troubleshoot_info: None,
        }
    }

    /// The next scripted answer to a submit (`Ok` once the script is spent).
    fn answer(server: &Server) -> Result<Reply<MachineAction>, CallError> {
        let next = server.answers.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
        let err = |code: &str| {
            Some(ApiErrorBody { code: code.into(), message: "m".into(), target: None })
        };
        match next {
            Answer::Ok => {
                let a = action(SystemTime::now());
                server.created.lock().unwrap().push(a.clone());
                Ok(Reply { status: 201, value: a })
            }
            Answer::OldAction => Ok(Reply {
                status: 201,
                value: action(SystemTime::now() - Duration::from_secs(3600)),
            }),
            Answer::Status(status, code, retry) => Err(CallError::Api {
                status,
                error: err(code),
                retry_after: retry.map(Duration::from_secs),
            }),
            Answer::Throttle(ra) => {
                Err(CallError::Throttled { retry_after: ra.map(Duration::from_secs), error: None })
            }
            Answer::Unauthorized => Err(CallError::Unauthorized { error: None }),
            Answer::Dropped { processed } => {
                if processed {
                    server.created.lock().unwrap().push(action(SystemTime::now()));
                }
                Err(CallError::Transport {
                    kind: TransportKind::Other,
                    maybe_delivered: true,
                    message: "connection closed".into(),
                })
            }
        }
    }

    /// The created actions as one page, unless a 429 is still scripted.
    fn list(server: &Server) -> Result<Reply<ODataList<MachineAction>>, CallError> {
        let throttled = server.lists_throttled.load(std::sync::atomic::Ordering::SeqCst);
        if throttled > 0 {
            server.lists_throttled.store(throttled - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(CallError::Throttled {
                retry_after: Some(Duration::from_secs(3600)),
                error: None,
            });
        }
        page(server.created.lock().unwrap().clone())
    }

    fn ctx_with(answers: Vec<Answer>, max_attempts: u32) -> (Ctx<Scripted>, Arc<Server>) {
        let server = Arc::new(Server { answers: Mutex::new(answers.into()), ..Server::default() });
        let (s1, s2) = (server.clone(), server.clone());
        let service =
            Scripted::new().on_submit(move |_, _| answer(&s1)).on_list_actions(move |_| list(&s2));
        let ctx = Ctx::new(
            Arc::new(service),
            Arc::new(Pacer::new(&[Limit::PER_MINUTE, Limit::PER_HOUR], Some(Duration::ZERO))),
            None,
            RetryPolicy { max_attempts, ..RetryPolicy::default() },
            Stop::new(),
        );
        (ctx, server)
    }

    fn ctx(answers: Vec<Answer>, max_attempts: u32) -> Ctx<Scripted> {
        ctx_with(answers, max_attempts).0
    }

    fn job() -> Job {
        Job {
            key: format!("isolate|id:{}|||", "ab".repeat(20)),
            line: 2,
            machine_id: "ab".repeat(20),
            device_name: String::new(),
            action: ActionKind::Isolate,
            body: ActionBody {
                comment: "c".into(),
                isolation_type: None,
                sha1: None,
                scan_type: None,
            },
        }
    }

    fn submits(ctx: &Ctx<Scripted>) -> u64 {
        ctx.transport.count("submit")
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_retry_after_without_burning_an_attempt() {
        let ctx = ctx(vec![Answer::Throttle(Some(2700)), Answer::Throttle(None), Answer::Ok], 1);
        let t0 = Instant::now();
        let row = execute(&ctx, &job()).await.unwrap();
        assert_eq!(row.status, Some(Status::Submitted));
        assert_eq!(row.attempts, 3);
        // 45 minutes for the first Retry-After, 60 s default for the second.
        assert_eq!(Instant::now() - t0, Duration::from_secs(2700 + 60));
        assert_eq!(ctx.throttled.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_back_off_then_give_up_as_error() {
        let ctx1 = ctx(
            vec![
                Answer::Status(503, "ServiceUnavailable", Some(5)),
                Answer::Status(500, "InternalServerError", None),
                Answer::Ok,
            ],
            5,
        );
        let t0 = Instant::now();
        let row = execute(&ctx1, &job()).await.unwrap();
        assert_eq!(row.status, Some(Status::Submitted));
        assert!(Instant::now() - t0 >= Duration::from_secs(5), "the 503's Retry-After is a floor");
        let ctx2 = ctx((0..10).map(|_| Answer::Status(502, "BadGateway", None)).collect(), 4);
        let row = execute(&ctx2, &job()).await.unwrap();
        assert_eq!(row.status, Some(Status::Error));
        assert_eq!(row.attempts, 4);
        assert_eq!(row.http_status, Some(502));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_request_is_looked_up_not_resent() {
        let ctx1 = ctx(vec![Answer::Dropped { processed: true }], 5);
        let row = execute(&ctx1, &job()).await.unwrap();
        assert_eq!(row.status, Some(Status::Submitted));
        assert_eq!(submits(&ctx1), 1, "the action existed: no second POST");
        assert!(!row.action_id.is_empty());
        let ctx2 = ctx(vec![Answer::Dropped { processed: false }], 5);
        let row = execute(&ctx2, &job()).await.unwrap();
        assert_eq!(row.status, Some(Status::Submitted));
        assert_eq!(submits(&ctx2), 2, "nothing on the server: sent again");
    }

    #[tokio::test(start_paused = true)]
    async fn final_answers_and_one_token_refresh() {
        let cases = [
            (vec![Answer::Status(404, "ResourceNotFound", None)], Status::NotFound, 1),
            (
                vec![Answer::Status(400, "ActiveRequestAlreadyExists", None)],
                Status::AlreadyPending,
                1,
            ),
            (vec![Answer::Status(400, "InvalidRequestBody", None)], Status::Rejected, 1),
            (vec![Answer::Status(403, "Forbidden", None)], Status::Rejected, 1),
            (vec![Answer::OldAction], Status::AlreadyPending, 1),
            (vec![Answer::Unauthorized, Answer::Ok], Status::Submitted, 2),
        ];
        for (answers, expected, sends) in cases {
            let ctx = ctx(answers, 5);
            let row = execute(&ctx, &job()).await.unwrap();
            assert_eq!(row.status, Some(expected));
            assert_eq!(submits(&ctx), sends, "{expected}");
            assert!(!ctx.stop.is_set());
        }
    }

    /// A token refused again after a fresh one: the credentials no longer
    /// work, so the row stays unsent (never `rejected`) and the run stops.
    #[tokio::test(start_paused = true)]
    async fn a_token_refused_twice_stops_the_run_and_leaves_the_row_unsent() {
        let ctx = ctx(vec![Answer::Unauthorized, Answer::Unauthorized, Answer::Ok], 5);
        assert_eq!(execute(&ctx, &job()).await, None);
        assert_eq!(submits(&ctx), 2);
        assert_eq!(ctx.stop.reason(), Some(StopReason::AuthLost));
        // Every later row gives up before sending.
        assert_eq!(execute(&ctx, &job()).await, None);
        assert_eq!(submits(&ctx), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_abandons_a_row_waiting_for_its_turn() {
        let ctx = ctx(vec![Answer::Throttle(Some(3600))], 5);
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.trigger(StopReason::Interrupted);
        });
        assert_eq!(execute(&ctx, &job()).await, None);
        assert_eq!(submits(&ctx), 1);
    }

    /// Stops `ctx` after `after` of virtual time.
    fn stop_after(ctx: &Ctx<Scripted>, after: Duration) {
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stop.trigger(StopReason::Interrupted);
        });
    }

    /// Every wait of the POST path ends at the stop: its turn under the
    /// quota (the next slot an hour away) and a transient error's backoff.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_post_waiting_for_its_slot_or_a_backoff() {
        let ctx = ctx(vec![], 5);
        // Spend the hour's quota of isolations, so the next waits an hour.
        for _ in 0..Limit::PER_HOUR.calls {
            let _ = ctx.pacer.acquire(Api::Action(ActionKind::Isolate)).await;
        }
        stop_after(&ctx, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(execute(&ctx, &job()).await, None);
        assert!(Instant::now() - t0 < Duration::from_secs(2));
        assert_eq!(submits(&ctx), 0);

        let ctx = ctx_backoff();
        stop_after(&ctx, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(execute(&ctx, &job()).await, None);
        assert!(Instant::now() - t0 < Duration::from_secs(2));
        assert_eq!(submits(&ctx), 1, "one attempt, then the stop during its backoff");
    }

    fn ctx_backoff() -> Ctx<Scripted> {
        ctx(vec![Answer::Status(503, "ServiceUnavailable", Some(600))], 5)
    }

    /// A paged listing (the look-up of an unanswered POST, the pre-flight,
    /// `--wait`) waiting out a one-hour Retry-After ends at the stop.
    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_paged_listing_in_its_retry_after() {
        let (ctx, server) = ctx_with(vec![], 5);
        server.lists_throttled.store(1, std::sync::atomic::Ordering::SeqCst);
        stop_after(&ctx, Duration::from_secs(1));
        let t0 = Instant::now();
        let found = list_all_actions(&ctx, "type eq 'Isolate'").await;
        assert!(matches!(found, Err(CallError::Stopped)), "{found:?}");
        assert!(Instant::now() - t0 < Duration::from_secs(2));
        assert_eq!(ctx.transport.count("list_actions"), 1);
    }

    #[test]
    fn backoff_is_bounded_and_honours_the_server() {
        let p = RetryPolicy::default();
        for attempt in 1..30 {
            assert!(p.backoff(attempt, None) <= p.backoff_cap);
        }
        assert!(p.backoff(1, Some(Duration::from_secs(90))) >= Duration::from_secs(90));
    }
}
