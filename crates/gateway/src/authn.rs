//! Who is calling: turns the request's credential into a [`Principal`], or refuses.
//!
//! Authentication wraps the whole router, unknown paths included, so nothing is reachable by
//! forgetting to protect it. The only exemptions are [`PUBLIC_ROUTES`] (health checks) and models
//! whose config says `public = true`, which anonymous callers reach as [`PrincipalKind::Anonymous`].
//!
//! The client learns only "a valid credential is required". Why a credential failed (malformed,
//! unknown, revoked, expired, wrong secret) goes to the log with the key id, never the key.

pub mod api_key;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, header};

use crate::{
    broker::{Broker, idp::Issuers},
    config::{Config, TlsClient},
    error::ApiError,
    limits::Limiter,
    metrics::Metrics,
    principal::{Principal, PrincipalId, PrincipalKind},
    store::ModelScope,
    tls::PeerCertificate,
};

/// Paths anyone may call: liveness and readiness carry no information worth protecting, and
/// orchestrators probe them without credentials.
pub const PUBLIC_ROUTES: &[&str] = &["/v2/health/live", "/v2/health/ready"];

/// The header for clients that cannot set `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Why a credential was refused. For logs; the client sees one generic 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("malformed key: {0}")]
    Malformed(apikey::ParseError),
    #[error("not an API key of this kind")]
    WrongKind,
    #[error("unknown key")]
    Unknown,
    #[error("wrong secret")]
    WrongSecret,
    #[error("key revoked")]
    Revoked,
    #[error("key expired")]
    Expired,
    #[error("unsupported authorization scheme")]
    Scheme,
    #[error("the key store is unavailable")]
    Unavailable,
}

impl AuthnError {
    /// A stable name for logs, metrics and the audit log.
    pub fn code(self) -> crate::reason::AuditReason {
        use crate::reason::AuditReason;
        match self {
            AuthnError::Malformed(_) => AuditReason::Malformed,
            AuthnError::WrongKind => AuditReason::WrongKind,
            AuthnError::Unknown => AuditReason::UnknownKey,
            AuthnError::WrongSecret => AuditReason::WrongSecret,
            AuthnError::Revoked => AuditReason::Revoked,
            AuthnError::Expired => AuditReason::Expired,
            AuthnError::Scheme => AuditReason::UnsupportedScheme,
            AuthnError::Unavailable => AuditReason::StoreUnavailable,
        }
    }
}

/// The credential a request presents, if any.
#[derive(PartialEq, Eq)]
enum Credential<'a> {
    None,
    Bearer(&'a str),
    /// `Authorization: DPoP <token>`: a broker token, with a proof in the `DPoP` header.
    Dpop(&'a str),
    UnknownScheme,
}

/// The header a delegate key names its end user in.
pub const ON_BEHALF_OF_HEADER: &str = "portcullis-on-behalf-of";

/// Finds the one credential in the headers. Two `Authorization` headers, two `x-api-key`
/// headers, or both kinds at once are refused: which one would win is ambiguous, and proxies
/// disagree.
fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    let mut api_key = headers.get_all(API_KEY_HEADER).iter();
    let (first_authorization, first_api_key) = (authorization.next(), api_key.next());
    if authorization.next().is_some() || api_key.next().is_some() {
        return Err(ApiError::bad_request("more than one credential header: send exactly one"));
    }
    match (first_authorization, first_api_key) {
        (None, None) => Ok(Credential::None),
        (Some(_), Some(_)) => Err(ApiError::bad_request("both Authorization and x-api-key are set: send exactly one")),
        (None, Some(value)) => {
            Ok(value.to_str().map_or(Credential::UnknownScheme, |key| Credential::Bearer(key.trim())))
        }
        (Some(value), None) => {
            let Ok(text) = value.to_str() else {
                return Ok(Credential::UnknownScheme);
            };
            // RFC 9110: the scheme is case-insensitive; one or more spaces separate the token.
            let (scheme, token) = text.trim().split_once(' ').unwrap_or((text, ""));
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                Ok(Credential::Bearer(token.trim()))
            } else if scheme.eq_ignore_ascii_case("dpop") && !token.trim().is_empty() {
                Ok(Credential::Dpop(token.trim()))
            } else {
                Ok(Credential::UnknownScheme)
            }
        }
    }
}

/// The model a `/v2/models/{name}...` path names.
pub fn model_in_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v2/models/")?.split('/').next().filter(|name| !name.is_empty())
}

