//! JOSE plumbing shared by the broker and `authn`: the crypto provider `jsonwebtoken` signs and
//! verifies with (ring, the library TLS already uses; EdDSA signatures are verified by
//! ed25519-dalek's strict check), strict compact-JWS screening done before any key is looked up,
//! NumericDate claims, base64url, and RFC 7638 thumbprints.
//!
//! The provider knows three algorithms only: RS256, ES256 and EdDSA. Every other name, HMAC
//! included, fails in the provider itself, so an algorithm-confusion token cannot verify even if
//! a caller's allow-list were wrong. Ed25519 keys that are small-order points are refused where a
//! JWK becomes a key: under such a key one signature (R = identity, S = 0) verifies every
//! message.

use std::sync::Once;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey,
    crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils},
    errors::{Error, ErrorKind},
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash},
};
use ring::{
    rand::SystemRandom,
    signature::{self as ring_sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair},
};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The largest token accepted anywhere (ID tokens with many claims stay well below).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The largest DPoP proof accepted: a header with one public key and five short claims.
pub const MAX_PROOF_BYTES: usize = 2 * 1024;

/// Installs the ring provider for `jsonwebtoken` (once per process; later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: in this process that can only be ours.
        let _ = PROVIDER.install_default();
    });
}

/// Why a token was refused before or during its signature check. For logs and tests; clients
/// get one generic error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("the token is longer than {0} bytes")]
    TooLong(usize),
    #[error("not a compact JWS (three base64url parts separated by dots)")]
    Malformed,
    #[error("bad base64url in the {0}")]
    Base64(&'static str),
    #[error("the {0} is not a JSON object")]
    NotJson(&'static str),
    #[error("the {part} repeats the member '{name}'")]
    Duplicate { part: &'static str, name: String },
    #[error("the header marks extensions as critical ({0}); none are understood")]
    Critical(String),
    #[error("algorithm '{0}' is not allowed here")]
    Algorithm(String),
    #[error("the header type '{0}' is not the one expected")]
    Type(String),
    #[error("unknown key id")]
    UnknownKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("the header carries a key, which this kind of token must not")]
    EmbeddedKey,
    #[error("claims: {0}")]
    Claims(String),
    #[error("the Ed25519 key is a small-order point, under which a forged signature verifies any message")]
    WeakKey,
}

/// A compact JWS that passed screening: sizes, alphabet, JSON shape, unique members, no `crit`.
#[derive(Debug, Clone, Copy)]
pub struct Compact<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

/// Screens a compact JWS without trusting any of it.
pub fn screen(token: &str, max_bytes: usize) -> Result<Compact<'_>, JoseError> {
    if token.len() > max_bytes {
        return Err(JoseError::TooLong(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed);
    };
    for (part, name) in [(header, "header"), (payload, "payload"), (signature, "signature")] {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(JoseError::Base64(name));
        }
    }
    let header_json = b64_decode(header).ok_or(JoseError::Base64("header"))?;
    let members = unique_members(&header_json, "header")?;
    if members.iter().any(|name| name == "crit") {
        return Err(JoseError::Critical("crit".into()));
    }
    let payload_json = b64_decode(payload).ok_or(JoseError::Base64("payload"))?;
    unique_members(&payload_json, "payload")?;
    Ok(Compact { header, payload, signature })
}

/// The top-level member names of a JSON object, refusing repeats (RFC 7515 4 and RFC 8725 3.12:
/// parsers disagree on which duplicate wins, so a token with one is refused outright).
fn unique_members(json: &[u8], part: &'static str) -> Result<Vec<String>, JoseError> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Result<Vec<String>, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut names: Vec<String> = Vec::new();
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if names.contains(&name) {
                    return Ok(Err(name));
                }
                if names.len() >= 64 {
                    return Err(de::Error::custom("too many members"));
                }
                names.push(name);
            }
            Ok(Ok(names))
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let names = (&mut deserializer).deserialize_map(Members).map_err(|_| JoseError::NotJson(part))?;
    deserializer.end().map_err(|_| JoseError::NotJson(part))?;
    names.map_err(|name| JoseError::Duplicate { part, name })
}

