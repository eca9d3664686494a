//! The API key lifecycle, as `portcullis keys ...` drives it: create, list, show, revoke, rotate.
//! Secrets are generated here, returned once, and only their hashes are stored.

use std::sync::Arc;

use crate::{
    audit::{AuditConfig, AuditEvent},
    authn::api_key::Pepper,
    store::{KeyLimits, KeyRecord, ModelScope, Scopes, Store, StoreError},
};

/// What a new key may do.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub owner: Option<String>,
    pub models: ModelScope,
    pub scopes: Scopes,
    /// Output policy; `None` takes each model's default.
    pub output: Option<crate::minimise::OutputPolicy>,
    /// Let `output` be wider than a model's default (otherwise the narrower of the two applies).
    pub widen_output: bool,
    /// May name the end user it acts for (`Portcullis-On-Behalf-Of`): for app backends.
    pub delegate: bool,
    /// Seconds from now; `None` for a key that never expires.
    pub expires_in: Option<u64>,
    /// Its own limits; unset ones fall back to the config's `[limits]`.
    pub limits: KeyLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key with id {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Random(#[from] apikey::GenerateError),
    #[error("the change was made, but its audit record could not be written: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// What `revoke_leaked` did with a found secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakedKey {
    /// Revoked now; `was_live`: it was unexpired and usable until this moment; `announced`: the
    /// running nodes were told at once (else they see it within their key cache interval).
    Revoked {
        kid: String,
        was_live: bool,
        announced: bool,
    },
    AlreadyRevoked {
        kid: String,
    },
    /// No key in this store has this secret.
    NotInStore,
}

/// Key management over a store. Every change leaves an admin record in the audit log.
#[derive(Debug, Clone)]
pub struct Keyring {
    store: Arc<dyn Store>,
    pepper: Pepper,
    audit: Option<AuditConfig>,
    /// Tells every gateway node when a key changes (revoked, rotated, new limits).
    notifier: Option<Arc<crate::limits::redis::Shared>>,
}

impl Keyring {
    /// `audit`: the log that records each change (`None` only when auditing is disabled).
    pub fn new(store: Arc<dyn Store>, pepper: Pepper, audit: Option<AuditConfig>) -> Keyring {
        Keyring { store, pepper, audit, notifier: None }
    }

    /// Announces key changes on the shared limiter's channel, so every node drops the key from
    /// its cache at once instead of within `key_cache_ttl`.
    pub fn with_notifier(mut self, notifier: Option<Arc<crate::limits::redis::Shared>>) -> Keyring {
        self.notifier = notifier;
        self
    }

    /// Whether a change was announced to the running nodes (false: they see it within their
    /// key cache interval).
    async fn announce(&self, kid: &str) -> bool {
        let Some(notifier) = &self.notifier else { return false };
        match notifier.publish_key_change(kid).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, kid, "could not announce the key change; nodes see it within key_cache_ttl");
                false
            }
        }
    }

    fn record(&self, event: AuditEvent) -> Result<(), KeyError> {
        match &self.audit {
            Some(config) => Ok(crate::audit::append_admin(config, event)?),
            None => Ok(()),
        }
    }

    /// Creates a key. The returned secret is the only copy.
    pub async fn create(&self, new: &NewKey) -> Result<(apikey::SecretKey, KeyRecord), KeyError> {
        validate(new)?;
        let now = crate::time::now();
        let expires_at = match new.expires_in {
            None => None,
            Some(seconds) => Some(
                now.saturating_add(i64::try_from(seconds).map_err(|_| KeyError::Invalid("expiry too far".into()))?),
            ),
        };
        let secret = apikey::generate(apikey::KeyKind::Secret)?;
        let record = KeyRecord {
            kid: secret.kid().to_owned(),
            kind: apikey::KeyKind::Secret,
            name: new.name.clone(),
            owner: new.owner.clone(),
            hash: self.pepper.hash(secret.expose()),
            models: new.models.clone(),
            scopes: new.scopes,
            output: new.output,
            widen_output: new.widen_output,
            delegate: new.delegate,
            created_at: now,
            expires_at,
            revoked_at: None,
            replaced_by: None,
            limits: new.limits.clone(),
        };
        // The record comes first: a change that cannot be audited is not made.
        self.record(AuditEvent::KeyCreated {
            kid: record.kid.clone(),
            name: record.name.clone(),
            models: record.models.to_string(),
            scopes: record.scopes.names().join(","),
            output: record.output.map(|policy| policy.to_string()),
            expires_at: record.expires_at,
        })?;
        self.store.insert_key(&record).await?;
        Ok((secret, record))
    }

    /// Creates an admin key (`ptcl_ak_`): it opens the admin listener's `/usage`, and is
    /// refused on the public listener (it can call no model). The secret is the only copy.
    pub async fn create_admin(
        &self,
        name: &str,
        owner: Option<String>,
        expires_in: Option<u64>,
    ) -> Result<(apikey::SecretKey, KeyRecord), KeyError> {
        validate_names(name, owner.as_deref())?;
        let now = crate::time::now();
        let expires_at = match expires_in {
            None => None,
            Some(seconds) => Some(
                now.saturating_add(i64::try_from(seconds).map_err(|_| KeyError::Invalid("expiry too far".into()))?),
            ),
        };
        let secret = apikey::generate(apikey::KeyKind::Admin)?;
        let record = KeyRecord {
            kid: secret.kid().to_owned(),
            kind: apikey::KeyKind::Admin,
            name: name.to_owned(),
            owner,
            hash: self.pepper.hash(secret.expose()),
            // It reaches no model; the public listener refuses its kind before looking.
            models: ModelScope::Only(Vec::new()),
            scopes: Scopes { metadata: true, ..Scopes::NONE },
            output: None,
            widen_output: false,
            delegate: false,
            created_at: now,
            expires_at,
            revoked_at: None,
            replaced_by: None,
            limits: KeyLimits::default(),
        };
        self.record(AuditEvent::KeyCreated {
            kid: record.kid.clone(),
            name: record.name.clone(),
            models: "admin".to_owned(),
            scopes: "admin".to_owned(),
            output: None,
            expires_at: record.expires_at,
        })?;
        self.store.insert_key(&record).await?;
        Ok((secret, record))
    }

    pub async fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        Ok(self.store.list_keys().await?)
    }

    pub async fn show(&self, kid: &str) -> Result<KeyRecord, KeyError> {
        self.store.find_key(kid).await?.ok_or_else(|| KeyError::NotFound(kid.to_owned()))
    }

    /// Revokes a key; returns whether the running nodes were told at once.
    pub async fn revoke(&self, kid: &str) -> Result<bool, KeyError> {
        let key = self.show(kid).await?;
        if key.revoked_at.is_some() {
            return Err(KeyError::Invalid(format!("key {kid} is revoked already")));
        }
        // The record comes first: a change that cannot be audited is not made.
        self.record(AuditEvent::KeyRevoked { kid: kid.to_owned() })?;
        self.store.revoke_key(kid, crate::time::now()).await?;
        Ok(self.announce(kid).await)
    }

    /// Revokes the key whose whole secret was found leaked (`leaks scan --revoke`). The secret
    /// must match the stored hash: a string that merely carries a known key id (a forgery, or
    /// another installation's key) revokes nothing.
    pub async fn revoke_leaked(&self, secret: &str, found_in: &str) -> Result<LeakedKey, KeyError> {
        use subtle::ConstantTimeEq;
        let Ok(parsed) = apikey::parse(secret) else { return Ok(LeakedKey::NotInStore) };
        let kid = parsed.kid().to_owned();
        let Some(record) = self.store.find_key(&kid).await? else { return Ok(LeakedKey::NotInStore) };
        if !bool::from(self.pepper.hash(secret).ct_eq(&record.hash)) {
            return Ok(LeakedKey::NotInStore);
        }
        if record.revoked_at.is_some() {
            return Ok(LeakedKey::AlreadyRevoked { kid });
        }
        let was_live = record.usable_at(crate::time::now()).is_ok();
        // The record comes first: a change that cannot be audited is not made.
        self.record(AuditEvent::LeakedKeyRevoked { kid: kid.clone(), found_in: found_in.to_owned() })?;
        self.store.revoke_key(&kid, crate::time::now()).await?;
        let announced = self.announce(&kid).await;
        Ok(LeakedKey::Revoked { kid, was_live, announced })
    }

    /// Usage rows from `since_day` on.
    pub async fn usage(&self, kid: Option<&str>, since_day: &str) -> Result<Vec<crate::store::Usage>, KeyError> {
        Ok(self.store.usage(kid, since_day).await?)
    }

    /// Replaces a key's limits (what is unset falls back to the config's defaults).
    pub async fn update_limits(&self, kid: &str, limits: &KeyLimits) -> Result<KeyRecord, KeyError> {
        let key = self.show(kid).await?;
        validate_limits(limits, key.delegate)?;
        self.record(AuditEvent::KeyLimitsChanged { kid: kid.to_owned(), limits: describe_limits(limits) })?;
        if !self.store.update_limits(kid, limits).await? {
            return Err(KeyError::NotFound(kid.to_owned()));
        }
        self.announce(kid).await;
        Ok(KeyRecord { limits: limits.clone(), ..key })
    }

    /// Issues a successor with the same name, owner, models, scopes and lifetime, and lets the
    /// old key live on for `overlap_seconds` so clients can switch without downtime.
    pub async fn rotate(&self, kid: &str, overlap_seconds: u64) -> Result<(apikey::SecretKey, KeyRecord), KeyError> {
        let old = self.show(kid).await?;
        let now = crate::time::now();
        if let Err(reason) = old.usable_at(now) {
            return Err(KeyError::Invalid(format!("key {kid} is {reason}; create a new key instead")));
        }
        if old.replaced_by.is_some() {
            return Err(KeyError::Invalid(format!("key {kid} was rotated already")));
        }
        let overlap = i64::try_from(overlap_seconds).map_err(|_| KeyError::Invalid("overlap too long".into()))?;
        let secret = apikey::generate(apikey::KeyKind::Secret)?;
        let lifetime = old.expires_at.map(|expires_at| expires_at.saturating_sub(old.created_at));
        let record = KeyRecord {
            kid: secret.kid().to_owned(),
            hash: self.pepper.hash(secret.expose()),
            created_at: now,
            expires_at: lifetime.map(|lifetime| now.saturating_add(lifetime)),
            revoked_at: None,
            replaced_by: None,
            ..old
        };
        let old_key_expires_at = now.saturating_add(overlap);
        // The record comes first: a change that cannot be audited is not made (and no successor
        // exists whose secret nobody holds).
        self.record(AuditEvent::KeyRotated { kid: kid.to_owned(), successor: record.kid.clone(), old_key_expires_at })?;
        self.store.rotate_key(kid, &record, old_key_expires_at).await?;
        self.announce(kid).await;
        Ok((secret, record))
    }
}

