//! The token broker's hot paths. Goals: DPoP proof verification under 100 microseconds (it runs
//! on every model call made with a broker token), and token issuance (ID-token verification plus
//! signing) over 5,000 per second on one core.
#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::broker::{
    Broker, TokenScope,
    dpop::{self, Expected, Nonces, Policy},
    idp, jose,
};
use jsonwebtoken::Algorithm;

const NOW: i64 = 1_800_000_000;

fn proof(alg: Algorithm, url: &str, token: &str) -> String {
    let (der, jwk) = jose::generate(alg).unwrap();
    let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": jwk });
    let claims = serde_json::json!({
        "jti": "bench-proof-0001", "htm": "POST", "htu": url, "iat": NOW, "ath": jose::sha256_b64(token.as_bytes()),
    });
    jose::sign_compact(alg, &der, &header, &claims).unwrap()
}

/// The identity provider's key set, written to `dir/idp.jwks`; returns its private key.
fn write_idp_keys(dir: &std::path::Path) -> Vec<u8> {
    let (der, mut jwk) = jose::generate(Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".into());
    std::fs::write(dir.join("idp.jwks"), serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    der
}

/// A config with a store in `dir`, one identity provider and one app reaching `model`;
/// `local` adds sections (audit, models).
fn config(dir: &std::path::Path, local: &str, model: &str, lifetime: &str) -> gateway::Config {
    let text = format!(
        r#"
[store]
sqlite = "{d}/keys.db"
pepper_file = "{d}/pepper"
{local}
[[identity_providers]]
name = "accounts"
issuer = "https://accounts.example.com"
audiences = ["app"]
algorithms = ["ES256"]
jwks_file = "{d}/idp.jwks"
tokens = "id_token"
[broker]
issuer = "https://broker.example.com"
public_url = "https://models.example.com"
token_lifetime = "{lifetime}"
signing_secret_file = "{d}/signing.secret"
[[broker.apps]]
client_id = "app"
identity_provider = "accounts"
models = ["{model}"]
"#,
        d = dir.display()
    );
    gateway::Config::from_toml(&text, dir).unwrap()
}

fn bench(c: &mut Criterion) {
    jose::install();
    let url = "https://models.example.com/v2/models/demo/infer";
    let token = "a.b.c";
    let policy = Policy {
        algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
        max_age: std::time::Duration::from_secs(60),
        max_skew: std::time::Duration::from_secs(60),
        require_nonce: false,
    };
    let nonces = Nonces::new(vec![1; 32], std::time::Duration::from_secs(300));
    for (name, alg) in [("dpop_verify_es256", Algorithm::ES256), ("dpop_verify_eddsa", Algorithm::EdDSA)] {
        let proof = proof(alg, url, token);
        let expected = Expected { method: "POST", htu: url, access_token: Some(token), now: NOW };
        c.bench_function(name, |b| {
            b.iter(|| dpop::verify_proof(black_box(&proof), &expected, &policy, &nonces, None).unwrap());
        });
    }

    // Issuance: verify an ES256 ID token against the identity provider's keys, then sign.
    let dir = tempfile::tempdir().unwrap();
    let idp_der = write_idp_keys(dir.path());
    let config = config(dir.path(), "[audit]\nenabled = false\n", "demo", "10m");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (broker, issuers) = runtime.block_on(async {
        let store: Arc<dyn gateway::store::Store> =
            Arc::new(gateway::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap());
        let broker = Broker::open(config.broker.clone().unwrap(), store, None, NOW).await.unwrap();
        (broker, idp::Issuers::new(&config.identity_providers).unwrap())
    });
    let claims = serde_json::json!({
        "iss": "https://accounts.example.com", "sub": "alice", "aud": "app", "iat": NOW, "exp": NOW + 600,
    });
    let id_token =
        jose::sign_compact(Algorithm::ES256, &idp_der, &serde_json::json!({ "typ": "JWT", "kid": "idp-1" }), &claims)
            .unwrap();
    let app = config.broker.as_ref().unwrap().app("app").unwrap().clone();
    let grant = TokenScope::of_app(&app);
    let (provider, keys) = issuers.by_name("accounts").unwrap();
    // A model call's whole check: our token (signature, claims), the proof, the replay cache.
    let (device_der, device_jwk) = jose::generate(Algorithm::ES256).unwrap();
    let jkt = jose::thumbprint(&device_jwk).unwrap();
    let (token, _) = broker.issue(&app, "alice", "https://models.example.com", &grant, &jkt, None, NOW).unwrap();
    let mut counter = 0u64;
    c.bench_function("broker_token_and_proof", |b| {
        b.iter_batched(
            || {
                counter += 1;
                let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": device_jwk });
                let claims = serde_json::json!({
                    "jti": format!("bench-{counter:012}"), "htm": "POST", "htu": url, "iat": NOW,
                    "ath": jose::sha256_b64(token.as_bytes()),
                });
                jose::sign_compact(Algorithm::ES256, &device_der, &header, &claims).unwrap()
            },
            |proof| {
                runtime.block_on(broker.authenticate(&token, &proof, "POST", "/v2/models/demo/infer", NOW)).unwrap()
            },
            criterion::BatchSize::SmallInput,
        );
    });
    c.bench_function("broker_token_verify", |b| {
        b.iter(|| runtime.block_on(broker.verify_token(black_box(&token), NOW)).unwrap());
    });
    c.bench_function("token_issuance", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let user = idp::Issuers::verify(provider, keys, black_box(&id_token), NOW).await.unwrap();
                broker.issue(&app, &user.subject, "https://models.example.com", &grant, "jkt", None, NOW).unwrap()
            })
        });
    });
}

