use super::*;
use crate::corpus::il2cpp::{Constant, build};
use crate::decode::testing::{Found, collect, found as entry, values};
use proptest::prelude::*;

const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";
const STRIPE: &str = "sk_live_planted0123456789abcdefABCDEF";
/// One character short of a Google API key: a key only if the next literal's first character
/// is glued on, as a raw pass over literals stored back to back does.
const DECOY: &str = "AIzaSyD-decoy-key-0123456789abcdefgh";
const SECRET: &str = "q8Zt1Lmw9Pxv0RsT7uYb2Nc4Kd6Hf3Jg";

fn run(bytes: &[u8]) -> (Found, Result<u32, DecodeError>) {
    collect(|sink| decode(bytes, sink))
}

fn structured(found: &Found) -> Found {
    found.iter().filter(|(location, _, _)| !location.starts_with("il2cpp:offset")).cloned().collect()
}

fn metadata(version: u32) -> Vec<u8> {
    build(
        version,
        &["Hello", KEY, "abcdefghij-next-literal", DECOY, "x-marks-the-spot", STRIPE],
        &[
            ("API_SECRET", Some(Constant::Text(SECRET))),
            ("RETRY_LIMIT", Some(Constant::Int(40))),
            ("playerName", None),
            ("BASE_URL", Some(Constant::Text("https://api.example.com/v2"))),
        ],
        &["default-parameter-value"],
    )
}

#[test]
fn literals_and_named_constants_come_back_in_every_version() {
    for version in [24, 27, 29, 31] {
        let (found, result) = run(&metadata(version));
        assert_eq!(result, Ok(version));
        assert_eq!(
            structured(&found),
            [
                entry("il2cpp:field 0", Some("API_SECRET"), SECRET),
                entry("il2cpp:field 3", Some("BASE_URL"), "https://api.example.com/v2"),
                entry("il2cpp:parameter 0", None, "default-parameter-value"),
                entry("il2cpp:literal 1", None, KEY),
                entry("il2cpp:literal 2", None, "abcdefghij-next-literal"),
                entry("il2cpp:literal 3", None, DECOY),
                entry("il2cpp:literal 4", None, "x-marks-the-spot"),
                entry("il2cpp:literal 5", None, STRIPE),
            ],
            "version {version}"
        );
    }
}

#[test]
fn version_31_literal_tables_of_offsets_alone_are_read() {
    let mut bytes = metadata(31);
    crate::corpus::il2cpp::offsets_only(&mut bytes);
    let (found, result) = run(&bytes);
    assert_eq!(result, Ok(31));
    let literals: Vec<&str> = found
        .iter()
        .filter(|(location, _, _)| location.starts_with("il2cpp:literal"))
        .map(|(_, _, value)| value.as_str())
        .collect();
    assert_eq!(literals, [KEY, "abcdefghij-next-literal", DECOY, "x-marks-the-spot", STRIPE]);
    // The same table with its lengths is read as pairs.
    let (found, _) = run(&metadata(31));
    assert!(found.contains(&entry("il2cpp:literal 5", None, STRIPE)));
}

#[test]
fn literals_stored_back_to_back_would_run_together_in_a_raw_pass() {
    let bytes = metadata(29);
    let joined = format!("{KEY}abcdefghij-next-literal{DECOY}x-marks");
    assert!(bytes.windows(joined.len()).any(|w| w == joined.as_bytes()));
    // Read whole, no literal reaches into the next.
    let (found, _) = run(&bytes);
    assert!(values(&found).iter().all(|value| !value.contains(&format!("{KEY}a")) && !value.contains("ghx-")));
}

#[test]
fn identifiers_are_read_as_runs_outside_the_literal_data() {
    let (found, _) = run(&metadata(27));
    let runs: Vec<&str> = found
        .iter()
        .filter(|(location, _, _)| location.starts_with("il2cpp:offset 0x"))
        .map(|(_, _, value)| value.as_str())
        .collect();
    assert!(runs.contains(&"Assembly-CSharp"), "{runs:?}");
    assert!(runs.contains(&"API_SECRET"), "{runs:?}");
    assert!(runs.iter().all(|run| !run.contains("AIza")), "{runs:?}");
}

#[test]
fn an_integer_constant_is_not_read_as_a_string_of_its_neighbours() {
    // 40 is a compressed length of 20 (and a 32-bit length of 40): the bytes after it belong
    // to the next blob, so it is no string.
    for version in [24, 29] {
        let bytes = build(
            version,
            &[],
            &[
                ("RETRY_LIMIT", Some(Constant::Int(40))),
                ("TOKEN", Some(Constant::Text("0123456789abcdefghijklmnopqrstuvwxyz0123"))),
            ],
            &[],
        );
        let (found, result) = run(&bytes);
        assert_eq!(result, Ok(version));
        assert_eq!(
            structured(&found),
            [entry("il2cpp:field 1", Some("TOKEN"), "0123456789abcdefghijklmnopqrstuvwxyz0123")]
        );
    }
}

