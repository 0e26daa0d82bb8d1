//! Injected faults (`error_rate`) and CPU-quota refusals (`cpu_throttle_rate`):
//! the transient failures a client of the real service must survive.
//!
//! A fault replaces the normal handling of an API call after authentication
//! and quota (it counts as a call). The four kinds are equally likely:
//! a 500 InternalServerError, a 503 (half of them with `Retry-After` 1–3 s),
//! a connection dropped before the call is processed, and a connection
//! dropped after it was processed: the action exists but the client never
//! sees the answer, which leaves its POST "in doubt".
//!
//! One fault is not drawn: `throttle_retry_after` replaces the `Retry-After`
//! of every 429 with a fixed text (2^64 - 1 seconds, a date in the year
//! 9999), the faulty server a client must not obey for days or overflow on.

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Reply 500 `InternalServerError`.
    InternalError,
    /// Reply 503, with `Retry-After` seconds when set.
    Unavailable {
        /// `Retry-After` value, 1 to 3 s, on half of them.
        retry_after: Option<u64>,
    },
    /// Close the connection without processing the call or answering.
    DropBefore,
    /// Process the call, then close the connection without answering.
    DropAfter,
}

/// Draws whether a call gets a fault at `rate` (0 to 1), and which.
/// Draws nothing from `rng` when `rate` is 0, so a fault-free run's other
/// random choices do not depend on it.
pub(crate) fn draw(rng: &mut fastrand::Rng, rate: f64) -> Option<Fault> {
    if rate <= 0.0 || rng.f64() >= rate {
        return None;
    }
    Some(match rng.u8(0..4) {
        0 => Fault::InternalError,
        1 => Fault::Unavailable { retry_after: rng.bool().then(|| rng.u64(1..=3)) },
        2 => Fault::DropBefore,
        _ => Fault::DropAfter,
    })
}

/// Draws whether a call is refused by the CPU quota at `rate`, and if so the
/// `Retry-After` to send (1 to 60 s).
pub(crate) fn draw_cpu_throttle(rng: &mut fastrand::Rng, rate: f64) -> Option<u64> {
    if rate <= 0.0 || rng.f64() >= rate {
        return None;
    }
    Some(rng.u64(1..=60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_kinds() {
        let mut rng = fastrand::Rng::with_seed(5);
        assert!((0..1000).all(|_| draw(&mut rng, 0.0).is_none()));
        let all: Vec<_> = (0..4000).filter_map(|_| draw(&mut rng, 1.0)).collect();
        assert_eq!(all.len(), 4000);
        for kind in [Fault::InternalError, Fault::DropBefore, Fault::DropAfter] {
            let n = all.iter().filter(|f| **f == kind).count();
            assert!((800..1200).contains(&n), "{kind:?}: {n}");
        }
        let with_retry = all
            .iter()
            .filter(|f| matches!(f, Fault::Unavailable { retry_after: Some(1..=3) }))
            .count();
        let without =
            all.iter().filter(|f| **f == Fault::Unavailable { retry_after: None }).count();
        assert!(with_retry > 350 && without > 350, "{with_retry} {without}");
        let some = (0..1000).filter(|_| draw(&mut rng, 0.1).is_some()).count();
        assert!((50..150).contains(&some), "{some}");
        assert!((0..100).all(|_| matches!(draw_cpu_throttle(&mut rng, 1.0), Some(1..=60))));
    }
}
