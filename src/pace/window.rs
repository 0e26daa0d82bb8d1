//! Call counting under a set of [`Limit`]s, in the three window models a
//! server may use. The simulator enforces quotas with it; the runner paces
//! itself with its sliding model, the strictest of the three (a call stream
//! with at most N calls in every span of length W is admitted by a fixed
//! window and by a token bucket of the same N and W too).
//!
//! Everything here is plain state driven by the instants passed in, with no
//! clock of its own, so it is exact and testable in virtual time.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use super::limit::Limit;

/// How a server counts calls against a [`Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowModel {
    /// A call at `t` is admitted iff fewer than N admitted calls lie in `(t − W, t]`.
    #[default]
    Sliding,
    /// Counters reset at `origin + k·W`; admitted iff fewer than N calls in the current slot.
    Fixed,
    /// Token bucket of capacity N, starting full, refilled continuously at N/W per second.
    Bucket,
}

impl FromStr for WindowModel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sliding" => Ok(WindowModel::Sliding),
            "fixed" => Ok(WindowModel::Fixed),
            "bucket" | "token-bucket" => Ok(WindowModel::Bucket),
            other => {
                Err(format!("unknown window model {other:?} (expected sliding, fixed or bucket)"))
            }
        }
    }
}

impl fmt::Display for WindowModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowModel::Sliding => "sliding",
            WindowModel::Fixed => "fixed",
            WindowModel::Bucket => "bucket",
        })
    }
}

/// Why a call was refused: how long until every blocking limit would admit
/// it, and the limit that blocks longest (the one a 429 message names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Time until the call would be admitted by every limit.
    pub wait: Duration,
    /// The blocking limit with the longest wait.
    pub limit: Limit,
}

/// Counting state for one limit.
#[derive(Debug, Clone)]
enum Counter {
    /// Admission times of calls still inside the window, oldest first (at most N kept).
    Sliding(VecDeque<Instant>),
    /// Index of the current slot since the origin, and calls counted in it.
    Fixed { slot: u64, count: u32 },
    /// Tokens available at `at`.
    Bucket { tokens: f64, at: Instant },
}

/// Calls counted against every limit of one key (one API, for one app and tenant).
#[derive(Debug, Clone)]
pub struct Windows {
    /// The model, fixed for the life of the counter.
    model: WindowModel,
    /// Where fixed slots start counting from.
    origin: Instant,
    /// One counter per limit, in the order given.
    limits: Vec<(Limit, Counter)>,
}

impl Windows {
    /// A counter with nothing counted yet. `origin` anchors fixed slots and
    /// starts buckets full.
    pub fn new(model: WindowModel, limits: &[Limit], origin: Instant) -> Windows {
        let limits = limits
            .iter()
            .map(|&l| {
                let c = match model {
                    WindowModel::Sliding => {
                        Counter::Sliding(VecDeque::with_capacity(l.calls.min(4096) as usize))
                    }
                    WindowModel::Fixed => Counter::Fixed { slot: 0, count: 0 },
                    WindowModel::Bucket => {
                        Counter::Bucket { tokens: f64::from(l.calls), at: origin }
                    }
                };
                (l, c)
            })
            .collect();
        Windows { model, origin, limits }
    }

    /// The model this counter applies.
    pub fn model(&self) -> WindowModel {
        self.model
    }

