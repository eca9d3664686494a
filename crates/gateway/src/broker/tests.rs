//! The broker against the attacks of RFC 8725 and RFC 9449 section 11, one named test each.
//! Every test makes a token or proof that is right in all but one respect and asserts the one
//! check that refuses it.

use std::sync::Arc;

use hmac::Mac;
use jsonwebtoken::{EncodingKey, Header, jwk::Jwk};

use super::*;
use crate::config::Config;

const NOW: i64 = 1_800_000_000;
const PUBLIC_URL: &str = "https://models.example.com";
const IDP: &str = "https://accounts.example.com";

/// A key pair: the private key as the library wants it, and its public JWK.
struct Pair {
    encoding: EncodingKey,
    jwk: Jwk,
    alg: Algorithm,
}

use jsonwebtoken::Algorithm;

fn pair(alg: Algorithm, kid: Option<&str>) -> Pair {
    jose::install();
    let (der, mut jwk) = jose::generate(alg).unwrap();
    jwk.common.key_id = kid.map(str::to_owned);
    let encoding = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
        _ => EncodingKey::from_ec_der(&der),
    };
    Pair { encoding, jwk, alg }
}

fn sign(pair: &Pair, header: Header, claims: &serde_json::Value) -> String {
    let mut header = header;
    header.alg = pair.alg;
    jsonwebtoken::encode(&header, claims, &pair.encoding).unwrap()
}

/// A token whose header and payload are given as JSON text, with a signature by `pair` (for
/// headers the library would not write: duplicates, none, embedded keys).
fn raw_token(pair: &Pair, header: &str, claims: &serde_json::Value) -> String {
    let message =
        format!("{}.{}", jose::b64_encode(header.as_bytes()), jose::b64_encode(claims.to_string().as_bytes()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &pair.encoding, pair.alg).unwrap();
    format!("{message}.{signature}")
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    broker: Broker,
    issuers: idp::Issuers,
    idp: Pair,
    device: Pair,
}

fn config_text(dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[store]
sqlite = "{dir}/keys.db"
pepper_file = "{dir}/pepper"
[audit]
enabled = false
[[identity_providers]]
name = "accounts"
issuer = "{IDP}"
audiences = ["ios-app"]
algorithms = ["ES256"]
jwks_file = "{dir}/idp.jwks"
tokens = "id_token"
max_age = "1h"
[broker]
issuer = "https://broker.example.com"
public_url = "{PUBLIC_URL}"
token_lifetime = "10m"
signing_secret_file = "{dir}/signing.secret"
{extra}
[[broker.apps]]
client_id = "ios-app"
identity_provider = "accounts"
models = ["demo", "other"]
output = "top_k=2"
"#,
        dir = dir.display()
    )
}

async fn fixture_with(extra: &str) -> Fixture {
    fixture_with_app(extra, "").await
}

/// `extra` goes in `[broker]`, `app` in the app's `[[broker.apps]]`.
async fn fixture_with_app(extra: &str, app: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let idp = pair(Algorithm::ES256, Some("idp-1"));
    std::fs::write(dir.path().join("idp.jwks"), serde_json::json!({ "keys": [idp.jwk] }).to_string()).unwrap();
    let text = format!("{}{app}\n", config_text(dir.path(), extra));
    let config = Config::from_toml(&text, dir.path()).unwrap();
    let store: Arc<dyn Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("keys.db")).await.unwrap());
    let broker = Broker::open(config.broker.clone().unwrap(), store, None, NOW).await.unwrap();
    let issuers = idp::Issuers::new(&config.identity_providers).unwrap();
    Fixture { _dir: dir, config, broker, issuers, idp, device: pair(Algorithm::ES256, None) }
}

async fn fixture() -> Fixture {
    fixture_with("").await
}

fn id_claims() -> serde_json::Value {
    serde_json::json!({ "iss": IDP, "sub": "alice", "aud": "ios-app", "iat": NOW - 10, "exp": NOW + 600 })
}

fn id_header() -> Header {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("idp-1".into());
    header.typ = Some("JWT".into());
    header
}

impl Fixture {
    fn id_token(&self, claims: &serde_json::Value) -> String {
        sign(&self.idp, id_header(), claims)
    }

    async fn verify_id(&self, token: &str) -> Result<idp::Verified, JoseError> {
        let (provider, keys) = self.issuers.by_name("accounts").unwrap();
        idp::Issuers::verify(provider, keys, token, NOW).await
    }

    fn proof_claims(&self, method: &str, url: &str, token: Option<&str>) -> serde_json::Value {
        let mut jti = [0u8; 12];
        getrandom::fill(&mut jti).unwrap();
        let mut claims = serde_json::json!({ "jti": jose::b64_encode(&jti), "htm": method, "htu": url, "iat": NOW });
        if let Some(token) = token {
            claims["ath"] = serde_json::Value::String(jose::sha256_b64(token.as_bytes()));
        }
        claims
    }

