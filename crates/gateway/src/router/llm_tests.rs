//! Language models fronted: the gateway in process, in front of the project's scripted LLM
//! upstream (`scripts/llm_upstream_stub.py`, Python's standard library only) on loopback. The
//! stub leaks its identity on purpose, injects faults by model name, and records every request
//! it receives, so these tests can see both sides.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Body;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{
    authn::api_key::Pepper,
    config::Config,
    keys::{Keyring, NewKey},
    state::Gateway,
    store::{ModelScope, Scopes, Store, sqlite::SqliteStore},
};

const UPSTREAM_KEY: &str = "upstream-secret-token";

/// The stub, killed when dropped.
pub(super) struct Stub {
    child: Child,
    pub(super) port: u16,
}

impl Stub {
    fn start() -> Stub {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/llm_upstream_stub.py");
        let mut child = Command::new("python3")
            .args([script, "--port", "0", "--api-key", UPSTREAM_KEY, "--stall-seconds", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the LLM stub (scripts/llm_upstream_stub.py)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the stub printed its port, not {line:?}"));
        Stub { child, port }
    }

    /// What the stub was sent, oldest first.
    pub(super) async fn record(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/__requests", self.port);
        let client = crate::backend::upstream::http_client(&url, None, Duration::from_secs(2), 2, false)
            .unwrap()
            .build()
            .unwrap();
        let body = client.get(url).send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `[[llm]]` in front of the stub (`api` is "openai" or "ollama"; `{port}` stands for the
/// stub's port until [`Fronted::with`] fills it in).
pub(super) fn stub_llm(name: &str, api: &str, upstream: &str, extra: &str) -> String {
    let path = if api == "openai" { "/v1" } else { "" };
    format!(
        "[[llm]]\nname = \"{name}\"\napi = \"{api}\"\nurl = \"http://127.0.0.1:{{port}}{path}\"\nmodel = \"{upstream}\"\n\
         credential_file = \"upstream-token\"\n{extra}\n"
    )
}

pub(super) struct Fronted {
    dir: tempfile::TempDir,
    pub(super) gateway: Arc<Gateway>,
    keyring: Keyring,
    pub(super) stub: Stub,
    toml: String,
    pub(super) store: Arc<dyn Store>,
}

impl Fronted {
    pub(super) async fn new() -> Fronted {
        Fronted::with("").await
    }

    /// The gateway in front of a new stub; `extra` is added to its config (more `[[llm]]`, a
    /// `[limits]` section). `{port}` in it is the stub's port.
    pub(super) async fn with(extra: &str) -> Fronted {
        let stub = Stub::start();
        let port = stub.port;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream-token"), format!("{UPSTREAM_KEY}\n")).unwrap();
        let openai = |name: &str, upstream: &str, extra: &str| stub_llm(name, "openai", upstream, extra);
        let mut toml = String::from("[store]\nkey_cache_ttl = \"0s\"\n");
        toml += &openai("chat", "stub-chat", "max_tokens = 50\ndefault_max_tokens = 8");
        toml += &openai("other-chat", "stub-chat", "");
        toml += &openai("tooled", "stub-chat", "tools = true\nlogprobs = true");
        toml += &openai("embed", "stub-embed", "");
        toml += &openai("stall", "fault-stall", "stall_timeout = \"500ms\"");
        toml += &openai("broken", "fault-broken-sse", "");
        toml += &openai("error-event", "fault-error-event", "");
        toml += &openai("huge", "fault-huge-chunk", "max_response_bytes = 65536");
        toml += &openai("failing", "fault-500", "");
        toml += &openai("busy", "fault-429", "");
        toml += &openai("hangup", "fault-slow-first-token", "");
        toml += &openai("no-usage", "fault-no-usage", "");
        toml += &stub_llm("local", "ollama", "stub-chat", "");
        toml += extra;
        let toml = toml.replace("{port}", &port.to_string());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let gateway = Fronted::node_of(&toml, &dir, &store);
        let keyring = gateway.keyring(Pepper::from_bytes(vec![3; 32]));
        Fronted { dir, gateway, keyring, stub, toml, store }
    }

    fn node_of(toml: &str, dir: &tempfile::TempDir, store: &Arc<dyn Store>) -> Arc<Gateway> {
        let config = Config::from_toml(toml, dir.path()).unwrap();
        Gateway::builder(config)
            .models(crate::backend::Registry::default())
            .store(Arc::clone(store), Pepper::from_bytes(vec![3; 32]))
            .build()
            .unwrap()
    }

    /// Another gateway node: the same config and store (and Redis, if the config names it).
    pub(super) fn another_node(&self) -> Arc<Gateway> {
        let mut toml = self.toml.clone();
        // Its own audit log: two writers never share one chain.
        toml = toml.replacen("[store]", "[audit]\npath = \"audit-2.jsonl\"\n[store]", 1);
        Fronted::node_of(&toml, &self.dir, &self.store)
    }

    pub(super) async fn key(&self, models: &[&str]) -> String {
        self.key_with_scopes(models, "infer,metadata").await
    }

    async fn key_with_scopes(&self, models: &[&str], scopes: &str) -> String {
        self.key_with(models, scopes, Default::default()).await
    }

    pub(super) async fn key_with(&self, models: &[&str], scopes: &str, limits: crate::store::KeyLimits) -> String {
        self.key_and_kid_with(models, scopes, limits).await.0
    }

    /// A key to call `models` with `limits`, and its key id.
    pub(super) async fn key_and_kid(&self, models: &[&str], limits: crate::store::KeyLimits) -> (String, String) {
        self.key_and_kid_with(models, "infer,metadata", limits).await
    }

    /// An admin key: it opens the admin listener, nothing else.
    pub(super) async fn admin_key(&self) -> String {
        self.keyring.create_admin("ops", None, None).await.unwrap().0.expose().to_owned()
    }

    /// A delegate key (it names the end user it acts for) to call `models` with `limits`.
    pub(super) async fn delegate_key(&self, models: &[&str], limits: crate::store::KeyLimits) -> String {
        self.key_and_kid_full(models, "infer,metadata", limits, true).await.0
    }

    async fn key_and_kid_with(
        &self,
        models: &[&str],
        scopes: &str,
        limits: crate::store::KeyLimits,
    ) -> (String, String) {
        self.key_and_kid_full(models, scopes, limits, false).await
    }

    async fn key_and_kid_full(
        &self,
        models: &[&str],
        scopes: &str,
        limits: crate::store::KeyLimits,
        delegate: bool,
    ) -> (String, String) {
        let new = NewKey {
            name: "llm".into(),
            owner: None,
            models: ModelScope::Only(models.iter().map(|model| (*model).to_owned()).collect()),
            scopes: Scopes::parse(scopes).unwrap(),
            output: None,
            widen_output: false,
            delegate,
            expires_in: None,
            limits,
        };
        let (secret, record) = self.keyring.create(&new).await.unwrap();
        (secret.expose().to_owned(), record.kid)
    }

    async fn send(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        self.send_to(&self.gateway, method, path, key, body).await
    }

    pub(super) async fn send_to(
        &self,
        gateway: &Arc<Gateway>,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, "localhost");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        // Client headers that must never reach the upstream.
        request = request.header("cookie", "session=abc").header("openai-organization", "org-client");
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let response = super::public(Arc::clone(gateway)).oneshot(request.body(body).unwrap()).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    pub(super) async fn chat(&self, key: &str, body: Value) -> Answer {
        self.send(Method::POST, "/v1/chat/completions", Some(key), Some(body)).await
    }

    /// The audit log's request records, once the log is closed.
    pub(super) async fn audit_records(&self) -> Vec<Value> {
        self.gateway.audit().unwrap().close().await;
        let path = self.gateway.config().audit.as_ref().unwrap().path.clone();
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|record| record["event"] == "request")
            .collect()
    }
}

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) text: String,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Nothing of the upstream: its headers, its fingerprint, its model name, its URL or keys.
    fn assert_nothing_of_the_upstream(&self, port: u16) {
        for name in
            ["server", "openai-organization", "openai-processing-ms", "openai-version", "x-ratelimit-limit-requests"]
        {
            assert!(!self.headers.contains_key(name), "{name} leaked: {:?}", self.headers);
        }
        for leak in ["system_fingerprint", "stub-chat", "stub-upstream", UPSTREAM_KEY, &format!(":{port}"), "LEAK"] {
            assert!(!self.text.contains(leak), "{leak} leaked: {}", self.text);
        }
    }
}

pub(super) fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "the secret plan"}]})
}

