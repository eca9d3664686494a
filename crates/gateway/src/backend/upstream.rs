//! A model served by another Open Inference Protocol server (Triton, KServe, MLServer), which
//! Portcullis fronts.
//!
//! The request the upstream receives is built here from the decoded, validated, authorised
//! inputs: nothing of the client's request is forwarded (no credential, no hop-by-hop header, no
//! header at all but our request id), and the upstream's own credential comes from the
//! environment or a file. The response is decoded under the same limits as a request and then
//! goes through the same output minimisation as a local model's. Failures are logged here in
//! full and reach the client as a generic 502 or 504.

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::{BackendError, Pool};
use crate::{
    config::{CredentialSource, ModelConfig, UpstreamConfig},
    oip::{self, DataType, INFERENCE_HEADER_CONTENT_LENGTH, Limits, ModelMetadata, Tensor, TensorMeta},
    request::REQUEST_ID_HEADER,
};

/// How long a model-ready probe may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How much of an upstream's error body is kept for the log.
const ERROR_SNIPPET: usize = 512;

/// One upstream model: a pooled client, the upstream's credential, and its cached metadata.
pub struct Upstream {
    config: UpstreamConfig,
    /// The model's name and version here, and its `[models.output]` spec, checked against
    /// every metadata fetched.
    model: ModelConfig,
    client: reqwest::Client,
    /// The three endpoints, parsed once.
    urls: Urls,
    credential: Option<HeaderValue>,
    /// Bounds requests in flight to the upstream (and so connections) and those waiting.
    slots: Pool,
    limits: Limits,
    metadata: RwLock<Option<Cached>>,
    /// One metadata fetch at a time; the others use the copy it leaves.
    refreshing: tokio::sync::Mutex<()>,
}

struct Urls {
    metadata: reqwest::Url,
    ready: reqwest::Url,
    infer: reqwest::Url,
}

