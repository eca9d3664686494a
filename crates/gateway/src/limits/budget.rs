//! Token and spend budgets for language models: reserve, then settle.
//!
//! Before a request leaves for a model, its worst case (the prompt's tokens plus every token it
//! may generate, and what that costs at the model's price) is reserved from every budget that
//! applies: the caller's (a delegate key's for all its end users together), the end user's, and
//! the model's own across all callers. All or none, atomically: one Lua script in Redis decides
//! for every node, one lock decides on this node, so concurrent requests cannot race past a
//! budget and `N` nodes do not allow `N` budgets. A request that does not fit is refused at once
//! (429, with the time its window ends); one that could never fit is a bad request (400). When
//! the answer ends the [`Reservation`] is settled to what was used, and the usage is counted for
//! the store (`keys usage`). Day and month budgets start from the store's usage, so a restart or
//! a new node does not forget what was spent.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError},
};

use super::{Counts, Limiter, redis};
use crate::{
    error::ApiError,
    limit_spec::{Budget, Price, Window, format_usd},
    principal::{Principal, PrincipalKind},
    request::TokenUsage,
};

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Tokens read and written.
    Tokens,
    /// Micro-dollars, at the model's price.
    Spend,
}

/// A budget's window: a UTC minute, day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Minute,
    Day,
    Month,
}

impl Period {
    fn of(window: Window) -> Period {
        match window {
            Window::Day => Period::Day,
            Window::Month => Period::Month,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The id of the window holding `now`: the minute's number, `2026-12-02`, `2026-12`.
    fn id(self, now: i64) -> String {
        match self {
            Period::Minute => (now.div_euclid(60)).to_string(),
            Period::Day => super::period_id(Window::Day, now),
            Period::Month => super::period_id(Window::Month, now),
        }
    }

    /// Seconds until the window holding `now` ends.
    fn seconds_left(self, now: i64) -> i64 {
        match self {
            Period::Minute => 60 - now.rem_euclid(60),
            Period::Day => super::seconds_left(Window::Day, now),
            Period::Month => super::seconds_left(Window::Month, now),
        }
    }
}

/// Where a budget's past usage is kept, to start its counter from after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    /// Under a usage id (a key with its end users, one end user, a token's subject).
    Usage(String),
    /// All callers' usage of one model.
    Model(String),
    /// Nowhere (a client certificate, an anonymous address): the counter starts at zero.
    Nowhere,
}

/// One limit a request spends from.
#[derive(Debug, Clone)]
pub struct Line {
    /// The counter's id without its window: `k:<usage id>` or `m:<model>`.
    subject: String,
    stored: Stored,
    /// For messages: "this key", "this end user", "model 'x'".
    who: String,
    measure: Measure,
    period: Period,
    limit: u64,
}

impl Line {
    fn counter(&self, now: i64) -> String {
        let measure = match self.measure {
            Measure::Tokens => "t",
            Measure::Spend => "usd",
        };
        format!("b:{}:{measure}:{}", self.subject, self.period.id(now))
    }

    fn describe(&self) -> String {
        match self.measure {
            Measure::Tokens => format!("{} tokens per {}", self.limit, self.period.as_str()),
            Measure::Spend => format!("${} per {}", format_usd(self.limit), self.period.as_str()),
        }
    }
}

/// A request's worst case, or what it used: tokens and micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub tokens: u64,
    pub micros: u64,
}

impl Charge {
    pub fn of(price: Option<Price>, prompt: u64, completion: u64) -> Charge {
        Charge {
            tokens: prompt.saturating_add(completion),
            micros: price.map_or(0, |price| price.cost(prompt, completion)),
        }
    }

    fn amount(self, measure: Measure) -> u64 {
        match measure {
            Measure::Tokens => self.tokens,
            Measure::Spend => self.micros,
        }
    }
}

/// What a model brings to a request's budgets.
#[derive(Debug, Clone, Copy)]
pub struct ModelBudget<'a> {
    pub name: &'a str,
    pub budget: &'a Budget,
    pub price: Option<Price>,
}

/// The budgets held for one request until it is settled.
pub struct Reservation {
    limiter: Arc<Limiter>,
    /// Counter, measure, amount reserved.
    held: Vec<(String, Measure, u64)>,
    /// Whether `held` lives in Redis (else in this node's memory).
    shared: bool,
    price: Option<Price>,
    /// Where the usage is counted for the store: (usage id, model).
    usage: Option<(String, String)>,
    settled: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("held", &self.held).finish_non_exhaustive()
    }
}

