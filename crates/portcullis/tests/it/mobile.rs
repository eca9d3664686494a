//! The mobile flow end to end, on the real binary: this test plays the identity provider (a
//! local JWKS file and ID tokens it signs), the app (a device key making DPoP proofs) and the
//! caller who stole a token. Without a token: 401. With a stolen token but not the device key:
//! 401. With both: a prediction. Also: delegate keys for app backends, and signing-key rotation.

use gateway::broker::jose::{b64_encode, generate, sha256_b64, sign_compact};

use crate::process::{Running, client, run, write_config};

const ISSUER: &str = "https://accounts.test";
const APP: &str = "demo-app";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    b64_encode(&bytes)
}

/// A key pair as (PKCS#8, public JWK as JSON).
fn key(alg: jsonwebtoken::Algorithm) -> (Vec<u8>, serde_json::Value) {
    let (der, jwk) = generate(alg).unwrap();
    (der, serde_json::to_value(jwk).unwrap())
}

struct Mobile {
    _dir: tempfile::TempDir,
    config: String,
    base: String,
    server: Running,
    idp: Vec<u8>,
    device: (Vec<u8>, serde_json::Value),
}

impl Mobile {
    async fn start() -> Mobile {
        let dir = tempfile::tempdir().unwrap();
        let (idp, mut idp_jwk) = key(jsonwebtoken::Algorithm::ES256);
        idp_jwk["kid"] = "idp-1".into();
        std::fs::write(dir.path().join("idp.jwks"), serde_json::json!({ "keys": [idp_jwk] }).to_string()).unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let extra = format!(
            r#"
[[identity_providers]]
name = "accounts"
issuer = "{ISSUER}"
audiences = ["{APP}"]
algorithms = ["ES256"]
jwks_file = "idp.jwks"
tokens = "id_token"

[broker]
issuer = "https://broker.test"
public_url = "{base}"
token_lifetime = "5m"

[[broker.apps]]
client_id = "{APP}"
identity_provider = "accounts"
models = ["mlp"]
"#
        );
        let path = write_config(dir.path(), &extra);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""), 1))
            .unwrap();
        let config = path.to_str().unwrap().to_owned();
        let server = Running::start(&["serve", "--config", &config], &[]);
        Mobile { _dir: dir, config, base, server, idp, device: key(jsonwebtoken::Algorithm::ES256) }
    }

    fn id_token(&self, sub: &str) -> String {
        let claims = serde_json::json!({ "iss": ISSUER, "sub": sub, "aud": APP, "iat": now(), "exp": now() + 300 });
        let header = serde_json::json!({ "typ": "JWT", "kid": "idp-1" });
        sign_compact(jsonwebtoken::Algorithm::ES256, &self.idp, &header, &claims).unwrap()
    }

    fn proof(&self, key: &(Vec<u8>, serde_json::Value), method: &str, path: &str, token: Option<&str>) -> String {
        let mut claims = serde_json::json!({ "jti": random_id(), "htm": method, "htu": format!("{}{path}", self.base), "iat": now() });
        if let Some(token) = token {
            claims["ath"] = sha256_b64(token.as_bytes()).into();
        }
        let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": key.1 });
        sign_compact(jsonwebtoken::Algorithm::ES256, &key.0, &header, &claims).unwrap()
    }

    async fn exchange(&self, id_token: &str) -> reqwest::Response {
        let form = format!(
            "grant_type={}&subject_token={id_token}&subject_token_type={}&client_id={APP}&audience={}",
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
            "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
            self.base.replace(':', "%3A").replace('/', "%2F"),
        );
        client()
            .post(self.server.url("/v1/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", self.proof(&self.device, "POST", "/v1/token", None))
            .body(form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self) -> String {
        let response = self.exchange(&self.id_token("alice")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
        assert_eq!(body["expires_in"], 300);
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn infer(&self, authorization: Option<String>, proof: Option<String>) -> reqwest::Response {
        let row: Vec<f32> = (0..20).map(|i| i as f32 / 20.0).collect();
        let body = serde_json::json!({ "inputs": [{ "name": "features", "shape": [1, 20], "datatype": "FP32", "data": row }] });
        let mut request = client().post(self.server.url("/v2/models/mlp/infer")).json(&body);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(proof) = proof {
            request = request.header("dpop", proof);
        }
        request.send().await.unwrap()
    }
}

const INFER: &str = "/v2/models/mlp/infer";

#[tokio::test]
async fn mobile_flow_without_token_401_stolen_token_401_token_and_device_key_prediction() {
    let app = Mobile::start().await;

    // 1. Without a token: 401.
    let response = app.infer(None, None).await;
    assert_eq!(response.status(), 401);

    // The app signs its user in (ID token from the identity provider) and exchanges it, with a
    // proof by its device key, for a short-lived token bound to that key.
    let token = app.token().await;

    // 2. A stolen token without the device key: 401, whichever way it is presented.
    let response = app.infer(Some(format!("DPoP {token}")), None).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("DPoP error=\"invalid_dpop_proof\""), "{challenge}");
    let response = app.infer(Some(format!("Bearer {token}")), None).await;
    assert_eq!(response.status(), 401, "a bound token presented as Bearer (a downgrade)");
    let thief = key(jsonwebtoken::Algorithm::ES256);
    let response = app.infer(Some(format!("DPoP {token}")), Some(app.proof(&thief, "POST", INFER, Some(&token)))).await;
    assert_eq!(response.status(), 401, "a proof by the thief's own key");

    // 3. The token and a fresh proof by the device key: a prediction.
    let proof = app.proof(&app.device, "POST", INFER, Some(&token));
    let response = app.infer(Some(format!("DPoP {token}")), Some(proof.clone())).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["outputs"].as_array().is_some_and(|outputs| !outputs.is_empty()), "{body}");

    // The same proof again: a replay, refused.
    let response = app.infer(Some(format!("DPoP {token}")), Some(proof)).await;
    assert_eq!(response.status(), 401);

    // A forged ID token gets no token, and the error says no more than the code: an invalid
    // subject token is `invalid_request` (RFC 8693 2.2.2).
    let mut forged = app.id_token("mallory");
    forged.push('A');
    let response = app.exchange(&forged).await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // The keys that verify broker tokens are published.
    let jwks: serde_json::Value =
        client().get(app.server.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(jwks["keys"][0].get("d").is_none());

    // Rotation: a new key signs from now on; tokens of the old one keep working until they expire.
    let output = run(&["signing-keys", "rotate", "--json", "--config", &app.config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rotated: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Nodes reread the keys at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let fresh = app.token().await;
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_eq!(kid_of(&fresh), rotated["kid"].as_str().unwrap(), "the running server signs with the new key");
    for token in [&token, &fresh] {
        let proof = app.proof(&app.device, "POST", INFER, Some(token));
        assert_eq!(app.infer(Some(format!("DPoP {token}")), Some(proof)).await.status(), 200);
    }
    let jwks: serde_json::Value =
        client().get(app.server.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the old public key stays published");
}

#[tokio::test]
async fn delegate_keys_name_end_users_and_other_keys_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config = config.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--config", config, "--name", "backend", "--models", "mlp", "--json"];
        args.extend_from_slice(extra);
        let output = run(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["key"].as_str().unwrap().to_owned()
    };
    let delegate =
        create(&["--delegate", "--rate", "3/min", "--burst", "3", "--user-rate", "1/min", "--user-burst", "1"]);
    let plain = create(&[]);
    let server = Running::start(&["serve", "--config", config], &[]);
    let get = |key: &str, user: Option<&str>| {
        let mut request = client().get(server.url("/v2/models/mlp")).bearer_auth(key);
        if let Some(user) = user {
            request = request.header("portcullis-on-behalf-of", user);
        }
        request.send()
    };
    assert_eq!(get(&plain, Some("alice")).await.unwrap().status(), 403, "not a delegate");
    assert_eq!(get(&delegate, Some("alice")).await.unwrap().status(), 200);
    // Per-user limits: alice has spent her one request, bob has not.
    assert_eq!(get(&delegate, Some("alice")).await.unwrap().status(), 429);
    assert_eq!(get(&delegate, Some("bob")).await.unwrap().status(), 200);
    assert_eq!(get(&delegate, Some("bad user")).await.unwrap().status(), 400);
    // The key's own limit counts all its users: a new user per request gains nothing.
    assert_eq!(get(&delegate, Some("carol")).await.unwrap().status(), 200);
    assert_eq!(get(&delegate, Some("dave")).await.unwrap().status(), 429);
    // Per-user limits belong to delegate keys only.
    let output = run(&["keys", "create", "--config", config, "--name", "x", "--models", "mlp", "--user-rate", "1/s"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--delegate"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
