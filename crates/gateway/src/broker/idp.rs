//! Tokens from identity providers (OIDC ID tokens, RFC 9068 access tokens, App Check tokens):
//! verified against the issuer's own JWKS with the issuer's algorithm allow-list (RFC 8725).
//!
//! The `kid` in a token is only a lookup key into keys we fetched ourselves; `jku`, `x5u`,
//! `x5c` and an embedded `jwk` are never used. An unknown `kid` makes at most one JWKS fetch per
//! `jwks_refresh`; after it, the `kid` is refused.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Instant,
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jose::{self, JoseError, MAX_TOKEN_BYTES};
use crate::config::{IdentityProvider, JwksSource, TokenUse};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// A verified token's claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: String,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Registered header fields we read (the rest is ignored, `crit` was refused by screening).
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<serde_json::Value>,
}

struct Keys {
    /// (kid or "" for a key without one) → (algorithm, key).
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

/// The JWKS of one issuer, cached.
pub struct KeySet {
    source: JwksSource,
    allowed: Vec<Algorithm>,
    refresh: std::time::Duration,
    ttl: std::time::Duration,
    timeout: std::time::Duration,
    keys: RwLock<Keys>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    client: Option<reqwest::Client>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("source", &self.source).finish_non_exhaustive()
    }
}

impl KeySet {
    pub fn new(
        source: JwksSource,
        allowed: Vec<Algorithm>,
        refresh: std::time::Duration,
        ttl: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Result<KeySet, String> {
        jose::install();
        let client = match &source {
            JwksSource::File(_) => None,
            JwksSource::Url { url, ca_file } => {
                let tls = if url.starts_with("https://") {
                    crate::tls::client_config(ca_file.as_deref(), false)?
                } else {
                    crate::tls::trust_nothing_client_config()?
                };
                Some(
                    reqwest::Client::builder()
                        .connect_timeout(timeout)
                        .timeout(timeout)
                        .redirect(reqwest::redirect::Policy::none())
                        .no_proxy()
                        .tls_backend_preconfigured(tls)
                        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
                        .build()
                        .map_err(|e| format!("cannot build the JWKS client: {e}"))?,
                )
            }
        };
        Ok(KeySet {
            source,
            allowed,
            refresh,
            ttl,
            timeout,
            keys: RwLock::new(Keys { by_kid: HashMap::new(), fetched: None }),
            last_fetch: tokio::sync::Mutex::new(None),
            client,
        })
    }

    /// Parses a JWK Set, keeping the signing keys whose algorithm is allowed.
    pub fn parse(&self, bytes: &[u8]) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        // Keys are read one by one so that one odd key (a type we do not know) does not hide
        // the others.
        #[derive(Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut by_kid = HashMap::new();
        for value in raw.keys {
            if jose::has_private_part(&value) {
                tracing::warn!("a JWKS holds private or symmetric key material; that key is ignored");
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(value) else { continue };
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|usage| *usage != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let (alg, key) = match jose::decoding_key(&jwk) {
                Ok(found) => found,
                Err(JoseError::WeakKey) => {
                    let kid = jwk.common.key_id.as_deref().unwrap_or("");
                    tracing::warn!(
                        kid,
                        "a JWKS holds a small-order Ed25519 key, under which any token verifies; that key is ignored"
                    );
                    continue;
                }
                Err(_) => continue,
            };
            if !self.allowed.contains(&alg) {
                continue;
            }
            // A key that names its algorithm must name the one its type implies.
            if let Some(named) = &jwk.common.key_algorithm
                && format!("{named:?}") != format!("{alg:?}")
            {
                continue;
            }
            by_kid.insert(jwk.common.key_id.clone().unwrap_or_default(), (alg, key));
        }
        Ok(by_kid)
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let bytes = match (&self.source, &self.client) {
            (JwksSource::File(path), _) => {
                tokio::fs::read(path).await.map_err(|e| format!("cannot read the JWKS file: {e}"))?
            }
            (JwksSource::Url { url, .. }, Some(client)) => {
                let response = tokio::time::timeout(self.timeout, client.get(url).send())
                    .await
                    .map_err(|_| "JWKS fetch timed out".to_owned())?
                    .map_err(|e| format!("JWKS fetch failed: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("JWKS fetch answered {}", response.status()));
                }
                if response.content_length().is_some_and(|length| length > MAX_JWKS_BYTES as u64) {
                    return Err("JWKS document too large".into());
                }
                let bytes = tokio::time::timeout(self.timeout, response.bytes())
                    .await
                    .map_err(|_| "JWKS fetch timed out".to_owned())?
                    .map_err(|e| format!("JWKS fetch failed: {e}"))?;
                bytes.to_vec()
            }
            (JwksSource::Url { .. }, None) => return Err("no JWKS client".into()),
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("JWKS document too large".into());
        }
        self.parse(&bytes)
    }

    /// Fetches again unless the last fetch is more recent than `refresh` (or `force_age`).
    async fn refresh(&self, unknown_kid: bool) {
        let mut last = self.last_fetch.lock().await;
        let due = match *last {
            None => true,
            Some(at) if unknown_kid => at.elapsed() >= self.refresh,
            Some(at) => at.elapsed() >= self.ttl,
        };
        if !due {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(by_kid) => {
                let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                *keys = Keys { by_kid, fetched: Some(Instant::now()) };
            }
            // Keys fetched before stay in use: an outage of the issuer's JWKS endpoint does not
            // sign everyone out, and a key it dropped is dropped at the next good fetch.
            Err(error) => tracing::warn!(%error, source = ?self.source, "JWKS refresh failed"),
        }
    }

    fn lookup(&self, kid: Option<&str>) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            // No kid: only unambiguous when the set has exactly one key.
            None if keys.by_kid.len() == 1 => keys.by_kid.values().next().cloned(),
            None => None,
        }
    }

