//! Quota enforcement: one set of window counters per (app, tenant, API), the
//! phantom calls of another app's load (`foreign_load`), all counted with
//! [`crate::pace::window::Windows`].
//!
//! Foreign load `P` is modelled as calls recorded into the same counters at a
//! steady rate `P·N/W` for each limit `N/W`: phantom call `k` of a limit falls
//! at `origin + k·W/(P·N)`. They are recorded lazily, in time order, before
//! each check. Under the sliding model the window is already `P` full at
//! start (as if the other app had been running for a while); under the fixed
//! and bucket models phantom calls start at the origin. Only the newest `N`
//! phantom calls of a long idle stretch are recorded, which is exact for the
//! sliding and fixed models and leaves a bucket at most `N` tokens too low
//! only after a long idle stretch under a foreign load above one half.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::route::Api;
use crate::pace::limit::Limit;
use crate::pace::window::{Throttle, WindowModel, Windows};

/// Who a quota belongs to: an index into the simulator's (app, tenant) table.
pub(crate) type Principal = usize;

/// Every quota counter of the simulator.
#[derive(Debug)]
pub(crate) struct Quotas {
    /// How calls are counted.
    model: WindowModel,
    /// The limits as configured; each key gets [`Limit::for_api`] of them
    /// (empty means no quota at all).
    limits: Vec<Limit>,
    /// Simulator start: anchors fixed slots and phantom calls.
    origin: Instant,
    /// Fraction of every window that another app consumes.
    foreign_load: f64,
    /// Counters per (app and tenant, API), created on first use.
    keys: HashMap<(Principal, Api), Vec<LimitCounter>>,
}

/// The counter of one limit for one key, with its phantom load.
#[derive(Debug)]
struct LimitCounter {
    /// The limit counted.
    limit: Limit,
    /// Counter for this limit alone (one per limit, so phantom rates can differ).
    windows: Windows,
    /// Spacing of phantom calls in nanoseconds, when there is a foreign load.
    step_ns: Option<f64>,
    /// Index of the next phantom call not yet recorded.
    next_k: i64,
}

impl Quotas {
    /// Counters for `limits` under `model`, anchored at `origin`, with another
    /// app consuming `foreign_load` (0 to 1) of every window.
    pub(crate) fn new(
        model: WindowModel,
        limits: &[Limit],
        origin: Instant,
        foreign_load: f64,
    ) -> Quotas {
        Quotas {
            model,
            limits: limits.to_vec(),
            origin,
            foreign_load: foreign_load.clamp(0.0, 1.0),
            keys: HashMap::new(),
        }
    }

    /// Whether any quota is enforced. Only the tests ask: the server never
    /// needs to, since [`Quotas::admit`] admits everything without limits.
    #[cfg(test)]
    pub(crate) fn enabled(&self) -> bool {
        !self.limits.is_empty()
    }

    /// Admits a call of `principal` to `api` at `now`, counting it against
    /// every limit, or refuses it (counting it against none) with the wait
    /// until every limit would admit it and the limit that blocks longest.
    pub(crate) fn admit(
        &mut self,
        principal: Principal,
        api: Api,
        now: Instant,
    ) -> Result<(), Throttle> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let (model, origin, load) = (self.model, self.origin, self.foreign_load);
        let limits = &self.limits;
        let counters = self.keys.entry((principal, api)).or_insert_with(|| {
            Limit::for_api(limits, api)
                .into_iter()
                .map(|l| LimitCounter::new(model, l, origin, load))
                .collect()
        });
        let mut worst: Option<Throttle> = None;
        for c in counters.iter_mut() {
            c.flush_phantoms(origin, now);
            if let Err(t) = c.windows.check(now)
                && worst.is_none_or(|w| t.wait > w.wait)
            {
                worst = Some(t);
            }
        }
        if let Some(t) = worst {
            return Err(t);
        }
        for c in counters.iter_mut() {
            c.windows.record(now);
        }
        Ok(())
    }
}

impl LimitCounter {
    fn new(model: WindowModel, limit: Limit, origin: Instant, load: f64) -> LimitCounter {
        let phantoms_per_window = load * f64::from(limit.calls);
        let step_ns = (phantoms_per_window > 0.0)
            .then(|| limit.window.as_nanos() as f64 / phantoms_per_window);
        // Sliding: phantom calls k > −P·N already lie in the window at the origin.
        let next_k = match model {
            WindowModel::Sliding => (-phantoms_per_window).floor() as i64 + 1,
            WindowModel::Fixed | WindowModel::Bucket => 0,
        };
        LimitCounter { limit, windows: Windows::new(model, &[limit], origin), step_ns, next_k }
    }

