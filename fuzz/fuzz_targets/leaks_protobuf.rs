//! The AAB protobuf reader on arbitrary bytes, and on a valid aapt2 `ResourceTable` and
//! `XmlNode` with the input's bytes written over them: strings of eight or more characters or
//! a located error, never a panic.
#![no_main]

use leaks::corpus::axml::Element;
use leaks::corpus::protobuf::{resource_table, xml};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let table = resource_table(
            "com.example",
            &[
                ("string", "google_api_key", "AIzaSyD-planted-key-0123456789abcdefghi"),
                ("xml", "config", "res/xml/network_security_config.xml"),
            ],
        );
        let manifest = Element::new("manifest").child(
            Element::new("meta-data")
                .attribute("android:name", "com.google.android.geo.API_KEY")
                .attribute("android:value", "AIzaSyD-planted-key-0123456789abcdefghi")
                .child(Element::text("some text in the element")),
        );
        [table, xml(&manifest)]
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice & 1)], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::protobuf::decode(bytes, &mut |_: &str, _: Option<&str>, value: &str| {
        assert!(value.chars().count() >= 8);
    });
}
