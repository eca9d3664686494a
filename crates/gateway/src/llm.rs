//! Language models behind OpenAI-compatible servers (vLLM, llama.cpp's server, TGI, hosted
//! APIs) and Ollama, fronted with the same keys, allow-lists, limits and audit as OIP models.
//!
//! A request's body is read once and strictly ([`body`]); the model it names is looked up by
//! exactly that name and authorised like any model (`authz`), so a key's allow-list holds
//! whatever the spelling; the upstream gets its own model name and credential, never the
//! client's; what comes back is cleaned of the upstream's identity and passed on, streams event
//! by event ([`relay`]). [`routes`] are the handlers.

pub mod body;
pub mod redact;
pub mod relay;
pub mod routes;
pub mod tokens;

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use axum::{body::Body, response::Response};
use http::{HeaderValue, StatusCode, header};

use crate::{
    authz::{Grant, Guarded, Infer},
    backend::{BackendError, Pool},
    config::{Config, LlmApi, LlmConfig},
    error::ApiError,
    limits::budget::Reservation,
    minimise::OutputPolicy,
    request::{LlmFacts, REQUEST_ID_HEADER, TokenUsage},
};
use body::{LlmRequest, Route};
use relay::{Deadlines, Framing, Relay, Scrub, StreamFault};

/// What Ollama's `show` may tell a client: what the model is and can do, not where it lives.
const SHOW_FIELDS: &[&str] = &["details", "capabilities", "model_info", "modified_at"];

/// A grant to run one language model.
pub type LlmGrant = Grant<Infer, LlmModel>;

/// A language model ready to call: its config, a pooled client and its credential.
pub struct LlmModel {
    pub config: LlmConfig,
    client: reqwest::Client,
    /// `Authorization: Bearer <credential>`, marked sensitive.
    credential: Option<HeaderValue>,
    /// At most `max_connections` requests at once, `queue` more waiting.
    slots: Pool,
    /// Counts the tokens of prompts and of answers whose usage the upstream does not report.
    pub tokens: tokens::TokenCounter,
}

/// What a request's answer must get back: the personal data taken out of its prompt.
pub type Restore = Option<Arc<redact::Redaction>>;

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("name", &self.config.name)
            .field("api", &self.config.api)
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Guarded for LlmModel {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn public(&self) -> bool {
        self.config.public
    }

    fn default_output(&self) -> OutputPolicy {
        OutputPolicy::Raw
    }

    /// A key limited to labels or scores has no business with generated text: refused.
    fn can_narrow_output(&self) -> bool {
        false
    }
}

impl LlmModel {
    /// Builds the client and reads the credential; does not contact the upstream.
    pub fn new(config: &LlmConfig) -> Result<LlmModel, BackendError> {
        let fail = |message: String| BackendError::Load { model: config.name.clone(), message };
        let credential = match &config.credential {
            None => None,
            Some(source) => {
                Some(crate::backend::upstream::read_credential(source, &header::AUTHORIZATION).map_err(fail)?)
            }
        };
        let client = crate::backend::upstream::http_client(
            &config.url,
            config.ca_file.as_deref(),
            config.connect_timeout,
            config.max_connections,
            false,
        )
        .map_err(fail)?
        .build()
        .map_err(|e| fail(format!("cannot build the upstream client: {e}")))?;
        Ok(LlmModel {
            config: config.clone(),
            client,
            credential,
            slots: Pool::new(config.max_connections, config.queue),
            tokens: match &config.tokenizer {
                Some(path) => tokens::TokenCounter::load(path).map_err(fail)?,
                None => tokens::TokenCounter::estimate(),
            },
        })
    }

    fn url(&self, route: Route) -> String {
        let path = match (self.config.api, route) {
            (LlmApi::Openai, Route::ChatCompletions) => "/chat/completions",
            (LlmApi::Openai, Route::Completions) => "/completions",
            (LlmApi::Openai, Route::Embeddings) => "/embeddings",
            (LlmApi::Openai, Route::Responses) => "/responses",
            (LlmApi::Ollama, Route::OllamaChat) => "/api/chat",
            (LlmApi::Ollama, Route::OllamaGenerate) => "/api/generate",
            (LlmApi::Ollama, Route::OllamaEmbed) => "/api/embed",
            (LlmApi::Ollama, Route::OllamaShow) => "/api/show",
            // Checked by the caller: a route of the other API never gets here.
            _ => "/",
        };
        format!("{}{path}", self.config.url)
    }

    /// Whether this model answers `route` (each upstream speaks one API).
    pub fn serves(&self, route: Route) -> bool {
        route.is_ollama() == (self.config.api == LlmApi::Ollama)
    }
}

/// The language models of the config, by client-facing name.
#[derive(Debug, Default)]
pub struct LlmRegistry {
    models: BTreeMap<String, Arc<LlmModel>>,
    /// The personal-data detector, when a model redacts prompts (built once, shared).
    redactor: Option<redact::Redactor>,
}

