//! The stop signal every long-running task of the server follows: a `watch` channel whose value
//! turns true once. Low in the module order, so that what runs in the background (the TLS file
//! watcher, the limiter's flusher, the key-change followers) need not know the server.

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