    fn proof_with(&self, key: &Pair, claims: &serde_json::Value) -> String {
        let mut header = Header::new(key.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(key.jwk.clone());
        sign(key, header, claims)
    }

    fn proof(&self, method: &str, url: &str, token: Option<&str>) -> String {
        self.proof_with(&self.device, &self.proof_claims(method, url, token))
    }

    async fn check(&self, proof: &str, method: &str, htu: &str, token: Option<&str>) -> Result<dpop::Proof, DpopError> {
        let expected = Expected { method, htu, access_token: token, now: NOW };
        self.broker.check_proof(proof, &expected, None).await
    }

    /// A token issued to the fixture's device key.
    fn access_token(&self) -> String {
        let app = self.config.broker.as_ref().unwrap().app("ios-app").unwrap().clone();
        let jkt = jose::thumbprint(&self.device.jwk).unwrap();
        self.broker.issue(&app, "alice", PUBLIC_URL, &TokenScope::of_app(&app), &jkt, None, NOW).unwrap().0
    }

    async fn call(&self, token: &str, proof: &str) -> Result<Principal, TokenError> {
        self.broker.authenticate(token, proof, "POST", "/v2/models/demo/infer", NOW).await
    }
}

const INFER_URL: &str = "https://models.example.com/v2/models/demo/infer";

// --- Identity-provider tokens (RFC 8725) ---------------------------------------------------

#[tokio::test]
async fn a_good_id_token_verifies() {
    let f = fixture().await;
    let user = f.verify_id(&f.id_token(&id_claims())).await.unwrap();
    assert_eq!(user.subject, "alice");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture().await;
    let claims = id_claims().to_string();
    let token = format!(
        "{}.{}.",
        jose::b64_encode(br#"{"alg":"none","typ":"JWT","kid":"idp-1"}"#),
        jose::b64_encode(claims.as_bytes())
    );
    assert!(f.verify_id(&token).await.is_err());
    let with_signature = format!("{token}c2ln");
    assert_eq!(f.verify_id(&with_signature).await.unwrap_err(), JoseError::Algorithm("none".into()));
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    // Algorithm confusion: the attacker signs with HS256 using the issuer's public key as the
    // HMAC secret, hoping the verifier takes the algorithm from the header.
    let f = fixture().await;
    let header = jose::b64_encode(br#"{"alg":"HS256","typ":"JWT","kid":"idp-1"}"#);
    let payload = jose::b64_encode(id_claims().to_string().as_bytes());
    let message = format!("{header}.{payload}");
    let secret = serde_json::to_vec(&f.idp.jwk).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(message.as_bytes());
    let token = format!("{message}.{}", jose::b64_encode(&mac.finalize().into_bytes()));
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::Algorithm("HS256".into()));
}

#[tokio::test]
async fn an_algorithm_outside_the_issuers_list_is_refused() {
    let f = fixture().await;
    // EdDSA is a fine algorithm, but this issuer's list says ES256 only.
    let other = pair(Algorithm::EdDSA, Some("idp-1"));
    let mut header = id_header();
    header.alg = Algorithm::EdDSA;
    let token = sign(&other, header, &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::Algorithm("EdDSA".into()));
}

#[tokio::test]
async fn a_forged_kid_is_refused() {
    let f = fixture().await;
    let attacker = pair(Algorithm::ES256, None);
    for kid in ["idp-2", "' OR 1=1 --", "../../etc/passwd"] {
        let mut header = id_header();
        header.kid = Some(kid.into());
        let token = sign(&attacker, header, &id_claims());
        assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::UnknownKey, "{kid}");
    }
    // The right kid with another key: the signature fails.
    let token = sign(&attacker, id_header(), &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::Signature);
}

#[tokio::test]
async fn an_embedded_jwk_in_a_token_is_refused() {
    let f = fixture().await;
    let attacker = pair(Algorithm::ES256, Some("idp-1"));
    let mut header = id_header();
    header.jwk = Some(attacker.jwk.clone());
    let token = sign(&attacker, header, &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::EmbeddedKey);
}

#[tokio::test]
async fn jku_and_x5u_are_never_followed() {
    let f = fixture().await;
    let attacker = pair(Algorithm::ES256, Some("attacker"));
    let mut header = id_header();
    header.kid = Some("attacker".into());
    header.jku = Some("http://127.0.0.1:9/jwks.json".into());
    header.x5u = Some("http://127.0.0.1:9/cert.pem".into());
    let token = sign(&attacker, header, &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::UnknownKey);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["exp"] = (NOW - 61).into();
    claims["iat"] = (NOW - 700).into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
    // Within the skew it is still accepted.
    claims["exp"] = (NOW - 30).into();
    assert!(f.verify_id(&f.id_token(&claims)).await.is_ok());
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["nbf"] = (NOW + 120).into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
    let mut claims = id_claims();
    claims["iat"] = (NOW + 120).into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
    let mut claims = id_claims();
    claims["iat"] = (NOW - 7200).into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)), "older than max_age");
}

#[tokio::test]
async fn a_wrong_or_missing_audience_is_refused() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["aud"] = "another-app".into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
    claims.as_object_mut().unwrap().remove("aud");
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
    claims["aud"] = serde_json::json!(["another-app", "ios-app"]);
    assert!(f.verify_id(&f.id_token(&claims)).await.is_ok(), "one of several audiences is ours");
}

