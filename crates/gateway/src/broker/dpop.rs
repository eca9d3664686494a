//! DPoP (RFC 9449): proofs of possession of the device key a broker token is bound to.
//!
//! [`verify_proof`] runs every receiver check of section 4.3, in order; [`Replay`] remembers
//! each proof's `jti` for as long as the proof could be accepted (in Redis when limits live
//! there, so a proof replayed against another node is refused too); [`Nonces`] makes and checks
//! server nonces (stateless: a timestamp under an HMAC, so every node with the same secret
//! accepts every node's nonces).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hmac::Mac;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, jwk::Jwk};
use serde::Deserialize;
use sha2::Sha256;

use super::jose::{self, JoseError, MAX_PROOF_BYTES};

pub const DPOP_HEADER: &str = "dpop";
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";

/// Why a proof was refused. The client learns `invalid_dpop_proof` (or `use_dpop_nonce`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("no DPoP proof")]
    Missing,
    #[error("more than one DPoP header")]
    Multiple,
    #[error("malformed proof: {0}")]
    Malformed(JoseError),
    #[error("typ is not dpop+jwt")]
    Type,
    #[error("algorithm not allowed for proofs")]
    Algorithm,
    #[error("the proof's jwk holds a private key")]
    PrivateKey,
    #[error("the proof's jwk is missing or unusable")]
    Key,
    #[error("the proof's jwk is a small-order Ed25519 point, which binds a token to nothing")]
    WeakKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("claims: {0}")]
    Claims(&'static str),
    #[error("htm does not match the request method")]
    Method,
    #[error("htu does not match the request URL")]
    Url,
    #[error("iat outside the acceptance window")]
    Time,
    #[error("a server nonce is required")]
    UseNonce,
    #[error("ath does not match the access token")]
    AccessTokenHash,
    #[error("the proof key is not the key the token is bound to")]
    WrongKey,
    #[error("the proof was used before (jti replay)")]
    Replay,
    #[error("the replay cache is unavailable")]
    Unavailable,
}

impl DpopError {
    pub fn code(&self) -> crate::reason::AuditReason {
        use crate::reason::AuditReason;
        match self {
            DpopError::Missing => AuditReason::DpopMissing,
            DpopError::Multiple => AuditReason::DpopMultiple,
            DpopError::Malformed(_) => AuditReason::DpopMalformed,
            DpopError::Type => AuditReason::DpopTyp,
            DpopError::Algorithm => AuditReason::DpopAlg,
            DpopError::PrivateKey => AuditReason::DpopPrivateKey,
            DpopError::Key => AuditReason::DpopKey,
            DpopError::WeakKey => AuditReason::DpopWeakKey,
            DpopError::Signature => AuditReason::DpopSignature,
            DpopError::Claims(_) => AuditReason::DpopClaims,
            DpopError::Method => AuditReason::DpopHtm,
            DpopError::Url => AuditReason::DpopHtu,
            DpopError::Time => AuditReason::DpopIat,
            DpopError::UseNonce => AuditReason::DpopNonce,
            DpopError::AccessTokenHash => AuditReason::DpopAth,
            DpopError::WrongKey => AuditReason::DpopJkt,
            DpopError::Replay => AuditReason::DpopReplay,
            DpopError::Unavailable => AuditReason::DpopReplayUnavailable,
        }
    }
}

/// What the request is, for the proof to match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request's URL as the client addressed it (normalised, no query).
    pub htu: &'a str,
    /// The access token presented with the proof (resource requests), for `ath`.
    pub access_token: Option<&'a str>,
    pub now: i64,
}

/// The acceptance policy for proofs.
#[derive(Debug, Clone)]
pub struct Policy {
    pub algorithms: Vec<Algorithm>,
    pub max_age: Duration,
    pub max_skew: Duration,
    pub require_nonce: bool,
}

/// A proof that passed the checks up to (not including) replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<String>,
    alg: String,
    jwk: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<serde_json::Number>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// The one `DPoP` header of a request (check 1), as text.
