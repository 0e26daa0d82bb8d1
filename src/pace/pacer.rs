//! The runner's pacer: decides when each call may start so that no API ever
//! sees more than N calls in any span of W, for every configured limit, while
//! starting every call at the earliest moment that rule allows.
//!
//! Design:
//! - One lane per [`Api`], because the service counts quota per API.
//! - Each lane keeps the start times of its last N calls per limit (a
//!   [`Windows`] in the sliding model, the strictest of the three server
//!   models). The next call may start once the N-th most recent start is a
//!   full window (plus a small margin) old: exactly the recurrence
//!   `T_k = max(T_{k-N} + W)` over all limits, with no refill burst. Token
//!   buckets such as governor's GCRA admit burst + refill inside one window,
//!   up to twice the quota, which is why they are not used here.
//! - Waiters queue on a FIFO mutex per lane, so calls start in the order they
//!   asked and nobody stampedes when a slot frees.
//! - A call is counted from its start (plus a margin for the unknown delay
//!   before the server counts it), and once its answer is in, from the
//!   answer ([`Pacer::finished`]): the server counted it before answering, so
//!   reusing the slot a plain window after the answer is safe however long
//!   the server took — a burst of 100 that the server works through over
//!   50 ms cannot overlap the next burst. The cost is at most one round trip
//!   per window, under 1% at the API's one-minute window. An answer also
//!   wakes the caller already asleep for a slot, whose wake-up time was
//!   computed from the unanswered starts (window and margin).
//! - A 429 closes the lane's gate until its Retry-After: every call to that
//!   API waits, not only the one that was refused.
//!
//! Time is `tokio::time::Instant`, so all of this runs in paused time in tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::limit::Limit;
use super::window::{WindowModel, Windows};
use crate::api::route::Api;

/// The largest margin added to a window: enough to absorb network jitter
/// between our clock and the server's counting point.
const MAX_MARGIN: Duration = Duration::from_millis(250);

/// The longest hold [`Pacer::pause_for`] sets: thirty years, as tokio's
/// timers treat "never". Callers cap server-asked waits far below this
/// ([`crate::api::error::MAX_RETRY_AFTER`]); this only keeps the clock
/// arithmetic from overflowing.
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The default safety margin for a window: 1% of it, at most 250 ms.
pub fn default_margin(window: Duration) -> Duration {
    (window / 100).min(MAX_MARGIN)
}

/// Why a lane is holding calls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The quota window is full until a slot frees.
    Quota(Limit),
    /// The server answered 429 and asked us to wait.
    RetryAfter,
}

/// A lane that is currently holding calls back, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The API whose calls are waiting.
    pub api: Api,
    /// When the next call may start.
    pub until: Instant,
    /// Why.
    pub reason: WaitReason,
}

/// Paces calls per API under a set of limits. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Pacer {
    /// The limits as configured, for reports; each lane enforces
    /// [`Limit::for_api`] of them (the documented defaults stand for each
    /// API's own documented quotas).
    limits: Vec<Limit>,
    /// The margin each window is widened by (`None`: [`default_margin`]).
    margin: Option<Duration>,
    /// One lane per API, created on first use.
    lanes: Mutex<HashMap<Api, Arc<Lane>>>,
}

/// Pacing state of one API.
#[derive(Debug)]
struct Lane {
    /// The limits this API is held to, as configured.
    limits: Vec<Limit>,
    /// The same limits as enforced: each window widened by its margin.
    enforced: Vec<Limit>,
    /// Held while a caller waits for its slot: tokio's mutex is FIFO, so
    /// callers start in arrival order.
    turn: tokio::sync::Mutex<()>,
    /// Counted starts, the 429 gate and the current hold.
    state: Mutex<LaneState>,
    /// Wakes the caller waiting for a slot when an answer moves a counted
    /// call (see [`Pacer::finished`]): the slot it waits for may free
    /// earlier than it computed when it went to sleep.
    recounted: tokio::sync::Notify,
}

impl Lane {
    /// Maps an enforced (widened) limit back to the configured one.
    fn configured(&self, enforced: Limit) -> Limit {
        self.enforced.iter().position(|l| *l == enforced).map_or(enforced, |i| self.limits[i])
    }
}

#[derive(Debug)]
struct LaneState {
    /// Starts of the last N calls for each limit.
    windows: Windows,
    /// No call may start before this instant (set by 429s).
    gate: Option<Instant>,
    /// What the first waiter is waiting for, if anything.
    hold: Option<Hold>,
    /// Calls started on this lane.
    started: u64,
}

