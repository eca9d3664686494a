//! The one thread that appends to the log.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::{
    AuditConfig, AuditError, AuditEvent, Fsync, Message,
    chain::{Head, Position, RecordHead, SigningKeyFile, head_path, line_hash},
};

/// Records taken from the queue per write.
const BATCH: usize = 4096;
/// How often the writer collects the queue when requests do not wait for their records.
const POLL: std::time::Duration = std::time::Duration::from_millis(1);
/// The longest record the writer expects to find at the end of the file.
const TAIL_WINDOW: u64 = 1 << 20;

pub struct Writer {
    config: AuditConfig,
    file: File,
    /// Length of the file after our last write; a different length means another process
    /// appended, and the chain position is read again from the file.
    known_len: u64,
    position: Position,
    key: SigningKeyFile,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
    unsynced: bool,
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> AuditError {
    AuditError::Io { path: path.display().to_string(), message: error.to_string() }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| io_error(path, e))
}

/// The chain position at the end of the file, or `Torn` if its last line is incomplete.
fn read_tail(file: &mut File, path: &Path) -> Result<(Position, u64), AuditError> {
    let len = file.seek(SeekFrom::End(0)).map_err(|e| io_error(path, e))?;
    if len == 0 {
        // A fresh file after a rotation continues the chain: the head names the rotated file's
        // closing checkpoint. Without a head this is the start of a chain.
        return match std::fs::read_to_string(head_path(path)) {
            Ok(text) => {
                let head: Head = serde_json::from_str(&text).map_err(|e| AuditError::Corrupt {
                    path: head_path(path).display().to_string(),
                    message: format!("not a head file ({e})"),
                })?;
                Ok((Position { seq: head.seq, hash: head.hash }, 0))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Position::start(), 0)),
            Err(e) => Err(io_error(&head_path(path), e)),
        };
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start)).map_err(|e| io_error(path, e))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(|e| io_error(path, e))?;
    if tail.last() != Some(&b'\n') {
        return Err(AuditError::Torn(path.display().to_string()));
    }
    let body = &tail[..tail.len() - 1];
    let line = match body.iter().rposition(|&byte| byte == b'\n') {
        Some(newline) => &body[newline + 1..],
        None if start == 0 => body,
        None => {
            return Err(AuditError::Corrupt {
                path: path.display().to_string(),
                message: "its last line is longer than 1 MiB".into(),
            });
        }
    };
    let head: RecordHead = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
        path: path.display().to_string(),
        message: format!("its last line is not an audit record ({e})"),
    })?;
    Ok((Position { seq: head.seq, hash: line_hash(line) }, len))
}

impl Writer {
    pub fn open(config: &AuditConfig) -> Result<Writer, AuditError> {
        let path = &config.path;
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        let key = SigningKeyFile::load_or_create(&config.signing_key)?;
        let mut file = open_append(path)?;
        file.lock().map_err(|e| io_error(path, e))?;
        let tail = read_tail(&mut file, path);
        let _ = file.unlock();
        let (position, known_len) = tail?;
        Ok(Writer {
            config: config.clone(),
            file,
            known_len,
            position,
            key,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            last_sync: Instant::now(),
            unsynced: false,
        })
    }

