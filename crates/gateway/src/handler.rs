//! The endpoints: each finds the model, asks `authz` for a grant, and only then touches it.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::{
    authz,
    backend::{BackendError, Model},
    error::ApiError,
    minimise,
    oip::{self, INFERENCE_HEADER_CONTENT_LENGTH, InferResponse, ServerMetadata},
    principal::Principal,
    request::RequestId,
    state::Gateway,
};

pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "live": true }))
}

pub async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.is_ready().await {
        Json(serde_json::json!({ "ready": true })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "ready": false }))).into_response()
    }
}

pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], gateway.metrics().render())
        .into_response()
}

/// `GET /usage?key=ID&since=YYYY-MM-DD` on the admin listener: requests, rows, tokens and spend
/// per key, model and UTC day, as `portcullis keys usage --json` prints them.
pub async fn usage(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let since = match query.get("since") {
        Some(day) => crate::time::parse_day(day).map_err(ApiError::bad_request)?,
        None => crate::time::month_start(crate::time::now()),
    };
    let key = query.get("key").map(String::as_str);
    let rows = gateway.verifier().store().usage(key, &since).await.map_err(|error| {
        tracing::error!(%error, "usage lookup failed");
        ApiError::unavailable("the store is unavailable; try again")
    })?;
    let rows: Vec<serde_json::Value> = rows.iter().map(crate::store::Usage::to_json).collect();
    Ok(Json(rows).into_response())
}

pub async fn server_metadata(State(gateway): State<Arc<Gateway>>) -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: gateway.config().name.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        extensions: vec!["binary_tensor_data".to_owned()],
    })
}