#[test]
fn version_24_with_16_byte_fields_is_told_apart() {
    // Version 24.0 adds a custom attribute index to each field: widen the table in place.
    let bytes = metadata(24);
    let fields_at = u32_le(&bytes, FIELDS).unwrap() as usize;
    let fields_size = u32_le(&bytes, FIELDS + 4).unwrap() as usize;
    let mut widened = bytes[..fields_at].to_vec();
    for entry in bytes[fields_at..fields_at + fields_size].chunks_exact(12) {
        widened.extend_from_slice(&entry[..8]);
        widened.extend_from_slice(&u32::MAX.to_le_bytes());
        widened.extend_from_slice(&entry[8..]);
    }
    widened[FIELDS + 4..FIELDS + 8].copy_from_slice(&((fields_size / 12 * 16) as u32).to_le_bytes());
    let (found, result) = run(&widened);
    assert_eq!(result, Ok(24));
    assert!(found.contains(&found_named("il2cpp:field 0", "API_SECRET", SECRET)), "{found:?}");
}

fn found_named(location: &str, name: &str, value: &str) -> (String, Option<String>, String) {
    entry(location, Some(name), value)
}

#[test]
fn unsupported_versions_and_other_files_are_errors() {
    let mut bytes = metadata(29);
    bytes[4..8].copy_from_slice(&35u32.to_le_bytes());
    assert!(run(&bytes).1.unwrap_err().message.contains("version 35"));
    assert_eq!(run(b"PK\x03\x04").1.unwrap_err().offset, 0);
    assert!(run(&MAGIC.to_le_bytes()).1.is_err());
    assert!(sniff(&metadata(29)));
    assert!(!sniff(b"dex\n035\0"));
}

#[test]
fn lying_offsets_are_errors_after_what_can_be_read() {
    let bytes = metadata(29);
    // The fifth literal points far past its data.
    let table = u32_le(&bytes, STRING_LITERALS).unwrap() as usize;
    let mut broken = bytes.clone();
    broken[table + 4 * 8 + 4..table + 4 * 8 + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let (found, result) = run(&broken);
    assert!(result.unwrap_err().message.contains("string literal 4"));
    assert!(values(&found).contains(&STRIPE));
    // The literal data section runs past the end of the file.
    let mut broken = bytes.clone();
    broken[STRING_LITERAL_DATA + 4..STRING_LITERAL_DATA + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let (found, result) = run(&broken);
    assert!(result.unwrap_err().message.contains("string literal data"));
    assert!(values(&found).contains(&KEY));
}

#[test]
fn huge_counts_allocate_nothing() {
    let mut bytes = metadata(29);
    for entry in [STRING_LITERALS, FIELD_DEFAULT_VALUES, PARAMETER_DEFAULT_VALUES, FIELDS] {
        bytes[entry + 4..entry + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    let (_, result) = run(&bytes);
    assert!(result.is_err());
}

#[test]
fn truncation_at_every_length_never_panics() {
    for version in [24, 29, 31] {
        let bytes = metadata(version);
        for len in 0..bytes.len() {
            let (found, result) = run(&bytes[..len]);
            if result.is_ok() {
                assert!(values(&found).contains(&STRIPE), "length {len}");
            }
        }
    }
}

#[test]
fn many_literals_sharing_one_long_string_hit_the_output_budget() {
    let long = "k".repeat(1 << 16);
    let mut bytes = build(29, &[&long], &[], &[]);
    let table = u32_le(&bytes, STRING_LITERALS).unwrap() as usize;
    // Two hundred entries, all pointing at the one literal; the table is moved to the end.
    let entry = bytes[table..table + 8].to_vec();
    let new_table = bytes.len();
    for _ in 0..200 {
        bytes.extend_from_slice(&entry);
    }
    bytes[STRING_LITERALS..STRING_LITERALS + 4].copy_from_slice(&(new_table as u32).to_le_bytes());
    bytes[STRING_LITERALS + 4..STRING_LITERALS + 8].copy_from_slice(&(200u32 * 8).to_le_bytes());
    let mut total = 0usize;
    let result = decode_within(
        &bytes,
        &mut |location: &str, _: Option<&str>, value: &str| total += location.len() + value.len(),
        1 << 20,
    );
    assert!(result.unwrap_err().message.contains("budget"));
    assert!(total <= 1 << 20);
}

#[test]
fn compressed_integers_round_trip() {
    for value in [0, 1, -1, 40, 63, 64, -65, 8191, 8192, 0x0fff_ffff, 0x1000_0000, i32::MAX, i32::MIN + 1] {
        let mut bytes = Vec::new();
        crate::corpus::il2cpp::compressed_i32(&mut bytes, value);
        assert_eq!(compressed_i32(&bytes), Some((value, bytes.len())), "{value}");
    }
    assert_eq!(compressed_i32(&[0xff]), Some((i32::MIN, 1)));
    assert_eq!(compressed_i32(&[0xc0, 1]), None);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = run(&bytes);
    }

    #[test]
    fn overwritten_metadata_never_panics(data in proptest::collection::vec(any::<u8>(), 0..96), version in 24u32..32) {
        let _ = run(&crate::corpus::overwrite(&metadata(version), &data));
    }

    #[test]
    fn any_literals_come_back_whole(literals in proptest::collection::vec("\\PC{8,40}", 0..8), version in prop::sample::select(vec![24u32, 27, 29, 31])) {
        let refs: Vec<&str> = literals.iter().map(String::as_str).collect();
        let (found, result) = run(&build(version, &refs, &[], &[]));
        prop_assert_eq!(result, Ok(version));
        let literal_values: Vec<&str> = found
            .iter()
            .filter(|(location, _, _)| location.starts_with("il2cpp:literal"))
            .map(|(_, _, value)| value.as_str())
            .collect();
        prop_assert_eq!(literal_values, refs);
    }
}
