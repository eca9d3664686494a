//! Hermes bytecode reader: every string of the string table of a React Native bundle compiled
//! by Hermes (`assets/index.android.bundle` in an APK, `main.jsbundle` in an IPA), where the
//! JavaScript's string literals, property names and identifiers end up, one entry each.
//!
//! The layout is that of `include/hermes/BCGen/HBC/BytecodeFileFormat.h` in facebook/hermes
//! (with the per-version differences collected by P1sec/hermes-dec): a 128-byte header
//! (magic `0x1F1903C103BC1FC6`, the bytecode version, then counts that sit at the same offsets
//! in every version from 59 on), then one header per function (16 bytes before version 97,
//! 12 from it on), the string kinds (run-length `u32`s: a count, and the kind in the top bit,
//! or the top two bits before version 71), one hash per identifier, the small string table
//! (a `u32` per string: UTF-16 flag in bit 0, offset in the next 23 bits, length in the top 8),
//! the overflow table (an `(offset, length)` pair of `u32`s for each entry whose length field
//! is 255) and the string storage, where a string is Latin-1 bytes or UTF-16LE units.
//!
//! Nothing names a string: the pairing of object keys with values lives in the bytecode and its
//! literal buffers, which are not read, so each string is emitted bare, at
//! `string_table[{id}]`, whole (a prefix-anchored rule sees its start). The string kinds must
//! add up to the string count; when they do not, the layout was not understood and the decoder
//! says so, leaving the file to the raw pass. Strings shorter than eight characters (UTF-16 units
//! for UTF-16 strings) are skipped.

use super::{DecodeError, Emitter, Sink, output_budget};
use crate::decode::le::u32 as u32_at;

const FORMAT: &str = "hermes";
/// `Ἑρμῆ` ("Hermes") in UTF-16BE, read as a little-endian `u64`.
pub const MAGIC: u64 = 0x1F19_03C1_03BC_1FC6;
/// The oldest version in the open-source repository (React Native 0.60) and the newest known.
const VERSIONS: std::ops::RangeInclusive<u32> = 59..=99;
const HEADER_SIZE: usize = 128;
const VERSION_OFFSET: usize = 8;
const FUNCTION_COUNT_OFFSET: usize = 40;
const STRING_KIND_COUNT_OFFSET: usize = 44;
const IDENTIFIER_COUNT_OFFSET: usize = 48;
const STRING_COUNT_OFFSET: usize = 52;
const OVERFLOW_COUNT_OFFSET: usize = 56;
const STORAGE_SIZE_OFFSET: usize = 60;
/// The small-table length that sends a string to the overflow table.
const OVERFLOWED: u32 = 0xff;
/// Strings with fewer characters are not emitted.
const MIN_CHARS: usize = 8;
/// Longer strings are cut off at this many characters.
const MAX_STRING_CHARS: usize = 1 << 20;

/// Whether `bytes` start with the Hermes bytecode magic.
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.get(..8).is_some_and(|magic| magic == MAGIC.to_le_bytes())
}

/// Emits each string of the string table of eight or more characters as `string_table[{id}]`.
/// An entry that points outside the storage is skipped and reported as the error once the
/// table has been read.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

/// Where each table starts, worked out from the header's counts (checked against the file).
struct Layout {
    version: u32,
    kinds: (usize, usize),
    strings: (usize, usize),
    overflow: (usize, usize),
    storage: (usize, usize),
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    let layout = layout(bytes)?;
    check_kinds(bytes, &layout)?;
    let mut out = Emitter::new(sink, FORMAT, budget);
    let storage = bytes.get(layout.storage.0..).unwrap_or_default();
    let storage = storage.get(..layout.storage.1).unwrap_or(storage);
    let mut first_error = None;
    let (table, count) = layout.strings;
    for id in 0..count {
        let entry_at = table + 4 * id;
        let entry = u32_at(bytes, entry_at)
            .ok_or_else(|| DecodeError::new(FORMAT, entry_at, format!("string_table[{id}] lies outside the file")))?;
        let utf16 = entry & 1 == 1;
        let (offset, length) = match (entry >> 1) & 0x7f_ffff {
            overflow_index if entry >> 24 == OVERFLOWED => {
                let at = (overflow_index as usize).checked_mul(8).map(|n| n + layout.overflow.0);
                match at.filter(|_| (overflow_index as usize) < layout.overflow.1).and_then(|at| pair_at(bytes, at)) {
                    Some(pair) => pair,
                    None => {
                        first_error.get_or_insert_with(|| {
                            DecodeError::new(
                                FORMAT,
                                entry_at,
                                format!("string_table[{id}]: overflow entry {overflow_index} does not exist"),
                            )
                        });
                        continue;
                    }
                }
            }
            offset => (offset, entry >> 24),
        };
        let length = length as usize;
        if length < MIN_CHARS {
            continue;
        }
        let chars = length.min(MAX_STRING_CHARS);
        let unit = if utf16 { 2 } else { 1 };
        let start = offset as usize;
        let Some(data) = start.checked_add(chars * unit).and_then(|end| storage.get(start..end)) else {
            first_error.get_or_insert_with(|| {
                DecodeError::new(
                    FORMAT,
                    layout.storage.0.saturating_add(start),
                    format!("string_table[{id}] runs past the end of the string storage"),
                )
            });
            continue;
        };
        out.charge(entry_at, data.len())?;
        let text = if utf16 {
            let units = data.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
            char::decode_utf16(units).map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
        } else {
            data.iter().map(|&byte| char::from(byte)).collect::<String>()
        };
        out.emit(layout.storage.0 + start, &format!("string_table[{id}]"), None, &text)?;
    }
    first_error.map_or(Ok(()), Err)
}

