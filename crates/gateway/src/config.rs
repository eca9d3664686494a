//! Configuration in two steps: [`RawConfig`] is what the TOML says (typos are errors), and
//! [`Config`] is what the server runs with, validated, with paths resolved against the config
//! file's folder. Insecure setups are refused here, before anything listens, with a message that
//! says what to change.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::time::deserialize_duration;

pub mod broker;
mod limits;
pub mod llm;
mod tls;
mod upstream;

pub use broker::{
    AppConfig, Attestation, BrokerConfig, IdentityProvider, JwksSource, RawBroker, RawIdentityProvider, TokenUse,
    parse_algorithm,
};
pub use limits::{DEFAULT_MAX_USERS, LimitsBackend, LimitsConfig, RateLimit, RawCount, RawLimits, rate_limit};
pub use llm::{LlmApi, LlmConfig};
pub use tls::{CertMatch, ClientAuth, RawTls, RawTlsClient, TlsClient, TlsConfig};
pub use upstream::{CredentialSource, RawUpstream, UpstreamConfig};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub inference: RawInference,
    #[serde(default)]
    pub audit: RawAudit,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// Language models behind OpenAI-compatible or Ollama servers.
    #[serde(default)]
    pub llm: Vec<llm::RawLlm>,
    #[serde(default)]
    pub identity_providers: Vec<RawIdentityProvider>,
    pub broker: Option<RawBroker>,
}

