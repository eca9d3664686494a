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

use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    audit::{AuditError, AuditLog},
    authn::api_key::{KeyVerifier, PEPPER_ENV, Pepper, PepperError},
    backend::{self, BackendError, Pool, Registry},
    config::Config,
    keys::Keyring,
    metrics::Metrics,
    router,
    store::{Store, StoreError, sqlite::SqliteStore},
};

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
    draining: AtomicBool,
}

/// Opens the store named by the config (migrating it) and loads the pepper. Shared by `serve`
/// and the `keys` commands.
pub async fn open_keyring(config: &Config) -> Result<(Arc<dyn Store>, Pepper), StartError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.sqlite).await?);
    let env = std::env::var(PEPPER_ENV).ok();
    let pepper = Pepper::load(&config.pepper_file, env.as_deref(), true)?;
    Ok((store, pepper))
}

impl Gateway {
    /// Opens the store, loads the pepper, and loads and checks every model.
    pub async fn build(config: Config) -> Result<Arc<Gateway>, StartError> {
        let (store, pepper) = open_keyring(&config).await?;
        let registry = backend::load_models(&config)?;
        Gateway::assemble(config, registry, store, pepper)
    }

    /// Puts a gateway together from parts already loaded (tests use this with their own store),
    /// opening the audit log. Must run inside the async runtime.
    pub fn assemble(
        config: Config,
        registry: Registry,
        store: Arc<dyn Store>,
        pepper: Pepper,
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
        Ok(Arc::new(Gateway {
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
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let public = axum::serve(
            self.public,
            router::public(Arc::clone(&gateway)).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()));
        let admin = axum::serve(self.admin, router::admin(Arc::clone(&gateway)).into_make_service())
            .with_graceful_shutdown(stopped(stop_rx));
        let mut public = tokio::spawn(async move { public.await });
        let mut admin = tokio::spawn(async move { admin.await });

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
        // Requests are done (or cut off): seal the log with a final checkpoint.
        if let Some(audit) = &gateway.audit {
            audit.close().await;
        }
        tracing::info!("stopped");
        result
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
