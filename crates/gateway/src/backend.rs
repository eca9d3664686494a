//! Where predictions come from.
//!
//! A [`Backend`] runs one model synchronously; it cannot be called without a [`Grant`], which only
//! `authz` can make. [`Model`] wraps a backend with its configuration and signature and runs it on
//! the shared [`Pool`], a bounded set of blocking threads, so inference never blocks the async
//! runtime and a flood of requests queues (up to a bound) instead of spawning without end.
//!
//! Models are loaded once at start ([`load_models`]): loaded, optimised, and then checked against
//! the known input/output pairs shipped beside them. A model that fails to load or disagrees with
//! its checks stops the server; it is never served on trust.

mod check;
pub mod onnxruntime;
pub mod tract;
pub mod upstream;

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    authz::{Guarded, Infer},
    config::{Config, ModelConfig, ModelSource, Runtime},
    oip::{InferRequest, InputPolicy, ModelMetadata, Tensor},
};

/// A grant for one of the models here: the only key to [`Backend::run`] and [`infer`].
pub type Grant<P> = crate::authz::Grant<P, Model>;

/// Why a model could not run or load. Logged in full; clients see a generic error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model '{model}': {message}")]
    Load { model: String, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the inference queue is full")]
    Busy,
    /// The upstream could not be reached (502 `upstream_unavailable`).
    #[error("upstream unreachable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream answered with an error or nonsense (502 `upstream_error`).
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The upstream did not answer in time (504 `upstream_timeout`).
    #[error("upstream timed out")]
    UpstreamTimeout,
}

/// Runs one model. Implementations are synchronous and CPU-bound; [`Model::infer`] calls them on
/// the blocking pool.
pub trait Backend: Send + Sync + 'static {
    /// The model's signature as the protocol describes it.
    fn signature(&self) -> (&[crate::oip::TensorMeta], &[crate::oip::TensorMeta]);

    /// Runs the model on inputs already validated against the signature, in any order. Returns
    /// every output, in the model's order.
    fn run(&self, grant: &Grant<Infer>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
}

/// Bounds the blocking work: at most `threads` inferences run at once and at most `queue` wait.
#[derive(Debug)]
pub struct Pool {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

impl Pool {
    pub fn new(threads: usize, queue: usize) -> Pool {
        Pool { running: Arc::new(Semaphore::new(threads)), admitted: Arc::new(Semaphore::new(threads + queue)) }
    }

    /// Runs `work` on a blocking thread once a slot is free; refuses at once when the queue is
    /// full, so overload turns into fast 503s instead of growing latency and memory.
    ///
    /// The permits move into the blocking task: if the caller gives up (a timeout, a client that
    /// went away), the slot stays taken until the work really ends, so the bound always holds.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let slot = self.admit()?.ready().await?;
        #[expect(clippy::disallowed_methods, reason = "this is the bounded pool the lint points to")]
        let handle = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(slot);
            result
        });
        handle.await.map_err(|_| BackendError::Run("the inference task panicked".into()))?
    }

    /// A place in the queue, or [`BackendError::Busy`] at once when the queue is full.
    pub fn admit(&self) -> Result<Admitted, BackendError> {
        let admitted = Arc::clone(&self.admitted).try_acquire_owned().map_err(|_| BackendError::Busy)?;
        Ok(Admitted { admitted, running: Arc::clone(&self.running) })
    }
}

/// A place in a [`Pool`]'s queue.
#[derive(Debug)]
pub struct Admitted {
    admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

impl Admitted {
    /// Waits for a running slot. The returned [`Slot`] holds both permits until dropped.
    pub async fn ready(self) -> Result<Slot, BackendError> {
        let running = self.running.acquire_owned().await.map_err(|_| BackendError::Busy)?;
        Ok(Slot { _running: running, _admitted: self.admitted })
    }
}

/// A running slot in a [`Pool`]; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    _running: OwnedSemaphorePermit,
    _admitted: OwnedSemaphorePermit,
}

/// A model ready to serve: run here (loaded and checked) or by an upstream OIP server.
pub struct Model {
    pub config: ModelConfig,
    source: Source,
}

enum Source {
    /// `inline_up_to`: requests with at most this many input elements run on the calling
    /// thread (the checks showed them to take microseconds, less than a hand-off to the pool).
    Local {
        metadata: Arc<ModelMetadata>,
        backend: Arc<dyn Backend>,
        inline_up_to: u64,
    },
    Upstream(Box<upstream::Upstream>),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Local { .. } => "local",
            Source::Upstream(_) => "upstream",
        };
        f.debug_struct("Model").field("name", &self.config.name).field("source", &source).finish()
    }
}

impl Guarded for Model {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn public(&self) -> bool {
        self.config.public
    }

    fn default_output(&self) -> crate::minimise::OutputPolicy {
        self.config.output_policy
    }

    fn can_narrow_output(&self) -> bool {
        self.config.output.is_some()
    }
}

