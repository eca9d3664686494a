//! In-memory limiter state for one node: GCRA buckets and per-principal in-flight counts.
//! Sharded maps keep contention low; buckets that have refilled are dropped, so memory is
//! bounded by the callers active within one burst window.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
};

use super::gcra::{Decision, Gcra};

const SHARDS: usize = 16;
/// A shard is swept for refilled buckets when it grows past this.
const SWEEP_AT: usize = 4096;

/// GCRA buckets by key.
#[derive(Debug)]
pub struct Buckets {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    hasher: RandomState,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }
}

impl Buckets {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, u64>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Decides one request on `key`'s bucket at `now_ns`.
    pub fn decide(&self, key: &str, gcra: &Gcra, now_ns: u64) -> Decision {
        let Ok(mut shard) = self.shard(key).lock() else {
            // A poisoned lock means a panic mid-update; refuse rather than wave through.
            return Decision { allowed: false, remaining: 0, reset_ns: gcra.emission_ns, retry_ns: gcra.emission_ns };
        };
        let (decision, tat) = gcra.decide(now_ns, shard.get(key).copied());
        if decision.allowed {
            if shard.len() >= SWEEP_AT && !shard.contains_key(key) {
                shard.retain(|_, tat| *tat > now_ns);
            }
            shard.insert(key.to_owned(), tat);
        }
        decision
    }

    /// What [`Buckets::decide`] would answer, without spending anything.
    pub fn peek(&self, key: &str, gcra: &Gcra, now_ns: u64) -> Decision {
        let Ok(shard) = self.shard(key).lock() else {
            return Decision { allowed: false, remaining: 0, reset_ns: gcra.emission_ns, retry_ns: gcra.emission_ns };
        };
        gcra.decide(now_ns, shard.get(key).copied()).0
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().map_or(0, |shard| shard.len())).sum()
    }
}

/// Requests in flight per principal, capped.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

/// One request's place in its principal's in-flight count; released when dropped.
#[derive(Debug)]
pub struct InFlightPermit {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl InFlight {
    /// A place if fewer than `cap` requests of `key` are in flight.
    pub fn try_acquire(&self, key: &str, cap: u32) -> Option<InFlightPermit> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(key.to_owned()).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(InFlightPermit { counts: Arc::clone(&self.counts), key: key.to_owned() })
    }
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The end users each delegate key named in its current fixed window, up to its cap.
#[derive(Debug, Default)]
pub struct Users {
    /// key id → (window number, users seen in it).
    keys: Mutex<HashMap<String, (u64, std::collections::HashSet<String>)>>,
}

impl Users {
    /// Whether `user` may be named by `key` in `window`: one it named already, or a new one
    /// while fewer than `cap` were named.
    pub fn admit(&self, key: &str, user: &str, window: u64, cap: u64) -> bool {
        let Ok(mut keys) = self.keys.lock() else {
            return false;
        };
        // Windows that ended are dropped when any key moves on, so memory stays bounded by the
        // keys active in one window times their caps.
        if keys.get(key).is_some_and(|(seen, _)| *seen != window) {
            keys.retain(|_, (seen, _)| *seen == window);
        }
        let (_, users) = keys.entry(key.to_owned()).or_insert_with(|| (window, std::collections::HashSet::new()));
        if users.contains(user) {
            return true;
        }
        if u64::try_from(users.len()).unwrap_or(u64::MAX) >= cap {
            return false;
        }
        users.insert(user.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_separate_and_refilled_ones_are_swept() {
        let buckets = Buckets::default();
        let gcra = Gcra::new(1, 1_000_000_000, 1).unwrap();
        assert!(buckets.decide("a", &gcra, 0).allowed);
        assert!(!buckets.decide("a", &gcra, 0).allowed);
        assert!(buckets.decide("b", &gcra, 0).allowed, "another key has its own bucket");
        for i in 0..(SHARDS * SWEEP_AT * 2) {
            buckets.decide(&format!("k{i}"), &gcra, 10_000_000_000 + i as u64 * 2_000_000_000);
        }
        assert!(buckets.len() < SHARDS * SWEEP_AT + SHARDS, "{}", buckets.len());
    }

    #[test]
    fn in_flight_is_capped_and_released() {
        let in_flight = InFlight::default();
        let first = in_flight.try_acquire("k", 2).unwrap();
        let _second = in_flight.try_acquire("k", 2).unwrap();
        assert!(in_flight.try_acquire("k", 2).is_none());
        assert!(in_flight.try_acquire("other", 2).is_some());
        drop(first);
        assert!(in_flight.try_acquire("k", 2).is_some());
    }

    #[test]
    fn a_delegate_key_names_at_most_its_cap_of_users_per_window() {
        let users = Users::default();
        assert!(users.admit("k", "a", 1, 2));
        assert!(users.admit("k", "b", 1, 2));
        assert!(!users.admit("k", "c", 1, 2), "a third user in the window");
        assert!(users.admit("k", "a", 1, 2), "known users go on");
        assert!(users.admit("other", "c", 1, 2), "each key has its own cap");
        assert!(users.admit("k", "c", 2, 2), "a new window starts afresh");
    }
}
