//! Listeners and lifecycle: build the gateway (store, pepper, models), bind the public and admin
//! listeners, serve until told to stop, then drain in-flight requests within the grace period.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use std::time::Duration;

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

use crate::{
    audit::{AuditError, AuditLog},
    authn::api_key::{KeyVerifier, PEPPER_ENV, Pepper, PepperError},
    backend::{self, BackendError, Pool, Registry},
    config::Config,
    keys::Keyring,
    metrics::Metrics,
    router,
    shutdown::stopped,
    store::{Store, StoreError, sqlite::SqliteStore},
};

/// How often counted usage is written to the store.
const USAGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pepper(#[from] PepperError),
    #[error(transparent)]
    Model(#[from] BackendError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Limits(String),
    #[error("token broker: {0}")]
    Broker(#[from] crate::broker::signing::SigningError),
    #[error("{0}")]
    Issuers(String),
}

/// Everything a request may need, shared by all requests.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub registry: Registry,
    pub pool: Pool,
    pub verifier: KeyVerifier,
    pub metrics: Metrics,
    /// The audit log; `None` only when the config disables it.
    pub audit: Option<AuditLog>,
    /// Global cap on requests in flight (load shedding beyond it).
    pub in_flight: Semaphore,
    /// The public listener's TLS, when configured.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Rate limits, concurrency and quotas.
    pub limiter: Arc<crate::limits::Limiter>,
    /// Trusted identity providers and their keys.
    pub issuers: crate::broker::idp::Issuers,
    /// The token broker, when `[broker]` is configured.
    pub broker: Option<Arc<crate::broker::Broker>>,
    draining: AtomicBool,
}

/// Opens the store named by the config (migrating it) and loads the pepper. Shared by `serve`
/// and the `keys` commands.
pub async fn open_keyring(config: &Config) -> Result<(Arc<dyn Store>, Pepper), StartError> {
    let store: Arc<dyn Store> = match &config.postgres_url {
        Some(url) => Arc::new(crate::store::postgres::PostgresStore::open(url.expose()).await?),
        None => Arc::new(SqliteStore::open(&config.sqlite).await?),
    };
    let env = std::env::var(PEPPER_ENV).ok();
    let pepper = Pepper::load(&config.pepper_file, env.as_deref(), true)?;
    Ok((store, pepper))
}

impl Gateway {
    /// Opens the store, loads the pepper, and loads and checks every model.
    pub async fn build(config: Config) -> Result<Arc<Gateway>, StartError> {
        let (store, pepper) = open_keyring(&config).await?;
        let registry = backend::load_models(&config)?;
        let limiter = Arc::new(
            crate::limits::Limiter::new(config.limits.clone(), Arc::clone(&store)).map_err(StartError::Limits)?,
        );
        let broker = match &config.broker {
            Some(broker) => Some(Arc::new(
                crate::broker::Broker::open(
                    broker.clone(),
                    Arc::clone(&store),
                    limiter.shared().cloned(),
                    crate::time::now(),
                )
                .await?,
            )),
            None => None,
        };
        Gateway::assemble_with(config, registry, store, pepper, limiter, broker)
    }

    /// Puts a gateway together from parts already loaded (tests use this with their own store),
    /// opening the audit log. Must run inside the async runtime.
    pub fn assemble(
        config: Config,
        registry: Registry,
        store: Arc<dyn Store>,
        pepper: Pepper,
    ) -> Result<Arc<Gateway>, StartError> {
        let limiter = Arc::new(
            crate::limits::Limiter::new(config.limits.clone(), Arc::clone(&store)).map_err(StartError::Limits)?,
        );
        Gateway::assemble_with(config, registry, store, pepper, limiter, None)
    }

    /// [`Gateway::assemble`] with a limiter and a token broker made by the caller.
    pub fn assemble_with(
        config: Config,
        registry: Registry,
        store: Arc<dyn Store>,
        pepper: Pepper,
        limiter: Arc<crate::limits::Limiter>,
        broker: Option<Arc<crate::broker::Broker>>,
    ) -> Result<Arc<Gateway>, StartError> {
        let metrics = Metrics::new();
        metrics.set_models(registry.len());
        let audit = match &config.audit {
            Some(audit) => Some(AuditLog::open(audit)?),
            None => {
                tracing::warn!("the audit log is disabled (audit.enabled = false): requests leave no record");
                None
            }
        };
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose().map_err(StartError::Tls)?.map(Arc::new);
        Ok(Arc::new(Gateway {
            tls,
            limiter,
            issuers: crate::broker::idp::Issuers::new(&config.identity_providers).map_err(StartError::Issuers)?,
            broker,
            pool: Pool::new(config.inference.threads, config.inference.queue),
            verifier: KeyVerifier::new(store, pepper, config.key_cache_ttl),
            in_flight: Semaphore::new(config.max_concurrency),
            metrics,
            audit,
            registry,
            config,
            draining: AtomicBool::new(false),
        }))
    }

    pub fn keyring(&self, pepper: Pepper) -> Keyring {
        Keyring::new(Arc::clone(self.verifier.store()), pepper, self.config.audit.clone())
    }

    /// Ready when not draining and the store answers: a node that cannot check keys must not
    /// receive traffic.
    pub async fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self.audit.as_ref().is_none_or(AuditLog::accepting)
            && self.verifier.store().ping().await.is_ok()
    }
}

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
        let public = bind(gateway.config.listen).await?;
        let admin = bind(gateway.config.admin_listen).await?;
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
            .map_or(gateway.config.max_connections, |files| {
                gateway.config.max_connections.min(usize::try_from(files / 2).unwrap_or(usize::MAX))
            })
            .max(16);
        tracing::info!(open_files = files.unwrap_or(0), max_connections, "connection limits");
        let timeouts = Timeouts { header: gateway.config.header_read_timeout, idle: gateway.config.idle_timeout };
        let public = accept_loop(
            self.public,
            router::public(Arc::clone(&gateway)),
            gateway.tls.clone(),
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
        if let Some(tls) = &gateway.tls {
            tokio::spawn(Arc::clone(tls).watch(stop_rx.clone()));
        }
        {
            // A key revoked or changed by any process leaves the cache within a second, with
            // or without Redis.
            let (follower, stop) = (Arc::clone(&gateway), stop_rx.clone());
            tokio::spawn(async move {
                follower.verifier.follow_key_changes(crate::authn::api_key::KEY_CHANGES_INTERVAL, stop).await;
            });
        }
        if let Some(shared) = gateway.limiter.shared() {
            // A key revoked or changed on any node is dropped from this node's cache at once.
            let watcher = Arc::clone(&gateway);
            let forget = move |kid: &str| watcher.verifier.forget(kid);
            tokio::spawn(Arc::clone(shared).watch_key_changes(forget, stop_rx.clone()));
        }
        if let Some(broker) = &gateway.broker {
            // Follow signing-key rotations made on other nodes (or by `signing-keys rotate`).
            let (broker, mut stop) = (Arc::clone(broker), stop_rx.clone());
            tokio::spawn(async move {
                let interval = crate::broker::signing::RELOAD_INTERVAL;
                loop {
                    tokio::select! {
                        () = stopped(&mut stop) => break,
                        () = tokio::time::sleep(interval) => {
                            broker.keys.reload_if_older(interval / 2, crate::time::now()).await;
                        }
                    }
                }
            });
        }
        let flusher = tokio::spawn(Arc::clone(&gateway.limiter).run_flusher(USAGE_FLUSH_INTERVAL, stop_rx));
        let mut public = tokio::spawn(public);
        let mut admin = tokio::spawn(admin);

        tokio::select! {
            () = shutdown => {}
            result = &mut public => return flatten(result),
            result = &mut admin => return flatten(result),
        }
        tracing::info!("shutting down: draining requests in flight");
        gateway.draining.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        let grace = gateway.config.shutdown_grace;
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
        if let Some(audit) = &gateway.audit {
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
    let gateway = Gateway::build(config).await?;
    let server = Server::bind(gateway).await?;
    tracing::info!(
        public = %server.public_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %server.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
        scheme = if server.gateway.tls.is_some() { "https" } else { "http" },
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
