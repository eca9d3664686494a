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
    #[serde(default)]
    pub models: Vec<RawModel>,
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
        }
    }
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
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
    pub path: String,
    #[serde(default)]
    pub runtime: Runtime,
    pub checks: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub allow_non_finite: bool,
    /// Which outputs hold scores and labels, and the default output policy.
    pub output: Option<crate::minimise::RawOutputSpec>,
}

fn default_version() -> String {
    "1".into()
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
    pub sqlite: PathBuf,
    pub pepper_file: PathBuf,
    pub key_cache_ttl: Duration,
    pub inference: InferenceConfig,
    /// `None` when `audit.enabled = false`.
    pub audit: Option<crate::audit::AuditConfig>,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone)]
pub struct InferenceConfig {
    pub threads: usize,
    pub queue: usize,
    pub limits: crate::oip::Limits,
    pub onnxruntime_library: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub runtime: Runtime,
    pub checks: Option<PathBuf>,
    pub public: bool,
    pub allow_non_finite: bool,
    /// How to minimise outputs; `None` means outputs are served raw.
    pub output: Option<crate::minimise::OutputSpec>,
    /// The policy for callers whose key does not set one.
    pub output_policy: crate::minimise::OutputPolicy,
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
        if !listen.ip().is_loopback() {
            return Err(invalid(format!(
                "server.listen = '{listen}' is not a loopback address, and this build serves plain \
                 HTTP only: a model endpoint must not be reachable without TLS. Listen on \
                 127.0.0.1 behind a TLS-terminating proxy."
            )));
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
            models.push(ModelConfig {
                output,
                output_policy,
                path: resolve(&model.path),
                checks: model.checks.as_deref().map(resolve),
                name: model.name,
                version: model.version,
                runtime: model.runtime,
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
        Ok(Config {
            audit,
            listen,
            admin_listen,
            name: server.name,
            max_body_bytes: server.max_body_bytes,
            request_timeout: server.request_timeout,
            max_concurrency: server.max_concurrency,
            shutdown_grace: server.shutdown_grace,
            sqlite: resolve(&self.store.sqlite),
            pepper_file: resolve(&self.store.pepper_file),
            key_cache_ttl: self.store.key_cache_ttl,
            inference: InferenceConfig {
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
        })
    }
}

/// Model names appear in URLs, logs and metrics labels: keep them plain.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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
        check("[server]\nlisten = \"0.0.0.0:8080\"", Some("not a loopback address"));
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
    }

    #[test]
    fn model_paths_are_resolved_against_the_config_folder() {
        let config = Config::from_toml(
            "[[models]]\nname = \"a\"\npath = \"models/a.onnx\"\nchecks = \"/abs/checks.json\"",
            Path::new("/etc/portcullis"),
        )
        .unwrap();
        assert_eq!(config.models[0].path, Path::new("/etc/portcullis/models/a.onnx"));
        assert_eq!(config.models[0].checks.as_deref(), Some(Path::new("/abs/checks.json")));
    }
}
