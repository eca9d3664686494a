//! `[limits]`: rates, bursts, quotas, token budgets, anonymous limits, trusted proxies, and where
//! limit state lives.

use serde::Deserialize;

use super::{ConfigError, SecretUrl, invalid};

/// `[limits]`: the defaults for principals whose key sets none, and anonymous callers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Per principal (key, client certificate), e.g. "100/s".
    pub rate: Option<String>,
    pub burst: Option<u32>,
    /// Requests in flight per principal.
    pub concurrency: Option<u32>,
    /// Requests per day or month per key, e.g. ["100000/day"].
    #[serde(default)]
    pub quota: Vec<String>,
    /// Inference rows per day or month per key.
    #[serde(default)]
    pub row_quota: Vec<String>,
    /// Language models: tokens (read and written) per minute per key, e.g. 100000.
    pub tpm: Option<RawCount>,
    /// Language models: tokens per day or month per key, e.g. ["1000000/day"].
    #[serde(default)]
    pub token_quota: Vec<String>,
    /// Language models: dollars per day or month per key, e.g. ["20usd/day"].
    #[serde(default)]
    pub spend: Vec<String>,
    /// Per client address, for anonymous calls to public models.
    pub anonymous_rate: Option<String>,
    pub anonymous_burst: Option<u32>,
    /// Refused authentications per client address (no credential, a wrong or revoked one)
    /// before that address is refused at once, without a store lookup (default 10/s, burst 100).
    pub unauthenticated_rate: Option<String>,
    pub unauthenticated_burst: Option<u32>,
    /// Distinct end users a delegate key may name per window, for keys that set none
    /// (default 10000/h): a bound on the state one key can make the gateway hold.
    pub max_users: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (addresses or CIDR ranges).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Where limit state lives: "memory" (this node) or "redis://host:port/db" (all nodes).
    pub backend: Option<String>,
    /// Key prefix in Redis, so several deployments can share one server.
    pub redis_prefix: Option<String>,
    /// PEM roots a `rediss://` server's certificate must chain to (default: the system's).
    pub redis_ca_file: Option<String>,
    /// When Redis is unreachable: "closed" (refuse limited requests, 503) or "local" (decide
    /// with this node's own counters: weaker, each node then allows the full limit).
    pub on_unavailable: Option<String>,
}

/// A count written as a TOML integer or as a string, as on the command line (`100000`,
/// `"100_000"`); checked when the section is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCount(String);

