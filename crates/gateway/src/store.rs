//! Durable state: API keys (hashed). SQLite is the embedded store; the trait is what a
//! multi-node store implements too.

pub mod sqlite;

use async_trait::async_trait;

/// Which models a credential may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelScope {
    All,
    Only(Vec<String>),
}

impl ModelScope {
    pub fn allows(&self, model: &str) -> bool {
        match self {
            ModelScope::All => true,
            ModelScope::Only(models) => models.iter().any(|allowed| allowed == model),
        }
    }

    /// `*` or a JSON array, as stored.
    pub fn to_stored(&self) -> String {
        match self {
            ModelScope::All => "\"*\"".to_owned(),
            ModelScope::Only(models) => serde_json::to_string(models).unwrap_or_else(|_| "[]".to_owned()),
        }
    }

    pub fn from_stored(text: &str) -> Result<ModelScope, StoreError> {
        if text == "\"*\"" {
            return Ok(ModelScope::All);
        }
        serde_json::from_str(text).map(ModelScope::Only).map_err(|e| StoreError::Corrupt(format!("models column: {e}")))
    }
}

impl std::fmt::Display for ModelScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelScope::All => f.write_str("*"),
            ModelScope::Only(models) => f.write_str(&models.join(",")),
        }
    }
}

/// What a key may do to the models it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    pub infer: bool,
    pub metadata: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes { infer: true, metadata: true };

    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes { infer: false, metadata: false };
        for scope in text.split(',').map(str::trim).filter(|scope| !scope.is_empty()) {
            match scope {
                "infer" => scopes.infer = true,
                "metadata" => scopes.metadata = true,
                other => return Err(format!("unknown scope '{other}': use infer, metadata")),
            }
        }
        if !scopes.infer && !scopes.metadata {
            return Err("a key needs at least one scope: infer, metadata".into());
        }
        Ok(scopes)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.infer {
            names.push("infer");
        }
        if self.metadata {
            names.push("metadata");
        }
        names
    }
}

/// A stored API key: everything but the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    pub kind: apikey::KeyKind,
    pub name: String,
    pub owner: Option<String>,
    /// HMAC-SHA-256 of the whole key under the pepper.
    pub hash: [u8; 32],
    pub models: ModelScope,
    pub scopes: Scopes,
    /// The key's output policy; `None` takes the model's default.
    pub output: Option<crate::minimise::OutputPolicy>,
    /// May `output` be wider than the model's default (an admin's explicit choice).
    pub widen_output: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub replaced_by: Option<String>,
    /// The key's own limits; what is unset falls back to the config's `[limits]`.
    pub limits: KeyLimits,
}

/// Limits a key carries (set at `keys create`, changed by `keys update`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub rate: Option<crate::limits::spec::Rate>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    /// Requests per day or month.
    pub quotas: Vec<crate::limits::spec::Quota>,
    /// Inference rows per day or month.
    pub row_quotas: Vec<crate::limits::spec::Quota>,
}

impl KeyLimits {
    /// Quotas as stored: `100000/day,2000000/month`, or `None` for none.
    pub fn quotas_to_stored(quotas: &[crate::limits::spec::Quota]) -> Option<String> {
        (!quotas.is_empty()).then(|| quotas.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
    }

    pub fn quotas_from_stored(text: Option<&str>) -> Result<Vec<crate::limits::spec::Quota>, StoreError> {
        text.unwrap_or("")
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| part.parse().map_err(StoreError::Corrupt))
            .collect()
    }
}

/// Usage of one key on one model on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub kid: String,
    pub model: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub requests: u64,
    pub rows: u64,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("name", &self.name)
            .field("models", &self.models)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// Whether the key may be used at `now`; the reason if not (for logs only).
    pub fn usable_at(&self, now: i64) -> Result<(), &'static str> {
        if self.revoked_at.is_some() {
            return Err("revoked");
        }
        if self.expires_at.is_some_and(|expires_at| now >= expires_at) {
            return Err("expired");
        }
        Ok(())
    }

    pub fn status_at(&self, now: i64) -> &'static str {
        match self.usable_at(now) {
            Ok(()) if self.replaced_by.is_some() => "rotating",
            Ok(()) => "active",
            Err(reason) => reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable: {0}")]
    Unavailable(String),
    #[error("the store holds unreadable data: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
}

/// Key storage. Every method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    async fn ping(&self) -> Result<(), StoreError>;
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    async fn find_key(&self, kid: &str) -> Result<Option<KeyRecord>, StoreError>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Marks a key revoked; false if there is no such key or it was revoked already.
    async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool, StoreError>;
    /// Inserts `new` and, in the same transaction, shortens the old key's life to `old_expires_at`
    /// and records its successor.
    async fn rotate_key(&self, old_kid: &str, new: &KeyRecord, old_expires_at: i64) -> Result<(), StoreError>;
    /// Replaces a key's limits; false if there is no such key.
    async fn update_limits(&self, kid: &str, limits: &KeyLimits) -> Result<bool, StoreError>;
    /// Adds counts to the usage rows (creating them), in one transaction.
    async fn add_usage(&self, usage: &[Usage]) -> Result<(), StoreError>;
    /// Usage rows from `since_day` on (`YYYY-MM-DD`), of one key or all, by day, key, model.
    async fn usage(&self, kid: Option<&str>, since_day: &str) -> Result<Vec<Usage>, StoreError>;
}
