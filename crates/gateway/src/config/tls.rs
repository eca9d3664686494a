//! `[tls]` and `[[tls.clients]]`: the listener's certificate and the client certificates that
//! are credentials.

use std::{collections::HashSet, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::time::deserialize_duration;

/// `[tls]`: serve HTTPS (TLS 1.2+), and optionally verify client certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// PEM roots that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<String>,
    /// `optional` (a client may present a certificate) or `required` (every connection must).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes; a change is loaded without a restart.
    #[serde(default = "default_reload_interval", deserialize_with = "deserialize_duration")]
    pub reload_interval: Duration,
    /// `1.2` (default) or `1.3`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Client certificates that are credentials: each maps to a principal.
    #[serde(default)]
    pub clients: Vec<RawTlsClient>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

/// `[[tls.clients]]`: a client certificate, by subject or by one subject alternative name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsClient {
    pub name: String,
    /// The whole subject in RFC 4514 syntax, RDNs in certificate order, e.g.
    /// `CN=fraud-service,O=Example`.
    pub subject: Option<String>,
    /// One subject alternative name: a DNS name, a URI (`spiffe://...`), an e-mail or an IP,
    /// optionally typed (`dns:`, `uri:`, `email:`, `ip:`).
    pub san: Option<String>,
    /// The models it may reach: names, or `["*"]`.
    pub models: Vec<String>,
    #[serde(default = "default_client_scopes")]
    pub scopes: String,
    /// Its output policy (narrower than the model's only, like a key's).
    pub output: Option<String>,
    /// Its own limits, as a key's (`[limits]` defaults otherwise).
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_min_version() -> String {
    "1.2".into()
}
fn default_client_scopes() -> String {
    "infer,metadata".into()
}

/// Validated `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub reload_interval: Duration,
    pub tls13_only: bool,
    pub clients: Vec<TlsClient>,
}

/// A client certificate that authenticates a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClient {
    pub name: String,
    pub matcher: CertMatch,
    pub models: crate::store::ModelScope,
    pub scopes: crate::store::Scopes,
    pub output: Option<crate::minimise::OutputPolicy>,
    pub limits: crate::store::KeyLimits,
}

/// How a certificate is recognised: structurally, never by a rendered string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertMatch {
    /// The whole subject: every RDN, in certificate order, with exact values.
    Subject(crate::cert_identity::DistinguishedName),
    /// One subject alternative name of its type.
    San(crate::cert_identity::SanName),
}

impl RawTls {
    pub(super) fn validate(self, resolve: &dyn Fn(&str) -> PathBuf) -> Result<TlsConfig, ConfigError> {
        let tls13_only = match self.min_version.as_str() {
            "1.2" => false,
            "1.3" => true,
            other => return Err(invalid(format!("tls.min_version = '{other}': use \"1.2\" or \"1.3\""))),
        };
        if self.reload_interval < Duration::from_millis(100) {
            return Err(invalid("tls.reload_interval must be at least 100ms"));
        }
        if self.client_ca.is_none() && (self.client_auth == ClientAuth::Required || !self.clients.is_empty()) {
            return Err(invalid("tls.client_auth = \"required\" and [[tls.clients]] need tls.client_ca"));
        }
        let mut names = HashSet::new();
        let mut clients = Vec::with_capacity(self.clients.len());
        for client in self.clients {
            let fail = |message: String| invalid(format!("tls.clients '{}': {message}", client.name));
            if client.name.is_empty() || client.name.len() > 128 || !names.insert(client.name.clone()) {
                return Err(fail("names must be 1 to 128 characters and unique".into()));
            }
            let matcher = match (&client.subject, &client.san) {
                (Some(subject), None) => CertMatch::Subject(
                    crate::cert_identity::DistinguishedName::parse(subject)
                        .map_err(|e| fail(format!("subject '{}': {e}", subject.escape_debug())))?,
                ),
                (None, Some(san)) => {
                    CertMatch::San(crate::cert_identity::SanName::parse(san).map_err(|e| fail(format!("san: {e}")))?)
                }
                _ => return Err(fail("give exactly one of subject and san".into())),
            };
            // Two entries for one identity would make the principal depend on list order.
            if let Some(other) = clients.iter().find(|other: &&TlsClient| other.matcher == matcher) {
                return Err(fail(format!("names the same certificate identity as '{}'", other.name)));
            }
            let models = if client.models.iter().any(|model| model == "*") {
                crate::store::ModelScope::All
            } else if client.models.is_empty() {
                return Err(fail("models is empty: list model names or \"*\"".into()));
            } else {
                crate::store::ModelScope::Only(client.models.clone())
            };
            let scopes = crate::store::Scopes::parse(&client.scopes).map_err(fail)?;
            let output = client
                .output
                .as_deref()
                .map(str::parse::<crate::minimise::OutputPolicy>)
                .transpose()
                .map_err(|e| fail(format!("output: {e}")))?;
            if client.burst == Some(0)
                || client.concurrency == Some(0)
                || (client.burst.is_some() && client.rate.is_none())
            {
                return Err(fail("burst needs a rate, and burst and concurrency must be at least 1".into()));
            }
            let limits = crate::store::KeyLimits {
                rate: client.rate.as_deref().map(str::parse).transpose().map_err(fail)?,
                burst: client.burst,
                concurrency: client.concurrency,
                ..crate::store::KeyLimits::default()
            };
            clients.push(TlsClient { name: client.name.clone(), matcher, models, scopes, output, limits });
        }
        Ok(TlsConfig {
            cert: resolve(&self.cert),
            key: resolve(&self.key),
            client_ca: self.client_ca.as_deref().map(resolve),
            client_auth: self.client_auth,
            reload_interval: self.reload_interval,
            tls13_only,
            clients,
        })
    }
}
