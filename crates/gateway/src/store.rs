//! Durable state: API keys (hashed). SQLite is the embedded store; the trait is what a
//! multi-node store implements too.

#[macro_use]
mod row {
    /// Reads a `KeyRecord` from an `api_keys` row of either store (the columns and their Rust types
    /// are the same in SQLite and PostgreSQL).
    macro_rules! key_record_from_row {
        ($row:expr) => {{
            let row = $row;
            let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            let kind = match row.try_get::<String, _>("kind").map_err(corrupt)?.as_str() {
                "sk" => apikey::KeyKind::Secret,
                "ak" => apikey::KeyKind::Admin,
                other => return Err(StoreError::Corrupt(format!("unknown key kind '{other}'"))),
            };
            let hash: Vec<u8> = row.try_get("hash").map_err(corrupt)?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| StoreError::Corrupt("hash is not 32 bytes".into()))?;
            let scopes: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("scopes").map_err(corrupt)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(KeyRecord {
                kid: row.try_get("kid").map_err(corrupt)?,
                kind,
                name: row.try_get("name").map_err(corrupt)?,
                owner: row.try_get("owner").map_err(corrupt)?,
                hash,
                models: ModelScope::from_stored(&row.try_get::<String, _>("models").map_err(corrupt)?)?,
                scopes: Scopes::parse(&scopes.join(",")).map_err(StoreError::Corrupt)?,
                created_at: row.try_get("created_at").map_err(corrupt)?,
                expires_at: row.try_get("expires_at").map_err(corrupt)?,
                revoked_at: row.try_get("revoked_at").map_err(corrupt)?,
                replaced_by: row.try_get("replaced_by").map_err(corrupt)?,
                output: row
                    .try_get::<Option<String>, _>("output")
                    .map_err(corrupt)?
                    .map(|text| text.parse().map_err(StoreError::Corrupt))
                    .transpose()?,
                widen_output: row.try_get("widen_output").map_err(corrupt)?,
                delegate: row.try_get("delegate").map_err(corrupt)?,
                limits: KeyLimits {
                    rate: row
                        .try_get::<Option<String>, _>("rate")
                        .map_err(corrupt)?
                        .map(|text| text.parse().map_err(StoreError::Corrupt))
                        .transpose()?,
                    burst: row.try_get::<Option<i64>, _>("burst").map_err(corrupt)?.and_then(|n| u32::try_from(n).ok()),
                    concurrency: row
                        .try_get::<Option<i64>, _>("concurrency")
                        .map_err(corrupt)?
                        .and_then(|n| u32::try_from(n).ok()),
                    quotas: KeyLimits::quotas_from_stored(
                        row.try_get::<Option<String>, _>("quotas").map_err(corrupt)?.as_deref(),
                    )?,
                    row_quotas: KeyLimits::quotas_from_stored(
                        row.try_get::<Option<String>, _>("row_quotas").map_err(corrupt)?.as_deref(),
                    )?,
                    user_rate: row
                        .try_get::<Option<String>, _>("user_rate")
                        .map_err(corrupt)?
                        .map(|text| text.parse().map_err(StoreError::Corrupt))
                        .transpose()?,
                    user_burst: row
                        .try_get::<Option<i64>, _>("user_burst")
                        .map_err(corrupt)?
                        .and_then(|n| u32::try_from(n).ok()),
                    user_concurrency: row
                        .try_get::<Option<i64>, _>("user_concurrency")
                        .map_err(corrupt)?
                        .and_then(|n| u32::try_from(n).ok()),
                    user_quotas: KeyLimits::quotas_from_stored(
                        row.try_get::<Option<String>, _>("user_quotas").map_err(corrupt)?.as_deref(),
                    )?,
                    max_users: row
                        .try_get::<Option<String>, _>("max_users")
                        .map_err(corrupt)?
                        .map(|text| text.parse().map_err(StoreError::Corrupt))
                        .transpose()?,
                    max_tokens: row
                        .try_get::<Option<i64>, _>("max_tokens")
                        .map_err(corrupt)?
                        .and_then(|n| u32::try_from(n).ok()),
                    budget: KeyLimits::budget_from_stored(
                        row.try_get::<Option<i64>, _>("tpm").map_err(corrupt)?,
                        row.try_get::<Option<String>, _>("token_quotas").map_err(corrupt)?.as_deref(),
                        row.try_get::<Option<String>, _>("spend_caps").map_err(corrupt)?.as_deref(),
                    )?,
                    user_budget: KeyLimits::budget_from_stored(
                        row.try_get::<Option<i64>, _>("user_tpm").map_err(corrupt)?,
                        row.try_get::<Option<String>, _>("user_token_quotas").map_err(corrupt)?.as_deref(),
                        row.try_get::<Option<String>, _>("user_spend_caps").map_err(corrupt)?.as_deref(),
                    )?,
                },
            })
        }};
    }

    /// Binds a `KeyRecord` to the `INSERT` of either store, in its column order.
    macro_rules! bind_key_record {
        ($query:expr, $key:expr) => {{
            let key = $key;
            bind_key_limits!(
                $query
                    .bind(&key.kid)
                    .bind(key.kind.code())
                    .bind(&key.name)
                    .bind(&key.owner)
                    .bind(key.hash.to_vec())
                    .bind(key.models.to_stored())
                    .bind(serde_json::json!(key.scopes.names()).to_string())
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .bind(key.output.map(|policy| policy.to_string()))
                    .bind(key.widen_output),
                &key.limits
            )
            .bind(key.delegate)
        }};
    }

    /// Binds `KeyLimits` as its seventeen columns: rate, burst, concurrency, quotas, row_quotas,
    /// user_rate, user_burst, user_concurrency, user_quotas, max_users, max_tokens, tpm,
    /// token_quotas, spend_caps, user_tpm, user_token_quotas, user_spend_caps.
    macro_rules! bind_key_limits {
        ($query:expr, $limits:expr) => {{
            let limits = $limits;
            $query
                .bind(limits.rate.map(|rate| rate.to_string()))
                .bind(limits.burst.map(i64::from))
                .bind(limits.concurrency.map(i64::from))
                .bind(KeyLimits::quotas_to_stored(&limits.quotas))
                .bind(KeyLimits::quotas_to_stored(&limits.row_quotas))
                .bind(limits.user_rate.map(|rate| rate.to_string()))
                .bind(limits.user_burst.map(i64::from))
                .bind(limits.user_concurrency.map(i64::from))
                .bind(KeyLimits::quotas_to_stored(&limits.user_quotas))
                .bind(limits.max_users.map(|cap| cap.to_string()))
                .bind(limits.max_tokens.map(i64::from))
                .bind(KeyLimits::tpm_to_stored(limits.budget.tpm))
                .bind(KeyLimits::quotas_to_stored(&limits.budget.tokens))
                .bind(crate::limit_spec::spend_caps_to_text(&limits.budget.spend))
                .bind(KeyLimits::tpm_to_stored(limits.user_budget.tpm))
                .bind(KeyLimits::quotas_to_stored(&limits.user_budget.tokens))
                .bind(crate::limit_spec::spend_caps_to_text(&limits.user_budget.spend))
        }};
    }

    /// The key changes after `$after` (a `key_changes` sequence number), or, for `None`, just
    /// where the sequence stands now; `(prune, pool, before)` deletes older ones. `$n`
    /// parameters work in SQLite too.
    macro_rules! key_changes {
        (prune, $pool:expr, $before:expr) => {{
            sqlx::query("DELETE FROM key_changes WHERE at < $1")
                .bind($before)
                .execute($pool)
                .await
                .map(|_| ())
                .map_err(unavailable)
        }};
        ($pool:expr, $after:expr) => {{
            let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            match $after {
                None => {
                    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM key_changes")
                        .fetch_one($pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(super::KeyChanges { cursor: row.try_get::<i64, _>("seq").map_err(corrupt)?, kids: Vec::new() })
                }
                Some(after) => {
                    let rows = sqlx::query("SELECT seq, kid FROM key_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(after)
                        .bind(super::KEY_CHANGES_PAGE)
                        .fetch_all($pool)
                        .await
                        .map_err(unavailable)?;
                    let mut changes = super::KeyChanges { cursor: after, kids: Vec::with_capacity(rows.len()) };
                    for row in &rows {
                        changes.cursor = changes.cursor.max(row.try_get::<i64, _>("seq").map_err(corrupt)?);
                        changes.kids.push(row.try_get("kid").map_err(corrupt)?);
                    }
                    Ok(changes)
                }
            }
        }};
    }

    /// Reads a `SigningKeyRecord` from a `signing_keys` row of either store.
    macro_rules! signing_key_from_row {
        ($row:expr) => {{
            let row = $row;
            let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            Ok::<SigningKeyRecord, StoreError>(SigningKeyRecord {
                kid: row.try_get("kid").map_err(corrupt)?,
                alg: row.try_get("alg").map_err(corrupt)?,
                public_jwk: row.try_get("public_jwk").map_err(corrupt)?,
                sealed: row.try_get("sealed").map_err(corrupt)?,
                created_at: row.try_get("created_at").map_err(corrupt)?,
                retired_at: row.try_get("retired_at").map_err(corrupt)?,
            })
        }};
    }

    /// The signing-key methods of either store (the same SQL: `$n` parameters are numbered
    /// parameters in SQLite too): `signing_keys!(insert, pool, key)`, `(list, pool)`,
    /// `(prune, pool, before)`.
    macro_rules! signing_keys {
        (insert, $pool:expr, $key:expr) => {{
            let key = $key;
            let mut transaction = $pool.begin().await.map_err(unavailable)?;
            sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                .bind(key.created_at)
                .execute(&mut *transaction)
                .await
                .map_err(unavailable)?;
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, public_jwk, sealed, created_at, retired_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.public_jwk)
            .bind(&key.sealed)
            .bind(key.created_at)
            .execute(&mut *transaction)
            .await
            .map_err(|error| match &error {
                sqlx::Error::Database(db) if db.is_unique_violation() => {
                    StoreError::Conflict("a signing key with that id exists".into())
                }
                _ => unavailable(error),
            })?;
            transaction.commit().await.map_err(unavailable)
        }};
        (list, $pool:expr) => {{
            let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
                .fetch_all($pool)
                .await
                .map_err(unavailable)?;
            rows.iter().map(|row| signing_key_from_row!(row)).collect()
        }};
        (prune, $pool:expr, $before:expr) => {{
            let result = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                .bind($before)
                .execute($pool)
                .await
                .map_err(unavailable)?;
            Ok(result.rows_affected())
        }};
    }

    /// Reads a `Usage` from a `usage` row of either store.
    macro_rules! usage_from_row {
        ($row:expr) => {{
            let row = $row;
            let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            Ok::<Usage, StoreError>(Usage {
                kid: row.try_get("kid").map_err(corrupt)?,
                model: row.try_get("model").map_err(corrupt)?,
                day: row.try_get("day").map_err(corrupt)?,
                requests: u64::try_from(row.try_get::<i64, _>("requests").map_err(corrupt)?).unwrap_or(0),
                rows: u64::try_from(row.try_get::<i64, _>("rows").map_err(corrupt)?).unwrap_or(0),
                tokens_in: u64::try_from(row.try_get::<i64, _>("tokens_in").map_err(corrupt)?).unwrap_or(0),
                tokens_out: u64::try_from(row.try_get::<i64, _>("tokens_out").map_err(corrupt)?).unwrap_or(0),
                spend_micros: u64::try_from(row.try_get::<i64, _>("spend_micros").map_err(corrupt)?).unwrap_or(0),
                estimated: u64::try_from(row.try_get::<i64, _>("estimated").map_err(corrupt)?).unwrap_or(0),
            })
        }};
    }
}

