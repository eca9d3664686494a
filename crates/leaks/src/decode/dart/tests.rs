use super::*;
use crate::corpus::dart::{FEATURES_ARM, FEATURES_ARM64, Layout, VERSION, build, build_arm, build_ios, elf, snapshot};
use crate::decode::testing::{Found as Emitted, collect, values};
use proptest::prelude::*;

const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
const STRIPE: &str = "sk_live_planted0123456789abcdefABCDEF";
/// One character short of a Google API key: a key only if a neighbour's byte is glued on.
const DECOY: &str = "AIzaSyD-decoy-key-0123456789abcdefghi";

fn run(bytes: &[u8]) -> (Emitted, Result<SnapshotInfo, DecodeError>) {
    collect(|sink| decode(bytes, sink))
}

/// A string of `length` characters that is no key: its record's first length byte is `x`
/// when `length` is 124 (124 << 1 = 0xf8; its low seven bits are 0x78).
fn filler(length: usize) -> String {
    "The quick brown fox jumps over the lazy dog. ".chars().cycle().take(length).collect()
}

/// Where the isolate snapshot data start in the file.
fn isolate_start(bytes: &[u8]) -> usize {
    let image = Image::parse(bytes).unwrap();
    image.region(image.symbols.isolate_data.unwrap(), &[]).unwrap().0.start
}

/// The file offset a location such as `dart:isolate_snapshot_data+0x1f` points at.
fn located(bytes: &[u8], location: &str) -> usize {
    let hex = location.strip_prefix("dart:isolate_snapshot_data+0x").unwrap();
    isolate_start(bytes) + usize::from_str_radix(hex, 16).unwrap()
}

fn info(features: &str) -> SnapshotInfo {
    SnapshotInfo { version: VERSION.to_owned(), features: features.to_owned() }
}

#[test]
fn planted_key_comes_back_located_at_its_first_byte() {
    let libapp = build(&["short", KEY, "https://api.example.com/v1/config"]);
    let (found, result) = run(&libapp);
    assert_eq!(result, Ok(info(FEATURES_ARM64)));
    let isolate: Vec<_> = found.iter().filter(|(location, _, _)| location.contains("isolate")).collect();
    assert_eq!(
        isolate.iter().map(|(_, _, value)| value.as_str()).collect::<Vec<_>>(),
        [KEY, "https://api.example.com/v1/config"]
    );
    let (location, name, _) = isolate[0];
    assert_eq!(*name, None);
    let at = located(&libapp, location);
    assert_eq!(&libapp[at..at + KEY.len()], KEY.as_bytes());
    // The VM snapshot is read too, under its own label.
    assert!(
        found.iter().any(
            |(location, _, value)| location.starts_with("dart:vm_snapshot_data+0x") && value == "Iterable.generate"
        )
    );
}

#[test]
fn neighbouring_strings_do_not_run_into_each_other() {
    let after = filler(124);
    let libapp = build(&[KEY, &after, DECOY, &after, STRIPE, &after]);
    // The bytes a raw pass would see: each key runs straight into the `x` that starts the next
    // record, which would hide the Google key and make the decoy one.
    let start = isolate_start(&libapp);
    let key_at = start + libapp[start..].windows(KEY.len()).position(|w| w == KEY.as_bytes()).unwrap();
    assert_eq!(libapp[key_at + KEY.len()], b'x');
    let (found, result) = run(&libapp);
    assert!(result.is_ok(), "{result:?}");
    let isolate: Vec<&str> = found
        .iter()
        .filter(|(location, _, _)| location.starts_with("dart:isolate"))
        .map(|(_, _, value)| value.as_str())
        .collect();
    assert_eq!(isolate, [KEY, after.as_str(), DECOY, after.as_str(), STRIPE, after.as_str()]);
}

