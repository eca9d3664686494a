//! The Dart snapshot reader on arbitrary bytes, and on a valid Flutter-like `libapp.so` (64-bit
//! with the `String` cluster, or 32-bit ARM with read-only string objects) or iOS
//! `App.framework/App` (Mach-O) with the input's
//! bytes written over it (so the fuzzer reaches the symbols, the snapshot header and the
//! strings in seconds): strings of eight or more characters located in a snapshot, or a located
//! error, never a panic.
#![no_main]

use leaks::corpus::dart;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let strings = [KEY, "https://api.example.com/v1", "ключ — 鍵 sk_live_planted0123456789abcdef", "short"];
        vec![dart::build(&strings), dart::build_arm(&strings), dart::build_ios(&strings, false)]
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice) % seeds.len()], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::dart::sniff(bytes);
    let _ = leaks::decode::dart::decode(bytes, &mut |location: &str, name: Option<&str>, value: &str| {
        assert!(location.starts_with("dart:") && location.contains("_snapshot_data+0x"));
        assert!(name.is_none() && value.chars().count() >= 8);
    });
}
