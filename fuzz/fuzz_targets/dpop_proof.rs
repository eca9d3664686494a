//! DPoP proof verification (RFC 9449 4.3) on arbitrary input: refused with a reason, never a
//! panic; and htu normalisation on arbitrary URLs.
#![no_main]

use gateway::broker::dpop::{self, Expected, Nonces, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = Policy {
        algorithms: vec![jsonwebtoken::Algorithm::ES256, jsonwebtoken::Algorithm::EdDSA],
        max_age: std::time::Duration::from_secs(60),
        max_skew: std::time::Duration::from_secs(60),
        require_nonce: false,
    };
    let nonces = Nonces::new(vec![0; 32], std::time::Duration::from_secs(300));
    let expected =
        Expected { method: "POST", htu: "https://models.example.com/v1/token", access_token: Some("a.b.c"), now: 0 };
    let _ = dpop::verify_proof(text, &expected, &policy, &nonces, None);
    let _ = dpop::normalize_htu(text);
    let _ = nonces.valid(text, 0);
});