#[tokio::test]
async fn a_wrong_issuer_is_refused() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["iss"] = "https://accounts.example.com.evil.test".into();
    assert!(matches!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::Claims(_)));
}

#[tokio::test]
async fn an_access_token_is_refused_where_an_id_token_is_expected() {
    let f = fixture().await;
    let mut header = id_header();
    header.typ = Some("at+jwt".into());
    let token = sign(&f.idp, header, &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::Type("at+jwt".into()));
}

#[tokio::test]
async fn an_oversized_token_is_refused() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["padding"] = "x".repeat(jose::MAX_TOKEN_BYTES).into();
    assert_eq!(f.verify_id(&f.id_token(&claims)).await.unwrap_err(), JoseError::TooLong(jose::MAX_TOKEN_BYTES));
}

#[tokio::test]
async fn malformed_base64_is_refused() {
    let f = fixture().await;
    let token = f.id_token(&id_claims());
    let padded = token.replacen('.', "=.", 1);
    assert_eq!(f.verify_id(&padded).await.unwrap_err(), JoseError::Base64("header"));
    let standard_alphabet = format!("{}+", token);
    assert_eq!(f.verify_id(&standard_alphabet).await.unwrap_err(), JoseError::Base64("signature"));
}

#[tokio::test]
async fn duplicate_header_members_are_refused() {
    let f = fixture().await;
    let token = raw_token(&f.idp, r#"{"alg":"ES256","typ":"JWT","kid":"idp-1","kid":"idp-2"}"#, &id_claims());
    assert_eq!(f.verify_id(&token).await.unwrap_err(), JoseError::Duplicate { part: "header", name: "kid".into() });
}

// --- DPoP proofs (RFC 9449 4.3 and 11) -----------------------------------------------------

#[tokio::test]
async fn a_good_proof_is_accepted_once_and_replay_is_refused() {
    let f = fixture().await;
    let proof = f.proof("POST", INFER_URL, None);
    let accepted = f.check(&proof, "POST", INFER_URL, None).await.unwrap();
    assert_eq!(accepted.jkt, jose::thumbprint(&f.device.jwk).unwrap());
    assert_eq!(f.check(&proof, "POST", INFER_URL, None).await.unwrap_err(), DpopError::Replay);
}

#[tokio::test]
async fn a_proof_for_another_url_or_method_is_refused() {
    let f = fixture().await;
    let other = "https://models.example.com/v2/models/other/infer";
    assert_eq!(f.check(&f.proof("POST", other, None), "POST", INFER_URL, None).await.unwrap_err(), DpopError::Url);
    assert_eq!(
        f.check(&f.proof("GET", INFER_URL, None), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::Method
    );
    // Query and fragment are ignored, scheme and host case and the default port normalised.
    let variant = "HTTPS://Models.Example.com:443/v2/models/demo/infer?x=1#f";
    assert!(f.check(&f.proof("POST", variant, None), "POST", INFER_URL, None).await.is_ok());
}

#[tokio::test]
async fn a_proof_with_a_private_key_in_its_jwk_is_refused() {
    let f = fixture().await;
    let mut jwk = serde_json::to_value(&f.device.jwk).unwrap();
    jwk["d"] = "c2VjcmV0".into();
    let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk }).to_string();
    let proof = raw_token(&f.device, &header, &f.proof_claims("POST", INFER_URL, None));
    assert_eq!(f.check(&proof, "POST", INFER_URL, None).await.unwrap_err(), DpopError::PrivateKey);
}

