//! The broker's HTTP endpoints: `POST /v1/token` (RFC 8693 token exchange with DPoP),
//! `POST /v1/nonce` (a DPoP server nonce) and `GET /.well-known/jwks.json`.
//!
//! The token endpoint answers with OAuth errors whose description never says which check
//! failed; the audit record and the log say it.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use super::{
    Broker, TokenScope,
    attest::Evidence,
    dpop::{self, DpopError, Expected},
};
use crate::{error::ApiError, limits::Limiter, principal::PrincipalId};

/// What the broker's endpoints need: the broker (when configured), the identity providers whose
/// ID tokens it exchanges, and the limiter that spends each user's and device's token rate.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub broker: Option<Arc<Broker>>,
    pub issuers: Arc<super::idp::Issuers>,
    pub limiter: Arc<Limiter>,
}

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The largest token request read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A token exchange request, parsed strictly.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub grant_type: String,
    pub subject_token: String,
    pub subject_token_type: String,
    pub requested_token_type: Option<String>,
    pub scope: Option<String>,
    pub client_id: String,
    /// `audience` and `resource` values together.
    pub targets: Vec<String>,
}

/// Parses the form body. Every parameter but `audience` and `resource` at most once (RFC 6749
/// 3.2); unknown parameters are ignored, as OAuth requires; `actor_token` is refused, as
/// delegation is not offered.
pub fn parse_form(body: &[u8]) -> Result<TokenRequest, ApiError> {
    let mut request = TokenRequest::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in form_urlencoded::parse(body) {
        let name = name.into_owned();
        let value = value.into_owned();
        match name.as_str() {
            "audience" | "resource" => {
                request.targets.push(value);
                continue;
            }
            "actor_token" | "actor_token_type" => {
                return Err(ApiError::oauth_request("actor_token is not supported: delegation is not offered"));
            }
            _ => {}
        }
        if seen.contains(&name) {
            return Err(ApiError::oauth_request(format!("the parameter '{name}' is repeated")));
        }
        seen.push(name.clone());
        match name.as_str() {
            "grant_type" => request.grant_type = value,
            "subject_token" => request.subject_token = value,
            "subject_token_type" => request.subject_token_type = value,
            "requested_token_type" => request.requested_token_type = Some(value),
            "scope" => request.scope = Some(value),
            "client_id" => request.client_id = value,
            _ => {}
        }
    }
    if request.grant_type.is_empty() {
        return Err(ApiError::oauth_request("grant_type is required"));
    }
    if request.grant_type != GRANT_TYPE {
        return Err(ApiError::oauth(crate::error::ErrorCode::UnsupportedGrantType));
    }
    for (value, name) in [
        (&request.subject_token, "subject_token"),
        (&request.subject_token_type, "subject_token_type"),
        (&request.client_id, "client_id"),
    ] {
        if value.is_empty() {
            return Err(ApiError::oauth_request(format!("{name} is required")));
        }
    }
    if request.subject_token_type != ID_TOKEN && request.subject_token_type != JWT {
        return Err(ApiError::oauth_request(format!("subject_token_type must be {ID_TOKEN} (or {JWT})")));
    }
    if request.requested_token_type.as_deref().is_some_and(|wanted| wanted != ACCESS_TOKEN) {
        return Err(ApiError::oauth_request(format!("requested_token_type must be {ACCESS_TOKEN}")));
    }
    Ok(request)
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn broker(gateway: &Exchange) -> Result<&Arc<Broker>, ApiError> {
    gateway.broker.as_ref().ok_or_else(ApiError::route_not_found)
}

/// A refused proof at the token endpoint, with a fresh nonce when one is needed.
fn proof_refused(broker: &Broker, error: &DpopError, now: i64) -> ApiError {
    tracing::info!(reason = %error, "token request refused: DPoP proof");
    match error {
        DpopError::UseNonce => {
            let mut refusal = ApiError::oauth(crate::error::ErrorCode::UseDpopNonce);
            if let Ok(nonce) = HeaderValue::from_str(&broker.nonces.issue(now)) {
                refusal.headers.push((http::HeaderName::from_static(dpop::DPOP_NONCE_HEADER), nonce));
            }
            refusal
        }
        DpopError::Unavailable => ApiError::unavailable("tokens cannot be issued right now; try again"),
        other => ApiError::oauth(crate::error::ErrorCode::InvalidDpopProof).with_audit_reason(other.code()),
    }
}

/// `POST /v1/token`.
pub async fn token(State(gateway): State<Exchange>, request: Request) -> Result<Response, ApiError> {
    let broker = broker(&gateway)?;
    let now = crate::time::now();
    let (parts, body) = request.into_parts();
    let form_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let media_type = form_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(ApiError::oauth_request("the body must be application/x-www-form-urlencoded"));
    }
    let body = read_form(body).await?;
    let form = parse_form(&body)?;
    // The app.
    let Some(app) = broker.config.app(&form.client_id) else {
        tracing::info!("token request refused: unknown client_id");
        return Err(ApiError::oauth(crate::error::ErrorCode::InvalidClient));
    };
    // Exactly one target, from the allow-list.
    let [audience] = form.targets.as_slice() else {
        return Err(ApiError::oauth(crate::error::ErrorCode::InvalidTarget)
            .with_audit_reason(crate::reason::AuditReason::TargetCount));
    };
    if !broker.config.audiences.contains(audience) {
        return Err(ApiError::oauth(crate::error::ErrorCode::InvalidTarget));
    }
    // The device key's proof (no access token yet, so no ath).
    let proof = dpop::proof_header(&parts.headers).map_err(|error| proof_refused(broker, &error, now))?;
    let htu = broker.config.htu(super::TOKEN_PATH);
    let expected = Expected { method: "POST", htu: &htu, access_token: None, now };
    let proof = broker.verify_proof(proof, &expected).map_err(|error| proof_refused(broker, &error, now))?;
    // The user, by the app's identity provider.
    let Some((provider, keys)) = gateway.issuers.by_name(&app.identity_provider) else {
        return Err(ApiError::internal());
    };
    // A subject token refused for any reason is `invalid_request` (RFC 8693 2.2.2).
    let user = match crate::broker::idp::Issuers::verify(provider, keys, &form.subject_token, now).await {
        Ok(user) => user,
        Err(error) => {
            tracing::info!(reason = %error, client_id = %app.client_id, "token request refused: subject token");
            return Err(ApiError::subject_token_refused(crate::reason::AuditReason::SubjectToken));
        }
    };
    // The ID token must have been issued to this app, not to another app of the same identity
    // provider (OIDC Core 3.1.3.7: `aud` and `azp`).
    if let Err(error) = crate::broker::idp::check_issued_to(&user.claims, &app.client_id) {
        tracing::info!(reason = %error, client_id = %app.client_id, "token request refused: the ID token was issued to another client");
        return Err(ApiError::subject_token_refused(error.audit_reason()));
    }
    if !user.subject.bytes().all(|b| b.is_ascii_graphic()) {
        tracing::info!("token request refused: subject with characters outside printable ASCII");
        return Err(ApiError::subject_token_refused(crate::reason::AuditReason::SubjectToken));
    }
    // Platform attestation, when the app requires it.
    let attestation = match app.attestation {
        None => None,
        Some(kind) => {
            let Some(attestor) = broker.attestor(kind) else {
                return Err(ApiError::internal());
            };
            let evidence = Evidence { headers: &parts.headers, client_id: &app.client_id, jkt: &proof.jkt, now };
            match attestor.verify(&evidence).await {
                Ok(label) => Some(label),
                Err(reason) => {
                    tracing::info!(%reason, client_id = %app.client_id, "token request refused: attestation");
                    return Err(ApiError::oauth(crate::error::ErrorCode::InvalidGrant)
                        .with_audit_reason(crate::reason::AuditReason::Attestation));
                }
            }
        }
    };
    // Only now, with the user and the app authenticated, is the proof recorded (replay check).
    broker.remember_proof(&proof, now).await.map_err(|error| proof_refused(broker, &error, now))?;
    // Issuance rate per user and per device key.
    if let Some(rate) = app.token_rate {
        let buckets = [
            (format!("t:{}", PrincipalId::app_user(&app.client_id, &user.subject)), rate),
            (format!("t:{}", PrincipalId::device(&proof.jkt)), rate),
        ];
        gateway.limiter.spend(&buckets).await?;
    }
    // Scope: the request's intersection with the app's policy, never more.
    let requested = match form.scope.as_deref() {
        None => None,
        Some(scope) => {
            Some(TokenScope::parse(scope).ok_or_else(|| ApiError::oauth(crate::error::ErrorCode::InvalidScope))?)
        }
    };
    let policy = TokenScope::of_app(app);
    // Sign with the newest key: a rotation made by the CLI or another node is seen within a second.
    broker.keys.reload_if_older(std::time::Duration::from_secs(1), now).await;
    let granted = TokenScope::intersect(&policy, requested.as_ref())
        .ok_or_else(|| ApiError::oauth(crate::error::ErrorCode::InvalidScope))?;
    let (token, claims) =
        broker.issue(app, &user.subject, audience, &granted, &proof.jkt, attestation, now).map_err(|error| {
            tracing::error!(%error, "could not sign an access token");
            ApiError::unavailable("tokens cannot be issued right now; try again")
        })?;
    tracing::info!(
        client_id = %app.client_id,
        sub = %claims.sub,
        jti = %claims.jti,
        jkt = %claims.cnf.jkt,
        "access token issued"
    );
    let scope = granted.to_scope();
    let mut body = serde_json::json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN,
        "token_type": "DPoP",
        "expires_in": claims.exp - claims.iat,
    });
    // RFC 8693 2.2.1: scope is required when it differs from the request; always sent here.
    body["scope"] = serde_json::Value::String(scope);
    let mut response = no_store((StatusCode::OK, axum::Json(body)).into_response());
    response.extensions_mut().insert(PrincipalId::app_user(&app.client_id, &claims.sub));
    Ok(response)
}

