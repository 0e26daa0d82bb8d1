//! `--tag-result`: the run's outcome written back where the portal shows
//! it, as a device tag on every device the run acted on, and taken off
//! again by `undo`.
//!
//! Tags go out with `POST machines/AddOrRemoveTagForMultipleMachines`, at
//! most [`TAG_BATCH`] machines a call, on that API's own quota lane through
//! the run's pacer and call engine ([`super::call::read`]: 429s wait for
//! their Retry-After, transient errors back off, every wait races the
//! stop). Adding a tag a machine already carries, or removing one it does
//! not, changes nothing, so a call whose answer was lost is simply sent
//! again. Each confirmed call is journaled ([`Journal::tagged`]) before the
//! next one leaves: a resumed run tags only the machines no earlier
//! invocation confirmed.

use std::collections::HashSet;

use super::call::{Ctx, read};
use super::journal::Journal;
use super::stop::StopReason;
use super::transport::Transport;
use crate::api::client::CallError;
use crate::api::route::Api;
use crate::results::{ResultRow, Status};

/// The most machines one `AddOrRemoveTagForMultipleMachines` call may name
/// ("up to 500 machines per API call").
pub const TAG_BATCH: usize = 500;

/// The longest tag the service takes: "The maximum number of characters
/// that can be set in a tag is 200" (Defender's device-tag documentation).
pub const MAX_TAG_CHARS: usize = 200;

/// Checks a `--tag-result` value before anything is sent: 1 to
/// [`MAX_TAG_CHARS`] characters, no control characters (the portal could
/// not show them, nor a terminal safely), and no space at either end (a
/// tag the portal and `findbytag` would not match as typed). The error
/// names the value, bounded and escaped.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let shown = crate::text::quote(tag);
    if tag.trim().is_empty() {
        return Err(format!("--tag-result {shown}: a tag must not be empty"));
    }
    let chars = tag.chars().count();
    if chars > MAX_TAG_CHARS {
        return Err(format!(
            "--tag-result {shown}: {chars} characters; a device tag holds at most {MAX_TAG_CHARS}"
        ));
    }
    if let Some(c) = tag.chars().find(|c| c.is_control()) {
        return Err(format!(
            "--tag-result {shown}: control character U+{:04X}; a device tag is one line of printable text",
            c as u32
        ));
    }
    if tag.trim() != tag {
        return Err(format!(
            "--tag-result {shown}: space at the start or end; the portal and findbytag would not match the tag as typed"
        ));
    }
    Ok(())
}

/// Whether a run's result row shows an action of the run itself on the
/// device, so that `--tag-result` tags it: submitted, and every later
/// state of that action (pending, in progress, succeeded, failed, timed
/// out, cancelled). Not `already_pending` (someone else's action) nor
/// `already_done` (nothing was sent), nor any row the run did not send.
pub fn acted_on(row: &ResultRow) -> bool {
    matches!(
        row.status,
        Some(
            Status::Submitted
                | Status::Pending
                | Status::InProgress
                | Status::Succeeded
                | Status::Failed
                | Status::TimedOut
                | Status::Cancelled
        )
    ) && !row.action_id.trim().is_empty()
        && !row.machine_id.trim().is_empty()
}

/// What writing (or removing) a tag came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagOutcome {
    /// Machines (lowercased) that carry the tag now (or, removing, no
    /// longer): confirmed by this invocation or an earlier one.
    pub done: HashSet<String>,
    /// Machines asked for that are not confirmed.
    pub not_done: u64,
    /// Calls made (batches sent, not counting retries).
    pub calls: u64,
    /// The first error that left machines without the tag (`None` when
    /// every batch went through, or only a stop cut the work short).
    pub error: Option<String>,
}