/// The same inference through the whole public router (every layer, audit log included), with
/// an API key and with a DPoP-bound broker token and a fresh proof: the broker's cost per call.
fn full_stack(c: &mut Criterion) {
    use axum::body::Body;
    use tower::ServiceExt;

    jose::install();
    let dir = tempfile::tempdir().unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fixtures/mlp");
    write_idp_keys(dir.path());
    let local = format!(
        "[audit]\npath = \"{d}/audit.log\"\nsigning_key = \"{d}/audit.key\"\n[inference]\nthreads = 1\n\
         [[models]]\nname = \"mlp\"\npath = \"{m}/model.onnx\"\n",
        d = dir.path().display(),
        m = models.display()
    );
    let config = config(dir.path(), &local, "mlp", "15m");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (router, key, token, device) = runtime.block_on(async {
        let store: Arc<dyn gateway::store::Store> =
            Arc::new(gateway::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap());
        let now = gateway::time::now();
        let broker =
            Arc::new(Broker::open(config.broker.clone().unwrap(), Arc::clone(&store), None, now).await.unwrap());
        let app = config.broker.as_ref().unwrap().app("app").unwrap().clone();
        let device = jose::generate(Algorithm::ES256).unwrap();
        let jkt = jose::thumbprint(&device.1).unwrap();
        let (token, _) = broker
            .issue(&app, "alice", "https://models.example.com", &TokenScope::of_app(&app), &jkt, None, now)
            .unwrap();
        let pepper = gateway::authn::api_key::Pepper::from_bytes(vec![1; 32]);
        let limiter = Arc::new(gateway::limits::Limiter::new(config.limits.clone(), Arc::clone(&store)).unwrap());
        let registry = gateway::backend::load_models(&config).unwrap();
        let gateway = gateway::Gateway::builder(config)
            .models(registry)
            .store(store, pepper.clone())
            .limiter(limiter)
            .broker(broker)
            .build()
            .unwrap();
        let (key, _) = gateway
            .keyring(pepper)
            .create(&gateway::keys::NewKey {
                name: "bench".into(),
                owner: None,
                models: gateway::store::ModelScope::All,
                scopes: gateway::store::Scopes::ALL,
                output: None,
                widen_output: false,
                delegate: false,
                expires_in: None,
                limits: Default::default(),
            })
            .await
            .unwrap();
        (gateway::router::public(gateway), key.expose().to_owned(), token, device)
    });
    let row: Vec<String> = (0..20).map(|i| format!("{:.3}", f64::from(i) / 20.0)).collect();
    let body =
        format!(r#"{{"inputs":[{{"name":"features","shape":[1,20],"datatype":"FP32","data":[{}]}}]}}"#, row.join(","));
    let request = |authorization: String, proof: Option<String>| {
        let mut builder = http::Request::post("/v2/models/mlp/infer")
            .header("host", "localhost")
            .header("authorization", authorization)
            .header("content-type", "application/json");
        if let Some(proof) = proof {
            builder = builder.header("dpop", proof);
        }
        builder.body(Body::from(body.clone())).unwrap()
    };
    let send = |request: http::Request<Body>| {
        runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
        })
    };
    let mut group = c.benchmark_group("full_stack_infer");
    group.bench_function("api_key", |b| {
        b.iter_batched(|| request(format!("Bearer {key}"), None), send, criterion::BatchSize::SmallInput);
    });
    let url = "https://models.example.com/v2/models/mlp/infer";
    let mut counter = 0u64;
    group.bench_function("dpop_token", |b| {
        b.iter_batched(
            || {
                counter += 1;
                let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": device.1 });
                let claims = serde_json::json!({
                    "jti": format!("bench-{counter:012}"), "htm": "POST", "htu": url,
                    "iat": gateway::time::now(), "ath": jose::sha256_b64(token.as_bytes()),
                });
                let proof = jose::sign_compact(Algorithm::ES256, &device.0, &header, &claims).unwrap();
                request(format!("DPoP {token}"), Some(proof))
            },
            send,
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench, full_stack);
criterion_main!(benches);