pub mod postgres;
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
    /// Language models: requests may carry tools (function calling), where the model allows it.
    pub tools: bool,
    /// Language models: requests may ask for log probabilities, where the model allows it.
    pub logprobs: bool,
    /// Language models: requests may carry images, where the model allows it.
    pub images: bool,
}

impl Scopes {
    /// Nothing at all.
    pub const NONE: Scopes = Scopes { infer: false, metadata: false, tools: false, logprobs: false, images: false };
    /// Every action on a model (the switches for language models' costly features stay off).
    pub const ALL: Scopes = Scopes { infer: true, metadata: true, ..Scopes::NONE };

    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut scopes = Scopes::NONE;
        for scope in text.split(',').map(str::trim).filter(|scope| !scope.is_empty()) {
            match scope {
                "infer" => scopes.infer = true,
                "metadata" => scopes.metadata = true,
                "tools" => scopes.tools = true,
                "logprobs" => scopes.logprobs = true,
                "images" => scopes.images = true,
                other => return Err(format!("unknown scope '{other}': use infer, metadata, tools, logprobs, images")),
            }
        }
        if !scopes.infer && !scopes.metadata {
            return Err("a key needs at least one of the scopes infer, metadata".into());
        }
        Ok(scopes)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.infer, "infer"),
            (self.metadata, "metadata"),
            (self.tools, "tools"),
            (self.logprobs, "logprobs"),
            (self.images, "images"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
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
    /// May name the end user it acts for (`Portcullis-On-Behalf-Of`): an app backend.
    pub delegate: bool,
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
    pub rate: Option<crate::limit_spec::Rate>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    /// Requests per day or month.
    pub quotas: Vec<crate::limit_spec::Quota>,
    /// Inference rows per day or month.
    pub row_quotas: Vec<crate::limit_spec::Quota>,
    /// A delegate key's limits for each end user it names. The fields above apply to the key as
    /// a whole, all its users together, so naming a new user per request gains nothing.
    pub user_rate: Option<crate::limit_spec::Rate>,
    pub user_burst: Option<u32>,
    pub user_concurrency: Option<u32>,
    pub user_quotas: Vec<crate::limit_spec::Quota>,
    /// Distinct end users a delegate key may name per window (`[limits] max_users` otherwise).
    pub max_users: Option<crate::limit_spec::UserCap>,
    /// Language models: the most tokens a request may ask for (the model's cap also holds).
    pub max_tokens: Option<u32>,
    /// Language models: the key's tokens per minute, tokens per day or month and spend caps,
    /// all its end users together (`[limits]` tpm, token_quota and spend otherwise).
    pub budget: crate::limit_spec::Budget,
    /// A delegate key's budget for each end user it names.
    pub user_budget: crate::limit_spec::Budget,
}

