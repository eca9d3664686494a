//! What comes back from an LLM upstream, made fit to pass on: whole answers and streams.
//!
//! Nothing of the upstream's identity reaches the client: no header of its (the client gets a
//! content type and ours), the model under our name, no `system_fingerprint`, no non-standard
//! fields (`timings`), the completion id ours, log probabilities only when the model allows
//! them. A stream is passed on event by event as it arrives, never buffered whole: each
//! Server-Sent Event (OpenAI) or JSON line (Ollama) is parsed, cleaned and sent. An upstream
//! that stalls is cut after the stall timeout, one that breaks the stream's format or exceeds
//! the size of one event ends it with a well-formed error event, and a client that hangs up
//! drops the upstream request with it.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use super::redact::StreamRestore;
use crate::request::TokenUsage;

/// How one answer is cleaned.
#[derive(Debug, Clone)]
pub struct Scrub {
    /// The client-facing model name.
    pub model: String,
    /// The id our answers carry (`chatcmpl-<request id>`), in place of the upstream's.
    pub id: String,
    pub logprobs: bool,
    /// Keep only these top-level fields (Ollama's `show`: its details, never its modelfile with
    /// the upstream's paths), or all but the upstream's own.
    pub keep_only: Option<&'static [&'static str]>,
    /// The client did not ask for a stream's usage (the gateway did, for budgets): its usage
    /// chunk is dropped and `usage` taken off the other chunks.
    pub hide_usage: bool,
    /// The personal data taken out of the prompt, put back in the answer (`restore_redacted`).
    pub restore: super::Restore,
}

/// Fields an answer never carries out: they name or fingerprint the upstream.
const UPSTREAM_FIELDS: &[&str] = &["system_fingerprint", "timings", "service_tier", "__verbose", "generation_settings"];

impl Scrub {
    /// Cleans one answer object (a whole answer or a stream chunk) in place, and returns the
    /// token usage it reports, if any.
    pub fn object(&self, object: &mut Map<String, Value>) -> Option<TokenUsage> {
        if let Some(keep) = self.keep_only {
            object.retain(|key, _| keep.contains(&key.as_str()));
        }
        for field in UPSTREAM_FIELDS {
            object.remove(*field);
        }
        if object.contains_key("model") {
            object.insert("model".into(), Value::from(self.model.as_str()));
        }
        if object.get("id").is_some_and(Value::is_string) {
            object.insert("id".into(), Value::from(self.id.as_str()));
        }
        if !self.logprobs
            && let Some(Value::Array(choices)) = object.get_mut("choices")
        {
            for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
                if choice.contains_key("logprobs") {
                    choice.insert("logprobs".into(), Value::Null);
                }
            }
        }
        // Responses API: the response object is nested in its stream events.
        if let Some(Value::Object(response)) = object.get_mut("response") {
            for field in UPSTREAM_FIELDS {
                response.remove(*field);
            }
            if response.contains_key("model") {
                response.insert("model".into(), Value::from(self.model.as_str()));
            }
        }
        usage_of(object)
    }

    /// Cleans a whole JSON answer; `None` if it is not a JSON object. With it: the usage it
    /// reports and the text it generated.
    pub fn answer(&self, bytes: &[u8]) -> Option<(Bytes, Option<TokenUsage>, String)> {
        let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(bytes) else {
            return None;
        };
        let usage = self.object(&mut object);
        let mut generated = String::new();
        generated_text(&object, &mut generated);
        if let Some(redaction) = &self.restore {
            redaction.restore_answer(&mut object);
        }
        Some((Bytes::from(serde_json::to_vec(&Value::Object(object)).ok()?), usage, generated))
    }
}

/// Appends the text an answer (or one stream chunk) generated, over all its choices: what is
/// counted when the upstream reports no usage, or a stream is cut short.
pub fn generated_text(object: &Map<String, Value>, out: &mut String) {
    let mut take = |value: Option<&Value>| {
        if let Some(Value::String(text)) = value {
            out.push_str(text);
        }
    };
    if let Some(Value::Array(choices)) = object.get("choices") {
        for choice in choices {
            take(choice.get("text"));
            for part in ["delta", "message"] {
                let Some(message) = choice.get(part) else { continue };
                take(message.get("content"));
                take(message.get("reasoning_content"));
                if let Some(Value::Array(calls)) = message.get("tool_calls") {
                    for call in calls {
                        take(call.get("function").and_then(|function| function.get("arguments")));
                    }
                }
            }
        }
    }
    // Ollama: `message` (chat) or `response` (generate); Responses API: text deltas.
    if let Some(message) = object.get("message") {
        take(message.get("content"));
        take(message.get("thinking"));
    }
    take(object.get("response").filter(|value| value.is_string()));
    take(object.get("thinking"));
    if object.get("type").and_then(Value::as_str).is_some_and(|kind| kind.ends_with(".delta")) {
        take(object.get("delta"));
    }
    if let Some(Value::Array(output)) = object.get("output") {
        for item in output {
            if let Some(Value::Array(content)) = item.get("content") {
                for part in content {
                    take(part.get("text"));
                }
            }
        }
    }
}

