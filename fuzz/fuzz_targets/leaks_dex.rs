//! The DEX reader on arbitrary bytes, and on a valid DEX file with static string fields with the
//! input's bytes written over it (so the fuzzer reaches the string data, the class definitions
//! and the static values in seconds): strings of eight or more characters, named only when they
//! are a field's value, or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    let seed = SEED.get_or_init(|| {
        leaks::corpus::dex::build_with_fields(
            &["AIzaSyD-planted-key-0123456789abcdefghi", "key\0with-nul-\u{1F511}", "short"],
            &[
                ("Lcom/example/BuildConfig;", "API_SECRET", "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg"),
                ("Lcom/example/Net$Keys;", "TOKEN", "abc"),
            ],
        )
    });
    check(data);
    check(&leaks::corpus::overwrite(seed, data));
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::dex::decode(bytes, &mut |location: &str, name: Option<&str>, value: &str| {
        assert!(value.chars().count() >= 8);
        assert_eq!(name.is_some(), location.contains("->"));
    });
}