impl<'de> Deserialize<'de> for RawCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawCount, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number such as 100000 or \"100_000\"")
            }
            fn visit_i64<E>(self, value: i64) -> Result<RawCount, E> {
                Ok(RawCount(value.to_string()))
            }
            fn visit_u64<E>(self, value: u64) -> Result<RawCount, E> {
                Ok(RawCount(value.to_string()))
            }
            fn visit_str<E>(self, value: &str) -> Result<RawCount, E> {
                Ok(RawCount(value.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A token and spend budget as `[limits]` and `[[llm]]` write it: `tpm`, `token_quota`,
/// `spend`, one quota and one cap per window. `fail` names the field in errors.
pub(super) fn budget(
    tpm: Option<&RawCount>,
    token_quota: &[String],
    spend: &[String],
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::limit_spec::Budget, ConfigError> {
    let tpm = tpm.map(|tpm| crate::limit_spec::parse_tpm(&tpm.0).map_err(|e| fail("tpm", e))).transpose()?;
    let mut tokens: Vec<crate::limit_spec::Quota> = Vec::new();
    for text in token_quota {
        let quota: crate::limit_spec::Quota = text.parse().map_err(|e| fail("token_quota", e))?;
        if tokens.iter().any(|other| other.window == quota.window) {
            return Err(fail("token_quota", format!("two token quotas per {}", quota.window.as_str())));
        }
        tokens.push(quota);
    }
    let mut caps: Vec<crate::limit_spec::SpendCap> = Vec::new();
    for text in spend {
        let cap: crate::limit_spec::SpendCap = text.parse().map_err(|e| fail("spend", e))?;
        if caps.iter().any(|other| other.window == cap.window) {
            return Err(fail("spend", format!("two spend caps per {}", cap.window.as_str())));
        }
        caps.push(cap);
    }
    Ok(crate::limit_spec::Budget { tpm, tokens, spend: caps })
}

/// Where limit state lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LimitsBackend {
    #[default]
    Memory,
    Redis {
        url: SecretUrl,
        prefix: String,
        /// For `rediss://`: the roots its certificate must chain to; `None` for the system's.
        ca_file: Option<std::path::PathBuf>,
    },
}

/// A rate with its burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: crate::limit_spec::Rate,
    pub burst: u32,
}

/// Distinct end users per delegate key when neither the key nor `[limits]` says.
pub const DEFAULT_MAX_USERS: crate::limit_spec::UserCap =
    crate::limit_spec::UserCap { count: 10_000, window_seconds: 3600 };

/// Refused authentications per client address when `[limits]` does not say.
pub const DEFAULT_UNAUTHENTICATED: RateLimit =
    RateLimit { rate: crate::limit_spec::Rate { count: 10, period_seconds: 1 }, burst: 100 };

/// Validated `[limits]`.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_users: crate::limit_spec::UserCap,
    pub unauthenticated: RateLimit,
    pub rate: Option<RateLimit>,
    pub concurrency: Option<u32>,
    pub quotas: Vec<crate::limit_spec::Quota>,
    pub row_quotas: Vec<crate::limit_spec::Quota>,
    /// Language models: each key's token and spend budget where the key sets none (limit by
    /// limit: see `Budget::over`).
    pub budget: crate::limit_spec::Budget,
    pub anonymous: Option<RateLimit>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub backend: LimitsBackend,
    pub local_fallback: bool,
}

/// A rate and a burst from config or a key; the burst defaults to one second's worth (at
/// least 1).
pub fn rate_limit(rate: crate::limit_spec::Rate, burst: Option<u32>) -> Result<RateLimit, String> {
    let default_burst = u32::try_from(rate.count.div_ceil(rate.period_seconds)).unwrap_or(u32::MAX).max(1);
    let burst = burst.unwrap_or(default_burst);
    if burst == 0 {
        return Err("burst must be at least 1".into());
    }
    Ok(RateLimit { rate, burst })
}

impl RawLimits {
    pub(super) fn validate(self, resolve: &dyn Fn(&str) -> std::path::PathBuf) -> Result<LimitsConfig, ConfigError> {
        let fail = |field: &str, message: String| invalid(format!("limits.{field}: {message}"));
        let rate = |field: &str, rate: Option<String>, burst: Option<u32>| -> Result<Option<RateLimit>, ConfigError> {
            match (rate, burst) {
                (None, None) => Ok(None),
                (None, Some(_)) => Err(fail(field, "a burst needs a rate".into())),
                (Some(text), burst) => {
                    let parsed = text.parse().map_err(|e| fail(field, e))?;
                    rate_limit(parsed, burst).map(Some).map_err(|e| fail(field, e))
                }
            }
        };
        let quotas = |field: &str, texts: Vec<String>| -> Result<Vec<crate::limit_spec::Quota>, ConfigError> {
            let mut quotas: Vec<crate::limit_spec::Quota> = Vec::new();
            for text in texts {
                let quota: crate::limit_spec::Quota = text.parse().map_err(|e| fail(field, e))?;
                if quotas.iter().any(|other| other.window == quota.window) {
                    return Err(fail(field, format!("two quotas per {}", quota.window.as_str())));
                }
                quotas.push(quota);
            }
            Ok(quotas)
        };
        if self.concurrency == Some(0) {
            return Err(fail("concurrency", "must be at least 1".into()));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| fail("trusted_proxies", format!("'{text}' is not an address or a CIDR range")))
            })
            .collect::<Result<_, _>>()?;
        let backend = match self.backend.as_deref() {
            None | Some("memory") => LimitsBackend::Memory,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                if self.redis_ca_file.is_some() && !url.starts_with("rediss://") {
                    return Err(fail("redis_ca_file", "needs a rediss:// (TLS) backend URL".into()));
                }
                LimitsBackend::Redis {
                    url: SecretUrl::new(url),
                    prefix: self.redis_prefix.unwrap_or_else(|| "ptcl:".to_owned()),
                    ca_file: self.redis_ca_file.as_deref().map(resolve),
                }
            }
            Some(other) => {
                return Err(fail("backend", format!("'{other}': use \"memory\" or a redis:// URL")));
            }
        };
        let local_fallback = match self.on_unavailable.as_deref() {
            None | Some("closed") => false,
            Some("local") => true,
            Some(other) => return Err(fail("on_unavailable", format!("'{other}': use \"closed\" or \"local\""))),
        };
        let max_users = match self.max_users.as_deref() {
            None => DEFAULT_MAX_USERS,
            Some(text) => text.parse().map_err(|e| fail("max_users", e))?,
        };
        let unauthenticated = match (self.unauthenticated_rate, self.unauthenticated_burst) {
            (None, None) => DEFAULT_UNAUTHENTICATED,
            (None, Some(burst)) => {
                rate_limit(DEFAULT_UNAUTHENTICATED.rate, Some(burst)).map_err(|e| fail("unauthenticated_burst", e))?
            }
            (Some(text), burst) => rate("unauthenticated_rate", Some(text), burst)?.unwrap_or(DEFAULT_UNAUTHENTICATED),
        };
        let budget = budget(self.tpm.as_ref(), &self.token_quota, &self.spend, &fail)?;
        Ok(LimitsConfig {
            max_users,
            budget,
            unauthenticated,
            backend,
            local_fallback,
            rate: rate("rate", self.rate, self.burst)?,
            concurrency: self.concurrency,
            quotas: quotas("quota", self.quota)?,
            row_quotas: quotas("row_quota", self.row_quota)?,
            anonymous: rate("anonymous_rate", self.anonymous_rate, self.anonymous_burst)?,
            trusted_proxies,
        })
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_users: DEFAULT_MAX_USERS,
            unauthenticated: DEFAULT_UNAUTHENTICATED,
            rate: None,
            concurrency: None,
            quotas: Vec::new(),
            row_quotas: Vec::new(),
            budget: crate::limit_spec::Budget::default(),
            anonymous: None,
            trusted_proxies: Vec::new(),
            backend: LimitsBackend::Memory,
            local_fallback: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(table: &str) -> Result<super::LimitsConfig, String> {
        Config::from_toml(&format!("[limits]\n{table}"), std::path::Path::new("/etc/portcullis"))
            .map(|config| config.limits)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn token_budgets_are_read_as_the_flags_write_them() {
        let limits =
            load("tpm = 100000\ntoken_quota = [\"1000000/day\", \"20000000/month\"]\nspend = [\"20usd/day\"]").unwrap();
        assert_eq!(limits.budget.tpm, Some(100_000));
        assert_eq!(limits.budget.tokens, ["1000000/day".parse().unwrap(), "20000000/month".parse().unwrap()]);
        assert_eq!(limits.budget.spend, ["20usd/day".parse().unwrap()]);
        assert_eq!(load("tpm = \"100_000\"").unwrap().budget.tpm, Some(100_000));
        assert!(load("").unwrap().budget.is_empty());
    }

    #[test]
    fn bad_token_budgets_are_refused_naming_the_field() {
        for (table, message) in [
            ("tpm = 0", "limits.tpm: tokens per minute '0': zero"),
            ("tpm = -5", "limits.tpm: tokens per minute '-5': '-5' is negative"),
            ("tpm = \"lots\"", "limits.tpm: tokens per minute 'lots': 'lots' is not a whole number"),
            ("tpm = 1.5", "expected a whole number such as 100000"),
            ("token_quota = [\"5/week\"]", "limits.token_quota: quota '5/week': unknown window 'week'"),
            ("token_quota = [\"5/day\", \"6/day\"]", "limits.token_quota: two token quotas per day"),
            ("spend = [\"20eur/day\"]", "limits.spend: spend cap '20eur/day': write a spend cap as"),
            ("spend = [\"1usd/month\", \"2usd/month\"]", "limits.spend: two spend caps per month"),
            ("spend = \"20usd/day\"", "invalid type"),
        ] {
            let error = load(table).unwrap_err();
            assert!(error.contains(message), "{table}: {error}");
        }
    }
}
