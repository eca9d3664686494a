//! How limits are written: rates (`50/s`, `3000/min`), quotas (`100000/day`, `2000000/month`),
//! token budgets and spend caps (`20usd/day`) and model prices,
//! in config, on the command line and in the store. Zero, negative and overflowing values are
//! refused with a message that says what is accepted.

use std::{fmt, str::FromStr};

use http::{HeaderMap, HeaderName, HeaderValue};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A sustained rate: `count` requests per `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period_seconds: u64,
}

/// The largest count a rate or quota may name: far above any real limit, far below overflow.
const MAX_COUNT: u64 = 1_000_000_000_000;

fn parse_count(text: &str, what: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    if text.starts_with('-') {
        return Err(format!("{what}: '{text}' is negative"));
    }
    let count: u64 = text.parse().map_err(|_| format!("{what}: '{text}' is not a whole number"))?;
    if count == 0 {
        return Err(format!("{what}: zero would refuse everything; remove the limit instead"));
    }
    if count > MAX_COUNT {
        return Err(format!("{what}: {count} is more than the largest allowed ({MAX_COUNT})"));
    }
    Ok(count)
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let help = "write a rate as N/s, N/min or N/h (e.g. 50/s)";
        let (count, unit) = text.split_once('/').ok_or_else(|| format!("rate '{text}': {help}"))?;
        let period_seconds = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            other => return Err(format!("rate '{text}': unknown unit '{other}'; {help}")),
        };
        Ok(Rate { count: parse_count(count, &format!("rate '{text}'"))?, period_seconds })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period_seconds {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Rate {
    pub fn period_ns(&self) -> u64 {
        self.period_seconds * NANOS_PER_SECOND
    }
}

/// A calendar window, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    Day,
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "day",
            Window::Month => "month",
        }
    }
}

/// At most `count` per calendar day or month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u64,
    pub window: Window,
}

impl FromStr for Quota {
    type Err = String;

    fn from_str(text: &str) -> Result<Quota, String> {
        let help = "write a quota as N/day or N/month (e.g. 100000/day)";
        let (count, unit) = text.split_once('/').ok_or_else(|| format!("quota '{text}': {help}"))?;
        let window = match unit.trim() {
            "d" | "day" => Window::Day,
            "mo" | "month" => Window::Month,
            other => return Err(format!("quota '{text}': unknown window '{other}'; {help}")),
        };
        Ok(Quota { count: parse_count(count, &format!("quota '{text}'"))?, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.window.as_str())
    }
}

/// At most `count` distinct end users per fixed window of `window_seconds` (a delegate key's
/// cap on the users it names): `10000/h`, `500/min`, `100000/day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCap {
    pub count: u64,
    pub window_seconds: u64,
}

impl FromStr for UserCap {
    type Err = String;

    fn from_str(text: &str) -> Result<UserCap, String> {
        let help = "write a user cap as N/min, N/h or N/day (e.g. 10000/h)";
        let (count, unit) = text.split_once('/').ok_or_else(|| format!("user cap '{text}': {help}"))?;
        let window_seconds = match unit.trim() {
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            other => return Err(format!("user cap '{text}': unknown window '{other}'; {help}")),
        };
        Ok(UserCap { count: parse_count(count, &format!("user cap '{text}'"))?, window_seconds })
    }
}

impl fmt::Display for UserCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.window_seconds {
            60 => "min",
            3600 => "h",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// The most a spend cap or a price may name, in micro-dollars ($1,000,000,000): far above any
/// real budget, far below overflow when multiplied by token counts.
const MAX_MICROS: u64 = 1_000_000_000_000_000;

/// Dollars written as `20`, `0.5`, `0.000125` (at most six decimals), in micro-dollars.
fn parse_usd(text: &str, what: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    if text.starts_with('-') {
        return Err(format!("{what}: '{text}' is negative"));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) {
        return Err(format!("{what}: '{text}' is not an amount of dollars such as 20 or 0.50"));
    }
    if fraction.len() > 6 {
        return Err(format!("{what}: '{text}' has more than six decimals (a millionth of a dollar is the unit)"));
    }
    let whole: u64 = whole.parse().map_err(|_| format!("{what}: '{text}' is too large"))?;
    let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
    let micros = whole
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(fraction))
        .filter(|micros| *micros <= MAX_MICROS)
        .ok_or_else(|| format!("{what}: '{text}' is more than the largest allowed ($1000000000)"))?;
    Ok(micros)
}