/// Adds (`add`) or removes `tag` on `machines` (lowercased, each once, in
/// the order they were acted on), in batches of [`TAG_BATCH`], skipping
/// those in `earlier` (confirmed by an earlier invocation). A confirmed
/// batch is journaled before the next leaves. A failed batch leaves its
/// machines untagged and the next batch is still tried; a stop ends the
/// work at once (the rest is for `--resume`).
pub async fn write_tags<T: Transport>(
    ctx: &Ctx<T>,
    tag: &str,
    add: bool,
    machines: &[String],
    earlier: &HashSet<String>,
    journal: Option<&Journal>,
) -> TagOutcome {
    let mut out = TagOutcome::default();
    let mut todo: Vec<String> = Vec::new();
    for m in machines {
        if earlier.contains(m) {
            out.done.insert(m.clone());
        } else if !todo.contains(m) && !out.done.contains(m) {
            todo.push(m.clone());
        }
    }
    if !earlier.is_empty() && out.done.len() < machines.len() {
        tracing::info!(
            earlier = out.done.len(),
            now = todo.len(),
            "--tag-result: devices an earlier invocation tagged are not tagged again"
        );
    }
    let verb = if add { "tag" } else { "untag" };
    for batch in todo.chunks(TAG_BATCH) {
        if ctx.stop.is_set() {
            out.not_done += batch.len() as u64;
            continue;
        }
        out.calls += 1;
        let answer =
            read(ctx, Api::MachinesTags, || ctx.transport.tag_machines(tag, add, batch)).await;
        match answer {
            Ok(_) => {
                out.done.extend(batch.iter().cloned());
                if let Some(j) = journal
                    && let Err(e) = j.tagged(tag, batch).await
                {
                    // The tags are on the devices; only the record of them
                    // is missing (a resume would send them again, harmlessly).
                    ctx.stop.fail(StopReason::Storage, e.to_string());
                }
                tracing::info!(machines = batch.len(), "{verb}ged {} device(s)", batch.len());
            }
            Err(CallError::Stopped) => out.not_done += batch.len() as u64,
            Err(e) => {
                tracing::warn!(
                    machines = batch.len(),
                    error.code = e.code(),
                    "could not {verb} {} device(s): {e}",
                    batch.len()
                );
                out.not_done += batch.len() as u64;
                out.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The tag batches in paused time, against the scripted service.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::api::client::Reply;
    use crate::pace::{Limit, Pacer};
    use crate::run::call::RetryPolicy;
    use crate::run::stop::Stop;
    use crate::run::transport::scripted::Scripted;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:040x}")).collect()
    }

    fn ctx(t: Scripted) -> Ctx<Scripted> {
        let limits = [Limit::new(100, Duration::from_secs(60)).unwrap()];
        Ctx::new(
            Arc::new(t),
            Arc::new(Pacer::new(&limits, Some(Duration::ZERO))),
            None,
            RetryPolicy::default(),
            Stop::new(),
        )
    }

    #[test]
    fn tag_values_are_checked_before_any_call() {
        assert!(check_tag("IR-42 isolated").is_ok());
        assert!(check_tag(&"é".repeat(MAX_TAG_CHARS)).is_ok());
        let long = check_tag(&"x".repeat(MAX_TAG_CHARS + 1)).unwrap_err();
        assert!(long.contains("201 characters"), "{long}");
        assert!(long.contains("…"), "the value is bounded: {long}");
        assert!(check_tag("  ").unwrap_err().contains("empty"));
        let ctl = check_tag("a\x1b[2Jb").unwrap_err();
        assert!(ctl.contains("U+001B") && ctl.contains("\\x1b"), "{ctl}");
        assert!(check_tag(" lead").unwrap_err().contains("start or end"));
    }

    #[tokio::test(start_paused = true)]
    async fn batches_hold_at_most_500_and_earlier_tags_are_not_sent_again() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let t = Scripted::new().on_tags(move |v, add, batch| {
            s.lock().unwrap().push((v.to_string(), add, batch.to_vec()));
            Ok(Reply { status: 200, value: serde::de::IgnoredAny })
        });
        let ctx = ctx(t);
        let machines = ids(1201);
        let earlier: HashSet<String> = machines[..300].iter().cloned().collect();
        let out = write_tags(&ctx, "IR-42", true, &machines, &earlier, None).await;
        let seen = seen.lock().unwrap();
        // 901 to send: 500 + 401.
        assert_eq!(seen.iter().map(|(_, _, b)| b.len()).collect::<Vec<_>>(), vec![500, 401]);
        assert!(seen.iter().all(|(v, add, b)| v == "IR-42" && *add && !b.contains(&machines[0])));
        assert_eq!((out.done.len(), out.not_done, out.calls), (1201, 0, 2));
        assert_eq!(out.error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_waited_out_and_a_refused_batch_leaves_the_next_one_going() {
        let calls = Arc::new(Mutex::new(0u32));
        let c = calls.clone();
        let t = Scripted::new().on_tags(move |_, _, batch| {
            let mut n = c.lock().unwrap();
            *n += 1;
            match *n {
                1 => Err(CallError::Throttled {
                    retry_after: Some(Duration::from_secs(30)),
                    error: None,
                }),
                // The second batch is refused for good.
                3 if batch.len() == 500 => {
                    Err(CallError::Api { status: 400, error: None, retry_after: None })
                }
                _ => Ok(Reply { status: 200, value: serde::de::IgnoredAny }),
            }
        });
        let ctx = ctx(t);
        let began = tokio::time::Instant::now();
        let out = write_tags(&ctx, "T", false, &ids(1100), &HashSet::new(), None).await;
        assert!(began.elapsed() >= Duration::from_secs(30), "the Retry-After was waited out");
        assert_eq!(ctx.throttled.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!((out.done.len(), out.not_done, out.calls), (600, 500, 3));
        assert!(out.error.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_leaves_the_rest_for_the_resume() {
        let t = Scripted::new().on_tags(|_, _, _| {
            Err(CallError::Throttled { retry_after: Some(Duration::from_secs(3600)), error: None })
        });
        let ctx = ctx(t);
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.trigger(StopReason::Interrupted);
        });
        let out = write_tags(&ctx, "T", true, &ids(700), &HashSet::new(), None).await;
        assert_eq!((out.done.len(), out.not_done, out.calls), (0, 700, 1));
        assert_eq!(out.error, None, "a stop is not a tagging failure");
    }
}
