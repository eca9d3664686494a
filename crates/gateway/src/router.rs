//! THE layer stack. Every request to the public listener passes these layers in this order,
//! outermost first; each says why it sits where it does.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Instant};

use futures_util::FutureExt;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{delete, get, head, post},
};
use http::{HeaderName, HeaderValue, header};
use tower::ServiceBuilder;
use tower_http::{catch_panic::CatchPanicLayer, sensitive_headers::SetSensitiveRequestHeadersLayer};

use crate::{
    audit::{Decision, RequestAction},
    authn, error, handler,
    llm::routes as llm,
    reason::AuditReason,
    state::Gateway,
};

pub use crate::request::{InputRows, REQUEST_ID_HEADER, RequestId};

/// Liveness: 200 while the process runs, whatever its load or its dependencies.
pub const LIVENESS_ROUTE: &str = "/v2/health/live";

/// Declares a listener's routes once: the function that adds them to a router, and the table of
/// (method, path template) that tests walk, so no route can be added without being tested.
macro_rules! routes {
    ($table:ident, $add:ident: $($method:ident $path:expr => $handler:path;)*) => {
        /// Every route: its method and path template.
        pub const $table: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn $add(router: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
            router$(.route($path, $method($handler)))*
        }
    };
}

routes! { PUBLIC_ROUTE_TABLE, add_public_routes:
    get LIVENESS_ROUTE => handler::live;
    get "/v2/health/ready" => handler::ready;
    get "/v2" => handler::server_metadata;
    get "/v2/models/{model}" => handler::model_metadata;
    get "/v2/models/{model}/versions/{version}" => handler::model_version_metadata;
    get "/v2/models/{model}/ready" => handler::model_ready;
    get "/v2/models/{model}/versions/{version}/ready" => handler::model_version_ready;
    post "/v2/models/{model}/infer" => handler::infer;
    post "/v2/models/{model}/versions/{version}/infer" => handler::model_version_infer;
    post crate::broker::TOKEN_PATH => crate::broker::exchange::token;
    post crate::broker::NONCE_PATH => crate::broker::exchange::nonce;
    get crate::broker::JWKS_PATH => crate::broker::exchange::jwks;
    // Language models: OpenAI's API and Ollama's (llm/routes.rs).
    post "/v1/chat/completions" => llm::chat_completions;
    post "/v1/completions" => llm::completions;
    post "/v1/embeddings" => llm::embeddings;
    post "/v1/responses" => llm::responses;
    get "/v1/models" => llm::models;
    post "/api/chat" => llm::ollama_chat;
    post "/api/generate" => llm::ollama_generate;
    post "/api/embed" => llm::ollama_embed;
    post "/api/show" => llm::ollama_show;
    get "/api/tags" => llm::tags;
    // Ollama's management routes exist so that they are refused by name, never forwarded.
    post "/api/pull" => llm::ollama_management;
    post "/api/push" => llm::ollama_management;
    post "/api/create" => llm::ollama_management;
    post "/api/copy" => llm::ollama_management;
    delete "/api/delete" => llm::ollama_management;
    post "/api/blobs/{digest}" => llm::ollama_management;
    head "/api/blobs/{digest}" => llm::ollama_management;
    get "/api/ps" => llm::ollama_management;
}