/// What authentication needs, and nothing more: the middleware's state (cheap to clone).
#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<api_key::KeyVerifier>,
    issuers: Arc<Issuers>,
    broker: Option<Arc<Broker>>,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    /// `[[tls.clients]]`, when the public listener has TLS.
    clients: Option<Arc<[TlsClient]>>,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    /// Models anonymous callers may reach (`public = true`).
    public_models: Arc<std::collections::HashSet<String>>,
}

impl Authenticator {
    pub fn new(
        config: &Config,
        verifier: api_key::KeyVerifier,
        issuers: Arc<Issuers>,
        broker: Option<Arc<Broker>>,
        limiter: Arc<Limiter>,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        Authenticator {
            verifier: Arc::new(verifier),
            issuers,
            broker,
            limiter,
            metrics,
            clients: config.tls.as_ref().map(|tls| tls.clients.clone().into()),
            trusted_proxies: config.limits.trusted_proxies.clone().into(),
            public_models: Arc::new(
                config.models.iter().filter(|model| model.public).map(|model| model.name.clone()).collect(),
            ),
        }
    }

    /// The API key verifier (and through it, the key store).
    pub fn verifier(&self) -> &Arc<api_key::KeyVerifier> {
        &self.verifier
    }
}

/// Middleware: authenticates every request that is not on a public route, and puts the
/// [`Principal`] in the request's extensions (and its id in the response's, for the access log).
pub async fn authenticate(State(gateway): State<Authenticator>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if PUBLIC_ROUTES.contains(&path) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    let client = crate::limits::client_ip(peer, request.headers(), &gateway.trusted_proxies);
    // An address whose credentials keep being refused is refused before any lookup: floods of
    // bad or missing keys cost neither the store nor much of the audit log.
    if let Err(refusal) = gateway.limiter.check_unauthenticated(client) {
        return refusal.into_response();
    }
    let limiter = Arc::clone(&gateway.limiter);
    let response = identify(gateway, request, next, client).await;
    if response.status() == http::StatusCode::UNAUTHORIZED && response.extensions().get::<PrincipalId>().is_none() {
        limiter.count_unauthenticated(client);
    }
    response
}

/// Authenticates one request from `client` (see [`authenticate`]).
async fn identify(
    gateway: Authenticator,
    mut request: Request,
    next: Next,
    client: Option<std::net::IpAddr>,
) -> Response {
    let path = request.uri().path();
    if gateway.broker.is_some() && crate::broker::ROUTES.contains(&path) {
        // The broker's endpoints are how an app gets a credential: they take none, and are
        // limited per client address like anonymous calls.
        let principal = Principal::anonymous(client);
        let id = principal.id.clone();
        request.extensions_mut().insert(principal);
        let mut response = next.run(request).await;
        if response.extensions().get::<PrincipalId>().is_none() {
            response.extensions_mut().insert(id);
        }
        return response;
    }
    // A client certificate is a credential only if the config maps it to a client; any other
    // verified certificate just secured the connection.
    let certificate = match (request.extensions().get::<PeerCertificate>(), gateway.clients.as_ref()) {
        (Some(cert), Some(clients)) => match cert.client(clients) {
            Ok(client) => client,
            Err(ambiguous) => {
                tracing::warn!(%ambiguous, subject = %cert.subject, "request refused: ambiguous client certificate");
                return ApiError::unauthenticated(true)
                    .with_audit_reason(crate::reason::AuditReason::ClientCertAmbiguous)
                    .into_response();
            }
        },
        _ => None,
    };
    let principal = match credential(request.headers()) {
        Err(error) => return error.into_response(),
        Ok(Credential::None) if certificate.is_some() => {
            certificate.map(Principal::client_cert).unwrap_or_else(|| Principal::anonymous(client))
        }
        Ok(_) if certificate.is_some() => {
            return ApiError::bad_request(
                "this client certificate is itself a credential: do not send a key or token with it",
            )
            .into_response();
        }
        Ok(Credential::None) => {
            let public = model_in_path(path).is_some_and(|name| gateway.public_models.contains(name));
            if !public {
                tracing::info!(reason = "no credential", "request refused");
                return ApiError::unauthenticated(false)
                    .with_audit_reason(crate::reason::AuditReason::NoCredential)
                    .into_response();
            }
            Principal::anonymous(client)
        }
        Ok(Credential::UnknownScheme) => {
            tracing::info!(reason = %AuthnError::Scheme, "request refused");
            gateway.metrics.authn_failure(AuthnError::Scheme.code());
            return ApiError::unauthenticated(true).with_audit_reason(AuthnError::Scheme.code()).into_response();
        }
        Ok(Credential::Dpop(token)) => {
            match dpop_token(&gateway, token, request.headers(), request.method().as_str(), request.uri().path()).await
            {
                Ok(principal) => principal,
                Err(refusal) => return refusal.into_response(),
            }
        }
        Ok(Credential::Bearer(token)) if looks_like_jwt(token) => match bearer_jwt(&gateway, token).await {
            Ok(principal) => principal,
            Err(refusal) => return refusal.into_response(),
        },
        Ok(Credential::Bearer(token)) => match gateway.verifier.verify(token).await {
            Ok(principal) => principal,
            Err(AuthnError::Unavailable) => {
                return ApiError::unavailable("the credential store is unavailable; try again")
                    .with_audit_reason(AuthnError::Unavailable.code())
                    .into_response();
            }
            Err(reason) => {
                // The key id is public; log it when the key parsed, to trace abuse of one key.
                let kid = apikey::parse(token).map(|key| key.kid().to_owned()).unwrap_or_default();
                tracing::info!(reason = %reason, kid = %kid, "request refused");
                gateway.metrics.authn_failure(reason.code());
                return ApiError::unauthenticated(true).with_audit_reason(reason.code()).into_response();
            }
        },
    };
    let principal = match on_behalf_of(principal, request.headers()) {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    let id = principal.id.clone();
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(id);
    response
}

/// A JWT rather than an API key: three base64url parts.
fn looks_like_jwt(token: &str) -> bool {
    !token.starts_with("ptcl_") && token.bytes().filter(|&b| b == b'.').count() == 2
}

/// `Portcullis-On-Behalf-Of`: a delegate key (an app backend) names the end user it acts for;
/// limits and quotas then apply per end user, and the audit record names both
/// (`key:<kid>/user:<id>`). Any other credential sending it is refused.
fn on_behalf_of(mut principal: Principal, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let mut values = headers.get_all(ON_BEHALF_OF_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(principal);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request("more than one Portcullis-On-Behalf-Of header: send exactly one"));
    }
    if !principal.delegate {
        tracing::info!(principal = %principal.id, "request refused: Portcullis-On-Behalf-Of from a key that is not a delegate");
        return Err(ApiError::forbidden().with_audit_reason(crate::reason::AuditReason::NotADelegate));
    }
    let user = value
        .to_str()
        .ok()
        .filter(|user| !user.is_empty() && user.len() <= 128 && user.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request("Portcullis-On-Behalf-Of must be a user id of 1 to 128 printable ASCII characters")
        })?;
    let key = std::mem::take(&mut principal.id);
    principal.id = key.on_behalf_of(user);
    principal.delegator = Some(key);
    Ok(principal)
}

