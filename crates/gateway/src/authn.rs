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
    error::ApiError,
    serve::Gateway,
    store::{ModelScope, Scopes},
    tls::PeerCertificate,
};

/// Paths anyone may call: liveness and readiness carry no information worth protecting, and
/// orchestrators probe them without credentials.
pub const PUBLIC_ROUTES: &[&str] = &["/v2/health/live", "/v2/health/ready"];

/// The header for clients that cannot set `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    ApiKey,
    /// A client certificate listed in `[[tls.clients]]`.
    ClientCert,
    Anonymous,
}

/// An authenticated caller. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id for logs and limits: `key:<kid>` or `anonymous:<ip>`.
    pub id: String,
    pub kind: PrincipalKind,
    pub name: String,
    pub models: ModelScope,
    pub scopes: Scopes,
    /// The key's own output policy, if it has one.
    pub output: Option<crate::minimise::OutputPolicy>,
    pub widen_output: bool,
    /// The key's own limits (unset ones fall back to `[limits]`).
    pub limits: crate::store::KeyLimits,
}

impl Principal {
    fn anonymous(client: Option<std::net::IpAddr>) -> Principal {
        let ip = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        Principal {
            id: format!("anonymous:{ip}"),
            kind: PrincipalKind::Anonymous,
            name: "anonymous".into(),
            // Anonymous callers reach public models only; authz enforces it.
            models: ModelScope::Only(Vec::new()),
            scopes: Scopes::ALL,
            output: None,
            widen_output: false,
            limits: crate::store::KeyLimits::default(),
        }
    }
}

impl Principal {
    fn client_cert(client: &crate::config::TlsClient) -> Principal {
        Principal {
            id: format!("cert:{}", client.name),
            kind: PrincipalKind::ClientCert,
            name: client.name.clone(),
            models: client.models.clone(),
            scopes: client.scopes,
            output: client.output,
            widen_output: false,
            limits: client.limits.clone(),
        }
    }
}

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
    pub fn code(self) -> &'static str {
        match self {
            AuthnError::Malformed(_) => "malformed",
            AuthnError::WrongKind => "wrong_kind",
            AuthnError::Unknown => "unknown_key",
            AuthnError::WrongSecret => "wrong_secret",
            AuthnError::Revoked => "revoked",
            AuthnError::Expired => "expired",
            AuthnError::Scheme => "unsupported_scheme",
            AuthnError::Unavailable => "store_unavailable",
        }
    }
}

/// The credential a request presents, if any.
#[derive(PartialEq, Eq)]
enum Credential<'a> {
    None,
    Bearer(&'a str),
    UnknownScheme,
}

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

/// Middleware: authenticates every request that is not on a public route, and puts the
/// [`Principal`] in the request's extensions (and its id in the response's, for the access log).
pub async fn authenticate(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if PUBLIC_ROUTES.contains(&path) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    let client = crate::limits::client_ip(peer, request.headers(), &gateway.config.limits.trusted_proxies);
    // A client certificate is a credential only if the config maps it to a client; any other
    // verified certificate just secured the connection.
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|cert| gateway.config.tls.as_ref().and_then(|tls| cert.client(&tls.clients)));
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
            let public = model_in_path(path)
                .and_then(|name| gateway.registry.get(name))
                .is_some_and(|model| model.config.public);
            if !public {
                tracing::info!(reason = "no credential", "request refused");
                return ApiError::unauthenticated(false).with_audit_reason("no_credential").into_response();
            }
            Principal::anonymous(client)
        }
        Ok(Credential::UnknownScheme) => {
            tracing::info!(reason = %AuthnError::Scheme, "request refused");
            gateway.metrics.authn_failure(AuthnError::Scheme);
            return ApiError::unauthenticated(true).with_audit_reason(AuthnError::Scheme.code()).into_response();
        }
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
                gateway.metrics.authn_failure(reason);
                return ApiError::unauthenticated(true).with_audit_reason(reason.code()).into_response();
            }
        },
    };
    let id = PrincipalId(principal.id.clone());
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(id);
    response
}

/// The principal's id, carried on the response for the access log.
#[derive(Debug, Clone)]
pub struct PrincipalId(pub String);

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
