//! Reading a request body under a cap: a declared oversize is refused before reading, and an
//! undeclared one as soon as it passes the cap, so no body is ever held whole past the limit.

use axum::body::Body;
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::ApiError;

/// The body, or 413 past `limit` and 400 if it cannot be read.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<bytes::Bytes, ApiError> {
    // Refuse a declared oversize at once, without reading it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::payload_too_large(Some(limit)));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(Some(limit)))
        }
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}
