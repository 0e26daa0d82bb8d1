//! Machine actions over time: what an action's status is at any instant,
//! computed from when it was created and what happened to it since, so that
//! thousands of actions cost nothing while nobody looks at them.
//!
//! Pending → InProgress at half the settle time → Succeeded (or Failed, drawn
//! at creation) at the settle time. On an offline machine the settle clock
//! does not start: the action stays Pending until the action timeout and then
//! ends TimeOut, unless the machine comes back online first, which starts the
//! settle clock then. A cancelled action is Cancelled from the cancel on.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::api::action::ActionKind;
use crate::api::model::{MachineAction, RelatedFileInfo};
use crate::api::time::format_utc;

/// `errorHResult` of a Failed action: E_FAIL, as a signed 32-bit value.
pub(crate) const FAILED_HRESULT: i64 = -2_147_467_259;

/// Seven 100 ns ticks: a new action's `lastUpdateDateTimeUtc` follows its
/// `creationDateTimeUtc` by a few ticks, as in captured replies.
const FIRST_UPDATE: Duration = Duration::from_nanos(700);

/// The simulator's clock: a monotonic origin (for quota counters) tied to
/// the wall-clock time it stood for (for timestamps in replies).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The simulator's start, on tokio's clock.
    pub(crate) origin: Instant,
    /// Wall-clock time at `origin`.
    pub(crate) wall_origin: SystemTime,
}

impl Clock {
    /// A clock starting now.
    pub(crate) fn start() -> Clock {
        Clock { origin: Instant::now(), wall_origin: SystemTime::now() }
    }

    /// Time since the start, as the offset actions record.
    pub(crate) fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }

    /// Wall-clock time of an offset, cut to whole 100 ns ticks like the
    /// timestamps in replies (so filters compare what clients see).
    pub(crate) fn tick_time(&self, offset: Duration) -> SystemTime {
        let t = self.wall_origin + offset;
        let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        std::time::UNIX_EPOCH + since - Duration::from_nanos(u64::from(since.subsec_nanos() % 100))
    }

    /// The service's timestamp text for an offset.
    pub(crate) fn stamp(&self, offset: Duration) -> String {
        format_utc(self.wall_origin + offset)
    }
}

/// The status of an action, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not started (the device has not picked it up).
    Pending,
    /// The device is working on it.
    InProgress,
    /// Done.
    Succeeded,
    /// The device reported a failure.
    Failed,
    /// The device never picked it up in time.
    TimeOut,
    /// Cancelled through the API.
    Cancelled,
}

impl Status {
    /// The `status` value in the MachineAction entity.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InProgress => "InProgress",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::TimeOut => "TimeOut",
            Status::Cancelled => "Cancelled",
        }
    }

    /// True once the status can no longer change.
    pub(crate) fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::InProgress)
    }
}

/// The timing knobs of the lifecycle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// From the start of the settle clock to the final status.
    pub(crate) settle: Duration,
    /// How long an action on an offline machine stays Pending before TimeOut.
    pub(crate) action_timeout: Duration,
}

/// A cancel request that was granted.
#[derive(Debug, Clone)]
pub(crate) struct Cancellation {
    /// When (offset from the simulator's start).
    pub(crate) at: Duration,
    /// Display name of the app that cancelled.
    pub(crate) requestor: String,
    /// The cancel request's `Comment`, when it had one.
    pub(crate) comment: Option<String>,
}

/// One action the simulator accepted.
#[derive(Debug, Clone)]
pub(crate) struct ActionRecord {
    /// Action id (lowercase GUID).
    pub(crate) id: String,
    /// What was asked.
    pub(crate) kind: ActionKind,
    /// Index of the target in the fleet.
    pub(crate) machine: usize,
    /// The target's id, as the entity reports it.
    pub(crate) machine_id: String,
    /// The target's name when the action was created.
    pub(crate) computer_dns_name: Option<String>,
    /// Display name of the requesting app.
    pub(crate) requestor: String,
    /// The request's `Comment`.
    pub(crate) comment: String,
    /// IsolationType or ScanType, when the action has one.
    pub(crate) scope: Option<String>,
    /// The Sha1 of a StopAndQuarantineFile action, as sent.
    pub sha1: Option<String>,
    /// When it was created (offset from the simulator's start).
    pub(crate) created: Duration,
    /// Whether it ends Failed instead of Succeeded (drawn at creation).
    pub(crate) fails: bool,
    /// When its settle clock started: at creation on an online machine, when
    /// the machine came back online otherwise, `None` while it is offline.
    pub(crate) settle_from: Option<Duration>,
    /// Set once cancelled.
    pub(crate) cancel: Option<Cancellation>,
}

impl ActionRecord {
    /// Status at offset `now`, and when it last changed.
    pub(crate) fn status_at(&self, now: Duration, t: &Timing) -> (Status, Duration) {
        let first = self.created + FIRST_UPDATE;
        if let Some(c) = &self.cancel {
            return (Status::Cancelled, c.at);
        }
        match self.settle_from {
            None => {
                let deadline = self.created + t.action_timeout;
                if now >= deadline {
                    (Status::TimeOut, deadline.max(first))
                } else {
                    (Status::Pending, first)
                }
            }
            Some(s) => {
                if now >= s + t.settle {
                    let end = if self.fails { Status::Failed } else { Status::Succeeded };
                    (end, (s + t.settle).max(first))
                } else if now >= s + t.settle / 2 {
                    (Status::InProgress, (s + t.settle / 2).max(first))
                } else {
                    (Status::Pending, first)
                }
            }
        }
    }

