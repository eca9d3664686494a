//! Cost and abuse controls: rate limits (GCRA) per principal and per model, per-address limits
//! for anonymous callers, requests in flight per principal, and request and row quotas per key
//! per UTC day and month, with usage accounted per key, model and day.
//!
//! The router asks [`Limiter::admit`] after authentication and before the handler; the
//! handler charges inference rows with [`Limiter::charge_rows`] once it has decoded them.
//! Refusals are 429 (`rate_limited`, `quota_exhausted`) or 503 (`overloaded`), with
//! `Retry-After`; allowed requests carry `RateLimit-*` headers for the principal's bucket.

pub mod budget;
pub mod gcra;
pub mod memory;
pub mod redis;
pub use crate::limit_spec as spec;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::HeaderMap;

use crate::{
    config::{LimitsConfig, RateLimit},
    error::ApiError,
    principal::{Principal, PrincipalKind},
    store::{Store, Usage},
};
pub use memory::InFlightPermit;
pub use spec::RateHeaders;
use spec::{Quota, Window};

/// The limits that apply to one principal: its key's own, else the config's defaults. For a
/// delegate key acting for an end user these are the key's, counted over all its users, and
/// `user` holds the end user's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub rate: Option<RateLimit>,
    pub concurrency: Option<u32>,
    pub quotas: Vec<Quota>,
    pub row_quotas: Vec<Quota>,
    pub user: Option<UserLimits>,
}

/// What one end user of a delegate key may do, and how many users the key may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLimits {
    pub rate: Option<RateLimit>,
    pub concurrency: Option<u32>,
    pub quotas: Vec<Quota>,
    pub max_users: spec::UserCap,
}

impl Effective {
    /// A principal's limits over the defaults, field by field.
    pub fn of(principal: &Principal, defaults: &LimitsConfig) -> Effective {
        let key = &principal.limits;
        let rate = match key.rate {
            Some(rate) => crate::config::rate_limit(rate, key.burst).ok(),
            None => defaults.rate,
        };
        Effective {
            rate,
            concurrency: key.concurrency.or(defaults.concurrency),
            quotas: if key.quotas.is_empty() { defaults.quotas.clone() } else { key.quotas.clone() },
            row_quotas: if key.row_quotas.is_empty() { defaults.row_quotas.clone() } else { key.row_quotas.clone() },
            user: principal.delegator.is_some().then(|| UserLimits {
                rate: key.user_rate.and_then(|rate| crate::config::rate_limit(rate, key.user_burst).ok()),
                concurrency: key.user_concurrency,
                quotas: key.user_quotas.clone(),
                max_users: key.max_users.unwrap_or(defaults.max_users),
            }),
        }
    }
}

/// One decision's inputs: the buckets to spend one request from (the principal's first, whose
/// headers the client sees when `headers`), and the quotas to spend `amount` from (requests, or
/// rows when `rows`), each group under its own usage id (a delegate key's, and its end user's).
#[derive(Clone, Copy)]
struct Ask<'a> {
    buckets: &'a [(String, RateLimit)],
    headers: bool,
    quotas: &'a [(&'a str, &'a [Quota])],
    amount: u64,
    rows: bool,
}

/// What an admitted request holds until it ends.
#[derive(Debug, Default)]
pub struct Admission {
    pub headers: Option<RateHeaders>,
    _in_flight: Vec<InFlightPermit>,
}

/// Counts per key in the current day and month, kept in memory and seeded from the store.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    rows: u64,
    tokens_in: u64,
    tokens_out: u64,
    micros: u64,
    estimated: u64,
}

impl Counts {
    fn of(usage: &Usage) -> Counts {
        Counts {
            requests: usage.requests,
            rows: usage.rows,
            tokens_in: usage.tokens_in,
            tokens_out: usage.tokens_out,
            micros: usage.spend_micros,
            estimated: usage.estimated,
        }
    }

