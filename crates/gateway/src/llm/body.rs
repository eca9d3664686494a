//! The request body of an LLM route, read once and strictly.
//!
//! The `model` the gateway checks is the `model` it dispatches: the body is parsed into one JSON
//! object with duplicate keys refused at every depth (two parsers could otherwise pick different
//! ones), `model` must be a string, every top-level field must be on the route's list, and the
//! switches that cost or leak (`max_tokens`, `n`, tools, `logprobs`, images) are held to the
//! model's caps before anything is sent upstream.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::config::LlmConfig;

/// The routes that take a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaShow,
}

impl Route {
    /// Every route with a body.
    pub const ALL: [Route; 8] = [
        Route::ChatCompletions,
        Route::Completions,
        Route::Embeddings,
        Route::Responses,
        Route::OllamaChat,
        Route::OllamaGenerate,
        Route::OllamaEmbed,
        Route::OllamaShow,
    ];

    /// The top-level fields a request may carry: OpenAI's and Ollama's documented ones.
    fn fields(self) -> &'static [&'static str] {
        match self {
            Route::ChatCompletions => &[
                "model",
                "messages",
                "stream",
                "stream_options",
                "max_tokens",
                "max_completion_tokens",
                "temperature",
                "top_p",
                "n",
                "stop",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
                "user",
                "seed",
                "response_format",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "functions",
                "function_call",
                "logprobs",
                "top_logprobs",
                "metadata",
                "store",
                "reasoning_effort",
            ],
            Route::Completions => &[
                "model",
                "prompt",
                "suffix",
                "max_tokens",
                "temperature",
                "top_p",
                "n",
                "best_of",
                "stream",
                "stream_options",
                "logprobs",
                "echo",
                "stop",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
                "user",
                "seed",
            ],
            Route::Embeddings => &["model", "input", "encoding_format", "dimensions", "user"],
            Route::Responses => &[
                "model",
                "input",
                "instructions",
                "max_output_tokens",
                "temperature",
                "top_p",
                "stream",
                "tools",
                "tool_choice",
                "parallel_tool_calls",
                "text",
                "reasoning",
                "metadata",
                "store",
                "previous_response_id",
                "user",
                "truncation",
                "include",
                "top_logprobs",
            ],
            Route::OllamaChat => &["model", "messages", "tools", "format", "options", "stream", "keep_alive", "think"],
            Route::OllamaGenerate => &[
                "model",
                "prompt",
                "suffix",
                "images",
                "format",
                "options",
                "system",
                "template",
                "stream",
                "raw",
                "keep_alive",
                "context",
                "think",
            ],
            Route::OllamaEmbed => &["model", "input", "truncate", "options", "keep_alive", "dimensions"],
            Route::OllamaShow => &["model", "verbose"],
        }
    }

    /// The field holding what the caller sends the model, hashed for the audit record.
    fn prompt_field(self) -> &'static [&'static str] {
        match self {
            Route::ChatCompletions | Route::OllamaChat => &["messages"],
            Route::Completions | Route::OllamaGenerate => &["prompt", "system"],
            Route::Embeddings | Route::OllamaEmbed => &["input"],
            Route::Responses => &["input", "instructions"],
            Route::OllamaShow => &[],
        }
    }

    /// Whether this route answers with generated tokens (and so has a token cap).
    fn generates(self) -> bool {
        matches!(
            self,
            Route::ChatCompletions | Route::Completions | Route::Responses | Route::OllamaChat | Route::OllamaGenerate
        )
    }

    pub fn is_ollama(self) -> bool {
        matches!(self, Route::OllamaChat | Route::OllamaGenerate | Route::OllamaEmbed | Route::OllamaShow)
    }
}

/// Why [`LlmRequest::enforce`] refused: the request asks for more than the model allows
/// (400), or for a feature the key may not use (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Request(String),
    Key(String),
}

/// A request body that passed [`parse`]: the object, the model it names, and whether it asks for
/// a stream.
#[derive(Debug)]
pub struct LlmRequest {
    pub route: Route,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client asked for the stream's usage (`stream_options.include_usage`). The upstream
    /// is always asked for it, to settle budgets; this says whether the client sees it.
    pub stream_usage: bool,
}

