//! The `resources.arsc` reader on arbitrary bytes, and on a valid resource table (UTF-8 or
//! UTF-16 pool, dense, 16-bit or sparse offsets, compact entries, a string array) with the
//! input's bytes written over it: named strings or a located error, never a panic.
#![no_main]

use leaks::corpus::arsc::{Offsets, Options, build_arrays, build_with};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let entries = [
            ("string", "google_api_key", "AIzaSyD-planted-key-0123456789abcdefghi"),
            ("string", "app_name", "Example"),
            ("xml", "config", "res/xml/network_security_config.xml"),
        ];
        let mut seeds = Vec::new();
        for offsets in [Offsets::Dense, Offsets::Offset16, Offsets::Sparse] {
            for (utf8, compact) in [(true, false), (false, true)] {
                seeds.push(build_with("com.example", &entries, Options { utf8, offsets, compact }));
            }
        }
        seeds.push(build_arrays("com.example", &[("array", "keys", &["first-value", "second-value"])], false));
        seeds
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice) % seeds.len()], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::arsc::decode(bytes, &mut |_: &str, _: Option<&str>, _: &str| {});
}