impl LlmRegistry {
    pub fn load(config: &Config) -> Result<LlmRegistry, BackendError> {
        let mut models = BTreeMap::new();
        for llm in &config.llm {
            models.insert(llm.name.clone(), Arc::new(LlmModel::new(llm)?));
        }
        let redactor = config.llm.iter().any(|llm| llm.redact_prompts).then(redact::Redactor::new);
        Ok(LlmRegistry { models, redactor })
    }

    /// Takes the personal data out of `request`'s prompt if `model` says so: the counts per
    /// kind for the audit record, and what the answer must get back (`restore_redacted`).
    pub fn redact(
        &self,
        model: &LlmModel,
        request: &mut LlmRequest,
    ) -> (std::collections::BTreeMap<String, u32>, Restore) {
        let (true, Some(redactor)) = (model.config.redact_prompts, &self.redactor) else {
            return (std::collections::BTreeMap::new(), None);
        };
        let redaction = redactor.redact(request.route, &mut request.body);
        let counts = redaction.counts().iter().map(|(kind, count)| ((*kind).to_owned(), *count)).collect();
        let restore = (model.config.restore_redacted && !redaction.is_empty()).then(|| Arc::new(redaction));
        (counts, restore)
    }

    /// The model named exactly `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LlmModel>> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LlmModel>> {
        self.models.values()
    }
}

/// Calls the model `grant` is for with `request`, and answers the client: a whole answer, or a
/// stream passed on as it comes. Nothing of the client's request but its body (checked) reaches
/// the upstream, and nothing of the upstream's answer but its cleaned body reaches the client.
pub async fn call(
    grant: &LlmGrant,
    request: LlmRequest,
    request_id: &str,
    mut meter: Meter,
    restore: Restore,
) -> Result<Response, ApiError> {
    let model = Arc::clone(grant.model());
    let config = &model.config;
    let busy = |_| ApiError::busy("the model is busy; try again shortly");
    let slot = model.slots.admit().map_err(busy)?.ready().await.map_err(busy)?;
    let route = request.route;
    let stream = request.stream;
    let started = Instant::now();
    let scrub = Scrub {
        model: config.name.clone(),
        id: format!("{}-{request_id}", if route == Route::Completions { "cmpl" } else { "chatcmpl" }),
        logprobs: config.logprobs,
        keep_only: (route == Route::OllamaShow).then_some(SHOW_FIELDS),
        hide_usage: stream && !request.stream_usage,
        restore: restore.clone(),
    };
    let mut upstream = model
        .client
        .post(model.url(route))
        .header(header::CONTENT_TYPE, "application/json")
        .header(REQUEST_ID_HEADER, request_id)
        .body(request.into_upstream(&config.model));
    if let Some(credential) = &model.credential {
        upstream = upstream.header(header::AUTHORIZATION, credential.clone());
    }
    // The head must come within the stall timeout for a stream, the whole timeout otherwise.
    let head_wait = if stream { config.stall_timeout.min(config.timeout) } else { config.timeout };
    let response = match tokio::time::timeout(head_wait, upstream.send()).await {
        Err(_) => {
            tracing::warn!(model = %config.name, "LLM upstream did not answer in time");
            return Err(ApiError::upstream_timeout());
        }
        Ok(Err(error)) => {
            tracing::warn!(model = %config.name, error = %error.without_url(), "LLM upstream unreachable");
            return Err(ApiError::upstream_unavailable());
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        return Err(refused_by_upstream(&config.name, status, response).await);
    }
    meter.answered = true;
    if !stream {
        let left = config.timeout.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, read_limited(response, config.max_response_bytes)).await {
            Err(_) => return Err(ApiError::upstream_timeout()),
            Ok(Err(message)) => {
                tracing::warn!(model = %config.name, %message, "LLM upstream answer unreadable");
                return Err(ApiError::upstream_error());
            }
            Ok(Ok(bytes)) => bytes,
        };
        let Some((clean, usage, generated)) = scrub.answer(&bytes) else {
            tracing::warn!(model = %config.name, "LLM upstream answered with something that is not a JSON object");
            return Err(ApiError::upstream_error());
        };
        meter.generated(&generated);
        if let Some(usage) = usage {
            meter.reported(usage);
        }
        drop(slot);
        return Ok(json_response(StatusCode::OK, "application/json", Body::from(clean)));
    }
    let framing = if route.is_ollama() { Framing::Lines } else { Framing::Sse };
    let mut relay = Relay::new(framing, scrub, config.max_response_bytes);
    if let Some(redaction) = &restore {
        relay = relay.restoring(redaction.stream());
    }
    let deadlines = Deadlines { end: started + config.timeout, stall: config.stall_timeout };
    let state = Streaming { response, relay, deadlines, meter, finished: false, _slot: slot };
    let events = futures_util::stream::unfold(state, Streaming::next);
    let content_type = match framing {
        Framing::Sse => "text/event-stream",
        Framing::Lines => "application/x-ndjson",
    };
    let mut answer = json_response(StatusCode::OK, content_type, Body::from_stream(events));
    answer.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(answer)
}

