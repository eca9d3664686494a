//! What the server holds: the [`Gateway`], put together once by its [`GatewayBuilder`].
//!
//! Everything a request may need lives here, behind private fields. Middleware does not take
//! the whole gateway: each takes only its own part (the [`Authenticator`], the broker's
//! [`Exchange`]), handed out through axum's `FromRef`, so the lower modules never learn what
//! the server is made of. This is the composition root: it may use every module below it, and
//! none of them uses it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::extract::FromRef;
use tokio::sync::Semaphore;

use crate::{
    audit::{AuditError, AuditLog},
    authn::{
        Authenticator,
        api_key::{KeyVerifier, PEPPER_ENV, Pepper, PepperError},
    },
    backend::{self, BackendError, Pool, Registry},
    broker::{Broker, exchange::Exchange, idp::Issuers},
    config::Config,
    keys::Keyring,
    limits::Limiter,
    llm::{LlmRegistry, routes::Llm},
    metrics::Metrics,
    shutdown::stopped,
    store::{Store, StoreError, sqlite::SqliteStore},
    tls::Tls,
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
    Bind { addr: std::net::SocketAddr, error: std::io::Error },
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
    /// A builder was asked to build without a part it cannot make itself.
    #[error("the gateway needs {0}")]
    Missing(&'static str),
}

/// Everything a request may need, shared by all requests.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    registry: Registry,
    pool: Pool,
    authenticator: Authenticator,
    exchange: Exchange,
    llm: Llm,
    metrics: Arc<Metrics>,
    /// The audit log; `None` only when the config disables it.
    audit: Option<AuditLog>,
    /// Global cap on requests in flight (load shedding beyond it).
    in_flight: Semaphore,
    /// The public listener's TLS, when configured.
    tls: Option<Arc<Tls>>,
    /// Rate limits, concurrency and quotas.
    limiter: Arc<Limiter>,
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

/// Puts a [`Gateway`] together. [`GatewayBuilder::open`] makes every part from the config
/// (the `serve` command); tests and benchmarks give some parts themselves and [`build`] the rest.
///
/// [`build`]: GatewayBuilder::build
#[must_use]
pub struct GatewayBuilder {
    config: Config,
    registry: Option<Registry>,
    keyring: Option<(Arc<dyn Store>, Pepper)>,
    limiter: Option<Arc<Limiter>>,
    broker: Option<Arc<Broker>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("models", &self.registry.as_ref().map(Registry::len))
            .field("store", &self.keyring.is_some())
            .field("limiter", &self.limiter.is_some())
            .field("broker", &self.broker.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder { config, registry: None, keyring: None, limiter: None, broker: None }
    }
}

impl GatewayBuilder {
    /// The models to serve, already loaded and checked.
    pub fn models(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The key store and the pepper its key hashes were made with.
    pub fn store(mut self, store: Arc<dyn Store>, pepper: Pepper) -> Self {
        self.keyring = Some((store, pepper));
        self
    }

    /// A limiter made by the caller (one shared by several gateways, say).
    pub fn limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// A token broker made by the caller.
    pub fn broker(mut self, broker: Arc<Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Makes every part not given from the config: opens the store and pepper, loads and checks
    /// every model, and opens the token broker when `[broker]` is configured.
    pub async fn open(mut self) -> Result<Arc<Gateway>, StartError> {
        if self.keyring.is_none() {
            self.keyring = Some(open_keyring(&self.config).await?);
        }
        if self.registry.is_none() {
            self.registry = Some(backend::load_models(&self.config)?);
        }
        let limiter = self.limiter_or_default()?;
        if self.broker.is_none()
            && let (Some(broker), Some((store, _))) = (&self.config.broker, &self.keyring)
        {
            let shared = limiter.shared().cloned();
            let opened = Broker::open(broker.clone(), Arc::clone(store), shared, crate::time::now()).await?;
            self.broker = Some(Arc::new(opened));
        }
        self.build()
    }

    /// The limiter given, or one made from the config and the store.
    fn limiter_or_default(&mut self) -> Result<Arc<Limiter>, StartError> {
        if let Some(limiter) = &self.limiter {
            return Ok(Arc::clone(limiter));
        }
        let (store, _) = self.keyring.as_ref().ok_or(StartError::Missing("a key store"))?;
        let limiter =
            Arc::new(Limiter::new(self.config.limits.clone(), Arc::clone(store)).map_err(StartError::Limits)?);
        self.limiter = Some(Arc::clone(&limiter));
        Ok(limiter)
    }

    /// Puts the gateway together from the parts given, opening the audit log. The store and
    /// the models must have been given; the limiter is made from the config if it was not.
    /// Must run inside the async runtime.
    pub fn build(mut self) -> Result<Arc<Gateway>, StartError> {
        let limiter = self.limiter_or_default()?;
        let GatewayBuilder { config, registry, keyring, broker, .. } = self;
        let registry = registry.ok_or(StartError::Missing("its models"))?;
        let (store, pepper) = keyring.ok_or(StartError::Missing("a key store"))?;
        let metrics = Arc::new(Metrics::new());
        metrics.set_models(registry.len());
        let audit = match &config.audit {
            Some(audit) => Some(AuditLog::open(audit)?),
            None => {
                tracing::warn!("the audit log is disabled (audit.enabled = false): requests leave no record");
                None
            }
        };
        let tls = config.tls.as_ref().map(Tls::load).transpose().map_err(StartError::Tls)?.map(Arc::new);
        let issuers = Arc::new(Issuers::new(&config.identity_providers).map_err(StartError::Issuers)?);
        let verifier = KeyVerifier::new(store, pepper, config.key_cache_ttl);
        let authenticator = Authenticator::new(
            &config,
            verifier,
            Arc::clone(&issuers),
            broker.clone(),
            Arc::clone(&limiter),
            Arc::clone(&metrics),
        );
        let exchange = Exchange { broker, issuers, limiter: Arc::clone(&limiter) };
        let llm = Llm {
            registry: Arc::new(LlmRegistry::load(&config)?),
            max_body_bytes: config.max_body_bytes,
            limiter: Arc::clone(&limiter),
        };
        Ok(Arc::new(Gateway {
            tls,
            limiter,
            authenticator,
            exchange,
            llm,
            pool: Pool::new(config.inference.threads, config.inference.queue),
            in_flight: Semaphore::new(config.max_concurrency),
            metrics,
            audit,
            registry,
            config,
            draining: AtomicBool::new(false),
        }))
    }
}

impl Gateway {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The blocking pool models run on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn verifier(&self) -> &KeyVerifier {
        self.authenticator.verifier()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The global cap on requests in flight.
    pub fn in_flight(&self) -> &Semaphore {
        &self.in_flight
    }

    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// The token broker, when `[broker]` is configured.
    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.exchange.broker.as_ref()
    }

    pub fn keyring(&self, pepper: Pepper) -> Keyring {
        Keyring::new(Arc::clone(self.verifier().store()), pepper, self.config.audit.clone())
    }

    /// Ready when not draining and the store answers: a node that cannot check keys must not
    /// receive traffic.
    pub async fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && self.audit.as_ref().is_none_or(AuditLog::accepting)
            && self.verifier().store().ping().await.is_ok()
    }

    /// Marks the node not ready, for the drain at shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Starts the work that runs beside requests until `stop`: following key changes made by
    /// other processes, TLS and signing-key reloads, and writing counted usage to the store.
    /// Returns the usage writer, to be awaited after the drain.
    pub fn spawn_background(
        self: &Arc<Self>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        if let Some(tls) = &self.tls {
            tokio::spawn(Arc::clone(tls).watch(stop.clone()));
        }
        {
            // A key revoked or changed by any process leaves the cache within a second, with
            // or without Redis.
            let (follower, stop) = (Arc::clone(self.authenticator.verifier()), stop.clone());
            tokio::spawn(async move {
                follower.follow_key_changes(crate::authn::api_key::KEY_CHANGES_INTERVAL, stop).await;
            });
        }
        if let Some(shared) = self.limiter.shared() {
            // A key revoked or changed on any node is dropped from this node's cache at once.
            let watcher = Arc::clone(self.authenticator.verifier());
            let forget = move |kid: &str| watcher.forget(kid);
            tokio::spawn(Arc::clone(shared).watch_key_changes(forget, stop.clone()));
        }
        if let Some(broker) = self.broker() {
            // Follow signing-key rotations made on other nodes (or by `signing-keys rotate`).
            let (broker, mut stop) = (Arc::clone(broker), stop.clone());
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
        tokio::spawn(Arc::clone(&self.limiter).run_flusher(USAGE_FLUSH_INTERVAL, stop.clone()))
    }
}

impl FromRef<Arc<Gateway>> for Authenticator {
    fn from_ref(gateway: &Arc<Gateway>) -> Authenticator {
        gateway.authenticator.clone()
    }
}

impl FromRef<Arc<Gateway>> for Llm {
    fn from_ref(gateway: &Arc<Gateway>) -> Llm {
        gateway.llm.clone()
    }
}

impl FromRef<Arc<Gateway>> for Exchange {
    fn from_ref(gateway: &Arc<Gateway>) -> Exchange {
        gateway.exchange.clone()
    }
}