#[derive(Clone)]
struct Cached {
    metadata: Arc<ModelMetadata>,
    fetched: Instant,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.config.url)
            .field("model", &self.config.model)
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client and reads the credential. Does not contact the upstream: it may start
    /// after this server, and its metadata is fetched on first use.
    pub fn new(model: &ModelConfig, config: &UpstreamConfig, limits: Limits) -> Result<Upstream, BackendError> {
        let fail = |message: String| BackendError::Load { model: model.name.clone(), message };
        let credential = match &config.credential {
            None => None,
            Some(source) => Some(read_credential(source, &config.credential_header).map_err(fail)?),
        };
        let client = http_client(
            &config.url,
            config.ca_file.as_deref(),
            config.connect_timeout,
            config.max_connections,
            config.http2,
        )
        .map_err(fail)?
        .timeout(config.timeout)
        .build()
        .map_err(|e| fail(format!("cannot build the upstream client: {e}")))?;
        let base = match &config.version {
            Some(version) => format!("{}/v2/models/{}/versions/{version}", config.url, config.model),
            None => format!("{}/v2/models/{}", config.url, config.model),
        };
        let parse = |suffix: &str| {
            reqwest::Url::parse(&format!("{base}{suffix}"))
                .map_err(|e| fail(format!("upstream.url = '{}' is not a valid URL: {e}", config.url)))
        };
        let urls = Urls { metadata: parse("")?, ready: parse("/ready")?, infer: parse("/infer")? };
        Ok(Upstream {
            urls,
            slots: Pool::new(config.max_connections, config.queue),
            config: config.clone(),
            model: model.clone(),
            client,
            credential,
            limits,
            metadata: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    fn request(&self, builder: reqwest::RequestBuilder, request_id: &str) -> reqwest::RequestBuilder {
        let builder = builder.header(REQUEST_ID_HEADER, request_id);
        match &self.credential {
            Some(value) => builder.header(self.config.credential_header.clone(), value.clone()),
            None => builder,
        }
    }

    /// The model's signature as the upstream reports it (under this server's name and
    /// version), fetched at most once per `metadata_ttl`. If a refresh fails, the last good
    /// copy is used; if there never was one, the error is returned.
    pub async fn metadata(&self, request_id: &str) -> Result<Arc<ModelMetadata>, BackendError> {
        if let Some(cached) = self.cached()
            && cached.fetched.elapsed() < self.config.metadata_ttl
        {
            return Ok(cached.metadata);
        }
        let _refreshing = self.refreshing.lock().await;
        // Someone else may have refreshed while we waited.
        let stale = self.cached();
        if let Some(cached) = &stale
            && cached.fetched.elapsed() < self.config.metadata_ttl
        {
            return Ok(Arc::clone(&cached.metadata));
        }
        match self.fetch_metadata(request_id).await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                if let Ok(mut slot) = self.metadata.write() {
                    *slot = Some(Cached { metadata: Arc::clone(&metadata), fetched: Instant::now() });
                }
                Ok(metadata)
            }
            Err(error) => match stale {
                Some(cached) => {
                    tracing::warn!(model = %self.model.name, %error, "upstream metadata refresh failed; using the last copy");
                    Ok(cached.metadata)
                }
                None => Err(error),
            },
        }
    }

    fn cached(&self) -> Option<Cached> {
        self.metadata.read().ok().and_then(|slot| slot.clone())
    }

    async fn fetch_metadata(&self, request_id: &str) -> Result<ModelMetadata, BackendError> {
        let response =
            self.request(self.client.get(self.urls.metadata.clone()), request_id).send().await.map_err(classify)?;
        let (body, _) = self.read(response).await?;
        let wire: WireMetadata = serde_json::from_slice(&body)
            .map_err(|e| BackendError::Upstream(format!("the upstream's model metadata is not valid: {e}")))?;
        let metadata = ModelMetadata {
            name: self.model.name.clone(),
            versions: vec![self.model.version.clone()],
            platform: wire.platform.unwrap_or_default(),
            inputs: self.signature(wire.inputs, "input")?,
            outputs: self.signature(wire.outputs, "output")?,
        };
        if let Some(spec) = &self.model.output {
            spec.check(&metadata).map_err(|message| {
                BackendError::Upstream(format!("the upstream's outputs do not fit [models.output]: {message}"))
            })?;
        }
        Ok(metadata)
    }

    fn signature(&self, wire: Vec<WireTensorMeta>, what: &str) -> Result<Vec<TensorMeta>, BackendError> {
        if wire.is_empty() || wire.len() > self.limits.max_tensors {
            return Err(BackendError::Upstream(format!(
                "the upstream's metadata lists {} {what}s (1 to {} expected)",
                wire.len(),
                self.limits.max_tensors
            )));
        }
        wire.into_iter()
            .map(|tensor| {
                let datatype = DataType::parse(&tensor.datatype).ok_or_else(|| {
                    BackendError::Upstream(format!(
                        "{what} '{}' has unknown datatype '{}'",
                        tensor.name, tensor.datatype
                    ))
                })?;
                if tensor.shape.len() > self.limits.max_rank || tensor.shape.iter().any(|&dim| dim < -1) {
                    return Err(BackendError::Upstream(format!("{what} '{}' has an invalid shape", tensor.name)));
                }
                Ok(TensorMeta { name: tensor.name, datatype, shape: tensor.shape })
            })
            .collect()
    }

    /// Asks the upstream whether the model is ready; any failure is "no".
    pub async fn ready(&self, request_id: &str) -> bool {
        let request = self.request(self.client.get(self.urls.ready.clone()), request_id).timeout(READY_TIMEOUT);
        match request.send().await {
            Ok(response) => response.status() == StatusCode::OK,
            Err(error) => {
                tracing::warn!(model = %self.model.name, error = %error.without_url(), "upstream ready probe failed");
                false
            }
        }
    }

    /// Runs inputs already validated against [`Upstream::metadata`]; returns every output the
    /// upstream sent, in its order.
    pub async fn infer(&self, request_id: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let _slot = self.slots.admit()?.ready().await?;
        let encoded = oip::encode_request(None, inputs, self.config.binary)
            .map_err(|e| BackendError::Run(format!("encoding the upstream request: {e}")))?;
        let mut builder = self.request(self.client.post(self.urls.infer.clone()), request_id);
        builder = match encoded.json_len {
            Some(json_len) => builder
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(INFERENCE_HEADER_CONTENT_LENGTH, json_len),
            None => builder.header(header::CONTENT_TYPE, "application/json"),
        };
        let response = builder.body(encoded.body).send().await.map_err(classify)?;
        let (body, json_len) = self.read(response).await?;
        oip::decode_response(&body, json_len, &self.limits)
            .map_err(|e| BackendError::Upstream(format!("the upstream's response is not valid: {e}")))
    }

    /// Reads a response body under the size cap; a non-2xx status is an error whose log line
    /// carries the start of the upstream's message.
    async fn read(&self, response: reqwest::Response) -> Result<(bytes::Bytes, Option<usize>), BackendError> {
        let status = response.status();
        let json_len = response
            .headers()
            .get(INFERENCE_HEADER_CONTENT_LENGTH)
            .map(|value| {
                value.to_str().ok().and_then(|text| text.parse::<usize>().ok()).ok_or_else(|| {
                    BackendError::Upstream("the upstream sent an invalid Inference-Header-Content-Length".into())
                })
            })
            .transpose()?;
        let limit = if status.is_success() { self.config.max_response_bytes } else { ERROR_SNIPPET };
        let collected = Limited::new(reqwest::Body::from(response), limit).collect().await;
        let body = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() && !status.is_success() => {
                bytes::Bytes::from_static(b"(long error body)")
            }
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(BackendError::Upstream(format!(
                    "the upstream's response exceeds upstream.max_response_bytes ({limit})"
                )));
            }
            Err(error) => return Err(classify_body(&*error)),
        };
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(ERROR_SNIPPET)]).into_owned();
            return Err(BackendError::Upstream(format!("the upstream answered {status}: {snippet}")));
        }
        Ok((body, json_len))
    }
}