    /// The limits this counter enforces.
    pub fn limits(&self) -> impl Iterator<Item = Limit> + '_ {
        self.limits.iter().map(|(l, _)| *l)
    }

    /// How long a call arriving at `now` would have to wait before every
    /// limit admits it (zero when it may go now), and the limit that blocks longest.
    pub fn check(&mut self, now: Instant) -> Result<(), Throttle> {
        let mut worst: Option<Throttle> = None;
        for (limit, counter) in &mut self.limits {
            let wait = wait_for(*limit, counter, self.origin, now);
            if !wait.is_zero() && worst.is_none_or(|w| wait > w.wait) {
                worst = Some(Throttle { wait, limit: *limit });
            }
        }
        match worst {
            Some(t) => Err(t),
            None => Ok(()),
        }
    }

    /// Admits a call at `now` if every limit allows it, counting it against
    /// all of them; a refused call counts against none.
    pub fn try_admit(&mut self, now: Instant) -> Result<(), Throttle> {
        self.check(now)?;
        self.record(now);
        Ok(())
    }

    /// Counts a call at `now` against every limit without asking (a call the
    /// caller decided to make anyway, or another app's load). Sliding logs
    /// keep only the newest N entries, which is all admission ever needs.
    pub fn record(&mut self, now: Instant) {
        for (limit, counter) in &mut self.limits {
            match counter {
                Counter::Sliding(log) => {
                    if log.len() == limit.calls as usize {
                        log.pop_front();
                    }
                    log.push_back(now);
                }
                Counter::Fixed { slot, count } => {
                    let s = slot_of(*limit, self.origin, now);
                    if s != *slot {
                        *slot = s;
                        *count = 0;
                    }
                    *count += 1;
                }
                Counter::Bucket { tokens, at } => {
                    refill(*limit, tokens, at, now);
                    *tokens -= 1.0;
                }
            }
        }
    }

    /// Moves a counted call from `from` to the instant `to` (sliding
    /// model only; the others have no per-call record). The runner counts a
    /// call from its start, then, once the answer is in, from the answer: a
    /// server counts a call somewhere between the two, so a slot reused a
    /// full window after the answer can never overlap it on the server's
    /// clock, however late the server counted. A call no longer in the log
    /// (already a window old) is left alone.
    pub fn reschedule(&mut self, from: Instant, to: Instant) {
        self.reschedule_each(from, |_| to);
    }

    /// [`Windows::reschedule`] with a new instant per limit.
    pub fn reschedule_each(&mut self, from: Instant, to: impl Fn(Limit) -> Instant) {
        for (limit, counter) in &mut self.limits {
            let to = to(*limit);
            if let Counter::Sliding(log) = counter {
                let Some(i) = log.iter().rposition(|t| *t == from) else { continue };
                log.remove(i);
                let at = log.partition_point(|t| *t <= to);
                log.insert(at, to);
                while log.len() > limit.calls as usize {
                    log.pop_front();
                }
            }
        }
    }

    /// The earliest instant, not before `now`, at which a call would be admitted.
    pub fn earliest(&mut self, now: Instant) -> Instant {
        match self.check(now) {
            Ok(()) => now,
            Err(t) => now + t.wait,
        }
    }
}

/// Time until `counter` admits one more call arriving at `now`.
fn wait_for(limit: Limit, counter: &mut Counter, origin: Instant, now: Instant) -> Duration {
    match counter {
        Counter::Sliding(log) => {
            // Admitted iff fewer than N calls lie in (now − W, now]; the log
            // holds the newest N calls, so only its oldest entry matters.
            if log.len() < limit.calls as usize {
                return Duration::ZERO;
            }
            let frees_at = log[0] + limit.window;
            frees_at.saturating_duration_since(now)
        }
        Counter::Fixed { slot, count } => {
            let s = slot_of(limit, origin, now);
            if s != *slot {
                *slot = s;
                *count = 0;
            }
            if *count < limit.calls {
                Duration::ZERO
            } else {
                let next = origin
                    + Duration::from_nanos(((s as u128 + 1) * limit.window.as_nanos()) as u64);
                next.saturating_duration_since(now).max(Duration::from_nanos(1))
            }
        }
        Counter::Bucket { tokens, at } => {
            refill(limit, tokens, at, now);
            // A whole token is needed; guard against float dust just below 1.
            if *tokens >= 1.0 - 1e-9 {
                Duration::ZERO
            } else {
                let per_token = limit.window.as_secs_f64() / f64::from(limit.calls);
                Duration::from_secs_f64((1.0 - *tokens) * per_token).max(Duration::from_nanos(1))
            }
        }
    }
}

/// Index of the fixed slot that `now` falls in.
fn slot_of(limit: Limit, origin: Instant, now: Instant) -> u64 {
    let since = now.saturating_duration_since(origin).as_nanos();
    (since / limit.window.as_nanos().max(1)) as u64
}

