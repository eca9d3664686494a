//! Writes minimal Hermes bytecode files (what React Native ships as `index.android.bundle` or
//! `main.jsbundle` when Hermes is on): the 128-byte file header, empty function headers, the
//! run-length string kinds, identifier hashes, the small string table with its overflow table,
//! the string storage and the SHA-1 footer (left zeroed; nothing here checks it). The layout is
//! the one of `include/hermes/BCGen/HBC/BytecodeFileFormat.h` in facebook/hermes for the given
//! bytecode version: function headers are 16 bytes before version 97 and 12 from it on, and the
//! string kind entries keep their count in 30 bits before version 71 and in 31 from it on.

/// `Ἑρμῆ` ("Hermes") in UTF-16BE, read as a little-endian `u64`.
pub const MAGIC: u64 = 0x1F19_03C1_03BC_1FC6;
/// The version React Native 0.76 to 0.80 ship.
pub const VERSION: u32 = 96;
const HEADER_SIZE: usize = 128;
/// A string this long (in characters) or longer, or stored this far into the storage, goes to
/// the overflow table.
const SMALL_LENGTH_LIMIT: usize = 0xff;
const SMALL_OFFSET_LIMIT: usize = 1 << 23;

/// What a string is to the bytecode: a property or variable name, or a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Identifier,
}

/// A Hermes bytecode file of `version` whose string table holds `strings`, all of kind string,
/// and two (empty) function headers before it.
pub fn build(version: u32, strings: &[&str]) -> Vec<u8> {
    let kinds: Vec<(&str, Kind)> = strings.iter().map(|string| (*string, Kind::String)).collect();
    build_with_kinds(version, &kinds)
}

/// A Hermes bytecode file of `version` holding `strings` with their kinds, in that order. A
/// string with a character beyond ASCII is stored as UTF-16, as Hermes does.
pub fn build_with_kinds(version: u32, strings: &[(&str, Kind)]) -> Vec<u8> {
    let function_count = 2usize;
    let function_header_size = if version >= 97 { 12 } else { 16 };
    let mut kinds: Vec<(u32, Kind)> = Vec::new();
    for (_, kind) in strings {
        match kinds.last_mut() {
            Some((count, last)) if last == kind => *count += 1,
            _ => kinds.push((1, *kind)),
        }
    }
    let identifiers = strings.iter().filter(|(_, kind)| *kind == Kind::Identifier).count();

    let mut storage = Vec::new();
    let mut small = Vec::with_capacity(strings.len());
    let mut overflow: Vec<(u32, u32)> = Vec::new();
    for (string, _) in strings {
        let offset = storage.len();
        let utf16 = !string.is_ascii();
        let length = if utf16 {
            let units: Vec<u16> = string.encode_utf16().collect();
            for unit in &units {
                storage.extend_from_slice(&unit.to_le_bytes());
            }
            units.len()
        } else {
            storage.extend_from_slice(string.as_bytes());
            string.len()
        };
        let (offset_field, length_field) = if length < SMALL_LENGTH_LIMIT && offset < SMALL_OFFSET_LIMIT {
            (offset as u32, length as u32)
        } else {
            overflow.push((offset as u32, length as u32));
            ((overflow.len() - 1) as u32, SMALL_LENGTH_LIMIT as u32)
        };
        small.push(u32::from(utf16) | (offset_field << 1) | (length_field << 24));
    }

    let mut body = vec![0u8; function_count * function_header_size];
    let count_bits = if version >= 71 { 31 } else { 30 };
    for (count, kind) in &kinds {
        let kind_bits = match kind {
            Kind::String => 0,
            Kind::Identifier => 1,
        };
        put_u32(&mut body, count | (kind_bits << count_bits));
    }
    for index in 0..identifiers {
        put_u32(&mut body, 0x9e37_79b9u32.wrapping_mul(index as u32 + 1)); // Any hash will do.
    }
    for entry in &small {
        put_u32(&mut body, *entry);
    }
    for (offset, length) in &overflow {
        put_u32(&mut body, *offset);
        put_u32(&mut body, *length);
    }
    body.extend_from_slice(&storage);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let file_length = HEADER_SIZE + body.len() + 20;

    let mut out = Vec::with_capacity(file_length);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    put_u32(&mut out, version);
    out.extend_from_slice(&[0x5a; 20]); // Source hash.
    put_u32(&mut out, file_length as u32);
    put_u32(&mut out, 0); // globalCodeIndex
    put_u32(&mut out, function_count as u32);
    put_u32(&mut out, kinds.len() as u32);
    put_u32(&mut out, identifiers as u32);
    put_u32(&mut out, strings.len() as u32);
    put_u32(&mut out, overflow.len() as u32);
    put_u32(&mut out, storage.len() as u32);
    // The rest of the header (big integers, regular expressions, literal buffers, modules,
    // debug information) is empty; its layout varies by version but all of it is zero here.
    out.resize(HEADER_SIZE, 0);
    out.extend_from_slice(&body);
    out.extend_from_slice(&[0; 20]); // Footer: the file's SHA-1, not computed.
    out
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}
