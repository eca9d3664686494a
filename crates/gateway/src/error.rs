//! The only place where an error becomes an HTTP body.
//!
//! Inside the gateway each module has its own small error enum. At the edge they all become an
//! [`ApiError`]: a status, a stable snake_case `code` that is part of the API, and a message that
//! is safe to show anyone. Internal detail (store errors, runtime errors, which credential check
//! failed) is logged where it happens and never reaches the client.
//!
//! Handlers return `ApiError`; its `IntoResponse` leaves the body empty and attaches the error as
//! a response extension. The outer [`render`] middleware, which knows the request id, writes the
//! final `{"error", "code", "request_id"}` body, so every error, from any layer, has one shape.

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

use crate::{reason::AuditReason, request::RequestId};

crate::reason::named! {
    /// A client-facing error code: part of the API (README lists them), stable across versions.
    pub enum ErrorCode {
        AuditUnavailable => "audit_unavailable",
        Forbidden => "forbidden",
        Internal => "internal",
        InvalidInput => "invalid_input",
        InvalidRequest => "invalid_request",
        LimiterUnavailable => "limiter_unavailable",
        MethodNotAllowed => "method_not_allowed",
        MisdirectedRequest => "misdirected_request",
        ModelNotFound => "model_not_found",
        ModelNotReady => "model_not_ready",
        NotFound => "not_found",
        Overloaded => "overloaded",
        PayloadTooLarge => "payload_too_large",
        QuotaExhausted => "quota_exhausted",
        BudgetExhausted => "budget_exhausted",
        RateLimited => "rate_limited",
        Timeout => "timeout",
        Unauthenticated => "unauthenticated",
        Unavailable => "unavailable",
        UnsupportedMediaType => "unsupported_media_type",
        UpstreamError => "upstream_error",
        UpstreamTimeout => "upstream_timeout",
        UpstreamUnavailable => "upstream_unavailable",
        InvalidClient => "invalid_client",
        InvalidGrant => "invalid_grant",
        InvalidTarget => "invalid_target",
        InvalidScope => "invalid_scope",
        InvalidDpopProof => "invalid_dpop_proof",
        UseDpopNonce => "use_dpop_nonce",
        UnsupportedGrantType => "unsupported_grant_type",
        InvalidToken => "invalid_token",
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A client-facing error: status, stable code, safe message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    pub challenge: Option<&'static str>,
    /// Why, for the audit log only (never sent): e.g. a 404 that hid a model the key may not use.
    pub audit_reason: Option<AuditReason>,
    /// More response headers (`Retry-After`, `RateLimit-*`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// An OAuth error (RFC 6749 5.2): the body is `{"error": code, "error_description", ...}`.
    pub oauth: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
            audit_reason: None,
            headers: Vec::new(),
            oauth: false,
        }
    }

    /// 400: the request is malformed; the message says exactly what is wrong with it.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    /// 400 for a well-formed request that does not fit the model's signature.
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidInput, message)
    }

    /// 401 without saying why: missing, malformed, unknown, revoked and expired look the same.
    pub fn unauthenticated(presented: bool) -> ApiError {
        let mut error =
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, "a valid credential is required");
        error.challenge = Some(if presented {
            r#"Bearer realm="portcullis", error="invalid_token""#
        } else {
            r#"Bearer realm="portcullis""#
        });
        error
    }

    /// 403 with what may not be done, for refusals that reveal nothing about credentials.
    pub fn forbidden_because(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 403: the caller may see the model but not do this to it.
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "this credential may not do that")
    }

    /// 404 for a model that does not exist or that the caller may not see: the two are
    /// indistinguishable on purpose, so model names cannot be enumerated.
    pub fn model_not_found(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ModelNotFound, format!("model '{name}' not found"))
    }

    pub fn version_not_found(name: &str, version: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ModelNotFound,
            format!("model '{name}' version '{version}' not found"),
        )
    }

    /// 404 for an authenticated request to a path that does not exist.
    pub fn route_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "method not allowed")
    }

    pub fn payload_too_large(limit: Option<usize>) -> ApiError {
        let message = match limit {
            Some(limit) => format!("the request body exceeds the limit of {limit} bytes"),
            None => "the request body is too large".to_owned(),
        };
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType, message)
    }

    /// 503: overloaded or not ready; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message)
    }

    /// 503 at once when the server or a model's queue is full, with `Retry-After`: shedding
    /// load instead of queueing without bound.
    pub fn busy(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded, message);
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some(AuditReason::Overloaded);
        error
    }

    pub fn timeout() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Timeout, "the request took too long")
    }

    /// 503 for a model whose upstream is down or still loading.
    pub fn model_not_ready(name: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::ModelNotReady, format!("model '{name}' is not ready"))
    }

    /// 502 when an upstream model server cannot be reached.
    pub fn upstream_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamUnavailable,
            "the model server is unreachable; try again",
        )
    }

    /// 502 when an upstream model server failed or answered with something unusable.
    pub fn upstream_error() -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, "the model server failed to answer")
    }

    /// 504 when an upstream model server did not answer in time.
    pub fn upstream_timeout() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamTimeout,
            "the model server did not answer in time",
        )
    }

    /// 429: the caller's rate limit is spent for now.
    pub fn rate_limited(retry_after: u64, rate: crate::limit_spec::RateHeaders) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("rate limit reached; retry in {retry_after} s"),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after)));
        let mut map = http::HeaderMap::new();
        rate.apply(&mut map);
        error.headers.extend(map.into_iter().filter_map(|(name, value)| name.map(|name| (name, value))));
        error.audit_reason = Some(AuditReason::RateLimited);
        error
    }

    /// 429: a request or row quota is spent until its window ends.
    pub fn quota_exhausted(what: &str, quota: &crate::limit_spec::Quota, retry_after: i64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::QuotaExhausted,
            format!(
                "the {what} quota of {quota} is spent; it resets at the start of the next UTC {}",
                quota.window.as_str()
            ),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))));
        error.audit_reason = Some(AuditReason::QuotaExhausted);
        error
    }

    /// 429: a token or spend budget has no room for this request's worst case. `retry_after`
    /// is when the budget's window ends (a smaller request may fit sooner).
    pub fn budget_exhausted(message: String, retry_after: i64) -> ApiError {
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::BudgetExhausted, message);
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))));
        error.audit_reason = Some(AuditReason::BudgetExhausted);
        error
    }

    /// 503: the caller has as many requests in flight as it may.
    /// 429: a delegate key named more distinct end users in this window than its cap allows.
    pub fn too_many_users(cap: crate::limit_spec::UserCap, retry_after: u64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("this key may act for at most {cap} distinct end users; retry in {retry_after} s"),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))));
        error.audit_reason = Some(AuditReason::UserCap);
        error
    }

    /// 421: the request names a host this listener does not answer for.
    pub fn misdirected() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::MisdirectedRequest,
            "this server does not serve that host",
        );
        error.audit_reason = Some(AuditReason::AdminHost);
        error
    }

    pub fn overloaded() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "too many requests in flight for this credential; retry shortly",
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some(AuditReason::ConcurrencyLimited);
        error
    }

    /// 503: limits cannot be checked (their store is unreachable), so nothing is let through.
    pub fn limiter_unavailable() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimiterUnavailable,
            "limits cannot be checked right now; try again",
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some(AuditReason::LimiterUnavailable);
        error
    }

    /// 503 when the audit log cannot be written and serving unaudited is not allowed.
    pub fn audit_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuditUnavailable,
            "the server cannot record requests right now; try again",
        )
    }

    /// An OAuth error of the token endpoint (RFC 6749 5.2, RFC 8693 2.2.2, RFC 9449 12.2), with
    /// `Cache-Control: no-store`. The description never says which check failed.
    pub fn oauth(code: ErrorCode) -> ApiError {
        let (status, message) = match code {
            ErrorCode::InvalidClient => (StatusCode::UNAUTHORIZED, "the client is not known"),
            ErrorCode::InvalidGrant => (StatusCode::BAD_REQUEST, "the attestation was not accepted"),
            ErrorCode::InvalidTarget => (StatusCode::BAD_REQUEST, "the requested audience is not allowed"),
            ErrorCode::InvalidScope => (StatusCode::BAD_REQUEST, "the requested scope is not allowed"),
            ErrorCode::InvalidDpopProof => (StatusCode::BAD_REQUEST, "the DPoP proof was not accepted"),
            ErrorCode::UseDpopNonce => (StatusCode::BAD_REQUEST, "a DPoP nonce is required; use the one in DPoP-Nonce"),
            ErrorCode::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "only token exchange is supported"),
            _ => (StatusCode::BAD_REQUEST, "the token request is malformed"),
        };
        let mut error = ApiError::new(status, code, message);
        error.oauth = true;
        error.headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        error.headers.push((header::PRAGMA, HeaderValue::from_static("no-cache")));
        error
    }

    /// `invalid_request` of the token endpoint with a precise message (the request itself is
    /// malformed: naming what is wrong reveals nothing about credentials).
    pub fn oauth_request(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::oauth(ErrorCode::InvalidRequest);
        error.message = message.into();
        error
    }

    /// `invalid_request` of the token endpoint for a subject token that was not accepted, for
    /// whatever `reason` (RFC 8693 2.2.2); the description does not say which check failed.
    pub fn subject_token_refused(reason: AuditReason) -> ApiError {
        let mut error = ApiError::oauth(ErrorCode::InvalidRequest);
        error.message = "the subject token was not accepted".to_owned();
        error.with_audit_reason(reason)
    }

    /// 401 for a DPoP-bound token or proof that failed (RFC 9449 7.1): `invalid_token` or
    /// `invalid_dpop_proof`, or `use_dpop_nonce` with a fresh nonce.
    pub fn dpop_unauthenticated(error: ErrorCode, nonce: Option<String>) -> ApiError {
        let mut refusal = ApiError::unauthenticated(true);
        refusal.challenge = Some(match error {
            ErrorCode::InvalidDpopProof => r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#,
            ErrorCode::UseDpopNonce => r#"DPoP error="use_dpop_nonce", algs="ES256 EdDSA""#,
            _ => r#"DPoP error="invalid_token", algs="ES256 EdDSA""#,
        });
        if let Some(nonce) = nonce.and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
            refusal.headers.push((http::HeaderName::from_static("dpop-nonce"), nonce));
        }
        refusal
    }

    /// Marks the reason the audit log records for this refusal.
    pub fn with_audit_reason(mut self, reason: AuditReason) -> ApiError {
        self.audit_reason = Some(reason);
        self
    }

    /// 500 with nothing inside: the detail was logged where it happened.
    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, "internal error")
    }

    /// The JSON body, in the Open Inference Protocol's `{"error": ...}` shape plus our fields.
    /// In OpenAI's shape when `openai` (the error an object with a `type` its SDKs map to
    /// exceptions), with our `code` and `request_id` beside it.
    pub fn body(&self, request_id: &str, openai: bool) -> String {
        if openai && !self.oauth {
            let kind = match self.status.as_u16() {
                400 | 413 | 415 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                _ => "api_error",
            };
            return serde_json::json!({
                "error": {"message": self.message, "type": kind, "code": self.code, "param": null},
                "code": self.code,
                "request_id": request_id,
            })
            .to_string();
        }
        if self.oauth {
            return serde_json::json!({
                "error": self.code,
                "error_description": self.message,
                "request_id": request_id,
            })
            .to_string();
        }
        serde_json::json!({
            "error": self.message,
            "code": self.code,
            "request_id": request_id,
        })
        .to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Middleware: writes the body of every error response, with the request id.
///
/// Errors made by layers we do not own (a panic caught, a body limit hit inside a framework
/// extractor) arrive without an `ApiError` extension; they are mapped by status so that they too
/// get the one shape and never a framework's own text.
pub async fn render(request: Request, next: Next) -> Response {
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let openai = crate::request::speaks_openai(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let error = match response.extensions().get::<ApiError>() {
        Some(error) => error.clone(),
        None => match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(None),
            StatusCode::NOT_FOUND => ApiError::route_not_found(),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
            StatusCode::REQUEST_TIMEOUT => ApiError::timeout(),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable("the server is busy"),
            status if status.is_client_error() => {
                ApiError { status, ..ApiError::bad_request("the request could not be processed") }
            }
            _ => ApiError::internal(),
        },
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(challenge) = error.challenge {
        parts.headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    for (name, value) in &error.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, error.body(&request_id, openai).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_protocol_shape_and_our_fields() {
        let body: serde_json::Value =
            serde_json::from_str(&ApiError::model_not_found("churn").body("req-1", false)).unwrap();
        assert_eq!(body["error"], "model 'churn' not found");
        assert_eq!(body["code"], "model_not_found");
        assert_eq!(body["request_id"], "req-1");
    }
}