/// Puts redacted values back into one stream chunk's text, choice by choice, holding back a
/// tail that may be half a placeholder until the next chunk (or the choice's end) completes it.
fn restore_chunk(restore: &mut StreamRestore, object: &mut Map<String, Value>) {
    fn text(restore: &mut StreamRestore, index: usize, slot: &mut Map<String, Value>, field: &str, last: bool) {
        let mut out = match slot.get(field) {
            Some(Value::String(text)) => restore.push(index, text),
            _ => String::new(),
        };
        if last {
            out.push_str(&restore.finish(index));
        }
        if slot.get(field).is_some_and(Value::is_string) || !out.is_empty() {
            slot.insert(field.to_owned(), Value::String(out));
        }
    }
    if let Some(Value::Array(choices)) = object.get_mut("choices") {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            let index = choice.get("index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or(0);
            let last = choice.get("finish_reason").is_some_and(|reason| !reason.is_null());
            if let Some(Value::Object(delta)) = choice.get_mut("delta") {
                text(restore, index, delta, "content", last);
            } else {
                text(restore, index, choice, "text", last);
            }
        }
        return;
    }
    // Ollama: `message.content` (chat) or `response` (generate), the last line `done`; the
    // Responses API: `*.delta` events.
    let last = object.get("done") == Some(&Value::Bool(true));
    if let Some(Value::Object(message)) = object.get_mut("message") {
        text(restore, 0, message, "content", last);
    } else if object.get("response").is_some_and(Value::is_string) {
        text(restore, 0, object, "response", last);
    } else if object.get("type").and_then(Value::as_str).is_some_and(|kind| kind.ends_with(".delta")) {
        text(restore, 0, object, "delta", false);
    }
}

/// The tokens an answer reports: OpenAI's `usage` (chat, completions, embeddings, responses) or
/// Ollama's counts on its last object.
fn usage_of(object: &Map<String, Value>) -> Option<TokenUsage> {
    let count = |value: Option<&Value>| value.and_then(Value::as_u64);
    if let Some(Value::Object(usage)) = object.get("usage").or_else(|| object.get("response")?.get("usage")) {
        let prompt = count(usage.get("prompt_tokens")).or_else(|| count(usage.get("input_tokens")))?;
        let completion =
            count(usage.get("completion_tokens")).or_else(|| count(usage.get("output_tokens"))).unwrap_or(0);
        return Some(TokenUsage { prompt, completion, estimated: false });
    }
    let prompt = count(object.get("prompt_eval_count"))?;
    Some(TokenUsage { prompt, completion: count(object.get("eval_count")).unwrap_or(0), estimated: false })
}

/// How a stream is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// OpenAI: Server-Sent Events, `data: {json}` and a final `data: [DONE]`.
    Sse,
    /// Ollama: one JSON object per line.
    Lines,
}

/// Why a stream ended early; sent to the client as the stream's last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    Stalled,
    TooLong,
    Malformed,
    EventTooLarge,
    Upstream,
}

impl StreamFault {
    fn message(&self) -> &'static str {
        match self {
            StreamFault::Stalled => "the model stopped answering",
            StreamFault::TooLong => "the answer took longer than allowed",
            StreamFault::Malformed => "the model's answer could not be read",
            StreamFault::EventTooLarge => "the model sent an event larger than allowed",
            StreamFault::Upstream => "the model's server failed during the answer",
        }
    }

    fn code(&self) -> &'static str {
        match self {
            StreamFault::Stalled | StreamFault::TooLong => "upstream_timeout",
            _ => "upstream_error",
        }
    }
}

/// Turns upstream bytes into clean events, one frame at a time.
#[derive(Debug)]
pub struct Relay {
    framing: Framing,
    scrub: Scrub,
    pending: BytesMut,
    max_event: usize,
    usage: Option<TokenUsage>,
    done: bool,
    /// Text generated in the events read since [`Relay::take_generated`] was last called.
    generated: String,
    /// Puts redacted personal data back into the stream's text.
    restore: Option<StreamRestore>,
}

impl Relay {
    pub fn new(framing: Framing, scrub: Scrub, max_event: usize) -> Relay {
        Relay {
            framing,
            scrub,
            pending: BytesMut::new(),
            max_event,
            usage: None,
            done: false,
            generated: String::new(),
            restore: None,
        }
    }