#[test]
fn two_byte_strings_are_read_as_utf16() {
    let wide = format!("ключ API: {KEY} — 鍵");
    let libapp = build(&["plain-ascii-string", &wide, "another-plain-string"]);
    let (found, result) = run(&libapp);
    assert!(result.is_ok(), "{result:?}");
    assert!(values(&found).contains(&wide.as_str()), "{found:?}");
    let (location, _, _) = found.iter().find(|(_, _, value)| *value == wide).unwrap();
    let at = located(&libapp, location);
    let expected: Vec<u8> = wide.encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert_eq!(&libapp[at..at + expected.len()], expected);
}

#[test]
fn read_only_string_objects_of_32_bit_builds_are_read() {
    let wide = format!("鍵 {STRIPE}");
    let libapp = build_arm(&[KEY, "https://api.example.com/v1/config", &wide, "abc"]);
    let (found, result) = run(&libapp);
    assert_eq!(result, Ok(info(FEATURES_ARM)));
    let isolate: Vec<_> = found.iter().filter(|(location, _, _)| location.contains("isolate")).collect();
    assert_eq!(
        isolate.iter().map(|(_, _, value)| value.as_str()).collect::<Vec<_>>(),
        [KEY, "https://api.example.com/v1/config", wide.as_str()]
    );
    let at = located(&libapp, &isolate[0].0);
    assert_eq!(&libapp[at..at + KEY.len()], KEY.as_bytes());
}

#[test]
fn the_ios_framework_is_read_through_its_mach_o_symbols() {
    let app = build_ios(&["short", KEY, "https://api.example.com/v1/config"], false);
    assert!(sniff(&app));
    let (found, result) = run(&app);
    assert_eq!(result, Ok(info(FEATURES_ARM64)));
    let (location, _, _) = found.iter().find(|(_, _, value)| value == KEY).unwrap();
    let at = located(&app, location);
    assert_eq!(&app[at..at + KEY.len()], KEY.as_bytes());
    // Without symbol sizes the VM snapshot ends where the isolate snapshot starts.
    let vm: Vec<&str> = found
        .iter()
        .filter(|(location, _, _)| location.starts_with("dart:vm"))
        .map(|(_, _, value)| value.as_str())
        .collect();
    assert_eq!(vm, ["dart:core", "_StringBase"]);
}

#[test]
fn an_app_store_encrypted_framework_is_an_error_that_says_so() {
    let (found, result) = run(&build_ios(&[KEY, "second-string", "third-string"], true));
    assert!(found.is_empty(), "{found:?}");
    assert!(result.unwrap_err().message.contains("FairPlay"));
}

#[test]
fn corpus_framework_parses_with_goblin() -> Result<(), goblin::error::Error> {
    let app = build_ios(&[KEY], true);
    let goblin::mach::Mach::Binary(parsed) = goblin::mach::Mach::parse(&app)? else {
        return Err(goblin::error::Error::Malformed("not a single image".into()));
    };
    let names: Vec<String> = parsed.symbols().filter_map(Result::ok).map(|(name, _)| name.to_owned()).collect();
    assert_eq!(names, ["_kDartVMSnapshotData", "_kDartIsolateSnapshotData", "_kDartIsolateSnapshotInstructions"]);
    Ok(())
}

#[test]
fn a_string_of_an_unknown_layout_is_still_read_as_a_printable_run() {
    // Strings written in no layout the reader knows (here: NUL-terminated) are found the way
    // the raw pass would find them, at their offset.
    let mut data = snapshot(&[], Layout::Clustered, true);
    let at = data.len();
    data.extend_from_slice(KEY.as_bytes());
    data.push(0);
    let stored = data.len() as i64 - 4;
    data[4..12].copy_from_slice(&stored.to_le_bytes());
    let libapp = elf(true, &snapshot(&[], Layout::Clustered, true), &data);
    let (found, result) = run(&libapp);
    assert!(result.is_ok(), "{result:?}");
    assert!(found.contains(&(format!("dart:isolate_snapshot_data+0x{at:x}"), None, KEY.to_owned())), "{found:?}");
}

