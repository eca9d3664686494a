//! The token broker: apps get short-lived, narrowly scoped, device-bound tokens instead of keys.
//!
//! A signed-in user's app sends its ID token (from the app's identity provider) and a DPoP proof
//! made with a key that never leaves the device to `POST /v1/token` ([`exchange`], RFC 8693).
//! The broker verifies both (and platform attestation when the app requires it), intersects the
//! requested scope with the app's policy, and issues an `at+jwt` bound to the device key
//! (`cnf.jkt`), valid for minutes. Every model call with it carries a fresh proof by the same
//! key ([`Broker::authenticate`]); a stolen token alone is useless.
//!
//! - [`jose`]: the crypto provider and strict token screening;
//! - [`idp`]: identity providers' tokens, verified against their JWKS;
//! - [`dpop`]: proofs, the replay cache and server nonces;
//! - [`signing`]: our signing keys (sealed at rest, rotated, published);
//! - [`attest`]: platform attestation (Firebase App Check);
//! - [`exchange`]: the HTTP endpoints.

pub mod attest;
pub mod dpop;
pub mod exchange;
pub mod idp;
pub mod jose;
pub mod signing;

use std::sync::Arc;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use crate::{
    config::{AppConfig, Attestation, BrokerConfig},
    minimise::OutputPolicy,
    principal::{Principal, PrincipalKind},
    store::{ModelScope, Scopes, Store},
};
use dpop::{DpopError, Expected, Nonces, Policy, Replay};
use jose::JoseError;
use signing::{SigningError, SigningKeys, SigningSecret};

/// The header type of our access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
pub const TOKEN_PATH: &str = "/v1/token";
pub const NONCE_PATH: &str = "/v1/nonce";
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Routes of the broker that take no credential (they are the way to get one).
pub const ROUTES: &[&str] = &[TOKEN_PATH, NONCE_PATH, JWKS_PATH];

/// The claims of an access token we issue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub scope: String,
    pub client_id: String,
    #[serde(deserialize_with = "jose::deserialize_numeric_date")]
    pub iat: i64,
    #[serde(deserialize_with = "jose::deserialize_numeric_date")]
    pub exp: i64,
    pub jti: String,
    pub cnf: Confirmation,
    /// The attestation the app passed at issuance, if any (`firebase_app_check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub att: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

/// What a token grants, as its `scope` string carries it: `model:<name>` for each model,
/// `infer`/`metadata`, and `output:<policy>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    pub models: Vec<String>,
    pub scopes: Scopes,
    pub output: Option<OutputPolicy>,
}

impl TokenScope {
    /// The app's whole policy.
    pub fn of_app(app: &AppConfig) -> TokenScope {
        TokenScope { models: app.models.clone(), scopes: app.scopes, output: app.output }
    }

    pub fn to_scope(&self) -> String {
        let mut parts: Vec<String> = self.models.iter().map(|model| format!("model:{model}")).collect();
        parts.extend(self.scopes.names().into_iter().map(str::to_owned));
        if let Some(output) = self.output {
            parts.push(format!("output:{output}"));
        }
        parts.join(" ")
    }

    /// Parses a scope string; `None` if it holds anything we do not know.
    pub fn parse(scope: &str) -> Option<TokenScope> {
        let mut grant = TokenScope { models: Vec::new(), scopes: Scopes::NONE, output: None };
        for part in scope.split(' ').filter(|part| !part.is_empty()) {
            if let Some(model) = part.strip_prefix("model:") {
                if !crate::config::valid_model_name(model) {
                    return None;
                }
                if !grant.models.iter().any(|known| known == model) {
                    grant.models.push(model.to_owned());
                }
            } else if let Some(output) = part.strip_prefix("output:") {
                if grant.output.is_some() {
                    return None;
                }
                grant.output = Some(output.parse().ok()?);
            } else if part == "infer" {
                grant.scopes.infer = true;
            } else if part == "metadata" {
                grant.scopes.metadata = true;
            } else {
                return None;
            }
        }
        Some(grant)
    }