#[tokio::test]
async fn a_proof_of_the_wrong_type_or_algorithm_is_refused() {
    let f = fixture().await;
    let claims = f.proof_claims("POST", INFER_URL, None);
    let jwk = serde_json::to_value(&f.device.jwk).unwrap();
    let typ = serde_json::json!({ "typ": "JWT", "alg": "ES256", "jwk": jwk }).to_string();
    assert_eq!(
        f.check(&raw_token(&f.device, &typ, &claims), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::Type
    );
    let none = serde_json::json!({ "typ": "dpop+jwt", "alg": "none", "jwk": jwk }).to_string();
    assert_eq!(
        f.check(&raw_token(&f.device, &none, &claims), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::Algorithm
    );
    let hmac = serde_json::json!({ "typ": "dpop+jwt", "alg": "HS256", "jwk": jwk }).to_string();
    assert_eq!(
        f.check(&raw_token(&f.device, &hmac, &claims), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::Algorithm
    );
    // A header that claims EdDSA over a P-256 key.
    let mismatch = serde_json::json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk }).to_string();
    assert_eq!(
        f.check(&raw_token(&f.device, &mismatch, &claims), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::Algorithm
    );
}

#[tokio::test]
async fn a_proof_signed_by_another_key_than_its_jwk_is_refused() {
    let f = fixture().await;
    let other = pair(Algorithm::ES256, None);
    let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": f.device.jwk }).to_string();
    let proof = raw_token(&other, &header, &f.proof_claims("POST", INFER_URL, None));
    assert_eq!(f.check(&proof, "POST", INFER_URL, None).await.unwrap_err(), DpopError::Signature);
}

#[tokio::test]
async fn a_stale_or_future_proof_is_refused() {
    let f = fixture().await;
    for iat in [NOW - 200, NOW + 120] {
        let mut claims = f.proof_claims("POST", INFER_URL, None);
        claims["iat"] = iat.into();
        assert_eq!(
            f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.unwrap_err(),
            DpopError::Time
        );
    }
}

#[tokio::test]
async fn a_proof_missing_a_claim_is_refused() {
    let f = fixture().await;
    for claim in ["jti", "htm", "htu", "iat"] {
        let mut claims = f.proof_claims("POST", INFER_URL, None);
        claims.as_object_mut().unwrap().remove(claim);
        let error = f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.unwrap_err();
        assert_eq!(
            error,
            DpopError::Claims(match claim {
                "jti" => "jti",
                "htm" => "htm",
                "htu" => "htu",
                _ => "iat",
            })
        );
    }
}

#[tokio::test]
async fn nonces_are_required_when_configured_and_must_be_ours() {
    let f = fixture_with("require_nonce = true").await;
    let error = f.check(&f.proof("POST", INFER_URL, None), "POST", INFER_URL, None).await.unwrap_err();
    assert_eq!(error, DpopError::UseNonce);
    let mut claims = f.proof_claims("POST", INFER_URL, None);
    claims["nonce"] = f.broker.nonces.issue(NOW).into();
    assert!(f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.is_ok());
    let mut forged = f.proof_claims("POST", INFER_URL, None);
    forged["nonce"] = jose::b64_encode(&[0u8; 24]).into();
    assert_eq!(
        f.check(&f.proof_with(&f.device, &forged), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::UseNonce
    );
    let mut old = f.proof_claims("POST", INFER_URL, None);
    old["nonce"] = f.broker.nonces.issue(NOW - 3600).into();
    assert_eq!(
        f.check(&f.proof_with(&f.device, &old), "POST", INFER_URL, None).await.unwrap_err(),
        DpopError::UseNonce
    );
}

#[test]
fn more_than_one_dpop_header_is_refused() {
    let mut headers = http::HeaderMap::new();
    headers.append(dpop::DPOP_HEADER, http::HeaderValue::from_static("a.b.c"));
    assert_eq!(dpop::proof_header(&headers), Ok("a.b.c"));
    headers.append(dpop::DPOP_HEADER, http::HeaderValue::from_static("d.e.f"));
    assert_eq!(dpop::proof_header(&headers), Err(DpopError::Multiple));
    assert_eq!(dpop::proof_header(&http::HeaderMap::new()), Err(DpopError::Missing));
}

#[tokio::test]
async fn an_oversized_proof_is_refused() {
    let f = fixture().await;
    let mut claims = f.proof_claims("POST", INFER_URL, None);
    claims["padding"] = "x".repeat(jose::MAX_PROOF_BYTES).into();
    let error = f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.unwrap_err();
    assert_eq!(error, DpopError::Malformed(JoseError::TooLong(jose::MAX_PROOF_BYTES)));
}

// --- Broker tokens at the model endpoint ---------------------------------------------------

#[tokio::test]
async fn a_bound_token_with_its_proof_authenticates_the_user() {
    let f = fixture().await;
    let token = f.access_token();
    let principal = f.call(&token, &f.proof("POST", INFER_URL, Some(&token))).await.unwrap();
    assert_eq!(principal.id, "user:ios-app:alice");
    assert_eq!(principal.kind, PrincipalKind::BrokerToken);
    assert!(principal.models.allows("demo") && !principal.models.allows("third"));
    // Claims as issued.
    let claims = f.broker.verify_token(&token, NOW).await.unwrap();
    assert_eq!((claims.aud.as_str(), claims.client_id.as_str()), (PUBLIC_URL, "ios-app"));
    assert_eq!(claims.exp - claims.iat, 600);
    assert_eq!(claims.cnf.jkt, jose::thumbprint(&f.device.jwk).unwrap());
}

#[tokio::test]
async fn a_stolen_token_with_the_thiefs_own_key_is_refused() {
    let f = fixture().await;
    let token = f.access_token();
    let thief = pair(Algorithm::ES256, None);
    let proof = f.proof_with(&thief, &f.proof_claims("POST", INFER_URL, Some(&token)));
    assert_eq!(f.call(&token, &proof).await.unwrap_err(), TokenError::Proof(DpopError::WrongKey));
}

#[tokio::test]
async fn a_proof_for_another_token_is_refused() {
    let f = fixture().await;
    let token = f.access_token();
    let other = f.access_token();
    let proof = f.proof("POST", INFER_URL, Some(&other));
    assert_eq!(f.call(&token, &proof).await.unwrap_err(), TokenError::Proof(DpopError::AccessTokenHash));
    let without_ath = f.proof("POST", INFER_URL, None);
    assert_eq!(f.call(&token, &without_ath).await.unwrap_err(), TokenError::Proof(DpopError::AccessTokenHash));
}

#[tokio::test]
async fn tokens_expire_when_they_say() {
    let f = fixture().await;
    let token = f.access_token();
    let skew = 60;
    assert!(f.broker.verify_token(&token, NOW + 600 + skew - 1).await.is_ok());
    assert!(matches!(f.broker.verify_token(&token, NOW + 600 + skew).await, Err(JoseError::Claims(_))));
}

#[tokio::test]
async fn a_rotated_keys_tokens_verify_until_they_expire_and_no_longer() {
    let f = fixture().await;
    let token = f.access_token();
    let store = f.broker.keys.store_for_tests();
    signing::rotate(store.as_ref(), f.broker.keys.secret(), Algorithm::EdDSA, NOW + 60).await.unwrap();
    f.broker.keys.reload(NOW + 60).await.unwrap();
    let fresh = f.access_token();
    assert_ne!(jsonwebtoken::decode_header(&fresh).unwrap().kid, jsonwebtoken::decode_header(&token).unwrap().kid);
    assert!(f.broker.verify_token(&token, NOW + 300).await.is_ok(), "the old key still verifies");
    assert!(f.broker.verify_token(&fresh, NOW + 300).await.is_ok());
    let after = NOW + 600 + 60;
    assert!(f.broker.verify_token(&token, after).await.is_err(), "expired");
    f.broker.keys.reload(NOW + 60 + 660 + 1).await.unwrap();
    let old_kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    assert!(!f.broker.keys.is_published(&old_kid, NOW + 60 + 660 + 1));
    assert_eq!(f.broker.verify_token(&token, NOW + 60 + 660 + 1).await.unwrap_err(), JoseError::UnknownKey);
}

#[tokio::test]
async fn our_tokens_are_only_accepted_as_at_jwt_for_this_audience() {
    let f = fixture().await;
    let app = f.config.broker.as_ref().unwrap().app("ios-app").unwrap().clone();
    let jkt = jose::thumbprint(&f.device.jwk).unwrap();
    let (other_audience, _) =
        f.broker.issue(&app, "alice", "https://other.example.com", &TokenScope::of_app(&app), &jkt, None, NOW).unwrap();
    assert!(matches!(f.broker.verify_token(&other_audience, NOW).await, Err(JoseError::Claims(_))));
    // An ID token of the identity provider is not one of ours.
    assert!(f.broker.verify_token(&f.id_token(&id_claims()), NOW).await.is_err());
}

// --- Scope ---------------------------------------------------------------------------------

#[test]
fn scope_is_the_intersection_of_request_and_policy() {
    let policy = TokenScope::parse("model:demo model:other infer metadata output:top_k=2").unwrap();
    let asked = TokenScope::parse("model:demo model:secret infer").unwrap();
    let granted = TokenScope::intersect(&policy, Some(&asked)).unwrap();
    assert_eq!(granted.to_scope(), "model:demo infer output:top_k=2");
    // A narrower output is granted, a wider one is not.
    let label = TokenScope::intersect(&policy, TokenScope::parse("output:label").as_ref()).unwrap();
    assert_eq!(label.output, Some(OutputPolicy::Label));
    let raw = TokenScope::intersect(&policy, TokenScope::parse("output:raw").as_ref()).unwrap();
    assert_eq!(raw.output, policy.output);
    assert!(TokenScope::intersect(&policy, TokenScope::parse("model:secret").as_ref()).is_none());
    assert!(TokenScope::parse("model:demo admin").is_none(), "unknown scopes are refused, not ignored");
    assert_eq!(TokenScope::intersect(&policy, None), Some(policy.clone()));
}

#[test]
fn broker_config_is_refused_when_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |extra: &str, replace: (&str, &str)| {
        let text = config_text(dir.path(), extra).replace(replace.0, replace.1);
        Config::from_toml(&text, dir.path()).unwrap_err().to_string()
    };
    assert!(bad("", ("token_lifetime = \"10m\"", "token_lifetime = \"2h\"")).contains("token_lifetime"));
    assert!(bad("", ("algorithms = [\"ES256\"]", "algorithms = [\"HS256\"]")).contains("never an HMAC"));
    assert!(bad("", ("algorithms = [\"ES256\"]", "algorithms = [\"none\"]")).contains("never none"));
    assert!(bad("", ("audiences = [\"ios-app\"]", "audiences = []")).contains("audience"));
    assert!(
        bad("", ("audiences = [\"ios-app\"]", "audiences = [\"android-app\"]"))
            .contains("add \"ios-app\" to its audiences"),
        "an app whose ID tokens the provider's rules would all refuse"
    );
    assert!(
        bad("", (&format!("public_url = \"{PUBLIC_URL}\""), "public_url = \"https://x.example.com/a?b\""))
            .contains("public_url")
    );
    assert!(
        bad("", ("jwks_file = ", "jwks_url = \"http://idp.example.com/jwks\"\n#")).contains("https"),
        "keys fetched over plain HTTP from another host"
    );
}

// --- Per-user and per-device limits --------------------------------------------------------

#[tokio::test]
async fn limits_apply_per_user_and_per_device_key() {
    let f = fixture_with_app("", "rate = \"1/min\"\ndevice_rate = \"1/min\"").await;
    let limiter = crate::limits::Limiter::new(f.config.limits.clone(), f.broker.keys.store_for_tests()).unwrap();
    let app = f.config.broker.as_ref().unwrap().app("ios-app").unwrap().clone();
    let other_device = pair(Algorithm::ES256, None);
    let token_for = |sub: &str, device: &Pair| {
        let jkt = jose::thumbprint(&device.jwk).unwrap();
        f.broker.issue(&app, sub, PUBLIC_URL, &TokenScope::of_app(&app), &jkt, None, NOW).unwrap().0
    };
    let admit = |sub: &'static str, device: &'static str| {
        let device_key = if device == "phone" { &f.device } else { &other_device };
        let token = token_for(sub, device_key);
        let proof = f.proof_with(device_key, &f.proof_claims("POST", INFER_URL, Some(&token)));
        let (broker, limiter) = (&f.broker, &limiter);
        async move {
            let principal = broker.authenticate(&token, &proof, "POST", "/v2/models/demo/infer", NOW).await.unwrap();
            let limits = crate::limits::Effective::of(&principal, limiter.config());
            limiter.admit(&principal, &limits, None).await.map(|_| ()).map_err(|error| error.code.as_str())
        }
    };
    assert_eq!(admit("alice", "phone").await, Ok(()));
    assert_eq!(admit("alice", "tablet").await, Err("rate_limited"), "alice's own rate is spent");
    assert_eq!(admit("bob", "phone").await, Err("rate_limited"), "the phone's device rate is spent");
    assert_eq!(admit("carol", "tablet").await, Ok(()), "another user on another device");
}

// --- Small-order Ed25519 keys --------------------------------------------------------------

/// The eight points of small order on Ed25519 (order 1, 2, 4 and 8), as 32-byte public keys.
const SMALL_ORDER_POINTS: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
];

/// The public JWKs of the small-order points, checked to be what they claim.
fn small_order_jwks() -> Vec<serde_json::Value> {
    SMALL_ORDER_POINTS
        .iter()
        .map(|hex| {
            let bytes: [u8; 32] = crate::hex::decode(hex).unwrap().try_into().unwrap();
            assert!(ed25519_dalek::VerifyingKey::from_bytes(&bytes).unwrap().is_weak(), "{hex} is of small order");
            serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": jose::b64_encode(&bytes) })
        })
        .collect()
}

/// A compact JWS with the signature R = identity, S = 0: RFC 8032 verification without the
/// small-order checks accepts it for any message under the identity key (and, for a fraction of
/// messages, under the other small-order keys).
fn forged_eddsa(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let mut signature = [0u8; 64];
    signature[0] = 1;
    format!(
        "{}.{}.{}",
        jose::b64_encode(header.to_string().as_bytes()),
        jose::b64_encode(claims.to_string().as_bytes()),
        jose::b64_encode(&signature)
    )
}

#[tokio::test]
async fn a_dpop_proof_keyed_by_a_small_order_point_is_refused() {
    let f = fixture().await;
    for jwk in small_order_jwks() {
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": jwk });
        let proof = forged_eddsa(&header, &f.proof_claims("POST", INFER_URL, None));
        let refused = f.check(&proof, "POST", INFER_URL, None).await.map(|proof| proof.jkt);
        assert_eq!(refused.unwrap_err().code().as_str(), "dpop_weak_key", "{jwk}");
        // The refusal says why.
        let parsed: Jwk = serde_json::from_value(jwk).unwrap();
        assert!(jose::decoding_key(&parsed).map(|(alg, _)| alg).unwrap_err().to_string().contains("small-order"));
    }
}

#[tokio::test]
async fn an_identity_provider_key_that_is_a_small_order_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = pair(Algorithm::EdDSA, Some("good"));
    let mut keys: Vec<serde_json::Value> = small_order_jwks()
        .into_iter()
        .enumerate()
        .map(|(index, mut jwk)| {
            jwk["kid"] = format!("weak-{index}").into();
            jwk
        })
        .collect();
    keys.push(serde_json::to_value(&good.jwk).unwrap());
    let jwks = serde_json::json!({ "keys": keys }).to_string();
    std::fs::write(dir.path().join("jwks"), &jwks).unwrap();
    let key_set = idp::KeySet::new(
        crate::config::JwksSource::File(dir.path().join("jwks")),
        vec![Algorithm::EdDSA],
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let kept = key_set.parse(jwks.as_bytes()).unwrap();
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["good"], "only the sound key is kept");
    let audiences = ["ios-app".to_owned()];
    let rules = idp::Rules {
        issuer: IDP,
        audiences: &audiences,
        algorithms: &[Algorithm::EdDSA],
        tokens: crate::config::TokenUse::IdToken,
        max_skew: std::time::Duration::from_secs(60),
        max_age: None,
        typ: None,
    };
    for index in 0..SMALL_ORDER_POINTS.len() {
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": format!("weak-{index}") });
        let forged = forged_eddsa(&header, &id_claims());
        assert!(idp::verify(&forged, &key_set, &rules, NOW).await.is_err(), "weak-{index}");
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("good".into());
    assert!(idp::verify(&sign(&good, header, &id_claims()), &key_set, &rules, NOW).await.is_ok());
}

// --- NumericDate (RFC 7519 2: any JSON number) ---------------------------------------------

#[tokio::test]
async fn an_id_token_with_non_integer_numeric_dates_is_accepted() {
    let f = fixture().await;
    let mut claims = id_claims();
    claims["exp"] = serde_json::json!(NOW as f64 + 600.5);
    claims["iat"] = serde_json::json!(NOW as f64 - 10.25);
    // Before the wall clock too: the library checks nbf against it.
    claims["nbf"] = serde_json::json!(1_700_000_000.5);
    assert_eq!(f.verify_id(&f.id_token(&claims)).await.unwrap().subject, "alice");
}

#[tokio::test]
async fn absurd_numeric_dates_are_refused() {
    let f = fixture().await;
    for (claim, value) in [
        ("exp", serde_json::json!(-1.5)),
        ("exp", serde_json::json!(1e300)),
        ("exp", serde_json::json!(1e15)),
        ("exp", serde_json::json!(u64::MAX)),
        ("exp", serde_json::json!("1800000600")),
        ("iat", serde_json::json!(-5)),
        ("iat", serde_json::json!(-0.5)),
        ("nbf", serde_json::json!(1e300)),
    ] {
        let mut claims = id_claims();
        claims[claim] = value.clone();
        let error = f.verify_id(&f.id_token(&claims)).await.unwrap_err();
        assert!(matches!(error, JoseError::Claims(_)), "{claim} = {value}: {error}");
    }
}

#[tokio::test]
async fn a_dpop_proof_with_a_non_integer_iat_is_accepted() {
    let f = fixture().await;
    let mut claims = f.proof_claims("POST", INFER_URL, None);
    claims["iat"] = serde_json::json!(NOW as f64 - 0.5);
    assert!(f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.is_ok());
    for absurd in [serde_json::json!(-1.0), serde_json::json!(1e300), serde_json::json!(u64::MAX)] {
        let mut claims = f.proof_claims("POST", INFER_URL, None);
        claims["iat"] = absurd.clone();
        let error = f.check(&f.proof_with(&f.device, &claims), "POST", INFER_URL, None).await.unwrap_err();
        assert_eq!(error.code().as_str(), "dpop_claims", "iat = {absurd}");
    }
}

#[tokio::test]
async fn a_broker_token_with_non_integer_numeric_dates_is_read() {
    let f = fixture().await;
    let jkt = jose::thumbprint(&f.device.jwk).unwrap();
    let claims = serde_json::json!({
        "iss": "https://broker.example.com", "sub": "alice", "aud": PUBLIC_URL, "scope": "model:demo infer",
        "client_id": "ios-app", "iat": NOW as f64 - 0.5, "exp": NOW as f64 + 300.5, "jti": "abcdefgh",
        "cnf": { "jkt": jkt },
    });
    let token = f.broker.keys.sign(ACCESS_TOKEN_TYPE, &claims).unwrap();
    let read = f.broker.verify_token(&token, NOW).await.unwrap();
    assert_eq!((read.iat, read.exp), (NOW - 1, NOW + 300));
}

// --- The token endpoint, in process --------------------------------------------------------
//
// The endpoint reads the wall clock, so these tokens carry the real time, not `NOW`.

/// What the public router answered.
pub(super) struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
    /// The reason the audit record gives.
    pub reason: Option<&'static str>,
}