#[tokio::test]
async fn a_client_reaches_its_model_through_our_key_and_sees_nothing_of_the_upstream() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["chat"]).await;
    let answer = fronted.chat(&key, hello("chat")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.assert_nothing_of_the_upstream(fronted.stub.port);
    let body = answer.json();
    assert_eq!(body["model"], "chat");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert_eq!(body["usage"]["completion_tokens"], 8, "the default token cap was set");
    // The upstream got its own model name and credential, and none of the client's headers.
    let record = fronted.stub.record().await;
    let sent = record.last().unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(sent["headers"].clone()).unwrap();
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    assert_eq!(header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!((header("cookie"), header("openai-organization")), (None, None));
    let upstream_body: Value = serde_json::from_str(sent["body"].as_str().unwrap()).unwrap();
    assert_eq!((upstream_body["model"].as_str(), upstream_body["max_tokens"].as_u64()), (Some("stub-chat"), Some(8)));
}

#[tokio::test]
async fn a_stream_is_passed_on_event_by_event_and_audited_with_its_tokens() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["chat"]).await;
    let mut body = hello("chat");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let answer = fronted.chat(&key, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "text/event-stream");
    answer.assert_nothing_of_the_upstream(fronted.stub.port);
    let events: Vec<&str> = answer.text.split("\n\n").filter(|event| !event.is_empty()).collect();
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(chunk["model"], "chat");
    }
    let records = fronted.audit_records().await;
    let record = records.last().unwrap();
    assert_eq!((record["model"].as_str(), record["decision"].as_str()), (Some("chat"), Some("allow")));
    assert_eq!(record["tokens"]["completion"], 8);
    assert!(record["tokens"]["prompt"].as_u64().unwrap() > 0);
    assert_eq!(record["prompt_sha256"].as_str().map(str::len), Some(64));
    let path = fronted.gateway.config().audit.as_ref().unwrap().path.clone();
    let log = std::fs::read_to_string(path).unwrap();
    assert!(!log.contains("secret plan"), "the prompt's text is never recorded");
}

