//! The plist reader on arbitrary bytes (XML, ASCII or anything else), and on a valid binary or
//! XML plist with the input's bytes written over it (so the fuzzer reaches the object table and
//! the markup in seconds): key paths and strings or a located error, never a panic, a stack
//! overflow or a runaway allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>API_KEY</key>
	<string>AIzaSyD-planted-key-0123456789abcdefghi</string>
	<key>Domains</key>
	<array><string>a.example.com</string><dict><key>b</key><data>cHJpbnRhYmxlIGRhdGE=</data></dict></array>
	<!-- A comment. -->
	<key>Count</key>
	<integer>3</integer>
</dict>
</plist>
"#;

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| vec![binary_seed(), XML.as_bytes().to_vec()]);
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice) % seeds.len()], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::plist::sniff(bytes);
    let _ = leaks::decode::plist::decode(bytes, &mut |location: &str, _: Option<&str>, _: &str| {
        assert!(!location.is_empty());
    });
}

/// `{API_KEY = KEY; Domains = (a.example.com, b.example.com); Count = 3}` as a binary plist with
/// one-byte offsets and references, the layout Apple's writer uses for small files.
fn binary_seed() -> Vec<u8> {
    let ascii = |text: &str| {
        let mut object =
            if text.len() < 15 { vec![0x50 | text.len() as u8] } else { vec![0x5f, 0x10, text.len() as u8] };
        object.extend_from_slice(text.as_bytes());
        object
    };
    let objects = [
        vec![0xd3, 1, 2, 3, 4, 5, 8],
        ascii("API_KEY"),
        ascii("Domains"),
        ascii("Count"),
        ascii(KEY),
        vec![0xa2, 6, 7],
        ascii("a.example.com"),
        ascii("b.example.com"),
        vec![0x10, 3],
    ];
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for object in &objects {
        offsets.push(out.len() as u8);
        out.extend_from_slice(object);
    }
    let table_at = out.len() as u64;
    out.extend_from_slice(&offsets);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1]);
    out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&table_at.to_be_bytes());
    out
}