#[derive(Deserialize)]
struct WireMetadata {
    #[serde(default)]
    platform: Option<String>,
    inputs: Vec<WireTensorMeta>,
    outputs: Vec<WireTensorMeta>,
}

#[derive(Deserialize)]
struct WireTensorMeta {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

/// A transport error as the client will see it: a timeout (504) or an unreachable or broken
/// upstream (502). The URL is left out of the message; the model name says which upstream.
fn classify(error: reqwest::Error) -> BackendError {
    if error.is_timeout() {
        BackendError::UpstreamTimeout
    } else if error.is_connect() {
        BackendError::UpstreamUnavailable(error.without_url().to_string())
    } else {
        BackendError::Upstream(error.without_url().to_string())
    }
}

fn classify_body(error: &(dyn std::error::Error + 'static)) -> BackendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(error) = current.downcast_ref::<reqwest::Error>()
            && error.is_timeout()
        {
            return BackendError::UpstreamTimeout;
        }
        source = current.source();
    }
    BackendError::Upstream(format!("reading the upstream's response: {error}"))
}

/// A client for an upstream at `url`: connection pool, timeouts, TLS of ours (ring, our roots or
/// `ca_file`; a plain-HTTP upstream gets one that trusts nothing), no redirects, no proxy from
/// the environment (a proxy would see the upstream's credential). The caller adds a timeout.
pub fn http_client(
    url: &str,
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    max_connections: usize,
    http2: bool,
) -> Result<reqwest::ClientBuilder, String> {
    let builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(max_connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
    let tls = if url.starts_with("https://") {
        crate::tls::client_config(ca_file, http2).map_err(|e| format!("upstream TLS: {e}"))?
    } else {
        crate::tls::trust_nothing_client_config().map_err(|e| format!("upstream TLS: {e}"))?
    };
    let builder = builder.tls_backend_preconfigured(tls);
    Ok(if http2 {
        if url.starts_with("http://") { builder.http2_prior_knowledge() } else { builder }
    } else {
        builder.http1_only()
    })
}

/// Reads the upstream's credential and makes the header value, marked sensitive so that no
/// debug output shows it. For `Authorization` the value is sent as `Bearer <credential>`.
pub(crate) fn read_credential(
    source: &CredentialSource,
    header_name: &http::HeaderName,
) -> Result<HeaderValue, String> {
    let secret = match source {
        CredentialSource::Env(name) => std::env::var(name)
            .map_err(|_| format!("upstream.credential_env names {name}, which is not set (or not UTF-8)"))?,
        CredentialSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read upstream.credential_file {}: {e}", path.display()))?,
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("the upstream credential is empty".into());
    }
    let text = if header_name == header::AUTHORIZATION && !secret.contains(' ') {
        format!("Bearer {secret}")
    } else {
        secret.to_owned()
    };
    let mut value =
        HeaderValue::from_str(&text).map_err(|_| "the upstream credential has characters a header cannot carry")?;
    value.set_sensitive(true);
    Ok(value)
}