impl Model {
    pub(crate) fn new(config: ModelConfig, backend: Arc<dyn Backend>) -> Model {
        let (inputs, outputs) = backend.signature();
        let metadata = Arc::new(ModelMetadata {
            name: config.name.clone(),
            versions: vec![config.version.clone()],
            platform: "onnx_onnxv1".into(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        });
        Model { config, source: Source::Local { metadata, backend, inline_up_to: 0 } }
    }

    pub(crate) fn upstream(config: ModelConfig, upstream: upstream::Upstream) -> Model {
        Model { config, source: Source::Upstream(Box::new(upstream)) }
    }

    pub fn input_policy(&self, max_batch: u64) -> InputPolicy {
        InputPolicy { allow_non_finite: self.config.allow_non_finite, max_batch }
    }

    /// The model's full signature (before any output policy). For an upstream model this may
    /// mean asking the upstream.
    pub async fn metadata(&self, request_id: &str) -> Result<Arc<ModelMetadata>, BackendError> {
        match &self.source {
            Source::Local { metadata, .. } => Ok(Arc::clone(metadata)),
            Source::Upstream(upstream) => upstream.metadata(request_id).await,
        }
    }

    /// A local model is ready once loaded; an upstream model when the upstream says so.
    pub async fn ready(&self, request_id: &str) -> bool {
        match &self.source {
            Source::Local { .. } => true,
            Source::Upstream(upstream) => upstream.ready(request_id).await,
        }
    }

    /// The signature of a local model, known since load.
    fn local_metadata(&self) -> Option<&ModelMetadata> {
        match &self.source {
            Source::Local { metadata, .. } => Some(metadata),
            Source::Upstream(_) => None,
        }
    }
}

/// Runs the model `grant` was given for: a local one on the pool, an upstream one over its
/// client. The model comes from the grant, so a grant for one model cannot run another, and only
/// a grant to infer can run one. `request` must have been validated against the model's
/// metadata.
pub async fn infer(
    grant: Grant<Infer>,
    pool: &Pool,
    request: InferRequest,
    request_id: &str,
) -> Result<Vec<Tensor>, BackendError> {
    let model = Arc::clone(grant.model());
    match &model.source {
        Source::Local { backend, inline_up_to, .. } => {
            if input_elements(&request.inputs) <= *inline_up_to {
                // Still bounded by the pool's slots, without the thread hand-off.
                let _slot = pool.admit()?.ready().await?;
                return backend.run(&grant, request.inputs);
            }
            let backend = Arc::clone(backend);
            pool.run(move || backend.run(&grant, request.inputs)).await
        }
        Source::Upstream(upstream) => upstream.infer(request_id, &request.inputs).await,
    }
}

/// The models a server hosts, by name.
#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<String, Arc<Model>>,
}

impl Registry {
    /// A registry of models already loaded (tests build their own backends with it).
    #[cfg(test)]
    pub(crate) fn from_models(models: Vec<Model>) -> Registry {
        Registry { models: models.into_iter().map(|model| (model.config.name.clone(), Arc::new(model))).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Loads, optimises and checks every configured model. Any failure stops the server: the error
/// names the model and says what went wrong.
pub fn load_models(config: &Config) -> Result<Registry, BackendError> {
    let mut models = BTreeMap::new();
    for model_config in &config.models {
        let (path, runtime) = match &model_config.source {
            ModelSource::File { path, runtime } => (path, *runtime),
            ModelSource::Upstream(upstream) => {
                let client = upstream::Upstream::new(model_config, upstream, config.inference.limits)?;
                tracing::info!(model = %model_config.name, upstream = %upstream.url, "model is served by an upstream");
                if model_config.output.is_none() {
                    tracing::warn!(model = %model_config.name, "model has no [models.output] table: callers get its raw outputs");
                }
                models.insert(model_config.name.clone(), Arc::new(Model::upstream(model_config.clone(), client)));
                continue;
            }
        };
        let backend: Arc<dyn Backend> = match runtime {
            Runtime::Tract => Arc::new(tract::TractBackend::load(model_config, path)?),
            Runtime::Onnxruntime => Arc::new(onnxruntime::OrtBackend::load(
                model_config,
                path,
                config.inference.onnxruntime_library.as_deref(),
                config.inference.threads,
            )?),
        };
        let model = Model::new(model_config.clone(), backend);
        let metadata = model.local_metadata().ok_or_else(|| load_error(model_config, "no signature"))?;
        if let Some(spec) = &model_config.output {
            spec.check(metadata).map_err(|message| load_error(model_config, message))?;
        } else {
            tracing::warn!(model = %model_config.name, "model has no [models.output] table: callers get its raw outputs");
        }
        let mut model = Arc::new(model);
        if let Some(path) = &model_config.checks {
            let checked = check::run(&model, path, &config.inference.limits)?;
            let inline = checked.slowest <= config.inference.inline_below;
            // The check's grants are gone: the model has one owner again.
            if let (true, Some(Source::Local { inline_up_to, .. })) =
                (inline, Arc::get_mut(&mut model).map(|model| &mut model.source))
            {
                *inline_up_to = checked.largest_elements;
            }
            tracing::info!(
                model = %model_config.name,
                cases = checked.cases,
                slowest_us = checked.slowest.as_micros() as u64,
                inline,
                "model agrees with its known answers"
            );
        } else {
            tracing::warn!(model = %model_config.name, "model has no checks file: its outputs are not verified at load");
        }
        models.insert(model_config.name.clone(), model);
    }
    Ok(Registry { models })
}

/// Input elements in a request: the measure of its size for choosing where it runs.
pub(crate) fn input_elements(inputs: &[Tensor]) -> u64 {
    inputs.iter().map(|input| input.data.len() as u64).sum()
}

fn load_error(model: &ModelConfig, message: impl Into<String>) -> BackendError {
    BackendError::Load { model: model.name.clone(), message: message.into() }
}