/// A service URL that may carry a password (`postgres://user:pass@host/db`). `Debug` and
/// `Display` show it with the password replaced, so `--check-config`, logs and errors never
/// print it; [`SecretUrl::expose`] gives the real one to the client library.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***` (and without its query, which can carry
    /// one too).
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "<unparsable URL>".into();
        };
        let (authority, path) = rest.split_once('/').map_or((rest, None), |(authority, path)| (authority, Some(path)));
        let authority = match authority.rsplit_once('@') {
            Some((user_info, host)) => match user_info.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{user_info}@{host}"),
            },
            None => authority.to_owned(),
        };
        match path {
            Some(path) => format!("{scheme}://{authority}/{}", path.split('?').next().unwrap_or("")),
            None => format!("{scheme}://{authority}"),
        }
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_audit_path")]
    pub path: String,
    #[serde(default = "default_audit_key")]
    pub signing_key: String,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    #[serde(default = "default_checkpoint_interval", deserialize_with = "deserialize_duration")]
    pub checkpoint_interval: Duration,
    #[serde(default = "default_fsync")]
    pub fsync: String,
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default = "default_audit_queue")]
    pub queue: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            enabled: true,
            path: default_audit_path(),
            signing_key: default_audit_key(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            fsync: default_fsync(),
            max_file_bytes: default_max_file_bytes(),
            fail_open: false,
            stdout: false,
            queue: default_audit_queue(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_audit_path() -> String {
    "audit.log".into()
}
fn default_audit_key() -> String {
    "audit-signing.key".into()
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_fsync() -> String {
    "10ms".into()
}
fn default_max_file_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_audit_queue() -> usize {
    8192
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_request_timeout", deserialize_with = "deserialize_duration")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "default_shutdown_grace", deserialize_with = "deserialize_duration")]
    pub shutdown_grace: Duration,
    /// A client must send its request headers (and finish a TLS handshake) within this.
    #[serde(default = "default_header_read_timeout", deserialize_with = "deserialize_duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    #[serde(default = "default_idle_timeout", deserialize_with = "deserialize_duration")]
    pub idle_timeout: Duration,
    /// Open connections per listener at most; past it the longest-idle one is closed to make
    /// room, or the new one refused when none is idle.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Host names the admin listener answers to besides loopback addresses and `localhost`
    /// (DNS rebinding: a web page must not reach it under a name of its own).
    #[serde(default)]
    pub admin_hosts: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            name: default_name(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout: default_request_timeout(),
            max_concurrency: default_max_concurrency(),
            shutdown_grace: default_shutdown_grace(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            admin_hosts: Vec::new(),
        }
    }
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    10_000
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_name() -> String {
    "portcullis".into()
}
fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_concurrency() -> usize {
    1024
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// A PostgreSQL URL (`postgres://...`) for a store shared by several nodes; without it,
    /// the SQLite file below.
    pub url: Option<String>,
    #[serde(default = "default_sqlite")]
    pub sqlite: String,
    #[serde(default = "default_pepper_file")]
    pub pepper_file: String,
    #[serde(default = "default_key_cache_ttl", deserialize_with = "deserialize_duration")]
    pub key_cache_ttl: Duration,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: None,
            sqlite: default_sqlite(),
            pepper_file: default_pepper_file(),
            key_cache_ttl: default_key_cache_ttl(),
        }
    }
}

fn default_sqlite() -> String {
    "portcullis.db".into()
}
fn default_pepper_file() -> String {
    "pepper".into()
}
fn default_key_cache_ttl() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInference {
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_queue")]
    pub queue: usize,
    #[serde(default = "default_max_tensor_elements")]
    pub max_tensor_elements: u64,
    #[serde(default = "default_max_batch")]
    pub max_batch: u64,
    #[serde(default = "default_max_bytes_element")]
    pub max_bytes_element: usize,
    pub onnxruntime_library: Option<String>,
    /// Models whose checks all run within this run on the request's thread (for requests no
    /// larger than the checks'); slower ones go through the pool. `0s` disables.
    #[serde(default = "default_inline_below", deserialize_with = "deserialize_duration")]
    pub inline_below: Duration,
}

fn default_inline_below() -> Duration {
    Duration::from_micros(100)
}

impl Default for RawInference {
    fn default() -> Self {
        RawInference {
            threads: default_threads(),
            queue: default_queue(),
            max_tensor_elements: default_max_tensor_elements(),
            max_batch: default_max_batch(),
            max_bytes_element: default_max_bytes_element(),
            onnxruntime_library: None,
            inline_below: default_inline_below(),
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(2)
}
fn default_queue() -> usize {
    256
}
fn default_max_tensor_elements() -> u64 {
    4 * 1024 * 1024
}
fn default_max_batch() -> u64 {
    1024
}
fn default_max_bytes_element() -> usize {
    64 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// An ONNX file this server runs itself...
    pub path: Option<String>,
    pub runtime: Option<Runtime>,
    /// ...or another OIP server this one fronts.
    pub upstream: Option<RawUpstream>,
    pub checks: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub allow_non_finite: bool,
    /// Which outputs hold scores and labels, and the default output policy.
    pub output: Option<crate::minimise::RawOutputSpec>,
    /// A limit on the model as a whole, across all callers, e.g. "500/s".
    pub rate: Option<String>,
    pub burst: Option<u32>,
}

fn default_version() -> String {
    "1".into()
}

/// Where a model's predictions come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// An ONNX file run here.
    File { path: PathBuf, runtime: Runtime },
    /// Another OIP server.
    Upstream(Box<UpstreamConfig>),
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// tract: pure Rust, for neural nets and linear models.
    #[default]
    Tract,
    /// ONNX Runtime, loaded dynamically: for tree ensembles and the rest of ONNX-ML.
    Onnxruntime,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub name: String,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
    pub shutdown_grace: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Lower-case host names the admin listener accepts besides loopback and `localhost`.
    pub admin_hosts: Vec<String>,
    /// `None`: plain HTTP, which is allowed on loopback only.
    pub tls: Option<TlsConfig>,
    pub limits: LimitsConfig,
    /// `Some`: PostgreSQL at this URL; `None`: the SQLite file.
    pub postgres_url: Option<SecretUrl>,
    pub sqlite: PathBuf,
    pub pepper_file: PathBuf,
    pub key_cache_ttl: Duration,
    pub inference: InferenceConfig,
    /// `None` when `audit.enabled = false`.
    pub audit: Option<crate::audit::AuditConfig>,
    pub models: Vec<ModelConfig>,
    /// Language models (`[[llm]]`).
    pub llm: Vec<LlmConfig>,
    /// Trusted OIDC issuers.
    pub identity_providers: Vec<IdentityProvider>,
    /// The token broker, when configured.
    pub broker: Option<BrokerConfig>,
}

#[derive(Debug, Clone)]
pub struct InferenceConfig {
    pub inline_below: Duration,
    pub threads: usize,
    pub queue: usize,
    pub limits: crate::oip::Limits,
    pub onnxruntime_library: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub version: String,
    pub source: ModelSource,
    pub checks: Option<PathBuf>,
    pub public: bool,
    pub allow_non_finite: bool,
    /// How to minimise outputs; `None` means outputs are served raw.
    pub output: Option<crate::minimise::OutputSpec>,
    /// The policy for callers whose key does not set one.
    pub output_policy: crate::minimise::OutputPolicy,
    /// The model's own rate limit, across all callers.
    pub rate: Option<RateLimit>,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are taken from its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|error| ConfigError::Parse { path: PathBuf::from("config"), message: error.to_string() })?;
        raw.validate(base)
    }
}

impl RawConfig {
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |path: &str| -> PathBuf {
            let path = Path::new(path);
            if path.is_absolute() { path.to_owned() } else { base.join(path) }
        };
        let server = self.server;
        let listen: SocketAddr = server.listen.parse().map_err(|_| {
            invalid(format!("server.listen = '{}' is not an address such as 127.0.0.1:8080", server.listen))
        })?;
        let tls = self.tls.map(|tls| tls.validate(&resolve)).transpose()?;
        if !listen.ip().is_loopback() && tls.is_none() {
            return Err(invalid(format!(
                "server.listen = '{listen}' is not a loopback address, and there is no [tls] section: \
                 a model endpoint must not be reachable over plain HTTP. Add [tls] with cert and key, \
                 or listen on 127.0.0.1 behind a TLS-terminating proxy."
            )));
        }
        if server.idle_timeout < Duration::from_secs(1) {
            return Err(invalid("server.idle_timeout must be at least 1s"));
        }
        if server.max_connections < 16 {
            return Err(invalid("server.max_connections must be at least 16"));
        }
        if let Some(host) = server.admin_hosts.iter().find(|host| {
            host.is_empty()
                || host.len() > 253
                || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }) {
            return Err(invalid(format!("server.admin_hosts: '{host}' is not a host name (no port, no scheme)")));
        }
        if server.header_read_timeout.is_zero() {
            return Err(invalid("server.header_read_timeout must be longer than zero"));
        }
        let admin_listen: SocketAddr = server.admin_listen.parse().map_err(|_| {
            invalid(format!("server.admin_listen = '{}' is not an address such as 127.0.0.1:9090", server.admin_listen))
        })?;
        if !admin_listen.ip().is_loopback() {
            return Err(invalid(format!(
                "server.admin_listen = '{admin_listen}' is not a loopback address: the admin \
                 listener (metrics, key management) must never be public. Use 127.0.0.1."
            )));
        }
        if admin_listen == listen && listen.port() != 0 {
            return Err(invalid("server.admin_listen must differ from server.listen"));
        }
        if server.max_body_bytes < 1024 || server.max_body_bytes > 1 << 30 {
            return Err(invalid("server.max_body_bytes must be between 1024 and 1073741824"));
        }
        if server.max_concurrency == 0 {
            return Err(invalid("server.max_concurrency must be at least 1"));
        }
        if server.request_timeout.is_zero() {
            return Err(invalid("server.request_timeout must be longer than zero"));
        }
        let inference = self.inference;
        if inference.threads == 0 || inference.threads > 256 {
            return Err(invalid("inference.threads must be between 1 and 256"));
        }
        if inference.max_tensor_elements == 0 || inference.max_batch == 0 {
            return Err(invalid("inference.max_tensor_elements and inference.max_batch must be at least 1"));
        }
        let mut names = HashSet::new();
        let mut models = Vec::with_capacity(self.models.len());
        for model in self.models {
            if !valid_model_name(&model.name) {
                return Err(invalid(format!(
                    "model name '{}' is not allowed: use 1 to 128 of A-Z a-z 0-9 _ . - (not starting with . or -)",
                    model.name
                )));
            }
            if !valid_model_name(&model.version) {
                return Err(invalid(format!(
                    "model '{}': version '{}' is not allowed: use 1 to 128 of A-Z a-z 0-9 _ . -",
                    model.name, model.version
                )));
            }
            if !names.insert(model.name.clone()) {
                return Err(invalid(format!("model '{}' is configured twice", model.name)));
            }
            let (output, output_policy) = match model.output {
                None => (None, crate::minimise::OutputPolicy::Raw),
                Some(raw) => {
                    let policy = raw
                        .policy
                        .parse()
                        .map_err(|e| invalid(format!("model '{}': output.policy: {e}", model.name)))?;
                    let spec =
                        crate::minimise::OutputSpec { scores: raw.scores, label: raw.label, classes: raw.classes };
                    (Some(spec), policy)
                }
            };
            let source = match (model.path, model.upstream) {
                (Some(path), None) => {
                    ModelSource::File { path: resolve(&path), runtime: model.runtime.unwrap_or_default() }
                }
                (None, Some(upstream)) => {
                    if model.runtime.is_some() || model.checks.is_some() {
                        return Err(invalid(format!(
                            "model '{}': runtime and checks apply to local models; an upstream runs its own",
                            model.name
                        )));
                    }
                    ModelSource::Upstream(Box::new(upstream.validate(&model.name, &resolve)?))
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "model '{}': give either path or [models.upstream], not both",
                        model.name
                    )));
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "model '{}': give path (an ONNX file) or [models.upstream] (an OIP server)",
                        model.name
                    )));
                }
            };
            let rate =
                model_rate(model.rate, model.burst).map_err(|e| invalid(format!("model '{}': {e}", model.name)))?;
            models.push(ModelConfig {
                rate,
                output,
                output_policy,
                source,
                checks: model.checks.as_deref().map(resolve),
                name: model.name,
                version: model.version,
                public: model.public,
                allow_non_finite: model.allow_non_finite,
            });
        }
        let raw_audit = self.audit;
        let audit = if raw_audit.enabled {
            if raw_audit.checkpoint_every == 0 || raw_audit.checkpoint_interval.is_zero() {
                return Err(invalid("audit.checkpoint_every and audit.checkpoint_interval must be above zero"));
            }
            if raw_audit.max_file_bytes < 4096 {
                return Err(invalid("audit.max_file_bytes must be at least 4096"));
            }
            Some(crate::audit::AuditConfig {
                path: resolve(&raw_audit.path),
                signing_key: resolve(&raw_audit.signing_key),
                checkpoint_every: raw_audit.checkpoint_every,
                checkpoint_interval: raw_audit.checkpoint_interval,
                fsync: raw_audit.fsync.parse().map_err(invalid)?,
                max_file_bytes: raw_audit.max_file_bytes,
                fail_open: raw_audit.fail_open,
                stdout: raw_audit.stdout,
                queue: raw_audit.queue.max(1),
            })
        } else {
            None
        };
        let mut identity_providers: Vec<IdentityProvider> = Vec::new();
        for raw in self.identity_providers {
            let provider = raw.validate(&resolve)?;
            if identity_providers.iter().any(|other| other.name == provider.name || other.issuer == provider.issuer) {
                return Err(invalid(format!(
                    "identity provider '{}': another one has the same name or issuer",
                    provider.name
                )));
            }
            identity_providers.push(provider);
        }
        let broker = self.broker.map(|raw| raw.validate(&resolve, &identity_providers)).transpose()?;
        if let Some(broker) = &broker
            && identity_providers.iter().any(|provider| provider.issuer == broker.issuer)
        {
            return Err(invalid("broker.issuer must differ from every identity provider's issuer"));
        }
        let mut llm = Vec::with_capacity(self.llm.len());
        for raw in self.llm {
            let entry = raw.validate(&resolve)?;
            // One namespace for keys' allow-lists: a name means one model.
            if models.iter().any(|model| model.name == entry.name)
                || llm.iter().any(|other: &LlmConfig| other.name == entry.name)
            {
                return Err(invalid(format!("llm '{}': another model has the same name", entry.name)));
            }
            llm.push(entry);
        }
        Ok(Config {
            identity_providers,
            broker,
            audit,
            listen,
            admin_listen,
            name: server.name,
            max_body_bytes: server.max_body_bytes,
            request_timeout: server.request_timeout,
            max_concurrency: server.max_concurrency,
            shutdown_grace: server.shutdown_grace,
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: server.max_connections,
            admin_hosts: server.admin_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
            tls,
            limits: self.limits.validate(&resolve)?,
            postgres_url: match self.store.url {
                None => None,
                Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Some(SecretUrl::new(url))
                }
                Some(_) => return Err(invalid("store.url must be a postgres:// URL (or leave it out for SQLite)")),
            },
            sqlite: resolve(&self.store.sqlite),
            pepper_file: resolve(&self.store.pepper_file),
            key_cache_ttl: self.store.key_cache_ttl,
            inference: InferenceConfig {
                inline_below: inference.inline_below,
                threads: inference.threads,
                queue: inference.queue,
                limits: crate::oip::Limits {
                    max_tensor_elements: inference.max_tensor_elements,
                    max_batch: inference.max_batch,
                    max_bytes_element: inference.max_bytes_element,
                    ..crate::oip::Limits::default()
                },
                onnxruntime_library: inference.onnxruntime_library.as_deref().map(resolve),
            },
            models,
            llm,
        })
    }
}

