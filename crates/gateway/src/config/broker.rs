//! `[[identity_providers]]` (OIDC issuers whose tokens we verify) and `[broker]` (the token
//! broker: token exchange, DPoP, signing keys, apps).

use std::{path::PathBuf, time::Duration};

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::{ConfigError, RateLimit, invalid, rate_limit};
use crate::{
    minimise::OutputPolicy,
    store::{KeyLimits, ModelScope, Scopes},
};

/// One trusted identity provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentityProvider {
    /// Short name, referenced by `[[broker.apps]]` and shown in logs.
    pub name: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms: RS256, ES256, EdDSA.
    pub algorithms: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    /// Which tokens it issues for us: "id_token" (users signing in to apps, exchanged at
    /// /v1/token) or "access_token" (RFC 9068 `at+jwt`, accepted as Bearer at serve).
    pub tokens: String,
    #[serde(default = "default_skew", deserialize_with = "crate::time::deserialize_duration")]
    pub max_skew: Duration,
    /// Refuse tokens issued longer ago than this (by `iat`).
    #[serde(default, deserialize_with = "deserialize_optional_duration")]
    pub max_age: Option<Duration>,
    /// At most one JWKS fetch per interval when a token names an unknown key.
    #[serde(default = "default_jwks_refresh", deserialize_with = "crate::time::deserialize_duration")]
    pub jwks_refresh: Duration,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_ttl", deserialize_with = "crate::time::deserialize_duration")]
    pub jwks_ttl: Duration,
    #[serde(default = "default_fetch_timeout", deserialize_with = "crate::time::deserialize_duration")]
    pub jwks_timeout: Duration,
    /// For https JWKS URLs: a CA bundle instead of the system's roots.
    pub jwks_ca_file: Option<String>,
    /// Access-token issuers: the claim that names the principal.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Access-token issuers: the models its principals may reach (the ceiling).
    #[serde(default)]
    pub models: Vec<String>,
    /// Access-token issuers: narrow `models` to the token's `model:<name>` scopes.
    #[serde(default)]
    pub models_from_scope: bool,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    pub output: Option<String>,
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_jwks_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_scopes() -> Vec<String> {
    vec!["infer".into(), "metadata".into()]
}

fn deserialize_optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: String = Deserialize::deserialize(d)?;
    crate::time::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

/// What an issuer's tokens are, so that one kind is never accepted where the other is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    IdToken,
    AccessToken,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url { url: String, ca_file: Option<PathBuf> },
    File(PathBuf),
}

/// A validated identity provider.
#[derive(Debug, Clone)]
pub struct IdentityProvider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks: JwksSource,
    pub tokens: TokenUse,
    pub max_skew: Duration,
    pub max_age: Option<Duration>,
    pub jwks_refresh: Duration,
    pub jwks_ttl: Duration,
    pub jwks_timeout: Duration,
    pub subject_claim: String,
    pub models: ModelScope,
    pub models_from_scope: bool,
    pub scopes: Scopes,
    pub output: Option<OutputPolicy>,
}

/// The signature algorithms we accept from others: asymmetric only.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!(
            "algorithm '{other}' is not allowed: use RS256, ES256 or EdDSA (never none, never an HMAC algorithm with a public key)"
        )),
    }
}

fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    // Plain HTTP only to this machine (tests, a sidecar); keys fetched over the network must be
    // authenticated by TLS.
    url.strip_prefix("http://")
        .and_then(|rest| rest.split(['/', ':']).next())
        .is_some_and(|host| host == "127.0.0.1" || host == "localhost" || host == "[::1]")
}