pub async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Finds the model and checks the caller may do `action` to it (and that the version, if
/// named, is the one served).
fn grant<P: authz::Permission>(
    gateway: &Gateway,
    principal: &Principal,
    name: &str,
    version: Option<&str>,
) -> Result<crate::backend::Grant<P>, ApiError> {
    let model = gateway.registry().get(name).ok_or_else(|| ApiError::model_not_found(name))?;
    let grant = authz::authorize::<P, _>(principal, model)?;
    if let Some(version) = version
        && version != model.config.version
    {
        return Err(ApiError::version_not_found(name, version));
    }
    Ok(grant)
}

/// The model's metadata as the grant's output policy lets the caller see it.
async fn visible_metadata<P: authz::Permission>(
    grant: &crate::backend::Grant<P>,
    request_id: &str,
) -> Result<oip::ModelMetadata, ApiError> {
    let model = grant.model();
    let metadata = model.metadata(request_id).await.map_err(|error| backend_error(&error, request_id, model))?;
    Ok(minimise::metadata(grant.output(), model.config.output.as_ref(), &metadata))
}

/// A backend failure as the client sees it; the detail goes to the log here.
fn backend_error(error: &BackendError, request_id: &str, model: &Model) -> ApiError {
    let name = &model.config.name;
    match error {
        BackendError::Busy => ApiError::busy("the model is busy; try again shortly"),
        BackendError::UpstreamTimeout => {
            tracing::warn!(request_id = %request_id, model = %name, "upstream timed out");
            ApiError::upstream_timeout()
        }
        BackendError::UpstreamUnavailable(_) => {
            tracing::error!(request_id = %request_id, model = %name, %error, "upstream unreachable");
            ApiError::upstream_unavailable()
        }
        BackendError::Upstream(_) => {
            tracing::error!(request_id = %request_id, model = %name, %error, "upstream failed");
            ApiError::upstream_error()
        }
        BackendError::Load { .. } | BackendError::Run(_) => {
            tracing::error!(request_id = %request_id, model = %name, %error, "inference failed");
            ApiError::internal()
        }
    }
}

fn request_id(request: &Request) -> String {
    request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default()
}

pub async fn model_metadata(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Json<oip::ModelMetadata>, ApiError> {
    let grant = grant::<authz::Metadata>(&gateway, &principal, &name, None)?;
    Ok(Json(visible_metadata(&grant, &request_id(&request)).await?))
}

pub async fn model_version_metadata(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Result<Json<oip::ModelMetadata>, ApiError> {
    let grant = grant::<authz::Metadata>(&gateway, &principal, &name, Some(&version))?;
    Ok(Json(visible_metadata(&grant, &request_id(&request)).await?))
}

pub async fn model_ready(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let grant = grant::<authz::Metadata>(&gateway, &principal, &name, None)?;
    ready_response(grant.model(), &request_id(&request)).await
}

pub async fn model_version_ready(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let grant = grant::<authz::Metadata>(&gateway, &principal, &name, Some(&version))?;
    ready_response(grant.model(), &request_id(&request)).await
}

/// 200 `{"ready": true}`, or 503 `model_not_ready` (an upstream that is down or loading).
async fn ready_response(model: &Model, request_id: &str) -> Result<Response, ApiError> {
    if model.ready(request_id).await {
        Ok(Json(serde_json::json!({ "name": model.config.name, "ready": true })).into_response())
    } else {
        Err(ApiError::model_not_ready(&model.config.name))
    }
}

pub async fn infer(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    run_inference(&gateway, &principal, &name, None, request).await
}

pub async fn model_version_infer(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    run_inference(&gateway, &principal, &name, Some(&version), request).await
}

async fn run_inference(
    gateway: &Gateway,
    principal: &Principal,
    name: &str,
    version: Option<&str>,
    request: Request,
) -> Result<Response, ApiError> {
    // Authorise before reading a byte of the body.
    let grant = grant::<authz::Infer>(gateway, principal, name, version)?;
    let model = Arc::clone(grant.model());
    let request_id = request_id(&request);
    // The limits the limiter layer resolved for this principal (none for unlimited routes).
    let budget = request.extensions().get::<crate::limits::Effective>().cloned().unwrap_or_default();
    let (parts, body) = request.into_parts();
    let json_len = binary_header_length(&parts.headers)?;
    check_content_type(&parts.headers, json_len.is_some())?;
    let encoding = content_encoding(&parts.headers)?;
    let body = crate::body::read_body(body, &parts.headers, gateway.config().max_body_bytes).await?;
    let body = decompress(body, encoding, gateway.config().max_body_bytes)?;

    let limits = &gateway.config().inference.limits;
    let decoded = oip::decode_request(&body, json_len, limits).map_err(|e| ApiError::bad_request(e.0))?;
    drop(body);
    // Inputs are checked against the model; requested outputs against what the policy gives.
    visible_metadata(&grant, &request_id)
        .await?
        .validate(&decoded, model.input_policy(limits.max_batch))
        .map_err(ApiError::invalid_input)?;
    let policy = grant.output();

    let rows = decoded.inputs.first().and_then(|input| input.shape.first()).copied();
    // Rows are known now: charge them against the key's row quota before running anything.
    gateway.limiter().charge_rows(principal, &budget, name, rows.unwrap_or(1)).await?;
    let id = decoded.id.clone();
    let requested = decoded.outputs.clone();
    let binary_default = decoded.binary_output_default;
    let started = Instant::now();
    let result = crate::backend::infer(grant, gateway.pool(), decoded, &request_id).await;
    gateway.metrics().inference(name, started.elapsed().as_secs_f64());
    let outputs = match result.map(|outputs| minimise::apply(policy, model.config.output.as_ref(), outputs)) {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(message)) => {
            tracing::error!(request_id = %request_id, model = %name, %message, "output minimisation failed");
            return Err(ApiError::internal());
        }
        Err(error) => return Err(backend_error(&error, &request_id, &model)),
    };

    // The requested outputs, in the order asked for; all of them if none were named.
    let outputs: Vec<(oip::Tensor, bool)> = if requested.is_empty() {
        outputs.into_iter().map(|tensor| (tensor, binary_default)).collect()
    } else {
        let mut outputs = outputs;
        requested
            .iter()
            .filter_map(|want| {
                let position = outputs.iter().position(|tensor| tensor.name == want.name)?;
                Some((outputs.swap_remove(position), want.binary))
            })
            .collect()
    };
    let response = InferResponse {
        model_name: model.config.name.clone(),
        // Below raw the version is an internal, as in the metadata.
        model_version: (policy == minimise::OutputPolicy::Raw).then(|| model.config.version.clone()),
        id,
        outputs,
    };
    let encoded = oip::encode_response(&response).map_err(|error| {
        tracing::error!(request_id = %request_id, %error, "encoding the response failed");
        ApiError::internal()
    })?;
    let mut http_response = Response::new(Body::from(encoded.body));
    if let Some(rows) = rows {
        http_response.extensions_mut().insert(crate::request::InputRows(rows));
    }
    let headers = http_response.headers_mut();
    match encoded.json_len {
        Some(json_len) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(json_len));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(http_response)
}

fn binary_header_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let mut values = headers.get_all(INFERENCE_HEADER_CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request("Inference-Header-Content-Length is given twice"));
    }
    value
        .to_str()
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|text| text.parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length must be a whole number of bytes"))
}

/// How the request body is compressed (tritonclient's `request_compression_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    /// HTTP's "deflate" is the zlib format (RFC 9110), which is what clients send.
    Deflate,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(value) = values.next() else {
        return Ok(Encoding::Identity);
    };
    if values.next().is_some() {
        return Err(ApiError::unsupported_media_type("Content-Encoding is given twice: send one coding"));
    }
    match value.to_str().unwrap_or("").trim().to_ascii_lowercase().as_str() {
        "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        other => Err(ApiError::unsupported_media_type(format!(
            "Content-Encoding '{other}' is not supported: send gzip, deflate or an uncompressed body"
        ))),
    }
}

/// Decompresses under the same cap as an uncompressed body, so a small bomb cannot expand
/// past it; corrupt data is a 400.
fn decompress(body: bytes::Bytes, encoding: Encoding, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => return Ok(body),
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(&body[..])),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::bad_request("the compressed body is corrupt"))?;
    if out.len() > limit {
        return Err(ApiError::payload_too_large(Some(limit)));
    }
    Ok(out.into())
}

fn check_content_type(headers: &HeaderMap, binary: bool) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json";
    if json || (binary && essence == "application/octet-stream") {
        Ok(())
    } else if binary {
        Err(ApiError::unsupported_media_type(
            "with Inference-Header-Content-Length, send Content-Type: application/octet-stream (or none)",
        ))
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "send inference requests as Content-Type: application/json, not '{essence}'"
        )))
    }
}