/// The public listener's service.
pub fn public(gateway: Arc<Gateway>) -> Router {
    let body_limit = gateway.config().max_body_bytes;
    add_public_routes(Router::new())
        .fallback(handler::not_found)
        .method_not_allowed_fallback(handler::method_not_allowed)
        .with_state(Arc::clone(&gateway))
        .layer(
            ServiceBuilder::new()
                // 1. Request id first, so that everything below, errors included, can name it.
                .layer(from_fn(request_id))
                // 2. Error bodies: every 4xx/5xx from any layer below gets the one JSON shape.
                .layer(from_fn(error::render))
                // 2a. nosniff and no-store on every answer, errors included; set caching is kept.
                .layer(from_fn(response_headers))
                // 2b. RFC 9112 3.2: an HTTP/1.1 request without exactly one valid Host gets 400.
                .layer(from_fn(one_host))
                // 3. A panic anywhere below becomes a generic 500, never a dropped connection
                //    or a stack trace; `render` above then gives it the standard body.
                .layer(CatchPanicLayer::custom(|_| error::ApiError::internal().into_response()))
                // 4. Credentials are marked sensitive before anything could log headers.
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::PROXY_AUTHORIZATION,
                    header::COOKIE,
                    HeaderName::from_static(authn::API_KEY_HEADER),
                    HeaderName::from_static(crate::broker::dpop::DPOP_HEADER),
                    HeaderName::from_static(crate::broker::attest::APP_CHECK_HEADER),
                ]))
                // 5. One access-log line and the metrics per request, refused ones included
                //    (method, route template, status, latency, principal; never bodies or keys).
                .layer(from_fn_with_state(Arc::clone(&gateway), access_log))
                // 5b. Exactly one audit record per request, denials included. Outside everything
                //    that can refuse, so refusals are recorded; if the record cannot be written
                //    the answer becomes 503 (fail closed) unless the config fails open.
                .layer(from_fn_with_state(Arc::clone(&gateway), audit))
                // 6. Global concurrency cap with load shedding, and the request deadline: past
                //    capacity we answer 503 at once instead of queueing without bound.
                .layer(from_fn_with_state(Arc::clone(&gateway), admission))
                // 7. Body limit for any extractor; handlers also read with the same explicit cap.
                .layer(DefaultBodyLimit::max(body_limit))
                // 9. Authentication wraps every route and the fallback: deny by default.
                .layer(from_fn_with_state(Arc::clone(&gateway), authn::authenticate))
                // 10. Limits, once the caller is known: its rate, the model's rate, its requests
                //     in flight and its request quota. Rows are charged by the handler.
                .layer(from_fn_with_state(gateway, limit)),
        )
}

routes! { ADMIN_OPEN_ROUTE_TABLE, add_admin_open_routes:
    get "/metrics" => handler::metrics;
    get "/health/live" => handler::live;
    get "/health/ready" => handler::ready;
}

// Usage names every key and its traffic: an admin key (`ptcl_ak_`) is required.
routes! { ADMIN_KEYED_ROUTE_TABLE, add_admin_keyed_routes:
    get "/usage" => handler::usage;
}

/// The admin listener's service: metrics and health, loopback only (config enforces it).
pub fn admin(gateway: Arc<Gateway>) -> Router {
    let keyed = add_admin_keyed_routes(Router::new()).route_layer(from_fn_with_state(Arc::clone(&gateway), admin_key));
    add_admin_open_routes(Router::new())
        .merge(keyed)
        .fallback(handler::not_found)
        .with_state(Arc::clone(&gateway))
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(request_id))
                .layer(from_fn(error::render))
                .layer(CatchPanicLayer::custom(|_| error::ApiError::internal().into_response()))
                .layer(from_fn(response_headers))
                // A browser on this machine can be steered to 127.0.0.1 under a name of the
                // attacker's (DNS rebinding): only loopback and configured names are answered.
                .layer(from_fn_with_state(gateway, admin_host)),
        )
}

/// Refuses admin requests whose `Host` is not a loopback address, `localhost`, or one of
/// `server.admin_hosts` (421: this server does not serve that name).
async fn admin_host(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok(),
        // HTTP/2 carries the name in :authority, which hyper puts in the URI.
        (None, None) => request.uri().host(),
        _ => None,
    };
    if host.is_some_and(|host| admin_host_allowed(host, &gateway.config().admin_hosts)) {
        return next.run(request).await;
    }
    tracing::warn!("admin request refused: Host is not loopback or a configured admin host");
    error::ApiError::misdirected().into_response()
}