    /// Puts the personal data taken out of the prompt back into the stream's text.
    pub fn restoring(mut self, restore: StreamRestore) -> Relay {
        self.restore = Some(restore);
        self
    }

    /// The usage the stream reported (OpenAI: with `stream_options.include_usage`).
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    /// The text generated since the last call.
    pub fn take_generated(&mut self) -> String {
        std::mem::take(&mut self.generated)
    }

    /// Takes a piece of the upstream stream; returns the clean bytes to send now.
    pub fn feed(&mut self, piece: &[u8]) -> Result<Bytes, StreamFault> {
        self.pending.extend_from_slice(piece);
        let mut out = BytesMut::new();
        loop {
            let boundary = match self.framing {
                Framing::Sse => find_event_end(&self.pending),
                Framing::Lines => self.pending.iter().position(|&b| b == b'\n').map(|at| (at, at + 1)),
            };
            let Some((end, next)) = boundary else { break };
            let event = self.pending.split_to(next);
            self.event(&event[..end], &mut out)?;
        }
        if self.pending.len() > self.max_event {
            return Err(StreamFault::EventTooLarge);
        }
        Ok(out.freeze())
    }

    /// The end of the upstream stream: what is left must be a whole event or nothing.
    pub fn finish(&mut self) -> Result<Bytes, StreamFault> {
        let rest = std::mem::take(&mut self.pending);
        let mut out = BytesMut::new();
        if !rest.iter().all(u8::is_ascii_whitespace) {
            self.event(&rest, &mut out)?;
        }
        if self.framing == Framing::Sse && !self.done {
            // A stream that ended without `[DONE]` was cut short.
            return Err(StreamFault::Malformed);
        }
        Ok(out.freeze())
    }

    fn event(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), StreamFault> {
        let text = std::str::from_utf8(event).map_err(|_| StreamFault::Malformed)?;
        match self.framing {
            Framing::Lines => {
                let line = text.trim();
                if line.is_empty() {
                    return Ok(());
                }
                let clean = self.clean_json(line)?;
                if clean.is_empty() {
                    return Ok(());
                }
                out.extend_from_slice(&clean);
                out.extend_from_slice(b"\n");
            }
            Framing::Sse => {
                // Comments (`: ping`) and fields other than data and event are dropped.
                let mut data = String::new();
                let mut name = None;
                for line in text.lines() {
                    if let Some(value) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    } else if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_owned());
                    }
                }
                if data.is_empty() {
                    return Ok(());
                }
                if data.trim() == "[DONE]" {
                    self.done = true;
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    return Ok(());
                }
                let clean = self.clean_json(&data)?;
                if clean.is_empty() {
                    return Ok(());
                }
                if let Some(name) =
                    name.filter(|name| name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'))
                {
                    out.extend_from_slice(format!("event: {name}\n").as_bytes());
                    // The Responses API ends its stream with `response.completed`, not `[DONE]`.
                    if name == "response.completed" || name == "response.failed" || name == "response.incomplete" {
                        self.done = true;
                    }
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&clean);
                out.extend_from_slice(b"\n\n");
            }
        }
        Ok(())
    }

    fn clean_json(&mut self, text: &str) -> Result<Vec<u8>, StreamFault> {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(text) else {
            return Err(StreamFault::Malformed);
        };
        if object.contains_key("error") {
            // An upstream error inside the stream: its text may name the upstream; ours does not.
            return Err(StreamFault::Upstream);
        }
        if let Some(usage) = self.scrub.object(&mut object) {
            self.usage = Some(usage);
        }
        if self.framing == Framing::Lines && object.get("done") == Some(&Value::Bool(true)) {
            self.done = true;
        }
        generated_text(&object, &mut self.generated);
        if let Some(restore) = &mut self.restore {
            restore_chunk(restore, &mut object);
        }
        if self.scrub.hide_usage && object.remove("usage").is_some_and(|usage| !usage.is_null()) {
            // The usage chunk the gateway asked for: no choices, only usage. Not passed on.
            if object.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty) {
                return Ok(Vec::new());
            }
        }
        serde_json::to_vec(&Value::Object(object)).map_err(|_| StreamFault::Malformed)
    }

    /// The event that ends a stream that failed, in the stream's own shape.
    pub fn fault_event(&self, fault: &StreamFault) -> Bytes {
        match self.framing {
            Framing::Sse => {
                let error = serde_json::json!({"error": {
                    "message": fault.message(), "type": "api_error", "code": fault.code(), "param": null
                }});
                Bytes::from(format!("data: {error}\n\n"))
            }
            Framing::Lines => Bytes::from(format!("{}\n", serde_json::json!({ "error": fault.message() }))),
        }
    }
}