/// A gateway with its broker, for a validated config whose files live in the config's folder.
pub(super) async fn gateway_for(config: Config) -> Arc<crate::state::Gateway> {
    let store: Arc<dyn Store> = Arc::new(crate::store::sqlite::SqliteStore::open(&config.sqlite).await.unwrap());
    let pepper = crate::authn::api_key::Pepper::from_bytes(vec![7; 32]);
    let registry = crate::backend::load_models(&config).unwrap();
    let limiter = Arc::new(crate::limits::Limiter::new(config.limits.clone(), Arc::clone(&store)).unwrap());
    let broker =
        Broker::open(config.broker.clone().unwrap(), Arc::clone(&store), None, crate::time::now()).await.unwrap();
    crate::state::Gateway::builder(config)
        .models(registry)
        .store(store, pepper)
        .limiter(limiter)
        .broker(Arc::new(broker))
        .build()
        .unwrap()
}

/// Sends one request through the whole public router.
pub(super) async fn send(gateway: &Arc<crate::state::Gateway>, request: http::Request<axum::body::Body>) -> Answer {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = crate::router::public(Arc::clone(gateway)).oneshot(request).await.unwrap();
    let reason = response
        .extensions()
        .get::<crate::error::ApiError>()
        .and_then(|error| error.audit_reason)
        .map(|reason| reason.as_str());
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, headers, body, reason }
}