    /// Records every phantom call due by `now` that is not recorded yet.
    fn flush_phantoms(&mut self, origin: Instant, now: Instant) {
        let Some(step) = self.step_ns else { return };
        let since = now.saturating_duration_since(origin).as_nanos() as f64;
        let last = (since / step).floor() as i64;
        if last < self.next_k {
            return;
        }
        let n = i64::from(self.limit.calls);
        if last - self.next_k + 1 > n {
            self.next_k = last - n + 1;
        }
        for k in self.next_k..=last {
            let off = Duration::from_nanos((k.unsigned_abs() as f64 * step) as u64);
            let at = if k >= 0 { Some(origin + off) } else { origin.checked_sub(off) };
            if let Some(at) = at {
                self.windows.record(at.min(now));
            }
        }
        self.next_k = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::action::ActionKind;

    const API: Api = Api::Action(ActionKind::Isolate);

    fn lim(calls: u32, secs: u64) -> Limit {
        Limit::new(calls, Duration::from_secs(secs)).unwrap()
    }

    fn burst(q: &mut Quotas, at: Instant, n: usize) -> usize {
        (0..n).filter(|_| q.admit(0, API, at).is_ok()).count()
    }

    #[test]
    fn keys_are_separate() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &[lim(3, 60)], t0, 0.0);
        assert_eq!(burst(&mut q, t0, 5), 3);
        assert!(q.admit(1, API, t0).is_ok());
        assert!(q.admit(0, Api::GetMachine, t0).is_ok());
        let t = q.admit(0, API, t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(t.wait, Duration::from_secs(59));
    }

    #[test]
    fn documented_limits_differ_per_api_and_configured_ones_do_not() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &Limit::api_defaults(), t0, 0.0);
        let n = |q: &mut Quotas, api| (0..200).filter(|_| q.admit(0, api, t0).is_ok()).count();
        assert_eq!(n(&mut q, Api::GetPackageUri), 2);
        assert_eq!(n(&mut q, Api::StartInvestigation), 50);
        assert_eq!(n(&mut q, Api::FindByTag), 100);
        let mut q = Quotas::new(WindowModel::Sliding, &[lim(7, 60)], t0, 0.0);
        assert_eq!(n(&mut q, Api::GetPackageUri), 7);
        assert_eq!(n(&mut q, Api::StartInvestigation), 7);
    }

    #[test]
    fn no_limits_admit_everything() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &[], t0, 0.9);
        assert!(!q.enabled());
        assert_eq!(burst(&mut q, t0, 10_000), 10_000);
    }

    #[test]
    fn foreign_load_takes_its_share_of_a_sliding_window_from_the_start() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &[lim(10, 60)], t0, 0.5);
        assert_eq!(burst(&mut q, t0, 20), 5);
        // The oldest phantom call (at t0 − 48 s) leaves the window at t0 + 12 s.
        let t = q.admit(0, API, t0).unwrap_err();
        assert_eq!(t.wait, Duration::from_secs(12));
    }

    #[test]
    fn foreign_load_accrues_over_a_fixed_slot() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Fixed, &[lim(10, 60)], t0, 0.5);
        // Phantom calls at 0, 12, 24, 36 and 48 s: by 50 s five are counted.
        assert_eq!(burst(&mut q, t0 + Duration::from_secs(50), 20), 5);
        let mut q = Quotas::new(WindowModel::Fixed, &[lim(10, 60)], t0, 0.5);
        assert_eq!(burst(&mut q, t0 + Duration::from_secs(1), 20), 9);
    }

    #[test]
    fn long_idle_stretches_stay_cheap_and_exact() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &[lim(100, 60)], t0, 0.25);
        let later = t0 + Duration::from_secs(30 * 86_400);
        assert_eq!(burst(&mut q, later, 200), 75);
    }

    #[test]
    fn full_foreign_load_leaves_nothing() {
        let t0 = Instant::now();
        let mut q = Quotas::new(WindowModel::Sliding, &[lim(4, 1)], t0, 1.0);
        assert_eq!(burst(&mut q, t0 + Duration::from_millis(500), 4), 0);
    }
}
