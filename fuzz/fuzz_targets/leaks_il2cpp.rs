//! The IL2CPP metadata reader on arbitrary bytes, and on a valid `global-metadata.dat` of each
//! supported version (literals, named string constants, an integer constant, a parameter
//! default) with the input's bytes written over it: strings of eight or more characters, named
//! only when they are a field's value, or a located error, never a panic.
#![no_main]

use leaks::corpus::il2cpp::{Constant, build};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        [24, 27, 29, 31]
            .into_iter()
            .map(|version| {
                build(
                    version,
                    &["AIzaSyD-planted-key-0123456789abcdefghi", "next-literal-here", "ключ-鍵-literal"],
                    &[
                        ("API_SECRET", Some(Constant::Text("q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg"))),
                        ("RETRY_LIMIT", Some(Constant::Int(40))),
                        ("playerName", None),
                    ],
                    &["default-parameter-value"],
                )
            })
            .collect()
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice) % seeds.len()], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::il2cpp::sniff(bytes);
    let _ = leaks::decode::il2cpp::decode(bytes, &mut |location: &str, name: Option<&str>, value: &str| {
        assert!(location.starts_with("il2cpp:") && value.chars().count() >= 8);
        assert!(name.is_none() || location.starts_with("il2cpp:field "));
    });
}