impl Pacer {
    /// A pacer enforcing `limits` (empty: no pacing), each widened by `margin`
    /// (`None`: [`default_margin`] of each window).
    pub fn new(limits: &[Limit], margin: Option<Duration>) -> Pacer {
        Pacer { limits: limits.to_vec(), margin, lanes: Mutex::new(HashMap::new()) }
    }

    /// The limits as configured.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    fn lane(&self, api: Api) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes
            .entry(api)
            .or_insert_with(|| {
                let limits = Limit::for_api(&self.limits, api);
                let enforced: Vec<Limit> = limits
                    .iter()
                    .map(|l| Limit {
                        calls: l.calls,
                        window: l.window + self.margin.unwrap_or_else(|| default_margin(l.window)),
                    })
                    .collect();
                Arc::new(Lane {
                    turn: tokio::sync::Mutex::new(()),
                    state: Mutex::new(LaneState {
                        windows: Windows::new(WindowModel::Sliding, &enforced, Instant::now()),
                        gate: None,
                        hold: None,
                        started: 0,
                    }),
                    recounted: tokio::sync::Notify::new(),
                    limits,
                    enforced,
                })
            })
            .clone()
    }

    /// Waits until a call to `api` may start, and counts it as started.
    /// Every attempt, retries included, must come through here.
    pub async fn acquire(&self, api: Api) -> Instant {
        let lane = self.lane(api);
        let _turn = lane.turn.lock().await;
        loop {
            // Registered before the state is read, so an answer that comes
            // in between still wakes this caller.
            let recounted = lane.recounted.notified();
            tokio::pin!(recounted);
            recounted.as_mut().enable();
            let now = Instant::now();
            let wait = {
                let mut st = lane.state.lock().unwrap_or_else(PoisonError::into_inner);
                let gate = st.gate.filter(|g| *g > now);
                let quota = st.windows.check(now).err();
                let hold = match (gate, quota) {
                    (Some(g), Some(q)) if now + q.wait > g => {
                        Some(Hold { api, until: now + q.wait, reason: WaitReason::Quota(q.limit) })
                    }
                    (Some(g), _) => Some(Hold { api, until: g, reason: WaitReason::RetryAfter }),
                    (None, Some(q)) => Some(Hold {
                        api,
                        until: now + q.wait,
                        reason: WaitReason::Quota(lane.configured(q.limit)),
                    }),
                    (None, None) => None,
                };
                st.hold = hold;
                match hold {
                    Some(h) => h.until,
                    None => {
                        st.windows.record(now);
                        st.started += 1;
                        return now;
                    }
                }
            };
            // The gate may move while we sleep (another call drew a 429), and
            // an answer may free a slot sooner; the loop re-checks
            // everything after waking.
            tokio::select! {
                () = tokio::time::sleep_until(wait) => {}
                () = &mut recounted => {}
            }
        }
    }

    /// Reports that the call to `api` started at `started` got its answer
    /// (or failed) now: its slot is counted from now on, so a server that
    /// counted it late still never sees more than N in a window.
    pub fn finished(&self, api: Api, started: Instant) {
        let now = Instant::now();
        let lane = self.lane(api);
        let mut st = lane.state.lock().unwrap_or_else(PoisonError::into_inner);
        // The server counted the call before it answered, so the slot frees
        // a plain window after the answer: the margin that covers the unknown
        // counting delay of an unanswered call is not needed any more (the
        // enforced window includes it, so the entry moves back by it).
        st.windows.reschedule_each(started, |enforced| {
            let margin = enforced.window.saturating_sub(lane.configured(enforced).window);
            now.checked_sub(margin).unwrap_or(now)
        });
        drop(st);
        lane.recounted.notify_waiters();
    }

    /// Holds every call to `api` for `wait` from now (a 429's Retry-After).
    /// A wait too long for the clock is held as [`FAR_FUTURE`] instead of
    /// overflowing: the value comes from a server, and no server may panic
    /// a worker. The gate only ever moves forward.
    pub fn pause_for(&self, api: Api, wait: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(wait.min(FAR_FUTURE))
            // Unreachable in practice: tokio's own timers rely on `now` plus
            // thirty years being representable; no hold is better than a panic.
            .unwrap_or(now);
        self.pause(api, until);
    }

    /// Holds every call to `api` until `until` (a 429's Retry-After). The
    /// gate only ever moves forward.
    pub fn pause(&self, api: Api, until: Instant) {
        let lane = self.lane(api);
        let mut st = lane.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.gate.is_none_or(|g| until > g) {
            st.gate = Some(until);
        }
    }

    /// The lanes currently holding calls back, longest hold first.
    pub fn holds(&self) -> Vec<Hold> {
        let now = Instant::now();
        let lanes: Vec<Arc<Lane>> = {
            let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.values().cloned().collect()
        };
        let mut holds: Vec<Hold> = lanes
            .iter()
            .filter_map(|l| l.state.lock().unwrap_or_else(PoisonError::into_inner).hold)
            .filter(|h| h.until > now)
            .collect();
        holds.sort_by_key(|h| std::cmp::Reverse(h.until));
        holds
    }

    /// Calls started on `api` so far.
    pub fn started(&self, api: Api) -> u64 {
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&api)
            .map_or(0, |l| l.state.lock().unwrap_or_else(PoisonError::into_inner).started)
    }

    /// When the `n`-th of `n` calls to one fresh API held to the configured
    /// limits (every action and read API the runner calls), all ready at once,
    /// would start, relative to the first: the schedule this pacer follows
    /// when answers come back promptly (an answered call frees its slot a
    /// plain window after its answer, so the margin drops out; each slower
    /// answer adds its round trip once per window). For estimates.
    pub fn schedule(&self, n: u64) -> Duration {
        if n == 0 || self.limits.is_empty() {
            return Duration::ZERO;
        }
        let t0 = Instant::now();
        let mut w = Windows::new(WindowModel::Sliding, &self.limits, t0);
        let mut t = t0;
        for _ in 0..n {
            t = w.earliest(t);
            w.record(t);
        }
        t - t0
    }
}

