//! The public router in process: deny by default, grants, and bad input, request by request.

use std::{path::Path, sync::Arc};

use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::{
    authn::{PUBLIC_ROUTES, api_key::Pepper},
    backend,
    config::Config,
    keys::{Keyring, NewKey},
    state::Gateway,
    store::{ModelScope, Scopes, Store, sqlite::SqliteStore},
};

fn fixture(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(path).display().to_string()
}

struct Harness {
    _dir: tempfile::TempDir,
    gateway: Arc<Gateway>,
    keyring: Keyring,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with_body_limit(1 << 20).await
    }

    async fn with_body_limit(max_body_bytes: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mlp = fixture("fixtures/mlp/model.onnx");
        let checks = fixture("fixtures/mlp/checks.json");
        let credit = fixture("credit-risk/model.onnx");
        let toml = format!(
            r#"
[server]
max_body_bytes = {max_body_bytes}
[store]
key_cache_ttl = "0s"
[inference]
threads = 1
max_batch = 16
[[models]]
name = "mlp"
path = "{mlp}"
checks = "{checks}"
[[models]]
name = "secret-model"
path = "{mlp}"
[[models]]
name = "credit-risk"
path = "{credit}"
[models.output]
scores = "probabilities"
label = "label"
classes = ["repay", "default"]
policy = "scores:round=2"
[[models]]
name = "open"
version = "7"
path = "{mlp}"
public = true
"#
        );
        let config = Config::from_toml(&toml, dir.path()).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
        let pepper = Pepper::from_bytes(vec![1; 32]);
        let registry = backend::load_models(&config).unwrap();
        let gateway =
            Gateway::builder(config).models(registry).store(Arc::clone(&store), pepper.clone()).build().unwrap();
        let keyring = gateway.keyring(pepper);
        Harness { _dir: dir, gateway, keyring }
    }

    async fn key(&self, models: &[&str], scopes: &str) -> String {
        self.key_with_output(models, scopes, None, false).await
    }

    async fn key_with_output(&self, models: &[&str], scopes: &str, output: Option<&str>, widen_output: bool) -> String {
        let (secret, _) = self
            .keyring
            .create(&NewKey {
                name: "test".into(),
                owner: None,
                models: ModelScope::Only(models.iter().map(|model| (*model).to_owned()).collect()),
                scopes: Scopes::parse(scopes).unwrap(),
                output: output.map(|text| text.parse().unwrap()),
                widen_output,
                delegate: false,
                expires_in: None,
                limits: Default::default(),
            })
            .await
            .unwrap();
        secret.expose().to_owned()
    }

    /// Sends a request as an HTTP/1.1 client would, with a `Host` header.
    async fn send(&self, mut request: Request<Body>) -> Reply {
        if !request.headers().contains_key(header::HOST) {
            request.headers_mut().insert(header::HOST, http::HeaderValue::from_static("localhost"));
        }
        self.send_as_is(request).await
    }

    async fn send_as_is(&self, request: Request<Body>) -> Reply {
        let response = super::public(Arc::clone(&self.gateway)).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// An error reply: status, stable code, and the one body shape.
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(body["request_id"].as_str(), self.headers.get("x-request-id").and_then(|v| v.to_str().ok()));
    }
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().method(Method::GET).uri(path).header(header::HOST, "localhost")
}

fn post_json(path: &str) -> http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
}

const ROW: &str = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,-0.1,-0.2,-0.3,-0.4,-0.5,-0.6,-0.7,-0.8,-0.9,-1.0]";

fn infer_body(rows: usize) -> String {
    let data = vec![ROW; rows].join(",");
    format!(
        r#"{{"id":"req-7","inputs":[{{"name":"features","shape":[{rows},20],"datatype":"FP32","data":[{data}]}}]}}"#
    )
}

fn with_key(builder: http::request::Builder, key: &str) -> http::request::Builder {
    builder.header(header::AUTHORIZATION, format!("Bearer {key}"))
}

