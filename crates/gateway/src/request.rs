//! What one request carries through the layers besides its body: its id, and facts a handler
//! learns for the layers around it. Low in the module order, so that errors, handlers and
//! backends can name them without depending on the router.

/// The id of one request: in the response's `x-request-id`, every error body, and every log
/// line about it. Always ours: a client-supplied id is ignored, so logs cannot be forged.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The header the request id travels in (to the client, and to upstreams).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The number of input rows of an inference, set by the handler for the audit record.
#[derive(Debug, Clone, Copy)]
pub struct InputRows(pub u64);