    fn stale(&self) -> bool {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.fetched.is_none_or(|at| at.elapsed() >= self.ttl)
    }

    /// The key for `kid`, fetching the set when it is stale or the kid is new to us.
    pub async fn key(&self, kid: Option<&str>) -> Option<(Algorithm, DecodingKey)> {
        if self.stale() {
            self.refresh(false).await;
        }
        if let Some(found) = self.lookup(kid) {
            return Some(found);
        }
        self.refresh(true).await;
        self.lookup(kid)
    }
}

/// The typ values an access token carries (RFC 9068 2.1).
fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// What a verified token must look like, beyond its signature.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub algorithms: &'a [Algorithm],
    pub tokens: TokenUse,
    pub max_skew: std::time::Duration,
    pub max_age: Option<std::time::Duration>,
    /// An exact `typ` required (App Check tokens: "JWT"); otherwise the `tokens` rules apply.
    pub typ: Option<&'a str>,
}

/// Verifies a token by the rules, with keys from `keys`.
pub async fn verify(token: &str, keys: &KeySet, rules: &Rules<'_>, now: i64) -> Result<Verified, JoseError> {
    let compact = jose::screen(token, MAX_TOKEN_BYTES)?;
    let header_json = jose::b64_decode(compact.header).ok_or(JoseError::Base64("header"))?;
    let header: TokenHeader = serde_json::from_slice(&header_json).map_err(|_| JoseError::NotJson("header"))?;
    // The algorithm must be on the issuer's list before anything else is looked at.
    let alg = crate::config::parse_algorithm(&header.alg).map_err(|_| JoseError::Algorithm(header.alg.clone()))?;
    if !rules.algorithms.contains(&alg) {
        return Err(JoseError::Algorithm(header.alg));
    }
    if header.jwk.is_some() {
        return Err(JoseError::EmbeddedKey);
    }
    // Mutually exclusive typing (RFC 8725 3.11, 3.12).
    let typ = header.typ.as_deref();
    match (rules.typ, rules.tokens) {
        (Some(wanted), _) => {
            if !typ.is_some_and(|typ| typ.eq_ignore_ascii_case(wanted)) {
                return Err(JoseError::Type(typ.unwrap_or("").to_owned()));
            }
        }
        (None, TokenUse::AccessToken) => {
            if !typ.is_some_and(is_access_token_type) {
                return Err(JoseError::Type(typ.unwrap_or("").to_owned()));
            }
        }
        (None, TokenUse::IdToken) => {
            if typ.is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT")) {
                return Err(JoseError::Type(typ.unwrap_or("").to_owned()));
            }
        }
    }
    let (key_alg, key) = keys.key(header.kid.as_deref()).await.ok_or(JoseError::UnknownKey)?;
    if key_alg != alg {
        return Err(JoseError::Algorithm(header.alg));
    }
    let mut validation = Validation::new(alg);
    validation.leeway = rules.max_skew.as_secs();
    validation.validate_nbf = true;
    validation.set_issuer(&[rules.issuer]);
    validation.set_audience(rules.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation).map_err(
        |error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JoseError::Signature,
            _ => JoseError::Claims(error.to_string()),
        },
    )?;
    let claims = data.claims;
    check_times(&claims, now, rules)?;
    let subject = claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .filter(|sub| !sub.is_empty() && sub.len() <= 255)
        .ok_or_else(|| JoseError::Claims("sub must be a string of 1 to 255 characters".into()))?
        .to_owned();
    // An ID token is never accepted as an access token and back: claims only one carries.
    if rules.tokens == TokenUse::IdToken && rules.typ.is_none() && claims.contains_key("cnf") {
        return Err(JoseError::Type("a bound access token".into()));
    }
    Ok(Verified { subject, claims })
}