/// Parses `bytes` as the body of `route`. The message says exactly what is wrong.
pub fn parse(route: Route, bytes: &[u8]) -> Result<LlmRequest, String> {
    let value: Strict =
        serde_json::from_slice(bytes).map_err(|error| format!("the body is not valid JSON: {error}"))?;
    let Value::Object(body) = value.0 else {
        return Err("the body must be a JSON object".into());
    };
    if let Some(unknown) = body.keys().find(|key| !route.fields().contains(&key.as_str())) {
        return Err(format!("unknown field '{unknown}' (not accepted on this route)"));
    }
    // Ollama's `show` still accepts the older `name`; only `model` is read here.
    let model = match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(Value::String(_)) | None => return Err("'model' is required".into()),
        Some(_) => return Err("'model' must be a string".into()),
    };
    // Ollama streams unless told not to; OpenAI only when asked.
    let stream = match body.get("stream") {
        None => route.is_ollama() && route != Route::OllamaShow && route != Route::OllamaEmbed,
        Some(Value::Bool(stream)) => *stream,
        Some(Value::Null) => false,
        Some(_) => return Err("'stream' must be true or false".into()),
    };
    if body.contains_key("stream_options") && !stream {
        return Err("'stream_options' is only for streams ('stream': true)".into());
    }
    let stream_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => return Err("'stream_options.include_usage' must be true or false".into()),
        },
        Some(_) => return Err("'stream_options' must be an object".into()),
    };
    Ok(LlmRequest { route, body, model, stream, stream_usage })
}

impl LlmRequest {
    /// Holds the request to the model's caps, setting the token cap when the request has none.
    /// A costly or leaky feature (tools, log probabilities, images) needs both the model's
    /// switch and the key's scope of the same name: `Err(Refusal::Key)` names the key's.
    /// `key_max_tokens` is the key's own token cap, if it has one: the smaller cap holds.
    pub fn enforce(
        &mut self,
        caps: &LlmConfig,
        scopes: &crate::store::Scopes,
        key_max_tokens: Option<u32>,
    ) -> Result<(), Refusal> {
        let mut caps = std::borrow::Cow::Borrowed(caps);
        if let Some(cap) = key_max_tokens.filter(|cap| *cap < caps.max_tokens) {
            let narrowed = caps.to_mut();
            narrowed.max_tokens = cap;
            narrowed.default_max_tokens = narrowed.default_max_tokens.min(cap);
        }
        self.enforce_model(&caps).map_err(Refusal::Request)?;
        let uses = [
            (self.uses_tools(), scopes.tools, "tools"),
            (self.asks_for_logprobs(), scopes.logprobs, "logprobs"),
            (self.carries_images(), scopes.images, "images"),
        ];
        if let Some((_, _, scope)) = uses.iter().find(|(used, allowed, _)| *used && !*allowed) {
            return Err(Refusal::Key(format!("this key may not use {scope} (it lacks the '{scope}' scope)")));
        }
        Ok(())
    }

    fn uses_tools(&self) -> bool {
        ["tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"]
            .iter()
            .any(|field| self.body.get(*field).is_some_and(given))
    }

    fn enforce_model(&mut self, caps: &LlmConfig) -> Result<(), String> {
        if self.route.generates() {
            self.cap_tokens(caps)?;
        }
        for field in ["n", "best_of"] {
            match self.body.get(field) {
                None | Some(Value::Null) => {}
                Some(value) => match value.as_u64() {
                    Some(n) if n >= 1 && n <= u64::from(caps.max_n) => {}
                    _ => return Err(format!("'{field}' must be a whole number from 1 to {}", caps.max_n)),
                },
            }
        }
        if !caps.tools && self.uses_tools() {
            return Err(format!("tools are not enabled for model '{}'", caps.name));
        }
        if !caps.logprobs && self.asks_for_logprobs() {
            return Err(format!("log probabilities are not enabled for model '{}'", caps.name));
        }
        if !caps.images && self.carries_images() {
            return Err(format!("images are not enabled for model '{}'", caps.name));
        }
        Ok(())
    }