/// Micro-dollars as dollars, without trailing zeros: `20`, `0.5`, `0.000125`.
pub fn format_usd(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:06}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// At most `micros` micro-dollars of model use per calendar day or month: `20usd/day`,
/// `0.50usd/month`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendCap {
    pub micros: u64,
    pub window: Window,
}

impl FromStr for SpendCap {
    type Err = String;

    fn from_str(text: &str) -> Result<SpendCap, String> {
        let help = "write a spend cap as <dollars>usd/day or <dollars>usd/month (e.g. 20usd/day)";
        let (amount, unit) = text.split_once('/').ok_or_else(|| format!("spend cap '{text}': {help}"))?;
        let window = match unit.trim() {
            "d" | "day" => Window::Day,
            "mo" | "month" => Window::Month,
            other => return Err(format!("spend cap '{text}': unknown window '{other}'; {help}")),
        };
        let amount = amount.trim();
        let dollars = amount
            .strip_suffix("usd")
            .or_else(|| amount.strip_suffix("USD"))
            .or_else(|| amount.strip_prefix('$'))
            .ok_or_else(|| format!("spend cap '{text}': {help}"))?;
        let micros = parse_usd(dollars, &format!("spend cap '{text}'"))?;
        if micros == 0 {
            return Err(format!("spend cap '{text}': zero would refuse everything; remove the cap instead"));
        }
        Ok(SpendCap { micros, window })
    }
}

impl fmt::Display for SpendCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}usd/{}", format_usd(self.micros), self.window.as_str())
    }
}

/// What a language model costs, in micro-dollars per million tokens read (`input`) and
/// written (`output`): the price table's row for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input_per_million: u64,
    pub output_per_million: u64,
}

impl Price {
    /// From dollars per million tokens, as config writes them (`input = "0.15"`).
    pub fn from_usd(input: &str, output: &str) -> Result<Price, String> {
        Ok(Price {
            input_per_million: parse_usd(input, "price.input")?,
            output_per_million: parse_usd(output, "price.output")?,
        })
    }

    /// The cost of `input` and `output` tokens, in micro-dollars, rounded up.
    pub fn cost(&self, input: u64, output: u64) -> u64 {
        let total = u128::from(input) * u128::from(self.input_per_million)
            + u128::from(output) * u128::from(self.output_per_million);
        u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// Token and spend limits of one principal, one end user or one model: tokens per minute,
/// tokens per day or month, dollars per day or month. Empty: no budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    /// Tokens (read and written) per minute.
    pub tpm: Option<u64>,
    /// Tokens per day or month (`N/day`, `N/month`, as quotas are written).
    pub tokens: Vec<Quota>,
    pub spend: Vec<SpendCap>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.tpm.is_none() && self.tokens.is_empty() && self.spend.is_empty()
    }

    /// `self` where it sets a limit, else `fallback`'s, limit by limit.
    pub fn over(&self, fallback: &Budget) -> Budget {
        Budget {
            tpm: self.tpm.or(fallback.tpm),
            tokens: if self.tokens.is_empty() { fallback.tokens.clone() } else { self.tokens.clone() },
            spend: if self.spend.is_empty() { fallback.spend.clone() } else { self.spend.clone() },
        }
    }
}

/// A tokens-per-minute figure from config or a flag: a whole number from 1 up.
pub fn parse_tpm(text: &str) -> Result<u64, String> {
    parse_count(text, &format!("tokens per minute '{text}'"))
}

/// Spend caps as stored and listed: `20usd/day,500usd/month`; `None` for none.
pub fn spend_caps_to_text(caps: &[SpendCap]) -> Option<String> {
    (!caps.is_empty()).then(|| caps.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
}

/// Parses `20usd/day,500usd/month` (blank: none); one cap per window.
pub fn spend_caps_from_text(text: &str) -> Result<Vec<SpendCap>, String> {
    let mut caps: Vec<SpendCap> = Vec::new();
    for part in text.split(',').filter(|part| !part.trim().is_empty()) {
        let cap: SpendCap = part.trim().parse()?;
        if caps.iter().any(|other| other.window == cap.window) {
            return Err(format!("two spend caps per {}", cap.window.as_str()));
        }
        caps.push(cap);
    }
    Ok(caps)
}

/// The `RateLimit-*` headers of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the bucket is full.
    pub reset: u64,
}

