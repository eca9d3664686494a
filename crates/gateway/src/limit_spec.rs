//! How limits are written: rates (`50/s`, `3000/min`), quotas (`100000/day`, `2000000/month`),
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
}