pub fn proof_header(headers: &HeaderMap) -> Result<&str, DpopError> {
    let mut values = headers.get_all(DPOP_HEADER).iter();
    let first = values.next().ok_or(DpopError::Missing)?;
    if values.next().is_some() {
        return Err(DpopError::Multiple);
    }
    first.to_str().map_err(|_| DpopError::Malformed(JoseError::Malformed))
}

/// Checks 2 to 12 of RFC 9449 4.3 on one proof (all but replay, which needs I/O).
pub fn verify_proof(
    proof: &str,
    expected: &Expected<'_>,
    policy: &Policy,
    nonces: &Nonces,
    bound_jkt: Option<&str>,
) -> Result<Proof, DpopError> {
    // 2. A single well-formed JWT.
    let compact = jose::screen(proof, MAX_PROOF_BYTES).map_err(DpopError::Malformed)?;
    let header_json = jose::b64_decode(compact.header).ok_or(DpopError::Malformed(JoseError::Base64("header")))?;
    let header: ProofHeader =
        serde_json::from_slice(&header_json).map_err(|_| DpopError::Malformed(JoseError::NotJson("header")))?;
    // 4. typ.
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(DpopError::Type);
    }
    // 5. An asymmetric algorithm we accept (never none, never a MAC).
    let alg = match header.alg.as_str() {
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(DpopError::Algorithm),
    };
    if !policy.algorithms.contains(&alg) {
        return Err(DpopError::Algorithm);
    }
    // 7. The jwk is public.
    let jwk_value = header.jwk.ok_or(DpopError::Key)?;
    if jose::has_private_part(&jwk_value) {
        return Err(DpopError::PrivateKey);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value).map_err(|_| DpopError::Key)?;
    let (key_alg, key) = jose::decoding_key(&jwk).map_err(|error| match error {
        JoseError::WeakKey => DpopError::WeakKey,
        _ => DpopError::Key,
    })?;
    if key_alg != alg {
        return Err(DpopError::Algorithm);
    }
    // 6. The signature, with the header's key.
    let message_len = compact.header.len() + 1 + compact.payload.len();
    let message = &proof.as_bytes()[..message_len];
    match jsonwebtoken::crypto::verify(compact.signature, message, &key, alg) {
        Ok(true) => {}
        _ => return Err(DpopError::Signature),
    }
    // 3. Required claims.
    let payload = jose::b64_decode(compact.payload).ok_or(DpopError::Malformed(JoseError::Base64("payload")))?;
    let claims: ProofClaims = serde_json::from_slice(&payload).map_err(|_| DpopError::Claims("not a claims object"))?;
    let jti = claims.jti.filter(|jti| (8..=256).contains(&jti.len())).ok_or(DpopError::Claims("jti"))?;
    let htm = claims.htm.ok_or(DpopError::Claims("htm"))?;
    let htu = claims.htu.ok_or(DpopError::Claims("htu"))?;
    let iat = claims.iat.and_then(|iat| jose::numeric_date_of(&iat).ok()).ok_or(DpopError::Claims("iat"))?;
    // 8. Method.
    if htm != expected.method {
        return Err(DpopError::Method);
    }
    // 9. URL, ignoring query and fragment, after normalisation.
    if crate::config::broker::normalize_htu(&htu).as_deref() != Some(expected.htu) {
        return Err(DpopError::Url);
    }
    // 10. Nonce: when one is required, or when the client sent one (it must then be ours).
    match claims.nonce.as_deref() {
        Some(nonce) if nonces.valid(nonce, expected.now) => {}
        Some(_) => return Err(DpopError::UseNonce),
        None if policy.require_nonce => return Err(DpopError::UseNonce),
        None => {}
    }
    // 11. Creation time within the window.
    let skew = i64::try_from(policy.max_skew.as_secs()).unwrap_or(i64::MAX);
    let max_age = i64::try_from(policy.max_age.as_secs()).unwrap_or(i64::MAX);
    if iat > expected.now.saturating_add(skew) || iat < expected.now.saturating_sub(max_age.saturating_add(skew)) {
        return Err(DpopError::Time);
    }
    let jkt = jose::thumbprint(&jwk).map_err(|_| DpopError::Key)?;
    // 12. With an access token: its hash, and the key it is bound to.
    if let Some(token) = expected.access_token {
        let ath = claims.ath.ok_or(DpopError::AccessTokenHash)?;
        let wanted = jose::sha256_b64(token.as_bytes());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(ath.as_bytes(), wanted.as_bytes())) {
            return Err(DpopError::AccessTokenHash);
        }
    }
    if let Some(bound) = bound_jkt
        && bound != jkt
    {
        return Err(DpopError::WrongKey);
    }
    Ok(Proof { jkt, jti, iat })
}

