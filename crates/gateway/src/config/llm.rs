//! `[[llm]]`: a language model served by an OpenAI-compatible server (vLLM, llama.cpp's
//! server, TGI, a hosted API) or by Ollama, which Portcullis fronts.
//!
//! The name here is the one clients send and keys' allow-lists name; the upstream's own model
//! name and credential never reach a client.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, RateLimit, RawCount, invalid, upstream::CredentialSource};
use crate::time::deserialize_duration;

/// Which API the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmApi {
    /// OpenAI's: `POST {url}/chat/completions` and the rest, `url` ending in `/v1` as a rule.
    Openai,
    /// Ollama's: `POST {url}/api/chat` and the rest.
    Ollama,
}

/// `[[llm]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// The name clients use (and keys' `--models` lists).
    pub name: String,
    pub api: LlmApi,
    /// Base URL: `http://127.0.0.1:8000/v1` for an OpenAI-compatible server, `http://127.0.0.1:11434`
    /// for Ollama.
    pub url: String,
    /// The model's name there (default: the name here).
    pub model: Option<String>,
    /// The upstream's credential, from an environment variable or a file; never inline, and
    /// never taken from the client.
    pub credential_env: Option<String>,
    pub credential_file: Option<String>,
    /// Trust these roots (PEM) for an `https` upstream instead of the system's.
    pub ca_file: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default = "super::upstream::default_connect_timeout", deserialize_with = "deserialize_duration")]
    pub connect_timeout: Duration,
    /// The longest a whole answer may take (a stream: from the request to its last event).
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// The longest a stream may go without sending anything (the first token included).
    #[serde(default = "default_stall_timeout", deserialize_with = "deserialize_duration")]
    pub stall_timeout: Duration,
    #[serde(default = "super::upstream::default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "super::upstream::default_upstream_queue")]
    pub queue: usize,
    /// The largest answer accepted from the upstream (a stream: the largest single event).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// `max_tokens` (Ollama: `num_predict`) set when the request has none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// The most `max_tokens` a request may ask for.
    #[serde(default = "default_max_tokens_cap")]
    pub max_tokens: u32,
    /// The most completions (`n`) one request may ask for.
    #[serde(default = "default_max_n")]
    pub max_n: u32,
    /// Let requests carry tools (function calling): off unless turned on.
    #[serde(default)]
    pub tools: bool,
    /// Let requests ask for `logprobs`/`top_logprobs`, which help extract the model.
    #[serde(default)]
    pub logprobs: bool,
    /// Let requests carry images.
    #[serde(default)]
    pub images: bool,
    /// A limit on the model as a whole, across all callers, e.g. "50/s".
    pub rate: Option<String>,
    pub burst: Option<u32>,
    /// Dollars per million tokens read and written: `{ input = "0.15", output = "0.60" }`.
    pub price: Option<RawPrice>,
    /// The model's own token budget, all callers together: tokens per minute, tokens per day or
    /// month, dollars per day or month (the last needs `price`).
    pub tpm: Option<RawCount>,
    #[serde(default)]
    pub token_quota: Vec<String>,
    #[serde(default)]
    pub spend: Vec<String>,
    /// A Hugging Face `tokenizer.json` for counting the model's tokens.
    pub tokenizer: Option<String>,
    /// Replace personal data in prompts before they reach the upstream.
    #[serde(default)]
    pub redact_prompts: bool,
    /// Put the redacted values back into the answer (needs `redact_prompts`).
    #[serde(default)]
    pub restore_redacted: bool,
}

/// `price = { input = "0.15", output = "0.60" }`: dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: RawDollars,
    pub output: RawDollars,
}

/// Dollars written as a TOML string or number (`"0.15"`, `0.15`, `2`); checked when the
/// section is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDollars(String);