/// Budget counters on this node: counter id → (window, amount used).
#[derive(Debug, Default)]
pub(super) struct Counters {
    used: HashMap<String, (Period, String, u64)>,
    /// The minute the stale counters were last dropped.
    swept: i64,
}

impl Counters {
    /// Drops counters of windows that ended, at most once a minute.
    fn sweep(&mut self, now: i64) {
        let minute = now.div_euclid(60);
        if minute == self.swept {
            return;
        }
        self.swept = minute;
        self.used.retain(|_, (period, id, _)| *id == period.id(now));
    }
}

impl Limiter {
    /// The budgets a request of `principal` to `model` spends from: the caller's own (its key's,
    /// else `[limits]`'s), a delegate key's end user's, and the model's. A spend cap on a model
    /// without a price cannot be kept: such a request is refused rather than let through free.
    pub fn budget_lines(&self, principal: &Principal, model: ModelBudget<'_>) -> Result<Vec<Line>, ApiError> {
        let mut lines = Vec::new();
        let own = principal.limits.budget.over(&self.config.budget);
        let (subject, stored, who) = match (principal.key_usage_id(), principal.kind) {
            (Some(id), PrincipalKind::ApiKey) => (id.to_owned(), Stored::Usage(id.to_owned()), "this key"),
            (Some(id), _) => (id.to_owned(), Stored::Usage(id.to_owned()), "this caller"),
            (None, _) => (principal.id.to_string(), Stored::Nowhere, "this caller"),
        };
        push_lines(&mut lines, &own, &format!("k:{subject}"), &stored, who);
        if principal.delegator.is_some()
            && let Some(user) = principal.usage_id()
        {
            push_lines(
                &mut lines,
                &principal.limits.user_budget,
                &format!("k:{user}"),
                &Stored::Usage(user.to_owned()),
                "this end user",
            );
        }
        push_lines(
            &mut lines,
            model.budget,
            &format!("m:{}", model.name),
            &Stored::Model(model.name.to_owned()),
            &format!("model '{}'", model.name),
        );
        if model.price.is_none() && lines.iter().any(|line| line.measure == Measure::Spend) {
            return Err(ApiError::forbidden_because(format!(
                "model '{}' has no price in the config, so a spend cap cannot be kept on it; \
                 the operator must set its price (0 is allowed)",
                model.name
            ))
            .with_audit_reason(crate::reason::AuditReason::Unpriced));
        }
        Ok(lines)
    }

    /// Reserves `worst` from every line, all or none, or refuses. The usage is counted for the
    /// store under `principal`'s usage id and `model` when the reservation is settled.
    pub async fn reserve(
        self: &Arc<Self>,
        lines: &[Line],
        worst: Charge,
        principal: &Principal,
        model: ModelBudget<'_>,
    ) -> Result<Reservation, ApiError> {
        let mut reservation = Reservation {
            limiter: Arc::clone(self),
            held: Vec::new(),
            shared: false,
            price: model.price,
            usage: principal.usage_id().map(|id| (id.to_owned(), model.name.to_owned())),
            settled: false,
        };
        let lines: Vec<&Line> = lines.iter().filter(|line| worst.amount(line.measure) > 0).collect();
        if let Some(line) = lines.iter().find(|line| worst.amount(line.measure) > line.limit) {
            let asked = match line.measure {
                Measure::Tokens => format!("up to {} tokens", worst.tokens),
                Measure::Spend => format!("up to ${}", format_usd(worst.micros)),
            };
            return Err(ApiError::bad_request(format!(
                "this request may use {asked}, more than the whole budget of {} ({}); ask for fewer tokens \
                 (max_tokens) or send a shorter prompt",
                line.who,
                line.describe()
            )));
        }
        if lines.is_empty() {
            return Ok(reservation);
        }
        let now = crate::time::now();
        if let Some(shared) = &self.shared {
            match self.reserve_shared(shared, &lines, worst, now).await {
                Ok(Ok(held)) => {
                    reservation.held = held;
                    reservation.shared = true;
                    return Ok(reservation);
                }
                Ok(Err(refusal)) => return Err(refusal),
                Err(error) if self.local_fallback => {
                    tracing::warn!(%error, "shared limiter unavailable; keeping budgets on this node");
                }
                Err(error) => {
                    tracing::error!(%error, "shared limiter unavailable; refusing budgeted requests");
                    return Err(ApiError::limiter_unavailable());
                }
            }
        }
        reservation.held = self.reserve_local(&lines, worst, now).await?;
        Ok(reservation)
    }