    /// Serves the queue until it closes or a shutdown arrives.
    ///
    /// With `fsync = "always"` each request waits for its record, so the thread wakes for every
    /// message. Otherwise nobody waits, and it collects the queue every millisecond instead:
    /// senders then never have to wake it, which is most of what a record would cost.
    pub fn run(mut self, mut receiver: mpsc::Receiver<Message>, healthy: &Arc<AtomicBool>) {
        let poll = match self.config.fsync {
            Fsync::Always => None,
            Fsync::Every(interval) => Some(interval.min(POLL)),
        };
        // Records not yet written: retried on every pass while the log cannot be written.
        let mut pending: Vec<AuditEvent> = Vec::new();
        loop {
            let mut messages = Vec::new();
            match poll {
                None => match receiver.blocking_recv() {
                    Some(message) => messages.push(message),
                    None => return,
                },
                Some(interval) => {
                    std::thread::sleep(interval);
                    if receiver.is_closed() && receiver.is_empty() {
                        return;
                    }
                }
            }
            while messages.len() < BATCH {
                match receiver.try_recv() {
                    Ok(message) => messages.push(message),
                    Err(_) => break,
                }
            }
            if messages.iter().any(|message| matches!(message, Message::Shutdown(_))) {
                // Refuse new records at once, and write every record already queued.
                healthy.store(false, Ordering::Relaxed);
                receiver.close();
                while let Ok(message) = receiver.try_recv() {
                    messages.push(message);
                }
            }
            let mut acks = Vec::new();
            let mut shutdown = None;
            for message in messages {
                match message {
                    Message::Event(event, ack) => {
                        pending.push(*event);
                        acks.extend(ack);
                    }
                    Message::Tick => {}
                    Message::Shutdown(done) => shutdown = Some(done),
                }
            }
            let sync_now = !acks.is_empty() || shutdown.is_some();
            let result = self.write_batch(&pending, shutdown.is_some(), sync_now);
            match &result {
                Ok(()) => pending.clear(),
                Err(error) => {
                    tracing::error!(%error, records = pending.len(), "audit log write failed; requests are refused until it recovers");
                    if !acks.is_empty() {
                        // Their requests are answered 503: those records describe answers never given.
                        pending.clear();
                    } else if pending.len() > self.config.queue {
                        // Served already (nobody waits in this mode): kept for the next attempt, up
                        // to a bound; beyond it the oldest are lost, and said to be.
                        let lost = pending.len() - self.config.queue;
                        pending.drain(..lost);
                        tracing::error!(lost, "audit records lost while the log could not be written");
                    }
                }
            }
            if shutdown.is_none() {
                healthy.store(result.is_ok(), Ordering::Relaxed);
            }
            for ack in acks {
                let _ = ack.send(result.is_ok());
            }
            if let Some(done) = shutdown {
                let _ = done.send(());
                return;
            }
        }
    }

    /// Appends `events` (and any checkpoint that falls due) under the file lock.
    pub fn write_batch(
        &mut self,
        events: &[AuditEvent],
        force_checkpoint: bool,
        force_sync: bool,
    ) -> Result<(), AuditError> {
        let checkpoint_due =
            self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        let sync_due = match self.config.fsync {
            Fsync::Always => true,
            Fsync::Every(interval) => self.last_sync.elapsed() >= interval,
        };
        if events.is_empty()
            && !checkpoint_due
            && !(force_checkpoint && self.since_checkpoint > 0)
            && !(self.unsynced && (sync_due || force_sync))
        {
            return Ok(());
        }
        self.file.lock().map_err(|e| io_error(&self.config.path, e))?;
        let result = self.write_locked(events, force_checkpoint || checkpoint_due, force_sync || sync_due);
        let _ = self.file.unlock();
        result
    }

    fn write_locked(&mut self, events: &[AuditEvent], checkpoint: bool, sync: bool) -> Result<(), AuditError> {
        let path = self.config.path.clone();
        if self.rotated_elsewhere() {
            // Another process rotated the file under us: follow the path to the new file.
            let file = open_append(&path)?;
            file.lock().map_err(|e| io_error(&path, e))?;
            let _ = self.file.unlock();
            self.file = file;
            self.known_len = u64::MAX;
        }
        let len = self.file.metadata().map_err(|e| io_error(&path, e))?.len();
        if len != self.known_len {
            // Another process (the keys commands) appended: continue after its records.
            let (position, len) = read_tail(&mut self.file, &path)?;
            self.position = position;
            self.known_len = len;
        }
        if self.known_len >= self.config.max_file_bytes && (!events.is_empty() || checkpoint) {
            self.rotate()?;
        }
        self.append_locked(events, checkpoint, sync)
    }