impl RateHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(self.limit));
        headers.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(self.remaining));
        headers.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(self.reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_quotas_parse_and_print_back() {
        assert_eq!("50/s".parse(), Ok(Rate { count: 50, period_seconds: 1 }));
        assert_eq!("3_000/min".parse(), Ok(Rate { count: 3000, period_seconds: 60 }));
        assert_eq!("10/h".parse::<Rate>().unwrap().to_string(), "10/h");
        assert_eq!("100000/day".parse(), Ok(Quota { count: 100_000, window: Window::Day }));
        assert_eq!("5/month".parse::<Quota>().unwrap().to_string(), "5/month");
    }

    #[test]
    fn absurd_values_are_refused_precisely() {
        let rate = |text: &str| text.parse::<Rate>().unwrap_err();
        assert!(rate("0/s").contains("zero"));
        assert!(rate("-5/s").contains("negative"));
        assert!(rate("99999999999999999999/s").contains("not a whole number"));
        assert!(rate("2000000000000/s").contains("more than the largest"));
        assert!(rate("50").contains("N/s"));
        assert!(rate("50/fortnight").contains("unknown unit"));
        assert!(rate("1.5/s").contains("not a whole number"));
        assert!("10/week".parse::<Quota>().unwrap_err().contains("unknown window"));
        assert!("0/h".parse::<UserCap>().unwrap_err().contains("zero"));
        assert!("10/s".parse::<UserCap>().unwrap_err().contains("unknown window"));
        assert_eq!("10000/h".parse::<UserCap>().unwrap().to_string(), "10000/h");
        assert_eq!("5/day".parse(), Ok(UserCap { count: 5, window_seconds: 86_400 }));
    }

    #[test]
    fn spend_caps_and_prices_are_exact_in_micro_dollars() {
        assert_eq!("20usd/day".parse(), Ok(SpendCap { micros: 20_000_000, window: Window::Day }));
        assert_eq!("0.5usd/month".parse(), Ok(SpendCap { micros: 500_000, window: Window::Month }));
        assert_eq!("$1.25/day".parse(), Ok(SpendCap { micros: 1_250_000, window: Window::Day }));
        assert_eq!("0.000125usd/day".parse::<SpendCap>().unwrap().to_string(), "0.000125usd/day");
        assert_eq!("20usd/day".parse::<SpendCap>().unwrap().to_string(), "20usd/day");
        let cap = |text: &str| text.parse::<SpendCap>().unwrap_err();
        assert!(cap("0usd/day").contains("zero"));
        assert!(cap("-1usd/day").contains("negative"));
        assert!(cap("20/day").contains("usd/day"));
        assert!(cap("20usd/week").contains("unknown window"));
        assert!(cap("0.0000001usd/day").contains("six decimals"));
        assert!(cap("1e3usd/day").contains("not an amount"));
        assert!(cap("99999999999999usd/day").contains("largest"));
        assert_eq!(spend_caps_from_text("20usd/day, 500usd/month").unwrap().len(), 2);
        assert!(spend_caps_from_text("1usd/day,2usd/day").unwrap_err().contains("two spend caps"));
        assert_eq!(spend_caps_to_text(&spend_caps_from_text("1usd/day").unwrap()).as_deref(), Some("1usd/day"));

        // $0.15 in, $0.60 out per million: 1000 + 500 tokens cost 150 + 300 micro-dollars.
        let price = Price::from_usd("0.15", "0.60").unwrap();
        assert_eq!(price.cost(1000, 500), 450);
        // Rounded up: a single token is never free.
        assert_eq!(price.cost(1, 0), 1);
        assert_eq!(Price::default().cost(1_000_000, 1_000_000), 0);
        assert!(price.cost(u64::MAX, u64::MAX) > 10_000_000_000_000_000_000);
        assert_eq!(Price::from_usd("1000000000", "1").unwrap().cost(u64::MAX, 0), u64::MAX);
        assert_eq!(format_usd(20_000_000), "20");
        assert_eq!(format_usd(450), "0.00045");
    }

    #[test]
    fn a_budget_falls_back_limit_by_limit() {
        let key = Budget { tpm: Some(100), ..Budget::default() };
        let defaults = Budget {
            tpm: Some(5),
            tokens: vec!["1000/day".parse().unwrap()],
            spend: vec!["1usd/day".parse().unwrap()],
        };
        let effective = key.over(&defaults);
        assert_eq!(effective.tpm, Some(100));
        assert_eq!(effective.tokens, defaults.tokens);
        assert_eq!(effective.spend, defaults.spend);
        assert!(Budget::default().is_empty());
        assert!(parse_tpm("0").unwrap_err().contains("zero"));
        assert_eq!(parse_tpm("10_000"), Ok(10_000));
    }
}
