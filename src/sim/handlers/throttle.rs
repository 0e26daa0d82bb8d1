//! The 429 step of an API call: the CPU throttle (refusals whatever the
//! counts, drawn by [`crate::sim::faults`]) and then admission by the quota
//! counters of [`crate::sim::quota`], both answered with the service's
//! `TooManyRequests` naming the blocking limit.

use std::time::Duration;

use tokio::time::Instant;

use super::reply::Reply;
use crate::api::route::Api;
use crate::pace::limit::{Limit, format_timespan};
use crate::sim::faults;
use crate::sim::quota::Principal;
use crate::sim::state::State;

impl Reply {
    /// A 429 naming the blocking limit.
    fn too_many(limit: Limit, retry_after: u64) -> Reply {
        let mut r = Reply::error(
            429,
            "TooManyRequests",
            format!(
                "API calls quota exceeded! maximum allowed {} per {}",
                limit.calls,
                format_timespan(limit.window)
            ),
        );
        r.retry_after = Some(retry_after);
        r
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(1_000_000_000) as u64).max(1)
}

impl State {
    /// Admits a call of `principal` to `api` at `now`, counting it against
    /// every quota, or returns the 429 that refuses it (counted in the stats).
    /// A refused call consumes no quota.
    pub(super) fn throttle(
        &mut self,
        api: Api,
        principal: Principal,
        now: Instant,
    ) -> Result<(), Reply> {
        if let Some(secs) = faults::draw_cpu_throttle(&mut self.cpu_rng, self.cfg.cpu_throttle_rate)
        {
            // The message names the API's own first limit, as a quota 429 would.
            let limit =
                Limit::for_api(&self.cfg.limits, api).first().copied().unwrap_or(Limit::PER_MINUTE);
            self.count(|s| s.throttled += 1);
            self.count(|s| s.cpu_throttled += 1);
            self.count_api(api, |s| s.throttled += 1);
            return Err(Reply::too_many(limit, secs));
        }
        if let Err(t) = self.quotas.admit(principal, api, now) {
            self.count(|s| s.throttled += 1);
            self.count_api(api, |s| s.throttled += 1);
            return Err(Reply::too_many(t.limit, whole_seconds(t.wait)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(60)), 60);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