    /// The part of `requested` the app's policy allows: models and actions in both, and the
    /// requested output policy only if it reveals no more than the app's. `None` when nothing
    /// usable is left (no model or no action).
    pub fn intersect(policy: &TokenScope, requested: Option<&TokenScope>) -> Option<TokenScope> {
        let Some(requested) = requested else {
            return Some(policy.clone());
        };
        let models: Vec<String> = if requested.models.is_empty() {
            policy.models.clone()
        } else {
            requested.models.iter().filter(|model| policy.models.contains(model)).cloned().collect()
        };
        let asked_actions = requested.scopes.infer || requested.scopes.metadata;
        let scopes = if asked_actions {
            Scopes {
                infer: requested.scopes.infer && policy.scopes.infer,
                metadata: requested.scopes.metadata && policy.scopes.metadata,
                ..Scopes::NONE
            }
        } else {
            policy.scopes
        };
        let output = match (requested.output, policy.output) {
            (Some(asked), Some(allowed)) if asked.is_narrower_or_equal(allowed) => Some(asked),
            (Some(asked), None) => Some(asked),
            (_, allowed) => allowed,
        };
        if models.is_empty() || !(scopes.infer || scopes.metadata) {
            return None;
        }
        Some(TokenScope { models, scopes, output })
    }
}

/// Why a broker token was refused at a model endpoint. For logs; the client sees 401 with
/// `invalid_token` or `invalid_dpop_proof`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token: {0}")]
    Token(JoseError),
    #[error("proof: {0}")]
    Proof(DpopError),
    #[error("the app '{0}' is no longer configured")]
    UnknownApp(String),
}

impl TokenError {
    pub fn code(&self) -> crate::reason::AuditReason {
        use crate::reason::AuditReason;
        match self {
            TokenError::Token(JoseError::UnknownKey) => AuditReason::TokenUnknownKey,
            TokenError::Token(JoseError::Signature) => AuditReason::TokenSignature,
            TokenError::Token(JoseError::Claims(_)) => AuditReason::TokenClaims,
            TokenError::Token(JoseError::Type(_)) => AuditReason::TokenTyp,
            TokenError::Token(JoseError::Algorithm(_)) => AuditReason::TokenAlg,
            TokenError::Token(_) => AuditReason::TokenMalformed,
            TokenError::Proof(error) => error.code(),
            TokenError::UnknownApp(_) => AuditReason::TokenUnknownApp,
        }
    }
}

/// The broker's state.
pub struct Broker {
    pub config: BrokerConfig,
    pub keys: SigningKeys,
    pub nonces: Nonces,
    replay: Replay,
    policy: Policy,
    app_check: Option<attest::FirebaseAppCheck>,
    /// Tokens whose signature was verified: SHA-256 of the token → its claims. An app makes
    /// many calls with one token; each still needs a fresh proof, but not a second signature
    /// check of the same bytes. Times are checked on every call.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], (String, AccessClaims)>>,
}

/// Verified tokens remembered at most; past it, expired ones are dropped, then all.
const VERIFIED_CAPACITY: usize = 100_000;

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

/// Live proofs remembered by one node when there is no shared cache.
const MEMORY_REPLAY_CAPACITY: usize = 1_000_000;

