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
    check(&overwrite(seed, data));
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::dex::decode(bytes, &mut |_: &str, name: Option<&str>, value: &str| {
        assert!(name.is_none() && value.chars().count() >= 8);
    });
}

/// `seed` with `data` read as `(position, byte)` triples written over it.
fn overwrite(seed: &[u8], data: &[u8]) -> Vec<u8> {
    let mut file = seed.to_vec();
    for triple in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([triple[0], triple[1]])) % file.len();
        file[at] = triple[2];
    }
    file
}
