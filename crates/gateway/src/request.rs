//! What one request carries through the layers besides its body: its id, and facts a handler
//! learns for the layers around it. Low in the module order, so that errors, handlers and
//! backends can name them without depending on the router.

/// The id of one request: in the response's `x-request-id`, every error body, and every log
/// line about it. Always ours: a client-supplied id is ignored, so logs cannot be forged.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The header the request id travels in (to the client, and to upstreams).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The routes of OpenAI's API that the gateway serves: their errors take OpenAI's shape,
/// `{"error": {"message", "type", "code", "param"}}`, so its SDKs raise their usual exceptions.
pub const OPENAI_ROUTES: &[&str] =
    &["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models"];

/// Whether `path` is one of [`OPENAI_ROUTES`].
pub fn speaks_openai(path: &str) -> bool {
    OPENAI_ROUTES.contains(&path)
}

/// The number of input rows of an inference, set by the handler for the audit record.
#[derive(Debug, Clone, Copy)]
pub struct InputRows(pub u64);

/// Tokens an LLM request used: as its upstream reported them, or counted by the gateway
/// (`estimated`) where it reported none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// What an LLM handler tells the audit record: the model the body named (it is not in the
/// path), a hash of the prompt (never its text), and the tokens used. For a stream the tokens
/// are known only at its end: the slot is filled then, and the record written when the body ends.
#[derive(Debug, Clone, Default)]
pub struct LlmFacts {
    pub model: String,
    pub prompt_sha256: String,
    /// Personal data replaced in the prompt, by kind (`redact_prompts`).
    pub redacted: std::collections::BTreeMap<String, u32>,
    pub usage: std::sync::Arc<std::sync::Mutex<Option<TokenUsage>>>,
}

impl LlmFacts {
    pub fn set_usage(&self, usage: TokenUsage) {
        *self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(usage);
    }

    pub fn usage(&self) -> Option<TokenUsage> {
        *self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `done` when `response`'s body has been sent whole, failed, or been dropped (the client
/// went away): what a layer holds for a request (a concurrency slot, its audit record) then
/// lasts as long as a streamed answer does, not only until its headers.
pub fn on_body_end(
    response: axum::response::Response,
    done: impl FnOnce() + Send + 'static,
) -> axum::response::Response {
    let (parts, body) = response.into_parts();
    let body = axum::body::Body::new(BodyEnd { body, done: Some(Box::new(done)) });
    axum::response::Response::from_parts(parts, body)
}

struct BodyEnd {
    body: axum::body::Body,
    done: Option<Box<dyn FnOnce() + Send>>,
}

impl BodyEnd {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done();
        }
    }
}

impl hyper::body::Body for BodyEnd {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for BodyEnd {
    fn drop(&mut self) {
        self.finish();
    }
}
