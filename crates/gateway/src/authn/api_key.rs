//! API keys: parsed and checksummed first (no store lookup for garbage), then looked up by key
//! id, HMAC-SHA-256'd under the server pepper and compared in constant time.
//!
//! Lookups are cached for `key_cache_ttl` (default 5 s), and a key changed in the store (revoked,
//! rotated, limits updated, by any process) leaves the cache within [`KEY_CHANGES_INTERVAL`]
//! through the store's change feed: a revoked key stops working within a second, and a flood of
//! requests with one key costs one store query per interval. Unknown key
//! ids are cached too, so random valid-looking keys cannot hammer the store.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hmac::Mac;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AuthnError;
use crate::principal::{Principal, PrincipalKind};
use crate::store::{KeyRecord, Store};

/// The server-wide secret that keys are hashed under. Never printed.
#[derive(Clone)]
pub struct Pepper(Arc<Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

/// The environment variable that overrides the pepper file (hex, at least 32 bytes).
pub const PEPPER_ENV: &str = "PORTCULLIS_PEPPER";

#[derive(Debug, thiserror::Error)]
pub enum PepperError {
    #[error("{PEPPER_ENV} must be at least 64 hexadecimal characters (32 bytes)")]
    BadEnv,
    #[error("pepper file {0}: {1}")]
    File(String, String),
}

impl Pepper {
    pub fn from_bytes(bytes: Vec<u8>) -> Pepper {
        Pepper(Arc::new(Zeroizing::new(bytes)))
    }

    /// Reads the pepper from `PORTCULLIS_PEPPER` or from the file, creating the file (mode 0600,
    /// 32 random bytes as hex) when `create` is set and it does not exist yet.
    pub fn load(file: &Path, env: Option<&str>, create: bool) -> Result<Pepper, PepperError> {
        if let Some(hex) = env {
            return crate::hex::decode(hex.trim())
                .filter(|bytes| bytes.len() >= 32)
                .map(Pepper::from_bytes)
                .ok_or(PepperError::BadEnv);
        }
        let shown = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                crate::hex::decode(text.trim())
                    .filter(|bytes| bytes.len() >= 32)
                    .map(Pepper::from_bytes)
                    .ok_or_else(|| PepperError::File(shown, "must hold at least 64 hexadecimal characters".into()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = Zeroizing::new(vec![0u8; 32]);
                getrandom::fill(&mut bytes).map_err(|e| PepperError::File(shown.clone(), e.to_string()))?;
                let hex = Zeroizing::new(crate::hex::encode(&bytes));
                match crate::secret_file::write_private(file, hex.as_bytes()) {
                    Ok(()) => Ok(Pepper::from_bytes(bytes.to_vec())),
                    // Another process (a second node starting) created it first: use theirs.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Pepper::load(file, None, false),
                    Err(error) => Err(PepperError::File(shown, error.to_string())),
                }
            }
            Err(error) => Err(PepperError::File(shown, error.to_string())),
        }
    }

    /// HMAC-SHA-256 of the whole key.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = crate::mac::hmac_sha256(&self.0);
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

struct CacheEntry<T> {
    value: T,
    fetched: Instant,
}

/// Verifies API keys against the store, with bounded, short-lived caches.
///
/// Known keys and unknown key ids are cached apart, so a flood of made-up ids (each with a
/// valid checksum) cannot evict a real key. Once the set of key ids in the store is loaded (by
/// [`KeyVerifier::follow_key_changes`], kept current by the store's change feed), an id outside
/// it is refused without a store query at all.
pub struct KeyVerifier {
    store: Arc<dyn Store>,
    pepper: Pepper,
    ttl: Duration,
    known: Mutex<HashMap<String, CacheEntry<Arc<KeyRecord>>>>,
    unknown: Mutex<HashMap<String, CacheEntry<()>>>,
    /// Every key id the store holds, once loaded; `None` until then (every miss asks the store).
    kids: std::sync::RwLock<Option<std::collections::HashSet<String>>>,
    /// Store queries allowed for ids outside `kids` (a key created a moment ago, before the
    /// change feed brought its id): a small budget, so made-up ids cannot hammer the store.
    unlisted: Mutex<(f64, Instant)>,
}

/// Queries per second (and at once) for ids the loaded set does not hold.
const UNLISTED_PER_SECOND: f64 = 20.0;

impl std::fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVerifier").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// How often the store's key-change feed is read.
pub const KEY_CHANGES_INTERVAL: Duration = Duration::from_millis(250);

/// How often the old entries of the key-change feed are deleted, and how long they are kept.
const KEY_CHANGES_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
const KEY_CHANGES_KEPT_SECONDS: i64 = 86_400;

/// Known keys kept at most; past it that cache is cleared (each entry refetches once).
const CACHE_CAPACITY: usize = 100_000;
/// Unknown key ids remembered at most; past it only that cache is cleared.
const UNKNOWN_CAPACITY: usize = 10_000;

impl KeyVerifier {
    pub fn new(store: Arc<dyn Store>, pepper: Pepper, ttl: Duration) -> KeyVerifier {
        KeyVerifier {
            store,
            pepper,
            ttl,
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            kids: std::sync::RwLock::new(None),
            unlisted: Mutex::new((UNLISTED_PER_SECOND, Instant::now())),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks a presented key of `kind` against the store: its record if it is live.
    async fn check(&self, token: &str, kind: apikey::KeyKind) -> Result<Arc<KeyRecord>, AuthnError> {
        let key = apikey::parse(token).map_err(AuthnError::Malformed)?;
        if key.kind() != kind {
            return Err(AuthnError::WrongKind);
        }
        let record = self.lookup(key.kid()).await?.ok_or(AuthnError::Unknown)?;
        let presented = self.pepper.hash(key.expose());
        if !bool::from(presented.ct_eq(&record.hash)) || record.kind != kind {
            return Err(AuthnError::WrongSecret);
        }
        match record.usable_at(crate::time::now()) {
            Err(crate::store::Unusable::Revoked) => Err(AuthnError::Revoked),
            Err(crate::store::Unusable::Expired) => Err(AuthnError::Expired),
            Ok(()) => Ok(record),
        }
    }

    /// Verifies an admin key (`ptcl_ak_`); returns its key id.
    pub async fn verify_admin(&self, token: &str) -> Result<String, AuthnError> {
        Ok(self.check(token, apikey::KeyKind::Admin).await?.kid.clone())
    }

    /// Verifies a presented key and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthnError> {
        let record = self.check(token, apikey::KeyKind::Secret).await?;
        Ok(Principal {
            id: crate::principal::PrincipalId::key(&record.kid),
            kind: PrincipalKind::ApiKey,
            name: record.name.clone(),
            models: record.models.clone(),
            scopes: record.scopes,
            output: record.output,
            widen_output: record.widen_output,
            limits: record.limits.clone(),
            delegate: record.delegate,
            device: None,
            delegator: None,
        })
    }

    /// Drops a key from the cache, so its next use reads the store (a revocation or a limit
    /// change announced by another node).
    pub fn forget(&self, kid: &str) {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).remove(kid);
        self.unknown.lock().unwrap_or_else(PoisonError::into_inner).remove(kid);
        // A changed id may be a new one: it exists from now on.
        if let Some(kids) = self.kids.write().unwrap_or_else(PoisonError::into_inner).as_mut() {
            kids.insert(kid.to_owned());
        }
    }

    /// Loads the set of key ids in the store; from then on an id outside it is refused without
    /// a query. Changes after `cursor` reach the set through [`KeyVerifier::forget`].
    pub async fn load_key_ids(&self) -> Result<(), crate::store::StoreError> {
        let kids = self.store.list_kids().await?;
        *self.kids.write().unwrap_or_else(PoisonError::into_inner) = Some(kids.into_iter().collect());
        Ok(())
    }

    /// Drops every cached key: more changes arrived than could be read one by one.
    pub fn forget_all(&self) {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.unknown.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Follows the store's key-change feed until `stop`: a key revoked or changed by any
    /// process (`portcullis keys revoke`, another node) leaves this node's cache within
    /// `interval`, with or without Redis. If the store cannot be read, the cache's own
    /// interval still bounds how long a revoked key works.
    pub async fn follow_key_changes(&self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut cursor = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = crate::shutdown::stopped(&mut stop) => return,
            }
            match self.store.key_changes(cursor).await {
                Ok(changes) => {
                    if cursor.is_some() {
                        if i64::try_from(changes.kids.len()).unwrap_or(i64::MAX) >= crate::store::KEY_CHANGES_PAGE {
                            self.forget_all();
                        } else {
                            for kid in &changes.kids {
                                self.forget(kid);
                            }
                        }
                    } else {
                        // The first read: anything cached before it may be stale; the ids that
                        // exist now are loaded after the cursor, so no change falls between.
                        self.forget_all();
                        if let Err(error) = self.load_key_ids().await {
                            tracing::warn!(%error, "cannot load the key ids; unknown ids are looked up");
                            continue;
                        }
                    }
                    cursor = Some(changes.cursor);
                }
                Err(error) => tracing::warn!(%error, "cannot read key changes; keys stay cached for key_cache_ttl"),
            }
            if last_prune.elapsed() > KEY_CHANGES_PRUNE_INTERVAL {
                last_prune = Instant::now();
                let before = crate::time::now() - KEY_CHANGES_KEPT_SECONDS;
                if let Err(error) = self.store.prune_key_changes(before).await {
                    tracing::warn!(%error, "cannot prune old key changes");
                }
            }
        }
    }

    /// Takes one query from the budget for unlisted ids, if any is left.
    fn spend_unlisted(&self) -> bool {
        let mut budget = self.unlisted.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = *budget;
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * UNLISTED_PER_SECOND).min(UNLISTED_PER_SECOND);
        if tokens < 1.0 {
            *budget = (tokens, now);
            return false;
        }
        *budget = (tokens - 1.0, now);
        true
    }

    async fn lookup(&self, kid: &str) -> Result<Option<Arc<KeyRecord>>, AuthnError> {
        {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = known.get(kid)
                && entry.fetched.elapsed() < self.ttl
            {
                return Ok(Some(Arc::clone(&entry.value)));
            }
        }
        {
            let unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            if unknown.get(kid).is_some_and(|entry| entry.fetched.elapsed() < self.ttl) {
                return Ok(None);
            }
        }
        // An id the store does not hold is refused without asking it, but for a small budget
        // of queries (a key created since the change feed was last read).
        let unlisted =
            self.kids.read().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|kids| !kids.contains(kid));
        if unlisted && !self.spend_unlisted() {
            return Ok(None);
        }
        let record = match self.store.find_key(kid).await {
            Ok(record) => record.map(Arc::new),
            Err(error) => {
                tracing::error!(%error, "key lookup failed; refusing the request");
                return Err(AuthnError::Unavailable);
            }
        };
        match &record {
            Some(record) => {
                let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                if known.len() >= CACHE_CAPACITY {
                    known.clear();
                }
                known.insert(kid.to_owned(), CacheEntry { value: Arc::clone(record), fetched: Instant::now() });
            }
            None => {
                let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
                if unknown.len() >= UNKNOWN_CAPACITY {
                    unknown.clear();
                }
                unknown.insert(kid.to_owned(), CacheEntry { value: (), fetched: Instant::now() });
            }
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that counts its key lookups.
    #[derive(Debug)]
    struct Counting {
        inner: crate::store::sqlite::SqliteStore,
        lookups: std::sync::atomic::AtomicU64,
    }

    #[async_trait::async_trait]
    impl Store for Counting {
        async fn ping(&self) -> Result<(), crate::store::StoreError> {
            self.inner.ping().await
        }
        async fn insert_key(&self, key: &KeyRecord) -> Result<(), crate::store::StoreError> {
            self.inner.insert_key(key).await
        }
        async fn find_key(&self, kid: &str) -> Result<Option<KeyRecord>, crate::store::StoreError> {
            self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.find_key(kid).await
        }
        async fn list_keys(&self) -> Result<Vec<KeyRecord>, crate::store::StoreError> {
            self.inner.list_keys().await
        }
        async fn list_kids(&self) -> Result<Vec<String>, crate::store::StoreError> {
            self.inner.list_kids().await
        }
        async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool, crate::store::StoreError> {
            self.inner.revoke_key(kid, at).await
        }
        async fn rotate_key(&self, old: &str, new: &KeyRecord, at: i64) -> Result<(), crate::store::StoreError> {
            self.inner.rotate_key(old, new, at).await
        }
        async fn update_limits(
            &self,
            kid: &str,
            limits: &crate::store::KeyLimits,
        ) -> Result<bool, crate::store::StoreError> {
            self.inner.update_limits(kid, limits).await
        }
        async fn add_usage(&self, usage: &[crate::store::Usage]) -> Result<(), crate::store::StoreError> {
            self.inner.add_usage(usage).await
        }
        async fn usage(
            &self,
            kid: Option<&str>,
            since: &str,
        ) -> Result<Vec<crate::store::Usage>, crate::store::StoreError> {
            self.inner.usage(kid, since).await
        }
        async fn insert_signing_key(
            &self,
            key: &crate::store::SigningKeyRecord,
        ) -> Result<(), crate::store::StoreError> {
            self.inner.insert_signing_key(key).await
        }
        async fn signing_keys(&self) -> Result<Vec<crate::store::SigningKeyRecord>, crate::store::StoreError> {
            self.inner.signing_keys().await
        }
        async fn prune_signing_keys(&self, before: i64) -> Result<u64, crate::store::StoreError> {
            self.inner.prune_signing_keys(before).await
        }
        async fn key_changes(&self, after: Option<i64>) -> Result<crate::store::KeyChanges, crate::store::StoreError> {
            self.inner.key_changes(after).await
        }
        async fn prune_key_changes(&self, before: i64) -> Result<(), crate::store::StoreError> {
            self.inner.prune_key_changes(before).await
        }
    }

    async fn create(keyring: &crate::keys::Keyring, name: &str) -> (apikey::SecretKey, KeyRecord) {
        let new = crate::keys::NewKey {
            name: name.into(),
            owner: None,
            models: crate::store::ModelScope::All,
            scopes: crate::store::Scopes::ALL,
            output: None,
            widen_output: false,
            delegate: false,
            expires_in: None,
            limits: Default::default(),
        };
        keyring.create(&new).await.unwrap()
    }

    #[tokio::test]
    async fn a_flood_of_unknown_keys_neither_hammers_the_store_nor_evicts_good_keys() {
        let dir = tempfile::tempdir().unwrap();
        let inner = crate::store::sqlite::SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
        let store = Arc::new(Counting { inner, lookups: std::sync::atomic::AtomicU64::new(0) });
        let pepper = Pepper::from_bytes(vec![5; 32]);
        let keyring = crate::keys::Keyring::new(Arc::clone(&store) as Arc<dyn Store>, pepper.clone(), None);
        let (good, _) = create(&keyring, "good").await;
        let verifier = KeyVerifier::new(Arc::clone(&store) as Arc<dyn Store>, pepper, Duration::from_secs(60));
        verifier.load_key_ids().await.unwrap();
        assert!(verifier.verify(good.expose()).await.is_ok());
        let before = store.lookups.load(std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        for _ in 0..100_000 {
            let forged = apikey::generate(apikey::KeyKind::Secret).unwrap();
            assert_eq!(verifier.verify(forged.expose()).await, Err(AuthnError::Unknown));
        }
        let queried = store.lookups.load(std::sync::atomic::Ordering::Relaxed) - before;
        let allowed = UNLISTED_PER_SECOND * (1.0 + started.elapsed().as_secs_f64());
        assert!((queried as f64) <= allowed, "{queried} store lookups for 100,000 made-up keys (budget {allowed:.0})");
        // The good key is still cached: no store query, still accepted.
        let before = store.lookups.load(std::sync::atomic::Ordering::Relaxed);
        assert!(verifier.verify(good.expose()).await.is_ok());
        assert_eq!(store.lookups.load(std::sync::atomic::Ordering::Relaxed), before, "the good key was evicted");
        // A key created since the ids were loaded is still found (within the small budget).
        let (fresh, _) = create(&keyring, "fresh").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(verifier.verify(fresh.expose()).await.is_ok());
    }

    #[test]
    fn pepper_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepper");
        let created = Pepper::load(&path, None, true).unwrap();
        let again = Pepper::load(&path, None, false).unwrap();
        assert_eq!(created.hash("k"), again.hash("k"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!format!("{created:?}").contains(&std::fs::read_to_string(&path).unwrap()));
        assert!(Pepper::load(&dir.path().join("missing"), None, false).is_err());
        assert!(matches!(Pepper::load(&path, Some("abcd"), false), Err(PepperError::BadEnv)));
    }

    #[test]
    fn nodes_starting_together_agree_on_one_pepper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pepper");
        let peppers: Vec<Pepper> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| Pepper::load(&path, None, true).unwrap())).collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).collect()
        });
        assert!(peppers.iter().all(|pepper| pepper.hash("k") == peppers[0].hash("k")));
    }
}