#[tokio::test]
async fn every_route_without_credentials_is_401() {
    let harness = Harness::new().await;
    // Every route the router declares (broker routes included: without `[broker]` they are
    // closed like the rest), with its templates filled in.
    let fill =
        |template: &str| template.replace("{model}", "mlp").replace("{version}", "1").replace("{digest}", "sha256-0");
    let declared: Vec<(Method, String)> = super::PUBLIC_ROUTE_TABLE
        .iter()
        .filter(|(_, path)| !PUBLIC_ROUTES.contains(path))
        .map(|(method, path)| (method.to_uppercase().parse().unwrap(), fill(path)))
        .collect();
    assert!(declared.len() >= 10, "{declared:?}");
    for (method, path) in &declared {
        let reply = harness.send(Request::builder().method(method).uri(path).body(Body::empty()).unwrap()).await;
        if method == Method::HEAD {
            // An answer to HEAD has no body to check.
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "HEAD {path}");
        } else if crate::request::speaks_openai(path) {
            // OpenAI's routes answer in its shape, our code beside the error object.
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
            let body = reply.json();
            assert_eq!(
                (body["code"].as_str(), body["error"]["code"].as_str()),
                (Some("unauthenticated"), Some("unauthenticated"))
            );
            assert_eq!(body["error"]["type"], "authentication_error");
        } else {
            reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        }
    }
    // The admin listener: every route but metrics and health needs an admin key.
    for (method, path) in super::ADMIN_KEYED_ROUTE_TABLE {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(*path)
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        let response = super::admin(Arc::clone(&harness.gateway)).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "admin {path}");
    }
    let routes = [
        (Method::GET, "/v2"),
        (Method::GET, "/v2/models/mlp"),
        (Method::GET, "/v2/models/mlp/ready"),
        (Method::GET, "/v2/models/mlp/versions/1"),
        (Method::GET, "/v2/models/mlp/versions/1/ready"),
        (Method::POST, "/v2/models/mlp/infer"),
        (Method::POST, "/v2/models/mlp/versions/1/infer"),
        (Method::GET, "/v2/models/unknown"),
        (Method::POST, "/v2/models/unknown/infer"),
        (Method::POST, "/v2/repository/index"),
        (Method::GET, "/metrics"),
        (Method::GET, "/"),
        (Method::GET, "/admin"),
        (Method::DELETE, "/v2/models/mlp"),
        (Method::GET, "/v2/models/mlp/infer"),
    ];
    for (method, path) in routes {
        let reply =
            harness.send(Request::builder().method(method.clone()).uri(path).body(Body::empty()).unwrap()).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert_eq!(
            reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="portcullis""#,
            "{method} {path}"
        );
        assert!(reply.headers.get(header::SERVER).is_none());
    }
    for path in PUBLIC_ROUTES {
        let reply = harness.send(get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn bad_keys_are_refused_without_saying_why() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer,metadata").await;
    let revoked = harness.key(&["mlp"], "infer,metadata").await;
    harness.keyring.revoke(apikey::parse(&revoked).unwrap().kid()).await.unwrap();
    let unknown = apikey::generate(apikey::KeyKind::Secret).unwrap().expose().to_owned();
    let mut bad_checksum = key.clone();
    bad_checksum.replace_range(53..54, if key.ends_with('0') { "1" } else { "0" });
    let admin = apikey::generate(apikey::KeyKind::Admin).unwrap().expose().to_owned();
    let mut bodies = Vec::new();
    for presented in [
        format!("Bearer {unknown}"),
        format!("Bearer {revoked}"),
        format!("Bearer {bad_checksum}"),
        format!("Bearer {admin}"),
        "Bearer ptcl_sk_short".to_owned(),
        format!("Basic {key}"),
        "Bearer ".to_owned(),
    ] {
        let reply = harness
            .send(get("/v2/models/mlp").header(header::AUTHORIZATION, &presented).body(Body::empty()).unwrap())
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        assert_eq!(
            reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="portcullis", error="invalid_token""#
        );
        let mut body = reply.json();
        body["request_id"] = serde_json::Value::Null;
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "refusals differ: {bodies:?}");

    // The scheme is case-insensitive (RFC 9110); x-api-key works for clients that need it.
    for (name, value) in [
        ("authorization", format!("bearer {key}")),
        ("authorization", format!("BEARER {key}")),
        ("x-api-key", key.clone()),
    ] {
        let reply = harness.send(get("/v2/models/mlp").header(name, value).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Two credentials: ambiguous, refused.
    let reply = harness
        .send(
            with_key(get("/v2/models/mlp"), &key)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let reply = harness
        .send(with_key(get("/v2/models/mlp"), &key).header("x-api-key", &key).body(Body::empty()).unwrap())
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn a_key_reaches_only_its_models() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer,metadata").await;
    let reply = harness.send(with_key(get("/v2/models/mlp"), &key).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let metadata = reply.json();
    assert_eq!(metadata["name"], "mlp");
    assert_eq!(metadata["inputs"][0], serde_json::json!({"name": "features", "datatype": "FP32", "shape": [-1, 20]}));

    // A model the key may not use looks exactly like one that does not exist.
    let hidden = harness
        .send(with_key(post_json("/v2/models/secret-model/infer"), &key).body(Body::from(infer_body(1))).unwrap())
        .await;
    hidden.assert_error(StatusCode::NOT_FOUND, "model_not_found");
    let missing = harness
        .send(with_key(post_json("/v2/models/nothing/infer"), &key).body(Body::from(infer_body(1))).unwrap())
        .await;
    missing.assert_error(StatusCode::NOT_FOUND, "model_not_found");
    assert_eq!(
        hidden.json()["error"].as_str().unwrap().replace("secret-model", "X"),
        missing.json()["error"].as_str().unwrap().replace("nothing", "X")
    );

    // A metadata-only key sees the model but may not run it.
    let reader = harness.key(&["mlp"], "metadata").await;
    let reply = harness.send(with_key(get("/v2/models/mlp/ready"), &reader).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.json(), serde_json::json!({"name": "mlp", "ready": true}));
    let reply = harness
        .send(with_key(post_json("/v2/models/mlp/infer"), &reader).body(Body::from(infer_body(1))).unwrap())
        .await;
    reply.assert_error(StatusCode::FORBIDDEN, "forbidden");

    // Versions: the served one works, another is not found.
    let reply = harness.send(with_key(get("/v2/models/mlp/versions/1"), &key).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = harness.send(with_key(get("/v2/models/mlp/versions/2"), &key).body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::NOT_FOUND, "model_not_found");

    // Authenticated but unknown paths are 404, not 401.
    let reply = harness.send(with_key(get("/v2/repository/index"), &key).body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn public_models_need_no_key_and_others_stay_closed() {
    let harness = Harness::new().await;
    let reply =
        harness.send(post_json("/v2/models/open/versions/7/infer").body(Body::from(infer_body(2))).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["model_version"], "7", "raw policy: the version is shown");
    let reply = harness.send(post_json("/v2/models/mlp/infer").body(Body::from(infer_body(1))).unwrap()).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let reply = harness.send(get("/v2").body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn inference_answers_in_json_and_binary() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer").await;
    let reply =
        harness.send(with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from(infer_body(3))).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["model_name"], "mlp");
    let probabilities = body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "probabilities").unwrap();
    assert_eq!(probabilities["shape"], serde_json::json!([3, 2]));
    let values: Vec<f64> = serde_json::from_value(probabilities["data"].clone()).unwrap();
    assert!((values[0] + values[1] - 1.0).abs() < 1e-5, "{values:?}");

    // Triton binary tensors: binary input, one output asked for in binary.
    let header_json = r#"{"inputs":[{"name":"features","shape":[1,20],"datatype":"FP32","parameters":{"binary_data_size":80}}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]}"#;
    let mut body = header_json.as_bytes().to_vec();
    let row: Vec<f32> = serde_json::from_str(ROW).unwrap();
    for value in &row {
        body.extend_from_slice(&value.to_le_bytes());
    }
    let reply = harness
        .send(
            with_key(Request::builder().method(Method::POST).uri("/v2/models/mlp/infer"), &key)
                .header("inference-header-content-length", header_json.len())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let json_len: usize = reply.headers["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&reply.body[..json_len]).unwrap();
    assert_eq!(head["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    let tail = &reply.body[json_len..];
    let p0 = f32::from_le_bytes(tail[0..4].try_into().unwrap());
    let p1 = f32::from_le_bytes(tail[4..8].try_into().unwrap());
    assert!((p0 - values[0] as f32).abs() < 1e-6 && (p1 - values[1] as f32).abs() < 1e-6);
}

#[tokio::test]
async fn bad_inference_requests_get_precise_4xx_and_the_server_keeps_serving() {
    let harness = Harness::with_body_limit(4096).await;
    let key = harness.key(&["mlp"], "infer").await;
    let features = |shape: &str, datatype: &str, data: &str| {
        format!(r#"{{"inputs":[{{"name":"features","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#)
    };
    let cases: Vec<(String, Option<&str>, StatusCode, &str, &str)> = vec![
        ("{not json".into(), None, StatusCode::BAD_REQUEST, "invalid_request", "invalid inference request JSON"),
        (
            infer_body(1),
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            infer_body(1),
            Some("application/x-www-form-urlencoded"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        (
            features("[1,20]", "FP32", "[1,2,3]"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "data has 3 elements",
        ),
        (features("[1,3]", "FP32", "[1,2,3]"), None, StatusCode::BAD_REQUEST, "invalid_input", "has shape [1, 3]"),
        (features("[1,20]", "FP64", ROW), None, StatusCode::BAD_REQUEST, "invalid_input", "must be FP32, not FP64"),
        (
            features("[60,20]", "FP32", &format!("[{}]", vec![ROW; 60].join(","))),
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "4096",
        ),
        (
            features("[18446744073709551615,2]", "FP32", "[]"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "overflows",
        ),
        (
            features("[9999999999]", "FP32", "[]"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "more than the limit",
        ),
        (
            r#"{"inputs":[{"name":"other","shape":[1],"datatype":"FP32","data":[1]}]}"#.into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "unknown input 'other'",
        ),
        (
            format!(
                r#"{{"inputs":[{0},{0}]}}"#,
                format!(r#"{{"name":"features","shape":[1,20],"datatype":"FP32","data":{ROW}}}"#)
            ),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "given twice",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"features","shape":[1,20],"datatype":"FP32","data":{ROW}}}],"outputs":[{{"name":"nope"}}]}}"#
            ),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "unknown output 'nope'",
        ),
        (
            features(&format!("[{},20]", 17), "FP32", "[]"),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "data has 0 elements",
        ),
        (
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).chars().take(4000).collect(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "JSON",
        ),
    ];
    for (body, content_type, status, code, needle) in cases {
        let mut builder = with_key(Request::builder().method(Method::POST).uri("/v2/models/mlp/infer"), &key);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let reply = harness.send(builder.body(Body::from(body.clone())).unwrap()).await;
        reply.assert_error(status, code);
        let message = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(needle), "'{message}' lacks '{needle}' for body {}", &body[..body.len().min(80)]);
    }
    // Compressed bodies: gzip and deflate (zlib) are read, under the same cap once expanded;
    // other codings and corrupt data are refused plainly.
    let compress = |encoding: &str, data: &[u8]| -> Vec<u8> {
        use std::io::Write;
        match encoding {
            "gzip" => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            _ => {
                let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
        }
    };
    let small = infer_body(1);
    for encoding in ["gzip", "deflate"] {
        let reply = harness
            .send(
                with_key(post_json("/v2/models/mlp/infer"), &key)
                    .header(header::CONTENT_ENCODING, encoding)
                    .body(Body::from(compress(encoding, small.as_bytes())))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{encoding}: {}", String::from_utf8_lossy(&reply.body));
    }
    // A bomb: tiny compressed, far beyond the 4096-byte cap expanded.
    let bomb = compress("gzip", &vec![b' '; 1 << 20]);
    assert!(bomb.len() < 4096);
    let reply = harness
        .send(
            with_key(post_json("/v2/models/mlp/infer"), &key)
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(bomb))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let reply = harness
        .send(
            with_key(post_json("/v2/models/mlp/infer"), &key)
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from(small.clone()))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let reply = harness
        .send(
            with_key(post_json("/v2/models/mlp/infer"), &key)
                .header(header::CONTENT_ENCODING, "br")
                .body(Body::from(small))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert!(reply.json()["error"].as_str().unwrap().contains("Content-Encoding 'br'"));
    // Batch beyond the model's limit (16), within the body limit.
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer").await;
    let reply =
        harness.send(with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from(infer_body(17))).unwrap()).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    // NaN cannot be written in JSON, but it can in binary.
    let header_json =
        r#"{"inputs":[{"name":"features","shape":[1,20],"datatype":"FP32","parameters":{"binary_data_size":80}}]}"#;
    let mut body = header_json.as_bytes().to_vec();
    body.extend((0..20).flat_map(|_| f32::NAN.to_le_bytes()));
    let reply = harness
        .send(
            with_key(Request::builder().method(Method::POST).uri("/v2/models/mlp/infer"), &key)
                .header("inference-header-content-length", header_json.len())
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
    let reply = harness
        .send(
            with_key(post_json("/v2/models/mlp/infer"), &key)
                .header("inference-header-content-length", "abc")
                .body(Body::from(infer_body(1)))
                .unwrap(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    // And still serving.
    let reply =
        harness.send(with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from(infer_body(1))).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_ours_and_on_every_reply() {
    let harness = Harness::new().await;
    let reply =
        harness.send(get("/v2/health/live").header("x-request-id", "forged").body(Body::empty()).unwrap()).await;
    let id = reply.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(id, "forged");
    assert_eq!(id.len(), 24);
}

#[tokio::test]
async fn request_ids_do_not_reveal_the_request_count() {
    // Two ids in a row from a counter share all but their last digits; random ones share
    // about 1.5 leading hex digits on average over many pairs, never 20.
    let harness = Harness::new().await;
    let mut ids = Vec::new();
    for _ in 0..16 {
        let reply = harness.send(get("/v2/models/mlp").body(Body::empty()).unwrap()).await;
        let id = reply.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        ids.push(id);
    }
    let shared: usize =
        ids.windows(2).map(|pair| pair[0].bytes().zip(pair[1].bytes()).take_while(|(a, b)| a == b).count()).sum();
    assert!(shared < 15 * 6, "consecutive ids share {shared} leading digits over 15 pairs: {ids:?}");
    let numbers: Vec<u128> = ids.iter().map(|id| u128::from_str_radix(id, 16).unwrap()).collect();
    let increasing = numbers.windows(2).filter(|pair| pair[1] > pair[0]).count();
    assert!(increasing < 15, "ids increase monotonically: {ids:?}");
}

#[tokio::test]
async fn server_metadata_names_the_binary_extension() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "metadata").await;
    let reply = harness.send(with_key(get("/v2"), &key).body(Body::empty()).unwrap()).await;
    assert_eq!(reply.json()["extensions"], serde_json::json!(["binary_tensor_data"]));
}

const APPLICANT: &str = r#"{"inputs":[{"name":"features","shape":[2,8],"datatype":"FP32","data":[[35,52000,0.3,4,0,15000,6,0.35],[21,31800,0.305,6,1,20540,3,0.455]]}]}"#;

/// Runs the demo model with a key of the given output policy; returns the outputs by name.
async fn outputs_for(
    harness: &Harness,
    output: Option<&str>,
    widen: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let key = harness.key_with_output(&["credit-risk"], "infer,metadata", output, widen).await;
    let reply = harness
        .send(with_key(post_json("/v2/models/credit-risk/infer"), &key).body(Body::from(APPLICANT)).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_owned(), o.clone()))
        .collect()
}

fn decimals(value: &serde_json::Value) -> usize {
    value.to_string().split('.').nth(1).map_or(0, str::len)
}

#[tokio::test]
async fn output_policies_say_no_more_than_allowed() {
    let harness = Harness::new().await;

    // The model's default: labels by name and scores rounded to 2 decimals.
    let default = outputs_for(&harness, None, false).await;
    assert_eq!(default.keys().collect::<Vec<_>>(), ["label", "probabilities"]);
    assert_eq!(default["label"]["data"], serde_json::json!(["repay", "default"]));
    assert!(default["probabilities"]["data"].as_array().unwrap().iter().all(|p| decimals(p) <= 2), "{default:?}");

    let key = harness.key_with_output(&["credit-risk"], "infer", Some("label"), false).await;
    let reply = harness
        .send(with_key(post_json("/v2/models/credit-risk/infer"), &key).body(Body::from(APPLICANT)).unwrap())
        .await;
    assert!(reply.json().get("model_version").is_none(), "below raw the version is hidden");
    let label = outputs_for(&harness, Some("label"), false).await;
    assert_eq!(label.keys().collect::<Vec<_>>(), ["label"]);

    let top = outputs_for(&harness, Some("top_k=1:round=1"), false).await;
    assert_eq!(top.keys().collect::<Vec<_>>(), ["label", "top_k_classes", "top_k_scores"]);
    assert_eq!(top["top_k_scores"]["shape"], serde_json::json!([2, 1]));
    assert_eq!(top["top_k_classes"]["data"], serde_json::json!(["repay", "default"]));
    assert!(top["top_k_scores"]["data"].as_array().unwrap().iter().all(|p| decimals(p) <= 1));

    // Asking for raw without the right to widen gets the model's default, not raw.
    let narrowed = outputs_for(&harness, Some("raw"), false).await;
    assert_eq!(narrowed["label"]["datatype"], "BYTES");
    assert!(narrowed["probabilities"]["data"].as_array().unwrap().iter().all(|p| decimals(p) <= 2));

    // Raw only for a key an admin allowed to widen: the model's own tensors, unrounded.
    let raw = outputs_for(&harness, Some("raw"), true).await;
    assert_eq!(raw["label"]["datatype"], "INT64");
    assert!(raw["probabilities"]["data"].as_array().unwrap().iter().any(|p| decimals(p) > 2));

    // Requesting an output the policy does not give is an error, not a leak.
    let key = harness.key_with_output(&["credit-risk"], "infer", Some("label"), false).await;
    let body = APPLICANT.replace("}]}", r#"}],"outputs":[{"name":"probabilities"}]}"#);
    let reply =
        harness.send(with_key(post_json("/v2/models/credit-risk/infer"), &key).body(Body::from(body)).unwrap()).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn metadata_is_stripped_for_restricted_keys() {
    let harness = Harness::new().await;
    let restricted = harness.key_with_output(&["credit-risk"], "metadata", Some("label"), false).await;
    let reply = harness.send(with_key(get("/v2/models/credit-risk"), &restricted).body(Body::empty()).unwrap()).await;
    let metadata = reply.json();
    assert!(metadata.get("platform").is_none() && metadata.get("versions").is_none(), "{metadata}");
    assert_eq!(metadata["outputs"], serde_json::json!([{"name": "label", "datatype": "BYTES", "shape": [-1]}]));

    let raw = harness.key_with_output(&["credit-risk"], "metadata", Some("raw"), true).await;
    let reply = harness.send(with_key(get("/v2/models/credit-risk"), &raw).body(Body::empty()).unwrap()).await;
    let metadata = reply.json();
    assert_eq!(metadata["platform"], "onnx_onnxv1");
    assert_eq!(metadata["outputs"].as_array().unwrap().len(), 2);
}

/// A backend that fails the way a runtime can: an error with internals in it, or a panic.
#[derive(Debug)]
struct Broken {
    panics: bool,
    signature: Vec<crate::oip::TensorMeta>,
}

impl crate::backend::Backend for Broken {
    fn signature(&self) -> (&[crate::oip::TensorMeta], &[crate::oip::TensorMeta]) {
        (&self.signature, &[])
    }

    fn run(
        &self,
        _: &crate::backend::Grant<crate::authz::Infer>,
        _: Vec<crate::oip::Tensor>,
    ) -> Result<Vec<crate::oip::Tensor>, crate::backend::BackendError> {
        if self.panics {
            panic!("index out of bounds at /src/secret/path.rs:12");
        }
        Err(crate::backend::BackendError::Run("tract: /opt/models/x.onnx: node Gemm_3 failed: SELECT * FROM".into()))
    }
}

/// A store that is down.
#[derive(Debug)]
struct DownStore;

#[async_trait::async_trait]
impl Store for DownStore {
    async fn ping(&self) -> Result<(), crate::store::StoreError> {
        Err(crate::store::StoreError::Unavailable("connection refused to /var/lib/db".into()))
    }
    async fn insert_key(&self, _: &crate::store::KeyRecord) -> Result<(), crate::store::StoreError> {
        self.ping().await
    }
    async fn find_key(&self, _: &str) -> Result<Option<crate::store::KeyRecord>, crate::store::StoreError> {
        self.ping().await.map(|()| None)
    }
    async fn list_keys(&self) -> Result<Vec<crate::store::KeyRecord>, crate::store::StoreError> {
        self.ping().await.map(|()| Vec::new())
    }
    async fn revoke_key(&self, _: &str, _: i64) -> Result<bool, crate::store::StoreError> {
        self.ping().await.map(|()| false)
    }
    async fn rotate_key(&self, _: &str, _: &crate::store::KeyRecord, _: i64) -> Result<(), crate::store::StoreError> {
        self.ping().await
    }
    async fn update_limits(&self, _: &str, _: &crate::store::KeyLimits) -> Result<bool, crate::store::StoreError> {
        self.ping().await.map(|()| false)
    }
    async fn add_usage(&self, _: &[crate::store::Usage]) -> Result<(), crate::store::StoreError> {
        self.ping().await
    }
    async fn usage(&self, _: Option<&str>, _: &str) -> Result<Vec<crate::store::Usage>, crate::store::StoreError> {
        self.ping().await.map(|()| Vec::new())
    }
    async fn insert_signing_key(&self, _: &crate::store::SigningKeyRecord) -> Result<(), crate::store::StoreError> {
        self.ping().await
    }
    async fn signing_keys(&self) -> Result<Vec<crate::store::SigningKeyRecord>, crate::store::StoreError> {
        self.ping().await.map(|()| Vec::new())
    }
    async fn prune_signing_keys(&self, _: i64) -> Result<u64, crate::store::StoreError> {
        self.ping().await.map(|()| 0)
    }
    async fn key_changes(&self, _: Option<i64>) -> Result<crate::store::KeyChanges, crate::store::StoreError> {
        self.ping().await.map(|()| crate::store::KeyChanges::default())
    }
    async fn prune_key_changes(&self, _: i64) -> Result<(), crate::store::StoreError> {
        self.ping().await
    }
}

fn assert_no_internals(reply: &Reply) {
    let body = String::from_utf8_lossy(&reply.body);
    for leak in ["/src", "/opt", "/var", "tract", "SELECT", "Gemm", "panicked", "refused"] {
        assert!(!body.contains(leak), "'{leak}' leaked: {body}");
    }
}

#[tokio::test]
async fn internal_failures_never_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[models]]\nname = \"broken\"\npath = \"x\"\n[[models]]\nname = \"panics\"\npath = \"y\"\n";
    let config = Config::from_toml(toml, dir.path()).unwrap();
    let signature =
        vec![crate::oip::TensorMeta { name: "x".into(), datatype: crate::oip::DataType::Fp32, shape: vec![-1] }];
    let models = config
        .models
        .iter()
        .map(|model| {
            let backend = Broken { panics: model.name == "panics", signature: signature.clone() };
            crate::backend::Model::new(model.clone(), Arc::new(backend))
        })
        .collect();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let pepper = Pepper::from_bytes(vec![1; 32]);
    let gateway = Gateway::builder(config.clone())
        .models(crate::backend::Registry::from_models(models))
        .store(store, pepper.clone())
        .build()
        .unwrap();
    let harness = Harness { _dir: dir, keyring: gateway.keyring(pepper.clone()), gateway };
    let key = harness.key(&["broken", "panics"], "infer").await;
    let body = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;
    for model in ["broken", "panics"] {
        let reply = harness
            .send(with_key(post_json(&format!("/v2/models/{model}/infer")), &key).body(Body::from(body)).unwrap())
            .await;
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
        assert_no_internals(&reply);
    }

    // The key store is down: fail closed with a generic 503, and readiness says so.
    let down = Gateway::builder(config)
        .models(crate::backend::Registry::default())
        .store(Arc::new(DownStore), pepper)
        .build()
        .unwrap();
    let reply = Harness {
        _dir: tempfile::tempdir().unwrap(),
        keyring: down.keyring(Pepper::from_bytes(vec![1; 32])),
        gateway: down,
    }
    .send(with_key(get("/v2"), &key).body(Body::empty()).unwrap())
    .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_no_internals(&reply);
}

#[tokio::test]
async fn every_request_leaves_one_audit_record_and_none_is_served_unaudited() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer").await;
    let mut ids = Vec::new();
    for request in [
        get("/v2/health/live").body(Body::empty()).unwrap(),
        get("/v2/models/mlp").body(Body::empty()).unwrap(),
        with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from(infer_body(3))).unwrap(),
        with_key(post_json("/v2/models/secret-model/infer"), &key).body(Body::from(infer_body(1))).unwrap(),
        with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from("{")).unwrap(),
    ] {
        let reply = harness.send(request).await;
        ids.push(reply.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    let log = harness.gateway.audit().unwrap();
    log.close().await;
    let path = harness.gateway.config().audit.as_ref().unwrap().path.clone();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|record: &serde_json::Value| record["event"] == "request")
        .collect();
    let recorded: Vec<&str> = records.iter().map(|record| record["request_id"].as_str().unwrap()).collect();
    assert_eq!(recorded, ids, "exactly one record per request, in order");
    let summary: Vec<(&str, &str, u64)> = records
        .iter()
        .map(|r| (r["decision"].as_str().unwrap(), r["reason"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("allow", "ok", 200),
            ("deny", "no_credential", 401),
            ("allow", "ok", 200),
            ("deny", "model_not_allowed", 404),
            ("error", "invalid_request", 400)
        ]
    );
    assert_eq!(records[2]["rows"], 3);
    assert_eq!(records[2]["model"], "mlp");
    assert_eq!(records[2]["action"], "infer");
    assert!(records[2]["principal"].as_str().unwrap().starts_with("key:"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&key[16..48]) && !text.contains("0.1,0.2"), "no secrets or payloads in the log");

    // The writer is gone now: requests are refused rather than served unaudited, while the
    // process still says it is alive (and not ready).
    let reply = harness.send(with_key(get("/v2/models/mlp"), &key).body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable");
    let live = harness.send(get("/v2/health/live").body(Body::empty()).unwrap()).await;
    assert_eq!(live.status, StatusCode::OK, "liveness does not depend on the audit log");
    let ready = harness.send(get("/v2/health/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_flood_of_requests_without_credentials_cannot_fill_the_audit_log() {
    let harness = Harness::new().await;
    let sent = 300;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..sent {
        let reply = harness.send(get("/v2/models/mlp").body(Body::empty()).unwrap()).await;
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    // The address used up its allowance of refused authentications: refused before any lookup.
    // The burst of 100, plus what the 10/s rate refilled while the test ran.
    let refused = statuses.get(&401).copied().unwrap_or(0);
    assert!((100..=120).contains(&refused), "{statuses:?}");
    assert_eq!(statuses.get(&429).copied().unwrap_or(0), sent - refused, "{statuses:?}");
    let limited = harness.send(get("/v2/models/mlp").body(Body::empty()).unwrap()).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.headers.contains_key("retry-after"));

    let log = harness.gateway.audit().unwrap();
    log.close().await;
    let path = harness.gateway.config().audit.as_ref().unwrap().path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let written = records.iter().filter(|record| record["event"] == "request").count() as u64;
    let folded: u64 = records
        .iter()
        .filter(|record| record["event"] == "refusals_folded")
        .map(|record| record["count"].as_u64().unwrap())
        .sum();
    assert_eq!(written + folded, sent + 1, "every refusal is written or counted, none dropped");
    assert!(written <= 4, "{written} request records for one repeated refusal");
    assert!(text.len() < 4096, "{} bytes of audit log for {sent} refusals", text.len());
    // The chain still verifies with the folded records in it.
    let report = crate::audit::verify::verify(&[path], None, None, 1).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

#[tokio::test]
async fn a_request_whose_client_hangs_up_is_still_recorded() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "infer").await;
    // A body that never arrives, and a client that gives up after 100 ms.
    let body = Body::from_stream(futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>());
    let request = with_key(post_json("/v2/models/mlp/infer"), &key).body(body).unwrap();
    let abandoned = super::public(Arc::clone(&harness.gateway)).oneshot(request);
    assert!(tokio::time::timeout(std::time::Duration::from_millis(100), abandoned).await.is_err());
    let log = harness.gateway.audit().unwrap();
    log.close().await;
    let path = harness.gateway.config().audit.as_ref().unwrap().path.clone();
    let text = std::fs::read_to_string(path).unwrap();
    let record: serde_json::Value = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|r| r["event"] == "request")
        .unwrap();
    assert_eq!(record["status"], 499);
    assert_eq!(record["reason"], "client_closed");
    assert_eq!(record["model"], "mlp");
}

#[tokio::test]
async fn liveness_says_200_when_the_server_is_at_capacity() {
    let harness = Harness::new().await;
    let capacity = u32::try_from(harness.gateway.config().max_concurrency).unwrap();
    let _every_slot = harness.gateway.in_flight().try_acquire_many(capacity).unwrap();
    let key = harness.key(&["mlp"], "infer,metadata").await;
    let busy =
        harness.send(with_key(post_json("/v2/models/mlp/infer"), &key).body(Body::from(infer_body(1))).unwrap()).await;
    busy.assert_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    let live = harness.send(get("/v2/health/live").body(Body::empty()).unwrap()).await;
    assert_eq!(live.status, StatusCode::OK, "liveness is outside the admission cap");
    let ready = harness.send(get("/v2/health/ready").body(Body::empty()).unwrap()).await;
    assert_eq!(ready.status, StatusCode::OK, "readiness is answered, not shed");
}

async fn admin_send(harness: &Harness, path: &str, host: Option<&str>, key: Option<&str>) -> Reply {
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(host) = host {
        request = request.header(header::HOST, host);
    }
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let response =
        super::admin(Arc::clone(&harness.gateway)).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply { status, headers, body }
}

#[tokio::test]
async fn the_admin_listener_answers_only_loopback_host_names() {
    let harness = Harness::new().await;
    for host in ["127.0.0.1:9090", "localhost:9090", "LOCALHOST", "[::1]:9090", "127.0.0.1"] {
        assert_eq!(admin_send(&harness, "/metrics", Some(host), None).await.status, StatusCode::OK, "{host}");
    }
    // A page on rebind.example resolved to 127.0.0.1 sends its own name as Host.
    for host in ["rebind.example", "rebind.example:9090", "127.0.0.1.rebind.example", "localhost.evil", "127.0.0.1:x"] {
        admin_send(&harness, "/metrics", Some(host), None)
            .await
            .assert_error(StatusCode::MISDIRECTED_REQUEST, "misdirected_request");
    }
    admin_send(&harness, "/health/live", None, None)
        .await
        .assert_error(StatusCode::MISDIRECTED_REQUEST, "misdirected_request");
    assert!(super::admin_host_allowed("ops.internal:9090", &["ops.internal".to_owned()]));
}

#[tokio::test]
async fn usage_on_the_admin_listener_needs_an_admin_key() {
    let harness = Harness::new().await;
    let host = Some("127.0.0.1:9090");
    admin_send(&harness, "/usage", host, None).await.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let data_key = harness.key(&["mlp"], "infer").await;
    admin_send(&harness, "/usage", host, Some(&data_key))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let (admin, record) = harness.keyring.create_admin("ops", None, None).await.unwrap();
    let reply = admin_send(&harness, "/usage", host, Some(admin.expose())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.json().is_array());
    // An admin key calls no model.
    let infer = harness
        .send(with_key(post_json("/v2/models/mlp/infer"), admin.expose()).body(Body::from(infer_body(1))).unwrap())
        .await;
    infer.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    harness.keyring.revoke(&record.kid).await.unwrap();
    admin_send(&harness, "/usage", host, Some(admin.expose()))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn a_request_without_exactly_one_host_header_gets_400() {
    let harness = Harness::new().await;
    let live = || Request::builder().method(Method::GET).uri("/v2/health/live");
    // RFC 9112 3.2: an HTTP/1.1 request without Host, with two, or with an invalid one.
    let reply = harness.send_as_is(live().body(Body::empty()).unwrap()).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let two = live().header(header::HOST, "models.example.com").header(header::HOST, "evil.example.com");
    harness.send_as_is(two.body(Body::empty()).unwrap()).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for bad in ["exa mple.com", "user@models.example.com", "models.example.com:port"] {
        let reply = harness.send_as_is(live().header(header::HOST, bad).body(Body::empty()).unwrap()).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    // HTTP/1.0 did not require Host; HTTP/2 names the authority in :authority instead.
    let old = live().version(http::Version::HTTP_10).body(Body::empty()).unwrap();
    assert_eq!(harness.send_as_is(old).await.status, StatusCode::OK);
    let h2 = Request::builder()
        .method(Method::GET)
        .version(http::Version::HTTP_2)
        .uri("http://models.example.com/v2/health/live")
        .body(Body::empty())
        .unwrap();
    assert_eq!(harness.send_as_is(h2).await.status, StatusCode::OK);
    for good in ["models.example.com", "127.0.0.1:8080", "[::1]:8080"] {
        let reply = harness.send_as_is(live().header(header::HOST, good).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK, "{good}");
    }
}

#[tokio::test]
async fn every_public_answer_is_nosniff_and_no_store() {
    let harness = Harness::new().await;
    let key = harness.key(&["mlp"], "metadata").await;
    let answers = [
        harness.send(get("/v2/health/live").body(Body::empty()).unwrap()).await,
        harness.send(with_key(get("/v2/models/mlp"), &key).body(Body::empty()).unwrap()).await,
        harness.send(get("/v2/models/mlp").body(Body::empty()).unwrap()).await,
        harness.send(with_key(get("/v2/nowhere"), &key).body(Body::empty()).unwrap()).await,
        harness.send_as_is(Request::builder().uri("/v2/health/live").body(Body::empty()).unwrap()).await,
    ];
    for reply in answers {
        assert_eq!(
            reply.headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{reply:?}"
        );
        assert_eq!(reply.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()), Some(&b"no-store"[..]), "{reply:?}");
    }
}