fn layout(bytes: &[u8]) -> Result<Layout, DecodeError> {
    if !sniff(bytes) {
        return Err(DecodeError::new(FORMAT, 0, "no Hermes bytecode magic"));
    }
    if bytes.len() < HEADER_SIZE {
        return Err(DecodeError::new(FORMAT, bytes.len(), "header truncated"));
    }
    let field = |at: usize| u32_at(bytes, at).unwrap_or(0) as usize;
    let version = field(VERSION_OFFSET) as u32;
    if !VERSIONS.contains(&version) {
        return Err(DecodeError::new(FORMAT, VERSION_OFFSET, format!("bytecode version {version} is not known")));
    }
    let function_header_size = if version >= 97 { 12 } else { 16 };
    // Each table follows the last; a count that puts one past the end of the file is an error
    // before anything is read.
    let mut at = HEADER_SIZE;
    let mut table = |count: usize, size: usize, what: &str| -> Result<(usize, usize), DecodeError> {
        let start = at;
        at = count
            .checked_mul(size)
            .and_then(|length| start.checked_add(length))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| {
                DecodeError::new(FORMAT, start, format!("the {what} ({count} entries) run past the end of the file"))
            })?;
        Ok((start, count))
    };
    table(field(FUNCTION_COUNT_OFFSET), function_header_size, "function headers")?;
    let kinds = table(field(STRING_KIND_COUNT_OFFSET), 4, "string kinds")?;
    table(field(IDENTIFIER_COUNT_OFFSET), 4, "identifier hashes")?;
    let strings = table(field(STRING_COUNT_OFFSET), 4, "small string table")?;
    let overflow = table(field(OVERFLOW_COUNT_OFFSET), 8, "overflow string table")?;
    // The storage may be cut short: what is there is read, and strings past its end are errors.
    let storage = (at, field(STORAGE_SIZE_OFFSET));
    Ok(Layout { version, kinds, strings, overflow, storage })
}

/// The string kinds are run lengths over the string table: they must add up to its size, or the
/// tables are not where this version's layout puts them.
fn check_kinds(bytes: &[u8], layout: &Layout) -> Result<(), DecodeError> {
    let count_mask = if layout.version >= 71 { 0x7fff_ffff } else { 0x3fff_ffff };
    let (start, count) = layout.kinds;
    let mut total = 0usize;
    for index in 0..count {
        let entry = u32_at(bytes, start + 4 * index).unwrap_or(0);
        total = total.saturating_add((entry & count_mask) as usize);
    }
    if total == layout.strings.1 {
        Ok(())
    } else {
        Err(DecodeError::new(
            FORMAT,
            start,
            format!(
                "the string kinds cover {total} strings, the table holds {}: layout not understood",
                layout.strings.1
            ),
        ))
    }
}