/// `exp` (already checked by the library, but against our clock too), `nbf`, and `iat`: present,
/// not in the future beyond the skew, and not older than `max_age`.
fn check_times(
    claims: &serde_json::Map<String, serde_json::Value>,
    now: i64,
    rules: &Rules<'_>,
) -> Result<(), JoseError> {
    let skew = i64::try_from(rules.max_skew.as_secs()).unwrap_or(i64::MAX);
    // NumericDates may be fractional (RFC 7519 2); absent, negative or absurd ones are refused.
    let date = |name: &str, value: Option<&serde_json::Value>| match value {
        None => Err(JoseError::Claims(format!("{name} is required"))),
        Some(value) => jose::numeric_date(value).map_err(|error| JoseError::Claims(format!("{name} {error}"))),
    };
    let exp = date("exp", claims.get("exp"))?;
    if exp.saturating_add(skew) <= now {
        return Err(JoseError::Claims("expired".into()));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = date("nbf", Some(nbf))?;
        if nbf > now.saturating_add(skew) {
            return Err(JoseError::Claims("not yet valid".into()));
        }
    }
    let iat = date("iat", claims.get("iat"))?;
    if iat > now.saturating_add(skew) {
        return Err(JoseError::Claims("issued in the future".into()));
    }
    if let Some(max_age) = rules.max_age
        && now.saturating_sub(iat) > i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX).saturating_add(skew)
    {
        return Err(JoseError::Claims("issued too long ago".into()));
    }
    Ok(())
}

/// Why an ID token was not issued to the app that presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotIssuedTo {
    #[error("its aud does not name the app's client id")]
    Audience,
    #[error("it names several audiences and no azp")]
    NoAuthorizedParty,
    #[error("its azp names another client, or is not a string")]
    OtherAuthorizedParty,
}

impl NotIssuedTo {
    /// The reason the audit record gives.
    pub fn audit_reason(self) -> crate::reason::AuditReason {
        use crate::reason::AuditReason;
        match self {
            NotIssuedTo::Audience => AuditReason::SubjectTokenAudience,
            NotIssuedTo::NoAuthorizedParty | NotIssuedTo::OtherAuthorizedParty => AuditReason::SubjectTokenAzp,
        }
    }
}

/// Whether a verified ID token was issued to `client_id` (OIDC Core 3.1.3.7, points 3 to 5):
/// its `aud` holds the client id; with several audiences an `azp` must say which party the token
/// was issued to; and an `azp`, when present, must be the client id.
pub fn check_issued_to(
    claims: &serde_json::Map<String, serde_json::Value>,
    client_id: &str,
) -> Result<(), NotIssuedTo> {
    let (named, several) = match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => (aud == client_id, false),
        Some(serde_json::Value::Array(auds)) => {
            (auds.iter().any(|aud| aud.as_str() == Some(client_id)), auds.len() > 1)
        }
        _ => (false, false),
    };
    if !named {
        return Err(NotIssuedTo::Audience);
    }
    match claims.get("azp") {
        None if several => Err(NotIssuedTo::NoAuthorizedParty),
        None => Ok(()),
        Some(serde_json::Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => Err(NotIssuedTo::OtherAuthorizedParty),
    }
}

/// The identity providers of the config, each with its keys.
#[derive(Debug, Default)]
pub struct Issuers {
    providers: Vec<(IdentityProvider, Arc<KeySet>)>,
}

impl Issuers {
    pub fn new(providers: &[IdentityProvider]) -> Result<Issuers, String> {
        let providers = providers
            .iter()
            .map(|provider| {
                let keys = KeySet::new(
                    provider.jwks.clone(),
                    provider.algorithms.clone(),
                    provider.jwks_refresh,
                    provider.jwks_ttl,
                    provider.jwks_timeout,
                )
                .map_err(|e| format!("identity provider '{}': {e}", provider.name))?;
                Ok((provider.clone(), Arc::new(keys)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Issuers { providers })
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&(IdentityProvider, Arc<KeySet>)> {
        self.providers.iter().find(|(provider, _)| provider.name == name)
    }

    /// The provider whose issuer the token names (unverified: only to pick the rules and keys).
    pub fn for_token(&self, token: &str) -> Option<&(IdentityProvider, Arc<KeySet>)> {
        let issuer = unverified_issuer(token)?;
        self.providers.iter().find(|(provider, _)| provider.issuer == issuer)
    }

    /// Verifies `token` as one of `provider`'s tokens.
    pub async fn verify(
        provider: &IdentityProvider,
        keys: &KeySet,
        token: &str,
        now: i64,
    ) -> Result<Verified, JoseError> {
        let rules = Rules {
            issuer: &provider.issuer,
            audiences: &provider.audiences,
            algorithms: &provider.algorithms,
            tokens: provider.tokens,
            max_skew: provider.max_skew,
            max_age: provider.max_age,
            typ: None,
        };
        verify(token, keys, &rules, now).await
    }
}

/// The `iss` of a token, read without verifying it (to choose whose rules verify it).
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let compact = jose::screen(token, MAX_TOKEN_BYTES).ok()?;
    let payload = jose::b64_decode(compact.payload)?;
    serde_json::from_slice::<Iss>(&payload).ok()?.iss
}