impl<'de> Deserialize<'de> for RawDollars {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawDollars, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawDollars;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dollars per million tokens, such as \"0.15\" or 0.15")
            }
            fn visit_i64<E>(self, value: i64) -> Result<RawDollars, E> {
                Ok(RawDollars(value.to_string()))
            }
            fn visit_u64<E>(self, value: u64) -> Result<RawDollars, E> {
                Ok(RawDollars(value.to_string()))
            }
            // `Display` of an `f64` is its shortest exact spelling, never an exponent: 0.15 is
            // "0.15", 1e-7 is "0.0000001" (then refused for its seventh decimal).
            fn visit_f64<E>(self, value: f64) -> Result<RawDollars, E> {
                Ok(RawDollars(value.to_string()))
            }
            fn visit_str<E>(self, value: &str) -> Result<RawDollars, E> {
                Ok(RawDollars(value.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_response_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_tokens() -> u32 {
    1024
}
fn default_max_tokens_cap() -> u32 {
    4096
}
fn default_max_n() -> u32 {
    1
}

/// A validated `[[llm]]`.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub name: String,
    pub api: LlmApi,
    /// Base URL without a trailing slash.
    pub url: String,
    pub model: String,
    pub credential: Option<CredentialSource>,
    pub ca_file: Option<PathBuf>,
    pub public: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub stall_timeout: Duration,
    pub max_connections: usize,
    pub queue: usize,
    pub max_response_bytes: usize,
    pub default_max_tokens: u32,
    pub max_tokens: u32,
    pub max_n: u32,
    pub tools: bool,
    pub logprobs: bool,
    pub images: bool,
    pub rate: Option<RateLimit>,
    /// What the model costs; `None`: no price, so no spend is counted or capped.
    pub price: Option<crate::limit_spec::Price>,
    /// The model's own budget, all callers together.
    pub budget: crate::limit_spec::Budget,
    /// A `tokenizer.json` (resolved against the config's folder, not yet read).
    pub tokenizer: Option<PathBuf>,
    pub redact_prompts: bool,
    pub restore_redacted: bool,
}

/// An upstream's model name: printable, no blank, at most 256 bytes (`org/model:tag` included).
pub fn valid_upstream_model(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && name.bytes().all(|b| b.is_ascii_graphic())
}

impl RawLlm {
    pub(super) fn validate(self, resolve: &dyn Fn(&str) -> PathBuf) -> Result<LlmConfig, ConfigError> {
        let name = self.name;
        let fail = |message: String| invalid(format!("llm '{name}': {message}"));
        if !super::valid_model_name(&name) {
            return Err(invalid(format!(
                "llm name '{name}' must be 1 to 128 letters, digits, '_', '.', '-' or ':', not starting with '.' or '-'"
            )));
        }
        let url = super::upstream::validate_base_url(&self.url).map_err(|message| fail(format!("url: {message}")))?;
        let model = self.model.unwrap_or_else(|| name.clone());
        if !valid_upstream_model(&model) {
            return Err(fail(format!("model = '{model}' must be 1 to 256 printable characters without blanks")));
        }
        let credential = super::upstream::credential_source(self.credential_env, self.credential_file, resolve)
            .map_err(|message| fail(message.to_owned()))?;
        if self.connect_timeout.is_zero() || self.timeout.is_zero() || self.stall_timeout.is_zero() {
            return Err(fail("connect_timeout, timeout and stall_timeout must be longer than zero".into()));
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(fail("max_connections must be between 1 and 65536".into()));
        }
        if self.max_response_bytes < 1024 {
            return Err(fail("max_response_bytes must be at least 1024".into()));
        }
        if self.max_tokens == 0 || self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens {
            return Err(fail(format!(
                "default_max_tokens ({}) must be between 1 and max_tokens ({})",
                self.default_max_tokens, self.max_tokens
            )));
        }
        if self.max_n == 0 || self.max_n > 128 {
            return Err(fail("max_n must be between 1 and 128".into()));
        }
        let rate = super::model_rate(self.rate, self.burst).map_err(fail)?;
        let price = self
            .price
            .map(|price| crate::limit_spec::Price::from_usd(&price.input.0, &price.output.0))
            .transpose()
            .map_err(fail)?;
        let budget = super::limits::budget(
            self.tpm.as_ref(),
            &self.token_quota,
            &self.spend,
            &|field: &str, message: String| fail(format!("{field}: {message}")),
        )?;
        if !budget.spend.is_empty() && price.is_none() {
            return Err(fail(
                "spend caps need the model's price: add price = { input = \"...\", output = \"...\" } \
                 (dollars per million tokens)"
                    .into(),
            ));
        }
        if self.restore_redacted && !self.redact_prompts {
            return Err(fail("restore_redacted needs redact_prompts = true".into()));
        }
        if url.starts_with("http://") && !super::upstream::host_is_loopback_url(&url) {
            tracing::warn!(llm = %name, url = %url, "LLM upstream is plain HTTP off this host: prompts and answers cross the network unencrypted");
        }
        Ok(LlmConfig {
            api: self.api,
            url,
            model,
            credential,
            ca_file: self.ca_file.as_deref().map(resolve),
            public: self.public,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            stall_timeout: self.stall_timeout,
            max_connections: self.max_connections,
            queue: self.queue,
            max_response_bytes: self.max_response_bytes,
            default_max_tokens: self.default_max_tokens,
            max_tokens: self.max_tokens,
            max_n: self.max_n,
            tools: self.tools,
            logprobs: self.logprobs,
            images: self.images,
            rate,
            price,
            budget,
            tokenizer: self.tokenizer.as_deref().map(resolve),
            redact_prompts: self.redact_prompts,
            restore_redacted: self.restore_redacted,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Every configuration example in docs/llm.md loads as it is written.
    #[test]
    fn every_example_in_docs_llm_md_loads() {
        let page = include_str!("../../../../docs/llm.md");
        let blocks: Vec<&str> = page.split("```toml\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
        assert!(blocks.len() >= 5, "docs/llm.md has its examples");
        let dir = tempfile::tempdir().unwrap();
        for block in blocks {
            let config = Config::from_toml(block, dir.path()).unwrap_or_else(|e| panic!("{e}\n{block}"));
            assert_eq!(config.llm.len(), 1, "{block}");
        }
    }

    #[test]
    fn names_urls_caps_and_credentials_are_checked_at_load() {
        let load = |extra: &str| {
            Config::from_toml(
                &format!("[[llm]]\nname = \"m\"\napi = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\n{extra}"),
                std::path::Path::new("/etc/portcullis"),
            )
        };
        assert!(load("").is_ok());
        for (extra, message) in [
            ("api2 = 1", "unknown field"),
            ("max_tokens = 10\ndefault_max_tokens = 20", "default_max_tokens"),
            ("max_n = 0", "max_n"),
            ("credential_env = \"A\"\ncredential_file = \"f\"", "give one"),
            ("model = \"has space\"", "printable"),
            ("stall_timeout = \"0s\"", "longer than zero"),
            ("burst = 5", "a burst needs a rate"),
        ] {
            let error = load(extra).unwrap_err().to_string();
            assert!(error.contains(message), "{extra}: {error}");
        }
        let bad_url = Config::from_toml(
            "[[llm]]\nname = \"m\"\napi = \"ollama\"\nurl = \"http://u:p@h:1\"\n",
            std::path::Path::new("/"),
        );
        assert!(bad_url.unwrap_err().to_string().contains("user or password"));
        let clash = Config::from_toml(
            "[[llm]]\nname = \"m\"\napi = \"ollama\"\nurl = \"http://h:1\"\n[[llm]]\nname = \"m\"\napi = \"ollama\"\nurl = \"http://h:2\"\n",
            std::path::Path::new("/"),
        );
        assert!(clash.unwrap_err().to_string().contains("same name"));
    }

    fn llm(extra: &str) -> Result<super::LlmConfig, String> {
        Config::from_toml(
            &format!("[[llm]]\nname = \"m\"\napi = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\n{extra}"),
            std::path::Path::new("/etc/portcullis"),
        )
        .map(|mut config| config.llm.remove(0))
        .map_err(|error| error.to_string())
    }

    #[test]
    fn prices_are_dollars_per_million_tokens_as_strings_or_numbers() {
        let price = crate::limit_spec::Price::from_usd("0.15", "0.60").unwrap();
        assert_eq!(llm("price = { input = \"0.15\", output = \"0.60\" }").unwrap().price, Some(price));
        assert_eq!(llm("price = { input = 0.15, output = 0.6 }").unwrap().price, Some(price));
        assert_eq!(
            llm("price = { input = 2, output = \"10\" }").unwrap().price,
            Some(crate::limit_spec::Price { input_per_million: 2_000_000, output_per_million: 10_000_000 })
        );
        assert_eq!(llm("").unwrap().price, None);
        for (extra, message) in [
            ("price = { input = \"0.15\" }", "missing field `output`"),
            ("price = { input = 1, output = 1, cached = 1 }", "unknown field `cached`"),
            ("price = { input = \"-1\", output = \"1\" }", "llm 'm': price.input: '-1' is negative"),
            (
                "price = { input = 1, output = 0.0000001 }",
                "llm 'm': price.output: '0.0000001' has more than six decimals",
            ),
            ("price = { input = \"cheap\", output = 1 }", "price.input: 'cheap' is not an amount of dollars"),
            ("price = { input = true, output = 1 }", "expected dollars per million tokens"),
        ] {
            let error = llm(extra).unwrap_err();
            assert!(error.contains(message), "{extra}: {error}");
        }
    }

    #[test]
    fn a_model_budget_is_checked_and_spend_needs_a_price() {
        let config = llm(
            "price = { input = 1, output = 2 }\ntpm = \"50_000\"\ntoken_quota = [\"1000000/day\"]\nspend = [\"100usd/month\"]",
        )
        .unwrap();
        assert_eq!(config.budget.tpm, Some(50_000));
        assert_eq!(config.budget.tokens, ["1000000/day".parse().unwrap()]);
        assert_eq!(config.budget.spend, ["100usd/month".parse().unwrap()]);
        assert!(llm("").unwrap().budget.is_empty());
        assert_eq!(llm("tpm = 10").unwrap().budget.tpm, Some(10));
        for (extra, message) in [
            ("spend = [\"100usd/month\"]", "llm 'm': spend caps need the model's price"),
            ("tpm = 0", "llm 'm': tpm: tokens per minute '0': zero"),
            ("token_quota = [\"1/day\", \"2/day\"]", "llm 'm': token_quota: two token quotas per day"),
            ("price = { input = 1, output = 1 }\nspend = [\"5eur/day\"]", "llm 'm': spend: spend cap '5eur/day'"),
        ] {
            let error = llm(extra).unwrap_err();
            assert!(error.contains(message), "{extra}: {error}");
        }
    }

    #[test]
    fn tokenizer_paths_and_redaction_switches_are_read() {
        let config = llm("tokenizer = \"tokenizers/m.json\"\nredact_prompts = true\nrestore_redacted = true").unwrap();
        assert_eq!(config.tokenizer.as_deref(), Some(std::path::Path::new("/etc/portcullis/tokenizers/m.json")));
        assert!(config.redact_prompts && config.restore_redacted);
        assert_eq!(
            llm("tokenizer = \"/abs/t.json\"").unwrap().tokenizer.as_deref(),
            Some(std::path::Path::new("/abs/t.json"))
        );
        let plain = llm("").unwrap();
        assert!(plain.tokenizer.is_none() && !plain.redact_prompts && !plain.restore_redacted);
        assert!(llm("redact_prompts = true").is_ok());
        let error = llm("restore_redacted = true").unwrap_err();
        assert!(error.contains("llm 'm': restore_redacted needs redact_prompts = true"), "{error}");
    }
}