    /// The cap on generated tokens: checked where given, set where not.
    fn cap_tokens(&mut self, caps: &LlmConfig) -> Result<(), String> {
        let cap = u64::from(caps.max_tokens);
        let check = |field: &str, value: &Value| match value.as_u64() {
            Some(n) if n >= 1 && n <= cap => Ok(()),
            _ => Err(format!("'{field}' must be a whole number from 1 to {cap}")),
        };
        if self.route.is_ollama() {
            let options = self.body.entry("options").or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(options) = options else {
                return Err("'options' must be an object".into());
            };
            match options.get("num_predict") {
                None | Some(Value::Null) => {
                    options.insert("num_predict".into(), Value::from(caps.default_max_tokens));
                }
                Some(value) => check("options.num_predict", value)?,
            }
            return Ok(());
        }
        let fields: &[&str] = match self.route {
            Route::ChatCompletions => &["max_tokens", "max_completion_tokens"],
            Route::Responses => &["max_output_tokens"],
            _ => &["max_tokens"],
        };
        let mut given = false;
        for field in fields {
            match self.body.get(*field) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    check(field, value)?;
                    given = true;
                }
            }
        }
        if !given {
            self.body.insert(fields[0].into(), Value::from(caps.default_max_tokens));
        }
        Ok(())
    }

    fn asks_for_logprobs(&self) -> bool {
        let on = |field: &str| match self.body.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        };
        let include = self
            .body
            .get("include")
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().filter_map(Value::as_str).any(|item| item.contains("logprobs")));
        on("logprobs") || on("top_logprobs") || include
    }

    fn carries_images(&self) -> bool {
        if self.body.get("images").is_some_and(given) {
            return true;
        }
        // Ollama chat: messages[].images; OpenAI: content parts of an image type.
        let image_part = |part: &Value| {
            part.get("type").and_then(Value::as_str).is_some_and(|kind| kind.contains("image"))
                || part.get("image_url").is_some()
        };
        let in_message = |message: &Value| {
            message.get("images").is_some_and(given)
                || message.get("content").and_then(Value::as_array).is_some_and(|parts| parts.iter().any(image_part))
        };
        ["messages", "input"].iter().any(|field| match self.body.get(*field) {
            Some(Value::Array(items)) => items.iter().any(|item| in_message(item) || image_part(item)),
            _ => false,
        })
    }

    /// The most tokens the answer may hold, over all its choices: the token cap (set by
    /// [`LlmRequest::enforce`] where the request had none) times `n` (or `best_of`, which is
    /// generated whole and billed though only `n` are returned). Zero for routes that generate
    /// nothing.
    pub fn max_generated(&self) -> u64 {
        if !self.route.generates() {
            return 0;
        }
        let number = |value: Option<&Value>| value.and_then(Value::as_u64);
        let cap = if self.route.is_ollama() {
            number(self.body.get("options").and_then(|options| options.get("num_predict")))
        } else {
            ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                .iter()
                .filter_map(|field| number(self.body.get(*field)))
                .min()
        };
        let choices = ["n", "best_of"].iter().filter_map(|field| number(self.body.get(*field))).max().unwrap_or(1);
        cap.unwrap_or(0).saturating_mul(choices.max(1))
    }

    /// SHA-256 of the prompt fields, hex: the audit record's link to a prompt without its text.
    pub fn prompt_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for field in self.route.prompt_field() {
            if let Some(value) = self.body.get(*field) {
                hash.update(field.as_bytes());
                hash.update(b"=");
                hash.update(value.to_string().as_bytes());
                hash.update(b"\n");
            }
        }
        crate::hex::encode(&hash.finalize())
    }

    /// The body for the upstream: the same object with the upstream's model name.
    pub fn into_upstream(mut self, upstream_model: &str) -> Vec<u8> {
        self.body.insert("model".into(), Value::from(upstream_model));
        if self.stream && matches!(self.route, Route::ChatCompletions | Route::Completions) {
            // The stream's usage settles budgets: always asked for (and not passed on to a
            // client that did not ask for it).
            let options = self.body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        if self.route.is_ollama() && self.route != Route::OllamaShow && self.route != Route::OllamaEmbed {
            // Ollama streams by default: say which, so the answer has the shape expected.
            self.body.insert("stream".into(), Value::Bool(self.stream));
        }
        serde_json::to_vec(&Value::Object(self.body)).unwrap_or_default()
    }
}

/// Whether a field is really set: clients send `null`, `false`, `[]` or `{}` for "none".
fn given(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => true,
    }
}

