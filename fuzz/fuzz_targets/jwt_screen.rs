//! Compact-JWS screening (size, alphabet, JSON shape, duplicate members, crit) and the
//! unverified issuer lookup: any input gives an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gateway::broker::jose::screen(text, gateway::broker::jose::MAX_TOKEN_BYTES);
        let _ = gateway::broker::idp::unverified_issuer(text);
    }
});