/// `Authorization: DPoP <token>` with its proof: a broker token.
async fn dpop_token(
    gateway: &Authenticator,
    token: &str,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Principal, ApiError> {
    let Some(broker) = &gateway.broker else {
        gateway.metrics.authn_failure(AuthnError::Scheme.code());
        return Err(ApiError::unauthenticated(true).with_audit_reason(AuthnError::Scheme.code()));
    };
    let now = crate::time::now();
    let proof = crate::broker::dpop::proof_header(headers);
    let result = match proof {
        Ok(proof) => broker.authenticate(token, proof, method, path, now).await,
        Err(error) => Err(crate::broker::TokenError::Proof(error)),
    };
    result.map_err(|error| {
        use crate::broker::{TokenError, dpop::DpopError};
        tracing::info!(reason = %error, "request refused: broker token");
        let refusal = match &error {
            TokenError::Proof(DpopError::Unavailable) => {
                return ApiError::unavailable("credentials cannot be checked right now; try again")
                    .with_audit_reason(error.code());
            }
            TokenError::Proof(DpopError::UseNonce) => {
                ApiError::dpop_unauthenticated(crate::error::ErrorCode::UseDpopNonce, Some(broker.nonces.issue(now)))
            }
            TokenError::Proof(_) => ApiError::dpop_unauthenticated(crate::error::ErrorCode::InvalidDpopProof, None),
            TokenError::Token(_) | TokenError::UnknownApp(_) => {
                ApiError::dpop_unauthenticated(crate::error::ErrorCode::InvalidToken, None)
            }
        };
        refusal.with_audit_reason(error.code())
    })
}

/// `Authorization: Bearer <JWT>`: an access token from a trusted identity provider. Our own
/// broker's tokens are DPoP-bound and refused here (a downgrade to Bearer would make a stolen
/// token usable without the device key).
async fn bearer_jwt(gateway: &Authenticator, token: &str) -> Result<Principal, ApiError> {
    let refuse = |reason: crate::reason::AuditReason| {
        tracing::info!(%reason, "request refused: bearer JWT");
        ApiError::unauthenticated(true).with_audit_reason(reason)
    };
    let issuer = crate::broker::idp::unverified_issuer(token);
    if let (Some(broker), Some(issuer)) = (&gateway.broker, issuer.as_deref())
        && issuer == broker.config.issuer
    {
        return Err(ApiError::dpop_unauthenticated(crate::error::ErrorCode::InvalidToken, None)
            .with_audit_reason(crate::reason::AuditReason::DpopTokenAsBearer));
    }
    let Some((provider, keys)) = gateway.issuers.for_token(token) else {
        return Err(refuse(crate::reason::AuditReason::UnknownIssuer));
    };
    if provider.tokens != crate::config::TokenUse::AccessToken {
        // An ID token is for signing in to an app (and exchange at /v1/token), not for calls.
        return Err(refuse(crate::reason::AuditReason::IdTokenAsBearer));
    }
    let verified =
        crate::broker::idp::Issuers::verify(provider, keys, token, crate::time::now()).await.map_err(|error| {
            tracing::info!(reason = %error, issuer = %provider.name, "request refused: bearer JWT");
            ApiError::unauthenticated(true).with_audit_reason(crate::reason::AuditReason::JwtInvalid)
        })?;
    // A sender-constrained token (`cnf`) needs its proof (RFC 9449 7.1): as a plain Bearer it
    // would let whoever copied it use it.
    if verified.claims.contains_key("cnf") {
        return Err(refuse(crate::reason::AuditReason::BoundTokenAsBearer));
    }
    let subject = match verified.claims.get(&provider.subject_claim).and_then(serde_json::Value::as_str) {
        Some(subject)
            if !subject.is_empty() && subject.len() <= 255 && subject.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            subject.to_owned()
        }
        _ => return Err(refuse(crate::reason::AuditReason::JwtSubject)),
    };
    let models = if provider.models_from_scope {
        let scoped: Vec<String> = token_scopes(&verified.claims)
            .into_iter()
            .filter_map(|scope| scope.strip_prefix("model:").map(str::to_owned))
            .filter(|model| provider.models.allows(model))
            .collect();
        ModelScope::Only(scoped)
    } else {
        provider.models.clone()
    };
    Ok(Principal {
        id: PrincipalId::jwt(&provider.name, &subject),
        kind: PrincipalKind::IdentityToken,
        name: subject,
        models,
        scopes: provider.scopes,
        output: provider.output,
        widen_output: false,
        limits: crate::store::KeyLimits::default(),
        delegate: false,
        device: None,
        delegator: None,
    })
}