impl Broker {
    /// Opens the signing keys (creating the first), and the replay cache: Redis when the
    /// limiter has it, else this node's memory.
    pub async fn open(
        config: BrokerConfig,
        store: Arc<dyn Store>,
        shared: Option<Arc<crate::limits::redis::Shared>>,
        now: i64,
    ) -> Result<Broker, SigningError> {
        let env = std::env::var(signing::SECRET_ENV).ok();
        let secret = SigningSecret::load(&config.signing_secret_file, env.as_deref(), true)?;
        let nonce_key = secret.derive("dpop nonces");
        let overlap = config.token_lifetime + config.max_skew;
        let keys = SigningKeys::open(store, secret, config.algorithm, overlap, now).await?;
        let app_check = match &config.app_check {
            Some(app_check) => Some(attest::FirebaseAppCheck::new(app_check.clone()).map_err(SigningError::Secret)?),
            None => None,
        };
        Ok(Broker {
            nonces: Nonces::new(nonce_key, config.nonce_lifetime),
            replay: match shared {
                Some(shared) => Replay::Redis(shared),
                None => Replay::Memory(dpop::MemoryReplay::new(MEMORY_REPLAY_CAPACITY)),
            },
            policy: Policy {
                algorithms: config.dpop_algorithms.clone(),
                max_age: config.proof_max_age,
                max_skew: config.max_skew,
                require_nonce: config.require_nonce,
            },
            app_check,
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
            keys,
            config,
        })
    }

    /// How long a proof's `jti` is remembered: as long as the proof could be accepted.
    fn replay_window(&self) -> i64 {
        let seconds = self.config.proof_max_age + self.config.max_skew * 2;
        i64::try_from(seconds.as_secs()).unwrap_or(i64::MAX)
    }

    /// Checks a proof (all of RFC 9449 4.3, replay included).
    pub async fn check_proof(
        &self,
        proof: &str,
        expected: &Expected<'_>,
        bound_jkt: Option<&str>,
    ) -> Result<dpop::Proof, DpopError> {
        let proof = dpop::verify_proof(proof, expected, &self.policy, &self.nonces, bound_jkt)?;
        self.remember_proof(&proof, expected.now).await?;
        Ok(proof)
    }

    /// Checks a proof without recording it (the token endpoint records it only once the
    /// request has authenticated, so unauthenticated proofs cannot fill the replay cache).
    pub fn verify_proof(&self, proof: &str, expected: &Expected<'_>) -> Result<dpop::Proof, DpopError> {
        dpop::verify_proof(proof, expected, &self.policy, &self.nonces, None)
    }

    /// Records a verified proof: an error if it was used before.
    pub async fn remember_proof(&self, proof: &dpop::Proof, now: i64) -> Result<(), DpopError> {
        self.replay.first_use(proof, now, self.replay_window()).await
    }

    /// The attestation verifier an app requires.
    pub fn attestor(&self, kind: Attestation) -> Option<&dyn attest::Attestor> {
        match kind {
            Attestation::FirebaseAppCheck => self.app_check.as_ref().map(|verifier| verifier as &dyn attest::Attestor),
        }
    }

