//! The tamper-evident audit log: exactly one record per request, denials included, and one per
//! admin action, as JSON lines in a hash chain with signed checkpoints.
//!
//! - [`chain`] is the record format: each line carries the SHA-256 of the line before it, and
//!   every so often a checkpoint line signed with an Ed25519 key kept apart from the log.
//! - [`writer`] is the one thread that appends: records arrive through a bounded channel, are
//!   written in batches under an exclusive file lock (so the CLI can append admin records to the
//!   same chain), synced to disk by the configured policy, and the file rotates by size without
//!   breaking the chain.
//! - [`verify`] reads a log back and names the first modified, inserted, deleted or reordered
//!   record, a torn tail, and truncation (against the signed head file).
//!
//! If the log cannot be written the gateway refuses requests (503 `audit_unavailable`) rather
//! than serve unaudited, unless the config says `fail_open = true`.

pub mod chain;
pub mod fold;
pub mod verify;
mod writer;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use chain::SigningKeyFile;

/// How the log is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub signing_key: PathBuf,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
    pub fsync: Fsync,
    /// Rotate when the file reaches this size.
    pub max_file_bytes: u64,
    /// Keep serving when the log cannot be written (the weaker choice).
    pub fail_open: bool,
    /// Copy every record to standard output, for log shippers.
    pub stdout: bool,
    /// Records waiting for the writer.
    pub queue: usize,
}

/// When records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Each request waits until its record is synced.
    Always,
    /// Synced at least this often; requests do not wait.
    Every(Duration),
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(text: &str) -> Result<Fsync, String> {
        if text == "always" {
            return Ok(Fsync::Always);
        }
        crate::time::parse_duration(text)
            .ok()
            .filter(|interval| !interval.is_zero())
            .map(Fsync::Every)
            .ok_or_else(|| format!("audit.fsync = '{text}': use \"always\" or an interval such as \"10ms\""))
    }
}

/// What happened, without secrets or payloads.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    Request(RequestRecord),
    KeyCreated {
        kid: String,
        name: String,
        models: String,
        scopes: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<i64>,
    },
    KeyRevoked {
        kid: String,
    },
    /// `leaks scan --revoke` found the key's secret where it does not belong and revoked it.
    LeakedKeyRevoked {
        kid: String,
        /// Where the secret was found (a path, with `!` between an archive and its member).
        found_in: String,
    },
    KeyRotated {
        kid: String,
        successor: String,
        old_key_expires_at: i64,
    },
    /// A key's limits changed (`keys update`); the new values, as written on the command line.
    KeyLimitsChanged {
        kid: String,
        limits: String,
    },
    /// Identical refusals of one client without an accepted credential, counted instead of
    /// written one by one (see [`fold`]): `count` more like the request record written at
    /// `first` (Unix seconds), the last at `last`.
    RefusalsFolded {
        client: String,
        method: String,
        route: String,
        reason: String,
        status: u16,
        count: u64,
        first: i64,
        last: i64,
    },
    /// Written by the chain itself; see [`chain`].
    Checkpoint {
        key_id: String,
        signature: String,
    },
}

crate::reason::named! {
    /// What the gateway decided about a request.
    pub enum Decision {
        /// Served.
        Allow => "allow",
        /// Refused by authentication, authorisation or limits.
        Deny => "deny",
        /// Bad input, or a failure.
        Error => "error",
    }
}

crate::reason::named! {
    /// What a request asked to do, by its route.
    pub enum RequestAction {
        Infer => "infer",
        Metadata => "metadata",
        ServerMetadata => "server_metadata",
        Health => "health",
        Token => "token",
        Broker => "broker",
        Other => "other",
    }
}

/// One HTTP request and what was decided about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    pub request_id: String,
    /// `key:<kid>`, `anonymous:<ip>` or `-` when no credential was accepted.
    pub principal: String,
    pub client: String,
    pub method: String,
    /// The route template, e.g. `/v2/models/{model}/infer`.
    pub route: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub action: RequestAction,
    /// `allow`, `deny` (authentication, authorisation, limits) or `error` (bad input, failure).
    pub decision: Decision,
    /// `ok`, the error code, or the authentication failure (`revoked`, `unknown`, ...).
    pub reason: String,
    pub status: u16,
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// LLM routes: SHA-256 of the prompt (never its text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<String>,
    /// LLM routes: the tokens the upstream reported, or the gateway counted (`estimated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<crate::request::TokenUsage>,
    /// LLM routes with `redact_prompts`: values of each kind of personal data replaced in the
    /// prompt (counts, never the values).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub redacted: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "audit log {0} ends with an incomplete record (a crash during a write?); check it with \
         `portcullis audit verify {0}` and cut the torn line with `portcullis audit repair {0}`"
    )]
    Torn(String),
    #[error("audit log {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("the audit log is not being written")]
    Unavailable,
    #[error("audit signing key {path}: {message}")]
    Key { path: String, message: String },
}

