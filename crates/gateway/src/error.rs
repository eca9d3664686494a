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

use crate::request::RequestId;

/// A client-facing error: status, stable code, safe message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    pub challenge: Option<&'static str>,
    /// Why, for the audit log only (never sent): e.g. a 404 that hid a model the key may not use.
    pub audit_reason: Option<&'static str>,
    /// More response headers (`Retry-After`, `RateLimit-*`).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// An OAuth error (RFC 6749 5.2): the body is `{"error": code, "error_description", ...}`.
    pub oauth: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
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
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 400 for a well-formed request that does not fit the model's signature.
    pub fn invalid_input(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 401 without saying why: missing, malformed, unknown, revoked and expired look the same.
    pub fn unauthenticated(presented: bool) -> ApiError {
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid credential is required");
        error.challenge = Some(if presented {
            r#"Bearer realm="portcullis", error="invalid_token""#
        } else {
            r#"Bearer realm="portcullis""#
        });
        error
    }

    /// 403: the caller may see the model but not do this to it.
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this credential may not do that")
    }

    /// 404 for a model that does not exist or that the caller may not see: the two are
    /// indistinguishable on purpose, so model names cannot be enumerated.
    pub fn model_not_found(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "model_not_found", format!("model '{name}' not found"))
    }

    pub fn version_not_found(name: &str, version: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "model_not_found", format!("model '{name}' version '{version}' not found"))
    }

    /// 404 for an authenticated request to a path that does not exist.
    pub fn route_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")
    }

    pub fn payload_too_large(limit: Option<usize>) -> ApiError {
        let message = match limit {
            Some(limit) => format!("the request body exceeds the limit of {limit} bytes"),
            None => "the request body is too large".to_owned(),
        };
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// 503: overloaded or not ready; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 at once when the server or a model's queue is full, with `Retry-After`: shedding
    /// load instead of queueing without bound.
    pub fn busy(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some("overloaded");
        error
    }

    pub fn timeout() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long")
    }

    /// 503 for a model whose upstream is down or still loading.
    pub fn model_not_ready(name: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_not_ready", format!("model '{name}' is not ready"))
    }

    /// 502 when an upstream model server cannot be reached.
    pub fn upstream_unavailable() -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unavailable", "the model server is unreachable; try again")
    }

    /// 502 when an upstream model server failed or answered with something unusable.
    pub fn upstream_error() -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", "the model server failed to answer")
    }

    /// 504 when an upstream model server did not answer in time.
    pub fn upstream_timeout() -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "the model server did not answer in time")
    }

    /// 429: the caller's rate limit is spent for now.
    pub fn rate_limited(retry_after: u64, rate: crate::limit_spec::RateHeaders) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit reached; retry in {retry_after} s"),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after)));
        let mut map = http::HeaderMap::new();
        rate.apply(&mut map);
        error.headers.extend(map.into_iter().filter_map(|(name, value)| name.map(|name| (name, value))));
        error.audit_reason = Some("rate_limited");
        error
    }

    /// 429: a request or row quota is spent until its window ends.
    pub fn quota_exhausted(what: &str, quota: &crate::limit_spec::Quota, retry_after: i64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exhausted",
            format!(
                "the {what} quota of {quota} is spent; it resets at the start of the next UTC {}",
                quota.window.as_str()
            ),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))));
        error.audit_reason = Some("quota_exhausted");
        error
    }

    /// 503: the caller has as many requests in flight as it may.
    /// 429: a delegate key named more distinct end users in this window than its cap allows.
    pub fn too_many_users(cap: crate::limit_spec::UserCap, retry_after: u64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("this key may act for at most {cap} distinct end users; retry in {retry_after} s"),
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after.max(1))));
        error.audit_reason = Some("user_cap");
        error
    }

    /// 421: the request names a host this listener does not answer for.
    pub fn misdirected() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            "this server does not serve that host",
        );
        error.audit_reason = Some("admin_host");
        error
    }

    pub fn overloaded() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight for this credential; retry shortly",
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some("concurrency_limited");
        error
    }

    /// 503: limits cannot be checked (their store is unreachable), so nothing is let through.
    pub fn limiter_unavailable() -> ApiError {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "limiter_unavailable",
            "limits cannot be checked right now; try again",
        );
        error.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        error.audit_reason = Some("limiter_unavailable");
        error
    }

    /// 503 when the audit log cannot be written and serving unaudited is not allowed.
    pub fn audit_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the server cannot record requests right now; try again",
        )
    }

    /// An OAuth error of the token endpoint (RFC 6749 5.2, RFC 8693 2.2.2, RFC 9449 12.2), with
    /// `Cache-Control: no-store`. The description never says which check failed.
    pub fn oauth(code: &'static str) -> ApiError {
        let (status, message) = match code {
            "invalid_client" => (StatusCode::UNAUTHORIZED, "the client is not known"),
            "invalid_grant" => (StatusCode::BAD_REQUEST, "the attestation was not accepted"),
            "invalid_target" => (StatusCode::BAD_REQUEST, "the requested audience is not allowed"),
            "invalid_scope" => (StatusCode::BAD_REQUEST, "the requested scope is not allowed"),
            "invalid_dpop_proof" => (StatusCode::BAD_REQUEST, "the DPoP proof was not accepted"),
            "use_dpop_nonce" => (StatusCode::BAD_REQUEST, "a DPoP nonce is required; use the one in DPoP-Nonce"),
            "unsupported_grant_type" => (StatusCode::BAD_REQUEST, "only token exchange is supported"),
            _ => (StatusCode::BAD_REQUEST, "the token request is malformed"),
        };
        let mut error = ApiError::new(status, code, message);
        error.oauth = true;
        error.audit_reason = Some(code);
        error.headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        error.headers.push((header::PRAGMA, HeaderValue::from_static("no-cache")));
        error
    }

    /// `invalid_request` of the token endpoint with a precise message (the request itself is
    /// malformed: naming what is wrong reveals nothing about credentials).
    pub fn oauth_request(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::oauth("invalid_request");
        error.message = message.into();
        error
    }

    /// `invalid_request` of the token endpoint for a subject token that was not accepted, for
    /// whatever `reason` (RFC 8693 2.2.2); the description does not say which check failed.
    pub fn subject_token_refused(reason: &'static str) -> ApiError {
        let mut error = ApiError::oauth("invalid_request");
        error.message = "the subject token was not accepted".to_owned();
        error.with_audit_reason(reason)
    }

    /// 401 for a DPoP-bound token or proof that failed (RFC 9449 7.1): `invalid_token` or
    /// `invalid_dpop_proof`, or `use_dpop_nonce` with a fresh nonce.
    pub fn dpop_unauthenticated(error: &'static str, nonce: Option<String>) -> ApiError {
        let mut refusal = ApiError::unauthenticated(true);
        refusal.challenge = Some(match error {
            "invalid_dpop_proof" => r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#,
            "use_dpop_nonce" => r#"DPoP error="use_dpop_nonce", algs="ES256 EdDSA""#,
            _ => r#"DPoP error="invalid_token", algs="ES256 EdDSA""#,
        });
        if let Some(nonce) = nonce.and_then(|nonce| HeaderValue::from_str(&nonce).ok()) {
            refusal.headers.push((http::HeaderName::from_static("dpop-nonce"), nonce));
        }
        refusal
    }

    /// Marks the reason the audit log records for this refusal.
    pub fn with_audit_reason(mut self, reason: &'static str) -> ApiError {
        self.audit_reason = Some(reason);
        self
    }

    /// 500 with nothing inside: the detail was logged where it happened.
    pub fn internal() -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }

    /// The JSON body, in the Open Inference Protocol's `{"error": ...}` shape plus our fields.
    pub fn body(&self, request_id: &str) -> String {
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
    Response::from_parts(parts, error.body(&request_id).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_protocol_shape_and_our_fields() {
        let body: serde_json::Value = serde_json::from_str(&ApiError::model_not_found("churn").body("req-1")).unwrap();
        assert_eq!(body["error"], "model 'churn' not found");
        assert_eq!(body["code"], "model_not_found");
        assert_eq!(body["request_id"], "req-1");
    }

    /// Every string literal that follows one of `markers` in `text`.
    fn literals_after(text: &str, markers: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for marker in markers {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                // The first literal within the call (skipping a status argument on its line).
                let Some(open) = rest.find('"') else { continue };
                if rest[..open].contains(';') || rest[..open].contains(')') {
                    continue;
                }
                let Some(close) = rest[open + 1..].find('"') else { continue };
                let literal = &rest[open + 1..open + 1 + close];
                if !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    found.push(literal.to_owned());
                }
            }
        }
        found
    }

    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    /// The audit log's `reason` is an error code or a reason the code names; docs/audit-log.md
    /// must list every one the code can write (`token_*` and `dpop_*` as families, the token
    /// endpoint's OAuth codes as such), and every error code must be in README's table.
    #[test]
    fn every_reason_and_error_code_the_code_can_write_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let audit_doc = std::fs::read_to_string(root.join("../../docs/audit-log.md")).unwrap();
        let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
        let mut files = Vec::new();
        sources(&root.join("src"), &mut files);
        let mut reasons = Vec::new();
        let mut codes = Vec::new();
        let mut oauth = Vec::new();
        for (_, text) in &files {
            reasons.extend(literals_after(
                text,
                &["with_audit_reason(", "audit_reason = Some(", "subject_token_refused("],
            ));
            codes.extend(literals_after(text, &["ApiError::new("]));
            oauth.extend(literals_after(text, &["ApiError::oauth(", "dpop_unauthenticated("]));
        }
        // Why a credential failed: AuthnError's codes.
        let authn =
            files.iter().find(|(path, _)| path.ends_with("src/authn.rs")).map(|(_, text)| text.as_str()).unwrap();
        let code_fn = &authn[authn.find("pub fn code(self)").unwrap()..];
        let code_fn = &code_fn[..code_fn.find("\n    }\n").unwrap()];
        reasons.extend(literals_after(code_fn, &["=> "]));
        assert!(reasons.len() > 20 && codes.len() > 15, "the scan found too little: {reasons:?} {codes:?}");
        let documented = |text: &str, reason: &str| text.contains(&format!("`{reason}`"));
        let mut missing: Vec<String> = reasons
            .iter()
            .chain(&codes)
            .filter(|reason| {
                let covered = documented(&audit_doc, reason)
                    || reason.starts_with("token_")
                    || reason.starts_with("dpop_")
                    || oauth.contains(reason)
                    || (codes.contains(reason) && documented(&readme, reason));
                !covered
            })
            .cloned()
            .collect();
        missing.extend(codes.iter().filter(|code| !documented(&readme, code)).map(|code| format!("{code} (README)")));
        missing.sort();
        missing.dedup();
        assert!(missing.is_empty(), "reasons or codes the code writes but the docs do not list: {missing:?}");
    }
}