#[tokio::test]
async fn a_model_outside_the_allow_list_is_not_found_however_it_is_spelled() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["chat"]).await;
    for model in ["other-chat", "Chat", " chat", "chat ", "ch\u{0430}t", "chat\u{200b}", "stub-chat", "local"] {
        let answer = fronted.chat(&key, hello(model)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{model:?}: {}", answer.text);
        let error = &answer.json()["error"];
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("not_found_error"), Some("model_not_found"))
        );
    }
    // A second `model` key is refused, not resolved either way.
    let twice = r#"{"model":"other-chat","model":"chat","messages":[]}"#;
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(twice))
        .unwrap();
    let response = super::public(Arc::clone(&fronted.gateway)).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The model in the query string or a header counts for nothing: the body's is dispatched.
    let request = Request::post("/v1/chat/completions?model=other-chat")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-model", "other-chat")
        .body(Body::from(hello("chat").to_string()))
        .unwrap();
    let response = super::public(Arc::clone(&fronted.gateway)).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Only the allowed request reached the upstream.
    let chats = fronted.stub.record().await.iter().filter(|r| r["route"] == "openai.chat").count();
    assert_eq!(chats, 1);
    // The model list names the caller's models only.
    let listed = fronted.send(Method::GET, "/v1/models", Some(&key), None).await.json();
    assert_eq!(
        listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect::<Vec<_>>(),
        ["chat"]
    );
}