#[test]
fn sniffing_wants_the_isolate_snapshot_symbol() {
    assert!(sniff(&build(&[KEY])));
    assert!(sniff(&build_arm(&[KEY])));
    assert!(!sniff(&crate::corpus::elf::build(KEY.as_bytes())));
    assert!(!sniff(b"\x7fELF"));
    assert!(!sniff(b"dex\n035\0"));
}

#[test]
fn an_elf_without_the_symbol_is_an_error() {
    let (found, result) = run(&crate::corpus::elf::build(KEY.as_bytes()));
    assert!(found.is_empty());
    assert!(result.unwrap_err().message.contains("_kDartIsolateSnapshotData"));
}

#[test]
fn a_snapshot_without_its_magic_is_an_error() {
    let mut data = snapshot(&[KEY, "second-string", "third-string"], Layout::Clustered, true);
    data[0] = 0;
    let libapp = elf(true, &snapshot(&[], Layout::Clustered, true), &data);
    let (_, result) = run(&libapp);
    let error = result.unwrap_err();
    assert!(error.message.contains("magic"), "{error}");
    assert_eq!(error.offset, isolate_start(&libapp));
}

#[test]
fn a_lying_length_is_an_error_after_the_strings() {
    for stored in [i64::MAX, -4, 0, 1 << 40] {
        let mut data = snapshot(&[KEY, "second-string", "third-string"], Layout::Clustered, true);
        data[4..12].copy_from_slice(&stored.to_le_bytes());
        let libapp = elf(true, &snapshot(&[], Layout::Clustered, true), &data);
        let (found, result) = run(&libapp);
        assert!(values(&found).contains(&KEY), "{stored}: {found:?}");
        assert!(result.unwrap_err().message.contains("declared length"), "{stored}");
    }
}

#[test]
fn a_huge_string_length_allocates_nothing() {
    let mut data = snapshot(&[], Layout::Clustered, true);
    // A record claiming four billion code units, followed by far fewer.
    crate::corpus::dart::write_unsigned(&mut data, u64::from(u32::MAX) << 1);
    data.extend_from_slice(KEY.as_bytes());
    data.push(0);
    let stored = data.len() as i64 - 4;
    data[4..12].copy_from_slice(&stored.to_le_bytes());
    let libapp = elf(true, &snapshot(&[], Layout::Clustered, true), &data);
    let (found, result) = run(&libapp);
    assert!(result.is_ok(), "{result:?}");
    assert!(values(&found).contains(&KEY), "{found:?}");
}