    fn plus(self, other: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_add(other.requests),
            rows: self.rows.saturating_add(other.rows),
            tokens_in: self.tokens_in.saturating_add(other.tokens_in),
            tokens_out: self.tokens_out.saturating_add(other.tokens_out),
            micros: self.micros.saturating_add(other.micros),
            estimated: self.estimated.saturating_add(other.estimated),
        }
    }

    fn minus(self, other: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(other.requests),
            rows: self.rows.saturating_sub(other.rows),
            tokens_in: self.tokens_in.saturating_sub(other.tokens_in),
            tokens_out: self.tokens_out.saturating_sub(other.tokens_out),
            micros: self.micros.saturating_sub(other.micros),
            estimated: self.estimated.saturating_sub(other.estimated),
        }
    }

    fn is_zero(&self) -> bool {
        self.requests == 0
            && self.rows == 0
            && self.tokens_in == 0
            && self.tokens_out == 0
            && self.micros == 0
            && self.estimated == 0
    }
}

/// The limiter: this node's state, and Redis's when configured.
pub struct Limiter {
    config: LimitsConfig,
    /// Shared state across nodes (`limits.backend = "redis://..."`).
    shared: Option<Arc<redis::Shared>>,
    /// Decide locally when Redis is unreachable (`limits.on_unavailable = "local"`).
    local_fallback: bool,
    buckets: memory::Buckets,
    in_flight: memory::InFlight,
    store: Arc<dyn Store>,
    /// (kid, window, period id such as 2026-11-25 or 2026-11) → counts.
    quota_counts: tokio::sync::Mutex<HashMap<(String, Window, String), Counts>>,
    /// The end users each delegate key named in its current window (this node's count).
    users: memory::Users,
    /// Refused authentications per client address (this node's; a cheap guard, no Redis).
    refusals: memory::Buckets,
    /// Usage not yet written to the store: (kid, model, day) → counts.
    pending: Mutex<HashMap<(String, String, String), Counts>>,
    /// Token and spend budgets on this node (when not in Redis).
    budgets: Mutex<budget::Counters>,
    /// Budget settlements for Redis not yet sent, merged by counter (one script call carries
    /// every settlement made while the previous one was in flight).
    settling: Mutex<HashMap<String, i64>>,
    settler: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("config", &self.config).finish_non_exhaustive()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

fn seconds_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

fn period_id(window: Window, now: i64) -> String {
    match window {
        Window::Day => crate::time::day_of(now),
        Window::Month => crate::time::month_start(now)[..7].to_owned(),
    }
}

/// The first day of the window holding `now`: `2026-12-02`, or `2026-12-01` for the month.
fn window_start(window: Window, now: i64) -> String {
    match window {
        Window::Day => crate::time::day_of(now),
        Window::Month => crate::time::month_start(now),
    }
}

/// Seconds until a window's period ends (for `Retry-After` on `quota_exhausted`).
fn seconds_left(window: Window, now: i64) -> i64 {
    match window {
        Window::Day => crate::time::until_next_day(now),
        Window::Month => {
            // Step day by day to the 1st of next month: at most 31 steps.
            let mut left = crate::time::until_next_day(now);
            while !crate::time::day_of(now + left).ends_with("-01") {
                left += 86_400;
            }
            left
        }
    }
}

/// The bucket of a client address: IPv4 addresses one by one, IPv6 by /64 (one host holds a
/// whole /64 and could otherwise step through it).
fn address_key(client: Option<IpAddr>) -> String {
    match client {
        Some(IpAddr::V4(ip)) => ip.to_string(),
        Some(IpAddr::V6(ip)) => {
            let segments = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
        }
        None => "unknown".to_owned(),
    }
}

/// The client's address: the socket's peer, unless that peer is a trusted proxy, in which case
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy. An
/// `X-Forwarded-For` from anyone else is ignored, so it cannot move a caller to another bucket.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = peer?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

impl Limiter {
    pub fn new(config: LimitsConfig, store: Arc<dyn Store>) -> Result<Limiter, String> {
        let shared = match &config.backend {
            crate::config::LimitsBackend::Memory => None,
            crate::config::LimitsBackend::Redis { url, prefix, ca_file } => {
                Some(Arc::new(redis::Shared::new(url.expose(), prefix, ca_file.as_deref())?))
            }
        };
        Ok(Limiter {
            local_fallback: config.local_fallback,
            shared,
            config,
            buckets: memory::Buckets::default(),
            refusals: memory::Buckets::default(),
            users: memory::Users::default(),
            in_flight: memory::InFlight::default(),
            store,
            quota_counts: tokio::sync::Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            budgets: Mutex::new(budget::Counters::default()),
            settling: Mutex::new(HashMap::new()),
            settler: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The shared state, when limits live in Redis.
    pub fn shared(&self) -> Option<&Arc<redis::Shared>> {
        self.shared.as_ref()
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Admits a request of `principal` to `model` (if the path names one), or refuses it.
    pub async fn admit(
        &self,
        principal: &Principal,
        limits: &Effective,
        model: Option<(&str, Option<&RateLimit>)>,
    ) -> Result<Admission, ApiError> {
        let mut admission = Admission::default();
        // A delegate key acting for an end user is limited as a whole (under its own id) and
        // per user (under `key:<kid>/user:<id>`): naming a new user per request gains nothing.
        let whole = principal.delegator.as_ref().unwrap_or(&principal.id).as_str();
        if let Some(cap) = limits.concurrency {
            admission._in_flight.push(self.in_flight.try_acquire(whole, cap).ok_or_else(ApiError::overloaded)?);
        }
        if let (Some(user), Some(_)) = (&limits.user, &principal.delegator) {
            if let Some(cap) = user.concurrency {
                admission
                    ._in_flight
                    .push(self.in_flight.try_acquire(principal.id.as_str(), cap).ok_or_else(ApiError::overloaded)?);
            }
            self.admit_user(whole, principal.id.as_str(), user.max_users).await?;
        }
        // The principal's own bucket first: its headers are the ones the client sees.
        let own = match principal.kind {
            PrincipalKind::Anonymous => self.config.anonymous,
            PrincipalKind::ApiKey
            | PrincipalKind::ClientCert
            | PrincipalKind::IdentityToken
            | PrincipalKind::BrokerToken => limits.rate,
        };
        let mut buckets: Vec<(String, RateLimit)> = Vec::new();
        if let Some(limit) = own {
            buckets.push((format!("p:{whole}"), limit));
        }
        if let Some(limit) = limits.user.as_ref().and_then(|user| user.rate).filter(|_| principal.delegator.is_some()) {
            buckets.push((format!("p:{}", principal.id), limit));
        }
        if let Some((device, limit)) = &principal.device {
            buckets.push((format!("p:{device}"), *limit));
        }
        if let Some((name, Some(limit))) = model {
            buckets.push((format!("m:{name}"), *limit));
        }
        let kid = principal.usage_id();
        let mut quotas: Vec<(&str, &[Quota])> = Vec::new();
        if let Some(whole) = principal.key_usage_id() {
            quotas.push((whole, &limits.quotas));
        }
        if let (Some(kid), Some(user)) = (kid.filter(|_| principal.delegator.is_some()), &limits.user) {
            quotas.push((kid, &user.quotas));
        }
        let ask = Ask { buckets: &buckets, headers: own.is_some(), quotas: &quotas, amount: 1, rows: false };
        admission.headers = self.decide(&ask).await?;
        if let Some(kid) = kid {
            self.record_usage(kid, model.map(|(name, _)| name), Counts { requests: 1, ..Counts::default() });
        }
        Ok(admission)
    }

    /// Before authentication: refuses an address whose refused authentications have used up
    /// `[limits] unauthenticated_rate`, at once and without a store lookup.
    pub fn check_unauthenticated(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        let limit = self.config.unauthenticated;
        let Some(gcra) = gcra::Gcra::new(limit.rate.count, limit.rate.period_ns(), limit.burst) else {
            return Ok(());
        };
        let decision = self.refusals.peek(&address_key(client), &gcra, now_ns());
        if decision.allowed {
            return Ok(());
        }
        let rate = RateHeaders { limit: limit.burst, remaining: 0, reset: seconds_ceil(decision.reset_ns) };
        Err(ApiError::rate_limited(seconds_ceil(decision.retry_ns).max(1), rate)
            .with_audit_reason(crate::reason::AuditReason::UnauthenticatedLimited))
    }

    /// After a refused authentication: spends one from the address's allowance.
    pub fn count_unauthenticated(&self, client: Option<IpAddr>) {
        let limit = self.config.unauthenticated;
        if let Some(gcra) = gcra::Gcra::new(limit.rate.count, limit.rate.period_ns(), limit.burst) {
            self.refusals.decide(&address_key(client), &gcra, now_ns());
        }
    }

    /// Counts `user` among the end users delegate key `key` named in this window; refuses a
    /// new one past the cap (known users go on).
    async fn admit_user(&self, key: &str, user: &str, cap: spec::UserCap) -> Result<(), ApiError> {
        let now = crate::time::now();
        let window = u64::try_from(now).unwrap_or(0) / cap.window_seconds;
        let retry = cap.window_seconds - u64::try_from(now).unwrap_or(0) % cap.window_seconds;
        if let Some(shared) = &self.shared {
            let set = shared.key(format_args!("u:{key}:{window}"));
            match shared.admit_member(&set, user, cap.count, cap.window_seconds + 60).await {
                Ok(true) => return Ok(()),
                Ok(false) => return Err(ApiError::too_many_users(cap, retry)),
                Err(error) if self.local_fallback => {
                    tracing::warn!(%error, "shared limiter unavailable; counting end users on this node");
                }
                Err(error) => {
                    tracing::error!(%error, "shared limiter unavailable; refusing limited requests");
                    return Err(ApiError::limiter_unavailable());
                }
            }
        }
        if self.users.admit(key, user, window, cap.count) { Ok(()) } else { Err(ApiError::too_many_users(cap, retry)) }
    }

    /// Spends one request from each of `buckets` (all or none refuse): limits outside the
    /// principal model, such as token issuance per user and per device key.
    pub async fn spend(&self, buckets: &[(String, RateLimit)]) -> Result<(), ApiError> {
        let ask = Ask { buckets, headers: false, quotas: &[], amount: 1, rows: false };
        self.decide(&ask).await.map(|_| ())
    }

    /// Charges `rows` inference rows to a key once the request is decoded.
    pub async fn charge_rows(
        &self,
        principal: &Principal,
        limits: &Effective,
        model: &str,
        rows: u64,
    ) -> Result<(), ApiError> {
        let (Some(kid), Some(whole)) = (principal.usage_id(), principal.key_usage_id()) else {
            return Ok(());
        };
        if rows == 0 {
            return Ok(());
        }
        // Row quotas are the key's, over all its end users.
        let quotas = [(whole, limits.row_quotas.as_slice())];
        let ask = Ask { buckets: &[], headers: false, quotas: &quotas, amount: rows, rows: true };
        self.decide(&ask).await?;
        self.record_usage(kid, Some(model), Counts { rows, ..Counts::default() });
        Ok(())
    }

    /// Decides an [`Ask`] where the limits live: Redis when configured, else this node.
    async fn decide(&self, ask: &Ask<'_>) -> Result<Option<RateHeaders>, ApiError> {
        let Ask { buckets, headers, quotas, amount, rows } = *ask;
        if buckets.is_empty() && quotas.iter().all(|(_, quotas)| quotas.is_empty()) {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            match self.decide_shared(shared, ask).await {
                Ok(result) => return result,
                Err(error) if self.local_fallback => {
                    tracing::warn!(%error, "shared limiter unavailable; deciding with this node's limits");
                }
                Err(error) => {
                    tracing::error!(%error, "shared limiter unavailable; refusing limited requests");
                    return Err(ApiError::limiter_unavailable());
                }
            }
        }
        let now = now_ns();
        let mut first = None;
        // All or none, as in Redis: a request one bucket refuses spends nothing from the others
        // (a delegate key's user refused by its own limit keeps the key's budget).
        let gcras: Vec<(&str, &RateLimit, gcra::Gcra)> = buckets
            .iter()
            .filter_map(|(key, limit)| {
                Some((key.as_str(), limit, gcra::Gcra::new(limit.rate.count, limit.rate.period_ns(), limit.burst)?))
            })
            .collect();
        for (key, limit, gcra) in &gcras {
            let decision = self.buckets.peek(key, gcra, now);
            if !decision.allowed {
                let rate = RateHeaders { limit: limit.burst, remaining: 0, reset: seconds_ceil(decision.reset_ns) };
                return Err(ApiError::rate_limited(seconds_ceil(decision.retry_ns).max(1), rate));
            }
        }
        for (index, (key, limit, gcra)) in gcras.iter().enumerate() {
            let decision = self.buckets.decide(key, gcra, now);
            let rate = RateHeaders {
                limit: limit.burst,
                remaining: decision.remaining,
                reset: seconds_ceil(decision.reset_ns),
            };
            if !decision.allowed {
                return Err(ApiError::rate_limited(seconds_ceil(decision.retry_ns).max(1), rate));
            }
            if index == 0 && headers {
                first = Some(rate);
            }
        }
        self.local_quotas(quotas, amount, rows).await?;
        Ok(first)
    }

    async fn decide_shared(
        &self,
        shared: &redis::Shared,
        ask: &Ask<'_>,
    ) -> Result<Result<Option<RateHeaders>, ApiError>, redis::SharedError> {
        let Ask { buckets, headers, quotas, amount, rows } = *ask;
        let now = crate::time::now();
        // One counter per (usage id, quota), in this order; `NeedsSeed` names one by index.
        let quotas: Vec<(&str, &Quota)> =
            quotas.iter().flat_map(|(kid, quotas)| quotas.iter().map(move |quota| (*kid, quota))).collect();
        let gcras: Vec<(String, gcra::Gcra)> = buckets
            .iter()
            .filter_map(|(key, limit)| {
                let gcra = gcra::Gcra::new(limit.rate.count, limit.rate.period_ns(), limit.burst)?;
                Some((shared.key(format_args!("{key}")), gcra))
            })
            .collect();
        let what = if rows { "rows" } else { "requests" };
        let counters: Vec<redis::Counter> = quotas
            .iter()
            .map(|(kid, quota)| redis::Counter {
                key: shared.key(format_args!(
                    "q:{kid}:{what}:{}:{}",
                    quota.window.as_str(),
                    period_id(quota.window, now)
                )),
                limit: quota.count,
                increment: amount,
                ttl: u64::try_from(seconds_left(quota.window, now)).unwrap_or(0) + 3600,
            })
            .collect();
        // A missing counter is seeded from the store once, then the decision is asked again.
        for _ in 0..=counters.len() {
            match shared.admit(&gcras, &counters).await? {
                redis::Verdict::Allowed { remaining, reset_us } => {
                    let rate = buckets.first().filter(|_| headers).map(|(_, limit)| RateHeaders {
                        limit: limit.burst,
                        remaining: remaining.unwrap_or(0),
                        reset: (reset_us).div_ceil(1_000_000),
                    });
                    return Ok(Ok(rate));
                }
                redis::Verdict::RateLimited { index, reset_us, retry_us } => {
                    let limit = buckets.get(index).map_or(0, |(_, limit)| limit.burst);
                    let rate = RateHeaders { limit, remaining: 0, reset: reset_us.div_ceil(1_000_000) };
                    return Ok(Err(ApiError::rate_limited(retry_us.div_ceil(1_000_000).max(1), rate)));
                }
                redis::Verdict::QuotaExhausted { index } => {
                    let Some((_, quota)) = quotas.get(index) else { break };
                    return Ok(Err(ApiError::quota_exhausted(what, quota, seconds_left(quota.window, now))));
                }
                redis::Verdict::NeedsSeed { index } => {
                    let (Some((kid, quota)), Some(counter)) = (quotas.get(index), counters.get(index)) else {
                        break;
                    };
                    let used = match self.stored_usage(kid, quota.window, now).await {
                        Ok(counts) => {
                            if rows {
                                counts.rows
                            } else {
                                counts.requests
                            }
                        }
                        Err(error) => return Ok(Err(error)),
                    };
                    shared.seed(&counter.key, used, counter.ttl).await?;
                }
            }
        }
        Err(redis::SharedError::new("quota counters could not be seeded"))
    }

    /// A key's usage in the window that contains `now`: the store's, plus this node's not yet
    /// written.
    async fn stored_usage(&self, kid: &str, window: Window, now: i64) -> Result<Counts, ApiError> {
        let since = window_start(window, now);
        let stored = self.stored_rows(Some(kid), &since).await?;
        Ok(stored.iter().fold(self.pending_since(kid, &since), |total, row| total.plus(Counts::of(row))))
    }

    /// All callers' usage of `model` in the window that contains `now`: the store's, plus this
    /// node's not yet written.
    async fn stored_model_usage(&self, model: &str, window: Window, now: i64) -> Result<Counts, ApiError> {
        let since = window_start(window, now);
        let stored = self.stored_rows(None, &since).await?;
        let pending = {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending
                .iter()
                .filter(|((_, m, day), _)| m == model && day.as_str() >= since.as_str())
                .fold(Counts::default(), |total, (_, counts)| total.plus(*counts))
        };
        Ok(stored.iter().filter(|row| row.model == model).fold(pending, |total, row| total.plus(Counts::of(row))))
    }

    /// The store's usage rows of `kid` (every key's for `None`) since `since`; a store that does
    /// not answer refuses the request.
    async fn stored_rows(&self, kid: Option<&str>, since: &str) -> Result<Vec<Usage>, ApiError> {
        self.store.usage(kid, since).await.map_err(|error| {
            tracing::error!(%error, "usage lookup failed; refusing the request");
            ApiError::limiter_unavailable()
        })
    }

    /// Checks and counts `amount` (requests, or rows when `rows`) against each group's quotas
    /// on this node, all or none: a refusal counts nothing.
    async fn local_quotas(&self, groups: &[(&str, &[Quota])], amount: u64, rows: bool) -> Result<(), ApiError> {
        if groups.iter().all(|(_, quotas)| quotas.is_empty()) {
            return Ok(());
        }
        let now = crate::time::now();
        let mut counts = self.quota_counts.lock().await;
        for (kid, quotas) in groups {
            for quota in *quotas {
                let id = ((*kid).to_owned(), quota.window, period_id(quota.window, now));
                if !counts.contains_key(&id) {
                    let seeded = self.stored_usage(kid, quota.window, now).await?;
                    counts.retain(|(_, window, period), _| *window != quota.window || *period == id.2);
                    counts.insert(id, seeded);
                }
            }
        }
        for (kid, quotas) in groups {
            for quota in *quotas {
                let current = counts
                    .get(&((*kid).to_owned(), quota.window, period_id(quota.window, now)))
                    .copied()
                    .unwrap_or_default();
                let used = if rows { current.rows } else { current.requests };
                if used.saturating_add(amount) > quota.count {
                    let what = if rows { "rows" } else { "requests" };
                    return Err(ApiError::quota_exhausted(what, quota, seconds_left(quota.window, now)));
                }
            }
        }
        for (kid, _) in groups {
            for window in [Window::Day, Window::Month] {
                if let Some(counts) = counts.get_mut(&((*kid).to_owned(), window, period_id(window, now))) {
                    if rows {
                        counts.rows += amount;
                    } else {
                        counts.requests += amount;
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts usage for the store (written by the flusher).
    fn record_usage(&self, kid: &str, model: Option<&str>, counts: Counts) {
        let Some(model) = model else { return };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let entry =
            pending.entry((kid.to_owned(), model.to_owned(), crate::time::day_of(crate::time::now()))).or_default();
        *entry = entry.plus(counts);
    }

    fn pending_since(&self, kid: &str, since: &str) -> Counts {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        // A key's usage includes that of the end users it named (`<kid>/user:<id>`).
        let includes =
            |k: &str| k == kid || (!kid.contains('/') && k.strip_prefix(kid).is_some_and(|rest| rest.starts_with('/')));
        pending
            .iter()
            .filter(|((k, _, day), _)| includes(k) && day.as_str() >= since)
            .fold(Counts::default(), |total, (_, counts)| total.plus(*counts))
    }

    /// Writes the usage counted since the last flush to the store. On failure the counts are
    /// kept and written with the next flush.
    pub async fn flush_usage(&self) {
        let batch: Vec<Usage> = {
            let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending
                .iter()
                .map(|((kid, model, day), counts)| Usage {
                    kid: kid.clone(),
                    model: model.clone(),
                    day: day.clone(),
                    requests: counts.requests,
                    rows: counts.rows,
                    tokens_in: counts.tokens_in,
                    tokens_out: counts.tokens_out,
                    spend_micros: counts.micros,
                    estimated: counts.estimated,
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        match self.store.add_usage(&batch).await {
            Ok(()) => {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for row in batch {
                    let written = Counts::of(&row);
                    let key = (row.kid, row.model, row.day);
                    if let Some(counts) = pending.get_mut(&key) {
                        *counts = counts.minus(written);
                        if counts.is_zero() {
                            pending.remove(&key);
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "usage could not be written; will retry"),
        }
    }

    /// Flushes usage every `interval` until `stop`, then once more.
    pub async fn run_flusher(self: Arc<Self>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.flush_usage().await,
                () = crate::shutdown::stopped(&mut stop) => break,
            }
        }
        self.flush_usage().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Some("10.1.2.3:5000".parse().unwrap());
        let stranger = Some("198.51.100.7:5000".parse().unwrap());
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        // A stranger's spoofed header is ignored.
        assert_eq!(client_ip(stranger, &headers(&["203.0.113.9"]), &trusted), ip("198.51.100.7"));
        // Through a trusted proxy: the right-most untrusted address.
        assert_eq!(client_ip(proxy, &headers(&["203.0.113.9, 10.0.0.5"]), &trusted), ip("203.0.113.9"));
        // A client that prepends a fake address cannot choose its bucket.
        assert_eq!(client_ip(proxy, &headers(&["1.2.3.4, 203.0.113.9"]), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(proxy, &headers(&["1.2.3.4", "203.0.113.9"]), &trusted), ip("203.0.113.9"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(client_ip(proxy, &headers(&["nonsense"]), &trusted), ip("10.1.2.3"));
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), ip("10.1.2.3"));
    }

    #[test]
    fn quota_windows_end_at_utc_midnight_and_month_end() {
        // 2026-11-25T22:49:27Z.
        let now = 1_795_646_967;
        assert_eq!(seconds_left(Window::Day, now), 86_400 - 82_167);
        assert_eq!(crate::time::day_of(now + seconds_left(Window::Month, now)), "2026-12-01");
        assert_eq!(period_id(Window::Month, now), "2026-11");
    }
}
