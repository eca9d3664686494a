//! Key parsing: never panics, and anything it accepts has the exact shape of a key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input)
        && let Ok(key) = apikey::parse(text)
    {
        assert_eq!(key.expose().len(), apikey::KEY_LEN);
        assert_eq!(key.kid().len(), apikey::KID_LEN);
    }
});