enum Message {
    Event(Box<AuditEvent>, Option<oneshot::Sender<bool>>),
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// The gateway's handle on the log.
#[derive(Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
    folds: Arc<fold::Folds>,
    healthy: Arc<AtomicBool>,
    fail_open: bool,
    wait_for_sync: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Event(..) => "Event",
            Message::Tick => "Tick",
            Message::Shutdown(_) => "Shutdown",
        })
    }
}

impl AuditLog {
    /// Opens the log (refusing a torn tail), loads or creates the signing key, and starts the
    /// writer thread and its ticker. Must be called inside the async runtime.
    pub fn open(config: &AuditConfig) -> Result<AuditLog, AuditError> {
        let writer = writer::Writer::open(config)?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let thread_healthy = Arc::clone(&healthy);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(receiver, &thread_healthy))
            .map_err(|e| AuditError::Io { path: config.path.display().to_string(), message: e.to_string() })?;
        // With fsync = "always" the writer sleeps until a record arrives, so a ticker wakes it for
        // time-based checkpoints; otherwise it polls the queue and needs none.
        if config.fsync == Fsync::Always {
            let ticker = sender.clone();
            let tick = config.checkpoint_interval.max(Duration::from_millis(1));
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    interval.tick().await;
                    // A full queue already wakes the writer; a closed one means it stopped.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = ticker.try_send(Message::Tick) {
                        break;
                    }
                }
            });
        }
        // Counts of folded refusals are written once their window ends.
        let folds = Arc::new(fold::Folds::default());
        let (summaries, counted) = (sender.clone(), Arc::clone(&folds));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                if summaries.is_closed() {
                    break;
                }
                for event in counted.due(std::time::Instant::now(), false) {
                    if summaries.send(Message::Event(Box::new(event), None)).await.is_err() {
                        tracing::error!("the count of folded refusals could not be written");
                    }
                }
            }
        });
        Ok(AuditLog {
            sender,
            folds,
            healthy,
            fail_open: config.fail_open,
            wait_for_sync: config.fsync == Fsync::Always,
        })
    }

    /// Records one request: written, or counted if it repeats a refusal of a caller without
    /// an accepted credential (see [`fold`]).
    pub async fn record_request(&self, record: RequestRecord) -> Result<(), AuditError> {
        let decision = self.folds.observe(&record, std::time::Instant::now(), crate::time::now());
        if let Some(summary) = decision.summary {
            self.record(summary).await?;
        }
        if decision.folded {
            return Ok(());
        }
        self.record(AuditEvent::Request(record)).await
    }

    /// False when the log cannot be written and the config does not allow serving unaudited.
    pub fn accepting(&self) -> bool {
        self.fail_open || self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the config allows serving when a record cannot be written.
    pub fn fails_open(&self) -> bool {
        self.fail_open
    }

    /// Queues a record (waiting for room, so records are never dropped) and, with
    /// `fsync = "always"`, waits until it is on disk.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        if !self.wait_for_sync {
            return self.sender.send(Message::Event(Box::new(event), None)).await.map_err(|_| AuditError::Unavailable);
        }
        let (ack, synced) = oneshot::channel();
        self.sender.send(Message::Event(Box::new(event), Some(ack))).await.map_err(|_| AuditError::Unavailable)?;
        match synced.await {
            Ok(true) => Ok(()),
            _ => Err(AuditError::Unavailable),
        }
    }

    /// Queues a record without waiting, for code that cannot wait (a `Drop`). Fails if the queue
    /// is full or closed.
    pub fn record_now(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.sender.try_send(Message::Event(Box::new(event), None)).map_err(|_| AuditError::Unavailable)
    }

    /// Writes a final checkpoint and syncs; called on shutdown after requests have drained.
    pub async fn close(&self) {
        for event in self.folds.due(std::time::Instant::now(), true) {
            if let Err(error) = self.record(event).await {
                tracing::error!(%error, "the count of folded refusals could not be written");
            }
        }
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

/// Appends one admin record from a process that is not the server (the `keys` commands),
/// under the same file lock, continuing the same chain, synced before returning.
pub fn append_admin(config: &AuditConfig, event: AuditEvent) -> Result<(), AuditError> {
    // The stdout copy is the server's, for its log shipper; a command's output stays its own.
    let config = AuditConfig { stdout: false, ..config.clone() };
    let mut writer = writer::Writer::open(&config)?;
    writer.write_batch(&[event], false, true)
}

#[cfg(test)]
mod tests;
