//! A fast scripted OpenAI-compatible upstream for `bench/llm.sh`: canned answers at once, so a
//! benchmark measures the gateway in front of it, not a model. Loopback only.
//!
//!     cargo run --release -p gateway --example llm_upstream -- [PORT] [DELAY_MS]
//!
//! Prints the port it listens on, then serves `GET /v1/models` and `POST /v1/chat/completions`
//! (a whole answer, or with `"stream": true` 16 SSE chunks, a usage chunk and `[DONE]`). Every
//! answer reports its `usage` and has at most 16 completion tokens (9 whole, 16 streamed), so
//! it stays within any `max_tokens` of 16 or more. With `DELAY_MS` each answer waits that long
//! first, so that many requests are in flight at once (the budget accuracy run of the bench).

use std::time::Duration;

use axum::{
    Router,
    body::{Body, Bytes},
    response::{IntoResponse, Response},
    routing::{get, post},
};

const ANSWER: &str = r#"{"id":"chatcmpl-up","object":"chat.completion","created":1,"model":"stub-chat","system_fingerprint":"fp-up","choices":[{"index":0,"message":{"role":"assistant","content":"the quick brown fox jumps over the lazy dog"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

fn stream() -> String {
    let mut events = String::new();
    for word in 0..16 {
        events += &format!(
            "data: {{\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"stub-chat\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{word} \"}},\"finish_reason\":null}}]}}\n\n"
        );
    }
    events += "data: {\"id\":\"chatcmpl-up\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"stub-chat\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":16,\"total_tokens\":25}}\n\n";
    events += "data: [DONE]\n\n";
    events
}

async fn chat(delay: Duration, body: Bytes) -> Response {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let streaming = std::str::from_utf8(&body).is_ok_and(|text| text.contains("\"stream\":true"));
    if streaming {
        ([("content-type", "text/event-stream")], Body::from(stream())).into_response()
    } else {
        ([("content-type", "application/json")], ANSWER).into_response()
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|port| port.parse().ok()).unwrap_or(0);
    let delay = Duration::from_millis(std::env::args().nth(2).and_then(|ms| ms.parse().ok()).unwrap_or(0));
    let app = Router::new()
        .route("/v1/models", get(|| async { r#"{"object":"list","data":[{"id":"stub-chat","object":"model"}]}"# }))
        .route("/v1/chat/completions", post(move |body: Bytes| chat(delay, body)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?.port());
    axum::serve(listener, app).await
}