impl KeyLimits {
    /// Quotas as stored: `100000/day,2000000/month`, or `None` for none.
    pub fn quotas_to_stored(quotas: &[crate::limit_spec::Quota]) -> Option<String> {
        (!quotas.is_empty()).then(|| quotas.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
    }

    pub fn quotas_from_stored(text: Option<&str>) -> Result<Vec<crate::limit_spec::Quota>, StoreError> {
        text.unwrap_or("")
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| part.parse().map_err(StoreError::Corrupt))
            .collect()
    }

    /// Tokens per minute as stored: a positive integer, or `None` for none.
    pub fn tpm_to_stored(tpm: Option<u64>) -> Option<i64> {
        tpm.map(|tpm| i64::try_from(tpm).unwrap_or(i64::MAX))
    }

    /// A budget from its three columns (`tpm`, `token_quotas`, `spend_caps` or their `user_`
    /// twins). A value that does not read back as written is corrupt, never a missing limit.
    pub fn budget_from_stored(
        tpm: Option<i64>,
        tokens: Option<&str>,
        spend: Option<&str>,
    ) -> Result<crate::limit_spec::Budget, StoreError> {
        let tpm = tpm
            .map(|tpm| u64::try_from(tpm).ok().filter(|tpm| *tpm > 0).ok_or(tpm))
            .transpose()
            .map_err(|tpm| StoreError::Corrupt(format!("tokens per minute {tpm} is not a positive number")))?;
        Ok(crate::limit_spec::Budget {
            tpm,
            tokens: KeyLimits::quotas_from_stored(tokens)?,
            spend: crate::limit_spec::spend_caps_from_text(spend.unwrap_or("")).map_err(StoreError::Corrupt)?,
        })
    }
}