/// The scopes a token carries: `scope` (space-delimited, RFC 8693 4.2) or `scp` (an array).
fn token_scopes(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(serde_json::Value::String(text)), _) => {
            text.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        (_, Some(serde_json::Value::Array(items))) => {
            items.iter().filter_map(serde_json::Value::as_str).map(str::to_owned).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn check(pairs: &[(&str, &str)], expected: Result<Option<&str>, ()>) {
        let map = headers(pairs);
        let got = match credential(&map) {
            Ok(Credential::None) => Ok(None),
            Ok(Credential::Bearer(token)) => Ok(Some(token)),
            Ok(Credential::UnknownScheme) => Ok(Some("<unknown scheme>")),
            Ok(Credential::Dpop(token)) => Ok(Some(token)),
            Err(_) => Err(()),
        };
        assert_eq!(got, expected, "{pairs:?}");
    }

    #[test]
    fn credentials_are_found_in_exactly_one_header() {
        check(&[], Ok(None));
        check(&[("authorization", "Bearer abc")], Ok(Some("abc")));
        check(&[("authorization", "bearer abc")], Ok(Some("abc")));
        check(&[("authorization", "BEARER   abc ")], Ok(Some("abc")));
        check(&[("x-api-key", "abc")], Ok(Some("abc")));
        check(&[("authorization", "Basic abc")], Ok(Some("<unknown scheme>")));
        check(&[("authorization", "Bearer")], Ok(Some("<unknown scheme>")));
        check(&[("authorization", "Bearer a"), ("authorization", "Bearer b")], Err(()));
        check(&[("x-api-key", "a"), ("x-api-key", "b")], Err(()));
        check(&[("authorization", "Bearer a"), ("x-api-key", "b")], Err(()));
    }

    #[test]
    fn model_names_are_read_from_model_paths_only() {
        assert_eq!(model_in_path("/v2/models/churn/infer"), Some("churn"));
        assert_eq!(model_in_path("/v2/models/churn"), Some("churn"));
        assert_eq!(model_in_path("/v2/models/"), None);
        assert_eq!(model_in_path("/v2/health/live"), None);
    }
}