/// Limits in the form the command line takes them, for the audit log and `keys show`.
pub fn describe_limits(limits: &KeyLimits) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = limits.rate {
        parts.push(format!("rate={rate}"));
    }
    if let Some(burst) = limits.burst {
        parts.push(format!("burst={burst}"));
    }
    if let Some(concurrency) = limits.concurrency {
        parts.push(format!("concurrency={concurrency}"));
    }
    for quota in &limits.quotas {
        parts.push(format!("quota={quota}"));
    }
    for quota in &limits.row_quotas {
        parts.push(format!("row_quota={quota}"));
    }
    describe_budget(&mut parts, "", &limits.budget);
    if let Some(rate) = limits.user_rate {
        parts.push(format!("user_rate={rate}"));
    }
    if let Some(burst) = limits.user_burst {
        parts.push(format!("user_burst={burst}"));
    }
    if let Some(concurrency) = limits.user_concurrency {
        parts.push(format!("user_concurrency={concurrency}"));
    }
    for quota in &limits.user_quotas {
        parts.push(format!("user_quota={quota}"));
    }
    describe_budget(&mut parts, "user_", &limits.user_budget);
    if let Some(cap) = limits.max_users {
        parts.push(format!("max_users={cap}"));
    }
    if let Some(tokens) = limits.max_tokens {
        parts.push(format!("max_tokens={tokens}"));
    }
    if parts.is_empty() { "defaults".to_owned() } else { parts.join(" ") }
}

