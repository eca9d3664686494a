//! Platform attestation on the token request: evidence that the caller is the genuine app on a
//! genuine device (Firebase App Check, App Attest, Play Integrity). An app that requires it
//! gets no token without it.
//!
//! [`Attestor`] is the hook; [`FirebaseAppCheck`] is the verifier we ship: an App Check token
//! (header `X-Firebase-AppCheck`) is an RS256 JWT signed by Firebase's JWKS, issued by
//! `https://firebaseappcheck.googleapis.com/<project number>`, with `projects/<project number>`
//! in its audience and the app id in `sub`.

use async_trait::async_trait;
use http::HeaderMap;

use super::idp::{self, KeySet, Rules};
use crate::config::{JwksSource, TokenUse, broker::AppCheckConfig};

/// The header App Check clients send their token in.
pub const APP_CHECK_HEADER: &str = "x-firebase-appcheck";

/// What a verifier sees of the token request.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub headers: &'a HeaderMap,
    pub client_id: &'a str,
    /// The thumbprint of the DPoP key the token will be bound to.
    pub jkt: &'a str,
    pub now: i64,
}

/// A platform attestation check. `Ok` carries a short label recorded in the token (`att`).
#[async_trait]
pub trait Attestor: Send + Sync + std::fmt::Debug {
    async fn verify(&self, evidence: &Evidence<'_>) -> Result<String, String>;
}

/// Firebase App Check tokens.
#[derive(Debug)]
pub struct FirebaseAppCheck {
    config: AppCheckConfig,
    issuer: String,
    audience: Vec<String>,
    keys: KeySet,
}

impl FirebaseAppCheck {
    pub fn new(config: AppCheckConfig) -> Result<FirebaseAppCheck, String> {
        let keys = KeySet::new(
            config.jwks.clone(),
            vec![jsonwebtoken::Algorithm::RS256],
            std::time::Duration::from_secs(60),
            // Firebase publishes its keys for hours; refetch every six.
            std::time::Duration::from_secs(6 * 3600),
            std::time::Duration::from_secs(5),
        )?;
        Ok(FirebaseAppCheck {
            issuer: format!("https://firebaseappcheck.googleapis.com/{}", config.project_number),
            audience: vec![format!("projects/{}", config.project_number)],
            keys,
            config,
        })
    }

    pub fn source(&self) -> &JwksSource {
        &self.config.jwks
    }
}

#[async_trait]
impl Attestor for FirebaseAppCheck {
    async fn verify(&self, evidence: &Evidence<'_>) -> Result<String, String> {
        let mut values = evidence.headers.get_all(APP_CHECK_HEADER).iter();
        let token = values.next().ok_or("no App Check token")?;
        if values.next().is_some() {
            return Err("more than one App Check token".into());
        }
        let token = token.to_str().map_err(|_| "malformed App Check token")?;
        let rules = Rules {
            issuer: &self.issuer,
            audiences: &self.audience,
            algorithms: &[jsonwebtoken::Algorithm::RS256],
            tokens: TokenUse::IdToken,
            max_skew: std::time::Duration::from_secs(60),
            max_age: None,
            typ: Some("JWT"),
        };
        let verified = idp::verify(token, &self.keys, &rules, evidence.now).await.map_err(|e| e.to_string())?;
        if !self.config.app_ids.contains(&verified.subject) {
            return Err(format!("app id '{}' is not allowed", verified.subject));
        }
        Ok("firebase_app_check".into())
    }
}
