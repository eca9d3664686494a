//! The one HMAC-SHA-256 constructor (API key hashes, nonces, token sealing).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA-256 keyed with `key` (the gateway's one constructor: keys, nonces, sealing).
pub fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac())
}

#[expect(clippy::panic, reason = "HMAC accepts keys of every length, so this is unreachable")]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC rejected its key")
}
