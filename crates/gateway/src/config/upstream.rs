//! `[models.upstream]`: a model served by an existing Open Inference Protocol server.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::valid_model_name;
use super::{ConfigError, invalid};
use crate::time::deserialize_duration;

/// `[models.upstream]`: an existing Open Inference Protocol server (Triton, KServe, MLServer).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL, `http://host:port` or `https://host:port[/prefix]`.
    pub url: String,
    /// The model's name there (default: the name here).
    pub model: Option<String>,
    /// The version to call there (default: none, the server's choice).
    pub version: Option<String>,
    /// The upstream's own credential, from an environment variable or a file; never inline.
    pub credential_env: Option<String>,
    pub credential_file: Option<String>,
    /// The header that carries it: `Authorization` (sent as `Bearer <credential>`) by default.
    #[serde(default = "default_credential_header")]
    pub credential_header: String,
    /// Trust these roots (PEM) for an `https` upstream instead of the system's.
    pub ca_file: Option<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "deserialize_duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_upstream_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// At most this many requests (and so connections) to the upstream at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests beyond `max_connections` that may wait; past that, 503 at once.
    #[serde(default = "default_upstream_queue")]
    pub queue: usize,
    /// Send and receive Triton binary tensors (Triton supports them; MLServer does not).
    #[serde(default)]
    pub binary: bool,
    /// HTTP/2 (prior knowledge on `http`, ALPN on `https`) instead of HTTP/1.1 keep-alive.
    #[serde(default)]
    pub http2: bool,
    /// How long fetched metadata is trusted before it is fetched again.
    #[serde(default = "default_metadata_ttl", deserialize_with = "deserialize_duration")]
    pub metadata_ttl: Duration,
    /// The largest response body accepted from the upstream.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

fn default_credential_header() -> String {
    "authorization".into()
}
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_max_connections() -> usize {
    64
}
pub(super) fn default_upstream_queue() -> usize {
    256
}
fn default_metadata_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}

/// A validated upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL without a trailing slash.
    pub url: String,
    pub model: String,
    pub version: Option<String>,
    pub credential: Option<CredentialSource>,
    pub credential_header: http::HeaderName,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_connections: usize,
    pub queue: usize,
    pub binary: bool,
    pub http2: bool,
    pub metadata_ttl: Duration,
    pub max_response_bytes: usize,
}

/// Where a secret comes from. The secret itself is read at start and never kept in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
}

impl RawUpstream {
    pub(super) fn validate(
        self,
        model: &str,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<UpstreamConfig, ConfigError> {
        let fail = |message: String| invalid(format!("model '{model}': upstream.{message}"));
        let url = validate_base_url(&self.url).map_err(|message| fail(format!("url: {message}")))?;
        let name = self.model.unwrap_or_else(|| model.to_owned());
        if !valid_model_name(&name) {
            return Err(fail(format!("model = '{name}' is not a plain model name")));
        }
        if let Some(version) = &self.version
            && !valid_model_name(version)
        {
            return Err(fail(format!("version = '{version}' is not a plain version")));
        }
        let credential = credential_source(self.credential_env, self.credential_file, resolve)
            .map_err(|message| fail(message.into()))?;
        let credential_header = http::HeaderName::from_bytes(self.credential_header.as_bytes())
            .map_err(|_| fail(format!("credential_header = '{}' is not a header name", self.credential_header)))?;
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(fail("connect_timeout and timeout must be longer than zero".into()));
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(fail("max_connections must be between 1 and 65536".into()));
        }
        if self.max_response_bytes < 1024 {
            return Err(fail("max_response_bytes must be at least 1024".into()));
        }
        if url.starts_with("http://") && !host_is_loopback_url(&url) {
            tracing::warn!(model, url = %url, "upstream is plain HTTP off this host: requests and predictions cross the network unencrypted");
        }
        Ok(UpstreamConfig {
            url,
            model: name,
            version: self.version,
            credential,
            credential_header,
            ca_file: self.ca_file.as_deref().map(resolve),
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            max_connections: self.max_connections,
            queue: self.queue,
            binary: self.binary,
            http2: self.http2,
            metadata_ttl: self.metadata_ttl,
            max_response_bytes: self.max_response_bytes,
        })
    }
}

/// An upstream's base URL, checked: `http(s)://host[:port][/prefix]`, without a user, password,
/// query or fragment; returned without a trailing slash.
pub(super) fn validate_base_url(url: &str) -> Result<String, String> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(format!("'{url}' must start with http:// or https://"));
    }
    let trimmed = url.trim_end_matches('/').to_owned();
    let rest = trimmed.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    if authority.contains('@') {
        return Err("a URL must not carry a user or password: put the upstream's credential in credential_env or \
                    credential_file"
            .into());
    }
    if rest.contains(['?', '#']) {
        return Err(format!("'{url}' must not have a query or fragment"));
    }
    Ok(trimmed)
}

/// Where the upstream's credential comes from: one of an environment variable or a file.
pub(super) fn credential_source(
    env: Option<String>,
    file: Option<String>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<CredentialSource>, &'static str> {
    match (env, file) {
        (None, None) => Ok(None),
        (Some(env), None) if !env.is_empty() => Ok(Some(CredentialSource::Env(env))),
        (None, Some(file)) => Ok(Some(CredentialSource::File(resolve(&file)))),
        (Some(_), Some(_)) => Err("credential_env and credential_file: give one"),
        (Some(_), None) => Err("credential_env must name a variable"),
    }
}

/// Whether a validated base URL's host is this machine.
pub(super) fn host_is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    host_is_loopback(rest.split('/').next().unwrap_or(""))
}

/// Whether `host[:port]` names this machine.
fn host_is_loopback(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