/// Strict base64url without padding (RFC 7515 2).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url(SHA-256(text)): DPoP's `ath` and the like.
pub fn sha256_b64(text: &[u8]) -> String {
    b64_encode(ring::digest::digest(&ring::digest::SHA256, text).as_ref())
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK (the `jkt` of DPoP).
pub fn thumbprint(jwk: &Jwk) -> Result<String, JoseError> {
    jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| JoseError::EmbeddedKey)
}

/// The algorithm a public JWK is used with, if it is one we accept for it, with the key.
/// EC keys must be P-256 (ES256), OKP keys Ed25519 (EdDSA), RSA keys at least 2048 bits.
pub fn decoding_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), JoseError> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => {
            let (x, y) = (b64_decode(&params.x), b64_decode(&params.y));
            if x.is_none_or(|x| x.len() != 32) || y.is_none_or(|y| y.len() != 32) {
                return Err(JoseError::Algorithm("ES256 with a malformed point".into()));
            }
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            let x = b64_decode(&params.x).and_then(|x| <[u8; 32]>::try_from(x.as_slice()).ok());
            let Some(key) = x.and_then(|x| ed25519_dalek::VerifyingKey::from_bytes(&x).ok()) else {
                return Err(JoseError::Algorithm("EdDSA with a malformed key".into()));
            };
            if key.is_weak() {
                return Err(JoseError::WeakKey);
            }
            Algorithm::EdDSA
        }
        AlgorithmParameters::RSA(params) => {
            if b64_decode(&params.n).is_none_or(|n| n.len() < 256) {
                return Err(JoseError::Algorithm("RS256 with a modulus under 2048 bits".into()));
            }
            Algorithm::RS256
        }
        _ => return Err(JoseError::Algorithm("key type".into())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| JoseError::Algorithm("unreadable key".into()))?;
    Ok((alg, key))
}

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z. A later one is a mistake or an
/// attempt at overflowing time arithmetic.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// Why a claim is not a usable NumericDate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumericDateError {
    #[error("is not a number")]
    NotNumber,
    #[error("is not finite")]
    NotFinite,
    #[error("is before 1970")]
    Negative,
    #[error("is after the year 9999")]
    TooLate,
}

/// A NumericDate claim (`exp`, `iat`, `nbf`) in whole seconds. RFC 7519 2 allows any JSON
/// number, fractions included (`1700000000.5`); the fraction is dropped (rounded down), which is
/// well within every clock skew we allow.
pub fn numeric_date(value: &serde_json::Value) -> Result<i64, NumericDateError> {
    match value {
        serde_json::Value::Number(number) => numeric_date_of(number),
        _ => Err(NumericDateError::NotNumber),
    }
}

/// [`numeric_date`] of a number already read.
pub fn numeric_date_of(number: &serde_json::Number) -> Result<i64, NumericDateError> {
    let seconds = if let Some(whole) = number.as_i64() {
        whole
    } else if number.is_u64() {
        return Err(NumericDateError::TooLate);
    } else {
        let float = number.as_f64().ok_or(NumericDateError::NotNumber)?;
        if !float.is_finite() {
            return Err(NumericDateError::NotFinite);
        }
        if float < 0.0 {
            return Err(NumericDateError::Negative);
        }
        if float > MAX_NUMERIC_DATE as f64 {
            return Err(NumericDateError::TooLate);
        }
        // In range and finite, so the conversion is exact after flooring.
        float.floor() as i64
    };
    if seconds < 0 {
        return Err(NumericDateError::Negative);
    }
    if seconds > MAX_NUMERIC_DATE {
        return Err(NumericDateError::TooLate);
    }
    Ok(seconds)
}

/// Serde: a NumericDate field of a claims struct, read as [`numeric_date_of`] does.
pub fn deserialize_numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    numeric_date_of(&number).map_err(|error| de::Error::custom(format!("a NumericDate that {error}")))
}

