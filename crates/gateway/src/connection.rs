//! Open connections of one listener: how long each may stay without a request, and how many
//! may be open at once.
//!
//! - A connection must start a request within `header_timeout` of being accepted (a bare TCP
//!   connection that never speaks, or an HTTP/2 client that never opens a stream, is closed).
//! - A connection with no request in flight (responses sent whole) for `idle_timeout` is closed.
//! - At `max_connections`, a new connection closes the one idle the longest; if none is idle,
//!   the new one is refused. Silent connections cannot use up the process's file descriptors.
//!
//! A request is in flight from its head until its response body is sent or dropped.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// What the server knows of one open connection.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    accepted: Instant,
    /// Requests started on it.
    requests: AtomicU64,
    /// Requests whose response is not yet sent whole.
    in_flight: AtomicU64,
    /// Nanoseconds after `accepted` when it last went idle (its last response ended).
    idle_since_ns: AtomicU64,
    close: Notify,
}

impl Connection {
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.accepted + Duration::from_nanos(self.idle_since_ns.load(Ordering::Acquire)))
    }

    /// Marks a request started; the returned guard marks it finished when dropped (keep it
    /// with the response body).
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { connection: Arc::clone(self) }
    }

    /// Resolves when the connection should be closed: told to by the registry, no request
    /// started within `header_timeout`, or idle for `idle_timeout`.
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.requests.load(Ordering::Acquire) == 0 {
                self.accepted + header_timeout
            } else {
                match self.idle_since() {
                    Some(since) => since + idle_timeout,
                    // Busy: look again after a whole idle period.
                    None => now + idle_timeout,
                }
            };
            if deadline <= now {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
                () = self.close.notified() => return,
            }
        }
    }
}

/// A request in flight on a connection; finished when dropped.
#[derive(Debug)]
pub struct InFlight {
    connection: Arc<Connection>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let since = u64::try_from(self.connection.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.connection.idle_since_ns.store(since, Ordering::Release);
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one listener.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

/// A connection's place in the registry; removed when dropped.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    pub connection: Arc<Connection>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.connection.id);
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections { max: max.max(1), next_id: AtomicU64::new(0), open: Mutex::new(HashMap::new()) })
    }

    /// Registers a new connection, closing the longest-idle one if the listener is full;
    /// `None` (refuse it) when full of busy connections.
    pub fn admit(self: &Arc<Self>) -> Option<Registered> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let idlest = open
                .values()
                .filter_map(|connection| connection.idle_since().map(|since| (since, Arc::clone(connection))))
                .min_by_key(|(since, _)| *since)
                .map(|(_, connection)| connection)?;
            // It leaves the registry now, so the count is right at once; its task closes it.
            open.remove(&idlest.id);
            idlest.close.notify_one();
        }
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            idle_since_ns: AtomicU64::new(0),
            close: Notify::new(),
        });
        open.insert(connection.id, Arc::clone(&connection));
        Some(Registered { connections: Arc::clone(self), connection })
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raises the soft limit on open files to the hard limit (connections are files), and returns
/// the soft limit in force.
pub fn raise_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_without_a_request_expires_after_the_header_timeout() {
        let connections = Connections::new(4);
        let registered = connections.admit().unwrap();
        let started = Instant::now();
        registered.connection.expired(Duration::from_millis(200), Duration::from_secs(60)).await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_connection_expires_when_idle_not_while_busy() {
        let connections = Connections::new(4);
        let registered = connections.admit().unwrap();
        let connection = Arc::clone(&registered.connection);
        let request = connection.request_started();
        let (header, idle) = (Duration::from_millis(50), Duration::from_millis(200));
        let busy = tokio::time::timeout(Duration::from_millis(600), connection.expired(header, idle)).await;
        assert!(busy.is_err(), "a connection with a request in flight stays open");
        drop(request);
        let went_idle = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), connection.expired(header, idle)).await.unwrap();
        assert!(went_idle.elapsed() >= Duration::from_millis(190), "closed after the idle timeout, not before");
    }

    #[tokio::test]
    async fn a_full_listener_closes_its_longest_idle_connection_or_refuses() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = connections.admit().unwrap();
        let busy = second.connection.request_started();
        // Full: the idle one (first) is told to close and leaves the count.
        let third = connections.admit().unwrap();
        assert_eq!(connections.len(), 2);
        tokio::time::timeout(
            Duration::from_secs(1),
            first.connection.expired(Duration::from_secs(60), Duration::from_secs(60)),
        )
        .await
        .expect("the longest-idle connection is closed");
        // Full of busy connections: the new one is refused.
        let _also_busy = third.connection.request_started();
        assert!(connections.admit().is_none());
        drop(busy);
        assert!(connections.admit().is_some(), "an idle one makes room again");
        drop(first);
    }
}