async fn read_form(body: Body) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(Some(MAX_FORM_BYTES)))
        }
        Err(_) => Err(ApiError::oauth_request("the request body could not be read")),
    }
}

/// `POST /v1/nonce`: a fresh DPoP nonce, in the `DPoP-Nonce` header and the body.
pub async fn nonce(State(gateway): State<Exchange>) -> Result<Response, ApiError> {
    let broker = broker(&gateway)?;
    let nonce = broker.nonces.issue(crate::time::now());
    let mut response = no_store(axum::Json(serde_json::json!({ "nonce": nonce })).into_response());
    if let Ok(value) = HeaderValue::from_str(&nonce) {
        response.headers_mut().insert(dpop::DPOP_NONCE_HEADER, value);
    }
    Ok(response)
}

/// `GET /.well-known/jwks.json`: the public keys that verify our tokens.
pub async fn jwks(State(gateway): State<Exchange>) -> Result<Response, ApiError> {
    let broker = broker(&gateway)?;
    let now = crate::time::now();
    broker.keys.reload_if_older(std::time::Duration::from_secs(1), now).await;
    let mut response = axum::Json(broker.keys.jwks(now)).into_response();
    // Short enough that a rotation is seen well within a token's lifetime.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            serializer.append_pair(name, value);
        }
        serializer.finish().into_bytes()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", ID_TOKEN),
            ("client_id", "app"),
            ("audience", "https://models.example.com"),
        ]
    }

    #[test]
    fn a_well_formed_request_parses() {
        let request = parse_form(&form(&good())).unwrap();
        assert_eq!(request.client_id, "app");
        assert_eq!(request.targets, ["https://models.example.com"]);
    }

    #[test]
    fn malformed_requests_are_refused_with_the_right_code() {
        let code = |pairs: &[(&str, &str)]| parse_form(&form(pairs)).unwrap_err().code;
        let mut repeated = good();
        repeated.push(("client_id", "other"));
        assert_eq!(code(&repeated), "invalid_request");
        let mut wrong_grant = good();
        wrong_grant[0] = ("grant_type", "client_credentials");
        assert_eq!(code(&wrong_grant), "unsupported_grant_type");
        let mut access = good();
        access.push(("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"));
        assert_eq!(code(&access), "invalid_request");
        let mut actor = good();
        actor.push(("actor_token", "x"));
        assert_eq!(code(&actor), "invalid_request");
        let mut saml = good();
        saml[2] = ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2");
        assert_eq!(code(&saml), "invalid_request");
        assert_eq!(code(&good()[1..]), "invalid_request", "no grant_type");
        assert_eq!(parse_form(b"%zz=\xff&grant_type").unwrap_err().code, "invalid_request");
    }

    #[test]
    fn oauth_errors_have_the_rfc_shape_and_no_store() {
        let error = ApiError::oauth(crate::error::ErrorCode::InvalidGrant);
        let body: serde_json::Value = serde_json::from_str(&error.body("r", false)).unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert!(error.headers.iter().any(|(name, value)| name == header::CACHE_CONTROL && value == "no-store"));
    }
}