fn describe_budget(parts: &mut Vec<String>, prefix: &str, budget: &crate::limit_spec::Budget) {
    if let Some(tpm) = budget.tpm {
        parts.push(format!("{prefix}tpm={tpm}"));
    }
    for quota in &budget.tokens {
        parts.push(format!("{prefix}token_quota={quota}"));
    }
    for cap in &budget.spend {
        parts.push(format!("{prefix}spend={cap}"));
    }
}

fn validate_limits(limits: &KeyLimits, delegate: bool) -> Result<(), KeyError> {
    if [limits.burst, limits.concurrency, limits.user_burst, limits.user_concurrency].contains(&Some(0)) {
        return Err(KeyError::Invalid("bursts and concurrency must be at least 1".into()));
    }
    if limits.max_tokens == Some(0) {
        return Err(KeyError::Invalid("--max-tokens must be at least 1".into()));
    }
    if limits.burst.is_some() && limits.rate.is_none() {
        return Err(KeyError::Invalid("--burst needs --rate".into()));
    }
    if limits.user_burst.is_some() && limits.user_rate.is_none() {
        return Err(KeyError::Invalid("--user-burst needs --user-rate".into()));
    }
    let per_user = limits.user_rate.is_some()
        || limits.user_concurrency.is_some()
        || !limits.user_quotas.is_empty()
        || !limits.user_budget.is_empty()
        || limits.max_users.is_some();
    if per_user && !delegate {
        return Err(KeyError::Invalid(
            "--user-rate, --user-concurrency, --user-quota, --user-tpm, --user-token-quota, --user-spend and \
             --max-users are for --delegate keys"
                .into(),
        ));
    }
    for (what, quotas) in [
        ("quotas", &limits.quotas),
        ("quotas", &limits.row_quotas),
        ("quotas", &limits.user_quotas),
        ("token quotas", &limits.budget.tokens),
        ("token quotas", &limits.user_budget.tokens),
    ] {
        for (index, quota) in quotas.iter().enumerate() {
            if quotas[..index].iter().any(|other| other.window == quota.window) {
                return Err(KeyError::Invalid(format!("two {what} per {}: give one", quota.window.as_str())));
            }
        }
    }
    for caps in [&limits.budget.spend, &limits.user_budget.spend] {
        for (index, cap) in caps.iter().enumerate() {
            if caps[..index].iter().any(|other| other.window == cap.window) {
                return Err(KeyError::Invalid(format!("two spend caps per {}: give one", cap.window.as_str())));
            }
        }
    }
    Ok(())
}