/// Adds the tokens earned between `at` and `now`, capped at capacity.
fn refill(limit: Limit, tokens: &mut f64, at: &mut Instant, now: Instant) {
    if now > *at {
        let earned = now.duration_since(*at).as_secs_f64() * f64::from(limit.calls)
            / limit.window.as_secs_f64();
        *tokens = (*tokens + earned).min(f64::from(limit.calls));
        *at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(calls: u32, secs: u64) -> Limit {
        Limit::new(calls, Duration::from_secs(secs)).unwrap()
    }

    fn admitted_in_burst(model: WindowModel, limits: &[Limit], n: usize) -> usize {
        let t0 = Instant::now();
        let mut w = Windows::new(model, limits, t0);
        (0..n).filter(|_| w.try_admit(t0).is_ok()).count()
    }

    #[test]
    fn a_burst_gets_exactly_n_in_every_model() {
        for model in [WindowModel::Sliding, WindowModel::Fixed, WindowModel::Bucket] {
            assert_eq!(admitted_in_burst(model, &[l(100, 60), l(1500, 3600)], 250), 100, "{model}");
        }
    }

    #[test]
    fn sliding_frees_a_slot_exactly_w_after_the_call_that_held_it() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Sliding, &[l(2, 10)], t0);
        w.try_admit(t0).unwrap();
        w.try_admit(t0 + Duration::from_secs(3)).unwrap();
        let t = w.try_admit(t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(t.wait, Duration::from_secs(6));
        assert!(w.try_admit(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(w.check(t0 + Duration::from_secs(10)).unwrap_err().wait, Duration::from_secs(3));
    }

    #[test]
    fn rescheduling_counts_a_call_from_its_answer() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Sliding, &[l(2, 10)], t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        w.try_admit(at(0)).unwrap();
        w.try_admit(at(100)).unwrap();
        // The first call's answer came at 3 s: its slot frees at 13 s, not 10 s.
        w.reschedule(at(0), at(3000));
        assert_eq!(w.check(at(10_000)).unwrap_err().wait, Duration::from_millis(100));
        assert!(w.try_admit(at(10_100)).is_ok());
        assert_eq!(w.check(at(10_200)).unwrap_err().wait, Duration::from_millis(2800));
        // Unknown instants change nothing.
        w.reschedule(at(7), at(9_999_999));
        assert!(w.try_admit(at(13_000)).is_ok());
    }

    #[test]
    fn fixed_resets_at_slot_boundaries() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Fixed, &[l(2, 10)], t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        w.try_admit(at(9)).unwrap();
        w.try_admit(at(9)).unwrap();
        assert_eq!(w.try_admit(at(9)).unwrap_err().wait, Duration::from_secs(1));
        w.try_admit(at(10)).unwrap();
        w.try_admit(at(10)).unwrap();
        assert!(w.try_admit(at(19)).is_err());
    }

    #[test]
    fn bucket_refills_continuously() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Bucket, &[l(10, 10)], t0);
        for _ in 0..10 {
            w.try_admit(t0).unwrap();
        }
        assert_eq!(w.try_admit(t0).unwrap_err().wait, Duration::from_secs(1));
        assert!(w.try_admit(t0 + Duration::from_millis(999)).is_err());
        assert!(w.try_admit(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn refused_calls_count_against_no_limit() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Sliding, &[l(1, 10), l(5, 100)], t0);
        w.try_admit(t0).unwrap();
        for s in 1..10 {
            assert!(w.try_admit(t0 + Duration::from_secs(s)).is_err());
        }
        // Only one call was counted by the long window, so four more pass there.
        for k in 1..5 {
            w.try_admit(t0 + Duration::from_secs(10 * k)).unwrap();
        }
        let t = w.try_admit(t0 + Duration::from_secs(50)).unwrap_err();
        assert_eq!(t.limit, l(5, 100));
        assert_eq!(t.wait, Duration::from_secs(50));
    }

    #[test]
    fn reports_the_limit_with_the_longest_wait() {
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Fixed, &[l(1, 60), l(1, 3600)], t0);
        w.try_admit(t0).unwrap();
        let t = w.try_admit(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(t.limit, l(1, 3600));
        assert_eq!(t.wait, Duration::from_secs(3599));
    }
}
