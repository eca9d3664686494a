//! The LLM routes: OpenAI's (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/models`) and Ollama's (`/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/show`, `/api/tags`). Ollama's management routes (`pull`, `push`, `create`, `copy`,
//! `delete`, `blobs`, `ps`) are answered here with 403 and never forwarded.
//!
//! Authentication and limits have run before these handlers (the layer stack); what is checked
//! here is the body and the model it names.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    response::{IntoResponse, Json, Response},
};
use http::{HeaderMap, header};
use serde_json::{Value, json};

use super::{
    LlmModel, LlmRegistry,
    body::{self, Route},
};
use crate::{
    authz::{self, Infer, Metadata},
    error::ApiError,
    limits::budget::{Charge, ModelBudget},
    principal::Principal,
    request::{LlmFacts, RequestId},
};

/// What the LLM routes need: the models, the body cap, and the limiter for models' own rates.
#[derive(Debug, Clone)]
pub struct Llm {
    pub registry: Arc<LlmRegistry>,
    pub max_body_bytes: usize,
    pub limiter: Arc<crate::limits::Limiter>,
}

pub async fn chat_completions(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::ChatCompletions, request).await
}

pub async fn completions(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::Completions, request).await
}

pub async fn embeddings(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::Embeddings, request).await
}

pub async fn responses(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::Responses, request).await
}

pub async fn ollama_chat(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::OllamaChat, request).await
}

pub async fn ollama_generate(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::OllamaGenerate, request).await
}

pub async fn ollama_embed(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::OllamaEmbed, request).await
}

pub async fn ollama_show(State(llm): State<Llm>, request: Request) -> Response {
    forward(llm, Route::OllamaShow, request).await
}

/// `GET /v1/models`: the models this caller may use, and no other.
pub async fn models(State(llm): State<Llm>, request: Request) -> Result<Json<Value>, ApiError> {
    let principal = principal(&request)?;
    let data: Vec<Value> = visible(&llm.registry, principal)
        .filter(|model| !model.serves(Route::OllamaChat))
        .map(|model| json!({"id": model.config.name, "object": "model", "created": 0, "owned_by": "portcullis"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/tags`: the Ollama models this caller may use, and no other.
pub async fn tags(State(llm): State<Llm>, request: Request) -> Result<Json<Value>, ApiError> {
    let principal = principal(&request)?;
    let models: Vec<Value> = visible(&llm.registry, principal)
        .filter(|model| model.serves(Route::OllamaChat))
        .map(|model| {
            json!({
                "name": model.config.name, "model": model.config.name,
                "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "", "details": {}
            })
        })
        .collect();
    Ok(Json(json!({ "models": models })))
}

/// Ollama's management routes: never forwarded, whoever asks.
pub async fn ollama_management() -> ApiError {
    ApiError::forbidden_because("Ollama's management routes are not served through Portcullis")
}

fn visible<'a>(registry: &'a LlmRegistry, principal: &'a Principal) -> impl Iterator<Item = &'a Arc<LlmModel>> {
    registry.iter().filter(|model| authz::authorize::<Metadata, _>(principal, model).is_ok())
}

fn principal(request: &Request) -> Result<&Principal, ApiError> {
    request.extensions().get::<Principal>().ok_or_else(|| {
        tracing::error!("an LLM route was reached without a principal");
        ApiError::internal()
    })
}

/// Checks a request with a body and passes it to its model. The answer (a refusal too) carries
/// the facts the audit record needs: the model named, the prompt's hash, the tokens.
async fn forward(llm: Llm, route: Route, request: Request) -> Response {
    let mut facts = LlmFacts::default();
    let answer = check_and_call(&llm, route, request, &mut facts).await;
    let mut response = match answer {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if !facts.model.is_empty() {
        response.extensions_mut().insert(facts);
    }
    response
}

async fn check_and_call(
    llm: &Llm,
    route: Route,
    mut request: Request,
    facts: &mut LlmFacts,
) -> Result<Response, ApiError> {
    // The handler is the last to need the principal: take it rather than copy it.
    principal(&request)?;
    let principal = request.extensions_mut().remove::<Principal>().ok_or_else(ApiError::internal)?;
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let (parts, body) = request.into_parts();
    json_content(&parts.headers)?;
    let bytes = crate::body::read_body(body, &parts.headers, llm.max_body_bytes).await?;
    let mut request = body::parse(route, &bytes).map_err(ApiError::bad_request)?;
    if crate::config::valid_model_name(&request.model) {
        facts.model.clone_from(&request.model);
    }
    // Exactly the name sent: no trimming, no case folding, no other spelling reaches a model.
    let model = llm
        .registry
        .get(&request.model)
        .filter(|model| model.serves(route))
        .ok_or_else(|| ApiError::model_not_found(&request.model))?;
    let grant = authz::authorize::<Infer, _>(&principal, model)?;
    request.enforce(&model.config, &principal.scopes, principal.limits.max_tokens).map_err(
        |refusal| match refusal {
            body::Refusal::Request(message) => ApiError::bad_request(message),
            body::Refusal::Key(message) => {
                ApiError::forbidden_because(message).with_audit_reason(crate::reason::AuditReason::ScopeMissing)
            }
        },
    )?;
    // The model's own rate, across all callers, spent only by callers that may use it (the
    // same bucket the limit layer uses for models named in the path).
    if let Some(rate) = model.config.rate {
        llm.limiter.spend(&[(format!("m:{}", model.config.name), rate)]).await?;
    }
    facts.prompt_sha256 = request.prompt_sha256();
    // Personal data out of the prompt before it is counted or sent (the hash above is of what
    // the caller sent).
    let (redacted, restore) = llm.registry.redact(model, &mut request);
    facts.redacted = redacted;
    // Reserve the worst case from every budget before anything leaves; settled by the meter
    // when the answer ends.
    let budget = ModelBudget { name: &model.config.name, budget: &model.config.budget, price: model.config.price };
    let lines = llm.limiter.budget_lines(&principal, budget)?;
    let prompt = model.tokens.prompt_tokens(route, &request.body);
    let worst = Charge::of(model.config.price, prompt, request.max_generated());
    let reservation = llm.limiter.reserve(&lines, worst, &principal, budget).await?;
    let meter = super::Meter::new(reservation, facts.clone(), Arc::clone(model), prompt);
    super::call(&grant, request, &request_id, meter, restore).await
}

/// The body must be JSON (`application/json`, any parameters) and not compressed.
fn json_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|media| media.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::unsupported_media_type("send the body as application/json"));
    }
    if headers.get(header::CONTENT_ENCODING).is_some_and(|value| value != "identity") {
        return Err(ApiError::unsupported_media_type("LLM routes take uncompressed bodies"));
    }
    Ok(())
}
