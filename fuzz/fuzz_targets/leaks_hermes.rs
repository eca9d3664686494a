//! The Hermes bytecode reader on arbitrary bytes, and on a valid bundle (small, UTF-16 and
//! overflowed strings) with the input's bytes written over it, so the fuzzer reaches the string
//! kinds, the string tables and the storage in seconds: whole strings of eight or more UTF-16
//! units, located in the string table, or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        use leaks::corpus::hermes::{Kind, build_with_kinds};
        let long = format!("-----BEGIN PRIVATE KEY-----{}-----END PRIVATE KEY-----", "A".repeat(300));
        let strings = [
            ("apiKey", Kind::Identifier),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", Kind::String),
            ("clé-secrète-€-ключ", Kind::String),
            (long.as_str(), Kind::String),
            ("someIdentifier", Kind::Identifier),
        ];
        // One layout per family: old kinds (before 71), 16-byte and 12-byte function headers.
        [62, 96, 98].iter().map(|&version| build_with_kinds(version, &strings)).collect()
    });
    check(data);
    let seed = &seeds[usize::from(data.first().copied().unwrap_or(0)) % seeds.len()];
    check(&leaks::corpus::overwrite(seed, data.get(1..).unwrap_or_default()));
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::hermes::decode(bytes, &mut |location: &str, name: Option<&str>, value: &str| {
        // Eight UTF-16 units or more (a surrogate pair is two).
        assert!(value.encode_utf16().count() >= 8);
        assert!(name.is_none());
        assert!(location.starts_with("string_table["));
    });
}