/// Usage of one key on one model on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub kid: String,
    pub model: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub requests: u64,
    pub rows: u64,
    /// Language models: tokens read (the prompt) and written (the completion).
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Language models: what the tokens cost at the model's price, in micro-dollars.
    pub spend_micros: u64,
    /// Requests whose tokens were estimated (the upstream reported none) rather than reported.
    pub estimated: u64,
}

impl Usage {
    /// One row as `keys usage --json` and the admin listener's `/usage` give it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.kid,
            "model": self.model,
            "day": self.day,
            "requests": self.requests,
            "rows": self.rows,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "spend_micros": self.spend_micros,
            "spend_usd": crate::limit_spec::format_usd(self.spend_micros),
            "estimated": self.estimated,
        })
    }
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

crate::reason::named! {
    /// Where a key is in its life, as `keys list` and `keys show` print it.
    pub enum KeyStatus {
        /// Usable.
        Active => "active",
        /// Usable, and replaced by a newer key that will take over (`keys rotate`).
        Rotating => "rotating",
        Revoked => "revoked",
        Expired => "expired",
    }
}

/// Why a key may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("revoked")]
    Revoked,
    #[error("expired")]
    Expired,
}

impl KeyRecord {
    /// Whether the key may be used at `now`; why not if not.
    pub fn usable_at(&self, now: i64) -> Result<(), Unusable> {
        if self.revoked_at.is_some() {
            return Err(Unusable::Revoked);
        }
        if self.expires_at.is_some_and(|expires_at| now >= expires_at) {
            return Err(Unusable::Expired);
        }
        Ok(())
    }