impl RawIdentityProvider {
    pub(super) fn validate(self, resolve: &dyn Fn(&str) -> PathBuf) -> Result<IdentityProvider, ConfigError> {
        let name = self.name;
        let at = |message: String| invalid(format!("identity provider '{name}': {message}"));
        if self.issuer.is_empty() {
            return Err(at("issuer must not be empty".into()));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(at("audiences must list at least one audience: tokens without one are refused".into()));
        }
        if self.algorithms.is_empty() {
            return Err(at("algorithms must list the allowed algorithms (RS256, ES256, EdDSA)".into()));
        }
        let algorithms =
            self.algorithms.iter().map(|name| parse_algorithm(name)).collect::<Result<Vec<_>, _>>().map_err(at)?;
        let jwks = match (self.jwks_url, self.jwks_file) {
            (Some(url), None) if url_allowed(&url) => {
                JwksSource::Url { url, ca_file: self.jwks_ca_file.as_deref().map(resolve) }
            }
            (Some(url), None) => {
                return Err(at(format!("jwks_url '{url}' must be https:// (plain http only to 127.0.0.1)")));
            }
            (None, Some(file)) => JwksSource::File(resolve(&file)),
            _ => return Err(at("give exactly one of jwks_url and jwks_file".into())),
        };
        let tokens = match self.tokens.as_str() {
            "id_token" => TokenUse::IdToken,
            "access_token" => TokenUse::AccessToken,
            other => return Err(at(format!("tokens = '{other}': use id_token or access_token"))),
        };
        if self.max_skew > Duration::from_secs(300) {
            return Err(at("max_skew must be at most 5m".into()));
        }
        if self.jwks_refresh < Duration::from_secs(1) || self.jwks_ttl < self.jwks_refresh {
            return Err(at("jwks_refresh must be at least 1s and jwks_ttl at least jwks_refresh".into()));
        }
        let output = self.output.map(|text| text.parse::<OutputPolicy>()).transpose().map_err(at)?;
        let scopes = Scopes::parse(&self.scopes.join(",")).map_err(at)?;
        if tokens == TokenUse::AccessToken && self.models.is_empty() {
            return Err(at("an access-token issuer needs models = [...] (the models its tokens may reach)".into()));
        }
        let models =
            if self.models.iter().any(|model| model == "*") { ModelScope::All } else { ModelScope::Only(self.models) };
        Ok(IdentityProvider {
            name,
            issuer: self.issuer,
            audiences: self.audiences,
            algorithms,
            jwks,
            tokens,
            max_skew: self.max_skew,
            max_age: self.max_age,
            jwks_refresh: self.jwks_refresh,
            jwks_ttl: self.jwks_ttl,
            jwks_timeout: self.jwks_timeout,
            subject_claim: self.subject_claim,
            models,
            models_from_scope: self.models_from_scope,
            scopes,
            output,
        })
    }
}

/// `[broker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// The `iss` of the tokens it issues.
    pub issuer: String,
    /// This gateway's external base URL (`https://models.example.com`): DPoP proofs name it in
    /// `htu`, and the tokens this gateway accepts carry it as `aud`.
    pub public_url: String,
    /// Audiences a token may be requested for; by default only `public_url`.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_lifetime", deserialize_with = "crate::time::deserialize_duration")]
    pub token_lifetime: Duration,
    /// Signing algorithm of issued tokens: "EdDSA" or "ES256".
    #[serde(default = "default_signing_algorithm")]
    pub algorithm: String,
    /// The file holding the key that encrypts signing keys at rest (created when missing);
    /// `PORTCULLIS_SIGNING_SECRET` (64 hex digits) takes precedence.
    #[serde(default = "default_secret_file")]
    pub signing_secret_file: String,
    /// DPoP proof algorithms: ES256, EdDSA.
    #[serde(default = "default_dpop_algorithms")]
    pub dpop_algorithms: Vec<String>,
    /// Require a server nonce in every DPoP proof.
    #[serde(default)]
    pub require_nonce: bool,
    #[serde(default = "default_nonce_lifetime", deserialize_with = "crate::time::deserialize_duration")]
    pub nonce_lifetime: Duration,
    /// How old (by `iat`) a DPoP proof may be.
    #[serde(default = "default_proof_age", deserialize_with = "crate::time::deserialize_duration")]
    pub proof_max_age: Duration,
    #[serde(default = "default_skew", deserialize_with = "crate::time::deserialize_duration")]
    pub max_skew: Duration,
    #[serde(default)]
    pub apps: Vec<RawApp>,
    pub app_check: Option<RawAppCheck>,
}

fn default_lifetime() -> Duration {
    Duration::from_secs(600)
}
fn default_signing_algorithm() -> String {
    "EdDSA".into()
}
fn default_secret_file() -> String {
    "signing.secret".into()
}
fn default_dpop_algorithms() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into()]
}
fn default_nonce_lifetime() -> Duration {
    Duration::from_secs(300)
}
fn default_proof_age() -> Duration {
    Duration::from_secs(60)
}

/// One app (a public client) allowed to exchange its users' ID tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub client_id: String,
    /// The `[[identity_providers]]` (tokens = "id_token") that signs its users in.
    pub identity_provider: String,
    /// The models its users may reach.
    pub models: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Output policy of its tokens; narrower requests are granted, wider ones are not.
    pub output: Option<String>,
    /// Per user: rate, burst, requests in flight, quotas.
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub quota: Vec<String>,
    #[serde(default)]
    pub row_quota: Vec<String>,
    /// Per device key (DPoP `jkt`).
    pub device_rate: Option<String>,
    /// Token requests per user and per device key.
    pub token_rate: Option<String>,
    /// Required platform attestation: "firebase_app_check".
    pub attestation: Option<String>,
}

