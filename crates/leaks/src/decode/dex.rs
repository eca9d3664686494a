//! DEX reader: every string a `classes*.dex` file holds (Java and Kotlin string literals among
//! them), taken from the `string_ids` table and decoded from MUTF-8, and before them the string
//! constants of static fields, named by their field ([`field`]).
//!
//! The format is specified at <https://source.android.com/docs/core/runtime/dex-format>: the
//! header ("header_item"), `string_id_item` (a `u32` offset per string) and `string_data_item`
//! (a ULEB128 length in UTF-16 units, then MUTF-8 bytes up to a NUL). Methods and code are not
//! read, since every literal the code uses is in the pool; a literal the code stores in a field
//! keeps no name. Strings shorter than eight characters are skipped: no key is that short.

mod field;

use super::{DecodeError, Emitter, Sink, output_budget};
use crate::decode::le::u32 as u32_at;

const FORMAT: &str = "dex";
const HEADER_SIZE: usize = 0x70;
const ENDIAN_CONSTANT: u32 = 0x1234_5678;
const REVERSE_ENDIAN_CONSTANT: u32 = 0x7856_3412;
const STRING_IDS_SIZE_OFFSET: usize = 56;
const STRING_IDS_OFF_OFFSET: usize = 60;
/// Strings with fewer characters are not emitted.
const MIN_CHARS: usize = 8;
/// Longer strings are cut off at this many bytes.
const MAX_STRING_BYTES: usize = 1 << 20;

/// Emits each static `String` field's value as `Lcom/example/BuildConfig;->API_SECRET` named
/// `BuildConfig.API_SECRET`, then each string of the pool as `string_ids[{i}]`. An error in the
/// classes is returned after the pool has been read.
pub fn decode(bytes: &[u8], sink: &mut dyn Sink) -> Result<(), DecodeError> {
    decode_within(bytes, sink, output_budget(bytes.len()))
}

fn decode_within(bytes: &[u8], sink: &mut dyn Sink, budget: usize) -> Result<(), DecodeError> {
    check_header(bytes)?;
    let mut out = Emitter::new(sink, FORMAT, budget);
    let fields = field::static_values(bytes, &mut out);
    pool(bytes, &mut out)?;
    fields
}

fn pool(bytes: &[u8], out: &mut Emitter<'_>) -> Result<(), DecodeError> {
    let count = u32_at(bytes, STRING_IDS_SIZE_OFFSET).unwrap_or(0);
    let ids_off = u32_at(bytes, STRING_IDS_OFF_OFFSET).unwrap_or(0) as usize;
    // The loop is bounded by the count, but each step reads its id from the buffer first, so a
    // declared count larger than the file ends at the first id past the end.
    for index in 0..count as usize {
        let id_at = index.checked_mul(4).and_then(|n| n.checked_add(ids_off)).unwrap_or(usize::MAX);
        let data_off = u32_at(bytes, id_at)
            .ok_or_else(|| DecodeError::new(FORMAT, id_at, format!("string_ids[{index}] lies outside the file")))?
            as usize;
        let text = string_data(bytes, data_off)
            .map_err(|message| DecodeError::new(FORMAT, data_off, format!("string_ids[{index}]: {message}")))?;
        if text.chars().nth(MIN_CHARS - 1).is_some() {
            out.emit(data_off, &format!("string_ids[{index}]"), None, &text)?;
        }
    }
    Ok(())
}

fn check_header(bytes: &[u8]) -> Result<(), DecodeError> {
    let magic: [u8; 8] = bytes
        .get(..8)
        .and_then(|magic| magic.try_into().ok())
        .ok_or_else(|| DecodeError::new(FORMAT, 0, "too short for the DEX magic"))?;
    let [b'd', b'e', b'x', b'\n', b'0', major, minor, 0] = magic else {
        return Err(DecodeError::new(FORMAT, 0, "no DEX magic"));
    };
    if !(major.is_ascii_digit() && minor.is_ascii_digit()) {
        return Err(DecodeError::new(FORMAT, 4, "unknown DEX version"));
    }
    if bytes.len() < HEADER_SIZE {
        return Err(DecodeError::new(FORMAT, bytes.len(), "header truncated"));
    }
    match u32_at(bytes, 40) {
        Some(ENDIAN_CONSTANT) => Ok(()),
        Some(REVERSE_ENDIAN_CONSTANT) => Err(DecodeError::new(FORMAT, 40, "big-endian DEX is not supported")),
        _ => Err(DecodeError::new(FORMAT, 40, "bad endian tag")),
    }
}