/// Whether a JWK (as JSON) holds private key material: any of the private members of RFC 7518
/// 6.2.2, 6.3.2 or RFC 8037 2, or a symmetric key.
pub fn has_private_part(jwk: &serde_json::Value) -> bool {
    const PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    jwk.as_object().is_some_and(|members| PRIVATE.iter().any(|name| members.contains_key(*name)))
}

/// A freshly generated signing key pair, as PKCS#8 DER (private) and public JWK.
pub fn generate(alg: Algorithm) -> Result<(Vec<u8>, Jwk), String> {
    let rng = SystemRandom::new();
    let der = match alg {
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "key generation failed")?,
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "key generation failed")?,
        other => return Err(format!("signing keys are EdDSA or ES256, not {other:?}")),
    };
    let der = der.as_ref().to_vec();
    let jwk = public_jwk(alg, &der)?;
    Ok((der, jwk))
}

/// The public JWK of a PKCS#8 private key.
pub fn public_jwk(alg: Algorithm, der: &[u8]) -> Result<Jwk, String> {
    let value = match alg {
        Algorithm::EdDSA => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| "unreadable Ed25519 key")?;
            serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
                "x": b64_encode(pair.public_key().as_ref()),
            })
        }
        Algorithm::ES256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|_| "unreadable P-256 key")?;
            let [4, point @ ..] = pair.public_key().as_ref() else {
                return Err("unexpected P-256 public key encoding".into());
            };
            if point.len() != 64 {
                return Err("unexpected P-256 public key length".into());
            }
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256",
                "x": b64_encode(&point[..32]), "y": b64_encode(&point[32..]),
            })
        }
        other => return Err(format!("signing keys are EdDSA or ES256, not {other:?}")),
    };
    serde_json::from_value(value).map_err(|error| format!("cannot build the public JWK: {error}"))
}

/// Signs a compact JWS with a PKCS#8 key (EdDSA or ES256): what a client (an app making DPoP
/// proofs, a test playing an identity provider) does. The header's `alg` is set to `alg`.
pub fn sign_compact(
    alg: Algorithm,
    der: &[u8],
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> Result<String, String> {
    install();
    let mut header = header.clone();
    header["alg"] = serde_json::Value::String(format!("{alg:?}"));
    let message =
        format!("{}.{}", b64_encode(header.to_string().as_bytes()), b64_encode(claims.to_string().as_bytes()));
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_der(der),
        Algorithm::ES256 => EncodingKey::from_ec_der(der),
        other => return Err(format!("EdDSA or ES256, not {other:?}")),
    };
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).map_err(|e| e.to_string())?;
    Ok(format!("{message}.{signature}"))
}

// --- The provider -------------------------------------------------------------------------

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

