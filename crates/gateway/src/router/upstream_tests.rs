//! A fronted model: the gateway in process, in front of a stub OIP server on loopback. Every
//! policy that holds for a local model holds here, and nothing of the client's request but the
//! validated tensors reaches the upstream.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use http::{Method, Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{
    authn::api_key::Pepper,
    backend,
    config::Config,
    keys::{Keyring, NewKey},
    state::Gateway,
    store::{ModelScope, Scopes, Store, sqlite::SqliteStore},
};

/// What the stub saw: each request's headers and body.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(HeaderMap, serde_json::Value)>>,
}

/// A small OIP server: model `scorer` (two class probabilities and a label per row), `slow`
/// (answers after 2 s), `broken` (500 with internal detail) and `huge` (a response over the cap).
async fn stub_upstream() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    async fn metadata(Path(name): Path<String>) -> impl IntoResponse {
        Json(serde_json::json!({
            "name": name, "versions": ["3"], "platform": "secret_platform",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                {"name": "label", "datatype": "INT64", "shape": [-1]}
            ]
        }))
    }
    async fn infer(
        State(seen): State<Arc<Seen>>,
        Path(name): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        seen.requests.lock().unwrap().push((headers, request.clone()));
        match name.as_str() {
            "slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            "broken" => {
                return (StatusCode::INTERNAL_SERVER_ERROR, "Traceback: /opt/model/secret.py line 3").into_response();
            }
            "huge" => return Json(serde_json::json!({ "outputs": [], "padding": "x".repeat(4096) })).into_response(),
            _ => {}
        }
        let rows = request["inputs"][0]["shape"][0].as_u64().unwrap_or(0) as usize;
        let probabilities: Vec<f32> = (0..rows).flat_map(|_| [0.123_456, 0.876_544]).collect();
        Json(serde_json::json!({
            "model_name": name, "model_version": "3", "id": "upstream-id",
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [rows, 2], "data": probabilities},
                {"name": "label", "datatype": "INT64", "shape": [rows], "data": vec![1; rows]}
            ]
        }))
        .into_response()
    }
    let app = Router::new()
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(|| async { Json(serde_json::json!({"ready": true})) }))
        .route("/v2/models/{name}/infer", post(infer))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

struct Fronted {
    _dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
    keyring: Keyring,
    seen: Arc<Seen>,
}

impl Fronted {
    async fn new() -> Fronted {
        let (addr, seen) = stub_upstream().await;
        // A port nothing listens on: bind, read the port, close.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("upstream-token"), "upstream-secret-token\n").unwrap();
        let toml = format!(
            r#"
[store]
key_cache_ttl = "0s"
[inference]
max_batch = 8
[[models]]
name = "fronted"
version = "1"
[models.upstream]
url = "http://{addr}/"
model = "scorer"
credential_file = "upstream-token"
[models.output]
scores = "probabilities"
label = "label"
classes = ["repay", "default"]
policy = "scores:round=2"
[[models]]
name = "slow"
[models.upstream]
url = "http://{addr}"
timeout = "300ms"
[[models]]
name = "broken"
[models.upstream]
url = "http://{addr}"
[[models]]
name = "huge"
[models.upstream]
url = "http://{addr}"
max_response_bytes = 1024
[[models]]
name = "down"
[models.upstream]
url = "http://{closed}"
connect_timeout = "500ms"
"#
        );
        let config = Config::from_toml(&toml, dir.path()).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let pepper = Pepper::from_bytes(vec![2; 32]);
        let registry = backend::load_models(&config).unwrap();
        let gateway = Gateway::builder(config).models(registry).store(store, pepper.clone()).build().unwrap();
        let keyring = gateway.keyring(pepper);
        Fronted { _dir: dir, gateway, keyring, seen }
    }

    async fn key(&self, models: &[&str], scopes: &str, output: Option<&str>) -> String {
        self.key_with_limits(models, scopes, output, Default::default()).await
    }