/// A model's own `rate` and `burst` (for `[[models]]` and `[[llm]]`): a burst needs a rate.
fn model_rate(rate: Option<String>, burst: Option<u32>) -> Result<Option<RateLimit>, String> {
    match (rate, burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("a burst needs a rate".into()),
        (Some(text), burst) => {
            text.parse().and_then(|rate| rate_limit(rate, burst)).map(Some).map_err(|e| format!("rate: {e}"))
        }
    }
}

/// Model names appear in URLs, logs and metrics labels: keep them plain.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, expected_error: Option<&str>) {
        let result = Config::from_toml(toml, Path::new("/etc/portcullis"));
        match (result, expected_error) {
            (Ok(_), None) => {}
            (Err(error), Some(expected)) => {
                let text = error.to_string();
                assert!(text.contains(expected), "error '{text}' does not mention '{expected}'");
            }
            (Ok(config), Some(expected)) => {
                panic!("accepted, expected error '{expected}': {config:?}")
            }
            (Err(error), None) => panic!("refused: {error}"),
        }
    }

    #[test]
    fn defaults_are_loopback_and_valid() {
        let config = Config::from_toml("", Path::new("/srv")).unwrap();
        assert!(config.listen.ip().is_loopback());
        assert!(config.admin_listen.ip().is_loopback());
        assert_eq!(config.sqlite, Path::new("/srv/portcullis.db"));
    }

    #[test]
    fn insecure_or_mistyped_configs_are_refused() {
        check("[server]\nlisten = \"0.0.0.0:8080\"", Some("not a loopback address, and there is no [tls]"));
        check("[server]\nlisten = \"0.0.0.0:8080\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"", None);
        check("[server]\nadmin_listen = \"0.0.0.0:9090\"", Some("must never be public"));
        check("[server]\nlisten = \"localhost\"", Some("is not an address"));
        check("[server]\nlistne = \"127.0.0.1:1\"", Some("unknown field `listne`"));
        check("[server]\nrequest_timeout = \"30\"", Some("is not a duration"));
        check("[[models]]\nname = \"a/b\"\npath = \"m.onnx\"", Some("is not allowed"));
        check(
            "[[models]]\nname = \"a\"\npath = \"m.onnx\"\n[[models]]\nname = \"a\"\npath = \"n.onnx\"",
            Some("configured twice"),
        );
        check("[[models]]\nname = \"a\"\npath = \"m.onnx\"\nruntime = \"torch\"", Some("unknown variant"));
        check("[[models]]\nname = \"a\"\npath = \"m.onnx\"\nruntime = \"onnxruntime\"", None);
        check("[limits]\nrate = \"0/s\"", Some("limits.rate: rate '0/s': zero"));
        check("[limits]\nburst = 5", Some("a burst needs a rate"));
        check("[limits]\nrate = \"5/s\"\nburst = 0", Some("at least 1"));
        check("[limits]\nconcurrency = 0", Some("at least 1"));
        check("[limits]\nquota = [\"5/day\", \"6/day\"]", Some("two quotas per day"));
        check("[limits]\nbackend = \"memcached://x\"", Some("use \"memory\" or a redis:// URL"));
        check("[limits]\non_unavailable = \"open\"", Some("use \"closed\" or \"local\""));
        check("[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]", Some("not an address or a CIDR range"));
        check("[limits]\nbackend = \"redis://127.0.0.1:6379\"\ntrusted_proxies = [\"10.0.0.1\"]", None);
        check("[store]\nurl = \"mysql://x\"", Some("must be a postgres:// URL"));
        check("[[models]]\nname = \"a\"\npath = \"m.onnx\"\nrate = \"5/week\"", Some("model 'a': rate"));
    }

    #[test]
    fn model_paths_are_resolved_against_the_config_folder() {
        let config = Config::from_toml(
            "[[models]]\nname = \"a\"\npath = \"models/a.onnx\"\nchecks = \"/abs/checks.json\"",
            Path::new("/etc/portcullis"),
        )
        .unwrap();
        let ModelSource::File { path, runtime } = &config.models[0].source else { panic!("not a file model") };
        assert_eq!(path, Path::new("/etc/portcullis/models/a.onnx"));
        assert_eq!(*runtime, Runtime::Tract);
        assert_eq!(config.models[0].checks.as_deref(), Some(Path::new("/abs/checks.json")));
    }

    #[test]
    fn service_urls_never_show_their_password() {
        let config = Config::from_toml(
            "[store]\nurl = \"postgres://app:pg-s3cret@db:5432/portcullis?sslmode=require\"\n\
             [limits]\nbackend = \"redis://:r3dis-s3cret@cache:6379/0\"",
            Path::new("/etc/p"),
        )
        .unwrap();
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("pg-s3cret") && !shown.contains("r3dis-s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:***@db:5432/portcullis"), "{shown}");
        assert_eq!(
            config.postgres_url.unwrap().expose(),
            "postgres://app:pg-s3cret@db:5432/portcullis?sslmode=require"
        );
        assert_eq!(SecretUrl::new("redis://cache:6379").redacted(), "redis://cache:6379");
    }

    #[test]
    fn upstream_models_are_validated() {
        let upstream = |table: &str| format!("[[models]]\nname = \"m\"\n[models.upstream]\n{table}");
        check(&upstream("url = \"http://127.0.0.1:8000\""), None);
        check(&upstream("url = \"https://triton.internal:8000/prefix/\"\ncredential_env = \"T\""), None);
        check(&upstream("url = \"ftp://x\""), Some("must start with http:// or https://"));
        check(&upstream("url = \"http://\""), Some("has no host"));
        check(&upstream("url = \"http://user:pw@host:1\""), Some("must not carry a user or password"));
        check(&upstream("url = \"http://h:1/?q=1\""), Some("must not have a query"));
        check(&upstream("url = \"http://h:1\"\ncredential = \"inline\""), Some("unknown field `credential`"));
        check(&upstream("url = \"http://h:1\"\ncredential_env = \"A\"\ncredential_file = \"f\""), Some("give one"));
        check(&upstream("url = \"http://h:1\"\nmax_connections = 0"), Some("max_connections"));
        check(&upstream("url = \"http://h:1\"\ntimeout = \"0s\""), Some("longer than zero"));
        check(&upstream("url = \"http://h:1\"\nmodel = \"../x\""), Some("not a plain model name"));
        check(&upstream("url = \"http://h:1\"\ncredential_header = \"bad header\""), Some("not a header name"));
        check("[[models]]\nname = \"m\"", Some("give path (an ONNX file) or [models.upstream]"));
        check("[[models]]\nname = \"m\"\npath = \"m.onnx\"\n[models.upstream]\nurl = \"http://h:1\"", Some("not both"));
        check(
            "[[models]]\nname = \"m\"\nruntime = \"tract\"\n[models.upstream]\nurl = \"http://h:1\"",
            Some("apply to local models"),
        );
        let config =
            Config::from_toml(&upstream("url = \"http://h:1/\"\ncredential_file = \"tok\""), Path::new("/etc/p"))
                .unwrap();
        let ModelSource::Upstream(upstream) = &config.models[0].source else { panic!("not an upstream") };
        assert_eq!(upstream.url, "http://h:1");
        assert_eq!(upstream.model, "m");
        assert_eq!(upstream.credential, Some(CredentialSource::File(PathBuf::from("/etc/p/tok"))));
    }

    #[test]
    fn tls_sections_are_validated() {
        let tls = |extra: &str| format!("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{extra}");
        check(&tls(""), None);
        check(&tls("min_version = \"1.1\""), Some("use \"1.2\" or \"1.3\""));
        check(&tls("client_auth = \"required\""), Some("need tls.client_ca"));
        check(&tls("client_auth = \"sometimes\""), Some("unknown variant"));
        check(&tls("reload_interval = \"1ms\""), Some("at least 100ms"));
        let client = |body: &str| tls(&format!("client_ca = \"ca.pem\"\n[[tls.clients]]\n{body}"));
        check(&client("name = \"svc\"\nsubject = \"CN=svc\"\nmodels = [\"a\"]"), None);
        check(&client("name = \"svc\"\nmodels = [\"a\"]"), Some("exactly one of subject and san"));
        check(&client("name = \"svc\"\nsan = \"x\"\nsubject = \"CN=x\"\nmodels = [\"a\"]"), Some("exactly one"));
        check(&client("name = \"svc\"\nsan = \"x\"\nmodels = []"), Some("models is empty"));
        check(&client("name = \"svc\"\nsan = \"x\"\nmodels = [\"*\"]\nscopes = \"admin\""), Some("unknown scope"));
        check(&client("name = \"svc\"\nsan = \"x\"\nmodels = [\"*\"]\noutput = \"all\""), Some("output"));
        let config = Config::from_toml(
            &client(
                "name = \"svc\"\nsubject = \"CN=svc, O=Example\"\nmodels = [\"*\"]\noutput = \"label\"\nrate = \"5/s\"",
            ),
            Path::new("/etc/p"),
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/etc/p/c.pem"));
        assert_eq!(
            tls.clients[0].matcher,
            CertMatch::Subject(crate::cert_identity::DistinguishedName::parse("CN=svc,O=Example").unwrap())
        );
        assert_eq!(tls.clients[0].models, crate::store::ModelScope::All);
        assert_eq!(tls.clients[0].output, Some(crate::minimise::OutputPolicy::Label));
        assert_eq!(tls.clients[0].limits.rate, Some("5/s".parse().unwrap()));
        check(&client("name = \"svc\"\nsan = \"x\"\nmodels = [\"*\"]\nrate = \"0/s\""), Some("zero"));
        check(&client("name = \"svc\"\nsan = \"x\"\nmodels = [\"*\"]\nburst = 3"), Some("burst needs a rate"));
    }
}
