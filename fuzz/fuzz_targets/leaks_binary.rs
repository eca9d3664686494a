//! The ELF and Mach-O readers on arbitrary bytes, and on a valid ELF, Mach-O (plain and
//! FairPlay-encrypted) or fat file with the input's bytes written over it (so the fuzzer gets
//! past the headers in seconds): section strings or a located error, never a panic. The raw
//! `printable_runs` pass runs over the same bytes: every run is printable and long enough.
#![no_main]

use leaks::corpus::{elf, macho};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

fuzz_target!(|data: &[u8]| {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let seeds = SEEDS.get_or_init(|| {
        let mut rodata = b"\x01\x02".to_vec();
        rodata.extend_from_slice(KEY.as_bytes());
        rodata.extend_from_slice(b"\0short\0");
        let plain = macho::build(&["hello", KEY], b"sk_live_planted0123456789abcdef", false);
        let encrypted = macho::build(&[KEY], b"sk_live_planted0123456789abcdef", true);
        vec![elf::build(&rodata), plain.clone(), encrypted.clone(), macho::fat(&[plain, encrypted])]
    });
    check(data);
    if let Some((&choice, rest)) = data.split_first() {
        check(&leaks::corpus::overwrite(&seeds[usize::from(choice) % seeds.len()], rest));
    }
});

fn check(bytes: &[u8]) {
    let _ = leaks::decode::binary::sniff(bytes);
    let _ = leaks::decode::binary::decode(bytes, &mut |location: &str, _: Option<&str>, value: &str| {
        assert!(location.contains("+0x") && value.len() >= 8);
    });
    leaks::decode::runs::printable_runs(bytes, 8, |offset, run| {
        assert!(offset < bytes.len() && run.len() >= 8);
        assert!(run.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)));
    });
}
