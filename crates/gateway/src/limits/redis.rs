//! Limiter state shared by every gateway node, in Redis.
//!
//! One Lua script decides a request in one round trip: every GCRA bucket it touches (the
//! principal's, the model's) and every quota counter it spends, atomically, against Redis's own
//! clock (`TIME`), so clock skew between nodes does not matter. Revocations and limit changes
//! are published on a channel every node listens to, so a key revoked anywhere is refused
//! everywhere within a second. Any Redis failure is returned to the caller, which fails closed
//! (or, if configured, falls back to this node's own limits).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::Gcra;

/// How long a Redis call may take before the request fails closed.
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connection attempt, requests fail at once for this long.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

const ADMIT: &str = r"
local nb = tonumber(ARGV[1])
local nq = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local remaining, reset = -1, 0
for i = 1, nb do
  local emission = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + emission
  local ahead = new_tat - now
  local limit = tolerance + emission
  if ahead > limit then
    return {0, i, 0, tat - now, ahead - limit}
  end
  tats[i] = {new_tat, ahead}
  if i == 1 then
    remaining = math.floor((limit - ahead) / emission)
    reset = ahead
  end
end
local base = 2 + 2 * nb
for j = 1, nq do
  local limit = tonumber(ARGV[base + 3 * j - 2])
  local increment = tonumber(ARGV[base + 3 * j - 1])
  local used = redis.call('GET', KEYS[nb + j])
  if not used then
    return {-2, j, 0, 0, 0}
  end
  if increment > 0 and tonumber(used) + increment > limit then
    return {-1, j, 0, 0, 0}
  end
end
for i = 1, nb do
  redis.call('SET', KEYS[i], tats[i][1], 'PX', math.floor(tats[i][2] / 1000) + 1000)
end
for j = 1, nq do
  local increment = tonumber(ARGV[base + 3 * j - 1])
  if increment > 0 then
    redis.call('INCRBY', KEYS[nb + j], increment)
  end
end
return {1, 0, remaining, reset, 0}
";

/// Adds a member to a set unless that would take it past its cap; the set expires with its
/// window. Replies 1 (a member, old or new) or 0 (refused).
const ADMIT_MEMBER: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
";

/// Settles budget reservations: adds each delta to its counter if the counter still exists
/// (its window may have ended), never below zero.
const ADJUST: &str = r"
for i = 1, #KEYS do
  local used = redis.call('GET', KEYS[i])
  if used then
    local value = tonumber(used) + tonumber(ARGV[i])
    if value < 0 then value = 0 end
    redis.call('SET', KEYS[i], value, 'KEEPTTL')
  end
end
return 1
";

/// A quota counter the script spends. It exists before it is spent from: a missing one is
/// answered `NeedsSeed`, and [`Shared::seed`] creates it with its expiry, so spending it is one
/// `INCRBY` and no `EXPIRE`.
#[derive(Debug, Clone)]
pub struct Counter {
    pub key: String,
    pub limit: u64,
    pub increment: u64,
    /// Seconds the counter outlives its window by.
    pub ttl: u64,
}

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; the first bucket's remaining requests and reset (µs), if there was a bucket.
    Allowed { remaining: Option<u32>, reset_us: u64 },
    /// Refused by bucket `index` (0-based); microseconds until its bucket is full / a slot frees.
    RateLimited { index: usize, reset_us: u64, retry_us: u64 },
    /// Refused by counter `index` (0-based).
    QuotaExhausted { index: usize },
    /// Counter `index` does not exist yet: seed it from the store, then ask again.
    NeedsSeed { index: usize },
}

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct SharedError(String);

impl SharedError {
    pub fn new(message: &str) -> SharedError {
        SharedError(message.to_owned())
    }
}

