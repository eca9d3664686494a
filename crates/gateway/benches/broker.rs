//! The token broker's hot paths. Goals: DPoP proof verification under 100 microseconds (it runs
//! on every model call made with a broker token), and token issuance (ID-token verification plus
//! signing) over 5,000 per second on one core.
#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::broker::{
    Broker, Grant,
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
    let (idp_der, mut idp_jwk) = jose::generate(Algorithm::ES256).unwrap();
    idp_jwk.common.key_id = Some("idp-1".into());
    std::fs::write(dir.path().join("idp.jwks"), serde_json::json!({ "keys": [idp_jwk] }).to_string()).unwrap();
    let text = format!(
        r#"
[store]
sqlite = "{d}/keys.db"
pepper_file = "{d}/pepper"
[audit]
enabled = false
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
signing_secret_file = "{d}/signing.secret"
[[broker.apps]]
client_id = "app"
identity_provider = "accounts"
models = ["demo"]
"#,
        d = dir.path().display()
    );
    let config = gateway::Config::from_toml(&text, dir.path()).unwrap();
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
    let grant = Grant::of_app(&app);
    let (provider, keys) = issuers.by_name("accounts").unwrap();
    c.bench_function("token_issuance", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let user = idp::Issuers::verify(provider, keys, black_box(&id_token), NOW).await.unwrap();
                broker.issue(&app, &user.subject, "https://models.example.com", &grant, "jkt", None, NOW).unwrap()
            })
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
