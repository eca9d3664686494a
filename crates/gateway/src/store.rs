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
}