    /// The entity as it stands at offset `now`.
    pub(crate) fn view(&self, now: Duration, t: &Timing, clock: &Clock) -> MachineAction {
        let (status, updated) = self.status_at(now, t);
        self.entity(status, updated, clock)
    }

    /// The entity as it was when created: what the 201 reply carries.
    pub(crate) fn as_created(&self, clock: &Clock) -> MachineAction {
        self.entity(Status::Pending, self.created + FIRST_UPDATE, clock)
    }

    fn entity(&self, status: Status, updated: Duration, clock: &Clock) -> MachineAction {
        let cancel = self.cancel.as_ref().filter(|_| status == Status::Cancelled);
        MachineAction {
            id: self.id.clone(),
            kind: self.kind.type_name().to_string(),
            title: None,
            requestor: Some(self.requestor.clone()),
            requestor_comment: Some(self.comment.clone()),
            status: status.as_str().to_string(),
            machine_id: self.machine_id.clone(),
            computer_dns_name: self.computer_dns_name.clone(),
            creation_date_time_utc: Some(clock.stamp(self.created)),
            last_update_date_time_utc: Some(clock.stamp(updated)),
            cancellation_requestor: cancel.map(|c| c.requestor.clone()),
            cancellation_comment: cancel.and_then(|c| c.comment.clone()),
            cancellation_date_time_utc: cancel.map(|c| clock.stamp(c.at)),
            error_h_result: Some(if status == Status::Failed { FAILED_HRESULT } else { 0 }),
            scope: self.scope.clone(),
            external_id: None,
            request_source: Some("PublicApi".to_string()),
            related_file_info: self.sha1.as_ref().map(|h| RelatedFileInfo {
                file_identifier: h.clone(),
                file_identifier_type: "Sha1".to_string(),
            }),
            commands: Some(Vec::new()),
            troubleshoot_info: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(settle_from: Option<Duration>, fails: bool) -> ActionRecord {
        ActionRecord {
            id: "a".into(),
            kind: ActionKind::Isolate,
            machine: 0,
            machine_id: "m".into(),
            computer_dns_name: None,
            requestor: "app".into(),
            comment: "c".into(),
            scope: Some("Full".into()),
            sha1: None,
            created: Duration::from_secs(10),
            fails,
            settle_from,
            cancel: None,
        }
    }

    const T: Timing =
        Timing { settle: Duration::from_secs(2), action_timeout: Duration::from_secs(60) };

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn online_action_settles() {
        let r = rec(Some(s(10.0)), false);
        assert_eq!(r.status_at(s(10.0), &T).0, Status::Pending);
        assert_eq!(r.status_at(s(10.999), &T).0, Status::Pending);
        assert_eq!(r.status_at(s(11.0), &T), (Status::InProgress, s(11.0)));
        assert_eq!(r.status_at(s(12.0), &T), (Status::Succeeded, s(12.0)));
        assert_eq!(rec(Some(s(10.0)), true).status_at(s(99.0), &T).0, Status::Failed);
    }

    #[test]
    fn offline_action_times_out_unless_the_machine_returns() {
        let r = rec(None, false);
        assert_eq!(r.status_at(s(69.9), &T).0, Status::Pending);
        assert_eq!(r.status_at(s(70.0), &T), (Status::TimeOut, s(70.0)));
        let back = rec(Some(s(30.0)), false);
        assert_eq!(back.status_at(s(31.5), &T).0, Status::InProgress);
        assert_eq!(back.status_at(s(80.0), &T).0, Status::Succeeded);
    }

    #[test]
    fn entity_fields() {
        let clock = Clock { origin: Instant::now(), wall_origin: SystemTime::UNIX_EPOCH };
        let mut r = rec(Some(s(10.0)), true);
        let created = r.as_created(&clock);
        assert_eq!(created.status, "Pending");
        assert_eq!(created.creation_date_time_utc.as_deref(), Some("1970-01-01T00:00:10.0000000Z"));
        assert_eq!(
            created.last_update_date_time_utc.as_deref(),
            Some("1970-01-01T00:00:10.0000007Z")
        );
        assert_eq!(created.error_h_result, Some(0));
        let failed = r.view(s(20.0), &T, &clock);
        assert_eq!(
            (failed.status.as_str(), failed.error_h_result),
            ("Failed", Some(FAILED_HRESULT))
        );
        r.cancel = Some(Cancellation { at: s(10.5), requestor: "app".into(), comment: None });
        let c = r.view(s(20.0), &T, &clock);
        assert_eq!(c.status, "Cancelled");
        assert_eq!(c.cancellation_date_time_utc, c.last_update_date_time_utc);
        assert_eq!(c.cancellation_comment, None);
    }
}