/// `[broker.app_check]`: Firebase App Check tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppCheck {
    pub project_number: String,
    /// Firebase app ids allowed (`1:1234:ios:abcd`).
    pub app_ids: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub client_id: String,
    pub identity_provider: String,
    pub models: Vec<String>,
    pub scopes: Scopes,
    pub output: Option<OutputPolicy>,
    pub limits: KeyLimits,
    pub device_rate: Option<RateLimit>,
    pub token_rate: Option<RateLimit>,
    pub attestation: Option<Attestation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    FirebaseAppCheck,
}

#[derive(Debug, Clone)]
pub struct AppCheckConfig {
    pub project_number: String,
    pub app_ids: Vec<String>,
    pub jwks: JwksSource,
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub issuer: String,
    pub public_url: String,
    pub audiences: Vec<String>,
    pub token_lifetime: Duration,
    pub algorithm: Algorithm,
    pub signing_secret_file: PathBuf,
    pub dpop_algorithms: Vec<Algorithm>,
    pub require_nonce: bool,
    pub nonce_lifetime: Duration,
    pub proof_max_age: Duration,
    pub max_skew: Duration,
    pub apps: Vec<AppConfig>,
    pub app_check: Option<AppCheckConfig>,
}

impl BrokerConfig {
    pub fn app(&self, client_id: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|app| app.client_id == client_id)
    }

    /// The URL a DPoP proof for `path` names in `htu`.
    pub fn htu(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }
}

fn optional_rate(text: Option<&str>, burst: Option<u32>) -> Result<Option<RateLimit>, String> {
    text.map(|text| text.parse().and_then(|rate| rate_limit(rate, burst))).transpose()
}