    pub fn status_at(&self, now: i64) -> KeyStatus {
        match self.usable_at(now) {
            Ok(()) if self.replaced_by.is_some() => KeyStatus::Rotating,
            Ok(()) => KeyStatus::Active,
            Err(Unusable::Revoked) => KeyStatus::Revoked,
            Err(Unusable::Expired) => KeyStatus::Expired,
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
    /// Every key id in the store (revoked and expired ones included).
    async fn list_kids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.list_keys().await?.into_iter().map(|key| key.kid).collect())
    }
    /// Marks a key revoked; false if there is no such key or it was revoked already.
    async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool, StoreError>;
    /// Inserts `new` and, in the same transaction, shortens the old key's life to `old_expires_at`
    /// and records its successor.
    async fn rotate_key(&self, old_kid: &str, new: &KeyRecord, old_expires_at: i64) -> Result<(), StoreError>;
    /// Replaces a key's limits; false if there is no such key.
    async fn update_limits(&self, kid: &str, limits: &KeyLimits) -> Result<bool, StoreError>;
    /// Adds counts to the usage rows (creating them), in one transaction.
    async fn add_usage(&self, usage: &[Usage]) -> Result<(), StoreError>;
    /// Usage rows from `since_day` on (`YYYY-MM-DD`), of one key or all, by day, key, model. A
    /// key's rows include those of the end users a delegate key named (`<kid>/user:<id>`);
    /// an end user's (`<kid>/user:<id>`) are its own only.
    async fn usage(&self, kid: Option<&str>, since_day: &str) -> Result<Vec<Usage>, StoreError>;
    /// Inserts a new signing key and, in the same transaction, retires every other key that
    /// was signing (at the new key's `created_at`).
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Deletes keys retired before `before`; returns how many.
    async fn prune_signing_keys(&self, before: i64) -> Result<u64, StoreError>;
    /// Keys changed (revoked, rotated, limits updated, by any process) after sequence number
    /// `after`, at most [`KEY_CHANGES_PAGE`] of them; `None` asks only where the sequence is.
    async fn key_changes(&self, after: Option<i64>) -> Result<KeyChanges, StoreError>;
    /// Forgets key changes recorded before `before` (Unix seconds).
    async fn prune_key_changes(&self, before: i64) -> Result<(), StoreError>;
}