fn ec_components_from_private_key(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    if alg != Algorithm::ES256 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
        .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    let point = pair.public_key().as_ref();
    match point {
        [4, rest @ ..] if rest.len() == 64 => Ok((EllipticCurve::P256, rest[..32].to_vec(), rest[32..].to_vec())),
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_pub_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

enum Signer {
    Ed(Ed25519KeyPair),
    Es(EcdsaKeyPair),
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match self {
            Signer::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Signer::Es(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
        }
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        match self {
            Signer::Ed(_) => Algorithm::EdDSA,
            Signer::Es(_) => Algorithm::ES256,
        }
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match (alg, key.family()) {
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => Ok(Box::new(Signer::Ed(
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes()).map_err(|_| ErrorKind::InvalidEddsaKey)?,
        ))),
        (Algorithm::ES256, AlgorithmFamily::Ec) => Ok(Box::new(Signer::Es(
            EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes(), &SystemRandom::new())
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ))),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        fn failed<E>(_: E) -> signature::Error {
            signature::Error::new()
        }
        match (self.alg, self.key.kind()) {
            (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                ring_sig::RsaPublicKeyComponents { n, e }
                    .verify(&ring_sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
                    .map_err(failed)
            }
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
                ring_sig::UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .map_err(failed)
            }
            // ed25519-dalek's strict check rather than ring's: it also refuses small-order keys
            // and small-order R (RFC 8032 verification alone accepts R = identity, S = 0 under
            // a small-order key), whatever path the key came by.
            (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(key)) => {
                let key = <[u8; 32]>::try_from(key.as_slice()).map_err(failed)?;
                let signature = ed25519_dalek::Signature::from_slice(signature).map_err(failed)?;
                ed25519_dalek::VerifyingKey::from_bytes(&key)
                    .and_then(|key| key.verify_strict(message, &signature))
                    .map_err(failed)
            }
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let family = match alg {
        Algorithm::RS256 => AlgorithmFamily::Rsa,
        Algorithm::ES256 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(Verifier { alg: *alg, key: key.clone() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64_encode(header.as_bytes()), b64_encode(payload.as_bytes()))
    }

    #[test]
    fn screening_refuses_malformed_tokens() {
        assert_eq!(screen("a.b", 100).unwrap_err(), JoseError::Malformed);
        assert_eq!(screen("a.b.c.d", 100).unwrap_err(), JoseError::Malformed);
        assert_eq!(screen("a..c", 100).unwrap_err(), JoseError::Base64("payload"));
        assert_eq!(screen("a=.b.c", 100).unwrap_err(), JoseError::Base64("header"));
        assert_eq!(screen("a+b.b.c", 100).unwrap_err(), JoseError::Base64("header"));
        assert_eq!(screen(&"a".repeat(101), 100).unwrap_err(), JoseError::TooLong(100));
        // Valid alphabet, impossible length (one leftover character).
        assert_eq!(screen("a.b.c", 100).unwrap_err(), JoseError::Base64("header"));
        assert_eq!(
            screen(&token("[1]", "{}"), 1000).unwrap_err(),
            JoseError::NotJson("header"),
            "a header that is JSON but not an object"
        );
        assert_eq!(screen(&token("{\"alg\":\"ES256\"}", "{} x"), 1000).unwrap_err(), JoseError::NotJson("payload"));
    }

    #[test]
    fn duplicate_members_are_refused_in_header_and_payload() {
        let error = screen(&token(r#"{"alg":"ES256","alg":"none"}"#, "{}"), 1000).unwrap_err();
        assert_eq!(error, JoseError::Duplicate { part: "header", name: "alg".into() });
        let error = screen(&token(r#"{"alg":"ES256"}"#, r#"{"sub":"a","sub":"b"}"#), 1000).unwrap_err();
        assert_eq!(error, JoseError::Duplicate { part: "payload", name: "sub".into() });
        assert!(
            screen(&token(r#"{"alg":"ES256","x":{"a":1,"a":2}}"#, "{}"), 1000).is_ok(),
            "nested repeats are not ours to judge"
        );
    }

    #[test]
    fn critical_extensions_are_refused() {
        let error = screen(&token(r#"{"alg":"ES256","crit":["exp"]}"#, "{}"), 1000).unwrap_err();
        assert!(matches!(error, JoseError::Critical(_)));
    }

    #[test]
    fn generated_keys_sign_and_verify_and_nothing_else_does() {
        install();
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let (der, jwk) = generate(alg).unwrap();
            let encoding = match alg {
                Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
                _ => EncodingKey::from_ec_der(&der),
            };
            let header = jsonwebtoken::Header::new(alg);
            let signed = jsonwebtoken::encode(&header, &serde_json::json!({"a": 1}), &encoding).unwrap();
            let (found, key) = decoding_key(&jwk).unwrap();
            assert_eq!(found, alg);
            let (message, signature) = signed.rsplit_once('.').unwrap();
            assert!(jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg).unwrap());
            let tampered = format!("{message}x");
            assert!(!jsonwebtoken::crypto::verify(signature, tampered.as_bytes(), &key, alg).unwrap());
            // The same key under an HMAC name: the provider refuses outright.
            assert!(jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::HS256).is_err());
            assert_eq!(thumbprint(&jwk).unwrap().len(), 43);
        }
    }

    #[test]
    fn private_members_are_seen() {
        assert!(has_private_part(&serde_json::json!({"kty": "EC", "d": "x"})));
        assert!(has_private_part(&serde_json::json!({"kty": "oct", "k": "x"})));
        assert!(!has_private_part(&serde_json::json!({"kty": "EC", "x": "x", "y": "y"})));
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 3.1.
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        install();
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