#[test]
fn symbols_outside_the_file_or_their_section_are_errors() {
    let libapp = build(&[KEY, "second-string", "third-string"]);
    let parsed = Elf::parse(&libapp).unwrap();
    let dynsym = parsed.section_headers.iter().find(|s| s.sh_type == SHT_DYNSYM).unwrap();
    // The isolate data symbol is the second entry after the null one; its value is at +8.
    let value_at = dynsym.sh_offset as usize + 2 * 24 + 8;
    for value in [u64::MAX, 0, 0x10] {
        let mut broken = libapp.clone();
        broken[value_at..value_at + 8].copy_from_slice(&value.to_le_bytes());
        let (_, result) = run(&broken);
        assert!(result.unwrap_err().message.contains("no section"), "{value:#x}");
    }
    // A size past the end of the section is cut to the section.
    let mut huge = libapp.clone();
    huge[value_at + 8..value_at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    let (found, result) = run(&huge);
    assert!(result.is_ok(), "{result:?}");
    assert!(values(&found).contains(&KEY));
}

#[test]
fn truncation_at_every_length_never_panics() {
    let libapp = build(&[KEY, "second-string-long-enough", "third-string-long-enough"]);
    let arm = build_arm(&[KEY, "second-string-long-enough", "third-string-long-enough"]);
    let ios = build_ios(&[KEY, "second-string-long-enough", "third-string-long-enough"], false);
    for bytes in [libapp, arm, ios] {
        for len in 0..bytes.len() {
            let (found, result) = run(&bytes[..len]);
            if result.is_ok() {
                assert!(values(&found).contains(&KEY), "length {len}");
            }
        }
    }
}

#[test]
fn the_output_budget_stops_the_reader() {
    let long = filler(4000);
    let strings: Vec<&str> = std::iter::repeat_n(long.as_str(), 50).collect();
    let libapp = build(&strings);
    let mut total = 0usize;
    let result = decode_within(
        &libapp,
        &mut |location: &str, _: Option<&str>, value: &str| total += location.len() + value.len(),
        20_000,
    );
    assert!(result.unwrap_err().message.contains("budget"));
    assert!(total <= 20_000);
}

#[test]
fn reading_arbitrary_bytes_costs_a_small_multiple_of_their_size() {
    // Non-string clusters look like noise; probing every byte for a record must stay cheap, or
    // a real libapp.so would spend its budget before reaching its strings.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for layout in [Layout::Clustered, Layout::ReadOnly] {
        let wide = layout == Layout::Clustered;
        let mut data = snapshot(&[], layout, wide);
        data.extend(std::iter::repeat_with(&mut noise).take(1 << 18));
        if layout == Layout::Clustered {
            let stored = data.len() as i64 - 4;
            data[4..12].copy_from_slice(&stored.to_le_bytes());
        }
        let libapp = elf(wide, &snapshot(&[], layout, wide), &data);
        let result = decode_within(&libapp, &mut |_: &str, _: Option<&str>, _: &str| {}, 4 * libapp.len());
        assert!(result.is_ok(), "{layout:?}: {result:?}");
    }
}

#[test]
fn corpus_libapp_parses_with_goblin() -> Result<(), goblin::error::Error> {
    for bytes in [build(&[KEY]), build_arm(&[KEY])] {
        let parsed = Elf::parse(&bytes)?;
        let names: Vec<_> =
            parsed.section_headers.iter().filter_map(|s| parsed.shdr_strtab.get_at(s.sh_name)).collect();
        assert_eq!(names, ["", ".text", ".rodata", ".dynsym", ".dynstr", ".shstrtab"]);
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = run(&bytes);
    }

    #[test]
    fn arbitrary_snapshot_data_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..1024), wide in any::<bool>(),
    ) {
        let mut with_header = snapshot(&[], Layout::ReadOnly, wide);
        with_header.truncate(HEADER_SIZE);
        with_header[12..20].copy_from_slice(&KIND_FULL_AOT.to_le_bytes());
        with_header.extend_from_slice(VERSION.as_bytes());
        with_header.extend_from_slice(b"arm\0");
        with_header.extend_from_slice(&data);
        let _ = run(&elf(wide, &with_header, &with_header));
        let _ = run(&elf(wide, &data, &data));
    }

    #[test]
    fn overwritten_corpus_files_never_panic(data in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = run(&crate::corpus::overwrite(&build(&[KEY, STRIPE, "third-string"]), &data));
        let _ = run(&crate::corpus::overwrite(&build_arm(&[KEY, STRIPE, "third-string"]), &data));
        let _ = run(&crate::corpus::overwrite(&build_ios(&[KEY, STRIPE, "third-string"], false), &data));
    }

    #[test]
    fn any_ascii_strings_come_back_whole(strings in proptest::collection::vec("[ -~]{8,150}", 3..8)) {
        let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
        for bytes in [build(&refs), build_arm(&refs)] {
            let (found, result) = run(&bytes);
            prop_assert!(result.is_ok());
            let isolate: Vec<&str> = found
                .iter()
                .filter(|(location, _, _)| location.starts_with("dart:isolate"))
                .map(|(_, _, value)| value.as_str())
                .collect();
            prop_assert_eq!(isolate, refs.clone());
        }
    }
}