/// `POST /v1/token` exchanging `id_token` for `client_id`, with a DPoP proof and more headers.
pub(super) fn token_request(
    client_id: &str,
    id_token: &str,
    audience: &str,
    scope: Option<&str>,
    headers: &[(&str, &str)],
) -> http::Request<axum::body::Body> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", exchange::GRANT_TYPE)
        .append_pair("subject_token", id_token)
        .append_pair("subject_token_type", exchange::ID_TOKEN)
        .append_pair("client_id", client_id)
        .append_pair("audience", audience);
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    let mut request = http::Request::post(TOKEN_PATH)
        .header(http::header::HOST, "models.example.com")
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(axum::body::Body::from(form.finish())).unwrap()
}

/// A DPoP proof for `POST <public_url>/v1/token` by `device`, now.
pub(super) fn token_proof(
    device_der: &[u8],
    device_jwk: &serde_json::Value,
    public_url: &str,
    nonce: Option<&str>,
) -> String {
    let mut jti = [0u8; 12];
    getrandom::fill(&mut jti).unwrap();
    let mut claims = serde_json::json!({
        "jti": jose::b64_encode(&jti), "htm": "POST", "htu": format!("{public_url}{TOKEN_PATH}"), "iat": crate::time::now(),
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": device_jwk });
    jose::sign_compact(Algorithm::ES256, device_der, &header, &claims).unwrap()
}

/// The fixture's broker behind the router, with a second app (`android-app`) of the same
/// identity provider.
struct Endpoint {
    _dir: tempfile::TempDir,
    gateway: Arc<crate::state::Gateway>,
    idp: Pair,
    device: (Vec<u8>, serde_json::Value),
}

async fn endpoint() -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let idp = pair(Algorithm::ES256, Some("idp-1"));
    std::fs::write(dir.path().join("idp.jwks"), serde_json::json!({ "keys": [idp.jwk] }).to_string()).unwrap();
    let text = config_text(dir.path(), "")
        .replace("audiences = [\"ios-app\"]", "audiences = [\"ios-app\", \"android-app\"]")
        + "[[broker.apps]]\nclient_id = \"android-app\"\nidentity_provider = \"accounts\"\nmodels = [\"demo\"]\n";
    let config = Config::from_toml(&text, dir.path()).unwrap();
    let gateway = gateway_for(config).await;
    let (der, jwk) = jose::generate(Algorithm::ES256).unwrap();
    Endpoint { _dir: dir, gateway, idp, device: (der, serde_json::to_value(jwk).unwrap()) }
}

impl Endpoint {
    /// An ID token issued now, with `changes` applied to the usual claims (a null removes one).
    fn id_token(&self, changes: serde_json::Value) -> String {
        let now = crate::time::now();
        let mut claims =
            serde_json::json!({ "iss": IDP, "sub": "alice", "aud": "ios-app", "iat": now - 10, "exp": now + 600 });
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        sign(&self.idp, id_header(), &claims)
    }

    async fn exchange(&self, client_id: &str, id_token: &str) -> Answer {
        let proof = token_proof(&self.device.0, &self.device.1, PUBLIC_URL, None);
        send(&self.gateway, token_request(client_id, id_token, PUBLIC_URL, None, &[("dpop", &proof)])).await
    }
}

#[tokio::test]
async fn an_id_token_for_several_audiences_needs_azp_naming_the_app() {
    let e = endpoint().await;
    let good = e.exchange("ios-app", &e.id_token(serde_json::json!({}))).await;
    assert_eq!(good.status, 200, "{}", good.body);
    // Several audiences, no azp: whom it was issued to is not said.
    let several = serde_json::json!(["ios-app", "android-app"]);
    let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "aud": several }))).await;
    assert_eq!((answer.status.as_u16(), answer.reason), (400, Some("subject_token_azp")), "{}", answer.body);
    assert_eq!(answer.headers["cache-control"], "no-store", "OAuth errors are not cached");
    // Several audiences, azp naming the app: accepted.
    let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "aud": several, "azp": "ios-app" }))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // azp naming another party: refused, with one audience or several.
    for aud in [serde_json::json!("ios-app"), several.clone()] {
        let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "aud": aud, "azp": "android-app" }))).await;
        assert_eq!((answer.status.as_u16(), answer.reason), (400, Some("subject_token_azp")), "{}", answer.body);
    }
    let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "azp": ["ios-app"] }))).await;
    assert_eq!((answer.status.as_u16(), answer.reason), (400, Some("subject_token_azp")), "azp is a string");
}