fn pair_at(bytes: &[u8], offset: usize) -> Option<(u32, u32)> {
    Some((u32_at(bytes, offset)?, u32_at(bytes, offset.checked_add(4)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::hermes::{Kind, VERSION, build, build_with_kinds};
    use crate::decode::testing::{Found, collect, found, values};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode(bytes, sink))
    }

    fn put(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    const STRIPE: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    const AWS: &str = "AKIAZ7Q3L5N2P4R6T2VW";

    #[test]
    fn planted_keys_come_back_with_their_string_id() {
        let hermes = build(VERSION, &["apiKey", STRIPE, "https://api.example.com/v1", AWS]);
        let (found_strings, result) = run(&hermes);
        assert_eq!(result, Ok(()));
        assert_eq!(
            found_strings,
            [
                found("string_table[1]", None, STRIPE),
                found("string_table[2]", None, "https://api.example.com/v1"),
                found("string_table[3]", None, AWS),
            ]
        );
    }

    #[test]
    fn every_supported_version_layout_is_read() {
        // Function headers change size at 97, string kinds their count width at 71.
        for version in [59, 62, 70, 71, 74, 76, 84, 85, 87, 89, 90, 94, 95, 96, 97, 98, 99] {
            let hermes = build_with_kinds(
                version,
                &[("someIdentifier", Kind::Identifier), (STRIPE, Kind::String), ("otherIdentifier", Kind::Identifier)],
            );
            let (found, result) = run(&hermes);
            assert_eq!(result, Ok(()), "version {version}");
            assert_eq!(values(&found), ["someIdentifier", STRIPE, "otherIdentifier"], "version {version}");
        }
    }

    #[test]
    fn utf16_and_overflowed_strings_are_read_whole() {
        let unicode = format!("clé-secrète-€-{STRIPE}");
        let long = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", "A".repeat(300));
        let long_unicode = format!("ключ:{}", "я".repeat(400));
        let hermes = build(VERSION, &[&unicode, &long, &long_unicode, AWS]);
        let (found, result) = run(&hermes);
        assert_eq!(result, Ok(()));
        assert_eq!(values(&found), [unicode.as_str(), &long, &long_unicode, AWS]);
    }

    #[test]
    fn short_strings_are_skipped() {
        let (found, result) = run(&build(VERSION, &["", "1234567", "12345678"]));
        assert_eq!(result, Ok(()));
        assert_eq!(values(&found), ["12345678"]);
    }

    #[test]
    fn not_hermes_or_an_unknown_version_is_rejected_at_the_header() {
        assert_eq!(run(b"__d(function(){})").1.map_err(|e| e.offset), Err(0));
        let mut hermes = build(VERSION, &[STRIPE]);
        put(&mut hermes, VERSION_OFFSET, 40);
        assert_eq!(run(&hermes).1.map_err(|e| e.offset), Err(VERSION_OFFSET));
        put(&mut hermes, VERSION_OFFSET, 1000);
        assert!(run(&hermes).1.unwrap_err().message.contains("1000"));
    }

    #[test]
    fn a_wrong_layout_is_caught_by_the_string_kinds() {
        // Declared as version 97 (12-byte function headers) but laid out as 96: the kinds are
        // read from the wrong place and do not add up.
        let mut hermes = build(VERSION, &[STRIPE, AWS]);
        put(&mut hermes, VERSION_OFFSET, 97);
        let (found, result) = run(&hermes);
        assert!(found.is_empty());
        assert!(result.unwrap_err().message.contains("layout not understood"));
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let hermes = build(VERSION, &[STRIPE, "second-string-long-enough", "clé-unicode-long-enough"]);
        for len in 0..hermes.len() {
            let (found, result) = run(&hermes[..len]);
            // Only the zeroed footer may be lost without an error.
            if result.is_ok() {
                assert_eq!(found.len(), 3, "length {len}");
            }
        }
    }

    #[test]
    fn huge_counts_allocate_nothing_and_are_errors() {
        for offset in [FUNCTION_COUNT_OFFSET, STRING_KIND_COUNT_OFFSET, STRING_COUNT_OFFSET, OVERFLOW_COUNT_OFFSET] {
            let mut hermes = build(VERSION, &[STRIPE]);
            put(&mut hermes, offset, u32::MAX);
            let (found, result) = run(&hermes);
            assert!(found.is_empty(), "offset {offset}");
            assert!(result.unwrap_err().message.contains("past the end"), "offset {offset}");
        }
    }

    #[test]
    fn lying_offsets_skip_their_string_and_keep_the_others() {
        let hermes = build(VERSION, &[STRIPE, AWS]);
        // The first small entry sits after the header, two 16-byte function headers, one kind.
        let entry_at = HEADER_SIZE + 32 + 4;
        let mut lying = hermes.clone();
        put(&mut lying, entry_at, (0x7f_ffff << 1) | (40 << 24));
        let (found, result) = run(&lying);
        assert_eq!(values(&found), [AWS]);
        assert!(result.unwrap_err().message.contains("string_table[0]"));
        // An overflowed entry pointing at an overflow entry that does not exist.
        let mut lying = hermes;
        put(&mut lying, entry_at, (5 << 1) | (OVERFLOWED << 24));
        let (found, result) = run(&lying);
        assert_eq!(values(&found), [AWS]);
        assert!(result.unwrap_err().message.contains("overflow entry 5"));
    }

    #[test]
    fn a_huge_storage_size_reads_only_what_is_there() {
        let mut hermes = build(VERSION, &[STRIPE]);
        put(&mut hermes, STORAGE_SIZE_OFFSET, u32::MAX);
        assert_eq!(values(&run(&hermes).0), [STRIPE]);
    }

    #[test]
    fn many_entries_sharing_one_long_string_hit_the_output_budget() {
        // 64 entries overflowed to one 64 KiB string.
        let long = "x".repeat(1 << 16);
        let mut hermes = build(VERSION, &[long.as_str(); 64]);
        let overflow_at = HEADER_SIZE + 32 + 4 + 64 * 4;
        for index in 0..64 {
            put(&mut hermes, overflow_at + 8 * index, 0);
        }
        let budget = 1 << 20;
        let (found, result) = collect(|sink| decode_within(&hermes, sink, budget));
        assert!(result.unwrap_err().message.contains("budget"));
        assert!(found.len() < 16);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = run(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            version in 55u32..100, rest in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut hermes = build(version, &[]);
            hermes.truncate(HEADER_SIZE);
            hermes.extend_from_slice(&rest);
            let _ = run(&hermes);
        }

        #[test]
        fn any_strings_round_trip(strings in proptest::collection::vec("\\PC{8,300}", 0..8), version in 59u32..100) {
            let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
            let (found, result) = run(&build(version, &refs));
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(values(&found), refs);
        }
    }
}
