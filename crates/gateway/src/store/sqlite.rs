//! The embedded store: one SQLite file, migrations applied at open.

use std::{path::Path, str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Row,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use super::{KeyLimits, KeyRecord, ModelScope, Scopes, SigningKeyRecord, Store, StoreError, Usage};

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
        // SQLite has no migration lock of its own, and two processes creating one new file at once
        // collide on its journal mode ("database is locked") and then on the migrations. A lock
        // file beside it serialises opening and migrating (nodes, or a node and `keys create`).
        let lock_path = path.with_extension("open.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display())))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Err(error) = lock.try_lock() {
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Unavailable(format!("{} stays locked: {error}", lock_path.display())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated.map_err(|e| StoreError::Unavailable(format!("cannot migrate {}: {e}", path.display())))?;
        Ok(SqliteStore { pool })
    }
}

fn record(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    key_record_from_row!(row)
}

const INSERT: &str = "INSERT INTO api_keys \
                      (kid, kind, name, owner, hash, models, scopes, created_at, expires_at, output, widen_output, \
                       rate, burst, concurrency, quotas, row_quotas, \
                       user_rate, user_burst, user_concurrency, user_quotas, max_users, max_tokens, \
                       tpm, token_quotas, spend_caps, user_tpm, user_token_quotas, user_spend_caps, delegate) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn insert_query(key: &KeyRecord) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    bind_key_record!(sqlx::query(INSERT), key)
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

    async fn list_kids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT kid FROM api_keys").fetch_all(&self.pool).await.map_err(unavailable)
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
        let result = bind_key_limits!(
            sqlx::query(
                "UPDATE api_keys SET rate = ?, burst = ?, concurrency = ?, quotas = ?, row_quotas = ?, \
                 user_rate = ?, user_burst = ?, user_concurrency = ?, user_quotas = ?, max_users = ?, max_tokens = ?, \
                 tpm = ?, token_quotas = ?, spend_caps = ?, user_tpm = ?, user_token_quotas = ?, user_spend_caps = ? \
                 WHERE kid = ?",
            ),
            limits
        )
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
                "INSERT INTO usage (kid, model, day, requests, rows, tokens_in, tokens_out, spend_micros, estimated) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (kid, model, day) DO UPDATE SET \
                 requests = requests + excluded.requests, rows = rows + excluded.rows, \
                 tokens_in = tokens_in + excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out, \
                 spend_micros = spend_micros + excluded.spend_micros, estimated = estimated + excluded.estimated",
            )
            .bind(&row.kid)
            .bind(&row.model)
            .bind(&row.day)
            .bind(i64::try_from(row.requests).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.rows).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.tokens_in).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.tokens_out).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.spend_micros).unwrap_or(i64::MAX))
            .bind(i64::try_from(row.estimated).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        }
        transaction.commit().await.map_err(unavailable)
    }

    async fn usage(&self, kid: Option<&str>, since_day: &str) -> Result<Vec<Usage>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, model, day, requests, rows, tokens_in, tokens_out, spend_micros, estimated \
             FROM usage WHERE day >= ?1 AND (?2 IS NULL OR kid = ?2 \
             OR (instr(?2, '/') = 0 AND substr(kid, 1, length(?2) + 1) = ?2 || '/')) \
             ORDER BY day, kid, model",
        )
        .bind(since_day)
        .bind(kid)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(|row| usage_from_row!(row)).collect()
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        signing_keys!(insert, self.pool, key)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        signing_keys!(list, &self.pool)
    }

    async fn prune_signing_keys(&self, before: i64) -> Result<u64, StoreError> {
        signing_keys!(prune, &self.pool, before)
    }

    async fn key_changes(&self, after: Option<i64>) -> Result<super::KeyChanges, StoreError> {
        key_changes!(&self.pool, after)
    }

    async fn prune_key_changes(&self, before: i64) -> Result<(), StoreError> {
        key_changes!(prune, &self.pool, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sqlite_store_keeps_its_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).await.unwrap();
        crate::store::tests::conformance(&store).await;
    }

    #[tokio::test]
    async fn opening_one_new_file_twice_at_once_migrates_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let (a, b) = tokio::join!(SqliteStore::open(&path), SqliteStore::open(&path));
        a.unwrap().ping().await.unwrap();
        b.unwrap().ping().await.unwrap();
    }
}