#[tokio::test]
async fn a_bad_subject_token_is_answered_invalid_request() {
    let e = endpoint().await;
    let mut forged = e.id_token(serde_json::json!({}));
    forged.push('A');
    let answer = e.exchange("ios-app", &forged).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"], "invalid_request", "RFC 8693 2.2.2");
    assert_eq!(answer.reason, Some("subject_token"));
    // Issued to the provider's other app.
    let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "aud": "android-app" }))).await;
    assert_eq!(answer.body["error"], "invalid_request");
    assert_eq!(answer.reason, Some("subject_token_audience"));
    let answer = e.exchange("ios-app", &e.id_token(serde_json::json!({ "exp": null }))).await;
    assert_eq!((answer.body["error"].as_str(), answer.reason), (Some("invalid_request"), Some("subject_token")));
}

#[tokio::test]
async fn broker_answers_are_nosniff_and_jwks_stays_cacheable() {
    let e = endpoint().await;
    let jwks = send(
        &e.gateway,
        http::Request::get(JWKS_PATH).header("host", "models.example.com").body(axum::body::Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.headers["cache-control"], "public, max-age=300", "published keys may be cached");
    assert_eq!(jwks.headers["x-content-type-options"], "nosniff");
    let refused = e.exchange("nobody", "a.b.c").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["cache-control"], "no-store");
    assert_eq!(refused.headers["x-content-type-options"], "nosniff");
}
