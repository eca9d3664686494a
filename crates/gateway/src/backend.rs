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

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::Semaphore;

use crate::{
    authz::Grant,
    config::{Config, ModelConfig, Runtime},
    oip::{InferRequest, InputPolicy, ModelMetadata, Tensor},
};

/// Why a model could not run or load. Logged in full; clients see a generic error.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model '{model}': {message}")]
    Load { model: String, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the inference queue is full")]
    Busy,
}

/// Runs one model. Implementations are synchronous and CPU-bound; [`Model::infer`] calls them on
/// the blocking pool.
pub trait Backend: Send + Sync + 'static {
    /// The model's signature as the protocol describes it.
    fn signature(&self) -> (&[crate::oip::TensorMeta], &[crate::oip::TensorMeta]);

    /// Runs the model on inputs already validated against the signature, in any order. Returns
    /// every output, in the model's order.
    fn run(&self, grant: &Grant, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
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
        let admitted = Arc::clone(&self.admitted).try_acquire_owned().map_err(|_| BackendError::Busy)?;
        let running = Arc::clone(&self.running).acquire_owned().await.map_err(|_| BackendError::Busy)?;
        #[expect(clippy::disallowed_methods, reason = "this is the bounded pool the lint points to")]
        let handle = tokio::task::spawn_blocking(move || {
            let result = work();
            drop((running, admitted));
            result
        });
        handle.await.map_err(|_| BackendError::Run("the inference task panicked".into()))?
    }
}

/// A loaded, checked model, ready to serve.
pub struct Model {
    pub config: ModelConfig,
    pub metadata: ModelMetadata,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.config.name).field("runtime", &self.config.runtime).finish()
    }
}

impl Model {
    pub(crate) fn new(config: ModelConfig, backend: Arc<dyn Backend>) -> Model {
        let (inputs, outputs) = backend.signature();
        let metadata = ModelMetadata {
            name: config.name.clone(),
            versions: vec![config.version.clone()],
            platform: "onnx_onnxv1".into(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        };
        Model { config, metadata, backend }
    }

    pub fn input_policy(&self, max_batch: u64) -> InputPolicy {
        InputPolicy { allow_non_finite: self.config.allow_non_finite, max_batch }
    }

    /// Runs the model on the pool. `request` must have been validated against the signature.
    pub async fn infer(&self, pool: &Pool, grant: Grant, request: InferRequest) -> Result<Vec<Tensor>, BackendError> {
        let backend = Arc::clone(&self.backend);
        pool.run(move || backend.run(&grant, request.inputs)).await
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
        let backend: Arc<dyn Backend> = match model_config.runtime {
            Runtime::Tract => Arc::new(tract::TractBackend::load(model_config)?),
            Runtime::Onnxruntime => Arc::new(onnxruntime::OrtBackend::load(
                model_config,
                config.inference.onnxruntime_library.as_deref(),
                config.inference.threads,
            )?),
        };
        let model = Model::new(model_config.clone(), backend);
        if let Some(spec) = &model_config.output {
            spec.check(&model.metadata).map_err(|message| load_error(model_config, message))?;
        } else {
            tracing::warn!(model = %model_config.name, "model has no [models.output] table: callers get its raw outputs");
        }
        if let Some(path) = &model_config.checks {
            let cases = check::run(&model, path, &config.inference.limits)?;
            tracing::info!(model = %model_config.name, cases, "model agrees with its known answers");
        } else {
            tracing::warn!(model = %model_config.name, "model has no checks file: its outputs are not verified at load");
        }
        models.insert(model_config.name.clone(), Arc::new(model));
    }
    Ok(Registry { models })
}

fn load_error(model: &ModelConfig, message: impl Into<String>) -> BackendError {
    BackendError::Load { model: model.name.clone(), message: message.into() }
}
