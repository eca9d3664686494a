use super::*;
use crate::corpus::dotnet::build;
use crate::decode::testing::{Found, collect, found, values};
use proptest::prelude::*;

fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
    collect(|sink| decode(bytes, sink))
}

/// Where the metadata root of a corpus assembly starts: the section, then the CLI header.
const ROOT: usize = 0x200 + 72;

fn put(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The offset of stream `name` in a corpus assembly, from its stream header.
fn stream(bytes: &[u8], name: &[u8]) -> (usize, usize) {
    let metadata = Metadata::find(bytes).unwrap();
    let heap = match name {
        b"#~" => metadata.tables,
        b"#US" => metadata.user_strings,
        b"#Strings" => metadata.strings,
        _ => metadata.blob,
    }
    .unwrap();
    (heap.at, heap.bytes.len())
}

const STRIPE: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const AWS: &str = "AKIAZ7Q3L5N2P4R6T2VW";
const SECRET: &str = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";

#[test]
fn constants_are_named_then_user_strings_then_identifiers_follow() {
    let dll = build(&["https://api.example.com/v1", STRIPE, "short"], &[("Example.Config", "ApiSecret", SECRET)]);
    assert!(sniff(&dll));
    let (found_strings, result) = run(&dll);
    assert_eq!(result, Ok(()));
    assert_eq!(found_strings[0], found("Example.Config::ApiSecret", Some("Config.ApiSecret"), SECRET));
    assert_eq!(found_strings[1], found("user_strings[0x1]", None, "https://api.example.com/v1"));
    assert_eq!(found_strings[2].2, STRIPE);
    assert!(found_strings[2].0.starts_with("user_strings[0x"));
    // `#Strings`: the module name, the class and field names of eight characters or more.
    let identifiers: Vec<&str> = found_strings
        .iter()
        .filter(|(location, _, _)| location.starts_with("strings["))
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(identifiers, ["Example.dll", "<Module>", "ApiSecret"]);
}

#[test]
fn constants_of_several_classes_get_their_own_class() {
    let dll = build(
        &[],
        &[
            ("Example.Config", "ApiSecret", SECRET),
            ("Example.Config", "StripeKey", STRIPE),
            ("Other.Keys", "AwsKeyId", AWS),
            ("Other.Keys", "Short", "abc"),
        ],
    );
    let (found_strings, result) = run(&dll);
    assert_eq!(result, Ok(()));
    let named: Vec<(&str, Option<&str>)> = found_strings
        .iter()
        .filter(|(_, name, _)| name.is_some())
        .map(|(l, n, _)| (l.as_str(), n.as_deref()))
        .collect();
    assert_eq!(
        named,
        [
            ("Example.Config::ApiSecret", Some("Config.ApiSecret")),
            ("Example.Config::StripeKey", Some("Config.StripeKey")),
            ("Other.Keys::AwsKeyId", Some("Keys.AwsKeyId")),
        ]
    );
}

#[test]
fn long_and_unicode_user_strings_round_trip() {
    let long = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", "A".repeat(20_000));
    let unicode = format!("clé-secrète-€-{STRIPE}-\u{1F511}");
    let (found, result) = run(&build(&[&long, &unicode], &[]));
    assert_eq!(result, Ok(()));
    let user: Vec<&str> = values(&found).into_iter().take(2).collect();
    assert_eq!(user, [long.as_str(), unicode.as_str()]);
}

#[test]
fn native_pe_files_and_other_bytes_are_not_sniffed() {
    let mut dll = build(&[STRIPE], &[]);
    // Data directory 14 (CLI header) of the PE32 optional header, emptied.
    let directory = 0x80 + 24 + 96 + 8 * 14;
    put(&mut dll, directory, 0);
    assert!(!sniff(&dll));
    assert!(run(&dll).1.unwrap_err().message.contains("no CLI header"));
    assert!(!sniff(b"MZ"));
    assert!(!sniff(b"dex\n035\0"));
}

#[test]
fn truncation_at_every_length_never_panics() {
    let dll = build(&[STRIPE, AWS], &[("Example.Config", "ApiSecret", SECRET)]);
    let every = dll.len() / 1500 + 1;
    for len in (0..dll.len()).step_by(every) {
        let _ = run(&dll[..len]);
    }
}

#[test]
fn lying_metadata_offsets_are_errors() {
    let dll = build(&[STRIPE], &[]);
    // The metadata RVA in the CLI header, pointing nowhere.
    let mut lying = dll.clone();
    put(&mut lying, 0x200 + 8, 0x7fff_0000);
    assert!(run(&lying).1.unwrap_err().message.contains("outside every section"));
    // A version string length of four billion.
    let mut lying = dll.clone();
    put(&mut lying, ROOT + 12, u32::MAX);
    assert!(run(&lying).1.is_err());
    // The first stream header's offset, far past the metadata.
    let mut lying = dll;
    let first_stream = ROOT + 16 + 12 + 4;
    put(&mut lying, first_stream, 0x7fff_0000);
    assert!(run(&lying).1.unwrap_err().message.contains("outside the metadata"));
}

#[test]
fn a_user_string_running_past_its_heap_keeps_the_ones_before() {
    let mut dll = build(&[STRIPE, AWS], &[]);
    let (us_at, _) = stream(&dll, b"#US");
    // The second entry's length (after the empty first byte and the first entry) made huge.
    let second = us_at + 1 + 1 + 2 * STRIPE.len() + 1;
    dll[second..second + 4].copy_from_slice(&0xdfff_ffffu32.to_be_bytes());
    let (found, result) = run(&dll);
    assert_eq!(values(&found)[0], STRIPE);
    assert!(!values(&found).contains(&AWS));
    assert!(result.unwrap_err().message.contains("runs past the end of #US"));
}

#[test]
fn huge_row_counts_lose_the_names_not_the_strings() {
    let mut dll = build(&[STRIPE], &[("Example.Config", "ApiSecret", SECRET)]);
    let (tables_at, _) = stream(&dll, b"#~");
    // The row counts start at 24: Module, TypeDef, Field, Constant. Four billion constants.
    put(&mut dll, tables_at + 24 + 12, u32::MAX);
    let (found, result) = run(&dll);
    assert!(found.iter().all(|(_, name, _)| name.is_none()));
    assert!(values(&found).contains(&STRIPE));
    assert!(result.unwrap_err().message.contains("runs past the end of #~"));
}

#[test]
fn lying_constant_rows_never_name_wrongly_or_panic() {
    let dll = build(&[], &[("Example.Config", "ApiSecret", SECRET)]);
    let (tables_at, tables_len) = stream(&dll, b"#~");
    // Every byte of the tables set to every value: no panic, and the value is still emitted
    // (named or not) unless its row no longer says "string".
    for at in tables_at + 24..tables_at + tables_len {
        for value in [0x00, 0x0e, 0x7f, 0xff] {
            let mut lying = dll.clone();
            lying[at] = value;
            let _ = run(&lying);
        }
    }
}

#[test]
fn many_entries_hit_the_output_budget() {
    let strings: Vec<String> = (0..200).map(|index| format!("{index:04}-{}", "k".repeat(8000))).collect();
    let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
    let dll = build(&refs, &[]);
    let (found, result) = collect(|sink| decode_within(&dll, sink, 1 << 20));
    assert!(result.unwrap_err().message.contains("budget"));
    assert!(found.len() < 100);
}

#[test]
fn compressed_lengths_follow_ecma_335() {
    assert_eq!(compressed_length(&[0x03]), Some((3, 1)));
    assert_eq!(compressed_length(&[0x80, 0x80]), Some((0x80, 2)));
    assert_eq!(compressed_length(&[0xbf, 0xff]), Some((0x3fff, 2)));
    assert_eq!(compressed_length(&[0xc0, 0x00, 0x40, 0x00]), Some((0x4000, 4)));
    assert_eq!(compressed_length(&[0xdf, 0xff, 0xff, 0xff]), Some((0x1fff_ffff, 4)));
    assert_eq!(compressed_length(&[0xe0]), None);
    assert_eq!(compressed_length(&[0xc0, 0x00]), None);
    let mut out = Vec::new();
    crate::corpus::dotnet::compressed_length(&mut out, 0x4000);
    assert_eq!(out, [0xc0, 0x00, 0x40, 0x00]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = run(&bytes);
    }

    #[test]
    fn arbitrary_metadata_never_panics(rest in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut dll = build(&[], &[]);
        dll.truncate(ROOT + 16);
        dll.extend_from_slice(&rest);
        dll.resize(dll.len().max(0x400), 0);
        let _ = run(&dll);
    }

    #[test]
    fn any_user_strings_round_trip(strings in proptest::collection::vec("\\PC{8,200}", 0..8)) {
        let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        let (found, result) = run(&build(&refs, &[]));
        prop_assert_eq!(result, Ok(()));
        let user: Vec<&str> =
            found.iter().filter(|(location, _, _)| location.starts_with("user_strings")).map(|(_, _, v)| v.as_str()).collect();
        prop_assert_eq!(user, refs);
    }
}