/// The text of the `string_data_item` at `offset`. The declared UTF-16 length is read past but
/// not trusted: the string ends at its NUL, or is cut off after [`MAX_STRING_BYTES`].
fn string_data(bytes: &[u8], offset: usize) -> Result<String, &'static str> {
    let rest = bytes.get(offset..).filter(|rest| !rest.is_empty()).ok_or("string data offset lies outside the file")?;
    let length_bytes = uleb128_len(rest).ok_or("bad ULEB128 length")?;
    let data = rest.get(length_bytes..).unwrap_or_default();
    let window = data.get(..MAX_STRING_BYTES).unwrap_or(data);
    let body = match window.iter().position(|&b| b == 0) {
        Some(end) => window.get(..end).unwrap_or_default(),
        None if data.len() > MAX_STRING_BYTES => window,
        None => return Err("string data runs past the end of the file"),
    };
    Ok(decode_mutf8(body))
}

/// The size of the ULEB128 (at most five bytes for a `u32`) at the start of `bytes`.
fn uleb128_len(bytes: &[u8]) -> Option<usize> {
    let end = bytes.iter().take(5).position(|&b| b & 0x80 == 0)?;
    Some(end + 1)
}

/// Decodes MUTF-8: one to three bytes per UTF-16 unit, NUL as `C0 80`, supplementary characters
/// as two three-byte surrogates. Anything else (a stray continuation byte, a four-byte UTF-8
/// sequence, a lone surrogate) becomes U+FFFD and decoding goes on at the next byte.
pub fn decode_mutf8(bytes: &[u8]) -> String {
    const INVALID: u16 = 0xfffd;
    let continuation = |b: Option<&u8>| b.filter(|&&b| b & 0xc0 == 0x80).map(|&b| u16::from(b & 0x3f));
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&lead) = bytes.get(i) {
        let lead16 = u16::from(lead);
        let (unit, len) = match lead {
            0x01..=0x7f => (lead16, 1),
            0xc0..=0xdf => match continuation(bytes.get(i + 1)) {
                Some(b1) => (((lead16 & 0x1f) << 6) | b1, 2),
                None => (INVALID, 1),
            },
            0xe0..=0xef => match (continuation(bytes.get(i + 1)), continuation(bytes.get(i + 2))) {
                (Some(b1), Some(b2)) => (((lead16 & 0x0f) << 12) | (b1 << 6) | b2, 3),
                _ => (INVALID, 1),
            },
            _ => (INVALID, 1),
        };
        units.push(unit);
        i += len;
    }
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::dex::{build, encode_mutf8, uleb128};
    use crate::decode::testing::{Found, collect, values};
    use proptest::prelude::*;

    fn run(bytes: &[u8]) -> (Found, Result<(), DecodeError>) {
        collect(|sink| decode(bytes, sink))
    }

    /// A DEX header whose string pool is given by `count` and `ids_off`, followed by `rest`.
    fn header_with(count: u32, ids_off: u32, rest: &[u8]) -> Vec<u8> {
        let mut dex = build(&[]);
        dex.truncate(HEADER_SIZE);
        dex[STRING_IDS_SIZE_OFFSET..STRING_IDS_SIZE_OFFSET + 4].copy_from_slice(&count.to_le_bytes());
        dex[STRING_IDS_OFF_OFFSET..STRING_IDS_OFF_OFFSET + 4].copy_from_slice(&ids_off.to_le_bytes());
        dex.extend_from_slice(rest);
        dex
    }

    const KEY: &str = "AIzaSyD-planted-key-0123456789abcdefghi";

    #[test]
    fn planted_key_comes_back_with_its_index() {
        let dex = build(&["short", KEY, "https://api.example.com/v1", "Lcom/example/Main;"]);
        let (found, result) = run(&dex);
        assert_eq!(result, Ok(()));
        // Sorted: "Lcom/…" < "https://…" (L < h) and "AIza…" first; "short" is skipped.
        assert_eq!(values(&found), [KEY, "Lcom/example/Main;", "https://api.example.com/v1"]);
        assert_eq!(found[0].0, "string_ids[0]");
        assert_eq!(found[0].1, None);
        assert_eq!(found[2].0, "string_ids[2]");
    }

    #[test]
    fn strings_shorter_than_eight_characters_are_skipped() {
        let (found, result) = run(&build(&["", "1234567", "12345678"]));
        assert_eq!(result, Ok(()));
        assert_eq!(values(&found), ["12345678"]);
    }

    #[test]
    fn empty_pool_is_fine() {
        assert_eq!(run(&build(&[])), (Found::new(), Ok(())));
    }

    #[test]
    fn mutf8_embedded_nul_and_supplementary_character_round_trip() {
        let tricky = "key\0with-nul-and-\u{1F511}-emoji-é-ü-€";
        let (found, result) = run(&build(&[tricky]));
        assert_eq!(result, Ok(()));
        assert_eq!(values(&found), [tricky]);
        // The NUL is two bytes and the emoji two three-byte surrogates, as MUTF-8 requires.
        let units: Vec<u16> = tricky.encode_utf16().collect();
        let encoded = encode_mutf8(&units);
        assert!(!encoded.contains(&0));
        assert!(encoded.windows(2).any(|w| w == [0xc0, 0x80]));
        assert!(encoded.windows(3).any(|w| w == [0xed, 0xa0, 0xbd]));
    }

    #[test]
    fn invalid_mutf8_becomes_replacement_characters() {
        // A stray continuation byte, a truncated two-byte sequence, a four-byte UTF-8 sequence
        // and a lone high surrogate.
        let bytes = [b'a', 0x80, b'b', 0xc3, b'c', 0xf0, 0x9f, 0x94, 0x91, 0xed, 0xa0, 0xbd, b'd'];
        assert_eq!(decode_mutf8(&bytes), "a\u{fffd}b\u{fffd}c\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}d");
        assert_eq!(decode_mutf8(&[0xc0, 0x80]), "\0");
    }

    #[test]
    fn not_dex_is_rejected_at_the_magic() {
        assert_eq!(run(b"PK\x03\x04").1.map_err(|e| e.offset), Err(0));
        assert_eq!(run(b"dex\n0a5\0").1.map_err(|e| e.offset), Err(4));
        let mut dex = build(&[KEY]);
        dex[40..44].copy_from_slice(&REVERSE_ENDIAN_CONSTANT.to_le_bytes());
        assert!(run(&dex).1.is_err());
    }

    #[test]
    fn truncation_at_every_length_never_panics() {
        let dex = build(&[KEY, "second-string-long-enough", "third-string-long-enough"]);
        for len in 0..dex.len() {
            let (found, result) = run(&dex[..len]);
            // A cut file either errors or has lost only its map list (which is not read).
            if result.is_ok() {
                assert_eq!(found.len(), 3, "length {len}");
            }
        }
    }

    #[test]
    fn huge_declared_string_count_allocates_nothing_and_stops_at_the_end() {
        // Four billion declared ids, one real one placed after its string: the loop stops at the
        // first id past the end of the file.
        let mut rest = Vec::new();
        uleb128(&mut rest, 12);
        rest.extend_from_slice(b"hello-world!\0");
        let ids_off = HEADER_SIZE + rest.len();
        rest.extend_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        let dex = header_with(u32::MAX, ids_off as u32, &rest);
        let (found, result) = run(&dex);
        assert_eq!(values(&found), ["hello-world!"]);
        let error = result.unwrap_err();
        assert_eq!(error.offset, dex.len());
        assert!(error.message.contains("string_ids[1]"));
    }

    #[test]
    fn string_id_offset_outside_the_file_is_an_error_at_that_id() {
        let (found, result) = run(&header_with(1, u32::MAX - 1, &[]));
        assert!(found.is_empty());
        assert!(result.unwrap_err().message.contains("string_ids[0]"));
    }

    #[test]
    fn string_data_offset_outside_the_file_keeps_what_came_before() {
        let mut dex = build(&[KEY, "zzzz-second-string"]);
        let second_id = HEADER_SIZE + 4;
        dex[second_id..second_id + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let (found, result) = run(&dex);
        assert_eq!(values(&found), [KEY]);
        assert_eq!(result.unwrap_err().offset, 0x7fff_fff0);
    }

    #[test]
    fn declared_length_longer_than_the_buffer_is_not_trusted() {
        let mut rest = Vec::new();
        rest.extend_from_slice(&((HEADER_SIZE + 4) as u32).to_le_bytes());
        uleb128(&mut rest, u32::MAX);
        rest.extend_from_slice(b"a-lying-length-prefix\0");
        let (found, result) = run(&header_with(1, HEADER_SIZE as u32, &rest));
        assert_eq!(result, Ok(()));
        assert_eq!(values(&found), ["a-lying-length-prefix"]);
    }

    #[test]
    fn unterminated_string_at_the_end_is_an_error() {
        let mut rest = Vec::new();
        rest.extend_from_slice(&((HEADER_SIZE + 4) as u32).to_le_bytes());
        uleb128(&mut rest, 30);
        rest.extend_from_slice(b"no-terminator-here");
        let (found, result) = run(&header_with(1, HEADER_SIZE as u32, &rest));
        assert!(found.is_empty());
        assert!(result.is_err());
    }

    #[test]
    fn string_longer_than_a_mebibyte_is_cut_off() {
        let long = "k".repeat(MAX_STRING_BYTES + 100);
        let (found, result) = run(&build(&[&long]));
        assert_eq!(result, Ok(()));
        assert_eq!(found[0].2.len(), MAX_STRING_BYTES);
    }

    #[test]
    fn many_ids_sharing_one_long_string_hit_the_output_budget() {
        // 200 ids all pointing at the same 64 KiB string: without a budget that is 200 times the
        // file's string data. The real budget is 64 MiB plus eight times the input; a smaller one
        // keeps the test fast.
        let count = 200u32;
        let data_at = HEADER_SIZE + 4 * count as usize;
        let mut rest = Vec::new();
        for _ in 0..count {
            rest.extend_from_slice(&(data_at as u32).to_le_bytes());
        }
        uleb128(&mut rest, 1 << 16);
        rest.extend(std::iter::repeat_n(b'x', 1 << 16));
        rest.push(0);
        let dex = header_with(count, HEADER_SIZE as u32, &rest);
        let budget = 1 << 20;
        let mut total = 0usize;
        let result = decode_within(
            &dex,
            &mut |location: &str, _: Option<&str>, value: &str| {
                total += location.len() + value.len();
            },
            budget,
        );
        assert!(result.unwrap_err().message.contains("budget"));
        assert!(total <= budget && total > budget - (1 << 17));
        assert_eq!(output_budget(1 << 20), (72 << 20));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = run(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            count in 0u32..64, ids_off in 0u32..256, rest in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = run(&header_with(count, ids_off, &rest));
        }

        #[test]
        fn any_strings_round_trip(strings in proptest::collection::vec("\\PC{8,40}", 0..8)) {
            let refs: Vec<&str> = strings.iter().map(String::as_str).collect();
            let (found, result) = run(&build(&refs));
            prop_assert_eq!(result, Ok(()));
            let mut expected: Vec<Vec<u16>> = strings.iter().map(|s| s.encode_utf16().collect()).collect();
            expected.sort();
            expected.dedup();
            let expected: Vec<String> = expected.iter().map(|u| String::from_utf16_lossy(u)).collect();
            prop_assert_eq!(values(&found), expected);
        }
    }
}
