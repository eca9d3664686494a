//! The multi-node store: PostgreSQL, with the same schema as the SQLite store (its migrations,
//! in PostgreSQL's types, are applied at open). Gateway nodes sharing it hold no key state of
//! their own beyond a bounded-staleness cache.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{
    Row,
    postgres::{PgPool, PgPoolOptions, PgRow},
};

use super::{KeyLimits, KeyRecord, ModelScope, Scopes, SigningKeyRecord, Store, StoreError, Usage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl PostgresStore {
    /// Connects and brings the schema up to date. Concurrent nodes starting together are
    /// serialised by the migrator's advisory lock.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Unavailable(format!("migrating PostgreSQL: {e}")))?;
        Ok(PostgresStore { pool })
    }
}

fn record(row: &PgRow) -> Result<KeyRecord, StoreError> {
    key_record_from_row!(row)
}

const INSERT: &str = "INSERT INTO api_keys \
                      (kid, kind, name, owner, hash, models, scopes, created_at, expires_at, output, widen_output, \
                       rate, burst, concurrency, quotas, row_quotas, \
                       user_rate, user_burst, user_concurrency, user_quotas, max_users, max_tokens, \
                       tpm, token_quotas, spend_caps, user_tpm, user_token_quotas, user_spend_caps, delegate) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
                              $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)";

fn insert_query(key: &KeyRecord) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
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
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(unavailable)
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        insert_query(key).execute(&self.pool).await.map(|_| ()).map_err(insert_error)
    }

    async fn find_key(&self, kid: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE kid = $1")
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
        let result = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE kid = $2 AND revoked_at IS NULL")
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
            "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, $1), $1), replaced_by = $2 \
             WHERE kid = $3 AND revoked_at IS NULL AND replaced_by IS NULL",
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
                "UPDATE api_keys SET rate = $1, burst = $2, concurrency = $3, quotas = $4, row_quotas = $5, \
                 user_rate = $6, user_burst = $7, user_concurrency = $8, user_quotas = $9, max_users = $10, \
                 max_tokens = $11, tpm = $12, token_quotas = $13, spend_caps = $14, user_tpm = $15, \
                 user_token_quotas = $16, user_spend_caps = $17 WHERE kid = $18",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (kid, model, day) DO UPDATE SET \
                 requests = usage.requests + excluded.requests, rows = usage.rows + excluded.rows, \
                 tokens_in = usage.tokens_in + excluded.tokens_in, tokens_out = usage.tokens_out + excluded.tokens_out, \
                 spend_micros = usage.spend_micros + excluded.spend_micros, \
                 estimated = usage.estimated + excluded.estimated",
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
             FROM usage WHERE day >= $1 AND ($2::text IS NULL OR kid = $2 \
             OR (strpos($2, '/') = 0 AND left(kid, length($2) + 1) = $2 || '/')) \
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

    /// The machine's PostgreSQL serves TLS with the distribution's self-signed certificate; the
    /// store connects over it, verifying the chain against that certificate.
    #[tokio::test]
    async fn the_store_speaks_tls_to_postgresql_when_the_url_asks() {
        let Some(url) = crate::store::tests::postgres_url().await else { return };
        let root = std::path::Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem");
        if !root.exists() {
            eprintln!("skipping: {} is absent (PostgreSQL without TLS here)", root.display());
            return;
        }
        let tls = format!("{url}?sslmode=verify-ca&sslrootcert={}", root.display());
        let store = PostgresStore::open(&tls).await.unwrap();
        let encrypted: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(encrypted, "the connection is not encrypted");
        // The certificate is checked, not just used: it names `localhost`, so verify-full accepts
        // that name and refuses the address, at open (never accepted and failing later).
        if url.contains("@127.0.0.1:") {
            let by_name = url.replacen("@127.0.0.1:", "@localhost:", 1);
            let full = |url: &str| format!("{url}?sslmode=verify-full&sslrootcert={}", root.display());
            PostgresStore::open(&full(&by_name)).await.unwrap();
            let refused = PostgresStore::open(&full(&url)).await.unwrap_err().to_string();
            assert!(refused.contains("cannot connect"), "{refused}");
        }
    }
}
