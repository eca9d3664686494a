//! The broker's signing keys: generated here, stored with the private part sealed (AES-256-GCM
//! under the signing secret, which lives in a file or the environment, never in the store),
//! rotated by `portcullis signing-keys rotate`, published at `/.well-known/jwks.json` until the
//! last token each key signed has expired.

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, jwk::Jwk};
use ring::aead;
use zeroize::Zeroizing;

use super::jose;
use crate::store::{SigningKeyRecord, Store, StoreError};

/// The environment variable that holds the signing secret (64 hex digits), over the file.
pub const SECRET_ENV: &str = "PORTCULLIS_SIGNING_SECRET";

/// How often a node rereads the keys, to follow a rotation made elsewhere.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing secret: {0}")]
    Secret(String),
    #[error("signing key {kid}: {message}")]
    Key { kid: String, message: String },
    #[error("no signing key is active")]
    NoKey,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The key that seals signing keys at rest.
pub struct SigningSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// From `env` (hex) if given, else from `file`, creating the file (0600) when missing and
    /// `create` is set.
    pub fn load(file: &Path, env: Option<&str>, create: bool) -> Result<SigningSecret, SigningError> {
        let parse = |text: &str, what: &str| {
            crate::hex::decode(text.trim())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
                .map(|bytes| SigningSecret(Zeroizing::new(bytes)))
                .ok_or_else(|| SigningError::Secret(format!("{what} must hold exactly 64 hexadecimal characters")))
        };
        if let Some(text) = env {
            return parse(text, SECRET_ENV);
        }
        let shown = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => parse(&Zeroizing::new(text), &shown),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                getrandom::fill(bytes.as_mut()).map_err(|e| SigningError::Secret(e.to_string()))?;
                let hex = Zeroizing::new(crate::hex::encode(bytes.as_ref()));
                match crate::secret_file::write_private(file, hex.as_bytes()) {
                    Ok(()) => Ok(SigningSecret(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        SigningSecret::load(file, None, false)
                    }
                    Err(error) => Err(SigningError::Secret(format!("cannot create {shown}: {error}"))),
                }
            }
            Err(error) => Err(SigningError::Secret(format!("cannot read {shown}: {error}"))),
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> SigningSecret {
        SigningSecret(Zeroizing::new(bytes))
    }

    fn aead_key(&self) -> Result<aead::LessSafeKey, SigningError> {
        aead::UnboundKey::new(&aead::AES_256_GCM, self.0.as_ref())
            .map(aead::LessSafeKey::new)
            .map_err(|_| SigningError::Secret("unusable secret".into()))
    }

    /// `1 || nonce || ciphertext || tag`, with the key id as associated data (a sealed key
    /// moved to another row does not open).
    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| SigningError::Secret(e.to_string()))?;
        let mut buffer = plaintext.to_vec();
        self.aead_key()?
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(kid.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| SigningError::Secret("sealing failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + 12 + buffer.len());
        sealed.push(1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SigningError> {
        let fail = || SigningError::Key {
            kid: kid.to_owned(),
            message: "cannot be opened with this signing secret (a different secret, or a damaged row)".into(),
        };
        let [1, rest @ ..] = sealed else { return Err(fail()) };
        if rest.len() < 12 + 16 {
            return Err(fail());
        }
        let (nonce, ciphertext) = rest.split_at(12);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .aead_key()?
            .open_in_place(nonce, aead::Aad::from(kid.as_bytes()), buffer.as_mut_slice())
            .map_err(|_| fail())?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }

    /// A key for another purpose, derived from this one (DPoP nonces).
    pub fn derive(&self, purpose: &str) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = crate::mac::hmac_sha256(self.0.as_ref());
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Creates a new signing key and makes it the one that signs (retiring the previous one).
pub async fn rotate(
    store: &dyn Store,
    secret: &SigningSecret,
    alg: Algorithm,
    now: i64,
) -> Result<SigningKeyRecord, SigningError> {
    let (der, mut jwk) = jose::generate(alg).map_err(SigningError::Sign)?;
    let der = Zeroizing::new(der);
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).map_err(|e| SigningError::Sign(e.to_string()))?;
    let kid = jose::b64_encode(&id);
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    let record = SigningKeyRecord {
        sealed: secret.seal(&kid, &der)?,
        public_jwk: serde_json::to_string(&jwk).map_err(|e| SigningError::Sign(e.to_string()))?,
        alg: alg_name(alg).to_owned(),
        kid,
        created_at: now,
        retired_at: None,
    };
    store.insert_signing_key(&record).await?;
    Ok(record)
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        _ => "EdDSA",
    }
}

/// A key that verifies (published).
#[derive(Clone)]
struct Published {
    kid: String,
    alg: Algorithm,
    jwk: Jwk,
    key: DecodingKey,
    created_at: i64,
    retired_at: Option<i64>,
}

/// The key that signs now.
struct Current {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

struct State {
    current: Option<Arc<Current>>,
    published: Vec<Published>,
}

/// The signing keys as this node knows them.
pub struct SigningKeys {
    store: Arc<dyn Store>,
    secret: SigningSecret,
    alg: Algorithm,
    /// Token lifetime plus skew: how long a retired key still verifies.
    overlap: i64,
    state: RwLock<State>,
    last_reload: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("alg", &self.alg).field("overlap", &self.overlap).finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// Loads the keys, creating the first one if there is none.
    pub async fn open(
        store: Arc<dyn Store>,
        secret: SigningSecret,
        alg: Algorithm,
        overlap: Duration,
        now: i64,
    ) -> Result<SigningKeys, SigningError> {
        jose::install();
        let keys = SigningKeys {
            store,
            secret,
            alg,
            overlap: i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX),
            state: RwLock::new(State { current: None, published: Vec::new() }),
            last_reload: tokio::sync::Mutex::new(None),
        };
        keys.reload(now).await?;
        let usable = keys.read().current.as_ref().is_some_and(|current| current.alg == alg);
        if !usable {
            tracing::info!("creating a signing key for the token broker");
            rotate(keys.store.as_ref(), &keys.secret, alg, now).await?;
            keys.reload(now).await?;
        }
        Ok(keys)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn store_for_tests(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    pub fn secret(&self) -> &SigningSecret {
        &self.secret
    }

    /// Rereads the keys from the store.
    pub async fn reload(&self, now: i64) -> Result<(), SigningError> {
        let records = self.store.signing_keys().await?;
        let mut current = None;
        let mut published = Vec::new();
        for record in records {
            if record.retired_at.is_some_and(|retired| retired.saturating_add(self.overlap) < now) {
                continue;
            }
            let fail = |message: String| SigningError::Key { kid: record.kid.clone(), message };
            let jwk: Jwk = serde_json::from_str(&record.public_jwk).map_err(|e| fail(e.to_string()))?;
            let (alg, key) = jose::decoding_key(&jwk).map_err(|e| fail(e.to_string()))?;
            if record.retired_at.is_none() {
                let der = self.secret.open(&record.kid, &record.sealed)?;
                let encoding = match alg {
                    Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
                    _ => EncodingKey::from_ec_der(&der),
                };
                current = Some(Arc::new(Current { kid: record.kid.clone(), alg, key: encoding }));
            }
            published.push(Published {
                kid: record.kid,
                alg,
                jwk,
                key,
                created_at: record.created_at,
                retired_at: record.retired_at,
            });
        }
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.current = current;
        state.published = published;
        Ok(())
    }

    /// Rereads the keys if the last reload is older than `at_most_every` (an unknown `kid`, or
    /// the periodic refresh).
    pub async fn reload_if_older(&self, at_most_every: Duration, now: i64) {
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|at| at.elapsed() < at_most_every) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.reload(now).await {
            tracing::warn!(%error, "could not reload the signing keys; keeping the ones loaded");
        }
    }

    /// Signs `claims` as a JWT of type `typ` with the current key.
    pub fn sign(&self, typ: &str, claims: &impl serde::Serialize) -> Result<String, SigningError> {
        let current = self.read().current.clone().ok_or(SigningError::NoKey)?;
        let mut header = Header::new(current.alg);
        header.typ = Some(typ.to_owned());
        header.kid = Some(current.kid.clone());
        jsonwebtoken::encode(&header, claims, &current.key).map_err(|e| SigningError::Sign(e.to_string()))
    }

    /// The key that verifies tokens with `kid` at `now`: the current key, or a retired one
    /// whose tokens may still be live.
    pub fn verification_key(&self, kid: &str, now: i64) -> Option<(Algorithm, DecodingKey)> {
        self.read()
            .published
            .iter()
            .find(|key| {
                key.kid == kid && key.retired_at.is_none_or(|retired| retired.saturating_add(self.overlap) >= now)
            })
            .map(|key| (key.alg, key.key.clone()))
    }

    /// Whether the key `kid` still verifies tokens at `now`.
    pub fn is_published(&self, kid: &str, now: i64) -> bool {
        self.read().published.iter().any(|key| {
            key.kid == kid && key.retired_at.is_none_or(|retired| retired.saturating_add(self.overlap) >= now)
        })
    }

    /// The JWK Set to publish at `now`.
    pub fn jwks(&self, now: i64) -> serde_json::Value {
        let state = self.read();
        let keys: Vec<&Jwk> = state
            .published
            .iter()
            .filter(|key| key.created_at <= now.saturating_add(300))
            .filter(|key| key.retired_at.is_none_or(|retired| retired.saturating_add(self.overlap) >= now))
            .map(|key| &key.jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// The kid of the key that signs now.
    pub fn current_kid(&self) -> Option<String> {
        self.read().current.as_ref().map(|current| current.kid.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
        (dir, Arc::new(store))
    }

    #[test]
    fn sealed_keys_open_only_with_their_secret_and_row() {
        let secret = SigningSecret::from_bytes([7; 32]);
        let sealed = secret.seal("kid-1", b"private").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"), "the key is not stored in the clear");
        assert_eq!(secret.open("kid-1", &sealed).unwrap().as_slice(), b"private");
        assert!(secret.open("kid-2", &sealed).is_err(), "moved to another row");
        assert!(SigningSecret::from_bytes([8; 32]).open("kid-1", &sealed).is_err(), "another secret");
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(secret.open("kid-1", &damaged).is_err());
        assert!(secret.open("kid-1", &[]).is_err());
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
    }

    #[test]
    fn the_secret_file_is_created_once_and_refused_when_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signing.secret");
        assert!(SigningSecret::load(&file, None, false).is_err());
        let first = SigningSecret::load(&file, None, true).unwrap();
        let again = SigningSecret::load(&file, None, true).unwrap();
        assert_eq!(first.0.as_slice(), again.0.as_slice());
        std::fs::write(&file, "abcd").unwrap();
        assert!(SigningSecret::load(&file, None, false).is_err());
        assert!(SigningSecret::load(&file, Some("zz"), false).is_err());
        assert!(SigningSecret::load(&file, Some(&"ab".repeat(32)), false).is_ok());
    }

    #[tokio::test]
    async fn a_rotated_key_verifies_until_its_tokens_expire_then_not() {
        let (_dir, store) = store().await;
        let secret = || SigningSecret::from_bytes([3; 32]);
        let keys = SigningKeys::open(Arc::clone(&store), secret(), Algorithm::EdDSA, Duration::from_secs(660), 1_000)
            .await
            .unwrap();
        let old = keys.current_kid().unwrap();
        assert!(keys.sign("at+jwt", &serde_json::json!({"a": 1})).unwrap().split('.').count() == 3);
        rotate(store.as_ref(), &secret(), Algorithm::EdDSA, 2_000).await.unwrap();
        keys.reload(2_000).await.unwrap();
        let new = keys.current_kid().unwrap();
        assert_ne!(old, new);
        // The old key still verifies and is still published for the overlap...
        assert!(keys.verification_key(&old, 2_000 + 660).is_some());
        let jwks = keys.jwks(2_000 + 660).to_string();
        assert!(jwks.contains(&old) && jwks.contains(&new));
        // ...and no longer after it.
        assert!(keys.verification_key(&old, 2_000 + 661).is_none());
        assert!(!keys.jwks(2_000 + 661).to_string().contains(&old));
        keys.reload(2_000 + 661).await.unwrap();
        assert!(keys.verification_key(&old, 2_000 + 661).is_none());
        assert!(keys.verification_key(&new, 2_000 + 661).is_some());
        // The JWKS holds public keys only.
        assert!(!jose::has_private_part(&keys.jwks(2_000)["keys"][0]));
    }

    #[tokio::test]
    async fn a_node_with_another_secret_cannot_sign() {
        let (_dir, store) = store().await;
        SigningKeys::open(
            Arc::clone(&store),
            SigningSecret::from_bytes([1; 32]),
            Algorithm::ES256,
            Duration::from_secs(600),
            1,
        )
        .await
        .unwrap();
        let error =
            SigningKeys::open(store, SigningSecret::from_bytes([2; 32]), Algorithm::ES256, Duration::from_secs(600), 2)
                .await
                .unwrap_err();
        assert!(matches!(error, SigningError::Key { .. }), "{error}");
    }
}