fn validate_names(name: &str, owner: Option<&str>) -> Result<(), KeyError> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid("a key name is 1 to 128 printable characters".into()));
    }
    if let Some(owner) = owner
        && (owner.len() > 128 || owner.chars().any(char::is_control))
    {
        return Err(KeyError::Invalid("an owner is at most 128 printable characters".into()));
    }
    Ok(())
}

fn validate(new: &NewKey) -> Result<(), KeyError> {
    validate_limits(&new.limits, new.delegate)?;
    validate_names(&new.name, new.owner.as_deref())?;
    if let ModelScope::Only(models) = &new.models {
        if models.is_empty() {
            return Err(KeyError::Invalid("a key needs at least one model, or * for all".into()));
        }
        if let Some(bad) = models.iter().find(|model| !crate::config::valid_model_name(model)) {
            return Err(KeyError::Invalid(format!("'{bad}' is not a valid model name")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{authn::AuthnError, authn::api_key::KeyVerifier, store::sqlite::SqliteStore};
    use std::time::Duration;

    async fn keyring() -> (tempfile::TempDir, Keyring, KeyVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let pepper = Pepper::from_bytes(vec![9; 32]);
        let verifier = KeyVerifier::new(Arc::clone(&store), pepper.clone(), Duration::ZERO);
        (dir, Keyring::new(store, pepper, None), verifier)
    }

    fn new_key() -> NewKey {
        NewKey {
            name: "checkout".into(),
            owner: None,
            models: ModelScope::Only(vec!["churn".into()]),
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            delegate: false,
            expires_in: Some(3600),
            limits: Default::default(),
        }
    }

    #[tokio::test]
    async fn created_keys_verify_and_revoked_keys_do_not() {
        let (_dir, keyring, verifier) = keyring().await;
        let (secret, record) = keyring.create(&new_key()).await.unwrap();
        let principal = verifier.verify(secret.expose()).await.unwrap();
        assert_eq!(principal.id, crate::principal::PrincipalId::key(&record.kid));
        assert!(principal.models.allows("churn") && !principal.models.allows("other"));

        // Same kid and checksum, wrong secret.
        let mut forged = apikey::generate(apikey::KeyKind::Secret).unwrap().expose().to_owned();
        forged.replace_range(8..16, &record.kid);
        let body = &forged[..48];
        let forged = format!("{body}{}", String::from_utf8(apikey::checksum(body.as_bytes()).to_vec()).unwrap());
        assert_eq!(verifier.verify(&forged).await, Err(AuthnError::WrongSecret));

        keyring.revoke(&record.kid).await.unwrap();
        assert_eq!(verifier.verify(secret.expose()).await, Err(AuthnError::Revoked));
        assert!(keyring.revoke(&record.kid).await.is_err());
        assert!(matches!(keyring.revoke("nokey123").await, Err(KeyError::NotFound(_))));
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_key_for_the_overlap_only() {
        let (_dir, keyring, verifier) = keyring().await;
        let (old_secret, old) = keyring.create(&new_key()).await.unwrap();
        let (new_secret, new) = keyring.rotate(&old.kid, 3600).await.unwrap();
        assert_eq!(new.models, old.models);
        assert!(verifier.verify(old_secret.expose()).await.is_ok());
        assert!(verifier.verify(new_secret.expose()).await.is_ok());
        assert!(keyring.rotate(&old.kid, 60).await.is_err());

        // With no overlap the old key stops at once.
        let (secret, record) = keyring.create(&new_key()).await.unwrap();
        keyring.rotate(&record.kid, 0).await.unwrap();
        assert_eq!(verifier.verify(secret.expose()).await, Err(AuthnError::Expired));
    }

    #[tokio::test]
    async fn bad_key_requests_are_refused() {
        let (_dir, keyring, _) = keyring().await;
        for bad in [
            NewKey { name: " ".into(), ..new_key() },
            NewKey { models: ModelScope::Only(vec![]), ..new_key() },
            NewKey { models: ModelScope::Only(vec!["../etc".into()]), ..new_key() },
        ] {
            assert!(matches!(keyring.create(&bad).await, Err(KeyError::Invalid(_))), "{bad:?}");
        }
    }
}
