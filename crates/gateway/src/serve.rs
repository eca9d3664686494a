//! Listeners and lifecycle: build the gateway (store, pepper, models), bind the public and admin
//! listeners, serve until told to stop, then drain in-flight requests within the grace period.

use std::{future::Future, net::SocketAddr, sync::Arc};

use std::time::Duration;

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::TcpListener;
use tower::ServiceExt;

pub use crate::state::{Gateway, StartError, open_keyring};
use crate::{config::Config, router, shutdown::stopped};

/// A gateway bound to its listeners, not yet serving.
#[derive(Debug)]
pub struct Server {
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
}

impl Server {
    pub async fn bind(gateway: Arc<Gateway>) -> Result<Server, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|error| StartError::Bind { addr, error })
        };
        let public = bind(gateway.config().listen).await?;
        let admin = bind(gateway.config().admin_listen).await?;
        Ok(Server { gateway, public, admin })
    }

    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// Serves until `shutdown` completes, then stops accepting, marks the node not ready, and
    /// waits up to the grace period for requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let gateway = self.gateway;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Connections are files: take what the hard limit allows, and keep each listener's
        // connections well within it.
        let files = crate::connection::raise_file_limit();
        let max_connections = files
            .map_or(gateway.config().max_connections, |files| {
                gateway.config().max_connections.min(usize::try_from(files / 2).unwrap_or(usize::MAX))
            })
            .max(16);
        tracing::info!(open_files = files.unwrap_or(0), max_connections, "connection limits");
        let timeouts = Timeouts { header: gateway.config().header_read_timeout, idle: gateway.config().idle_timeout };
        let public = accept_loop(
            self.public,
            router::public(Arc::clone(&gateway)),
            gateway.tls().cloned(),
            timeouts,
            crate::connection::Connections::new(max_connections),
            stop_rx.clone(),
        );
        let admin = accept_loop(
            self.admin,
            router::admin(Arc::clone(&gateway)),
            None,
            timeouts,
            crate::connection::Connections::new(64),
            stop_rx.clone(),
        );
        let flusher = gateway.spawn_background(&stop_rx);
        let mut public = tokio::spawn(public);
        let mut admin = tokio::spawn(admin);

        tokio::select! {
            () = shutdown => {}
            result = &mut public => return flatten(result),
            result = &mut admin => return flatten(result),
        }
        tracing::info!("shutting down: draining requests in flight");
        gateway.start_draining();
        let _ = stop_tx.send(true);
        let grace = gateway.config().shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            let public = (&mut public).await;
            let admin = (&mut admin).await;
            flatten(public).and(flatten(admin))
        })
        .await;
        let result = match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(grace_seconds = grace.as_secs(), "grace period over; closing remaining connections");
                public.abort();
                admin.abort();
                Ok(())
            }
        };
        // Requests are done (or cut off): write the last usage, seal the log with a checkpoint.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flusher).await;
        if let Some(audit) = gateway.audit() {
            audit.close().await;
        }
        tracing::info!("stopped");
        result
    }
}

/// How long a connection may go without a request (from accept) or without traffic.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

/// Accepts connections until `stop`, serving each (HTTP/1.1 or HTTP/2, over TLS when `tls` is
/// set) on its own task; then waits for the open connections to finish their requests.
///
/// Each request carries the peer address and, on a mutual-TLS connection, the verified client
/// certificate's identity. A client must finish the TLS handshake and start a request within
/// the header timeout of being accepted, and send each request's headers within it; a
/// connection idle for the idle timeout is closed, and a full listener closes its longest-idle
/// connection to make room (see [`crate::connection`]).
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<crate::tls::Tls>>,
    timeouts: Timeouts,
    connections: Arc<crate::connection::Connections>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Some(registered) = connections.admit() else {
            tracing::warn!(%peer, "connection refused: every connection is busy (server.max_connections)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = Arc::clone(&registered.connection);
            let expired = connection.expired(timeouts.header, timeouts.idle);
            let served = serve_connection(stream, peer, router, tls, builder, watcher, connection.clone(), timeouts);
            tokio::select! {
                () = served => {}
                () = expired => tracing::debug!(%peer, "closing a connection without requests"),
            }
            drop(registered);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves one accepted connection until it ends (TLS first when configured).
#[expect(clippy::too_many_arguments, reason = "one connection's parts, passed once")]
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<Arc<crate::tls::Tls>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    connection: Arc<crate::connection::Connection>,
    timeouts: Timeouts,
) {
    let service = |certificate: Option<crate::tls::PeerCertificate>| {
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            if let Some(certificate) = &certificate {
                request.extensions_mut().insert(certificate.clone());
            }
            // In flight until the response body is sent or dropped.
            let in_flight = connection.request_started();
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _in_flight = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    match tls {
        None => {
            let connection = builder.serve_connection(TokioIo::new(stream), service(None));
            let _ = watcher.watch(connection).await;
        }
        Some(tls) => {
            let stream = match tokio::time::timeout(timeouts.header, tls.acceptor().accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::PeerCertificate::from_der(leaf));
            let connection = builder.serve_connection(TokioIo::new(stream), service(certificate));
            let _ = watcher.watch(connection).await;
        }
    }
}

fn flatten(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), StartError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(StartError::Serve(error)),
        Err(error) => Err(StartError::Serve(std::io::Error::other(error.to_string()))),
    }
}

/// Builds, binds and serves; logs the bound addresses. The `serve` command's whole job.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let gateway = Gateway::builder(config).open().await?;
    let server = Server::bind(gateway).await?;
    tracing::info!(
        public = %server.public_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %server.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        scheme = if server.gateway.tls().is_some() { "https" } else { "http" },
        "listening"
    );
    server.run(shutdown).await
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives right after start-up is not missed (and
/// does not kill the process uncleanly).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let terminated = async {
                match terminate.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = terminated => {}
                () = interrupted => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
