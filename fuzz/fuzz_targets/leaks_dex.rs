//! The DEX string pool reader on arbitrary bytes, and on a valid DEX file with the input's bytes
//! written over it (so the fuzzer reaches the string data in seconds): strings of eight or more
//! characters or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    let seed = SEED.get_or_init(|| {
        leaks::corpus::dex::build(&["AIzaSyD-planted-key-0123456789abcdefghi", "key\0with-nul-\u{1F511}", "short"])
    });
    check(data);
    check(&leaks::corpus::overwrite(seed, data));
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::dex::decode(bytes, &mut |_: &str, name: Option<&str>, value: &str| {
        assert!(name.is_none() && value.chars().count() >= 8);
    });
}
