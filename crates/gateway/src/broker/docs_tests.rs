//! Every configuration example in `docs/mobile.md` and `docs/configuration.md` is loaded, and the
//! broker each one configures completes a token exchange: a documented setup under which every
//! exchange is refused cannot ship.
//!
//! The test plays the identity provider and Firebase (one RSA test key signs both kinds of
//! token) and the app (a P-256 device key). What cannot run here is replaced, and only that:
//! JWKS URLs by the documented `jwks_file` alternatives (files written in a temporary folder,
//! where every relative path of the example then points), Redis by the in-memory limiter, and
//! the TLS files and models of `docs/configuration.md`, which a token exchange does not use.

use jsonwebtoken::Algorithm;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use super::{
    jose,
    tests::{gateway_for, send, token_proof, token_request},
};
use crate::config::Config;

const MOBILE: &str = include_str!("../../../../docs/mobile.md");
const CONFIGURATION: &str = include_str!("../../../../docs/configuration.md");

/// A 2048-bit RSA key (PKCS#8 DER) made for this test and nothing else.
const TEST_RSA_PKCS8: &[&str] = &[
    "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC5UOnFc1yEgCI4mk4H9yDj7JeHpM99f6iQdv0LTJEB2xBR",
    "VroYyhUainx7/ky7Kh4gn6qTXsxk4/a01CDsYQ+TbRRX5MUs6CbszBVYYJv2mWLa68As5QNX5FZh4vZr8eVq4EFskbFLOrHZ",
    "s5QANBBeBPqss44ASSTdRZmK4L+b1wTHqSQbKG64W5LdMtA+q/jMRLuPfTwgef/8ytLLEm4DFu0txphiU/r09IpgoT3a+Xj+",
    "QMJ8FmNnY0rG2lF520I/z0aPIc4j2bwi34/4GSpZMIJl+lG7NCGLUnwMfpHBPtGoCQRegPqYyV85EaSkgwyLb3KFga8bIfue",
    "TRyggRhPAgMBAAECggEATqWhyMwIUC1nGJmYEzZU7ZY7yvPtoSfb/I+bHb/9bImxd6u0aA/fe/eZFDBdFTOvPI42oLujSBAd",
    "ZCoA3QDmUN2CvDiZW9Ecr/N+/ZZmqnX3Z8yUrxj0XclIxdtCVJaBFGYfLfn5AeHjl+5oGdv+tEAtuLytP77LF+NRYgi3GOYj",
    "vwkU6/OSvTBVm+50oCSRgPZqHSrMKlPQBVubhMH5c1dE1QtiI5TLO1wqprGtHlLK6tkfBYqtR08Xm0l9Ph44VZXYqMI+e9b5",
    "Ki1/JX7y2tvhvcvGjhwKajnhrxNI7dqKiXh+T4HIEY6nJzxinLqiub2fDLKgpQuZe08ZGk/m/QKBgQDadCcryx7Guft/wn+b",
    "dJdvICxtuwlYpk2/S9IWQU6ayH0aeF8lh8KwXBsEe6Pr3L3ZJC673ibDI8yVqOtXhDl0f1nH26hO9KQefBVLLk2lCNyefIXi",
    "ih4ThSqwN4R7fVe2Af9R5tm72AeJBP8CCqBy4I3eKoNZ8ToE1763cO3nkwKBgQDZKriVUSRrkN9oKYEbgAIIDeiIoUO5iGAF",
    "3azRK6cF+3xkJAW4xNiphdW3jV9BGnxkU8R7YlGf2ZcTkQo2FIH8QMXFebuw4H3A390XxCNfC22BKdZ5TuSYkmWFKatXOOwn",
    "I87R80KAETMUBjG8yAOe4NGognbC6sp5PHvdDW/J1QKBgBTgWsn1nFhTd7Rq6vT5PGuTQIuv/yGoqu9oGIil7xQdqs73x+f3",
    "RGTEOJTCGBU3QDFbItgzT7MAXdHDldIEQdVfQj42QKxi9rgvFX3cy/DEmwjOT6Epn9wvsreqZo/Cl7o+EJ9MF2y7JWUzxAb2",
    "6wRvbz9XArx6sBe8Ym53bVTfAoGAMKard3gYKqjoA9PYgqqoydkj0Qgfvf7ZVDcXMj0PS/3NHjobtgsTZtb+zAI15sXiPC+w",
    "AtxB4QfEGrQRj5AEltiD9fuRmsyQH5eHVn2wVuiefaM70y1jdPLHH4/4PLAZ56LUAKD4suwnf0Lr/Zjphrxi+9dOd9hVx9dP",
    "AHS0KIkCgYA4WTs6gknWbGVm3wzBIo+wTklK0YQlu4G4nTrcacTu2FV0SYuECuFn0wzJ+2WLsHTA/Z1CN15uIjV0kUJT54hT",
    "sro5Ayf6AlXE+mLCIXaMkSo6bGzdaf3u0L2D8Vf+GZMPb+ziQG4XLA5Mxect7J3fL9yThu9iNET48mCMOyc6FQ==",
];

const TEST_KID: &str = "docs-test";