    /// Signs an access token for `sub` of `app`, bound to `jkt`.
    #[expect(clippy::too_many_arguments, reason = "each is one claim of the token; a struct would only rename them")]
    pub fn issue(
        &self,
        app: &AppConfig,
        sub: &str,
        audience: &str,
        grant: &TokenScope,
        jkt: &str,
        attestation: Option<String>,
        now: i64,
    ) -> Result<(String, AccessClaims), SigningError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| SigningError::Sign(e.to_string()))?;
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: sub.to_owned(),
            aud: audience.to_owned(),
            scope: grant.to_scope(),
            client_id: app.client_id.clone(),
            iat: now,
            exp: now.saturating_add(i64::try_from(self.config.token_lifetime.as_secs()).unwrap_or(600)),
            jti: jose::b64_encode(&id),
            cnf: Confirmation { jkt: jkt.to_owned() },
            att: attestation,
        };
        let token = self.keys.sign(ACCESS_TOKEN_TYPE, &claims)?;
        Ok((token, claims))
    }

    /// Verifies one of our access tokens (signature, type, issuer, audience = this gateway,
    /// times), without its proof.
    pub async fn verify_token(&self, token: &str, now: i64) -> Result<AccessClaims, JoseError> {
        if token.len() > jose::MAX_TOKEN_BYTES {
            return Err(JoseError::TooLong(jose::MAX_TOKEN_BYTES));
        }
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        let cached = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&digest).cloned();
        let claims = match cached {
            // Still only while the key that signed it is published.
            Some((kid, claims)) if self.keys.is_published(&kid, now) => claims,
            _ => {
                let (kid, claims) = self.verify_signed(token, now).await?;
                let mut verified = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.retain(|_, (_, claims)| claims.exp > now);
                    if verified.len() >= VERIFIED_CAPACITY {
                        verified.clear();
                    }
                }
                verified.insert(digest, (kid, claims.clone()));
                claims
            }
        };
        // Our own clock, not the library's: tokens expire when they say (plus the skew).
        let skew = i64::try_from(self.config.max_skew.as_secs()).unwrap_or(0);
        if claims.exp.saturating_add(skew) <= now {
            return Err(JoseError::Claims("expired".into()));
        }
        if claims.iat > now.saturating_add(skew) {
            return Err(JoseError::Claims("issued in the future".into()));
        }
        Ok(claims)
    }

    /// The signature and claim checks of [`Broker::verify_token`].
    async fn verify_signed(&self, token: &str, now: i64) -> Result<(String, AccessClaims), JoseError> {
        let compact = jose::screen(token, jose::MAX_TOKEN_BYTES)?;
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            typ: Option<String>,
            kid: Option<String>,
            jwk: Option<serde_json::Value>,
        }
        let header: Header =
            serde_json::from_slice(&jose::b64_decode(compact.header).ok_or(JoseError::Base64("header"))?)
                .map_err(|_| JoseError::NotJson("header"))?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(JoseError::Type(header.typ.unwrap_or_default()));
        }
        if header.jwk.is_some() {
            return Err(JoseError::EmbeddedKey);
        }
        let kid = header.kid.ok_or(JoseError::UnknownKey)?;
        let found = match self.keys.verification_key(&kid, now) {
            Some(found) => Some(found),
            None => {
                // A key made by a rotation on another node: reread the store, at most once a second.
                self.keys.reload_if_older(std::time::Duration::from_secs(1), now).await;
                self.keys.verification_key(&kid, now)
            }
        };
        let (alg, key) = found.ok_or(JoseError::UnknownKey)?;
        if format!("{alg:?}") != header.alg {
            return Err(JoseError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.max_skew.as_secs();
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.public_url]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JoseError::Signature,
                _ => JoseError::Claims(error.to_string()),
            })?
            .claims;
        Ok((kid, claims))
    }

    /// Authenticates a model call made with `Authorization: DPoP <token>` and a `DPoP` proof.
    pub async fn authenticate(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        path: &str,
        now: i64,
    ) -> Result<Principal, TokenError> {
        let claims = self.verify_token(token, now).await.map_err(TokenError::Token)?;
        let htu = self.config.htu(path);
        let expected = Expected { method, htu: &htu, access_token: Some(token), now };
        let proof = self.check_proof(proof, &expected, Some(&claims.cnf.jkt)).await.map_err(TokenError::Proof)?;
        let app = self.config.app(&claims.client_id).ok_or_else(|| TokenError::UnknownApp(claims.client_id.clone()))?;
        let grant =
            TokenScope::parse(&claims.scope).ok_or_else(|| TokenError::Token(JoseError::Claims("scope".into())))?;
        // The app's policy today still bounds a token issued under yesterday's.
        let grant = TokenScope::intersect(&TokenScope::of_app(app), Some(&grant))
            .ok_or_else(|| TokenError::Token(JoseError::Claims("scope".into())))?;
        Ok(Principal {
            id: crate::principal::PrincipalId::app_user(&app.client_id, &claims.sub),
            kind: PrincipalKind::BrokerToken,
            name: claims.sub,
            models: ModelScope::Only(grant.models),
            scopes: grant.scopes,
            output: grant.output,
            widen_output: false,
            limits: app.limits.clone(),
            delegate: false,
            device: app.device_rate.map(|rate| (crate::principal::PrincipalId::device(&proof.jkt).to_string(), rate)),
            delegator: None,
        })
    }
}

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod tests;