    async fn reserve_shared(
        &self,
        shared: &redis::Shared,
        lines: &[&Line],
        worst: Charge,
        now: i64,
    ) -> Result<Result<Vec<(String, Measure, u64)>, ApiError>, redis::SharedError> {
        let counters: Vec<redis::Counter> = lines
            .iter()
            .map(|line| redis::Counter {
                key: shared.key(format_args!("{}", line.counter(now))),
                limit: line.limit,
                increment: worst.amount(line.measure),
                ttl: u64::try_from(line.period.seconds_left(now)).unwrap_or(0) + 3600,
            })
            .collect();
        // A missing counter is started from the store once, then the decision asked again.
        for _ in 0..=counters.len() {
            match shared.admit(&[], &counters).await? {
                redis::Verdict::Allowed { .. } => {
                    let held = lines
                        .iter()
                        .zip(&counters)
                        .map(|(line, counter)| (counter.key.clone(), line.measure, counter.increment))
                        .collect();
                    return Ok(Ok(held));
                }
                redis::Verdict::QuotaExhausted { index } | redis::Verdict::RateLimited { index, .. } => {
                    let Some(line) = lines.get(index) else { break };
                    return Ok(Err(exhausted(line, now)));
                }
                redis::Verdict::NeedsSeed { index } => {
                    let (Some(line), Some(counter)) = (lines.get(index), counters.get(index)) else { break };
                    let used = match self.budget_used(line, now).await {
                        Ok(used) => used,
                        Err(error) => return Ok(Err(error)),
                    };
                    shared.seed(&counter.key, used, counter.ttl).await?;
                }
            }
        }
        Err(redis::SharedError::new("budget counters could not be started"))
    }

    async fn reserve_local(
        &self,
        lines: &[&Line],
        worst: Charge,
        now: i64,
    ) -> Result<Vec<(String, Measure, u64)>, ApiError> {
        let ids: Vec<String> = lines.iter().map(|line| line.counter(now)).collect();
        // Start missing counters from the store first, outside the lock.
        let missing: Vec<usize> = {
            let counters = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
            (0..lines.len()).filter(|index| !counters.used.contains_key(&ids[*index])).collect()
        };
        let mut started = Vec::with_capacity(missing.len());
        for index in missing {
            started.push((index, self.budget_used(lines[index], now).await?));
        }
        let mut counters = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        counters.sweep(now);
        for (index, used) in started {
            let period = lines[index].period;
            counters.used.entry(ids[index].clone()).or_insert_with(|| (period, period.id(now), used));
        }
        for (line, id) in lines.iter().zip(&ids) {
            let used = counters.used.get(id).map_or(0, |(_, _, used)| *used);
            if used.saturating_add(worst.amount(line.measure)) > line.limit {
                return Err(exhausted(line, now));
            }
        }
        let mut held = Vec::with_capacity(lines.len());
        for (line, id) in lines.iter().zip(ids) {
            let amount = worst.amount(line.measure);
            let entry = counters.used.entry(id.clone()).or_insert_with(|| (line.period, line.period.id(now), 0));
            entry.2 = entry.2.saturating_add(amount);
            held.push((id, line.measure, amount));
        }
        Ok(held)
    }

    /// What a line's holder used in the window holding `now`, from the store and this node's
    /// usage not yet written: its tokens or its spend.
    async fn budget_used(&self, line: &Line, now: i64) -> Result<u64, ApiError> {
        let window = match line.period {
            Period::Minute => return Ok(0),
            Period::Day => Window::Day,
            Period::Month => Window::Month,
        };
        let counts = match &line.stored {
            Stored::Nowhere => return Ok(0),
            Stored::Usage(id) => self.stored_usage(id, window, now).await?,
            Stored::Model(model) => self.stored_model_usage(model, window, now).await?,
        };
        Ok(match line.measure {
            Measure::Tokens => counts.tokens_in.saturating_add(counts.tokens_out),
            Measure::Spend => counts.micros,
        })
    }

    /// The changes that settle `held` to `actual`: what was held beyond it given back (or more
    /// taken, if the request used more than its worst case: an upstream that ignored
    /// `max_tokens`).
    fn deltas(held: &[(String, Measure, u64)], actual: Charge) -> Vec<(String, i64)> {
        held.iter()
            .filter_map(|(id, measure, reserved)| {
                let delta = i128::from(actual.amount(*measure)) - i128::from(*reserved);
                (delta != 0).then(|| (id.clone(), i64::try_from(delta).unwrap_or(i64::MAX)))
            })
            .collect()
    }

