//! The binary XML reader on arbitrary bytes, and on a valid manifest (UTF-8 or UTF-16 pool,
//! resource map, namespaces, text) with the input's bytes written over it: located strings or
//! a located error, never a panic.
#![no_main]

use leaks::corpus::axml::{Element, build_with};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let manifest = Element::new("manifest").attribute("package", "com.example.app").child(
            Element::new("application")
                .attribute("android:label", "Example")
                .child(
                    Element::new("meta-data")
                        .attribute("android:name", "com.google.android.geo.API_KEY")
                        .attribute("android:value", "AIzaSyD-planted-key-0123456789abcdefghi"),
                )
                .child(Element::new("string").attribute("name", "secret").child(Element::text("text-value"))),
        );
        [build_with(&manifest, false), build_with(&manifest, true)]
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice & 1)], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::axml::decode(bytes, &mut |_: &str, _: Option<&str>, _: &str| {});
}