/// The ```toml blocks of a Markdown page, in order.
fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        match open.as_mut() {
            None if fence && line.trim_start().trim_start_matches('`').trim() == "toml" => open = Some(String::new()),
            None => {}
            Some(_) if fence => blocks.extend(open.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a ```toml block is not closed");
    blocks
}

/// The example as this test can run it: JWKS URLs give way to the documented `jwks_file`
/// alternatives, and Redis to the in-memory limiter.
fn runnable(example: &str) -> String {
    example
        .lines()
        .map(|line| {
            if line.starts_with("jwks_url = ") {
                format!("# {line}")
            } else if let Some(file) = line.strip_prefix("# jwks_file = ") {
                format!("jwks_file = {file}")
            } else if line.starts_with("backend = \"redis://") {
                "backend = \"memory\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Signer {
    pair: RsaKeyPair,
    jwks: String,
}

fn signer() -> Signer {
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, TEST_RSA_PKCS8.concat()).unwrap();
    let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let jwk = serde_json::json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": TEST_KID,
        "n": jose::b64_encode(&public.n), "e": jose::b64_encode(&public.e),
    });
    Signer { pair, jwks: serde_json::json!({ "keys": [jwk] }).to_string() }
}

impl Signer {
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": TEST_KID });
        let message = format!(
            "{}.{}",
            jose::b64_encode(header.to_string().as_bytes()),
            jose::b64_encode(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message.as_bytes(), &mut signature)
            .unwrap();
        format!("{message}.{}", jose::b64_encode(&signature))
    }
}

/// Loads `example` in a fresh folder holding the JWKS files it names, and exchanges an ID token
/// for an access token as its first app, with every header that app needs.
async fn exchange_with(example: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = runnable(example);
    let signer = signer();
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("jwks_file = ") {
            let name = file.split('"').nth(1).unwrap();
            std::fs::write(dir.path().join(name), &signer.jwks).unwrap();
        }
    }
    let mut config = Config::from_toml(&text, dir.path()).unwrap();
    // Not used by a token exchange, and not present here.
    config.tls = None;
    config.models.clear();
    let broker = config.broker.clone().unwrap();
    let app = broker.apps.first().unwrap().clone();
    let provider = config.identity_providers.iter().find(|provider| provider.name == app.identity_provider).unwrap();
    let now = crate::time::now();
    // The provider signs the user in to the app: the ID token is issued to the app's client id.
    let id_token = signer.sign(&serde_json::json!({
        "iss": provider.issuer, "sub": "248289761001", "aud": app.client_id, "iat": now - 5, "exp": now + 300,
    }));
    let gateway = gateway_for(config).await;
    let (device, device_jwk) = jose::generate(Algorithm::ES256).unwrap();
    let device_jwk = serde_json::to_value(device_jwk).unwrap();
    let nonce = if broker.require_nonce {
        let request = http::Request::post(super::NONCE_PATH).header("host", "models.example.com");
        let answer = send(&gateway, request.body(axum::body::Body::empty()).unwrap()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        Some(answer.body["nonce"].as_str().unwrap().to_owned())
    } else {
        None
    };
    let proof = token_proof(&device, &device_jwk, &broker.public_url, nonce.as_deref());
    let mut headers = vec![("dpop", proof)];
    if app.attestation.is_some() {
        let app_check = broker.app_check.as_ref().unwrap();
        let project = &app_check.project_number;
        headers.push((
            super::attest::APP_CHECK_HEADER,
            signer.sign(&serde_json::json!({
                "iss": format!("https://firebaseappcheck.googleapis.com/{project}"),
                "aud": [format!("projects/{project}")],
                "sub": app_check.app_ids.first().unwrap(), "iat": now - 5, "exp": now + 300,
            })),
        ));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let audience = broker.audiences.first().unwrap();
    let answer = send(&gateway, token_request(&app.client_id, &id_token, audience, None, &headers)).await;
    assert_eq!(answer.status, 200, "{} (audit reason {:?})", answer.body, answer.reason);
    assert_eq!(answer.body["token_type"], "DPoP");
    let claims = gateway.broker().unwrap().verify_token(answer.body["access_token"].as_str().unwrap(), now).await;
    let claims = claims.unwrap();
    assert_eq!((claims.sub.as_str(), claims.client_id.as_str()), ("248289761001", app.client_id.as_str()));
    assert_eq!(claims.att.is_some(), app.attestation.is_some());
}

#[test]
fn every_toml_example_in_the_gateway_docs_loads() {
    let dir = tempfile::tempdir().unwrap();
    for (page, markdown) in [("docs/mobile.md", MOBILE), ("docs/configuration.md", CONFIGURATION)] {
        let blocks = toml_blocks(markdown);
        assert!(!blocks.is_empty(), "{page} has configuration examples");
        for block in blocks {
            if let Err(error) = Config::from_toml(&block, dir.path()) {
                panic!("an example in {page} does not load: {error}\n{block}");
            }
        }
    }
}

#[tokio::test]
async fn the_broker_of_docs_mobile_md_exchanges_a_token() {
    let blocks = toml_blocks(MOBILE);
    let example = blocks.iter().find(|block| block.contains("[broker]")).unwrap();
    exchange_with(example).await;
}

#[tokio::test]
async fn the_broker_of_docs_configuration_md_exchanges_a_token() {
    let blocks = toml_blocks(CONFIGURATION);
    let example = blocks.iter().find(|block| block.contains("[broker]")).unwrap();
    exchange_with(example).await;
}