    fn adjust_local(&self, deltas: &[(String, i64)]) {
        let mut counters = self.budgets.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, delta) in deltas {
            if let Some((_, _, used)) = counters.used.get_mut(id) {
                *used = used.saturating_add_signed(*delta);
            }
        }
    }

    /// Queues settlements for Redis. One task at a time sends them: what is settled while it
    /// waits for Redis goes in its next call, merged by counter, so under load a node makes far
    /// fewer than one settlement call per request (and a budget is held a moment longer, never
    /// less).
    fn adjust_shared(self: &Arc<Self>, deltas: Vec<(String, i64)>) {
        use std::sync::atomic::Ordering;
        {
            let mut settling = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, delta) in deltas {
                let merged = settling.entry(id).or_insert(0);
                *merged = merged.saturating_add(delta);
            }
        }
        if self.settler.swap(true, Ordering::AcqRel) {
            return;
        }
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let batch: Vec<(String, i64)> = {
                    let mut settling = limiter.settling.lock().unwrap_or_else(PoisonError::into_inner);
                    settling.drain().filter(|(_, delta)| *delta != 0).collect()
                };
                if batch.is_empty() {
                    limiter.settler.store(false, Ordering::Release);
                    // A settlement queued after the drain and before the store above finds the
                    // flag still set and leaves it to this task: look once more.
                    let waiting = !limiter.settling.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
                    if waiting && !limiter.settler.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    return;
                }
                if let Some(redis) = &limiter.shared
                    && let Err(error) = redis.adjust(&batch).await
                {
                    // The reservations stay counted: the budget errs on the side of the payer.
                    tracing::warn!(%error, "budget reservations could not be settled; they stay charged in full");
                }
            }
        });
    }
}

fn push_lines(lines: &mut Vec<Line>, budget: &Budget, subject: &str, stored: &Stored, who: &str) {
    let line = |measure, period, limit| Line {
        subject: subject.to_owned(),
        stored: stored.clone(),
        who: who.to_owned(),
        measure,
        period,
        limit,
    };
    if let Some(tpm) = budget.tpm {
        lines.push(line(Measure::Tokens, Period::Minute, tpm));
    }
    for quota in &budget.tokens {
        lines.push(line(Measure::Tokens, Period::of(quota.window), quota.count));
    }
    for cap in &budget.spend {
        lines.push(line(Measure::Spend, Period::of(cap.window), cap.micros));
    }
}

fn exhausted(line: &Line, now: i64) -> ApiError {
    let left = line.period.seconds_left(now);
    ApiError::budget_exhausted(
        format!(
            "the budget of {} ({}) has no room for this request; it resets in {left} s (a request asking \
             for fewer tokens may fit sooner)",
            line.who,
            line.describe()
        ),
        left,
    )
}

impl Reservation {
    /// Settles to what the request used: the budgets get back what was held beyond it, and the
    /// usage is counted for the store. Budgets in Redis are settled in the background.
    pub fn settle(mut self, usage: TokenUsage) {
        self.settled = true;
        let actual = Charge::of(self.price, usage.prompt, usage.completion);
        if let Some((id, model)) = &self.usage {
            self.limiter.record_usage(
                id,
                Some(model),
                Counts {
                    requests: 1,
                    tokens_in: usage.prompt,
                    tokens_out: usage.completion,
                    micros: actual.micros,
                    estimated: u64::from(usage.estimated),
                    ..Counts::default()
                },
            );
        }
        let deltas = Limiter::deltas(&std::mem::take(&mut self.held), actual);
        if deltas.is_empty() {
            return;
        }
        if self.shared {
            self.limiter.adjust_shared(deltas);
        } else {
            self.limiter.adjust_local(&deltas);
        }
    }
}

impl Drop for Reservation {
    /// A reservation nobody settled (a bug, or a task cancelled at the wrong moment) stays
    /// charged at its worst case: never free.
    fn drop(&mut self) {
        if !self.settled && !self.held.is_empty() {
            tracing::warn!("a budget reservation was dropped unsettled; it stays charged at its worst case");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_have_ids_and_ends() {
        // 2026-11-25T22:49:27Z.
        let now = 1_795_646_967;
        assert_eq!(Period::Minute.seconds_left(now), 33);
        assert_eq!(Period::Minute.id(now), (now / 60).to_string());
        assert_eq!(Period::Day.id(now), "2026-11-25");
        assert_eq!(Period::Month.id(now), "2026-11");
        assert_eq!(Period::Day.seconds_left(now), 86_400 - 82_167);
    }

    #[test]
    fn a_charge_prices_what_was_read_and_written() {
        let price = Price::from_usd("1", "2").unwrap();
        assert_eq!(Charge::of(Some(price), 1000, 500), Charge { tokens: 1500, micros: 2000 });
        assert_eq!(Charge::of(None, 1000, 500), Charge { tokens: 1500, micros: 0 });
        assert_eq!(Charge::of(None, u64::MAX, 1).tokens, u64::MAX);
    }
}