/// A JSON value whose objects have no duplicate keys, at any depth.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(value)))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Strict, E> {
        Ok(Strict(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(value)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key '{key}'")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Strict(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> LlmConfig {
        crate::config::Config::from_toml(
            "[[llm]]\nname = \"chat\"\napi = \"openai\"\nurl = \"http://127.0.0.1:9/v1\"\nmax_tokens = 100\ndefault_max_tokens = 10\n",
            std::path::Path::new("/nonexistent"),
        )
        .unwrap()
        .llm
        .remove(0)
    }

    /// A key with every scope.
    fn all() -> crate::store::Scopes {
        crate::store::Scopes::parse("infer,metadata,tools,logprobs,images").unwrap()
    }

    fn chat(body: &str) -> Result<LlmRequest, String> {
        parse(Route::ChatCompletions, body.as_bytes())
    }

    #[test]
    fn the_model_is_one_string_named_once() {
        assert_eq!(chat(r#"{"model":"chat","messages":[]}"#).unwrap().model, "chat");
        let twice = chat(r#"{"model":"chat","model":"other","messages":[]}"#).unwrap_err();
        assert!(twice.contains("duplicate key 'model'"), "{twice}");
        let deep = chat(r#"{"model":"chat","messages":[{"role":"user","role":"system"}]}"#).unwrap_err();
        assert!(deep.contains("duplicate key 'role'"), "{deep}");
        assert!(chat(r#"{"model":["chat"],"messages":[]}"#).unwrap_err().contains("must be a string"));
        assert!(chat(r#"{"model":7}"#).unwrap_err().contains("must be a string"));
        assert!(chat(r#"{"messages":[]}"#).unwrap_err().contains("required"));
        assert!(chat(r#"{"model":""}"#).unwrap_err().contains("required"));
        assert!(chat("[]").unwrap_err().contains("object"));
        assert!(chat("{").unwrap_err().contains("not valid JSON"));
        // A model name is taken as it is written: no trimming, no case folding.
        assert_eq!(chat(r#"{"model":"Chat "}"#).unwrap().model, "Chat ");
    }

    #[test]
    fn fields_off_the_routes_list_are_refused() {
        let unknown = chat(r#"{"model":"chat","messages":[],"cache_prompt":true}"#).unwrap_err();
        assert!(unknown.contains("unknown field 'cache_prompt'"), "{unknown}");
        assert!(parse(Route::Embeddings, br#"{"model":"e","input":"x","messages":[]}"#).is_err());
        assert!(
            chat(r#"{"model":"chat","stream_options":{"include_usage":true}}"#)
                .unwrap_err()
                .contains("only for streams")
        );
        assert!(chat(r#"{"model":"chat","stream":"yes"}"#).is_err());
    }

    #[test]
    fn token_caps_are_set_when_absent_and_held_when_given() {
        let mut request = chat(r#"{"model":"chat","messages":[]}"#).unwrap();
        request.enforce(&caps(), &all(), None).unwrap();
        assert_eq!(request.body["max_tokens"], 10);
        let mut big = chat(r#"{"model":"chat","max_tokens":101}"#).unwrap();
        assert!(
            matches!(big.enforce(&caps(), &all(), None), Err(Refusal::Request(message)) if message.contains("from 1 to 100"))
        );
        let mut new_name = chat(r#"{"model":"chat","max_completion_tokens":5000}"#).unwrap();
        assert!(new_name.enforce(&caps(), &all(), None).is_err());
        let mut negative = chat(r#"{"model":"chat","max_tokens":-1}"#).unwrap();
        assert!(negative.enforce(&caps(), &all(), None).is_err());
        let mut ollama = parse(Route::OllamaChat, br#"{"model":"chat","messages":[]}"#).unwrap();
        assert!(ollama.stream, "Ollama streams unless told not to");
        ollama.enforce(&caps(), &all(), None).unwrap();
        assert_eq!(ollama.body["options"]["num_predict"], 10);
        // A key's own cap narrows the model's, and the default with it.
        let mut narrowed = chat(r#"{"model":"chat","messages":[]}"#).unwrap();
        narrowed.enforce(&caps(), &all(), Some(4)).unwrap();
        assert_eq!(narrowed.body["max_tokens"], 4);
        let mut over = chat(r#"{"model":"chat","max_tokens":5}"#).unwrap();
        assert!(over.enforce(&caps(), &all(), Some(4)).is_err());
        let mut wider = chat(r#"{"model":"chat","max_tokens":101}"#).unwrap();
        assert!(wider.enforce(&caps(), &all(), Some(1000)).is_err(), "a key cannot widen the model's cap");
        let mut endless = parse(Route::OllamaGenerate, br#"{"model":"chat","options":{"num_predict":-1}}"#).unwrap();
        assert!(endless.enforce(&caps(), &all(), None).is_err());
    }

    #[test]
    fn the_worst_case_counts_every_choice_and_stream_usage_is_asked_for() {
        let mut two = chat(r#"{"model":"chat","messages":[],"n":2,"max_tokens":7}"#).unwrap();
        two.enforce(&LlmConfig { max_n: 4, ..caps() }, &all(), None).unwrap();
        assert_eq!(two.max_generated(), 14);
        let mut default = chat(r#"{"model":"chat","messages":[]}"#).unwrap();
        default.enforce(&caps(), &all(), None).unwrap();
        assert_eq!(default.max_generated(), 10, "the default cap the gateway set");
        let mut ollama = parse(Route::OllamaGenerate, br#"{"model":"chat","options":{"num_predict":3}}"#).unwrap();
        ollama.enforce(&caps(), &all(), None).unwrap();
        assert_eq!(ollama.max_generated(), 3);
        assert_eq!(parse(Route::Embeddings, br#"{"model":"chat","input":"x"}"#).unwrap().max_generated(), 0);

        // A stream always asks the upstream for its usage; whether the client sees it is its own.
        let quiet = chat(r#"{"model":"chat","messages":[],"stream":true}"#).unwrap();
        assert!(!quiet.stream_usage);
        let sent: Value = serde_json::from_slice(&quiet.into_upstream("up")).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        let asked = chat(r#"{"model":"chat","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(asked.unwrap().stream_usage);
        for bad in [r#"{"include_usage":"yes"}"#, r#"true"#] {
            let body = format!(r#"{{"model":"chat","messages":[],"stream":true,"stream_options":{bad}}}"#);
            assert!(chat(&body).unwrap_err().contains("stream_options"), "{bad}");
        }
    }

    #[test]
    fn costly_and_leaky_switches_are_off_unless_the_model_allows_them() {
        for body in [
            r#"{"model":"chat","n":2}"#,
            r#"{"model":"chat","tools":[{"type":"function"}]}"#,
            r#"{"model":"chat","logprobs":true}"#,
            r#"{"model":"chat","top_logprobs":3}"#,
            r#"{"model":"chat","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:,"}}]}]}"#,
        ] {
            let mut request = chat(body).unwrap();
            assert!(request.enforce(&caps(), &all(), None).is_err(), "{body}");
        }
        let mut ollama_image = parse(Route::OllamaGenerate, br#"{"model":"chat","images":["aGk="]}"#).unwrap();
        assert!(ollama_image.enforce(&caps(), &all(), None).is_err());
        let mut allowed = caps();
        allowed.tools = true;
        allowed.logprobs = true;
        let mut request = chat(r#"{"model":"chat","tools":[],"logprobs":true,"n":1}"#).unwrap();
        request.enforce(&allowed, &all(), None).unwrap();
        let mut off = chat(r#"{"model":"chat","logprobs":false,"tools":[],"functions":null}"#).unwrap();
        off.enforce(&caps(), &all(), None).unwrap();
        // The model allows tools; a key without the scope still may not use them.
        let plain = crate::store::Scopes::parse("infer").unwrap();
        let mut tools = chat(r#"{"model":"chat","tools":[{"type":"function"}]}"#).unwrap();
        assert!(
            matches!(tools.enforce(&allowed, &plain, None), Err(Refusal::Key(message)) if message.contains("'tools' scope"))
        );
    }

    #[test]
    fn the_upstream_gets_its_own_model_name_and_the_audit_a_hash() {
        let request = chat(r#"{"model":"chat","messages":[{"role":"user","content":"secret plan"}]}"#).unwrap();
        let hash = request.prompt_sha256();
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("secret"));
        let body: Value = serde_json::from_slice(&request.into_upstream("org/model:7b")).unwrap();
        assert_eq!(body["model"], "org/model:7b");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse(Route::ChatCompletions, &bytes);
        }
    }
}