#[tokio::test]
async fn keys_without_an_llm_and_callers_without_keys_get_nothing() {
    let fronted = Fronted::new().await;
    let oip_only = fronted.key(&["mlp"]).await;
    let answer = fronted.chat(&oip_only, hello("chat")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(fronted.send(Method::GET, "/v1/models", Some(&oip_only), None).await.json()["data"], json!([]));
    let anonymous = fronted.send(Method::POST, "/v1/chat/completions", None, Some(hello("chat"))).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"]["type"], "authentication_error");
    let tags = fronted.send(Method::GET, "/api/tags", None, None).await;
    assert_eq!(tags.status, StatusCode::UNAUTHORIZED, "the model list is not open: {}", tags.text);
    assert!(fronted.stub.record().await.is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn ollama_routes_work_and_its_management_routes_are_never_forwarded() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["local", "chat"]).await;
    let tags = fronted.send(Method::GET, "/api/tags", Some(&key), None).await.json();
    assert_eq!(
        tags["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["local"]
    );
    let chat = fronted.send(Method::POST, "/api/chat", Some(&key), Some(hello("local"))).await;
    assert_eq!(chat.status, StatusCode::OK, "{}", chat.text);
    assert_eq!(chat.headers[header::CONTENT_TYPE], "application/x-ndjson");
    chat.assert_nothing_of_the_upstream(fronted.stub.port);
    let lines: Vec<Value> = chat.text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines.iter().all(|line| line["model"] == "local"));
    let show = fronted.send(Method::POST, "/api/show", Some(&key), Some(json!({"model": "local"}))).await;
    assert_eq!(show.status, StatusCode::OK, "{}", show.text);
    assert!(show.json().get("modelfile").is_none(), "no modelfile with the upstream's paths: {}", show.text);
    // An OpenAI model is not an Ollama model, nor the other way round.
    assert_eq!(
        fronted.send(Method::POST, "/api/chat", Some(&key), Some(hello("chat"))).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(fronted.chat(&key, hello("local")).await.status, StatusCode::NOT_FOUND);
    for (method, path) in [
        (Method::POST, "/api/pull"),
        (Method::POST, "/api/push"),
        (Method::POST, "/api/create"),
        (Method::POST, "/api/copy"),
        (Method::DELETE, "/api/delete"),
        (Method::POST, "/api/blobs/sha256-00"),
        (Method::GET, "/api/ps"),
    ] {
        let answer = fronted.send(method, path, Some(&key), Some(json!({"model": "local"}))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(fronted.stub.record().await.iter().all(|r| r["management"] != true), "no management route was forwarded");
}

#[tokio::test]
async fn costly_and_leaky_options_are_refused_before_the_upstream() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["chat"]).await;
    for extra in [
        json!({"max_tokens": 51}),
        json!({"n": 2}),
        json!({"logprobs": true}),
        json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
        json!({"cache_prompt": true}),
    ] {
        let mut body = hello("chat");
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let answer = fronted.chat(&key, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{extra}: {}", answer.text);
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    }
    assert!(fronted.stub.record().await.is_empty());
    // Where the model allows tools and log probabilities, a key needs the scopes too.
    let tools = json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
    let with_tools = |model: &str| {
        let mut body = hello(model);
        body.as_object_mut().unwrap().extend(tools.as_object().unwrap().clone());
        body
    };
    let plain = fronted.key(&["tooled"]).await;
    let refused = fronted.chat(&plain, with_tools("tooled")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.json()["error"]["type"], "permission_error");
    let tooled = fronted.key_with_scopes(&["tooled"], "infer,tools").await;
    let served = fronted.chat(&tooled, with_tools("tooled")).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text);
    assert_eq!(fronted.stub.record().await.len(), 1, "only the allowed request reached the upstream");
}

#[tokio::test]
async fn upstream_failures_end_cleanly_and_say_nothing_of_the_upstream() {
    let fronted = Fronted::new().await;
    let port = fronted.stub.port;
    let key = fronted.key(&["stall", "broken", "error-event", "huge", "failing", "busy"]).await;
    let stream = |model: &str| {
        let mut body = hello(model);
        body["stream"] = json!(true);
        body
    };
    // A stream that stalls is cut after the stall timeout, with an error event.
    let started = Instant::now();
    let stalled = fronted.chat(&key, stream("stall")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "cut, not hung: {:?}", started.elapsed());
    assert_eq!(stalled.status, StatusCode::OK);
    assert!(
        stalled.text.trim_end().ends_with('}') && stalled.text.contains("\"upstream_timeout\""),
        "{}",
        stalled.text
    );
    for model in ["broken", "error-event", "huge"] {
        let answer = fronted.chat(&key, stream(model)).await;
        assert_eq!(answer.status, StatusCode::OK, "{model}");
        let last = answer.text.trim_end().rsplit("\n\n").next().unwrap().to_owned();
        let event: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(event["error"]["code"], "upstream_error", "{model}: {}", answer.text);
        answer.assert_nothing_of_the_upstream(port);
    }
    let failing = fronted.chat(&key, hello("failing")).await;
    assert_eq!((failing.status, failing.json()["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("upstream_error")));
    failing.assert_nothing_of_the_upstream(port);
    let busy = fronted.chat(&key, hello("busy")).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    busy.assert_nothing_of_the_upstream(port);
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_upstream_request() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["hangup"]).await;
    let mut body = hello("hangup");
    body["stream"] = json!(true);
    let request = Request::post("/v1/chat/completions")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = super::public(Arc::clone(&fronted.gateway)).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The first token is two seconds away: hang up now.
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = fronted.stub.record().await;
        if record.iter().any(|r| r["outcome"] == "client_closed") {
            break;
        }
        assert!(Instant::now() < deadline, "the upstream request was not cancelled: {record:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_keys_own_token_cap_narrows_the_models() {
    let fronted = Fronted::new().await;
    let limits = crate::store::KeyLimits { max_tokens: Some(4), ..Default::default() };
    let key = fronted.key_with(&["chat"], "infer", limits).await;
    let answer = fronted.chat(&key, hello("chat")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let record = fronted.stub.record().await;
    let sent: Value = serde_json::from_str(record.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["max_tokens"], 4, "the key's cap, smaller than the model's default of 8");
    let mut over = hello("chat");
    over["max_tokens"] = json!(5);
    assert_eq!(fronted.chat(&key, over).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_upstream_that_reports_no_usage_still_leaves_its_record() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["no-usage"]).await;
    let mut body = hello("no-usage");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let answer = fronted.chat(&key, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(answer.text.trim_end().ends_with("data: [DONE]"), "{}", answer.text);
    let records = fronted.audit_records().await;
    let record = records.last().unwrap();
    assert_eq!((record["model"].as_str(), record["decision"].as_str()), (Some("no-usage"), Some("allow")));
    // No counts were reported: the gateway's own are recorded, marked as estimated.
    assert_eq!(record["tokens"]["estimated"], true, "{record}");
    assert!(record["tokens"]["completion"].as_u64().unwrap() > 0, "{record}");
    assert_eq!(record["prompt_sha256"].as_str().map(str::len), Some(64));
}

/// Models that take personal data out of prompts; `echo` answers with the prompt it got, in
/// three-character pieces, so the answer shows what reached the upstream.
fn redacting() -> String {
    let redact = "redact_prompts = true";
    let restore = "redact_prompts = true\nrestore_redacted = true";
    [
        stub_llm("private", "openai", "stub-chat", redact),
        stub_llm("echoed", "openai", "echo", redact),
        stub_llm("restored", "openai", "echo", restore),
        stub_llm("restored-local", "ollama", "echo", restore),
    ]
    .concat()
}

/// One value of each kind that is redacted (`llm::redact::REDACTED`), in a prompt.
const PERSONAL: &[(&str, &str)] = &[
    ("email", "jane.doe@example.co.uk"),
    ("phone", "+44 20 7946 0958"),
    ("payment_card", "4111 1111 1111 1111"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("us_ssn", "536-90-4399"),
    ("uk_nhs", "943 476 5919"),
    ("ip_address", "192.168.1.20"),
    ("mac_address", "00:1A:2B:3C:4D:5E"),
    ("credential", "AKIAIOSFODNN7EXAMPLE"),
    ("uk_nino", "JG103759A"),
    ("date_of_birth", "1984-07-23"),
    ("crypto_wallet", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
    ("imei", "490154203237518"),
    ("passport", "K12345678"),
];

fn personal_prompt() -> String {
    let mut prompt = String::from("Please summarise this account note.");
    for (kind, value) in PERSONAL {
        prompt += &format!(" The customer's {} is {value}.", kind.replace('_', " "));
    }
    prompt
}

/// The text of an answer, a whole one or a stream (SSE or JSON lines), in order.
fn answer_text(answer: &Answer) -> String {
    let mut text = String::new();
    let mut take = |object: &Value| {
        for pointer in ["/choices/0/message/content", "/choices/0/delta/content", "/message/content", "/response"] {
            if let Some(piece) = object.pointer(pointer).and_then(Value::as_str) {
                text.push_str(piece);
            }
        }
    };
    if let Ok(object) = serde_json::from_str::<Value>(&answer.text) {
        take(&object);
        return text;
    }
    for line in answer.text.lines() {
        let line = line.strip_prefix("data: ").unwrap_or(line);
        if let Ok(object) = serde_json::from_str::<Value>(line) {
            take(&object);
        }
    }
    text
}

#[tokio::test]
async fn personal_data_in_a_prompt_reaches_the_upstream_as_placeholders_only() {
    for kind in crate::llm::redact::REDACTED {
        assert!(PERSONAL.iter().any(|(name, _)| *name == kind.name()), "no {kind} in the test's prompt");
    }
    let fronted = Fronted::with(&redacting()).await;
    let key = fronted.key(&["private", "echoed", "restored", "restored-local"]).await;
    let prompt = personal_prompt();
    let body = json!({"model": "private", "messages": [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
    ]});
    let answer = fronted.chat(&key, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let record = fronted.stub.record().await;
    let sent = record.last().unwrap()["body"].as_str().unwrap().to_owned();
    for (kind, value) in PERSONAL {
        assert!(!sent.contains(value), "{kind} {value} reached the upstream: {sent}");
        let placeholder = format!("<{}_1>", kind.to_uppercase());
        assert!(sent.contains(&placeholder), "{placeholder} is not in {sent}");
    }
    assert!(sent.contains("Please summarise this account note."), "the rest is left as it was: {sent}");

    // Without restore_redacted, the caller gets the placeholders back, not the values.
    let echoed =
        fronted.chat(&key, json!({"model": "echoed", "messages": [{"role": "user", "content": prompt}]})).await;
    let text = answer_text(&echoed);
    assert!(text.contains("<EMAIL_1>") && !text.contains("jane.doe"), "{text}");

    // With it, the same caller gets its own text back: whole, streamed in pieces that cut the
    // placeholders in two, and from Ollama.
    let whole =
        fronted.chat(&key, json!({"model": "restored", "messages": [{"role": "user", "content": prompt}]})).await;
    assert_eq!(answer_text(&whole), prompt);
    let streamed = fronted
        .chat(&key, json!({"model": "restored", "stream": true, "messages": [{"role": "user", "content": prompt}]}))
        .await;
    assert_eq!(answer_text(&streamed), prompt, "{}", streamed.text);
    let local = fronted
        .send(
            Method::POST,
            "/api/chat",
            Some(&key),
            Some(json!({"model": "restored-local", "messages": [{"role": "user", "content": prompt}]})),
        )
        .await;
    assert_eq!(answer_text(&local), prompt, "{}", local.text);
    for sent in fronted.stub.record().await.iter().filter_map(|request| request["body"].as_str()) {
        assert!(!sent.contains("jane.doe") && !sent.contains("4111 1111"), "{sent}");
    }

    // The audit record counts what was replaced, never the values.
    let records = fronted.audit_records().await;
    let first = records.iter().find(|record| record["model"] == "private").unwrap();
    for (kind, _) in PERSONAL {
        assert_eq!(first["redacted"][kind], 1, "{kind}: {first}");
    }
    let log = records.iter().map(ToString::to_string).collect::<String>();
    for (kind, value) in PERSONAL {
        assert!(!log.contains(value), "{kind} in the audit log");
    }
}