/// The connection to the shared limiter state.
pub struct Shared {
    client: redis::Client,
    prefix: String,
    admit: redis::Script,
    admit_member: redis::Script,
    adjust: redis::Script,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    last_failure: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// The channel revocations and limit changes are published on (after the prefix).
const KEYS_CHANNEL: &str = "keys";

impl Shared {
    /// Does not connect: the first request does, and a node whose Redis is down starts, fails
    /// limited requests closed, and recovers by itself when Redis is back.
    ///
    /// `rediss://` speaks TLS (rustls), verifying the server against `ca_file`'s roots, or the
    /// system's without one; a URL or CA file that cannot work is refused here, at start.
    pub fn new(url: &str, prefix: &str, ca_file: Option<&std::path::Path>) -> Result<Shared, String> {
        let client = match ca_file {
            None => redis::Client::open(url).map_err(|e| format!("limits.backend: {e}"))?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("limits.redis_ca_file: cannot read {}: {e}", path.display()))?;
                redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
                    .map_err(|e| format!("limits.redis_ca_file {}: {e}", path.display()))?
            }
        };
        Ok(Shared {
            client,
            prefix: prefix.to_owned(),
            admit: redis::Script::new(ADMIT),
            admit_member: redis::Script::new(ADMIT_MEMBER),
            adjust: redis::Script::new(ADJUST),
            connection: tokio::sync::Mutex::new(None),
            last_failure: Mutex::new(None),
        })
    }

    pub fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{parts}", self.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, SharedError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        if self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < RECONNECT_PAUSE)
        {
            return Err(SharedError("unreachable (retrying shortly)".into()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(200);
        match tokio::time::timeout(TIMEOUT * 2, ConnectionManager::new_with_config(self.client.clone(), config)).await {
            Ok(Ok(connection)) => {
                tracing::info!("connected to the shared limiter (redis)");
                *slot = Some(connection.clone());
                Ok(connection)
            }
            Ok(Err(error)) => {
                *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                Err(SharedError(error.to_string()))
            }
            Err(_) => {
                *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                Err(SharedError("connection timed out".into()))
            }
        }
    }

    /// Decides one request against `buckets` and `counters`, atomically, in one round trip.
    pub async fn admit(&self, buckets: &[(String, Gcra)], counters: &[Counter]) -> Result<Verdict, SharedError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.admit.prepare_invoke();
        invocation.arg(buckets.len()).arg(counters.len());
        for (key, gcra) in buckets {
            invocation.key(key).arg(gcra.emission_ns / 1000).arg(gcra.tolerance_ns / 1000);
        }
        for counter in counters {
            invocation.key(&counter.key).arg(counter.limit).arg(counter.increment).arg(counter.ttl);
        }
        let reply: Vec<i64> = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map_err(|e| SharedError(e.to_string()))?;
        let field = |index: usize| reply.get(index).copied().unwrap_or(0);
        let index = usize::try_from(field(1) - 1).unwrap_or(0);
        let micros = |index: usize| u64::try_from(field(index)).unwrap_or(0);
        Ok(match field(0) {
            1 => Verdict::Allowed { remaining: u32::try_from(field(2)).ok(), reset_us: micros(3) },
            0 => Verdict::RateLimited { index, reset_us: micros(3), retry_us: micros(4) },
            -1 => Verdict::QuotaExhausted { index },
            -2 => Verdict::NeedsSeed { index },
            other => return Err(SharedError(format!("unexpected script reply {other}"))),
        })
    }

    /// Counts `member` in the set `key` (a delegate key's end users in one window) unless the
    /// set holds `cap` others already; atomically for all nodes.
    pub async fn admit_member(&self, key: &str, member: &str, cap: u64, ttl: u64) -> Result<bool, SharedError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.admit_member.prepare_invoke();
        invocation.key(key).arg(member).arg(cap).arg(ttl);
        let reply: i64 = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map_err(|e| SharedError(e.to_string()))?;
        Ok(reply == 1)
    }

    /// Adds each delta to its counter (budget settlements), atomically, in one round trip.
    pub async fn adjust(&self, deltas: &[(String, i64)]) -> Result<(), SharedError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.adjust.prepare_invoke();
        for (key, delta) in deltas {
            invocation.key(key).arg(*delta);
        }
        let _: i64 = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map_err(|e| SharedError(e.to_string()))?;
        Ok(())
    }

    /// Creates a counter with the store's count unless another node did first.
    pub async fn seed(&self, key: &str, value: u64, ttl: u64) -> Result<(), SharedError> {
        let mut connection = self.connection().await?;
        let command = redis::cmd("SET").arg(key).arg(value).arg("NX").arg("EX").arg(ttl).to_owned();
        tokio::time::timeout(TIMEOUT, command.query_async::<Option<String>>(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map(|_| ())
            .map_err(|e| SharedError(e.to_string()))
    }

    /// Marks `key` as seen for `ttl_ms`: true if this call was the first to do so (on any node).
    /// The DPoP replay cache.
    pub async fn set_once(&self, key: &str, ttl_ms: u64) -> Result<bool, SharedError> {
        let mut connection = self.connection().await?;
        let command = redis::cmd("SET").arg(key).arg(1).arg("NX").arg("PX").arg(ttl_ms.max(1)).to_owned();
        tokio::time::timeout(TIMEOUT, command.query_async::<Option<String>>(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map(|reply| reply.is_some())
            .map_err(|e| SharedError(e.to_string()))
    }

    /// Tells every node that a key changed (revoked, limits updated).
    pub async fn publish_key_change(&self, kid: &str) -> Result<(), SharedError> {
        let mut connection = self.connection().await?;
        let command = redis::cmd("PUBLISH").arg(self.key(format_args!("{KEYS_CHANNEL}"))).arg(kid).to_owned();
        tokio::time::timeout(TIMEOUT, command.query_async::<i64>(&mut connection))
            .await
            .map_err(|_| SharedError("timed out".into()))?
            .map(|_| ())
            .map_err(|e| SharedError(e.to_string()))
    }

    /// Calls `changed` with each key id published, until `stop`; reconnects after failures.
    pub async fn watch_key_changes(
        self: Arc<Self>,
        changed: impl Fn(&str) + Send + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let channel = self.key(format_args!("{KEYS_CHANNEL}"));
        loop {
            let session = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                tracing::info!("listening for key changes from other nodes");
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(kid) = message.get_payload::<String>() {
                        changed(&kid);
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                result = session => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "key-change channel lost; reconnecting");
                    }
                }
                () = crate::shutdown::stopped(&mut stop) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = crate::shutdown::stopped(&mut stop) => return,
            }
        }
    }
}