/// The lower bound on the time to start `n` calls under `limits` (no
/// margin): `T_k = max over limits (T_{k-N} + W)`, `T_1..T_N = 0`. Used by
/// benchmarks to compare a run with what the quota allows at best.
pub fn minimum_time(limits: &[Limit], n: u64) -> Duration {
    Pacer::new(limits, Some(Duration::ZERO)).schedule(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn lim(calls: u32, ms: u64) -> Limit {
        Limit::new(calls, Duration::from_millis(ms)).unwrap()
    }

    /// Largest number of starts inside any half-open span of length `w`.
    fn max_in_window(starts: &[Instant], w: Duration) -> usize {
        let mut s = starts.to_vec();
        s.sort();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..s.len() {
            while s[hi] - s[lo] >= w {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn minimum_time_follows_the_recurrence() {
        let api = [Limit::PER_MINUTE, Limit::PER_HOUR];
        assert_eq!(minimum_time(&api, 100), Duration::ZERO);
        assert_eq!(minimum_time(&api, 101), Duration::from_secs(60));
        assert_eq!(minimum_time(&api, 500), Duration::from_secs(240));
        assert_eq!(minimum_time(&api, 1500), Duration::from_secs(840));
        assert_eq!(minimum_time(&api, 1501), Duration::from_secs(3600));
        assert_eq!(minimum_time(&[], 1_000_000), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_hundred_go_at_once_and_the_next_a_window_later() {
        let pacer =
            Arc::new(Pacer::new(&[Limit::PER_MINUTE, Limit::PER_HOUR], Some(Duration::ZERO)));
        let t0 = Instant::now();
        let api = Api::Action(crate::api::action::ActionKind::Isolate);
        let mut starts = Vec::new();
        for _ in 0..250 {
            starts.push(pacer.acquire(api).await - t0);
        }
        assert!(starts[..100].iter().all(|s| s.is_zero()));
        assert!(starts[100..200].iter().all(|s| *s == Duration::from_secs(60)));
        assert_eq!(starts[249], Duration::from_secs(120));
        // Other APIs have their own quota.
        let other = Api::ListActions;
        assert_eq!(pacer.acquire(other).await - t0, Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn apis_with_their_own_documented_quota_are_paced_by_it() {
        let pacer = Pacer::new(&Limit::api_defaults(), Some(Duration::ZERO));
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            starts.push((pacer.acquire(Api::GetPackageUri).await - t0).as_secs());
        }
        // Two a minute (sliding), while every other API has a hundred.
        assert_eq!(starts, [0, 0, 60, 60, 120]);
        assert_eq!(pacer.acquire(Api::GetAction).await - t0, Duration::from_secs(120));
        // A configured list other than the defaults holds every API alike.
        let pacer = Pacer::new(&[lim(5, 60)], Some(Duration::ZERO));
        for _ in 0..5 {
            assert_eq!(pacer.acquire(Api::StartInvestigation).await, Instant::now());
        }
        assert_eq!(pacer.limits(), [lim(5, 60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_reused_a_window_after_the_answer_not_the_start() {
        let pacer = Pacer::new(&[lim(2, 10_000)], Some(Duration::ZERO));
        let api = Api::GetAction;
        let t0 = Instant::now();
        let first = pacer.acquire(api).await;
        pacer.acquire(api).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        pacer.finished(api, first); // answered after 3 s
        assert_eq!(pacer.acquire(api).await - t0, Duration::from_secs(10));
        assert_eq!(pacer.acquire(api).await - t0, Duration::from_secs(13));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_slot_frees_a_plain_window_after_the_answer() {
        let pacer = Pacer::new(&[lim(1, 1000)], Some(Duration::from_millis(100)));
        let api = Api::GetAction;
        let t0 = Instant::now();
        let first = pacer.acquire(api).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        pacer.finished(api, first);
        // Answer at 20 ms: the server counted it by then, so 1020 ms is safe
        // (an unanswered call would have held the slot until 1100 ms).
        assert_eq!(pacer.acquire(api).await - t0, Duration::from_millis(1020));
        // Unanswered: start + window + margin.
        assert_eq!(pacer.acquire(api).await - t0, Duration::from_millis(2120));
    }

    /// A caller already asleep for a slot when the answer comes in wakes a
    /// plain window after the answer, not a window and the margin after the
    /// start it computed its sleep from.
    #[tokio::test(start_paused = true)]
    async fn an_answer_wakes_the_caller_already_waiting_for_its_slot() {
        let pacer = Arc::new(Pacer::new(&[lim(2, 1000)], Some(Duration::from_millis(100))));
        let api = Api::GetAction;
        let t0 = Instant::now();
        let first = pacer.acquire(api).await;
        let second = pacer.acquire(api).await;
        let waiter = {
            let p = pacer.clone();
            tokio::spawn(async move { p.acquire(api).await - t0 })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pacer.holds()[0].until, t0 + Duration::from_millis(1100));
        pacer.finished(api, first);
        pacer.finished(api, second);
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(1020));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_every_call_to_that_api_until_retry_after() {
        let pacer = Arc::new(Pacer::new(&[lim(100, 1000)], Some(Duration::ZERO)));
        let api = Api::Action(crate::api::action::ActionKind::Isolate);
        let t0 = Instant::now();
        pacer.acquire(api).await;
        pacer.pause(api, t0 + Duration::from_secs(30));
        pacer.pause(api, t0 + Duration::from_secs(10)); // never moves back
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let p = pacer.clone();
                tokio::spawn(async move { p.acquire(api).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hold = pacer.holds()[0];
        assert_eq!(hold.reason, WaitReason::RetryAfter);
        assert_eq!(hold.until, t0 + Duration::from_secs(30));
        for w in waiters {
            assert_eq!(w.await.unwrap(), t0 + Duration::from_secs(30));
        }
        // Another API is not held.
        assert_eq!(pacer.acquire(Api::GetAction).await, t0 + Duration::from_secs(30));
    }

    /// A pause of 2^64 - 1 seconds (or `Duration::MAX`) neither panics nor
    /// moves the gate back; other APIs go on.
    #[tokio::test(start_paused = true)]
    async fn a_huge_pause_does_not_panic() {
        let pacer = Arc::new(Pacer::new(&[lim(100, 1000)], Some(Duration::ZERO)));
        let api = Api::Action(crate::api::action::ActionKind::Isolate);
        let t0 = Instant::now();
        pacer.pause_for(api, Duration::from_secs(u64::MAX));
        pacer.pause_for(api, Duration::MAX);
        pacer.pause_for(api, Duration::from_secs(5)); // never moves back
        let waiter = {
            let p = pacer.clone();
            tokio::spawn(async move { p.acquire(api).await })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let hold = pacer.holds()[0];
        assert_eq!(hold.reason, WaitReason::RetryAfter);
        assert_eq!(hold.until, t0 + FAR_FUTURE);
        assert!(!waiter.is_finished());
        waiter.abort();
        assert_eq!(pacer.acquire(Api::GetAction).await - t0, Duration::from_secs(3600));
        // A plain pause still holds for exactly its wait.
        pacer.pause_for(Api::GetAction, Duration::from_secs(90));
        assert_eq!(pacer.acquire(Api::GetAction).await - t0, Duration::from_secs(3690));
    }

    #[test]
    fn margins_widen_windows() {
        assert_eq!(default_margin(Duration::from_secs(1)), Duration::from_millis(10));
        assert_eq!(default_margin(Duration::from_secs(3600)), MAX_MARGIN);
        let p = Pacer::new(&[lim(10, 1000)], None);
        assert_eq!(p.schedule(11), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_holds_its_slot_for_the_window_and_the_margin() {
        let p = Pacer::new(&[lim(10, 1000)], None);
        let t0 = Instant::now();
        for _ in 0..10 {
            p.acquire(Api::GetAction).await;
        }
        assert_eq!(p.acquire(Api::GetAction).await - t0, Duration::from_millis(1010));
    }

    /// The contract, over random arrival patterns in paused time: (1) no span
    /// of length W ever holds more than N starts, for every limit, counting
    /// retries; (2) no quota is wasted: each call starts at the later of its
    /// arrival and the earliest instant the sliding rule allows given the
    /// starts before it (calls start in arrival order).
    #[test]
    fn property_never_over_quota_and_never_late() {
        for seed in 0..60u64 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(check_random_pattern(seed));
        }
    }

    async fn check_random_pattern(seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let limits: Vec<Limit> = match rng.u8(0..3) {
            0 => vec![lim(rng.u32(1..20), rng.u64(100..2000))],
            1 => vec![
                lim(rng.u32(2..10), rng.u64(100..500)),
                lim(rng.u32(10..40), rng.u64(1000..5000)),
            ],
            _ => vec![lim(100, 60_000), lim(1500, 3_600_000)],
        };
        let pacer = Arc::new(Pacer::new(&limits, Some(Duration::ZERO)));
        let api = Api::Action(crate::api::action::ActionKind::Isolate);
        let calls = rng.usize(1..400);
        let log: Arc<StdMutex<Vec<(Instant, Instant)>>> = Arc::default();
        let t0 = Instant::now();
        // Random arrivals: bursts and gaps; some callers come back for a retry.
        let mut at = Duration::ZERO;
        let mut tasks = Vec::new();
        for _ in 0..calls {
            if rng.u8(0..4) == 0 {
                at += Duration::from_millis(rng.u64(0..3000));
            }
            let retries = if rng.u8(0..10) == 0 { 1 } else { 0 };
            let (p, log) = (pacer.clone(), log.clone());
            let arrive = t0 + at;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(arrive).await;
                for _ in 0..=retries {
                    let asked = Instant::now();
                    let started = p.acquire(api).await;
                    log.lock().unwrap().push((asked, started));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut log = log.lock().unwrap().clone();
        let starts: Vec<Instant> = log.iter().map(|(_, s)| *s).collect();
        for l in &limits {
            assert!(max_in_window(&starts, l.window) <= l.calls as usize, "seed {seed}: over {l}");
        }
        // Replay the sliding rule in start order and demand equality (tokio
        // timers have 1 ms resolution, so allow that much lateness).
        log.sort_by_key(|(_, s)| *s);
        let mut w = Windows::new(WindowModel::Sliding, &limits, t0);
        for (i, (asked, started)) in log.iter().enumerate() {
            let ideal = w.earliest(*asked);
            assert!(*started >= ideal, "seed {seed}: call {i} started early");
            assert!(
                *started - ideal <= Duration::from_millis(1),
                "seed {seed}: call {i} late by {:?}",
                *started - ideal
            );
            w.record(*started);
        }
    }

    /// Why governor's GCRA is not the pacer: two plain quotas of the API's
    /// size admit about twice each limit inside one window (governor #219).
    #[test]
    fn two_plain_gcra_quotas_break_the_window_contract() {
        use governor::clock::FakeRelativeClock;
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;

        let clock = FakeRelativeClock::default();
        let minute = RateLimiter::direct_with_clock(
            Quota::per_minute(NonZeroU32::new(100).unwrap()),
            clock.clone(),
        );
        let hour = RateLimiter::direct_with_clock(
            Quota::per_hour(NonZeroU32::new(1500).unwrap()),
            clock.clone(),
        );
        let mut admitted = 0;
        // Offer one call every 100 ms for one minute.
        for _ in 0..600 {
            if hour.check().is_ok() && minute.check().is_ok() {
                admitted += 1;
            }
            clock.advance(Duration::from_millis(100));
        }
        assert!(admitted > 150, "GCRA admitted {admitted} calls in 60 s against a 100/min quota");
    }
}