/// Server nonces: `base64url(issued_at || HMAC(secret, issued_at)[..16])`.
pub struct Nonces {
    key: Vec<u8>,
    lifetime: i64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl Nonces {
    pub fn new(key: Vec<u8>, lifetime: Duration) -> Nonces {
        Nonces { key, lifetime: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX) }
    }

    fn mac(&self, issued_at: i64) -> [u8; 16] {
        let mut mac = crate::mac::hmac_sha256(&self.key);
        mac.update(b"portcullis dpop nonce v1");
        mac.update(&issued_at.to_be_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut short = [0u8; 16];
        short.copy_from_slice(&full[..16]);
        short
    }

    pub fn issue(&self, now: i64) -> String {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&now.to_be_bytes());
        bytes[8..].copy_from_slice(&self.mac(now));
        jose::b64_encode(&bytes)
    }

    pub fn valid(&self, nonce: &str, now: i64) -> bool {
        let Some(bytes) = jose::b64_decode(nonce) else { return false };
        let Ok(bytes) = <[u8; 24]>::try_from(bytes.as_slice()) else { return false };
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[..8]);
        let issued_at = i64::from_be_bytes(at);
        let expected = self.mac(issued_at);
        bool::from(subtle::ConstantTimeEq::ct_eq(&bytes[8..], &expected[..]))
            && issued_at <= now.saturating_add(5)
            && now.saturating_sub(issued_at) <= self.lifetime
    }
}

/// Remembers proofs (`jkt`, `jti`) for as long as they could be accepted.
#[derive(Debug)]
pub enum Replay {
    Memory(MemoryReplay),
    Redis(Arc<crate::limits::redis::Shared>),
}

/// This node's replay cache: bounded; when full of live entries it refuses new proofs (fail
/// closed) rather than forget live ones.
#[derive(Debug)]
pub struct MemoryReplay {
    seen: Mutex<HashMap<[u8; 32], i64>>,
    capacity: usize,
}

impl MemoryReplay {
    pub fn new(capacity: usize) -> MemoryReplay {
        MemoryReplay { seen: Mutex::new(HashMap::new()), capacity }
    }
}

fn replay_key(proof: &Proof) -> [u8; 32] {
    let mut hasher = <Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, proof.jkt.as_bytes());
    sha2::Digest::update(&mut hasher, b"\0");
    sha2::Digest::update(&mut hasher, proof.jti.as_bytes());
    sha2::Digest::finalize(hasher).into()
}

impl Replay {
    /// Ok if this is the proof's first use within `window` (seconds from now).
    pub async fn first_use(&self, proof: &Proof, now: i64, window: i64) -> Result<(), DpopError> {
        let key = replay_key(proof);
        match self {
            Replay::Memory(memory) => {
                let mut seen = memory.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.get(&key).is_some_and(|&until| until >= now) {
                    return Err(DpopError::Replay);
                }
                if seen.len() >= memory.capacity {
                    seen.retain(|_, until| *until >= now);
                    if seen.len() >= memory.capacity {
                        tracing::error!("the DPoP replay cache is full of live proofs; refusing new ones");
                        return Err(DpopError::Unavailable);
                    }
                }
                seen.insert(key, now.saturating_add(window));
                Ok(())
            }
            Replay::Redis(shared) => {
                let name = shared.key(format_args!("dpop:{}", crate::hex::encode(&key)));
                let ttl = u64::try_from(window.max(1)).unwrap_or(1) * 1000;
                match shared.set_once(&name, ttl).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(DpopError::Replay),
                    Err(error) => {
                        tracing::error!(%error, "the shared DPoP replay cache is unavailable; refusing proofs");
                        Err(DpopError::Unavailable)
                    }
                }
            }
        }
    }
}