/// `127.0.0.1`, `[::1]`, `localhost` (any port), or a configured name (exactly, any port).
fn admin_host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:9090`.
        match rest.split_once(']') {
            Some((address, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) => address,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || allowed.contains(&name)
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The admin key check for admin routes that reveal more than health: 401 without one.
async fn admin_key(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return error::ApiError::unauthenticated(false)
            .with_audit_reason(crate::reason::AuditReason::NoCredential)
            .into_response();
    };
    match gateway.verifier().verify_admin(token).await {
        Ok(_) => next.run(request).await,
        Err(authn::AuthnError::Unavailable) => {
            error::ApiError::unavailable("the credential store is unavailable; try again").into_response()
        }
        Err(reason) => {
            tracing::info!(reason = %reason, "admin request refused");
            error::ApiError::unauthenticated(true).with_audit_reason(reason.code()).into_response()
        }
    }
}

/// Every answer of the public listener is `X-Content-Type-Options: nosniff` (a browser never
/// renders a JSON body as HTML), and `Cache-Control: no-store` unless its handler chose a
/// caching policy (the JWKS may be cached for minutes): answers are per caller.
async fn response_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// RFC 9112 3.2: 400 for an HTTP/1.1 request without a `Host` header, and for any request with
/// more than one or with an invalid one. HTTP/2 names the authority in `:authority` instead, and
/// HTTP/1.0 did not require `Host`.
async fn one_host(request: Request, next: Next) -> Response {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let problem = match (hosts.next(), hosts.next()) {
        (None, _) if request.version() == http::Version::HTTP_11 => Some("a Host header is required"),
        (None, _) => None,
        (Some(_), Some(_)) => Some("the request has more than one Host header"),
        (Some(host), None) if !valid_host(host) => Some("the Host header is not a host name with an optional port"),
        (Some(_), None) => None,
    };
    match problem {
        Some(message) => error::ApiError::bad_request(message).into_response(),
        None => next.run(request).await,
    }
}

/// `uri-host [":" port]` (RFC 9110 7.2): an authority without user information and with a
/// numeric port, or empty (RFC 9112 3.2 allows that for a target without authority).
fn valid_host(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else { return false };
    let port_is_numeric = match text.rsplit_once(':') {
        // The colon of an IPv6 literal is not a port separator.
        Some((_, port)) if !port.contains(']') => port.bytes().all(|b| b.is_ascii_digit()),
        _ => true,
    };
    text.is_empty() || (!text.contains('@') && port_is_numeric && text.parse::<http::uri::Authority>().is_ok())
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = new_request_id();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 24 hex digits, all random: an id says nothing about how many requests came before it
/// (a counter would let anyone measure the server's traffic from two replies).
fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS generator failed: fall back to a keyed hash of a counter. Its key is drawn
        // anew per process by the standard library, so the ids still reveal no count.
        use std::hash::{BuildHasher, RandomState};
        use std::sync::{
            OnceLock,
            atomic::{AtomicU64, Ordering},
        };
        static KEY: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let key = KEY.get_or_init(RandomState::new);
        bytes[..8].copy_from_slice(&key.hash_one(count).to_be_bytes());
        bytes[8..].copy_from_slice(&key.hash_one(!count).to_be_bytes()[..4]);
    }
    crate::hex::encode(&bytes)
}

/// The route template a request matches (bounded, safe to log and label with).
fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| unmatched_route(request.uri().path()), |path| path.as_str().to_owned())
}

fn action_of(route: &str) -> RequestAction {
    if route.ends_with("/infer") {
        RequestAction::Infer
    } else if route.starts_with("/v2/models/") {
        RequestAction::Metadata
    } else if route == "/v2" {
        RequestAction::ServerMetadata
    } else if route.starts_with("/v2/health/") {
        RequestAction::Health
    } else if route == crate::broker::TOKEN_PATH {
        RequestAction::Token
    } else if route == crate::broker::NONCE_PATH || route == crate::broker::JWKS_PATH {
        RequestAction::Broker
    } else {
        RequestAction::Other
    }
}

async fn audit(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let Some(log) = gateway.audit() else {
        return next.run(request).await;
    };
    if !log.accepting() {
        if request.uri().path() == LIVENESS_ROUTE {
            // The process is alive even when its log is not; readiness says 503 meanwhile.
            return next.run(request).await;
        }
        tracing::error!("refusing a request: the audit log cannot be written");
        return error::ApiError::audit_unavailable().into_response();
    }
    let started = Instant::now();
    let route = route_of(&request);
    let method = request.method().to_string();
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let model = authn::model_in_path(request.uri().path())
        .filter(|name| crate::config::valid_model_name(name))
        .map(str::to_owned);
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |info| info.0.ip().to_string());
    // Until the answer is known, a guard holds the record of a request whose client hangs up
    // (its future is dropped): recorded as 499 `client_closed`. A panic below is caught here,
    // answered 500 and recorded.
    let mut unanswered = Unanswered {
        gateway: Arc::clone(&gateway),
        started,
        record: Some(crate::audit::RequestRecord {
            request_id,
            principal: "-".to_owned(),
            client,
            method,
            action: action_of(&route),
            route,
            model,
            decision: Decision::Error,
            reason: "client_closed".to_owned(),
            status: 499,
            latency_us: 0,
            rows: None,
            prompt_sha256: None,
            redacted: std::collections::BTreeMap::new(),
            tokens: None,
        }),
    };
    let response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => error::ApiError::internal().into_response(),
    };
    let Some(mut record) = unanswered.record.take() else {
        return response;
    };
    let status = response.status();
    let error = response.extensions().get::<error::ApiError>();
    let reason = error.and_then(|error| error.audit_reason);
    record.reason =
        error.map_or("ok", |error| error.audit_reason.map_or(error.code.as_str(), AuditReason::as_str)).to_owned();
    record.decision = if status.is_success() {
        Decision::Allow
    } else if matches!(status.as_u16(), 401 | 403 | 429) || reason == Some(AuditReason::ModelNotAllowed) {
        Decision::Deny
    } else {
        Decision::Error
    };
    record.principal = response
        .extensions()
        .get::<crate::principal::PrincipalId>()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    record.status = status.as_u16();
    record.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    record.rows = response.extensions().get::<InputRows>().map(|rows| rows.0);
    if let Some(facts) = response.extensions().get::<crate::request::LlmFacts>().cloned() {
        record.model = Some(facts.model.clone());
        record.prompt_sha256 = Some(facts.prompt_sha256.clone()).filter(|hash| !hash.is_empty());
        record.redacted.clone_from(&facts.redacted);
        record.tokens = facts.usage();
        if status.is_success() {
            // A streamed answer's tokens are known at its end: the record is written then
            // (and if it cannot be, that is logged: the answer has started and cannot turn
            // into a 503).
            let gateway = Arc::clone(&gateway);
            return crate::request::on_body_end(response, move || {
                record.tokens = facts.usage();
                record.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Some(log) = gateway.audit()
                    && let Err(error) = log.record_now(crate::audit::AuditEvent::Request(record))
                {
                    tracing::error!(%error, "the audit record of an LLM answer could not be written");
                }
            });
        }
    }
    // The wait for the record (with fsync = "always", or a full queue) is bounded by the request
    // deadline too.
    let recorded = tokio::time::timeout(gateway.config().request_timeout, log.record_request(record))
        .await
        .unwrap_or(Err(crate::audit::AuditError::Unavailable));
    match recorded {
        Ok(()) => response,
        Err(error) if log.fails_open() => {
            tracing::warn!(%error, "serving without an audit record (audit.fail_open = true)");
            response
        }
        Err(error) => {
            tracing::error!(%error, "refusing a request: its audit record could not be written");
            error::ApiError::audit_unavailable().into_response()
        }
    }
}

/// The audit record of a request not yet answered; written as `client_closed` if dropped armed.
struct Unanswered {
    gateway: Arc<Gateway>,
    started: Instant,
    record: Option<crate::audit::RequestRecord>,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let (Some(mut record), Some(log)) = (self.record.take(), self.gateway.audit()) else {
            return;
        };
        record.latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Err(error) = log.record_now(crate::audit::AuditEvent::Request(record)) {
            tracing::error!(%error, "the audit record of a request whose client hung up was lost");
        }
    }
}

async fn access_log(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_of(&request);
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let in_flight = gateway.metrics().request_started();
    let response = next.run(request).await;
    drop(in_flight);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let principal = response.extensions().get::<crate::principal::PrincipalId>().map(|id| id.as_str()).unwrap_or("-");
    let code = response.extensions().get::<error::ApiError>().map_or("", |error| error.code.as_str());
    gateway.metrics().request_finished(&route, status, elapsed.as_secs_f64());
    tracing::info!(
        target: "portcullis::access",
        request_id = %request_id,
        method = %method,
        route = %route,
        status,
        code,
        principal,
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// Route layers run before routing, so the template is not known yet; map the path to the
/// template it will match, keeping the label set bounded.
fn unmatched_route(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let template = match segments.as_slice() {
        ["v2"] => "/v2",
        ["v2", "health", "live"] => "/v2/health/live",
        ["v2", "health", "ready"] => "/v2/health/ready",
        ["v2", "models", _] => "/v2/models/{model}",
        ["v2", "models", _, "ready"] => "/v2/models/{model}/ready",
        ["v2", "models", _, "infer"] => "/v2/models/{model}/infer",
        ["v2", "models", _, "versions", _] => "/v2/models/{model}/versions/{version}",
        ["v2", "models", _, "versions", _, "ready"] => "/v2/models/{model}/versions/{version}/ready",
        ["v2", "models", _, "versions", _, "infer"] => "/v2/models/{model}/versions/{version}/infer",
        ["v1", "token"] => crate::broker::TOKEN_PATH,
        ["v1", "nonce"] => crate::broker::NONCE_PATH,
        [".well-known", "jwks.json"] => crate::broker::JWKS_PATH,
        _ => "other",
    };
    template.to_owned()
}

async fn admission(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    // Health checks sit outside the cap: a busy server is alive, and an orchestrator that read
    // 503 from liveness would restart the node that carries the load.
    if authn::PUBLIC_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = gateway.in_flight().try_acquire() else {
        return error::ApiError::busy("the server is at capacity; try again shortly").into_response();
    };
    match tokio::time::timeout(gateway.config().request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::timeout().into_response(),
    }
}

async fn limit(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<crate::principal::Principal>() else {
        // The public routes (health) carry no principal and are not limited.
        return next.run(request).await;
    };
    let limits = crate::limits::Effective::of(principal, gateway.limiter().config());
    // A model's own limit is spent only by callers that may use it: others cannot exhaust it.
    let model = authn::model_in_path(request.uri().path())
        .and_then(|name| gateway.registry().get(name))
        .filter(|model| model.config.public || principal.models.allows(&model.config.name))
        .map(|model| (model.config.name.as_str(), model.config.rate.as_ref()));
    let admission = match gateway.limiter().admit(principal, &limits, model).await {
        Ok(admission) => admission,
        Err(error) => return error.into_response(),
    };
    // The handler charges rows against the same limits.
    request.extensions_mut().insert(limits);
    let mut response = next.run(request).await;
    if let Some(headers) = admission.headers {
        headers.apply(response.headers_mut());
    }
    // The caller's slots are held until the answer is sent whole: a stream counts as in flight
    // for as long as it runs.
    crate::request::on_body_end(response, move || drop(admission))
}

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod llm_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;