/// Where the first complete SSE event in `buffer` ends: (end of its text, start of the next).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while at < buffer.len() {
        let rest = &buffer[at..];
        if rest.starts_with(b"\n\n") {
            return Some((at, at + 2));
        }
        if rest.starts_with(b"\r\n\r\n") {
            return Some((at, at + 4));
        }
        if rest.starts_with(b"\r\r") {
            return Some((at, at + 2));
        }
        at += 1;
    }
    None
}

/// Deadlines for one stream: the whole answer, and the longest silence.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub end: Instant,
    pub stall: Duration,
}

impl Deadlines {
    /// How long the next read may wait, and the fault if it runs out.
    pub fn next_wait(&self) -> (Duration, StreamFault) {
        let left = self.end.saturating_duration_since(Instant::now());
        if left < self.stall { (left, StreamFault::TooLong) } else { (self.stall, StreamFault::Stalled) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub() -> Scrub {
        Scrub {
            model: "chat".into(),
            id: "chatcmpl-ours".into(),
            logprobs: false,
            keep_only: None,
            hide_usage: false,
            restore: None,
        }
    }

    #[test]
    fn an_answer_names_our_model_and_id_and_nothing_of_the_upstream() {
        let upstream = br#"{"id":"chatcmpl-up","model":"org/secret-7b","system_fingerprint":"b0-x","timings":{"a":1},
            "choices":[{"index":0,"message":{"content":"hi"},"logprobs":{"content":[]}}],
            "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let (clean, usage, generated) = scrub().answer(upstream).unwrap();
        let text = String::from_utf8(clean.to_vec()).unwrap();
        for leak in ["secret-7b", "b0-x", "timings", "chatcmpl-up"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((value["model"].as_str(), value["id"].as_str()), (Some("chat"), Some("chatcmpl-ours")));
        assert!(value["choices"][0]["logprobs"].is_null());
        assert_eq!(usage, Some(TokenUsage { prompt: 5, completion: 2, estimated: false }));
        assert_eq!(generated, "hi");
    }

    #[test]
    fn a_stream_is_passed_on_event_by_event_in_any_split() {
        let upstream = "data: {\"id\":\"x\",\"model\":\"up\",\"system_fingerprint\":\"fp\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
            : ping\n\n\
            data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
            data: [DONE]\n\n";
        for split in [1, 2, 7, 64, upstream.len()] {
            let mut relay = Relay::new(Framing::Sse, scrub(), 1024);
            let mut out = Vec::new();
            for piece in upstream.as_bytes().chunks(split) {
                out.extend_from_slice(&relay.feed(piece).unwrap());
            }
            out.extend_from_slice(&relay.finish().unwrap());
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("fp") && !text.contains("\"up\"") && !text.contains("ping"), "{text}");
            assert_eq!(text.matches("data: ").count(), 3, "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(relay.usage(), Some(TokenUsage { prompt: 3, completion: 1, estimated: false }));
        }
    }

    #[test]
    fn a_broken_stream_ends_in_a_fault_not_in_a_half_event() {
        let mut relay = Relay::new(Framing::Sse, scrub(), 1024);
        assert_eq!(relay.feed(b"data: {not json}\n\n"), Err(StreamFault::Malformed));
        let mut cut = Relay::new(Framing::Sse, scrub(), 1024);
        cut.feed(b"data: {\"choices\":[]}\n\n").unwrap();
        assert_eq!(cut.finish(), Err(StreamFault::Malformed), "no [DONE]: cut short");
        let mut huge = Relay::new(Framing::Sse, scrub(), 64);
        assert_eq!(huge.feed(&[b'a'; 100]), Err(StreamFault::EventTooLarge));
        let mut error = Relay::new(Framing::Sse, scrub(), 1024);
        assert_eq!(
            error.feed(b"data: {\"error\":{\"message\":\"at http://10.0.0.5 key sk-up\"}}\n\n"),
            Err(StreamFault::Upstream)
        );
        let fault = String::from_utf8(error.fault_event(&StreamFault::Upstream).to_vec()).unwrap();
        assert!(fault.starts_with("data: {\"error\"") && !fault.contains("10.0.0.5"), "{fault}");
    }

    #[test]
    fn ollama_lines_are_cleaned_and_counted() {
        let mut relay = Relay::new(Framing::Lines, scrub(), 1024);
        let out = relay
            .feed(b"{\"model\":\"llama3:8b\",\"message\":{\"content\":\"a\"},\"done\":false}\n{\"model\":\"llama3:8b\",\"done\":true,\"prompt_eval_count\":4,\"eval_count\":2}\n")
            .unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("llama3") && text.lines().count() == 2, "{text}");
        assert_eq!(relay.usage(), Some(TokenUsage { prompt: 4, completion: 2, estimated: false }));
        relay.finish().unwrap();
    }
}