/// Key changes read from the store: the ids changed, and the sequence number to ask after next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub cursor: i64,
    pub kids: Vec<String>,
}

/// The most key changes one read returns; a full page means "there may be more".
pub const KEY_CHANGES_PAGE: i64 = 1000;

/// A stored signing key of the token broker; the private part sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    /// The PKCS#8 private key, sealed under the signing secret.
    pub sealed: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key(kid: &str) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            kind: apikey::KeyKind::Secret,
            name: "test".into(),
            owner: Some("team".into()),
            hash: [7; 32],
            models: ModelScope::Only(vec!["a".into(), "b".into()]),
            scopes: Scopes::ALL,
            output: Some(crate::minimise::OutputPolicy::TopK { k: 2, round: Some(3) }),
            widen_output: false,
            delegate: true,
            created_at: 100,
            expires_at: Some(1_000),
            revoked_at: None,
            replaced_by: None,
            limits: KeyLimits {
                rate: Some("50/s".parse().unwrap()),
                burst: Some(100),
                concurrency: Some(8),
                quotas: vec!["1000/day".parse().unwrap(), "20000/month".parse().unwrap()],
                row_quotas: vec![],
                ..KeyLimits::default()
            },
        }
    }

    /// What every store must do; run against SQLite always and PostgreSQL when CI provides it.
    pub(crate) async fn conformance(store: &dyn Store) {
        let start = store.key_changes(None).await.unwrap();
        assert_eq!(start.kids, Vec::<String>::new());
        store.insert_key(&key("AAAA0001")).await.unwrap();
        assert_eq!(store.find_key("AAAA0001").await.unwrap(), Some(key("AAAA0001")));
        assert!(matches!(store.insert_key(&key("AAAA0001")).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.find_key("nope").await.unwrap(), None);

        store.rotate_key("AAAA0001", &key("AAAA0002"), 500).await.unwrap();
        let old = store.find_key("AAAA0001").await.unwrap().unwrap();
        assert_eq!(old.expires_at, Some(500));
        assert_eq!(old.replaced_by.as_deref(), Some("AAAA0002"));
        // A second rotation of the same key is refused and leaves nothing half-done.
        assert!(store.rotate_key("AAAA0001", &key("AAAA0003"), 400).await.is_err());
        assert_eq!(store.find_key("AAAA0003").await.unwrap(), None);

        assert!(store.revoke_key("AAAA0002", 200).await.unwrap());
        assert!(!store.revoke_key("AAAA0002", 300).await.unwrap());
        assert_eq!(store.list_keys().await.unwrap().len(), 2);

        // Limits are replaced whole; an unknown key is reported.
        let limits = KeyLimits { rate: Some("5/min".parse().unwrap()), ..KeyLimits::default() };
        assert!(store.update_limits("AAAA0001", &limits).await.unwrap());
        assert_eq!(store.find_key("AAAA0001").await.unwrap().unwrap().limits, limits);
        assert!(!store.update_limits("nope", &limits).await.unwrap());
        let delegate = KeyLimits {
            concurrency: Some(4),
            user_rate: Some("5/s".parse().unwrap()),
            user_burst: Some(2),
            user_concurrency: Some(1),
            user_quotas: vec!["10/day".parse().unwrap()],
            max_users: Some("100/h".parse().unwrap()),
            max_tokens: Some(256),
            budget: crate::limit_spec::Budget {
                tpm: Some(100_000),
                tokens: vec!["1000000/day".parse().unwrap(), "20000000/month".parse().unwrap()],
                spend: vec!["20usd/day".parse().unwrap(), "0.5usd/month".parse().unwrap()],
            },
            user_budget: crate::limit_spec::Budget {
                tpm: Some(5_000),
                tokens: vec!["10000/month".parse().unwrap()],
                spend: vec!["0.000125usd/day".parse().unwrap()],
            },
            ..KeyLimits::default()
        };
        assert!(store.update_limits("AAAA0001", &delegate).await.unwrap());
        assert_eq!(store.find_key("AAAA0001").await.unwrap().unwrap().limits, delegate);
        // A new key carries its budgets from the start.
        let budgeted = KeyRecord { limits: delegate.clone(), ..key("AAAA0004") };
        store.insert_key(&budgeted).await.unwrap();
        assert_eq!(store.find_key("AAAA0004").await.unwrap(), Some(budgeted));

        // Every change to a key, by any writer, is in the change feed, in order.
        let changes = store.key_changes(Some(start.cursor)).await.unwrap();
        // Created 0001; rotated to 0002 (0002 created, 0001 changed); 0002 revoked; 0001's limits
        // twice; 0004 created.
        assert_eq!(changes.kids, ["AAAA0001", "AAAA0002", "AAAA0001", "AAAA0002", "AAAA0001", "AAAA0001", "AAAA0004"]);
        let mut kids = store.list_kids().await.unwrap();
        kids.sort();
        assert_eq!(kids, ["AAAA0001", "AAAA0002", "AAAA0004"]);
        let later = store.key_changes(Some(changes.cursor)).await.unwrap();
        assert_eq!(later, KeyChanges { cursor: changes.cursor, kids: Vec::new() });
        assert_eq!(store.key_changes(None).await.unwrap().cursor, changes.cursor);
        store.prune_key_changes(i64::MAX).await.unwrap();
        assert!(store.key_changes(Some(start.cursor)).await.unwrap().kids.is_empty());

        // Usage adds up per key, model and day.
        let usage = |kid: &str, model: &str, day: &str, requests, rows| Usage {
            kid: kid.into(),
            model: model.into(),
            day: day.into(),
            requests,
            rows,
            ..Usage::default()
        };
        // Language models' tokens, spend and estimates add up the same way.
        let tokens = |requests, tokens_in, tokens_out, spend_micros, estimated| Usage {
            tokens_in,
            tokens_out,
            spend_micros,
            estimated,
            ..usage("AAAA0001", "llm", "2026-11-03", requests, 0)
        };
        store
            .add_usage(&[usage("AAAA0001", "m", "2026-11-01", 2, 10), usage("AAAA0002", "m", "2026-11-02", 1, 1)])
            .await
            .unwrap();
        store
            .add_usage(&[usage("AAAA0001", "m", "2026-11-01", 3, 5), usage("AAAA0001", "n", "2026-10-31", 1, 1)])
            .await
            .unwrap();
        assert_eq!(
            store.usage(Some("AAAA0001"), "2026-11-01").await.unwrap(),
            [usage("AAAA0001", "m", "2026-11-01", 5, 15)]
        );
        assert_eq!(store.usage(None, "2026-10-01").await.unwrap().len(), 3);
        store.add_usage(&[tokens(1, 100, 20, 450, 0)]).await.unwrap();
        store.add_usage(&[tokens(2, 1_000, 500, 1_000_000, 1)]).await.unwrap();
        assert_eq!(store.usage(Some("AAAA0001"), "2026-11-03").await.unwrap(), [tokens(3, 1_100, 520, 1_000_450, 1)]);
        // A delegate key's usage includes its end users'; an end user's is its own only, even
        // when its id reads like a prefix of another's.
        store
            .add_usage(&[
                usage("AAAA0002/user:a", "m", "2026-11-02", 4, 4),
                usage("AAAA0002/user:a/b", "m", "2026-11-02", 8, 8),
                usage("AAAA00021", "m", "2026-11-02", 16, 16),
            ])
            .await
            .unwrap();
        let total = |rows: Vec<Usage>| rows.iter().map(|row| row.requests).sum::<u64>();
        assert_eq!(total(store.usage(Some("AAAA0002"), "2026-11-01").await.unwrap()), 1 + 4 + 8);
        assert_eq!(total(store.usage(Some("AAAA0002/user:a"), "2026-11-01").await.unwrap()), 4);

        // Signing keys: a new one retires the one signing before it, in one step.
        let signing = |kid: &str, created_at| SigningKeyRecord {
            kid: kid.into(),
            alg: "EdDSA".into(),
            public_jwk: "{}".into(),
            sealed: vec![1, 2, 3],
            created_at,
            retired_at: None,
        };
        store.insert_signing_key(&signing("k1", 10)).await.unwrap();
        store.insert_signing_key(&signing("k2", 20)).await.unwrap();
        assert!(matches!(store.insert_signing_key(&signing("k2", 30)).await, Err(StoreError::Conflict(_))));
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys, [SigningKeyRecord { retired_at: Some(20), ..signing("k1", 10) }, signing("k2", 20)]);
        assert_eq!(store.prune_signing_keys(15).await.unwrap(), 0);
        assert_eq!(store.prune_signing_keys(21).await.unwrap(), 1);
        assert_eq!(store.signing_keys().await.unwrap(), [signing("k2", 20)]);
    }

    #[test]
    fn a_corrupt_stored_budget_is_an_error_not_a_missing_limit() {
        let budget = KeyLimits::budget_from_stored(Some(10), Some("5/day"), Some("1usd/month")).unwrap();
        assert_eq!(budget.tpm, Some(10));
        assert_eq!(KeyLimits::budget_from_stored(None, None, None).unwrap(), crate::limit_spec::Budget::default());
        for (tpm, tokens, spend) in [
            (Some(-1), None, None),
            (Some(0), None, None),
            (None, Some("5/week"), None),
            (None, None, Some("5eur/day")),
        ] {
            assert!(
                matches!(KeyLimits::budget_from_stored(tpm, tokens, spend), Err(StoreError::Corrupt(_))),
                "{tpm:?} {tokens:?} {spend:?}"
            );
        }
    }

    /// A fresh PostgreSQL database for one test, from `PORTCULLIS_TEST_POSTGRES_URL`; `None`
    /// (with a note) when the variable is absent outside CI.
    pub(crate) async fn postgres_url() -> Option<String> {
        use sqlx::Connection;
        let base = match std::env::var("PORTCULLIS_TEST_POSTGRES_URL") {
            Ok(url) => url,
            Err(_) if std::env::var("CI").is_ok() => panic!("CI must set PORTCULLIS_TEST_POSTGRES_URL"),
            Err(_) => {
                eprintln!("skipping: PORTCULLIS_TEST_POSTGRES_URL is not set (.ci/run sets it)");
                return None;
            }
        };
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).unwrap();
        let name = format!("portcullis_test_{}", crate::hex::encode(&bytes));
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        // The name is ours (hex digits), not input.
        let create = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
        sqlx::query(create).execute(&mut admin).await.unwrap();
        let (prefix, _) = base.rsplit_once('/').unwrap();
        Some(format!("{prefix}/{name}"))
    }

    #[tokio::test]
    async fn the_postgres_store_keeps_the_same_contract() {
        let Some(url) = postgres_url().await else { return };
        let store = postgres::PostgresStore::open(&url).await.unwrap();
        conformance(&store).await;
        // Opening again (another node starting) finds the schema in place.
        postgres::PostgresStore::open(&url).await.unwrap();
    }
}