impl RawBroker {
    pub(super) fn validate(
        self,
        resolve: &dyn Fn(&str) -> PathBuf,
        providers: &[IdentityProvider],
    ) -> Result<BrokerConfig, ConfigError> {
        let at = |message: String| invalid(format!("[broker]: {message}"));
        let public_url = self.public_url.trim_end_matches('/').to_owned();
        let with_slash = format!("{public_url}/");
        if normalize_htu(&with_slash).is_none_or(|normal| normal != with_slash) {
            return Err(at(format!(
                "public_url '{}' must be an absolute http(s) URL in normal form (lower-case scheme and host, no default port, no path, query or fragment)",
                self.public_url
            )));
        }
        if self.issuer.is_empty() {
            return Err(at("issuer must not be empty".into()));
        }
        let lifetime = self.token_lifetime;
        if lifetime < Duration::from_secs(300) || lifetime > Duration::from_secs(900) {
            return Err(at("token_lifetime must be between 5m and 15m: broker tokens are short-lived".into()));
        }
        let algorithm = match self.algorithm.as_str() {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            other => return Err(at(format!("algorithm = '{other}': use EdDSA or ES256"))),
        };
        let dpop_algorithms = self
            .dpop_algorithms
            .iter()
            .map(|name| match name.as_str() {
                "ES256" => Ok(Algorithm::ES256),
                "EdDSA" => Ok(Algorithm::EdDSA),
                other => Err(at(format!("dpop_algorithms: '{other}' is not allowed: use ES256, EdDSA"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if dpop_algorithms.is_empty() {
            return Err(at("dpop_algorithms must not be empty".into()));
        }
        if self.max_skew > Duration::from_secs(300) || self.proof_max_age > Duration::from_secs(600) {
            return Err(at("max_skew must be at most 5m and proof_max_age at most 10m".into()));
        }
        let audiences = if self.audiences.is_empty() { vec![public_url.clone()] } else { self.audiences };
        let mut apps = Vec::with_capacity(self.apps.len());
        for app in self.apps {
            let client_id = app.client_id.clone();
            let at = |message: String| invalid(format!("[[broker.apps]] '{client_id}': {message}"));
            if client_id.is_empty() || client_id.len() > 128 || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(at("client_id must be 1 to 128 printable characters".into()));
            }
            if apps.iter().any(|other: &AppConfig| other.client_id == client_id) {
                return Err(at("configured twice".into()));
            }
            match providers.iter().find(|provider| provider.name == app.identity_provider) {
                // The exchange accepts an ID token only when its aud names the app, and the
                // provider's rules only when its aud holds one of their audiences: an app
                // missing from them would have every token refused.
                Some(provider) if provider.tokens == TokenUse::IdToken && !provider.audiences.contains(&client_id) => {
                    return Err(at(format!(
                        "the client_id is not among identity provider '{}''s audiences, so every ID token of the app would be refused: add \"{client_id}\" to its audiences (ID tokens name the app's client id at the provider in aud)",
                        app.identity_provider
                    )));
                }
                Some(provider) if provider.tokens == TokenUse::IdToken => {}
                Some(_) => {
                    return Err(at(format!(
                        "identity provider '{}' issues access tokens, not ID tokens",
                        app.identity_provider
                    )));
                }
                None => return Err(at(format!("no [[identity_providers]] named '{}'", app.identity_provider))),
            }
            if app.models.is_empty() || app.models.iter().any(|model| !crate::config::valid_model_name(model)) {
                return Err(at("models must name the models its users may reach (by name; no wildcard)".into()));
            }
            if app.burst.is_some() && app.rate.is_none() {
                return Err(at("a burst needs a rate".into()));
            }
            if let Some(rate) = app.rate.as_deref() {
                rate.parse().and_then(|rate| rate_limit(rate, app.burst)).map_err(at)?;
            }
            let limits = KeyLimits {
                rate: app.rate.as_deref().map(str::parse).transpose().map_err(at)?,
                burst: app.burst,
                concurrency: app.concurrency,
                quotas: app.quota.iter().map(|text| text.parse()).collect::<Result<_, _>>().map_err(at)?,
                row_quotas: app.row_quota.iter().map(|text| text.parse()).collect::<Result<_, _>>().map_err(at)?,
                ..KeyLimits::default()
            };
            let attestation = match app.attestation.as_deref() {
                None => None,
                Some("firebase_app_check") if self.app_check.is_some() => Some(Attestation::FirebaseAppCheck),
                Some("firebase_app_check") => {
                    return Err(at("attestation = 'firebase_app_check' needs a [broker.app_check] section".into()));
                }
                Some(other) => return Err(at(format!("attestation = '{other}': use firebase_app_check"))),
            };
            apps.push(AppConfig {
                scopes: Scopes::parse(&app.scopes.join(",")).map_err(at)?,
                output: app.output.map(|text| text.parse()).transpose().map_err(at)?,
                device_rate: optional_rate(app.device_rate.as_deref(), None).map_err(at)?,
                token_rate: optional_rate(app.token_rate.as_deref(), None).map_err(at)?,
                identity_provider: app.identity_provider,
                models: app.models,
                client_id: app.client_id,
                limits,
                attestation,
            });
        }
        let app_check = match self.app_check {
            None => None,
            Some(raw) => {
                if raw.project_number.is_empty() || !raw.project_number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(at("app_check.project_number must be the numeric project number".into()));
                }
                if raw.app_ids.is_empty() {
                    return Err(at("app_check.app_ids must list the allowed app ids".into()));
                }
                let jwks = match (raw.jwks_url, raw.jwks_file) {
                    (None, None) => {
                        JwksSource::Url { url: "https://firebaseappcheck.googleapis.com/v1/jwks".into(), ca_file: None }
                    }
                    (Some(url), None) if url_allowed(&url) => JwksSource::Url { url, ca_file: None },
                    (Some(url), None) => return Err(at(format!("app_check.jwks_url '{url}' must be https://"))),
                    (None, Some(file)) => JwksSource::File(resolve(&file)),
                    (Some(_), Some(_)) => return Err(at("app_check: give jwks_url or jwks_file, not both".into())),
                };
                Some(AppCheckConfig { project_number: raw.project_number, app_ids: raw.app_ids, jwks })
            }
        };
        Ok(BrokerConfig {
            issuer: self.issuer,
            public_url,
            audiences,
            token_lifetime: lifetime,
            algorithm,
            signing_secret_file: resolve(&self.signing_secret_file),
            dpop_algorithms,
            require_nonce: self.require_nonce,
            nonce_lifetime: self.nonce_lifetime,
            proof_max_age: self.proof_max_age,
            max_skew: self.max_skew,
            apps,
            app_check,
        })
    }
}

/// `htu` in normal form: lower-case scheme and host, no default port, path (default `/`), no
/// query or fragment (RFC 9449 4.3, RFC 3986 6.2.2 and 6.2.3). `None` if not an absolute
/// http(s) URL.
pub fn normalize_htu(text: &str) -> Option<String> {
    let uri: http::Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let port = match authority.port_u16() {
        Some(port) if port != default_port => format!(":{port}"),
        _ => String::new(),
    };
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Some(format!("{scheme}://{host}{port}{path}"))
}