fn json_response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The upstream's body, at most `limit` bytes.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<bytes::Bytes, String> {
    let mut body = bytes::BytesMut::new();
    while let Some(piece) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + piece.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// An upstream's refusal, as the client may see it: what kind of failure, never the upstream's
/// own words (they may name its URL, its keys or its model).
async fn refused_by_upstream(model: &str, status: StatusCode, response: reqwest::Response) -> ApiError {
    let detail = read_limited(response, 4096).await.unwrap_or_default();
    tracing::warn!(model, status = status.as_u16(), detail = %String::from_utf8_lossy(&detail), "LLM upstream refused a request");
    match status.as_u16() {
        400 | 413 | 422 => ApiError::bad_request(
            "the model's server refused the request (a prompt too long for its context, or an option it does not support)",
        ),
        429 => ApiError::busy("the model's server is busy; try again shortly"),
        504 => ApiError::upstream_timeout(),
        // 401/403: our credential for it is wrong; 404: it does not serve the model; 5xx: it failed.
        _ => ApiError::upstream_error(),
    }
}

/// A stream in flight: the upstream response, the relay, and the model slot it holds until it
/// ends (or the client goes away and drops it, which drops the upstream request too).
struct Streaming {
    response: reqwest::Response,
    relay: Relay,
    deadlines: Deadlines,
    meter: Meter,
    finished: bool,
    _slot: crate::backend::Slot,
}

impl Streaming {
    async fn next(mut self) -> Option<(Result<bytes::Bytes, std::io::Error>, Streaming)> {
        if self.finished {
            return None;
        }
        loop {
            let (wait, timeout_fault) = self.deadlines.next_wait();
            let piece = match tokio::time::timeout(wait, self.response.chunk()).await {
                Err(_) => Err(timeout_fault),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error.without_url(), "LLM upstream stream broke");
                    Err(StreamFault::Upstream)
                }
                Ok(Ok(None)) => {
                    self.finished = true;
                    self.relay.finish()
                }
                Ok(Ok(Some(piece))) => self.relay.feed(&piece),
            };
            let generated = self.relay.take_generated();
            self.meter.generated(&generated);
            if let Some(usage) = self.relay.usage() {
                self.meter.reported(usage);
            }
            match piece {
                Ok(bytes) if bytes.is_empty() && !self.finished => {}
                Ok(bytes) => return Some((Ok(bytes), self)),
                Err(fault) => {
                    tracing::warn!(?fault, "LLM stream ended early");
                    self.finished = true;
                    let event = self.relay.fault_event(&fault);
                    return Some((Ok(event), self));
                }
            }
        }
    }
}

/// What one request uses, as it goes: the tokens of its prompt (counted before it left), of
/// what the model generated so far, and the upstream's own report when it comes. The audit
/// record's `tokens` follow it; when the request ends (answered, failed, or its client gone
/// mid-stream) its budget reservation is settled to it. A request the upstream refused or never
/// answered used nothing; one cut short is charged for what was generated.
pub struct Meter {
    reservation: Option<Reservation>,
    facts: LlmFacts,
    model: Arc<LlmModel>,
    prompt: u64,
    completion: u64,
    /// The upstream accepted the request (2xx).
    answered: bool,
    /// The upstream reported the usage: it stands.
    reported: bool,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("prompt", &self.prompt)
            .field("completion", &self.completion)
            .finish_non_exhaustive()
    }
}

impl Meter {
    /// `prompt` is the prompt's tokens as `model` counts them.
    pub fn new(reservation: Reservation, facts: LlmFacts, model: Arc<LlmModel>, prompt: u64) -> Meter {
        Meter { reservation: Some(reservation), facts, model, prompt, completion: 0, answered: false, reported: false }
    }

    fn counted(&self) -> TokenUsage {
        TokenUsage { prompt: self.prompt, completion: self.completion, estimated: !self.model.tokens.exact() }
    }

    fn generated(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.completion = self.completion.saturating_add(self.model.tokens.count(text));
        if !self.reported {
            self.facts.set_usage(self.counted());
        }
    }

    fn reported(&mut self, usage: TokenUsage) {
        self.reported = true;
        self.facts.set_usage(usage);
    }

    /// What the request used, as far as the gateway knows.
    fn used(&self) -> TokenUsage {
        if !self.answered {
            return TokenUsage::default();
        }
        if self.reported
            && let Some(usage) = self.facts.usage()
        {
            return usage;
        }
        self.counted()
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let used = self.used();
        if self.answered && !self.reported {
            self.facts.set_usage(used);
        }
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(used);
        }
    }
}