    async fn key_with_limits(
        &self,
        models: &[&str],
        scopes: &str,
        output: Option<&str>,
        limits: crate::store::KeyLimits,
    ) -> String {
        let new = NewKey {
            name: "test".into(),
            owner: None,
            models: ModelScope::Only(models.iter().map(|model| (*model).to_owned()).collect()),
            scopes: Scopes::parse(scopes).unwrap(),
            output: output.map(|text| text.parse().unwrap()),
            widen_output: false,
            delegate: false,
            expires_in: None,
            limits,
        };
        self.keyring.create(&new).await.unwrap().0.expose().to_owned()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        // Hop-by-hop and client headers that must never reach the upstream.
        request = request.header("x-forwarded-for", "203.0.113.9").header("cookie", "session=abc");
        let request = request.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = super::public(Arc::clone(&self.gateway)).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!(String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    fn forwarded(&self) -> usize {
        self.seen.requests.lock().unwrap().len()
    }
}

fn rows(n: usize) -> String {
    let data = vec!["[0.5,1.5,2.5,3.5]"; n].join(",");
    format!(
        r#"{{"id":"client-id","inputs":[{{"name":"features","shape":[{n},4],"datatype":"FP32","data":[{data}]}}]}}"#
    )
}

#[tokio::test]
async fn every_policy_holds_for_a_fronted_model() {
    let fronted = Fronted::new().await;
    let infer = "/v2/models/fronted/infer";

    // Deny by default: no key, a key for another model, a key without the infer scope.
    assert_eq!(fronted.send(Method::POST, infer, None, Some(rows(1))).await.0, StatusCode::UNAUTHORIZED);
    let other = fronted.key(&["slow"], "infer,metadata", None).await;
    let (status, body) = fronted.send(Method::POST, infer, Some(&other), Some(rows(1))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));
    let metadata_only = fronted.key(&["fronted"], "metadata", None).await;
    let (status, _) = fronted.send(Method::POST, infer, Some(&metadata_only), Some(rows(1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(fronted.forwarded(), 0, "nothing refused reaches the upstream");

    // Limits: a batch over inference.max_batch, an unknown input, a wrong shape: refused here.
    let key = fronted.key(&["fronted"], "infer,metadata", None).await;
    for bad in [rows(9), rows(1).replace("features", "other"), rows(1).replace("[1,4]", "[1,3]")] {
        let (status, body) = fronted.send(Method::POST, infer, Some(&key), Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(fronted.forwarded(), 0, "invalid input never reaches the upstream");

    // Rate limits and quotas: refused here, before the upstream is called.
    let limits = crate::store::KeyLimits {
        rate: Some("1/min".parse().unwrap()),
        burst: Some(1),
        row_quotas: vec!["3/day".parse().unwrap()],
        ..Default::default()
    };
    let limited = fronted.key_with_limits(&["fronted"], "infer", None, limits).await;
    assert_eq!(fronted.send(Method::POST, infer, Some(&limited), Some(rows(4))).await.1["code"], "quota_exhausted");
    assert_eq!(fronted.send(Method::POST, infer, Some(&limited), Some(rows(1))).await.1["code"], "rate_limited");
    assert_eq!(fronted.forwarded(), 0, "refused requests never reach the upstream");

    // Served, minimised by the model's policy (scores rounded to 2 places, no version).
    let (status, body) = fronted.send(Method::POST, infer, Some(&key), Some(rows(2))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_name"], "fronted");
    assert_eq!(body["id"], "client-id", "the client's id, not the upstream's");
    assert!(body.get("model_version").is_none());
    let outputs = body["outputs"].as_array().unwrap();
    let scores = outputs.iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(scores["data"], serde_json::json!([0.12, 0.88, 0.12, 0.88]));

    // A key narrowed to labels gets labels only.
    let labels = fronted.key(&["fronted"], "infer,metadata", Some("label")).await;
    let (status, body) = fronted.send(Method::POST, infer, Some(&labels), Some(rows(1))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["outputs"],
        serde_json::json!([{"name": "label", "datatype": "BYTES", "shape": [1], "data": ["default"]}])
    );

    // What the upstream received: our request id, its own credential, the tensors; nothing else.
    {
        let requests = fronted.seen.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        for (headers, request) in requests.iter() {
            assert_eq!(headers[header::AUTHORIZATION], "Bearer upstream-secret-token");
            for absent in ["x-api-key", "cookie", "x-forwarded-for"] {
                assert!(headers.get(absent).is_none(), "{absent} was forwarded");
            }
            assert!(!format!("{headers:?}").contains(&key), "the client's key was forwarded");
            assert_eq!(headers["x-request-id"].len(), 24);
            assert!(request.get("id").is_none(), "the client's id stays here");
            assert_eq!(request["inputs"][0]["name"], "features");
        }
    }

    // Metadata comes from the upstream, under our name and minimised like a local model's.
    let (status, body) = fronted.send(Method::GET, "/v2/models/fronted", Some(&labels), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "fronted");
    assert!(body.get("platform").is_none() && body.get("versions").is_none(), "{body}");
    assert_eq!(body["outputs"][0]["name"], "label");
    let (status, body) = fronted.send(Method::GET, "/v2/models/fronted/ready", Some(&key), None).await;
    assert_eq!((status, body["ready"].as_bool()), (StatusCode::OK, Some(true)));

    // Every request above left its audit record, the fronted model named in it.
    let log = fronted.gateway.audit().unwrap();
    log.close().await;
    let path = fronted.gateway.config().audit.as_ref().unwrap().path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|record| record["event"] == "request")
        .collect();
    assert_eq!(records.len(), 12);
    let served: Vec<_> = records.iter().filter(|r| r["status"] == 200 && r["action"] == "infer").collect();
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|r| r["model"] == "fronted"));
    assert_eq!(served[0]["rows"], 2);
    assert!(!text.contains("upstream-secret-token"));
}

#[tokio::test]
async fn upstream_failures_are_generic_502_and_504() {
    let fronted = Fronted::new().await;
    let key = fronted.key(&["slow", "broken", "huge", "down"], "infer,metadata", None).await;
    // Each model's metadata is served by the stub (same signature for all).
    let cases = [
        ("slow", StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        ("broken", StatusCode::BAD_GATEWAY, "upstream_error"),
        ("huge", StatusCode::BAD_GATEWAY, "upstream_error"),
        ("down", StatusCode::BAD_GATEWAY, "upstream_unavailable"),
    ];
    for (model, status, code) in cases {
        let (got, body) =
            fronted.send(Method::POST, &format!("/v2/models/{model}/infer"), Some(&key), Some(rows(1))).await;
        assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{model}: {body}");
        let text = body.to_string();
        for leak in ["Traceback", "/opt", "127.0.0.1", "secret", "connection refused"] {
            assert!(!text.contains(leak), "{model}: '{leak}' leaked: {text}");
        }
    }
    // An upstream that is down is not ready, and its metadata is a 502 too.
    let (status, body) = fronted.send(Method::GET, "/v2/models/down/ready", Some(&key), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("model_not_ready")));
    let (status, _) = fronted.send(Method::GET, "/v2/models/down", Some(&key), None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}