    /// Appends under the lock already held: records, the checkpoints that fall due, the sync and
    /// the head. Nothing advances unless the whole buffer is written.
    fn append_locked(&mut self, events: &[AuditEvent], checkpoint: bool, sync: bool) -> Result<(), AuditError> {
        let path = self.config.path.clone();
        // Lines are built on a copy of the position, kept only once they are all written.
        let time = crate::time::now_rfc3339_millis();
        let mut position = self.position.clone();
        let mut since_checkpoint = self.since_checkpoint;
        let mut buffer = String::with_capacity(events.len() * 320);
        let serialize =
            |e: serde_json::Error| AuditError::Corrupt { path: path.display().to_string(), message: e.to_string() };
        let mut checkpointed = None;
        for event in events {
            buffer.push_str(&position.append(&time, event).map_err(serialize)?);
            buffer.push('\n');
            since_checkpoint += 1;
            if since_checkpoint >= self.config.checkpoint_every {
                buffer.push_str(&position.checkpoint(&time, &self.key).map_err(serialize)?);
                buffer.push('\n');
                since_checkpoint = 0;
                checkpointed = Some(position.clone());
            }
        }
        if checkpoint && since_checkpoint > 0 {
            buffer.push_str(&position.checkpoint(&time, &self.key).map_err(serialize)?);
            buffer.push('\n');
            since_checkpoint = 0;
            checkpointed = Some(position.clone());
        }
        if !buffer.is_empty() {
            if let Err(error) = self.file.write_all(buffer.as_bytes()) {
                // A partial write (a full disk) is cut back, so the file still ends on a whole
                // record and the next attempt continues the chain.
                let _ = self.file.set_len(self.known_len);
                return Err(io_error(&path, error));
            }
            self.known_len += buffer.len() as u64;
            self.position = position;
            self.since_checkpoint = since_checkpoint;
            self.unsynced = true;
            if self.config.stdout {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(buffer.as_bytes());
                let _ = stdout.flush();
            }
        }
        // The head may only name a checkpoint that is on disk.
        if sync || checkpointed.is_some() {
            self.file.sync_data().map_err(|e| io_error(&path, e))?;
            self.last_sync = Instant::now();
            self.unsynced = false;
        }
        if let Some(position) = checkpointed {
            self.last_checkpoint = Instant::now();
            self.write_head(&position)?;
        }
        Ok(())
    }

    /// Closes the current file with a checkpoint and continues the chain in a new one. The old
    /// file is renamed `<path>.<last seq, 12 digits>`, so a shell glob lists files in order.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let path = self.config.path.clone();
        // Seal the old file with a checkpoint (synced, and named in the head) before moving it.
        self.append_locked(&[], true, true)?;
        let rotated = PathBuf::from(format!("{}.{:012}", path.display(), self.position.seq));
        std::fs::rename(&path, &rotated).map_err(|e| io_error(&path, e))?;
        let file = open_append(&path)?;
        file.lock().map_err(|e| io_error(&path, e))?;
        let _ = self.file.unlock();
        self.file = file;
        self.known_len = 0;
        tracing::info!(rotated = %rotated.display(), "audit log rotated");
        Ok(())
    }

    #[cfg(unix)]
    fn rotated_elsewhere(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.config.path), self.file.metadata()) {
            (Ok(at_path), Ok(ours)) => at_path.ino() != ours.ino() || at_path.dev() != ours.dev(),
            _ => true,
        }
    }

    #[cfg(not(unix))]
    fn rotated_elsewhere(&self) -> bool {
        false
    }

    fn write_head(&self, position: &Position) -> Result<(), AuditError> {
        let head = self.key.sign_head(position.seq, &position.hash);
        let path = head_path(&self.config.path);
        let temporary = PathBuf::from(format!("{}.tmp", path.display()));
        let text = serde_json::to_string(&head).map_err(|e| io_error(&path, e))?;
        let mut file = File::create(&temporary).map_err(|e| io_error(&temporary, e))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io_error(&temporary, e))?;
        std::fs::rename(&temporary, &path).map_err(|e| io_error(&path, e))
    }
}
