//! The embedded store: one SQLite file, migrations applied at open.

use std::{path::Path, str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Row,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use super::{KeyLimits, KeyRecord, ModelScope, Scopes, Store, StoreError, Usage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(unavailable)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot migrate {}: {e}", path.display())))?;
        Ok(SqliteStore { pool })
    }
}

fn record(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
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
        },
    })
}

const INSERT: &str = "INSERT INTO api_keys \
                      (kid, kind, name, owner, hash, models, scopes, created_at, expires_at, output, widen_output, \
                       rate, burst, concurrency, quotas, row_quotas) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn insert_query(key: &KeyRecord) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(INSERT)
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
        .bind(key.widen_output)
        .bind(key.limits.rate.map(|rate| rate.to_string()))
        .bind(key.limits.burst.map(i64::from))
        .bind(key.limits.concurrency.map(i64::from))
        .bind(KeyLimits::quotas_to_stored(&key.limits.quotas))
        .bind(KeyLimits::quotas_to_stored(&key.limits.row_quotas))
}

fn insert_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("a key with that id exists".into())
        }
        _ => unavailable(error),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        insert_query(key).execute(&self.pool).await.map(|_| ()).map_err(insert_error)
    }

    async fn find_key(&self, kid: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE kid = ?")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(record).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(record).collect()
    }

    async fn revoke_key(&self, kid: &str, at: i64) -> Result<bool, StoreError> {
        let result = sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE kid = ? AND revoked_at IS NULL")
            .bind(at)
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    async fn rotate_key(&self, old_kid: &str, new: &KeyRecord, old_expires_at: i64) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(unavailable)?;
        insert_query(new).execute(&mut *transaction).await.map_err(insert_error)?;
        let result = sqlx::query(
            "UPDATE api_keys SET expires_at = MIN(COALESCE(expires_at, ?1), ?1), replaced_by = ?2 \
             WHERE kid = ?3 AND revoked_at IS NULL AND replaced_by IS NULL",
        )
        .bind(old_expires_at)
        .bind(&new.kid)
        .bind(old_kid)
        .execute(&mut *transaction)
        .await
        .map_err(unavailable)?;
        if result.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("key {old_kid} is not live, or was rotated already")));
        }
        transaction.commit().await.map_err(unavailable)
    }

    async fn update_limits(&self, kid: &str, limits: &KeyLimits) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE api_keys SET rate = ?, burst = ?, concurrency = ?, quotas = ?, row_quotas = ? WHERE kid = ?",
        )
        .bind(limits.rate.map(|rate| rate.to_string()))
        .bind(limits.burst.map(i64::from))
        .bind(limits.concurrency.map(i64::from))
        .bind(KeyLimits::quotas_to_stored(&limits.quotas))
        .bind(KeyLimits::quotas_to_stored(&limits.row_quotas))
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(result.rows_affected() == 1)
    }

    async fn add_usage(&self, usage: &[Usage]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.map_err(unavailable)?;
        for row in usage {
            sqlx::query(
                "INSERT INTO usage (kid, model, day, requests, rows) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (kid, model, day) DO UPDATE SET \
                 requests = requests + excluded.requests, rows = rows + excluded.rows",
            )
            .bind(&row.kid)
            .bind(&row.model)
            .bind(&row.day)
            .bind(i64::try_from(row.requests).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.rows).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        }
        transaction.commit().await.map_err(unavailable)
    }

    async fn usage(&self, kid: Option<&str>, since_day: &str) -> Result<Vec<Usage>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, model, day, requests, rows FROM usage WHERE day >= ? AND (? IS NULL OR kid = ?) \
             ORDER BY day, kid, model",
        )
        .bind(since_day)
        .bind(kid)
        .bind(kid)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let corrupt = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
        rows.iter()
            .map(|row| {
                Ok(Usage {
                    kid: row.try_get("kid").map_err(corrupt)?,
                    model: row.try_get("model").map_err(corrupt)?,
                    day: row.try_get("day").map_err(corrupt)?,
                    requests: u64::try_from(row.try_get::<i64, _>("requests").map_err(corrupt)?).unwrap_or(0),
                    rows: u64::try_from(row.try_get::<i64, _>("rows").map_err(corrupt)?).unwrap_or(0),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
            created_at: 100,
            expires_at: Some(1_000),
            revoked_at: None,
            replaced_by: None,
            limits: crate::store::KeyLimits {
                rate: Some("50/s".parse().unwrap()),
                burst: Some(100),
                concurrency: Some(8),
                quotas: vec!["1000/day".parse().unwrap(), "20000/month".parse().unwrap()],
                row_quotas: vec![],
            },
        }
    }

    #[tokio::test]
    async fn keys_round_trip_revoke_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
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
    }
}
