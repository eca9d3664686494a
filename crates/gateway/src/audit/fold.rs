//! Folding of repeated identical refusals of callers without an accepted credential.
//!
//! Anyone can send requests without a key, and each refusal is a record: unfolded, one client
//! could fill the disk (hundreds of bytes a refusal, thousands a second). The first refusal of a
//! kind (same client, method, route, reason and status) is written as usual; identical ones for
//! the next [`WINDOW`] are counted, and one `refusals_folded` record then says how many there
//! were. Nothing is dropped silently: every refusal is either its own record or counted in one.
//! When the table is full, refusals are written one by one again.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{AuditEvent, RequestRecord};

/// How long identical refusals are counted before their count is written.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Kinds of refusal counted at once at most (a bound on memory; past it, nothing is folded).
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    client: String,
    method: String,
    route: String,
    reason: String,
    status: u16,
}

#[derive(Debug)]
struct Counting {
    opened: Instant,
    first: i64,
    last: i64,
    count: u64,
}

/// What to do with one request record.
#[derive(Debug, Default)]
pub struct Decision {
    /// The count of an earlier window of the same kind, to write first.
    pub summary: Option<AuditEvent>,
    /// The record was counted, not to be written itself.
    pub folded: bool,
}

#[derive(Debug, Default)]
pub struct Folds {
    counting: Mutex<HashMap<Kind, Counting>>,
}

/// Refusals of callers the gateway does not know: no accepted credential, or anonymous.
fn foldable(record: &RequestRecord) -> bool {
    record.decision == super::Decision::Deny && (record.principal == "-" || record.principal.starts_with("anonymous:"))
}

fn summary(kind: Kind, counting: &Counting) -> AuditEvent {
    AuditEvent::RefusalsFolded {
        client: kind.client,
        method: kind.method,
        route: kind.route,
        reason: kind.reason,
        status: kind.status,
        count: counting.count,
        first: counting.first,
        last: counting.last,
    }
}

impl Folds {
    /// Counts `record` if it repeats a refusal written within the window.
    pub fn observe(&self, record: &RequestRecord, now: Instant, unix: i64) -> Decision {
        if !foldable(record) {
            return Decision::default();
        }
        let kind = Kind {
            client: record.client.clone(),
            method: record.method.clone(),
            route: record.route.clone(),
            reason: record.reason.clone(),
            status: record.status,
        };
        let mut counting = self.counting.lock().unwrap_or_else(PoisonError::into_inner);
        let mut decision = Decision::default();
        if let Some(open) = counting.get_mut(&kind) {
            if now.duration_since(open.opened) < WINDOW {
                open.count += 1;
                open.last = unix;
                decision.folded = true;
                return decision;
            }
            // The window ended: its count goes first, and this record opens a new one.
            if let Some(ended) = counting.remove(&kind)
                && ended.count > 0
            {
                decision.summary = Some(summary(kind.clone(), &ended));
            }
        }
        if counting.len() < CAPACITY {
            counting.insert(kind, Counting { opened: now, first: unix, last: unix, count: 0 });
        }
        decision
    }

    /// The counts of windows that have ended (all of them when `all`), removed from the table.
    pub fn due(&self, now: Instant, all: bool) -> Vec<AuditEvent> {
        let mut counting = self.counting.lock().unwrap_or_else(PoisonError::into_inner);
        let ended: Vec<Kind> = counting
            .iter()
            .filter(|(_, open)| all || now.duration_since(open.opened) >= WINDOW)
            .map(|(kind, _)| kind.clone())
            .collect();
        let mut summaries = Vec::new();
        for kind in ended {
            if let Some(open) = counting.remove(&kind)
                && open.count > 0
            {
                summaries.push(summary(kind, &open));
            }
        }
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(client: &str, reason: &str) -> RequestRecord {
        RequestRecord {
            request_id: "r".into(),
            principal: "-".into(),
            client: client.into(),
            method: "GET".into(),
            route: "/v2/models/{model}".into(),
            model: None,
            action: crate::audit::RequestAction::Metadata,
            decision: crate::audit::Decision::Deny,
            reason: reason.into(),
            status: 401,
            latency_us: 1,
            rows: None,
            prompt_sha256: None,
            redacted: std::collections::BTreeMap::new(),
            tokens: None,
        }
    }

    #[test]
    fn identical_anonymous_refusals_are_counted_and_the_count_is_written() {
        let folds = Folds::default();
        let start = Instant::now();
        assert!(!folds.observe(&refusal("a", "no_credential"), start, 100).folded, "the first is written");
        for i in 0..999 {
            assert!(folds.observe(&refusal("a", "no_credential"), start, 100 + i / 200).folded);
        }
        assert!(!folds.observe(&refusal("b", "no_credential"), start, 100).folded, "another client is another kind");
        assert!(!folds.observe(&refusal("a", "unknown_key"), start, 100).folded, "another reason too");
        let mut allowed = refusal("a", "ok");
        allowed.decision = crate::audit::Decision::Allow;
        assert!(!folds.observe(&allowed, start, 100).folded, "only refusals fold");
        let mut keyed = refusal("a", "rate_limited");
        keyed.principal = "key:abc".into();
        assert!(!folds.observe(&keyed, start, 100).folded, "known callers are never folded");

        assert!(folds.due(start, false).is_empty(), "the window is still open");
        let later = start + WINDOW;
        let due = folds.due(later, false);
        assert_eq!(due.len(), 1, "{due:?}");
        let AuditEvent::RefusalsFolded { count, client, first, last, .. } = &due[0] else { panic!("{due:?}") };
        assert_eq!((*count, client.as_str(), *first, *last), (999, "a", 100, 104));
        assert!(folds.due(later, true).is_empty(), "kinds with nothing counted leave no summary");
    }

    #[test]
    fn a_refusal_after_the_window_writes_the_count_first() {
        let folds = Folds::default();
        let start = Instant::now();
        folds.observe(&refusal("a", "no_credential"), start, 1);
        folds.observe(&refusal("a", "no_credential"), start, 2);
        let next = folds.observe(&refusal("a", "no_credential"), start + WINDOW, 20);
        assert!(!next.folded);
        assert!(matches!(next.summary, Some(AuditEvent::RefusalsFolded { count: 1, .. })));
    }
}
