//! The whole `leaks scan` pipeline on one in-memory file: archive enumeration (zip, gzip, tar,
//! nested), sniffing, every decoder, the raw pass and the rules. Arbitrary bytes, and a seeded
//! APK-like zip with the input written over it, so the fuzzer reaches members quickly. Under
//! small caps: findings and warnings, never a panic, never unbounded work.
#![no_main]

use std::sync::OnceLock;

use leaks::{Rules, enumerate::Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static STATE: OnceLock<(Rules, Vec<u8>)> = OnceLock::new();
    let (rules, seed) = STATE.get_or_init(|| {
        let rules = Rules::builtin().unwrap_or_else(|error| panic!("{error}"));
        let mut random = leaks::corpus::app::Random::new(1);
        let mut truth = leaks::corpus::app::Truth::default();
        (rules, leaks::corpus::app::android("seed.apk", &mut random, &mut truth))
    });
    let limits = Limits { max_total_bytes: 8 << 20, max_member_bytes: 4 << 20, ..Limits::default() };
    let _ = leaks::scan_bytes(rules, "input", data, &limits);
    let _ = leaks::scan_bytes(rules, "seed.apk", &leaks::corpus::overwrite(seed, data), &limits);
});
