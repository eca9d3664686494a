//! The generic cell rate algorithm: a rate limit with a burst, kept as one number per bucket
//! (the theoretical arrival time, TAT). The same arithmetic runs in memory here and in Redis's
//! Lua script (`redis.rs`), so one node and many agree on every decision.

/// A rate with a burst, in the units the algorithm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between requests at the sustained rate (T).
    pub emission_ns: u64,
    /// How far ahead of now the TAT may run: `(burst - 1) * T` (τ).
    pub tolerance_ns: u64,
    /// Requests allowed at once.
    pub burst: u32,
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that could still be made at once after this one.
    pub remaining: u32,
    /// Nanoseconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_ns: u64,
    /// Nanoseconds until a refused request would be allowed (`Retry-After`); 0 when allowed.
    pub retry_ns: u64,
}

impl Gcra {
    /// `count` requests per `period_ns`, with `burst` at once (at least 1).
    pub fn new(count: u64, period_ns: u64, burst: u32) -> Option<Gcra> {
        if count == 0 || period_ns == 0 || burst == 0 {
            return None;
        }
        let emission_ns = (period_ns / count).max(1);
        let tolerance_ns = emission_ns.checked_mul(u64::from(burst) - 1)?;
        Some(Gcra { emission_ns, tolerance_ns, burst })
    }

    /// Decides a request at `now_ns` against the bucket's stored TAT (`None`: a fresh bucket).
    /// Returns the decision and the TAT to store (unchanged when refused).
    pub fn decide(&self, now_ns: u64, tat_ns: Option<u64>) -> (Decision, u64) {
        let tat = tat_ns.unwrap_or(now_ns).max(now_ns);
        let new_tat = tat.saturating_add(self.emission_ns);
        // Allowed if the new TAT runs no further ahead than the burst permits.
        let ahead = new_tat - now_ns;
        let limit = self.tolerance_ns.saturating_add(self.emission_ns);
        if ahead > limit {
            let retry_ns = ahead - limit;
            let decision = Decision { allowed: false, remaining: 0, reset_ns: tat - now_ns, retry_ns };
            return (decision, tat);
        }
        let remaining = ((limit - ahead) / self.emission_ns).min(u64::from(self.burst)) as u32;
        (Decision { allowed: true, remaining, reset_ns: ahead, retry_ns: 0 }, new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_allowed_at_once_then_the_rate_holds() {
        let gcra = Gcra::new(10, SECOND, 5).unwrap();
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..5 {
            let (decision, next) = gcra.decide(0, tat);
            assert!(decision.allowed);
            remaining.push(decision.remaining);
            tat = Some(next);
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let (refused, unchanged) = gcra.decide(0, tat);
        assert!(!refused.allowed);
        assert_eq!(Some(unchanged), tat, "a refusal costs nothing");
        assert_eq!(refused.retry_ns, SECOND / 10, "one emission interval until the next slot");
        // A tenth of a second later exactly one more fits.
        let (decision, next) = gcra.decide(SECOND / 10, tat);
        assert!(decision.allowed);
        assert!(!gcra.decide(SECOND / 10, Some(next)).0.allowed);
    }

    #[test]
    fn over_a_long_run_the_accepted_rate_is_the_limit() {
        let gcra = Gcra::new(100, SECOND, 10).unwrap();
        let (mut tat, mut accepted) = (None, 0u64);
        // Offered 1000/s for 10 s.
        for i in 0..10_000u64 {
            let (decision, next) = gcra.decide(i * SECOND / 1000, tat);
            if decision.allowed {
                accepted += 1;
                tat = Some(next);
            }
        }
        assert!((1000..=1010).contains(&accepted), "{accepted}");
    }

    #[test]
    fn absurd_limits_are_refused() {
        assert!(Gcra::new(0, SECOND, 1).is_none());
        assert!(Gcra::new(1, 0, 1).is_none());
        assert!(Gcra::new(1, SECOND, 0).is_none());
        assert!(Gcra::new(1, u64::MAX, u32::MAX).is_none(), "tolerance overflows");
    }
}
